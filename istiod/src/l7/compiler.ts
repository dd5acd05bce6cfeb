/**
 * The pure part of the waypoint L7 compiler: cluster state (services with their waypoint binding, as the ambient
 * index computed it) + L7 config objects → a plan per destination service (everything in its ServiceConfig except
 * endpoints, which l7index.ts fills in and keeps current), the services each waypoint is sent, and the status
 * istiod wants on the config objects.
 *
 * Which services get a plan: every service bound to a waypoint (routes, policies, subsets, traffic policy), plus
 * every service those routes send or mirror to (`waypoints` empty unless it is bound itself) so the waypoint has
 * its endpoints. Route precedence for a bound service: HTTPRoute/GRPCRoute attached to it (from its namespace or
 * the waypoint's) win; otherwise the oldest VirtualService for its host (from the same namespaces); otherwise no
 * routes (the waypoint's default route to the service). docs/waypoint-l7.md explains why.
 */
import type {
  AuthzPolicy,
  JwtRule,
  Route,
  RouteSource,
  ServicePort,
  Subset,
  TrafficPolicy,
} from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import { workload } from '../../../pkg/xds/index.ts';
import type { ServiceInfo, Waypoint } from '../index/index.ts';
import { timeOf } from '../kube/labels.ts';
import type { AuthorizationPolicy, Namespace } from '../kube/types.ts';
import {
  ROUTE_ACCEPTED,
  ROUTE_RESOLVED_REFS,
  ROUTE_RESOLVED_WAYPOINTS,
  WAYPOINT_ACCEPTED,
} from './constants.ts';
import { type AppliedDestinationRule, selectDestinationRule } from './destinationrule.ts';
import type { Problem, ServiceRef, TranslateContext } from './index.ts';
import {
  type ConvertedRoute,
  convertGatewayRoute,
  type GatewayRoute,
  type GatewayRouteKind,
  type MeshParent,
  meshParents,
  orderRoutes,
  REASON,
} from './routes.ts';
import {
  convertAuthzPolicy,
  convertJwtRules,
  hasPolicyTargets,
  type PolicyTarget,
  policyTargets,
} from './security.ts';
import type {
  DestinationRule,
  GRPCRoute,
  HTTPRoute,
  ParentReference,
  ReferenceGrant,
  RequestAuthentication,
  VirtualService,
} from './types.ts';
import { byAge } from './util.ts';
import {
  appliesToMesh,
  type ConvertedVirtualService,
  convertVirtualService,
  virtualServiceMatches,
} from './virtualservice.ts';

export interface CompileInput {
  readonly domainSuffix: string;
  readonly rootNamespace: string;
  /** Every Service resource (`<ns>/<hostname>` → ServiceInfo), as the ambient index outputs them. */
  readonly services: ReadonlyMap<string, ServiceInfo>;
  readonly waypoints: ReadonlyMap<string, Waypoint>;
  namespace(name: string): Namespace | undefined;
  readonly httpRoutes: Iterable<HTTPRoute>;
  readonly grpcRoutes: Iterable<GRPCRoute>;
  readonly virtualServices: Iterable<VirtualService>;
  readonly destinationRules: Iterable<DestinationRule>;
  readonly authorizationPolicies: Iterable<AuthorizationPolicy>;
  readonly requestAuthentications: Iterable<RequestAuthentication>;
  readonly referenceGrants: Iterable<ReferenceGrant>;
}

/** A ServiceConfig without its endpoints. */
export interface ServicePlan {
  readonly key: string;
  readonly info: ServiceInfo;
  readonly ports: readonly ServicePort[];
  readonly waypoints: readonly string[];
  readonly subsets: readonly Subset[];
  readonly trafficPolicy: TrafficPolicy | undefined;
  readonly routes: readonly Route[];
  readonly authorization: readonly AuthzPolicy[];
  readonly jwtRules: readonly JwtRule[];
  readonly routeSource: RouteSource | undefined;
}

export interface ConditionWant {
  readonly type: string;
  readonly status: boolean;
  readonly reason: string;
  readonly message: string;
}

/** Desired status of one config object (ours only). */
export type StatusWant =
  | {
      readonly kind: GatewayRouteKind;
      readonly namespace: string;
      readonly name: string;
      readonly generation: number;
      /** Our entries of status.parents (controllerName MESH_CONTROLLER_NAME); empty removes ours. */
      readonly parents: ReadonlyArray<{
        readonly parentRef: ParentReference;
        readonly conditions: readonly ConditionWant[];
      }>;
    }
  | {
      readonly kind: 'VirtualService' | 'DestinationRule' | 'AuthorizationPolicy' | 'RequestAuthentication';
      readonly namespace: string;
      readonly name: string;
      readonly generation: number;
      readonly condition: ConditionWant;
    };

export interface CompileOutput {
  /** Plans by service key: bound services and their backends. */
  readonly plans: ReadonlyMap<string, ServicePlan>;
  /** Waypoint `<ns>/<name>` → service keys it is sent. */
  readonly scopes: ReadonlyMap<string, ReadonlySet<string>>;
  /** Desired status per object key `<Kind>/<ns>/<name>`. */
  readonly statuses: ReadonlyMap<string, StatusWant>;
  /** Skipped pieces, per object key, for the log. */
  readonly problems: ReadonlyMap<string, readonly string[]>;
}

const MISSING_WAYPOINT_LABEL =
  'istio.io/use-waypoint label missing from parent and parent namespace; in ambient mode, route will not be respected';
const PARENT_NOT_FOUND = 'parent not found';

function toRef(info: ServiceInfo): ServiceRef {
  const ports = info.service.ports.map((p) => ({
    port: p.servicePort,
    name: info.portNames.get(p.servicePort)?.portName ?? '',
  }));
  return {
    key: info.key,
    kind: info.kind,
    namespace: info.namespace,
    name: info.name,
    hostname: info.hostname,
    ports,
  };
}

const L4_NAME_PREFIXES = ['tcp', 'tls', 'https', 'mongo', 'mysql', 'redis'];

/** Wire protocol text of a service port: from its app protocol, else "tcp" for known L4 names, else "" (detect). */
function portProtocol(appProtocol: workload.AppProtocol, portName: string): string {
  switch (appProtocol) {
    case workload.AppProtocol.HTTP11:
      return 'http';
    case workload.AppProtocol.HTTP2:
      return 'http2';
    case workload.AppProtocol.GRPC:
      return 'grpc';
    default: {
      const prefix = portName.toLowerCase().split('-', 1)[0] ?? '';
      return L4_NAME_PREFIXES.includes(prefix) ? 'tcp' : '';
    }
  }
}

function servicePorts(info: ServiceInfo): ServicePort[] {
  return info.service.ports.map((p) => {
    const name = info.portNames.get(p.servicePort)?.portName ?? '';
    return {
      port: p.servicePort,
      targetPort: p.targetPort,
      name,
      protocol: portProtocol(p.appProtocol, name),
    };
  });
}

function statusKey(kind: string, namespace: string, name: string): string {
  return `${kind}/${namespace}/${name}`;
}

/** Lookups over the service set, shared by every translation in one compile. */
class Services implements TranslateContext {
  readonly domainSuffix: string;
  readonly rootNamespace: string;
  private readonly infos: ReadonlyMap<string, ServiceInfo>;
  private readonly refs = new Map<string, ServiceRef>();
  private readonly byHostname = new Map<string, ServiceInfo[]>();
  private readonly byEntry = new Map<string, ServiceInfo[]>();
  private readonly grants: ReferenceGrant[];
  private readonly drs: DestinationRule[];
  private readonly drCache = new Map<string, AppliedDestinationRule | null>();

  constructor(input: CompileInput) {
    this.domainSuffix = input.domainSuffix;
    this.rootNamespace = input.rootNamespace;
    this.infos = input.services;
    for (const info of input.services.values()) {
      const l = this.byHostname.get(info.hostname) ?? [];
      l.push(info);
      this.byHostname.set(info.hostname, l);
      if (info.kind === 'ServiceEntry') {
        const k = `${info.namespace}/${info.name}`;
        const e = this.byEntry.get(k) ?? [];
        e.push(info);
        this.byEntry.set(k, e);
      }
    }
    this.grants = [...input.referenceGrants];
    this.drs = [...input.destinationRules];
  }

  ref(info: ServiceInfo): ServiceRef {
    let r = this.refs.get(info.key);
    if (!r) {
      r = toRef(info);
      this.refs.set(info.key, r);
    }
    return r;
  }

  info(key: string): ServiceInfo | undefined {
    return this.infos.get(key);
  }

  service(namespace: string, name: string): ServiceRef | undefined {
    const info = this.infos.get(`${namespace}/${name}.${namespace}.svc.${this.domainSuffix}`);
    return info && info.kind === 'Service' ? this.ref(info) : undefined;
  }

  serviceEntry(namespace: string, name: string): readonly ServiceRef[] {
    return (this.byEntry.get(`${namespace}/${name}`) ?? []).map((i) => this.ref(i));
  }

  hostname(host: string, fromNamespace: string): ServiceRef | undefined {
    const list = this.byHostname.get(host.toLowerCase()) ?? this.byHostname.get(host);
    if (!list || list.length === 0) return undefined;
    const local = list.find((i) => i.namespace === fromNamespace);
    if (local) return this.ref(local);
    const kube = list.find((i) => i.kind === 'Service');
    if (kube) return this.ref(kube);
    const oldest = [...list].sort((a, b) => a.created - b.created || (a.key < b.key ? -1 : 1))[0]!;
    return this.ref(oldest);
  }

  subsets(serviceKey: string): ReadonlySet<string> | null {
    const dr = this.destinationRule(serviceKey);
    return dr ? new Set(dr.subsets.map((s) => s.name)) : null;
  }

  /** The DestinationRule applying to a service, seen from its waypoint's namespace when it has one. */
  destinationRule(serviceKey: string): AppliedDestinationRule | null {
    if (this.drCache.has(serviceKey)) return this.drCache.get(serviceKey)!;
    const info = this.infos.get(serviceKey);
    let result: AppliedDestinationRule | null = null;
    if (info) {
      const namespaces = [info.waypoint?.namespace, info.namespace, this.rootNamespace].filter(
        (n, i, a): n is string => n !== undefined && a.indexOf(n) === i,
      );
      result = selectDestinationRule(this.ref(info), this.drs, namespaces, this.domainSuffix);
    }
    this.drCache.set(serviceKey, result);
    return result;
  }

  grantAllows(
    from: { readonly group: string; readonly kind: string; readonly namespace: string },
    to: { readonly group: string; readonly kind: string; readonly namespace: string; readonly name: string },
  ): boolean {
    const core = (g: string | undefined) => g === '' || g === 'core' || g === undefined;
    return this.grants.some((g) => {
      if (g.metadata?.namespace !== to.namespace) return false;
      const fromOk = (g.spec?.from ?? []).some(
        (f) => (f.group ?? '') === from.group && f.kind === from.kind && f.namespace === from.namespace,
      );
      if (!fromOk) return false;
      return (g.spec?.to ?? []).some(
        (t) =>
          (core(t.group) ? core(to.group) : t.group === to.group) &&
          t.kind === to.kind &&
          (t.name === undefined || t.name === '' || t.name === to.name),
      );
    });
  }
}

interface Mutable {
  readonly plans: Map<string, ServicePlan>;
  readonly statuses: Map<string, StatusWant>;
  readonly problems: Map<string, string[]>;
}

function addProblems(out: Mutable, key: string, list: readonly string[]): void {
  if (list.length === 0) return;
  const cur = out.problems.get(key) ?? [];
  for (const p of list) if (!cur.includes(p)) cur.push(p);
  out.problems.set(key, cur);
}

export function compileWaypointConfig(input: CompileInput): CompileOutput {
  const svcs = new Services(input);
  const out: Mutable = { plans: new Map(), statuses: new Map(), problems: new Map() };

  // Bound services, by waypoint.
  const bound = new Map<string, ServiceInfo>();
  for (const [key, info] of input.services) if (info.waypoint) bound.set(key, info);

  // ---- Gateway API routes ---------------------------------------------------------------------------------
  const gatewayEntries = new Map<string, Array<{ entry: ConvertedRoute['entries'][number]; port: number }>>();
  const routeBackends = new Map<string, Set<string>>();
  const addBackends = (key: string, backends: ReadonlySet<string>) => {
    if (backends.size === 0) return;
    const s = routeBackends.get(key) ?? new Set<string>();
    for (const b of backends) s.add(b);
    routeBackends.set(key, s);
  };
  const gatewayRoutes: Array<{ route: GatewayRoute; kind: GatewayRouteKind }> = [
    ...[...input.httpRoutes].map((route) => ({ route, kind: 'HTTPRoute' as const })),
    ...[...input.grpcRoutes].map((route) => ({ route, kind: 'GRPCRoute' as const })),
  ];
  for (const { route, kind } of gatewayRoutes) {
    const ns = route.metadata?.namespace ?? '';
    const name = route.metadata?.name ?? '';
    guard(out, statusKey(kind, ns, name), () => compileRoute(route, kind, ns, name));
  }
  function compileRoute(route: GatewayRoute, kind: GatewayRouteKind, ns: string, name: string): void {
    const parents = meshParents(route, svcs);
    if (parents.length === 0) {
      // Not a mesh route; if we wrote parents before, the status writer removes ours.
      out.statuses.set(statusKey(kind, ns, name), {
        kind,
        namespace: ns,
        name,
        generation: route.metadata?.generation ?? 0,
        parents: [],
      });
      return;
    }
    const converted = convertGatewayRoute(route, kind, svcs);
    if (converted.problem) addProblems(out, statusKey(kind, ns, name), [converted.problem.message]);
    for (const p of parents) {
      if (p.denied) continue;
      for (const svc of p.services) {
        const info = bound.get(svc.key);
        if (!info?.waypoint) continue;
        // Producer routes (service namespace) and routes from the waypoint's namespace apply; a consumer route
        // from another namespace only affects its own clients, which a waypoint cannot tell apart.
        if (ns !== info.namespace && ns !== info.waypoint.namespace) continue;
        const list = gatewayEntries.get(svc.key) ?? [];
        for (const entry of converted.entries) list.push({ entry, port: p.port });
        gatewayEntries.set(svc.key, list);
        addBackends(svc.key, converted.backends);
      }
    }
    out.statuses.set(statusKey(kind, ns, name), routeStatus(route, kind, parents, converted, svcs));
  }

  // ---- VirtualServices --------------------------------------------------------------------------------------
  const vsConverted = new Map<VirtualService, ConvertedVirtualService>();
  const vsApplied = new Map<VirtualService, string[]>();
  const vsOverridden = new Map<VirtualService, string[]>();
  const meshVs = [...input.virtualServices].filter(appliesToMesh);
  const vsByAge = meshVs
    .map((vs) => ({
      vs,
      created: timeOf(vs.metadata?.creationTimestamp),
      namespace: vs.metadata?.namespace ?? '',
      name: vs.metadata?.name ?? '',
    }))
    .sort(byAge);
  const chosenRoutes = new Map<string, { routes: Route[]; source: RouteSource | undefined }>();
  for (const [key, info] of bound) {
    const w = info.waypoint!;
    const ref = svcs.ref(info);
    const candidates = vsByAge.filter(
      (c) =>
        (c.namespace === info.namespace || c.namespace === w.namespace) &&
        matchesSafely(c.vs, ref, input.domainSuffix),
    );
    const entries = gatewayEntries.get(key);
    if (entries && entries.length > 0) {
      const routes = orderRoutes(entries);
      chosenRoutes.set(key, { routes, source: routes[0]?.source });
      for (const c of candidates)
        push(
          vsOverridden,
          c.vs,
          `${info.hostname} (HTTPRoute/GRPCRoute attached to the service take precedence)`,
        );
      continue;
    }
    const first = candidates[0];
    if (!first) continue;
    let conv = vsConverted.get(first.vs);
    if (!conv) {
      try {
        conv = convertVirtualService(first.vs, svcs);
      } catch (err) {
        conv = {
          routes: [],
          backends: new Set(),
          problems: [
            `could not be translated (${err instanceof Error ? err.message : String(err)}); skipped`,
          ],
        };
      }
      vsConverted.set(first.vs, conv);
    }
    chosenRoutes.set(key, {
      routes: [...conv.routes],
      source: { kind: 'VirtualService', namespace: first.namespace, name: first.name },
    });
    addBackends(key, conv.backends);
    push(vsApplied, first.vs, info.hostname);
    for (const c of candidates.slice(1))
      push(
        vsOverridden,
        c.vs,
        `${info.hostname} (older VirtualService ${first.namespace}/${first.name} applies)`,
      );
  }
  for (const c of vsByAge) {
    const applied = vsApplied.get(c.vs);
    const overridden = vsOverridden.get(c.vs);
    if (!applied && !overridden) continue;
    const problems = vsConverted.get(c.vs)?.problems ?? [];
    const key = statusKey('VirtualService', c.namespace, c.name);
    addProblems(out, key, problems);
    let condition: ConditionWant;
    if (applied) {
      let message = `applied by waypoints to ${applied.join(', ')}`;
      if (overridden) message += `; not applied to ${overridden.join(', ')}`;
      condition =
        problems.length > 0
          ? {
              type: WAYPOINT_ACCEPTED,
              status: false,
              reason: 'Invalid',
              message: `${message}; skipped: ${problems.join('; ')}`,
            }
          : { type: WAYPOINT_ACCEPTED, status: true, reason: 'Accepted', message };
    } else {
      condition = {
        type: WAYPOINT_ACCEPTED,
        status: false,
        reason: 'Overridden',
        message: `not applied to ${overridden!.join(', ')}`,
      };
    }
    out.statuses.set(key, {
      kind: 'VirtualService',
      namespace: c.namespace,
      name: c.name,
      generation: c.vs.metadata?.generation ?? 0,
      condition,
    });
  }

  // ---- Policies ---------------------------------------------------------------------------------------------
  const boundByWaypoint = new Map<string, string[]>();
  for (const [key, info] of bound) push(boundByWaypoint, info.waypoint!.key, key);
  const authz = new Map<string, AuthzPolicy[]>();
  const jwt = new Map<string, JwtRule[]>();
  const policies = [...input.authorizationPolicies].filter(hasPolicyTargets).sort(byName);
  for (const ap of policies) {
    guard(out, statusKey('AuthorizationPolicy', ap.metadata?.namespace ?? '', ap.metadata?.name ?? ''), () =>
      compileAuthz(ap),
    );
  }
  function compileAuthz(ap: AuthorizationPolicy): void {
    const converted = convertAuthzPolicy(ap);
    const targets = policyTargets(ap, input.rootNamespace);
    const problems = [...targets.problems];
    if (typeof converted === 'string') problems.push(converted);
    const keys = resolveTargets(targets.targets, svcs, input, bound, boundByWaypoint, problems);
    if (typeof converted !== 'string') for (const k of keys) push(authz, k, converted);
    policyStatus(out, 'AuthorizationPolicy', ap, keys, problems, bound);
  }
  for (const ra of [...input.requestAuthentications].filter(hasPolicyTargets).sort(byName)) {
    guard(
      out,
      statusKey('RequestAuthentication', ra.metadata?.namespace ?? '', ra.metadata?.name ?? ''),
      () => compileJwt(ra),
    );
  }
  function compileJwt(ra: RequestAuthentication): void {
    const targets = policyTargets(ra, input.rootNamespace);
    const problems = [...targets.problems];
    const rules = convertJwtRules(ra, problems);
    const keys = resolveTargets(targets.targets, svcs, input, bound, boundByWaypoint, problems);
    for (const k of keys) for (const r of rules) push(jwt, k, r);
    policyStatus(out, 'RequestAuthentication', ra, keys, problems, bound);
  }

  // ---- Plans ------------------------------------------------------------------------------------------------
  const drUsed = new Map<string, string[]>();
  const makePlan = (key: string, info: ServiceInfo, waypoints: string[]) => {
    const dr = svcs.destinationRule(key);
    if (dr) for (const src of dr.sources) push(drUsed, src, info.hostname);
    if (dr)
      for (const [k, list] of dr.problems)
        addProblems(out, statusKey('DestinationRule', ...splitKey(k)), list);
    const chosen = waypoints.length > 0 ? chosenRoutes.get(key) : undefined;
    out.plans.set(key, {
      key,
      info,
      ports: servicePorts(info),
      waypoints,
      subsets: dr?.subsets ?? [],
      trafficPolicy: dr?.trafficPolicy,
      routes: chosen?.routes ?? [],
      authorization: waypoints.length > 0 ? (authz.get(key) ?? []) : [],
      jwtRules: waypoints.length > 0 ? (jwt.get(key) ?? []) : [],
      routeSource: chosen?.source,
    });
  };
  for (const [key, info] of bound) makePlan(key, info, [info.waypoint!.key]);
  const scopes = new Map<string, Set<string>>();
  for (const [key, info] of bound) {
    const w = info.waypoint!.key;
    const scope = scopes.get(w) ?? new Set<string>();
    scope.add(key);
    for (const b of routeBackends.get(key) ?? []) {
      const binfo = svcs.info(b);
      if (!binfo) continue;
      scope.add(b);
      if (!out.plans.has(b)) makePlan(b, binfo, []);
    }
    scopes.set(w, scope);
  }
  // Waypoints with nothing bound still get a (empty) scope so their clients are told "nothing".
  for (const w of input.waypoints.keys()) if (!scopes.has(w)) scopes.set(w, new Set());

  for (const [drKey, hosts] of drUsed) {
    const [ns, name] = splitKey(drKey);
    const key = statusKey('DestinationRule', ns, name);
    const problems = out.problems.get(key) ?? [];
    const dr = [...input.destinationRules].find(
      (d) => d.metadata?.namespace === ns && d.metadata?.name === name,
    );
    out.statuses.set(key, {
      kind: 'DestinationRule',
      namespace: ns,
      name,
      generation: dr?.metadata?.generation ?? 0,
      condition:
        problems.length > 0
          ? {
              type: WAYPOINT_ACCEPTED,
              status: false,
              reason: 'Invalid',
              message: `applied by waypoints to ${unique(hosts).join(', ')}; skipped: ${problems.join('; ')}`,
            }
          : {
              type: WAYPOINT_ACCEPTED,
              status: true,
              reason: 'Accepted',
              message: `applied by waypoints to ${unique(hosts).join(', ')}`,
            },
    });
  }
  return { plans: out.plans, scopes, statuses: out.statuses, problems: out.problems };
}

/**
 * Runs one object's translation; a throw (input shaped in a way no translator expected, e.g. `null` list items)
 * skips that object and reports it instead of failing the whole compile.
 */
function guard(out: Mutable, objectKey: string, fn: () => void): void {
  try {
    fn();
  } catch (err) {
    addProblems(out, objectKey, [
      `could not be translated (${err instanceof Error ? err.message : String(err)}); skipped`,
    ]);
  }
}

function matchesSafely(vs: VirtualService, svc: ServiceRef, domainSuffix: string): boolean {
  try {
    return virtualServiceMatches(vs, svc, domainSuffix);
  } catch {
    return false;
  }
}

function splitKey(k: string): [string, string] {
  const i = k.indexOf('/');
  return [k.slice(0, i), k.slice(i + 1)];
}

function unique(list: readonly string[]): string[] {
  return [...new Set(list)];
}

function push<K, V>(m: Map<K, V[]>, k: K, v: V): void {
  const l = m.get(k);
  if (l) l.push(v);
  else m.set(k, [v]);
}

function byName(
  a: { metadata?: { namespace?: string; name?: string } },
  b: { metadata?: { namespace?: string; name?: string } },
): number {
  const ka = `${a.metadata?.namespace ?? ''}/${a.metadata?.name ?? ''}`;
  const kb = `${b.metadata?.namespace ?? ''}/${b.metadata?.name ?? ''}`;
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

/** Service keys a policy's targets resolve to (only services bound to a waypoint). */
function resolveTargets(
  targets: readonly PolicyTarget[],
  svcs: Services,
  input: CompileInput,
  bound: ReadonlyMap<string, ServiceInfo>,
  boundByWaypoint: ReadonlyMap<string, readonly string[]>,
  problems: string[],
): string[] {
  const keys = new Set<string>();
  for (const t of targets) {
    switch (t.kind) {
      case 'Service':
      case 'ServiceEntry': {
        const refs =
          t.kind === 'Service'
            ? [svcs.service(t.namespace, t.name)].filter((r): r is ServiceRef => r !== undefined)
            : svcs.serviceEntry(t.namespace, t.name);
        if (refs.length === 0) {
          problems.push(`${t.kind} ${t.namespace}/${t.name} not found`);
          break;
        }
        for (const r of refs) {
          if (bound.has(r.key)) keys.add(r.key);
          else problems.push(`${t.kind} ${t.namespace}/${t.name} (${r.hostname}) is not bound to a waypoint`);
        }
        break;
      }
      case 'Gateway': {
        const key = `${t.namespace}/${t.name}`;
        if (!input.waypoints.has(key)) {
          problems.push(`waypoint ${key} not found (or not ready)`);
          break;
        }
        for (const k of boundByWaypoint.get(key) ?? []) keys.add(k);
        break;
      }
      case 'GatewayClass':
        for (const list of boundByWaypoint.values()) for (const k of list) keys.add(k);
        break;
    }
  }
  return [...keys].sort();
}

function policyStatus(
  out: Mutable,
  kind: 'AuthorizationPolicy' | 'RequestAuthentication',
  obj: AuthorizationPolicy | RequestAuthentication,
  keys: readonly string[],
  problems: readonly string[],
  bound: ReadonlyMap<string, ServiceInfo>,
): void {
  const ns = obj.metadata?.namespace ?? '';
  const name = obj.metadata?.name ?? '';
  const key = statusKey(kind, ns, name);
  addProblems(out, key, problems);
  const waypoints = unique(keys.map((k) => bound.get(k)?.waypoint?.key ?? '').filter((w) => w !== '')).sort();
  let condition: ConditionWant;
  if (keys.length === 0) {
    condition = {
      type: WAYPOINT_ACCEPTED,
      status: false,
      reason: 'TargetNotFound',
      message: problems.length > 0 ? problems.join('; ') : 'no target is bound to a waypoint',
    };
  } else {
    const message = `bound to ${waypoints.join(', ')}`;
    condition =
      problems.length > 0
        ? {
            type: WAYPOINT_ACCEPTED,
            status: true,
            reason: 'PartiallyInvalid',
            message: `${message}; ${problems.join('; ')}`,
          }
        : { type: WAYPOINT_ACCEPTED, status: true, reason: 'Accepted', message };
  }
  out.statuses.set(key, { kind, namespace: ns, name, generation: obj.metadata?.generation ?? 0, condition });
}

/** Our status.parents entries for a mesh route (Istio's messages and reasons). */
function routeStatus(
  route: GatewayRoute,
  kind: GatewayRouteKind,
  parents: readonly MeshParent[],
  converted: ConvertedRoute,
  svcs: Services,
): StatusWant {
  const ns = route.metadata?.namespace ?? '';
  const out: Array<{ parentRef: ParentReference; conditions: ConditionWant[] }> = [];
  for (const p of parents) {
    const accepted: ConditionWant = p.denied
      ? { type: ROUTE_ACCEPTED, status: false, reason: p.denied.reason, message: p.denied.message }
      : { type: ROUTE_ACCEPTED, status: true, reason: REASON.accepted, message: 'Route was valid' };
    const problem: Problem | null = converted.problem;
    const refs: ConditionWant = problem
      ? { type: ROUTE_RESOLVED_REFS, status: false, reason: problem.reason, message: problem.message }
      : {
          type: ROUTE_RESOLVED_REFS,
          status: true,
          reason: REASON.resolvedRefs,
          message: 'All references resolved',
        };
    // Istio reports ResolvedWaypoints with status True and puts any waypoint problem in the message.
    let waypointMessage = 'All waypoints resolved';
    if (p.services.length === 0) waypointMessage = PARENT_NOT_FOUND;
    else {
      const info = svcs.info(p.services[0]!.key);
      if (!info?.waypoint) waypointMessage = info?.waypointError?.message ?? MISSING_WAYPOINT_LABEL;
    }
    const waypoints: ConditionWant = {
      type: ROUTE_RESOLVED_WAYPOINTS,
      status: true,
      reason: REASON.resolvedWaypoints,
      message: waypointMessage,
    };
    out.push({ parentRef: p.ref, conditions: [accepted, refs, waypoints] });
  }
  return {
    kind,
    namespace: ns,
    name: route.metadata?.name ?? '',
    generation: route.metadata?.generation ?? 0,
    parents: out,
  };
}
