/**
 * Where an outbound connection goes (ztunnel's outbound "build request"): a pure decision over the proxy
 * state, so every rule is table-tested without sockets.
 *
 * 1. Destination IP is a workload: through its waypoint if it has one (and the source is not that waypoint),
 *    else HBONE to `podIP:15008` when the workload is captured, else plain TCP.
 * 2. Destination IP is a service VIP (the caller's namespace wins on shared VIPs): through the service's
 *    waypoint if it has one, else a healthy endpoint (weighted random), service port → target port, HBONE when
 *    that endpoint is captured, else plain TCP.
 * 3. Anything else is outside the mesh: plain TCP passthrough to the original destination.
 */
import { formatAuthority } from '../../../pkg/hbone/index.ts';
import type { Identity } from '../../../pkg/identity/index.ts';
import type { ProxyState, ServiceInfo, WaypointRef, WorkloadInfo } from '../../../pkg/state/index.ts';

export const HBONE_PORT = 15008;

export interface HboneRoute {
  readonly kind: 'hbone';
  /** The peer proxy: the destination pod's or the waypoint's `ip:15008`. */
  readonly peerIp: string;
  readonly peerPort: number;
  /** CONNECT `:authority`. */
  readonly authority: string;
  /** Identities the peer may present. */
  readonly identities: readonly Identity[];
  readonly viaWaypoint: boolean;
  readonly workload: WorkloadInfo | null;
  readonly service: ServiceInfo | null;
}

export interface DirectRoute {
  readonly kind: 'direct';
  readonly ip: string;
  readonly port: number;
  readonly workload: WorkloadInfo | null;
  readonly service: ServiceInfo | null;
}

export interface DenyRoute {
  readonly kind: 'deny';
  readonly reason: string;
  readonly service: ServiceInfo | null;
}

export type Route = HboneRoute | DirectRoute | DenyRoute;

export function identityOf(w: WorkloadInfo): Identity {
  return { trustDomain: w.trustDomain, namespace: w.namespace, serviceAccount: w.serviceAccount };
}

/** Resolves a waypoint reference to one of its pods (HBONE port from the reference). */
function resolveWaypoint(
  state: ProxyState,
  ref: WaypointRef,
  network: string,
  source: WorkloadInfo | null,
): { workload: WorkloadInfo; port: number } | { error: string } {
  let svc: ServiceInfo | null = null;
  if (ref.hostname) svc = state.serviceByHostname(ref.hostname.namespace, ref.hostname.hostname);
  else if (ref.address) {
    const w = state.workloadByIp(ref.address.network || network, ref.address.ip);
    if (w)
      return w.healthy
        ? { workload: w, port: ref.hbonePort }
        : { error: `waypoint ${w.name} is not healthy` };
    svc = state.serviceByVip(ref.address.network || network, ref.address.ip);
  }
  if (!svc) return { error: 'waypoint not found' };
  const ep = state.pickEndpoint(svc, ref.hbonePort, source);
  if (!ep) return { error: `no healthy waypoint endpoint for ${svc.hostname}` };
  return { workload: ep.workload, port: ref.hbonePort };
}

/** True when `source` is itself a pod of the waypoint (its traffic must not loop back into it). */
function isWaypointPod(state: ProxyState, ref: WaypointRef, source: WorkloadInfo | null): boolean {
  if (!source) return false;
  if (ref.address && source.ips.includes(ref.address.ip)) return true;
  const svc = ref.hostname
    ? state.serviceByHostname(ref.hostname.namespace, ref.hostname.hostname)
    : ref.address
      ? state.serviceByVip(ref.address.network, ref.address.ip)
      : null;
  return svc !== null && Object.hasOwn(source.raw.services, svc.key);
}

function viaWaypoint(
  state: ProxyState,
  ref: WaypointRef,
  network: string,
  source: WorkloadInfo | null,
  authority: string,
  workload: WorkloadInfo | null,
  service: ServiceInfo | null,
): Route {
  const wp = resolveWaypoint(state, ref, network, source);
  if ('error' in wp) return { kind: 'deny', reason: wp.error, service };
  const peer = wp.workload.ips[0];
  if (!peer) return { kind: 'deny', reason: `waypoint ${wp.workload.name} has no address`, service };
  return {
    kind: 'hbone',
    peerIp: peer,
    peerPort: wp.port,
    authority,
    identities: [identityOf(wp.workload)],
    viaWaypoint: true,
    workload,
    service,
  };
}

export function routeOutbound(
  state: ProxyState,
  source: WorkloadInfo | null,
  sourceNamespace: string | null,
  network: string,
  dstIp: string,
  dstPort: number,
): Route {
  const authority = formatAuthority(dstIp, dstPort);
  const workload = state.workloadByIp(network, dstIp);
  if (workload) {
    if (workload.waypoint && !isWaypointPod(state, workload.waypoint, source)) {
      return viaWaypoint(state, workload.waypoint, network, source, authority, workload, null);
    }
    if (workload.hbone) {
      return {
        kind: 'hbone',
        peerIp: dstIp,
        peerPort: HBONE_PORT,
        authority,
        identities: [identityOf(workload)],
        viaWaypoint: false,
        workload,
        service: null,
      };
    }
    return { kind: 'direct', ip: dstIp, port: dstPort, workload, service: null };
  }
  const service = state.serviceByVip(network, dstIp, sourceNamespace);
  if (service) {
    if (service.waypoint && !isWaypointPod(state, service.waypoint, source)) {
      return viaWaypoint(state, service.waypoint, network, source, authority, null, service);
    }
    const ep = state.pickEndpoint(service, dstPort, source);
    if (!ep)
      return { kind: 'deny', reason: `no healthy upstream for ${service.hostname}:${dstPort}`, service };
    const ip = ep.workload.ips[0];
    if (!ip) return { kind: 'deny', reason: `endpoint ${ep.workload.name} has no address`, service };
    if (ep.workload.hbone) {
      return {
        kind: 'hbone',
        peerIp: ip,
        peerPort: HBONE_PORT,
        authority: formatAuthority(ip, ep.targetPort),
        identities: [identityOf(ep.workload)],
        viaWaypoint: false,
        workload: ep.workload,
        service,
      };
    }
    return { kind: 'direct', ip, port: ep.targetPort, workload: ep.workload, service };
  }
  return { kind: 'direct', ip: dstIp, port: dstPort, workload: null, service: null };
}
