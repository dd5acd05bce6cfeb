/**
 * ZDS client: how ztunnel learns which pods on its node are captured, and gets each pod's network namespace.
 *
 * The CNI node agent is the server (unix SOCK_SEQPACKET, one protobuf per packet, netns fds as SCM_RIGHTS).
 * ztunnel says `ZdsHello{V1}`; the agent sends a snapshot (`add` with an fd, or `keep` for a pod ztunnel already
 * has), then `snapshot_sent`, then incremental `add`/`del`. Every request gets `WorkloadResponse{ack{error}}`
 * once it has been handled (for `add`: once the pod's listeners are open). On disconnect ztunnel keeps its pods
 * running and reconnects; the next snapshot reconciles.
 */
import type { Logger } from 'pino';
import { describeError } from '../../../pkg/errors/index.ts';
import { closeFd, SeqpacketSocket } from '../../../pkg/netns/index.ts';
import {
  Version,
  type WorkloadInfo,
  WorkloadRequest,
  WorkloadResponse,
  ZdsHello,
} from '../../../pkg/xds/gen/istio/workload/zds/zds.ts';
import { decodeSafe } from '../../../pkg/xds/index.ts';

/** Reconnect back-off: first retry fast (agent restarting), capped so a missing agent is not hammered. */
const RECONNECT_MIN_MS = 100;
const RECONNECT_MAX_MS = 5_000;

export interface PodHandler {
  /** Start (or keep) the pod's proxy in that netns; takes ownership of `netnsFd`. Throw to NACK. */
  add(uid: string, info: WorkloadInfo, netnsFd: number): Promise<void>;
  /** Stop the pod's proxy (drain). */
  del(uid: string): Promise<void>;
  /** After a snapshot: every uid not in `present` is gone. */
  reconcile(present: ReadonlySet<string>): Promise<void>;
  /** uids currently running (a `keep` for an unknown uid is an error). */
  has(uid: string): boolean;
}

export interface ZdsClientOptions {
  readonly path: string;
  readonly handler: PodHandler;
  readonly logger: Logger;
  /** Counts protocol problems (malformed messages, unexpected fds) for metrics. */
  readonly onProtocolError?: (reason: string) => void;
}

export class ZdsClient {
  private readonly opts: ZdsClientOptions;
  private sock: SeqpacketSocket | null = null;
  private stopped = false;
  private delay = RECONNECT_MIN_MS;
  private timer: NodeJS.Timeout | null = null;
  private snapshot: Set<string> | null = null;
  /** Requests are handled strictly in order, as the agent expects. */
  private chain: Promise<void> = Promise.resolve();
  private snapshotDone = false;
  private resolveReady: (() => void) | null = null;
  readonly ready: Promise<void>;

  constructor(opts: ZdsClientOptions) {
    this.opts = opts;
    this.ready = new Promise((r) => {
      this.resolveReady = r;
    });
  }

  /** True once a first snapshot has been applied (ztunnel readiness waits for it). */
  get synced(): boolean {
    return this.snapshotDone;
  }

  get connected(): boolean {
    return this.sock !== null;
  }

  start(): void {
    this.stopped = false;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.sock?.close();
    this.sock = null;
  }

  private connect(): void {
    if (this.stopped) return;
    let sock: SeqpacketSocket;
    try {
      sock = SeqpacketSocket.connect(this.opts.path);
    } catch (err) {
      this.opts.logger.debug(
        { path: this.opts.path, err: describeError(err) },
        'ZDS connect failed; retrying',
      );
      this.retry();
      return;
    }
    this.sock = sock;
    this.snapshot = new Set();
    this.chain = Promise.resolve();
    sock.on('message', (data: Buffer, fds: number[]) => this.onMessage(sock, data, fds));
    sock.on('error', (err: unknown) =>
      this.opts.logger.warn({ err: describeError(err) }, 'ZDS connection error'),
    );
    sock.on('close', () => {
      if (this.sock === sock) this.sock = null;
      if (!this.stopped) {
        this.opts.logger.info('ZDS connection closed; reconnecting');
        this.retry();
      }
    });
    sock.send(Buffer.from(ZdsHello.encode({ version: Version.V1 }).finish()));
    this.delay = RECONNECT_MIN_MS;
    this.opts.logger.info({ path: this.opts.path }, 'connected to the CNI node agent (ZDS)');
  }

  private retry(): void {
    if (this.stopped || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.connect();
    }, this.delay);
    this.delay = Math.min(RECONNECT_MAX_MS, this.delay * 2);
  }

  private protocolError(sock: SeqpacketSocket, reason: string, fds: number[]): void {
    for (const fd of fds) closeFd(fd);
    this.opts.onProtocolError?.(reason);
    this.opts.logger.error({ reason }, 'ZDS protocol error; closing the connection');
    sock.close();
  }

  private onMessage(sock: SeqpacketSocket, data: Buffer, fds: number[]): void {
    const decoded = decodeSafe(WorkloadRequest, data);
    if (!decoded.ok) {
      this.protocolError(sock, `undecodable WorkloadRequest: ${decoded.error.message}`, fds);
      return;
    }
    const payload = decoded.value.payload;
    if (!payload) {
      this.protocolError(sock, 'WorkloadRequest without payload', fds);
      return;
    }
    if (payload.$case !== 'add' && fds.length > 0) {
      this.protocolError(sock, `${payload.$case} carried ${fds.length} fd(s)`, fds);
      return;
    }
    if (payload.$case === 'add' && fds.length !== 1) {
      this.protocolError(sock, `add for ${payload.value.uid} carried ${fds.length} fds (want 1)`, fds);
      return;
    }
    this.chain = this.chain.then(async () => {
      let error = '';
      try {
        switch (payload.$case) {
          case 'add': {
            const { uid, workloadInfo } = payload.value;
            if (!uid) throw new Error('add without uid');
            this.snapshot?.add(uid);
            await this.opts.handler.add(
              uid,
              workloadInfo ?? { name: '', namespace: '', serviceAccount: '' },
              fds[0]!,
            );
            break;
          }
          case 'keep': {
            if (!this.opts.handler.has(payload.value.uid))
              throw new Error(`keep for unknown workload ${payload.value.uid}`);
            this.snapshot?.add(payload.value.uid);
            break;
          }
          case 'del':
            await this.opts.handler.del(payload.value.uid);
            break;
          case 'snapshotSent': {
            const present = this.snapshot ?? new Set<string>();
            this.snapshot = null;
            await this.opts.handler.reconcile(present);
            if (!this.snapshotDone) {
              this.snapshotDone = true;
              this.resolveReady?.();
            }
            break;
          }
        }
      } catch (err) {
        error = describeError(err);
        this.opts.logger.warn({ request: payload.$case, err: error }, 'ZDS request failed');
      }
      if (this.sock === sock) {
        sock.send(
          Buffer.from(WorkloadResponse.encode({ payload: { $case: 'ack', value: { error } } }).finish()),
        );
      }
    });
  }
}
