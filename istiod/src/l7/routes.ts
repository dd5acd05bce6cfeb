/**
 * Gateway API HTTPRoute / GRPCRoute with Service (or ServiceEntry) parents, GAMMA → waypoint routes
 * (upstream pilot/pkg/config/kube/gateway conversion.go for the mesh case, checked against the Gateway API spec):
 *
 * - Each rule is split into one route per match (a rule without matches is one matchless route), named
 *   `<rule name>` or `<ns>.<route>.<rule index>`; PathPrefix is element-wise (`path_separated_prefix`, trailing `/`
 *   ignored); header names are case-insensitive and a repeated name keeps its first entry.
 * - Filters: Request/ResponseHeaderModifier, RequestRedirect (302 unless set), URLRewrite, RequestMirror
 *   (percent/fraction); ExtensionRef, CORS and anything else is an unsupported filter: the whole route is dropped
 *   (Istio's hard error). RequestRedirect with URLRewrite in one rule conflicts and drops the route too.
 * - backendRefs: weight 0 excluded; no weight left → 500. An invalid backend (not found, not permitted without a
 *   ReferenceGrant, unsupported kind) keeps its weight and answers 500 (`error_status`), and ResolvedRefs says why.
 * - timeouts.request → route timeout; timeouts.backendRequest → per-try timeout when retrying, else the route
 *   timeout; `retry` (experimental) → retries on connect errors plus the listed codes. No `retry` → Istio's mesh
 *   default retry policy (the waypoint applies it to every route, HTTPRoute or VirtualService).
 */
import {
  type HeaderMatch,
  type HeaderMutation,
  type Mirror,
  type Redirect,
  type Rewrite,
  type Route,
  type RouteAction,
  type RouteMatch,
  type StringMatch,
  WeightedBackend,
} from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import { timeOf } from '../kube/labels.ts';
import { GATEWAY_GROUP, NETWORKING_GROUP } from './constants.ts';
import { defaultRetryPolicy } from './defaults.ts';
import type { Problem, RouteEntry, ServiceRef, TranslateContext } from './index.ts';
import type {
  BackendObjectReference,
  GRPCRoute,
  HTTPBackendRef,
  HTTPHeaderFilter,
  HTTPHeaderMatch,
  HTTPRoute,
  HTTPRouteFilter,
  HTTPRouteMatch,
  ParentReference,
} from './types.ts';
import { type Converted, exact, fail, ok, parseDurationMs, regex } from './util.ts';

export type GatewayRouteKind = 'HTTPRoute' | 'GRPCRoute';
export type GatewayRoute = HTTPRoute | GRPCRoute;

/** Gateway API reasons we report. */
export const REASON = {
  accepted: 'Accepted',
  resolvedRefs: 'ResolvedRefs',
  noMatchingParent: 'NoMatchingParent',
  backendNotFound: 'BackendNotFound',
  refNotPermitted: 'RefNotPermitted',
  invalidKind: 'InvalidKind',
  invalidFilter: 'InvalidFilter',
  invalidDestination: 'InvalidDestination',
  invalidConfiguration: 'InvalidConfiguration',
  resolvedWaypoints: 'ResolvedWaypoints',
} as const;

/** Status code for requests picked for an invalid backend (Gateway API: 500). */
export const INVALID_BACKEND_STATUS = 500;

/** The translated rules of one route object (independent of its parents). */
export interface ConvertedRoute {
  readonly entries: readonly RouteEntry[];
  /** Soft (invalid backend/mirror) or hard (route dropped, `entries` empty) problem for ResolvedRefs. */
  readonly problem: Problem | null;
  /** Service keys the rules send or mirror to. */
  readonly backends: ReadonlySet<string>;
}

/** One of the route's parentRefs that names a Service or ServiceEntry (ours). */
export interface MeshParent {
  readonly ref: ParentReference;
  readonly kind: 'Service' | 'ServiceEntry';
  readonly namespace: string;
  readonly name: string;
  /** The services it names (one per ServiceEntry host); empty when not found. */
  readonly services: readonly ServiceRef[];
  /** parentRef port; 0 = every port. */
  readonly port: number;
  /** Accepted=False reason, or null. */
  readonly denied: Problem | null;
}

/** Gateway API group "" is core; we also accept the spelling "core". */
function isCoreGroup(group: string | undefined): boolean {
  return group === '' || group === 'core';
}

/** The parentRefs of a route that are ours (Service in the core group, or an Istio ServiceEntry). */
export function meshParents(route: GatewayRoute, ctx: TranslateContext): MeshParent[] {
  const routeNs = route.metadata?.namespace ?? '';
  const out: MeshParent[] = [];
  for (const ref of route.spec?.parentRefs ?? []) {
    const namespace = ref.namespace ?? routeNs;
    const name = ref.name ?? '';
    const port = ref.port ?? 0;
    if (ref.kind === 'Service' && isCoreGroup(ref.group)) {
      const svc = ctx.service(namespace, name);
      out.push({
        ref,
        kind: 'Service',
        namespace,
        name,
        services: svc ? [svc] : [],
        port,
        denied: svc
          ? null
          : { reason: REASON.noMatchingParent, message: `parent service: "${name}" not found` },
      });
    } else if (ref.kind === 'ServiceEntry' && ref.group === NETWORKING_GROUP) {
      const services = ctx.serviceEntry(namespace, name);
      out.push({
        ref,
        kind: 'ServiceEntry',
        namespace,
        name,
        services,
        port,
        denied:
          services.length > 0
            ? null
            : { reason: REASON.noMatchingParent, message: `parent service entry: "${name}" not found` },
      });
    }
  }
  return out;
}

/** Canonical text of a parentRef for comparing status entries (namespace defaulted to the route's). */
export function parentRefKey(ref: ParentReference, routeNamespace: string): string {
  return [
    ref.group ?? GATEWAY_GROUP,
    ref.kind ?? 'Gateway',
    ref.namespace ?? routeNamespace,
    ref.name ?? '',
    ref.sectionName ?? '',
    ref.port ?? '',
  ].join('/');
}

// ---- conversion ----------------------------------------------------------------------------------------------

class HardError extends Error {
  readonly problem: Problem;
  constructor(problem: Problem) {
    super(problem.message);
    this.problem = problem;
  }
}

interface RuleState {
  readonly ctx: TranslateContext;
  readonly kind: GatewayRouteKind;
  readonly namespace: string;
  readonly backends: Set<string>;
  /** First soft problem (Istio reports one; later ones are appended to the message). */
  soft: Problem | null;
}

function addSoft(st: RuleState, p: Problem): void {
  st.soft = st.soft ? { reason: st.soft.reason, message: `${st.soft.message}; ${p.message}` } : p;
}

/** Translates every rule of a route; a hard error drops them all (the route is not programmed). */
export function convertGatewayRoute(
  route: GatewayRoute,
  kind: GatewayRouteKind,
  ctx: TranslateContext,
): ConvertedRoute {
  const namespace = route.metadata?.namespace ?? '';
  const name = route.metadata?.name ?? '';
  const st: RuleState = { ctx, kind, namespace, backends: new Set(), soft: null };
  const entries: RouteEntry[] = [];
  const created = timeOf(route.metadata?.creationTimestamp);
  try {
    let position = 0;
    const rules = route.spec?.rules ?? [];
    for (let i = 0; i < rules.length; i++) {
      const rule = rules[i]!;
      const routeName = rule.name || `${namespace}.${name}.${i}`;
      const action = convertAction(rule, st);
      const matchList: Array<RouteMatch | null> = [];
      if (kind === 'HTTPRoute') {
        const ms = (rule.matches ?? []) as readonly HTTPRouteMatch[];
        for (const m of ms) matchList.push(httpMatch(m));
      } else {
        const ms = (rule as { matches?: ReadonlyArray<Parameters<typeof grpcMatch>[0]> }).matches ?? [];
        for (const m of ms) matchList.push(grpcMatch(m));
      }
      if (matchList.length === 0) matchList.push(null);
      for (const m of matchList) {
        entries.push({
          route: {
            name: routeName,
            source: { kind, namespace, name },
            ports: [],
            // A rule without matches matches every request (PathPrefix "/").
            matches: [m ?? defaultMatch()],
            action,
          },
          created,
          namespace,
          name,
          position: position++,
          matchless: m === null,
        });
      }
    }
  } catch (err) {
    if (err instanceof HardError) return { entries: [], problem: err.problem, backends: new Set() };
    throw err;
  }
  return { entries, problem: st.soft, backends: st.backends };
}

function defaultMatch(): RouteMatch {
  return {
    path: { kind: { $case: 'pathSeparatedPrefix', value: '/' }, ignoreCase: false },
    headers: [],
    queryParams: [],
    method: undefined,
    authority: undefined,
    port: 0,
  };
}

function must<T>(r: Converted<T>, reason: string = REASON.invalidConfiguration): T {
  if (!r.ok) throw new HardError({ reason, message: r.error });
  return r.value;
}

function httpMatch(m: HTTPRouteMatch): RouteMatch {
  const type = m.path?.type ?? 'PathPrefix';
  let value = m.path?.value ?? '/';
  let path: StringMatch;
  switch (type) {
    case 'PathPrefix':
      // "A trailing / is ignored" (Gateway API HTTPPathMatch).
      if (value !== '/' && value.endsWith('/')) value = value.replace(/\/+$/, '') || '/';
      path = { kind: { $case: 'pathSeparatedPrefix', value }, ignoreCase: false };
      break;
    case 'Exact':
      path = exact(value);
      break;
    case 'RegularExpression':
      path = must(regex(value));
      break;
    default:
      throw new HardError({
        reason: REASON.invalidConfiguration,
        message: `unknown type: "${type}" is not supported Path match type`,
      });
  }
  return {
    path,
    headers: headerMatches(m.headers, true),
    queryParams: headerMatches(m.queryParams, false),
    method: m.method ? exact(m.method) : undefined,
    authority: undefined,
    port: 0,
  };
}

function headerMatches(
  list: readonly HTTPHeaderMatch[] | undefined,
  caseInsensitive: boolean,
): HeaderMatch[] {
  const out: HeaderMatch[] = [];
  const seen = new Set<string>();
  for (const h of list ?? []) {
    const name = caseInsensitive ? (h.name ?? '').toLowerCase() : (h.name ?? '');
    // "Subsequent entries with an equivalent name MUST be ignored."
    if (seen.has(name)) continue;
    seen.add(name);
    const type = h.type ?? 'Exact';
    let value: StringMatch;
    if (type === 'Exact') value = exact(h.value ?? '');
    else if (type === 'RegularExpression') value = must(regex(h.value ?? ''));
    else
      throw new HardError({
        reason: REASON.invalidConfiguration,
        message: `unknown type: "${type}" is not supported HeaderMatch type`,
      });
    out.push({ name, value, invert: false });
  }
  return out;
}

function grpcMatch(m: {
  method?: { type?: string; service?: string; method?: string };
  headers?: readonly HTTPHeaderMatch[];
}): RouteMatch {
  let path: StringMatch | undefined;
  const mm = m.method;
  if (mm) {
    const type = mm.type ?? 'Exact';
    if (!mm.method && !mm.service)
      throw new HardError({
        reason: REASON.invalidConfiguration,
        message: 'gRPC match must have method or service defined',
      });
    // gRPC paths are /<service>/<method>.
    if (type === 'Exact') {
      if (!mm.method) path = { kind: { $case: 'prefix', value: `/${mm.service}/` }, ignoreCase: false };
      else if (!mm.service) path = must(regex(`/[^/]+/${escapeRegex(mm.method)}`));
      else path = exact(`/${mm.service}/${mm.method}`);
    } else if (type === 'RegularExpression') {
      path = must(regex(`/${mm.service ?? '[^/]+'}/${mm.method ?? '.+'}`));
    } else {
      throw new HardError({
        reason: REASON.invalidConfiguration,
        message: `unknown type: "${type}" is not supported Path match type`,
      });
    }
  }
  return {
    path,
    headers: headerMatches(m.headers, true),
    queryParams: [],
    method: undefined,
    authority: undefined,
    port: 0,
  };
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function headerMutation(f: HTTPHeaderFilter | undefined): HeaderMutation {
  const dedupe = (list: readonly { name?: string; value?: string }[] | undefined) => {
    const seen = new Set<string>();
    const out: Array<{ name: string; value: string }> = [];
    for (const h of list ?? []) {
      const name = (h.name ?? '').toLowerCase();
      if (seen.has(name)) continue;
      seen.add(name);
      out.push({ name, value: h.value ?? '' });
    }
    return out;
  };
  return {
    set: dedupe(f?.set),
    add: dedupe(f?.add),
    remove: (f?.remove ?? []).map((n) => n.toLowerCase()),
  };
}

function convertAction(
  rule: {
    filters?: readonly HTTPRouteFilter[];
    backendRefs?: readonly HTTPBackendRef[];
    timeouts?: { request?: string; backendRequest?: string };
    retry?: { codes?: readonly number[]; attempts?: number; backoff?: string };
  },
  st: RuleState,
): RouteAction {
  let requestHeaders: HeaderMutation | undefined;
  let responseHeaders: HeaderMutation | undefined;
  let redirect: Redirect | undefined;
  let rewrite: Rewrite | undefined;
  const mirrors: Mirror[] = [];
  for (const f of rule.filters ?? []) {
    switch (f.type) {
      case 'RequestHeaderModifier':
        requestHeaders = headerMutation(f.requestHeaderModifier);
        break;
      case 'ResponseHeaderModifier':
        responseHeaders = headerMutation(f.responseHeaderModifier);
        break;
      case 'RequestRedirect': {
        if (st.kind === 'GRPCRoute') throw unsupportedFilter(f.type);
        const r = f.requestRedirect ?? {};
        redirect = {
          scheme: r.scheme ?? '',
          host: r.hostname ?? '',
          port: r.port ?? 0,
          fullPath: r.path?.type === 'ReplaceFullPath' ? (r.path.replaceFullPath ?? '') : '',
          prefixReplace: r.path?.type === 'ReplacePrefixMatch' ? (r.path.replacePrefixMatch ?? '') : '',
          // The CRD defaults statusCode to 302 (our API server may not apply CRD defaults).
          statusCode: r.statusCode ?? 302,
        };
        break;
      }
      case 'URLRewrite': {
        if (st.kind === 'GRPCRoute') throw unsupportedFilter(f.type);
        const r = f.urlRewrite ?? {};
        rewrite = {
          fullPath: r.path?.type === 'ReplaceFullPath' ? (r.path.replaceFullPath ?? '') : '',
          prefixReplace: r.path?.type === 'ReplacePrefixMatch' ? (r.path.replacePrefixMatch ?? '') : '',
          host: r.hostname ?? '',
          regexMatch: '',
          regexSubstitution: '',
        };
        break;
      }
      case 'RequestMirror': {
        const m = f.requestMirror;
        const dest = resolveBackend(m?.backendRef ?? {}, st);
        if (dest.problem) {
          // An unusable mirror is dropped; the route still serves (Istio).
          addSoft(st, dest.problem);
          break;
        }
        let percent = 100;
        if (m?.fraction) {
          const den = m.fraction.denominator ?? 100;
          percent = den > 0 ? (100 * (m.fraction.numerator ?? 0)) / den : 0;
        } else if (m?.percent !== undefined) {
          percent = m.percent;
        }
        mirrors.push({ service: dest.key, port: dest.port, subset: '', percent });
        st.backends.add(dest.key);
        break;
      }
      default:
        throw unsupportedFilter(f.type ?? '');
    }
  }
  if (redirect && rewrite)
    throw new HardError({
      reason: REASON.invalidFilter,
      message: 'RequestRedirect and URLRewrite filters cannot be used in the same rule',
    });

  const action: RouteAction = {
    backends: [],
    redirect,
    directResponse: undefined,
    rewrite,
    requestHeaders,
    responseHeaders,
    mirrors,
    fault: undefined,
    timeoutMs: 0,
    retries: undefined,
  };
  if (!redirect) {
    const refs = rule.backendRefs ?? [];
    const total = refs.reduce((sum, b) => sum + (b.weight ?? 1), 0);
    if (total === 0) {
      // "If all backendRefs are invalid or have weight 0, requests MUST receive a 500."
      action.directResponse = { status: INVALID_BACKEND_STATUS, body: '' };
    } else {
      for (const b of refs) {
        const weight = b.weight ?? 1;
        if (weight === 0) continue;
        action.backends.push(convertBackend(b, weight, st));
      }
    }
  }
  // Retries: the experimental `retry` stanza, else the mesh default (applied by Istio's waypoint to every route).
  if (rule.retry) {
    const attempts = rule.retry.attempts ?? 2;
    const codes = [...(rule.retry.codes ?? [])];
    const retryOn = ['connect-failure', 'refused-stream', 'unavailable', 'cancelled'];
    if (codes.length > 0) retryOn.push('retriable-status-codes');
    action.retries = {
      attempts,
      perTryTimeoutMs: 0,
      retryOn: attempts === 0 ? [] : retryOn,
      retriableStatusCodes: attempts === 0 ? [] : codes,
      backoffBaseMs: rule.retry.backoff ? must(durationOf(rule.retry.backoff, 'retry.backoff')) : 0,
    };
  } else {
    action.retries = defaultRetryPolicy();
  }
  const t = rule.timeouts;
  if (t?.request) action.timeoutMs = must(durationOf(t.request, 'timeouts.request'));
  if (t?.backendRequest) {
    const ms = must(durationOf(t.backendRequest, 'timeouts.backendRequest'));
    if (ms > 0) {
      if (rule.retry && action.retries.attempts > 0) action.retries.perTryTimeoutMs = ms;
      else if (action.timeoutMs === 0 || ms < action.timeoutMs) action.timeoutMs = ms;
    }
  }
  return action;
}

function durationOf(text: string, field: string): Converted<number> {
  const ms = parseDurationMs(text);
  return ms === null ? fail(`${field}: "${text}" is not a duration`) : ok(ms);
}

function unsupportedFilter(type: string): HardError {
  return new HardError({ reason: REASON.invalidFilter, message: `unsupported filter type "${type}"` });
}

function convertBackend(b: HTTPBackendRef, weight: number, st: RuleState): WeightedBackend {
  const dest = resolveBackend(b, st);
  let requestHeaders: HeaderMutation | undefined;
  let responseHeaders: HeaderMutation | undefined;
  for (const f of b.filters ?? []) {
    if (f.type === 'RequestHeaderModifier') requestHeaders = headerMutation(f.requestHeaderModifier);
    else if (f.type === 'ResponseHeaderModifier') responseHeaders = headerMutation(f.responseHeaderModifier);
    else throw unsupportedFilter(f.type ?? '');
  }
  if (dest.problem) {
    addSoft(st, dest.problem);
    return WeightedBackend.fromPartial({
      service: dest.key,
      port: dest.port,
      weight,
      requestHeaders,
      responseHeaders,
      errorStatus: INVALID_BACKEND_STATUS,
    });
  }
  st.backends.add(dest.key);
  return WeightedBackend.fromPartial({
    service: dest.key,
    port: dest.port,
    weight,
    requestHeaders,
    responseHeaders,
  });
}

interface ResolvedBackend {
  /** Service key (or the hostname it would have had, for an unresolved backend). */
  readonly key: string;
  readonly port: number;
  readonly problem: Problem | null;
}

/**
 * A backendRef → the service it names. Hard errors (a hostname as a Service name, a missing port, a namespace on a
 * Hostname ref) drop the route; invalid backends (not found, not permitted, unsupported kind) are soft.
 */
function resolveBackend(ref: BackendObjectReference, st: RuleState): ResolvedBackend {
  const { ctx } = st;
  const namespace = ref.namespace ?? st.namespace;
  const name = ref.name ?? '';
  const group = ref.group ?? '';
  const kind = ref.kind ?? 'Service';
  let key: string;
  let found: ServiceRef | undefined;
  if (kind === 'Service' && isCoreGroup(group)) {
    if (name.includes('.'))
      throw new HardError({
        reason: REASON.invalidDestination,
        message: 'service name invalid; the name of the Service must be used, not the hostname.',
      });
    const hostname = `${name}.${namespace}.svc.${ctx.domainSuffix}`;
    key = `${namespace}/${hostname}`;
    found = ctx.service(namespace, name);
    if (ref.port === undefined)
      throw new HardError({ reason: REASON.invalidDestination, message: 'port is required in backendRef' });
    if (namespace !== st.namespace) {
      const allowed = ctx.grantAllows(
        { group: GATEWAY_GROUP, kind: st.kind, namespace: st.namespace },
        { group: '', kind: 'Service', namespace, name },
      );
      if (!allowed) {
        return {
          key,
          port: ref.port,
          problem: {
            reason: REASON.refNotPermitted,
            message: `backendRef ${name}/${namespace} not accessible to a ${st.kind} in namespace "${st.namespace}" (missing a ReferenceGrant?)`,
          },
        };
      }
    }
    if (!found)
      return {
        key,
        port: ref.port,
        problem: { reason: REASON.backendNotFound, message: `backend(${hostname}) not found` },
      };
    return { key: found.key, port: ref.port, problem: null };
  }
  if (kind === 'Hostname' && group === NETWORKING_GROUP) {
    if (ref.namespace !== undefined)
      throw new HardError({
        reason: REASON.invalidDestination,
        message: 'namespace may not be set with Hostname type',
      });
    if (ref.port === undefined)
      throw new HardError({ reason: REASON.invalidDestination, message: 'port is required in backendRef' });
    found = ctx.hostname(name, st.namespace);
    if (!found)
      return {
        key: `${st.namespace}/${name}`,
        port: ref.port,
        problem: { reason: REASON.backendNotFound, message: `backend(${name}) not found` },
      };
    return { key: found.key, port: ref.port, problem: null };
  }
  return {
    key: `${namespace}/${name}`,
    port: ref.port ?? 0,
    problem: {
      reason: REASON.invalidKind,
      message: `referencing unsupported backendRef: group "${group}" kind "${kind}"`,
    },
  };
}

// ---- ordering ------------------------------------------------------------------------------------------------

function pathRank(m: RouteMatch | undefined): { rank: number; length: number } {
  const k = m?.path?.kind;
  switch (k?.$case) {
    case 'exact':
      return { rank: 3, length: k.value.length };
    case 'pathSeparatedPrefix':
    case 'prefix':
      return { rank: 2, length: k.value.length };
    case 'regex':
      return { rank: 1, length: k.value.length };
    default:
      return { rank: -1, length: 0 };
  }
}

/**
 * Gateway API precedence across every route of a service (HTTPRoute rules and GRPCRoute rules merged, as Istio
 * merges routes per host): exact path > longest prefix (> regex, Istio's choice) > method match > most header
 * matches > most query-param matches; ties go to the oldest route, then namespace/name, then rule order. Rules
 * without matches come last.
 */
export function compareRouteEntries(a: RouteEntry, b: RouteEntry): number {
  if (a.matchless !== b.matchless) return a.matchless ? 1 : -1;
  if (!a.matchless) {
    const ma = a.route.matches[0];
    const mb = b.route.matches[0];
    const ra = pathRank(ma);
    const rb = pathRank(mb);
    if (ra.rank !== rb.rank) return rb.rank - ra.rank;
    if (ra.length !== rb.length) return rb.length - ra.length;
    const methodA = ma?.method !== undefined;
    const methodB = mb?.method !== undefined;
    if (methodA !== methodB) return methodA ? -1 : 1;
    const ha = ma?.headers.length ?? 0;
    const hb = mb?.headers.length ?? 0;
    if (ha !== hb) return hb - ha;
    const qa = ma?.queryParams.length ?? 0;
    const qb = mb?.queryParams.length ?? 0;
    if (qa !== qb) return qb - qa;
  }
  if (a.created !== b.created) return a.created - b.created;
  if (a.namespace !== b.namespace) return a.namespace < b.namespace ? -1 : 1;
  if (a.name !== b.name) return a.name < b.name ? -1 : 1;
  return a.position - b.position;
}

/** The routes of a service in precedence order, restricted to a parentRef port when one was given. */
export function orderRoutes(entries: ReadonlyArray<{ entry: RouteEntry; port: number }>): Route[] {
  return [...entries]
    .sort((x, y) => compareRouteEntries(x.entry, y.entry))
    .map(({ entry, port }) => (port === 0 ? entry.route : { ...entry.route, ports: [port] }));
}
