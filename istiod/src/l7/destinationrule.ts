/**
 * DestinationRule → the service's subsets and traffic policy (load balancer, connection pool, outlier detection).
 *
 * Which DestinationRule applies to a service, as Istio decides it for a proxy in the waypoint's namespace: the
 * first namespace, in the order waypoint namespace → service namespace → root namespace, that has a rule for the
 * host; an exact host beats a wildcard; several rules for the same host there are merged oldest first (the oldest
 * rule's traffic policy, subsets from all, a repeated subset name keeps the oldest). Rules with a
 * `workloadSelector` are for sidecars and are ignored.
 */
import type {
  ConnectionPool,
  LoadBalancer,
  OutlierDetection,
  Subset,
  TrafficPolicy,
} from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import { LoadBalancer_Simple } from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import { timeOf } from '../kube/labels.ts';
import type { ServiceRef } from './index.ts';
import type { DestinationRule, IstioTrafficPolicy } from './types.ts';
import { byAge, hostMatches, parseDurationMs } from './util.ts';
import { hostCandidates } from './virtualservice.ts';

export interface AppliedDestinationRule {
  readonly subsets: readonly Subset[];
  readonly trafficPolicy: TrafficPolicy | undefined;
  /** The DestinationRules merged into this result, oldest first (`ns/name`). */
  readonly sources: readonly string[];
  /** Skipped pieces, by DestinationRule key. */
  readonly problems: ReadonlyMap<string, readonly string[]>;
}

interface Candidate {
  readonly dr: DestinationRule;
  readonly exact: boolean;
  readonly created: number;
  readonly namespace: string;
  readonly name: string;
}

/** The DestinationRule (merged) that applies to a service, or null. */
export function selectDestinationRule(
  svc: ServiceRef,
  rules: Iterable<DestinationRule>,
  namespaces: readonly string[],
  domainSuffix: string,
): AppliedDestinationRule | null {
  const byNs = new Map<string, Candidate[]>();
  for (const dr of rules) {
    if (dr.spec?.workloadSelector) continue;
    const ns = dr.metadata?.namespace ?? '';
    if (!namespaces.includes(ns)) continue;
    const host = dr.spec?.host;
    if (typeof host !== 'string' || host === '') continue;
    const candidates = hostCandidates(host, ns, domainSuffix);
    if (!candidates.some((c) => hostMatches(c, svc.hostname))) continue;
    const exact = candidates.some((c) => c.toLowerCase() === svc.hostname.toLowerCase());
    const list = byNs.get(ns) ?? [];
    list.push({
      dr,
      exact,
      created: timeOf(dr.metadata?.creationTimestamp),
      namespace: ns,
      name: dr.metadata?.name ?? '',
    });
    byNs.set(ns, list);
  }
  for (const ns of namespaces) {
    const list = byNs.get(ns);
    if (!list || list.length === 0) continue;
    const anyExact = list.some((c) => c.exact);
    const chosen = list.filter((c) => c.exact === anyExact).sort(byAge);
    return merge(chosen);
  }
  return null;
}

function merge(chosen: readonly Candidate[]): AppliedDestinationRule {
  const subsets: Subset[] = [];
  const names = new Set<string>();
  const problems = new Map<string, string[]>();
  let trafficPolicy: TrafficPolicy | undefined;
  for (const c of chosen) {
    const key = `${c.namespace}/${c.name}`;
    const issues: string[] = [];
    if (trafficPolicy === undefined && c.dr.spec?.trafficPolicy)
      trafficPolicy = convertTrafficPolicy(c.dr.spec.trafficPolicy, issues, 'trafficPolicy');
    for (const s of c.dr.spec?.subsets ?? []) {
      if (!s || typeof s !== 'object') continue;
      const name = s.name ?? '';
      if (name === '') {
        issues.push('subset without a name skipped');
        continue;
      }
      if (names.has(name)) {
        issues.push(`subset "${name}" is already defined by an older DestinationRule; skipped`);
        continue;
      }
      names.add(name);
      subsets.push({
        name,
        labels: { ...(s.labels ?? {}) },
        trafficPolicy: s.trafficPolicy
          ? convertTrafficPolicy(s.trafficPolicy, issues, `subsets "${name}" trafficPolicy`)
          : undefined,
      });
    }
    if (issues.length > 0) problems.set(key, issues);
  }
  return {
    subsets,
    trafficPolicy,
    sources: chosen.map((c) => `${c.namespace}/${c.name}`),
    problems,
  };
}

const SIMPLE: Readonly<Record<string, LoadBalancer_Simple>> = {
  UNSPECIFIED: LoadBalancer_Simple.UNSPECIFIED,
  ROUND_ROBIN: LoadBalancer_Simple.ROUND_ROBIN,
  LEAST_REQUEST: LoadBalancer_Simple.LEAST_REQUEST,
  // Deprecated alias of LEAST_REQUEST.
  LEAST_CONN: LoadBalancer_Simple.LEAST_REQUEST,
  RANDOM: LoadBalancer_Simple.RANDOM,
  PASSTHROUGH: LoadBalancer_Simple.PASSTHROUGH,
};

function ms(issues: string[], where: string, text: string | undefined): number {
  if (text === undefined) return 0;
  const v = parseDurationMs(text);
  if (v === null) {
    issues.push(`${where}: "${text}" is not a duration; ignored`);
    return 0;
  }
  return v;
}

function uint(v: number | string | undefined): number {
  const n = typeof v === 'string' ? Number(v) : (v ?? 0);
  return Number.isFinite(n) && n > 0 ? Math.min(Math.floor(n), 0xffff_ffff) : 0;
}

export function convertTrafficPolicy(tp: IstioTrafficPolicy, issues: string[], where: string): TrafficPolicy {
  let loadBalancer: LoadBalancer | undefined;
  if (tp.loadBalancer) {
    const lb = tp.loadBalancer;
    let simple: LoadBalancer_Simple = LoadBalancer_Simple.UNSPECIFIED;
    if (lb.simple !== undefined) {
      const s = SIMPLE[lb.simple.toUpperCase()];
      if (s === undefined) issues.push(`${where}.loadBalancer.simple "${lb.simple}" unknown; ignored`);
      else simple = s;
    }
    loadBalancer = { simple, consistentHash: undefined };
    const ch = lb.consistentHash;
    if (ch) {
      const ring = uint(ch.ringHash?.minimumRingSize ?? ch.minimumRingSize);
      let key: NonNullable<LoadBalancer['consistentHash']>['key'];
      if (ch.httpHeaderName) key = { $case: 'httpHeaderName', value: ch.httpHeaderName };
      else if (ch.httpCookie?.name) key = { $case: 'httpCookie', value: ch.httpCookie.name };
      else if (ch.useSourceIp) key = { $case: 'useSourceIp', value: true };
      else if (ch.httpQueryParameterName)
        key = { $case: 'httpQueryParameterName', value: ch.httpQueryParameterName };
      else issues.push(`${where}.loadBalancer.consistentHash has no hash key; ignored`);
      if (key) loadBalancer.consistentHash = { key, minimumRingSize: BigInt(ring) };
    }
  }
  let connectionPool: ConnectionPool | undefined;
  if (tp.connectionPool) {
    const tcp = tp.connectionPool.tcp ?? {};
    const http = tp.connectionPool.http ?? {};
    connectionPool = {
      maxConnections: uint(tcp.maxConnections),
      http1MaxPendingRequests: uint(http.http1MaxPendingRequests),
      http2MaxRequests: uint(http.http2MaxRequests),
      maxRequestsPerConnection: uint(http.maxRequestsPerConnection),
      maxRetries: uint(http.maxRetries),
      connectTimeoutMs: ms(issues, `${where}.connectionPool.tcp.connectTimeout`, tcp.connectTimeout),
      idleTimeoutMs: ms(
        issues,
        `${where}.connectionPool.http.idleTimeout`,
        http.idleTimeout ?? tcp.idleTimeout,
      ),
    };
  }
  let outlierDetection: OutlierDetection | undefined;
  if (tp.outlierDetection) {
    const od = tp.outlierDetection;
    outlierDetection = {
      enabled: true,
      consecutive5xxErrors: uint(od.consecutive5xxErrors ?? od.consecutiveErrors),
      consecutiveGatewayErrors: uint(od.consecutiveGatewayErrors),
      intervalMs: ms(issues, `${where}.outlierDetection.interval`, od.interval),
      baseEjectionTimeMs: ms(issues, `${where}.outlierDetection.baseEjectionTime`, od.baseEjectionTime),
      maxEjectionPercent: uint(od.maxEjectionPercent),
      minHealthPercent: uint(od.minHealthPercent),
    };
  }
  if (tp.portLevelSettings && tp.portLevelSettings.length > 0)
    issues.push(`${where}.portLevelSettings are not supported by waypoints; ignored`);
  return { loadBalancer, connectionPool, outlierDetection };
}
