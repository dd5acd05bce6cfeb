/**
 * route(): the per-request decision. Reads only compiled structures; allocates nothing for static routes
 * (no rewrite, no fault, mirrors at 100 %) beyond the query-less path slice when the path has a query.
 *
 * Matching (Envoy route semantics as Istio/Gateway API generate them): routes in order, first match wins; a
 * route applies only on its `ports`; a match ANDs its conditions, a route ORs its matches:
 * - path: on the path without query string (and fragment);
 * - headers: lowercase name; several values are joined with "," (Envoy's header matcher); absent header →
 *   no match, except `invert` (VirtualService withoutHeaders), where Istio sets treat_missing_header_as_empty
 *   so an absent header is matched as "" and then inverted; `present` checks presence only;
 * - query parameters: the first value, percent-decoded (Envoy parses and decodes the query);
 * - method, authority (tried as received, then without its port), port.
 * No route matches → 404 NR, Envoy's "route not found" (empty body); Istio answers the same.
 */
import type {
  BackendTarget,
  CompiledService,
  FaultDecision,
  ForwardDecision,
  HeaderOps,
  NoRouteDecision,
  RedirectDecision,
  RequestView,
  Rng,
  RouteDecision,
} from './index.ts';
import { headerValue, queryParam } from './lb.ts';
import { M_PATH_PREFIX, M_PRESENT, type StringMatcher } from './match.ts';
import {
  type CompiledBackend,
  type CompiledMatch,
  type CompiledRoute,
  type HeaderCondition,
  K_DIRECT,
  K_ERROR,
  K_REDIRECT,
  type ServiceImpl,
} from './table.ts';

const NO_ROUTE: NoRouteDecision = Object.freeze({ kind: 'noRoute', status: 404, responseFlag: 'NR' });
const NO_MIRRORS: readonly BackendTarget[] = Object.freeze([]);

class Forward implements ForwardDecision {
  readonly kind = 'forward' as const;
  readonly route: CompiledRoute;
  readonly backend: BackendTarget;
  readonly rewritePath: string | null;
  readonly rewriteAuthority: string | null;
  readonly requestHeaders: HeaderOps;
  readonly responseHeaders: HeaderOps;
  readonly mirrors: readonly BackendTarget[];
  readonly fault: FaultDecision | null;
  readonly timeoutMs: number;
  readonly retries: ForwardDecision['retries'];
  constructor(
    route: CompiledRoute,
    b: CompiledBackend,
    target: BackendTarget,
    rewritePath: string | null,
    mirrors: readonly BackendTarget[],
    fault: FaultDecision | null,
  ) {
    this.route = route;
    this.backend = target;
    this.rewritePath = rewritePath;
    this.rewriteAuthority = route.rewriteHost;
    this.requestHeaders = b.requestHeaders;
    this.responseHeaders = b.responseHeaders;
    this.mirrors = mirrors;
    this.fault = fault;
    this.timeoutMs = route.timeoutMs;
    this.retries = route.retries;
  }
}

/** The decision for `req` to `svc`. `rng` rolls weights, mirrors and faults (inject a seeded one in tests). */
export function route(svc: CompiledService, req: RequestView, rng: Rng = Math.random): RouteDecision {
  const s = svc as ServiceImpl;
  const routes = s.routes;
  if (routes === null || !s.served) return forward(s.defaultRoute as CompiledRoute, -1, req, '', rng);
  const raw = req.path;
  let end = raw.indexOf('?');
  if (end === -1) end = raw.indexOf('#');
  const path = end === -1 ? raw : raw.slice(0, end);
  for (let i = 0; i < routes.length; i++) {
    const r = routes[i] as CompiledRoute;
    const ports = r.ports;
    if (ports.length > 0 && !ports.includes(req.port)) continue;
    const ms = r.matches;
    if (ms.length === 0) return decide(r, -1, req, path, rng);
    for (let j = 0; j < ms.length; j++) {
      if (matches(ms[j] as CompiledMatch, req, path)) return decide(r, j, req, path, rng);
    }
  }
  return NO_ROUTE;
}

function matches(m: CompiledMatch, req: RequestView, path: string): boolean {
  if (m.port !== 0 && m.port !== req.port) return false;
  if (m.method !== null && !m.method.test(req.method)) return false;
  if (m.path !== null && !m.path.test(path)) return false;
  if (m.authority !== null && !matchAuthority(m.authority, req.authority)) return false;
  const hs = m.headers;
  for (let i = 0; i < hs.length; i++) {
    const h = hs[i] as HeaderCondition;
    if (!matchValue(h, headerValue(req.headers, h.name))) return false;
  }
  const qs = m.query;
  for (let i = 0; i < qs.length; i++) {
    const q = qs[i] as HeaderCondition;
    if (!matchValue(q, queryParam(req.path, q.name))) return false;
  }
  return true;
}

function matchValue(c: HeaderCondition, value: string | undefined): boolean {
  const m = c.matcher;
  if (m.kind === M_PRESENT) return ((value !== undefined) === m.present) !== c.invert;
  if (value === undefined) return c.invert; // treat_missing_header_as_empty + invert (see header comment)
  return m.test(value) !== c.invert;
}

function matchAuthority(m: StringMatcher, authority: string): boolean {
  if (m.test(authority)) return true;
  const host = hostOf(authority);
  return host.length !== authority.length && m.test(host);
}

/** `host:port` → `host`; `[v6]:port` → `[v6]`; unchanged without a port. */
export function hostOf(authority: string): string {
  const colon = authority.lastIndexOf(':');
  if (colon === -1) return authority;
  if (authority.charCodeAt(0) === 0x5b /* [ */) {
    const close = authority.indexOf(']');
    return close !== -1 && close < colon ? authority.slice(0, close + 1) : authority;
  }
  if (authority.indexOf(':') !== colon) return authority; // bare IPv6, no port
  for (let i = colon + 1; i < authority.length; i++) {
    const c = authority.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return authority;
  }
  return authority.slice(0, colon);
}

function portOf(authority: string): string {
  const host = hostOf(authority);
  return host.length === authority.length ? '' : authority.slice(host.length + 1);
}

function pickBackend(r: CompiledRoute, rng: Rng): CompiledBackend {
  const bs = r.backends;
  if (bs.length === 1) return bs[0] as CompiledBackend;
  const x = rng() * r.totalWeight;
  const cum = r.cumulative;
  for (let i = 0; i < bs.length; i++) if (x < (cum[i] as number)) return bs[i] as CompiledBackend;
  // x === total (rng returned 1 by mistake): the last backend with weight.
  for (let i = bs.length - 1; i >= 0; i--)
    if ((bs[i] as CompiledBackend).weight > 0) return bs[i] as CompiledBackend;
  return bs[0] as CompiledBackend;
}

function roll(percent: number, rng: Rng): boolean {
  if (percent >= 100) return true;
  if (percent <= 0) return false;
  return rng() * 100 < percent;
}

function decide(
  r: CompiledRoute,
  matchIndex: number,
  req: RequestView,
  path: string,
  rng: Rng,
): RouteDecision {
  switch (r.kind) {
    case K_DIRECT:
    case K_ERROR:
      return r.fixedDecision as RouteDecision;
    case K_REDIRECT:
      return redirect(r, matchIndex, req, path);
    default:
      return forward(r, matchIndex, req, path, rng);
  }
}

function forward(
  r: CompiledRoute,
  matchIndex: number,
  req: RequestView,
  path: string,
  rng: Rng,
): RouteDecision {
  const b = pickBackend(r, rng);
  if (b.errorDecision !== null) return b.errorDecision;
  const port = req.port;
  if (r.isStatic) {
    let d = b.decisions.get(port);
    if (d === undefined) {
      d = Object.freeze(new Forward(r, b, b.target(port), null, r.fixedMirrors(port), null));
      b.decisions.set(port, d);
    }
    return d;
  }
  let rewritePath: string | null = null;
  if (r.rewriteFullPath !== null || r.rewritePrefix !== null) {
    const newPath =
      r.rewriteFullPath !== null
        ? r.rewriteFullPath
        : replacePrefix(r, matchIndex, path, r.rewritePrefix as string);
    rewritePath = newPath + req.path.slice(path.length);
  }
  let mirrors: readonly BackendTarget[];
  if (r.allMirrorsAlways) mirrors = r.fixedMirrors(port);
  else {
    mirrors = NO_MIRRORS;
    for (let i = 0; i < r.mirrors.length; i++) {
      const m = r.mirrors[i] as (typeof r.mirrors)[number];
      if (roll(m.percent, rng)) {
        if (mirrors === NO_MIRRORS) mirrors = [];
        (mirrors as BackendTarget[]).push(m.backend.target(port));
      }
    }
  }
  // Envoy's fault filter: delay and abort are rolled independently.
  let fault: FaultDecision | null = null;
  const delay = r.delayMs > 0 && roll(r.delayPercent, rng) ? r.delayMs : 0;
  const abort = (r.abortStatus !== 0 || r.abortGrpcStatus !== 0) && roll(r.abortPercent, rng);
  if (delay > 0 || abort) {
    fault = {
      delayMs: delay,
      abortStatus: abort ? r.abortStatus : 0,
      grpcStatus: abort ? r.abortGrpcStatus : 0,
    };
  }
  return new Forward(r, b, b.target(port), rewritePath, mirrors, fault);
}

/**
 * Prefix rewrite. VirtualService (plain prefix match): Envoy's prefix_rewrite concatenates (so prefix "/foo"
 * + rewrite "/" turns "/foo/bar" into "//bar", as in Istio). Gateway API (path-separated prefix): the
 * ReplacePrefixMatch rules, no doubled slash and never an empty path.
 */
function replacePrefix(r: CompiledRoute, matchIndex: number, path: string, replacement: string): string {
  const m = matchIndex >= 0 ? ((r.matches[matchIndex] as CompiledMatch).path ?? null) : null;
  const len = m === null ? (path.charCodeAt(0) === 0x2f ? 1 : 0) : m.matchedPrefixLength(path);
  let rest = path.slice(len);
  if (m !== null && m.kind === M_PATH_PREFIX) {
    if (replacement.endsWith('/') && rest.charCodeAt(0) === 0x2f) rest = rest.slice(1);
    else if (replacement === '' && rest === '') return '/';
  }
  const out = replacement + rest;
  return out === '' ? '/' : out;
}

const DEFAULT_PORT: Readonly<Record<string, string>> = { http: '80', https: '443' };

function redirect(r: CompiledRoute, matchIndex: number, req: RequestView, path: string): RedirectDecision {
  const reqScheme = req.scheme ?? 'http';
  const scheme = r.redirectScheme !== '' ? r.redirectScheme : reqScheme;
  const host = r.redirectHost !== '' ? r.redirectHost : hostOf(req.authority);
  let port: string;
  if (r.redirectPort !== 0) port = String(r.redirectPort);
  else if (r.redirectHost !== '') port = '';
  // Scheme changed without a port: the new scheme's well-known port (Gateway API; Envoy strips it too).
  else if (r.redirectScheme !== '' && r.redirectScheme !== reqScheme) port = '';
  else port = portOf(req.authority);
  if (port === DEFAULT_PORT[scheme]) port = '';
  let newPath: string;
  if (r.redirectFullPath !== null) newPath = r.redirectFullPath;
  else if (r.redirectPrefix !== null) newPath = replacePrefix(r, matchIndex, path, r.redirectPrefix);
  else newPath = path;
  const query = req.path.slice(path.length);
  const location = `${scheme}://${host}${port === '' ? '' : `:${port}`}${newPath}${query}`;
  return {
    kind: 'redirect',
    route: r,
    status: r.redirectStatus,
    location,
    responseHeaders: r.responseHeaders,
  };
}
