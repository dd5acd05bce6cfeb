/**
 * A rate-limited work queue like client-go's: keys are deduplicated while waiting, one key is never processed
 * twice at the same time, failures are retried with exponential backoff, and `addAfter` schedules a re-check.
 * Each controller runs one worker, so its reconciles are serial (no expectations bookkeeping needed: the
 * in-process store is always current).
 */
import type { Logger } from 'pino';
import { describeError } from '../../pkg/errors/index.ts';

/** First retry delay after a failed reconcile. */
const BASE_BACKOFF_MS = 50;
/** Retries back off up to this (client-go's default controller limiter caps at 1000 s; a lab wants less). */
const MAX_BACKOFF_MS = 10_000;

/** Thrown by a reconcile that is fine but wants to look again later (not counted as a failure). */
export class RequeueAfter extends Error {
  readonly ms: number;

  constructor(ms: number, why: string) {
    super(why);
    this.ms = ms;
  }
}

export class WorkQueue {
  private readonly name: string;
  private readonly handler: (key: string) => Promise<void>;
  private readonly logger: Logger;
  private readonly queue: string[] = [];
  private readonly queued = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private running = false;
  private stopped = false;
  private idleWaiters: Array<() => void> = [];
  private active: Promise<void> | null = null;

  constructor(name: string, handler: (key: string) => Promise<void>, logger: Logger) {
    this.name = name;
    this.handler = handler;
    this.logger = logger;
  }

  add(key: string): void {
    if (this.stopped || this.queued.has(key)) return;
    this.queued.add(key);
    this.queue.push(key);
    this.kick();
  }

  /** Re-checks `key` after `ms` (deduplicated against an earlier pending timer for the same key). */
  addAfter(key: string, ms: number): void {
    if (this.stopped) return;
    const existing = this.timers.get(key);
    if (existing) clearTimeout(existing);
    const t = setTimeout(
      () => {
        this.timers.delete(key);
        this.add(key);
      },
      Math.max(0, ms),
    );
    t.unref();
    this.timers.set(key, t);
  }

  private kick(): void {
    if (this.running || this.stopped) return;
    this.running = true;
    this.active = this.drain();
  }

  private async drain(): Promise<void> {
    try {
      while (!this.stopped && this.queue.length > 0) {
        const key = this.queue.shift() as string;
        this.queued.delete(key);
        try {
          await this.handler(key);
          this.failures.delete(key);
        } catch (err) {
          if (err instanceof RequeueAfter) {
            this.addAfter(key, err.ms);
            continue;
          }
          const n = (this.failures.get(key) ?? 0) + 1;
          this.failures.set(key, n);
          const delay = Math.min(MAX_BACKOFF_MS, BASE_BACKOFF_MS * 2 ** (n - 1));
          this.logger.debug(
            {
              code: 'MESH_ERR_LAB_CONTROLLER_SYNC',
              controller: this.name,
              key,
              attempt: n,
              retryMs: delay,
              err: describeError(err),
            },
            'reconcile failed; retrying',
          );
          if (n === 5)
            this.logger.warn(
              { code: 'MESH_ERR_LAB_CONTROLLER_SYNC', controller: this.name, key, err: describeError(err) },
              'reconcile keeps failing',
            );
          this.addAfter(key, delay);
        }
      }
    } finally {
      this.running = false;
      if (this.queue.length === 0) {
        const w = this.idleWaiters;
        this.idleWaiters = [];
        for (const f of w) f();
      } else this.kick();
    }
  }

  /** True while keys are queued or a reconcile runs. */
  busy(): boolean {
    return this.running || this.queue.length > 0;
  }

  /** Resolves when nothing is queued or running (timers may still be pending). */
  idle(): Promise<void> {
    if (!this.running && this.queue.length === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    this.queue.length = 0;
    this.queued.clear();
    if (this.active) await this.active;
  }
}
