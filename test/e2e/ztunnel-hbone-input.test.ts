/**
 * Hostile and malformed input on a meshed pod's HBONE port (15008) in a 2-node lab (issue #8), sent by the test
 * process from inside a pod of a namespace that is not enrolled (`outside/prober`, node-0) to the meshed pod
 * `mesh/server` (node-1) — the way any pod of the cluster could. Client certificates are minted by the test
 * with the mesh root's key (Secret istio-system/istio-ca-secret), so "valid" means what a meshed peer holds.
 *
 *   no client certificate → TLS handshake refused        wrong trust domain (same root) → refused
 *   valid certificate, GET instead of CONNECT → 400      authority not IP:port → 400
 *   authority of another pod's IP → 400                  garbage instead of TLS → closed
 *   many idle/trickling handshakes (slowloris) → all closed at the handshake timeout, counted in a metric
 *   a well-formed CONNECT with the same certificate → 200 and the app answers (so the refusals are not a
 *   broken test client)
 * Throughout, a meshed client (`mesh/client`, node-0) keeps getting 200s from the server, and the ztunnel
 * pods are the same, never restarted. Each refusal is also checked on ztunnel's
 * `istio_ztunnel_hbone_inbound_*` metrics (exact increases).
 */
import type { ClientHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import type { V1Pod } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectInNetns } from '../../pkg/netns/index.ts';
import { eventually, sleep } from '../../pkg/testing/index.ts';
import {
  type Credentials,
  closeHbone,
  echoPod,
  type HboneAttempt,
  hboneRequest,
  httpGet,
  type MeshRoot,
  meshRoot,
  mintCertificate,
  name,
  podIp,
  restarts,
  type Sample,
  serviceAccount,
  sleeperPod,
  spiffe,
  TestLab,
  total,
  uid,
} from './helpers.ts';

const t = new TestLab();
const MESH = 'mesh';
const OUTSIDE = 'outside';
const APP_PORT = 3000;
const REFUSED = 'istio_ztunnel_hbone_inbound_refused_total';
const STREAMS = 'istio_ztunnel_hbone_inbound_streams_total';
/** pkg/hbone TLS_HANDSHAKE_TIMEOUT_MS. */
const HANDSHAKE_TIMEOUT_MS = 10_000;
const SLOWLORIS = 100;

let server: V1Pod;
let client: V1Pod;
let prober: V1Pod;
let proberNetns = '';
let root: MeshRoot;
let valid: Credentials;
let evil: Credentials;
let ztunnelsBefore: V1Pod[];

/** The meshed client's steady traffic: one new connection every 100 ms to the server. */
const steady = { ok: 0, failed: [] as string[], stop: false, done: Promise.resolve() };

/** A raw TCP connection from the prober pod to the server's 15008 (no capture: `outside` is not enrolled). */
function rawToHbone(): Promise<Socket> {
  return connectInNetns({ netns: proberNetns, host: podIp(server), port: 15008, timeoutMs: 5000 });
}

/** TLS + HTTP/2 from the prober to the server's 15008, then one request with `headers`. */
function attempt(creds: Credentials | null, headers: Record<string, string>): Promise<HboneAttempt> {
  return hboneRequest({
    netns: proberNetns,
    ip: podIp(server),
    creds,
    caPem: root.certPem,
    serverId: spiffe(MESH, 'server'),
    headers,
  });
}

async function serverMetrics(): Promise<Sample[]> {
  return t.ztunnelMetrics(await t.ztunnelOn('node-1'));
}

async function expectIncrease(
  before: Sample[],
  metric: string,
  match: Record<string, string>,
  by: number,
  timeoutMs = 5_000,
): Promise<void> {
  await eventually(
    async () => expect(total(await serverMetrics(), metric, match) - total(before, metric, match)).toBe(by),
    { timeoutMs, intervalMs: 200, what: `${metric}${JSON.stringify(match)} +${by}` },
  );
}

beforeAll(async () => {
  const up = await t.up({ nodes: 2 });
  console.log(`lab up (mesh): ${(up.ms / 1000).toFixed(1)}s, block ${t.block}`);
  await t.apply('', {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: MESH, labels: { 'istio.io/dataplane-mode': 'ambient' } },
  });
  await t.kubectl(['create', 'namespace', OUTSIDE]);
  await t.apply(
    MESH,
    serviceAccount('server'),
    serviceAccount('client'),
    echoPod('server', { node: 'node-1', sa: 'server' }),
    sleeperPod('client', { node: 'node-0', sa: 'client' }),
  );
  await t.apply(OUTSIDE, sleeperPod('prober', { node: 'node-0' }));
  server = await t.readyPod(MESH, 'app=server');
  client = await t.readyPod(MESH, 'app=client');
  prober = await t.readyPod(OUTSIDE, 'app=prober');
  proberNetns = await t.netns(OUTSIDE, name(prober));
  root = await meshRoot(t);
  valid = mintCertificate(root, spiffe(OUTSIDE, 'prober'));
  evil = mintCertificate(root, 'spiffe://evil.local/ns/x/sa/y');

  const clientNetns = await t.netns(MESH, name(client));
  const get = () => httpGet({ netns: clientNetns, host: podIp(server), port: APP_PORT, path: '/steady' });
  await eventually(async () => expect((await get()).status).toBe(200), {
    timeoutMs: 30_000,
    intervalMs: 300,
    what: 'meshed client → server 200',
  });
  ztunnelsBefore = await t.ztunnels();
  expect(ztunnelsBefore).toHaveLength(2);
  steady.done = (async () => {
    while (!steady.stop) {
      const t0 = performance.now();
      try {
        const r = await get();
        if (r.status === 200) steady.ok++;
        else steady.failed.push(`HTTP ${r.status}`);
      } catch (err) {
        steady.failed.push((err as Error).message);
      }
      await sleep(Math.max(0, 100 - (performance.now() - t0)));
    }
  })();
});

afterAll(async () => {
  steady.stop = true;
  await steady.done;
  await t.down();
});

describe('bad input on a meshed pod :15008', () => {
  it('a well-formed CONNECT with a mesh certificate gets 200 and reaches the app (control case)', async () => {
    const a = await attempt(valid, { ':method': 'CONNECT', ':authority': `${podIp(server)}:${APP_PORT}` });
    try {
      expect(a.outcome, a.error).toBe('status');
      expect(a.status).toBe(200);
      // The server presented the pod's workload certificate: SPIFFE SAN (checked in attempt), empty subject.
      expect(a.peer?.subject ?? '').toBe('');
      expect(a.peer?.subjectAltName).toBe(`URI:${spiffe(MESH, 'server')}`);
      const stream = a.stream as ClientHttp2Stream;
      const body = await new Promise<string>((resolve, reject) => {
        let text = '';
        stream.setEncoding('utf8');
        stream.on('data', (d: string) => {
          text += d;
          if (text.includes('"pod"') && text.trimEnd().endsWith('}')) resolve(text);
        });
        stream.on('error', reject);
        stream.write(`GET /via-raw-hbone HTTP/1.1\r\nHost: server\r\nConnection: close\r\n\r\n`);
      });
      expect(body).toContain('HTTP/1.1 200');
      expect(body).toContain(`"pod": "${name(server)}"`);
    } finally {
      closeHbone(a);
    }
  });

  it('no client certificate: the TLS handshake is refused, nothing is served', async () => {
    const before = await serverMetrics();
    const a = await attempt(null, { ':method': 'CONNECT', ':authority': `${podIp(server)}:${APP_PORT}` });
    closeHbone(a);
    expect(a.outcome, `got HTTP ${a.status}`).toBe('tls-closed');
    expect(a.error).toMatch(/certificate required|alert|closed|ECONNRESET|socket hang up/i);
    await expectIncrease(before, REFUSED, { reason: 'tls' }, 1);
  });

  it('a client certificate from the mesh root but trust domain evil.local: refused after the handshake', async () => {
    const before = await serverMetrics();
    const a = await attempt(evil, { ':method': 'CONNECT', ':authority': `${podIp(server)}:${APP_PORT}` });
    closeHbone(a);
    expect(a.outcome, `got HTTP ${a.status}`).toBe('tls-closed');
    await expectIncrease(before, REFUSED, { reason: 'peer' }, 1);
  });

  it('a valid mesh certificate but GET instead of CONNECT: 400', async () => {
    const before = await serverMetrics();
    const a = await attempt(valid, {
      ':method': 'GET',
      ':path': '/',
      ':scheme': 'https',
      ':authority': `${podIp(server)}:${APP_PORT}`,
    });
    closeHbone(a);
    expect(a.outcome, a.error).toBe('status');
    expect(a.status).toBe(400);
    await expectIncrease(before, STREAMS, { status: '400' }, 1);
  });

  it('authorities that are not IP:port: 400', async () => {
    const before = await serverMetrics();
    const bad = [
      'server.mesh.svc.cluster.local:3000',
      podIp(server),
      `${podIp(server)}:0`,
      `${podIp(server)}:99999`,
    ];
    for (const authority of bad) {
      const a = await attempt(valid, { ':method': 'CONNECT', ':authority': authority });
      closeHbone(a);
      expect(a.outcome, `${authority}: ${a.error}`).toBe('status');
      expect(a.status, authority).toBe(400);
    }
    await expectIncrease(before, STREAMS, { status: '400' }, bad.length);
  });

  it("an authority with another pod's IP (IP mismatch): 400", async () => {
    const before = await serverMetrics();
    const a = await attempt(valid, { ':method': 'CONNECT', ':authority': `${podIp(client)}:${APP_PORT}` });
    closeHbone(a);
    expect(a.outcome, a.error).toBe('status');
    expect(a.status).toBe(400);
    await expectIncrease(before, STREAMS, { status: '400' }, 1);
  });

  it('garbage instead of a TLS ClientHello: the connection is closed', async () => {
    const before = await serverMetrics();
    const s = await rawToHbone();
    const closed = new Promise<number>((resolve) => {
      s.on('error', () => undefined);
      s.on('close', () => resolve(performance.now()));
    });
    const t0 = performance.now();
    s.write('GET / HTTP/1.1\r\nHost: server\r\n\r\n\x00\x01\x02\xff garbage');
    const at = await Promise.race([closed, sleep(5000).then(() => 0)]);
    expect(at, 'still open 5 s after garbage').toBeGreaterThan(0);
    expect(at - t0).toBeLessThan(2000);
    await expectIncrease(before, REFUSED, { reason: 'tls' }, 1);
  });

  it(`slowloris: ${SLOWLORIS} connections that never finish the handshake are all closed at the handshake timeout`, async () => {
    const before = await serverMetrics();
    const sockets = await Promise.all(Array.from({ length: SLOWLORIS }, () => rawToHbone()));
    const t0 = performance.now();
    const closedAt = sockets.map(
      (s) =>
        new Promise<number>((resolve) => {
          s.on('error', () => undefined);
          s.on('close', () => resolve(performance.now() - t0));
        }),
    );
    // Half say nothing at all; half start a ClientHello record (promising 16 KiB) and trickle a byte a second.
    const trickle = setInterval(() => {
      for (const s of sockets.slice(SLOWLORIS / 2)) if (!s.destroyed) s.write(Buffer.from([0x01]));
    }, 1000);
    for (const s of sockets.slice(SLOWLORIS / 2)) s.write(Buffer.from('1603014000', 'hex'));
    try {
      // Meanwhile the server still serves the meshed client (checked continuously by the steady loop) …
      const okBefore = steady.ok;
      await sleep(3000);
      expect(steady.ok - okBefore, 'meshed client requests served during the slowloris').toBeGreaterThan(5);
      expect(sockets.filter((s) => s.destroyed)).toHaveLength(0);
      // … and cuts every one of them at the timeout.
      const times = await Promise.race([
        Promise.all(closedAt),
        sleep(HANDSHAKE_TIMEOUT_MS + 10_000).then(() => null),
      ]);
      expect(times, 'some slow handshakes were never closed').not.toBeNull();
      const sorted = (times as number[]).sort((a, b) => a - b);
      console.log(
        `slowloris: ${SLOWLORIS} closed between ${(sorted[0]! / 1000).toFixed(1)}s and ${(sorted.at(-1)! / 1000).toFixed(1)}s`,
      );
      expect(sorted[0]).toBeGreaterThan(HANDSHAKE_TIMEOUT_MS - 3000);
    } finally {
      clearInterval(trickle);
      for (const s of sockets) s.destroy();
    }
    await expectIncrease(before, REFUSED, { reason: 'handshake_timeout' }, SLOWLORIS);
    const log = t.podLog(await t.ztunnelOn('node-1'));
    expect(log).toContain('HBONE TLS handshake not completed in time; connection closed');
  });

  it('throughout: the meshed client never failed and the ztunnel pods never restarted', async () => {
    steady.stop = true;
    await steady.done;
    console.log(`steady meshed client: ${steady.ok} × 200, ${steady.failed.length} failures`);
    expect(steady.failed).toEqual([]);
    expect(steady.ok).toBeGreaterThan(50);
    const now = await t.ztunnels();
    expect(now.map(uid).sort()).toEqual(ztunnelsBefore.map(uid).sort());
    for (const z of now) expect(restarts(z), name(z)).toBe(0);
  });
});
