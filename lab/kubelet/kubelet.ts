/**
 * The lab's kubelet, one per node, running in the lab supervisor next to the API server (it talks to it
 * in-process through LocalClient, the same semantics as HTTP without the network):
 *
 * - registers its Node (labels, InternalIP/Hostname addresses, podCIDR, capacity, Ready) and keeps the node
 *   Lease (`kube-node-lease/<node>`, renewed every 10 s) and the Ready heartbeat fresh;
 * - watches the pods bound to its node (`spec.nodeName=<node>`) and realises them with its PodRuntime: image →
 *   program (lab/images.ts), env and volume contents resolved from the API (podspec.ts), projected tokens
 *   refreshed at 80 % of their lifetime, ConfigMap/Secret volume contents updated when those objects change;
 * - writes `pods/status` whenever the runtime reports a change (coalesced per pod, never out of order);
 * - finishes graceful deletions: kills the pod with its deletion grace period (SIGTERM, SIGKILL after it, CNI
 *   DEL, sandbox removed), then deletes the object with grace 0;
 * - records kubelet-style Events (Scheduled is the scheduler's; Pulled/Started/Killing/BackOff/Unhealthy/
 *   FailedMount here), counting repeats like kubelet's event correlator.
 */
import { randomBytes } from 'node:crypto';
import { arch, cpus, release, totalmem } from 'node:os';
import { describeError, MeshError } from '../../pkg/errors/index.ts';
import type { Logger } from '../../pkg/telemetry/index.ts';
import type { ApiServer } from '../apiserver/index.ts';
import type { JsonObject } from '../apiserver/json.ts';
import { ApiError } from '../apiserver/status.ts';
import { lookupLabImage } from '../images.ts';
import type { LabNetwork, LabNode } from '../node/network.ts';
import type { BackoffOptions } from '../runtime/backoff.ts';
import { PodRuntime } from '../runtime/runtime.ts';
import type { PodRef, PodStatus, ResolvedImage, RuntimeEvent } from '../runtime/types.ts';
import { PodWaiting, qosClass, type ResolveContext, resolvePod, resolveVolumes } from './podspec.ts';

export const NODE_LEASE_NAMESPACE = 'kube-node-lease';
const KUBELET_VERSION = 'v1.32.0';
/** kubelet's defaults: lease duration 40 s, renewed every 10 s (a quarter). */
const LEASE_DURATION_SECONDS = 40;
const LEASE_RENEW_MS = 10_000;
/** Ready heartbeat (kubelet reports unchanged status every 5 min; the lab is cheaper to keep fresh). */
const NODE_STATUS_MS = 60_000;
/** Retrying a pod that waits for a ConfigMap/Secret/ServiceAccount: 0.5 s doubling to 8 s. */
const WAIT_RETRY_MIN_MS = 500;
const WAIT_RETRY_MAX_MS = 8_000;
/** Grace for pods that vanished from the API without a graceful deletion (kubelet's minimum). */
const FORCED_KILL_GRACE_SECONDS = 2;
/** Identical events within this window are counted on one Event object. */
const EVENT_DEDUP_MS = 10 * 60_000;
const STATUS_WRITE_ATTEMPTS = 5;

export interface KubeletOptions {
  readonly api: ApiServer;
  readonly network: LabNetwork;
  readonly node: LabNode;
  readonly logger?: Logger;
  /** Restart back-off (default kubelet's 10 s … 5 min). */
  readonly backoff?: BackoffOptions;
  /** Repository whose programs the images map to (default this one). */
  readonly repoRoot?: string;
  readonly leaseRenewMs?: number;
}

interface Worker {
  readonly uid: string;
  readonly namespace: string;
  readonly name: string;
  /** Latest object seen (null once deleted from the API). */
  pod: JsonObject | null;
  started: boolean;
  finished: boolean;
  chain: Promise<void>;
  retryTimer: NodeJS.Timeout | null;
  retryMs: number;
  refreshTimer: NodeJS.Timeout | null;
  deps: Set<string>;
  /** Files volumes to rewrite when a dependency changes or a token is due. */
  refreshing: boolean;
  pendingStatus: PodStatus | null;
  writing: boolean;
  /** Waiting message last reported (to avoid rewriting the same status). */
  lastWaiting: string;
  startTime: string;
}

function md(o: JsonObject): JsonObject {
  return (o.metadata ?? {}) as JsonObject;
}
function spec(o: JsonObject): JsonObject {
  return (o.spec ?? {}) as JsonObject;
}
function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}
function kubeTime(d = new Date()): string {
  return `${d.toISOString().slice(0, 19)}Z`;
}
function microTime(d = new Date()): string {
  return `${d.toISOString().slice(0, 23)}000Z`;
}
function isCode(err: unknown, ...codes: number[]): boolean {
  return err instanceof ApiError && codes.includes(err.code);
}

export class Kubelet {
  readonly node: LabNode;
  readonly runtime: PodRuntime;
  private readonly api: ApiServer;
  private readonly logger: Logger | null;
  private readonly workers = new Map<string, Worker>();
  private readonly imageProblems = new Map<string, string>();
  private readonly events = new Map<string, { name: string; count: number; at: number }>();
  private readonly repoRoot: string | undefined;
  private readonly leaseRenewMs: number;
  private unwatch: (() => void)[] = [];
  private timers: NodeJS.Timeout[] = [];
  private stopping = false;
  private nodeUid = '';
  private readyCondition: JsonObject | null = null;

  private constructor(opts: KubeletOptions, runtime: PodRuntime) {
    this.api = opts.api;
    this.node = opts.node;
    this.runtime = runtime;
    this.logger = opts.logger ?? null;
    this.repoRoot = opts.repoRoot;
    this.leaseRenewMs = opts.leaseRenewMs ?? LEASE_RENEW_MS;
  }

  /** Creates the node's runtime, registers the Node and Lease, then starts realising its pods. */
  static async start(opts: KubeletOptions): Promise<Kubelet> {
    let kubelet: Kubelet | null = null;
    const repoRoot = opts.repoRoot;
    const runtime = await PodRuntime.forNode(opts.network, opts.node.name, {
      resolveImage: (image) => kubelet?.resolveImage(image) ?? null,
      onStatus: (ref, status) => kubelet?.onRuntimeStatus(ref, status),
      onEvent: (e) => kubelet?.onRuntimeEvent(e),
      ...(opts.logger ? { logger: opts.logger } : {}),
      ...(opts.backoff ? { backoff: opts.backoff } : {}),
      ...(repoRoot ? { repoRoot } : {}),
    });
    kubelet = new Kubelet(opts, runtime);
    try {
      await kubelet.registerNode();
      await kubelet.renewLease();
      await kubelet.resetStalePods();
      kubelet.run();
    } catch (err) {
      await runtime.shutdown({ gracePeriodSeconds: 0 }).catch(() => undefined);
      throw err;
    }
    return kubelet;
  }

  /** Pods this kubelet runs (namespace/name/uid). */
  pods(): PodRef[] {
    return this.runtime.list();
  }

  /**
   * Stops watching and heartbeating, then kills every pod (SIGTERM, SIGKILL after at most `gracePeriodSeconds`)
   * without writing anything more to the API: the objects keep their last status, as when a node goes away.
   */
  async stop(opts: { gracePeriodSeconds?: number } = {}): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    for (const u of this.unwatch) u();
    this.unwatch = [];
    for (const t of this.timers) clearInterval(t);
    for (const w of this.workers.values()) this.clearTimers(w);
    await this.runtime.shutdown(
      opts.gracePeriodSeconds === undefined ? {} : { gracePeriodSeconds: opts.gracePeriodSeconds },
    );
  }

  // ------------------------------------------------------------------------------------------- node + lease

  private nodeObject(): JsonObject {
    const n = this.node;
    return {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: {
        name: n.name,
        labels: {
          'kubernetes.io/hostname': n.name,
          'kubernetes.io/os': 'linux',
          'kubernetes.io/arch': goArch(),
          'beta.kubernetes.io/os': 'linux',
          'beta.kubernetes.io/arch': goArch(),
        },
        annotations: { 'node.alpha.kubernetes.io/ttl': '0', 'lab.ambient-ts.io/netns': n.netns },
      },
      spec: { podCIDR: n.podCidr, podCIDRs: [n.podCidr] },
    };
  }

  private nodeStatus(): JsonObject {
    const now = kubeTime();
    const cond = (type: string, status: string, reason: string, message: string): JsonObject => ({
      type,
      status,
      reason,
      message,
      lastHeartbeatTime: now,
      lastTransitionTime: now,
    });
    const ready = cond('Ready', 'True', 'KubeletReady', 'kubelet is posting ready status');
    if (this.readyCondition) ready.lastTransitionTime = this.readyCondition.lastTransitionTime as string;
    this.readyCondition = ready;
    const capacity = {
      cpu: String(cpus().length),
      memory: `${Math.floor(totalmem() / 1024)}Ki`,
      pods: '110',
      'ephemeral-storage': '20Gi',
    };
    return {
      capacity,
      allocatable: capacity,
      conditions: [
        cond(
          'MemoryPressure',
          'False',
          'KubeletHasSufficientMemory',
          'kubelet has sufficient memory available',
        ),
        cond('DiskPressure', 'False', 'KubeletHasNoDiskPressure', 'kubelet has no disk pressure'),
        cond('PIDPressure', 'False', 'KubeletHasSufficientPID', 'kubelet has sufficient PID available'),
        ready,
      ],
      addresses: [
        { type: 'InternalIP', address: this.node.ip },
        { type: 'Hostname', address: this.node.name },
      ],
      daemonEndpoints: { kubeletEndpoint: { Port: 10250 } },
      nodeInfo: {
        machineID: this.node.netns,
        systemUUID: this.node.netns,
        bootID: '',
        kernelVersion: release(),
        osImage: 'ambient-ts lab node',
        containerRuntimeVersion: 'lab://0.1.0',
        kubeletVersion: KUBELET_VERSION,
        kubeProxyVersion: KUBELET_VERSION,
        operatingSystem: 'linux',
        architecture: goArch(),
      },
    };
  }

  private async registerNode(): Promise<void> {
    const c = this.api.client;
    const want = this.nodeObject();
    let cur = c.get('v1/nodes', '', this.node.name);
    if (cur && str(spec(cur).podCIDR) !== this.node.podCidr) {
      // Another address plan than last time (podCIDR is immutable): start the node over.
      await c.delete('v1/nodes', '', this.node.name).catch(() => undefined);
      cur = null;
    }
    if (!cur) {
      cur = await c.create('v1/nodes', want);
    } else {
      const m = md(cur);
      cur = await c.update('v1/nodes', {
        ...cur,
        metadata: {
          ...m,
          labels: { ...(m.labels as JsonObject), ...(md(want).labels as JsonObject) },
          annotations: { ...(m.annotations as JsonObject), ...(md(want).annotations as JsonObject) },
        },
        spec: { ...spec(cur), ...spec(want) },
      });
    }
    this.nodeUid = str(md(cur).uid);
    await this.writeNodeStatus();
    this.logger?.info(
      { node: this.node.name, ip: this.node.ip, podCidr: this.node.podCidr },
      'node registered',
    );
  }

  private async writeNodeStatus(): Promise<void> {
    await this.api.client.update(
      'v1/nodes',
      { apiVersion: 'v1', kind: 'Node', metadata: { name: this.node.name }, status: this.nodeStatus() },
      'status',
    );
  }

  private async renewLease(): Promise<void> {
    const name = this.node.name;
    const lease = {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: {
        name,
        namespace: NODE_LEASE_NAMESPACE,
        ...(this.nodeUid
          ? { ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name, uid: this.nodeUid }] }
          : {}),
      },
      spec: { holderIdentity: name, leaseDurationSeconds: LEASE_DURATION_SECONDS, renewTime: microTime() },
    };
    // Leases create on PUT; no resourceVersion: the kubelet is the only writer of its lease.
    await this.api.client.update('coordination.k8s.io/v1/leases', lease);
  }

  // ------------------------------------------------------------------------------------------- pods

  private run(): void {
    const c = this.api.client;
    this.unwatch.push(
      c.watch('v1/pods', { fieldSelector: `spec.nodeName=${this.node.name}` }, (type, o) =>
        this.onPodEvent(type, o),
      ),
      c.watch('v1/configmaps', {}, (_t, o) => this.onDependency('configmaps', o)),
      c.watch('v1/secrets', {}, (_t, o) => this.onDependency('secrets', o)),
    );
    const lease = setInterval(() => {
      this.renewLease().catch((err: unknown) =>
        this.logger?.warn({ node: this.node.name, err: describeError(err) }, 'lease renewal failed'),
      );
    }, this.leaseRenewMs);
    const status = setInterval(() => {
      this.writeNodeStatus().catch((err: unknown) => {
        if (isCode(err, 404)) {
          // Someone deleted the Node: register again (kubelet does the same).
          this.registerNode().catch(() => undefined);
          return;
        }
        this.logger?.warn({ node: this.node.name, err: describeError(err) }, 'node status update failed');
      });
    }, NODE_STATUS_MS);
    lease.unref();
    status.unref();
    this.timers.push(lease, status);
  }

  private onPodEvent(type: string, o: JsonObject): void {
    if (this.stopping) return;
    const m = md(o);
    const uid = str(m.uid);
    if (!uid) return;
    let w = this.workers.get(uid);
    if (!w) {
      if (type === 'DELETED') return;
      w = {
        uid,
        namespace: str(m.namespace),
        name: str(m.name),
        pod: o,
        started: false,
        finished: false,
        chain: Promise.resolve(),
        retryTimer: null,
        retryMs: WAIT_RETRY_MIN_MS,
        refreshTimer: null,
        deps: new Set(),
        refreshing: false,
        pendingStatus: null,
        writing: false,
        lastWaiting: '',
        startTime: kubeTime(),
      };
      this.workers.set(uid, w);
    }
    w.pod = type === 'DELETED' ? null : o;
    this.kick(w);
  }

  private kick(w: Worker): void {
    w.chain = w.chain
      .then(() => this.sync(w))
      .catch((err: unknown) => {
        this.logger?.error(
          { pod: `${w.namespace}/${w.name}`, err: describeError(err) },
          'kubelet pod sync failed',
        );
      });
  }

  private clearTimers(w: Worker): void {
    if (w.retryTimer) clearTimeout(w.retryTimer);
    if (w.refreshTimer) clearTimeout(w.refreshTimer);
    w.retryTimer = null;
    w.refreshTimer = null;
  }

  private async sync(w: Worker): Promise<void> {
    if (this.stopping || w.finished) return;
    const pod = w.pod;
    if (!pod || md(pod).deletionTimestamp) {
      await this.terminate(w, pod);
      return;
    }
    if (w.started) return;
    const phase = str((pod.status as JsonObject | undefined)?.phase);
    if (phase === 'Succeeded' || phase === 'Failed') {
      // Finished before this kubelet started: nothing to run (kubelet does not restart terminal pods).
      return;
    }
    let resolved: Awaited<ReturnType<typeof resolvePod>>;
    try {
      resolved = await resolvePod(this.resolveContext(), pod);
    } catch (err) {
      this.waiting(
        w,
        pod,
        err instanceof PodWaiting
          ? err
          : new PodWaiting('CreateContainerConfigError', 'Failed', `Error: ${describeError(err)}`),
      );
      return;
    }
    if (this.stopping || !w.pod || md(w.pod).deletionTimestamp) {
      if (!this.stopping) this.kick(w);
      return;
    }
    if (w.retryTimer) clearTimeout(w.retryTimer);
    w.retryTimer = null;
    w.deps = resolved.deps;
    try {
      this.runtime.runPod(resolved.input);
    } catch (err) {
      // The runtime refused the pod (it validates what the API server may not): report, retry later.
      this.waiting(
        w,
        pod,
        new PodWaiting('CreateContainerConfigError', 'Failed', `Error: ${describeError(err)}`),
      );
      return;
    }
    w.started = true;
    this.scheduleRefresh(w, resolved.refreshAt);
  }

  private async terminate(w: Worker, pod: JsonObject | null): Promise<void> {
    this.clearTimers(w);
    const m = pod ? md(pod) : {};
    const grace =
      typeof m.deletionGracePeriodSeconds === 'number'
        ? m.deletionGracePeriodSeconds
        : FORCED_KILL_GRACE_SECONDS;
    if (w.started) await this.runtime.killPod(w.uid, { gracePeriodSeconds: grace });
    w.finished = true;
    this.workers.delete(w.uid);
    for (const k of this.events.keys()) if (k.startsWith(`${w.uid}\0`)) this.events.delete(k);
    if (pod && !this.stopping) {
      try {
        await this.api.client.delete('v1/pods', w.namespace, w.name, {
          gracePeriodSeconds: 0,
          preconditions: { uid: w.uid },
        });
      } catch (err) {
        if (!isCode(err, 404, 409)) throw err;
      }
    }
    this.logger?.debug({ pod: `${w.namespace}/${w.name}`, grace }, 'pod terminated');
  }

  /** The pod cannot start yet: report it (once per distinct message) and retry with back-off. */
  private waiting(w: Worker, pod: JsonObject, why: PodWaiting): void {
    if (why.message !== w.lastWaiting) {
      w.lastWaiting = why.message;
      this.logger?.info({ pod: `${w.namespace}/${w.name}`, reason: why.message }, 'pod waiting');
      this.event(
        { uid: w.uid, namespace: w.namespace, name: w.name },
        'Warning',
        why.eventReason,
        why.message,
      );
      const status = this.pendingStatus(pod, w.startTime, why.reason, why.message);
      w.pendingStatus = status as unknown as PodStatus;
      void this.flushStatus(w);
    }
    if (w.retryTimer) clearTimeout(w.retryTimer);
    w.retryTimer = setTimeout(() => {
      w.retryTimer = null;
      this.kick(w);
    }, w.retryMs);
    w.retryMs = Math.min(WAIT_RETRY_MAX_MS, w.retryMs * 2);
  }

  /** Status of a pod this kubelet has not started (yet): Pending, not Ready, containers waiting. */
  private pendingStatus(pod: JsonObject, since: string, reason: string, message?: string): JsonObject {
    const containers = (Array.isArray(spec(pod).containers) ? spec(pod).containers : []) as JsonObject[];
    const names = containers.map((c) => str(c.name));
    const now = since;
    return {
      phase: 'Pending',
      hostIP: this.node.ip,
      hostIPs: [{ ip: this.node.ip }],
      startTime: now,
      conditions: [
        { type: 'PodScheduled', status: 'True', lastProbeTime: null, lastTransitionTime: now },
        { type: 'Initialized', status: 'True', lastProbeTime: null, lastTransitionTime: now },
        {
          type: 'ContainersReady',
          status: 'False',
          reason: 'ContainersNotReady',
          message: `containers with unready status: [${names.join(' ')}]`,
          lastProbeTime: null,
          lastTransitionTime: now,
        },
        {
          type: 'Ready',
          status: 'False',
          reason: 'ContainersNotReady',
          message: `containers with unready status: [${names.join(' ')}]`,
          lastProbeTime: null,
          lastTransitionTime: now,
        },
      ],
      containerStatuses: containers.map((c) => ({
        name: str(c.name),
        image: str(c.image),
        imageID: '',
        ready: false,
        started: false,
        restartCount: 0,
        state: {
          waiting: { reason, ...(reason === 'CreateContainerConfigError' && message ? { message } : {}) },
        },
        lastState: {},
      })),
    };
  }

  /**
   * Pods bound to this node that a previous run of the lab left Running (their processes died with it): not
   * Ready and without IP until they run again, so no Service keeps sending traffic to their old addresses.
   */
  private async resetStalePods(): Promise<void> {
    const c = this.api.client;
    const now = kubeTime();
    for (const pod of c.list('v1/pods', null, { fieldSelector: `spec.nodeName=${this.node.name}` })) {
      const st = (pod.status ?? {}) as JsonObject;
      const phase = str(st.phase);
      if (phase === 'Succeeded' || phase === 'Failed' || md(pod).deletionTimestamp) continue;
      if (!st.podIP && phase !== 'Running') continue;
      try {
        await c.update(
          'v1/pods',
          {
            apiVersion: 'v1',
            kind: 'Pod',
            metadata: { name: str(md(pod).name), namespace: str(md(pod).namespace) },
            status: this.pendingStatus(pod, now, 'ContainerCreating'),
          },
          'status',
        );
      } catch (err) {
        if (!isCode(err, 404)) throw err;
      }
    }
  }

  private resolveContext(): ResolveContext {
    return {
      client: this.api.client,
      nodeName: this.node.name,
      nodeIp: this.node.ip,
      requestToken: async (req) => {
        const res = await this.api.api.createToken(req.namespace, req.serviceAccount, {
          apiVersion: 'authentication.k8s.io/v1',
          kind: 'TokenRequest',
          spec: {
            ...(req.audiences ? { audiences: req.audiences } : {}),
            expirationSeconds: req.expirationSeconds,
            boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: req.pod.name, uid: req.pod.uid },
          },
        });
        const status = (res.status ?? {}) as JsonObject;
        return {
          token: str(status.token),
          expiresAt: new Date(Date.parse(str(status.expirationTimestamp)) || Date.now() + 600_000),
        };
      },
    };
  }

  // ------------------------------------------------------------------------------------------- volumes refresh

  private scheduleRefresh(w: Worker, at: number | null): void {
    if (w.refreshTimer) clearTimeout(w.refreshTimer);
    w.refreshTimer = null;
    if (at === null || this.stopping) return;
    // setTimeout's limit is ~24.8 days; a token lives at most 2^32 s, so clamp and re-check then.
    const delay = Math.min(Math.max(1_000, at - Date.now()), 2 ** 31 - 1);
    w.refreshTimer = setTimeout(() => {
      w.refreshTimer = null;
      void this.refreshVolumes(w);
    }, delay);
    w.refreshTimer.unref();
  }

  private onDependency(kind: 'configmaps' | 'secrets', o: JsonObject): void {
    if (this.stopping) return;
    const key = `${kind}/${str(md(o).namespace)}/${str(md(o).name)}`;
    for (const w of this.workers.values()) {
      if (w.started && !w.finished && w.deps.has(key)) void this.refreshVolumes(w);
    }
  }

  /** Rewrites the pod's file volumes (new tokens, changed ConfigMaps/Secrets); keeps old contents on errors. */
  private async refreshVolumes(w: Worker): Promise<void> {
    if (w.refreshing || !w.pod || this.stopping || w.finished) return;
    w.refreshing = true;
    try {
      const res = await resolveVolumes(this.resolveContext(), w.pod);
      for (const v of res.volumes) {
        if (!('files' in v)) continue;
        try {
          this.runtime.updateVolumeFiles(w.uid, v.name, v.files);
        } catch {
          // the runtime has not prepared the volumes yet: the refresh below retries
          this.scheduleRefresh(w, Date.now() + 2_000);
          return;
        }
      }
      w.deps = res.deps;
      this.scheduleRefresh(w, res.refreshAt);
    } catch (err) {
      this.logger?.warn(
        { pod: `${w.namespace}/${w.name}`, err: describeError(err) },
        'volume refresh failed; keeping the previous contents',
      );
      this.scheduleRefresh(w, Date.now() + 10_000);
    } finally {
      w.refreshing = false;
    }
  }

  // ------------------------------------------------------------------------------------------- runtime callbacks

  private resolveImage(image: string): ResolvedImage | null {
    const r = lookupLabImage(image, this.repoRoot ?? REPO_ROOT);
    if (r.ok) {
      this.imageProblems.delete(image);
      return r.image;
    }
    if (this.imageProblems.get(image) !== r.reason)
      this.logger?.warn({ node: this.node.name, image, reason: r.reason }, 'image cannot run in the lab');
    this.imageProblems.set(image, r.reason);
    return null;
  }

  /** The runtime's generic pull message, with the lab's specific reason. */
  private pullMessage(image: string, message: string): string {
    const why = this.imageProblems.get(image);
    return why ? `Failed to pull image "${image}": ${why}` : message;
  }

  private onRuntimeStatus(ref: PodRef, status: PodStatus): void {
    if (this.stopping) return;
    const w = this.workers.get(ref.uid);
    if (!w || w.finished) return;
    w.pendingStatus = status;
    void this.flushStatus(w);
  }

  private onRuntimeEvent(e: RuntimeEvent): void {
    if (this.stopping) return;
    let message = e.message;
    if (e.reason === 'Failed' && message.startsWith('Failed to pull image "')) {
      const image = message.slice('Failed to pull image "'.length).split('"')[0] ?? '';
      message = this.pullMessage(image, message);
    }
    this.event(e.pod, e.type, e.reason, message, e.container);
  }

  /** Writes the newest status (one write in flight per pod; later statuses replace queued ones). */
  private async flushStatus(w: Worker): Promise<void> {
    if (w.writing) return;
    w.writing = true;
    try {
      while (w.pendingStatus && !this.stopping) {
        const status = w.pendingStatus;
        w.pendingStatus = null;
        await this.writeStatus(w, status);
      }
    } finally {
      w.writing = false;
    }
  }

  private async writeStatus(w: Worker, status: PodStatus): Promise<void> {
    for (let attempt = 0; attempt < STATUS_WRITE_ATTEMPTS; attempt++) {
      const cur = this.api.client.get('v1/pods', w.namespace, w.name);
      if (!cur || str(md(cur).uid) !== w.uid) return;
      const merged = this.mergeStatus(cur, status);
      try {
        await this.api.client.update(
          'v1/pods',
          {
            apiVersion: 'v1',
            kind: 'Pod',
            metadata: { name: w.name, namespace: w.namespace, resourceVersion: str(md(cur).resourceVersion) },
            status: merged,
          },
          'status',
        );
        return;
      } catch (err) {
        if (isCode(err, 409)) continue;
        if (isCode(err, 404)) return;
        this.logger?.warn(
          { pod: `${w.namespace}/${w.name}`, err: describeError(err) },
          'pod status write failed',
        );
        return;
      }
    }
  }

  private mergeStatus(cur: JsonObject, status: PodStatus): JsonObject {
    const old = (cur.status ?? {}) as JsonObject;
    const oldConds = (Array.isArray(old.conditions) ? old.conditions : []) as JsonObject[];
    const scheduled = oldConds.find((c) => c.type === 'PodScheduled' && c.status === 'True');
    const conditions = status.conditions.map((c) =>
      c.type === 'PodScheduled' && scheduled ? { ...c, lastTransitionTime: scheduled.lastTransitionTime } : c,
    );
    const fixPull = (cs: PodStatus['containerStatuses'] | undefined) =>
      cs?.map((c) =>
        c.state.waiting?.reason === 'ErrImagePull'
          ? {
              ...c,
              state: {
                waiting: {
                  ...c.state.waiting,
                  message: this.pullMessage(c.image, c.state.waiting.message ?? ''),
                },
              },
            }
          : c,
      );
    return {
      ...(status as unknown as JsonObject),
      conditions: conditions as unknown as JsonObject[],
      containerStatuses: fixPull(status.containerStatuses) as unknown as JsonObject[],
      ...(status.initContainerStatuses
        ? { initContainerStatuses: fixPull(status.initContainerStatuses) as unknown as JsonObject[] }
        : {}),
      qosClass: qosClass(cur),
    };
  }

  // ------------------------------------------------------------------------------------------- events

  private event(
    pod: PodRef,
    type: 'Normal' | 'Warning',
    reason: string,
    message: string,
    container?: string,
  ): void {
    const key = `${pod.uid}\0${reason}\0${message}`;
    const now = Date.now();
    const seen = this.events.get(key);
    const c = this.api.client;
    if (seen && now - seen.at < EVENT_DEDUP_MS) {
      seen.count++;
      seen.at = now;
      c.patch('v1/events', pod.namespace, seen.name, 'merge', {
        count: seen.count,
        lastTimestamp: kubeTime(),
      }).catch(() => undefined);
      return;
    }
    const name = `${pod.name}.${randomBytes(8).toString('hex')}`;
    this.events.set(key, { name, count: 1, at: now });
    c.create('v1/events', {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { name, namespace: pod.namespace },
      involvedObject: {
        apiVersion: 'v1',
        kind: 'Pod',
        namespace: pod.namespace,
        name: pod.name,
        uid: pod.uid,
        ...(container ? { fieldPath: `spec.containers{${container}}` } : {}),
      },
      reason,
      message,
      type,
      count: 1,
      firstTimestamp: kubeTime(),
      lastTimestamp: kubeTime(),
      source: { component: 'kubelet', host: this.node.name },
      reportingComponent: 'kubelet',
      reportingInstance: this.node.name,
    }).catch((err: unknown) => {
      // A namespace being deleted refuses new events; nothing to do about it.
      this.logger?.debug(
        { pod: `${pod.namespace}/${pod.name}`, err: describeError(err) },
        'event not recorded',
      );
    });
  }
}

const REPO_ROOT = new URL('../..', import.meta.url).pathname.replace(/\/$/, '');

function goArch(): string {
  const a = arch();
  return a === 'x64' ? 'amd64' : a === 'ia32' ? '386' : a;
}

/** Thrown (wrapped) when a kubelet cannot start; the message names the node. */
export function kubeletError(node: string, err: unknown): MeshError {
  return new MeshError('MESH_ERR_LAB_KUBELET', `kubelet ${node}: ${describeError(err)}`, { cause: err });
}
