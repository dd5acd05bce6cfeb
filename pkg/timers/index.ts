/**
 * One coarse shared clock for idle and drain timeouts (CONVENTIONS.md habit 5, after undici's
 * lib/util/timers.js): thousands of connections each re-arming a `setTimeout` on every read costs a timer-heap
 * update per packet; instead each connection holds a `CoarseTimer` whose deadline is just a number, and one
 * interval of TICK_MS fires the expired ones. Precision is ±TICK_MS, which is fine for timeouts of seconds.
 */

/** Resolution of coarse timers; idle timeouts are seconds to minutes, so half a second is precise enough. */
export const TICK_MS = 500;

type Callback = (arg: unknown) => void;

export class CoarseTimer {
  /** Absolute deadline in ms (performance.now() clock), or -1 when not armed. */
  deadline = -1;
  readonly delayMs: number;
  private readonly callback: Callback;
  private readonly arg: unknown;
  private listed = false;

  constructor(delayMs: number, callback: Callback, arg: unknown) {
    this.delayMs = delayMs;
    this.callback = callback;
    this.arg = arg;
  }

  /** Arms (or re-arms) the timer; cheap enough to call on every read. */
  refresh(): void {
    this.deadline = clock.now + this.delayMs;
    if (!this.listed) {
      this.listed = true;
      clock.add(this);
    }
  }

  clear(): void {
    this.deadline = -1;
  }

  /** @internal called by the clock; returns false when the timer should leave the list. */
  tick(now: number): boolean {
    if (this.deadline === -1) {
      this.listed = false;
      return false;
    }
    if (now < this.deadline) return true;
    this.deadline = -1;
    this.listed = false;
    this.callback(this.arg);
    return false;
  }
}

class Clock {
  now = performance.now();
  private timers: CoarseTimer[] = [];
  private interval: NodeJS.Timeout | null = null;

  add(t: CoarseTimer): void {
    this.timers.push(t);
    if (this.interval === null) {
      this.now = performance.now();
      this.interval = setInterval(() => this.tick(), TICK_MS);
      this.interval.unref();
    }
  }

  tick(): void {
    this.now = performance.now();
    const current = this.timers;
    const kept: CoarseTimer[] = [];
    // Timers added by callbacks during this tick go to a fresh list and are checked next tick.
    this.timers = kept;
    for (const t of current) if (t.tick(this.now)) kept.push(t);
    if (this.timers.length === 0 && this.interval !== null) {
      clearInterval(this.interval);
      this.interval = null;
    }
  }

  get size(): number {
    return this.timers.length;
  }
}

const clock = new Clock();

/** A coarse timer calling `callback(arg)` once `delayMs` passes without `refresh()`. Starts armed. */
export function coarseTimeout(delayMs: number, callback: Callback, arg: unknown = undefined): CoarseTimer {
  const t = new CoarseTimer(delayMs, callback, arg);
  t.refresh();
  return t;
}

/** For tests: timers currently listed. */
export function activeCoarseTimers(): number {
  return clock.size;
}
