/**
 * Logging: pino JSON lines with fixed field names (CONVENTIONS.md habit 7).
 *
 * Every component makes one root logger through `createLogger`; modules take a named child with
 * `moduleLogger(root, 'hbone')`. Levels change at runtime (ztunnel's `/logging?level=hbone:debug,info`) through
 * `setLogLevel`, which updates the root and every module logger. Per-connection children made from a module
 * logger take the module's level at creation: they are short-lived, and tracking them would cost a weak
 * reference per connection on the hot path.
 */
import pino, { type DestinationStream, type Logger, type LoggerOptions } from 'pino';

export type { Logger } from 'pino';

export const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type Level = (typeof LEVELS)[number];

interface Tracked {
  readonly root: Logger;
  readonly modules: Map<string, Logger>;
  /** Levels set for a module by name; survive modules created later. */
  readonly overrides: Map<string, Level>;
}

const tracked = new WeakMap<Logger, Tracked>();

export interface CreateLoggerOptions {
  /** `component` field on every line: istiod, ztunnel, waypoint, istio-cni, lab, ctl. */
  readonly component: string;
  readonly level?: Level;
  /** Extra base fields (node name, pod name). Never pass secrets. */
  readonly base?: Readonly<Record<string, string>>;
  /** For tests: where to write. Defaults to stdout (synchronous writes, so nothing is lost on exit). */
  readonly destination?: DestinationStream;
}

/** Field paths that must never reach a log line, whatever a caller passes. */
const REDACT = [
  'token',
  'authorization',
  'headers.authorization',
  'req.headers.authorization',
  'privateKey',
  'key',
  'csr',
];

export function isLevel(s: string): s is Level {
  return (LEVELS as readonly string[]).includes(s);
}

export function createLogger(opts: CreateLoggerOptions): Logger {
  const options: LoggerOptions = {
    level: opts.level ?? 'info',
    base: { component: opts.component, ...opts.base },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    redact: { paths: REDACT, censor: '[redacted]' },
  };
  const root = opts.destination
    ? pino(options, opts.destination)
    : pino(options, pino.destination({ sync: true }));
  tracked.set(root, { root, modules: new Map(), overrides: new Map() });
  return root;
}

/** A named child (`module` field) whose level can be changed by name at runtime. */
export function moduleLogger(root: Logger, name: string): Logger {
  const t = tracked.get(root);
  if (!t) return root.child({ module: name });
  let child = t.modules.get(name);
  if (!child) {
    child = root.child({ module: name });
    const override = t.overrides.get(name);
    if (override) child.level = override;
    t.modules.set(name, child);
  }
  return child;
}

/**
 * Applies a level spec like ztunnel's: `debug` (everything), or `hbone:debug,xds:trace,info`. Returns the
 * effective levels, or an error message naming the bad part (nothing is changed then).
 */
export function setLogLevel(
  root: Logger,
  spec: string,
): { ok: true; levels: Record<string, string> } | { ok: false; error: string } {
  const t = tracked.get(root);
  if (!t) return { ok: false, error: 'logger was not created by createLogger' };
  const parts = spec
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p.length > 0);
  if (parts.length === 0) return { ok: false, error: 'empty level spec' };
  let global: Level | null = null;
  const perModule: Array<[string, Level]> = [];
  for (const part of parts) {
    const idx = part.lastIndexOf(':');
    const name = idx === -1 ? null : part.slice(0, idx);
    const level = idx === -1 ? part : part.slice(idx + 1);
    if (!isLevel(level))
      return { ok: false, error: `unknown level ${JSON.stringify(level)} in ${JSON.stringify(part)}` };
    if (name === null) global = level;
    else if (name.length === 0) return { ok: false, error: `empty module name in ${JSON.stringify(part)}` };
    else perModule.push([name, level]);
  }
  if (global) {
    t.overrides.clear();
    root.level = global;
    for (const child of t.modules.values()) child.level = global;
  }
  for (const [name, level] of perModule) {
    t.overrides.set(name, level);
    const child = t.modules.get(name);
    if (child) child.level = level;
  }
  return { ok: true, levels: currentLevels(root) };
}

export function currentLevels(root: Logger): Record<string, string> {
  const out: Record<string, string> = { default: root.level };
  const t = tracked.get(root);
  if (t) for (const [name, child] of t.modules) out[name] = child.level;
  return out;
}

/**
 * Logs a given key at most once per interval; for input errors that could repeat at line rate
 * ("rejects, logs once with context, counts it in a metric").
 */
export class LogOnce {
  private readonly last = new Map<string, number>();
  private readonly intervalMs: number;
  private readonly maxKeys: number;

  constructor(intervalMs = 60_000, maxKeys = 1024) {
    this.intervalMs = intervalMs;
    this.maxKeys = maxKeys;
  }

  /** True when the caller should log now. */
  should(key: string, now = Date.now()): boolean {
    const prev = this.last.get(key);
    if (prev !== undefined && now - prev < this.intervalMs) return false;
    if (this.last.size >= this.maxKeys && prev === undefined) {
      const oldest = this.last.keys().next();
      if (!oldest.done) this.last.delete(oldest.value);
    }
    this.last.delete(key);
    this.last.set(key, now);
    return true;
  }
}
