import { describe, expect, it } from 'vitest';
import type { Endpoint, LoadBalancer } from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import { Endpoint as EndpointMsg } from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import { cookieValue, EndpointPicker, hash32, queryParam } from './lb.ts';
import { OutlierDetector } from './outlier.ts';
import { bookinfo, build, ep, ManualClock, REVIEWS, req, seededRng } from './testing.ts';

function endpoints(n: number, opts: { unhealthy?: number[]; prefix?: string } = {}): Endpoint[] {
  return Array.from({ length: n }, (_, i) =>
    EndpointMsg.fromPartial({
      ...ep(`${opts.prefix ?? '10.1.0.'}${i + 1}`),
      healthy: !(opts.unhealthy ?? []).includes(i),
    }),
  );
}

/** Loose test input: `simple` as a plain number, cast to the generated type once here. */
type LbInit = {
  simple: number;
  consistentHash?: { key: { $case: string; value: string | boolean }; minimumRingSize: bigint };
};

function picker(
  lbInit: LbInit | undefined,
  eps: Endpoint[],
  opts: { outlier?: OutlierDetector; clock?: ManualClock; seed?: number } = {},
): EndpointPicker {
  const clock = opts.clock ?? new ManualClock();
  const lb = lbInit as unknown as LoadBalancer | undefined;
  const p = new EndpointPicker({
    port: 9080,
    servicePort: { port: 9080, targetPort: 8080, name: 'http', protocol: 'http' },
    loadBalancer: lb,
    outlier: opts.outlier ?? null,
    rng: seededRng(opts.seed ?? 3),
    clock: clock.fn,
  });
  p.update(eps);
  return p;
}

const tally = (p: EndpointPicker, n: number, r = req('/')) => {
  const m = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const e = p.pick(r);
    const k = e?.address ?? 'none';
    m.set(k, (m.get(k) ?? 0) + 1);
  }
  return m;
};

describe('EndpointPicker basics', () => {
  it('UNSPECIFIED is LEAST_REQUEST (Istio ≥ 1.14 default)', () => {
    expect(picker(undefined, endpoints(2)).policyName).toBe('LEAST_REQUEST');
    expect(picker({ simple: 0 }, endpoints(2)).policyName).toBe('LEAST_REQUEST');
    expect(picker({ simple: 1 }, endpoints(2)).policyName).toBe('ROUND_ROBIN');
    expect(picker({ simple: 3 }, endpoints(2)).policyName).toBe('RANDOM');
    expect(
      picker(
        { simple: 0, consistentHash: { key: { $case: 'useSourceIp', value: true }, minimumRingSize: 0n } },
        endpoints(2),
      ).policyName,
    ).toBe('RING_HASH');
  });

  it('skips unhealthy endpoints and endpoints without the port; empty → undefined', () => {
    const eps = endpoints(3, { unhealthy: [0] });
    eps.push(EndpointMsg.fromPartial({ ...ep('10.1.0.9'), ports: { 7000: 7000 } }));
    const p = picker({ simple: 1 }, eps);
    expect([...tally(p, 30).keys()].sort()).toEqual(['10.1.0.2', '10.1.0.3']);
    expect(picker({ simple: 1 }, []).pick(req('/'))).toBeUndefined();
    expect(picker({ simple: 1 }, endpoints(2, { unhealthy: [0, 1] })).pick(req('/'))).toBeUndefined();
  });

  it('targetPort: endpoint map, else the ServicePort target, else the port', () => {
    const p = picker({ simple: 1 }, endpoints(1));
    expect(p.targetPort(EndpointMsg.fromPartial({ address: 'a', ports: { 9080: 9999 } }))).toBe(9999);
    expect(p.targetPort(EndpointMsg.fromPartial({ address: 'a', ports: {} }))).toBe(8080);
  });

  it('ROUND_ROBIN cycles evenly', () => {
    const counts = tally(picker({ simple: 1 }, endpoints(3)), 300);
    expect([...counts.values()]).toEqual([100, 100, 100]);
  });

  it('RANDOM is roughly uniform', () => {
    const counts = tally(picker({ simple: 3 }, endpoints(4)), 4000);
    for (const c of counts.values()) expect(Math.abs(c - 1000)).toBeLessThan(150);
  });

  it('LEAST_REQUEST (P2C) steers away from a busy host', () => {
    const eps = endpoints(3);
    const p = picker(undefined, eps);
    for (let i = 0; i < 50; i++) p.onRequestStart(eps[0] as Endpoint);
    const counts = tally(p, 3000);
    // P2C: the busy host wins only when both draws hit it (1/9 of the time).
    expect(counts.get('10.1.0.1') ?? 0).toBeLessThan(3000 / 9 + 100);
    for (let i = 0; i < 50; i++) p.onRequestEnd(eps[0] as Endpoint);
    expect(p.activeRequests(eps[0] as Endpoint)).toBe(0);
    p.onRequestEnd(eps[0] as Endpoint); // never negative
    expect(p.activeRequests(eps[0] as Endpoint)).toBe(0);
  });

  it('exclude (previous_hosts) avoids tried hosts, but falls back to them when nothing else is left', () => {
    for (const lb of [{ simple: 1 }, { simple: 2 }, { simple: 3 }, undefined] as (LbInit | undefined)[]) {
      const p = picker(lb, endpoints(3));
      for (let i = 0; i < 30; i++) {
        expect(p.pick(req('/'), new Set(['10.1.0.1', '10.1.0.2']))?.address).toBe('10.1.0.3');
      }
      const one = picker(lb, endpoints(1));
      expect(one.pick(req('/'), new Set(['10.1.0.1']))?.address).toBe('10.1.0.1');
    }
  });

  it('keeps in-flight counts of remaining hosts across update()', () => {
    const eps = endpoints(3);
    const p = picker(undefined, eps);
    p.onRequestStart(eps[1] as Endpoint);
    p.update(endpoints(4));
    expect(p.activeRequests(eps[1] as Endpoint)).toBe(1);
    p.update(endpoints(1));
    p.update(endpoints(3));
    expect(p.activeRequests(eps[1] as Endpoint)).toBe(0);
  });
});

describe('consistent hash (ring)', () => {
  const byHeader = {
    simple: 0,
    consistentHash: { key: { $case: 'httpHeaderName' as const, value: 'X-User' }, minimumRingSize: 0n },
  };

  it('same key → same host; different keys spread over hosts', () => {
    const p = picker(byHeader, endpoints(5));
    const seen = new Map<string, string>();
    const hosts = new Set<string>();
    for (let u = 0; u < 500; u++) {
      const r = req('/', { headers: { 'x-user': `user-${u}` } });
      const a = p.pick(r)?.address as string;
      for (let k = 0; k < 3; k++) expect(p.pick(r)?.address).toBe(a);
      seen.set(`user-${u}`, a);
      hosts.add(a);
    }
    expect(hosts.size).toBe(5);
    const counts = [...hosts].map((h) => [...seen.values()].filter((v) => v === h).length);
    for (const c of counts) expect(c).toBeGreaterThan(50); // ~100 each
  });

  it('is stable across rebuilds with the same endpoints (in any order), and moves ~1/n keys when one is added', () => {
    const a = picker(byHeader, endpoints(5), { seed: 1 });
    const b = picker(byHeader, endpoints(5).reverse(), { seed: 99 });
    const c = picker(byHeader, endpoints(6), { seed: 5 });
    let moved = 0;
    const n = 2000;
    for (let u = 0; u < n; u++) {
      const r = req('/', { headers: { 'x-user': `u${u}` } });
      const x = a.pick(r)?.address;
      expect(b.pick(r)?.address).toBe(x);
      if (c.pick(r)?.address !== x) moved++;
    }
    // Ideal is 1/6 of the keys; allow ring variance.
    expect(moved / n).toBeGreaterThan(0.08);
    expect(moved / n).toBeLessThan(0.3);
  });

  it('keys by cookie, source IP and query parameter; no key → random host', () => {
    const cookie = picker(
      { simple: 0, consistentHash: { key: { $case: 'httpCookie', value: 'sid' }, minimumRingSize: 0n } },
      endpoints(4),
    );
    const r1 = req('/', { headers: { cookie: 'a=1; sid=abc; b=2' } });
    const x = cookie.pick(r1)?.address;
    for (let i = 0; i < 10; i++)
      expect(cookie.pick(req('/', { headers: { cookie: `sid=abc` } }))?.address).toBe(x);
    const src = picker(
      { simple: 0, consistentHash: { key: { $case: 'useSourceIp', value: true }, minimumRingSize: 0n } },
      endpoints(4),
    );
    const y = src.pick(req('/', { sourceIp: '10.9.9.9' }))?.address;
    for (let i = 0; i < 10; i++) expect(src.pick(req('/x', { sourceIp: '10.9.9.9' }))?.address).toBe(y);
    const q = picker(
      {
        simple: 0,
        consistentHash: { key: { $case: 'httpQueryParameterName', value: 'u' }, minimumRingSize: 0n },
      },
      endpoints(4),
    );
    const z = q.pick(req('/?u=7'))?.address;
    for (let i = 0; i < 10; i++) expect(q.pick(req('/p?a=1&u=7'))?.address).toBe(z);
    const spread = tally(q, 400, req('/no-key'));
    expect(spread.size).toBe(4);
  });

  it('an ejected host is skipped by walking the ring; the key returns once it is back', () => {
    const clock = new ManualClock();
    const outlier = new OutlierDetector({
      enabled: true,
      consecutive5xxErrors: 1,
      consecutiveGatewayErrors: 0,
      intervalMs: 1000,
      baseEjectionTimeMs: 10_000,
      maxEjectionPercent: 100,
      minHealthPercent: 0,
    });
    const eps = endpoints(4);
    outlier.setHosts(eps.map((e) => e.address));
    const p = picker(byHeader, eps, { outlier, clock });
    const r = req('/', { headers: { 'x-user': 'sticky' } });
    const home = p.pick(r) as Endpoint;
    outlier.report(home, 503, clock.now);
    const away = p.pick(r) as Endpoint;
    expect(away.address).not.toBe(home.address);
    expect(p.pick(r)?.address).toBe(away.address);
    clock.advance(10_001);
    expect(p.pick(r)?.address).toBe(home.address);
  });

  it('minimum ring size is honoured and hash32 is stable', () => {
    expect(hash32('10.0.0.1_0')).toBe(hash32('10.0.0.1_0'));
    expect(hash32('a')).not.toBe(hash32('b'));
    expect(hash32('')).toBe(hash32(''));
  });
});

describe('outlier ejection and panic in the picker', () => {
  it('ejected hosts are skipped; min_health_percent panics into using every host', () => {
    const clock = new ManualClock();
    const outlier = new OutlierDetector({
      enabled: true,
      consecutive5xxErrors: 1,
      consecutiveGatewayErrors: 0,
      intervalMs: 1000,
      baseEjectionTimeMs: 30_000,
      maxEjectionPercent: 100,
      minHealthPercent: 0,
    });
    const eps = endpoints(2);
    outlier.setHosts(eps.map((e) => e.address));
    const p = picker({ simple: 1 }, eps, { outlier, clock });
    outlier.report(eps[0] as Endpoint, 'connect-failure', clock.now);
    expect([...tally(p, 10).keys()]).toEqual(['10.1.0.2']);
    outlier.report(eps[1] as Endpoint, 500, clock.now);
    expect(p.pick(req('/'))).toBeUndefined(); // no healthy upstream (Istio default: no panic)
    outlier.configure({
      enabled: true,
      consecutive5xxErrors: 1,
      consecutiveGatewayErrors: 0,
      intervalMs: 1000,
      baseEjectionTimeMs: 30_000,
      maxEjectionPercent: 100,
      minHealthPercent: 50,
    });
    expect(tally(p, 10).size).toBe(2); // panic: every host
  });
});

describe('helpers', () => {
  it('cookieValue', () => {
    expect(cookieValue('a=1; sid=x y; b=2', 'sid')).toBe('x y');
    expect(cookieValue('sidx=1; sid=2', 'sid')).toBe('2');
    expect(cookieValue('a=1', 'sid')).toBeUndefined();
  });
  it('queryParam', () => {
    expect(queryParam('/p?a=1&b=%20x&c', 'b')).toBe(' x');
    expect(queryParam('/p?a=1&c', 'c')).toBe('');
    expect(queryParam('/p?a=1#b=2', 'b')).toBeUndefined();
    expect(queryParam('/p', 'a')).toBeUndefined();
    expect(queryParam('/p?a%62=1', 'ab')).toBe('1');
  });
});

describe('ClusterState through the table', () => {
  it('subset traffic policy overrides the service policy field by field', () => {
    const { table } = build(
      bookinfo({
        reviews: {
          trafficPolicy: {
            loadBalancer: { simple: 3 },
            connectionPool: { maxConnections: 7, http2MaxRequests: 9 },
          },
          subsets: [
            { name: 'v1', labels: { version: 'v1' }, trafficPolicy: { loadBalancer: { simple: 1 } } },
            { name: 'v2', labels: { version: 'v2' } },
          ],
        },
      }),
    );
    const svc = table.byName(REVIEWS)!;
    const v1 = table.cluster(svc, 'v1')!;
    const v2 = table.cluster(svc, 'v2')!;
    expect(v1.picker(9080).policyName).toBe('ROUND_ROBIN');
    expect(v1.limiter.maxConnections).toBe(7); // inherited field
    expect(v2.picker(9080).policyName).toBe('RANDOM');
    expect(table.cluster(svc, 'v9')).toBeUndefined();
    expect(v1.picker(9080).endpoints.map((e) => e.address)).toEqual(['10.0.0.31']);
    expect(table.cluster(svc, '')!.picker(9080).endpoints).toHaveLength(3);
  });

  it('state survives a rebuild: same ClusterState object, counters, in-flight and ejections kept', () => {
    const clock = new ManualClock();
    const cfg = () =>
      bookinfo({
        reviews: {
          trafficPolicy: {
            outlierDetection: { enabled: true, consecutive5xxErrors: 1, maxEjectionPercent: 100 },
          },
        },
      });
    const first = build(cfg(), { clock: clock.fn }).table;
    const c1 = first.cluster(first.byName(REVIEWS)!, '')!;
    const e = c1.picker(9080).pick(req('/')) as Endpoint;
    c1.picker(9080).onRequestStart(e);
    c1.limiter.tryStartRequest();
    c1.outlier.report(e, 503, clock.now);
    const second = build(cfg(), { clock: clock.fn, previous: first }).table;
    const c2 = second.cluster(second.byName(REVIEWS)!, '')!;
    expect(c2).toBe(c1);
    expect(c2.limiter.active).toBe(1);
    expect(c2.picker(9080).activeRequests(e)).toBe(1);
    expect(c2.outlier.isEjected(e, clock.now)).toBe(true);
    expect(c2.service).toBe(second.byName(REVIEWS));
  });
});
