/**
 * Load balancing over one (service, subset, port): the endpoints in the subset that expose the port.
 *
 * Policy (DestinationRule `loadBalancer`, the subset's overriding the service's as a whole field, like
 * Istio's MergeTrafficPolicy):
 * - UNSPECIFIED → LEAST_REQUEST: Istio's default since 1.14 (it was ROUND_ROBIN before; restored upstream
 *   only by ENABLE_LEGACY_LB_ALGORITHM_DEFAULT).
 * - LEAST_REQUEST: Envoy's power of two choices (choice_count 2) over in-flight requests counted through
 *   onRequestStart/onRequestEnd; ties keep the first draw.
 * - ROUND_ROBIN: a cursor over the endpoint list (starting at a random offset, so replicas do not all
 *   hit the same first host).
 * - RANDOM: uniform.
 * - PASSTHROUGH: means "the original destination" in Istio, which for a waypoint is a service VIP, not a
 *   host; treated as RANDOM.
 * - consistentHash: a ring (Envoy RING_HASH, Istio's default for consistentHash; minimum ring size 1024 unless
 *   configured) over the healthy endpoints sorted by address, keyed by header / cookie / source IP / query
 *   parameter. The ring depends only on the endpoint addresses, so a rebuild with the same endpoints maps
 *   every key to the same host, and adding or removing a host moves only ~1/n of the keys. A request with no
 *   key (header absent, …) gets a random host, as in Envoy. An ejected or excluded host on the ring is
 *   skipped by walking the ring forward.
 *
 * Health: unhealthy endpoints and hosts ejected by outlier detection are skipped. `exclude` (addresses) is
 * Envoy's previous_hosts retry predicate: avoided when possible, ignored when nothing else is left (Envoy
 * accepts the last pick after host_selection_retry_max_attempts). Panic (min_health_percent > 0): when
 * fewer than that share of the endpoints are healthy and not ejected, every endpoint is a candidate (Envoy
 * healthy_panic_threshold; Istio defaults it to 0 = never).
 */
import type {
  ConsistentHash,
  Endpoint,
  LoadBalancer,
  ServicePort,
} from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import type { Clock, HeaderLookup, HeaderRecord, RequestView, Rng } from './index.ts';
import type { OutlierDetector } from './outlier.ts';

/** What a pick may look at (a RequestView satisfies it). */
export type PickRequest = Pick<RequestView, 'headers' | 'sourceIp' | 'path'>;

const LB_LEAST_REQUEST = 0;
const LB_ROUND_ROBIN = 1;
const LB_RANDOM = 2;
const LB_RING_HASH = 3;

/** Envoy ring_hash minimum_ring_size default (also Istio's). */
const DEFAULT_RING_SIZE = 1024;
/** Our cap on the ring (Envoy's maximum_ring_size default is 8M; 1M entries is 8 MB here). */
const MAX_RING_SIZE = 1 << 20;
/** Random draws before falling back to a scan when skipping ejected/excluded hosts (Envoy: 5 host selection retries). */
const MAX_RANDOM_DRAWS = 5;

const HASH_HEADER = 0;
const HASH_COOKIE = 1;
const HASH_SOURCE_IP = 2;
const HASH_QUERY = 3;

/** 32-bit FNV-1a with a murmur3 finalizer: stable across processes and versions (unlike a seeded hash). */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export function headerValue(headers: HeaderLookup | HeaderRecord, name: string): string | undefined {
  const v = typeof headers === 'function' ? headers(name) : headers[name];
  if (v === undefined) return undefined;
  if (typeof v === 'string') return v;
  return v.length === 1 ? (v[0] as string) : v.join(',');
}

/** The value of cookie `name` in a Cookie header, or undefined. */
export function cookieValue(cookie: string, name: string): string | undefined {
  let i = 0;
  while (i < cookie.length) {
    while (cookie.charCodeAt(i) === 0x20) i++;
    const semi = cookie.indexOf(';', i);
    const end = semi === -1 ? cookie.length : semi;
    const eq = cookie.indexOf('=', i);
    if (eq !== -1 && eq < end && eq - i === name.length && cookie.startsWith(name, i)) {
      return cookie.slice(eq + 1, end).trim();
    }
    i = end + 1;
  }
  return undefined;
}

/** The first value of query parameter `name` in a raw request target (names and values percent-decoded). */
export function queryParam(path: string, name: string): string | undefined {
  const q = path.indexOf('?');
  if (q === -1) return undefined;
  let n = path.indexOf('#', q);
  if (n === -1) n = path.length;
  let i = q + 1;
  while (i < n) {
    let end = path.indexOf('&', i);
    if (end === -1 || end > n) end = n;
    const eq = path.indexOf('=', i);
    const keyEnd = eq !== -1 && eq < end ? eq : end;
    if (keyEquals(path, i, keyEnd, name)) {
      return keyEnd === end ? '' : decodeComponent(path.slice(keyEnd + 1, end));
    }
    i = end + 1;
  }
  return undefined;
}

function keyEquals(path: string, from: number, to: number, name: string): boolean {
  if (to - from === name.length && path.startsWith(name, from)) return true;
  for (let k = from; k < to; k++) {
    const c = path.charCodeAt(k);
    if (c === 0x25 || c === 0x2b) return decodeComponent(path.slice(from, to)) === name;
  }
  return false;
}

export function decodeComponent(s: string): string {
  if (s.indexOf('%') === -1 && s.indexOf('+') === -1) return s;
  try {
    return decodeURIComponent(s.replaceAll('+', ' '));
  } catch {
    return s;
  }
}

export interface EndpointPickerOptions {
  readonly servicePort: ServicePort | undefined;
  /** The service port number (also when the service lists no ServicePort for it). */
  readonly port: number;
  readonly loadBalancer: LoadBalancer | undefined;
  readonly outlier: OutlierDetector | null;
  readonly rng: Rng;
  readonly clock: Clock;
}

export class EndpointPicker {
  readonly port: number;
  /** Candidates: endpoints in the subset exposing the port (healthy or not), sorted by address. */
  endpoints: readonly Endpoint[] = [];
  private healthy: Endpoint[] = [];
  private servicePort: ServicePort | undefined;
  private policy = LB_LEAST_REQUEST;
  private hashOn = HASH_HEADER;
  private hashKey = '';
  private ringSize = DEFAULT_RING_SIZE;
  private ringHashes: Uint32Array = new Uint32Array(0);
  private ringHosts: Int32Array = new Int32Array(0);
  private cursor = 0;
  private readonly active = new Map<string, number>();
  private readonly outlier: OutlierDetector | null;
  private readonly rng: Rng;
  private readonly clock: Clock;

  constructor(opts: EndpointPickerOptions) {
    this.port = opts.port;
    this.servicePort = opts.servicePort;
    this.outlier = opts.outlier;
    this.rng = opts.rng;
    this.clock = opts.clock;
    this.setPolicy(opts.loadBalancer);
    this.cursor = Math.floor(this.rng() * 1024);
  }

  /** The load-balancer policy name in effect (for debugging / config dumps). */
  get policyName(): string {
    return ['LEAST_REQUEST', 'ROUND_ROBIN', 'RANDOM', 'RING_HASH'][this.policy] as string;
  }

  /** New policy (xDS push). Rebuild the ring through update() afterwards. */
  setPolicy(lb: LoadBalancer | undefined, servicePort?: ServicePort): void {
    if (servicePort !== undefined) this.servicePort = servicePort;
    const ch: ConsistentHash | undefined = lb?.consistentHash;
    if (ch?.key !== undefined) {
      this.policy = LB_RING_HASH;
      const k = ch.key;
      if (k.$case === 'httpHeaderName') {
        this.hashOn = HASH_HEADER;
        this.hashKey = k.value.toLowerCase();
      } else if (k.$case === 'httpCookie') {
        this.hashOn = HASH_COOKIE;
        this.hashKey = k.value;
      } else if (k.$case === 'useSourceIp') {
        this.hashOn = HASH_SOURCE_IP;
      } else {
        this.hashOn = HASH_QUERY;
        this.hashKey = k.value;
      }
      const min = Number(ch.minimumRingSize);
      this.ringSize = min > 0 ? Math.min(min, MAX_RING_SIZE) : DEFAULT_RING_SIZE;
      return;
    }
    switch (lb?.simple) {
      case 1:
        this.policy = LB_ROUND_ROBIN;
        break;
      case 3:
      case 4:
        this.policy = LB_RANDOM;
        break;
      default:
        this.policy = LB_LEAST_REQUEST;
    }
  }

  /**
   * The endpoints of the subset (all ports; filtered here to the ones exposing this port). In-flight counts
   * of endpoints that remain are kept.
   */
  update(subsetEndpoints: readonly Endpoint[]): void {
    const port = this.port;
    const list = subsetEndpoints.filter((ep) => hasPort(ep, port));
    list.sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
    this.endpoints = list;
    this.healthy = list.filter((ep) => ep.healthy);
    const keep = new Set(list.map((ep) => ep.address));
    for (const addr of this.active.keys()) if (!keep.has(addr)) this.active.delete(addr);
    if (this.policy === LB_RING_HASH) this.buildRing();
    else {
      this.ringHashes = new Uint32Array(0);
      this.ringHosts = new Int32Array(0);
    }
  }

  /** The target port to dial on `ep` for this service port. */
  targetPort(ep: Endpoint): number {
    const t = ep.ports[this.port];
    if (t !== undefined && t !== 0) return t;
    const sp = this.servicePort;
    return sp !== undefined && sp.targetPort !== 0 ? sp.targetPort : this.port;
  }

  /** In-flight requests to `ep` as counted here. */
  activeRequests(ep: Endpoint): number {
    return this.active.get(ep.address) ?? 0;
  }

  onRequestStart(ep: Endpoint): void {
    this.active.set(ep.address, (this.active.get(ep.address) ?? 0) + 1);
  }

  onRequestEnd(ep: Endpoint): void {
    const n = this.active.get(ep.address);
    if (n !== undefined && n > 0) this.active.set(ep.address, n - 1);
  }

  /**
   * Picks an endpoint, or undefined when none is usable (→ 503, response flag UH "no healthy upstream").
   * `exclude`: addresses tried already by this request (retries).
   */
  pick(req: PickRequest, exclude?: ReadonlySet<string> | null, now?: number): Endpoint | undefined {
    let pool = this.healthy;
    if (pool.length === 0 && this.endpoints.length === 0) return undefined;
    const outlier = this.outlier?.enabled ? this.outlier : null;
    const t = outlier !== null ? (now ?? this.clock()) : 0;
    let checkEjected = outlier !== null;
    // Panic mode: too few usable hosts → use every endpoint, ignoring health and ejections.
    if (outlier !== null && outlier.minHealthPercent > 0) {
      let usable = 0;
      for (let i = 0; i < pool.length; i++) if (!outlier.isEjected(pool[i] as Endpoint, t)) usable++;
      if (100 * usable < outlier.minHealthPercent * this.endpoints.length) {
        pool = this.endpoints as Endpoint[];
        checkEjected = false;
      }
    }
    if (pool.length === 0) return undefined;
    const ex = exclude !== undefined && exclude !== null && exclude.size > 0 ? exclude : null;
    const o = checkEjected ? outlier : null;
    let ep = this.pickFrom(pool, req, o, ex, t);
    // Every usable host tried already: previous_hosts gives up and a tried host is retried.
    if (ep === undefined && ex !== null) ep = this.pickFrom(pool, req, o, null, t);
    return ep;
  }

  private pickFrom(
    pool: readonly Endpoint[],
    req: PickRequest,
    outlier: OutlierDetector | null,
    exclude: ReadonlySet<string> | null,
    now: number,
  ): Endpoint | undefined {
    const n = pool.length;
    const filtering = outlier !== null || exclude !== null;
    switch (this.policy) {
      case LB_ROUND_ROBIN: {
        for (let k = 0; k < n; k++) {
          const ep = pool[this.cursor++ % n] as Endpoint;
          if (this.cursor >= 0x3fffffff) this.cursor = 0;
          if (!filtering || usable(ep, outlier, exclude, now)) return ep;
        }
        return undefined;
      }
      case LB_RING_HASH: {
        if (pool === this.healthy && this.ringHosts.length > 0) {
          const key = this.hashInput(req);
          if (key !== undefined) return this.ringPick(hash32(key), outlier, exclude, now);
        }
        return this.randomPick(pool, outlier, exclude, now);
      }
      case LB_RANDOM:
        return this.randomPick(pool, outlier, exclude, now);
      default: {
        if (n === 1) {
          const ep = pool[0] as Endpoint;
          return !filtering || usable(ep, outlier, exclude, now) ? ep : undefined;
        }
        let a: Endpoint | undefined;
        let b: Endpoint | undefined;
        for (let d = 0; d < MAX_RANDOM_DRAWS && a === undefined; d++) {
          const ep = pool[Math.floor(this.rng() * n)] as Endpoint;
          if (!filtering || usable(ep, outlier, exclude, now)) a = ep;
        }
        for (let d = 0; d < MAX_RANDOM_DRAWS && b === undefined; d++) {
          const ep = pool[Math.floor(this.rng() * n)] as Endpoint;
          if (ep !== a && (!filtering || usable(ep, outlier, exclude, now))) b = ep;
        }
        if (a === undefined) a = scan(pool, outlier, exclude, now, Math.floor(this.rng() * n));
        if (a === undefined) return undefined;
        if (b === undefined) return a;
        return this.activeRequests(b) < this.activeRequests(a) ? b : a;
      }
    }
  }

  private randomPick(
    pool: readonly Endpoint[],
    outlier: OutlierDetector | null,
    exclude: ReadonlySet<string> | null,
    now: number,
  ): Endpoint | undefined {
    const n = pool.length;
    const filtering = outlier !== null || exclude !== null;
    for (let d = 0; d < MAX_RANDOM_DRAWS; d++) {
      const ep = pool[Math.floor(this.rng() * n)] as Endpoint;
      if (!filtering || usable(ep, outlier, exclude, now)) return ep;
    }
    return scan(pool, outlier, exclude, now, Math.floor(this.rng() * n));
  }

  private hashInput(req: PickRequest): string | undefined {
    switch (this.hashOn) {
      case HASH_HEADER:
        return headerValue(req.headers, this.hashKey);
      case HASH_COOKIE: {
        const c = headerValue(req.headers, 'cookie');
        return c === undefined ? undefined : cookieValue(c, this.hashKey);
      }
      case HASH_SOURCE_IP:
        return req.sourceIp === '' ? undefined : req.sourceIp;
      default:
        return queryParam(req.path, this.hashKey);
    }
  }

  private buildRing(): void {
    const hosts = this.healthy;
    const n = hosts.length;
    if (n === 0) {
      this.ringHashes = new Uint32Array(0);
      this.ringHosts = new Int32Array(0);
      return;
    }
    const perHost = Math.max(1, Math.ceil(this.ringSize / n));
    const total = perHost * n;
    const entries = new Float64Array(total);
    // Pack hash (high) and host index (low) in one double so one numeric sort orders both.
    for (let h = 0; h < n; h++) {
      const addr = (hosts[h] as Endpoint).address;
      for (let r = 0; r < perHost; r++) entries[h * perHost + r] = hash32(`${addr}_${r}`) * 0x200000 + h;
    }
    entries.sort();
    this.ringHashes = new Uint32Array(total);
    this.ringHosts = new Int32Array(total);
    for (let i = 0; i < total; i++) {
      const v = entries[i] as number;
      const h = v % 0x200000;
      this.ringHashes[i] = (v - h) / 0x200000;
      this.ringHosts[i] = h;
    }
  }

  private ringPick(
    key: number,
    outlier: OutlierDetector | null,
    exclude: ReadonlySet<string> | null,
    now: number,
  ): Endpoint | undefined {
    const hashes = this.ringHashes;
    const total = hashes.length;
    let lo = 0;
    let hi = total;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((hashes[mid] as number) < key) lo = mid + 1;
      else hi = mid;
    }
    const hosts = this.healthy;
    const filtering = outlier !== null || exclude !== null;
    for (let k = 0; k < total; k++) {
      const ep = hosts[this.ringHosts[(lo + k) % total] as number] as Endpoint;
      if (!filtering || usable(ep, outlier, exclude, now)) return ep;
      // Every host appears perHost times; after a full pass of distinct hosts give up quickly.
      if (k > hosts.length * 4 && k > 64) break;
    }
    return scan(hosts, outlier, exclude, now, 0);
  }
}

function hasPort(ep: Endpoint, port: number): boolean {
  const t = ep.ports[port];
  if (t !== undefined) return true;
  // No port map at all (e.g. a ServiceEntry endpoint): it serves every service port.
  for (const _ in ep.ports) return false;
  return true;
}

function usable(
  ep: Endpoint,
  outlier: OutlierDetector | null,
  exclude: ReadonlySet<string> | null,
  now: number,
): boolean {
  if (exclude?.has(ep.address)) return false;
  return outlier === null || !outlier.isEjected(ep, now);
}

function scan(
  pool: readonly Endpoint[],
  outlier: OutlierDetector | null,
  exclude: ReadonlySet<string> | null,
  now: number,
  start: number,
): Endpoint | undefined {
  const n = pool.length;
  for (let k = 0; k < n; k++) {
    const ep = pool[(start + k) % n] as Endpoint;
    if (usable(ep, outlier, exclude, now)) return ep;
  }
  return undefined;
}
