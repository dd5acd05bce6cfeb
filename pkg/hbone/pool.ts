/**
 * The HBONE client: a pool of HTTP/2-over-mTLS connections to peer proxies, multiplexing CONNECT tunnels
 * (ztunnel `proxy/pool.rs`, `proxy/h2/client.rs`, ARCHITECTURE.md "Pooling").
 *
 * - Key: (source identity, destination identities sorted, destination `ip:port`, source IP). Connections
 *   never cross keys: the server's certificate was checked against that key's identities, and with
 *   original-source binding the socket belongs to that source IP.
 * - At most `maxStreamsPerConnection` (100) streams per connection, counting tunnels still being set up; the
 *   next one opens another connection. Concurrent first requests for a key share one handshake because the
 *   connection is in the pool (state CONNECTING) from the moment it is started and reserves a slot per waiter.
 * - A connection with no stream for `idleTimeoutMs` (5 min) is closed; PING every 10 s and a 20 s ack
 *   timeout drop dead peers; GOAWAY or an error retires a connection (its streams finish or fail, new
 *   tunnels go to a new connection).
 * - The client presents the source workload's certificate (a cached secure context, rebuilt on rotation) and
 *   accepts only a server whose SPIFFE identity is one of the destination identities.
 */
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  connect as h2connect,
  constants as h2constants,
  type IncomingHttpHeaders,
  type IncomingHttpStatusHeader,
  type OutgoingHttpHeaders,
  type Settings,
} from 'node:http2';
import { connect as netConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import type { Logger } from 'pino';
import type { Drainable } from '../drain/index.ts';
import { describeError, isMeshError } from '../errors/index.ts';
import { formatSpiffeId, type Identity, type WorkloadCertificate } from '../identity/index.ts';
import { CoarseTimer } from '../timers/index.ts';
import { ALPN_H2, clientTlsOptions, SecureContextCache } from '../tls/index.ts';
import { formatAuthority } from './authority.ts';
import { HboneError } from './errors.ts';
import { newTraceparent } from './headers.ts';
import type { Endpoint } from './index.ts';
import { KeepAlive } from './keepalive.ts';
import {
  CONNECT_TIMEOUT_MS,
  CONNECTION_WINDOW_SIZE,
  localSettings,
  MAX_SESSION_MEMORY_MIB,
  PING_INTERVAL_MS,
  PING_TIMEOUT_MS,
  POOL_IDLE_TIMEOUT_MS,
  POOL_MAX_STREAMS_PER_CONNECTION,
} from './settings.ts';
import { buffersOnlyWritev } from './writev.ts';

/** Where a pooled connection's TCP socket goes; `localAddress` is the source IP to bind (null: any). */
export interface SocketTarget {
  readonly host: string;
  readonly port: number;
  readonly localAddress: string | null;
}

export interface HbonePoolOptions {
  /** The source workload's current certificate (e.g. `CertManager.get`). Called per new connection. */
  readonly certificateFor: (source: Identity) => WorkloadCertificate | Promise<WorkloadCertificate>;
  /**
   * Opens the TCP socket (connecting or connected), e.g. inside the source pod's netns with SO_MARK and
   * original-source binding through the native addon. Default: `net.connect` with `localAddress`.
   */
  readonly createSocket?: (target: SocketTarget) => Socket | Promise<Socket>;
  /** Shared with other pools of the process so contexts are built once per certificate. */
  readonly contexts?: SecureContextCache;
  readonly maxStreamsPerConnection?: number;
  readonly idleTimeoutMs?: number;
  readonly pingIntervalMs?: number;
  readonly pingTimeoutMs?: number;
  /** TCP connect + TLS + HTTP/2 preface budget for a new connection. */
  readonly connectTimeoutMs?: number;
  readonly logger?: Logger;
  readonly name?: string;
}

export interface HboneConnectOptions {
  readonly source: Identity;
  /** Identities the server may present (destination workload's, or its waypoint's); any order. */
  readonly destinationIdentities: readonly Identity[];
  /** The peer proxy: `podIP:15008`, or the waypoint's. */
  readonly destination: Endpoint;
  /** Source IP to bind (original-source spoofing); part of the pool key. */
  readonly sourceIp?: string | null;
  /** The CONNECT target, `IP:port`. */
  readonly authority: string;
  /** Header values (see formatBaggage / formatForwardedFor); omitted when null or absent. */
  readonly baggage?: string | null;
  readonly forwarded?: string | null;
  /** Propagated trace context; a fresh one is generated when absent (undefined), none is sent when null. */
  readonly traceparent?: string | null;
}

/** Counters for metrics and tests (plain numbers, read by prom-client collectors). */
export class HbonePoolStats {
  /** Connections started (each is one TCP connect and one TLS handshake). */
  connectionsOpened = 0;
  connectionsEstablished = 0;
  connectionsFailed = 0;
  connectionsActive = 0;
  goawaysReceived = 0;
  idleReleased = 0;
  pingTimeouts = 0;
  streamsOpened = 0;
  streamsActive = 0;
  /** Tunnels that did not get a 200 (status, reset, connection failure). */
  streamsFailed = 0;
}

/** The pool key (ztunnel `WorkloadKey`). */
export function poolKey(o: HboneConnectOptions): string {
  let dst: string;
  if (o.destinationIdentities.length === 1) dst = formatSpiffeId(o.destinationIdentities[0]!);
  else dst = o.destinationIdentities.map(formatSpiffeId).sort().join(',');
  return `${formatSpiffeId(o.source)}|${dst}|${formatAuthority(o.destination.ip, o.destination.port)}|${o.sourceIp ?? ''}`;
}

/** A connection's life: connecting → ready → retired (GOAWAY, error, idle, ping timeout, pool closed). */
const CONNECTING = 0;
const READY = 1;
const RETIRED = 2;
type ConnState = typeof CONNECTING | typeof READY | typeof RETIRED;

/**
 * Attempts per tunnel: a tunnel is retried on a new connection when the old one went away before its stream
 * was processed (REFUSED_STREAM, GOAWAY) or was dropped before TLS finished (droppedBeforeTls).
 */
const MAX_CONNECT_ATTEMPTS = 3;

const kConn = Symbol('hbone.conn');
const kPending = Symbol('hbone.pending');

interface ConnSession extends ClientHttp2Session {
  [kConn]: PoolConnection;
}
interface ConnTls extends TLSSocket {
  [kConn]: PoolConnection;
}
interface PendingStream extends ClientHttp2Stream {
  [kConn]: PoolConnection;
  [kPending]: PromiseWithResolvers<Duplex> | null;
}

class PoolEntry {
  readonly key: string;
  readonly connections: PoolConnection[] = [];
  constructor(key: string) {
    this.key = key;
  }
}

function noop(): void {}

class PoolConnection {
  readonly pool: HbonePool;
  readonly entry: PoolEntry;
  readonly destination: Endpoint;
  state: ConnState = CONNECTING;
  /** Open streams plus slots reserved by tunnels waiting for this connection. */
  streams = 0;
  maxStreams: number;
  session: ClientHttp2Session | null = null;
  socket: Socket | null = null;
  keepAlive: KeepAlive | null = null;
  readonly ready: PromiseWithResolvers<void>;
  readonly idle: CoarseTimer;
  readonly connectTimer: CoarseTimer;

  constructor(pool: HbonePool, entry: PoolEntry, destination: Endpoint) {
    this.pool = pool;
    this.entry = entry;
    this.destination = destination;
    this.maxStreams = pool.maxStreamsPerConnection;
    this.ready = Promise.withResolvers<void>();
    // Every waiter awaits `ready`; this keeps a failure with no waiter left from being "unhandled".
    this.ready.promise.catch(noop);
    this.idle = new CoarseTimer(pool.idleTimeoutMs, connIdle, this);
    this.connectTimer = new CoarseTimer(pool.connectTimeoutMs, connTimedOut, this);
  }

  acquire(): void {
    this.streams++;
    this.idle.clear();
  }

  release(): void {
    this.streams--;
    if (this.streams === 0 && this.state === READY) this.idle.refresh();
  }

  get label(): string {
    return formatAuthority(this.destination.ip, this.destination.port);
  }

  /**
   * Establishment failed: waiters get `err`; the connection leaves the pool. `retryable`: nothing reached the
   * peer's application yet and another connection may well succeed (see droppedBeforeTls).
   */
  fail(err: unknown, retryable = false): void {
    if (this.state !== CONNECTING) return;
    this.pool.stats.connectionsFailed++;
    this.retire();
    this.connectTimer.clear();
    const wrapped = isMeshError(err)
      ? err
      : new HboneError(
          'MESH_ERR_HBONE_CONNECT',
          `HBONE connect to ${this.label} failed: ${describeError(err)}`,
          null,
          {
            cause: err,
            details: { refused: retryable },
          },
        );
    this.ready.reject(wrapped);
    if (this.session !== null) {
      this.session.destroy();
    } else {
      this.socket?.destroy();
      this.pool.connectionGone(this);
    }
  }

  established(): void {
    if (this.state !== CONNECTING) return;
    this.state = READY;
    this.connectTimer.clear();
    this.pool.stats.connectionsEstablished++;
    this.pool.stats.connectionsActive++;
    this.ready.resolve();
    if (this.streams === 0) this.idle.refresh();
  }

  /** Leaves the pool: no new tunnels; open ones continue until the session closes. */
  retire(): void {
    if (this.state === RETIRED) return;
    if (this.state === READY) this.pool.stats.connectionsActive--;
    this.state = RETIRED;
    this.idle.clear();
    const list = this.entry.connections;
    const i = list.indexOf(this);
    if (i !== -1) list.splice(i, 1);
    if (list.length === 0) this.pool.forgetEntry(this.entry);
  }
}

// ---------- module-level handlers (this = the emitter) ----------

function connIdle(arg: unknown): void {
  const conn = arg as PoolConnection;
  if (conn.streams !== 0 || conn.state !== READY) return;
  conn.pool.stats.idleReleased++;
  conn.retire();
  conn.session?.close();
}

function connTimedOut(arg: unknown): void {
  const conn = arg as PoolConnection;
  conn.fail(
    new HboneError(
      'MESH_ERR_HBONE_TIMEOUT',
      `HBONE connect to ${conn.label} did not complete within ${conn.pool.connectTimeoutMs} ms`,
    ),
  );
}

function connPingDead(arg: unknown): void {
  const conn = arg as PoolConnection;
  conn.pool.stats.pingTimeouts++;
  conn.retire();
  conn.session?.destroy(
    new HboneError(
      'MESH_ERR_HBONE_TIMEOUT',
      `HBONE keepalive PING to ${conn.label} unanswered; connection dropped`,
    ),
  );
}

function onTlsSecure(this: ConnTls): void {
  this[kConn].pool.tlsEstablished(this[kConn], this);
}

/**
 * The peer dropped the TCP connection before the TLS handshake finished. That is what a proxy handing over to
 * its successor does to connections still queued on its listener when it closes it (SO_REUSEPORT gives each
 * socket its own accept queue, and closing one resets what it holds): no byte reached anyone, and a new
 * connection lands on the successor's listener, so one more attempt is safe and usually succeeds.
 */
function droppedBeforeTls(err: Error & { code?: string }): boolean {
  return err.code === 'ECONNRESET' || err.code === 'EPIPE';
}

function onTlsError(this: ConnTls, err: Error & { code?: string }): void {
  this[kConn].fail(err, this[kConn].session === null && droppedBeforeTls(err));
}

function onTlsClose(this: ConnTls): void {
  const conn = this[kConn];
  if (conn.session === null) conn.fail(new Error('connection closed during the TLS handshake'), true);
}

function onSessionConnect(this: ConnSession): void {
  const conn = this[kConn];
  // SETTINGS cannot raise the connection window; Node leaves it at 64 KiB otherwise (PERFORMANCE.md).
  this.setLocalWindowSize(CONNECTION_WINDOW_SIZE);
  conn.established();
}

function onSessionRemoteSettings(this: ConnSession, settings: Settings): void {
  const conn = this[kConn];
  const peerMax = settings.maxConcurrentStreams;
  conn.maxStreams = Math.min(conn.pool.maxStreamsPerConnection, peerMax ?? Number.POSITIVE_INFINITY);
}

function onSessionGoaway(this: ConnSession): void {
  const conn = this[kConn];
  conn.pool.stats.goawaysReceived++;
  conn.retire();
}

function onSessionError(this: ConnSession, err: Error): void {
  const conn = this[kConn];
  conn.fail(err);
  conn.retire();
  conn.pool.logger?.debug({ peer: conn.label, err: describeError(err) }, 'HBONE connection error');
}

function onSessionClose(this: ConnSession): void {
  const conn = this[kConn];
  conn.fail(new Error('HTTP/2 session closed before it was ready'));
  conn.retire();
  conn.keepAlive?.stop();
  conn.idle.clear();
  conn.connectTimer.clear();
  conn.pool.connectionGone(conn);
}

function onStreamResponse(
  this: PendingStream,
  headers: IncomingHttpHeaders & IncomingHttpStatusHeader,
): void {
  const pending = this[kPending];
  if (pending === null) return;
  this[kPending] = null;
  const status = headers[':status'] ?? 0;
  if (status === 200) {
    pending.resolve(this);
    return;
  }
  const conn = this[kConn];
  conn.pool.stats.streamsFailed++;
  pending.reject(
    new HboneError('MESH_ERR_HBONE_STATUS', `HBONE CONNECT via ${conn.label} answered ${status}`, status, {
      details: { status },
    }),
  );
  // The server ended its side with the status; cancel ours.
  this.close(h2constants.NGHTTP2_CANCEL);
}

function onStreamError(this: PendingStream, err: Error): void {
  const pending = this[kPending];
  if (pending === null) return; // after 200 the tunnel's user (pipe) handles errors
  this[kPending] = null;
  const conn = this[kConn];
  conn.pool.stats.streamsFailed++;
  pending.reject(
    new HboneError(
      'MESH_ERR_HBONE_STREAM',
      `HBONE CONNECT via ${conn.label} failed: ${describeError(err)}`,
      null,
      {
        cause: err,
        details: { refused: this.rstCode === h2constants.NGHTTP2_REFUSED_STREAM },
      },
    ),
  );
}

function onStreamClose(this: PendingStream): void {
  const conn = this[kConn];
  conn.pool.stats.streamsActive--;
  conn.release();
  const pending = this[kPending];
  if (pending === null) return;
  this[kPending] = null;
  conn.pool.stats.streamsFailed++;
  pending.reject(
    new HboneError(
      'MESH_ERR_HBONE_STREAM',
      `HBONE stream via ${conn.label} closed before an answer (code ${this.rstCode})`,
      null,
      {
        details: {
          refused: this.rstCode === h2constants.NGHTTP2_REFUSED_STREAM,
          rstCode: this.rstCode ?? -1,
        },
      },
    ),
  );
}

function isRetryable(err: unknown): boolean {
  return err instanceof HboneError && err.details.refused === true;
}

export class HbonePool implements Drainable {
  readonly name: string;
  readonly stats = new HbonePoolStats();
  /** @internal */ readonly maxStreamsPerConnection: number;
  /** @internal */ readonly idleTimeoutMs: number;
  /** @internal */ readonly connectTimeoutMs: number;
  /** @internal */ readonly logger: Logger | null;
  private readonly pingIntervalMs: number;
  private readonly pingTimeoutMs: number;
  private readonly certificateFor: HbonePoolOptions['certificateFor'];
  private readonly createSocket: ((target: SocketTarget) => Socket | Promise<Socket>) | null;
  private readonly contexts: SecureContextCache;
  private readonly entries = new Map<string, PoolEntry>();
  /** Every connection not yet closed, retired or not (for drain and forceClose). */
  private readonly live = new Set<PoolConnection>();
  private closed = false;

  constructor(opts: HbonePoolOptions) {
    this.name = opts.name ?? 'hbone-pool';
    this.certificateFor = opts.certificateFor;
    this.createSocket = opts.createSocket ?? null;
    this.contexts = opts.contexts ?? new SecureContextCache();
    this.maxStreamsPerConnection = opts.maxStreamsPerConnection ?? POOL_MAX_STREAMS_PER_CONNECTION;
    this.idleTimeoutMs = opts.idleTimeoutMs ?? POOL_IDLE_TIMEOUT_MS;
    this.pingIntervalMs = opts.pingIntervalMs ?? PING_INTERVAL_MS;
    this.pingTimeoutMs = opts.pingTimeoutMs ?? PING_TIMEOUT_MS;
    this.connectTimeoutMs = opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
    this.logger = opts.logger ?? null;
  }

  /**
   * Opens a tunnel to `authority` through the peer proxy, resolving with the stream once the peer answered
   * 200. Rejects with an HboneError: MESH_ERR_HBONE_STATUS (`status` set) for any other answer,
   * MESH_ERR_HBONE_CONNECT / _TIMEOUT / _STREAM for transport failures, or the TLS identity error.
   */
  async connect(opts: HboneConnectOptions): Promise<Duplex> {
    const key = poolKey(opts);
    for (let attempt = 1; ; attempt++) {
      if (this.closed) throw new HboneError('MESH_ERR_HBONE_CONNECT', `HBONE pool ${this.name} is closed`);
      const conn = this.checkout(key, opts);
      if (conn.state === CONNECTING) {
        try {
          await conn.ready.promise;
        } catch (err) {
          conn.release();
          if (attempt >= MAX_CONNECT_ATTEMPTS || !isRetryable(err)) throw err;
          continue;
        }
      }
      try {
        return await this.openStream(conn, opts);
      } catch (err) {
        if (attempt >= MAX_CONNECT_ATTEMPTS || !isRetryable(err)) throw err;
      }
    }
  }

  /** Live (not retired) connections for a key: tests and debug dumps. */
  connectionsFor(opts: HboneConnectOptions): number {
    return this.entries.get(poolKey(opts))?.connections.length ?? 0;
  }

  /** Pool keys with live connections. */
  keys(): string[] {
    return [...this.entries.keys()];
  }

  private checkout(key: string, opts: HboneConnectOptions): PoolConnection {
    let entry = this.entries.get(key);
    if (entry === undefined) {
      entry = new PoolEntry(key);
      this.entries.set(key, entry);
    }
    for (const c of entry.connections) {
      if (c.streams < c.maxStreams && c.state !== RETIRED) {
        c.acquire();
        return c;
      }
    }
    const conn = new PoolConnection(this, entry, opts.destination);
    entry.connections.push(conn);
    this.live.add(conn);
    conn.acquire();
    this.stats.connectionsOpened++;
    conn.connectTimer.refresh();
    void this.establish(conn, opts);
    return conn;
  }

  /** @internal */
  forgetEntry(entry: PoolEntry): void {
    if (this.entries.get(entry.key) === entry) this.entries.delete(entry.key);
  }

  private async establish(conn: PoolConnection, opts: HboneConnectOptions): Promise<void> {
    try {
      const cert = await this.certificateFor(opts.source);
      const context = this.contexts.get(cert);
      if (conn.state !== CONNECTING) return;
      const target: SocketTarget = {
        host: opts.destination.ip,
        port: opts.destination.port,
        localAddress: opts.sourceIp ?? null,
      };
      const raw =
        this.createSocket !== null
          ? await this.createSocket(target)
          : netConnect({
              host: target.host,
              port: target.port,
              ...(target.localAddress !== null ? { localAddress: target.localAddress } : {}),
            });
      if (conn.state !== CONNECTING) {
        raw.destroy();
        return;
      }
      raw.setNoDelay(true);
      conn.socket = raw;
      const tls = tlsConnect({
        socket: raw,
        ...clientTlsOptions(context, opts.destinationIdentities),
      }) as ConnTls;
      tls[kConn] = conn;
      conn.socket = tls;
      tls.once('secureConnect', onTlsSecure);
      tls.on('error', onTlsError);
      tls.once('close', onTlsClose);
    } catch (err) {
      conn.fail(err);
    }
  }

  /** @internal the TLS handshake finished (OpenSSL verified the chain, we verified the SPIFFE identity). */
  tlsEstablished(conn: PoolConnection, tls: TLSSocket): void {
    if (conn.state !== CONNECTING) {
      tls.destroy();
      return;
    }
    if (tls.alpnProtocol !== ALPN_H2) {
      conn.fail(
        new HboneError(
          'MESH_ERR_HBONE_PROTOCOL',
          `HBONE peer ${conn.label} did not select ALPN h2 (${String(tls.alpnProtocol)})`,
        ),
      );
      return;
    }
    const session = h2connect(`https://${conn.label}`, {
      createConnection: () => tls,
      settings: localSettings(null),
      maxSessionMemory: MAX_SESSION_MEMORY_MIB,
      peerMaxConcurrentStreams: this.maxStreamsPerConnection,
    }) as ConnSession;
    session[kConn] = conn;
    conn.session = session;
    session.once('connect', onSessionConnect);
    session.on('remoteSettings', onSessionRemoteSettings);
    session.on('goaway', onSessionGoaway);
    session.on('error', onSessionError);
    session.once('close', onSessionClose);
    conn.keepAlive = new KeepAlive(session, this.pingIntervalMs, this.pingTimeoutMs, connPingDead, conn);
  }

  /** @internal the connection is closed for good. */
  connectionGone(conn: PoolConnection): void {
    this.live.delete(conn);
  }

  private openStream(conn: PoolConnection, opts: HboneConnectOptions): Promise<Duplex> {
    const session = conn.session;
    if (conn.state !== READY || session === null || session.closed || session.destroyed) {
      conn.release();
      return Promise.reject(
        new HboneError('MESH_ERR_HBONE_STREAM', `HBONE connection to ${conn.label} went away`, null, {
          details: { refused: true },
        }),
      );
    }
    const headers: OutgoingHttpHeaders = { ':method': 'CONNECT', ':authority': opts.authority };
    if (opts.baggage) headers.baggage = opts.baggage;
    if (opts.forwarded) headers.forwarded = opts.forwarded;
    const traceparent = opts.traceparent === undefined ? newTraceparent() : opts.traceparent;
    if (traceparent) headers.traceparent = traceparent;
    let stream: PendingStream;
    try {
      stream = session.request(headers, { endStream: false }) as PendingStream;
    } catch (err) {
      // GOAWAY received or session destroyed between the checks and the request.
      conn.release();
      conn.retire();
      return Promise.reject(
        new HboneError(
          'MESH_ERR_HBONE_STREAM',
          `HBONE connection to ${conn.label} unusable: ${describeError(err)}`,
          null,
          {
            cause: err,
            details: { refused: true },
          },
        ),
      );
    }
    buffersOnlyWritev(stream);
    const pending = Promise.withResolvers<Duplex>();
    stream[kConn] = conn;
    stream[kPending] = pending;
    this.stats.streamsOpened++;
    this.stats.streamsActive++;
    stream.once('response', onStreamResponse);
    stream.on('error', onStreamError);
    stream.once('close', onStreamClose);
    return pending.promise;
  }

  /** Stops new tunnels, closes every connection gracefully (GOAWAY) and resolves once they have closed. */
  async drain(): Promise<void> {
    this.closed = true;
    const all = [...this.live];
    await Promise.all(
      all.map(
        (conn) =>
          new Promise<void>((resolve) => {
            conn.retire();
            const s = conn.session;
            if (s === null || s.destroyed) {
              conn.fail(new Error('pool drained'));
              resolve();
              return;
            }
            s.once('close', () => resolve());
            s.close();
          }),
      ),
    );
  }

  forceClose(): void {
    this.closed = true;
    for (const conn of this.live) {
      conn.fail(new Error('pool closed'));
      conn.retire();
      conn.keepAlive?.stop();
      if (conn.session !== null) conn.session.destroy();
      else conn.socket?.destroy();
    }
    this.live.clear();
  }

  close(): void {
    this.forceClose();
  }
}
