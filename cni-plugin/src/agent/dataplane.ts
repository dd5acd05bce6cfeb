/**
 * Capture and release of one pod, in Istio's order (istio/istio cni/pkg/nodeagent/net_linux.go and
 * meshdataplane_linux.go, facts only):
 *
 *   add:     open the pod netns → apply in-pod rules (a failure here is final: nothing was changed that
 *            matters, the pod is not annotated) → keep the netns in the snapshot → send `add` to ztunnel and
 *            wait for its ack (ztunnel now has listeners in the pod netns) → SNAT its probes on the host →
 *            annotate `ambient.istio.io/redirection: enabled`. Only then does the plugin ADD succeed.
 *            If ztunnel is absent or does not ack, the rules stay, the pod stays in the snapshot (a ztunnel
 *            that connects later gets it), the pod is annotated `pending` and the caller retries.
 *   release: host probe SNAT off → in-pod rules off (unless the pod is gone) → `del` to every ztunnel →
 *            annotation removed.
 *
 * Callers serialise operations per pod (Controller's keyed mutex). Errors are `CaptureError`s that say
 * whether retrying can help.
 */
import type { Logger } from 'pino';
import { describeError, isMeshError, MeshError } from '../../../pkg/errors/index.ts';
import { closeFd, netnsInode, openNetns } from '../../../pkg/netns/index.ts';
import type { CaptureRecord, Family, HostProbes, PodRuleOptions } from '../rules/index.ts';
import {
  BYPASS_INBOUND_ANNOTATION,
  DNS_CAPTURE_ANNOTATION,
  type PodLike,
  podIps,
  podLabel,
  REDIRECTION_ENABLED,
  REDIRECTION_PENDING,
} from './ambient.ts';
import type { KubeSource } from './kube.ts';
import type { AgentMetrics } from './metrics.ts';
import type { PodStateStore } from './state.ts';
import type { ZdsServer, ZdsWorkload } from './zds.ts';

/** The part of RulesEngine the dataplane uses (a fake in unit tests). */
export interface PodRules {
  applyPod(netns: string, opts: PodRuleOptions, prior: CaptureRecord | null): Promise<CaptureRecord>;
  removePod(netns: string, record: CaptureRecord | null): Promise<void>;
  syncHost(netns: string | null, families: readonly Family[], probes: HostProbes): Promise<void>;
  removeHost(netns: string | null): Promise<void>;
}

export class CaptureError extends Error {
  readonly retryable: boolean;
  constructor(message: string, retryable: boolean, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.retryable = retryable;
  }
}

export interface DataplaneOptions {
  readonly rules: PodRules;
  readonly zds: ZdsServer;
  readonly kube: KubeSource;
  readonly state: PodStateStore;
  readonly logger: Logger;
  readonly metrics: AgentMetrics;
  readonly dnsCapture: boolean;
  readonly enableIpv6: boolean;
  readonly hostProbeSnat: boolean;
  readonly hostNetns: string | null;
  readonly ztunnelWaitOnAddMs: number;
}

interface Captured {
  readonly uid: string;
  readonly workload: ZdsWorkload;
  readonly netnsPath: string;
  readonly inode: number;
  readonly ips: readonly string[];
  /** ztunnel acked and the annotation says enabled: nothing left to do. */
  complete: boolean;
}

function stripPrefix(ip: string): string {
  const i = ip.indexOf('/');
  return i === -1 ? ip : ip.slice(0, i);
}

/** The path other processes (nsenter) use to reach a netns we hold open. */
function fdPath(fd: number): string {
  return `/proc/${process.pid}/fd/${fd}`;
}

function boolAnnotation(pod: PodLike, key: string): boolean | null {
  const v = pod.metadata?.annotations?.[key];
  if (v === undefined) return null;
  return v === 'true' || v === '1' || v === 'yes' || v === 'on';
}

export class Dataplane {
  readonly #o: DataplaneOptions;
  readonly #captured = new Map<string, Captured>();
  readonly #probes = new Map<string, readonly string[]>();
  #hostSync: Promise<void> | null = null;
  #hostDirty = false;

  constructor(o: DataplaneOptions) {
    this.#o = o;
  }

  has(uid: string): boolean {
    return this.#captured.has(uid);
  }

  isComplete(uid: string): boolean {
    return this.#captured.get(uid)?.complete === true;
  }

  get size(): number {
    return this.#captured.size;
  }

  /** What a connecting ztunnel receives (Istio sends its whole pod cache, pending pods included). */
  snapshot(): ZdsWorkload[] {
    return [...this.#captured.values()].map((c) => c.workload);
  }

  /** uid, pod and netns of every captured pod (debug endpoint). */
  describe(): Array<{ uid: string; pod: string; netns: string; ips: readonly string[]; complete: boolean }> {
    return [...this.#captured.values()].map((c) => ({
      uid: c.uid,
      pod: `${c.workload.info.namespace}/${c.workload.info.name}`,
      netns: c.netnsPath,
      ips: c.ips,
      complete: c.complete,
    }));
  }

  #ruleOptions(pod: PodLike, ips: readonly string[]): PodRuleOptions {
    const families = new Set<Family>();
    for (const ip of ips) families.add(ip.includes(':') ? 6 : 4);
    if (!this.#o.enableIpv6) families.delete(6);
    if (families.size === 0) families.add(4);
    return {
      families: [...families],
      dnsCapture: boolAnnotation(pod, DNS_CAPTURE_ANNOTATION) ?? this.#o.dnsCapture,
      bypassInbound: boolAnnotation(pod, BYPASS_INBOUND_ANNOTATION) ?? false,
    };
  }

  /** Opens the pod's netns: the given path, the one we hold, or the one the state file remembers. */
  #openNetns(
    uid: string,
    netnsPath: string | null,
  ): { fd: number; path: string; inode: number; fresh: boolean } {
    const held = this.#captured.get(uid);
    const path = netnsPath ?? held?.netnsPath ?? this.#o.state.get(uid)?.netns ?? null;
    if (path === null) {
      throw new CaptureError(
        new MeshError(
          'MESH_ERR_CNI_NETNS_UNKNOWN',
          `no network namespace known for pod uid ${uid}`,
        ).toString(),
        false,
      );
    }
    if (held && held.netnsPath === path) {
      return { fd: held.workload.netnsFd, path, inode: held.inode, fresh: false };
    }
    try {
      const fd = openNetns(path);
      return { fd, path, inode: netnsInode(fd), fresh: true };
    } catch (err) {
      throw new CaptureError(`opening netns ${path}: ${describeError(err)}`, false, err);
    }
  }

  /** Adds a pod to the mesh (see the file comment for the order). Throws CaptureError. */
  async addPodToMesh(pod: PodLike, ipsIn: readonly string[], netnsPath: string | null): Promise<void> {
    const uid = pod.metadata?.uid ?? '';
    const log = this.#o.logger.child({ pod: podLabel(pod), uid });
    const ips = (ipsIn.length > 0 ? ipsIn : podIps(pod)).map(stripPrefix);
    const ns = this.#openNetns(uid, netnsPath);
    const previous = this.#captured.get(uid) ?? null;
    const sandbox = this.#o.state.get(uid);
    const prior = sandbox && sandbox.netns === ns.path ? sandbox.capture : null;
    let record: CaptureRecord | null = null;
    try {
      // Rules we applied to this very netns are in place: a retry only needs ztunnel and the annotation.
      if (ns.fresh || !previous) {
        record = await this.#o.rules.applyPod(fdPath(ns.fd), this.#ruleOptions(pod, ips), prior);
      }
    } catch (err) {
      if (ns.fresh) closeFd(ns.fd);
      this.#o.metrics.captures.inc({ result: 'failed' });
      log.error(
        { code: isMeshError(err) ? err.code : undefined, err: describeError(err) },
        'applying in-pod rules failed',
      );
      throw new CaptureError(`applying in-pod rules for ${podLabel(pod)}: ${describeError(err)}`, false, err);
    }
    if (record && sandbox && sandbox.netns === ns.path) await this.#o.state.setCapture(uid, record);
    const workload: ZdsWorkload = {
      uid,
      info: {
        name: pod.metadata?.name ?? '',
        namespace: pod.metadata?.namespace ?? '',
        serviceAccount: pod.spec?.serviceAccountName || 'default',
      },
      netnsFd: ns.fd,
    };
    this.#captured.set(uid, { uid, workload, netnsPath: ns.path, inode: ns.inode, ips, complete: false });
    if (previous && previous.workload.netnsFd !== ns.fd) closeFd(previous.workload.netnsFd);
    this.#o.metrics.podsCaptured.set(this.#captured.size);
    if (record)
      log.debug(
        { netns: ns.path, backend: record.backend, families: record.families },
        'in-pod rules applied',
      );

    try {
      await this.#o.zds.waitForConnection(this.#o.ztunnelWaitOnAddMs);
      await this.#o.zds.podAdded(workload);
    } catch (err) {
      this.#o.metrics.captures.inc({ result: 'pending' });
      log.warn(
        { err: describeError(err) },
        'ztunnel did not take the pod yet; annotating pending, will retry',
      );
      await this.#annotate(pod, REDIRECTION_PENDING).catch(() => {});
      throw new CaptureError(`ztunnel did not ack pod ${podLabel(pod)}: ${describeError(err)}`, true, err);
    }
    await this.#setProbes(uid, ips);
    try {
      await this.#annotate(pod, REDIRECTION_ENABLED);
    } catch (err) {
      this.#o.metrics.captures.inc({ result: 'retry' });
      throw new CaptureError(`annotating ${podLabel(pod)}: ${describeError(err)}`, true, err);
    }
    const entry = this.#captured.get(uid);
    if (entry) entry.complete = true;
    this.#o.metrics.captures.inc({ result: 'ok' });
    log.info({ netns: ns.path, ips }, 'pod captured');
  }

  /**
   * Re-adopts a pod a previous agent captured (startup): re-applies the rules idempotently from the
   * recorded state and puts it in the snapshot without sending it (a ztunnel gets it on connect).
   */
  async restore(pod: PodLike, complete: boolean): Promise<boolean> {
    const uid = pod.metadata?.uid ?? '';
    const sandbox = this.#o.state.get(uid);
    const log = this.#o.logger.child({ pod: podLabel(pod), uid });
    if (!sandbox) {
      log.warn(
        { code: 'MESH_ERR_CNI_NETNS_UNKNOWN' },
        'captured pod has no state file; it cannot be re-adopted',
      );
      return false;
    }
    let fd: number;
    try {
      fd = openNetns(sandbox.netns);
    } catch (err) {
      log.warn({ netns: sandbox.netns, err: describeError(err) }, 'netns of a captured pod is gone');
      return false;
    }
    const ips = sandbox.ips.length > 0 ? sandbox.ips.map(stripPrefix) : podIps(pod);
    try {
      const record = await this.#o.rules.applyPod(fdPath(fd), this.#ruleOptions(pod, ips), sandbox.capture);
      await this.#o.state.setCapture(uid, record);
    } catch (err) {
      closeFd(fd);
      log.error({ err: describeError(err) }, 'reconciling the rules of a captured pod failed');
      return false;
    }
    const workload: ZdsWorkload = {
      uid,
      info: {
        name: pod.metadata?.name ?? '',
        namespace: pod.metadata?.namespace ?? '',
        serviceAccount: pod.spec?.serviceAccountName || 'default',
      },
      netnsFd: fd,
    };
    this.#captured.set(uid, {
      uid,
      workload,
      netnsPath: sandbox.netns,
      inode: netnsInode(fd),
      ips,
      complete,
    });
    this.#probes.set(uid, ips);
    this.#o.metrics.podsCaptured.set(this.#captured.size);
    log.info({ netns: sandbox.netns }, 'captured pod re-adopted');
    return true;
  }

  /** Removes a pod from the mesh. `isDelete`: the pod is gone, so its netns needs no cleaning. */
  async removePodFromMesh(pod: PodLike, isDelete: boolean): Promise<void> {
    const uid = pod.metadata?.uid ?? '';
    const log = this.#o.logger.child({ pod: podLabel(pod), uid });
    await this.#setProbes(uid, null);
    const entry = this.#captured.get(uid) ?? null;
    const sandbox = this.#o.state.get(uid);
    try {
      if (!isDelete) {
        let fd: number | null = entry?.workload.netnsFd ?? null;
        let opened = false;
        if (fd === null && sandbox) {
          try {
            fd = openNetns(sandbox.netns);
            opened = true;
          } catch {
            fd = null;
          }
        }
        if (fd === null) {
          log.warn('netns of the pod is gone; no in-pod rules to remove');
        } else {
          try {
            await this.#o.rules.removePod(fdPath(fd), sandbox?.capture ?? null);
          } finally {
            if (opened) closeFd(fd);
          }
        }
      }
      await this.#o.zds.podDeleted(uid);
    } catch (err) {
      this.#o.metrics.releases.inc({ result: 'retry' });
      throw new CaptureError(`releasing ${podLabel(pod)}: ${describeError(err)}`, true, err);
    }
    if (entry) {
      this.#captured.delete(uid);
      closeFd(entry.workload.netnsFd);
      this.#o.metrics.podsCaptured.set(this.#captured.size);
    }
    if (sandbox) await this.#o.state.setCapture(uid, null);
    if (!isDelete) {
      try {
        await this.#annotate(pod, null);
      } catch (err) {
        this.#o.metrics.releases.inc({ result: 'retry' });
        throw new CaptureError(
          `removing the annotation of ${podLabel(pod)}: ${describeError(err)}`,
          true,
          err,
        );
      }
    }
    this.#o.metrics.releases.inc({ result: 'ok' });
    log.info({ deleted: isDelete }, 'pod released');
  }

  async #annotate(pod: PodLike, value: string | null): Promise<void> {
    await this.#o.kube.patchRedirection(pod.metadata?.namespace ?? '', pod.metadata?.name ?? '', value);
  }

  /** Updates the pod's probe SNAT addresses (null removes) and syncs the host rules. */
  async #setProbes(uid: string, ips: readonly string[] | null): Promise<void> {
    const before = this.#probes.get(uid);
    if (ips === null) {
      if (!before) return;
      this.#probes.delete(uid);
    } else {
      if (before && before.join() === ips.join()) return;
      this.#probes.set(uid, ips);
    }
    await this.syncHost();
  }

  /**
   * Programs the host probe SNAT for the current captured pods. Concurrent calls coalesce; the promise
   * resolves only after a sync that started after the call (so it includes the caller's change).
   */
  syncHost(): Promise<void> {
    if (!this.#o.hostProbeSnat) return Promise.resolve();
    this.#hostDirty = true;
    this.#hostSync ??= (async () => {
      try {
        while (this.#hostDirty) {
          this.#hostDirty = false;
          const v4: string[] = [];
          const v6: string[] = [];
          for (const ips of this.#probes.values())
            for (const ip of ips) (ip.includes(':') ? v6 : v4).push(ip);
          const withV6 = v6.length > 0 && this.#o.enableIpv6;
          await this.#o.rules.syncHost(this.#o.hostNetns, withV6 ? [4, 6] : [4], {
            v4,
            v6: withV6 ? v6 : [],
          });
        }
      } finally {
        this.#hostSync = null;
      }
    })();
    return this.#hostSync;
  }

  async removeHost(): Promise<void> {
    if (this.#o.hostProbeSnat) await this.#o.rules.removeHost(this.#o.hostNetns);
  }

  /** Closes every netns fd (shutdown). The in-pod rules stay: pods remain captured for the next agent. */
  close(): void {
    for (const c of this.#captured.values()) closeFd(c.workload.netnsFd);
    this.#captured.clear();
  }
}
