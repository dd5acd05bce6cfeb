/** Helpers shared by the lab controllers: object accessors, owner references, conditions, events. */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { ApiCore } from '../apiserver/api.ts';
import type { LocalClient } from '../apiserver/client.ts';
import { isInteger, isObject, type JsonObject, nowRfc3339, objAt, stringMap } from '../apiserver/json.ts';
import type { Store, StoreEvent } from '../apiserver/store.ts';
import type { WorkQueue } from './queue.ts';

export interface ControllerContext {
  readonly client: LocalClient;
  readonly api: ApiCore;
  /** Read-only view of current state (never mutate what it returns). */
  readonly store: Store;
  readonly logger: Logger;
  readonly caPem: string;
  readonly events: EventRecorder;
  /** A terminating pod whose node lease was renewed within this window is left to that node's kubelet. */
  readonly nodeLeaseFreshMs: number;
}

export interface Controller {
  readonly name: string;
  /** Keys to reconcile at start-up (a full resync). */
  initial(q: WorkQueue): void;
  /** Maps a published change to the keys it affects. */
  onEvent(ev: StoreEvent, q: WorkQueue): void;
  reconcile(key: string): Promise<void>;
}

export const K = {
  namespaces: '/namespaces',
  pods: '/pods',
  nodes: '/nodes',
  services: '/services',
  endpoints: '/endpoints',
  serviceaccounts: '/serviceaccounts',
  configmaps: '/configmaps',
  events: '/events',
  deployments: 'apps/deployments',
  replicasets: 'apps/replicasets',
  daemonsets: 'apps/daemonsets',
  endpointslices: 'discovery.k8s.io/endpointslices',
  leases: 'coordination.k8s.io/leases',
} as const;

export function md(obj: JsonObject): JsonObject {
  return objAt(obj, 'metadata') ?? {};
}

export function nameOf(obj: JsonObject): string {
  return String(md(obj).name ?? '');
}

export function nsOf(obj: JsonObject): string {
  return String(md(obj).namespace ?? '');
}

export function uidOf(obj: JsonObject): string {
  return String(md(obj).uid ?? '');
}

export function labelsOf(obj: JsonObject): Record<string, string> {
  return stringMap(md(obj).labels);
}

export function deleting(obj: JsonObject): boolean {
  return md(obj).deletionTimestamp !== undefined;
}

export function nsKey(obj: JsonObject): string {
  return `${nsOf(obj)}/${nameOf(obj)}`;
}

export function splitKey(key: string): [string, string] {
  const i = key.indexOf('/');
  return [key.slice(0, i), key.slice(i + 1)];
}

export interface OwnerRef {
  readonly apiVersion: string;
  readonly kind: string;
  readonly name: string;
  readonly uid: string;
  readonly controller?: boolean;
  readonly blockOwnerDeletion?: boolean;
}

export function ownerRefs(obj: JsonObject): OwnerRef[] {
  const refs = md(obj).ownerReferences;
  return (Array.isArray(refs) ? refs : []).filter(
    (r): r is OwnerRef => isObject(r) && typeof r.uid === 'string' && typeof r.kind === 'string',
  );
}

export function controllerRef(obj: JsonObject): OwnerRef | undefined {
  return ownerRefs(obj).find((r) => r.controller === true);
}

export function controlledBy(obj: JsonObject, owner: JsonObject): boolean {
  return controllerRef(obj)?.uid === uidOf(owner);
}

export function newControllerRef(owner: JsonObject, apiVersion: string, kind: string): OwnerRef {
  return {
    apiVersion,
    kind,
    name: nameOf(owner),
    uid: uidOf(owner),
    controller: true,
    blockOwnerDeletion: true,
  };
}

export function int(v: unknown, dflt = 0): number {
  return isInteger(v) ? v : dflt;
}

export function conditions(obj: JsonObject): JsonObject[] {
  const c = objAt(obj, 'status')?.conditions;
  return (Array.isArray(c) ? c : []).filter(isObject);
}

export function conditionStatus(obj: JsonObject, type: string): string | undefined {
  const c = conditions(obj).find((x) => x.type === type);
  return typeof c?.status === 'string' ? c.status : undefined;
}

export function podReady(pod: JsonObject): boolean {
  return conditionStatus(pod, 'Ready') === 'True';
}

export function podActive(pod: JsonObject): boolean {
  const phase = objAt(pod, 'status')?.phase;
  return !deleting(pod) && phase !== 'Succeeded' && phase !== 'Failed';
}

/** Ready for at least `minReadySeconds` (kube's "available"). */
export function podAvailable(pod: JsonObject, minReadySeconds: number, now: number): boolean {
  if (!podReady(pod)) return false;
  if (minReadySeconds <= 0) return true;
  const c = conditions(pod).find((x) => x.type === 'Ready');
  const since = typeof c?.lastTransitionTime === 'string' ? Date.parse(c.lastTransitionTime) : Number.NaN;
  return !Number.isNaN(since) && since + minReadySeconds * 1000 <= now;
}

/** Upserts a condition, keeping lastTransitionTime when the status does not change. */
export function setCondition(
  list: readonly JsonObject[],
  cond: { type: string; status: string; reason: string; message: string },
  extra: JsonObject = {},
): JsonObject[] {
  const now = nowRfc3339();
  const old = list.find((c) => c.type === cond.type);
  const transition =
    old && old.status === cond.status && typeof old.lastTransitionTime === 'string'
      ? old.lastTransitionTime
      : now;
  const next: JsonObject = {
    ...extra,
    type: cond.type,
    status: cond.status,
    lastTransitionTime: transition,
    reason: cond.reason,
    message: cond.message,
  };
  if (old && old.status === cond.status && old.reason === cond.reason && old.message === cond.message) {
    return list.map((c) => (c === old ? { ...old } : c));
  }
  const out = list.filter((c) => c.type !== cond.type);
  out.push(next);
  return out;
}

/** Enqueues the namespace/name of the object carried by an event. */
export function enqueueSelf(ev: StoreEvent, q: WorkQueue): void {
  q.add(nsKey(ev.object));
}

/** Enqueues the controller owner (of kind `kind`) of the object, old and new. */
export function enqueueOwner(ev: StoreEvent, kind: string, q: WorkQueue): void {
  for (const o of [ev.object, ev.prev]) {
    if (!o) continue;
    const ref = controllerRef(o);
    if (ref?.kind === kind) q.add(`${nsOf(o)}/${ref.name}`);
  }
}

/** Event TTL, like kube-apiserver's default --event-ttl. */
const EVENT_TTL_MS = 60 * 60 * 1000;

/** Writes core/v1 Events (what `kubectl describe` shows) and expires old ones. */
export class EventRecorder {
  private readonly client: LocalClient;
  private readonly store: Store;
  private readonly logger: Logger;
  private sweepTimer: NodeJS.Timeout | null = null;

  constructor(client: LocalClient, store: Store, logger: Logger) {
    this.client = client;
    this.store = store;
    this.logger = logger;
  }

  record(
    obj: JsonObject,
    type: 'Normal' | 'Warning',
    reason: string,
    message: string,
    component: string,
  ): void {
    const ns = nsOf(obj) || 'default';
    if (!this.store.get(K.namespaces, '', ns) || deleting(this.store.get(K.namespaces, '', ns) as JsonObject))
      return;
    const now = nowRfc3339();
    const event = {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: {
        name: `${nameOf(obj)}.${Date.now().toString(16)}${randomBytes(2).toString('hex')}`,
        namespace: ns,
      },
      involvedObject: {
        kind: String(obj.kind ?? ''),
        apiVersion: String(obj.apiVersion ?? ''),
        namespace: nsOf(obj) || undefined,
        name: nameOf(obj),
        uid: uidOf(obj),
        resourceVersion: String(md(obj).resourceVersion ?? ''),
      },
      reason,
      message,
      source: { component },
      firstTimestamp: now,
      lastTimestamp: now,
      eventTime: null,
      reportingComponent: component,
      reportingInstance: '',
      count: 1,
      type,
    };
    this.client
      .create('v1/events', event)
      .catch((err: unknown) => this.logger.debug({ err, reason }, 'event not recorded'));
  }

  /** Deletes events older than the TTL every few minutes. */
  startSweeper(intervalMs: number): void {
    this.sweepTimer = setInterval(() => {
      const cutoff = Date.now() - EVENT_TTL_MS;
      for (const e of this.store.list(K.events)) {
        const ts = Date.parse(String(e.lastTimestamp ?? md(e).creationTimestamp ?? ''));
        if (!Number.isNaN(ts) && ts < cutoff)
          this.client.delete('v1/events', nsOf(e), nameOf(e)).catch(() => {});
      }
    }, intervalMs);
    this.sweepTimer.unref();
  }

  stop(): void {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
  }
}
