/**
 * The waypoint's HTTP request path (HTTP/1.1 and h2c/gRPC alike, through Node's compat request/response):
 *
 *   JWT (401) → L7 authorization (403 `RBAC: access denied`) → engine route → redirect | direct | error |
 *   404 NR | forward: fault (delay DI, abort FI) → circuit breaker (503 UO) → endpoint pick (503 UH) →
 *   upstream try over HBONE (or TCP) → retries (buffered body up to a cap) with back-off and per-try timeout,
 *   route timeout (504 UT) → response streamed back (trailers, gRPC status) → one metric set, one access
 *   log line, one span.
 *
 * Local replies follow Envoy's wording and, for gRPC requests, become trailers-only gRPC errors (HTTP 200,
 * `grpc-status` mapped from the HTTP status) as Envoy does.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import {
  type ClientRequest,
  request as h1request,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type ServerResponse,
  STATUS_CODES,
} from 'node:http';
import {
  type ClientHttp2Stream,
  type IncomingHttpHeaders as H2IncomingHeaders,
  type Http2ServerRequest,
  type Http2ServerResponse,
  constants as h2constants,
} from 'node:http2';
import type { Duplex, Readable } from 'node:stream';
import { describeError } from '../../pkg/errors/index.ts';
import { formatAuthority, type PipeStats, pipeBidirectional } from '../../pkg/hbone/index.ts';
import { stripQueryParams } from '../../pkg/jwt/index.ts';
import type { WaypointContext } from './context.ts';
import type { DownstreamConn } from './downstream.ts';
import {
  applyHeaderOps,
  type BackendTarget,
  backoffMs,
  type ClusterState,
  type CompiledRetryPolicy,
  type CompiledService,
  type EngineEndpoint,
  type ForwardDecision,
  type HeaderOps,
  type OutlierOutcome,
  type RequestView,
  type RetryOutcome,
  type RouteDecision,
  route,
  shouldRetry,
} from './engine/index.ts';
import { type DestinationPeer, type DestinationServiceRef, httpLabels, peerLabels } from './metrics.ts';
import { upstreamIsH2 } from './protocol.ts';
import { type AuthzRequest, NO_AUTH, type RequestAuth } from './security.ts';
import { injectTrace, startTrace, type TraceContext } from './tracing.ts';
import { endpointIdentity, isConnectFailure, type UpstreamTarget } from './upstream.ts';

export type DownRequest = IncomingMessage | Http2ServerRequest;
export type DownResponse = ServerResponse | Http2ServerResponse;

/** What both compat responses offer (their overloads do not unify into a callable union). */
interface Res {
  readonly headersSent: boolean;
  readonly writableEnded: boolean;
  readonly writableFinished: boolean;
  readonly destroyed: boolean;
  statusCode: number;
  writeHead(status: number, headers?: OutgoingHttpHeaders): unknown;
  setHeader(name: string, value: string): unknown;
  write(chunk: Buffer): boolean;
  end(chunk?: string): unknown;
  addTrailers(headers: OutgoingHttpHeaders): void;
  once(event: 'drain' | 'close', fn: () => void): unknown;
  off(event: 'close', fn: () => void): unknown;
}

/** Envoy's local-reply bodies. */
const BODY_UPSTREAM_TIMEOUT = 'upstream request timeout';
const BODY_NO_HEALTHY = 'no healthy upstream';
const BODY_OVERFLOW = 'upstream connect error or disconnect/reset before headers. reset reason: overflow';
const BODY_CONNECT_FAILURE =
  'upstream connect error or disconnect/reset before headers. reset reason: connection failure';
const BODY_RESET =
  'upstream connect error or disconnect/reset before headers. reset reason: connection termination';
const BODY_RBAC = 'RBAC: access denied';
const BODY_FAULT_ABORT = 'fault filter abort';

/** Headers that describe one hop's connection and never travel further (RFC 9110 §7.6.1, plus h2's ban list). */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'upgrade',
  'http2-settings',
  'expect',
  'host',
]);

/** Response headers Node's HTTP/2 compat layer refuses (connection-specific). */
const RESPONSE_HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
]);

/** Envoy's HTTP → gRPC status mapping for local replies (grpc/doc/http-grpc-status-mapping.md). */
function grpcStatusFor(http: number): number {
  switch (http) {
    case 400:
      return 13;
    case 401:
      return 16;
    case 403:
      return 7;
    case 404:
      return 12;
    case 429:
    case 502:
    case 503:
    case 504:
      return 14;
    default:
      return 2;
  }
}

/** A mirror's :authority gets `-shadow` appended to the host part (Envoy shadow policy). */
export function shadowAuthority(authority: string): string {
  const colon = authority.lastIndexOf(':');
  if (colon > 0 && !authority.endsWith(']') && /^\d+$/.test(authority.slice(colon + 1))) {
    return `${authority.slice(0, colon)}-shadow${authority.slice(colon)}`;
  }
  return `${authority}-shadow`;
}

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

function isGrpc(headers: IncomingHttpHeaders): boolean {
  const ct = headers['content-type'];
  return ct?.startsWith('application/grpc') === true;
}

/** A plain object of headers as engine.applyHeaderOps expects it. */
class RecordHeaders {
  readonly h: Record<string, string | string[] | undefined>;
  constructor(h: Record<string, string | string[] | undefined>) {
    this.h = h;
  }
  delete(name: string): void {
    delete this.h[name];
  }
  set(name: string, value: string): void {
    this.h[name] = value;
  }
  append(name: string, value: string): void {
    const cur = this.h[name];
    if (cur === undefined) this.h[name] = value;
    else if (Array.isArray(cur)) cur.push(value);
    else this.h[name] = [cur, value];
  }
}

function applyOps(ops: HeaderOps, h: Record<string, string | string[] | undefined>): void {
  if (ops.remove.length === 0 && ops.set.length === 0 && ops.add.length === 0) return;
  applyHeaderOps(ops, new RecordHeaders(h));
}

// ---------- request body: streamed to the current try, buffered (up to a cap) for retries and mirrors ----------

class RequestBody {
  readonly src: Readable;
  readonly cap: number;
  chunks: Buffer[] = [];
  buffered = 0;
  total = 0;
  /** The buffer could not hold the whole body: no retry, no mirror. */
  overflow = false;
  ended = false;
  failed = false;
  sink: NodeJS.WritableStream | null = null;
  private readonly completeWaiters: Array<() => void> = [];

  constructor(src: Readable, cap: number) {
    this.src = src;
    this.cap = cap;
    src.on('data', (c: Buffer) => this.onData(c));
    src.on('end', () => {
      this.ended = true;
      this.sink?.end();
      for (const w of this.completeWaiters.splice(0)) w();
    });
    src.on('error', () => {
      this.failed = true;
    });
  }

  get replayable(): boolean {
    return !this.overflow && !this.failed;
  }

  private onData(c: Buffer): void {
    this.total += c.length;
    if (!this.overflow) {
      if (this.buffered + c.length > this.cap) {
        this.overflow = true;
        this.chunks = [];
        this.buffered = 0;
      } else {
        this.chunks.push(c);
        this.buffered += c.length;
      }
    }
    const sink = this.sink;
    if (sink !== null) {
      if (!sink.write(c)) {
        this.src.pause();
        sink.once('drain', this.resume);
      }
    } else if (this.overflow) {
      // Nobody to hand bytes to and nowhere to keep them: wait for the next try.
      this.src.pause();
    }
  }

  private readonly resume = (): void => {
    if (!this.src.destroyed) this.src.resume();
  };

  /** Sends what was received so far to `sink`, then the rest as it comes. */
  attach(sink: NodeJS.WritableStream): void {
    this.sink = sink;
    for (const c of this.chunks) sink.write(c);
    if (this.ended) sink.end();
    else this.resume();
  }

  detach(): void {
    this.sink = null;
  }

  /** Calls back once the whole body has been received. */
  whenComplete(fn: () => void): void {
    if (this.ended) fn();
    else this.completeWaiters.push(fn);
  }
}

// ---------- one request ----------

interface UpstreamResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Readable;
  readonly h2: boolean;
  /** HTTP/2 response that ended with its HEADERS (gRPC trailers-only). */
  readonly headersOnly: boolean;
}

interface TryResult {
  readonly response: UpstreamResponse | null;
  readonly outcome: RetryOutcome;
  readonly error: Error | null;
  /** No connection free and the pending queue full (http1MaxPendingRequests): 503 UO, never retried. */
  readonly overflow?: boolean;
}

const OVERFLOW: TryResult = Object.freeze({ response: null, outcome: {}, error: null, overflow: true });

/**
 * The response side of an HTTP/1.1 Upgrade request: the raw downstream socket, with just enough of the
 * ServerResponse surface for local replies (serialized by hand) and for accounting. Once the upstream
 * accepted the upgrade, bytes are piped both ways and `close` fires when both sides are done.
 */
export class RawResponse extends EventEmitter {
  readonly socket: Duplex;
  readonly head: Buffer;
  statusCode = 0;
  headersSent = false;
  writableEnded = false;
  writableFinished = false;
  private closed = false;

  constructor(socket: Duplex, head: Buffer) {
    super();
    this.socket = socket;
    this.head = head;
    socket.once('close', () => this.finishIfPiped());
  }

  get destroyed(): boolean {
    return this.socket.destroyed;
  }

  writeHead(status: number, headers: OutgoingHttpHeaders = {}): this {
    this.statusCode = status;
    this.headersSent = true;
    let out = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Unknown'}\r\n`;
    for (const name in headers) {
      const v = headers[name];
      if (v === undefined) continue;
      for (const one of Array.isArray(v) ? v : [v]) out += `${name}: ${one}\r\n`;
    }
    out += 'connection: close\r\n\r\n';
    this.socket.write(out);
    return this;
  }

  setHeader(): this {
    return this;
  }

  write(chunk: Buffer): boolean {
    return this.socket.write(chunk);
  }

  end(chunk?: string): this {
    this.writableEnded = true;
    this.socket.end(chunk, () => {
      this.writableFinished = true;
      this.socket.destroy();
    });
    return this;
  }

  addTrailers(): void {}

  /** The tunnel to the upstream is set up: from now on `close` means both directions finished. */
  piped(status: number): void {
    this.statusCode = status;
    this.headersSent = true;
  }

  /** @internal */
  finishIfPiped(): void {
    if (this.closed) return;
    this.closed = true;
    this.writableFinished = this.writableFinished || this.headersSent;
    this.emit('close');
  }
}

class Exchange {
  readonly conn: DownstreamConn;
  readonly req: DownRequest;
  readonly res: Res;
  readonly raw: DownResponse;
  readonly started = performance.now();
  readonly startEpochMs = Date.now();
  readonly h2: boolean;
  readonly grpc: boolean;
  readonly method: string;
  readonly path: string;
  readonly authority: string;
  readonly requestId: string;
  readonly trace: TraceContext;
  svc: CompiledService | null = null;
  decision: RouteDecision | null = null;
  backend: BackendTarget | null = null;
  cluster: ClusterState | null = null;
  /** The cluster whose request slot the current try holds (released once per try). */
  tryCluster: ClusterState | null = null;
  /** The current try is a retry holding a retry slot (maxRetries). */
  retryHeld = false;
  endpoint: EngineEndpoint | null = null;
  /** The try in flight (released at its end or at finish). */
  activeEp: EngineEndpoint | null = null;
  activePort = 0;
  upstream: ClientRequest | ClientHttp2Stream | null = null;
  upstreamStarted = 0;
  upstreamMs = -1;
  attempts = 0;
  flags = '';
  grpcStatus: string | null = null;
  body: RequestBody | null = null;
  requestBytes = 0;
  responseBytes = 0;
  auth: RequestAuth = NO_AUTH;
  routeTimer: NodeJS.Timeout | null = null;
  tryTimer: NodeJS.Timeout | null = null;
  routeTimedOut = false;
  tryTimedOut = false;
  /** Downstream went away before the response completed. */
  aborted = false;
  done = false;
  denyPolicy: string | null = null;
  /** HTTP/1.1 Upgrade (WebSocket): the downstream socket and the bytes read past the request head. */
  readonly upgrade: RawResponse | null;

  constructor(
    conn: DownstreamConn,
    req: DownRequest,
    res: DownResponse | RawResponse,
    samplingPercent: number,
    rng: () => number,
  ) {
    this.conn = conn;
    this.req = req;
    this.res = res as unknown as Res;
    this.raw = res as DownResponse;
    this.upgrade = res instanceof RawResponse ? res : null;
    this.h2 = req.httpVersionMajor === 2;
    const headers = req.headers;
    this.grpc = isGrpc(headers);
    this.method = req.method ?? 'GET';
    this.path = req.url ?? '/';
    this.authority =
      (this.h2 ? first(headers[':authority']) : undefined) ??
      first(headers.host) ??
      formatAuthority(conn.destIp, conn.port);
    this.requestId = first(headers['x-request-id']) ?? randomUUID();
    this.trace = startTrace(headers, samplingPercent, rng);
  }

  addFlag(f: string): void {
    if (this.flags === '') this.flags = f;
    else if (!this.flags.split(',').includes(f)) this.flags += `,${f}`;
  }
}

function clearTimers(ex: Exchange): void {
  if (ex.routeTimer !== null) clearTimeout(ex.routeTimer);
  if (ex.tryTimer !== null) clearTimeout(ex.tryTimer);
  ex.routeTimer = null;
  ex.tryTimer = null;
}

function destroyUpstream(ex: Exchange, err?: Error): void {
  const u = ex.upstream;
  ex.upstream = null;
  if (u === null || u.destroyed) return;
  if ('rstCode' in u) (u as ClientHttp2Stream).close(h2constants.NGHTTP2_CANCEL);
  else u.destroy(err);
}

/** Tears down the downstream exchange after a response had started (the client sees a reset). */
function resetDownstream(ex: Exchange): void {
  if (ex.h2) {
    const s = (ex.raw as Http2ServerResponse).stream;
    if (!s.destroyed) s.close(h2constants.NGHTTP2_INTERNAL_ERROR);
  } else {
    ex.req.socket?.destroy();
  }
}

function sleep(ms: number, ex: Exchange): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      ex.res.off('close', onClose);
      resolve();
    }, ms);
    const onClose = () => {
      clearTimeout(t);
      resolve();
    };
    ex.res.once('close', onClose);
  });
}

export class HttpProxy {
  private readonly ctx: WaypointContext;

  constructor(ctx: WaypointContext) {
    this.ctx = ctx;
  }

  /**
   * An HTTP/1.1 request with `Upgrade` (WebSocket): authenticated, authorized and routed like any request,
   * then, once an endpoint is picked, the request head is replayed to it and the bytes piped both ways (the
   * upstream's 101 or refusal travels back as is). Faults apply; retries, mirrors and timeouts do not.
   */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, conn: DownstreamConn): void {
    this.handle(req, new RawResponse(socket, head), conn);
  }

  /** Entry point for every request of either server. Never throws. */
  handle(req: DownRequest, res: DownResponse | RawResponse, conn: DownstreamConn): void {
    conn.requests++;
    const ex = new Exchange(conn, req, res, this.ctx.config.traceSampling, this.ctx.rng);
    ex.res.once('close', () => this.finish(ex));
    req.on('error', () => {
      ex.aborted = true;
    });
    this.run(ex).catch((err: unknown) => {
      this.ctx.logger.error(
        { err: describeError(err), path: ex.path },
        'BUG: waypoint request handler failed',
      );
      if (!ex.res.headersSent) this.localReply(ex, 500, 'internal error', null);
      else resetDownstream(ex);
    });
  }

  private async run(ex: Exchange): Promise<void> {
    const { ctx } = this;
    const table = ctx.store.table;
    const svc = table.lookup(ex.conn.destIp, ex.conn.port) ?? null;
    if (svc === null) {
      // The service left the configuration while this connection was open.
      this.localReply(ex, 503, BODY_NO_HEALTHY, 'NC');
      return;
    }
    ex.svc = svc;
    if (ctx.draining && !ex.h2) ex.res.setHeader('connection', 'close');
    // 1. JWT (RequestAuthentication).
    if (svc.jwtRules.length > 0) {
      const r = await ctx.security.authenticate(svc, ex.req.headers, ex.path, ex.authority);
      if (!r.ok) {
        this.localReply(ex, r.status, r.body, null, { 'www-authenticate': r.wwwAuthenticate });
        return;
      }
      if (ex.res.destroyed) return;
      ex.auth = r.auth;
    }
    // 2. L7 authorization.
    if (svc.authorization.length > 0) {
      const areq: AuthzRequest = {
        method: ex.method,
        path: ex.path,
        host: ex.authority,
        port: ex.conn.port,
        headers: ex.req.headers,
        principal: ex.conn.principal,
        sourceIp: ex.conn.sourceIp,
        remoteIp: ex.conn.sourceIp,
        destinationIp: ex.conn.destIp,
        auth: ex.auth,
      };
      const d = ctx.security.authorize(svc, areq);
      if (!d.allowed) {
        ex.denyPolicy = d.policy;
        this.localReply(ex, 403, BODY_RBAC, null);
        return;
      }
    }
    // 3. Route.
    const view: RequestView = {
      method: ex.method,
      path: ex.path,
      authority: ex.authority,
      port: ex.conn.port,
      headers: ex.req.headers as IncomingHttpHeaders,
      sourceIp: ex.conn.sourceIp,
    };
    const decision = route(svc, view, ctx.rng);
    ex.decision = decision;
    switch (decision.kind) {
      case 'noRoute':
        this.localReply(ex, 404, '', decision.responseFlag);
        return;
      case 'error':
        this.localReply(ex, decision.status, '', decision.responseFlag || null);
        return;
      case 'redirect': {
        const h: Record<string, string | string[] | undefined> = { location: decision.location };
        applyOps(decision.responseHeaders, h);
        this.localReply(ex, decision.status, '', null, h);
        return;
      }
      case 'direct': {
        const h: Record<string, string | string[] | undefined> = {};
        applyOps(decision.responseHeaders, h);
        this.localReply(ex, decision.status, decision.body, null, h);
        return;
      }
      case 'forward':
        await this.forward(ex, decision, view);
        return;
    }
  }

  // ---------- forwarding ----------

  private async forward(ex: Exchange, d: ForwardDecision, view: RequestView): Promise<void> {
    const { ctx } = this;
    ex.backend = d.backend;
    // Fault injection (before the router: a delay does not count against the route timeout).
    if (d.fault !== null) {
      if (d.fault.delayMs > 0) {
        ex.addFlag('DI');
        await sleep(d.fault.delayMs, ex);
        if (ex.res.destroyed || ex.aborted) return;
      }
      if (d.fault.abortStatus > 0 || d.fault.grpcStatus > 0) {
        ex.addFlag('FI');
        if (d.fault.grpcStatus > 0 && ex.grpc) this.grpcReply(ex, d.fault.grpcStatus, BODY_FAULT_ABORT);
        else this.localReply(ex, d.fault.abortStatus || 503, BODY_FAULT_ABORT, null);
        return;
      }
    }
    const svc = d.backend.service;
    if (svc === null) {
      this.localReply(ex, 503, '', 'NC');
      return;
    }
    const table = ctx.store.table;
    const cluster = table.cluster(d.backend);
    if (cluster === undefined) {
      // A subset the DestinationRule does not define: Envoy's "cluster not found".
      this.localReply(ex, 503, '', 'NC');
      return;
    }
    ex.cluster = cluster;
    const port = svc.ports.get(d.backend.port);
    const h2up = upstreamIsH2(port?.protocol ?? '', ex.h2 ? 'h2' : 'http1');
    const headers = this.upstreamHeaders(ex, d, h2up);
    let path = d.rewritePath ?? ex.path;
    if (ex.auth.removeParams.length > 0) path = stripQueryParams(path, ex.auth.removeParams);
    const retries: CompiledRetryPolicy | null = d.retries;
    const hasBody = this.hasBody(ex);
    if (hasBody)
      ex.body = new RequestBody(
        ex.req,
        retries !== null || d.mirrors.length > 0 ? ctx.config.retryBufferBytes : 0,
      );
    if (ex.upgrade === null) for (const m of d.mirrors) this.mirror(ex, m, headers, path, view);
    if (d.timeoutMs > 0) {
      // Envoy's route timeout counts from the end of the downstream request (an upload is not cut short).
      const start = () => {
        if (!ex.done) ex.routeTimer = setTimeout(() => this.onRouteTimeout(ex), d.timeoutMs);
      };
      if (ex.body === null) start();
      else ex.body.whenComplete(start);
    }
    const exclude = new Set<string>();
    for (let attempt = 1; ; attempt++) {
      // Every try (first or retry) counts against the cluster's request limit (http2MaxRequests).
      if (!cluster.limiter.tryStartRequest()) {
        if (ex.retryHeld) {
          cluster.limiter.endRetry();
          ex.retryHeld = false;
        }
        ex.addFlag('UO');
        this.localReply(ex, 503, BODY_OVERFLOW, null);
        return;
      }
      ex.tryCluster = cluster;
      const picker = cluster.picker(d.backend.port);
      const ep = picker.pick(view, retries?.avoidPreviousHosts ? exclude : null, performance.now()) ?? null;
      if (ep === null) {
        this.releaseTry(ex);
        ex.addFlag('UH');
        this.localReply(ex, 503, BODY_NO_HEALTHY, null);
        return;
      }
      exclude.add(ep.address);
      ex.endpoint = ep;
      ex.attempts = attempt;
      headers['x-envoy-attempt-count'] = String(attempt);
      const target = this.target(ep, picker.targetPort(ep), cluster);
      picker.onRequestStart(ep);
      ex.activeEp = ep;
      ex.activePort = d.backend.port;
      if (ex.upgrade !== null) {
        await this.pipeUpgrade(ex, ex.upgrade, target, headers, path);
        return;
      }
      const result = await this.tryOnce(ex, target, headers, path, h2up, retries);
      if (result.overflow === true) {
        this.releaseTry(ex);
        ex.addFlag('UO');
        this.localReply(ex, 503, BODY_OVERFLOW, null);
        return;
      }
      // Passive health: one report per try.
      cluster.outlier.report(ep, outlierOutcome(result), performance.now());
      if (ex.aborted || ex.res.destroyed) {
        if (result.response !== null) result.response.body.destroy();
        this.releaseTry(ex);
        return;
      }
      if (ex.routeTimedOut) {
        if (result.response !== null) result.response.body.destroy();
        this.releaseTry(ex);
        ex.addFlag('UT');
        this.localReply(ex, 504, BODY_UPSTREAM_TIMEOUT, null);
        return;
      }
      const canReplay = ex.body === null || ex.body.replayable;
      const retriable = retries !== null && canReplay && shouldRetry(retries, result.outcome, attempt);
      // The retry budget (maxRetries) is checked before giving up this try's response, like Envoy.
      if (retriable && cluster.limiter.tryStartRetry()) {
        if (result.response !== null) result.response.body.resume();
        this.releaseTry(ex);
        ex.retryHeld = true;
        ex.body?.detach();
        const wait = backoffMs(retries, attempt, ctx.rng);
        if (wait > 0) await sleep(wait, ex);
        if (ex.aborted || ex.res.destroyed || ex.routeTimedOut) {
          cluster.limiter.endRetry();
          ex.retryHeld = false;
          if (ex.routeTimedOut && !ex.res.headersSent) {
            ex.addFlag('UT');
            this.localReply(ex, 504, BODY_UPSTREAM_TIMEOUT, null);
          }
          return;
        }
        continue;
      }
      if (
        attempt > 1 &&
        retries !== null &&
        attempt > retries.attempts &&
        canReplay &&
        shouldRetry(retries, result.outcome, 1)
      ) {
        // Retries exhausted on a still-retriable outcome (Envoy URX).
        ex.addFlag('URX');
      }
      if (result.response !== null) {
        this.respond(ex, result.response, d);
        return;
      }
      this.releaseTry(ex);
      this.giveUp(ex, result.error, result.outcome);
      return;
    }
  }

  /** Local reply for a request whose last try produced no response. */
  private giveUp(ex: Exchange, err: Error | null, o: RetryOutcome): void {
    if (ex.res.headersSent || ex.res.destroyed) return;
    if (o.perTryTimeout === true) {
      ex.addFlag('UT');
      this.localReply(ex, 504, BODY_UPSTREAM_TIMEOUT, null);
    } else if (o.connectFailure === true) {
      ex.addFlag('UF');
      this.localReply(
        ex,
        503,
        err
          ? `${BODY_CONNECT_FAILURE}, transport failure reason: ${describeError(err)}`
          : BODY_CONNECT_FAILURE,
        null,
      );
    } else {
      ex.addFlag(o.refusedStream === true ? 'UR' : 'UC');
      this.localReply(ex, 503, BODY_RESET, null);
    }
  }

  private releaseTry(ex: Exchange): void {
    if (ex.tryTimer !== null) {
      clearTimeout(ex.tryTimer);
      ex.tryTimer = null;
    }
    const cluster = ex.tryCluster;
    if (cluster === null) return;
    ex.tryCluster = null;
    const ep = ex.activeEp;
    ex.activeEp = null;
    if (ep !== null) cluster.picker(ex.activePort).onRequestEnd(ep);
    cluster.limiter.endRequest();
    if (ex.retryHeld) {
      ex.retryHeld = false;
      cluster.limiter.endRetry();
    }
  }

  private hasBody(ex: Exchange): boolean {
    const h = ex.req.headers;
    if (ex.h2) {
      const s = (ex.req as Http2ServerRequest).stream;
      return (
        !(s.endAfterHeaders || ex.req.readableEnded) ||
        (h['content-length'] !== undefined && h['content-length'] !== '0')
      );
    }
    const cl = h['content-length'];
    if (cl !== undefined) return cl !== '0';
    return h['transfer-encoding'] !== undefined;
  }

  private target(ep: EngineEndpoint, targetPort: number, cluster: ClusterState): UpstreamTarget {
    // The limiter holds the DestinationRule's connection pool with the subset's override applied.
    const l = cluster.limiter;
    return {
      ip: ep.address,
      targetPort,
      hbone: ep.hbone,
      identity: endpointIdentity(ep.identity),
      maxConnections: l.maxConnections === Number.POSITIVE_INFINITY ? 0 : l.maxConnections,
      maxRequestsPerConnection: l.maxRequestsPerConnection,
      connectTimeoutMs: cluster.connectTimeoutMs,
      idleTimeoutMs: cluster.idleTimeoutMs,
    };
  }

  /** The request headers sent upstream (shared by every try; x-envoy-attempt-count updated per try). */
  private upstreamHeaders(
    ex: Exchange,
    d: ForwardDecision,
    h2up: boolean,
  ): Record<string, string | string[] | undefined> {
    const src = ex.req.headers as Record<string, string | string[] | undefined>;
    const out: Record<string, string | string[] | undefined> = {};
    const connectionTokens = src.connection;
    let extraHop: Set<string> | null = null;
    if (connectionTokens !== undefined) {
      extraHop = new Set(
        (Array.isArray(connectionTokens) ? connectionTokens.join(',') : connectionTokens)
          .split(',')
          .map((t) => t.trim().toLowerCase())
          .filter((t) => t.length > 0),
      );
    }
    for (const name in src) {
      if (name.charCodeAt(0) === 0x3a /* : */) continue;
      if (HOP_BY_HOP.has(name) || extraHop?.has(name)) continue;
      out[name] = src[name];
    }
    // gRPC needs `te: trailers` end to end over HTTP/2.
    if (h2up && first(src.te) === 'trailers') out.te = 'trailers';
    if (!h2up && !ex.h2 && src['transfer-encoding'] !== undefined && src['content-length'] === undefined) {
      out['transfer-encoding'] = 'chunked';
    }
    if (!h2up && ex.h2 && this.hasBody(ex) && src['content-length'] === undefined)
      out['transfer-encoding'] = 'chunked';
    const xff = first(src['x-forwarded-for']);
    out['x-forwarded-for'] = xff ? `${xff}, ${ex.conn.sourceIp}` : ex.conn.sourceIp;
    if (out['x-forwarded-proto'] === undefined) out['x-forwarded-proto'] = 'http';
    out['x-request-id'] = ex.requestId;
    if (d.rewritePath !== null) out['x-envoy-original-path'] = ex.path;
    injectTrace(out, ex.trace);
    for (const name of ex.auth.removeHeaders) delete out[name];
    for (const [name, value] of ex.auth.setHeaders) out[name] = value;
    applyOps(d.requestHeaders, out);
    // `host` stays in the map for header mutations above; it becomes Host / :authority per protocol.
    const host = first(out.host) ?? d.rewriteAuthority ?? ex.authority;
    delete out.host;
    out[':authority'] = d.rewriteAuthority ?? host;
    return out;
  }

  /** One upstream try; resolves at the response headers or the failure. */
  private tryOnce(
    ex: Exchange,
    target: UpstreamTarget,
    headers: Record<string, string | string[] | undefined>,
    path: string,
    h2up: boolean,
    retries: CompiledRetryPolicy | null,
  ): Promise<TryResult> {
    ex.tryTimedOut = false;
    ex.upstreamStarted = performance.now();
    const perTry = retries?.perTryTimeoutMs ?? 0;
    if (perTry > 0) {
      ex.tryTimer = setTimeout(() => {
        ex.tryTimer = null;
        ex.tryTimedOut = true;
        destroyUpstream(ex, new Error('per-try timeout'));
      }, perTry);
    }
    return h2up ? this.tryH2(ex, target, headers, path) : this.tryH1(ex, target, headers, path);
  }

  private tryH1(
    ex: Exchange,
    target: UpstreamTarget,
    headers: Record<string, string | string[] | undefined>,
    path: string,
  ): Promise<TryResult> {
    const { ctx } = this;
    const h: OutgoingHttpHeaders = {};
    for (const name in headers) if (name.charCodeAt(0) !== 0x3a) h[name] = headers[name];
    h.host = headers[':authority'] as string;
    const agent = ctx.upstreams.agentFor(target);
    // A request that will wait for a connection (maxConnections reached) is "pending" (Envoy
    // max_pending_requests): over the limit it is refused at once.
    const limiter = ex.tryCluster?.limiter ?? null;
    let pending = false;
    if (
      limiter !== null &&
      limiter.maxPendingRequests !== Number.POSITIVE_INFINITY &&
      agent.wouldQueue(target.ip, target.targetPort)
    ) {
      if (!limiter.tryEnqueuePending()) return Promise.resolve(OVERFLOW);
      pending = true;
    }
    const unpend = () => {
      if (pending) {
        pending = false;
        limiter?.dequeuePending();
      }
    };
    return new Promise<TryResult>((resolve) => {
      let settled = false;
      const settle = (r: TryResult) => {
        unpend();
        if (settled) return;
        settled = true;
        resolve(r);
      };
      let ureq: ClientRequest;
      try {
        ureq = h1request({
          agent,
          host: target.ip,
          port: target.targetPort,
          method: ex.method,
          path,
          headers: h,
          setHost: false,
        });
      } catch (err) {
        settle({ response: null, outcome: { reset: true }, error: err as Error });
        return;
      }
      ex.upstream = ureq;
      if (pending) ureq.once('socket', unpend);
      ureq.on('response', (res: IncomingMessage) => {
        ex.upstreamMs = performance.now() - ex.upstreamStarted;
        settle({
          response: {
            status: res.statusCode ?? 502,
            headers: res.headers as Record<string, string | string[] | undefined>,
            body: res,
            h2: false,
            headersOnly: false,
          },
          outcome: { status: res.statusCode ?? 502, ...grpcOutcome(res.headers) },
          error: null,
        });
      });
      ureq.on('error', (err: Error) => {
        ex.body?.detach();
        const connect = isConnectFailure(err);
        settle({
          response: null,
          outcome: ex.tryTimedOut
            ? { perTryTimeout: true }
            : connect
              ? { connectFailure: true }
              : { reset: true },
          error: err,
        });
      });
      if (ex.body !== null) ex.body.attach(ureq);
      else ureq.end();
    });
  }

  private async tryH2(
    ex: Exchange,
    target: UpstreamTarget,
    headers: Record<string, string | string[] | undefined>,
    path: string,
  ): Promise<TryResult> {
    let session: Awaited<ReturnType<WaypointContext['upstreams']['sessionFor']>>;
    try {
      session = await this.ctx.upstreams.sessionFor(target);
    } catch (err) {
      return {
        response: null,
        outcome: ex.tryTimedOut ? { perTryTimeout: true } : { connectFailure: true },
        error: err as Error,
      };
    }
    if (ex.tryTimedOut) return { response: null, outcome: { perTryTimeout: true }, error: null };
    const h: Record<string, string | string[] | undefined> = { ...headers };
    h[':method'] = ex.method;
    h[':path'] = path;
    h[':scheme'] = 'http';
    let stream: ClientHttp2Stream;
    try {
      stream = session.request(h as OutgoingHttpHeaders, { endStream: ex.body === null });
    } catch (err) {
      // Session went away between the lookup and the request: nothing was sent, safe to retry.
      return { response: null, outcome: { refusedStream: true }, error: err as Error };
    }
    ex.upstream = stream;
    return new Promise<TryResult>((resolve) => {
      let settled = false;
      const settle = (r: TryResult) => {
        if (settled) return;
        settled = true;
        resolve(r);
      };
      stream.once('response', (rh: H2IncomingHeaders, flags: number) => {
        ex.upstreamMs = performance.now() - ex.upstreamStarted;
        const status = Number(rh[':status'] ?? 502);
        const copy: Record<string, string | string[] | undefined> = {};
        for (const k in rh) if (k.charCodeAt(0) !== 0x3a) copy[k] = rh[k];
        const headersOnly = (flags & h2constants.NGHTTP2_FLAG_END_STREAM) !== 0;
        settle({
          response: { status, headers: copy, body: stream, h2: true, headersOnly },
          outcome: { status, ...grpcOutcome(copy) },
          error: null,
        });
      });
      stream.on('error', (err: Error) => {
        ex.body?.detach();
        const refused = stream.rstCode === h2constants.NGHTTP2_REFUSED_STREAM;
        settle({
          response: null,
          outcome: ex.tryTimedOut
            ? { perTryTimeout: true }
            : refused
              ? { refusedStream: true }
              : { reset: true },
          error: err,
        });
      });
      stream.once('close', () => {
        const refused = stream.rstCode === h2constants.NGHTTP2_REFUSED_STREAM;
        settle({
          response: null,
          outcome: ex.tryTimedOut
            ? { perTryTimeout: true }
            : refused
              ? { refusedStream: true }
              : { reset: true },
          error: null,
        });
      });
      if (ex.body !== null) ex.body.attach(stream);
    });
  }

  /** Replays the upgrade request to the endpoint and pipes the two connections. */
  private async pipeUpgrade(
    ex: Exchange,
    raw: RawResponse,
    target: UpstreamTarget,
    headers: Record<string, string | string[] | undefined>,
    path: string,
  ): Promise<void> {
    let upstream: Duplex;
    try {
      upstream = await this.ctx.upstreams.open(target, null);
    } catch (err) {
      this.releaseTry(ex);
      this.giveUp(ex, err as Error, { connectFailure: true });
      return;
    }
    if (raw.destroyed) {
      upstream.destroy();
      this.releaseTry(ex);
      return;
    }
    let head = `${ex.method} ${path} HTTP/1.1\r\nhost: ${String(headers[':authority'])}\r\n`;
    const src = ex.req.headers;
    // The hop-by-hop headers that make it an upgrade travel on; the rest is what any request gets.
    for (const name of ['connection', 'upgrade'])
      if (src[name] !== undefined) head += `${name}: ${String(src[name])}\r\n`;
    for (const name in headers) {
      if (name.charCodeAt(0) === 0x3a) continue;
      const v = headers[name];
      if (v === undefined) continue;
      for (const one of Array.isArray(v) ? v : [v]) head += `${name}: ${one}\r\n`;
    }
    upstream.write(Buffer.from(`${head}\r\n`, 'latin1'));
    if (raw.head.length > 0) upstream.write(raw.head);
    ex.upstreamStarted = performance.now();
    // The status line of the upstream's answer, for metrics and the access log.
    upstream.once('data', (chunk: Buffer) => {
      ex.upstreamMs = performance.now() - ex.upstreamStarted;
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(chunk.toString('latin1', 0, Math.min(chunk.length, 16)));
      raw.piped(m ? Number(m[1]) : 0);
    });
    clearTimers(ex);
    pipeBidirectional(raw.socket, upstream, onUpgradeDone, { proxy: this, ex, raw });
    raw.socket.resume();
  }

  /** @internal */
  upgradeDone(ex: Exchange, raw: RawResponse, stats: PipeStats): void {
    ex.requestBytes = stats.bytesAtoB;
    ex.responseBytes = stats.bytesBtoA;
    if (stats.error !== null && raw.statusCode === 0) ex.addFlag('UC');
    raw.finishIfPiped();
  }

  // ---------- response ----------

  private respond(ex: Exchange, up: UpstreamResponse, d: ForwardDecision): void {
    const res = ex.res;
    const headers: Record<string, string | string[] | undefined> = {};
    for (const name in up.headers) {
      if (RESPONSE_HOP_BY_HOP.has(name)) continue;
      headers[name] = up.headers[name];
    }
    applyOps(d.responseHeaders, headers);
    headers.server = 'istio-envoy';
    if (ex.upstreamMs >= 0) headers['x-envoy-upstream-service-time'] = String(Math.round(ex.upstreamMs));
    if (this.ctx.draining && !ex.h2) headers.connection = 'close';
    let trailers: Record<string, string | string[] | undefined> | null = null;
    if (up.headersOnly && ex.h2 && headers['grpc-status'] !== undefined) {
      // gRPC trailers-only: keep the status in trailers, where every client looks for it.
      trailers = {};
      for (const k of ['grpc-status', 'grpc-message', 'grpc-status-details-bin']) {
        if (headers[k] !== undefined) {
          trailers[k] = headers[k];
          delete headers[k];
        }
      }
    }
    if (headers['grpc-status'] !== undefined) ex.grpcStatus = String(first(headers['grpc-status']));
    try {
      res.writeHead(up.status, headers as OutgoingHttpHeaders);
    } catch (err) {
      this.ctx.logger.debug({ err: describeError(err) }, 'upstream response headers rejected downstream');
      up.body.destroy();
      this.releaseTry(ex);
      ex.addFlag('UPE');
      if (!res.headersSent) this.localReply(ex, 502, 'upstream sent an invalid response', null);
      return;
    }
    const body = up.body;
    if (up.h2) {
      body.once('trailers', (t: H2IncomingHeaders) => {
        trailers ??= {};
        for (const k in t) if (k.charCodeAt(0) !== 0x3a) trailers[k] = t[k];
      });
    }
    body.on('data', (chunk: Buffer) => {
      ex.responseBytes += chunk.length;
      if (!res.write(chunk)) {
        body.pause();
        res.once('drain', () => body.resume());
      }
    });
    body.once('end', () => {
      if (!up.h2) {
        const t = (body as IncomingMessage).trailers;
        if (t && Object.keys(t).length > 0) trailers = { ...t };
      }
      if (trailers !== null) {
        const g = trailers['grpc-status'];
        if (g !== undefined) ex.grpcStatus = String(first(g));
        res.addTrailers(trailers as OutgoingHttpHeaders);
      }
      this.releaseTry(ex);
      clearTimers(ex);
      res.end();
    });
    body.on('error', () => {
      // Reset mid-response: the client must see a reset too, not a truncated success.
      this.releaseTry(ex);
      if (!res.writableEnded) {
        ex.addFlag('UR');
        resetDownstream(ex);
      }
    });
    body.once('close', () => {
      if (!res.writableEnded && !(body as Readable).readableEnded) {
        this.releaseTry(ex);
        ex.addFlag('UC');
        resetDownstream(ex);
      }
    });
  }

  private onRouteTimeout(ex: Exchange): void {
    ex.routeTimer = null;
    if (ex.done) return;
    ex.routeTimedOut = true;
    if (ex.res.headersSent) {
      // The response had started: Envoy resets the stream.
      ex.addFlag('UT');
      destroyUpstream(ex);
      resetDownstream(ex);
      return;
    }
    destroyUpstream(ex, new Error('route timeout'));
  }

  /** A reply generated by the waypoint (Envoy "local reply"). */
  localReply(
    ex: Exchange,
    status: number,
    body: string,
    flag: string | null,
    extra: Record<string, string | string[] | undefined> = {},
  ): void {
    if (flag) ex.addFlag(flag);
    const res = ex.res;
    if (res.headersSent || res.destroyed || res.writableEnded) return;
    clearTimers(ex);
    destroyUpstream(ex);
    if (ex.grpc && status !== 200 && ex.h2) {
      this.grpcReply(ex, grpcStatusFor(status), body, extra);
      return;
    }
    const headers: Record<string, string | string[] | undefined> = {
      ...extra,
      'content-type': 'text/plain',
      'content-length': String(Buffer.byteLength(body)),
      date: new Date().toUTCString(),
      server: 'istio-envoy',
    };
    if (!ex.h2 && (this.ctx.draining || status === 400)) headers.connection = 'close';
    try {
      res.writeHead(status, headers as OutgoingHttpHeaders);
      ex.responseBytes += Buffer.byteLength(body);
      res.end(ex.method === 'HEAD' ? undefined : body);
    } catch (err) {
      this.ctx.logger.debug({ err: describeError(err) }, 'local reply failed');
      resetDownstream(ex);
    }
  }

  /** gRPC error as Envoy sends it: HTTP 200, `grpc-status`/`grpc-message` (trailers on HTTP/2). */
  private grpcReply(
    ex: Exchange,
    grpcStatus: number,
    message: string,
    extra: Record<string, string | string[] | undefined> = {},
  ): void {
    const res = ex.res;
    if (res.headersSent || res.destroyed) return;
    clearTimers(ex);
    ex.grpcStatus = String(grpcStatus);
    const headers: Record<string, string | string[] | undefined> = {
      ...extra,
      'content-type': 'application/grpc',
      server: 'istio-envoy',
    };
    const status = { 'grpc-status': String(grpcStatus), 'grpc-message': encodeURIComponent(message) };
    try {
      if (ex.h2) {
        res.writeHead(200, headers as OutgoingHttpHeaders);
        res.addTrailers(status);
      } else {
        res.writeHead(200, { ...headers, ...status } as OutgoingHttpHeaders);
      }
      res.end();
    } catch {
      resetDownstream(ex);
    }
  }

  // ---------- mirrors ----------

  private mirror(
    ex: Exchange,
    m: BackendTarget,
    mainHeaders: Record<string, string | string[] | undefined>,
    path: string,
    view: RequestView,
  ): void {
    const send = () => {
      if (ex.body !== null && !ex.body.replayable) return;
      const svc = m.service;
      if (svc === null) return;
      const cluster = this.ctx.store.table.cluster(m);
      if (cluster === undefined || !cluster.limiter.tryStartRequest()) return;
      const picker = cluster.picker(m.port);
      const ep = picker.pick(view, null, performance.now());
      if (ep === undefined) {
        cluster.limiter.endRequest();
        return;
      }
      const headers = { ...mainHeaders };
      headers[':authority'] = shadowAuthority(String(mainHeaders[':authority'] ?? ex.authority));
      const port = svc.ports.get(m.port);
      const h2up = upstreamIsH2(port?.protocol ?? '', ex.h2 ? 'h2' : 'http1');
      const target = this.target(ep, picker.targetPort(ep), cluster);
      picker.onRequestStart(ep);
      const done = () => {
        picker.onRequestEnd(ep);
        cluster.limiter.endRequest();
      };
      void this.sendMirror(target, headers, path, ex.method, ex.body?.chunks ?? [], h2up).then(done, done);
    };
    if (ex.body === null) setImmediate(send);
    else ex.body.whenComplete(send);
  }

  /** Fire-and-forget copy; its response is read and discarded. */
  private async sendMirror(
    target: UpstreamTarget,
    headers: Record<string, string | string[] | undefined>,
    path: string,
    method: string,
    chunks: readonly Buffer[],
    h2up: boolean,
  ): Promise<void> {
    if (h2up) {
      const session = await this.ctx.upstreams.sessionFor(target);
      const h: Record<string, string | string[] | undefined> = {
        ...headers,
        ':method': method,
        ':path': path,
        ':scheme': 'http',
      };
      const s = session.request(h as OutgoingHttpHeaders, { endStream: chunks.length === 0 });
      for (const c of chunks) s.write(c);
      if (chunks.length > 0) s.end();
      s.on('error', noop);
      s.resume();
      await new Promise<void>((r) => s.once('close', () => r()));
      return;
    }
    const h: OutgoingHttpHeaders = {};
    for (const name in headers) if (name.charCodeAt(0) !== 0x3a) h[name] = headers[name];
    h.host = headers[':authority'] as string;
    await new Promise<void>((resolve) => {
      const r = h1request(
        {
          agent: this.ctx.upstreams.agentFor(target),
          host: target.ip,
          port: target.targetPort,
          method,
          path,
          headers: h,
          setHost: false,
        },
        (res) => {
          res.resume();
          res.once('end', resolve);
          res.on('error', () => resolve());
        },
      );
      r.on('error', () => resolve());
      for (const c of chunks) r.write(c);
      r.end();
    });
  }

  // ---------- accounting ----------

  /** Runs exactly once per request, when the downstream response closes (completed or not). */
  private finish(ex: Exchange): void {
    if (ex.done) return;
    ex.done = true;
    try {
      this.account(ex);
    } catch (err) {
      // Accounting must never take the proxy down (it runs in a 'close' listener).
      this.ctx.logger.error({ err: describeError(err) }, 'BUG: request accounting failed');
    }
  }

  private account(ex: Exchange): void {
    clearTimers(ex);
    const completed = ex.res.writableFinished;
    if (!completed) {
      ex.aborted = true;
      if (!ex.res.headersSent || !ex.flags.includes('U')) ex.addFlag('DC');
      destroyUpstream(ex);
    }
    this.releaseTry(ex);
    const { ctx } = this;
    const status = ex.res.headersSent ? ex.res.statusCode : 0;
    if (ex.upgrade === null) ex.requestBytes = ex.body?.total ?? 0;
    const durationMs = performance.now() - ex.started;
    const ep = ex.endpoint;
    const svcRef = this.serviceRef(ex);
    const dst: DestinationPeer | null =
      ep === null
        ? null
        : {
            workloadName: ep.workloadName,
            workloadNamespace: ep.workloadNamespace,
            canonicalService: ep.canonicalService,
            canonicalRevision: ep.canonicalRevision,
            principal: ep.identity,
            cluster: ctx.config.clusterId,
          };
    const peer = peerLabels(ex.conn.source, dst, svcRef, ex.grpc ? 'grpc' : 'http', ex.flags);
    const labels = httpLabels(peer, status, ex.grpcStatus);
    ctx.metrics.request(labels, durationMs, ex.requestBytes, ex.responseBytes);
    if (ctx.accessLog !== null) {
      const d = ex.decision;
      const line = {
        start_time: new Date(ex.startEpochMs).toISOString(),
        'src.addr': ex.conn.sourceAddr,
        'src.identity': ex.conn.peerId,
        'src.workload': ex.conn.baggage.workloadName,
        'src.namespace': ex.conn.baggage.namespace,
        'dst.addr':
          ep !== null && ex.cluster !== null
            ? formatAuthority(ep.address, ex.cluster.picker(ex.backend?.port ?? ex.conn.port).targetPort(ep))
            : null,
        'dst.service': svcRef?.hostname ?? null,
        'dst.workload': ep?.workloadName || null,
        'dst.namespace': ep?.workloadNamespace || null,
        'dst.identity': ep?.identity || null,
        method: ex.method,
        path: ex.path,
        authority: ex.authority,
        protocol: ex.h2 ? 'HTTP/2' : `HTTP/${ex.req.httpVersion}`,
        response_code: status,
        grpc_status: ex.grpcStatus,
        response_flags: ex.flags || '-',
        route: d !== null && d.kind !== 'noRoute' ? d.route.name || null : null,
        policy: ex.denyPolicy,
        request_id: ex.requestId,
        trace_id: ex.trace.traceId,
        bytes_received: ex.requestBytes,
        bytes_sent: ex.responseBytes,
        duration_ms: Math.round(durationMs),
        upstream_ms: ex.upstreamMs >= 0 ? Math.round(ex.upstreamMs) : null,
        attempts: ex.attempts,
        user_agent: first(ex.req.headers['user-agent']) ?? null,
      };
      ctx.accessLog.info(line, 'request');
    }
    if (ctx.spans !== null && ex.trace.sampled) {
      ctx.spans.record({
        trace: ex.trace,
        name: `${svcRef?.hostname ?? ex.authority}:${ex.conn.port}/*`,
        startMs: ex.startEpochMs,
        endMs: ex.startEpochMs + durationMs,
        error: status === 0 || status >= 500,
        attributes: {
          'http.method': ex.method,
          'http.url': `http://${ex.authority}${ex.path}`,
          'http.protocol': ex.h2 ? 'HTTP/2' : `HTTP/${ex.req.httpVersion}`,
          'http.status_code': status,
          response_flags: ex.flags || '-',
          request_size: ex.requestBytes,
          response_size: ex.responseBytes,
          'guid:x-request-id': ex.requestId,
          user_agent: first(ex.req.headers['user-agent']) ?? '',
          upstream_cluster: svcRef
            ? `outbound|${ex.backend?.port ?? ex.conn.port}|${ex.backend?.subset ?? ''}|${svcRef.hostname}`
            : '',
          upstream_address: ep !== null ? ep.address : '',
          'peer.address': ex.conn.sourceIp,
          'istio.namespace': ctx.config.podNamespace,
          'istio.canonical_service': ep?.canonicalService ?? '',
          node_id: `router~${ctx.config.instanceIp}~${ctx.config.podName}.${ctx.config.podNamespace}~${ctx.config.podNamespace}.svc.cluster.local`,
          component: 'proxy',
        },
      });
    }
  }

  private serviceRef(ex: Exchange): DestinationServiceRef | null {
    const s = ex.backend?.service ?? ex.svc;
    if (!s) return null;
    return {
      hostname: s.hostname,
      namespace: s.namespace,
      name: s.config.serviceName || s.hostname.split('.')[0] || s.hostname,
    };
  }
}

function outlierOutcome(r: TryResult): OutlierOutcome {
  if (r.response !== null) return r.response.status;
  if (r.outcome.connectFailure === true) return 'connect-failure';
  if (r.outcome.perTryTimeout === true) return 'timeout';
  return 'reset';
}

function grpcOutcome(h: Record<string, string | string[] | undefined> | IncomingHttpHeaders): {
  grpcStatus?: number;
} {
  const g = first(h['grpc-status'] as string | string[] | undefined);
  if (g === undefined) return {};
  const n = Number(g);
  return Number.isInteger(n) ? { grpcStatus: n } : {};
}

function onUpgradeDone(stats: PipeStats, arg: { proxy: HttpProxy; ex: Exchange; raw: RawResponse }): void {
  arg.proxy.upgradeDone(arg.ex, arg.raw, stats);
}

function noop(): void {}
