/**
 * Waypoints and who binds to them (ARCHITECTURE.md, "Waypoint binding"; upstream ambient/waypoints.go):
 *
 * - A Gateway of class `istio-waypoint` (or of any class whose controller is `istio.io/mesh-controller`) that has
 *   `status.addresses` is a waypoint, reached at its status hostname (preferred) or IP on port 15008.
 * - Its traffic type comes from the `istio.io/waypoint-for` label on the Gateway, else on its GatewayClass, else
 *   `service`. Services bind only to service/all waypoints, workloads only to workload/all ones.
 * - An object binds with `istio.io/use-waypoint=<name>` (+ `istio.io/use-waypoint-namespace`), inherited from its
 *   Namespace; `none` on the object opts out. The waypoint's HBONE listener `allowedRoutes.namespaces` (Same by
 *   default, All, or Selector) decides which namespaces may attach.
 * - Binding failures are reported in the `istio.io/WaypointBound` condition with Istio's reasons.
 */
import { type GatewayAddress, workload } from '../../../pkg/xds/index.ts';
import { annotationsOf, labelSelectorMatches, labelsOf } from '../kube/labels.ts';
import type {
  Gateway,
  GatewayClass,
  GatewayListener,
  LabelSelector,
  Namespace,
  ObjectMeta,
} from '../kube/types.ts';
import {
  GATEWAY_MANAGED_LABEL,
  GATEWAY_NAME_LABEL,
  HBONE_PORT,
  MESH_CONTROLLER,
  MESH_CONTROLLER_LABEL,
  USE_WAYPOINT_LABEL,
  USE_WAYPOINT_NAMESPACE_LABEL,
  USE_WAYPOINT_NONE,
  WAYPOINT_FOR_ALL,
  WAYPOINT_FOR_LABEL,
  WAYPOINT_FOR_SERVICE,
  WAYPOINT_FOR_WORKLOAD,
  WAYPOINT_GATEWAY_CLASS,
  WAYPOINT_INBOUND_BINDING_ANNOTATION,
} from './constants.ts';
import { ipBytes } from './util.ts';

export interface InboundBinding {
  readonly protocol: workload.ApplicationTunnel_Protocol;
  readonly port: number;
}

export interface Waypoint {
  /** `namespace/name` of the Gateway. */
  readonly key: string;
  readonly namespace: string;
  readonly name: string;
  readonly address: GatewayAddress;
  /** service, workload, all or none. */
  readonly trafficType: string;
  readonly allowedFrom: 'All' | 'Same' | 'Selector';
  readonly allowedSelector: LabelSelector | null;
  readonly binding: InboundBinding | null;
}

/** Reason + message of a failed binding (Istio's StatusMessage). */
export interface BindingError {
  readonly reason: string;
  readonly message: string;
}

export interface WaypointLookup {
  readonly waypoint: Waypoint | null;
  readonly error: BindingError | null;
}

const NONE: WaypointLookup = { waypoint: null, error: null };

export function waypointIsNotReady(key: string): BindingError {
  return { reason: 'WaypointIsNotReady', message: `waypoint "${key}" is not ready` };
}

export function waypointAttachmentDenied(key: string): BindingError {
  return {
    reason: 'AttachmentDenied',
    message: `we are not permitted to attach to waypoint "${key}" (missing allowedRoutes?)`,
  };
}

export function waypointUnsupportedTrafficType(key: string, trafficType: string): BindingError {
  return {
    reason: 'UnsupportedTrafficType',
    message: `attempting to bind to traffic type "${trafficType}" which the waypoint "${key}" does not support`,
  };
}

export function isWaypointGateway(gw: Gateway, cls: GatewayClass | undefined): boolean {
  const className = gw.spec?.gatewayClassName ?? '';
  return className === WAYPOINT_GATEWAY_CLASS || cls?.spec?.controllerName === MESH_CONTROLLER;
}

/** The Waypoint for a Gateway, or null when it is not a waypoint or has no address yet. */
export function buildWaypoint(gw: Gateway, cls: GatewayClass | undefined, network: string): Waypoint | null {
  if (!isWaypointGateway(gw, cls)) return null;
  const namespace = gw.metadata?.namespace ?? '';
  const name = gw.metadata?.name ?? '';
  const address = gatewayAddress(gw, network);
  if (!address) return null;
  const trafficType =
    labelsOf(gw)[WAYPOINT_FOR_LABEL] ?? labelsOf(cls)[WAYPOINT_FOR_LABEL] ?? WAYPOINT_FOR_SERVICE;
  const binding = inboundBinding(gw, cls);
  const listener = boundListener(gw, binding) ?? hboneListener(gw);
  const ns = listener?.allowedRoutes?.namespaces;
  const from = ns?.from === 'All' || ns?.from === 'Selector' ? ns.from : 'Same';
  return {
    key: `${namespace}/${name}`,
    namespace,
    name,
    address,
    trafficType,
    allowedFrom: from,
    allowedSelector: from === 'Selector' ? (ns?.selector ?? {}) : null,
    binding,
  };
}

/** Hostname addresses are preferred (stable across IP reallocation); else the first valid IP. */
function gatewayAddress(gw: Gateway, network: string): GatewayAddress | null {
  const addrs = gw.status?.addresses ?? [];
  for (const a of addrs) {
    if (a.type === 'Hostname' && a.value) {
      return {
        destination: {
          $case: 'hostname',
          value: { namespace: gw.metadata?.namespace ?? '', hostname: a.value },
        },
        hboneMtlsPort: HBONE_PORT,
      };
    }
  }
  for (const a of addrs) {
    // Gateway API defaults the address type to IPAddress.
    if ((a.type === undefined || a.type === 'IPAddress') && a.value) {
      const ip = ipBytes(a.value);
      if (!ip) continue;
      return {
        destination: { $case: 'address', value: { network, address: ip } },
        hboneMtlsPort: HBONE_PORT,
      };
    }
  }
  return null;
}

function inboundBinding(gw: Gateway, cls: GatewayClass | undefined): InboundBinding | null {
  const value =
    annotationsOf(gw)[WAYPOINT_INBOUND_BINDING_ANNOTATION] ??
    annotationsOf(cls)[WAYPOINT_INBOUND_BINDING_ANNOTATION];
  if (value === undefined) return null;
  const parts = value.split('/');
  if (parts.length > 2) return null;
  let protocol: workload.ApplicationTunnel_Protocol;
  if (parts[0] === 'NONE') protocol = workload.ApplicationTunnel_Protocol.NONE;
  else if (parts[0] === 'PROXY') protocol = workload.ApplicationTunnel_Protocol.PROXY;
  else return null;
  let port = 0;
  if (parts.length === 2) {
    if (!/^\d+$/.test(parts[1]!) || Number(parts[1]) > 65535) return null;
    port = Number(parts[1]);
  }
  return { protocol, port };
}

function boundListener(gw: Gateway, binding: InboundBinding | null): GatewayListener | undefined {
  if (!binding) return undefined;
  const listeners = gw.spec?.listeners ?? [];
  if (binding.port !== 0) return listeners.find((l) => l.port === binding.port);
  if (binding.protocol === workload.ApplicationTunnel_Protocol.PROXY)
    return listeners.find((l) => l.protocol === 'PROXY');
  return undefined;
}

function hboneListener(gw: Gateway): GatewayListener | undefined {
  return (gw.spec?.listeners ?? []).find((l) => l.protocol === 'HBONE' && l.port === HBONE_PORT);
}

function allowsNamespace(w: Waypoint, ns: string, nsObj: Namespace | undefined): boolean {
  switch (w.allowedFrom) {
    case 'All':
      return true;
    case 'Selector':
      return labelSelectorMatches(w.allowedSelector ?? undefined, labelsOf(nsObj));
    default:
      return w.namespace === ns;
  }
}

/** Reads istio.io/use-waypoint(+namespace). `none` → opt-out. */
function useWaypoint(
  meta: ObjectMeta | undefined,
  fallbackNamespace: string,
): { key: string } | 'none' | null {
  const labels = meta?.labels;
  const name = labels?.[USE_WAYPOINT_LABEL];
  if (name === undefined) return null;
  if (name === USE_WAYPOINT_NONE) return 'none';
  const ns = labels?.[USE_WAYPOINT_NAMESPACE_LABEL] ?? fallbackNamespace;
  return { key: `${ns}/${name}` };
}

/** The waypoint an object asks for (itself first, then its namespace), before traffic-type checks. */
export function waypointForTarget(
  meta: ObjectMeta | undefined,
  objectNamespace: string,
  nsObj: Namespace | undefined,
  waypoints: ReadonlyMap<string, Waypoint>,
): WaypointLookup {
  const own = useWaypoint(meta, objectNamespace);
  if (own === 'none') return NONE;
  const wanted = own ?? (nsObj ? useWaypoint(nsObj.metadata, objectNamespace) : null);
  if (wanted === null || wanted === 'none') return NONE;
  const w = waypoints.get(wanted.key);
  if (!w) return { waypoint: null, error: waypointIsNotReady(wanted.key) };
  if (!allowsNamespace(w, objectNamespace, nsObj))
    return { waypoint: null, error: waypointAttachmentDenied(w.key) };
  return { waypoint: w, error: null };
}

export function waypointForService(
  meta: ObjectMeta | undefined,
  objectNamespace: string,
  nsObj: Namespace | undefined,
  waypoints: ReadonlyMap<string, Waypoint>,
): WaypointLookup {
  // A waypoint's own Service never goes through a waypoint.
  if (meta?.labels?.[GATEWAY_MANAGED_LABEL] === MESH_CONTROLLER_LABEL) return NONE;
  const r = waypointForTarget(meta, objectNamespace, nsObj, waypoints);
  if (!r.waypoint) return r;
  const t = r.waypoint.trafficType;
  if (t === WAYPOINT_FOR_SERVICE || t === WAYPOINT_FOR_ALL) return r;
  return { waypoint: null, error: waypointUnsupportedTrafficType(r.waypoint.key, WAYPOINT_FOR_SERVICE) };
}

export function waypointForWorkload(
  meta: ObjectMeta | undefined,
  objectNamespace: string,
  nsObj: Namespace | undefined,
  waypoints: ReadonlyMap<string, Waypoint>,
): WaypointLookup {
  const r = waypointForTarget(meta, objectNamespace, nsObj, waypoints);
  if (!r.waypoint) return r;
  const t = r.waypoint.trafficType;
  if (t === WAYPOINT_FOR_WORKLOAD || t === WAYPOINT_FOR_ALL) return r;
  return { waypoint: null, error: waypointUnsupportedTrafficType(r.waypoint.key, WAYPOINT_FOR_WORKLOAD) };
}

/** The waypoint a pod is an instance of (its Deployment was created for that Gateway), if any. */
export function waypointForInstance(
  meta: ObjectMeta | undefined,
  waypoints: ReadonlyMap<string, Waypoint>,
): Waypoint | null {
  const name = meta?.labels?.[GATEWAY_NAME_LABEL];
  if (!name) return null;
  return waypoints.get(`${meta?.namespace ?? ''}/${name}`) ?? null;
}

/** Stable text for change detection. */
export function waypointFingerprint(w: Waypoint): string {
  return JSON.stringify(w, (_k, v: unknown) =>
    v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v,
  );
}
