/**
 * Step-by-step progress for long commands: `  ✔ <step>  <detail>  1.2s` when a step ends, `✘` when it failed.
 * Quiet by design: one line per step; component logs stay in <root>/logs unless --verbose.
 */

export interface Progress {
  /** Starts a step (a running step is shown only when the output is a terminal). */
  start(name: string): void;
  done(detail?: string): void;
  fail(detail?: string): void;
  /** A step that happened elsewhere (the supervisor) with its own duration. */
  report(name: string, ok: boolean, ms: number | undefined, detail?: string): void;
  info(line: string): void;
}

function seconds(ms: number): string {
  return ms < 10_000 ? `${(ms / 1000).toFixed(1)}s` : `${Math.round(ms / 1000)}s`;
}

export function progress(out: (line: string) => void, opts: { tty?: boolean } = {}): Progress {
  let current: { name: string; t0: number } | null = null;
  const tty = opts.tty ?? false;
  const line = (ok: boolean, name: string, ms: number | undefined, detail?: string): void => {
    if (tty) process.stdout.write('\r\x1b[K');
    out(
      `  ${ok ? '✔' : '✘'} ${name}${detail ? `  ${detail}` : ''}${ms === undefined ? '' : `  ${seconds(ms)}`}`,
    );
  };
  return {
    start(name) {
      current = { name, t0: performance.now() };
      if (tty) process.stdout.write(`  … ${name}`);
    },
    done(detail) {
      if (!current) return;
      line(true, current.name, performance.now() - current.t0, detail);
      current = null;
    },
    fail(detail) {
      if (!current) return;
      line(false, current.name, performance.now() - current.t0, detail);
      current = null;
    },
    report(name, ok, ms, detail) {
      line(ok, name, ms, detail);
    },
    info(text) {
      if (tty && current) process.stdout.write('\r\x1b[K');
      out(text);
      if (tty && current) process.stdout.write(`  … ${current.name}`);
    },
  };
}
