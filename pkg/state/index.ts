/**
 * What a proxy knows of the mesh, built from xDS (istio.workload.Address and istio.security.Authorization):
 * workloads by IP, services by VIP, endpoints per service, and the policies that apply to a workload.
 * Used by ztunnel (and the waypoint) on every connection, so lookups are map hits; updates rebuild only the
 * indexes the changed resources touch.
 */
import {
  type CompiledPolicy,
  compilePolicy,
  ipFromBytes,
  ipToString,
  type PolicyError,
} from '../rbac/index.ts';
import type { Authorization } from '../xds/gen/istio/security/authorization.ts';
import {
  type Address,
  LoadBalancing_Mode,
  LoadBalancing_Scope,
  type Service,
  TunnelProtocol,
  type Workload,
  WorkloadStatus,
} from '../xds/gen/istio/workload/workload.ts';

export interface WorkloadInfo {
  readonly uid: string;
  readonly raw: Workload;
  readonly name: string;
  readonly namespace: string;
  /** IPs as strings (IPv4 dotted, IPv6 canonical). */
  readonly ips: readonly string[];
  readonly network: string;
  readonly hbone: boolean;
  readonly healthy: boolean;
  /** `<td>/ns/<ns>/sa/<sa>`, what policies call a principal. */
  readonly principal: string;
  readonly serviceAccount: string;
  readonly trustDomain: string;
  readonly node: string;
  readonly canonicalName: string;
  readonly canonicalRevision: string;
  readonly workloadName: string;
  readonly clusterId: string;
  /** Waypoint this workload's traffic goes through, as `ip:port` when given by address. */
  readonly waypoint: WaypointRef | null;
  /** Weight for endpoint selection (Workload.capacity, default 1). */
  readonly capacity: number;
}

export interface WaypointRef {
  /** `ip` when the waypoint is addressed by IP, or `ns/hostname` when by service. */
  readonly address: { readonly network: string; readonly ip: string } | null;
  readonly hostname: { readonly namespace: string; readonly hostname: string } | null;
  readonly hbonePort: number;
}

export interface ServiceInfo {
  /** `<ns>/<hostname>`: the key used in Workload.services. */
  readonly key: string;
  readonly raw: Service;
  readonly name: string;
  readonly namespace: string;
  readonly hostname: string;
  readonly vips: ReadonlyArray<{ readonly network: string; readonly ip: string }>;
  readonly waypoint: WaypointRef | null;
}

export interface Endpoint {
  readonly workload: WorkloadInfo;
  readonly targetPort: number;
}

export type StateEvent =
  | { readonly kind: 'workload'; readonly uid: string; readonly removed: boolean }
  | { readonly kind: 'service'; readonly key: string; readonly removed: boolean }
  | { readonly kind: 'policy'; readonly key: string; readonly removed: boolean };

function waypointOf(gw: Workload['waypoint'] | Service['waypoint']): WaypointRef | null {
  if (!gw) return null;
  const d = gw.destination;
  if (!d) return null;
  if (d.$case === 'address') {
    const ip = ipFromBytes(d.value.address);
    return ip
      ? {
          address: { network: d.value.network, ip: ipToString(ip) },
          hostname: null,
          hbonePort: gw.hboneMtlsPort || 15008,
        }
      : null;
  }
  return {
    address: null,
    hostname: { namespace: d.value.namespace, hostname: d.value.hostname },
    hbonePort: gw.hboneMtlsPort || 15008,
  };
}

export function workloadInfo(w: Workload): WorkloadInfo {
  const ips: string[] = [];
  for (const a of w.addresses) {
    const ip = ipFromBytes(a);
    if (ip) ips.push(ipToString(ip));
  }
  const td = w.trustDomain || 'cluster.local';
  const sa = w.serviceAccount || 'default';
  return {
    uid: w.uid,
    raw: w,
    name: w.name,
    namespace: w.namespace,
    ips,
    network: w.network,
    hbone: w.tunnelProtocol === TunnelProtocol.HBONE,
    healthy: w.status === WorkloadStatus.HEALTHY,
    principal: `${td}/ns/${w.namespace}/sa/${sa}`,
    serviceAccount: sa,
    trustDomain: td,
    node: w.node,
    canonicalName: w.canonicalName,
    canonicalRevision: w.canonicalRevision,
    workloadName: w.workloadName,
    clusterId: w.clusterId,
    waypoint: waypointOf(w.waypoint),
    capacity: w.capacity ?? 1,
  };
}

function serviceInfo(s: Service): ServiceInfo {
  const vips: Array<{ network: string; ip: string }> = [];
  for (const a of s.addresses) {
    const ip = ipFromBytes(a.address);
    if (ip) vips.push({ network: a.network, ip: ipToString(ip) });
  }
  return {
    key: `${s.namespace}/${s.hostname}`,
    raw: s,
    name: s.name,
    namespace: s.namespace,
    hostname: s.hostname,
    vips,
    waypoint: waypointOf(s.waypoint),
  };
}

const netKey = (network: string, ip: string) => `${network}/${ip}`;

export class ProxyState {
  private readonly workloads = new Map<string, WorkloadInfo>();
  private readonly workloadsByIp = new Map<string, WorkloadInfo>();
  private readonly services = new Map<string, ServiceInfo>();
  /** network/VIP → services (several ServiceEntries may share a VIP). */
  private readonly servicesByVip = new Map<string, ServiceInfo[]>();
  /** service key → workload uids that list it. */
  private readonly endpointsByService = new Map<string, Set<string>>();
  private readonly policies = new Map<string, CompiledPolicy>();
  private readonly globalPolicies = new Set<string>();
  private readonly namespacePolicies = new Map<string, Set<string>>();
  private readonly listeners = new Set<(e: StateEvent) => void>();
  private random: () => number = Math.random;

  onChange(fn: (e: StateEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** For tests: deterministic endpoint choice. */
  setRandom(fn: () => number): void {
    this.random = fn;
  }

  private emit(e: StateEvent): void {
    for (const l of this.listeners) l(e);
  }

  /** Applies an Address update (added/changed resources by name, removed names). */
  applyAddresses(added: ReadonlyMap<string, Address>, removed: readonly string[]): void {
    for (const name of removed) {
      if (this.workloads.has(name)) this.removeWorkload(name);
      else if (this.services.has(name)) this.removeService(name);
    }
    for (const [name, addr] of added) {
      const t = addr.type;
      if (!t) continue;
      if (t.$case === 'workload') {
        if (this.services.has(name)) this.removeService(name);
        this.upsertWorkload(t.value);
      } else {
        if (this.workloads.has(name)) this.removeWorkload(name);
        this.upsertService(t.value);
      }
    }
  }

  /**
   * Applies an Authorization update. Throws PolicyError (before changing anything) when a policy cannot be
   * compiled, so the xDS client NACKs and the last good state stays.
   */
  applyAuthorizations(added: ReadonlyMap<string, Authorization>, removed: readonly string[]): void {
    const compiled: CompiledPolicy[] = [];
    const errors: PolicyError[] = [];
    for (const a of added.values()) {
      try {
        compiled.push(compilePolicy(a));
      } catch (err) {
        errors.push(err as PolicyError);
      }
    }
    if (errors.length > 0) throw errors[0];
    for (const key of removed) this.removePolicy(key);
    for (const p of compiled) {
      this.removePolicy(p.key, false);
      this.policies.set(p.key, p);
      if (p.scope === 'global') this.globalPolicies.add(p.key);
      else if (p.scope === 'namespace') {
        const s = this.namespacePolicies.get(p.namespace);
        if (s) s.add(p.key);
        else this.namespacePolicies.set(p.namespace, new Set([p.key]));
      }
      this.emit({ kind: 'policy', key: p.key, removed: false });
    }
  }

  private removePolicy(key: string, emit = true): void {
    const p = this.policies.get(key);
    if (!p) return;
    this.policies.delete(key);
    this.globalPolicies.delete(key);
    this.namespacePolicies.get(p.namespace)?.delete(key);
    if (emit) this.emit({ kind: 'policy', key, removed: true });
  }

  private upsertWorkload(w: Workload): void {
    const old = this.workloads.get(w.uid);
    if (old) this.unindexWorkload(old);
    const info = workloadInfo(w);
    this.workloads.set(info.uid, info);
    for (const ip of info.ips) this.workloadsByIp.set(netKey(info.network, ip), info);
    for (const svc of Object.keys(w.services)) {
      const s = this.endpointsByService.get(svc);
      if (s) s.add(info.uid);
      else this.endpointsByService.set(svc, new Set([info.uid]));
    }
    this.emit({ kind: 'workload', uid: info.uid, removed: false });
  }

  private unindexWorkload(info: WorkloadInfo): void {
    for (const ip of info.ips) {
      const k = netKey(info.network, ip);
      if (this.workloadsByIp.get(k) === info) this.workloadsByIp.delete(k);
    }
    for (const svc of Object.keys(info.raw.services)) this.endpointsByService.get(svc)?.delete(info.uid);
  }

  private removeWorkload(uid: string): void {
    const info = this.workloads.get(uid);
    if (!info) return;
    this.unindexWorkload(info);
    this.workloads.delete(uid);
    this.emit({ kind: 'workload', uid, removed: true });
  }

  private upsertService(s: Service): void {
    const info = serviceInfo(s);
    const old = this.services.get(info.key);
    if (old) this.unindexService(old);
    this.services.set(info.key, info);
    for (const v of info.vips) {
      const k = netKey(v.network, v.ip);
      const list = this.servicesByVip.get(k) ?? [];
      list.push(info);
      this.servicesByVip.set(k, list);
    }
    this.emit({ kind: 'service', key: info.key, removed: false });
  }

  private unindexService(info: ServiceInfo): void {
    for (const v of info.vips) {
      const k = netKey(v.network, v.ip);
      const list = this.servicesByVip.get(k)?.filter((s) => s.key !== info.key) ?? [];
      if (list.length > 0) this.servicesByVip.set(k, list);
      else this.servicesByVip.delete(k);
    }
  }

  private removeService(key: string): void {
    const info = this.services.get(key);
    if (!info) return;
    this.unindexService(info);
    this.services.delete(key);
    this.emit({ kind: 'service', key, removed: true });
  }

  workload(uid: string): WorkloadInfo | null {
    return this.workloads.get(uid) ?? null;
  }

  workloadByIp(network: string, ip: string): WorkloadInfo | null {
    return this.workloadsByIp.get(netKey(network, ip)) ?? null;
  }

  service(key: string): ServiceInfo | null {
    return this.services.get(key) ?? null;
  }

  serviceByHostname(namespace: string, hostname: string): ServiceInfo | null {
    return this.services.get(`${namespace}/${hostname}`) ?? null;
  }

  /** The service owning a VIP; when several do, the one in the caller's namespace wins (as ztunnel does). */
  serviceByVip(network: string, ip: string, sourceNamespace: string | null = null): ServiceInfo | null {
    const list = this.servicesByVip.get(netKey(network, ip));
    if (!list || list.length === 0) return null;
    if (list.length > 1 && sourceNamespace) {
      const same = list.find((s) => s.namespace === sourceNamespace);
      if (same) return same;
    }
    return list[0]!;
  }

  /** Every endpoint of a service for a service port, with the resolved target port. */
  endpoints(svc: ServiceInfo, servicePort: number): Endpoint[] {
    const svcPort = svc.raw.ports.find((p) => p.servicePort === servicePort);
    if (!svcPort) return [];
    const out: Endpoint[] = [];
    for (const uid of this.endpointsByService.get(svc.key) ?? []) {
      const w = this.workloads.get(uid);
      if (!w) continue;
      const ports = w.raw.services[svc.key]?.ports ?? [];
      const wp = ports.find((p) => p.servicePort === servicePort);
      // The workload's own mapping wins (named target ports resolve per pod); else the service's target port.
      const targetPort = wp?.targetPort || svcPort.targetPort || servicePort;
      out.push({ workload: w, targetPort });
    }
    return out;
  }

  /**
   * Picks a healthy endpoint, weighted by capacity, honouring the service's load-balancing scopes relative
   * to the source (e.g. NODE for internalTrafficPolicy: Local).
   */
  pickEndpoint(svc: ServiceInfo, servicePort: number, source: WorkloadInfo | null): Endpoint | null {
    let candidates = this.endpoints(svc, servicePort).filter((e) => e.workload.healthy);
    const lb = svc.raw.loadBalancing;
    if (lb && lb.routingPreference.length > 0 && source) {
      const sameScope = (e: Endpoint, scope: number): boolean => {
        const a = e.workload.raw;
        const b = source.raw;
        switch (scope) {
          case LoadBalancing_Scope.NODE:
            return a.node === b.node;
          case LoadBalancing_Scope.NETWORK:
            return a.network === b.network;
          case LoadBalancing_Scope.CLUSTER:
            return a.clusterId === b.clusterId;
          case LoadBalancing_Scope.REGION:
            return a.locality?.region === b.locality?.region;
          case LoadBalancing_Scope.ZONE:
            return a.locality?.region === b.locality?.region && a.locality?.zone === b.locality?.zone;
          case LoadBalancing_Scope.SUBZONE:
            return (
              a.locality?.region === b.locality?.region &&
              a.locality?.zone === b.locality?.zone &&
              a.locality?.subzone === b.locality?.subzone
            );
          default:
            return true;
        }
      };
      if (lb.mode === LoadBalancing_Mode.STRICT) {
        candidates = candidates.filter((e) => lb.routingPreference.every((s) => sameScope(e, s)));
      } else {
        // Failover: the most specific non-empty tier wins.
        for (let n = lb.routingPreference.length; n > 0; n--) {
          const tier = candidates.filter((e) =>
            lb.routingPreference.slice(0, n).every((s) => sameScope(e, s)),
          );
          if (tier.length > 0) {
            candidates = tier;
            break;
          }
        }
      }
    }
    if (candidates.length === 0) return null;
    if (candidates.length === 1) return candidates[0]!;
    let total = 0;
    for (const c of candidates) total += Math.max(1, c.workload.capacity);
    let r = this.random() * total;
    for (const c of candidates) {
      r -= Math.max(1, c.workload.capacity);
      if (r < 0) return c;
    }
    return candidates[candidates.length - 1]!;
  }

  /** Policies that apply to a workload: global ones, its namespace's, and those it references. */
  policiesFor(w: WorkloadInfo): CompiledPolicy[] {
    const out: CompiledPolicy[] = [];
    for (const k of this.globalPolicies) {
      const p = this.policies.get(k);
      if (p) out.push(p);
    }
    for (const k of this.namespacePolicies.get(w.namespace) ?? []) {
      const p = this.policies.get(k);
      if (p) out.push(p);
    }
    for (const k of w.raw.authorizationPolicies) {
      const p = this.policies.get(k);
      if (p && p.scope === 'workload') out.push(p);
    }
    return out;
  }

  counts(): { workloads: number; services: number; policies: number } {
    return { workloads: this.workloads.size, services: this.services.size, policies: this.policies.size };
  }

  allWorkloads(): IterableIterator<WorkloadInfo> {
    return this.workloads.values();
  }

  allServices(): IterableIterator<ServiceInfo> {
    return this.services.values();
  }

  allPolicies(): IterableIterator<CompiledPolicy> {
    return this.policies.values();
  }
}
