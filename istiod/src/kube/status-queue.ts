/**
 * The work queue behind istiod's status writers (kube/status.ts, l7/status.ts): updates are coalesced per
 * object (a newer update replaces a queued one), written by one worker in arrival order, and retried with
 * exponential back-off (200 ms, 400 ms, …) up to 5 attempts, then logged once as MESH_ERR_ISTIOD_STATUS_WRITE.
 * A newer update that arrives while an older one is failing supersedes it.
 */
import type { Logger } from 'pino';
import { describeError } from '../../../pkg/errors/index.ts';

const MAX_ATTEMPTS = 5;
const RETRY_INITIAL_MS = 200;

export class StatusQueue<U> {
  private readonly pending = new Map<string, { update: U; attempts: number }>();
  private readonly write: (update: U) => Promise<void>;
  private readonly logger: Logger;
  private running = false;
  private stopped = false;
  private timer: NodeJS.Timeout | null = null;

  constructor(write: (update: U) => Promise<void>, logger: Logger) {
    this.write = write;
    this.logger = logger;
  }

  /** Queues `update` for the object `key` (replacing what is queued for it). */
  enqueue(key: string, update: U): void {
    if (this.stopped) return;
    this.pending.set(key, { update, attempts: 0 });
    this.kick(0);
  }

  /** Resolves when nothing is queued (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.pending.size > 0 || this.running) await new Promise((r) => setTimeout(r, 10));
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.pending.clear();
  }

  private kick(delayMs: number): void {
    if (this.running || this.timer || this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.drain();
    }, delayMs);
  }

  private async drain(): Promise<void> {
    this.running = true;
    let retryIn = 0;
    try {
      while (this.pending.size > 0 && !this.stopped) {
        const [key, item] = this.pending.entries().next().value as [string, { update: U; attempts: number }];
        this.pending.delete(key);
        try {
          await this.write(item.update);
        } catch (err) {
          item.attempts++;
          if (item.attempts >= MAX_ATTEMPTS) {
            this.logger.warn(
              { code: 'MESH_ERR_ISTIOD_STATUS_WRITE', object: key, err: describeError(err) },
              'giving up writing status',
            );
          } else if (!this.pending.has(key)) {
            // A newer update supersedes this one; otherwise retry later.
            this.pending.set(key, item);
            retryIn = RETRY_INITIAL_MS * 2 ** (item.attempts - 1);
            this.logger.debug(
              { object: key, err: describeError(err), retryInMs: retryIn },
              'status write failed',
            );
            break;
          }
        }
      }
    } finally {
      this.running = false;
    }
    if (this.pending.size > 0) this.kick(retryIn);
  }
}
