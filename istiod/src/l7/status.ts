/**
 * Writes the status istiod owns on L7 config (the same pattern as istiod/src/kube/status.ts: read, merge ours,
 * compare-and-swap write with the read resourceVersion, only when something changed, one worker, coalesced per
 * object, retried with back-off):
 *
 * - HTTPRoute / GRPCRoute `status.parents`: our entries are those with controllerName `istio.io/mesh-controller`
 *   (Service/ServiceEntry parents); entries of other controllers (the ingress Gateway controller) are kept as they
 *   are, ours are replaced, and ours for parentRefs no longer in the spec are removed.
 * - VirtualService, DestinationRule, AuthorizationPolicy, RequestAuthentication: the `WaypointAccepted` condition.
 */
import { CustomObjectsApi, type KubeConfig, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { isNotFound } from '../../../pkg/kube/index.ts';
import type { ConditionSpec } from '../index/index.ts';
import { mergeConditions } from '../kube/status.ts';
import { StatusQueue } from '../kube/status-queue.ts';
import type { Condition, Timestamp } from '../kube/types.ts';
import { MESH_CONTROLLER_NAME } from './constants.ts';
import { parentRefKey } from './routes.ts';
import type { ParentReference, RouteParentStatus } from './types.ts';

export type L7StatusUpdate =
  | {
      readonly kind: 'HTTPRoute' | 'GRPCRoute';
      readonly namespace: string;
      readonly name: string;
      /** Our parents, complete (an empty list removes every entry of ours). */
      readonly parents: ReadonlyArray<{
        readonly parentRef: ParentReference;
        readonly conditions: ReadonlyMap<string, ConditionSpec>;
      }>;
    }
  | {
      readonly kind: 'VirtualService' | 'DestinationRule' | 'AuthorizationPolicy' | 'RequestAuthentication';
      readonly namespace: string;
      readonly name: string;
      /** Condition type → desired condition, or null to remove it. */
      readonly conditions: ReadonlyMap<string, ConditionSpec | null>;
    };

export interface L7StatusSink {
  enqueue(update: L7StatusUpdate): void;
}

const API: Readonly<Record<L7StatusUpdate['kind'], { group: string; version: string; plural: string }>> = {
  HTTPRoute: { group: 'gateway.networking.k8s.io', version: 'v1', plural: 'httproutes' },
  GRPCRoute: { group: 'gateway.networking.k8s.io', version: 'v1', plural: 'grpcroutes' },
  VirtualService: { group: 'networking.istio.io', version: 'v1', plural: 'virtualservices' },
  DestinationRule: { group: 'networking.istio.io', version: 'v1', plural: 'destinationrules' },
  AuthorizationPolicy: { group: 'security.istio.io', version: 'v1', plural: 'authorizationpolicies' },
  RequestAuthentication: { group: 'security.istio.io', version: 'v1', plural: 'requestauthentications' },
};

const MERGE_PATCH = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

function timeString(t: Timestamp | undefined): string | undefined {
  if (t === undefined) return undefined;
  return t instanceof Date ? t.toISOString() : t;
}

function plainConditions(list: readonly Condition[]): Condition[] {
  return list.map((c) => ({ ...c, lastTransitionTime: timeString(c.lastTransitionTime) }));
}

/**
 * Merges our desired parents into a route's current `status.parents`; null when nothing changes. Other
 * controllers' entries stay in place; ours keep their position and `lastTransitionTime` where the status did not
 * flip; new ones are appended.
 */
export function mergeRouteParents(
  current: readonly RouteParentStatus[],
  desired: Extract<L7StatusUpdate, { kind: 'HTTPRoute' | 'GRPCRoute' }>['parents'],
  routeNamespace: string,
  now: string,
): RouteParentStatus[] | null {
  const want = new Map(desired.map((d) => [parentRefKey(d.parentRef, routeNamespace), d]));
  const out: RouteParentStatus[] = [];
  let changed = false;
  const done = new Set<string>();
  for (const p of current) {
    if (p.controllerName !== MESH_CONTROLLER_NAME) {
      out.push(p);
      continue;
    }
    const key = parentRefKey(p.parentRef, routeNamespace);
    const d = want.get(key);
    if (!d || done.has(key)) {
      changed = true;
      continue;
    }
    done.add(key);
    const removeOthers = new Map<string, ConditionSpec | null>(d.conditions);
    for (const c of p.conditions ?? []) if (!d.conditions.has(c.type)) removeOthers.set(c.type, null);
    const merged = mergeConditions(p.conditions ?? [], removeOthers, now);
    if (merged) changed = true;
    out.push({ ...p, conditions: merged ?? p.conditions ?? [] });
  }
  for (const [key, d] of want) {
    if (done.has(key)) continue;
    changed = true;
    out.push({
      parentRef: d.parentRef,
      controllerName: MESH_CONTROLLER_NAME,
      conditions: mergeConditions([], d.conditions, now) ?? [],
    });
  }
  return changed ? out : null;
}

interface StatusObject {
  readonly metadata?: { readonly resourceVersion?: string };
  readonly status?: {
    readonly conditions?: readonly Condition[];
    readonly parents?: readonly RouteParentStatus[];
  };
}

export class L7StatusWriter implements L7StatusSink {
  private readonly custom: CustomObjectsApi;
  private readonly queue: StatusQueue<L7StatusUpdate>;

  constructor(kc: KubeConfig, logger: Logger) {
    this.custom = kc.makeApiClient(CustomObjectsApi);
    this.queue = new StatusQueue((u) => this.write(u), logger);
  }

  enqueue(update: L7StatusUpdate): void {
    this.queue.enqueue(`${update.kind}/${update.namespace}/${update.name}`, update);
  }

  /** Resolves when nothing is queued (tests, shutdown). */
  idle(): Promise<void> {
    return this.queue.idle();
  }

  stop(): void {
    this.queue.stop();
  }

  private async write(u: L7StatusUpdate): Promise<void> {
    const api = API[u.kind];
    let current: StatusObject;
    try {
      current = (await this.custom.getNamespacedCustomObjectStatus({
        ...api,
        namespace: u.namespace,
        name: u.name,
      })) as StatusObject;
    } catch (err) {
      if (isNotFound(err)) return;
      throw err;
    }
    const now = new Date().toISOString();
    let status: Record<string, unknown>;
    if ('parents' in u) {
      const parents = mergeRouteParents(current.status?.parents ?? [], u.parents, u.namespace, now);
      if (!parents) return;
      status = { parents: parents.map((p) => ({ ...p, conditions: plainConditions(p.conditions ?? []) })) };
    } else {
      const conditions = mergeConditions(current.status?.conditions ?? [], u.conditions, now);
      if (!conditions) return;
      status = { conditions: plainConditions(conditions) };
    }
    await this.custom.patchNamespacedCustomObjectStatus(
      {
        ...api,
        namespace: u.namespace,
        name: u.name,
        // resourceVersion makes this a compare-and-swap: a concurrent writer causes a 409 and a retry.
        body: { metadata: { resourceVersion: current.metadata?.resourceVersion }, status },
      },
      MERGE_PATCH,
    );
  }
}
