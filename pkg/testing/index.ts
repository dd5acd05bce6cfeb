/**
 * Shared helpers for tests (never imported by production code).
 */

export interface EventuallyOptions {
  /** Give up after this long; keep it bounded (tests must stop by themselves). */
  readonly timeoutMs?: number;
  readonly intervalMs?: number;
  /** Shown in the failure message. */
  readonly what?: string;
}

/**
 * Retries `check` until it returns without throwing (and, when it returns a boolean, returns true). Returns
 * the last value. On timeout, throws an error carrying the last failure so the test says what never happened.
 */
export async function eventually<T>(check: () => T | Promise<T>, opts: EventuallyOptions = {}): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const intervalMs = opts.intervalMs ?? 50;
  const deadline = performance.now() + timeoutMs;
  let last: unknown = null;
  let attempts = 0;
  for (;;) {
    attempts++;
    try {
      const value = await check();
      if (value !== false) return value;
      last = new Error('check returned false');
    } catch (err) {
      last = err;
    }
    if (performance.now() >= deadline) break;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  const reason = last instanceof Error ? last.message : String(last);
  throw new Error(
    `eventually(${opts.what ?? 'check'}) did not hold after ${timeoutMs}ms (${attempts} tries): ${reason}`,
    {
      cause: last,
    },
  );
}

/** Resolves after ms. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A short random suffix for names of namespaces, links and files a test creates (so parallel runs differ). */
export function uniqueSuffix(len = 6): string {
  return Math.random()
    .toString(36)
    .slice(2, 2 + len)
    .padEnd(len, '0');
}

/** True when the process runs as root (lab and netns tests need it). */
export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}
