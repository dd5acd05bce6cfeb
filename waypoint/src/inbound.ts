/**
 * The waypoint's HBONE listener (:15008): mTLS with the waypoint's own certificate, client certificate in the
 * mesh trust domain required (pkg/hbone HboneServer). For each CONNECT stream:
 *
 * 1. the authority (`VIP:port` or `podIP:port`) must name a service (or pod) in the current table, else 503
 *    like Istio's waypoint (no filter chain matches);
 * 2. the stream is accepted (200) — the waypoint terminates the tunnel — and the protocol inside is decided:
 *    a port declared `tcp` is proxied as bytes; otherwise the first bytes are sniffed (protocol.ts) for an
 *    HTTP/2 preface (h2c, gRPC), an HTTP/1.x request line, or anything else (TCP; on a port declared HTTP a
 *    non-HTTP stream is answered 400 and closed);
 * 3. HTTP streams are handed to one internal `http.Server` / `http2` server each (`emit('connection')`), which
 *    parse, enforce limits (431 for oversize headers, 400 for malformed requests) and keep the connection alive;
 *    every request then goes through HttpProxy. TCP streams are piped to an endpoint of the service.
 */
import {
  createServer as createHttpServer,
  type Server as HttpServer,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import {
  createServer as createH2Server,
  type Http2Server,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type ServerHttp2Session,
} from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Drainable } from '../../pkg/drain/index.ts';
import { describeError } from '../../pkg/errors/index.ts';
import {
  CONNECTION_WINDOW_SIZE,
  type ConnectRequest,
  HboneServer,
  type ListenSpec,
  type PipeStats,
  pipeBidirectional,
  STREAM_WINDOW_SIZE,
} from '../../pkg/hbone/index.ts';
import type { WorkloadCertificate } from '../../pkg/identity/index.ts';
import { LogOnce } from '../../pkg/telemetry/index.ts';
import type { WaypointContext } from './context.ts';
import { DownstreamConn } from './downstream.ts';
import type { CompiledService, RequestView } from './engine/index.ts';
import { route } from './engine/index.ts';
import { HttpProxy } from './http.ts';
import { type PeerLabels, peerLabels } from './metrics.ts';
import { chooseProtocol, detectProtocol, type Protocol } from './protocol.ts';
import { endpointIdentity, type UpstreamTarget } from './upstream.ts';

const kConn = Symbol('waypoint.downstream');

interface Tagged {
  [kConn]?: DownstreamConn;
}

/** Streams HTTP/2 clients may open at once on one tunnel (Envoy's default is 2^31-1; keep it sane). */
const H2_MAX_CONCURRENT_STREAMS = 1000;
/** Node refuses streams past this much buffered session memory (MiB); tunnels carry real traffic. */
const H2_MAX_SESSION_MEMORY_MIB = 64;
/** Envoy's default max_headers_count. */
const MAX_HEADERS_COUNT = 100;

/** Raw HTTP/1.1 error responses written on a connection the parser gave up on. */
function rawResponse(status: number, reason: string): string {
  return `HTTP/1.1 ${status} ${reason}\r\ncontent-length: ${reason.length}\r\ncontent-type: text/plain\r\nconnection: close\r\nserver: istio-envoy\r\n\r\n${reason}`;
}

interface TcpRecord {
  readonly inbound: Inbound;
  readonly conn: DownstreamConn;
  readonly labels: PeerLabels;
  readonly upstreamAddr: string;
  readonly started: number;
}

function onTcpDone(stats: PipeStats, rec: TcpRecord): void {
  rec.inbound.tcpFinished(rec, stats);
}

export interface InboundOptions {
  readonly listen: ListenSpec;
  readonly certificate: () => WorkloadCertificate | Promise<WorkloadCertificate>;
}

export class Inbound implements Drainable {
  readonly name = 'hbone-inbound';
  readonly hbone: HboneServer;
  readonly stats = { streams: 0, unknownService: 0, http1: 0, h2: 0, tcp: 0, rejected: 0, sniffTimeouts: 0 };
  private readonly ctx: WaypointContext;
  private readonly http1: HttpServer;
  private readonly h2: Http2Server;
  private readonly h2Sessions = new Set<ServerHttp2Session>();
  /** Set when the listener closes (after the minimum drain window): new inner h2c sessions get GOAWAY at once. */
  private stopping = false;
  private readonly tunnels = new Set<Duplex>();
  private readonly logOnce = new LogOnce();
  private pendingConn: DownstreamConn | null = null;

  private constructor(ctx: WaypointContext, hbone: HboneServer, http1: HttpServer, h2: Http2Server) {
    this.ctx = ctx;
    this.hbone = hbone;
    this.http1 = http1;
    this.h2 = h2;
  }

  static async create(ctx: WaypointContext, opts: InboundOptions): Promise<Inbound> {
    const { config } = ctx;
    const proxy = new HttpProxy(ctx);
    let self: Inbound | null = null;
    const http1 = createHttpServer(
      {
        maxHeaderSize: config.maxRequestHeadersBytes,
        requestTimeout: config.requestTimeoutMs,
        headersTimeout: config.requestHeadersTimeoutMs,
        keepAliveTimeout: config.downstreamIdleTimeoutMs,
        // A request without Host is routed by the CONNECT authority instead of refused.
        requireHostHeader: false,
        joinDuplicateHeaders: true,
      },
      (req: IncomingMessage, res: ServerResponse) => {
        const conn = (req.socket as unknown as Tagged)[kConn];
        if (conn === undefined) {
          res.writeHead(500).end();
          return;
        }
        proxy.handle(req, res, conn);
      },
    );
    http1.maxHeadersCount = MAX_HEADERS_COUNT;
    http1.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => self?.onClientError(err, socket));
    // WebSocket and other upgrades: routed and authorized like any request, then piped.
    http1.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      const conn = (socket as unknown as Tagged)[kConn];
      if (conn === undefined) {
        socket.destroy();
        return;
      }
      proxy.handleUpgrade(req, socket, head, conn);
    });
    // CONNECT inside a tunnel is not proxied: answered like Envoy without CONNECT support.
    http1.on('connect', (_req: IncomingMessage, socket: Duplex) => {
      ctx.metrics.downstreamErrors.inc({ reason: 'connect_unsupported' });
      socket.end(rawResponse(400, 'Bad Request'));
    });
    const h2 = createH2Server(
      {
        maxSessionMemory: H2_MAX_SESSION_MEMORY_MIB,
        maxHeaderListPairs: MAX_HEADERS_COUNT * 2,
        settings: {
          maxHeaderListSize: config.maxRequestHeadersBytes,
          maxConcurrentStreams: H2_MAX_CONCURRENT_STREAMS,
          initialWindowSize: STREAM_WINDOW_SIZE,
          enablePush: false,
        },
      },
      (req: Http2ServerRequest, res: Http2ServerResponse) => {
        const conn = (req.stream.session as unknown as Tagged | undefined)?.[kConn];
        if (conn === undefined) {
          res.writeHead(500).end();
          return;
        }
        proxy.handle(req, res, conn);
      },
    );
    h2.on('session', (session: ServerHttp2Session) => self?.onH2Session(session));
    const hbone = await HboneServer.create({
      listen: opts.listen,
      name: 'waypoint :15008',
      trustDomain: config.trustDomain,
      certificateFor: opts.certificate,
      onStream: (req) => self!.onStream(req),
      logger: ctx.logger,
    });
    self = new Inbound(ctx, hbone, http1, h2);
    return self;
  }

  get port(): number {
    return this.hbone.address().port;
  }

  // ---------- CONNECT ----------

  /** @internal */
  onStream(req: ConnectRequest): void {
    this.stats.streams++;
    const { ctx } = this;
    const table = ctx.store.table;
    const svc = table.lookup(req.authority.ip, req.authority.port);
    if (svc === undefined) {
      this.stats.unknownService++;
      ctx.metrics.downstreamErrors.inc({ reason: 'unknown_destination' });
      if (this.logOnce.should(`unknown ${req.authority.ip}:${req.authority.port}`)) {
        ctx.logger.info(
          { authority: `${req.authority.ip}:${req.authority.port}`, peer: req.peerIdentity.serviceAccount },
          'HBONE stream for a destination this waypoint does not serve',
        );
      }
      req.reject(503);
      return;
    }
    const declared = svc.ports.get(req.authority.port)?.protocol ?? '';
    const tunnel = req.accept();
    if (tunnel === null) return;
    const conn = new DownstreamConn(
      tunnel,
      req.authority.ip,
      req.authority.port,
      req.peerIdentity,
      req.source.ip,
      req.baggage,
      req.forwarded,
      req.traceparent,
      declared,
    );
    (tunnel as unknown as Tagged)[kConn] = conn;
    this.tunnels.add(tunnel);
    tunnel.once('close', () => this.tunnels.delete(tunnel));
    tunnel.on('error', noop);
    if (declared === 'tcp') {
      conn.protocol = 'tcp';
      this.stats.tcp++;
      void this.proxyTcp(conn, svc);
      return;
    }
    this.sniff(conn, svc);
  }

  /** Reads until the protocol is known, then puts the bytes back and hands the stream over. */
  private sniff(conn: DownstreamConn, svc: CompiledService): void {
    const tunnel = conn.tunnel;
    let buf: Buffer | null = null;
    let decided = false;
    const decide = (p: Protocol | 'reject') => {
      decided = true;
      clearTimeout(timer);
      tunnel.off('data', onData);
      tunnel.off('end', onEnd);
      tunnel.pause();
      if (buf !== null && buf.length > 0) tunnel.unshift(buf);
      this.dispatch(conn, svc, p);
    };
    const onData = (chunk: Buffer) => {
      buf = buf === null ? chunk : Buffer.concat([buf, chunk]);
      const p = detectProtocol(buf);
      if (p !== null) decide(chooseProtocol(conn.declared, p));
    };
    const onEnd = () => {
      // The client half-closed before saying anything recognisable: whatever it sent is TCP payload.
      if (!decided) decide(chooseProtocol(conn.declared, 'tcp'));
    };
    const timer = setTimeout(() => {
      if (decided) return;
      this.stats.sniffTimeouts++;
      // Server-first protocols never send first: treat the stream as TCP (Istio's detection timeout).
      decide(chooseProtocol(conn.declared, 'tcp'));
    }, this.ctx.config.protocolDetectionTimeoutMs);
    tunnel.on('data', onData);
    tunnel.on('end', onEnd);
  }

  private dispatch(conn: DownstreamConn, svc: CompiledService, p: Protocol | 'reject'): void {
    const tunnel = conn.tunnel;
    if (p === 'reject') {
      this.stats.rejected++;
      this.ctx.metrics.downstreamErrors.inc({ reason: 'not_http' });
      tunnel.end(rawResponse(400, 'Bad Request'));
      return;
    }
    conn.protocol = p;
    if (p === 'http1') {
      this.stats.http1++;
      this.http1.emit('connection', tunnel);
      tunnel.resume();
    } else if (p === 'h2') {
      this.stats.h2++;
      this.pendingConn = conn;
      try {
        this.h2.emit('connection', tunnel);
      } finally {
        this.pendingConn = null;
      }
    } else {
      this.stats.tcp++;
      void this.proxyTcp(conn, svc);
    }
  }

  private onH2Session(session: ServerHttp2Session): void {
    const conn = this.pendingConn;
    if (conn === null) {
      session.destroy();
      return;
    }
    (session as unknown as Tagged)[kConn] = conn;
    this.h2Sessions.add(session);
    session.once('close', () => this.h2Sessions.delete(session));
    session.on('error', noop);
    // SETTINGS cannot raise the connection window (PERFORMANCE.md).
    session.once('remoteSettings', () => {
      if (!session.destroyed) session.setLocalWindowSize(CONNECTION_WINDOW_SIZE);
    });
    // GOAWAY at once only once the listener is closing; during the minimum drain window new sessions are served.
    if (this.stopping) session.close();
  }

  /** HTTP/1.1 parse failures: 431 for oversize headers, 408 for a request that took too long, else 400. */
  private onClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
    const code = err.code ?? '';
    let status = 400;
    let reason = 'Bad Request';
    let label = 'bad_request';
    if (code === 'HPE_HEADER_OVERFLOW') {
      status = 431;
      reason = 'Request Header Fields Too Large';
      label = 'header_overflow';
    } else if (code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      status = 408;
      reason = 'Request Timeout';
      label = 'request_timeout';
    } else if (code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE') {
      socket.destroy();
      return;
    }
    this.ctx.metrics.downstreamErrors.inc({ reason: label });
    const conn = (socket as unknown as Tagged)[kConn];
    this.ctx.logger.debug({ code, err: describeError(err), peer: conn?.peerId }, 'malformed HTTP request');
    const s = socket as Partial<Socket>;
    if (socket.writable && !(s as { _httpMessage?: unknown })._httpMessage)
      socket.end(rawResponse(status, reason));
    else socket.destroy();
  }

  // ---------- TCP ----------

  private async proxyTcp(conn: DownstreamConn, svc: CompiledService): Promise<void> {
    const { ctx } = this;
    const tunnel = conn.tunnel;
    const view: RequestView = {
      method: '',
      path: '/',
      authority: '',
      port: conn.port,
      headers: {},
      sourceIp: conn.sourceIp,
    };
    const d = route(svc, view, ctx.rng);
    const backend = d.kind === 'forward' ? d.backend : null;
    const bsvc = backend?.service ?? null;
    const cluster = backend !== null && bsvc !== null ? ctx.store.table.cluster(backend) : undefined;
    const svcRef = bsvc ?? svc;
    const ref = { hostname: svcRef.hostname, namespace: svcRef.namespace, name: svcRef.config.serviceName };
    const fail = (flag: string, err: unknown) => {
      const labels = peerLabels(conn.source, null, ref, 'tcp', flag);
      ctx.metrics.tcpOpen(labels);
      ctx.metrics.tcpClose(labels, 0, 0, true);
      ctx.accessLog?.warn(
        {
          'src.addr': conn.sourceAddr,
          'src.identity': conn.peerId,
          'dst.service': ref.hostname,
          response_flags: flag,
          error: describeError(err),
        },
        'connection failed',
      );
      tunnel.destroy();
    };
    if (cluster === undefined || backend === null) {
      fail(d.kind === 'noRoute' ? 'NR' : 'NC', new Error(`no backend for ${svc.name} port ${conn.port}`));
      return;
    }
    if (!cluster.limiter.tryOpenConnection()) {
      fail('UO', new Error('connection limit reached'));
      return;
    }
    const picker = cluster.picker(backend.port);
    const ep = picker.pick(view, null, performance.now());
    if (ep === undefined) {
      cluster.limiter.connectionClosed();
      fail('UH', new Error('no healthy upstream'));
      return;
    }
    const target: UpstreamTarget = {
      ip: ep.address,
      targetPort: picker.targetPort(ep),
      hbone: ep.hbone,
      identity: endpointIdentity(ep.identity),
      maxConnections: 0,
      maxRequestsPerConnection: 0,
      connectTimeoutMs: cluster.connectTimeoutMs,
      idleTimeoutMs: cluster.idleTimeoutMs,
    };
    let upstream: Duplex;
    picker.onRequestStart(ep);
    try {
      upstream = await ctx.upstreams.open(target, {
        baggage: conn.baggageHeader,
        forwarded: conn.forwarded,
        traceparent: conn.traceparent,
      });
    } catch (err) {
      picker.onRequestEnd(ep);
      cluster.limiter.connectionClosed();
      cluster.outlier.report(ep, 'connect-failure', performance.now());
      fail('UF', err);
      return;
    }
    if (tunnel.destroyed) {
      picker.onRequestEnd(ep);
      cluster.limiter.connectionClosed();
      upstream.destroy();
      return;
    }
    const labels = peerLabels(
      conn.source,
      {
        workloadName: ep.workloadName,
        workloadNamespace: ep.workloadNamespace,
        canonicalService: ep.canonicalService,
        canonicalRevision: ep.canonicalRevision,
        principal: ep.identity,
        cluster: ctx.config.clusterId,
      },
      ref,
      'tcp',
      '-',
    );
    ctx.metrics.tcpOpen(labels);
    const rec: TcpRecord = {
      inbound: this,
      conn,
      labels,
      upstreamAddr: `${target.ip}:${target.targetPort}`,
      started: performance.now(),
    };
    upstream.once('close', () => {
      picker.onRequestEnd(ep);
      cluster.limiter.connectionClosed();
    });
    pipeBidirectional(tunnel, upstream, onTcpDone, rec);
    tunnel.resume();
  }

  /** @internal */
  tcpFinished(rec: TcpRecord, stats: PipeStats): void {
    const { ctx } = this;
    const failed = stats.error !== null;
    const labels = failed ? { ...rec.labels, response_flags: 'UC' } : rec.labels;
    ctx.metrics.tcpClose(labels, stats.bytesAtoB, stats.bytesBtoA, failed);
    ctx.accessLog?.info(
      {
        'src.addr': rec.conn.sourceAddr,
        'src.identity': rec.conn.peerId,
        'src.workload': rec.conn.baggage.workloadName,
        'src.namespace': rec.conn.baggage.namespace,
        'dst.addr': rec.upstreamAddr,
        'dst.service': rec.labels.destination_service,
        'dst.workload': rec.labels.destination_workload,
        'dst.identity': rec.labels.destination_principal,
        protocol: 'tcp',
        bytes_received: stats.bytesAtoB,
        bytes_sent: stats.bytesBtoA,
        duration_ms: Math.round(performance.now() - rec.started),
        response_flags: failed ? 'UC' : '-',
        ...(stats.error ? { error: describeError(stats.error) } : {}),
      },
      'connection complete',
    );
  }

  // ---------- lifecycle ----------

  get activeTunnels(): number {
    return this.tunnels.size;
  }

  /** Stops accepting, GOAWAYs HBONE and h2c sessions, closes idle HTTP/1.1 keep-alives; waits for the rest. */
  async drain(): Promise<void> {
    this.stopping = true;
    for (const s of this.h2Sessions) if (!s.closed) s.close();
    this.http1.closeIdleConnections();
    const hbone = this.hbone.drain();
    // Keep-alive connections that become idle during the drain are closed as they go idle.
    const idle = setInterval(() => this.http1.closeIdleConnections(), 250);
    try {
      await hbone;
    } finally {
      clearInterval(idle);
    }
  }

  forceClose(): void {
    for (const t of this.tunnels) t.destroy();
    this.tunnels.clear();
    for (const s of this.h2Sessions) s.destroy();
    this.h2Sessions.clear();
    this.hbone.forceClose();
    this.http1.closeAllConnections();
  }

  dump() {
    return { ...this.stats, tunnels: this.tunnels.size, hbone: { ...this.hbone.stats } };
  }
}

function noop(): void {}
