/**
 * A small default-scheduler: pods with `schedulerName: default-scheduler` and no `spec.nodeName` are bound
 * (pods/binding) round-robin to the nodes that pass the filters; with none, the pod gets
 * `PodScheduled=False/Unschedulable` and stays Pending until a node change re-queues it.
 * Filters: node not being deleted; Ready=True unless the pod tolerates `node.kubernetes.io/not-ready`;
 * `spec.unschedulable` unless tolerated; NoSchedule/NoExecute taints must be tolerated; `nodeSelector`;
 * required node affinity (matchExpressions on labels, matchFields on metadata.name).
 * Not modelled: resources/capacity, pod (anti-)affinity, topology spread, preemption, host ports.
 */
import { clone, isObject, type JsonObject, objAt, stringMap } from '../apiserver/json.ts';
import type { StoreEvent } from '../apiserver/store.ts';
import type { WorkQueue } from './queue.ts';
import {
  type Controller,
  type ControllerContext,
  conditions,
  deleting,
  K,
  labelsOf,
  nameOf,
  nsKey,
  setCondition,
  splitKey,
} from './util.ts';

const SCHEDULER_NAME = 'default-scheduler';

interface Taint {
  readonly key: string;
  readonly value?: string;
  readonly effect: string;
}

function tolerates(pod: JsonObject, taint: Taint): boolean {
  const tols = objAt(pod, 'spec')?.tolerations;
  return (Array.isArray(tols) ? tols : []).some((t) => {
    if (!isObject(t)) return false;
    if (t.effect !== undefined && t.effect !== '' && t.effect !== taint.effect) return false;
    if (t.operator === 'Exists') return t.key === undefined || t.key === '' || t.key === taint.key;
    return t.key === taint.key && (t.value ?? '') === (taint.value ?? '');
  });
}

function nodeTaints(node: JsonObject): Taint[] {
  const raw = objAt(node, 'spec')?.taints;
  const out: Taint[] = (Array.isArray(raw) ? raw : []).filter(
    (t): t is Taint => isObject(t) && typeof t.key === 'string' && typeof t.effect === 'string',
  );
  const ready = conditions(node).find((c) => c.type === 'Ready');
  // The node lifecycle controller taints nodes that are not Ready; model that implicitly.
  if (ready?.status !== 'True') out.push({ key: 'node.kubernetes.io/not-ready', effect: 'NoSchedule' });
  if (objAt(node, 'spec')?.unschedulable === true)
    out.push({ key: 'node.kubernetes.io/unschedulable', effect: 'NoSchedule' });
  return out;
}

function matchExpression(e: unknown, value: string | undefined): boolean {
  if (!isObject(e)) return false;
  const values = Array.isArray(e.values) ? e.values.map(String) : [];
  switch (e.operator) {
    case 'In':
      return value !== undefined && values.includes(value);
    case 'NotIn':
      return value === undefined || !values.includes(value);
    case 'Exists':
      return value !== undefined;
    case 'DoesNotExist':
      return value === undefined;
    case 'Gt':
      return value !== undefined && Number(value) > Number(values[0]);
    case 'Lt':
      return value !== undefined && Number(value) < Number(values[0]);
    default:
      return false;
  }
}

function affinityAllows(pod: JsonObject, node: JsonObject): boolean {
  const req = objAt(
    objAt(objAt(objAt(pod, 'spec'), 'affinity'), 'nodeAffinity'),
    'requiredDuringSchedulingIgnoredDuringExecution',
  );
  const terms = Array.isArray(req?.nodeSelectorTerms) ? req.nodeSelectorTerms : [];
  if (terms.length === 0) return true;
  const labels = labelsOf(node);
  return terms.some((term) => {
    if (!isObject(term)) return false;
    const exprs = Array.isArray(term.matchExpressions) ? term.matchExpressions : [];
    const fields = Array.isArray(term.matchFields) ? term.matchFields : [];
    if (exprs.length === 0 && fields.length === 0) return false;
    return (
      exprs.every((e) => isObject(e) && matchExpression(e, labels[String(e.key)])) &&
      fields.every((f) => isObject(f) && f.key === 'metadata.name' && matchExpression(f, nameOf(node)))
    );
  });
}

export function nodeFits(pod: JsonObject, node: JsonObject): boolean {
  if (deleting(node)) return false;
  for (const t of nodeTaints(node))
    if ((t.effect === 'NoSchedule' || t.effect === 'NoExecute') && !tolerates(pod, t)) return false;
  const selector = stringMap(objAt(pod, 'spec')?.nodeSelector);
  const labels = labelsOf(node);
  for (const [k, v] of Object.entries(selector)) if (labels[k] !== v) return false;
  return affinityAllows(pod, node);
}

export class Scheduler implements Controller {
  readonly name = 'scheduler';
  private readonly ctx: ControllerContext;
  /** Round-robin position; survives across pods so consecutive pods land on different nodes. */
  private next = 0;

  constructor(ctx: ControllerContext) {
    this.ctx = ctx;
  }

  private pending(): JsonObject[] {
    return this.ctx.store.list(K.pods).filter((p) => !objAt(p, 'spec')?.nodeName && !deleting(p));
  }

  initial(q: WorkQueue): void {
    for (const p of this.pending()) q.add(nsKey(p));
  }

  onEvent(ev: StoreEvent, q: WorkQueue): void {
    if (ev.key === K.pods && ev.type !== 'DELETED' && !objAt(ev.object, 'spec')?.nodeName)
      q.add(nsKey(ev.object));
    if (ev.key === K.nodes) for (const p of this.pending()) q.add(nsKey(p));
  }

  async reconcile(key: string): Promise<void> {
    const [ns, name] = splitKey(key);
    const pod = this.ctx.store.get(K.pods, ns, name);
    if (!pod || deleting(pod)) return;
    const spec = objAt(pod, 'spec') ?? {};
    if (spec.nodeName) return;
    if ((spec.schedulerName ?? SCHEDULER_NAME) !== SCHEDULER_NAME) return;
    const nodes = this.ctx.store.list(K.nodes);
    const fit = nodes.filter((n) => nodeFits(pod, n));
    if (fit.length === 0) {
      const message =
        nodes.length === 0
          ? 'no nodes available to schedule pods'
          : `0/${nodes.length} nodes are available: ${nodes.length} node(s) didn't match the pod's scheduling requirements.`;
      const conds = setCondition(
        conditions(pod),
        { type: 'PodScheduled', status: 'False', reason: 'Unschedulable', message },
        { lastProbeTime: null },
      );
      if (JSON.stringify(conds) !== JSON.stringify(conditions(pod))) {
        const status = { ...clone(objAt(pod, 'status') ?? {}), conditions: conds };
        await this.ctx.client.update('v1/pods', { ...pod, status }, 'status');
        this.ctx.events.record(
          { ...pod, kind: 'Pod', apiVersion: 'v1' },
          'Warning',
          'FailedScheduling',
          message,
          SCHEDULER_NAME,
        );
      }
      return;
    }
    const node = fit[this.next++ % fit.length] as JsonObject;
    await this.ctx.client.bind(ns, name, nameOf(node));
    this.ctx.events.record(
      { ...pod, kind: 'Pod', apiVersion: 'v1' },
      'Normal',
      'Scheduled',
      `Successfully assigned ${ns}/${name} to ${nameOf(node)}`,
      SCHEDULER_NAME,
    );
  }
}
