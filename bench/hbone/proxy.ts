/**
 * One benchmark process: a proxy half (or the echo backend). Started by run.ts as
 * `node bench/hbone/proxy.ts '<json config>'`; prints `READY <json>` on stdout once listening, and runs
 * until killed. Each proxy serves several routes (listen port → target port) so one pair carries both the
 * iperf3 and the echo traffic.
 *
 * Modes:
 * - echo: TCP echo server (the latency backend).
 * - hbone-client / hbone-server: our HBONE pair (pkg/hbone pool → server), as ztunnel outbound/inbound.
 * - tls-client / tls-server: a plain node:tls pair with the same certificates and the same pipe helper.
 * - naive-h2-client / naive-h2-server: the "20-line" Node HTTP/2 CONNECT pair of PERFORMANCE.md: default
 *   windows and settings, `pipe()` both ways, one session.
 */
import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http2 from 'node:http2';
import { type AddressInfo, createServer, connect as netConnect, type Socket } from 'node:net';
import * as tls from 'node:tls';
import {
  formatBaggage,
  formatForwardedFor,
  HbonePool,
  HboneServer,
  pipeBidirectional,
} from '../../pkg/hbone/index.ts';
import { type Identity, WorkloadCertificate } from '../../pkg/identity/index.ts';
import { createMtlsContext, mtlsContextOptions, spiffeServerCheck } from '../../pkg/tls/index.ts';

export interface CertFiles {
  readonly key: string;
  readonly chain: string;
  readonly root: string;
}

export interface ProxyConfig {
  readonly mode:
    | 'echo'
    | 'hbone-client'
    | 'hbone-server'
    | 'tls-client'
    | 'tls-server'
    | 'naive-h2-client'
    | 'naive-h2-server';
  /** Client modes: listen port → target (backend) port reached through the peer. */
  readonly routes?: ReadonlyArray<{ readonly listen: number; readonly target: number }>;
  /** Client modes: the server half's port. Server modes and echo: the port to listen on. */
  readonly peer?: number;
  readonly listen?: number;
  readonly cert?: CertFiles;
  readonly identity?: Identity;
  readonly peerIdentity?: Identity;
}

const HOST = '127.0.0.1';
const TRUST_DOMAIN = 'cluster.local';

function loadCert(files: CertFiles, identity: Identity): WorkloadCertificate {
  return new WorkloadCertificate(
    identity,
    createPrivateKey(readFileSync(files.key)),
    [readFileSync(files.chain, 'utf8')],
    [readFileSync(files.root, 'utf8')],
  );
}

function ready(info: unknown): void {
  process.stdout.write(`READY ${JSON.stringify(info)}\n`);
}

function listenTcp(port: number, onSocket: (s: Socket) => void): Promise<void> {
  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, onSocket);
  return new Promise((resolve) => server.listen(port, HOST, resolve));
}

function ignore(): void {}

async function runEcho(cfg: ProxyConfig): Promise<void> {
  const server = createServer({ allowHalfOpen: false, noDelay: true }, (s) => {
    s.on('error', ignore);
    s.pipe(s);
  });
  await new Promise<void>((resolve) => server.listen(cfg.listen ?? 0, HOST, resolve));
  ready({ port: (server.address() as AddressInfo).port });
}

async function runHboneClient(cfg: ProxyConfig): Promise<void> {
  const cert = loadCert(cfg.cert!, cfg.identity!);
  const pool = new HbonePool({ certificateFor: () => cert });
  const baggage = formatBaggage({
    clusterId: 'Kubernetes',
    namespace: 'default',
    workloadName: 'bench-client',
  });
  for (const route of cfg.routes ?? []) {
    const authority = `${HOST}:${route.target}`;
    await listenTcp(route.listen, (sock) => {
      sock.on('error', ignore);
      pool
        .connect({
          source: cfg.identity!,
          destinationIdentities: [cfg.peerIdentity!],
          destination: { ip: HOST, port: cfg.peer! },
          authority,
          baggage,
          forwarded: formatForwardedFor(sock.remoteAddress ?? HOST, sock.remotePort ?? null),
        })
        .then(
          (tunnel) => {
            pipeBidirectional(sock, tunnel, ignore);
            sock.resume();
          },
          () => sock.destroy(),
        );
    });
  }
  ready({ routes: cfg.routes });
}

async function runHboneServer(cfg: ProxyConfig): Promise<void> {
  const cert = loadCert(cfg.cert!, cfg.identity!);
  const server = await HboneServer.create({
    listen: { host: HOST, port: cfg.listen ?? 0 },
    certificateFor: () => cert,
    trustDomain: TRUST_DOMAIN,
    onStream: (req) => {
      const up = netConnect({
        host: req.authority.ip,
        port: req.authority.port,
        allowHalfOpen: true,
        noDelay: true,
      });
      up.once('connect', () => {
        const tunnel = req.accept();
        if (tunnel === null) up.destroy();
        else pipeBidirectional(tunnel, up, ignore);
      });
      up.once('error', () => {
        if (req.status === 0) req.reject(503);
      });
    },
  });
  ready({ port: server.address().port });
}

async function runTlsClient(cfg: ProxyConfig): Promise<void> {
  const cert = loadCert(cfg.cert!, cfg.identity!);
  const context = createMtlsContext(cert);
  const check = spiffeServerCheck([cfg.peerIdentity!]);
  for (const route of cfg.routes ?? []) {
    // Plain TLS carries no target address: the server half has one port per backend, and route.target
    // is that port.
    await listenTcp(route.listen, (sock) => {
      sock.on('error', ignore);
      const up = tls.connect({
        host: HOST,
        port: route.target,
        secureContext: context,
        checkServerIdentity: check,
        allowHalfOpen: true,
      } as tls.ConnectionOptions);
      up.setNoDelay(true);
      up.once('secureConnect', () => {
        pipeBidirectional(sock, up, ignore);
        sock.resume();
      });
      up.once('error', () => sock.destroy());
    });
  }
  ready({ routes: cfg.routes });
}

async function runTlsServer(cfg: ProxyConfig): Promise<void> {
  const cert = loadCert(cfg.cert!, cfg.identity!);
  const ports: number[] = [];
  for (const route of cfg.routes ?? []) {
    const server = tls.createServer(
      { ...mtlsContextOptions(cert), requestCert: true, rejectUnauthorized: true, allowHalfOpen: true },
      (sock) => {
        sock.on('error', ignore);
        sock.setNoDelay(true);
        const up = netConnect({ host: HOST, port: route.target, allowHalfOpen: true, noDelay: true });
        up.once('connect', () => pipeBidirectional(sock, up, ignore));
        up.once('error', () => sock.destroy());
      },
    );
    server.on('tlsClientError', ignore);
    await new Promise<void>((resolve) => server.listen(route.listen, HOST, resolve));
    ports.push((server.address() as AddressInfo).port);
  }
  ready({ ports });
}

async function runNaiveClient(cfg: ProxyConfig): Promise<void> {
  const cert = loadCert(cfg.cert!, cfg.identity!);
  const session = http2.connect(`https://${HOST}:${cfg.peer}`, {
    ...mtlsContextOptions(cert),
    checkServerIdentity: spiffeServerCheck([cfg.peerIdentity!]),
  });
  session.on('error', ignore);
  for (const route of cfg.routes ?? []) {
    await listenTcp(route.listen, (sock) => {
      sock.on('error', ignore);
      const stream = session.request({ ':method': 'CONNECT', ':authority': `${HOST}:${route.target}` });
      stream.on('error', () => sock.destroy());
      stream.once('response', () => {
        sock.pipe(stream).pipe(sock);
        sock.resume();
      });
    });
  }
  ready({ routes: cfg.routes });
}

async function runNaiveServer(cfg: ProxyConfig): Promise<void> {
  const cert = loadCert(cfg.cert!, cfg.identity!);
  const server = http2.createSecureServer({
    ...mtlsContextOptions(cert),
    requestCert: true,
    rejectUnauthorized: true,
  });
  server.on('stream', (stream, headers) => {
    const [host, port] = String(headers[':authority']).split(':');
    const up = netConnect({ host, port: Number(port), noDelay: true });
    up.once('connect', () => {
      stream.respond({ ':status': 200 });
      up.pipe(stream).pipe(up);
    });
    up.on('error', () => stream.destroy());
    stream.on('error', () => up.destroy());
  });
  await new Promise<void>((resolve) => server.listen(cfg.listen ?? 0, HOST, resolve));
  ready({ port: (server.address() as AddressInfo).port });
}

// Exit normally on SIGTERM so `--cpu-prof` / `--heap-prof` runs write their profiles.
process.on('SIGTERM', () => process.exit(0));
const cfg = JSON.parse(process.argv[2] ?? '{}') as ProxyConfig;
const modes: Record<ProxyConfig['mode'], (c: ProxyConfig) => Promise<void>> = {
  echo: runEcho,
  'hbone-client': runHboneClient,
  'hbone-server': runHboneServer,
  'tls-client': runTlsClient,
  'tls-server': runTlsServer,
  'naive-h2-client': runNaiveClient,
  'naive-h2-server': runNaiveServer,
};
await modes[cfg.mode](cfg);
