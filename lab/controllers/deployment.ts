/**
 * Deployment controller: one ReplicaSet per pod template (named `<deployment>-<pod-template-hash>`, labelled
 * and selected by `pod-template-hash`, annotated with `deployment.kubernetes.io/revision`), rolled with the
 * RollingUpdate rules of kube-controller-manager (maxSurge rounds up, maxUnavailable down; scale the new
 * ReplicaSet up within maxSurge, scale old ones down while availability stays ≥ replicas − maxUnavailable,
 * unhealthy old pods first) or Recreate; status counts and the Available/Progressing conditions; old
 * ReplicaSets beyond revisionHistoryLimit are deleted.
 * Not modelled: proportional scaling of several active ReplicaSets, progressDeadlineSeconds timeouts,
 * rollback annotations, adoption of orphaned ReplicaSets, hash collision handling.
 */
import {
  clone,
  fnv32a,
  type JsonObject,
  objAt,
  safeEncode,
  stableStringify,
  stringMap,
} from '../apiserver/json.ts';
import { ApiError } from '../apiserver/status.ts';
import type { StoreEvent } from '../apiserver/store.ts';
import type { WorkQueue } from './queue.ts';
import {
  type Controller,
  type ControllerContext,
  conditions,
  controlledBy,
  deleting,
  enqueueOwner,
  int,
  K,
  md,
  nameOf,
  newControllerRef,
  nsKey,
  setCondition,
  splitKey,
} from './util.ts';

export const POD_TEMPLATE_HASH = 'pod-template-hash';
export const REVISION = 'deployment.kubernetes.io/revision';
const DESIRED = 'deployment.kubernetes.io/desired-replicas';
const MAX_REPLICAS = 'deployment.kubernetes.io/max-replicas';
const COMPONENT = 'deployment-controller';

/** Stable hash of a pod template (labels without pod-template-hash), encoded like kube's. */
export function podTemplateHash(template: JsonObject): string {
  return safeEncode(fnv32a(stableStringify(withoutHash(template))));
}

function withoutHash(template: unknown): JsonObject {
  const t = clone((template ?? {}) as JsonObject);
  const labels = objAt(t, 'metadata')?.labels;
  if (labels && typeof labels === 'object') delete (labels as JsonObject)[POD_TEMPLATE_HASH];
  return t;
}

/** Resolves an int-or-percent against `total` (maxSurge rounds up, maxUnavailable down). */
export function resolveIntOrPercent(v: unknown, total: number, roundUp: boolean): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && /^\d+%$/.test(v)) {
    const x = (Number(v.slice(0, -1)) * total) / 100;
    return roundUp ? Math.ceil(x) : Math.floor(x);
  }
  if (typeof v === 'string' && /^\d+$/.test(v)) return Number(v);
  return 0;
}

function revision(rs: JsonObject): number {
  const r = Number(stringMap(md(rs).annotations)[REVISION]);
  return Number.isFinite(r) ? r : 0;
}

function replicasOf(rs: JsonObject): number {
  return int(objAt(rs, 'spec')?.replicas, 0);
}

function statusInt(obj: JsonObject, k: string): number {
  return int(objAt(obj, 'status')?.[k], 0);
}

function created(obj: JsonObject): number {
  return Date.parse(String(md(obj).creationTimestamp ?? '')) || 0;
}

export class DeploymentController implements Controller {
  readonly name = 'deployment';
  private readonly ctx: ControllerContext;

  constructor(ctx: ControllerContext) {
    this.ctx = ctx;
  }

  initial(q: WorkQueue): void {
    for (const d of this.ctx.store.list(K.deployments)) q.add(nsKey(d));
  }

  onEvent(ev: StoreEvent, q: WorkQueue): void {
    if (ev.key === K.deployments && ev.type !== 'DELETED') q.add(nsKey(ev.object));
    else if (ev.key === K.replicasets) enqueueOwner(ev, 'Deployment', q);
  }

  async reconcile(key: string): Promise<void> {
    const [ns, name] = splitKey(key);
    const d = this.ctx.store.get(K.deployments, ns, name);
    if (!d || deleting(d)) return;
    const spec = objAt(d, 'spec') ?? {};
    const replicas = int(spec.replicas, 1);
    const template = objAt(spec, 'template') ?? {};
    const owned = (): JsonObject[] =>
      this.ctx.store.list(K.replicasets, ns).filter((rs) => controlledBy(rs, d));
    let all = owned();
    const hash = podTemplateHash(template);
    let newRS = all.find(
      (rs) =>
        stableStringify(withoutHash(objAt(rs, 'spec')?.template)) === stableStringify(withoutHash(template)),
    );
    const maxRevision = all.reduce((m, rs) => Math.max(m, revision(rs)), 0);
    const strategy = objAt(spec, 'strategy') ?? {};
    const ru = objAt(strategy, 'rollingUpdate') ?? {};
    const recreate = strategy.type === 'Recreate';
    let maxSurge = recreate ? 0 : resolveIntOrPercent(ru.maxSurge ?? '25%', replicas, true);
    let maxUnavailable = recreate ? 0 : resolveIntOrPercent(ru.maxUnavailable ?? '25%', replicas, false);
    if (!recreate && maxSurge === 0 && maxUnavailable === 0) maxUnavailable = 1;
    if (maxUnavailable > replicas) maxUnavailable = replicas;
    maxSurge = Math.max(0, maxSurge);
    const paused = spec.paused === true;

    if (!newRS && !paused) {
      const oldPods = all.reduce((n, rs) => n + replicasOf(rs), 0);
      const initial = recreate
        ? oldPods > 0
          ? 0
          : replicas
        : Math.max(0, Math.min(replicas, replicas + maxSurge - oldPods));
      newRS = await this.createReplicaSet(d, template, hash, maxRevision + 1, initial, replicas, maxSurge);
      all = owned();
    } else if (newRS && revision(newRS) < maxRevision && !paused) {
      // An older template came back: it becomes the newest revision again.
      newRS = await this.ctx.client.update(
        'apps/v1/replicasets',
        annotate(newRS, { [REVISION]: String(maxRevision + 1) }),
      );
      all = owned();
    }
    if (!paused && newRS) {
      const old = all
        .filter((rs) => rs !== newRS && nameOf(rs) !== nameOf(newRS as JsonObject))
        .sort((a, b) => created(a) - created(b));
      if (recreate) await this.recreate(d, newRS, old, replicas);
      else await this.rolling(d, newRS, old, replicas, maxSurge, maxUnavailable);
      await this.cleanup(d, newRS);
    }
    await this.syncStatus(d, replicas, maxUnavailable);
  }

  private async createReplicaSet(
    d: JsonObject,
    template: JsonObject,
    hash: string,
    rev: number,
    initial: number,
    replicas: number,
    maxSurge: number,
  ): Promise<JsonObject> {
    const tpl = clone(template);
    const tplMeta = (objAt(tpl, 'metadata') ?? {}) as JsonObject;
    tplMeta.labels = { ...stringMap(tplMeta.labels), [POD_TEMPLATE_HASH]: hash };
    tpl.metadata = tplMeta;
    const sel = clone(objAt(objAt(d, 'spec'), 'selector') ?? {});
    sel.matchLabels = { ...stringMap(sel.matchLabels), [POD_TEMPLATE_HASH]: hash };
    const rs = {
      apiVersion: 'apps/v1',
      kind: 'ReplicaSet',
      metadata: {
        name: `${nameOf(d)}-${hash}`,
        namespace: md(d).namespace,
        labels: { ...stringMap(tplMeta.labels) },
        annotations: {
          [REVISION]: String(rev),
          [DESIRED]: String(replicas),
          [MAX_REPLICAS]: String(replicas + maxSurge),
        },
        ownerReferences: [newControllerRef(d, 'apps/v1', 'Deployment')],
      },
      spec: {
        replicas: initial,
        minReadySeconds: int(objAt(d, 'spec')?.minReadySeconds),
        selector: sel,
        template: tpl,
      },
    };
    try {
      const out = await this.ctx.client.create('apps/v1/replicasets', rs);
      this.ctx.events.record(
        { ...d, kind: 'Deployment', apiVersion: 'apps/v1' },
        'Normal',
        'ScalingReplicaSet',
        `Scaled up replica set ${nameOf(out)} from 0 to ${initial}`,
        COMPONENT,
      );
      return out;
    } catch (err) {
      if (err instanceof ApiError && err.code === 409) {
        const existing = this.ctx.store.get(K.replicasets, String(md(d).namespace), `${nameOf(d)}-${hash}`);
        if (existing && controlledBy(existing, d)) return existing;
      }
      throw err;
    }
  }

  private async scale(
    d: JsonObject,
    rs: JsonObject,
    to: number,
    replicas: number,
    maxSurge: number,
  ): Promise<JsonObject> {
    const from = replicasOf(rs);
    const ann = stringMap(md(rs).annotations);
    if (from === to && ann[DESIRED] === String(replicas) && ann[MAX_REPLICAS] === String(replicas + maxSurge))
      return rs;
    const next = annotate(rs, { [DESIRED]: String(replicas), [MAX_REPLICAS]: String(replicas + maxSurge) });
    next.spec = { ...clone(objAt(rs, 'spec') ?? {}), replicas: to };
    const out = await this.ctx.client.update('apps/v1/replicasets', next);
    if (from !== to) {
      this.ctx.events.record(
        { ...d, kind: 'Deployment', apiVersion: 'apps/v1' },
        'Normal',
        'ScalingReplicaSet',
        `Scaled ${to > from ? 'up' : 'down'} replica set ${nameOf(rs)} from ${from} to ${to}`,
        COMPONENT,
      );
    }
    return out;
  }

  private async recreate(
    d: JsonObject,
    newRS: JsonObject,
    old: JsonObject[],
    replicas: number,
  ): Promise<void> {
    for (const rs of old) if (replicasOf(rs) > 0) await this.scale(d, rs, 0, replicas, 0);
    const ns = String(md(d).namespace);
    const oldPodsLeft = this.ctx.store.list(K.pods, ns).some((p) => old.some((rs) => controlledBy(p, rs)));
    if (oldPodsLeft) return;
    await this.scale(d, newRS, replicas, replicas, 0);
  }

  private async rolling(
    d: JsonObject,
    newRS: JsonObject,
    old: JsonObject[],
    replicas: number,
    maxSurge: number,
    maxUnavailable: number,
  ): Promise<void> {
    // Scale the new ReplicaSet up as far as maxSurge allows (or down to the target).
    let current = newRS;
    let want = replicasOf(current);
    const total = (): number => replicasOf(current) + old.reduce((n, rs) => n + replicasOf(rs), 0);
    if (want > replicas) want = replicas;
    else if (want < replicas) {
      const room = replicas + maxSurge - total();
      if (room > 0) want = Math.min(replicas, want + room);
    }
    current = await this.scale(d, current, want, replicas, maxSurge);
    // Scale old ReplicaSets down while keeping availability.
    const oldTotal = old.reduce((n, rs) => n + replicasOf(rs), 0);
    if (oldTotal === 0) return;
    const minAvailable = replicas - maxUnavailable;
    const newUnavailable = replicasOf(current) - statusInt(current, 'availableReplicas');
    let budget = total() - minAvailable - Math.max(0, newUnavailable);
    if (budget <= 0) return;
    // First the unhealthy old pods (they do not count towards availability anyway).
    const scaled = new Map<JsonObject, number>();
    for (const rs of old) {
      if (budget <= 0) break;
      const unhealthy = replicasOf(rs) - statusInt(rs, 'availableReplicas');
      const n = Math.min(Math.max(0, unhealthy), budget);
      if (n > 0) {
        scaled.set(rs, replicasOf(rs) - n);
        budget -= n;
      }
    }
    // Then healthy ones, oldest first, while the available count stays at or above minAvailable.
    const available =
      statusInt(current, 'availableReplicas') +
      old.reduce((n, rs) => n + statusInt(rs, 'availableReplicas'), 0);
    let scaleDown = Math.min(budget, available - minAvailable);
    for (const rs of old) {
      if (scaleDown <= 0) break;
      const now = scaled.get(rs) ?? replicasOf(rs);
      const n = Math.min(now, scaleDown);
      if (n > 0) {
        scaled.set(rs, now - n);
        scaleDown -= n;
      }
    }
    for (const [rs, to] of scaled) await this.scale(d, rs, to, replicas, maxSurge);
  }

  /** Deletes drained old ReplicaSets beyond revisionHistoryLimit, oldest first. */
  private async cleanup(d: JsonObject, newRS: JsonObject): Promise<void> {
    const limit = int(objAt(d, 'spec')?.revisionHistoryLimit, 10);
    const ns = String(md(d).namespace);
    const drained = this.ctx.store
      .list(K.replicasets, ns)
      .filter(
        (rs) =>
          controlledBy(rs, d) &&
          nameOf(rs) !== nameOf(newRS) &&
          replicasOf(rs) === 0 &&
          statusInt(rs, 'replicas') === 0 &&
          !deleting(rs),
      )
      .sort((a, b) => revision(a) - revision(b));
    for (const rs of drained.slice(0, Math.max(0, drained.length - limit))) {
      await this.ctx.client.delete('apps/v1/replicasets', ns, nameOf(rs)).catch(() => {});
    }
  }

  private async syncStatus(dIn: JsonObject, replicas: number, maxUnavailable: number): Promise<void> {
    const ns = String(md(dIn).namespace);
    const d = this.ctx.store.get(K.deployments, ns, nameOf(dIn));
    if (!d) return;
    const all = this.ctx.store.list(K.replicasets, ns).filter((rs) => controlledBy(rs, d));
    const template = objAt(objAt(d, 'spec'), 'template') ?? {};
    const newRS = all.find(
      (rs) =>
        stableStringify(withoutHash(objAt(rs, 'spec')?.template)) === stableStringify(withoutHash(template)),
    );
    const sum = (k: string): number => all.reduce((n, rs) => n + statusInt(rs, k), 0);
    const status: JsonObject = {
      observedGeneration: int(md(d).generation, 1),
      replicas: sum('replicas'),
      updatedReplicas: newRS ? statusInt(newRS, 'replicas') : 0,
      readyReplicas: sum('readyReplicas'),
      availableReplicas: sum('availableReplicas'),
    };
    const unavailable = Math.max(0, replicas - (status.availableReplicas as number));
    if (unavailable > 0) status.unavailableReplicas = unavailable;
    for (const k of ['replicas', 'updatedReplicas', 'readyReplicas', 'availableReplicas'])
      if (status[k] === 0) delete status[k];
    const available = int(status.availableReplicas) >= replicas - maxUnavailable;
    let conds = setCondition(
      conditions(d),
      available
        ? {
            type: 'Available',
            status: 'True',
            reason: 'MinimumReplicasAvailable',
            message: 'Deployment has minimum availability.',
          }
        : {
            type: 'Available',
            status: 'False',
            reason: 'MinimumReplicasUnavailable',
            message: 'Deployment does not have minimum availability.',
          },
      { lastUpdateTime: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z') },
    );
    const oldPods = all.filter((rs) => rs !== newRS).reduce((n, rs) => n + statusInt(rs, 'replicas'), 0);
    const complete =
      newRS !== undefined &&
      int(status.updatedReplicas) === replicas &&
      int(status.availableReplicas) === replicas &&
      oldPods === 0;
    const rsName = newRS ? nameOf(newRS) : '';
    conds = setCondition(
      conds,
      complete
        ? {
            type: 'Progressing',
            status: 'True',
            reason: 'NewReplicaSetAvailable',
            message: `ReplicaSet "${rsName}" has successfully progressed.`,
          }
        : {
            type: 'Progressing',
            status: 'True',
            reason: 'ReplicaSetUpdated',
            message: `ReplicaSet "${rsName}" is progressing.`,
          },
      { lastUpdateTime: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z') },
    );
    // Keep the conventional order: Available, then Progressing.
    conds.sort(
      (a, b) =>
        ['Available', 'Progressing'].indexOf(String(a.type)) -
        ['Available', 'Progressing'].indexOf(String(b.type)),
    );
    status.conditions = conds;
    const rev = newRS ? String(revision(newRS)) : undefined;
    let cur = d;
    if (rev && stringMap(md(d).annotations)[REVISION] !== rev)
      cur = await this.ctx.client.update('apps/v1/deployments', annotate(d, { [REVISION]: rev }));
    const old = objAt(cur, 'status') ?? {};
    if (stableStringify(old) === stableStringify(status)) return;
    await this.ctx.client.update('apps/v1/deployments', { ...cur, status }, 'status');
  }
}

function annotate(obj: JsonObject, annotations: Record<string, string>): JsonObject {
  const out = clone(obj);
  const m = (out.metadata ?? {}) as JsonObject;
  m.annotations = { ...stringMap(m.annotations), ...annotations };
  out.metadata = m;
  return out;
}
