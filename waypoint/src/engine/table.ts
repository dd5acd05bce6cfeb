/**
 * ServiceTable: every ServiceConfig compiled once per xDS push, indexed for the CONNECT-time lookup.
 *
 * Compilation turns each route into flat objects the per-request path only reads: StringMatchers (regexes
 * compiled and bounded, regex.ts), backends resolved to their CompiledService and ClusterState, cumulative
 * weights, merged header mutations, retry policies, and for routes whose decision does not depend on the
 * request (no path rewrite, no fault, every mirror at 100 %) a cached ForwardDecision per port, so route()
 * allocates nothing for them.
 *
 * Errors never fail the whole build: a route with an unusable part (bad regex, …) is dropped and reported,
 * so one bad VirtualService cannot take down routing for every other service — but the service keeps its
 * other routes, and a request that would have matched the dropped route falls through to the next one or
 * gets 404 like any unmatched request.
 */
import type {
  Endpoint,
  HeaderMatch,
  Mirror,
  Route,
  RouteMatch,
  ServiceConfig,
  ServicePort,
  TrafficPolicy,
  WeightedBackend,
} from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import { ConnectionPoolLimiter } from './circuit.ts';
import { EMPTY_HEADER_OPS, mergeHeaderOps } from './headers.ts';
import type {
  BackendTarget,
  BuildError,
  BuildOptions,
  Clock,
  ClusterState,
  CompiledRetryPolicy,
  CompiledRouteInfo,
  CompiledService,
  DirectDecision,
  ErrorDecision,
  ForwardDecision,
  HeaderOps,
  Rng,
  ServiceTableLike,
} from './index.ts';
import { EndpointPicker } from './lb.ts';
import { StringMatcher } from './match.ts';
import { OutlierDetector } from './outlier.ts';
import { RegexSyntaxError } from './regex.ts';
import { compileRetryPolicy, ISTIO_DEFAULT_RETRY_POLICY } from './retry.ts';

const EMPTY_TARGETS: readonly BackendTarget[] = Object.freeze([]);
/** Gateway API: every backend invalid (or none) → 500. */
const STATUS_NO_BACKEND = 500;
/** Envoy: cluster not found (unknown service or undefined subset) → 503, response flag NC. */
const STATUS_NO_CLUSTER = 503;

// ---------------------------------------------------------------------------------------------------------
// Cluster state.

export class ClusterStateImpl implements ClusterState {
  readonly key: string;
  service: ServiceImpl;
  readonly subset: string;
  readonly limiter: ConnectionPoolLimiter;
  readonly outlier: OutlierDetector;
  private readonly pickers = new Map<number, EndpointPicker>();
  private endpoints: readonly Endpoint[] = [];
  private policy: TrafficPolicy = {};
  private readonly rng: Rng;
  private readonly clock: Clock;

  constructor(key: string, service: ServiceImpl, subset: string, rng: Rng, clock: Clock) {
    this.key = key;
    this.service = service;
    this.subset = subset;
    this.rng = rng;
    this.clock = clock;
    this.limiter = new ConnectionPoolLimiter();
    this.outlier = new OutlierDetector();
  }

  get connectTimeoutMs(): number {
    return this.limiter.connectTimeoutMs;
  }

  get idleTimeoutMs(): number {
    return this.limiter.idleTimeoutMs;
  }

  /** The DestinationRule policy in effect (subset fields override the service's). */
  get trafficPolicy(): TrafficPolicy {
    return this.policy;
  }

  /** (Re)applies config; counters, in-flight counts and ejections of remaining hosts are kept. */
  configure(service: ServiceImpl, policy: TrafficPolicy, endpoints: readonly Endpoint[]): void {
    this.service = service;
    this.policy = policy;
    this.endpoints = endpoints;
    this.limiter.configure(policy.connectionPool);
    this.outlier.configure(policy.outlierDetection);
    this.outlier.setHosts(endpoints.map((ep) => ep.address));
    for (const [port, picker] of this.pickers) {
      picker.setPolicy(policy.loadBalancer, service.ports.get(port));
      picker.update(endpoints);
    }
  }

  picker(port: number): EndpointPicker {
    let p = this.pickers.get(port);
    if (p === undefined) {
      p = new EndpointPicker({
        port,
        servicePort: this.service.ports.get(port),
        loadBalancer: this.policy.loadBalancer,
        outlier: this.outlier,
        rng: this.rng,
        clock: this.clock,
      });
      p.update(this.endpoints);
      this.pickers.set(port, p);
    }
    return p;
  }
}

function mergePolicy(service: TrafficPolicy | undefined, subset: TrafficPolicy | undefined): TrafficPolicy {
  return {
    loadBalancer: subset?.loadBalancer ?? service?.loadBalancer,
    connectionPool: subset?.connectionPool ?? service?.connectionPool,
    outlierDetection: subset?.outlierDetection ?? service?.outlierDetection,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Compiled routes.

export class HeaderCondition {
  readonly name: string;
  readonly matcher: StringMatcher;
  readonly invert: boolean;
  /** Header names are case-insensitive (lowercased); query parameter names are not. */
  constructor(h: HeaderMatch, lowercaseName: boolean) {
    this.name = lowercaseName ? h.name.toLowerCase() : h.name;
    this.matcher = new StringMatcher(h.value);
    this.invert = h.invert;
  }
}

export class CompiledMatch {
  readonly path: StringMatcher | null;
  readonly method: StringMatcher | null;
  readonly authority: StringMatcher | null;
  readonly headers: readonly HeaderCondition[];
  readonly query: readonly HeaderCondition[];
  readonly port: number;
  constructor(m: RouteMatch) {
    this.path = m.path?.kind !== undefined ? new StringMatcher(m.path) : null;
    this.method = m.method?.kind !== undefined ? new StringMatcher(m.method) : null;
    this.authority = m.authority?.kind !== undefined ? new StringMatcher(m.authority) : null;
    this.headers = m.headers.map((h) => new HeaderCondition(h, true));
    this.query = m.queryParams.map((h) => new HeaderCondition(h, false));
    this.port = m.port;
  }
}

/** A weighted backend, resolved. */
export class CompiledBackend {
  readonly name: string;
  readonly service: ServiceImpl | null;
  /** 0 = the request's port. */
  readonly port: number;
  readonly subset: string;
  readonly weight: number;
  readonly errorStatus: number;
  /** Null when the service or subset is unknown (→ 503 NC). */
  readonly cluster: ClusterStateImpl | null;
  readonly requestHeaders: HeaderOps;
  readonly responseHeaders: HeaderOps;
  /** Targets by request port (for port 0) or the one fixed target. */
  private readonly targets = new Map<number, BackendTarget>();
  /** Cached decisions by request port, for static routes. */
  readonly decisions = new Map<number, ForwardDecision>();
  /** Set by the route for error backends. */
  errorDecision: ErrorDecision | null = null;

  constructor(
    name: string,
    service: ServiceImpl | null,
    port: number,
    subset: string,
    weight: number,
    errorStatus: number,
    requestHeaders: HeaderOps,
    responseHeaders: HeaderOps,
  ) {
    this.name = name;
    this.service = service;
    this.port = port;
    this.subset = subset;
    this.weight = weight;
    this.errorStatus = errorStatus;
    this.cluster = service === null ? null : (service.clusters.get(subset) ?? null);
    this.requestHeaders = requestHeaders;
    this.responseHeaders = responseHeaders;
  }

  target(requestPort: number): BackendTarget {
    const port = this.port !== 0 ? this.port : requestPort;
    let t = this.targets.get(port);
    if (t === undefined) {
      t = Object.freeze({
        name: this.name,
        service: this.service,
        port,
        subset: this.subset,
        cluster: this.cluster,
      });
      this.targets.set(port, t);
    }
    return t;
  }
}

export class CompiledMirror {
  readonly backend: CompiledBackend;
  readonly percent: number;
  constructor(backend: CompiledBackend, percent: number) {
    this.backend = backend;
    this.percent = percent;
  }
}

export const K_FORWARD = 0;
export const K_REDIRECT = 1;
export const K_DIRECT = 2;
export const K_ERROR = 3;

export class CompiledRoute implements CompiledRouteInfo {
  readonly name: string;
  readonly sourceKind: string;
  readonly sourceNamespace: string;
  readonly sourceName: string;
  /** Ports the route applies to; empty = all. */
  readonly ports: readonly number[];
  /** OR of matches; empty = everything. */
  readonly matches: readonly CompiledMatch[];
  readonly kind: number;
  readonly backends: readonly CompiledBackend[];
  /** Cumulative weights (same order as backends). */
  readonly cumulative: Float64Array;
  readonly totalWeight: number;
  readonly rewriteFullPath: string | null;
  readonly rewritePrefix: string | null;
  readonly rewriteHost: string | null;
  readonly redirectScheme: string;
  readonly redirectHost: string;
  readonly redirectPort: number;
  readonly redirectFullPath: string | null;
  readonly redirectPrefix: string | null;
  readonly redirectStatus: number;
  readonly mirrors: readonly CompiledMirror[];
  /** Mirrors when every one is at 100 % (the targets are then fixed per port). */
  readonly allMirrorsAlways: boolean;
  readonly delayMs: number;
  readonly delayPercent: number;
  readonly abortStatus: number;
  readonly abortGrpcStatus: number;
  readonly abortPercent: number;
  readonly timeoutMs: number;
  readonly retries: CompiledRetryPolicy | null;
  /** Route-level response headers for redirect / direct answers. */
  readonly responseHeaders: HeaderOps;
  /** The decision does not depend on the request beyond the backend pick and the port. */
  readonly isStatic: boolean;
  /** Cached answers for K_DIRECT / K_ERROR. */
  fixedDecision: DirectDecision | ErrorDecision | null = null;

  constructor(init: {
    name: string;
    sourceKind: string;
    sourceNamespace: string;
    sourceName: string;
    ports: readonly number[];
    matches: readonly CompiledMatch[];
    kind: number;
    backends: readonly CompiledBackend[];
    rewriteFullPath: string | null;
    rewritePrefix: string | null;
    rewriteHost: string | null;
    redirectScheme: string;
    redirectHost: string;
    redirectPort: number;
    redirectFullPath: string | null;
    redirectPrefix: string | null;
    redirectStatus: number;
    mirrors: readonly CompiledMirror[];
    delayMs: number;
    delayPercent: number;
    abortStatus: number;
    abortGrpcStatus: number;
    abortPercent: number;
    timeoutMs: number;
    retries: CompiledRetryPolicy | null;
    responseHeaders: HeaderOps;
  }) {
    this.name = init.name;
    this.sourceKind = init.sourceKind;
    this.sourceNamespace = init.sourceNamespace;
    this.sourceName = init.sourceName;
    this.ports = init.ports;
    this.matches = init.matches;
    this.kind = init.kind;
    this.backends = init.backends;
    const cumulative = new Float64Array(init.backends.length);
    let total = 0;
    for (let i = 0; i < init.backends.length; i++) {
      total += (init.backends[i] as CompiledBackend).weight;
      cumulative[i] = total;
    }
    this.cumulative = cumulative;
    this.totalWeight = total;
    this.rewriteFullPath = init.rewriteFullPath;
    this.rewritePrefix = init.rewritePrefix;
    this.rewriteHost = init.rewriteHost;
    this.redirectScheme = init.redirectScheme;
    this.redirectHost = init.redirectHost;
    this.redirectPort = init.redirectPort;
    this.redirectFullPath = init.redirectFullPath;
    this.redirectPrefix = init.redirectPrefix;
    this.redirectStatus = init.redirectStatus;
    this.mirrors = init.mirrors;
    this.allMirrorsAlways = init.mirrors.every((m) => m.percent >= 100);
    this.delayMs = init.delayMs;
    this.delayPercent = init.delayPercent;
    this.abortStatus = init.abortStatus;
    this.abortGrpcStatus = init.abortGrpcStatus;
    this.abortPercent = init.abortPercent;
    this.timeoutMs = init.timeoutMs;
    this.retries = init.retries;
    this.responseHeaders = init.responseHeaders;
    const noFault =
      (this.delayMs === 0 || this.delayPercent <= 0) &&
      ((this.abortStatus === 0 && this.abortGrpcStatus === 0) || this.abortPercent <= 0);
    this.isStatic =
      this.rewriteFullPath === null && this.rewritePrefix === null && this.allMirrorsAlways && noFault;
  }

  /** Mirror targets for a request port when every mirror is at 100 %. */
  private readonly mirrorTargets = new Map<number, readonly BackendTarget[]>();
  fixedMirrors(requestPort: number): readonly BackendTarget[] {
    if (this.mirrors.length === 0) return EMPTY_TARGETS;
    let t = this.mirrorTargets.get(requestPort);
    if (t === undefined) {
      t = Object.freeze(this.mirrors.map((m) => m.backend.target(requestPort)));
      this.mirrorTargets.set(requestPort, t);
    }
    return t;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Services.

export class ServiceImpl implements CompiledService {
  readonly kind: 'service' | 'workload';
  readonly name: string;
  readonly namespace: string;
  readonly hostname: string;
  readonly config: ServiceConfig;
  served: boolean;
  owner: ServiceImpl | null;
  readonly ports: ReadonlyMap<number, ServicePort>;
  authorization: CompiledService['authorization'];
  jwtRules: CompiledService['jwtRules'];
  /** Clusters by subset name ('' = whole service). */
  readonly clusters = new Map<string, ClusterStateImpl>();
  /** Compiled routes; null = no routes configured (default route). */
  routes: readonly CompiledRoute[] | null = null;
  /** Forward to this service on the request port, Istio's default retry policy. */
  defaultRoute: CompiledRoute | null = null;

  constructor(
    kind: 'service' | 'workload',
    config: ServiceConfig,
    served: boolean,
    owner: ServiceImpl | null,
  ) {
    this.kind = kind;
    this.name = config.name;
    this.namespace = config.namespace;
    this.hostname = config.hostname;
    this.config = config;
    this.served = served;
    this.owner = owner;
    this.ports = new Map(config.ports.map((p) => [p.port, p]));
    const policySource = owner ?? this;
    this.authorization = served ? policySource.config.authorization : [];
    this.jwtRules = served ? policySource.config.jwtRules : [];
  }
}

function routeInfoDefault(): {
  name: string;
  sourceKind: string;
  sourceNamespace: string;
  sourceName: string;
} {
  return { name: 'default', sourceKind: '', sourceNamespace: '', sourceName: '' };
}

function defaultRouteFor(svc: ServiceImpl): CompiledRoute {
  const self = new CompiledBackend(svc.name, svc, 0, '', 1, 0, EMPTY_HEADER_OPS, EMPTY_HEADER_OPS);
  return new CompiledRoute({
    ...routeInfoDefault(),
    ports: [],
    matches: [],
    kind: K_FORWARD,
    backends: [self],
    rewriteFullPath: null,
    rewritePrefix: null,
    rewriteHost: null,
    redirectScheme: '',
    redirectHost: '',
    redirectPort: 0,
    redirectFullPath: null,
    redirectPrefix: null,
    redirectStatus: 0,
    mirrors: [],
    delayMs: 0,
    delayPercent: 0,
    abortStatus: 0,
    abortGrpcStatus: 0,
    abortPercent: 0,
    timeoutMs: 0,
    retries: ISTIO_DEFAULT_RETRY_POLICY,
    responseHeaders: EMPTY_HEADER_OPS,
  });
}

// ---------------------------------------------------------------------------------------------------------
// The table.

interface PodEntry {
  readonly endpoint: Endpoint;
  readonly owners: ServiceImpl[];
}

/** Default redirect status (Envoy/Istio: 301 Moved Permanently). */
const DEFAULT_REDIRECT_STATUS = 301;

export class ServiceTable implements ServiceTableLike {
  readonly self: string;
  private readonly byNameMap = new Map<string, ServiceImpl>();
  /** VIP → services with that address (usually one). */
  private readonly byVip = new Map<string, ServiceImpl[]>();
  private readonly pods = new Map<string, PodEntry>();
  private readonly workloads = new Map<string, ServiceImpl>();
  private readonly clusters = new Map<string, ClusterStateImpl>();
  /** Workload clusters inherited from the previous table, adopted on first lookup. */
  private readonly inheritedWorkloadClusters: Map<string, ClusterStateImpl>;
  private readonly rng: Rng;
  private readonly clock: Clock;

  private constructor(self: string, rng: Rng, clock: Clock, inherited: Map<string, ClusterStateImpl>) {
    this.self = self;
    this.rng = rng;
    this.clock = clock;
    this.inheritedWorkloadClusters = inherited;
  }

  /** Compiles `configs`. Never throws for bad config: problems are in `errors`. */
  static build(
    configs: readonly ServiceConfig[],
    opts: BuildOptions,
  ): { table: ServiceTable; errors: BuildError[] } {
    const errors: BuildError[] = [];
    const rng = opts.rng ?? Math.random;
    const clock = opts.clock ?? (() => performance.now());
    const prev = opts.previous instanceof ServiceTable ? opts.previous : null;
    const inherited = new Map<string, ClusterStateImpl>();
    if (prev !== null) for (const [k, c] of prev.workloadClusters()) inherited.set(k, c);
    const table = new ServiceTable(opts.self, rng, clock, inherited);
    const err = (service: string, route: string, message: string): void => {
      errors.push({ code: 'MESH_ERR_WAYPOINT_CONFIG', service, route, message });
    };

    // 1. Services and indexes.
    for (const cfg of configs) {
      if (cfg.name === '') {
        err('', '', `service config without a name (hostname ${JSON.stringify(cfg.hostname)}) ignored`);
        continue;
      }
      if (table.byNameMap.has(cfg.name)) {
        err(cfg.name, '', 'duplicate service config; the first one is kept');
        continue;
      }
      const svc = new ServiceImpl('service', cfg, cfg.waypoints.includes(opts.self), null);
      table.byNameMap.set(cfg.name, svc);
      for (const vip of cfg.addresses) {
        const list = table.byVip.get(vip);
        if (list === undefined) table.byVip.set(vip, [svc]);
        else list.push(svc);
      }
      for (const ep of cfg.endpoints) {
        if (ep.address === '') continue;
        const pod = table.pods.get(ep.address);
        if (pod === undefined) table.pods.set(ep.address, { endpoint: ep, owners: [svc] });
        else pod.owners.push(svc);
      }
      // 2. Clusters: the whole service and each subset, state carried over from the previous table.
      const subsets = new Map<string, TrafficPolicy | undefined>([['', undefined]]);
      for (const s of cfg.subsets) {
        if (s.name === '') err(cfg.name, '', 'subset without a name ignored');
        else subsets.set(s.name, s.trafficPolicy);
      }
      for (const [subset, subsetPolicy] of subsets) {
        const key = `${cfg.name}|${subset}`;
        const carried = prev?.clusters.get(key);
        const cluster = carried ?? new ClusterStateImpl(key, svc, subset, rng, clock);
        const endpoints =
          subset === '' ? cfg.endpoints : cfg.endpoints.filter((ep) => ep.subsets.includes(subset));
        cluster.configure(svc, mergePolicy(cfg.trafficPolicy, subsetPolicy), endpoints);
        svc.clusters.set(subset, cluster);
        table.clusters.set(key, cluster);
      }
    }
    for (const list of table.byVip.values()) {
      if (list.length > 1) list.sort((a, b) => (a.name < b.name ? -1 : 1));
    }
    for (const pod of table.pods.values()) {
      pod.owners.sort((a, b) => (a.served !== b.served ? (a.served ? -1 : 1) : a.name < b.name ? -1 : 1));
    }

    // 3. Routes (only served services use theirs).
    for (const svc of table.byNameMap.values()) {
      svc.defaultRoute = defaultRouteFor(svc);
      if (!svc.served || svc.config.routes.length === 0) continue;
      const routes: CompiledRoute[] = [];
      for (const r of svc.config.routes) {
        const compiled = table.compileRoute(svc, r, (msg) => err(svc.name, r.name, msg));
        if (compiled !== null) routes.push(compiled);
      }
      svc.routes = routes;
    }
    if (errors.length > 0) {
      opts.logger.warn({ errors: errors.length, first: errors[0] }, 'waypoint config compiled with errors');
    }
    return { table, errors };
  }

  /** The service for a CONNECT authority: VIP:port, or pod IP:port (workload pseudo-service). */
  lookup(ip: string, port: number): CompiledService | undefined {
    const list = this.byVip.get(ip);
    if (list !== undefined) {
      for (let i = 0; i < list.length; i++) {
        const svc = list[i] as ServiceImpl;
        if (svc.ports.size === 0 || svc.ports.has(port)) return svc;
      }
      return undefined;
    }
    return this.workload(ip);
  }

  byName(name: string): CompiledService | undefined {
    return this.byNameMap.get(name);
  }

  served(svc: CompiledService): boolean {
    return svc.served;
  }

  /** Every compiled service (config dumps, tests). */
  services(): IterableIterator<CompiledService> {
    return this.byNameMap.values();
  }

  /** Upstream state for (service, subset); undefined when the subset is not defined. */
  cluster(svc: CompiledService | BackendTarget, subset?: string): ClusterState | undefined {
    if ('cluster' in svc) return svc.cluster ?? undefined;
    return (svc as ServiceImpl).clusters.get(subset ?? '');
  }

  clusterStateFor(key: string): ClusterState | undefined {
    return this.clusters.get(key) ?? this.inheritedWorkloadClusters.get(key);
  }

  private *workloadClusters(): Iterable<[string, ClusterStateImpl]> {
    for (const [k, c] of this.inheritedWorkloadClusters) yield [k, c];
    for (const w of this.workloads.values()) {
      const c = w.clusters.get('');
      if (c !== undefined) yield [c.key, c];
    }
  }

  /** The pseudo-service for pod `ip`, made on first use. */
  private workload(ip: string): ServiceImpl | undefined {
    const cached = this.workloads.get(ip);
    if (cached !== undefined) return cached;
    const pod = this.pods.get(ip);
    if (pod === undefined) return undefined;
    const owner = pod.owners[0] as ServiceImpl;
    const ep = pod.endpoint;
    const ns = ep.workloadNamespace !== '' ? ep.workloadNamespace : owner.namespace;
    // The pod is addressed directly: every port is its own target port (an empty port map means "all").
    const endpoint: Endpoint = { ...ep, ports: {}, healthy: true, subsets: [] };
    // Spread the owner's config so fields added to the wire format later get a value too.
    const config: ServiceConfig = {
      ...owner.config,
      name: `${ns}/${ip}`,
      namespace: ns,
      hostname: ip,
      serviceName: ep.workloadName,
      addresses: [],
      ports: [],
      waypoints: owner.config.waypoints,
      endpoints: [endpoint],
      subsets: [],
      trafficPolicy: undefined,
      routes: [],
      authorization: owner.config.authorization,
      jwtRules: owner.config.jwtRules,
      routeSource: undefined,
    };
    const svc = new ServiceImpl('workload', config, owner.served, owner);
    const key = `${config.name}|`;
    const cluster =
      this.inheritedWorkloadClusters.get(key) ?? new ClusterStateImpl(key, svc, '', this.rng, this.clock);
    this.inheritedWorkloadClusters.delete(key);
    cluster.configure(svc, {}, config.endpoints);
    svc.clusters.set('', cluster);
    svc.defaultRoute = defaultRouteFor(svc);
    this.workloads.set(ip, svc);
    return svc;
  }

  private backend(
    from: ServiceImpl,
    name: string,
    port: number,
    subset: string,
    weight: number,
    errorStatus: number,
    req: HeaderOps,
    resp: HeaderOps,
    err: (msg: string) => void,
  ): CompiledBackend {
    const target = name === '' ? from : (this.byNameMap.get(name) ?? null);
    if (target === null && errorStatus === 0)
      err(`backend service ${JSON.stringify(name)} is unknown (503 NC)`);
    if (target !== null && !target.clusters.has(subset)) {
      err(`backend ${JSON.stringify(name)} has no subset ${JSON.stringify(subset)} (503 NC)`);
    }
    return new CompiledBackend(target?.name ?? name, target, port, subset, weight, errorStatus, req, resp);
  }

  private compileRoute(svc: ServiceImpl, r: Route, err: (msg: string) => void): CompiledRoute | null {
    let matches: CompiledMatch[];
    try {
      matches = r.matches.map((m) => new CompiledMatch(m));
    } catch (e) {
      if (e instanceof RegexSyntaxError) {
        err(`route dropped: ${e.message}`);
        return null;
      }
      throw e;
    }
    const a = r.action;
    const src = r.source;
    const routeHeaders = a?.requestHeaders;
    const routeRespHeaders = a?.responseHeaders;
    let kind = K_FORWARD;
    let backends: CompiledBackend[] = [];
    if (a?.redirect !== undefined) kind = K_REDIRECT;
    else if (a?.directResponse !== undefined) kind = K_DIRECT;
    else {
      const list = a?.backends ?? [];
      backends = list.map((b: WeightedBackend) =>
        this.backend(
          svc,
          b.service,
          b.port,
          b.subset,
          // A single backend takes all traffic whatever its weight (VirtualService omits it).
          list.length === 1 ? 1 : b.weight,
          b.errorStatus,
          mergeHeaderOps([b.requestHeaders, routeHeaders]),
          mergeHeaderOps([b.responseHeaders, routeRespHeaders]),
          err,
        ),
      );
      if (backends.length === 0 || backends.every((b) => b.weight === 0)) {
        if (backends.length > 0) err('every backend has weight 0 (500)');
        kind = K_ERROR;
      }
    }
    const mirrors: CompiledMirror[] = [];
    for (const m of a?.mirrors ?? ([] as Mirror[])) {
      const target = this.byNameMap.get(m.service);
      if (target === undefined) {
        err(`mirror service ${JSON.stringify(m.service)} is unknown; mirror ignored`);
        continue;
      }
      const b = new CompiledBackend(
        target.name,
        target,
        m.port,
        m.subset,
        1,
        0,
        EMPTY_HEADER_OPS,
        EMPTY_HEADER_OPS,
      );
      if (b.cluster === null) {
        err(`mirror ${JSON.stringify(m.service)} has no subset ${JSON.stringify(m.subset)}; mirror ignored`);
        continue;
      }
      mirrors.push(new CompiledMirror(b, m.percent));
    }
    const rd = a?.redirect;
    const rw = a?.rewrite;
    const fault = a?.fault;
    const route = new CompiledRoute({
      name: r.name,
      sourceKind: src?.kind ?? '',
      sourceNamespace: src?.namespace ?? '',
      sourceName: src?.name ?? '',
      ports: r.ports,
      matches,
      kind,
      backends,
      rewriteFullPath: rw !== undefined && rw.fullPath !== '' ? rw.fullPath : null,
      rewritePrefix:
        rw !== undefined && rw.fullPath === '' && rw.prefixReplace !== '' ? rw.prefixReplace : null,
      rewriteHost: rw !== undefined && rw.host !== '' ? rw.host : null,
      redirectScheme: rd?.scheme ?? '',
      redirectHost: rd?.host ?? '',
      redirectPort: rd?.port ?? 0,
      redirectFullPath: rd !== undefined && rd.fullPath !== '' ? rd.fullPath : null,
      redirectPrefix:
        rd !== undefined && rd.fullPath === '' && rd.prefixReplace !== '' ? rd.prefixReplace : null,
      redirectStatus: rd !== undefined && rd.statusCode !== 0 ? rd.statusCode : DEFAULT_REDIRECT_STATUS,
      mirrors,
      delayMs: fault?.delay?.fixedDelayMs ?? 0,
      delayPercent: fault?.delay?.percent ?? 0,
      abortStatus: fault?.abort?.httpStatus ?? 0,
      abortGrpcStatus: fault?.abort?.grpcStatus ?? 0,
      abortPercent: fault?.abort?.percent ?? 0,
      timeoutMs: a?.timeoutMs ?? 0,
      retries: compileRetryPolicy(a?.retries, (name) =>
        err(`unknown retry_on ${JSON.stringify(name)} ignored`),
      ),
      responseHeaders: mergeHeaderOps([routeRespHeaders]),
    });
    if (kind === K_DIRECT) {
      const d = a?.directResponse;
      route.fixedDecision = Object.freeze({
        kind: 'direct',
        route,
        status: d?.status ?? 200,
        body: d?.body ?? '',
        responseHeaders: route.responseHeaders,
      });
    } else if (kind === K_ERROR) {
      route.fixedDecision = Object.freeze({
        kind: 'error',
        route,
        status: STATUS_NO_BACKEND,
        responseFlag: '',
      });
    }
    for (const b of backends) {
      if (b.errorStatus !== 0) {
        b.errorDecision = Object.freeze({ kind: 'error', route, status: b.errorStatus, responseFlag: '' });
      } else if (b.cluster === null) {
        b.errorDecision = Object.freeze({
          kind: 'error',
          route,
          status: STATUS_NO_CLUSTER,
          responseFlag: 'NC',
        });
      }
    }
    return route;
  }
}
