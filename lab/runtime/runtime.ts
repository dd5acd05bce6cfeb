/**
 * PodRuntime: what a container runtime plus kubelet's pod workers do on one lab node, minus the API.
 * `runPod(pod)` realises a pod (sandbox netns + CNI ADD, volumes, init containers, containers, probes,
 * restarts with back-off) and reports every status change through `onStatus`; `killPod(uid)` stops it
 * (SIGTERM, SIGKILL after the grace period), runs CNI DEL and removes the sandbox.
 *
 * One async "pod worker" per pod drives it; each container has a supervisor loop. Every wait is abortable
 * (killPod aborts them), and every process is killed on killPod or shutdown.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describeError, MeshError } from '../../pkg/errors/index.ts';
import type { Logger } from '../../pkg/telemetry/index.ts';
import { netnsPath as pathOfNetns } from '../node/cleanup.ts';
import type { LabNetwork, LabNode } from '../node/network.ts';
import { names } from '../node/plan.ts';
import { StateRecorder } from '../node/state.ts';
import { DEFAULT_PATH, ip, run, tool } from '../node/sys.ts';
import { abortableSleep, Backoff, type BackoffOptions, KUBELET_BACKOFF } from './backoff.ts';
import {
  addNetworkList,
  CniError,
  type CniInvokeOptions,
  type CniRuntimeConf,
  delNetworkList,
  type JsonMap,
  loadNetworkList,
  resultIpv4,
} from './cni.ts';
import {
  ContainerProcess,
  capabilitySet,
  checkMountTarget,
  type ExitInfo,
  type LaunchSpec,
} from './launch.ts';
import { CriLogWriter, podLogDir, readCriLog } from './logs.ts';
import { NodeProber } from './prober.ts';
import { type ProbeOutcome, type ProbeType, ProbeWorker, resolveProbeTiming } from './probes.ts';
import {
  buildPodStatus,
  type ContainerRecord,
  kubeTime,
  newContainerRecord,
  type PodRecordView,
} from './status.ts';
import type {
  ContainerInput,
  ExecResult,
  FilesVolumeSource,
  ImageResolver,
  PodInput,
  PodRef,
  PodStatus,
  ProbeInput,
  ResolvedImage,
  RestartPolicy,
  RuntimeEvent,
} from './types.ts';
import {
  containerMounts,
  hostPathReady,
  type PreparedVolume,
  podDir,
  preparePodVolumes,
  writeFilesVolume,
  writePodFiles,
} from './volumes.ts';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const DEFAULT_GRACE_SECONDS = 30;
const DEFAULT_EXEC_TIMEOUT_MS = 30_000;
/** The pod's interface name inside its sandbox. */
export const POD_IFNAME = 'eth0';

export interface PodRuntimeOptions {
  readonly node: LabNode;
  /** The lab's name prefix (pod netns are `<prefix>pod-<id>`). */
  readonly prefix: string;
  /** The lab root: the runtime records what it creates in `<root>/state/runtime-<node>.json`. */
  readonly labRoot: string;
  readonly clusterDnsIp: string;
  readonly clusterDomain?: string;
  readonly resolveImage: ImageResolver;
  /** Called with the full status whenever it changes. */
  readonly onStatus?: (pod: PodRef, status: PodStatus) => void;
  /** Kubernetes-style events (Started, Killing, BackOff, FailedCreatePodSandBox, Unhealthy …). */
  readonly onEvent?: (event: RuntimeEvent) => void;
  readonly logger?: Logger;
  /** Restart back-off; default kubelet's 10 s doubling to 5 min. */
  readonly backoff?: BackoffOptions;
  /** Per CNI plugin call. */
  readonly cniTimeoutMs?: number;
  /** Base for repository-relative image entries; default this repository. */
  readonly repoRoot?: string;
  /** Node binary for `entry` images; default process.execPath (Node 24). */
  readonly nodePath?: string;
  /** Keep a pod's log directory after killPod (default: removed with the pod). */
  readonly keepLogs?: boolean;
}

interface Sandbox {
  readonly hostNetwork: boolean;
  readonly netnsName: string | null;
  readonly netnsPath: string;
  readonly podIp: string;
  readonly cniContainerId: string | null;
  readonly cniRuntime: CniRuntimeConf | null;
}

interface Instance {
  readonly id: string;
  readonly proc: ContainerProcess;
  readonly env: Readonly<Record<string, string>>;
  readonly probes: ProbeWorker[];
  readonly log: CriLogWriter;
  killedBy: 'liveness' | 'startup' | null;
}

interface Ctr {
  readonly spec: ContainerInput;
  readonly rec: ContainerRecord;
  readonly backoff: Backoff;
  instance: Instance | null;
  warned: boolean;
}

interface Pod {
  readonly spec: PodInput;
  readonly ref: PodRef;
  readonly restartPolicy: RestartPolicy;
  readonly createdAt: Date;
  readonly abort: AbortController;
  readonly init: Ctr[];
  readonly containers: Ctr[];
  readonly transitions: PodRecordView['transitions'];
  readonly sandboxBackoff: Backoff;
  sandbox: Sandbox | null;
  volumes: Map<string, PreparedVolume> | null;
  files: { hosts: string; resolvConf: string; hostname: string } | null;
  initialized: boolean;
  initFailed: boolean;
  lastEmitted: string;
  done: Promise<void>;
  terminating: Promise<void> | null;
}

type RunOutcome =
  | {
      readonly kind: 'exited';
      readonly exit: ExitInfo;
      readonly ranMs: number;
      readonly killedBy: string | null;
    }
  | { readonly kind: 'notStarted' };

function podShortId(uid: string): string {
  return createHash('sha256').update(uid).digest('hex').slice(0, 12);
}

function invalid(message: string): MeshError {
  return new MeshError('MESH_ERR_LAB_RUNTIME_INVALID', message);
}

function formatDelay(ms: number): string {
  if (ms >= 60_000 && ms % 60_000 === 0) return `${ms / 60_000}m0s`;
  if (ms >= 1000) return `${Math.round(ms / 100) / 10}s`;
  return `${ms}ms`;
}

/** Mount points (machine) that hold `path` when it is not on the root filesystem, or `path` itself under /tmp, /run. */
function hostMountsFor(paths: readonly string[]): string[] {
  let mountPoints: string[] = [];
  try {
    mountPoints = readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[4] ?? '')
      .filter((m) => m.startsWith('/') && m !== '/');
  } catch {
    mountPoints = [];
  }
  const out = new Set<string>();
  for (const p of paths) {
    if (p.startsWith('/tmp/') || p.startsWith('/run/')) {
      out.add(p);
      continue;
    }
    const holder = mountPoints
      .filter((m) => p === m || p.startsWith(`${m}/`))
      .sort((a, b) => b.length - a.length)[0];
    if (holder && !['/proc', '/sys', '/dev'].some((t) => holder === t || holder.startsWith(`${t}/`)))
      out.add(holder);
  }
  return [...out];
}

export class PodRuntime {
  readonly node: LabNode;
  private readonly opts: PodRuntimeOptions;
  private readonly logger: Logger | null;
  private readonly pods = new Map<string, Pod>();
  private readonly prober: NodeProber;
  private readonly state: StateRecorder;
  private readonly domain: string;
  private readonly repoRoot: string;
  private readonly nodePath: string;
  private readonly hostMounts: string[];
  private closed = false;

  private constructor(opts: PodRuntimeOptions) {
    this.opts = opts;
    this.node = opts.node;
    this.logger = opts.logger ?? null;
    this.domain = opts.clusterDomain ?? 'cluster.local';
    this.repoRoot = opts.repoRoot ?? REPO_ROOT;
    this.nodePath = opts.nodePath ?? process.execPath;
    this.hostMounts = hostMountsFor([this.repoRoot, dirname(this.nodePath)]);
    this.state = new StateRecorder(opts.labRoot, opts.prefix, `runtime-${opts.node.name}`);
    this.prober = new NodeProber({
      node: opts.node,
      hostMounts: this.hostMounts,
      nodePath: this.nodePath,
      ...(opts.logger ? { logger: opts.logger } : {}),
      onSpawn: (pid) => this.state.addPid(pid, `prober ${opts.node.name}`),
    });
  }

  /** A runtime for one node; starts the node's prober. */
  static async create(opts: PodRuntimeOptions): Promise<PodRuntime> {
    for (const t of ['setpriv', 'nsenter', 'unshare', 'chroot', 'mount', 'realpath', 'hostname', 'sh'])
      tool(t);
    const rt = new PodRuntime(opts);
    await rt.prober.start();
    return rt;
  }

  /** Convenience: a runtime for a node of a LabNetwork. */
  static forNode(
    network: LabNetwork,
    node: string | number,
    opts: Omit<PodRuntimeOptions, 'node' | 'prefix' | 'labRoot' | 'clusterDnsIp' | 'clusterDomain'>,
  ): Promise<PodRuntime> {
    return PodRuntime.create({
      ...opts,
      node: network.node(node),
      prefix: network.prefix,
      labRoot: network.root,
      clusterDnsIp: network.plan.clusterDnsIp,
      clusterDomain: network.clusterDomain,
    });
  }

  /** Starts realising a pod (idempotent per uid). Resolves at once; progress arrives through onStatus. */
  runPod(spec: PodInput): void {
    if (this.closed) throw new MeshError('MESH_ERR_LAB_RUNTIME_INVALID', 'runtime is shut down');
    if (this.pods.has(spec.uid)) return;
    validatePod(spec);
    const pod: Pod = {
      spec,
      ref: { uid: spec.uid, namespace: spec.namespace, name: spec.name },
      restartPolicy: spec.restartPolicy ?? 'Always',
      createdAt: new Date(),
      abort: new AbortController(),
      init: (spec.initContainers ?? []).map((c) => this.newCtr(c, true)),
      containers: spec.containers.map((c) => this.newCtr(c, false)),
      transitions: new Map(),
      sandboxBackoff: new Backoff(this.backoffOpts()),
      sandbox: null,
      volumes: null,
      files: null,
      initialized: (spec.initContainers ?? []).length === 0,
      initFailed: false,
      lastEmitted: '',
      done: Promise.resolve(),
      terminating: null,
    };
    this.pods.set(spec.uid, pod);
    this.emit(pod);
    pod.done = this.podWorker(pod).catch((err: unknown) => {
      this.logger?.error({ pod: podName(pod), err: describeError(err) }, 'BUG: pod worker failed');
    });
  }

  /** Current status of a pod, or null. */
  status(uid: string): PodStatus | null {
    const pod = this.pods.get(uid);
    return pod ? this.statusOf(pod) : null;
  }

  /** Pods this runtime runs. */
  list(): PodRef[] {
    return [...this.pods.values()].map((p) => p.ref);
  }

  /** Finds a pod by uid or by namespace/name. */
  find(which: string | { namespace: string; name: string }): PodRef | null {
    if (typeof which === 'string') return this.pods.get(which)?.ref ?? null;
    for (const p of this.pods.values()) {
      if (p.ref.namespace === which.namespace && p.ref.name === which.name) return p.ref;
    }
    return null;
  }

  /** The sandbox's network namespace path and pod IP (null until the sandbox exists). */
  sandbox(uid: string): { netnsPath: string; podIp: string; hostNetwork: boolean } | null {
    const s = this.pods.get(uid)?.sandbox;
    return s ? { netnsPath: s.netnsPath, podIp: s.podIp, hostNetwork: s.hostNetwork } : null;
  }

  /** Host pid of a running container's PID 1 (for nsenter-style tools), or null. */
  containerPid(uid: string, container: string): number | null {
    const pod = this.pods.get(uid);
    const c = pod && [...pod.containers, ...pod.init].find((x) => x.spec.name === container);
    return c?.instance?.proc.running && c.instance.proc.initPid > 0 ? c.instance.proc.initPid : null;
  }

  /** Where a container's current (or previous) log lives. */
  logFile(uid: string, container: string, previous = false): string | null {
    const pod = this.pods.get(uid);
    const c = pod && [...pod.containers, ...pod.init].find((x) => x.spec.name === container);
    if (!pod || !c) return null;
    const n = c.rec.restartCount - (previous ? 1 : 0);
    if (n < 0) return null;
    return join(
      podLogDir(this.node.dirs.podLogs, pod.ref.namespace, pod.ref.name, pod.ref.uid),
      container,
      `${n}.log`,
    );
  }

  /** A container's log text (CRI framing removed). */
  logs(uid: string, container: string, previous = false): string {
    const f = this.logFile(uid, container, previous);
    return f ? readCriLog(f) : '';
  }

  /** Rewrites a files volume (e.g. a refreshed projected service-account token); containers see it at once. */
  updateVolumeFiles(uid: string, volume: string, source: FilesVolumeSource): void {
    const pod = this.pods.get(uid);
    const v = pod?.volumes?.get(volume);
    if (!pod || !v || v.kind !== 'files') {
      throw new MeshError(
        'MESH_ERR_LAB_RUNTIME_NOT_FOUND',
        `pod ${uid} has no files volume ${JSON.stringify(volume)}`,
      );
    }
    writeFilesVolume(v.path, source);
  }

  /**
   * Where `exec` would run a command (for callers that run it themselves, e.g. with a terminal): the host pid
   * of a running container's PID 1 and that container's environment, or only the sandbox's network namespace
   * when no container runs. Null when the pod is unknown or has no sandbox yet.
   */
  execTarget(
    which: string | { namespace: string; name: string },
    container?: string,
  ): { container: string | null; pid: number | null; env: Record<string, string>; netnsPath: string } | null {
    const ref = this.find(which);
    const pod = ref ? this.pods.get(ref.uid) : undefined;
    if (!pod?.sandbox) return null;
    const ctr = container
      ? pod.containers.find((c) => c.spec.name === container)
      : (pod.containers.find((c) => c.instance?.proc.running) ?? pod.containers[0]);
    if (container && !ctr) return null;
    const inst = ctr?.instance?.proc.running && ctr.instance.proc.initPid > 0 ? ctr.instance : null;
    return {
      container: ctr?.spec.name ?? null,
      pid: inst ? inst.proc.initPid : null,
      env: inst ? { ...inst.env } : { PATH: DEFAULT_PATH },
      netnsPath: pod.sandbox.netnsPath,
    };
  }

  /**
   * Runs a command inside a pod: in a running container's namespaces (net, mount, uts, pid, root, cwd, env)
   * when one runs, else in the sandbox's network namespace only.
   */
  async exec(
    which: string | { namespace: string; name: string },
    argv: readonly string[],
    opts: { container?: string; timeoutMs?: number; input?: string } = {},
  ): Promise<ExecResult> {
    const ref = this.find(which);
    const pod = ref ? this.pods.get(ref.uid) : undefined;
    if (!pod)
      throw new MeshError(
        'MESH_ERR_LAB_RUNTIME_NOT_FOUND',
        `no pod ${JSON.stringify(which)} on ${this.node.name}`,
      );
    if (!pod.sandbox)
      throw new MeshError('MESH_ERR_LAB_RUNTIME_EXEC', `pod ${podName(pod)} has no sandbox yet`);
    if (argv.length === 0) throw invalid('exec needs a command');
    const ctr = opts.container
      ? pod.containers.find((c) => c.spec.name === opts.container)
      : (pod.containers.find((c) => c.instance?.proc.running) ?? pod.containers[0]);
    if (opts.container && !ctr) {
      throw new MeshError(
        'MESH_ERR_LAB_RUNTIME_NOT_FOUND',
        `pod ${podName(pod)} has no container ${opts.container}`,
      );
    }
    const inst = ctr?.instance?.proc.running && ctr.instance.proc.initPid > 0 ? ctr.instance : null;
    const args = inst
      ? [
          '--target',
          String(inst.proc.initPid),
          '--net',
          '--mount',
          '--uts',
          '--pid',
          '--root',
          '--wd',
          '--',
          ...argv,
        ]
      : [`--net=${pod.sandbox.netnsPath}`, '--', ...argv];
    const r = await run(tool('nsenter'), args, {
      allowFailure: true,
      timeoutMs: opts.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS,
      env: inst ? { ...inst.env } : { PATH: DEFAULT_PATH },
      ...(opts.input === undefined ? {} : { input: opts.input }),
    });
    return { exitCode: r.code, stdout: r.stdout, stderr: r.stderr, timedOut: r.timedOut };
  }

  /**
   * Stops a pod: SIGTERM to every container, SIGKILL after the grace period (the pod's, or the override),
   * then CNI DEL, the sandbox netns and the pod's directories. Resolves when everything is gone.
   */
  killPod(uid: string, opts: { gracePeriodSeconds?: number } = {}): Promise<void> {
    const pod = this.pods.get(uid);
    if (!pod) return Promise.resolve();
    if (!pod.terminating) pod.terminating = this.terminate(pod, opts.gracePeriodSeconds);
    return pod.terminating;
  }

  /** Kills every pod (in parallel) and stops the prober. */
  async shutdown(opts: { gracePeriodSeconds?: number } = {}): Promise<void> {
    this.closed = true;
    await Promise.all([...this.pods.keys()].map((uid) => this.killPod(uid, opts)));
    this.prober.close();
    this.state.drop();
  }

  // ---------------------------------------------------------------- internals

  private backoffOpts(): BackoffOptions {
    return this.opts.backoff ?? KUBELET_BACKOFF;
  }

  private newCtr(spec: ContainerInput, init: boolean): Ctr {
    return {
      spec,
      rec: newContainerRecord(spec.name, spec.image, init, {
        readiness: !!spec.readinessProbe && !init,
        startup: !!spec.startupProbe && !init,
      }),
      backoff: new Backoff(this.backoffOpts()),
      instance: null,
      warned: false,
    };
  }

  private event(
    pod: Pod,
    type: 'Normal' | 'Warning',
    reason: string,
    message: string,
    container?: string,
  ): void {
    this.logger?.[type === 'Normal' ? 'debug' : 'info']({ pod: podName(pod), reason, container }, message);
    this.opts.onEvent?.({ pod: pod.ref, type, reason, message, ...(container ? { container } : {}) });
  }

  private statusOf(pod: Pod): PodStatus {
    return buildPodStatus({
      restartPolicy: pod.restartPolicy,
      createdAt: pod.createdAt,
      hostIP: this.node.ip,
      podIP: pod.sandbox?.podIp ?? null,
      initialized: pod.initialized,
      initFailed: pod.initFailed,
      initContainers: pod.init.map((c) => c.rec),
      containers: pod.containers.map((c) => c.rec),
      transitions: pod.transitions,
    });
  }

  private emit(pod: Pod): void {
    const status = this.statusOf(pod);
    const text = JSON.stringify(status);
    if (text === pod.lastEmitted) return;
    pod.lastEmitted = text;
    try {
      this.opts.onStatus?.(pod.ref, status);
    } catch (err) {
      this.logger?.warn({ pod: podName(pod), err: describeError(err) }, 'onStatus callback threw');
    }
  }

  private async podWorker(pod: Pod): Promise<void> {
    const signal = pod.abort.signal;
    while (!signal.aborted) {
      try {
        await this.createSandbox(pod);
        break;
      } catch (err) {
        const msg = describeError(err);
        this.event(pod, 'Warning', 'FailedCreatePodSandBox', `Failed to create pod sandbox: ${msg}`);
        for (const c of [...pod.init, ...pod.containers]) {
          c.rec.waiting = { reason: c.rec.init ? 'PodInitializing' : 'ContainerCreating', message: msg };
        }
        this.emit(pod);
        await abortableSleep(pod.sandboxBackoff.retry(), signal);
      }
    }
    if (signal.aborted) return;
    try {
      pod.volumes = preparePodVolumes(this.node, pod.spec);
      pod.files = writePodFiles(this.node, pod.spec, pod.sandbox?.podIp ?? '', {
        clusterDnsIp: this.opts.clusterDnsIp,
        clusterDomain: this.domain,
      });
    } catch (err) {
      const msg = describeError(err);
      this.event(pod, 'Warning', 'FailedMount', msg);
      for (const c of pod.containers) c.rec.waiting = { reason: 'CreateContainerConfigError', message: msg };
      this.emit(pod);
      return;
    }
    for (const c of [...pod.init, ...pod.containers]) {
      if (c.rec.state === 'waiting' && c.rec.waiting.message)
        c.rec.waiting = { reason: c.rec.waiting.reason };
    }
    this.emit(pod);
    for (const c of pod.init) {
      const ok = await this.runInitContainer(pod, c);
      if (!ok) return;
    }
    pod.initialized = true;
    this.emit(pod);
    await Promise.all(pod.containers.map((c) => this.supervise(pod, c)));
  }

  private async createSandbox(pod: Pod): Promise<void> {
    if (pod.spec.hostNetwork) {
      pod.sandbox = {
        hostNetwork: true,
        netnsName: null,
        netnsPath: this.node.netnsPath,
        podIp: this.node.ip,
        cniContainerId: null,
        cniRuntime: null,
      };
      this.emit(pod);
      return;
    }
    const netnsName = names.pod(this.opts.prefix, podShortId(pod.spec.uid));
    const path = pathOfNetns(netnsName);
    this.state.addNetns(netnsName);
    if (existsSync(path)) await ip(null, 'netns', 'del', netnsName);
    await ip(null, 'netns', 'add', netnsName);
    const cniContainerId = randomBytes(32).toString('hex');
    const rt: CniRuntimeConf = {
      containerId: cniContainerId,
      netns: path,
      ifName: POD_IFNAME,
      args: [
        ['IgnoreUnknown', '1'],
        ['K8S_POD_NAMESPACE', pod.spec.namespace],
        ['K8S_POD_NAME', pod.spec.name],
        ['K8S_POD_INFRA_CONTAINER_ID', cniContainerId],
        ['K8S_POD_UID', pod.spec.uid],
      ],
      capabilityArgs: { portMappings: portMappings(pod.spec) },
    };
    let list: ReturnType<typeof loadNetworkList> | null = null;
    try {
      await ip(netnsName, 'link', 'set', 'lo', 'up');
      list = loadNetworkList(this.node.dirs.cniConf);
      const result = await addNetworkList(list, rt, await this.cniOpts());
      const podIp = resultIpv4(result);
      if (!podIp)
        throw new CniError(
          '(result)',
          'ADD',
          0,
          'the CNI result has no IPv4 address',
          JSON.stringify(result),
        );
      pod.sandbox = { hostNetwork: false, netnsName, netnsPath: path, podIp, cniContainerId, cniRuntime: rt };
      this.logger?.debug({ pod: podName(pod), podIp, netns: netnsName }, 'sandbox ready');
      this.emit(pod);
    } catch (err) {
      if (list) {
        const errors = await delNetworkList(list, rt, await this.cniOpts()).catch(() => []);
        for (const e of errors)
          this.logger?.warn({ pod: podName(pod), err: e.message }, 'CNI DEL after failed ADD');
      }
      await ip(null, 'netns', 'del', netnsName).catch(() => undefined);
      this.state.removeNetns(netnsName);
      throw err;
    }
  }

  /** Plugins run in the node (network namespace + filesystem view held by the node process). */
  private async cniOpts(): Promise<CniInvokeOptions> {
    return {
      binDirs: [{ host: this.node.dirs.cniBin, seen: '/opt/cni/bin' }],
      enter: { pid: await this.prober.viewPid() },
      cacheDir: this.node.dirs.cniCache,
      ...(this.opts.cniTimeoutMs === undefined ? {} : { timeoutMs: this.opts.cniTimeoutMs }),
    };
  }

  private async teardownSandbox(pod: Pod): Promise<void> {
    const s = pod.sandbox;
    if (!s || s.hostNetwork || !s.netnsName || !s.cniRuntime) return;
    try {
      const list = loadNetworkList(this.node.dirs.cniConf);
      const errors = await delNetworkList(list, s.cniRuntime, await this.cniOpts());
      for (const e of errors)
        this.logger?.warn({ pod: podName(pod), err: e.message }, 'CNI DEL failed (ignored)');
    } catch (err) {
      this.logger?.warn({ pod: podName(pod), err: describeError(err) }, 'CNI DEL skipped');
    }
    await ip(null, 'netns', 'del', s.netnsName).catch((err: unknown) => {
      this.logger?.warn({ pod: podName(pod), err: describeError(err) }, 'netns delete failed');
    });
    this.state.removeNetns(s.netnsName);
  }

  private async terminate(pod: Pod, graceOverride: number | undefined): Promise<void> {
    pod.abort.abort();
    const graceS = graceOverride ?? pod.spec.terminationGracePeriodSeconds ?? DEFAULT_GRACE_SECONDS;
    const stops: Promise<unknown>[] = [];
    for (const c of [...pod.init, ...pod.containers]) {
      const inst = c.instance;
      if (!inst?.proc.running) continue;
      for (const p of inst.probes) p.stop();
      this.event(pod, 'Normal', 'Killing', `Stopping container ${c.spec.name}`, c.spec.name);
      stops.push(inst.proc.stop(graceS * 1000));
    }
    await Promise.all(stops);
    await pod.done;
    await this.teardownSandbox(pod);
    rmSync(podDir(this.node, pod.spec.uid), { recursive: true, force: true });
    if (!this.opts.keepLogs) {
      rmSync(podLogDir(this.node.dirs.podLogs, pod.ref.namespace, pod.ref.name, pod.ref.uid), {
        recursive: true,
        force: true,
      });
    }
    this.emit(pod);
    this.pods.delete(pod.spec.uid);
  }

  private async runInitContainer(pod: Pod, c: Ctr): Promise<boolean> {
    const signal = pod.abort.signal;
    while (!signal.aborted) {
      const outcome = await this.runInstance(pod, c);
      if (signal.aborted) return false;
      if (outcome.kind === 'notStarted') {
        await abortableSleep(c.backoff.retry(), signal);
        continue;
      }
      if (outcome.exit.exitCode === 0) return true;
      if (pod.restartPolicy === 'Never') {
        pod.initFailed = true;
        this.emit(pod);
        return false;
      }
      await this.backOff(pod, c, outcome.ranMs);
    }
    return false;
  }

  /** False once the pod's network namespace is gone (someone destroyed the lab under a running runtime). */
  private sandboxAlive(pod: Pod): boolean {
    const s = pod.sandbox;
    return !!s && (s.hostNetwork ? existsSync(s.netnsPath) : s.netnsName !== null && existsSync(s.netnsPath));
  }

  private async supervise(pod: Pod, c: Ctr): Promise<void> {
    const signal = pod.abort.signal;
    while (!signal.aborted) {
      if (!this.sandboxAlive(pod)) {
        this.logger?.warn({ pod: podName(pod), container: c.spec.name }, 'sandbox is gone; not restarting');
        return;
      }
      const outcome = await this.runInstance(pod, c);
      if (signal.aborted) return;
      if (outcome.kind === 'notStarted') {
        await abortableSleep(c.backoff.retry(), signal);
        continue;
      }
      const failed = outcome.exit.exitCode !== 0 || outcome.killedBy !== null;
      const restart = pod.restartPolicy === 'Always' || (pod.restartPolicy === 'OnFailure' && failed);
      if (!restart) return;
      await this.backOff(pod, c, outcome.ranMs);
    }
  }

  /** Waits the container's back-off (status CrashLoopBackOff while it lasts). */
  private async backOff(pod: Pod, c: Ctr, ranMs: number): Promise<void> {
    const delay = c.backoff.next(ranMs);
    if (delay <= 0) return;
    const message = `back-off ${formatDelay(delay)} restarting failed container=${c.spec.name} pod=${pod.spec.name}_${pod.spec.namespace}(${pod.spec.uid})`;
    c.rec.lastTerminated = c.rec.terminated;
    c.rec.state = 'waiting';
    c.rec.waiting = { reason: 'CrashLoopBackOff', message };
    this.emit(pod);
    this.event(pod, 'Warning', 'BackOff', 'Back-off restarting failed container', c.spec.name);
    await abortableSleep(delay, pod.abort.signal);
  }

  private setWaiting(
    pod: Pod,
    c: Ctr,
    reason: NonNullable<ContainerRecord['waiting']>['reason'],
    message: string,
  ): void {
    if (c.rec.terminated) c.rec.lastTerminated = c.rec.terminated;
    c.rec.state = 'waiting';
    c.rec.waiting = { reason, message };
    c.rec.ready = false;
    c.rec.started = false;
    this.emit(pod);
  }

  /** Starts one instance of a container and waits for it to exit. */
  private async runInstance(pod: Pod, c: Ctr): Promise<RunOutcome> {
    const spec = c.spec;
    const image = this.opts.resolveImage(spec.image);
    if (!image) {
      const message = `Failed to pull image "${spec.image}": not a lab image (no program is registered for it)`;
      this.setWaiting(pod, c, 'ErrImagePull', message);
      this.event(pod, 'Warning', 'Failed', message, spec.name);
      return { kind: 'notStarted' };
    }
    let launch: LaunchSpec;
    let env: Record<string, string>;
    try {
      ({ launch, env } = this.launchSpec(pod, c, image));
    } catch (err) {
      const message = describeError(err);
      this.setWaiting(pod, c, 'CreateContainerConfigError', message);
      this.event(pod, 'Warning', 'Failed', `Error: ${message}`, spec.name);
      return { kind: 'notStarted' };
    }
    for (const v of pod.spec.volumes ?? []) {
      if (!('hostPath' in v) || !(spec.volumeMounts ?? []).some((m) => m.name === v.name)) continue;
      const problem = hostPathReady(this.node.hostPath(v.hostPath.path), v.hostPath.type);
      if (problem) {
        this.setWaiting(pod, c, 'CreateContainerError', problem);
        this.event(
          pod,
          'Warning',
          'FailedMount',
          `MountVolume.SetUp failed for volume "${v.name}" : ${problem}`,
        );
        return { kind: 'notStarted' };
      }
    }
    const restart = c.rec.containerID !== null;
    const restartCount = restart ? c.rec.restartCount + 1 : c.rec.restartCount;
    const logDir = join(
      podLogDir(this.node.dirs.podLogs, pod.ref.namespace, pod.ref.name, pod.ref.uid),
      spec.name,
    );
    const log = new CriLogWriter(logDir, restartCount);
    let proc: ContainerProcess;
    try {
      proc = await ContainerProcess.start(launch, (stream, chunk) => log.write(stream, chunk));
    } catch (err) {
      await log.close();
      const message = describeError(err);
      this.setWaiting(pod, c, 'RunContainerError', message);
      this.event(pod, 'Warning', 'Failed', `Error: ${message}`, spec.name);
      rmSync(launch.dir, { recursive: true, force: true });
      return { kind: 'notStarted' };
    }
    this.state.addPid(proc.pid, `container ${podName(pod)}/${spec.name}`);
    const id = launch.dir.split('/').pop() ?? '';
    if (restart) {
      c.rec.lastTerminated = c.rec.terminated;
      c.rec.restartCount = restartCount;
    }
    c.rec.containerID = `lab://${id}`;
    c.rec.state = 'running';
    c.rec.runningSince = proc.startedAt;
    c.rec.terminated = null;
    c.rec.started = !spec.startupProbe || c.rec.init;
    c.rec.ready = !c.rec.init && !spec.readinessProbe;
    const inst: Instance = { id, proc, env, probes: [], log, killedBy: null };
    c.instance = inst;
    this.emit(pod);
    this.event(pod, 'Normal', 'Started', `Started container ${spec.name}`, spec.name);
    if (pod.abort.signal.aborted) {
      void proc.stop((pod.spec.terminationGracePeriodSeconds ?? DEFAULT_GRACE_SECONDS) * 1000);
    } else if (!c.rec.init) {
      this.startProbes(pod, c, inst);
    }
    const exit = await proc.exited;
    for (const p of inst.probes) p.stop();
    await log.close();
    this.state.removePid(proc.pid);
    rmSync(launch.dir, { recursive: true, force: true });
    const finishedAt = new Date();
    c.rec.state = 'terminated';
    c.rec.ready = false;
    c.rec.started = false;
    c.rec.terminated = {
      exitCode: exit.exitCode,
      ...(exit.signal ? { signal: signalNumber(exit.signal) } : {}),
      reason: exit.exitCode === 0 ? 'Completed' : 'Error',
      startedAt: kubeTime(proc.startedAt),
      finishedAt: kubeTime(finishedAt),
      containerID: c.rec.containerID,
    };
    this.emit(pod);
    return {
      kind: 'exited',
      exit,
      ranMs: finishedAt.getTime() - proc.startedAt.getTime(),
      killedBy: inst.killedBy,
    };
  }

  private launchSpec(
    pod: Pod,
    c: Ctr,
    image: ResolvedImage,
  ): { launch: LaunchSpec; env: Record<string, string> } {
    const spec = c.spec;
    const sandbox = pod.sandbox;
    if (!sandbox || !pod.files || !pod.volumes)
      throw new MeshError('MESH_ERR_INTERNAL_BUG', 'BUG: no sandbox');
    let entrypoint: string[];
    let workingDir: string;
    let hostMounts = this.hostMounts;
    if ('entry' in image) {
      const entry = isAbsolute(image.entry) ? image.entry : join(this.repoRoot, image.entry);
      entrypoint = [this.nodePath, entry];
      // An entry outside the repository (a test fixture) must be visible in the container too.
      const extra = hostMountsFor([dirname(entry)]).filter((m) => !hostMounts.includes(m));
      if (extra.length) hostMounts = [...hostMounts, ...extra];
      workingDir = image.workingDir ?? this.repoRoot;
    } else {
      entrypoint = [...image.hostCommand];
      workingDir = image.workingDir ?? '/';
    }
    const argv = spec.command?.length
      ? [...spec.command, ...(spec.args ?? [])]
      : [...entrypoint, ...(spec.args ?? image.cmd ?? [])];
    if (argv.length === 0) throw invalid(`container ${spec.name}: no command specified`);
    const env: Record<string, string> = { PATH: DEFAULT_PATH, ...image.env };
    env.HOSTNAME = sandbox.hostNetwork ? this.node.name : (pod.spec.hostname ?? pod.spec.name);
    for (const e of spec.env ?? []) env[e.name] = e.fieldPath ? sandbox.podIp : e.value;
    const sc = spec.securityContext;
    if (
      !c.warned &&
      sc &&
      (sc.runAsUser !== undefined || sc.runAsGroup !== undefined || sc.readOnlyRootFilesystem)
    ) {
      c.warned = true;
      this.logger?.warn(
        { pod: podName(pod), container: spec.name },
        'securityContext runAsUser/runAsGroup/readOnlyRootFilesystem are not applied in the lab (runs as root)',
      );
    }
    const mounts = containerMounts(spec, pod.volumes, pod.files);
    for (const m of mounts) {
      const problem = checkMountTarget(m.target);
      if (problem) throw invalid(`container ${spec.name}: ${problem}`);
    }
    const id = randomBytes(16).toString('hex');
    return {
      env,
      launch: {
        dir: join(this.node.dirs.containers, id),
        netnsPath: sandbox.netnsPath,
        hostname: sandbox.hostNetwork ? this.node.name : (pod.spec.hostname ?? pod.spec.name),
        hostMounts,
        mounts,
        workingDir: spec.workingDir ?? workingDir,
        capabilities: capabilitySet(sc),
        argv,
        env,
      },
    };
  }

  private startProbes(pod: Pod, c: Ctr, inst: Instance): void {
    const defs: [ProbeType, ProbeInput | undefined][] = [
      ['startup', c.spec.startupProbe],
      ['readiness', c.spec.readinessProbe],
      ['liveness', c.spec.livenessProbe],
    ];
    for (const [type, probe] of defs) {
      if (!probe) continue;
      const timing = resolveProbeTiming(type, probe);
      const worker = new ProbeWorker({
        type,
        timing,
        containerStart: inst.proc.startedAt.getTime(),
        started: () => c.rec.started,
        run: () => this.runProbe(pod, c, probe, timing.timeoutMs),
        onResult: (ok, message) => this.onProbeResult(pod, c, inst, type, ok, message),
      });
      inst.probes.push(worker);
      worker.start();
    }
  }

  private onProbeResult(
    pod: Pod,
    c: Ctr,
    inst: Instance,
    type: ProbeType,
    ok: boolean,
    message: string,
  ): void {
    if (c.instance !== inst || !inst.proc.running) return;
    if (!ok) {
      const what = type === 'readiness' ? 'Readiness' : type === 'liveness' ? 'Liveness' : 'Startup';
      this.event(pod, 'Warning', 'Unhealthy', `${what} probe failed: ${message}`, c.spec.name);
    }
    if (type === 'readiness') {
      c.rec.ready = ok;
      this.emit(pod);
      return;
    }
    if (type === 'startup' && ok) {
      c.rec.started = true;
      c.rec.ready = !c.spec.readinessProbe;
      this.emit(pod);
      return;
    }
    if (!ok && !pod.abort.signal.aborted) {
      // Liveness or startup failure: kill the container; its supervisor restarts it per restartPolicy.
      inst.killedBy = type === 'liveness' ? 'liveness' : 'startup';
      const probe = type === 'liveness' ? c.spec.livenessProbe : c.spec.startupProbe;
      const grace =
        probe?.terminationGracePeriodSeconds ??
        pod.spec.terminationGracePeriodSeconds ??
        DEFAULT_GRACE_SECONDS;
      this.event(
        pod,
        'Normal',
        'Killing',
        `Container ${c.spec.name} failed ${type} probe, will be restarted`,
        c.spec.name,
      );
      c.rec.ready = false;
      this.emit(pod);
      void inst.proc.stop(grace * 1000);
    }
  }

  private async runProbe(pod: Pod, c: Ctr, probe: ProbeInput, timeoutMs: number): Promise<ProbeOutcome> {
    const podIp = pod.sandbox?.podIp ?? '';
    if (probe.httpGet) {
      const port = resolvePort(c.spec, probe.httpGet.port);
      if (port === null)
        return { ok: false, message: `port ${JSON.stringify(probe.httpGet.port)} not found` };
      const path = probe.httpGet.path ?? '/';
      const r = await this.prober.probe({
        kind: 'http',
        scheme: probe.httpGet.scheme ?? 'HTTP',
        host: probe.httpGet.host || podIp,
        port,
        path: path.startsWith('/') ? path : `/${path}`,
        headers: probe.httpGet.httpHeaders ?? [],
        timeoutMs,
      });
      return { ok: r.ok, message: r.message };
    }
    if (probe.tcpSocket) {
      const port = resolvePort(c.spec, probe.tcpSocket.port);
      if (port === null)
        return { ok: false, message: `port ${JSON.stringify(probe.tcpSocket.port)} not found` };
      const r = await this.prober.probe({
        kind: 'tcp',
        host: probe.tcpSocket.host || podIp,
        port,
        timeoutMs,
      });
      return { ok: r.ok, message: r.message };
    }
    if (probe.exec) {
      const r = await this.exec(pod.spec.uid, probe.exec.command, { container: c.spec.name, timeoutMs });
      if (r.timedOut) return { ok: false, message: `command timed out after ${timeoutMs} ms` };
      return { ok: r.exitCode === 0, message: (r.stdout + r.stderr).trim().slice(0, 1024) };
    }
    return { ok: false, message: 'probe has no handler' };
  }
}

function podName(pod: Pod): string {
  return `${pod.spec.namespace}/${pod.spec.name}`;
}

const SIGNALS: Readonly<Record<string, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGKILL: 9,
  SIGTERM: 15,
};
function signalNumber(sig: NodeJS.Signals): number {
  return SIGNALS[sig] ?? 0;
}

function resolvePort(c: ContainerInput, port: number | string): number | null {
  if (typeof port === 'number') return port > 0 && port < 65536 ? port : null;
  if (/^\d+$/.test(port)) return Number(port);
  const hit = (c.ports ?? []).find((p) => p.name === port);
  return hit ? hit.containerPort : null;
}

function portMappings(pod: PodInput): JsonMap[] {
  const out: JsonMap[] = [];
  for (const c of pod.containers) {
    for (const p of c.ports ?? []) {
      if (!p.hostPort) continue;
      out.push({
        hostPort: p.hostPort,
        containerPort: p.containerPort,
        protocol: (p.protocol ?? 'TCP').toLowerCase(),
        hostIP: p.hostIP ?? '',
      });
    }
  }
  return out;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

function validatePod(p: PodInput): void {
  if (!p.uid || !p.namespace || !p.name) throw invalid('a pod needs uid, namespace and name');
  if (!DNS_LABEL.test(p.namespace))
    throw invalid(`namespace ${JSON.stringify(p.namespace)} is not a DNS label`);
  if (p.name.includes('/') || p.name.includes('_'))
    throw invalid(`pod name ${JSON.stringify(p.name)} is not valid`);
  if (p.containers.length === 0) throw invalid(`pod ${p.namespace}/${p.name} has no containers`);
  const seen = new Set<string>();
  for (const c of [...(p.initContainers ?? []), ...p.containers]) {
    if (!c.name || !DNS_LABEL.test(c.name))
      throw invalid(`container name ${JSON.stringify(c.name)} is not a DNS label`);
    if (seen.has(c.name)) throw invalid(`container name ${c.name} is used twice`);
    seen.add(c.name);
    if (!c.image) throw invalid(`container ${c.name} has no image`);
  }
}
