/**
 * VirtualService `http` routes → waypoint routes (upstream listener_waypoint.go waypointInboundRoute and
 * route.go, for a VirtualService bound to a service a waypoint serves):
 *
 * - Rules are kept in order; each keeps its matches (ORed); evaluation stops after a rule that matches
 *   everything (no match, or a match with no condition).
 * - Hosts in destinations are resolved like Istio: a short name is `<name>.<vs namespace>.svc.<domain>`; we also
 *   accept `<name>.<namespace>` (Kubernetes DNS). An unknown host or subset answers 503 (Envoy's cluster-not-found
 *   code), like a sidecar would.
 * - Destination port: the one given, else the service's only port, else the port the request arrived on.
 * - Weights: 0 drops a destination unless it is the only one; several destinations without weights share evenly.
 * - No `retries` → Istio's default retry policy; `attempts: 0` disables retries; codes in `retryOn` become
 *   retriable status codes (and add `retriable-status-codes`).
 * - Pieces the waypoint cannot honour are skipped and reported (never crash): matches on `sourceLabels`,
 *   `sourceNamespace` or `gateways`, `delegate`, `corsPolicy`, bad regexes, conflicting StringMatch kinds.
 */
import type {
  Fault,
  HeaderMatch,
  HeaderMutation,
  Mirror,
  RetryPolicy,
  Route,
  RouteAction,
  RouteMatch,
  WeightedBackend,
} from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import { defaultRetryPolicy, GRPC_STATUS_CODES, UNKNOWN_DESTINATION_STATUS } from './defaults.ts';
import type { ServiceRef, TranslateContext } from './index.ts';
import type {
  Destination,
  HeaderOperations,
  HTTPMatchRequest,
  IstioStringMatch,
  Percent,
  VirtualService,
  VirtualServiceHTTPRoute,
} from './types.ts';
import { hostMatches, istioStringMatch, parseDurationMs, regexProblem } from './util.ts';

export interface ConvertedVirtualService {
  readonly routes: readonly Route[];
  /** Service keys routed or mirrored to. */
  readonly backends: ReadonlySet<string>;
  /** What was skipped and why (WaypointAccepted status, log). */
  readonly problems: readonly string[];
}

/** Whether a VirtualService applies to sidecars/waypoints (the `mesh` gateway): no gateways, or `mesh` listed. */
export function appliesToMesh(vs: VirtualService): boolean {
  const gws = vs.spec?.gateways ?? [];
  return gws.length === 0 || gws.includes('mesh');
}

/**
 * A VirtualService/DestinationRule host → the FQDN patterns it may mean: a short name is
 * `<name>.<object namespace>.svc.<domain>`; `<name>.<namespace>` may be a Kubernetes Service (DNS search) or a
 * ServiceEntry host with one dot (`httpbin.org`), so both are tried, the host as written first.
 */
export function hostCandidates(host: string, namespace: string, domainSuffix: string): string[] {
  if (host.startsWith('*')) return [host];
  const dots = host.split('.').length - 1;
  if (dots === 0) return [`${host}.${namespace}.svc.${domainSuffix}`];
  if (dots === 1) return [host, `${host}.svc.${domainSuffix}`];
  return [host];
}

/** Whether any of a VirtualService's hosts names this service. */
export function virtualServiceMatches(vs: VirtualService, svc: ServiceRef, domainSuffix: string): boolean {
  const ns = vs.metadata?.namespace ?? '';
  return (vs.spec?.hosts ?? []).some((h) =>
    hostCandidates(h, ns, domainSuffix).some((c) => hostMatches(c, svc.hostname)),
  );
}

interface VsState {
  readonly ctx: TranslateContext;
  readonly namespace: string;
  readonly backends: Set<string>;
  readonly problems: string[];
}

export function convertVirtualService(vs: VirtualService, ctx: TranslateContext): ConvertedVirtualService {
  const namespace = vs.metadata?.namespace ?? '';
  const name = vs.metadata?.name ?? '';
  const st: VsState = { ctx, namespace, backends: new Set(), problems: [] };
  const routes: Route[] = [];
  const http = vs.spec?.http ?? [];
  for (let i = 0; i < http.length; i++) {
    const h = http[i]!;
    const label = h.name ? `http[${i}] "${h.name}"` : `http[${i}]`;
    if (h.delegate) {
      st.problems.push(`${label}: delegate is not supported by waypoints; rule skipped`);
      continue;
    }
    const matches: RouteMatch[] = [];
    let catchAll = (h.match ?? []).length === 0;
    for (let j = 0; j < (h.match ?? []).length; j++) {
      const m = h.match![j]!;
      const converted = convertMatch(m);
      if (typeof converted === 'string') {
        st.problems.push(`${label} match[${j}]: ${converted}; match skipped`);
        continue;
      }
      matches.push(converted);
      if (isCatchAll(converted)) catchAll = true;
    }
    if ((h.match ?? []).length > 0 && matches.length === 0) {
      st.problems.push(`${label}: no usable match; rule skipped`);
      continue;
    }
    const action = convertAction(h, st, label);
    if (!action) continue;
    routes.push({
      name: h.name ?? '',
      source: { kind: 'VirtualService', namespace, name },
      ports: [],
      matches: catchAll ? [] : matches,
      action,
    });
    // Rules are matched in order: nothing after a catch-all rule can match.
    if (catchAll) break;
  }
  return { routes, backends: st.backends, problems: st.problems };
}

function isCatchAll(m: RouteMatch): boolean {
  return (
    m.port === 0 &&
    m.headers.length === 0 &&
    m.queryParams.length === 0 &&
    m.method === undefined &&
    m.authority === undefined &&
    (m.path === undefined ||
      (m.path.kind?.$case === 'prefix' && m.path.kind.value === '/') ||
      m.path.kind?.$case === 'present')
  );
}

/** A match, or why it cannot be used. */
function convertMatch(m: HTTPMatchRequest): RouteMatch | string {
  if (m.sourceLabels && Object.keys(m.sourceLabels).length > 0)
    return 'sourceLabels cannot be evaluated by a waypoint';
  if (m.sourceNamespace) return 'sourceNamespace cannot be evaluated by a waypoint';
  if (m.gateways && m.gateways.length > 0 && !m.gateways.includes('mesh'))
    return 'match is for other gateways than mesh';
  const out: RouteMatch = {
    path: undefined,
    headers: [],
    queryParams: [],
    method: undefined,
    authority: undefined,
    port: m.port ?? 0,
  };
  if (m.uri) {
    const r = istioStringMatch(m.uri, m.ignoreUriCase === true);
    if (!r.ok) return `uri: ${r.error}`;
    out.path = r.value;
  }
  if (m.method) {
    const r = istioStringMatch(m.method);
    if (!r.ok) return `method: ${r.error}`;
    out.method = r.value;
  }
  if (m.authority) {
    const r = istioStringMatch(m.authority);
    if (!r.ok) return `authority: ${r.error}`;
    out.authority = r.value;
  }
  if (m.scheme) return 'scheme matches are not supported by waypoints';
  const headers = headerMatches(m.headers, false, true);
  if (typeof headers === 'string') return headers;
  const without = headerMatches(m.withoutHeaders, true, true);
  if (typeof without === 'string') return without;
  out.headers = [...headers, ...without];
  const qp = headerMatches(m.queryParams, false, false);
  if (typeof qp === 'string') return qp;
  out.queryParams = qp;
  return out;
}

function headerMatches(
  map: Readonly<Record<string, IstioStringMatch>> | undefined,
  invert: boolean,
  lowercase: boolean,
): HeaderMatch[] | string {
  const out: HeaderMatch[] = [];
  for (const [name, sm] of Object.entries(map ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const r = istioStringMatch(sm);
    if (!r.ok) return `header/query "${name}": ${r.error}`;
    out.push({ name: lowercase ? name.toLowerCase() : name, value: r.value, invert });
  }
  return out;
}

function mutation(ops: HeaderOperations | undefined): HeaderMutation | undefined {
  if (!ops) return undefined;
  const list = (m: Readonly<Record<string, string>> | undefined) =>
    Object.entries(m ?? {}).map(([name, value]) => ({ name: name.toLowerCase(), value }));
  return { set: list(ops.set), add: list(ops.add), remove: (ops.remove ?? []).map((n) => n.toLowerCase()) };
}

function percentOf(p: Percent | undefined, legacy?: number): number {
  if (p?.value !== undefined) return p.value;
  if (legacy !== undefined) return legacy;
  return 100;
}

function durationField(st: VsState, label: string, field: string, text: string | undefined): number {
  if (text === undefined) return 0;
  const ms = parseDurationMs(text);
  if (ms === null) {
    st.problems.push(`${label}: ${field} "${text}" is not a duration; ignored`);
    return 0;
  }
  return ms;
}

function convertAction(h: VirtualServiceHTTPRoute, st: VsState, label: string): RouteAction | null {
  const action: RouteAction = {
    backends: [],
    redirect: undefined,
    directResponse: undefined,
    rewrite: undefined,
    requestHeaders: mutation(h.headers?.request),
    responseHeaders: mutation(h.headers?.response),
    mirrors: [],
    fault: undefined,
    timeoutMs: durationField(st, label, 'timeout', h.timeout),
    retries: convertRetries(h, st, label),
  };
  const kinds = [h.redirect && 'redirect', h.directResponse && 'directResponse', h.route && 'route'].filter(
    Boolean,
  );
  if (kinds.length > 1) {
    st.problems.push(`${label}: ${kinds.join(' and ')} are mutually exclusive; rule skipped`);
    return null;
  }
  if (h.corsPolicy) st.problems.push(`${label}: corsPolicy is not supported by waypoints; ignored`);
  if (h.redirect) {
    const r = h.redirect;
    action.redirect = {
      scheme: r.scheme ?? '',
      host: r.authority ?? '',
      port: r.port ?? 0,
      fullPath: r.uri ?? '',
      prefixReplace: '',
      statusCode: r.redirectCode ?? 301,
    };
  } else if (h.directResponse) {
    const body = h.directResponse.body;
    action.directResponse = {
      status: h.directResponse.status ?? 200,
      body: body?.string ?? (body?.bytes ? Buffer.from(body.bytes, 'base64').toString('utf8') : ''),
    };
  } else {
    const dests = h.route ?? [];
    if (dests.length === 0) {
      st.problems.push(`${label}: no route, redirect or directResponse; rule skipped`);
      return null;
    }
    const allUnweighted = dests.every((d) => (d.weight ?? 0) === 0);
    for (const d of dests) {
      let weight = d.weight ?? 0;
      if (weight === 0) {
        // Istio: a lone destination gets everything; otherwise weight 0 is dropped. Several destinations with no
        // weights at all (rejected by Istio's webhook) share evenly.
        if (dests.length === 1 || allUnweighted) weight = dests.length === 1 ? 100 : 1;
        else continue;
      }
      const b = destination(d.destination, st, label);
      const req = mutation(d.headers?.request);
      const resp = mutation(d.headers?.response);
      action.backends.push({ ...b, weight, requestHeaders: req, responseHeaders: resp });
    }
    if (h.rewrite) {
      const rw = h.rewrite;
      let regexMatch = '';
      let regexSubstitution = '';
      if (rw.uriRegexRewrite) {
        const problem = regexProblem(rw.uriRegexRewrite.match ?? '');
        if (problem) st.problems.push(`${label}: rewrite.uriRegexRewrite: ${problem}; ignored`);
        else {
          regexMatch = rw.uriRegexRewrite.match ?? '';
          regexSubstitution = rw.uriRegexRewrite.rewrite ?? '';
        }
      }
      if (rw.uri && regexMatch) {
        st.problems.push(
          `${label}: rewrite.uri and rewrite.uriRegexRewrite conflict; uriRegexRewrite ignored`,
        );
        regexMatch = '';
        regexSubstitution = '';
      }
      action.rewrite = {
        fullPath: '',
        prefixReplace: rw.uri ?? '',
        host: rw.authority ?? '',
        regexMatch,
        regexSubstitution,
      };
    }
    const mirrors: Mirror[] = [];
    if (h.mirror) mirrors.push(mirrorOf(h.mirror, percentOf(h.mirrorPercentage, h.mirrorPercent), st, label));
    for (const m of h.mirrors ?? []) {
      if (!m.destination) continue;
      mirrors.push(mirrorOf(m.destination, percentOf(m.percentage), st, label));
    }
    action.mirrors = mirrors.filter((m) => m.service !== '');
  }
  if (h.fault) action.fault = convertFault(h.fault, st, label);
  return action;
}

function convertRetries(h: VirtualServiceHTTPRoute, st: VsState, label: string): RetryPolicy {
  const r = h.retries;
  if (!r) return defaultRetryPolicy();
  const attempts = r.attempts ?? 0;
  if (attempts <= 0) {
    return { attempts: 0, perTryTimeoutMs: 0, retryOn: [], retriableStatusCodes: [], backoffBaseMs: 0 };
  }
  const out = defaultRetryPolicy();
  out.attempts = attempts;
  if (r.retryOn) {
    const on: string[] = [];
    const codes: number[] = [];
    for (const part of r.retryOn.split(',')) {
      const p = part.trim();
      if (p === '') continue;
      if (/^\d{3}$/.test(p)) codes.push(Number(p));
      else on.push(p);
    }
    if (codes.length > 0 && !on.includes('retriable-status-codes')) on.push('retriable-status-codes');
    out.retryOn = on;
    out.retriableStatusCodes = codes;
  }
  out.perTryTimeoutMs = durationField(st, label, 'retries.perTryTimeout', r.perTryTimeout);
  out.backoffBaseMs = durationField(st, label, 'retries.backoff', r.backoff);
  return out;
}

function convertFault(f: NonNullable<VirtualServiceHTTPRoute['fault']>, st: VsState, label: string): Fault {
  const out: Fault = { abort: undefined, delay: undefined };
  if (f.delay) {
    if (f.delay.exponentialDelay) st.problems.push(`${label}: fault.delay.exponentialDelay is not supported`);
    out.delay = {
      fixedDelayMs: durationField(st, label, 'fault.delay.fixedDelay', f.delay.fixedDelay),
      percent: percentOf(f.delay.percentage, f.delay.percent),
    };
  }
  if (f.abort) {
    let grpcStatus = 0;
    if (f.abort.grpcStatus !== undefined) {
      const code = GRPC_STATUS_CODES[f.abort.grpcStatus.toUpperCase()];
      if (code === undefined)
        st.problems.push(`${label}: fault.abort.grpcStatus "${f.abort.grpcStatus}" unknown`);
      else grpcStatus = code;
    }
    if (f.abort.http2Error) st.problems.push(`${label}: fault.abort.http2Error is not supported`);
    out.abort = {
      httpStatus: f.abort.httpStatus ?? 0,
      grpcStatus,
      percent: percentOf(f.abort.percentage),
    };
  }
  return out;
}

/** The service a VirtualService destination names, or an error backend. */
function destination(
  d: Destination | undefined,
  st: VsState,
  label: string,
): Omit<WeightedBackend, 'weight' | 'requestHeaders' | 'responseHeaders'> {
  const host = d?.host ?? '';
  const candidates = hostCandidates(host, st.namespace, st.ctx.domainSuffix);
  let svc: ServiceRef | undefined;
  for (const c of host ? candidates : []) {
    svc = st.ctx.hostname(c, st.namespace);
    if (svc) break;
  }
  const fqdn = candidates[candidates.length - 1] ?? host;
  const subset = d?.subset ?? '';
  if (!svc) {
    st.problems.push(
      `${label}: destination host "${host}" not found; requests to it get ${UNKNOWN_DESTINATION_STATUS}`,
    );
    return {
      service: `${st.namespace}/${fqdn}`,
      port: d?.port?.number ?? 0,
      subset,
      errorStatus: UNKNOWN_DESTINATION_STATUS,
    };
  }
  const port = d?.port?.number ?? (svc.ports.length === 1 ? svc.ports[0]!.port : 0);
  if (subset !== '' && !st.ctx.subsets(svc.key)?.has(subset)) {
    st.problems.push(
      `${label}: subset "${subset}" of "${svc.hostname}" is not defined by a DestinationRule; requests to it get ${UNKNOWN_DESTINATION_STATUS}`,
    );
    st.backends.add(svc.key);
    return { service: svc.key, port, subset, errorStatus: UNKNOWN_DESTINATION_STATUS };
  }
  st.backends.add(svc.key);
  return { service: svc.key, port, subset, errorStatus: 0 };
}

function mirrorOf(d: Destination, percent: number, st: VsState, label: string): Mirror {
  const b = destination(d, st, `${label} mirror`);
  if (b.errorStatus !== 0) return { service: '', port: 0, subset: '', percent: 0 };
  return { service: b.service, port: b.port, subset: b.subset, percent };
}
