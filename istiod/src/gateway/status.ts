/**
 * Gateway and GatewayClass status (pure; upstream conversion.go reportGatewayStatus, setProgrammedCondition,
 * buildListener/reportListenerCondition, context.go ResolveGatewayInstances and gatewayclass.go, facts only):
 *
 * - Accepted=True/`Accepted` "Resource accepted";
 * - Programmed=True/`Programmed` once the Gateway's Service has ready endpoints ("Resource programmed, assigned to
 *   service(s) <host>:<port>"); before that False with `AddressNotUsable` (Service missing, "hostname … not
 *   found") or `AddressNotAssigned` ("no instances found for hostname …", or a load balancer address pending);
 * - `status.addresses`: the load balancer's addresses when it has some, else the ClusterIPs (waypoints) and the
 *   Service hostname (waypoints and ingress), only for a Service with ready endpoints;
 * - one listener status per listener: Accepted/Programmed/ResolvedRefs=True, Conflicted=False, or Accepted=False
 *   `UnsupportedProtocol` (a waypoint accepts only port 15008 HBONE; an ingress gateway HTTP/HTTPS);
 * - GatewayClasses of our controllers: Accepted=True/`Accepted` "Handled by Istio controller".
 *
 * Conditions we do not own are kept, `lastTransitionTime` moves only when a status flips, and every function
 * says whether anything changed, so the controller writes only real changes.
 */
import type { ConditionSpec } from '../index/index.ts';
import { mergeConditions } from '../kube/status.ts';
import type { ClassInfo } from './classes.ts';
import type {
  Condition,
  GatewayAddress,
  GatewayListener,
  GatewayObject,
  GatewayStatus,
  ListenerStatus,
  RouteGroupKind,
} from './index.ts';
import { GATEWAY_GROUP, HBONE_PORT } from './names.ts';

/** What status needs of the Gateway's live Service. */
export interface ServiceView {
  readonly type: string;
  /** ClusterIPs that are addresses (not `None`). */
  readonly clusterIPs: readonly string[];
  readonly ports: readonly number[];
  /** `status.loadBalancer.ingress` IPs and hostnames. */
  readonly loadBalancer: readonly string[];
  /** Ready endpoints over all of the Service's EndpointSlices. */
  readonly readyEndpoints: number;
}

export interface GatewayStatusInputs {
  readonly gateway: GatewayObject;
  readonly info: ClassInfo;
  /** Name of the Service deployed for the Gateway. */
  readonly serviceName: string;
  readonly domainSuffix: string;
  /** The live Service, or null when it does not exist (yet). */
  readonly service: ServiceView | null;
  /** RFC 3339 time for new transitions. */
  readonly now: string;
}

export interface ClassStatusInputs {
  readonly generation: number;
  readonly current: readonly Condition[];
  readonly now: string;
}

const ACCEPTED = 'Accepted';
const PROGRAMMED = 'Programmed';
const CONFLICTED = 'Conflicted';
const RESOLVED_REFS = 'ResolvedRefs';
const NO_ERRORS = 'No errors found';
/** Istio serves TCP and TLS listeners only behind PILOT_ENABLE_ALPHA_GATEWAY_API, which this istiod lacks. */
const ALPHA_PROTOCOLS = new Set(['TCP', 'TLS']);
const STANDARD_PROTOCOLS = new Set(['HTTP', 'HTTPS', 'TLS', 'TCP', 'HBONE']);

function cond(status: boolean, reason: string, message: string, generation: number): ConditionSpec {
  return { status, reason, message, observedGeneration: generation };
}

/** "a", "a and b", "a, b, and c" (upstream humanReadableJoin). */
function humanJoin(items: readonly string[]): string {
  if (items.length <= 1) return items[0] ?? '';
  if (items.length === 2) return `${items[0]} and ${items[1]}`;
  return `${items.slice(0, -1).join(', ')}, and ${items[items.length - 1]}`;
}

function isIp(s: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(s) || (s.includes(':') && /^[0-9a-fA-F:.]+$/.test(s));
}

/** Upstream listenerProtocolToIstio: null when the listener protocol is served, else why not. */
function protocolError(info: ClassInfo, protocol: string): string | null {
  if (protocol === 'HTTP' || protocol === 'HTTPS') return null;
  if (ALPHA_PROTOCOLS.has(protocol))
    return `protocol "${protocol}" is supported, but only when PILOT_ENABLE_ALPHA_GATEWAY_API=true is configured`;
  if (protocol === 'HBONE')
    return info.proxyType === 'waypoint' ? null : `protocol "HBONE" is only supported for waypoint proxies`;
  const up = protocol.toUpperCase();
  if (STANDARD_PROTOCOLS.has(up))
    return `protocol "${protocol}" is unsupported. hint: "${up}" (uppercase) may be supported`;
  return `protocol "${protocol}" is unsupported`;
}

function routeKind(kind: string): RouteGroupKind {
  return { group: GATEWAY_GROUP, kind };
}

/** Upstream generateSupportedKinds: the route kinds a listener takes, and whether allowedRoutes.kinds all fit. */
function supportedKinds(l: GatewayListener): { kinds: RouteGroupKind[]; valid: boolean } {
  let kinds: RouteGroupKind[] = [];
  switch (l.protocol) {
    case 'HTTP':
    case 'HTTPS':
      kinds = [routeKind('HTTPRoute'), routeKind('GRPCRoute')];
      break;
    case 'TCP':
      kinds = [routeKind('TCPRoute')];
      break;
    case 'TLS':
      kinds = [routeKind('TLSRoute')];
      break;
  }
  const allowed = l.allowedRoutes?.kinds ?? [];
  if (allowed.length === 0) return { kinds, valid: true };
  const picked = kinds.filter((k) =>
    allowed.some((a) => a.kind === k.kind && (a.group ?? GATEWAY_GROUP) === k.group),
  );
  return { kinds: picked, valid: picked.length === allowed.length };
}

function listenerConditions(
  info: ClassInfo,
  l: GatewayListener,
  validKinds: boolean,
  generation: number,
): Map<string, ConditionSpec> {
  let accepted = cond(true, ACCEPTED, NO_ERRORS, generation);
  const perr = protocolError(info, l.protocol ?? '');
  if (perr) accepted = cond(false, 'UnsupportedProtocol', perr, generation);
  if (info.proxyType === 'waypoint' && (l.port !== HBONE_PORT || l.protocol !== 'HBONE'))
    accepted = cond(
      false,
      'UnsupportedProtocol',
      'Expected a single listener on port 15008 with protocol "HBONE"',
      generation,
    );
  // Sorted by type, as upstream sets them.
  return new Map([
    [ACCEPTED, accepted],
    [CONFLICTED, cond(false, 'NoConflicts', NO_ERRORS, generation)],
    [PROGRAMMED, cond(true, PROGRAMMED, NO_ERRORS, generation)],
    [
      RESOLVED_REFS,
      validKinds
        ? cond(true, RESOLVED_REFS, NO_ERRORS, generation)
        : cond(false, 'InvalidRouteKinds', 'Invalid route kinds', generation),
    ],
  ]);
}

function kindsEqual(a: readonly RouteGroupKind[] | undefined, b: readonly RouteGroupKind[]): boolean {
  const x = a ?? [];
  return (
    x.length === b.length &&
    x.every((k, i) => (k.group ?? GATEWAY_GROUP) === b[i]?.group && k.kind === b[i]?.kind)
  );
}

/** Where the Gateway is reachable (upstream ResolveGatewayInstances for one managed Service). */
function resolveInstances(inp: GatewayStatusInputs) {
  const host = `${inp.serviceName}.${inp.gateway.metadata?.namespace ?? ''}.svc.${inp.domainSuffix}`;
  const internal = new Set<string>();
  const internalIps = new Set<string>();
  const external = new Set<string>();
  const pending = new Set<string>();
  const warnings = new Set<string>();
  let unusable = false;
  const svc = inp.service;
  if (!svc) {
    warnings.add(`hostname "${host}" not found`);
    unusable = true;
  } else {
    const ports = new Set<number>();
    for (const l of inp.gateway.spec?.listeners ?? []) if (l.port !== undefined) ports.add(l.port);
    for (const port of ports) {
      if (svc.readyEndpoints > 0 && svc.ports.includes(port)) {
        internal.add(`${host}:${port}`);
        for (const ip of svc.clusterIPs) internalIps.add(ip);
        if (svc.loadBalancer.length > 0) for (const a of svc.loadBalancer) external.add(a);
        else if (svc.type === 'LoadBalancer' && !pending.has(host)) {
          warnings.add(`address pending for hostname "${host}"`);
          pending.add(host);
        }
      } else if (svc.readyEndpoints === 0) {
        warnings.add(`no instances found for hostname "${host}"`);
      } else if (!svc.ports.includes(port)) {
        // Endpoints exist but the Service lacks the port (upstream: a managed gateway only warns for this).
        warnings.add(`port ${port} not found for hostname "${host}"`);
        unusable = true;
      }
    }
  }
  const sort = (s: Set<string>) => [...s].sort();
  return {
    host,
    internal: sort(internal),
    internalIps: sort(internalIps),
    external: sort(external),
    pending,
    warnings: sort(warnings),
    allUsable: !unusable,
  };
}

function addressesToReport(
  inp: GatewayStatusInputs,
  r: ReturnType<typeof resolveInstances>,
): GatewayAddress[] {
  let values = [...r.external];
  if (values.length === 0) {
    if (inp.info.addressType === 'Both') values = [...r.internalIps];
    for (const hostPort of r.internal) {
      const h = hostPort.slice(0, hostPort.lastIndexOf(':'));
      if (!r.pending.has(h) && !values.includes(h)) values.push(h);
    }
  }
  return values.map((value) => ({ type: isIp(value) ? 'IPAddress' : 'Hostname', value }));
}

function addressesEqual(
  current: GatewayStatus['addresses'] | undefined,
  next: readonly GatewayAddress[],
): boolean {
  const c = current ?? [];
  return (
    c.length === next.length &&
    c.every((a, i) => (a.type ?? 'IPAddress') === next[i]?.type && a.value === next[i]?.value)
  );
}

/**
 * The Gateway status we want, merged into its current status, and whether it differs from the current one.
 * `addresses` is omitted (null) when there is nothing to report.
 */
export function desiredGatewayStatus(inp: GatewayStatusInputs): {
  status: {
    conditions: Condition[];
    addresses: GatewayAddress[] | null;
    listeners: ListenerStatus[];
  };
  changed: boolean;
} {
  const gw = inp.gateway;
  const generation = gw.metadata?.generation ?? 0;
  const current = gw.status ?? {};
  const r = resolveInstances(inp);

  let programmed = cond(
    true,
    PROGRAMMED,
    r.internal.length > 0
      ? `Resource programmed, assigned to service(s) ${humanJoin(r.internal)}`
      : 'Resource programmed',
    generation,
  );
  if (r.warnings.length > 0) {
    const message =
      r.internal.length > 0
        ? `Assigned to service(s) ${humanJoin(r.internal)}, but failed to assign to all requested addresses: ${r.warnings.join('; ')}`
        : `Failed to assign to any requested addresses: ${r.warnings.join('; ')}`;
    programmed = cond(false, r.allUsable ? 'AddressNotAssigned' : 'AddressNotUsable', message, generation);
  }
  const wanted = new Map<string, ConditionSpec>([
    [ACCEPTED, cond(true, ACCEPTED, 'Resource accepted', generation)],
    [PROGRAMMED, programmed],
  ]);
  const merged = mergeConditions(current.conditions ?? [], wanted, inp.now);
  let changed = merged !== null;
  const conditions = (merged ?? current.conditions ?? []) as Condition[];

  const addresses = addressesToReport(inp, r);
  if (!addressesEqual(current.addresses, addresses)) changed = true;

  const currentListeners = current.listeners ?? [];
  const listeners: ListenerStatus[] = [];
  const specListeners = gw.spec?.listeners ?? [];
  specListeners.forEach((l, i) => {
    const name = l.name ?? '';
    const before = currentListeners.find((s) => s.name === name);
    const { kinds, valid } = supportedKinds(l);
    const m = mergeConditions(
      before?.conditions ?? [],
      listenerConditions(inp.info, l, valid, generation),
      inp.now,
    );
    if (
      m !== null ||
      !before ||
      !kindsEqual(before.supportedKinds, kinds) ||
      currentListeners[i]?.name !== name
    )
      changed = true;
    listeners.push({
      name,
      supportedKinds: kinds,
      // Counting attached routes is the route controller's job; keep what it wrote.
      attachedRoutes: before?.attachedRoutes ?? 0,
      conditions: (m ?? before?.conditions ?? []) as Condition[],
    });
  });
  if (currentListeners.length !== specListeners.length) changed = true;

  return {
    status: { conditions, addresses: addresses.length > 0 ? addresses : null, listeners },
    changed,
  };
}

/** The conditions of a GatewayClass of ours, merged; null when nothing changes. */
export function desiredClassConditions(inp: ClassStatusInputs): Condition[] | null {
  return mergeConditions(
    inp.current,
    new Map([[ACCEPTED, cond(true, ACCEPTED, 'Handled by Istio controller', inp.generation)]]),
    inp.now,
  ) as Condition[] | null;
}
