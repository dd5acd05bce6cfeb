/**
 * The waypoint in-process (no root, no istiod): certificates from a FakeCa, ServiceConfigs from a static source,
 * clients that speak HBONE to it like a source ztunnel (pkg/hbone pool presenting a client workload's
 * certificate), and a fake destination ztunnel (an HboneServer presenting the backends' identity) that maps
 * each CONNECT authority `podIP:targetPort` to a real backend on 127.0.0.1. Endpoint IPs are fake (10.0.0.x):
 * the waypoint's upstream sockets are all sent to the fake ztunnel.
 *
 * Covers: routing by path/header, subsets, weights, redirect, direct response, rewrite + header mutation,
 * mirror, fault abort/delay, route timeout 504, retries on 503, circuit breaker 503 UO, L7 authz 403, JWT 401,
 * unknown service, malformed HTTP / oversize headers, h2c → HTTP/1.1, gRPC (trailers, status), plain TCP and
 * sniffed TCP, telemetry (metrics labels, access log, trace headers), admin and readiness — and that the
 * waypoint stays up throughout.
 */
import { createHash, generateKeyPairSync, type KeyObject, randomBytes } from 'node:crypto';
import {
  createServer as createHttpServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type Server,
} from 'node:http';
import { createServer as createH2Server, type Http2Server, connect as h2connect } from 'node:http2';
import { type AddressInfo, createServer as createNetServer, connect as netConnect } from 'node:net';
import type { Duplex } from 'node:stream';
import { Writable } from 'node:stream';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HbonePool, HboneServer, pipeBidirectional } from '../../pkg/hbone/index.ts';
import { CertManager, type Identity } from '../../pkg/identity/index.ts';
import { createRegistry } from '../../pkg/metrics/index.ts';
import { createLogger } from '../../pkg/telemetry/index.ts';
import { FakeCa } from '../../pkg/testing/fake-ca.ts';
import { eventually, sleep } from '../../pkg/testing/index.ts';
import { ServiceConfig } from '../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import { StaticConfigSource, Waypoint } from '../../waypoint/src/app.ts';
import { loadConfig } from '../../waypoint/src/config.ts';

const TD = 'cluster.local';
const NS = 'default';
const CLIENT: Identity = { trustDomain: TD, namespace: NS, serviceAccount: 'client' };
const OTHER_CLIENT: Identity = { trustDomain: TD, namespace: NS, serviceAccount: 'intruder' };
const BACKEND: Identity = { trustDomain: TD, namespace: NS, serviceAccount: 'backend' };
const WAYPOINT: Identity = { trustDomain: TD, namespace: NS, serviceAccount: 'waypoint' };
const BACKEND_ID = `spiffe://${TD}/ns/${NS}/sa/backend`;

const ECHO_VIP = '10.96.0.10';
const CB_VIP = '10.96.0.11';
const SECURE_VIP = '10.96.0.12';
const JWT_VIP = '10.96.0.13';
const TCP_VIP = '10.96.0.14';
const GRPC_VIP = '10.96.0.15';
const SNIFF_VIP = '10.96.0.16';
const BACKEND_ONLY_VIP = '10.96.0.17';
const PENDING_VIP = '10.96.0.18';

/** Access-log lines captured from the waypoint's logger. */
const logLines: Array<Record<string, unknown>> = [];
const logger = createLogger({
  component: 'waypoint',
  level: 'info',
  destination: new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split('\n')) {
        if (line.trim() === '') continue;
        try {
          logLines.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          // not JSON
        }
      }
      cb();
    },
  }),
});

// ---------- backends ----------

interface Seen {
  version: string;
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

const seen: Seen[] = [];
const flaky = new Map<string, number>();

function backend(version: string): Server {
  return createHttpServer((req, res) => {
    if (req.url?.startsWith('/v1/upload')) {
      const h = createHash('sha256');
      let len = 0;
      req.on('data', (c: Buffer) => {
        len += c.length;
        h.update(c);
      });
      req.on('end', () => res.writeHead(200).end(JSON.stringify({ len, sha256: h.digest('hex') })));
      return;
    }
    if (req.url?.startsWith('/v1/download')) {
      const n = Number(new URL(req.url, 'http://x').searchParams.get('n'));
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      let sent = 0;
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      const pump = () => {
        while (sent < n) {
          const c = chunk.subarray(0, Math.min(chunk.length, n - sent));
          sent += c.length;
          if (!res.write(c)) {
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      pump();
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const url = new URL(req.url ?? '/', 'http://x');
      const body = Buffer.concat(chunks).toString();
      seen.push({ version, method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      if (url.pathname === '/slow') await sleep(Number(url.searchParams.get('ms') ?? 1000));
      if (url.pathname === '/flaky') {
        const key = url.searchParams.get('key') ?? '';
        const n = (flaky.get(key) ?? 0) + 1;
        flaky.set(key, n);
        if (n <= Number(url.searchParams.get('fail') ?? 2)) {
          res.writeHead(503, { 'content-type': 'text/plain' }).end('flaky');
          return;
        }
      }
      if (url.pathname === '/status') {
        res.writeHead(Number(url.searchParams.get('code') ?? 200)).end();
        return;
      }
      res
        .writeHead(200, { 'content-type': 'application/json', 'x-backend': version, server: 'backend' })
        .end(JSON.stringify({ version, method: req.method, url: req.url, headers: req.headers, body }));
    });
  });
}

function grpcBackend(): Http2Server {
  const server = createH2Server();
  server.on('stream', (stream, headers) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      seen.push({
        version: 'grpc',
        method: String(headers[':method']),
        url: String(headers[':path']),
        headers: headers as IncomingHttpHeaders,
        body: Buffer.concat(chunks).toString('hex'),
      });
      const fail = String(headers[':path']).endsWith('/Fail');
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => {
        stream.sendTrailers(fail ? { 'grpc-status': '14', 'grpc-message': 'down' } : { 'grpc-status': '0' });
      });
      // One gRPC message: flag 0, length 3, "hey".
      stream.end(fail ? undefined : Buffer.from([0, 0, 0, 0, 3, 0x68, 0x65, 0x79]));
    });
  });
  return server;
}

async function listenOn<T extends Server | Http2Server | ReturnType<typeof createNetServer>>(
  s: T,
): Promise<number> {
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  return (s.address() as AddressInfo).port;
}

// ---------- fixture state ----------

const ca = new FakeCa();
const clientCerts = new CertManager({ ca });
let waypoint: Waypoint;
let source: StaticConfigSource;
let ztunnel: HboneServer;
let pool: HbonePool;
const servers: Array<{ close(): unknown }> = [];
/** `podIP:targetPort` → 127.0.0.1 port of the backend. */
const routes = new Map<string, number>();
const ztunnelPeers: string[] = [];
let privateKey: KeyObject;
/** Spans the fake OTLP collector received. */
const spans: Array<Record<string, unknown>> = [];
let jwks: string;

function ep(address: string, subsets: string[], extra: Record<string, unknown> = {}) {
  return {
    workloadUid: `Kubernetes//Pod/${NS}/${address}`,
    address,
    ports: {},
    identity: BACKEND_ID,
    healthy: true,
    hbone: true,
    subsets,
    workloadName: `echo-${subsets[0] ?? 'x'}`,
    workloadNamespace: NS,
    canonicalService: 'echo',
    canonicalRevision: subsets[0] ?? 'latest',
    serviceAccount: 'backend',
    ...extra,
  };
}

function svc(
  name: string,
  vip: string,
  port: number,
  targetPort: number,
  protocol: string,
  extra: object = {},
) {
  return ServiceConfig.fromPartial({
    name: `${NS}/${name}.${NS}.svc.cluster.local`,
    namespace: NS,
    hostname: `${name}.${NS}.svc.cluster.local`,
    serviceName: name,
    addresses: [vip],
    ports: [{ port, targetPort, name: protocol || 'auto', protocol }],
    waypoints: [`${NS}/waypoint`],
    ...extra,
  });
}

const ECHO = `${NS}/echo.${NS}.svc.cluster.local`;

function echoConfig(): ServiceConfig {
  return svc('echo', ECHO_VIP, 80, 8080, 'http', {
    endpoints: [ep('10.0.0.1', ['v1']), ep('10.0.0.2', ['v2'])],
    subsets: [
      { name: 'v1', labels: { version: 'v1' } },
      { name: 'v2', labels: { version: 'v2' } },
    ],
    routes: [
      {
        name: 'by-header',
        matches: [{ headers: [{ name: 'x-version', value: { kind: { $case: 'exact', value: 'v2' } } }] }],
        action: { backends: [{ service: ECHO, subset: 'v2', weight: 1 }] },
      },
      {
        name: 'redirect',
        matches: [{ path: { kind: { $case: 'exact', value: '/redirect' } } }],
        action: { redirect: { fullPath: '/new-place', statusCode: 301 } },
      },
      {
        name: 'direct',
        matches: [{ path: { kind: { $case: 'exact', value: '/direct' } } }],
        action: { directResponse: { status: 200, body: 'hello from the waypoint' } },
      },
      {
        name: 'abort',
        matches: [{ path: { kind: { $case: 'prefix', value: '/abort' } } }],
        action: {
          backends: [{ service: ECHO, subset: 'v1', weight: 1 }],
          fault: { abort: { httpStatus: 418, percent: 100 } },
        },
      },
      {
        name: 'delay',
        matches: [{ path: { kind: { $case: 'prefix', value: '/delay' } } }],
        action: {
          backends: [{ service: ECHO, subset: 'v1', weight: 1 }],
          fault: { delay: { fixedDelayMs: 300, percent: 100 } },
        },
      },
      {
        name: 'timeout',
        matches: [{ path: { kind: { $case: 'prefix', value: '/slow' } } }],
        action: { backends: [{ service: ECHO, subset: 'v1', weight: 1 }], timeoutMs: 300 },
      },
      {
        name: 'retry',
        matches: [{ path: { kind: { $case: 'prefix', value: '/flaky' } } }],
        action: {
          backends: [{ service: ECHO, subset: 'v1', weight: 1 }],
          retries: { attempts: 3, retryOn: ['5xx'], backoffBaseMs: 1 },
        },
      },
      {
        name: 'no-retry',
        matches: [{ path: { kind: { $case: 'prefix', value: '/status' } } }],
        action: { backends: [{ service: ECHO, subset: 'v1', weight: 1 }], retries: { attempts: 0 } },
      },
      {
        name: 'weights',
        matches: [{ path: { kind: { $case: 'prefix', value: '/weights' } } }],
        action: {
          backends: [
            { service: ECHO, subset: 'v1', weight: 20 },
            { service: ECHO, subset: 'v2', weight: 80 },
          ],
        },
      },
      {
        name: 'mirror',
        matches: [{ path: { kind: { $case: 'prefix', value: '/mirror' } } }],
        action: {
          backends: [{ service: ECHO, subset: 'v1', weight: 1 }],
          mirrors: [{ service: ECHO, subset: 'v2', percent: 100 }],
        },
      },
      {
        name: 'rewrite',
        matches: [{ path: { kind: { $case: 'prefix', value: '/old/' } } }],
        action: {
          backends: [{ service: ECHO, subset: 'v1', weight: 1 }],
          rewrite: { prefixReplace: '/new/' },
          requestHeaders: { set: [{ name: 'x-added', value: 'yes' }], remove: ['x-remove-me'] },
          responseHeaders: { add: [{ name: 'x-route', value: 'rewrite' }] },
        },
      },
      {
        name: 'v1-prefix',
        matches: [{ path: { kind: { $case: 'prefix', value: '/v1' } } }],
        action: { backends: [{ service: ECHO, subset: 'v1', weight: 1 }] },
      },
      {
        name: 'backend-only',
        matches: [{ path: { kind: { $case: 'prefix', value: '/other' } } }],
        action: { backends: [{ service: `${NS}/other.${NS}.svc.cluster.local`, weight: 1 }] },
      },
      {
        name: 'catch-all',
        matches: [{ path: { kind: { $case: 'prefix', value: '/' } } }],
        action: { backends: [{ service: ECHO, weight: 1 }] },
      },
    ],
  });
}

// ---------- clients ----------

async function tunnel(vip: string, port: number, id: Identity = CLIENT): Promise<Duplex> {
  return pool.connect({
    source: id,
    destinationIdentities: [WAYPOINT],
    destination: { ip: '127.0.0.1', port: waypoint.ports.hbone },
    authority: `${vip}:${port}`,
    baggage:
      'k8s.cluster.name=Kubernetes,k8s.namespace.name=default,k8s.deployment.name=sleep,service.name=sleep,service.version=v1',
    forwarded: 'for="10.244.0.7:40000"',
  });
}

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  ms: number;
}

async function h1(
  path: string,
  opts: {
    vip?: string;
    port?: number;
    method?: string;
    headers?: Record<string, string>;
    body?: string;
    id?: Identity;
  } = {},
): Promise<Reply> {
  const t = await tunnel(opts.vip ?? ECHO_VIP, opts.port ?? 80, opts.id);
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        createConnection: () => t as never,
        method: opts.method ?? 'GET',
        path,
        headers: { host: `echo.${NS}.svc.cluster.local`, ...opts.headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          t.end();
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString(),
            ms: performance.now() - started,
          });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** Writes raw bytes on a tunnel and collects what comes back until the waypoint closes it. */
async function raw(vip: string, port: number, bytes: string | Buffer, waitMs = 2000): Promise<string> {
  const t = await tunnel(vip, port);
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const done = () => resolve(Buffer.concat(chunks).toString('latin1'));
    t.on('data', (c: Buffer) => chunks.push(c));
    t.on('end', done);
    t.on('close', done);
    t.on('error', done);
    t.write(bytes);
    setTimeout(() => {
      t.destroy();
      done();
    }, waitMs);
  });
}

async function metricsText(): Promise<string> {
  return waypoint.registry.metrics();
}

// ---------- setup ----------

beforeAll(async () => {
  const backendCert = await new CertManager({ ca }).get(BACKEND);
  const v1 = backend('v1');
  // A WebSocket-ish upgrade: 101, then echo.
  v1.on('upgrade', (req, socket, head) => {
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nupgrade: ${req.headers.upgrade}\r\nconnection: Upgrade\r\nx-seen-forwarded-for: ${req.headers['x-forwarded-for']}\r\n\r\n`,
    );
    if (head.length > 0) socket.write(head);
    socket.on('error', () => {});
    socket.pipe(socket);
  });
  const v2 = backend('v2');
  const other = backend('other');
  const grpc = grpcBackend();
  const echoTcp = createNetServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  servers.push(v1, v2, other, grpc, echoTcp);
  const [p1, p2, pOther, pGrpc, pTcp] = await Promise.all([
    listenOn(v1),
    listenOn(v2),
    listenOn(other),
    listenOn(grpc),
    listenOn(echoTcp),
  ]);
  routes.set('10.0.0.1:8080', p1);
  routes.set('10.0.0.2:8080', p2);
  routes.set('10.0.0.3:8080', p1);
  routes.set('10.0.0.4:9090', pOther);
  routes.set('10.0.0.5:50051', pGrpc);
  routes.set('10.0.0.6:8080', p1);
  // The destination ztunnel: presents the backends' identity, dials the mapped backend, then pipes.
  ztunnel = await HboneServer.create({
    listen: { host: '127.0.0.1', port: 0 },
    certificateFor: () => backendCert,
    trustDomain: TD,
    onStream: (req) => {
      ztunnelPeers.push(req.peerIdentity.serviceAccount);
      const port = routes.get(`${req.authority.ip}:${req.authority.port}`);
      if (port === undefined) {
        req.reject(503);
        return;
      }
      const up = netConnect({ host: '127.0.0.1', port, allowHalfOpen: true });
      up.once('connect', () => {
        const t = req.accept();
        if (t === null) up.destroy();
        else pipeBidirectional(t, up, () => {});
      });
      up.once('error', () => req.reject(503));
    },
  });
  servers.push({ close: () => ztunnel.close() });

  const { publicKey, privateKey: pk } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  privateKey = pk;
  jwks = JSON.stringify({
    keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'RS256', use: 'sig' }],
  });

  source = new StaticConfigSource([
    echoConfig(),
    svc('other', '10.96.0.30', 80, 9090, 'http', {
      waypoints: [],
      endpoints: [ep('10.0.0.4', [], { workloadName: 'other' })],
    }),
    svc('cb', CB_VIP, 80, 8080, 'http', {
      endpoints: [ep('10.0.0.3', [])],
      trafficPolicy: { connectionPool: { http2MaxRequests: 1 } },
    }),
    svc('pending', PENDING_VIP, 80, 8080, 'http', {
      endpoints: [ep('10.0.0.3', [])],
      trafficPolicy: { connectionPool: { maxConnections: 1, http1MaxPendingRequests: 1 } },
    }),
    svc('secure', SECURE_VIP, 80, 8080, 'http', {
      endpoints: [ep('10.0.0.6', [])],
      authorization: [
        {
          name: 'allow-client-get',
          namespace: NS,
          action: 0,
          rules: [
            {
              from: [{ principals: [`${TD}/ns/${NS}/sa/client`] }],
              to: [{ methods: ['GET'], paths: ['/allowed*'] }],
            },
          ],
        },
      ],
    }),
    svc('jwt', JWT_VIP, 80, 8080, 'http', {
      endpoints: [ep('10.0.0.6', [])],
      jwtRules: [{ issuer: 'test-issuer', jwks, source: `${NS}/jwt-auth` }],
      authorization: [
        {
          name: 'require-jwt',
          namespace: NS,
          action: 0,
          rules: [{ when: [{ key: 'request.auth.claims[iss]', values: ['test-issuer'] }] }],
        },
      ],
    }),
    svc('tcp', TCP_VIP, 9000, pTcp, 'tcp', {
      endpoints: [ep('127.0.0.1', [], { hbone: false, workloadName: 'tcp-echo' })],
    }),
    svc('grpc', GRPC_VIP, 50051, 50051, 'grpc', {
      endpoints: [ep('10.0.0.5', [], { workloadName: 'grpc' })],
    }),
    svc('sniff', SNIFF_VIP, 7000, pTcp, '', {
      endpoints: [ep('127.0.0.1', [], { hbone: false, workloadName: 'sniff' })],
    }),
    svc('backendonly', BACKEND_ONLY_VIP, 80, 8080, 'http', {
      waypoints: [],
      endpoints: [ep('10.0.0.1', ['v1'])],
    }),
  ]);
  const collector = createHttpServer((req, res) => {
    let text = '';
    req.on('data', (c: Buffer) => {
      text += c;
    });
    req.on('end', () => {
      const body = JSON.parse(text) as {
        resourceSpans: Array<{ scopeSpans: Array<{ spans: Array<Record<string, unknown>> }> }>;
      };
      for (const rs of body.resourceSpans) for (const ss of rs.scopeSpans) spans.push(...ss.spans);
      res.end('{}');
    });
  });
  servers.push(collector);
  const collectorPort = await listenOn(collector);
  const config = loadConfig({
    OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${collectorPort}`,
    POD_NAME: 'waypoint-6d9f7c8b5d-x2x7q',
    POD_NAMESPACE: NS,
    SERVICE_ACCOUNT: 'waypoint',
    INSTANCE_IP: '127.0.0.1',
    HBONE_PORT: '0',
    ADMIN_PORT: '0',
    STATS_PORT: '0',
    READINESS_PORT: '0',
    PROTOCOL_DETECTION_TIMEOUT: '300ms',
    MAX_REQUEST_HEADERS_KB: '60',
  });
  waypoint = await Waypoint.create({
    config,
    logger,
    registry: createRegistry(),
    ca,
    configSource: source,
    hboneListen: { host: '127.0.0.1', port: 0 },
    // Every endpoint's ztunnel is the fake one.
    upstreamSocket: () => netConnect({ host: '127.0.0.1', port: ztunnel.address().port }),
  });
  await waypoint.run();
  pool = new HbonePool({ certificateFor: (id) => clientCerts.get(id) });
  await eventually(async () => {
    const r = await fetch(`http://127.0.0.1:${waypoint.ports.readiness}/healthz/ready`);
    return r.status === 200;
  });
});

afterAll(async () => {
  pool?.close();
  await waypoint?.close(0);
  for (const s of servers) s.close();
  clientCerts.close();
});

// ---------- tests ----------

describe('waypoint (in-process)', () => {
  it('is ready, serves metrics and the admin config dump', async () => {
    const stats = await fetch(`http://127.0.0.1:${waypoint.ports.stats}/stats/prometheus`);
    expect(stats.status).toBe(200);
    const dump = (await (await fetch(`http://127.0.0.1:${waypoint.ports.admin}/config_dump`)).json()) as {
      identity: string;
      gateway: string;
      services: Array<{ name: string; served: boolean }>;
      routes: Array<{ service: string }>;
      policies: Array<{ service: string }>;
      certificates: Array<{ identity: string; state: string }>;
    };
    expect(dump.identity).toBe(`spiffe://${TD}/ns/${NS}/sa/waypoint`);
    expect(dump.gateway).toBe(`${NS}/waypoint`);
    expect(dump.services.find((s) => s.name === ECHO)?.served).toBe(true);
    expect(dump.routes.map((r) => r.service)).toContain(ECHO);
    expect(dump.policies.map((p) => p.service)).toContain(`${NS}/secure.${NS}.svc.cluster.local`);
    expect(dump.certificates[0]?.state).toBe('available');
    const lv = await fetch(`http://127.0.0.1:${waypoint.ports.admin}/logging?level=proxy:debug`, {
      method: 'POST',
    });
    expect(lv.status).toBe(200);
    await fetch(`http://127.0.0.1:${waypoint.ports.admin}/logging?level=info`, { method: 'POST' });
  });

  it('forwards HTTP/1.1 over HBONE with its own identity and adds proxy headers', async () => {
    const r = await h1('/v1/hello?x=1', { headers: { 'x-request-id': 'req-1' } });
    expect(r.status).toBe(200);
    expect(r.headers['x-backend']).toBe('v1');
    expect(r.headers.server).toBe('istio-envoy');
    const got = JSON.parse(r.body) as { url: string; headers: IncomingHttpHeaders };
    expect(got.url).toBe('/v1/hello?x=1');
    expect(got.headers['x-request-id']).toBe('req-1');
    expect(got.headers['x-forwarded-for']).toBe('10.244.0.7');
    expect(got.headers['x-forwarded-proto']).toBe('http');
    expect(got.headers['x-envoy-attempt-count']).toBe('1');
    expect(got.headers.host).toBe(`echo.${NS}.svc.cluster.local`);
    expect(got.headers.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
    expect(got.headers['x-b3-traceid']).toMatch(/^[0-9a-f]{32}$/);
    // The upstream tunnel presented the waypoint's identity, not the client's.
    expect(ztunnelPeers).toContain('waypoint');
    expect(ztunnelPeers).not.toContain('client');
  });

  it('continues an incoming trace with a new span', async () => {
    const tp = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const r = await h1('/v1/trace', { headers: { traceparent: tp } });
    const got = JSON.parse(r.body) as { headers: IncomingHttpHeaders };
    const out = String(got.headers.traceparent);
    expect(out.startsWith('00-0af7651916cd43dd8448eb211c80319c-')).toBe(true);
    expect(out).not.toContain('b7ad6b7169203331');
    expect(out.endsWith('-01')).toBe(true);
    expect(got.headers['x-b3-parentspanid']).toBe('b7ad6b7169203331');
  });

  it('exports a span per sampled request (OTLP/HTTP JSON), parented to the caller', async () => {
    const tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const r = await h1('/v1/span', { headers: { traceparent: tp } });
    const sent = String((JSON.parse(r.body) as { headers: IncomingHttpHeaders }).headers.traceparent);
    const spanId = sent.split('-')[2];
    await waypoint.ctx.spans?.flush();
    await eventually(() => spans.some((s) => s.spanId === spanId));
    const span = spans.find((s) => s.spanId === spanId)!;
    expect(span.traceId).toBe('4bf92f3577b34da6a3ce929d0e0e4736');
    expect(span.parentSpanId).toBe('00f067aa0ba902b7');
    expect(span.name).toBe(`echo.${NS}.svc.cluster.local:80/*`);
    expect(span.attributes).toContainEqual({ key: 'http.status_code', value: { intValue: '200' } });
  });

  it('routes by header and by path, to subsets', async () => {
    for (let i = 0; i < 5; i++) {
      expect((await h1('/anything', { headers: { 'x-version': 'v2' } })).headers['x-backend']).toBe('v2');
      expect((await h1('/v1/x')).headers['x-backend']).toBe('v1');
    }
  });

  it('splits by weight (20/80)', async () => {
    let v2 = 0;
    const n = 120;
    for (let i = 0; i < n; i++) if ((await h1('/weights')).headers['x-backend'] === 'v2') v2++;
    expect(v2 / n).toBeGreaterThan(0.6);
    expect(v2 / n).toBeLessThan(0.95);
  });

  it('redirects and answers direct responses', async () => {
    const r = await h1('/redirect');
    expect(r.status).toBe(301);
    expect(r.headers.location).toBe(`http://echo.${NS}.svc.cluster.local/new-place`);
    const d = await h1('/direct');
    expect(d.status).toBe(200);
    expect(d.body).toBe('hello from the waypoint');
  });

  it('rewrites the path and mutates headers', async () => {
    const r = await h1('/old/thing', { headers: { 'x-remove-me': '1' } });
    expect(r.status).toBe(200);
    expect(r.headers['x-route']).toBe('rewrite');
    const got = JSON.parse(r.body) as { url: string; headers: IncomingHttpHeaders };
    expect(got.url).toBe('/new/thing');
    expect(got.headers['x-added']).toBe('yes');
    expect(got.headers['x-remove-me']).toBeUndefined();
    expect(got.headers['x-envoy-original-path']).toBe('/old/thing');
  });

  it('mirrors to a second backend without the caller seeing it', async () => {
    const before = seen.length;
    const r = await h1('/mirror/1', { method: 'POST', body: 'payload' });
    expect(r.headers['x-backend']).toBe('v1');
    await eventually(() => seen.slice(before).some((s) => s.version === 'v2' && s.url === '/mirror/1'));
    const shadow = seen.slice(before).find((s) => s.version === 'v2')!;
    expect(shadow.headers.host).toBe(`echo.${NS}.svc.cluster.local-shadow`);
    expect(shadow.body).toBe('payload');
  });

  it('injects faults: abort and delay', async () => {
    const a = await h1('/abort');
    expect(a.status).toBe(418);
    expect(a.body).toBe('fault filter abort');
    const d = await h1('/delay');
    expect(d.status).toBe(200);
    expect(d.ms).toBeGreaterThanOrEqual(280);
  });

  it('times out with 504 upstream request timeout', async () => {
    const r = await h1('/slow?ms=2000');
    expect(r.status).toBe(504);
    expect(r.body).toBe('upstream request timeout');
    expect(r.ms).toBeLessThan(1500);
  });

  it('retries 503s (buffering the request body) until success', async () => {
    const r = await h1('/flaky?key=a&fail=2', { method: 'POST', body: 'again' });
    expect(r.status).toBe(200);
    const got = JSON.parse(r.body) as { body: string; headers: IncomingHttpHeaders };
    expect(got.body).toBe('again');
    expect(got.headers['x-envoy-attempt-count']).toBe('3');
    expect(flaky.get('a')).toBe(3);
    // Exhausted: 5 failures > 3 retries.
    const x = await h1('/flaky?key=b&fail=5');
    expect(x.status).toBe(503);
    expect(flaky.get('b')).toBe(4);
    const line = logLines.findLast((l) => l.msg === 'request' && String(l.path).includes('key=b'));
    expect(line?.response_flags).toBe('URX');
  });

  it('passes an upstream error status through without retrying when retries are off', async () => {
    const r = await h1('/status?code=503');
    expect(r.status).toBe(503);
  });

  it('circuit-breaks concurrent requests beyond http2MaxRequests with 503 UO', async () => {
    const results = await Promise.all(
      [0, 1, 2].map(() => h1('/slow?ms=400', { vip: CB_VIP, headers: { host: 'cb' } })),
    );
    const codes = results.map((r) => r.status).sort();
    expect(codes).toContain(200);
    expect(codes).toContain(503);
    const overflow = results.find((r) => r.status === 503)!;
    expect(overflow.body).toContain('overflow');
    expect(await metricsText()).toMatch(
      /istio_requests_total\{[^}]*response_code="503"[^}]*\}|response_flags="UO"/,
    );
  });

  it('refuses requests beyond maxConnections + http1MaxPendingRequests with 503 UO', async () => {
    const results = await Promise.all(
      [0, 1, 2].map(() => h1('/slow?ms=300', { vip: PENDING_VIP, headers: { host: 'pending' } })),
    );
    const codes = results.map((r) => r.status).sort();
    expect(codes).toEqual([200, 200, 503]);
  });

  it('enforces L7 authorization: 403 RBAC: access denied', async () => {
    expect((await h1('/allowed/x', { vip: SECURE_VIP })).status).toBe(200);
    const denied = await h1('/denied', { vip: SECURE_VIP });
    expect(denied.status).toBe(403);
    expect(denied.body).toBe('RBAC: access denied');
    const intruder = await h1('/allowed/x', { vip: SECURE_VIP, id: OTHER_CLIENT });
    expect(intruder.status).toBe(403);
    const post = await h1('/allowed/x', { vip: SECURE_VIP, method: 'POST', body: 'x' });
    expect(post.status).toBe(403);
  });

  it('validates JWTs: none 403, valid 200, corrupted 401 with www-authenticate', async () => {
    const token = await new SignJWT({ sub: 'alice' })
      .setProtectedHeader({ alg: 'RS256', kid: 'k1' })
      .setIssuer('test-issuer')
      .setIssuedAt()
      .setExpirationTime('1h')
      .sign(privateKey);
    expect((await h1('/x', { vip: JWT_VIP })).status).toBe(403);
    const ok = await h1('/x', { vip: JWT_VIP, headers: { authorization: `Bearer ${token}` } });
    expect(ok.status).toBe(200);
    // The token does not travel upstream (forwardOriginalToken false).
    expect((JSON.parse(ok.body) as { headers: IncomingHttpHeaders }).headers.authorization).toBeUndefined();
    const bad = await h1('/x', {
      vip: JWT_VIP,
      headers: { authorization: `Bearer ${token.slice(0, -4)}AAAA` },
    });
    expect(bad.status).toBe(401);
    expect(bad.headers['www-authenticate']).toMatch(/^Bearer realm="http:\/\/.*\/x", error="invalid_token"$/);
  });

  it('refuses a CONNECT to a destination it does not serve with 503', async () => {
    await expect(tunnel('10.96.9.9', 80)).rejects.toMatchObject({ status: 503 });
  });

  it('forwards to a service it does not serve without applying routes (backend-only)', async () => {
    const r = await h1('/v1/x', { vip: BACKEND_ONLY_VIP });
    expect(r.status).toBe(200);
    expect(r.headers['x-backend']).toBe('v1');
  });

  it('routes to another service named by a route', async () => {
    const r = await h1('/other/path');
    expect(r.status).toBe(200);
    expect(r.headers['x-backend']).toBe('other');
  });

  it('answers malformed HTTP with 400 and oversize headers with 431, and stays up', async () => {
    const bad = await raw(ECHO_VIP, 80, 'GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n');
    expect(bad).toMatch(/^HTTP\/1\.1 400 /);
    const notHttp = await raw(ECHO_VIP, 80, 'hello there\r\n\r\n');
    expect(notHttp).toMatch(/^HTTP\/1\.1 400 /);
    const big = await raw(
      ECHO_VIP,
      80,
      `GET / HTTP/1.1\r\nHost: x\r\nx-big: ${'a'.repeat(70 * 1024)}\r\n\r\n`,
    );
    expect(big).toMatch(/^HTTP\/1\.1 431 /);
    const fine = await h1('/v1/after-abuse');
    expect(fine.status).toBe(200);
  });

  it('keeps HTTP/1.1 connections alive across requests on one tunnel', async () => {
    const t = await tunnel(ECHO_VIP, 80);
    const get = () =>
      new Promise<number>((resolve, reject) => {
        const req = httpRequest(
          {
            createConnection: () => t as never,
            path: '/v1/keepalive',
            headers: { host: 'echo', connection: 'keep-alive' },
          },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          },
        );
        req.on('error', reject);
        req.end();
      });
    expect(await get()).toBe(200);
    expect(t.destroyed).toBe(false);
    t.end();
  });

  it('serves h2c clients (translated to HTTP/1.1 upstream on an http port)', async () => {
    const t = await tunnel(ECHO_VIP, 80);
    const session = h2connect('http://echo', { createConnection: () => t as never });
    const res = await new Promise<{ status: number; body: string; backend: string }>((resolve, reject) => {
      const s = session.request({ ':path': '/v1/h2', ':authority': `echo.${NS}.svc.cluster.local` });
      let status = 0;
      let backendName = '';
      const chunks: Buffer[] = [];
      s.on('response', (h) => {
        status = Number(h[':status']);
        backendName = String(h['x-backend']);
      });
      s.on('data', (c: Buffer) => chunks.push(c));
      s.on('end', () => resolve({ status, body: Buffer.concat(chunks).toString(), backend: backendName }));
      s.on('error', reject);
      s.end();
    });
    session.close();
    expect(res.status).toBe(200);
    expect(res.backend).toBe('v1');
    expect((JSON.parse(res.body) as { url: string }).url).toBe('/v1/h2');
  });

  it('proxies gRPC over h2 with trailers and reports grpc status', async () => {
    const call = async (method: string) => {
      const t = await tunnel(GRPC_VIP, 50051);
      const session = h2connect('http://grpc', { createConnection: () => t as never });
      try {
        return await new Promise<{ status: number; trailers: Record<string, unknown>; body: Buffer }>(
          (resolve, reject) => {
            const s = session.request({
              ':method': 'POST',
              ':path': `/test.Echo/${method}`,
              'content-type': 'application/grpc',
              te: 'trailers',
            });
            let status = 0;
            let trailers: Record<string, unknown> = {};
            const chunks: Buffer[] = [];
            s.on('response', (h) => {
              status = Number(h[':status']);
            });
            s.on('trailers', (h) => {
              trailers = h;
            });
            s.on('data', (c: Buffer) => chunks.push(c));
            s.on('end', () => resolve({ status, trailers, body: Buffer.concat(chunks) }));
            s.on('error', reject);
            s.end(Buffer.from([0, 0, 0, 0, 2, 0x68, 0x69]));
          },
        );
      } finally {
        session.close();
      }
    };
    const ok = await call('Say');
    expect(ok.status).toBe(200);
    expect(ok.trailers['grpc-status']).toBe('0');
    expect(ok.body.subarray(5).toString()).toBe('hey');
    const fail = await call('Fail');
    expect(fail.trailers['grpc-status']).toBe('14');
    const upstream = seen.findLast((s) => s.version === 'grpc');
    expect(upstream?.headers.te).toBe('trailers');
    await eventually(async () => {
      const m = await metricsText();
      return /istio_requests_total\{[^}]*request_protocol="grpc"[^}]*grpc_response_status="14"/.test(m);
    });
  });

  it('proxies TCP on a tcp port and sniffs TCP on an undeclared port', async () => {
    for (const [vip, port] of [
      [TCP_VIP, 9000],
      [SNIFF_VIP, 7000],
    ] as const) {
      const t = await tunnel(vip, port);
      const echoed = await new Promise<string>((resolve) => {
        const chunks: Buffer[] = [];
        t.on('data', (c: Buffer) => {
          chunks.push(c);
          if (Buffer.concat(chunks).length >= 11) resolve(Buffer.concat(chunks).toString());
        });
        t.write('\x00\x01binary!!!');
      });
      expect(echoed).toBe('\x00\x01binary!!!');
      t.end();
    }
    await eventually(async () =>
      /istio_tcp_connections_opened_total\{[^}]*reporter="waypoint"/.test(await metricsText()),
    );
  });

  it('reports Istio request metrics with the waypoint label set and one access log line per request', async () => {
    await h1('/v1/metrics-check', { headers: { 'x-request-id': 'metrics-1' } });
    const m = await metricsText();
    const line = m
      .split('\n')
      .find(
        (l) =>
          l.startsWith('istio_requests_total{') &&
          l.includes('destination_workload="echo-v1"') &&
          l.includes('response_code="200"'),
      );
    expect(line).toBeDefined();
    for (const label of [
      'reporter="waypoint"',
      'source_workload="sleep"',
      'source_workload_namespace="default"',
      `source_principal="spiffe://${TD}/ns/${NS}/sa/client"`,
      'source_app="sleep"',
      'source_version="v1"',
      `destination_service="echo.${NS}.svc.cluster.local"`,
      'destination_service_name="echo"',
      'destination_service_namespace="default"',
      `destination_principal="${BACKEND_ID}"`,
      'destination_canonical_service="echo"',
      'request_protocol="http"',
      'connection_security_policy="mutual_tls"',
      'response_flags="-"',
    ]) {
      expect(line).toContain(label);
    }
    expect(m).toContain('istio_request_duration_milliseconds_bucket{');
    expect(m).toContain('istio_request_bytes_bucket{');
    expect(m).toContain('istio_response_bytes_bucket{');
    const log = logLines.filter((l) => l.msg === 'request' && l.request_id === 'metrics-1');
    expect(log).toHaveLength(1);
    expect(log[0]).toMatchObject({
      response_code: 200,
      'src.identity': `spiffe://${TD}/ns/${NS}/sa/client`,
      'dst.identity': BACKEND_ID,
      'dst.service': `echo.${NS}.svc.cluster.local`,
    });
  });

  it('NACKs a config update that does not compile and keeps serving the last good one', async () => {
    const bad = echoConfig();
    bad.routes = [
      {
        name: 'bad-regex',
        ports: [],
        matches: [
          {
            path: { kind: { $case: 'regex', value: '(?=x)' }, ignoreCase: false },
            headers: [],
            queryParams: [],
            port: 0,
          },
        ],
        action: {
          backends: [{ service: ECHO, port: 0, subset: 'v2', weight: 1, errorStatus: 0 }],
          mirrors: [],
          timeoutMs: 0,
        },
      },
    ];
    expect(() => source.update([bad])).toThrow(/MESH_ERR_XDS_NACK|bad-regex/);
    const r = await h1('/v1/still-good');
    expect(r.headers['x-backend']).toBe('v1');
  });

  it('applies an accepted update to new requests', async () => {
    const next = echoConfig();
    next.routes = [
      {
        name: 'all-v2',
        ports: [],
        matches: [],
        action: {
          backends: [{ service: ECHO, port: 0, subset: 'v2', weight: 1, errorStatus: 0 }],
          mirrors: [],
          timeoutMs: 0,
        },
      },
    ];
    source.update([next]);
    expect((await h1('/v1/now-v2')).headers['x-backend']).toBe('v2');
    source.update([echoConfig()]);
    expect((await h1('/v1/back')).headers['x-backend']).toBe('v1');
  });

  it('streams large request and response bodies (beyond the retry buffer)', async () => {
    const body = randomBytes(5 * 1024 * 1024);
    const up = await h1('/v1/upload', { method: 'POST', body: body as unknown as string });
    expect(up.status).toBe(200);
    expect(JSON.parse(up.body)).toEqual({
      len: body.length,
      sha256: createHash('sha256').update(body).digest('hex'),
    });
    const down = await h1('/v1/download?n=8388608');
    expect(down.status).toBe(200);
    expect(Buffer.byteLength(down.body)).toBe(8388608);
  });

  it('refuses oversize HTTP/2 headers without crashing', async () => {
    const t = await tunnel(ECHO_VIP, 80);
    const session = h2connect('http://echo', { createConnection: () => t as never });
    session.on('error', () => {});
    const outcome = await new Promise<string>((resolve) => {
      const s = session.request({ ':path': '/v1/big', 'x-big': 'a'.repeat(70 * 1024) });
      s.on('response', (h) => resolve(`status ${h[':status']}`));
      s.on('error', (err) => resolve(`error ${(err as NodeJS.ErrnoException).code}`));
      s.on('close', () => resolve('closed'));
      s.end();
    });
    session.destroy();
    expect(outcome).not.toBe('status 200');
    expect((await h1('/v1/after-h2-abuse')).status).toBe(200);
  });

  it('proxies an HTTP/1.1 Upgrade (WebSocket) after routing and authorization', async () => {
    const upgrade = async (vip: string, path: string) => {
      const t = await tunnel(vip, 80);
      return new Promise<{ status: number; echoed: string; headers: IncomingHttpHeaders }>(
        (resolve, reject) => {
          const req = httpRequest({
            createConnection: () => t as never,
            path,
            headers: { host: 'echo', connection: 'Upgrade', upgrade: 'websocket' },
          });
          req.on('upgrade', (res, socket) => {
            socket.write('ping-frame');
            socket.once('data', (c: Buffer) => {
              socket.destroy();
              resolve({ status: res.statusCode ?? 0, echoed: c.toString(), headers: res.headers });
            });
          });
          req.on('response', (res) => {
            res.resume();
            resolve({ status: res.statusCode ?? 0, echoed: '', headers: res.headers });
          });
          req.on('error', reject);
          req.end();
        },
      );
    };
    const ok = await upgrade(ECHO_VIP, '/v1/ws');
    expect(ok.status).toBe(101);
    expect(ok.echoed).toBe('ping-frame');
    expect(ok.headers['x-seen-forwarded-for']).toBe('10.244.0.7');
    const denied = await upgrade(SECURE_VIP, '/denied');
    expect(denied.status).toBe(403);
    await eventually(async () => /istio_requests_total\{[^}]*response_code="101"/.test(await metricsText()));
  });

  it('generates x-request-id when absent', async () => {
    const r = await h1('/v1/rid');
    const got = JSON.parse(r.body) as { headers: IncomingHttpHeaders };
    expect(got.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('drains on close: not ready any more, in-flight requests finish, new tunnels refused', async () => {
    const inflight = h1('/slow?ms=200', { vip: CB_VIP });
    await sleep(50);
    const closing = waypoint.close(5_000);
    expect(waypoint.ready()).toBe(false);
    expect((await inflight).status).toBe(200);
    await closing;
    await expect(tunnel(ECHO_VIP, 80)).rejects.toThrow();
  });
});
