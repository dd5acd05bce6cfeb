/**
 * ReplicaSet controller: keeps `spec.replicas` active pods (owned through a controller reference) and writes
 * status (replicas, fullyLabeledReplicas, readyReplicas, availableReplicas, observedGeneration). Excess pods
 * are deleted in kube's order: unscheduled, then pending, then not ready, then the youngest.
 * Not modelled: adoption/release of pods whose labels change (pods stay with their creator).
 */
import { clone, type JsonObject, objAt, stableStringify } from '../apiserver/json.ts';
import { labelSelectorFromObject, matchesLabels } from '../apiserver/selectors.ts';
import type { StoreEvent } from '../apiserver/store.ts';
import type { WorkQueue } from './queue.ts';
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

/** At most this many pods are created or deleted per sync (kube's burstReplicas is 500). */
const BURST_REPLICAS = 500;
const COMPONENT = 'replicaset-controller';

/** Deletion preference: lower rank goes first (controller.ActivePods ordering, simplified). */
function deletionRank(pod: JsonObject): number[] {
  const scheduled = objAt(pod, 'spec')?.nodeName ? 1 : 0;
  const phase = objAt(pod, 'status')?.phase;
  const running = phase === 'Running' ? 2 : phase === 'Pending' ? 1 : 0;
  const ready = podReady(pod) ? 1 : 0;
  const created = Date.parse(String(md(pod).creationTimestamp ?? '')) || 0;
  return [scheduled, running, ready, -created];
}

function compareRank(a: number[], b: number[]): number {
  for (let i = 0; i < a.length; i++)
    if ((a[i] as number) !== (b[i] as number)) return (a[i] as number) - (b[i] as number);
  return 0;
}

export class ReplicaSetController implements Controller {
  readonly name = 'replicaset';
  private readonly ctx: ControllerContext;

  constructor(ctx: ControllerContext) {
    this.ctx = ctx;
  }

  initial(q: WorkQueue): void {
    for (const rs of this.ctx.store.list(K.replicasets)) q.add(nsKey(rs));
  }

  onEvent(ev: StoreEvent, q: WorkQueue): void {
    if (ev.key === K.replicasets && ev.type !== 'DELETED') q.add(nsKey(ev.object));
    else if (ev.key === K.pods) enqueueOwner(ev, 'ReplicaSet', q);
  }

  async reconcile(key: string): Promise<void> {
    const [ns, name] = splitKey(key);
    const rs = this.ctx.store.get(K.replicasets, ns, name);
    if (!rs) return;
    const spec = objAt(rs, 'spec') ?? {};
    const pods = this.ctx.store.list(K.pods, ns).filter((p) => controlledBy(p, rs));
    const active = pods.filter(podActive);
    const want = int(spec.replicas, 1);
    if (!deleting(rs)) {
      const diff = active.length - want;
      if (diff < 0) await this.createPods(rs, Math.min(-diff, BURST_REPLICAS));
      else if (diff > 0) await this.deletePods(rs, active, Math.min(diff, BURST_REPLICAS));
    }
    await this.updateStatus(rs);
  }

  private async createPods(rs: JsonObject, n: number): Promise<void> {
    const tpl = objAt(objAt(rs, 'spec'), 'template') ?? {};
    const tplMeta = objAt(tpl, 'metadata') ?? {};
    const created = await Promise.all(
      Array.from({ length: n }, () =>
        this.ctx.client.create('v1/pods', {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: {
            generateName: `${nameOf(rs)}-`,
            namespace: md(rs).namespace,
            labels: clone(tplMeta.labels ?? {}),
            annotations: clone(tplMeta.annotations ?? {}),
            ownerReferences: [newControllerRef(rs, 'apps/v1', 'ReplicaSet')],
          },
          spec: clone(objAt(tpl, 'spec') ?? {}),
        }),
      ),
    );
    for (const p of created)
      this.ctx.events.record(
        { ...rs, kind: 'ReplicaSet', apiVersion: 'apps/v1' },
        'Normal',
        'SuccessfulCreate',
        `Created pod: ${nameOf(p)}`,
        COMPONENT,
      );
  }

  private async deletePods(rs: JsonObject, active: JsonObject[], n: number): Promise<void> {
    const victims = [...active].sort((a, b) => compareRank(deletionRank(a), deletionRank(b))).slice(0, n);
    await Promise.all(
      victims.map((p) =>
        this.ctx.client.delete('v1/pods', String(md(p).namespace), nameOf(p)).catch(() => {}),
      ),
    );
    for (const p of victims)
      this.ctx.events.record(
        { ...rs, kind: 'ReplicaSet', apiVersion: 'apps/v1' },
        'Normal',
        'SuccessfulDelete',
        `Deleted pod: ${nameOf(p)}`,
        COMPONENT,
      );
  }

  private async updateStatus(rs: JsonObject): Promise<void> {
    const cur = this.ctx.store.get(K.replicasets, String(md(rs).namespace), nameOf(rs));
    if (!cur) return;
    const spec = objAt(cur, 'spec') ?? {};
    const active = this.ctx.store
      .list(K.pods, String(md(cur).namespace))
      .filter((p) => controlledBy(p, cur) && podActive(p));
    const templateLabels = labelsOf({ metadata: objAt(objAt(spec, 'template'), 'metadata') ?? {} });
    const sel = labelSelectorFromObject(spec.selector);
    const now = Date.now();
    const minReady = int(spec.minReadySeconds);
    const status: JsonObject = {
      replicas: active.length,
      fullyLabeledReplicas: active.filter(
        (p) =>
          matchesLabels(sel, labelsOf(p)) &&
          Object.entries(templateLabels).every(([k, v]) => labelsOf(p)[k] === v),
      ).length,
      readyReplicas: active.filter(podReady).length,
      availableReplicas: active.filter((p) => podAvailable(p, minReady, now)).length,
      observedGeneration: int(md(cur).generation, 1),
    };
    for (const k of ['readyReplicas', 'availableReplicas'] as const) if (status[k] === 0) delete status[k];
    const old = objAt(cur, 'status') ?? {};
    if (stableStringify(normalize(old)) === stableStringify(normalize(status))) return;
    const next = clone(old);
    for (const k of Object.keys(normalize({}))) delete next[k];
    await this.ctx.client.update('apps/v1/replicasets', { ...cur, status: { ...next, ...status } }, 'status');
  }
}

function normalize(s: JsonObject): JsonObject {
  const out: JsonObject = {};
  for (const k of [
    'replicas',
    'fullyLabeledReplicas',
    'readyReplicas',
    'availableReplicas',
    'observedGeneration',
  ])
    out[k] = s[k] ?? 0;
  return out;
}
