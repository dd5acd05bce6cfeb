/**
 * Writes the conditions the ambient index owns (istio.io/WaypointBound on Services and ServiceEntries,
 * ZtunnelAccepted on AuthorizationPolicies) through the status subresource, leaving every other condition as it
 * is. Updates are coalesced per object (only the latest desired state is written), retried with back-off on
 * conflicts and API errors, and written by one worker so a slow API server cannot pile up requests.
 */
import {
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { isNotFound } from '../../../pkg/kube/index.ts';
import type { ConditionSpec, StatusUpdate } from '../index/index.ts';
import { StatusQueue } from './status-queue.ts';
import type { Condition } from './types.ts';

/** Where status updates go; the Kubernetes writer in production, a recorder in tests. */
export interface StatusSink {
  enqueue(update: StatusUpdate): void;
}

/** The API coordinates of each kind we write status on. */
const CRD_KINDS = {
  ServiceEntry: { group: 'networking.istio.io', version: 'v1', plural: 'serviceentries' },
  AuthorizationPolicy: { group: 'security.istio.io', version: 'v1', plural: 'authorizationpolicies' },
} as const;

/** Most attempts per update before giving up (the next change of the object will try again). */

const MERGE_PATCH = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

/**
 * Merges our desired conditions into an object's current list: ours replaced (or removed when null), others kept;
 * `lastTransitionTime` only moves when a condition's status changes. Returns null when nothing changes.
 */
export function mergeConditions(
  current: readonly Condition[],
  desired: ReadonlyMap<string, ConditionSpec | null>,
  now: string,
): Condition[] | null {
  const out: Condition[] = [];
  let changed = false;
  const seen = new Set<string>();
  for (const c of current) {
    if (!desired.has(c.type)) {
      out.push(c);
      continue;
    }
    seen.add(c.type);
    const want = desired.get(c.type);
    if (!want) {
      changed = true;
      continue;
    }
    const status = want.status ? 'True' : 'False';
    const next: Condition = {
      type: c.type,
      status,
      reason: want.reason,
      message: want.message,
      observedGeneration: want.observedGeneration,
      lastTransitionTime: c.status === status && c.lastTransitionTime ? c.lastTransitionTime : now,
    };
    if (
      next.status !== c.status ||
      next.reason !== c.reason ||
      next.message !== c.message ||
      (next.observedGeneration ?? 0) !== (c.observedGeneration ?? 0)
    )
      changed = true;
    out.push(next);
  }
  for (const [type, want] of desired) {
    if (seen.has(type) || !want) continue;
    changed = true;
    out.push({
      type,
      status: want.status ? 'True' : 'False',
      reason: want.reason,
      message: want.message,
      observedGeneration: want.observedGeneration,
      lastTransitionTime: now,
    });
  }
  return changed ? out : null;
}

function timeString(t: Condition['lastTransitionTime']): string | undefined {
  if (t === undefined) return undefined;
  return t instanceof Date ? t.toISOString() : t;
}

interface StatusObject {
  readonly metadata?: { readonly resourceVersion?: string };
  readonly status?: { readonly conditions?: readonly Condition[] };
}

export class KubeStatusWriter implements StatusSink {
  private readonly core: CoreV1Api;
  private readonly custom: CustomObjectsApi;
  private readonly queue: StatusQueue<StatusUpdate>;

  constructor(kc: KubeConfig, logger: Logger) {
    this.core = kc.makeApiClient(CoreV1Api);
    this.custom = kc.makeApiClient(CustomObjectsApi);
    this.queue = new StatusQueue((u) => this.write(u), logger);
  }

  enqueue(update: StatusUpdate): void {
    this.queue.enqueue(`${update.kind}/${update.namespace}/${update.name}`, update);
  }

  /** Resolves when nothing is queued (tests, shutdown). */
  idle(): Promise<void> {
    return this.queue.idle();
  }

  stop(): void {
    this.queue.stop();
  }

  private async write(u: StatusUpdate): Promise<void> {
    let current: StatusObject;
    try {
      current = await this.read(u);
    } catch (err) {
      if (isNotFound(err)) return; // deleted meanwhile
      throw err;
    }
    const conditions = mergeConditions(
      current.status?.conditions ?? [],
      u.conditions,
      new Date().toISOString(),
    );
    if (!conditions) return;
    const body = {
      // resourceVersion makes this a compare-and-swap: a concurrent writer causes a 409 and a retry.
      metadata: { resourceVersion: current.metadata?.resourceVersion },
      status: {
        conditions: conditions.map((c) => ({ ...c, lastTransitionTime: timeString(c.lastTransitionTime) })),
      },
    };
    if (u.kind === 'Service') {
      await this.core.patchNamespacedServiceStatus(
        { name: u.name, namespace: u.namespace, body },
        MERGE_PATCH,
      );
    } else {
      const k = CRD_KINDS[u.kind];
      await this.custom.patchNamespacedCustomObjectStatus(
        { ...k, namespace: u.namespace, name: u.name, body },
        MERGE_PATCH,
      );
    }
  }

  private async read(u: StatusUpdate): Promise<StatusObject> {
    if (u.kind === 'Service') {
      return (await this.core.readNamespacedServiceStatus({
        name: u.name,
        namespace: u.namespace,
      })) as StatusObject;
    }
    const k = CRD_KINDS[u.kind];
    return (await this.custom.getNamespacedCustomObjectStatus({
      ...k,
      namespace: u.namespace,
      name: u.name,
    })) as StatusObject;
  }
}
