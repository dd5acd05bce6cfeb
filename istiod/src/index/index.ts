/**
 * The ambient index (ARCHITECTURE.md, istiod "Ambient index"): a pure, incremental function from Kubernetes
 * objects to the resources ztunnel consumes (`istio.workload.Address` = Workload | Service, and
 * `istio.security.Authorization`) plus the status conditions istiod owns on the inputs.
 *
 * Inputs arrive as `upsert(kind, obj)` / `remove(kind, obj)`; each marks what depends on the object dirty (a
 * pod, the workloads of a namespace, the services of a hostname, ...). `flush()` recomputes only the dirty
 * parts, in dependency order (waypoints → policies → services → workloads), and returns the net change as
 * encoded resources keyed by xDS resource name (`null` = removed). Resources are compared by their encoded bytes,
 * so a recomputation that yields the same content produces no change and no push.
 *
 * Nothing here does I/O: informers (istiod/src/kube) feed it, the xDS server consumes `flush()`'s output, and
 * tests drive it with plain objects.
 */
import { Address, Authorization, Scope } from '../../../pkg/xds/index.ts';
import { keyOf, labelsOf } from '../kube/labels.ts';
import type {
  AuthorizationPolicy,
  EndpointSlice,
  Gateway,
  GatewayClass,
  KubeObject,
  Service as KubeService,
  Namespace,
  Node,
  PeerAuthentication,
  Pod,
  ServiceEntry,
  WorkloadEntry,
} from '../kube/types.ts';
import {
  applicablePeerAuthentications,
  convertAuthorizationPolicy,
  convertPeerAuthentication,
  hasTargetRefs,
  isWideSelector,
  oldest,
  peerAuthenticationKeys,
  staticStrictPolicy,
  ZTUNNEL_ACCEPTED,
} from '../policy/index.ts';
import {
  DEFAULT_CLUSTER_ID,
  DEFAULT_DOMAIN_SUFFIX,
  DEFAULT_ROOT_NAMESPACE,
  DEFAULT_TRUST_DOMAIN,
  REGION_LABEL,
  SERVICE_NAME_LABEL,
  SUBZONE_LABEL,
  WAYPOINT_BOUND_CONDITION,
  ZONE_LABEL,
} from './constants.ts';
import {
  buildServiceEntryInfos,
  buildServiceInfo,
  type ServiceInfo,
  serviceHostname,
  waypointBoundCondition,
} from './services.ts';
import { bytesEqual } from './util.ts';
import { buildWaypoint, type Waypoint, waypointFingerprint } from './waypoints.ts';
import {
  buildEndpointSliceWorkloads,
  buildPodWorkload,
  buildServiceEntryWorkloads,
  buildWorkloadEntryWorkload,
  type WorkloadContext,
} from './workloads.ts';

export * from './constants.ts';
export { appProtocolOf, type ServiceInfo, serviceHostname } from './services.ts';
export type { BindingError, Waypoint } from './waypoints.ts';
export {
  canonicalService,
  endpointSliceUid,
  podUid,
  serviceEntryUid,
  workloadEntryUid,
  workloadNameAndType,
} from './workloads.ts';

/** The Kubernetes kinds the index consumes. */
export interface KindMap {
  Namespace: Namespace;
  Node: Node;
  Pod: Pod;
  Service: KubeService;
  EndpointSlice: EndpointSlice;
  ServiceEntry: ServiceEntry;
  WorkloadEntry: WorkloadEntry;
  Gateway: Gateway;
  GatewayClass: GatewayClass;
  AuthorizationPolicy: AuthorizationPolicy;
  PeerAuthentication: PeerAuthentication;
}

export type Kind = keyof KindMap;

export const KINDS: readonly Kind[] = [
  'Namespace',
  'Node',
  'Pod',
  'Service',
  'EndpointSlice',
  'ServiceEntry',
  'WorkloadEntry',
  'Gateway',
  'GatewayClass',
  'AuthorizationPolicy',
  'PeerAuthentication',
];

/** Kinds whose objects feed workloads, iterated per namespace when a namespace-wide input changes. */
const WORKLOAD_KINDS = ['Pod', 'WorkloadEntry', 'ServiceEntry', 'EndpointSlice'] as const;
const SERVICE_KINDS = ['Service', 'ServiceEntry'] as const;

export interface AmbientIndexOptions {
  /** First segment of workload uids and `cluster_id`; Istio's default is `Kubernetes`. */
  readonly clusterId?: string;
  readonly domainSuffix?: string;
  readonly trustDomain?: string;
  /** Mesh config root namespace (GLOBAL policies, mesh-wide PeerAuthentication, static STRICT policy). */
  readonly rootNamespace?: string;
  /** Network of addresses that carry no `topology.istio.io/network` label. */
  readonly network?: string;
}

/** A condition istiod owns on an object; `status` true/false. */
export interface ConditionSpec {
  readonly status: boolean;
  readonly reason: string;
  readonly message: string;
  readonly observedGeneration: number;
}

export interface StatusUpdate {
  readonly kind: 'Service' | 'ServiceEntry' | 'AuthorizationPolicy';
  readonly namespace: string;
  readonly name: string;
  /** Condition type → desired condition, or null to remove it. Types not listed are not ours. */
  readonly conditions: ReadonlyMap<string, ConditionSpec | null>;
}

/** The net result of a flush: encoded resources by xDS name (null = removed) and status to write. */
export interface IndexChange {
  readonly addresses: ReadonlyMap<string, Uint8Array | null>;
  readonly authorizations: ReadonlyMap<string, Uint8Array | null>;
  readonly statuses: readonly StatusUpdate[];
}

interface Encoded<T> {
  readonly message: T;
  readonly bytes: Uint8Array;
}

interface SelectorPolicy {
  readonly namespace: string;
  readonly matchLabels: Readonly<Record<string, string>>;
}

const PEER_AUTH_SOURCE = 'PeerAuthentication';

function parseSource(src: string): { kind: string; ns: string; name: string } {
  const first = src.indexOf('/');
  const second = src.indexOf('/', first + 1);
  return { kind: src.slice(0, first), ns: src.slice(first + 1, second), name: src.slice(second + 1) };
}

function addToSet<K, V>(m: Map<K, Set<V>>, k: K, v: V): void {
  let s = m.get(k);
  if (!s) {
    s = new Set();
    m.set(k, s);
  }
  s.add(v);
}

function deleteFromSet<K, V>(m: Map<K, Set<V>>, k: K, v: V): void {
  const s = m.get(k);
  if (!s) return;
  s.delete(v);
  if (s.size === 0) m.delete(k);
}

function conditionsEqual(
  a: ReadonlyMap<string, ConditionSpec | null> | undefined,
  b: ReadonlyMap<string, ConditionSpec | null>,
): boolean {
  if (!a || a.size !== b.size) return false;
  for (const [k, v] of b) {
    const o = a.get(k);
    if (o === undefined) return false;
    if (o === null || v === null) {
      if (o !== v) return false;
      continue;
    }
    if (
      o.status !== v.status ||
      o.reason !== v.reason ||
      o.message !== v.message ||
      o.observedGeneration !== v.observedGeneration
    )
      return false;
  }
  return true;
}

export class AmbientIndex {
  readonly clusterId: string;
  readonly domainSuffix: string;
  readonly trustDomain: string;
  readonly rootNamespace: string;
  readonly network: string;

  private readonly objects = new Map<Kind, Map<string, KubeObject>>();
  /** Namespaced kinds: namespace → object keys. */
  private readonly byNamespace = new Map<Kind, Map<string, Set<string>>>();

  private waypoints = new Map<string, Waypoint>();
  private waypointPrints = new Map<string, string>();
  private readonly serviceInfos = new Map<string, ServiceInfo[]>();
  private readonly serviceSourcesByNs = new Map<string, Set<string>>();
  private readonly sourcesByHostname = new Map<string, Set<string>>();
  /** hostname → resource keys (`ns/hostname`) last output for it. */
  private readonly hostnameKeys = new Map<string, Set<string>>();
  /** Resource key (`ns/hostname`) → the ServiceInfo that won it (read by the waypoint L7 compiler). */
  private readonly winnerInfos = new Map<string, ServiceInfo>();
  private readonly workloadUids = new Map<string, string[]>();
  private readonly uidOwner = new Map<string, string>();
  private readonly podSlices = new Map<string, Set<string>>();
  private readonly slicePods = new Map<string, Set<string>>();
  private readonly selectorPolicies = new Map<string, SelectorPolicy>();
  private readonly policyOutputs = new Map<string, string[]>();
  private readonly nodeLocality = new Map<string, string>();

  private readonly addressOut = new Map<string, Encoded<Address>>();
  private readonly authOut = new Map<string, Encoded<Authorization>>();
  private readonly statusOut = new Map<string, Map<string, ConditionSpec | null>>();

  private readonly dirtyServices = new Set<string>();
  private readonly dirtyWorkloads = new Set<string>();
  private readonly dirtyPolicies = new Set<string>();
  private peerAuthDirty = false;
  private waypointsDirty = false;

  private pendingAddresses = new Map<string, Uint8Array | null>();
  private pendingAuthorizations = new Map<string, Uint8Array | null>();
  private pendingStatuses = new Map<string, StatusUpdate>();

  private readonly ctx: WorkloadContext;

  constructor(opts: AmbientIndexOptions = {}) {
    this.clusterId = opts.clusterId ?? DEFAULT_CLUSTER_ID;
    this.domainSuffix = opts.domainSuffix ?? DEFAULT_DOMAIN_SUFFIX;
    this.trustDomain = opts.trustDomain ?? DEFAULT_TRUST_DOMAIN;
    this.rootNamespace = opts.rootNamespace ?? DEFAULT_ROOT_NAMESPACE;
    this.network = opts.network ?? '';
    for (const k of KINDS) this.objects.set(k, new Map());
    const self = this;
    this.ctx = {
      clusterId: this.clusterId,
      trustDomain: this.trustDomain,
      network: this.network,
      domainSuffix: this.domainSuffix,
      get waypoints() {
        return self.waypoints;
      },
      namespace: (name) => this.get('Namespace', name),
      node: (name) => this.get('Node', name),
      servicesInNamespace: (ns) => this.servicesInNamespace(ns),
      kubeService: (ns, name) => this.serviceInfos.get(`Service/${ns}/${name}`)?.[0],
      slicedServicesOfPod: (ns, name) => this.slicedServicesOfPod(ns, name),
      policyKeys: (ns, labels) => this.policyKeys(ns, labels),
    };
  }

  // ---- inputs --------------------------------------------------------------------------------------------

  upsert<K extends Kind>(kind: K, obj: KindMap[K]): void {
    const key = keyOf(obj);
    const store = this.objects.get(kind)!;
    const old = (store.get(key) as KindMap[K] | undefined) ?? null;
    store.set(key, obj);
    const ns = obj.metadata?.namespace;
    if (ns) addToSet(this.nsIndex(kind), ns, key);
    this.changed(kind, key, old, obj);
  }

  remove<K extends Kind>(kind: K, obj: KindMap[K]): void {
    const key = keyOf(obj);
    const store = this.objects.get(kind)!;
    const old = (store.get(key) as KindMap[K] | undefined) ?? obj;
    if (!store.delete(key)) return;
    const ns = obj.metadata?.namespace;
    if (ns) deleteFromSet(this.nsIndex(kind), ns, key);
    this.changed(kind, key, old, null);
  }

  /** Replaces every object of a kind (an informer relist): removes what is gone, upserts the rest. */
  replace<K extends Kind>(kind: K, objs: readonly KindMap[K][]): void {
    const keep = new Set(objs.map((o) => keyOf(o)));
    for (const [key, o] of [...this.objects.get(kind)!])
      if (!keep.has(key)) this.remove(kind, o as KindMap[K]);
    for (const o of objs) this.upsert(kind, o);
  }

  get<K extends Kind>(kind: K, key: string): KindMap[K] | undefined {
    return this.objects.get(kind)!.get(key) as KindMap[K] | undefined;
  }

  list<K extends Kind>(kind: K): KindMap[K][] {
    return [...this.objects.get(kind)!.values()] as KindMap[K][];
  }

  private nsIndex(kind: Kind): Map<string, Set<string>> {
    let m = this.byNamespace.get(kind);
    if (!m) {
      m = new Map();
      this.byNamespace.set(kind, m);
    }
    return m;
  }

  private changed<K extends Kind>(
    kind: K,
    key: string,
    old: KindMap[K] | null,
    cur: KindMap[K] | null,
  ): void {
    const ns = (cur ?? old)?.metadata?.namespace ?? '';
    switch (kind) {
      case 'Namespace':
        this.markNamespaceServices(key);
        this.markNamespaceWorkloads(key);
        break;
      case 'Node': {
        const l = labelsOf(cur);
        const loc = cur ? `${l[REGION_LABEL] ?? ''}/${l[ZONE_LABEL] ?? ''}/${l[SUBZONE_LABEL] ?? ''}` : '';
        // Nodes update their status every few seconds; only topology matters here.
        if ((this.nodeLocality.get(key) ?? '') === loc) break;
        if (cur) this.nodeLocality.set(key, loc);
        else this.nodeLocality.delete(key);
        for (const [podKey, p] of this.objects.get('Pod')!) {
          if ((p as Pod).spec?.nodeName === key) this.dirtyWorkloads.add(`Pod/${podKey}`);
        }
        break;
      }
      case 'Pod':
        this.dirtyWorkloads.add(`Pod/${key}`);
        break;
      case 'Service':
        this.dirtyServices.add(`Service/${key}`);
        this.markNamespaceWorkloads(ns);
        break;
      case 'ServiceEntry':
        this.dirtyServices.add(`ServiceEntry/${key}`);
        this.markNamespaceWorkloads(ns);
        break;
      case 'WorkloadEntry':
        this.dirtyWorkloads.add(`WorkloadEntry/${key}`);
        break;
      case 'EndpointSlice':
        this.sliceChanged(key, ns, cur as EndpointSlice | null);
        break;
      case 'Gateway':
      case 'GatewayClass':
        this.waypointsDirty = true;
        break;
      case 'AuthorizationPolicy': {
        this.dirtyPolicies.add(key);
        const selects = (ap: AuthorizationPolicy | null) => !!ap?.spec?.selector && !hasTargetRefs(ap);
        if (selects(old as AuthorizationPolicy | null) || selects(cur as AuthorizationPolicy | null)) {
          if (ns === this.rootNamespace) this.markAllWorkloads();
          else this.markNamespaceWorkloads(ns);
        }
        break;
      }
      case 'PeerAuthentication':
        this.peerAuthDirty = true;
        if (ns === this.rootNamespace) this.markAllWorkloads();
        else this.markNamespaceWorkloads(ns);
        break;
    }
  }

  private sliceChanged(key: string, ns: string, cur: EndpointSlice | null): void {
    const before = this.slicePods.get(key) ?? new Set<string>();
    const after = new Set<string>();
    for (const ep of cur?.endpoints ?? []) {
      if (ep.targetRef?.kind === 'Pod' && ep.targetRef.name)
        after.add(`${ep.targetRef.namespace ?? ns}/${ep.targetRef.name}`);
    }
    for (const p of before) if (!after.has(p)) deleteFromSet(this.podSlices, p, key);
    for (const p of after) addToSet(this.podSlices, p, key);
    if (after.size > 0) this.slicePods.set(key, after);
    else this.slicePods.delete(key);
    for (const p of new Set([...before, ...after])) this.dirtyWorkloads.add(`Pod/${p}`);
    this.dirtyWorkloads.add(`EndpointSlice/${key}`);
  }

  private markNamespaceWorkloads(ns: string): void {
    for (const kind of WORKLOAD_KINDS) {
      for (const key of this.nsIndex(kind).get(ns) ?? []) this.dirtyWorkloads.add(`${kind}/${key}`);
    }
  }

  private markNamespaceServices(ns: string): void {
    for (const kind of SERVICE_KINDS) {
      for (const key of this.nsIndex(kind).get(ns) ?? []) this.dirtyServices.add(`${kind}/${key}`);
    }
  }

  private markAllWorkloads(): void {
    for (const kind of WORKLOAD_KINDS)
      for (const key of this.objects.get(kind)!.keys()) this.dirtyWorkloads.add(`${kind}/${key}`);
  }

  private markAllServices(): void {
    for (const kind of SERVICE_KINDS)
      for (const key of this.objects.get(kind)!.keys()) this.dirtyServices.add(`${kind}/${key}`);
  }

  // ---- recomputation -------------------------------------------------------------------------------------

  /** True when some input changed since the last flush. */
  get dirty(): boolean {
    return (
      this.waypointsDirty ||
      this.peerAuthDirty ||
      this.dirtyPolicies.size > 0 ||
      this.dirtyServices.size > 0 ||
      this.dirtyWorkloads.size > 0
    );
  }

  /** Recomputes everything marked dirty and returns what changed since the previous flush. */
  flush(): IndexChange {
    if (this.waypointsDirty) this.recomputeWaypoints();
    if (this.peerAuthDirty) this.recomputePeerAuthentications();
    for (const key of this.dirtyPolicies) this.recomputePolicy(key);
    this.dirtyPolicies.clear();
    const hostnames = new Set<string>();
    for (const src of this.dirtyServices) this.recomputeServiceSource(src, hostnames);
    this.dirtyServices.clear();
    for (const h of hostnames) this.recomputeHostname(h);
    for (const src of this.dirtyWorkloads) this.recomputeWorkloadSource(src);
    this.dirtyWorkloads.clear();
    const change: IndexChange = {
      addresses: this.pendingAddresses,
      authorizations: this.pendingAuthorizations,
      statuses: [...this.pendingStatuses.values()],
    };
    this.pendingAddresses = new Map();
    this.pendingAuthorizations = new Map();
    this.pendingStatuses = new Map();
    return change;
  }

  private recomputeWaypoints(): void {
    this.waypointsDirty = false;
    const next = new Map<string, Waypoint>();
    const prints = new Map<string, string>();
    for (const gw of this.objects.get('Gateway')!.values() as Iterable<Gateway>) {
      const cls = this.get('GatewayClass', gw.spec?.gatewayClassName ?? '');
      const w = buildWaypoint(gw, cls, this.network);
      if (!w) continue;
      next.set(w.key, w);
      prints.set(w.key, waypointFingerprint(w));
    }
    let same = prints.size === this.waypointPrints.size;
    if (same) for (const [k, p] of prints) if (this.waypointPrints.get(k) !== p) same = false;
    this.waypoints = next;
    this.waypointPrints = prints;
    if (!same) {
      // Bindings can reference waypoints across namespaces; waypoint changes are rare, so rebind everything.
      this.markAllServices();
      this.markAllWorkloads();
    }
  }

  private recomputePeerAuthentications(): void {
    this.peerAuthDirty = false;
    const all = this.list('PeerAuthentication');
    const names: string[] = [];
    if (all.length > 0) {
      const strict = staticStrictPolicy(this.rootNamespace);
      names.push(this.setAuthorization(strict));
      const wide = new Map<string, PeerAuthentication[]>();
      for (const pa of all) {
        if (!pa.spec?.selector || isWideSelector(pa)) {
          const ns = pa.metadata?.namespace ?? '';
          const l = wide.get(ns) ?? [];
          l.push(pa);
          wide.set(ns, l);
        }
      }
      const rootCfg = oldest(wide.get(this.rootNamespace) ?? []);
      for (const pa of all) {
        const ns = pa.metadata?.namespace ?? '';
        const converted = convertPeerAuthentication(
          this.rootNamespace,
          pa,
          oldest(wide.get(ns) ?? []),
          rootCfg,
        );
        if (converted) names.push(this.setAuthorization(converted));
      }
    }
    this.replacePolicyOutputs(PEER_AUTH_SOURCE, names);
  }

  private recomputePolicy(key: string): void {
    const ap = this.get('AuthorizationPolicy', key);
    const statusKey = `AuthorizationPolicy/${key}`;
    if (!ap) {
      this.selectorPolicies.delete(key);
      this.replacePolicyOutputs(key, []);
      this.statusOut.delete(statusKey);
      return;
    }
    const { authorization, status } = convertAuthorizationPolicy(this.rootNamespace, ap);
    if (authorization && authorization.scope === Scope.WORKLOAD_SELECTOR) {
      this.selectorPolicies.set(key, {
        namespace: authorization.namespace,
        matchLabels: ap.spec?.selector?.matchLabels ?? {},
      });
    } else {
      this.selectorPolicies.delete(key);
    }
    this.replacePolicyOutputs(key, authorization ? [this.setAuthorization(authorization)] : []);
    const conditions = new Map<string, ConditionSpec | null>();
    if (status) {
      conditions.set(ZTUNNEL_ACCEPTED, {
        status: status.accepted,
        reason: status.reason,
        message: status.message,
        observedGeneration: ap.metadata?.generation ?? 0,
      });
    } else if (this.statusOut.get(statusKey)?.get(ZTUNNEL_ACCEPTED)) {
      conditions.set(ZTUNNEL_ACCEPTED, null);
    }
    if (conditions.size > 0 || this.statusOut.has(statusKey)) {
      this.setStatus(
        'AuthorizationPolicy',
        ap.metadata?.namespace ?? '',
        ap.metadata?.name ?? '',
        conditions,
      );
    }
  }

  private recomputeServiceSource(src: string, hostnames: Set<string>): void {
    const { kind, ns, name } = parseSource(src);
    const key = `${ns}/${name}`;
    const nsObj = this.get('Namespace', ns);
    const opts = { domainSuffix: this.domainSuffix, network: this.network };
    let infos: ServiceInfo[] = [];
    if (kind === 'Service') {
      const svc = this.get('Service', key);
      const info = svc ? buildServiceInfo(svc, nsObj, this.waypoints, opts) : null;
      if (info) infos = [info];
    } else {
      const se = this.get('ServiceEntry', key);
      if (se) infos = buildServiceEntryInfos(se, nsObj, this.waypoints, opts);
    }
    const old = this.serviceInfos.get(src) ?? [];
    for (const i of old) {
      hostnames.add(i.hostname);
      deleteFromSet(this.sourcesByHostname, i.hostname, src);
    }
    for (const i of infos) {
      hostnames.add(i.hostname);
      addToSet(this.sourcesByHostname, i.hostname, src);
    }
    const statusKey = `${kind}/${key}`;
    if (infos.length > 0) {
      this.serviceInfos.set(src, infos);
      addToSet(this.serviceSourcesByNs, ns, src);
      const cond = waypointBoundCondition(infos[0]!);
      const conditions = new Map<string, ConditionSpec | null>();
      if (cond)
        conditions.set(WAYPOINT_BOUND_CONDITION, { ...cond, observedGeneration: infos[0]!.generation });
      else if (this.statusOut.get(statusKey)?.get(WAYPOINT_BOUND_CONDITION))
        conditions.set(WAYPOINT_BOUND_CONDITION, null);
      if (conditions.size > 0 || this.statusOut.has(statusKey)) {
        this.setStatus(kind as 'Service' | 'ServiceEntry', ns, name, conditions);
      }
    } else {
      this.serviceInfos.delete(src);
      deleteFromSet(this.serviceSourcesByNs, ns, src);
      this.statusOut.delete(statusKey);
    }
  }

  /**
   * Outputs the services of one hostname: per namespace a Kubernetes Service wins over ServiceEntries, else
   * the oldest ServiceEntry; the hostname's canonical service is its Kubernetes Service, else the oldest winner.
   */
  private recomputeHostname(hostname: string): void {
    const winners = new Map<string, ServiceInfo>();
    for (const src of this.sourcesByHostname.get(hostname) ?? []) {
      for (const info of this.serviceInfos.get(src) ?? []) {
        if (info.hostname !== hostname) continue;
        const cur = winners.get(info.key);
        if (!cur || better(info, cur)) winners.set(info.key, info);
      }
    }
    let canonical: ServiceInfo | null = null;
    for (const w of winners.values()) {
      if (w.kind === 'Service') {
        canonical = w;
        break;
      }
      if (!canonical || better(w, canonical)) canonical = w;
    }
    const before = this.hostnameKeys.get(hostname) ?? new Set<string>();
    for (const k of before) {
      if (winners.has(k)) continue;
      this.deleteAddress(k);
      this.winnerInfos.delete(k);
    }
    for (const [k, w] of winners) {
      this.winnerInfos.set(k, w);
      const service = w === canonical ? { ...w.service, canonical: true } : w.service;
      this.setAddress(k, { type: { $case: 'service', value: service } });
    }
    if (winners.size > 0) this.hostnameKeys.set(hostname, new Set(winners.keys()));
    else this.hostnameKeys.delete(hostname);
  }

  private recomputeWorkloadSource(src: string): void {
    const { kind, ns, name } = parseSource(src);
    const key = `${ns}/${name}`;
    const built = [];
    switch (kind) {
      case 'Pod': {
        const pod = this.get('Pod', key);
        const w = pod ? buildPodWorkload(pod, this.ctx) : null;
        if (w) built.push(w);
        break;
      }
      case 'WorkloadEntry': {
        const we = this.get('WorkloadEntry', key);
        if (we) built.push(buildWorkloadEntryWorkload(we, this.ctx));
        break;
      }
      case 'ServiceEntry': {
        const se = this.get('ServiceEntry', key);
        if (se)
          built.push(
            ...buildServiceEntryWorkloads(se, this.serviceInfos.get(`ServiceEntry/${key}`) ?? [], this.ctx),
          );
        break;
      }
      case 'EndpointSlice': {
        const slice = this.get('EndpointSlice', key);
        if (slice) built.push(...buildEndpointSliceWorkloads(slice, this.ctx));
        break;
      }
    }
    const uids = built.map((w) => w.uid);
    for (const old of this.workloadUids.get(src) ?? []) {
      if (!uids.includes(old) && this.uidOwner.get(old) === src) {
        this.uidOwner.delete(old);
        this.deleteAddress(old);
      }
    }
    for (const w of built) {
      this.uidOwner.set(w.uid, src);
      this.setAddress(w.uid, { type: { $case: 'workload', value: w } });
    }
    if (uids.length > 0) this.workloadUids.set(src, uids);
    else this.workloadUids.delete(src);
  }

  // ---- lookups used while building -----------------------------------------------------------------------

  private *servicesInNamespace(ns: string): Iterable<ServiceInfo> {
    const sources = this.serviceSourcesByNs.get(ns);
    if (!sources) return;
    // Kubernetes Services first: they win a hostname shared with a ServiceEntry.
    for (const src of sources) if (src.startsWith('Service/')) yield* this.serviceInfos.get(src) ?? [];
    for (const src of sources) if (!src.startsWith('Service/')) yield* this.serviceInfos.get(src) ?? [];
  }

  private *slicedServicesOfPod(ns: string, name: string): Iterable<ServiceInfo> {
    for (const sliceKey of this.podSlices.get(`${ns}/${name}`) ?? []) {
      const slice = this.get('EndpointSlice', sliceKey);
      const svcName = labelsOf(slice)[SERVICE_NAME_LABEL];
      if (!slice || !svcName) continue;
      const info = this.serviceInfos.get(`Service/${slice.metadata?.namespace ?? ''}/${svcName}`)?.[0];
      // Selector-based Services are matched by labels; slices only add the manual ones.
      if (info && info.selector === null) yield info;
    }
  }

  private policyKeys(ns: string, labels: Readonly<Record<string, string>>): string[] {
    const keys: string[] = [];
    for (const [key, p] of this.selectorPolicies) {
      if (p.namespace !== ns && p.namespace !== this.rootNamespace) continue;
      let ok = true;
      for (const k in p.matchLabels) {
        if (labels[k] !== p.matchLabels[k]) {
          ok = false;
          break;
        }
      }
      if (ok) keys.push(key);
    }
    keys.sort();
    const pas = applicablePeerAuthentications(
      this.objects.get('PeerAuthentication')!.values() as Iterable<PeerAuthentication>,
      this.rootNamespace,
      ns,
      labels,
    );
    if (pas.length > 0) keys.push(...peerAuthenticationKeys(this.rootNamespace, pas));
    return keys;
  }

  // ---- outputs -------------------------------------------------------------------------------------------

  private setAddress(name: string, message: Address): void {
    const bytes = Address.encode(message).finish();
    const cur = this.addressOut.get(name);
    if (cur && bytesEqual(cur.bytes, bytes)) return;
    this.addressOut.set(name, { message, bytes });
    this.pendingAddresses.set(name, bytes);
  }

  private deleteAddress(name: string): void {
    if (!this.addressOut.delete(name)) return;
    this.pendingAddresses.set(name, null);
  }

  private setAuthorization(a: Authorization): string {
    const name = `${a.namespace}/${a.name}`;
    const bytes = Authorization.encode(a).finish();
    const cur = this.authOut.get(name);
    if (!cur || !bytesEqual(cur.bytes, bytes)) {
      this.authOut.set(name, { message: a, bytes });
      this.pendingAuthorizations.set(name, bytes);
    }
    return name;
  }

  /** Records the authorization names a source now produces and removes those it no longer does. */
  private replacePolicyOutputs(source: string, names: string[]): void {
    for (const old of this.policyOutputs.get(source) ?? []) {
      if (!names.includes(old) && this.authOut.delete(old)) this.pendingAuthorizations.set(old, null);
    }
    if (names.length > 0) this.policyOutputs.set(source, names);
    else this.policyOutputs.delete(source);
  }

  private setStatus(
    kind: StatusUpdate['kind'],
    namespace: string,
    name: string,
    conditions: Map<string, ConditionSpec | null>,
  ): void {
    const key = `${kind}/${namespace}/${name}`;
    if (conditionsEqual(this.statusOut.get(key), conditions)) return;
    // Removals are written once, then forgotten.
    const kept = new Map([...conditions].filter(([, c]) => c !== null));
    if (kept.size > 0) this.statusOut.set(key, kept);
    else this.statusOut.delete(key);
    if (conditions.size > 0) this.pendingStatuses.set(key, { kind, namespace, name, conditions });
  }

  // ---- reads (debug, tests, initial server load) -----------------------------------------------------------

  /** Every current Address resource, encoded, by xDS name. */
  encodedAddresses(): Map<string, Uint8Array> {
    return new Map([...this.addressOut].map(([k, v]) => [k, v.bytes]));
  }

  encodedAuthorizations(): Map<string, Uint8Array> {
    return new Map([...this.authOut].map(([k, v]) => [k, v.bytes]));
  }

  address(name: string): Address | undefined {
    return this.addressOut.get(name)?.message;
  }

  authorization(name: string): Authorization | undefined {
    return this.authOut.get(name)?.message;
  }

  addressNames(): string[] {
    return [...this.addressOut.keys()].sort();
  }

  authorizationNames(): string[] {
    return [...this.authOut.keys()].sort();
  }

  /** The conditions istiod currently wants on an object (for debugging and tests). */
  conditions(
    kind: StatusUpdate['kind'],
    namespace: string,
    name: string,
  ): ReadonlyMap<string, ConditionSpec | null> {
    return this.statusOut.get(`${kind}/${namespace}/${name}`) ?? new Map();
  }

  waypoint(key: string): Waypoint | undefined {
    return this.waypoints.get(key);
  }

  /** Every current waypoint by `namespace/name` (read-only view; replaced, never mutated, on change). */
  waypointMap(): ReadonlyMap<string, Waypoint> {
    return this.waypoints;
  }

  /** The ServiceInfo behind a Service resource `<ns>/<hostname>` (the winner for that key), if any. */
  serviceInfo(key: string): ServiceInfo | undefined {
    return this.winnerInfos.get(key);
  }

  /** Every Service resource's ServiceInfo, by resource key `<ns>/<hostname>`. */
  serviceInfoMap(): ReadonlyMap<string, ServiceInfo> {
    return this.winnerInfos;
  }

  /** Kubernetes Service hostname helper bound to this index's domain suffix. */
  hostname(name: string, namespace: string): string {
    return serviceHostname(name, namespace, this.domainSuffix);
  }
}

/** a beats b for the same hostname: a Kubernetes Service always, else the older one (then by source key). */
function better(a: ServiceInfo, b: ServiceInfo): boolean {
  if (a.kind !== b.kind) return a.kind === 'Service';
  if (a.created !== b.created) return a.created < b.created;
  return a.sourceKey < b.sourceKey;
}
