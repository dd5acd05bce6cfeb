/**
 * Kubelet's restart back-off for one container: the first restart is immediate, then 10 s, 20 s, 40 s … up to
 * 5 min; a container that ran longer than twice the maximum starts over (kubelet's flowcontrol.Backoff GC).
 * The base and cap are options so tests can run the same sequence in milliseconds.
 */

export interface BackoffOptions {
  /** First non-zero delay (kubelet: 10 s). */
  readonly initialMs: number;
  /** Cap (kubelet: 300 s). */
  readonly maxMs: number;
}

export const KUBELET_BACKOFF: BackoffOptions = { initialMs: 10_000, maxMs: 300_000 };

export class Backoff {
  private readonly opts: BackoffOptions;
  private restarts = 0;

  constructor(opts: BackoffOptions) {
    this.opts = opts;
  }

  /** Delay before the next restart of a container instance that ran for `ranForMs`. */
  next(ranForMs: number): number {
    if (ranForMs > 2 * this.opts.maxMs) this.restarts = 0;
    const n = this.restarts++;
    if (n === 0) return 0;
    return Math.min(this.opts.maxMs, this.opts.initialMs * 2 ** (n - 1));
  }

  /** Delay for retrying something that failed before it ran (sandbox creation, image resolution). */
  retry(): number {
    const n = this.restarts++;
    return Math.min(this.opts.maxMs, this.opts.initialMs * 2 ** Math.max(0, n - 1));
  }

  reset(): void {
    this.restarts = 0;
  }
}

/** Resolves after ms, or as soon as the signal aborts (never rejects). */
export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted || ms <= 0) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
