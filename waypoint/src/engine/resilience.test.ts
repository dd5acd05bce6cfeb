import { describe, expect, it } from 'vitest';
import {
  Endpoint as EndpointMsg,
  type OutlierDetection,
} from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import { ConnectionPoolLimiter } from './circuit.ts';
import type { CompiledRetryPolicy } from './index.ts';
import { OutlierDetector } from './outlier.ts';
import {
  backoffMs,
  compileRetryPolicy,
  ISTIO_DEFAULT_RETRY_POLICY,
  type RetryOutcome,
  shouldRetry,
} from './retry.ts';
import { bookinfo, build, fixedRng, PRODUCTPAGE, seededRng } from './testing.ts';

describe('ConnectionPoolLimiter (circuit breaking)', () => {
  it('0 = unlimited (Istio writes 2^32-1 for unset thresholds)', () => {
    const l = new ConnectionPoolLimiter();
    let refused = 0;
    for (let i = 0; i < 10_000; i++) {
      if (!l.tryOpenConnection()) refused++;
      if (!l.tryStartRequest()) refused++;
      if (!l.tryEnqueuePending()) refused++;
      if (!l.tryStartRetry()) refused++;
    }
    expect(refused).toBe(0);
    expect(l.maxRequestsPerConnection).toBe(0);
  });

  it('C9: maxConnections 1, http2MaxRequests 3, maxRequestsPerConnection 1 → the 4th concurrent request overflows', () => {
    const { table } = build(
      bookinfo({
        productpage: {
          trafficPolicy: {
            connectionPool: { maxConnections: 1, http2MaxRequests: 3, maxRequestsPerConnection: 1 },
          },
        },
      }),
    );
    const l = table.cluster(table.byName(PRODUCTPAGE)!, '')!.limiter;
    expect(l.maxRequestsPerConnection).toBe(1);
    // one client at a time: always fine
    for (let i = 0; i < 100; i++) {
      expect(l.tryStartRequest()).toBe(true);
      l.endRequest();
    }
    // four concurrent clients: three in flight, the fourth gets 503 UO
    expect([l.tryStartRequest(), l.tryStartRequest(), l.tryStartRequest(), l.tryStartRequest()]).toEqual([
      true,
      true,
      true,
      false,
    ]);
    expect(l.requestOverflows).toBe(1);
    l.endRequest();
    expect(l.tryStartRequest()).toBe(true);
    // a second connection is refused; the request waits as pending (unlimited pending here)
    expect(l.tryOpenConnection()).toBe(true);
    expect(l.tryOpenConnection()).toBe(false);
    expect(l.tryEnqueuePending()).toBe(true);
    l.connectionClosed();
    expect(l.tryOpenConnection()).toBe(true);
  });

  it('pending and retry budgets; releases never go negative; reconfigure keeps counters', () => {
    const l = new ConnectionPoolLimiter({
      maxConnections: 0,
      http1MaxPendingRequests: 1,
      http2MaxRequests: 0,
      maxRequestsPerConnection: 0,
      maxRetries: 2,
      connectTimeoutMs: 250,
      idleTimeoutMs: 0,
    });
    expect(l.connectTimeoutMs).toBe(250);
    expect(l.tryEnqueuePending()).toBe(true);
    expect(l.tryEnqueuePending()).toBe(false);
    l.dequeuePending();
    l.dequeuePending();
    expect(l.pending).toBe(0);
    expect(l.tryStartRetry()).toBe(true);
    expect(l.tryStartRetry()).toBe(true);
    expect(l.tryStartRetry()).toBe(false);
    expect(l.retryOverflows).toBe(1);
    l.configure(undefined);
    expect(l.activeRetries).toBe(2);
    expect(l.tryStartRetry()).toBe(true);
  });
});

function od(p: Partial<OutlierDetection>): OutlierDetection {
  return {
    enabled: true,
    consecutive5xxErrors: 0,
    consecutiveGatewayErrors: 0,
    intervalMs: 0,
    baseEjectionTimeMs: 0,
    maxEjectionPercent: 0,
    minHealthPercent: 0,
    ...p,
  };
}

const host = (a: string) => EndpointMsg.fromPartial({ address: a, healthy: true });

describe('OutlierDetector', () => {
  it('Envoy/Istio defaults: 5 consecutive 5xx, 30 s base ejection, 10 % max ejection', () => {
    const d = new OutlierDetector(od({}));
    expect([
      d.consecutive5xx,
      d.consecutiveGateway,
      d.intervalMs,
      d.baseEjectionMs,
      d.maxEjectionPercent,
    ]).toEqual([5, 0, 10_000, 30_000, 10]);
    const off = new OutlierDetector(od({ enabled: false }));
    const a = host('a');
    for (let i = 0; i < 100; i++) off.report(a, 503, 0);
    expect(off.isEjected(a, 0)).toBe(false);
  });

  it('ejects after N consecutive 5xx, returns after base × count, and ejects longer the second time', () => {
    const d = new OutlierDetector(
      od({ consecutive5xxErrors: 3, baseEjectionTimeMs: 1000, intervalMs: 1000, maxEjectionPercent: 100 }),
    );
    const a = host('10.0.0.1');
    d.setHosts(['10.0.0.1', '10.0.0.2']);
    let t = 0;
    d.report(a, 500, t);
    d.report(a, 502, t);
    d.report(a, 200, t); // success resets
    d.report(a, 500, t);
    d.report(a, 'reset', t);
    expect(d.isEjected(a, t)).toBe(false);
    d.report(a, 'connect-failure', t); // local-origin failures count as 5xx
    expect(d.isEjected(a, t)).toBe(true);
    expect(d.isEjected(a, t + 999)).toBe(true);
    expect(d.isEjected(a, t + 1000)).toBe(false); // back after base × 1
    t = 1500;
    for (let i = 0; i < 3; i++) d.report(a, 503, t);
    expect(d.isEjected(a, t + 1999)).toBe(true); // base × 2
    expect(d.isEjected(a, t + 2000)).toBe(false);
    // a long healthy stretch decays the multiplier back
    t = 100_000;
    for (let i = 0; i < 3; i++) d.report(a, 503, t);
    expect(d.isEjected(a, t + 1000)).toBe(false);
    expect(d.ejectionsTotal).toBe(3);
  });

  it('consecutive gateway errors count only 502/503/504 and local failures', () => {
    const d = new OutlierDetector(
      od({ consecutive5xxErrors: 100, consecutiveGatewayErrors: 2, maxEjectionPercent: 100 }),
    );
    const a = host('a');
    d.setHosts(['a']);
    d.report(a, 500, 0);
    d.report(a, 502, 0);
    d.report(a, 500, 0); // breaks the gateway streak
    d.report(a, 504, 0);
    expect(d.isEjected(a, 0)).toBe(false);
    d.report(a, 'timeout', 0);
    expect(d.isEjected(a, 0)).toBe(true);
  });

  it('max_ejection_percent caps ejections (the first one is always allowed)', () => {
    const d = new OutlierDetector(od({ consecutive5xxErrors: 1, maxEjectionPercent: 10 }));
    d.setHosts(['a', 'b', 'c']);
    d.report(host('a'), 503, 0);
    d.report(host('b'), 503, 0);
    expect(d.isEjected(host('a'), 0)).toBe(true);
    expect(d.isEjected(host('b'), 0)).toBe(false);
    expect(d.ejectionsOverflow).toBe(1);
    expect(d.ejectedCount(0)).toBe(1);
  });

  it('removed hosts lose their state', () => {
    const d = new OutlierDetector(od({ consecutive5xxErrors: 1, maxEjectionPercent: 100 }));
    d.setHosts(['a', 'b']);
    d.report(host('a'), 503, 0);
    d.setHosts(['b']);
    expect(d.isEjected(host('a'), 0)).toBe(false);
  });
});

describe('shouldRetry (Envoy retry_on)', () => {
  const policy = (retryOn: string[], codes: number[] = [], attempts = 3): CompiledRetryPolicy =>
    compileRetryPolicy(
      { attempts, perTryTimeoutMs: 0, retryOn, retriableStatusCodes: codes, backoffBaseMs: 0 },
      () => {
        throw new Error('unknown');
      },
    ) as CompiledRetryPolicy;

  const cases: [string[], RetryOutcome, boolean][] = [
    [['5xx'], { status: 500 }, true],
    [['5xx'], { status: 503 }, true],
    [['5xx'], { status: 404 }, false],
    [['5xx'], { reset: true }, true],
    [['5xx'], { connectFailure: true }, true],
    [['5xx'], { refusedStream: true }, true],
    [['5xx'], { perTryTimeout: true }, true],
    [['gateway-error'], { status: 502 }, true],
    [['gateway-error'], { status: 504 }, true],
    [['gateway-error'], { status: 500 }, false],
    [['gateway-error'], { connectFailure: true }, true],
    [['reset'], { reset: true }, true],
    [['reset'], { status: 503 }, false],
    [['connect-failure'], { connectFailure: true }, true],
    [['connect-failure'], { reset: true }, false],
    [['connect-failure'], { status: 503 }, false],
    [['refused-stream'], { refusedStream: true }, true],
    [['refused-stream'], { reset: true }, false],
    [['retriable-4xx'], { status: 409 }, true],
    [['retriable-4xx'], { status: 404 }, false],
    [['retriable-status-codes'], { status: 418 }, true],
    [['retriable-status-codes'], { status: 419 }, false],
    [['unavailable'], { status: 200, grpcStatus: 14 }, true],
    [['cancelled'], { status: 200, grpcStatus: 1 }, true],
    [['deadline-exceeded'], { status: 200, grpcStatus: 4 }, true],
    [['resource-exhausted'], { status: 200, grpcStatus: 8 }, true],
    [['internal'], { status: 200, grpcStatus: 13 }, true],
    [['unavailable'], { status: 200, grpcStatus: 13 }, false],
    [['unavailable'], { status: 200 }, false],
    [['5xx,gateway-error', 'connect-failure'], { status: 502 }, true],
  ];
  it.each(cases)('%j with %j → %s', (retryOn, outcome, want) => {
    expect(shouldRetry(policy(retryOn, [418]), outcome, 1)).toBe(want);
  });

  it('attempts bound the retries; null policy never retries', () => {
    const p = policy(['5xx'], [], 2);
    expect(shouldRetry(p, { status: 503 }, 1)).toBe(true);
    expect(shouldRetry(p, { status: 503 }, 2)).toBe(true);
    expect(shouldRetry(p, { status: 503 }, 3)).toBe(false);
    expect(shouldRetry(null, { status: 503 }, 1)).toBe(false);
  });

  it("Istio's default policy: 2 retries on connect-failure, refused-stream, unavailable, cancelled, 503", () => {
    const p = ISTIO_DEFAULT_RETRY_POLICY;
    expect(p.attempts).toBe(2);
    expect(p.avoidPreviousHosts).toBe(true);
    expect(p.hostSelectionRetryMaxAttempts).toBe(5);
    expect(shouldRetry(p, { connectFailure: true }, 1)).toBe(true);
    expect(shouldRetry(p, { refusedStream: true }, 1)).toBe(true);
    expect(shouldRetry(p, { status: 503 }, 1)).toBe(true);
    expect(shouldRetry(p, { status: 500 }, 1)).toBe(false);
    expect(shouldRetry(p, { reset: true }, 1)).toBe(false);
    expect(shouldRetry(p, { status: 200, grpcStatus: 14 }, 2)).toBe(true);
    expect(shouldRetry(p, { status: 503 }, 3)).toBe(false);
  });

  it('retry block without retry_on gets the Istio default conditions; attempts 0 = no retries', () => {
    const p = compileRetryPolicy(
      { attempts: 4, perTryTimeoutMs: 0, retryOn: [], retriableStatusCodes: [], backoffBaseMs: 0 },
      () => {},
    );
    expect(p?.retryOn).toBe(ISTIO_DEFAULT_RETRY_POLICY.retryOn);
    expect(p?.retriableStatusCodes.has(503)).toBe(true);
    expect(
      compileRetryPolicy(
        { attempts: 0, perTryTimeoutMs: 0, retryOn: ['5xx'], retriableStatusCodes: [], backoffBaseMs: 0 },
        () => {},
      ),
    ).toBeNull();
    expect(compileRetryPolicy(undefined, () => {})).toBe(ISTIO_DEFAULT_RETRY_POLICY);
  });
});

describe('backoffMs (Envoy: fully jittered, base 25 ms, max 10 × base)', () => {
  const p = ISTIO_DEFAULT_RETRY_POLICY;
  it('retry N waits in [0, (2^N − 1) × base), capped at max', () => {
    expect(backoffMs(p, 1, fixedRng(0.999999))).toBe(24);
    expect(backoffMs(p, 2, fixedRng(0.999999))).toBe(74);
    expect(backoffMs(p, 3, fixedRng(0.999999))).toBe(174);
    expect(backoffMs(p, 4, fixedRng(0.999999))).toBe(249); // 375 capped at 250
    expect(backoffMs(p, 40, fixedRng(0.999999))).toBe(249);
    expect(backoffMs(p, 1, fixedRng(0))).toBe(0);
  });
  it('uses the configured base', () => {
    const q = compileRetryPolicy(
      { attempts: 1, perTryTimeoutMs: 0, retryOn: ['5xx'], retriableStatusCodes: [], backoffBaseMs: 100 },
      () => {},
    )!;
    expect(q.maxMs).toBe(1000);
    const rng = seededRng(9);
    for (let i = 0; i < 200; i++) {
      const b = backoffMs(q, 2, rng);
      expect(b).toBeGreaterThanOrEqual(0);
      expect(b).toBeLessThan(300);
    }
  });
});
