/**
 * The ZDS server (agent side) that hands ztunnel the pods to serve, wire-compatible with Istio
 * (istio/istio cni/pkg/nodeagent/ztunnelserver.go, facts only; ARCHITECTURE.md "ZDS"):
 * - unix SOCK_SEQPACKET at /var/run/ztunnel/ztunnel.sock, one protobuf message per packet;
 * - ztunnel connects and sends `ZdsHello{version: V1}`; the agent answers with a snapshot: one
 *   `WorkloadRequest.add{uid, workload_info}` per captured pod, its netns fd attached (SCM_RIGHTS), then
 *   `snapshot_sent{}`; afterwards incremental `add` (to the newest connection) and `del` (to every
 *   connection: an old ztunnel that is draining must stop serving the pod too);
 * - every request is answered with `WorkloadResponse{ack{error}}` before the next one is sent (acks have
 *   only temporal correlation, so requests on one connection are strictly serialised).
 * Anything else from ztunnel (undecodable bytes, a response that is not an ack, a message nobody asked
 * for, no ack within the deadline) is logged once, counted and ends that connection — never the agent;
 * ztunnel reconnects and gets a fresh snapshot.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { MeshError } from '../../../pkg/errors/index.ts';
import { closeFd, SeqpacketServer, type SeqpacketSocket } from '../../../pkg/netns/index.ts';
import { LogOnce } from '../../../pkg/telemetry/index.ts';
import {
  decodeSafe,
  encodeMessage,
  type WorkloadInfo,
  WorkloadRequest,
  WorkloadResponse,
  ZdsHello,
  zds,
} from '../../../pkg/xds/index.ts';
import type { AgentMetrics } from './metrics.ts';

/** ZDS messages are small; anything bigger than this from ztunnel is not ZDS. */
const MAX_ZDS_MESSAGE = 8 * 1024;
/** ztunnel says hello right after connecting (Istio reads it with a 5 s deadline). */
const HELLO_TIMEOUT_MS = 5_000;

/** A captured pod as ztunnel needs it: uid, identity and an open fd of its netns (owned by the caller). */
export interface ZdsWorkload {
  readonly uid: string;
  readonly info: WorkloadInfo;
  readonly netnsFd: number;
}

export interface ZdsServerOptions {
  readonly path: string;
  readonly logger: Logger;
  readonly metrics: AgentMetrics;
  /** The current snapshot, read when a ztunnel says hello. */
  readonly snapshot: () => Iterable<ZdsWorkload>;
  readonly ackTimeoutMs: number;
}

type Kind = 'add' | 'keep' | 'del' | 'snapshot_sent';

interface Pending {
  readonly kind: Kind;
  readonly bytes: Uint8Array;
  readonly fds: readonly number[];
  readonly uid: string;
  readonly resolve: () => void;
  readonly reject: (err: MeshError) => void;
}

function zdsError(message: string, details: Record<string, string> = {}): MeshError {
  return new MeshError('MESH_ERR_CNI_ZDS', message, { details });
}

let connectionIds = 0;

class ZdsConnection {
  readonly id = ++connectionIds;
  readonly #socket: SeqpacketSocket;
  readonly #server: ZdsServer;
  readonly #queue: Pending[] = [];
  #inflight: Pending | null = null;
  #timer: NodeJS.Timeout | null = null;
  /** hello → snapshot → ready → closed */
  #state: 'hello' | 'ready' | 'closed' = 'hello';

  constructor(socket: SeqpacketSocket, server: ZdsServer) {
    this.#socket = socket;
    this.#server = server;
    socket.on('message', (data, fds) => this.#onMessage(data, fds));
    socket.on('error', (err) => this.#fail(`socket error: ${err.message}`, 'socket'));
    socket.on('close', () => this.#fail('ztunnel disconnected', null));
    this.#timer = setTimeout(
      () => this.#fail('no hello from ztunnel in time', 'hello_timeout'),
      HELLO_TIMEOUT_MS,
    );
  }

  get ready(): boolean {
    return this.#state === 'ready';
  }

  get closed(): boolean {
    return this.#state === 'closed';
  }

  send(kind: Kind, req: WorkloadRequest, uid: string, fds: readonly number[]): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (this.#state === 'closed') {
        reject(zdsError('ztunnel connection closed', { uid }));
        return;
      }
      this.#queue.push({ kind, bytes: encodeMessage(WorkloadRequest, req), fds, uid, resolve, reject });
      this.#pump();
    });
  }

  #pump(): void {
    if (this.#inflight || this.#state === 'closed') return;
    const next = this.#queue.shift();
    if (!next) return;
    this.#inflight = next;
    try {
      // send() duplicates the fds into the message; the caller keeps its own.
      this.#socket.send(next.bytes, next.fds);
    } catch (err) {
      this.#fail(`sending ${next.kind} failed: ${(err as Error).message}`, 'send');
      return;
    }
    this.#timer = setTimeout(
      () =>
        this.#fail(
          `no ack for ${next.kind} ${next.uid} within ${this.#server.ackTimeoutMs} ms`,
          'ack_timeout',
        ),
      this.#server.ackTimeoutMs,
    );
  }

  #onMessage(data: Buffer, fds: number[]): void {
    for (const fd of fds) closeFd(fd); // ztunnel never sends fds; never leak them
    if (data.length > MAX_ZDS_MESSAGE) {
      this.#fail(`oversized message (${data.length} bytes)`, 'oversized');
      return;
    }
    if (this.#state === 'hello') {
      const hello = decodeSafe(ZdsHello, data, { what: 'ZdsHello', maxBytes: MAX_ZDS_MESSAGE });
      if (!hello.ok) {
        this.#fail(`malformed hello: ${hello.error.message}`, 'malformed_hello');
        return;
      }
      if (hello.value.version !== zds.Version.V1) {
        this.#fail(`unsupported ZDS version ${hello.value.version}`, 'version');
        return;
      }
      if (this.#timer) clearTimeout(this.#timer);
      this.#timer = null;
      this.#state = 'ready';
      this.#server.onHello(this);
      return;
    }
    const pending = this.#inflight;
    if (!pending) {
      this.#fail('unexpected message from ztunnel (nothing was asked)', 'unexpected');
      return;
    }
    const res = decodeSafe(WorkloadResponse, data, { what: 'WorkloadResponse', maxBytes: MAX_ZDS_MESSAGE });
    if (!res.ok || res.value.payload?.$case !== 'ack') {
      this.#fail(
        res.ok ? 'response is not an ack' : `malformed response: ${res.error.message}`,
        'malformed_ack',
      );
      return;
    }
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#inflight = null;
    const ackError = res.value.payload.value.error;
    if (ackError) {
      this.#server.metrics.zdsMessages.inc({ type: pending.kind, result: 'error' });
      pending.reject(
        zdsError(`ztunnel refused ${pending.kind} ${pending.uid}: ${ackError}`, { uid: pending.uid }),
      );
    } else {
      this.#server.metrics.zdsMessages.inc({ type: pending.kind, result: 'ack' });
      pending.resolve();
    }
    this.#pump();
  }

  /** Ends the connection; `reason` non-null = a protocol problem to log once and count. */
  #fail(message: string, reason: string | null): void {
    if (this.#state === 'closed') return;
    this.#state = 'closed';
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    if (reason) this.#server.protocolError(this.id, message, reason);
    const err = zdsError(`ztunnel connection ${this.id}: ${message}`);
    if (this.#inflight) {
      if (reason === 'ack_timeout')
        this.#server.metrics.zdsMessages.inc({ type: this.#inflight.kind, result: 'timeout' });
      this.#inflight.reject(err);
    }
    this.#inflight = null;
    for (const p of this.#queue.splice(0)) p.reject(err);
    this.#socket.close();
    this.#server.onClose(this);
  }

  close(): void {
    this.#fail('agent shutting down', null);
  }
}

export interface ZdsServerEvents {
  /** A ztunnel said hello and its snapshot is queued. */
  connected: [id: number];
  disconnected: [id: number];
}

export class ZdsServer extends EventEmitter<ZdsServerEvents> {
  readonly ackTimeoutMs: number;
  readonly metrics: AgentMetrics;
  readonly #o: ZdsServerOptions;
  readonly #listener: SeqpacketServer;
  /** Ready connections, oldest first (adds go to the newest, like Istio's LatestConn). */
  readonly #conns: ZdsConnection[] = [];
  readonly #all = new Set<ZdsConnection>();
  readonly #logOnce = new LogOnce(60_000);
  /** Snapshots wait for this: the agent opens it once captured pods are re-adopted (Istio's order). */
  readonly #gate: Promise<void>;
  #openGate: () => void = () => {};

  private constructor(o: ZdsServerOptions, listener: SeqpacketServer) {
    super();
    this.#gate = new Promise((resolve) => {
      this.#openGate = resolve;
    });
    this.#o = o;
    this.ackTimeoutMs = o.ackTimeoutMs;
    this.metrics = o.metrics;
    this.#listener = listener;
    listener.on('connection', (socket) => {
      const conn = new ZdsConnection(socket, this);
      this.#all.add(conn);
    });
    listener.on('error', (err) => o.logger.error({ err: err.message }, 'ZDS listener error'));
  }

  /** Binds the socket (a stale socket file from an earlier agent is replaced). */
  static listen(o: ZdsServerOptions): ZdsServer {
    const listener = SeqpacketServer.listen(o.path, { mode: 0o600 });
    return new ZdsServer(o, listener);
  }

  get connected(): number {
    return this.#conns.length;
  }

  /** Lets snapshots go out (call once the snapshot source is complete). */
  open(): void {
    this.#openGate();
  }

  /** @internal */
  onHello(conn: ZdsConnection): void {
    this.#gate.then(() => {
      if (!conn.closed) this.#sendSnapshot(conn);
    });
  }

  #sendSnapshot(conn: ZdsConnection): void {
    this.#conns.push(conn);
    this.metrics.ztunnelConnected.set(this.#conns.length);
    this.#o.logger.info(
      { conn: conn.id, connected: this.#conns.length },
      'ztunnel connected; sending snapshot',
    );
    let count = 0;
    for (const w of this.#o.snapshot()) {
      count++;
      const req: WorkloadRequest = { payload: { $case: 'add', value: { uid: w.uid, workloadInfo: w.info } } };
      conn.send('add', req, w.uid, [w.netnsFd]).catch((err: MeshError) => {
        this.#o.logger.warn({ conn: conn.id, uid: w.uid, err: err.message }, 'snapshot add not acked');
      });
    }
    conn
      .send('snapshot_sent', { payload: { $case: 'snapshotSent', value: {} } }, '', [])
      .then(() => this.#o.logger.info({ conn: conn.id, pods: count }, 'snapshot acked by ztunnel'))
      .catch((err: MeshError) =>
        this.#o.logger.warn({ conn: conn.id, err: err.message }, 'snapshot not acked'),
      );
    this.emit('connected', conn.id);
  }

  /** @internal */
  onClose(conn: ZdsConnection): void {
    this.#all.delete(conn);
    const i = this.#conns.indexOf(conn);
    if (i === -1) return;
    this.#conns.splice(i, 1);
    this.metrics.ztunnelConnected.set(this.#conns.length);
    this.#o.logger.info({ conn: conn.id, connected: this.#conns.length }, 'ztunnel disconnected');
    this.emit('disconnected', conn.id);
  }

  /** @internal A protocol violation by ztunnel: logged once per kind and minute, counted. */
  protocolError(conn: number, message: string, reason: string): void {
    this.metrics.rejected.inc({ source: 'ztunnel', reason });
    if (this.#logOnce.should(reason)) {
      this.#o.logger.warn(
        { code: 'MESH_ERR_CNI_ZDS', conn, reason },
        `closing ztunnel connection: ${message}`,
      );
    }
  }

  /** Resolves once a ztunnel is connected, or false after `ms`. */
  waitForConnection(ms: number): Promise<boolean> {
    if (this.#conns.length > 0) return Promise.resolve(true);
    if (ms <= 0) return Promise.resolve(false);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.off('connected', onConn);
        resolve(false);
      }, ms);
      const onConn = (): void => {
        clearTimeout(timer);
        resolve(true);
      };
      this.once('connected', onConn);
    });
  }

  /**
   * Sends `add` to the newest ztunnel and waits for its ack. Rejects (MESH_ERR_CNI_ZDS, retryable) when no
   * ztunnel is connected, on an ack error or a timeout.
   */
  async podAdded(w: ZdsWorkload): Promise<void> {
    const conn = this.#conns[this.#conns.length - 1];
    if (!conn) throw zdsError('no ztunnel connected', { uid: w.uid });
    const req: WorkloadRequest = { payload: { $case: 'add', value: { uid: w.uid, workloadInfo: w.info } } };
    await conn.send('add', req, w.uid, [w.netnsFd]);
  }

  /** Sends `del` to every connected ztunnel; resolves when all answered (errors are joined). */
  async podDeleted(uid: string): Promise<void> {
    const req: WorkloadRequest = { payload: { $case: 'del', value: { uid } } };
    const results = await Promise.allSettled(this.#conns.map((c) => c.send('del', req, uid, [])));
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed.length > 0) {
      throw zdsError(`del ${uid}: ${failed.map((f) => (f.reason as Error).message).join('; ')}`, { uid });
    }
  }

  close(): void {
    this.#listener.close();
    for (const c of [...this.#all]) c.close();
  }
}
