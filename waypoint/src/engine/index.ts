/**
 * The waypoint's L7 decision engine: pure (no sockets, no timers), built once per xDS push, cheap per request.
 *
 * Front door and shared types. Everything the I/O side needs is exported from here; the API only grows
 * (additive changes), it never changes shape.
 *
 * ## Build (per xDS push)
 *   const { table, errors } = ServiceTable.build(configs, { self: 'default/waypoint', logger, previous });
 *   - compiles every ServiceConfig once: string matchers, bounded regexes (regex.ts: RE2 syntax, linear
 *     time, no backtracking), weighted backends resolved to CompiledService + ClusterState, merged header
 *     mutations, retry policies;
 *   - never throws for bad config: a route with an unusable part (bad/unsupported regex) is dropped and
 *     reported in `errors` (code MESH_ERR_WAYPOINT_CONFIG); the rest of the table works;
 *   - `previous`: the table being replaced. ClusterState objects (LB cursor, in-flight counts, outlier
 *     ejections, circuit-breaker counters) are reused for (service, subset) pairs that still exist, so a push
 *     never resets load balancing or forgets an ejection, and requests in flight on the old table release
 *     into the same counters.
 *
 * ## Lookup (per HBONE CONNECT)
 *   table.lookup(ip, port)  VIP:port → service (undefined when the port is not a service port);
 *                           pod IP:port → pseudo-service for that workload (kind 'workload', any port, no
 *                           routes, forwards to exactly that pod; authz/JWT/served from `owner`, the service
 *                           the pod belongs to, served ones first);
 *   table.byName('<ns>/<hostname>'), table.served(svc) (= svc.served: `self` ∈ config.waypoints),
 *   table.cluster(svc, subset) / table.cluster(backendTarget).
 *
 * ## Route (per request)
 *   route(svc, req, rng?) → RouteDecision:
 *   - 'forward'  backend {name, service, port, subset, cluster}, rewritePath (query kept) / rewriteAuthority,
 *                requestHeaders / responseHeaders (HeaderOps, apply with applyHeaderOps), mirrors (rolled),
 *                fault {delayMs, abortStatus, grpcStatus} (rolled; null = none), timeoutMs (0 = none),
 *                retries (CompiledRetryPolicy | null);
 *   - 'redirect' status (301 default), absolute location, responseHeaders;
 *   - 'direct'   status, body, responseHeaders;
 *   - 'error'    status + responseFlag: invalid backend → its error_status (Gateway API 500); no backends → 500;
 *                unknown backend service / undefined subset → 503 'NC' (Envoy "cluster not found");
 *   - 'noRoute'  404 'NR', empty body (Envoy/Istio "route not found").
 *   Unserved service and workload pseudo-service: forward to itself on the request port, Istio's default
 *   retry policy, nothing else. Served service without routes: the same default route.
 *   Decisions are frozen and may be shared between requests: never mutate them.
 *
 * ## Upstream (per try) — the I/O side's loop
 *   const c = decision.backend.cluster!                   // ClusterState, stable per (service, subset)
 *   if (!c.limiter.tryStartRequest()) → 503 'UO'           // http2MaxRequests (HTTP/1.1 too)
 *   const picker = c.picker(decision.backend.port);
 *   const ep = picker.pick(req, triedAddresses, now)       // undefined → 503 'UH' (no healthy upstream)
 *   dial ep.address : picker.targetPort(ep) (HBONE when ep.hbone); before opening a connection
 *     c.limiter.tryOpenConnection() (false → wait: c.limiter.tryEnqueuePending(), false → 503 'UO');
 *     c.limiter.maxRequestsPerConnection (0 = unlimited, 1 = no keep-alive)
 *   picker.onRequestStart(ep) … picker.onRequestEnd(ep); c.limiter.endRequest()
 *   c.outlier.report(ep, status | 'connect-failure' | 'reset' | 'timeout', now)
 *   retry when shouldRetry(decision.retries, outcome, tryNumber) && c.limiter.tryStartRetry()
 *     (… c.limiter.endRetry()), after backoffMs(decision.retries, retryNumber, rng), avoiding tried hosts
 *     when retries.avoidPreviousHosts; the whole loop bounded by decision.timeoutMs, each try by
 *     retries.perTryTimeoutMs.
 *
 * Numbers: durations in milliseconds, `now` from an injectable clock (ms; default performance.now), randomness
 * from an injectable `Rng` returning [0, 1) (default Math.random).
 */
import type { Logger } from 'pino';
import type {
  AuthzPolicy,
  Endpoint,
  JwtRule,
  ServiceConfig,
  ServicePort,
} from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import type { ConnectionPoolLimiter } from './circuit.ts';
import type { EndpointPicker } from './lb.ts';
import type { OutlierDetector } from './outlier.ts';

export type {
  Endpoint,
  ServiceConfig,
  ServicePort,
} from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';

/** Uniform random number in [0, 1). `Math.random` in production, seeded in tests. */
export type Rng = () => number;

/** Monotonic milliseconds. `performance.now` or `Date.now` in production, a counter in tests. */
export type Clock = () => number;

/** A header by lowercase name; several values are joined with ',' (Envoy's header-matcher rule). */
export type HeaderLookup = (name: string) => string | readonly string[] | undefined;

/** Node's `IncomingMessage.headers` / HTTP/2 headers object: lowercase keys. */
export type HeaderRecord = Readonly<Record<string, string | readonly string[] | undefined>>;

/** What the engine reads from a request. The I/O side builds one per request (or reuses one). */
export interface RequestView {
  /** `GET`, `POST`, … as received. */
  readonly method: string;
  /** The raw request target: path plus query (`/a/b?x=1`), not decoded. */
  readonly path: string;
  /** `:authority` / `Host` as received (with or without port). */
  readonly authority: string;
  /** The destination service port (the CONNECT authority's port). */
  readonly port: number;
  readonly headers: HeaderLookup | HeaderRecord;
  /** The downstream peer address (for consistent hashing on source IP). */
  readonly sourceIp: string;
  /** `http` (default) or `https`: the scheme a redirect keeps when it does not set one. */
  readonly scheme?: string;
}

/** One header change list, applied in the order remove → set → add (Envoy's HeaderParser order). */
export interface HeaderOps {
  /** Lowercase names to delete. */
  readonly remove: readonly string[];
  /** Replace (or create) the header: [lowercase name, value]. */
  readonly set: readonly (readonly [string, string])[];
  /** Append a value (keeps existing ones): [lowercase name, value]. */
  readonly add: readonly (readonly [string, string])[];
}

/** A destination: service + port + subset. `service` null = the named service is unknown to this table. */
export interface BackendTarget {
  /** `<ns>/<hostname>` as configured. */
  readonly name: string;
  readonly service: CompiledService | null;
  /** Service port (never 0 in a decision: 0 in config is replaced by the request port). */
  readonly port: number;
  /** DestinationRule subset name, '' = whole service. */
  readonly subset: string;
  /** Upstream state (LB, circuit breaker, outlier); null when the service or subset is unknown. */
  readonly cluster: ClusterState | null;
}

/** Retry policy, compiled. `attempts` = retries after the first try. */
export interface CompiledRetryPolicy {
  readonly attempts: number;
  /** 0 = none (the route timeout covers all tries). */
  readonly perTryTimeoutMs: number;
  /** Bit set of RETRY_ON_* (retry.ts). */
  readonly retryOn: number;
  readonly retriableStatusCodes: ReadonlySet<number>;
  /** Envoy base interval (25 ms when unset); max = 10 × base. */
  readonly baseMs: number;
  readonly maxMs: number;
  /** Envoy previous_hosts predicate (Istio enables it): retries prefer another endpoint. */
  readonly avoidPreviousHosts: boolean;
  /** Envoy host_selection_retry_max_attempts (Istio: 5). */
  readonly hostSelectionRetryMaxAttempts: number;
}

/** The fault to inject for this request (percentages already rolled). Null in a decision = none. */
export interface FaultDecision {
  /** 0 = no delay. */
  readonly delayMs: number;
  /** 0 = no abort. */
  readonly abortStatus: number;
  /** 0 = no gRPC abort (gRPC status OK is never an abort). */
  readonly grpcStatus: number;
}

/** A compiled route (opaque for the I/O side except for naming it in logs and metrics). */
export interface CompiledRouteInfo {
  readonly name: string;
  /** `HTTPRoute` | `GRPCRoute` | `VirtualService` | '' (default route). */
  readonly sourceKind: string;
  readonly sourceNamespace: string;
  readonly sourceName: string;
}

export interface ForwardDecision {
  readonly kind: 'forward';
  readonly route: CompiledRouteInfo;
  readonly backend: BackendTarget;
  /** Null = unchanged. `path` keeps the original query string. */
  readonly rewritePath: string | null;
  readonly rewriteAuthority: string | null;
  /** Backend level then route level (Envoy order: the route level wins a conflict), merged at build time. */
  readonly requestHeaders: HeaderOps;
  readonly responseHeaders: HeaderOps;
  /** Shadow copies to send (percent already rolled); fire-and-forget, responses ignored. */
  readonly mirrors: readonly BackendTarget[];
  readonly fault: FaultDecision | null;
  /** Whole request including retries; 0 = none (Istio disables Envoy's 15 s default). */
  readonly timeoutMs: number;
  /** Null = no retries. */
  readonly retries: CompiledRetryPolicy | null;
}

export interface RedirectDecision {
  readonly kind: 'redirect';
  readonly route: CompiledRouteInfo;
  /** 301 unless configured. */
  readonly status: number;
  /** Absolute URL. */
  readonly location: string;
  readonly responseHeaders: HeaderOps;
}

export interface DirectDecision {
  readonly kind: 'direct';
  readonly route: CompiledRouteInfo;
  readonly status: number;
  readonly body: string;
  readonly responseHeaders: HeaderOps;
}

/**
 * The picked backend is invalid (Gateway API unresolved backendRef → its `error_status`, usually 500) or
 * names a service this table does not know (503, Envoy "cluster not found", response flag NC).
 */
export interface ErrorDecision {
  readonly kind: 'error';
  readonly route: CompiledRouteInfo;
  readonly status: number;
  /** Envoy response flag for the access log / metrics: 'NC' (no cluster) or '' . */
  readonly responseFlag: string;
}

/** No route matched: Envoy answers 404 with an empty body, response flag NR. */
export interface NoRouteDecision {
  readonly kind: 'noRoute';
  readonly status: 404;
  readonly responseFlag: 'NR';
}

export type RouteDecision =
  | ForwardDecision
  | RedirectDecision
  | DirectDecision
  | ErrorDecision
  | NoRouteDecision;

/** A service as the engine uses it. Built by ServiceTable; do not construct. */
export interface CompiledService {
  /** `service`: addressed by VIP or name; `workload`: pseudo-service for one pod addressed by its IP. */
  readonly kind: 'service' | 'workload';
  /** `<ns>/<hostname>` (workload pseudo-service: `<ns>/<podIP>`). */
  readonly name: string;
  readonly namespace: string;
  readonly hostname: string;
  /** The config as received (workload pseudo-service: a synthetic one). */
  readonly config: ServiceConfig;
  /** Whether this waypoint (`self`) is listed in `config.waypoints` (for a workload: its owner service is). */
  readonly served: boolean;
  /** For a workload pseudo-service, the service whose endpoint it is (authz and JWT come from it), else null. */
  readonly owner: CompiledService | null;
  /** Ports by service port number. */
  readonly ports: ReadonlyMap<number, ServicePort>;
  /** Authorization and JWT rules as received, for pkg/rbac and pkg/jwt (empty when not served). */
  readonly authorization: readonly AuthzPolicy[];
  readonly jwtRules: readonly JwtRule[];
}

/** Per (service, subset) upstream state, kept across table rebuilds. */
export interface ClusterState {
  /** `<ns>/<hostname>|<subset>`. */
  readonly key: string;
  readonly service: CompiledService;
  readonly subset: string;
  readonly limiter: ConnectionPoolLimiter;
  readonly outlier: OutlierDetector;
  /** The load balancer for one service port (endpoints exposing that port). */
  picker(port: number): EndpointPicker;
  /** Connect timeout from the connection pool settings; 0 = caller's default (Istio: 10 s). */
  readonly connectTimeoutMs: number;
  /** Idle timeout for upstream connections; 0 = caller's default (Istio: 1 h). */
  readonly idleTimeoutMs: number;
}

export interface BuildOptions {
  /** This waypoint, `<namespace>/<gateway name>`. */
  readonly self: string;
  readonly logger: Logger;
  /** Table being replaced: cluster state (LB, outlier, circuit breaker) carries over. */
  readonly previous?: ServiceTableLike | null;
  /** For outlier detection and LB (default `performance.now`). */
  readonly clock?: Clock;
  /** For RANDOM / LEAST_REQUEST picks (default `Math.random`). */
  readonly rng?: Rng;
}

/** One problem found while compiling; the offending route (or match) is dropped, the rest stays. */
export interface BuildError {
  readonly code: 'MESH_ERR_WAYPOINT_CONFIG';
  /** `<ns>/<hostname>`. */
  readonly service: string;
  /** Route name ('' for service-level problems). */
  readonly route: string;
  readonly message: string;
}

/** Structural view of a table, so BuildOptions.previous does not need the class. */
export interface ServiceTableLike {
  clusterStateFor(key: string): ClusterState | undefined;
}

/** Response flags the I/O side puts in access logs / metrics (Envoy names). */
export const RESPONSE_FLAG = {
  NO_ROUTE: 'NR',
  NO_CLUSTER: 'NC',
  NO_HEALTHY_UPSTREAM: 'UH',
  UPSTREAM_OVERFLOW: 'UO',
  UPSTREAM_CONNECT_FAILURE: 'UF',
  UPSTREAM_REQUEST_TIMEOUT: 'UT',
  UPSTREAM_RESET: 'UR',
  FAULT_INJECTED: 'FI',
  DELAY_INJECTED: 'DI',
  UPSTREAM_RETRY_LIMIT_EXCEEDED: 'URX',
} as const;

export { ConnectionPoolLimiter } from './circuit.ts';
export { applyHeaderOps, EMPTY_HEADER_OPS, type MutableHeaders } from './headers.ts';
export { EndpointPicker, headerValue, type PickRequest, queryParam } from './lb.ts';
export { OutlierDetector, type OutlierOutcome } from './outlier.ts';
export { checkRegex, compileSafeRegex, RegexSyntaxError, type SafeRegex } from './regex.ts';
export {
  backoffMs,
  ISTIO_DEFAULT_RETRY_POLICY,
  NO_RETRY_POLICY,
  type RetryOutcome,
  retriable,
  shouldRetry,
} from './retry.ts';
export { hostOf, route } from './route.ts';
export { ServiceTable } from './table.ts';
export type { Endpoint as EngineEndpoint };
