/**
 * DaemonSet controller: one pod per eligible node (nodeSelector, required node affinity and taints against the
 * template's tolerations plus the ones kube adds to daemon pods). Pods carry node affinity on
 * `metadata.name` and are bound by the scheduler, like kube ≥ 1.12. Template changes roll out with
 * RollingUpdate/maxUnavailable (old pods deleted, replacements created) or wait for manual deletion (OnDelete);
 * the revision is the `controller-revision-hash` label. Pods on nodes that no longer qualify are deleted.
 * Not modelled: ControllerRevision objects, maxSurge, history limits.
 */
import { clone, isObject, type JsonObject, objAt, stableStringify, stringMap } from '../apiserver/json.ts';
import type { StoreEvent } from '../apiserver/store.ts';
import { podTemplateHash, resolveIntOrPercent } from './deployment.ts';
import type { WorkQueue } from './queue.ts';
import { nodeFits } from './scheduler.ts';
import {
  type Controller,
  type ControllerContext,
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
    const creates: string[] = [];
    for (const n of eligible) {
      const l = byNode.get(n) ?? [];
      if (l.length === 0) creates.push(n);
      // Duplicates (a race or a manual copy): keep the oldest.
      l.sort((a, b) => String(md(a).creationTimestamp).localeCompare(String(md(b).creationTimestamp)));
      doomed.push(...l.slice(1));
    }
    const strategy = objAt(objAt(ds, 'spec'), 'updateStrategy') ?? {};
    if (strategy.type !== 'OnDelete') {
      const minReady = int(objAt(ds, 'spec')?.minReadySeconds);
      const now = Date.now();
      const maxUnavailable = Math.max(
        1,
        resolveIntOrPercent(objAt(strategy, 'rollingUpdate')?.maxUnavailable ?? 1, eligible.size, true),
      );
      let unavailable = [...eligible].filter(
        (n) => !(byNode.get(n) ?? []).some((p) => podAvailable(p, minReady, now)),
      ).length;
      for (const n of eligible) {
        const p = (byNode.get(n) ?? [])[0];
        if (!p || labelsOf(p)[REVISION_HASH] === hash) continue;
        if (!podAvailable(p, minReady, now)) doomed.push(p);
        else if (unavailable < maxUnavailable) {
          doomed.push(p);
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
  }

  private async syncStatus(dsIn: JsonObject, eligible: Set<string>, hash: string): Promise<void> {
    const ns = String(md(dsIn).namespace);
    const ds = this.ctx.store.get(K.daemonsets, ns, nameOf(dsIn));
    if (!ds) return;
    const minReady = int(objAt(ds, 'spec')?.minReadySeconds);
    const now = Date.now();
    const pods = this.ctx.store.list(K.pods, ns).filter((p) => controlledBy(p, ds) && podActive(p));
    const scheduled = pods.filter((p) => typeof objAt(p, 'spec')?.nodeName === 'string');
    const onEligible = scheduled.filter((p) => eligible.has(String(objAt(p, 'spec')?.nodeName)));
    const nodesWith = (f: (p: JsonObject) => boolean): number =>
      new Set(onEligible.filter(f).map((p) => String(objAt(p, 'spec')?.nodeName))).size;
    const status: JsonObject = {
      currentNumberScheduled: nodesWith(() => true),
      numberMisscheduled: scheduled.length - onEligible.length,
      desiredNumberScheduled: eligible.size,
      numberReady: nodesWith(podReady),
      observedGeneration: int(md(ds).generation, 1),
      updatedNumberScheduled: nodesWith((p) => labelsOf(p)[REVISION_HASH] === hash),
      numberAvailable: nodesWith((p) => podAvailable(p, minReady, now)),
    };
    const unavailable = eligible.size - (status.numberAvailable as number);
    if (unavailable > 0) status.numberUnavailable = unavailable;
    if (status.numberAvailable === 0) delete status.numberAvailable;
    if (stableStringify(objAt(ds, 'status') ?? {}) === stableStringify(status)) return;
    await this.ctx.client.update('apps/v1/daemonsets', { ...ds, status }, 'status');
  }
}
