/**
 * The agent's control loop: keeps caches of this node's pods and all namespaces from the KubeSource,
 * reconciles each pod's intent (labels) against its state (captured or not) through a retrying work queue,
 * and answers the plugin's ADD/DEL (istio/istio cni/pkg/nodeagent/informers.go and cni-watcher.go, facts
 * only). Every operation on one pod runs under that pod's lock, whichever path (plugin or informer) starts
 * it, so captures and releases of a pod never interleave.
 *
 * - A namespace gaining or losing `istio.io/dataplane-mode=ambient` re-queues its pods: running pods are
 *   captured or released without a restart.
 * - Failed retryable work (no ztunnel yet, API busy) is retried with exponential back-off (5 ms … 5 s,
 *   like Istio's queue) for as long as the agent runs; non-retryable failures wait for the next event.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { describeError } from '../../../pkg/errors/index.ts';
import { LogOnce } from '../../../pkg/telemetry/index.ts';
import type { CniAddEvent, CniAddReply, CniDelEvent } from '../protocol.ts';
import {
  type AmbientPolicy,
  ambientDecision,
  isTerminated,
  type NamespaceLike,
  type PodLike,
  podIps,
  podKey,
  podLabel,
  REDIRECTION_ENABLED,
  REDIRECTION_PENDING,
  redirectionState,
} from './ambient.ts';
import { CaptureError, type Dataplane } from './dataplane.ts';
import type { EventType, KubeHandlers } from './kube.ts';
import type { AgentMetrics } from './metrics.ts';
import { RetryableError } from './pluginserver.ts';
import { PodStateStore } from './state.ts';

const RETRY_BASE_MS = 5;
const RETRY_MAX_MS = 5_000;

/** Serialises async work per key. */
export class KeyedMutex {
  readonly #tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#tails.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => {});
    this.#tails.set(key, tail);
    tail.then(() => {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    });
    return next;
  }
}

export interface ControllerOptions {
  readonly dataplane: Dataplane;
  readonly state: PodStateStore;
  readonly policy: AmbientPolicy;
  readonly logger: Logger;
  readonly metrics: AgentMetrics;
  /** How long a plugin ADD waits for the informer to show the pod and its namespace. */
  readonly addPodWaitMs: number;
  /** Maps a CNI_NETNS path to the path the agent opens (hostPath mount translation). */
  readonly translateNetns: (path: string) => string;
}

export class Controller {
  readonly #o: ControllerOptions;
  readonly #pods = new Map<string, PodLike>();
  readonly #uidByKey = new Map<string, string>();
  /** Last state of deleted pods, until their deletion is reconciled. */
  readonly #tombstones = new Map<string, PodLike>();
  readonly #namespaces = new Map<string, NamespaceLike>();
  readonly #mutex = new KeyedMutex();
  readonly #attempts = new Map<string, number>();
  readonly #timers = new Map<string, NodeJS.Timeout>();
  readonly #queued = new Set<string>();
  readonly #changes = new EventEmitter();
  #running = false;
  #stopped = false;
  #inflight = 0;
  readonly #idle = new EventEmitter();
  /** A pod that cannot be captured fails again on each of its updates: say so once per pod and 10 min. */
  readonly #giveUpLog = new LogOnce(600_000);

  constructor(o: ControllerOptions) {
    this.#o = o;
    this.#changes.setMaxListeners(0);
  }

  /** Event handlers to give the KubeSource. */
  handlers(): KubeHandlers {
    return {
      pod: (type, pod) => this.#onPod(type, pod),
      namespace: (type, ns) => this.#onNamespace(type, ns),
    };
  }

  pod(uid: string): PodLike | null {
    return this.#pods.get(uid) ?? null;
  }

  #onPod(type: EventType, pod: PodLike): void {
    const uid = pod.metadata?.uid;
    if (!uid) return;
    this.#o.metrics.reconcileEvents.inc({ type });
    const key = podKey(pod.metadata?.namespace ?? '', pod.metadata?.name ?? '');
    if (type === 'delete') {
      this.#pods.delete(uid);
      if (this.#uidByKey.get(key) === uid) this.#uidByKey.delete(key);
      this.#tombstones.set(uid, pod);
    } else {
      this.#pods.set(uid, pod);
      this.#uidByKey.set(key, uid);
      this.#tombstones.delete(uid);
    }
    this.#changes.emit('change');
    this.enqueue(uid);
  }

  #onNamespace(type: EventType, ns: NamespaceLike): void {
    const name = ns.metadata?.name;
    if (!name) return;
    const before = this.#namespaces.get(name);
    if (type === 'delete') this.#namespaces.delete(name);
    else this.#namespaces.set(name, ns);
    this.#changes.emit('change');
    const label = (n: NamespaceLike | undefined): string | undefined =>
      n?.metadata?.labels?.['istio.io/dataplane-mode'];
    if (type === 'add' || label(before) !== label(ns)) {
      for (const [uid, pod] of this.#pods) if (pod.metadata?.namespace === name) this.enqueue(uid);
    }
  }

  /**
   * Re-adopts the pods a previous agent captured (annotation present, not terminated), before ztunnels
   * connect, so that they are in the first snapshot. Call once the caches are synced, before start().
   */
  async restoreCaptured(): Promise<number> {
    let restored = 0;
    for (const [uid, pod] of this.#pods) {
      const state = redirectionState(pod);
      if ((state !== REDIRECTION_ENABLED && state !== REDIRECTION_PENDING) || isTerminated(pod)) continue;
      const ok = await this.#mutex.run(uid, () =>
        this.#o.dataplane.restore(pod, state === REDIRECTION_ENABLED),
      );
      if (ok) restored++;
    }
    return restored;
  }

  /**
   * Removes state files of sandboxes whose pod is no longer on this node (deleted while no agent ran).
   * Only files older than `minAgeMs`: a brand-new pod's ADD may be written before the informer shows it.
   */
  async collectStaleState(minAgeMs: number): Promise<number> {
    let removed = 0;
    const cutoff = Date.now() - minAgeMs;
    for (const s of this.#o.state.list()) {
      if (this.#pods.has(s.uid) || Date.parse(s.updatedAt) > cutoff) continue;
      await this.#o.state.remove(s.uid);
      removed++;
    }
    return removed;
  }

  /** Starts processing the queue (events before this are queued). */
  start(): void {
    this.#running = true;
    for (const uid of [...this.#queued]) this.#schedule(uid, 0);
  }

  /** Stops scheduling; work already running finishes (see idle()). */
  stop(): void {
    this.#stopped = true;
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
    this.#queued.clear();
    if (this.#inflight === 0) this.#idle.emit('idle');
  }

  enqueue(uid: string): void {
    if (this.#queued.has(uid)) return;
    this.#queued.add(uid);
    if (this.#running) this.#schedule(uid, 0);
  }

  #schedule(uid: string, delayMs: number): void {
    if (this.#stopped || this.#timers.has(uid)) return;
    const timer = setTimeout(() => {
      this.#timers.delete(uid);
      this.#queued.delete(uid);
      this.#inflight++;
      this.#mutex
        .run(uid, () => this.#reconcile(uid))
        .then(
          () => this.#attempts.delete(uid),
          (err: unknown) => this.#failed(uid, err),
        )
        .finally(() => {
          this.#inflight--;
          if (this.#inflight === 0 && this.#queued.size === 0) this.#idle.emit('idle');
        });
    }, delayMs);
    this.#timers.set(uid, timer);
  }

  #failed(uid: string, err: unknown): void {
    const pod = this.#pods.get(uid) ?? this.#tombstones.get(uid);
    const retryable = !(err instanceof CaptureError) || err.retryable;
    if (!retryable) {
      this.#attempts.delete(uid);
      if (this.#giveUpLog.should(uid)) {
        this.#o.logger.error(
          { pod: pod ? podLabel(pod) : uid, err: describeError(err) },
          'giving up until the pod changes',
        );
      }
      return;
    }
    const n = (this.#attempts.get(uid) ?? 0) + 1;
    this.#attempts.set(uid, n);
    const delay = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** Math.min(n, 20));
    this.#o.logger.warn(
      { pod: pod ? podLabel(pod) : uid, attempt: n, delayMs: delay, err: describeError(err) },
      'will retry',
    );
    if (this.#queued.has(uid)) return;
    this.#queued.add(uid);
    this.#schedule(uid, delay);
  }

  /** Resolves when the queue is empty and nothing runs (tests). */
  idle(): Promise<void> {
    if (this.#inflight === 0 && this.#queued.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.once('idle', resolve));
  }

  async #reconcile(uid: string): Promise<void> {
    const dp = this.#o.dataplane;
    const live = this.#pods.get(uid);
    if (!live) {
      const gone = this.#tombstones.get(uid);
      if (!gone) return;
      const state = redirectionState(gone);
      if (dp.has(uid) || state === REDIRECTION_ENABLED || state === REDIRECTION_PENDING) {
        await dp.removePodFromMesh(gone, true);
      }
      this.#tombstones.delete(uid);
      await this.#o.state.remove(uid);
      return;
    }
    const ns = this.#namespaces.get(live.metadata?.namespace ?? '');
    if (!ns) return; // the namespace's event re-queues the pod
    const state = redirectionState(live);
    const enrolled = dp.has(uid) || state === REDIRECTION_ENABLED || state === REDIRECTION_PENDING;
    if (isTerminated(live)) {
      if (enrolled) await dp.removePodFromMesh(live, true);
      return;
    }
    const decision = ambientDecision(live, ns, this.#o.policy, false);
    if (!decision.ambient) {
      if (enrolled) {
        this.#o.logger.info({ pod: podLabel(live), reason: decision.reason }, 'releasing pod');
        await dp.removePodFromMesh(live, false);
      }
      return;
    }
    if (dp.isComplete(uid)) return;
    const ips = podIps(live);
    // No IP yet: the pod is still being set up and the plugin's ADD will capture it.
    if (ips.length === 0) return;
    this.#o.logger.info({ pod: podLabel(live), reason: decision.reason }, 'capturing pod');
    await dp.addPodToMesh(live, ips, null);
  }

  /** Waits until `check` returns non-null (re-checked on every cache change) or `ms` passed. */
  #waitFor<T>(check: () => T | null, ms: number): Promise<T | null> {
    const now = check();
    if (now !== null || ms <= 0) return Promise.resolve(now);
    return new Promise((resolve) => {
      const onChange = (): void => {
        const v = check();
        if (v !== null) {
          clearTimeout(timer);
          this.#changes.off('change', onChange);
          resolve(v);
        }
      };
      const timer = setTimeout(() => {
        this.#changes.off('change', onChange);
        resolve(check());
      }, ms);
      this.#changes.on('change', onChange);
    });
  }

  /** Plugin ADD: remember the sandbox (every pod), then capture it if it is ambient. */
  async onCniAdd(e: CniAddEvent): Promise<CniAddReply> {
    const key = podKey(e.podNamespace, e.podName);
    const wait = this.#o.addPodWaitMs;
    const uid = e.podUid ?? (await this.#waitFor(() => this.#uidByKey.get(key) ?? null, wait));
    if (!uid) throw new RetryableError(`pod ${key} is not (yet) known to the istio-cni agent`);
    if (!PodStateStore.validUid(uid)) throw new Error(`invalid pod uid ${JSON.stringify(uid)}`);
    const netns = this.#o.translateNetns(e.netns);
    return this.#mutex.run(uid, async () => {
      const before = this.#o.state.get(uid);
      await this.#o.state.set({
        uid,
        namespace: e.podNamespace,
        name: e.podName,
        containerId: e.containerId,
        netns,
        ips: [...e.ips],
        updatedAt: new Date().toISOString(),
        capture: before && before.netns === netns ? before.capture : null,
      });
      const pod = await this.#waitFor(() => this.#pods.get(uid) ?? null, wait);
      if (!pod) throw new RetryableError(`pod ${key} (uid ${uid}) is not (yet) known to the istio-cni agent`);
      const ns = await this.#waitFor(() => this.#namespaces.get(e.podNamespace) ?? null, wait);
      if (!ns)
        throw new RetryableError(`namespace ${e.podNamespace} is not (yet) known to the istio-cni agent`);
      const decision = ambientDecision(pod, ns, this.#o.policy, false);
      if (!decision.ambient) return { captured: false, reason: decision.reason };
      try {
        await this.#o.dataplane.addPodToMesh(pod, e.ips, netns);
      } catch (err) {
        if (err instanceof CaptureError && err.retryable) {
          // The informer path keeps trying (ztunnel may connect any time); the runtime retries too.
          this.enqueue(uid);
          throw new RetryableError(err.message);
        }
        throw err;
      }
      return { captured: true, reason: decision.reason };
    });
  }

  /** Plugin DEL: forget the sandbox's netns (the pod's deletion itself comes from the informer). */
  async onCniDel(e: CniDelEvent): Promise<void> {
    const byUid = e.podUid ? this.#o.state.get(e.podUid) : null;
    const sandbox = byUid ?? this.#o.state.byContainerId(e.containerId);
    if (!sandbox || sandbox.containerId !== e.containerId) return;
    await this.#mutex.run(sandbox.uid, async () => {
      if (this.#o.state.get(sandbox.uid)?.containerId === e.containerId)
        await this.#o.state.remove(sandbox.uid);
    });
  }
}
