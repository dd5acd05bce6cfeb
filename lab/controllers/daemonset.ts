/**
 * DaemonSet controller: one pod per eligible node (nodeSelector, required node affinity and taints against the
 * template's tolerations plus the ones kube adds to daemon pods). Pods carry node affinity on
 * `metadata.name` and are bound by the scheduler, like kube ≥ 1.12. Template changes roll out with
 * RollingUpdate or wait for manual deletion (OnDelete); the revision is the `controller-revision-hash` label.
 * RollingUpdate has kube's two modes:
 * - maxUnavailable (maxSurge 0): old pods are deleted, up to maxUnavailable nodes at a time, and replaced;
 * - maxSurge > 0 (kube requires maxUnavailable 0 then): the new pod starts on the node *beside* the old one,
 *   and the old one is deleted only once the new one is available, so the node never lacks a Ready daemon
 *   pod (how ztunnel hands over its pods' listeners). At most maxSurge nodes wait for a new pod at a time; a
 *   node whose old pod is not available is replaced at once, outside that budget.
 * Pods on nodes that no longer qualify are deleted. Not modelled: ControllerRevision objects, history limits.
 */
import { clone, isObject, type JsonObject, objAt, stableStringify, stringMap } from '../apiserver/json.ts';
import type { StoreEvent } from '../apiserver/store.ts';
import { podTemplateHash, resolveIntOrPercent } from './deployment.ts';
import { RequeueAfter, type WorkQueue } from './queue.ts';
import { nodeFits } from './scheduler.ts';
import {
  type Controller,
  type ControllerContext,
  conditions,
  controlledBy,
  deleting,
  enqueueOwner,
  int,
  K,
  labelsOf,
  md,
  nameOf,
  newControllerRef,
  nsKey,
  podActive,
  podAvailable,
  podReady,
  splitKey,
} from './util.ts';

export const REVISION_HASH = 'controller-revision-hash';
const COMPONENT = 'daemonset-controller';

/** Tolerations the DaemonSet controller adds to every daemon pod (kube's util.AddOrUpdateDaemonPodTolerations). */
function daemonTolerations(hostNetwork: boolean): JsonObject[] {
  const t: JsonObject[] = [
    { key: 'node.kubernetes.io/not-ready', operator: 'Exists', effect: 'NoExecute' },
    { key: 'node.kubernetes.io/unreachable', operator: 'Exists', effect: 'NoExecute' },
    { key: 'node.kubernetes.io/disk-pressure', operator: 'Exists', effect: 'NoSchedule' },
    { key: 'node.kubernetes.io/memory-pressure', operator: 'Exists', effect: 'NoSchedule' },
    { key: 'node.kubernetes.io/pid-pressure', operator: 'Exists', effect: 'NoSchedule' },
    { key: 'node.kubernetes.io/unschedulable', operator: 'Exists', effect: 'NoSchedule' },
  ];
  if (hostNetwork)
    t.push({ key: 'node.kubernetes.io/network-unavailable', operator: 'Exists', effect: 'NoSchedule' });
  return t;
}

/** Oldest first (creation time, then name: pods made in the same second keep a stable order). */
function byAge(a: JsonObject, b: JsonObject): number {
  return (
    String(md(a).creationTimestamp).localeCompare(String(md(b).creationTimestamp)) ||
    nameOf(a).localeCompare(nameOf(b))
  );
}

/**
 * Whether `a` is older than `b`. Creation times have one-second resolution, so a surge pod made in the same
 * second as the pod it replaces ties with it: the one of an older revision is then the older one.
 */
function olderForStatus(a: JsonObject, b: JsonObject, hash: string): boolean {
  const t = String(md(a).creationTimestamp).localeCompare(String(md(b).creationTimestamp));
  if (t !== 0) return t < 0;
  const aOld = labelsOf(a)[REVISION_HASH] !== hash;
  const bOld = labelsOf(b)[REVISION_HASH] !== hash;
  if (aOld !== bOld) return aOld;
  return nameOf(a) < nameOf(b);
}

/** ms until the first Ready-but-not-yet-available pod becomes available (minReadySeconds), or null. */
function untilAvailable(pods: readonly JsonObject[], minReadySeconds: number, now: number): number | null {
  if (minReadySeconds <= 0) return null;
  let first: number | null = null;
  for (const p of pods) {
    if (!podReady(p) || podAvailable(p, minReadySeconds, now)) continue;
    const since = Date.parse(String(conditions(p).find((c) => c.type === 'Ready')?.lastTransitionTime));
    if (Number.isNaN(since)) continue;
    const at = since + minReadySeconds * 1000 - now;
    first = first === null ? at : Math.min(first, at);
  }
  return first === null ? null : Math.max(first, 10);
}

function targetNode(pod: JsonObject): string | null {
  const nodeName = objAt(pod, 'spec')?.nodeName;
  if (typeof nodeName === 'string' && nodeName) return nodeName;
  const terms = objAt(
    objAt(objAt(objAt(pod, 'spec'), 'affinity'), 'nodeAffinity'),
    'requiredDuringSchedulingIgnoredDuringExecution',
  )?.nodeSelectorTerms;
  for (const term of Array.isArray(terms) ? terms : []) {
    const fields = isObject(term) ? term.matchFields : undefined;
    for (const fo of Array.isArray(fields) ? fields : []) {
      if (
        isObject(fo) &&
        fo.key === 'metadata.name' &&
        fo.operator === 'In' &&
        Array.isArray(fo.values) &&
        typeof fo.values[0] === 'string'
      )
        return fo.values[0];
    }
  }
  return null;
}

export class DaemonSetController implements Controller {
  readonly name = 'daemonset';
  private readonly ctx: ControllerContext;

  constructor(ctx: ControllerContext) {
    this.ctx = ctx;
  }

  initial(q: WorkQueue): void {
    for (const ds of this.ctx.store.list(K.daemonsets)) q.add(nsKey(ds));
  }

  onEvent(ev: StoreEvent, q: WorkQueue): void {
    if (ev.key === K.daemonsets && ev.type !== 'DELETED') q.add(nsKey(ev.object));
    else if (ev.key === K.pods) enqueueOwner(ev, 'DaemonSet', q);
    else if (ev.key === K.nodes) for (const ds of this.ctx.store.list(K.daemonsets)) q.add(nsKey(ds));
  }

  /** The pod this DaemonSet would run on `node` (template + daemon tolerations + node affinity). */
  private podFor(ds: JsonObject, node: string, hash: string): JsonObject {
    const tpl = objAt(objAt(ds, 'spec'), 'template') ?? {};
    const spec = clone(objAt(tpl, 'spec') ?? {});
    const tols = Array.isArray(spec.tolerations) ? [...spec.tolerations] : [];
    for (const t of daemonTolerations(spec.hostNetwork === true))
      if (!tols.some((x) => (x as JsonObject).key === t.key && (x as JsonObject).effect === t.effect))
        tols.push(t);
    spec.tolerations = tols;
    const affinity = (objAt(spec, 'affinity') ?? {}) as JsonObject;
    affinity.nodeAffinity = {
      ...(objAt(affinity, 'nodeAffinity') ?? {}),
      requiredDuringSchedulingIgnoredDuringExecution: {
        nodeSelectorTerms: [{ matchFields: [{ key: 'metadata.name', operator: 'In', values: [node] }] }],
      },
    };
    spec.affinity = affinity;
    const tplMeta = objAt(tpl, 'metadata') ?? {};
    return {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        generateName: `${nameOf(ds)}-`,
        namespace: md(ds).namespace,
        labels: {
          ...stringMap(tplMeta.labels),
          [REVISION_HASH]: hash,
          'pod-template-generation': String(int(md(ds).generation, 1)),
        },
        annotations: clone(tplMeta.annotations ?? {}),
        ownerReferences: [newControllerRef(ds, 'apps/v1', 'DaemonSet')],
      },
      spec,
    };
  }

  async reconcile(key: string): Promise<void> {
    const [ns, name] = splitKey(key);
    const ds = this.ctx.store.get(K.daemonsets, ns, name);
    if (!ds || deleting(ds)) return;
    const tpl = objAt(objAt(ds, 'spec'), 'template') ?? {};
    const hash = podTemplateHash(tpl);
    const nodes = this.ctx.store.list(K.nodes);
    const eligible = new Set(nodes.filter((n) => nodeFits(this.podFor(ds, nameOf(n), hash), n)).map(nameOf));
    const pods = this.ctx.store.list(K.pods, ns).filter((p) => controlledBy(p, ds) && podActive(p));
    const byNode = new Map<string, JsonObject[]>();
    const doomed: JsonObject[] = [];
    for (const p of pods) {
      const n = targetNode(p);
      if (n === null || !eligible.has(n)) {
        doomed.push(p);
        continue;
      }
      const l = byNode.get(n) ?? [];
      l.push(p);
      byNode.set(n, l);
    }
    const minReady = int(objAt(ds, 'spec')?.minReadySeconds);
    const now = Date.now();
    const available = (p: JsonObject): boolean => podAvailable(p, minReady, now);
    const strategy = objAt(objAt(ds, 'spec'), 'updateStrategy') ?? {};
    const rolling = strategy.type !== 'OnDelete';
    const maxSurge = rolling
      ? resolveIntOrPercent(objAt(strategy, 'rollingUpdate')?.maxSurge ?? 0, eligible.size, true)
      : 0;
    const creates: string[] = [];
    // Nodes (sorted, so a rollout's order is stable) → the pods kept there, oldest first.
    const kept = new Map<string, { fresh: JsonObject | null; old: JsonObject | null }>();
    for (const n of [...eligible].sort()) {
      const l = (byNode.get(n) ?? []).sort(byAge);
      if (l.length === 0) {
        creates.push(n);
        continue;
      }
      if (maxSurge <= 0) {
        // One pod per node: duplicates (a race or a manual copy) go, the oldest stays.
        doomed.push(...l.slice(1));
        const p = l[0]!;
        kept.set(n, labelsOf(p)[REVISION_HASH] === hash ? { fresh: p, old: null } : { fresh: null, old: p });
        continue;
      }
      // Surge: a node may run the oldest current-revision pod beside the oldest older one, nothing else.
      const fresh = l.find((p) => labelsOf(p)[REVISION_HASH] === hash) ?? null;
      const old = l.find((p) => labelsOf(p)[REVISION_HASH] !== hash) ?? null;
      doomed.push(...l.filter((p) => p !== fresh && p !== old));
      kept.set(n, { fresh, old });
    }
    if (rolling && maxSurge > 0) {
      // kube's surge rollout: the old pod goes once its replacement is available (or at once when it is not
      // Ready itself); a node whose old pod is unavailable gets its replacement at once; other nodes with only
      // an old pod start one, as long as fewer than maxSurge nodes are waiting for a new pod to be available.
      let surging = 0;
      const candidates: string[] = [];
      for (const [n, { fresh, old }] of kept) {
        if (old === null) continue;
        if (fresh !== null) {
          if (available(fresh) || !podReady(old)) doomed.push(old);
          else surging++;
        } else if (!available(old)) creates.push(n);
        else candidates.push(n);
      }
      creates.push(...candidates.slice(0, Math.max(0, maxSurge - surging)));
    } else if (rolling) {
      const maxUnavailable = Math.max(
        1,
        resolveIntOrPercent(objAt(strategy, 'rollingUpdate')?.maxUnavailable ?? 1, eligible.size, true),
      );
      let unavailable = [...eligible].filter((n) => !(byNode.get(n) ?? []).some(available)).length;
      for (const { old } of kept.values()) {
        if (old === null) continue;
        if (!available(old)) doomed.push(old);
        else if (unavailable < maxUnavailable) {
          doomed.push(old);
          unavailable++;
        }
      }
    }
    const c = this.ctx.client;
    await Promise.all([
      ...creates.map((n) =>
        c
          .create('v1/pods', this.podFor(ds, n, hash))
          .then((p) =>
            this.ctx.events.record(
              { ...ds, kind: 'DaemonSet', apiVersion: 'apps/v1' },
              'Normal',
              'SuccessfulCreate',
              `Created pod: ${nameOf(p)}`,
              COMPONENT,
            ),
          ),
      ),
      ...doomed.map((p) => c.delete('v1/pods', ns, nameOf(p)).catch(() => {})),
    ]);
    await this.syncStatus(ds, eligible, hash);
    // No event marks the moment a Ready pod has been Ready for minReadySeconds: look again then.
    const wait = untilAvailable(pods, minReady, now);
    if (wait !== null) throw new RequeueAfter(wait, 'a daemon pod becomes available after minReadySeconds');
  }

  /**
   * Status like kube's DaemonSet controller: per node it looks at the *oldest* daemon pod, terminating ones
   * included, so during a surge rollout a node counts as updated only once its old pod is gone — which is what
   * `kubectl rollout status` waits for.
   */
  private async syncStatus(dsIn: JsonObject, eligible: Set<string>, hash: string): Promise<void> {
    const ns = String(md(dsIn).namespace);
    const ds = this.ctx.store.get(K.daemonsets, ns, nameOf(dsIn));
    if (!ds) return;
    const minReady = int(objAt(ds, 'spec')?.minReadySeconds);
    const now = Date.now();
    const oldest = new Map<string, JsonObject>();
    const misscheduled = new Set<string>();
    for (const p of this.ctx.store.list(K.pods, ns)) {
      if (!controlledBy(p, ds)) continue;
      const phase = objAt(p, 'status')?.phase;
      if (phase === 'Succeeded' || phase === 'Failed') continue;
      const node = objAt(p, 'spec')?.nodeName;
      if (typeof node !== 'string' || !node) continue;
      if (!eligible.has(node)) {
        misscheduled.add(node);
        continue;
      }
      const o = oldest.get(node);
      if (!o || olderForStatus(p, o, hash)) oldest.set(node, p);
    }
    const count = (f: (p: JsonObject) => boolean): number => [...oldest.values()].filter(f).length;
    const status: JsonObject = {
      currentNumberScheduled: oldest.size,
      numberMisscheduled: misscheduled.size,
      desiredNumberScheduled: eligible.size,
      numberReady: count(podReady),
      observedGeneration: int(md(ds).generation, 1),
      updatedNumberScheduled: count((p) => labelsOf(p)[REVISION_HASH] === hash),
      numberAvailable: count((p) => podAvailable(p, minReady, now)),
    };
    const unavailable = eligible.size - (status.numberAvailable as number);
    if (unavailable > 0) status.numberUnavailable = unavailable;
    if (status.numberAvailable === 0) delete status.numberAvailable;
    if (stableStringify(objAt(ds, 'status') ?? {}) === stableStringify(status)) return;
    await this.ctx.client.update('apps/v1/daemonsets', { ...ds, status }, 'status');
  }
}
