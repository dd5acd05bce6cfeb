/**
 * Passive outlier detection per (service, subset), following Envoy's consecutive-errors detectors as Istio
 * configures them from DestinationRule `outlierDetection`:
 *
 * - consecutive_5xx (Istio consecutive5xxErrors): 5xx responses and local-origin failures (connect failure,
 *   reset, timeout — Envoy maps them to 503 unless split_external_local_origin_errors, which Istio leaves off).
 *   Any other response resets the count. 0 (unset) means 5: Envoy's default, which Istio keeps when
 *   consecutive5xxErrors is unset. Istio's explicit `0` (detector off) cannot be
 *   expressed on the wire yet (uint32, 0 = unset).
 * - consecutive_gateway_failure (consecutiveGatewayErrors): 502/503/504 and local-origin failures; 0 = off.
 * - A host reaching a threshold is ejected at once for base_ejection_time × (times ejected), capped at Envoy's
 *   max_ejection_time default (300 s, or base if larger). The multiplier decays by one per `interval` spent
 *   un-ejected (Envoy ≥ 1.20 behaviour).
 * - max_ejection_percent (Istio and Envoy default 10): an ejection happens only while
 *   100 × ejected / hosts < max — so with few hosts the first ejection is still allowed (Envoy's check).
 * - min_health_percent (Istio default 0 = off, Envoy healthy_panic_threshold): applied by the picker — when
 *   fewer than that share of hosts are usable it ignores health and ejections (panic mode).
 *
 * Pure: the clock is passed in. Un-ejection is lazy — a host returns as soon as its time is up rather than at
 * the next interval sweep (at most `interval` earlier than Envoy).
 */
import type { Endpoint, OutlierDetection } from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';

/** Envoy defaults, which Istio keeps when the DestinationRule leaves a field unset. */
const DEFAULT_CONSECUTIVE_5XX = 5;
const DEFAULT_INTERVAL_MS = 10_000;
const DEFAULT_BASE_EJECTION_MS = 30_000;
const DEFAULT_MAX_EJECTION_PERCENT = 10;
/** Envoy max_ejection_time default. */
const DEFAULT_MAX_EJECTION_MS = 300_000;

/** An upstream try's result: the HTTP status, or a failure with no response. */
export type OutlierOutcome = number | 'connect-failure' | 'reset' | 'timeout';

class HostState {
  consecutive5xx = 0;
  consecutiveGateway = 0;
  /** 0 = not ejected. */
  ejectedUntil = 0;
  /** Envoy's ejection multiplier. */
  ejections = 0;
  /** When the current multiplier was last changed (ejection or decay), for the decay. */
  lastChange = 0;
}

export class OutlierDetector {
  enabled = false;
  consecutive5xx = 0;
  consecutiveGateway = 0;
  intervalMs = DEFAULT_INTERVAL_MS;
  baseEjectionMs = DEFAULT_BASE_EJECTION_MS;
  maxEjectionMs = DEFAULT_MAX_EJECTION_MS;
  maxEjectionPercent = DEFAULT_MAX_EJECTION_PERCENT;
  minHealthPercent = 0;
  /** Ejections done / refused because of max_ejection_percent (stats). */
  ejectionsTotal = 0;
  ejectionsOverflow = 0;
  private readonly hosts = new Map<string, HostState>();
  private hostCount = 0;

  constructor(config?: OutlierDetection) {
    this.configure(config);
  }

  /** Applies a new rule (xDS push); per-host state is kept. */
  configure(c: OutlierDetection | undefined): void {
    this.enabled = c?.enabled === true;
    if (c === undefined || !this.enabled) return;
    this.consecutive5xx = c.consecutive5xxErrors > 0 ? c.consecutive5xxErrors : DEFAULT_CONSECUTIVE_5XX;
    this.consecutiveGateway = c.consecutiveGatewayErrors;
    this.intervalMs = c.intervalMs > 0 ? c.intervalMs : DEFAULT_INTERVAL_MS;
    this.baseEjectionMs = c.baseEjectionTimeMs > 0 ? c.baseEjectionTimeMs : DEFAULT_BASE_EJECTION_MS;
    this.maxEjectionMs = Math.max(DEFAULT_MAX_EJECTION_MS, this.baseEjectionMs);
    this.maxEjectionPercent =
      c.maxEjectionPercent > 0 ? Math.min(c.maxEjectionPercent, 100) : DEFAULT_MAX_EJECTION_PERCENT;
    this.minHealthPercent = Math.min(c.minHealthPercent, 100);
  }

  /** The hosts of the pool (endpoint addresses); state of removed hosts is dropped. */
  setHosts(addresses: readonly string[]): void {
    const keep = new Set(addresses);
    for (const key of this.hosts.keys()) if (!keep.has(key)) this.hosts.delete(key);
    this.hostCount = keep.size;
  }

  /** Records the result of one try to `endpoint`. */
  report(endpoint: Endpoint, outcome: OutlierOutcome, now: number): void {
    if (!this.enabled) return;
    const key = endpoint.address;
    let h = this.hosts.get(key);
    if (h === undefined) {
      h = new HostState();
      h.lastChange = now;
      this.hosts.set(key, h);
    }
    const localFailure = typeof outcome !== 'number';
    const is5xx = localFailure || (outcome >= 500 && outcome <= 599);
    const isGateway = localFailure || outcome === 502 || outcome === 503 || outcome === 504;
    if (!is5xx) {
      h.consecutive5xx = 0;
      h.consecutiveGateway = 0;
      return;
    }
    h.consecutive5xx++;
    if (isGateway) h.consecutiveGateway++;
    else h.consecutiveGateway = 0;
    if (h.ejectedUntil > now) return;
    const hit5xx = this.consecutive5xx > 0 && h.consecutive5xx >= this.consecutive5xx;
    const hitGateway = this.consecutiveGateway > 0 && h.consecutiveGateway >= this.consecutiveGateway;
    if (hit5xx || hitGateway) this.eject(h, now);
  }

  /** Whether `endpoint` is ejected at `now`. */
  isEjected(endpoint: Endpoint, now: number): boolean {
    if (!this.enabled) return false;
    const h = this.hosts.get(endpoint.address);
    return h !== undefined && h.ejectedUntil > now;
  }

  /** Hosts ejected at `now`. */
  ejectedCount(now: number): number {
    let n = 0;
    for (const h of this.hosts.values()) if (h.ejectedUntil > now) n++;
    return n;
  }

  private eject(h: HostState, now: number): void {
    const total = this.hostCount > 0 ? this.hostCount : this.hosts.size;
    if ((100 * this.ejectedCount(now)) / total >= this.maxEjectionPercent) {
      this.ejectionsOverflow++;
      return;
    }
    // Decay: one step per full interval spent healthy since the last change.
    if (h.ejections > 0) {
      const healthySince = h.ejectedUntil > h.lastChange ? h.ejectedUntil : h.lastChange;
      const steps = Math.floor((now - healthySince) / this.intervalMs);
      if (steps > 0) h.ejections = Math.max(0, h.ejections - steps);
    }
    h.ejections++;
    const duration = Math.min(this.baseEjectionMs * h.ejections, this.maxEjectionMs);
    h.ejectedUntil = now + duration;
    h.lastChange = now;
    h.consecutive5xx = 0;
    h.consecutiveGateway = 0;
    this.ejectionsTotal++;
  }
}
