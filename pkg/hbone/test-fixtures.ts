/**
 * Shared pieces for the HBONE tests (never imported by production code): certificates from a FakeCa, a
 * backend, an HBONE server whose handler dials the authority (like ztunnel inbound), a pool, and a TCP relay
 * that can be frozen to play a dead peer.
 */
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { type AddressInfo, createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { type Identity, WorkloadCertificate } from '../identity/index.ts';
import { FakeCa } from '../testing/fake-ca.ts';
import { pipeBidirectional } from './pipe.ts';
import { type HboneConnectOptions, HbonePool, type HbonePoolOptions } from './pool.ts';
import { type ConnectRequest, HboneServer, type HboneServerOptions } from './server.ts';

export const TRUST_DOMAIN = 'cluster.local';

export function id(ns: string, sa: string, trustDomain = TRUST_DOMAIN): Identity {
  return { trustDomain, namespace: ns, serviceAccount: sa };
}

/**
 * A workload certificate for `identity` signed by `ca` (FakeCa signs whatever it is told), trusting `roots`
 * (default: that CA's root).
 */
export function certFor(
  ca: FakeCa,
  identity: Identity,
  roots: readonly string[] = [ca.rootPem],
): WorkloadCertificate {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return new WorkloadCertificate(identity, privateKey, [ca.sign(identity, publicKey)], [...roots]);
}

export { FakeCa };

export const CLIENT_ID = id('default', 'client');
export const SERVER_ID = id('default', 'server');

/** A TCP server; `onSocket` gets every accepted socket (half-open allowed, as a real app may do). */
export async function tcpServer(onSocket: (s: Socket) => void): Promise<{ server: Server; port: number }> {
  const server = createServer({ allowHalfOpen: true }, onSocket);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

/** Echoes every byte back and ends when the peer ends. */
export function echo(s: Socket): void {
  s.on('error', () => {});
  s.pipe(s);
}

/** ztunnel-like inbound handler: dial the authority, answer 200 once connected (503 if not), then pipe. */
export function dialingHandler(req: ConnectRequest): void {
  const up = netConnect({ host: req.authority.ip, port: req.authority.port, allowHalfOpen: true });
  up.once('connect', () => {
    const tunnel = req.accept();
    if (tunnel === null) {
      up.destroy();
      return;
    }
    pipeBidirectional(tunnel, up, () => {});
  });
  up.once('error', () => {
    if (req.status === 0) req.reject(503);
  });
}

export interface ServerFixture {
  readonly server: HboneServer;
  readonly port: number;
  readonly cert: WorkloadCertificate;
}

export async function startServer(
  ca: FakeCa,
  overrides: Partial<HboneServerOptions> & { cert?: WorkloadCertificate } = {},
): Promise<ServerFixture> {
  const cert = overrides.cert ?? certFor(ca, SERVER_ID);
  const server = await HboneServer.create({
    listen: { host: '127.0.0.1', port: 0 },
    certificateFor: () => cert,
    trustDomain: TRUST_DOMAIN,
    onStream: dialingHandler,
    ...overrides,
  });
  return { server, port: server.address().port, cert };
}

export function makePool(cert: WorkloadCertificate, overrides: Partial<HbonePoolOptions> = {}): HbonePool {
  return new HbonePool({ certificateFor: () => cert, ...overrides });
}

export function connectOptions(
  hbonePort: number,
  targetPort: number,
  overrides: Partial<HboneConnectOptions> = {},
): HboneConnectOptions {
  return {
    source: CLIENT_ID,
    destinationIdentities: [SERVER_ID],
    destination: { ip: '127.0.0.1', port: hbonePort },
    authority: `127.0.0.1:${targetPort}`,
    ...overrides,
  };
}

/** Reads a stream to its end; resolves with the byte count and SHA-256. */
export function digest(s: Duplex): Promise<{ bytes: number; sha256: string }> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    let bytes = 0;
    s.on('data', (c: Buffer) => {
      bytes += c.length;
      h.update(c);
    });
    s.once('end', () => resolve({ bytes, sha256: h.digest('hex') }));
    s.once('error', reject);
  });
}

/** Writes `total` random bytes in `chunk`-sized writes, honouring backpressure; resolves with their SHA-256. */
export async function writeRandom(s: Duplex, total: number, chunk = 256 * 1024): Promise<string> {
  const h = createHash('sha256');
  let written = 0;
  while (written < total) {
    const out = randomBytes(Math.min(chunk, total - written));
    h.update(out);
    written += out.length;
    if (!s.write(out)) await new Promise<void>((r) => s.once('drain', r));
  }
  return h.digest('hex');
}

/**
 * A TCP relay between the pool and the server that can be frozen: while frozen it neither reads nor writes,
 * like a peer whose host died or a black-holed network, so PINGs go unanswered.
 */
export class FreezableRelay {
  readonly server: Server;
  port = 0;
  private readonly pairs: Array<[Socket, Socket]> = [];
  private readonly targetPort: number;

  constructor(targetPort: number) {
    this.targetPort = targetPort;
    this.server = createServer({ allowHalfOpen: true }, (a) => {
      const b = netConnect({ host: '127.0.0.1', port: this.targetPort, allowHalfOpen: true });
      a.on('error', () => b.destroy());
      b.on('error', () => a.destroy());
      a.pipe(b);
      b.pipe(a);
      this.pairs.push([a, b]);
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  freeze(): void {
    for (const [a, b] of this.pairs) {
      a.unpipe(b);
      b.unpipe(a);
      a.pause();
      b.pause();
    }
  }

  close(): void {
    for (const [a, b] of this.pairs) {
      a.destroy();
      b.destroy();
    }
    this.server.close();
  }
}
