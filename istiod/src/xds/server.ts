/**
 * istiod's delta ADS server (ARCHITECTURE.md, "Delta ADS"): `DeltaAggregatedResources` serving the types the
 * ambient index produces (`istio.workload.Address`, `istio.security.Authorization`) to ztunnels (and any other
 * delta-xDS client), wire-compatible with upstream istiod.
 *
 * Per connection and type the server keeps:
 * - `acked`: name → version the client is known to hold (from its ACKs, or `initial_resource_versions` after a
 *   reconnect). Versions are content hashes of the encoded resource, so a reconnecting client is sent only
 *   what changed, and told to remove what no longer exists.
 * - `dirty`: the names that changed since they were last sent, a set (not a queue of messages): a client that
 *   is slow or stops reading costs at most one entry per resource, however many changes happen.
 * - `inflight`: at most one unacknowledged response (like Istio). Its ACK commits the sent versions and sends
 *   whatever became dirty meanwhile; a NACK keeps the client's last good versions (nothing is committed, the
 *   error is logged, counted and shown in syncz) and only later changes are pushed.
 * Changes reach connections through a debouncer (100 ms quiet, 10 s max), and only changed names are
 * considered; deletions travel as `removed_resources`.
 *
 * Scoped types (`access`, e.g. the waypoint L7 config): the first request for such a type is authorized by its
 * TypeAccess rule (ignored, refused, or given a scope), and the client then sees only the names in its scope
 * (`setScope`). Resources are still stored and encoded once; scoping only selects which stored bytes a client gets,
 * and a name leaving a client's scope is sent as removed.
 */
import { createHash, randomUUID } from 'node:crypto';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { describeError, type MeshError } from '../../../pkg/errors/index.ts';
import { Gauge, type Registry } from '../../../pkg/metrics/index.ts';
import { ControlPlane } from '../../../pkg/xds/gen/envoy/config/core/v3/base.ts';
import {
  ADDRESS_TYPE_URL,
  AggregatedDiscoveryServiceService,
  type Any,
  AUTHORIZATION_TYPE_URL,
  DeltaDiscoveryRequest,
  DeltaDiscoveryResponse,
  decodeSafe,
  Resource,
} from '../../../pkg/xds/index.ts';
import type { Authenticator, Caller } from '../ca/service.ts';
import { bearerToken, CaError } from '../ca/service.ts';
import { DEBOUNCE_MAX_MS, DEBOUNCE_QUIET_MS, Debouncer } from './debounce.ts';
import { createXdsMetrics, metricType, type XdsMetrics } from './metrics.ts';
import { type ParsedNode, parseNodeId } from './node.ts';

/** The types ztunnel subscribes to. */
export const DEFAULT_TYPES: readonly string[] = [ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL];

/** Largest DeltaDiscoveryRequest we decode: requests are small (names, versions); 16 MiB covers a reconnect of a
 * client holding hundreds of thousands of resource versions. */
export const MAX_REQUEST_BYTES = 16 * 1024 * 1024;

export interface XdsServerOptions {
  readonly registry: Registry;
  readonly logger: Logger;
  /** Type URLs served; requests for others are ignored (as istiod does for types it has no generator for). */
  readonly types?: readonly string[];
  readonly debounceQuietMs?: number;
  readonly debounceMaxMs?: number;
  /** Sent as `control_plane.identifier` (istiod's pod name, typically). */
  readonly controlPlaneId?: string;
  /**
   * Types whose resources are not for every client: who may subscribe and which named scope of resources each
   * subscriber sees (`setScope`). Types without an entry are served to every client, unscoped.
   */
  readonly access?: ReadonlyMap<string, TypeAccess>;
}

/** What a client asking for a scoped type is: its parsed node id, node metadata and authenticated caller. */
export interface AccessRequest {
  readonly node: ParsedNode;
  readonly metadata: Readonly<Record<string, unknown>>;
  /** Null on a port without authentication. */
  readonly caller: Caller | null;
}

/**
 * The decision for one client and type: `ignore` answers nothing and keeps the stream (as for a type we do not
 * serve, e.g. a ztunnel asking for waypoint config), `deny` ends the stream with PERMISSION_DENIED (a client
 * claiming to be something its credentials do not allow), `scope` serves the resources of that scope only.
 */
export type AccessDecision =
  | { readonly kind: 'ignore'; readonly reason: string }
  | { readonly kind: 'deny'; readonly reason: string }
  | { readonly kind: 'scope'; readonly scope: string };

export interface TypeAccess {
  authorize(req: AccessRequest): AccessDecision;
}

export interface ServeOptions {
  /**
   * Verifies `authorization: Bearer <token>` (istiod/src/ca's TokenReviewAuthenticator in production). Null or
   * absent serves without authentication (the plaintext port inside a trusted network, and tests).
   */
  readonly authenticator?: Authenticator | null;
  /** With an authenticator: the node id's namespace must be the caller's (Istio's identity check). Default true. */
  readonly checkNodeNamespace?: boolean;
}

interface StoredResource {
  readonly version: string;
  readonly any: Any;
  /**
   * The `Resource` message (name, version, Any) encoded once when stored: a snapshot for a new client is then
   * these bytes concatenated, not 11 000 messages re-encoded per client (measured by bench/xds: 45 ms → a few
   * ms of CPU per connecting client at 10 000 pods).
   */
  readonly encoded: Uint8Array;
}

interface InFlight {
  readonly nonce: string;
  /** name → version sent (null = sent as removed). */
  readonly sent: Map<string, string | null>;
  readonly sentAt: number;
}

/** Per-type state of one connection: what the client holds, what changed, what is awaiting its ACK. */
class TypeState {
  readonly typeUrl: string;
  wildcard = false;
  readonly names = new Set<string>();
  readonly acked = new Map<string, string>();
  readonly dirty = new Set<string>();
  /** performance.now() of the oldest change in `dirty`, -1 when none. */
  dirtySince = -1;
  inflight: InFlight | null = null;
  /** The first response is owed even when empty: it tells the client it is synced. */
  initialOwed = true;
  pushes = 0;
  acks = 0;
  nacks = 0;
  lastNonceSent = '';
  lastNonceAcked = '';
  lastAckAt: number | null = null;
  lastNack: { nonce: string; message: string; at: number } | null = null;

  /** For a scoped type: the scope this client sees and its current members (null = unscoped type). */
  scope: string | null = null;
  scopeMembers: ReadonlySet<string> | null = null;

  constructor(typeUrl: string) {
    this.typeUrl = typeUrl;
  }

  wants(name: string): boolean {
    if (this.scopeMembers !== null && !this.scopeMembers.has(name)) return false;
    return this.wildcard || this.names.has(name);
  }
}

const EMPTY_SCOPE: ReadonlySet<string> = new Set();

type XdsStream = grpc.ServerDuplexStream<DeltaDiscoveryRequest | BadRequest, Uint8Array>;

/** A request that did not decode; the handler ends the stream with INVALID_ARGUMENT. */
class BadRequest {
  readonly error: MeshError;
  constructor(error: MeshError) {
    this.error = error;
  }
}

class Connection {
  readonly id: string;
  readonly node: ParsedNode;
  readonly peer: string;
  readonly caller: Caller | null;
  readonly connectedAt = Date.now();
  readonly version: string;
  readonly metadata: Readonly<Record<string, unknown>>;
  readonly types = new Map<string, TypeState>();
  readonly stream: XdsStream;
  readonly logger: Logger;
  closed = false;

  constructor(
    id: string,
    node: ParsedNode,
    version: string,
    caller: Caller | null,
    stream: XdsStream,
    logger: Logger,
    metadata: Readonly<Record<string, unknown>> = {},
  ) {
    this.id = id;
    this.node = node;
    this.version = version;
    this.metadata = metadata;
    this.peer = stream.getPeer();
    this.caller = caller;
    this.stream = stream;
    this.logger = logger;
  }
}

/** One connection's sync state, for `/debug/syncz`. */
export interface SyncStatus {
  readonly connectionId: string;
  readonly proxy: string;
  readonly proxyType: string;
  readonly podName: string;
  readonly podNamespace: string;
  readonly ips: readonly string[];
  readonly peer: string;
  readonly identity: string | null;
  readonly istioVersion: string;
  readonly connectedAt: string;
  readonly types: Record<string, TypeSyncStatus>;
}

export interface TypeSyncStatus {
  readonly typeUrl: string;
  readonly wildcard: boolean;
  /** The resource scope this client sees for a scoped type (e.g. its waypoint), else null. */
  readonly scope: string | null;
  readonly subscribedNames: number;
  /** Resources the client has acknowledged. */
  readonly resourcesAcked: number;
  /** Changes waiting to be sent (the dirty set). */
  readonly resourcesPending: number;
  readonly inFlight: { readonly nonce: string; readonly resources: number; readonly sentAt: string } | null;
  readonly lastNonceSent: string;
  readonly lastNonceAcked: string;
  readonly lastAckAt: string | null;
  readonly lastNack: { readonly nonce: string; readonly message: string; readonly at: string } | null;
  readonly pushes: number;
  readonly acks: number;
  readonly nacks: number;
  /** SYNCED when nothing is pending or in flight, STALE otherwise, NACKED when the last response was rejected. */
  readonly state: 'SYNCED' | 'STALE' | 'NACKED';
}

/** The service definition we register: strict, bounded request decoding and pre-encoded responses. */
const SERVICE_DEFINITION = {
  streamAggregatedResources: AggregatedDiscoveryServiceService.streamAggregatedResources,
  deltaAggregatedResources: {
    ...AggregatedDiscoveryServiceService.deltaAggregatedResources,
    requestDeserialize: (value: Buffer): DeltaDiscoveryRequest | BadRequest => {
      const r = decodeSafe(DeltaDiscoveryRequest, value, {
        what: 'envoy.service.discovery.v3.DeltaDiscoveryRequest',
        maxBytes: MAX_REQUEST_BYTES,
      });
      return r.ok ? r.value : new BadRequest(r.error);
    },
    responseSerialize: (value: Uint8Array): Buffer =>
      Buffer.from(value.buffer, value.byteOffset, value.byteLength),
  },
} as const;

export function resourceVersion(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('base64url').slice(0, 22);
}

export class XdsServer {
  private readonly logger: Logger;
  private readonly metrics: XdsMetrics;
  private readonly typeUrls: ReadonlySet<string>;
  private readonly tables = new Map<string, Map<string, StoredResource>>();
  /** Names changed since the last debounced push, per type, and when the oldest change happened. */
  private pendingNames = new Map<string, Set<string>>();
  private pendingSince = -1;
  private readonly debouncer: Debouncer;
  private readonly connections = new Map<string, Connection>();
  private readonly controlPlaneId: string;
  private readonly access: ReadonlyMap<string, TypeAccess>;
  /** Scoped types: type URL → scope → resource names visible in it. */
  private readonly scopes = new Map<string, Map<string, ReadonlySet<string>>>();
  /** Streams we have ended; requests still buffered on them are dropped. */
  private readonly ended = new WeakSet<XdsStream>();
  private connectionCounter = 0;
  private pushVersion = 0;
  private closed = false;

  constructor(opts: XdsServerOptions) {
    this.logger = opts.logger;
    this.metrics = createXdsMetrics(opts.registry);
    this.typeUrls = new Set(opts.types ?? DEFAULT_TYPES);
    for (const t of this.typeUrls) this.tables.set(t, new Map());
    this.controlPlaneId = opts.controlPlaneId ?? '';
    this.access = opts.access ?? new Map();
    for (const t of this.access.keys()) {
      if (!this.typeUrls.has(t)) throw new Error(`BUG: access rule for ${t}, which XdsServer does not serve`);
      this.scopes.set(t, new Map());
    }
    const self = this;
    // Proxy status as a metric: connections per type and sync state, computed at scrape time from syncz.
    new Gauge({
      name: 'pilot_xds_sync_state',
      help: 'Connected xDS clients per type and sync state (SYNCED, STALE: changes pending or unacknowledged, NACKED).',
      labelNames: ['type', 'state'],
      registers: [opts.registry],
      collect() {
        this.reset();
        for (const s of self.syncz()) {
          for (const [type, st] of Object.entries(s.types)) this.inc({ type, state: st.state });
        }
      },
    });
    this.debouncer = new Debouncer(
      opts.debounceQuietMs ?? DEBOUNCE_QUIET_MS,
      opts.debounceMaxMs ?? DEBOUNCE_MAX_MS,
      () => this.push(),
    );
  }

  // ---- resources -----------------------------------------------------------------------------------------

  /**
   * Applies resource changes of one type: encoded message bytes by name, null = deleted. New connections see
   * them at once; existing ones get them with the next debounced push.
   */
  update(typeUrl: string, changes: ReadonlyMap<string, Uint8Array | null>): void {
    const table = this.tables.get(typeUrl);
    if (!table) throw new Error(`BUG: XdsServer does not serve ${typeUrl}`);
    let pending = this.pendingNames.get(typeUrl);
    for (const [name, bytes] of changes) {
      if (bytes === null) {
        if (!table.delete(name)) continue;
      } else {
        const version = resourceVersion(bytes);
        if (table.get(name)?.version === version) continue;
        const any: Any = { typeUrl, value: bytes };
        const encoded = Resource.encode({ name, version, resource: any, aliases: [] }).finish();
        table.set(name, { version, any, encoded });
      }
      if (!pending) {
        pending = new Set();
        this.pendingNames.set(typeUrl, pending);
      }
      pending.add(name);
    }
    if (pending && pending.size > 0) {
      if (this.pendingSince < 0) this.pendingSince = performance.now();
      this.debouncer.trigger();
    }
  }

  /** Current resource names and versions of a type (debug, tests). */
  versions(typeUrl: string): Map<string, string> {
    return new Map([...(this.tables.get(typeUrl) ?? [])].map(([k, v]) => [k, v.version]));
  }

  /**
   * Sets which resources of a scoped type the clients in `scope` see (replacing the previous set). Names that
   * enter or leave the scope are pushed (or removed) with the next debounced push, like resource changes.
   */
  setScope(typeUrl: string, scope: string, names: ReadonlySet<string>): void {
    const scopes = this.scopes.get(typeUrl);
    if (!scopes) throw new Error(`BUG: XdsServer has no access rule for ${typeUrl}`);
    const before = scopes.get(scope) ?? EMPTY_SCOPE;
    const after = new Set(names);
    const changed: string[] = [];
    for (const n of before) if (!after.has(n)) changed.push(n);
    for (const n of after) if (!before.has(n)) changed.push(n);
    if (after.size > 0) scopes.set(scope, after);
    else scopes.delete(scope);
    for (const conn of this.connections.values()) {
      const st = conn.types.get(typeUrl);
      if (st && st.scope === scope) st.scopeMembers = after;
    }
    if (changed.length === 0) return;
    let pending = this.pendingNames.get(typeUrl);
    if (!pending) {
      pending = new Set();
      this.pendingNames.set(typeUrl, pending);
    }
    for (const n of changed) pending.add(n);
    if (this.pendingSince < 0) this.pendingSince = performance.now();
    this.debouncer.trigger();
  }

  /** Whether a type is served with an access rule (its resources are scoped per client). */
  isScoped(typeUrl: string): boolean {
    return this.scopes.has(typeUrl);
  }

  /** Current members of a scope (debug, tests). */
  scopeNames(typeUrl: string, scope: string): ReadonlySet<string> {
    return this.scopes.get(typeUrl)?.get(scope) ?? EMPTY_SCOPE;
  }

  /** Pushes pending changes now instead of waiting for the debouncer. */
  flushNow(): void {
    this.debouncer.flush();
  }

  private push(): void {
    const pending = this.pendingNames;
    const since = this.pendingSince;
    this.pendingNames = new Map();
    this.pendingSince = -1;
    this.pushVersion++;
    for (const conn of this.connections.values()) {
      for (const [typeUrl, names] of pending) {
        const st = conn.types.get(typeUrl);
        if (!st) continue;
        let added = false;
        for (const n of names) {
          if (!st.wants(n) && !st.acked.has(n)) continue;
          st.dirty.add(n);
          added = true;
        }
        if (added && (st.dirtySince < 0 || since < st.dirtySince)) st.dirtySince = since;
        this.send(conn, st);
      }
    }
  }

  // ---- gRPC wiring ---------------------------------------------------------------------------------------

  /** Adds the ADS service to a grpc-js server (one XdsServer may serve several ports with different auth). */
  register(server: grpc.Server, opts: ServeOptions = {}): void {
    server.addService(SERVICE_DEFINITION, this.handlers(opts));
  }

  /** The handler map for SERVICE_DEFINITION (exposed for callers that build their own server). */
  handlers(opts: ServeOptions = {}): grpc.UntypedServiceImplementation {
    const authenticator = opts.authenticator ?? null;
    const checkNodeNamespace = opts.checkNodeNamespace ?? true;
    return {
      streamAggregatedResources: (call: grpc.ServerDuplexStream<unknown, unknown>) => {
        call.emit('error', {
          code: grpc.status.UNIMPLEMENTED,
          details: 'state-of-the-world ADS is not supported; use DeltaAggregatedResources',
        });
      },
      deltaAggregatedResources: (call: XdsStream) => {
        this.accept(call, authenticator, checkNodeNamespace).catch((err: unknown) => {
          this.metrics.internalErrors.inc();
          this.logger.error({ peer: call.getPeer(), err: describeError(err) }, 'xDS stream failed');
          fail(call, grpc.status.INTERNAL, `internal error: ${describeError(err)}`);
        });
      },
    };
  }

  private async accept(
    call: XdsStream,
    authenticator: Authenticator | null,
    checkNodeNamespace: boolean,
  ): Promise<void> {
    const peer = call.getPeer();
    if (this.closed) return fail(call, grpc.status.UNAVAILABLE, 'server is shutting down');
    let caller: Caller | null = null;
    if (authenticator) {
      const token = bearerToken(call.metadata);
      if (!token) {
        this.logger.warn({ code: 'MESH_ERR_XDS_AUTH', peer }, 'xDS request without bearer token');
        return fail(
          call,
          grpc.status.UNAUTHENTICATED,
          'authentication failure: no bearer token in "authorization" metadata',
        );
      }
      try {
        caller = await authenticator.authenticate(token);
      } catch (err) {
        const code = err instanceof CaError ? err.grpcCode : grpc.status.UNAVAILABLE;
        this.logger.warn(
          { code: 'MESH_ERR_XDS_AUTH', peer, err: describeError(err) },
          'xDS authentication failed',
        );
        return fail(
          call,
          code,
          `authentication failure: ${err instanceof Error ? err.message : String(err)}`,
        );
      }
    }
    // The first request carries the node; the stream buffers until we read it.
    let conn: Connection | null = null;
    const onData = (req: DeltaDiscoveryRequest | BadRequest) => {
      if (this.ended.has(call)) return;
      if (req instanceof BadRequest) {
        this.logger.warn(
          { code: 'MESH_ERR_XDS_REQUEST', peer, err: req.error.message },
          'malformed xDS request',
        );
        this.endStream(conn, call, grpc.status.INVALID_ARGUMENT, req.error.message);
        return;
      }
      if (!conn) {
        const nodeId = req.node?.id ?? '';
        const parsed = nodeId
          ? parseNodeId(nodeId)
          : ({ ok: false, error: 'missing node information' } as const);
        if (!parsed.ok) {
          this.logger.warn({ code: 'MESH_ERR_XDS_REQUEST', peer, err: parsed.error }, 'xDS request refused');
          return this.endStream(null, call, grpc.status.INVALID_ARGUMENT, parsed.error);
        }
        if (caller && checkNodeNamespace && caller.namespace !== parsed.node.podNamespace) {
          this.logger.warn(
            { code: 'MESH_ERR_XDS_AUTH', peer, node: nodeId, identity: callerId(caller) },
            'xDS node/identity mismatch',
          );
          return this.endStream(
            null,
            call,
            grpc.status.PERMISSION_DENIED,
            `authorization failed: node ${nodeId} claims namespace ${parsed.node.podNamespace} but the caller is ${caller.namespace}/${caller.serviceAccount}`,
          );
        }
        const meta = req.node?.metadata ?? {};
        const version = typeof meta.ISTIO_VERSION === 'string' ? meta.ISTIO_VERSION : 'unknown';
        const id = `${nodeId}-${++this.connectionCounter}`;
        conn = new Connection(id, parsed.node, version, caller, call, this.logger.child({ conn: id }), meta);
        this.connections.set(id, conn);
        this.metrics.connected.inc({ version });
        conn.logger.info({ peer, node: nodeId, identity: callerId(caller) }, 'xDS client connected');
      }
      try {
        this.handleRequest(conn, req);
      } catch (err) {
        this.metrics.internalErrors.inc();
        conn.logger.error({ err: describeError(err) }, 'xDS request handling failed');
        this.endStream(conn, call, grpc.status.INTERNAL, `internal error: ${describeError(err)}`);
      }
    };
    call.on('data', onData);
    call.on('end', () => {
      // The client half-closed: finish our side too.
      this.endStream(conn, call, grpc.status.OK, 'OK');
    });
    call.on('error', (err) => {
      conn?.logger.debug({ err: describeError(err) }, 'xDS stream error');
      this.forget(conn);
    });
    call.on('cancelled', () => this.forget(conn));
    call.on('close', () => this.forget(conn));
  }

  private handleRequest(conn: Connection, req: DeltaDiscoveryRequest): void {
    const typeUrl = req.typeUrl;
    if (!this.typeUrls.has(typeUrl)) {
      // istiod has no generator for the type and answers nothing; the stream stays up.
      conn.logger.debug({ typeUrl }, 'ignoring request for an unknown type');
      return;
    }
    let st = conn.types.get(typeUrl);
    const table = this.tables.get(typeUrl)!;
    if (!st) {
      const rule = this.access.get(typeUrl);
      let scope: string | null = null;
      if (rule) {
        const decision = rule.authorize({ node: conn.node, metadata: conn.metadata, caller: conn.caller });
        if (decision.kind === 'ignore') {
          conn.logger.debug(
            { typeUrl, reason: decision.reason },
            'ignoring request for a type this client does not get',
          );
          return;
        }
        if (decision.kind === 'deny') {
          conn.logger.warn(
            {
              code: 'MESH_ERR_XDS_AUTH',
              typeUrl,
              node: conn.node.id,
              identity: callerId(conn.caller),
              reason: decision.reason,
            },
            'xDS subscription refused',
          );
          this.endStream(
            conn,
            conn.stream,
            grpc.status.PERMISSION_DENIED,
            `authorization failed: ${decision.reason}`,
          );
          return;
        }
        scope = decision.scope;
      }
      st = new TypeState(typeUrl);
      if (scope !== null) {
        st.scope = scope;
        st.scopeMembers = this.scopes.get(typeUrl)?.get(scope) ?? EMPTY_SCOPE;
      }
      conn.types.set(typeUrl, st);
      const subscribe = req.resourceNamesSubscribe;
      st.wildcard = subscribe.length === 0 || subscribe.includes('*');
      for (const n of subscribe) if (n !== '*') st.names.add(n);
      // After a reconnect the client tells us what it holds; anything different (or gone) is sent.
      for (const [name, version] of Object.entries(req.initialResourceVersions)) st.acked.set(name, version);
      for (const name of table.keys()) if (st.wants(name)) st.dirty.add(name);
      for (const name of st.acked.keys()) st.dirty.add(name);
      st.dirtySince = performance.now();
      this.send(conn, st);
      return;
    }
    this.applySubscriptions(st, req, table);
    if (req.responseNonce !== '') {
      if (!st.inflight || st.inflight.nonce !== req.responseNonce) {
        this.metrics.expiredNonce.inc({ type: metricType(typeUrl) });
        conn.logger.debug(
          { typeUrl, nonce: req.responseNonce },
          'ACK/NACK for a response no longer in flight',
        );
      } else if (req.errorDetail !== undefined) {
        const message = req.errorDetail.message || `code ${req.errorDetail.code}`;
        st.nacks++;
        st.lastNack = { nonce: req.responseNonce, message, at: Date.now() };
        st.inflight = null;
        this.metrics.rejects.inc({ type: metricType(typeUrl) });
        conn.logger.warn(
          { code: 'MESH_ERR_XDS_NACK', typeUrl, nonce: req.responseNonce, error: message },
          'xDS response rejected (NACK)',
        );
      } else {
        const inflight = st.inflight;
        for (const [name, version] of inflight.sent) {
          if (version === null) st.acked.delete(name);
          else st.acked.set(name, version);
        }
        st.acks++;
        st.lastNonceAcked = inflight.nonce;
        st.lastAckAt = Date.now();
        st.inflight = null;
      }
    }
    this.send(conn, st);
  }

  private applySubscriptions(
    st: TypeState,
    req: DeltaDiscoveryRequest,
    table: Map<string, StoredResource>,
  ): void {
    for (const n of req.resourceNamesSubscribe) {
      if (n === '*') {
        if (!st.wildcard) {
          st.wildcard = true;
          for (const name of table.keys()) st.dirty.add(name);
        }
      } else if (!st.names.has(n)) {
        st.names.add(n);
        st.dirty.add(n);
      }
    }
    for (const n of req.resourceNamesUnsubscribe) {
      if (n === '*') st.wildcard = false;
      else st.names.delete(n);
      // The client drops what it unsubscribes from.
      if (n !== '*') {
        st.acked.delete(n);
        st.dirty.delete(n);
      }
    }
    if (st.dirty.size > 0 && st.dirtySince < 0) st.dirtySince = performance.now();
  }

  /** Sends the dirty resources of one type if nothing is in flight. */
  private send(conn: Connection, st: TypeState): void {
    if (conn.closed || st.inflight) return;
    if (st.dirty.size === 0 && !st.initialOwed) return;
    const table = this.tables.get(st.typeUrl)!;
    const resources: Uint8Array[] = [];
    const removed: string[] = [];
    const sent = new Map<string, string | null>();
    for (const name of [...st.dirty].sort()) {
      const cur = table.get(name);
      const have = st.acked.get(name);
      if (cur && st.wants(name)) {
        if (have === cur.version) continue;
        resources.push(cur.encoded);
        sent.set(name, cur.version);
      } else if (have !== undefined) {
        removed.push(name);
        sent.set(name, null);
      }
    }
    st.dirty.clear();
    const since = st.dirtySince;
    st.dirtySince = -1;
    if (resources.length === 0 && removed.length === 0 && !st.initialOwed) return;
    st.initialOwed = false;
    const nonce = randomUUID();
    const bytes = encodeDeltaResponse(
      String(this.pushVersion),
      resources,
      st.typeUrl,
      removed,
      nonce,
      this.controlPlaneId,
    );
    const type = metricType(st.typeUrl);
    st.inflight = { nonce, sent, sentAt: Date.now() };
    st.pushes++;
    st.lastNonceSent = nonce;
    try {
      conn.stream.write(bytes);
    } catch (err) {
      this.metrics.pushes.inc({ type: `${type}_senderr` });
      conn.logger.warn({ err: describeError(err) }, 'xDS write failed');
      return;
    }
    this.metrics.pushes.inc({ type });
    this.metrics.configSize.observe({ type }, bytes.byteLength);
    if (since >= 0) this.metrics.convergence.observe((performance.now() - since) / 1000);
    conn.logger.debug(
      { typeUrl: st.typeUrl, nonce, resources: resources.length, removed: removed.length },
      'xDS push',
    );
  }

  private endStream(conn: Connection | null, call: XdsStream, code: grpc.status, details: string): void {
    if (this.ended.has(call)) return;
    this.ended.add(call);
    if (conn) conn.closed = true;
    if (code === grpc.status.OK) call.end();
    else fail(call, code, details);
    this.forget(conn);
  }

  private forget(conn: Connection | null): void {
    if (!conn || !this.connections.delete(conn.id)) return;
    conn.closed = true;
    this.metrics.connected.dec({ version: conn.version });
    conn.logger.info('xDS client disconnected');
  }

  // ---- introspection and lifecycle -----------------------------------------------------------------------

  get connectionCount(): number {
    return this.connections.size;
  }

  /** Per-connection sync state (Istio's proxy status / `/debug/syncz`). */
  syncz(): SyncStatus[] {
    const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
    return [...this.connections.values()].map((c) => ({
      connectionId: c.id,
      proxy: c.node.id,
      proxyType: c.node.type,
      podName: c.node.podName,
      podNamespace: c.node.podNamespace,
      ips: c.node.ips,
      peer: c.peer,
      identity: callerId(c.caller),
      istioVersion: c.version,
      connectedAt: new Date(c.connectedAt).toISOString(),
      types: Object.fromEntries(
        [...c.types.values()].map((st) => [
          metricType(st.typeUrl),
          {
            typeUrl: st.typeUrl,
            wildcard: st.wildcard,
            scope: st.scope,
            subscribedNames: st.names.size,
            resourcesAcked: st.acked.size,
            resourcesPending: st.dirty.size,
            inFlight: st.inflight
              ? {
                  nonce: st.inflight.nonce,
                  resources: st.inflight.sent.size,
                  sentAt: iso(st.inflight.sentAt)!,
                }
              : null,
            lastNonceSent: st.lastNonceSent,
            lastNonceAcked: st.lastNonceAcked,
            lastAckAt: iso(st.lastAckAt),
            lastNack: st.lastNack ? { ...st.lastNack, at: iso(st.lastNack.at)! } : null,
            pushes: st.pushes,
            acks: st.acks,
            nacks: st.nacks,
            state:
              st.lastNack && st.lastNack.nonce === st.lastNonceSent
                ? 'NACKED'
                : st.inflight || st.dirty.size > 0
                  ? 'STALE'
                  : 'SYNCED',
          } satisfies TypeSyncStatus,
        ]),
      ),
    }));
  }

  /** Ends every stream with UNAVAILABLE so clients reconnect (rebalancing); the server keeps serving. */
  disconnectAll(reason = 'reconnect requested'): void {
    for (const c of [...this.connections.values()])
      this.endStream(c, c.stream, grpc.status.UNAVAILABLE, reason);
  }

  /** Closes every stream with UNAVAILABLE (clients reconnect, possibly to another istiod) and stops pushing. */
  close(): void {
    this.closed = true;
    this.debouncer.cancel();
    for (const c of [...this.connections.values()]) {
      this.endStream(c, c.stream, grpc.status.UNAVAILABLE, 'istiod is shutting down');
    }
  }
}

function fail(
  call: XdsStream | grpc.ServerDuplexStream<unknown, unknown>,
  code: grpc.status,
  details: string,
): void {
  call.emit('error', { code, details });
}

function callerId(c: Caller | null): string | null {
  return c ? `${c.namespace}/${c.serviceAccount}` : null;
}

/**
 * A DeltaDiscoveryResponse from pre-encoded `Resource` messages (field numbers of
 * envoy.service.discovery.v3.DeltaDiscoveryResponse: system_version_info 1, resources 2, type_url 4, nonce 5,
 * removed_resources 6, control_plane 7). Equivalent on the wire to encoding the whole message.
 */
export function encodeDeltaResponse(
  systemVersionInfo: string,
  resources: readonly Uint8Array[],
  typeUrl: string,
  removed: readonly string[],
  nonce: string,
  controlPlaneId: string,
): Uint8Array {
  const w = new BinaryWriter();
  if (systemVersionInfo !== '') w.uint32(10).string(systemVersionInfo);
  for (const r of resources) w.uint32(18).bytes(r);
  if (typeUrl !== '') w.uint32(34).string(typeUrl);
  if (nonce !== '') w.uint32(42).string(nonce);
  for (const name of removed) w.uint32(50).string(name);
  if (controlPlaneId) w.uint32(58).bytes(ControlPlane.encode({ identifier: controlPlaneId }).finish());
  return w.finish();
}
