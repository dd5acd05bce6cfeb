/**
 * The incremental half of the waypoint L7 compiler. It reads the ambient index (services and their waypoint
 * binding, workloads, pods, gateways, AuthorizationPolicies) and holds the L7 kinds it alone consumes, and turns
 * them into encoded `ServiceConfig` resources, the set of resources each waypoint is sent, and status updates.
 *
 * Two levels of work, so a pod churning does not recompile every route:
 * - a *plan* recompile (compiler.ts, everything but endpoints) when an L7 object or something the plans depend
 *   on changes (Namespace, Service, ServiceEntry, Gateway, GatewayClass, AuthorizationPolicy);
 * - an *endpoint* refresh of only the services a changed workload belongs to (before or after the change), from the
 *   ambient index's Workload resources (named target ports already resolved per pod) and the pod's labels for
 *   DestinationRule subsets.
 * Every ServiceConfig is encoded once; only those whose bytes changed are returned by `flush()`.
 */
import { Endpoint, ServiceConfig, type Subset } from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import { type Address, workload } from '../../../pkg/xds/index.ts';
import {
  type AmbientIndex,
  type ConditionSpec,
  type IndexChange,
  type Kind,
  podUid,
  workloadEntryUid,
} from '../index/index.ts';
import { bytesEqual } from '../index/util.ts';
import { isSubset, keyOf, labelsOf } from '../kube/labels.ts';
import type { KubeObject } from '../kube/types.ts';
import { type CompileOutput, compileWaypointConfig, type ServicePlan, type StatusWant } from './compiler.ts';
import type { L7StatusUpdate } from './status.ts';
import type {
  DestinationRule,
  GRPCRoute,
  HTTPRoute,
  ReferenceGrant,
  RequestAuthentication,
  VirtualService,
} from './types.ts';

/** The kinds only the L7 compiler consumes (the ambient index holds the rest). */
export interface L7KindMap {
  HTTPRoute: HTTPRoute;
  GRPCRoute: GRPCRoute;
  VirtualService: VirtualService;
  DestinationRule: DestinationRule;
  RequestAuthentication: RequestAuthentication;
  ReferenceGrant: ReferenceGrant;
}

export type L7Kind = keyof L7KindMap;

export const L7_KINDS: readonly L7Kind[] = [
  'HTTPRoute',
  'GRPCRoute',
  'VirtualService',
  'DestinationRule',
  'RequestAuthentication',
  'ReferenceGrant',
];

/** Ambient-index kinds whose change can change plans (not only endpoints). */
const PLAN_KINDS: ReadonlySet<Kind> = new Set([
  'Namespace',
  'Service',
  'ServiceEntry',
  'Gateway',
  'GatewayClass',
  'AuthorizationPolicy',
]);

export interface L7IndexChange {
  /** Encoded ServiceConfig by resource name; null = removed. */
  readonly resources: ReadonlyMap<string, Uint8Array | null>;
  /** Waypoints whose set of resources changed → the complete new set. */
  readonly scopes: ReadonlyMap<string, ReadonlySet<string>>;
  readonly statuses: readonly L7StatusUpdate[];
  /** Problems not reported before (log once), by object `<Kind>/<ns>/<name>`. */
  readonly problems: ReadonlyArray<{ readonly object: string; readonly message: string }>;
}

interface Encoded {
  readonly message: ServiceConfig;
  readonly bytes: Uint8Array;
}

/** Text form of a 4- or 16-byte address. */
export function ipText(b: Uint8Array): string {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  if (b.length !== 16) return '';
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i]! << 8) | b[i + 1]!);
  // RFC 5952: compress the longest run (≥ 2) of zero groups.
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

function statusUpdateOf(w: StatusWant): L7StatusUpdate {
  if ('parents' in w) {
    return {
      kind: w.kind,
      namespace: w.namespace,
      name: w.name,
      parents: w.parents.map((p) => ({
        parentRef: p.parentRef,
        conditions: new Map(
          p.conditions.map((c) => [
            c.type,
            { status: c.status, reason: c.reason, message: c.message, observedGeneration: w.generation },
          ]),
        ),
      })),
    };
  }
  return {
    kind: w.kind,
    namespace: w.namespace,
    name: w.name,
    conditions: new Map<string, ConditionSpec | null>([
      [
        w.condition.type,
        {
          status: w.condition.status,
          reason: w.condition.reason,
          message: w.condition.message,
          observedGeneration: w.generation,
        },
      ],
    ]),
  };
}

/** The update that takes our status off an object we no longer have an opinion on. */
function statusRemovalOf(w: StatusWant): L7StatusUpdate {
  if ('parents' in w) return { kind: w.kind, namespace: w.namespace, name: w.name, parents: [] };
  return {
    kind: w.kind,
    namespace: w.namespace,
    name: w.name,
    conditions: new Map([[w.condition.type, null]]),
  };
}

export class L7Index {
  private readonly ambient: AmbientIndex;
  private readonly objects = new Map<L7Kind, Map<string, KubeObject>>();

  private plans: ReadonlyMap<string, ServicePlan> = new Map();
  private scopes: ReadonlyMap<string, ReadonlySet<string>> = new Map();
  private statusOut = new Map<string, { want: StatusWant; text: string }>();
  private problemsOut = new Map<string, ReadonlySet<string>>();
  private readonly out = new Map<string, Encoded>();

  /** Workload uid → service keys it is an endpoint of; and the reverse. */
  private readonly uidServices = new Map<string, ReadonlySet<string>>();
  private readonly serviceUids = new Map<string, Set<string>>();

  private planDirty = true;
  /** Plan-affecting ambient events wait for the ambient index's flush before they count. */
  private planDirtyAfterAmbientFlush = false;
  private readonly dirtyUids = new Set<string>();
  private readonly dirtyKeys = new Set<string>();

  constructor(ambient: AmbientIndex) {
    this.ambient = ambient;
    for (const k of L7_KINDS) this.objects.set(k, new Map());
    for (const name of ambient.addressNames()) this.dirtyUids.add(name);
  }

  // ---- inputs ------------------------------------------------------------------------------------------------

  upsert<K extends L7Kind>(kind: K, obj: L7KindMap[K]): void {
    this.objects.get(kind)!.set(keyOf(obj), obj);
    this.planDirty = true;
  }

  remove<K extends L7Kind>(kind: K, obj: L7KindMap[K]): void {
    if (this.objects.get(kind)!.delete(keyOf(obj))) this.planDirty = true;
  }

  list<K extends L7Kind>(kind: K): L7KindMap[K][] {
    return [...this.objects.get(kind)!.values()] as L7KindMap[K][];
  }

  /** An object event the ambient index is about to apply (called before its flush). */
  ambientEvent(kind: Kind, obj: KubeObject): void {
    if (PLAN_KINDS.has(kind)) this.planDirtyAfterAmbientFlush = true;
    else if (kind === 'Pod' || kind === 'WorkloadEntry') {
      // Label changes move endpoints between subsets without changing the Workload resource.
      const ns = obj.metadata?.namespace ?? '';
      const name = obj.metadata?.name ?? '';
      const c = this.ambient.clusterId;
      this.dirtyUids.add(kind === 'Pod' ? podUid(c, ns, name) : workloadEntryUid(c, ns, name));
    } else if (kind === 'ServiceEntry') {
      this.planDirtyAfterAmbientFlush = true;
    }
  }

  /** What the ambient index's flush changed. */
  ambientFlushed(change: IndexChange): void {
    if (this.planDirtyAfterAmbientFlush) {
      this.planDirtyAfterAmbientFlush = false;
      this.planDirty = true;
    }
    for (const name of change.addresses.keys()) {
      if (this.plans.has(name)) this.dirtyKeys.add(name);
      else this.dirtyUids.add(name);
    }
  }

  get dirty(): boolean {
    return this.planDirty || this.dirtyUids.size > 0 || this.dirtyKeys.size > 0;
  }

  // ---- recomputation -----------------------------------------------------------------------------------------

  flush(): L7IndexChange {
    const resources = new Map<string, Uint8Array | null>();
    const statuses: L7StatusUpdate[] = [];
    const problems: Array<{ object: string; message: string }> = [];
    let scopeChanges = new Map<string, ReadonlySet<string>>();
    if (this.planDirty) {
      this.planDirty = false;
      const compiled = this.compile();
      for (const k of this.plans.keys()) this.dirtyKeys.add(k);
      for (const k of compiled.plans.keys()) this.dirtyKeys.add(k);
      this.plans = compiled.plans;
      scopeChanges = this.diffScopes(compiled.scopes);
      this.scopes = compiled.scopes;
      this.diffStatuses(compiled, statuses);
      this.diffProblems(compiled, problems);
    }
    for (const uid of this.dirtyUids) this.refreshWorkload(uid);
    this.dirtyUids.clear();
    for (const key of this.dirtyKeys) {
      const plan = this.plans.get(key);
      if (!plan) {
        if (this.out.delete(key)) resources.set(key, null);
        continue;
      }
      const message = this.render(plan);
      const bytes = ServiceConfig.encode(message).finish();
      const cur = this.out.get(key);
      if (cur && bytesEqual(cur.bytes, bytes)) continue;
      this.out.set(key, { message, bytes });
      resources.set(key, bytes);
    }
    this.dirtyKeys.clear();
    return { resources, scopes: scopeChanges, statuses, problems };
  }

  private compile(): CompileOutput {
    const a = this.ambient;
    return compileWaypointConfig({
      domainSuffix: a.domainSuffix,
      rootNamespace: a.rootNamespace,
      services: a.serviceInfoMap(),
      waypoints: a.waypointMap(),
      namespace: (n) => a.get('Namespace', n),
      httpRoutes: this.list('HTTPRoute'),
      grpcRoutes: this.list('GRPCRoute'),
      virtualServices: this.list('VirtualService'),
      destinationRules: this.list('DestinationRule'),
      authorizationPolicies: a.list('AuthorizationPolicy'),
      requestAuthentications: this.list('RequestAuthentication'),
      referenceGrants: this.list('ReferenceGrant'),
    });
  }

  private diffScopes(next: ReadonlyMap<string, ReadonlySet<string>>): Map<string, ReadonlySet<string>> {
    const changed = new Map<string, ReadonlySet<string>>();
    for (const [w, names] of next) {
      const old = this.scopes.get(w);
      if (!old || old.size !== names.size || [...names].some((n) => !old.has(n))) changed.set(w, names);
    }
    for (const w of this.scopes.keys()) if (!next.has(w)) changed.set(w, new Set());
    return changed;
  }

  private diffStatuses(compiled: CompileOutput, out: L7StatusUpdate[]): void {
    const next = new Map<string, { want: StatusWant; text: string }>();
    for (const [key, want] of compiled.statuses) {
      // A route with no mesh parents that we never wrote needs nothing.
      const isEmptyRoute = 'parents' in want && want.parents.length === 0;
      if (isEmptyRoute && !this.statusOut.has(key)) continue;
      const text = JSON.stringify(want);
      if (!isEmptyRoute) next.set(key, { want, text });
      if (this.statusOut.get(key)?.text !== text) out.push(statusUpdateOf(want));
    }
    for (const [key, prev] of this.statusOut) {
      if (!compiled.statuses.has(key)) out.push(statusRemovalOf(prev.want));
    }
    this.statusOut = next;
  }

  private diffProblems(compiled: CompileOutput, out: Array<{ object: string; message: string }>): void {
    const next = new Map<string, ReadonlySet<string>>();
    for (const [object, list] of compiled.problems) {
      const seen = this.problemsOut.get(object);
      for (const message of list) if (!seen?.has(message)) out.push({ object, message });
      next.set(object, new Set(list));
    }
    this.problemsOut = next;
  }

  /** Re-reads one workload's service memberships and marks the services it joined or left. */
  private refreshWorkload(uid: string): void {
    const addr = this.ambient.address(uid);
    const w = addr?.type?.$case === 'workload' ? addr.type.value : null;
    const next = new Set(w ? Object.keys(w.services) : []);
    const prev = this.uidServices.get(uid) ?? new Set<string>();
    for (const k of prev) {
      if (!next.has(k)) {
        const s = this.serviceUids.get(k);
        s?.delete(uid);
        if (s && s.size === 0) this.serviceUids.delete(k);
      }
      if (this.plans.has(k)) this.dirtyKeys.add(k);
    }
    for (const k of next) {
      let s = this.serviceUids.get(k);
      if (!s) {
        s = new Set();
        this.serviceUids.set(k, s);
      }
      s.add(uid);
      if (this.plans.has(k)) this.dirtyKeys.add(k);
    }
    if (next.size > 0) this.uidServices.set(uid, next);
    else this.uidServices.delete(uid);
  }

  private render(plan: ServicePlan): ServiceConfig {
    const info = plan.info;
    let resolution = '';
    if (info.kind === 'ServiceEntry') {
      const se = this.ambient.get('ServiceEntry', `${info.namespace}/${info.name}`);
      resolution = (se?.spec?.resolution ?? 'NONE').toUpperCase();
    }
    const endpoints: Endpoint[] = [];
    for (const uid of [...(this.serviceUids.get(plan.key) ?? [])].sort()) {
      const ep = this.endpoint(uid, plan.key, plan.subsets);
      if (ep) endpoints.push(ep);
    }
    return ServiceConfig.fromPartial({
      name: plan.key,
      namespace: info.namespace,
      hostname: info.hostname,
      serviceName: info.name,
      addresses: info.service.addresses.map((a) => ipText(a.address)).filter((t) => t !== ''),
      ports: [...plan.ports],
      waypoints: [...plan.waypoints],
      endpoints,
      subsets: [...plan.subsets],
      trafficPolicy: plan.trafficPolicy,
      routes: [...plan.routes],
      authorization: [...plan.authorization],
      jwtRules: [...plan.jwtRules],
      routeSource: plan.routeSource,
      resolution,
    });
  }

  private endpoint(uid: string, key: string, subsets: readonly Subset[]): Endpoint | null {
    const addr: Address | undefined = this.ambient.address(uid);
    if (addr?.type?.$case !== 'workload') return null;
    const w = addr.type.value;
    const ports: Record<number, number> = {};
    for (const p of w.services[key]?.ports ?? []) ports[p.servicePort] = p.targetPort || p.servicePort;
    const labels = this.labelsOf(uid, w.namespace);
    const first = w.addresses[0];
    return Endpoint.fromPartial({
      workloadUid: uid,
      address: first ? ipText(first) : w.hostname,
      ports,
      identity: `spiffe://${w.trustDomain || this.ambient.trustDomain}/ns/${w.namespace}/sa/${w.serviceAccount}`,
      healthy: w.status === workload.WorkloadStatus.HEALTHY,
      hbone: w.tunnelProtocol === workload.TunnelProtocol.HBONE,
      subsets: subsets.filter((s) => isSubset(s.labels, labels)).map((s) => s.name),
      node: w.node,
      workloadName: w.workloadName,
      workloadNamespace: w.namespace,
      canonicalService: w.canonicalName,
      canonicalRevision: w.canonicalRevision,
      serviceAccount: w.serviceAccount,
    });
  }

  /** The labels subsets select on: the pod's, the WorkloadEntry's, or the ServiceEntry endpoint's. */
  private labelsOf(uid: string, namespace: string): Readonly<Record<string, string>> {
    const c = this.ambient.clusterId;
    const pod = `${c}//Pod/${namespace}/`;
    if (uid.startsWith(pod))
      return labelsOf(this.ambient.get('Pod', `${namespace}/${uid.slice(pod.length)}`));
    const we = `${c}/networking.istio.io/WorkloadEntry/${namespace}/`;
    if (uid.startsWith(we)) {
      const obj = this.ambient.get('WorkloadEntry', `${namespace}/${uid.slice(we.length)}`);
      return { ...labelsOf(obj), ...(obj?.spec?.labels ?? {}) };
    }
    const se = `${c}/networking.istio.io/ServiceEntry/${namespace}/`;
    if (uid.startsWith(se)) {
      const rest = uid.slice(se.length);
      const slash = rest.indexOf('/');
      const obj = this.ambient.get('ServiceEntry', `${namespace}/${rest.slice(0, slash)}`);
      const address = rest.slice(slash + 1);
      return obj?.spec?.endpoints?.find((e) => e.address === address)?.labels ?? {};
    }
    return {};
  }

  // ---- reads -------------------------------------------------------------------------------------------------

  config(name: string): ServiceConfig | undefined {
    return this.out.get(name)?.message;
  }

  configNames(): string[] {
    return [...this.out.keys()].sort();
  }

  encodedConfigs(): Map<string, Uint8Array> {
    return new Map([...this.out].map(([k, v]) => [k, v.bytes]));
  }

  scope(waypoint: string): ReadonlySet<string> {
    return this.scopes.get(waypoint) ?? new Set();
  }

  allScopes(): ReadonlyMap<string, ReadonlySet<string>> {
    return this.scopes;
  }

  /** The status istiod currently wants on an object `<Kind>/<ns>/<name>` (tests, debug). */
  status(key: string): StatusWant | undefined {
    return this.statusOut.get(key)?.want;
  }
}
