/**
 * Small parsers shared by the L7 translations: durations (Istio's Go-style `1.5s`/`3m`/`30ms`, Gateway API's
 * GEP-2257 `1h30m`/`500ms`), regular expressions (RE2 as Envoy runs them, checked here so a pattern no waypoint can
 * run is refused at compile time instead of at request time), and Istio StringMatch → wire StringMatch.
 */
import type { StringMatch } from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import type { IstioStringMatch } from './types.ts';

/** Longest regex we accept: patterns are compiled per request path on the waypoint; keep them small. */
export const MAX_REGEX_LENGTH = 1024;

const UNIT_MS: Readonly<Record<string, number>> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};
const DURATION_PART = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/y;

/**
 * A duration in whole milliseconds (rounded up, so `100us` is 1 ms, never 0 = "not set"), or null when the text
 * is not a duration. Accepts Go's syntax (what Istio's webhook accepts) which includes Gateway API's.
 */
export function parseDurationMs(text: string | undefined | null): number | null {
  if (text === undefined || text === null) return null;
  const s = text.trim();
  if (s === '' || s === '0') return s === '0' ? 0 : null;
  let total = 0;
  let pos = 0;
  DURATION_PART.lastIndex = 0;
  while (pos < s.length) {
    DURATION_PART.lastIndex = pos;
    const m = DURATION_PART.exec(s);
    if (!m) return null;
    total += Number(m[1]) * (UNIT_MS[m[2]!] ?? Number.NaN);
    pos = DURATION_PART.lastIndex;
  }
  if (!Number.isFinite(total) || total < 0 || total > 0xffff_ffff) return null;
  return total === 0 ? 0 : Math.max(1, Math.ceil(total - 1e-9));
}

/**
 * Null when `pattern` is a regex the waypoint can run (RE2 syntax, full match), else why not. RE2 has no
 * backreferences or lookaround (they need backtracking); anything JavaScript cannot compile after mapping RE2's
 * few extra spellings is refused too, so both sides agree on what a pattern means.
 */
export function regexProblem(pattern: string): string | null {
  if (pattern.length > MAX_REGEX_LENGTH) return `regex longer than ${MAX_REGEX_LENGTH} characters`;
  if (/\\[1-9]/.test(pattern.replaceAll('\\\\', '')))
    return `regex "${pattern}" uses a backreference (not RE2)`;
  if (/\(\?<?[=!]/.test(pattern)) return `regex "${pattern}" uses lookaround (not RE2)`;
  let js = pattern.replace(/^\(\?[imsU]+\)/, '');
  js = js.replaceAll('\\A', '^').replaceAll('\\z', '$');
  try {
    new RegExp(js, 'u');
  } catch (err) {
    return `invalid regex "${pattern}": ${err instanceof Error ? err.message : String(err)}`;
  }
  return null;
}

export type Converted<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly error: string };

export function ok<T>(value: T): Converted<T> {
  return { ok: true, value };
}

export function fail<T>(error: string): Converted<T> {
  return { ok: false, error };
}

export function exact(value: string): StringMatch {
  return { kind: { $case: 'exact', value }, ignoreCase: false };
}

export function regex(value: string): Converted<StringMatch> {
  const problem = regexProblem(value);
  return problem ? fail(problem) : ok({ kind: { $case: 'regex', value }, ignoreCase: false });
}

/**
 * Istio StringMatch (exact | prefix | regex; `{}` = any value, present) → wire StringMatch. A match with more than
 * one kind set is conflicting and refused.
 */
export function istioStringMatch(
  m: IstioStringMatch | undefined,
  ignoreCase = false,
): Converted<StringMatch> {
  if (!m) return ok({ kind: { $case: 'present', value: true }, ignoreCase: false });
  const set = (['exact', 'prefix', 'regex'] as const).filter((k) => m[k] !== undefined);
  if (set.length > 1) return fail(`string match sets ${set.join(' and ')}; only one is allowed`);
  if (m.exact !== undefined) return ok({ kind: { $case: 'exact', value: m.exact }, ignoreCase });
  if (m.prefix !== undefined) return ok({ kind: { $case: 'prefix', value: m.prefix }, ignoreCase });
  if (m.regex !== undefined) {
    const r = regex(m.regex);
    return r.ok ? ok({ ...r.value, ignoreCase }) : r;
  }
  return ok({ kind: { $case: 'present', value: true }, ignoreCase: false });
}

/** Istio's `host` semantics: `*` matches any, `*.x` matches names ending in `.x`, else exact (case-insensitive). */
export function hostMatches(pattern: string, hostname: string): boolean {
  const p = pattern.toLowerCase();
  const h = hostname.toLowerCase();
  if (p === '*') return true;
  if (p.startsWith('*')) return h.endsWith(p.slice(1));
  return p === h;
}

/** Compares by creation time (oldest first), then namespace, then name: Istio's conflict order for configs. */
export function byAge(
  a: { created: number; namespace: string; name: string },
  b: { created: number; namespace: string; name: string },
): number {
  if (a.created !== b.created) return a.created - b.created;
  if (a.namespace !== b.namespace) return a.namespace < b.namespace ? -1 : 1;
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}
