import { type ClientHttp2Session, connect as h2connect, type ServerHttp2Session } from 'node:http2';
import { connect as netConnect, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { isMeshError } from '../errors/index.ts';
import { eventually } from '../testing/index.ts';
import { clientTlsOptions, createMtlsContext, mtlsContextOptions } from '../tls/index.ts';
import { HboneError } from './errors.ts';
import type { HbonePool } from './pool.ts';
import type { ConnectRequest, HboneServer } from './server.ts';
import {
  CONNECTION_WINDOW_SIZE,
  MAX_FRAME_SIZE,
  SERVER_MAX_CONCURRENT_STREAMS,
  STREAM_WINDOW_SIZE,
} from './settings.ts';
import {
  CLIENT_ID,
  certFor,
  connectOptions,
  dialingHandler,
  digest,
  echo,
  FakeCa,
  FreezableRelay,
  id,
  makePool,
  SERVER_ID,
  startServer,
  tcpServer,
  writeRandom,
} from './test-fixtures.ts';

const MiB = 1024 * 1024;
const ca = new FakeCa();
const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function track<T extends HboneServer | HbonePool | Server | Socket | FreezableRelay>(x: T): T {
  cleanups.push(() => ('forceClose' in x ? x.forceClose() : 'destroy' in x ? x.destroy() : x.close()));
  return x;
}

async function echoBackend(): Promise<number> {
  const b = await tcpServer(echo);
  track(b.server);
  return b.port;
}

/** Round trip of one message through a tunnel. */
async function roundTrip(tunnel: Duplex, msg: string): Promise<string> {
  tunnel.write(msg);
  return new Promise((resolve) => tunnel.once('data', (d: Buffer) => resolve(d.toString())));
}

/** The TLS socket under an HTTP/2 session (Node hands out a proxy that allows certificate getters). */
function tlsOf(session: ClientHttp2Session | ServerHttp2Session | undefined): TLSSocket {
  if (session === undefined) throw new Error('no session');
  return session.socket as TLSSocket;
}

describe('HBONE server: mTLS', () => {
  it('tunnels 32 MiB each way with half-close ordering, checksums equal', async () => {
    // Backend: digests what it receives; only after the client's FIN does it answer with its own 32 MiB.
    let backendGot: Promise<{ bytes: number; sha256: string }> | null = null;
    let backendSent: Promise<string> | null = null;
    const backend = await tcpServer((s) => {
      backendGot = digest(s);
      backendSent = backendGot.then(async () => {
        const sha = await writeRandom(s, 32 * MiB);
        s.end();
        return sha;
      });
    });
    track(backend.server);
    const { server, port } = await startServer(ca);
    track(server);
    const pool = track(makePool(certFor(ca, CLIENT_ID)));
    const tunnel = await pool.connect(connectOptions(port, backend.port));
    const received = digest(tunnel);
    const sent = await writeRandom(tunnel, 32 * MiB);
    tunnel.end();
    const got = await backendGot!;
    expect(got).toEqual({ bytes: 32 * MiB, sha256: sent });
    const back = await received;
    expect(back).toEqual({ bytes: 32 * MiB, sha256: await backendSent! });
    expect(server.stats.accepted).toBe(1);
  });

  it('carries both directions at once (echo, 16 MiB)', async () => {
    const { server, port } = await startServer(ca);
    track(server);
    const pool = track(makePool(certFor(ca, CLIENT_ID)));
    const tunnel = await pool.connect(connectOptions(port, await echoBackend()));
    const received = digest(tunnel);
    const sent = await writeRandom(tunnel, 16 * MiB, 64 * 1024);
    tunnel.end();
    expect(await received).toEqual({ bytes: 16 * MiB, sha256: sent });
  });

  it('uses the configured windows and frame size on both sides', async () => {
    let serverSession: ServerHttp2Session | undefined;
    const { server, port } = await startServer(ca, {
      onStream: (req) => {
        serverSession = req.stream.session as ServerHttp2Session;
        req.accept();
      },
    });
    track(server);
    const pool = track(makePool(certFor(ca, CLIENT_ID)));
    const tunnel = (await pool.connect(connectOptions(port, 9))) as Duplex & { session: ClientHttp2Session };
    const client = tunnel.session;
    expect(client.state.localWindowSize).toBe(CONNECTION_WINDOW_SIZE);
    expect(client.localSettings.initialWindowSize).toBe(STREAM_WINDOW_SIZE);
    expect(client.localSettings.maxFrameSize).toBe(MAX_FRAME_SIZE);
    expect(client.remoteSettings.initialWindowSize).toBe(STREAM_WINDOW_SIZE);
    expect(client.remoteSettings.maxConcurrentStreams).toBe(SERVER_MAX_CONCURRENT_STREAMS);
    const s = serverSession!;
    expect(s.state.localWindowSize).toBe(CONNECTION_WINDOW_SIZE);
    // Node reports local settings once the peer has acknowledged them.
    await eventually(() => s.localSettings.initialWindowSize === STREAM_WINDOW_SIZE);
    expect(s.localSettings.maxFrameSize).toBe(MAX_FRAME_SIZE);
    expect(s.localSettings.maxConcurrentStreams).toBe(SERVER_MAX_CONCURRENT_STREAMS);
    expect(s.remoteSettings.initialWindowSize).toBe(STREAM_WINDOW_SIZE);
    tunnel.destroy();
  });

  it('refuses a client outside the trust domain', async () => {
    const { server, port } = await startServer(ca);
    track(server);
    const pool = track(makePool(certFor(ca, id('default', 'client', 'evil.example'))));
    await expect(pool.connect(connectOptions(port, 9))).rejects.toBeInstanceOf(HboneError);
    await eventually(() => server.stats.peersRejected === 1);
    expect(server.stats.sessionsOpened).toBe(0);
  });

  it('refuses a client without a certificate (TLS alert)', async () => {
    const { server, port } = await startServer(ca);
    track(server);
    const sock = tlsConnect({
      host: '127.0.0.1',
      port,
      ca: [ca.rootPem],
      ALPNProtocols: ['h2'],
      checkServerIdentity: () => undefined,
      minVersion: 'TLSv1.3',
    });
    track(sock);
    const err = await new Promise<Error>((resolve) => sock.once('error', resolve));
    expect(err.message).toMatch(/certificate required/);
    await eventually(() => server.stats.tlsFailures === 1);
  });

  it('refuses a client certificate from another CA', async () => {
    const { server, port } = await startServer(ca);
    track(server);
    const other = new FakeCa();
    // The client trusts our root (so it accepts the server) but presents a leaf from another CA.
    const pool = track(makePool(certFor(other, CLIENT_ID, [ca.rootPem])));
    await expect(pool.connect(connectOptions(port, 9))).rejects.toBeInstanceOf(HboneError);
    await eventually(() => server.stats.tlsFailures >= 1 || server.stats.peersRejected >= 1);
    expect(server.stats.sessionsOpened).toBe(0);
  });

  it('client refuses a server certificate from another CA', async () => {
    const other = new FakeCa();
    const { server, port } = await startServer(ca, { cert: certFor(other, SERVER_ID) });
    track(server);
    const pool = track(makePool(certFor(ca, CLIENT_ID)));
    const err = await pool.connect(connectOptions(port, 9)).catch((e: unknown) => e);
    expect(isMeshError(err, 'MESH_ERR_HBONE_CONNECT')).toBe(true);
    expect(String((err as Error).message)).toMatch(/certificate/);
  });

  it('client refuses a server whose identity is not expected (typed error)', async () => {
    const { server, port } = await startServer(ca);
    track(server);
    const pool = track(makePool(certFor(ca, CLIENT_ID)));
    const err = await pool
      .connect(connectOptions(port, 9, { destinationIdentities: [id('default', 'someone-else')] }))
      .catch((e: unknown) => e);
    expect(isMeshError(err, 'MESH_ERR_TLS_PEER_IDENTITY')).toBe(true);
    expect((err as Error).message).toContain('spiffe://cluster.local/ns/default/sa/server');
    expect(server.stats.sessionsOpened).toBe(0);
  });

  it('refuses TLS 1.2', async () => {
    const { server, port } = await startServer(ca);
    track(server);
    const c = certFor(ca, CLIENT_ID);
    const sock = tlsConnect({
      host: '127.0.0.1',
      port,
      ...mtlsContextOptions(c),
      minVersion: 'TLSv1.2',
      maxVersion: 'TLSv1.2',
      ALPNProtocols: ['h2'],
      checkServerIdentity: () => undefined,
    });
    track(sock);
    const err = await new Promise<Error>((resolve) => sock.once('error', resolve));
    expect(err.message).toMatch(/protocol version/);
    await eventually(() => server.stats.tlsFailures === 1);
  });

  it('refuses ALPN other than h2, and no ALPN at all', async () => {
    const { server, port } = await startServer(ca);
    track(server);
    const c = certFor(ca, CLIENT_ID);
    const http1 = tlsConnect({
      host: '127.0.0.1',
      port,
      ...mtlsContextOptions(c),
      ALPNProtocols: ['http/1.1'],
      checkServerIdentity: () => undefined,
    });
    track(http1);
    const err = await new Promise<Error>((resolve) => http1.once('error', resolve));
    expect(err.message).toMatch(/no application protocol/);
    // Without ALPN OpenSSL completes the handshake; the server then refuses the peer.
    const none = tlsConnect({
      host: '127.0.0.1',
      port,
      ...mtlsContextOptions(c),
      checkServerIdentity: () => undefined,
    });
    track(none);
    none.on('error', () => {});
    await new Promise<void>((resolve) => none.once('close', () => resolve()));
    expect(server.stats.peersRejected).toBe(1);
    expect(server.stats.sessionsOpened).toBe(0);
  });
});

describe('HBONE server: CONNECT validation', () => {
  async function mtlsSession(port: number): Promise<ClientHttp2Session> {
    const c = certFor(ca, CLIENT_ID);
    const tls = tlsConnect({
      host: '127.0.0.1',
      port,
      ...clientTlsOptions(createMtlsContext(c), [SERVER_ID]),
    });
    await new Promise((resolve, reject) => tls.once('secureConnect', resolve).once('error', reject));
    const session = h2connect(`https://127.0.0.1:${port}`, { createConnection: () => tls });
    track(tls);
    return session;
  }

  it('answers 400 to a non-CONNECT method', async () => {
    const { server, port } = await startServer(ca);
    track(server);
    const session = await mtlsSession(port);
    const req = session.request({ ':method': 'GET', ':path': '/' });
    const headers = await new Promise<Record<string, unknown>>((resolve) => req.once('response', resolve));
    expect(headers[':status']).toBe(400);
    expect(server.stats.rejected[400]).toBe(1);
    session.destroy();
  });

  it.each(['nope', '1.2.3.4', '[::1]', 'example.com:80', '1.2.3.4:0', '[fe80::1%eth0]:80'])(
    'answers 400 to authority %j',
    async (authority) => {
      const { server, port } = await startServer(ca);
      track(server);
      const pool = track(makePool(certFor(ca, CLIENT_ID)));
      const err = await pool.connect(connectOptions(port, 9, { authority })).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(HboneError);
      expect((err as HboneError).status).toBe(400);
      expect((err as HboneError).code).toBe('MESH_ERR_HBONE_STATUS');
    },
  );

  it.each([401, 503])('passes the handler status %i to the client', async (status) => {
    const { server, port } = await startServer(ca, { onStream: (req) => req.reject(status) });
    track(server);
    const pool = track(makePool(certFor(ca, CLIENT_ID)));
    const err = await pool.connect(connectOptions(port, 9)).catch((e: unknown) => e);
    expect((err as HboneError).status).toBe(status);
    // The connection stays usable for the next tunnel.
    await expect(pool.connect(connectOptions(port, 9))).rejects.toMatchObject({ status });
    expect(pool.stats.connectionsOpened).toBe(1);
  });

  it('answers 503 when the handler throws or rejects, and when the upstream refuses', async () => {
    let mode = 0;
    const { server, port } = await startServer(ca, {
      onStream: async (req) => {
        if (mode === 0) throw new Error('boom');
        await Promise.reject(new Error('async boom'));
        req.accept();
      },
    });
    track(server);
    const pool = track(makePool(certFor(ca, CLIENT_ID)));
    await expect(pool.connect(connectOptions(port, 9))).rejects.toMatchObject({ status: 503 });
    mode = 1;
    await expect(pool.connect(connectOptions(port, 9))).rejects.toMatchObject({ status: 503 });
    // dialingHandler answers 503 when the upstream port is closed.
    const dialing = await startServer(ca);
    track(dialing.server);
    const closed = await tcpServer(() => {});
    closed.server.close();
    await expect(pool.connect(connectOptions(dialing.port, closed.port))).rejects.toMatchObject({
      status: 503,
    });
  });

  it('hands the peer identity, addresses and headers to the handler', async () => {
    let seen: ConnectRequest | null = null;
    const { server, port } = await startServer(ca, {
      onStream: (req) => {
        seen = req;
        req.reject(401);
      },
    });
    track(server);
    const pool = track(makePool(certFor(ca, CLIENT_ID)));
    await pool
      .connect(
        connectOptions(port, 8080, {
          authority: '[::1]:8080',
          baggage: 'k8s.namespace.name=default',
          forwarded: 'for="10.0.0.1:3456"',
          traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
        }),
      )
      .catch(() => {});
    const req = seen! as ConnectRequest;
    expect(req.authority).toEqual({ ip: '::1', port: 8080, family: 6 });
    expect(req.peerIdentity).toEqual(CLIENT_ID);
    expect(req.source.ip).toBe('127.0.0.1');
    expect(req.destination).toEqual({ ip: '127.0.0.1', port });
    expect(req.baggage).toBe('k8s.namespace.name=default');
    expect(req.forwarded).toBe('for="10.0.0.1:3456"');
    expect(req.traceparent).toBe('00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01');
  });

  it('survives garbage and a silent client, cutting the silent one at the handshake timeout', async () => {
    const { server, port } = await startServer(ca, { handshakeTimeoutMs: 500 });
    track(server);
    const silent = track(netConnect({ host: '127.0.0.1', port }));
    const silentClosed = new Promise<number>((resolve) => {
      const t0 = performance.now();
      silent.once('close', () => resolve(performance.now() - t0));
    });
    silent.on('error', () => {});
    const garbage = track(netConnect({ host: '127.0.0.1', port }));
    garbage.on('error', () => {});
    garbage.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n\x00\x01\x02 not tls at all'));
    // A good client in the middle of it all.
    const pool = track(makePool(certFor(ca, CLIENT_ID)));
    const tunnel = await pool.connect(connectOptions(port, await echoBackend()));
    expect(await roundTrip(tunnel, 'still serving')).toBe('still serving');
    const waited = await silentClosed;
    expect(waited).toBeGreaterThanOrEqual(400);
    expect(waited).toBeLessThan(5000);
    await eventually(() => server.stats.handshakeTimeouts === 1 && server.stats.tlsFailures === 2);
    expect(await roundTrip(tunnel, 'and after')).toBe('and after');
    tunnel.end();
  });
});

describe('HBONE server: certificate rotation', () => {
  it('serves new connections with the new certificate; old connections keep working', async () => {
    const serverA = certFor(ca, SERVER_ID);
    const serverB = certFor(ca, SERVER_ID);
    let serverCert = serverA;
    const clientSerials: string[] = [];
    const { server, port } = await startServer(ca, {
      certificateFor: () => serverCert,
      onStream: (req) => {
        clientSerials.push(tlsOf(req.stream.session as ServerHttp2Session).getPeerCertificate().serialNumber);
        dialingHandler(req);
      },
    });
    track(server);
    const clientA = certFor(ca, CLIENT_ID);
    const clientB = certFor(ca, CLIENT_ID);
    let clientCert = clientA;
    const pool = track(makePool(clientA, { certificateFor: () => clientCert }));
    const backend = await echoBackend();
    const serialOf = (t: Duplex) =>
      tlsOf((t as Duplex & { session: ClientHttp2Session }).session).getPeerCertificate().serialNumber;

    const old = await pool.connect(connectOptions(port, backend));
    expect(serialOf(old).toLowerCase()).toBe(serverA.serial.toLowerCase());

    serverCert = serverB;
    clientCert = clientB;
    // A different key forces a new connection (same server, same listener).
    const fresh = await pool.connect(
      connectOptions(port, backend, { destinationIdentities: [SERVER_ID, id('x', 'y')] }),
    );
    expect(serialOf(fresh).toLowerCase()).toBe(serverB.serial.toLowerCase());
    expect(clientSerials.map((s) => s.toLowerCase())).toEqual(
      [clientA.serial, clientB.serial].map((s) => s.toLowerCase()),
    );
    expect(await roundTrip(old, 'old connection')).toBe('old connection');
    expect(await roundTrip(fresh, 'new connection')).toBe('new connection');
    // The old pooled connection still takes new tunnels for its key.
    const again = await pool.connect(connectOptions(port, backend));
    expect(serialOf(again).toLowerCase()).toBe(serverA.serial.toLowerCase());
    expect(server.stats.tlsHandshakes).toBe(2);
    for (const t of [old, fresh, again]) t.end();
  });
});

describe('HBONE server: idle and dead clients', () => {
  it('closes a connection that carries no stream for the idle timeout', async () => {
    const { server, port } = await startServer(ca, { idleTimeoutMs: 300 });
    track(server);
    const pool = track(makePool(certFor(ca, CLIENT_ID)));
    const opts = connectOptions(port, await echoBackend());
    const tunnel = await pool.connect(opts);
    expect(await roundTrip(tunnel, 'busy')).toBe('busy');
    // While a stream is open the connection is not idle.
    await new Promise((r) => setTimeout(r, 1200));
    expect(server.stats.idleClosed).toBe(0);
    tunnel.end();
    await eventually(() => server.stats.idleClosed === 1, { timeoutMs: 5000 });
    // The client sees the GOAWAY and leaves the connection.
    await eventually(() => pool.connectionsFor(opts) === 0);
    expect(server.activeSessions).toBe(0);
  });

  it('drops a client whose PINGs go unanswered', async () => {
    const { server, port } = await startServer(ca, { pingIntervalMs: 200, pingTimeoutMs: 1000 });
    track(server);
    const relay = track(await new FreezableRelay(port).start());
    const pool = track(makePool(certFor(ca, CLIENT_ID), { pingIntervalMs: 60_000 }));
    const tunnel = await pool.connect(connectOptions(relay.port, await echoBackend()));
    tunnel.on('error', () => {});
    expect(await roundTrip(tunnel, 'alive')).toBe('alive');
    await new Promise((r) => setTimeout(r, 1000));
    expect(server.stats.pingTimeouts).toBe(0);
    relay.freeze();
    await eventually(() => server.stats.pingTimeouts === 1, { timeoutMs: 5000 });
    await eventually(() => server.activeSessions === 0);
  });
});

describe('HBONE server: drain', () => {
  it('GOAWAYs sessions and resolves once their streams end', async () => {
    const { server, port } = await startServer(ca);
    const pool = track(makePool(certFor(ca, CLIENT_ID)));
    const tunnel = await pool.connect(connectOptions(port, await echoBackend()));
    let drained = false;
    const d = server.drain().then(() => {
      drained = true;
    });
    await eventually(() => pool.stats.goawaysReceived === 1);
    expect(drained).toBe(false);
    // In-flight tunnels keep working during the graceful phase.
    expect(await roundTrip(tunnel, 'draining')).toBe('draining');
    tunnel.end();
    await d;
    expect(server.activeSessions).toBe(0);
  });

  it('answers a handshake that completes during the drain with GOAWAY; the client retries on the successor', async () => {
    // The old server looks its certificate up asynchronously, and the drain starts meanwhile.
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const cert = certFor(ca, SERVER_ID);
    const old = await startServer(ca, { certificateFor: () => gate.then(() => cert) });
    track(old.server);
    const successor = await startServer(ca);
    track(successor.server);
    let calls = 0;
    const pool = track(
      makePool(certFor(ca, CLIENT_ID), {
        createSocket: (t): Socket =>
          netConnect({ host: t.host, port: calls++ === 0 ? old.port : successor.port }),
      }),
    );
    const pending = pool.connect(connectOptions(old.port, await echoBackend()));
    await eventually(() => old.server.stats.connectionsAccepted === 1);
    const drained = old.server.drain();
    release();
    const tunnel = await pending;
    expect(await roundTrip(tunnel, 'moved')).toBe('moved');
    // The old server completed the handshake (no dropped connection) and answered nothing but GOAWAY.
    expect(old.server.stats.tlsHandshakes).toBe(1);
    expect(old.server.stats.accepted).toBe(0);
    expect(pool.stats.goawaysReceived).toBe(1);
    expect(successor.server.stats.accepted).toBe(1);
    tunnel.end();
    await drained;
  });
});
