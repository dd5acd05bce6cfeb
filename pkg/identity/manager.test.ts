import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { isMeshError } from '../errors/index.ts';
import { FakeCa } from '../testing/fake-ca.ts';
import { verifyChain } from './chain.ts';
import { CertManager, type CertManagerOptions, MAX_BACKOFF_MS } from './manager.ts';
import type { Identity } from './spiffe.ts';
import { generateP256 } from './x509.ts';

const ident = (sa: string): Identity => ({
  trustDomain: 'cluster.local',
  namespace: 'default',
  serviceAccount: sa,
});
const HOUR = 3_600_000;
// Synchronous keys keep fake-timer tests deterministic (no thread-pool work racing the fake clock).
const generateKey: CertManagerOptions['generateKey'] = async () => generateP256().privateKey;

/** Lets the promise jobs and async key generation of a fetch run under fake timers. */
async function settle(rounds = 10) {
  for (let i = 0; i < rounds; i++) {
    await vi.advanceTimersByTimeAsync(0);
    await new Promise<void>((r) => setImmediate(r));
  }
}

describe('CertManager', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('fetches on demand once for concurrent callers and returns a verifiable certificate', async () => {
    const ca = new FakeCa();
    const m = new CertManager({ ca, generateKey });
    const [a, b] = await Promise.all([m.get(ident('a')), m.get(ident('a'))]);
    expect(a).toBe(b);
    expect(ca.calls).toBe(1);
    expect(verifyChain(a.chainPem, a.rootsPem)).toEqual({ ok: true });
    expect(a.rootsPem).toEqual([expect.stringContaining('BEGIN CERTIFICATE')]);
    expect(JSON.stringify(a)).not.toContain('PRIVATE KEY');
    expect(a.privateKeyPem).toContain('PRIVATE KEY');
    m.close();
  });

  it('refreshes at half-life', async () => {
    const ca = new FakeCa(24 * HOUR);
    const m = new CertManager({ ca, generateKey });
    const first = await m.get(ident('a'));
    await vi.advanceTimersByTimeAsync(11 * HOUR);
    await settle();
    expect(ca.calls).toBe(1);
    await vi.advanceTimersByTimeAsync(1.1 * HOUR);
    await settle();
    expect(ca.calls).toBe(2);
    const second = m.peek(ident('a'))!;
    expect(second.serial).not.toBe(first.serial);
    m.close();
  });

  it('keeps the valid certificate and backs off with jitter, capped at 150 s, when the CA fails', async () => {
    const ca = new FakeCa(24 * HOUR);
    const m = new CertManager({ ca, generateKey, random: () => 0.999 });
    const first = await m.get(ident('a'));
    ca.failNext = 1000;
    await vi.advanceTimersByTimeAsync(12 * HOUR + 100);
    await settle();
    const callsAtFirstFailure = ca.calls;
    expect(callsAtFirstFailure).toBe(2);
    expect(m.peek(ident('a'))).toBe(first);
    expect(m.status()[0]).toMatchObject({ state: 'available', phase: 'backoff', failures: 1 });
    // Retries at ~1 s, 2 s, 4 s … then never more often than every 150 s.
    const times: number[] = [];
    let last = ca.calls;
    for (let i = 0; i < 70 && Date.now() < first.notAfter - HOUR; i++) {
      await vi.advanceTimersByTimeAsync(1000);
      await settle();
      if (ca.calls !== last) {
        times.push(Date.now());
        last = ca.calls;
      }
    }
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    expect(gaps.length).toBeGreaterThan(3);
    for (let i = 1; i < gaps.length; i++) expect(gaps[i]!).toBeGreaterThanOrEqual(gaps[i - 1]! - 1000);
    await vi.advanceTimersByTimeAsync(3 * HOUR);
    await settle();
    const before = ca.calls;
    for (let i = 0; i < (MAX_BACKOFF_MS / 10_000) * 4; i++) {
      await vi.advanceTimersByTimeAsync(10_000);
      await settle();
    }
    expect(ca.calls - before).toBeLessThanOrEqual(5);
    expect(ca.calls - before).toBeGreaterThanOrEqual(3);
    expect(m.peek(ident('a'))).toBe(first);
    // The CA recovers: the next retry replaces the certificate.
    ca.failNext = 0;
    for (let i = 0; i < MAX_BACKOFF_MS / 10_000; i++) {
      await vi.advanceTimersByTimeAsync(10_000);
      await settle();
    }
    expect(m.peek(ident('a'))!.serial).not.toBe(first.serial);
    m.close();
  });

  it('rejects an on-demand request when the CA fails and there is no certificate', async () => {
    const ca = new FakeCa();
    ca.failNext = 1;
    const m = new CertManager({ ca, generateKey });
    const err = await m.get(ident('a')).catch((e: unknown) => e);
    expect(isMeshError(err, 'MESH_ERR_IDENTITY_FETCH')).toBe(true);
    expect(String((err as Error).message)).toMatch(/fake CA: unavailable/);
    // During back-off it fails fast instead of queueing behind the timer.
    await expect(m.get(ident('a'))).rejects.toThrow(/CA failing/);
    await vi.advanceTimersByTimeAsync(1000);
    await settle();
    expect(m.peek(ident('a'))).not.toBeNull();
    m.close();
  });

  it('limits concurrency and serves on-demand before prefetch', async () => {
    const order: string[] = [];
    const ca = new FakeCa();
    const slow = {
      async fetchCertificate(id: Identity, csr: string) {
        order.push(id.serviceAccount);
        await new Promise((r) => setTimeout(r, 100));
        return ca.fetchCertificate(id, csr);
      },
    };
    const m = new CertManager({ ca: slow, generateKey, maxConcurrent: 1 });
    for (const sa of ['p1', 'p2', 'p3']) m.prefetch(ident(sa));
    const urgent = m.get(ident('urgent'));
    for (let i = 0; i < 10; i++) {
      await vi.advanceTimersByTimeAsync(100);
      await settle();
    }
    await urgent;
    expect(order[0]).toBe('p1'); // already in flight when the urgent request came
    expect(order[1]).toBe('urgent');
    expect(order.slice(2)).toEqual(['p2', 'p3']);
    m.close();
  });

  it('forget drops the identity and rejects its waiters', async () => {
    const ca = new FakeCa();
    const m = new CertManager({ ca, generateKey });
    await m.get(ident('a'));
    m.forget(ident('a'));
    expect(m.peek(ident('a'))).toBeNull();
    expect(m.identities()).toEqual([]);
    const p = m.get(ident('b'));
    m.forget(ident('b'));
    await expect(p).rejects.toThrow(/no longer needed/);
    m.close();
  });
});
