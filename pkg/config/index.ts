/**
 * Typed readers for configuration from environment variables (CONVENTIONS.md habit 4): each component reads
 * its config once at startup through these helpers, which report `NAME=value (reason)` on bad input, then
 * freezes the result. Unset or empty variables take the documented default.
 */
import { MeshError } from '../errors/index.ts';

export type Env = Readonly<Record<string, string | undefined>>;

function invalid(name: string, value: string, reason: string): MeshError {
  return new MeshError('MESH_ERR_CONFIG_INVALID', `${name}=${JSON.stringify(value)} (${reason})`, {
    details: { variable: name },
  });
}

function raw(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

export function str(env: Env, name: string, def: string): string {
  return raw(env, name) ?? def;
}

export function optionalStr(env: Env, name: string): string | null {
  return raw(env, name) ?? null;
}

export function int(env: Env, name: string, def: number, range: { min?: number; max?: number } = {}): number {
  const v = raw(env, name);
  if (v === undefined) return def;
  if (!/^-?\d+$/.test(v)) throw invalid(name, v, 'expected an integer');
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw invalid(name, v, 'integer out of range');
  if (range.min !== undefined && n < range.min) throw invalid(name, v, `must be >= ${range.min}`);
  if (range.max !== undefined && n > range.max) throw invalid(name, v, `must be <= ${range.max}`);
  return n;
}

const TRUE = new Set(['1', 'true', 'yes', 'on']);
const FALSE = new Set(['0', 'false', 'no', 'off']);

export function bool(env: Env, name: string, def: boolean): boolean {
  const v = raw(env, name);
  if (v === undefined) return def;
  const l = v.toLowerCase();
  if (TRUE.has(l)) return true;
  if (FALSE.has(l)) return false;
  throw invalid(name, v, 'expected true or false');
}

const DURATION_UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Go-style durations as Istio's config uses them: `500ms`, `10s`, `1m30s`, `24h`. Returns milliseconds. */
export function parseDuration(text: string): number | null {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/y;
  let total = 0;
  let pos = 0;
  if (text.length === 0) return null;
  while (pos < text.length) {
    re.lastIndex = pos;
    const m = re.exec(text);
    if (!m) return null;
    total += Number(m[1]) * (DURATION_UNITS[m[2]!] ?? 0);
    pos = re.lastIndex;
  }
  return Math.round(total);
}

export function duration(
  env: Env,
  name: string,
  defMs: number,
  range: { minMs?: number; maxMs?: number } = {},
) {
  const v = raw(env, name);
  if (v === undefined) return defMs;
  const ms = parseDuration(v);
  if (ms === null) throw invalid(name, v, 'expected a duration such as 500ms, 10s, 5m, 24h');
  if (range.minMs !== undefined && ms < range.minMs) throw invalid(name, v, `must be >= ${range.minMs}ms`);
  if (range.maxMs !== undefined && ms > range.maxMs) throw invalid(name, v, `must be <= ${range.maxMs}ms`);
  return ms;
}

export function oneOf<const T extends string>(env: Env, name: string, def: T, allowed: readonly T[]): T {
  const v = raw(env, name);
  if (v === undefined) return def;
  if (!(allowed as readonly string[]).includes(v))
    throw invalid(name, v, `expected one of ${allowed.join(', ')}`);
  return v as T;
}

/** Comma-separated list; empty items dropped. */
export function list(env: Env, name: string, def: readonly string[]): readonly string[] {
  const v = raw(env, name);
  if (v === undefined) return def;
  return v
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/** `host:port` or `:port`; returns the parts with the host defaulted. */
export function hostPort(env: Env, name: string, def: string): { host: string; port: number } {
  const v = raw(env, name) ?? def;
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(v);
  if (!m) throw invalid(name, v, 'expected host:port');
  const port = Number(m[3]);
  if (port > 65535) throw invalid(name, v, 'port must be <= 65535');
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}

/** Deep-freezes a config object so nothing changes it after startup. */
export function freeze<T>(value: T): Readonly<T> {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) freeze(v);
    Object.freeze(value);
  }
  return value;
}
