import type { ClientHttp2Session } from 'node:http2';
import { connect as netConnect, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '../testing/index.ts';
import { SecureContextCache } from '../tls/index.ts';
import type { HbonePool } from './pool.ts';
import { poolKey } from './pool.ts';
import type { HboneServer } from './server.ts';
import {
  CLIENT_ID,
  certFor,
  connectOptions,
  echo,
  FakeCa,
  FreezableRelay,
  id,
  makePool,
  SERVER_ID,
  startServer,
  tcpServer,
} from './test-fixtures.ts';

const ca = new FakeCa();
const clientCert = certFor(ca, CLIENT_ID);
const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function track<T extends HboneServer | HbonePool | Server | FreezableRelay>(x: T): T {
  cleanups.push(() => ('forceClose' in x ? x.forceClose() : x.close()));
  return x;
}

async function setup(serverOverrides = {}) {
  const backend = await tcpServer(echo);
  track(backend.server);
  const { server, port } = await startServer(ca, serverOverrides);
  track(server);
  return { server, port, backendPort: backend.port };
}

function sessionOf(t: Duplex): ClientHttp2Session {
  return (t as Duplex & { session: ClientHttp2Session }).session;
}

async function roundTrip(tunnel: Duplex, msg: string): Promise<string> {
  tunnel.write(msg);
  return new Promise((resolve) => tunnel.once('data', (d: Buffer) => resolve(d.toString())));
}

describe('HbonePool', () => {
  it('shares one handshake among concurrent first connects', async () => {
    const { server, port, backendPort } = await setup();
    const pool = track(makePool(clientCert));
    const tunnels = await Promise.all(
      Array.from({ length: 20 }, () => pool.connect(connectOptions(port, backendPort))),
    );
    expect(pool.stats.connectionsOpened).toBe(1);
    expect(server.stats.tlsHandshakes).toBe(1);
    expect(new Set(tunnels.map(sessionOf)).size).toBe(1);
    expect(await roundTrip(tunnels[7]!, 'seven')).toBe('seven');
    for (const t of tunnels) t.end();
  });

  it('opens a second connection past 100 concurrent streams', async () => {
    const { server, port, backendPort } = await setup();
    const pool = track(makePool(clientCert));
    const opts = connectOptions(port, backendPort);
    const tunnels = await Promise.all(Array.from({ length: 150 }, () => pool.connect(opts)));
    expect(pool.stats.connectionsOpened).toBe(2);
    expect(server.stats.tlsHandshakes).toBe(2);
    const sessions = new Map<ClientHttp2Session, number>();
    for (const t of tunnels) sessions.set(sessionOf(t), (sessions.get(sessionOf(t)) ?? 0) + 1);
    expect([...sessions.values()].sort((a, b) => a - b)).toEqual([50, 100]);
    expect(pool.connectionsFor(opts)).toBe(2);
    // Once streams end, a full connection takes new tunnels again instead of opening a third.
    for (const t of tunnels.slice(0, 10)) t.destroy();
    await eventually(() => pool.stats.streamsActive === 140);
    const more = await Promise.all(Array.from({ length: 10 }, () => pool.connect(opts)));
    expect(pool.stats.connectionsOpened).toBe(2);
    for (const t of [...tunnels, ...more]) t.destroy();
  });

  it('releases an idle connection after the idle timeout', async () => {
    const { server, port, backendPort } = await setup();
    const pool = track(makePool(clientCert, { idleTimeoutMs: 300 }));
    const opts = connectOptions(port, backendPort);
    const t = await pool.connect(opts);
    expect(await roundTrip(t, 'x')).toBe('x');
    // Not idle while a stream is open.
    await new Promise((r) => setTimeout(r, 1200));
    expect(pool.connectionsFor(opts)).toBe(1);
    t.end();
    await eventually(() => pool.stats.idleReleased === 1, { timeoutMs: 5000 });
    expect(pool.connectionsFor(opts)).toBe(0);
    await eventually(() => server.activeSessions === 0);
    await pool.connect(opts).then((t2) => t2.end());
    expect(pool.stats.connectionsOpened).toBe(2);
  });

  it('drops a connection whose PINGs go unanswered', async () => {
    const { port, backendPort } = await setup();
    const relay = track(await new FreezableRelay(port).start());
    const pool = track(makePool(clientCert, { pingIntervalMs: 200, pingTimeoutMs: 1000 }));
    const opts = connectOptions(relay.port, backendPort);
    const t = await pool.connect(opts);
    expect(await roundTrip(t, 'alive')).toBe('alive');
    // Healthy: several PINGs answered, connection kept.
    await new Promise((r) => setTimeout(r, 1200));
    expect(pool.stats.pingTimeouts).toBe(0);
    const tunnelError = new Promise<Error | null>((resolve) => {
      t.once('error', resolve);
      t.once('close', () => resolve(null));
    });
    relay.freeze();
    await eventually(() => pool.stats.pingTimeouts === 1, { timeoutMs: 5000 });
    expect(pool.connectionsFor(opts)).toBe(0);
    await tunnelError;
    expect(t.destroyed).toBe(true);
    // A new tunnel gets a new connection (the relay accepts new connections normally).
    const t2 = await pool.connect(opts);
    expect(await roundTrip(t2, 'again')).toBe('again');
    expect(pool.stats.connectionsOpened).toBe(2);
    t2.end();
  });

  it('moves to a new connection after the server sends GOAWAY', async () => {
    const { server, port, backendPort } = await setup();
    const pool = track(makePool(clientCert));
    const opts = connectOptions(port, backendPort);
    const first = await pool.connect(opts);
    server.closeSessions();
    await eventually(() => pool.stats.goawaysReceived === 1);
    expect(pool.connectionsFor(opts)).toBe(0);
    // The in-flight tunnel finishes normally.
    expect(await roundTrip(first, 'in flight')).toBe('in flight');
    const second = await pool.connect(opts);
    expect(sessionOf(second)).not.toBe(sessionOf(first));
    expect(pool.stats.connectionsOpened).toBe(2);
    expect(await roundTrip(second, 'new')).toBe('new');
    first.end();
    second.end();
  });

  it('never shares a connection between distinct keys', async () => {
    const { server, port, backendPort } = await setup();
    const pool = track(makePool(clientCert, { certificateFor: (src) => certFor(ca, src) }));
    const base = connectOptions(port, backendPort);
    const variants = [
      base,
      { ...base, source: id('default', 'other-client') },
      { ...base, destinationIdentities: [SERVER_ID, id('default', 'waypoint')] },
      { ...base, sourceIp: '127.0.0.2' },
    ];
    const tunnels = [];
    for (const v of variants) tunnels.push(await pool.connect(v));
    expect(new Set(tunnels.map(sessionOf)).size).toBe(variants.length);
    expect(new Set(variants.map(poolKey)).size).toBe(variants.length);
    expect(server.stats.tlsHandshakes).toBe(variants.length);
    // Same key with identities in another order: same connection.
    const reordered = await pool.connect({
      ...base,
      destinationIdentities: [id('default', 'waypoint'), SERVER_ID],
    });
    expect(sessionOf(reordered)).toBe(sessionOf(tunnels[2]!));
    // The source IP binding was applied.
    expect(sessionOf(tunnels[3]!).socket.localAddress).toBe('127.0.0.2');
    for (const t of [...tunnels, reordered]) t.end();
  });

  it('opens sockets through the createSocket hook and caches TLS contexts per certificate', async () => {
    const { port, backendPort } = await setup();
    const targets: string[] = [];
    const contexts = new SecureContextCache();
    const pool = track(
      makePool(clientCert, {
        contexts,
        createSocket: (t): Socket => {
          targets.push(`${t.host}:${t.port}@${t.localAddress ?? '*'}`);
          return netConnect({ host: t.host, port: t.port });
        },
      }),
    );
    const a = await pool.connect(connectOptions(port, backendPort));
    const b = await pool.connect(
      connectOptions(port, backendPort, { destinationIdentities: [SERVER_ID, id('a', 'b')] }),
    );
    expect(targets).toEqual([`127.0.0.1:${port}@*`, `127.0.0.1:${port}@*`]);
    expect(contexts.builds).toBe(1);
    a.end();
    b.end();
  });

  it('fails fast with a typed error when nothing listens', async () => {
    const dead = await tcpServer(() => {});
    dead.server.close();
    const pool = track(makePool(clientCert));
    await expect(pool.connect(connectOptions(dead.port, 9))).rejects.toMatchObject({
      code: 'MESH_ERR_HBONE_CONNECT',
      status: null,
    });
    expect(pool.stats.connectionsFailed).toBe(1);
    expect(pool.keys()).toEqual([]);
  });

  it('retries a tunnel on a new connection when the peer drops the TCP connection before TLS finishes', async () => {
    // What a proxy handing over to its successor does to connections queued on the listener it closes.
    const { server, port, backendPort } = await setup();
    const dropper = track((await tcpServer((s) => s.resetAndDestroy())).server);
    const dropPort = (dropper.address() as { port: number }).port;
    let calls = 0;
    const pool = track(
      makePool(clientCert, {
        createSocket: (t): Socket => netConnect({ host: t.host, port: calls++ === 0 ? dropPort : t.port }),
      }),
    );
    const tunnel = await pool.connect(connectOptions(port, backendPort));
    expect(await roundTrip(tunnel, 'second try')).toBe('second try');
    expect(pool.stats).toMatchObject({
      connectionsOpened: 2,
      connectionsFailed: 1,
      connectionsEstablished: 1,
    });
    expect(server.stats.tlsHandshakes).toBe(1);
    tunnel.end();
  });

  it('does not retry a peer that completes TLS and then refuses us', async () => {
    const { server, port, backendPort } = await setup();
    const outsider = track(makePool(certFor(ca, id('default', 'client', 'evil.local'))));
    await expect(outsider.connect(connectOptions(port, backendPort))).rejects.toThrow(/HBONE/);
    expect(outsider.stats.connectionsOpened).toBe(1);
    expect(server.stats.peersRejected).toBe(1);
  });

  it('times out a connection that never completes its handshake', async () => {
    // A TCP server that accepts and never speaks.
    const mute = await tcpServer(() => {});
    track(mute.server);
    const pool = track(makePool(clientCert, { connectTimeoutMs: 300 }));
    await expect(pool.connect(connectOptions(mute.port, 9))).rejects.toMatchObject({
      code: 'MESH_ERR_HBONE_TIMEOUT',
    });
  });

  it('drains: GOAWAY on every connection, resolves when tunnels end', async () => {
    const { server, port, backendPort } = await setup();
    const pool = makePool(clientCert);
    const t = await pool.connect(connectOptions(port, backendPort));
    let done = false;
    const drained = pool.drain().then(() => {
      done = true;
    });
    await new Promise((r) => setTimeout(r, 100));
    expect(done).toBe(false);
    expect(await roundTrip(t, 'still')).toBe('still');
    t.end();
    await drained;
    await eventually(() => server.activeSessions === 0);
    await expect(pool.connect(connectOptions(port, backendPort))).rejects.toMatchObject({
      code: 'MESH_ERR_HBONE_CONNECT',
    });
  });
});
