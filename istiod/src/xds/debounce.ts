/**
 * Push debouncing (ARCHITECTURE.md, delta ADS: "pushes debounced (100 ms quiet, 10 s max)"), as istiod's
 * PILOT_DEBOUNCE_AFTER / PILOT_DEBOUNCE_MAX: a burst of changes fires once, `quietMs` after the last change, but
 * never later than `maxMs` after the first, so a steady trickle of changes cannot starve pushes.
 */

/** Quiet period after the last change before pushing (Istio's PILOT_DEBOUNCE_AFTER default). */
export const DEBOUNCE_QUIET_MS = 100;
/** Longest a change may wait while changes keep arriving (Istio's PILOT_DEBOUNCE_MAX default). */
export const DEBOUNCE_MAX_MS = 10_000;

export class Debouncer {
  private readonly quietMs: number;
  private readonly maxMs: number;
  private readonly fire: () => void;
  private first = -1;
  private timer: NodeJS.Timeout | null = null;

  constructor(quietMs: number, maxMs: number, fire: () => void) {
    this.quietMs = quietMs;
    this.maxMs = maxMs;
    this.fire = fire;
  }

  /** True while a push is scheduled. */
  get pending(): boolean {
    return this.timer !== null;
  }

  /** Records a change; (re)schedules the push. */
  trigger(): void {
    const now = performance.now();
    if (this.first < 0) this.first = now;
    if (this.timer !== null) clearTimeout(this.timer);
    const wait = Math.max(0, Math.min(this.quietMs, this.first + this.maxMs - now));
    this.timer = setTimeout(this.run, wait);
  }

  /** Fires now if something is pending. */
  flush(): void {
    if (this.timer === null) return;
    clearTimeout(this.timer);
    this.run();
  }

  cancel(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.first = -1;
  }

  private readonly run = (): void => {
    this.timer = null;
    this.first = -1;
    this.fire();
  };
}
