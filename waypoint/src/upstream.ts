/**
 * Connections from the waypoint to endpoints. An endpoint captured by a ztunnel is reached through an HBONE
 * tunnel to `podIP:15008` with `:authority` `podIP:targetPort`, presenting the waypoint's own certificate
 * and accepting only the endpoint's identity (ARCHITECTURE.md "waypoint"); any other endpoint with plain TCP
 * to `podIP:targetPort`.
 *
 * On top of those byte streams:
 * - HTTP/1.1: one keep-alive `http.Agent` per endpoint (tunnels are the agent's sockets, so a tunnel carries
 *   many requests in sequence), `maxSockets` from `tcp.maxConnections`, sockets retired after
 *   `maxRequestsPerConnection` requests;
 * - HTTP/2 (gRPC, h2 ports, h2c clients on sniffed ports): one multiplexed session per endpoint, replaced
 *   when it closes or receives GOAWAY;
 * - raw streams for TCP proxying.
 *
 * Idle agents and sessions are swept so endpoints that disappear do not pin memory.
 */
import { Agent, type AgentOptions, type ClientRequest, type RequestOptions } from 'node:http';
import { type ClientHttp2Session, connect as h2connect } from 'node:http2';
import { connect as netConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { describeError, MeshError } from '../../pkg/errors/index.ts';
import {
  CONNECTION_WINDOW_SIZE,
  formatAuthority,
  type HboneConnectOptions,
  HboneError,
  type HbonePool,
} from '../../pkg/hbone/index.ts';
import { type Identity, parseSpiffeId } from '../../pkg/identity/index.ts';

/** Where one request (or TCP stream) goes. */
export interface UpstreamTarget {
  /** Endpoint (pod) IP. */
  readonly ip: string;
  readonly targetPort: number;
  /** Reach it through its ztunnel (HBONE) rather than plain TCP. */
  readonly hbone: boolean;
  /** Identity the endpoint's ztunnel must present (HBONE only). */
  readonly identity: Identity | null;
  /** 0 = unlimited (Istio's default). */
  readonly maxConnections: number;
  /** 0 = unlimited. */
  readonly maxRequestsPerConnection: number;
  /** 0 = the waypoint default. */
  readonly connectTimeoutMs: number;
  /** 0 = the waypoint default. */
  readonly idleTimeoutMs: number;
}

/** What travels in the CONNECT headers for the original client. */
export interface TunnelMeta {
  readonly baggage: string | null;
  readonly forwarded: string | null;
  readonly traceparent: string | null;
}

export interface UpstreamsOptions {
  readonly pool: HbonePool;
  /** The waypoint's identity (the certificate presented upstream). */
  readonly source: Identity;
  /** Port of the endpoint's ztunnel (15008). */
  readonly hbonePort: number;
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  /** Our own baggage for tunnels (who the waypoint is). */
  readonly baggage: string;
  readonly logger: Logger;
  /** Test hook: open plain TCP connections elsewhere. */
  readonly connectTcp?: (ip: string, port: number) => Socket;
}

/** Agents/sessions unused for this long are dropped by the sweep. */
const SWEEP_INTERVAL_MS = 60_000;

/** Error codes of a plain TCP connect that never reached the endpoint. */
const CONNECT_ERRNOS = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ETIMEDOUT',
  'EADDRNOTAVAIL',
  'ECONNABORTED',
]);

const kConnectFailure = Symbol('waypoint.connectFailure');
const kRequests = Symbol('waypoint.requests');

/** Marks an error as "could not connect" (Envoy UF, retriable as connect-failure). */
const identities = new Map<string, Identity | null>();

/**
 * An endpoint's SPIFFE identity (ServiceConfig Endpoint.identity), parsed once: a waypoint forwards to few
 * distinct identities, and parsing per request showed in profiles. Null when absent or not a SPIFFE id.
 */
export function endpointIdentity(spiffe: string): Identity | null {
  if (!spiffe) return null;
  let id = identities.get(spiffe);
  if (id === undefined) {
    const parsed = parseSpiffeId(spiffe);
    id = parsed.ok ? parsed.identity : null;
    if (identities.size >= 10_000) identities.clear();
    identities.set(spiffe, id);
  }
  return id;
}

export function connectFailure(err: Error): Error {
  (err as Error & { [kConnectFailure]?: boolean })[kConnectFailure] = true;
  return err;
}

export function isConnectFailure(err: unknown): boolean {
  if (err === null || typeof err !== 'object') return false;
  if ((err as { [kConnectFailure]?: boolean })[kConnectFailure] === true) return true;
  if (err instanceof HboneError) return true;
  const code = (err as NodeJS.ErrnoException).code;
  return code !== undefined && CONNECT_ERRNOS.has(code);
}

interface SocketLike extends Duplex {
  setKeepAlive?: (...a: unknown[]) => unknown;
  setNoDelay?: (...a: unknown[]) => unknown;
  ref?: () => unknown;
  unref?: () => unknown;
  [kRequests]?: number;
}

function returnThis(this: unknown): unknown {
  return this;
}

/**
 * node:http's Agent and ClientRequest call net.Socket methods an HTTP/2 stream does not have; they are
 * meaningless on a tunnel (keepalive and no-delay belong to the HBONE connection underneath).
 */
function asSocket(d: Duplex): Socket {
  const s = d as SocketLike;
  if (typeof s.setKeepAlive !== 'function') s.setKeepAlive = returnThis;
  if (typeof s.setNoDelay !== 'function') s.setNoDelay = returnThis;
  if (typeof s.ref !== 'function') s.ref = returnThis;
  if (typeof s.unref !== 'function') s.unref = returnThis;
  return s as unknown as Socket;
}

type CreateConnection = (
  options: RequestOptions,
  callback: (err: Error | null, socket?: Duplex) => void,
) => Duplex | undefined;

type AddRequest = (req: ClientRequest, options: RequestOptions) => void;

/**
 * Keep-alive agent for one endpoint that
 * - retires a connection after `maxRequests` requests (0 = never; maxRequestsPerConnection);
 * - enforces `maxSockets` (tcp.maxConnections) although its connections are created asynchronously: Node's
 *   Agent only counts a socket once created, so concurrent first requests would each open one. Requests
 *   beyond the limit wait here, in order, and are handed back to the Agent when a connection frees up or
 *   closes.
 */
export class EndpointAgent extends Agent {
  readonly maxRequests: number;
  lastUsed = performance.now();
  /** Connections being opened (tunnel or TCP handshake in progress). */
  creating = 0;
  private readonly waiting: Array<[ClientRequest, RequestOptions]> = [];
  private readonly baseAddRequest: AddRequest;

  constructor(opts: AgentOptions, maxRequests: number, create: CreateConnection) {
    super(opts);
    this.maxRequests = maxRequests;
    const counted: CreateConnection = (options, callback) => {
      this.creating++;
      return create(options, (err, socket) => {
        this.creating--;
        if (err) setImmediate(drainWaiting, this);
        else socket?.once('close', () => setImmediate(drainWaiting, this));
        callback(err, socket);
      });
    };
    // The typings declare createConnection as a method returning a Socket; the runtime supports the callback.
    (this as unknown as { createConnection: CreateConnection }).createConnection = counted;
    const self = this as unknown as { addRequest: AddRequest };
    this.baseAddRequest = self.addRequest.bind(this);
    self.addRequest = (req, options) => this.admit(req, options);
    // Registered after the Agent's own 'free' handler: by then a freed socket sits in freeSockets.
    this.on('free', () => drainWaiting(this));
  }

  /** Whether a new request would have to wait for a connection. */
  wouldQueue(ip: string, port: number): boolean {
    if (this.maxSockets === Number.POSITIVE_INFINITY) return false;
    return this.full(this.getName({ host: ip, port }));
  }

  private full(name: string): boolean {
    if ((this.freeSockets[name]?.length ?? 0) > 0) return false;
    return (this.sockets[name]?.length ?? 0) + this.creating >= this.maxSockets;
  }

  private admit(req: ClientRequest, options: RequestOptions): void {
    if (
      this.maxSockets !== Number.POSITIVE_INFINITY &&
      (this.waiting.length > 0 || this.full(this.getName(options)))
    ) {
      this.waiting.push([req, options]);
      return;
    }
    this.baseAddRequest(req, options);
  }

  /** @internal hands waiting requests to the Agent while connections are available. */
  drainWaiting(): void {
    while (this.waiting.length > 0) {
      const [req, options] = this.waiting[0] as [ClientRequest, RequestOptions];
      if (req.destroyed) {
        this.waiting.shift();
        continue;
      }
      if (this.full(this.getName(options))) return;
      this.waiting.shift();
      this.baseAddRequest(req, options);
    }
  }

  get queued(): number {
    return this.waiting.length;
  }

  // The typings say void; the runtime uses the boolean (false: close instead of keeping it).
  override keepSocketAlive(socket: Duplex): boolean {
    const s = socket as SocketLike;
    const n = (s[kRequests] ?? 0) + 1;
    s[kRequests] = n;
    if (this.maxRequests > 0 && n >= this.maxRequests) return false;
    return super.keepSocketAlive(socket) as unknown as boolean;
  }
}

function drainWaiting(agent: EndpointAgent): void {
  agent.drainWaiting();
}

interface SessionEntry {
  session: ClientHttp2Session | null;
  pending: Promise<ClientHttp2Session> | null;
  lastUsed: number;
}

function targetKey(t: UpstreamTarget): string {
  return `${t.hbone ? 'hbone' : 'tcp'}|${formatAuthority(t.ip, t.targetPort)}|${t.maxConnections}|${t.maxRequestsPerConnection}`;
}

export class Upstreams {
  /** Counters for /config_dump. */
  readonly stats = { tunnelsOpened: 0, tcpOpened: 0, connectFailures: 0, h2Sessions: 0 };
  private readonly opts: UpstreamsOptions;
  private readonly agents = new Map<string, EndpointAgent>();
  private readonly sessions = new Map<string, SessionEntry>();
  private readonly sweeper: NodeJS.Timeout;
  private closed = false;

  constructor(opts: UpstreamsOptions) {
    this.opts = opts;
    this.sweeper = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS);
    this.sweeper.unref();
  }

  /**
   * A byte stream to the endpoint: an HBONE tunnel, or a TCP socket (resolved once connected). `meta` is the
   * original client's (TCP proxying: one tunnel per downstream stream); pooled HTTP connections carry many
   * clients' requests, so their tunnels announce the waypoint itself.
   */
  async open(t: UpstreamTarget, meta: TunnelMeta | null): Promise<Duplex> {
    if (this.closed) throw new MeshError('MESH_ERR_HBONE_CONNECT', 'waypoint upstreams are closed');
    try {
      if (t.hbone) {
        if (t.identity === null) {
          throw new MeshError(
            'MESH_ERR_TLS_PEER_IDENTITY',
            `endpoint ${t.ip} is reached over HBONE but has no identity`,
          );
        }
        const opts: HboneConnectOptions = {
          source: this.opts.source,
          destinationIdentities: [t.identity],
          destination: { ip: t.ip, port: this.opts.hbonePort },
          authority: formatAuthority(t.ip, t.targetPort),
          baggage: meta?.baggage ?? this.opts.baggage,
          forwarded: meta?.forwarded ?? null,
          ...(meta?.traceparent ? { traceparent: meta.traceparent } : {}),
        };
        const s = await this.opts.pool.connect(opts);
        this.stats.tunnelsOpened++;
        return s;
      }
      const s = await this.connectTcp(t);
      this.stats.tcpOpened++;
      return s;
    } catch (err) {
      this.stats.connectFailures++;
      throw connectFailure(err instanceof Error ? err : new Error(String(err)));
    }
  }

  private connectTcp(t: UpstreamTarget): Promise<Socket> {
    const timeoutMs = t.connectTimeoutMs || this.opts.connectTimeoutMs;
    const s = this.opts.connectTcp
      ? this.opts.connectTcp(t.ip, t.targetPort)
      : netConnect({ host: t.ip, port: t.targetPort, noDelay: true, allowHalfOpen: true });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const err = Object.assign(
          new Error(`connect to ${t.ip}:${t.targetPort} timed out after ${timeoutMs} ms`),
          {
            code: 'ETIMEDOUT',
          },
        );
        s.destroy(err);
      }, timeoutMs);
      const onError = (err: Error) => {
        clearTimeout(timer);
        reject(err);
      };
      s.once('error', onError);
      s.once('connect', () => {
        clearTimeout(timer);
        s.off('error', onError);
        resolve(s);
      });
    });
  }

  /** The HTTP/1.1 keep-alive agent for an endpoint (its sockets are tunnels or TCP connections). */
  agentFor(t: UpstreamTarget): EndpointAgent {
    const key = targetKey(t);
    let agent = this.agents.get(key);
    if (agent === undefined) {
      const create: CreateConnection = (_options, callback) => {
        this.open(t, null).then(
          (s) => callback(null, asSocket(s)),
          (err: Error) => callback(err),
        );
        return undefined;
      };
      agent = new EndpointAgent(
        {
          keepAlive: true,
          // A free connection idle this long is closed by the agent.
          timeout: t.idleTimeoutMs || this.opts.idleTimeoutMs,
          maxSockets: t.maxConnections > 0 ? t.maxConnections : Number.POSITIVE_INFINITY,
          // LIFO keeps few connections warm and lets the rest idle out (Envoy reuses the most recent one too).
          scheduling: 'lifo',
        },
        t.maxRequestsPerConnection,
        create,
      );
      this.agents.set(key, agent);
    }
    agent.lastUsed = performance.now();
    return agent;
  }

  /** The HTTP/2 session for an endpoint, opened on first use and replaced once it closes or goes away. */
  async sessionFor(t: UpstreamTarget): Promise<ClientHttp2Session> {
    const key = targetKey(t);
    let e = this.sessions.get(key);
    if (e === undefined) {
      e = { session: null, pending: null, lastUsed: performance.now() };
      this.sessions.set(key, e);
    }
    e.lastUsed = performance.now();
    const s = e.session;
    if (s !== null && !s.closed && !s.destroyed) return s;
    e.session = null;
    if (e.pending !== null) return e.pending;
    const entry = e;
    entry.pending = this.openSession(t, entry).finally(() => {
      entry.pending = null;
    });
    return entry.pending;
  }

  private async openSession(t: UpstreamTarget, e: SessionEntry): Promise<ClientHttp2Session> {
    const stream = await this.open(t, null);
    const authority = `http://${formatAuthority(t.ip, t.targetPort)}`;
    const session = h2connect(authority, {
      createConnection: () => stream,
      settings: { enablePush: false },
    });
    this.stats.h2Sessions++;
    const retire = () => {
      if (e.session === session) e.session = null;
    };
    session.on('goaway', retire);
    session.on('close', retire);
    session.on('error', (err) => {
      retire();
      this.opts.logger.debug(
        { upstream: authority, err: describeError(err) },
        'upstream HTTP/2 session error',
      );
    });
    session.once('connect', () => session.setLocalWindowSize(CONNECTION_WINDOW_SIZE));
    // Idle sessions must not keep the process alive; requests ref the stream themselves.
    session.unref();
    e.session = session;
    return session;
  }

  private sweep(): void {
    const now = performance.now();
    for (const [key, agent] of this.agents) {
      const idleMs = this.opts.idleTimeoutMs;
      const busy = Object.keys(agent.sockets).length > 0 || Object.keys(agent.requests).length > 0;
      if (!busy && now - agent.lastUsed > idleMs) {
        agent.destroy();
        this.agents.delete(key);
      }
    }
    for (const [key, e] of this.sessions) {
      if (e.pending === null && now - e.lastUsed > this.opts.idleTimeoutMs) {
        e.session?.close();
        this.sessions.delete(key);
      }
    }
  }

  dump() {
    return {
      ...this.stats,
      agents: this.agents.size,
      sessions: this.sessions.size,
      pool: { ...this.opts.pool.stats },
    };
  }

  /** Graceful: idle keep-alive connections closed, sessions GOAWAY'd, the HBONE pool drained. */
  async drain(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweeper);
    for (const a of this.agents.values()) a.destroy();
    this.agents.clear();
    for (const e of this.sessions.values()) e.session?.close();
    this.sessions.clear();
    await this.opts.pool.drain();
  }

  forceClose(): void {
    this.closed = true;
    clearInterval(this.sweeper);
    for (const a of this.agents.values()) a.destroy();
    this.agents.clear();
    for (const e of this.sessions.values()) e.session?.destroy();
    this.sessions.clear();
    this.opts.pool.forceClose();
  }
}
