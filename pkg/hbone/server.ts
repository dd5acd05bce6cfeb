/**
 * The HBONE server: accepts TCP on a listener (a pod's :15008 in its netns, or a waypoint's), terminates mTLS
 * with the certificate chosen for the local address, runs HTTP/2 over it and hands each CONNECT stream to the
 * caller's handler, which answers 200 only once it has connected upstream, or rejects with a status
 * (ARCHITECTURE.md "Inbound HBONE", ztunnel `proxy/inbound.rs`, `proxy/h2/server.rs`).
 *
 * Layers, each failing without disturbing other connections:
 * 1. TCP: `certificateFor(localAddress)` picks the identity (ztunnel shared mode serves many pods on one
 *    listener; in-pod mode has one listener per pod and the same certificate every time).
 * 2. TLS: one non-listening `tls.Server` per identity receives the socket (`emit('connection')`), so OpenSSL
 *    does the whole handshake: TLS 1.3 only, ALPN h2 (else a no_application_protocol alert), client
 *    certificate required and chain-verified against the roots, handshake timeout. A rotated certificate
 *    swaps that server's context (`setSecureContext`); connections already made keep theirs.
 * 3. Peer: the client must have a SPIFFE identity in our trust domain (pkg/tls `checkClientPeer`).
 * 4. HTTP/2: `performServerHandshake` with ztunnel's windows and frame size; the connection window is raised
 *    explicitly (PERFORMANCE.md). PING keepalive and an idle timeout run on the coarse clock.
 * 5. Streams: `:method` must be CONNECT and `:authority` `IP:port`, else 400 (ztunnel answers 400 to both).
 */

import {
  type IncomingHttpHeaders,
  performServerHandshake,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import { type AddressInfo, createServer as createNetServer, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createServer as createTlsServer, type TLSSocket, type Server as TlsServer } from 'node:tls';
import type { Logger } from 'pino';
import type { Drainable } from '../drain/index.ts';
import { bug, describeError, MeshError } from '../errors/index.ts';
import { formatSpiffeId, type Identity, identityKey, type WorkloadCertificate } from '../identity/index.ts';
import { LogOnce } from '../telemetry/index.ts';
import { CoarseTimer } from '../timers/index.ts';
import { ALPN_H2, checkClientPeer, mtlsContextOptions, serverTlsOptions } from '../tls/index.ts';
import { canonicalIp, parseAuthority } from './authority.ts';
import type { Endpoint, HboneAddress } from './index.ts';
import { KeepAlive } from './keepalive.ts';
import {
  CONNECTION_WINDOW_SIZE,
  localSettings,
  MAX_SESSION_MEMORY_MIB,
  PING_INTERVAL_MS,
  PING_TIMEOUT_MS,
  SERVER_IDLE_TIMEOUT_MS,
  SERVER_MAX_CONCURRENT_STREAMS,
  TLS_HANDSHAKE_TIMEOUT_MS,
} from './settings.ts';
import { buffersOnlyWritev } from './writev.ts';

/**
 * Where to listen: an adopted `net.Server` (e.g. bound in a pod netns by the native addon; it must already
 * listen, and the HBONE server owns it from then on, closing it on drain), an inherited fd, or an address
 * (bound with SO_REUSEPORT so a new proxy can start beside the old one).
 */
export type ListenSpec =
  | Server
  | { readonly fd: number }
  | { readonly host: string; readonly port: number; readonly reusePort?: boolean; readonly backlog?: number };

export interface HboneServerOptions {
  readonly listen: ListenSpec;
  /**
   * The certificate to present on a connection accepted at `local` (the pod's, or the waypoint's). Called
   * per connection; return the current one so rotations take effect for new connections.
   */
  readonly certificateFor: (local: Endpoint) => WorkloadCertificate | Promise<WorkloadCertificate>;
  /** Clients must present a SPIFFE identity in this trust domain. */
  readonly trustDomain: string;
  /**
   * Called once per valid CONNECT stream. It must answer: `accept()` once upstream is connected, or
   * `reject(400|401|503)`. A thrown error or rejected promise before answering answers 503.
   */
  readonly onStream: (req: ConnectRequest) => void | Promise<void>;
  readonly logger?: Logger;
  /** Name for drain reports and logs. */
  readonly name?: string;
  readonly handshakeTimeoutMs?: number;
  /** Close (GOAWAY) a connection with no stream for this long. */
  readonly idleTimeoutMs?: number;
  readonly pingIntervalMs?: number;
  readonly pingTimeoutMs?: number;
  readonly maxConcurrentStreams?: number;
}

/** Statuses ztunnel answers with: bad request / IP mismatch, policy deny, unknown workload or upstream down. */
export const REJECT_STATUSES = [400, 401, 503] as const;
export type RejectStatus = (typeof REJECT_STATUSES)[number];

/**
 * Counters for metrics and tests, read by the component's prom-client collectors. Plain numbers, one
 * object per server: incrementing them is the whole cost on the hot path.
 */
export class HboneServerStats {
  /** TCP connections accepted. */
  connectionsAccepted = 0;
  /** TLS handshakes completed (before the SPIFFE peer check). */
  tlsHandshakes = 0;
  /** TLS handshakes that failed: garbage, wrong version, ALPN mismatch, unknown CA, no client cert, timeout. */
  tlsFailures = 0;
  /** Subset of tlsFailures: the client did not finish the handshake in time. */
  handshakeTimeouts = 0;
  /** `certificateFor` failed: no certificate for the local workload. */
  certificateFailures = 0;
  /** Handshake completed but the peer was refused: no ALPN, no SPIFFE identity, other trust domain. */
  peersRejected = 0;
  sessionsOpened = 0;
  sessionsActive = 0;
  sessionErrors = 0;
  /** Sessions dropped because a keepalive PING went unanswered. */
  pingTimeouts = 0;
  /** Sessions closed by the idle timeout. */
  idleClosed = 0;
  streamsOpened = 0;
  streamsActive = 0;
  streamErrors = 0;
  /** Streams answered 200. */
  accepted = 0;
  /** Streams answered with an error status, by status. */
  readonly rejected: Record<RejectStatus | 'other', number> = { 400: 0, 401: 0, 503: 0, other: 0 };
}

const kState = Symbol('hbone.session');
const kRequest = Symbol('hbone.request');

interface StatefulSession extends ServerHttp2Session {
  [kState]: SessionState;
}
interface RequestStream extends ServerHttp2Stream {
  [kRequest]: ConnectRequest | null;
  [kState]: SessionState;
}

/** Per HTTP/2 connection. */
class SessionState {
  readonly server: HboneServer;
  readonly session: ServerHttp2Session;
  readonly peer: Identity;
  readonly local: Endpoint;
  readonly remote: Endpoint;
  streams = 0;
  readonly idle: CoarseTimer;
  readonly keepAlive: KeepAlive;

  constructor(
    server: HboneServer,
    session: ServerHttp2Session,
    peer: Identity,
    local: Endpoint,
    remote: Endpoint,
  ) {
    this.server = server;
    this.session = session;
    this.peer = peer;
    this.local = local;
    this.remote = remote;
    this.idle = new CoarseTimer(server.idleTimeoutMs, sessionIdle, this);
    this.idle.refresh();
    this.keepAlive = new KeepAlive(
      session,
      server.pingIntervalMs,
      server.pingTimeoutMs,
      sessionPingDead,
      this,
    );
  }
}

function firstHeader(v: string | string[] | undefined): string | null {
  if (v === undefined) return null;
  return typeof v === 'string' ? v : (v[0] ?? null);
}

function joinedHeader(v: string | string[] | undefined): string | null {
  if (v === undefined) return null;
  return typeof v === 'string' ? v : v.join(',');
}

/** One CONNECT stream waiting for the handler's verdict. */
export class ConnectRequest {
  /** The parsed `:authority`: where the client wants to go. */
  readonly authority: HboneAddress;
  /** The client's SPIFFE identity (its first URI SAN). */
  readonly peerIdentity: Identity;
  /** The TCP peer of the HBONE connection (the client's proxy, or the original source with transparency). */
  readonly source: Endpoint;
  /** Our address the HBONE connection was accepted on. */
  readonly destination: Endpoint;
  /** Raw request headers (parse with parseBaggage / forwardedClient / parseTraceparent). */
  readonly baggage: string | null;
  readonly forwarded: string | null;
  readonly traceparent: string | null;
  /** The HTTP/2 stream; after `accept()` it is the tunnel (a Duplex). */
  readonly stream: ServerHttp2Stream;
  /** 0 until answered, then the status sent. */
  status = 0;
  private readonly state: SessionState;

  constructor(
    state: SessionState,
    stream: ServerHttp2Stream,
    authority: HboneAddress,
    headers: IncomingHttpHeaders,
  ) {
    this.state = state;
    this.stream = stream;
    this.authority = authority;
    this.peerIdentity = state.peer;
    this.source = state.remote;
    this.destination = state.local;
    this.baggage = joinedHeader(headers.baggage);
    this.forwarded = joinedHeader(headers.forwarded);
    this.traceparent = firstHeader(headers.traceparent);
  }

  /** True once the client reset or the connection died: answering is pointless. */
  get closed(): boolean {
    return this.stream.destroyed || this.stream.closed;
  }

  /**
   * Answers 200 and returns the tunnel, or null when the stream is already gone (the caller then closes its
   * upstream connection).
   */
  accept(): Duplex | null {
    if (this.status !== 0) throw bug(`HBONE stream answered twice (${this.status}, then 200)`);
    if (this.closed) return null;
    this.status = 200;
    this.stream.respond({ ':status': 200 });
    this.state.server.stats.accepted++;
    buffersOnlyWritev(this.stream);
    return this.stream;
  }

  /** Answers an error status and ends the stream. */
  reject(status: RejectStatus | number): void {
    if (this.status !== 0) return;
    if (status < 400 || status > 599) throw bug(`HBONE reject with non-error status ${status}`);
    this.status = status;
    const rejected = this.state.server.stats.rejected;
    if (status === 400 || status === 401 || status === 503) rejected[status]++;
    else rejected.other++;
    if (!this.closed) this.stream.respond({ ':status': status }, { endStream: true });
  }

  /** @internal the handler threw before answering. */
  handlerFailed(err: unknown): void {
    this.state.server.logHandlerError(this, err);
    if (this.status === 0) this.reject(503);
  }
}

// ---------- module-level handlers (this = the emitter) ----------

function onSessionStream(
  this: StatefulSession,
  stream: ServerHttp2Stream,
  headers: IncomingHttpHeaders,
): void {
  const state = this[kState];
  state.server.handleStream(state, stream as RequestStream, headers);
}

function onSessionClose(this: StatefulSession): void {
  this[kState].server.sessionClosed(this[kState]);
}

function onSessionError(this: StatefulSession, err: Error): void {
  this[kState].server.sessionError(this[kState], err);
}

function onStreamClose(this: RequestStream): void {
  const state = this[kState];
  state.streams--;
  state.server.stats.streamsActive--;
  if (state.streams === 0 && !state.session.closed) state.idle.refresh();
}

function onStreamError(this: RequestStream): void {
  // Resets and connection loss surface here; the tunnel's pipe (if any) sees them too.
  this[kState].server.stats.streamErrors++;
}

function sessionIdle(arg: unknown): void {
  const state = arg as SessionState;
  if (state.streams !== 0) return;
  state.server.stats.idleClosed++;
  state.session.close();
}

function sessionPingDead(arg: unknown): void {
  const state = arg as SessionState;
  state.server.stats.pingTimeouts++;
  // The peer is gone: graceful GOAWAY would wait on it forever.
  state.session.destroy();
}

function onRawError(): void {
  // The TLS layer reports failures (tlsClientError); before it takes over, a reset just closes the socket.
}

async function awaitHandler(result: Promise<void>, req: ConnectRequest): Promise<void> {
  try {
    await result;
  } catch (err) {
    req.handlerFailed(err);
  }
}

interface Front {
  readonly tls: TlsServer;
  serial: string;
}

export class HboneServer implements Drainable {
  readonly name: string;
  readonly stats = new HboneServerStats();
  /** @internal */ readonly onStream: (req: ConnectRequest) => void | Promise<void>;
  /** @internal */ readonly idleTimeoutMs: number;
  /** @internal */ readonly pingIntervalMs: number;
  /** @internal */ readonly pingTimeoutMs: number;
  private readonly listener: Server;
  private readonly certificateFor: HboneServerOptions['certificateFor'];
  private readonly trustDomain: string;
  private readonly logger: Logger | null;
  private readonly handshakeTimeoutMs: number;
  private readonly maxConcurrentStreams: number;
  private readonly fronts = new Map<string, Front>();
  private readonly sessions = new Set<SessionState>();
  private readonly logOnce = new LogOnce();
  private closing = false;
  /** forceClose ran: anything still arriving is dropped. */
  private forced = false;
  private drained: (() => void) | null = null;

  private constructor(opts: HboneServerOptions, listener: Server) {
    this.listener = listener;
    this.name = opts.name ?? 'hbone';
    this.certificateFor = opts.certificateFor;
    this.trustDomain = opts.trustDomain;
    this.onStream = opts.onStream;
    this.logger = opts.logger ?? null;
    this.handshakeTimeoutMs = opts.handshakeTimeoutMs ?? TLS_HANDSHAKE_TIMEOUT_MS;
    this.idleTimeoutMs = opts.idleTimeoutMs ?? SERVER_IDLE_TIMEOUT_MS;
    this.pingIntervalMs = opts.pingIntervalMs ?? PING_INTERVAL_MS;
    this.pingTimeoutMs = opts.pingTimeoutMs ?? PING_TIMEOUT_MS;
    this.maxConcurrentStreams = opts.maxConcurrentStreams ?? SERVER_MAX_CONCURRENT_STREAMS;
  }

  /**
   * Binds (or adopts) the listener and starts serving. Every fallible step happens here, so a server that is
   * returned is listening; a bind failure rejects with MESH_ERR_HBONE_LISTEN.
   */
  static async create(opts: HboneServerOptions): Promise<HboneServer> {
    if (opts.trustDomain.length === 0)
      throw new MeshError('MESH_ERR_CONFIG_INVALID', 'HBONE server: empty trust domain');
    const listener = await listen(opts.listen);
    const server = new HboneServer(opts, listener);
    listener.on('connection', (raw: Socket) => server.onConnection(raw));
    return server;
  }

  /** The bound address (tests, logs). */
  address(): AddressInfo {
    const a = this.listener.address();
    if (a === null || typeof a === 'string') throw bug('HBONE listener has no TCP address');
    return a;
  }

  get activeSessions(): number {
    return this.sessions.size;
  }

  // ---------- TCP → TLS ----------

  private onConnection(raw: Socket): void {
    this.stats.connectionsAccepted++;
    if (this.closing) {
      raw.destroy();
      return;
    }
    raw.on('error', onRawError);
    raw.setNoDelay(true);
    const local: Endpoint = { ip: canonicalIp(raw.localAddress ?? ''), port: raw.localPort ?? 0 };
    let cert: WorkloadCertificate | Promise<WorkloadCertificate>;
    try {
      cert = this.certificateFor(local);
    } catch (err) {
      this.certificateFailed(raw, local, err);
      return;
    }
    if (cert instanceof Promise) void this.startTlsAsync(raw, local, cert);
    else this.startTls(raw, cert);
  }

  private async startTlsAsync(
    raw: Socket,
    local: Endpoint,
    cert: Promise<WorkloadCertificate>,
  ): Promise<void> {
    try {
      this.startTls(raw, await cert);
    } catch (err) {
      this.certificateFailed(raw, local, err);
    }
  }

  private certificateFailed(raw: Socket, local: Endpoint, err: unknown): void {
    this.stats.certificateFailures++;
    raw.destroy();
    const where = `${local.ip}:${local.port}`;
    if (this.logger !== null && this.logOnce.should(`cert ${where}`)) {
      this.logger.warn({ local: where, err: describeError(err) }, 'no certificate for HBONE connection');
    }
  }

  private startTls(raw: Socket, cert: WorkloadCertificate): void {
    // Accepted before the drain began: finish the handshake and answer with GOAWAY (onSecure), so the client
    // retries on a new connection instead of seeing its TCP connection dropped.
    if (raw.destroyed || this.forced) {
      raw.destroy();
      return;
    }
    this.frontFor(cert).tls.emit('connection', raw);
  }

  /** The TLS server for this certificate's identity, its context swapped if the certificate rotated. */
  private frontFor(cert: WorkloadCertificate): Front {
    const key = identityKey(cert.identity);
    const existing = this.fronts.get(key);
    if (existing !== undefined) {
      if (existing.serial !== cert.serial) {
        existing.tls.setSecureContext(mtlsContextOptions(cert));
        existing.serial = cert.serial;
      }
      return existing;
    }
    const tls = createTlsServer(serverTlsOptions(cert, this.handshakeTimeoutMs));
    tls.on('secureConnection', (socket: TLSSocket) => this.onSecure(socket));
    tls.on('tlsClientError', (err: Error & { code?: string }, socket: TLSSocket) =>
      this.onTlsError(err, socket),
    );
    const front: Front = { tls, serial: cert.serial };
    this.fronts.set(key, front);
    return front;
  }

  private onTlsError(err: Error & { code?: string }, socket: TLSSocket): void {
    this.stats.tlsFailures++;
    const peer = socket.remoteAddress;
    socket.destroy();
    if (err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT') {
      this.stats.handshakeTimeouts++;
      // Idle or trickling handshakes (slowloris) are worth an operator's eye, once per peer and minute.
      if (this.logger !== null && this.logOnce.should(`timeout ${peer}`)) {
        this.logger.info(
          { peer, timeoutMs: this.handshakeTimeoutMs },
          'HBONE TLS handshake not completed in time; connection closed',
        );
      }
      return;
    }
    this.logger?.debug({ err: describeError(err), peer }, 'HBONE TLS handshake failed');
  }

  // ---------- TLS → HTTP/2 ----------

  private onSecure(socket: TLSSocket): void {
    this.stats.tlsHandshakes++;
    socket.on('error', onRawError);
    if (this.forced) {
      socket.destroy();
      return;
    }
    if (socket.alpnProtocol !== ALPN_H2) {
      // A client that offered no ALPN at all gets through OpenSSL; HBONE requires h2.
      this.refusePeer(socket, `ALPN ${JSON.stringify(socket.alpnProtocol)} is not h2`);
      return;
    }
    const check = checkClientPeer(socket, this.trustDomain);
    if (!check.ok) {
      this.refusePeer(socket, check.reason);
      return;
    }
    const session = performServerHandshake(socket, {
      settings: localSettings(this.maxConcurrentStreams),
      maxSessionMemory: MAX_SESSION_MEMORY_MIB,
    }) as StatefulSession;
    const local: Endpoint = { ip: canonicalIp(socket.localAddress ?? ''), port: socket.localPort ?? 0 };
    const remote: Endpoint = { ip: canonicalIp(socket.remoteAddress ?? ''), port: socket.remotePort ?? 0 };
    const state = new SessionState(this, session, check.identity, local, remote);
    session[kState] = state;
    session.on('stream', onSessionStream);
    session.on('close', onSessionClose);
    session.on('error', onSessionError);
    // SETTINGS cannot raise the connection-level window; without this it stays 64 KiB (PERFORMANCE.md).
    session.setLocalWindowSize(CONNECTION_WINDOW_SIZE);
    this.sessions.add(state);
    this.stats.sessionsOpened++;
    this.stats.sessionsActive++;
    // Handshake finished during the drain: GOAWAY at once. Streams the client already sent are refused
    // (REFUSED_STREAM), which a client retries on a new connection — to our successor, once our listener is
    // closed — instead of failing the way a dropped connection would.
    if (this.closing) session.close();
  }

  private refusePeer(socket: TLSSocket, reason: string): void {
    this.stats.peersRejected++;
    socket.destroy();
    // A misconfigured or hostile client retries at line rate: one line per peer and minute.
    if (this.logger !== null && this.logOnce.should(`peer ${socket.remoteAddress}`)) {
      this.logger.info({ peer: socket.remoteAddress, reason }, 'HBONE client refused');
    }
  }

  /** @internal */
  sessionClosed(state: SessionState): void {
    if (!this.sessions.delete(state)) return;
    state.keepAlive.stop();
    state.idle.clear();
    this.stats.sessionsActive--;
    if (this.closing && this.sessions.size === 0) this.drained?.();
  }

  /** @internal */
  sessionError(state: SessionState, err: Error): void {
    this.stats.sessionErrors++;
    this.logger?.debug({ peer: formatSpiffeId(state.peer), err: describeError(err) }, 'HBONE session error');
  }

  // ---------- streams ----------

  /** @internal */
  handleStream(state: SessionState, stream: RequestStream, headers: IncomingHttpHeaders): void {
    this.stats.streamsOpened++;
    this.stats.streamsActive++;
    state.streams++;
    state.idle.clear();
    stream[kState] = state;
    stream[kRequest] = null;
    stream.on('close', onStreamClose);
    stream.on('error', onStreamError);
    if (headers[':method'] !== 'CONNECT') {
      this.refuseStream(stream, 400);
      return;
    }
    const authority = parseAuthority(headers[':authority'] ?? '');
    if (authority === null) {
      this.refuseStream(stream, 400);
      return;
    }
    const req = new ConnectRequest(state, stream, authority, headers);
    stream[kRequest] = req;
    let result: void | Promise<void>;
    try {
      result = this.onStream(req);
    } catch (err) {
      req.handlerFailed(err);
      return;
    }
    if (result instanceof Promise) void awaitHandler(result, req);
  }

  private refuseStream(stream: ServerHttp2Stream, status: RejectStatus): void {
    this.stats.rejected[status]++;
    if (!stream.destroyed) stream.respond({ ':status': status }, { endStream: true });
  }

  /** @internal */
  logHandlerError(req: ConnectRequest, err: unknown): void {
    this.logger?.warn(
      {
        peer: formatSpiffeId(req.peerIdentity),
        authority: `${req.authority.ip}:${req.authority.port}`,
        err: describeError(err),
      },
      'HBONE stream handler failed',
    );
  }

  // ---------- lifecycle ----------

  /**
   * Sends GOAWAY on every open connection (in-flight streams finish; clients open new connections for new
   * streams) without closing the listener: used on certificate revocation and by drain.
   */
  closeSessions(): void {
    for (const s of this.sessions) if (!s.session.closed) s.session.close();
  }

  /** Stops accepting, GOAWAYs every connection and resolves once their streams have all ended. */
  drain(): Promise<void> {
    this.closing = true;
    if (this.listener.listening) this.listener.close();
    // Handshakes in flight get a GOAWAY when they complete (onSecure) or are cut by the handshake timeout.
    if (this.sessions.size === 0) return Promise.resolve();
    const done = new Promise<void>((resolve) => {
      this.drained = resolve;
    });
    this.closeSessions();
    return done;
  }

  forceClose(): void {
    this.closing = true;
    this.forced = true;
    if (this.listener.listening) this.listener.close();
    for (const s of this.sessions) s.session.destroy();
  }

  /** Closes everything now (tests, fatal errors). */
  close(): void {
    this.forceClose();
  }
}

async function listen(spec: ListenSpec): Promise<Server> {
  if (isNetServer(spec)) return spec;
  // pauseOnConnect: nothing is read before TLS owns the socket (certificate lookups may be asynchronous).
  const server = createNetServer({ pauseOnConnect: true });
  const what = 'fd' in spec ? `fd ${spec.fd}` : `${spec.host}:${spec.port}`;
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => {
      reject(
        new MeshError('MESH_ERR_HBONE_LISTEN', `cannot listen on ${what}: ${describeError(err)}`, {
          cause: err,
        }),
      );
    };
    server.once('error', onError);
    const ready = () => {
      server.off('error', onError);
      resolve();
    };
    if ('fd' in spec) server.listen({ fd: spec.fd }, ready);
    else
      server.listen(
        { host: spec.host, port: spec.port, reusePort: spec.reusePort ?? true, backlog: spec.backlog ?? 511 },
        ready,
      );
  });
  return server;
}

function isNetServer(spec: ListenSpec): spec is Server {
  return typeof (spec as Server).listen === 'function';
}
