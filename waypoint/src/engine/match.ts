/**
 * Compiled string matchers (Envoy StringMatcher semantics as Istio and Gateway API use them).
 *
 * - exact / prefix / suffix compare code units; `ignore_case` folds ASCII only (Envoy uses
 *   absl::EqualsIgnoreCase / StartsWithIgnoreCase) and has no effect on regex (Envoy: "This has no effect for
 *   the safe_regex match"; Istio: "the case will be ignored only in the case of exact and prefix URI matches").
 * - regex: RE2 syntax, full match, linear time (regex.ts).
 * - path_separated_prefix: "/foo" matches "/foo" and "/foo/…", not "/foobar"; "/" (or "") matches every path.
 *   A trailing "/" in the value is ignored (Gateway API: "/foo/" and "/foo" are the same PathPrefix).
 * - present: the value exists (headers / query parameters; handled by the caller) — as a string matcher it
 *   matches anything.
 */
import type { StringMatch } from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import { compileSafeRegex, type SafeRegex } from './regex.ts';

export const M_EXACT = 0;
export const M_PREFIX = 1;
export const M_SUFFIX = 2;
export const M_REGEX = 3;
export const M_PRESENT = 4;
export const M_PATH_PREFIX = 5;
/** No kind set: matches anything (an empty StringMatch). */
export const M_ANY = 6;

function lowerAscii(c: number): number {
  return c >= 0x41 && c <= 0x5a ? c + 0x20 : c;
}

/** `s` at `offset` equals `lit` (already lowercase) ignoring ASCII case. */
function regionEqualsIgnoreCase(s: string, offset: number, lit: string): boolean {
  if (offset < 0 || offset + lit.length > s.length) return false;
  for (let i = 0; i < lit.length; i++) {
    if (lowerAscii(s.charCodeAt(offset + i)) !== lit.charCodeAt(i)) return false;
  }
  return true;
}

function toLowerAscii(s: string): string {
  let out = '';
  for (let i = 0; i < s.length; i++) out += String.fromCharCode(lowerAscii(s.charCodeAt(i)));
  return out;
}

export class StringMatcher {
  readonly kind: number;
  /** Exact/prefix/suffix/path-prefix value (lowercased when ignoreCase); '' otherwise. */
  readonly value: string;
  readonly ignoreCase: boolean;
  readonly regex: SafeRegex | null;
  /** Present matcher's expected presence. */
  readonly present: boolean;

  /** Throws RegexSyntaxError for a bad regex. */
  constructor(m: StringMatch | undefined) {
    const k = m?.kind;
    this.ignoreCase = m?.ignoreCase === true;
    this.regex = null;
    this.present = true;
    let value = '';
    if (k === undefined) {
      this.kind = M_ANY;
    } else {
      switch (k.$case) {
        case 'exact':
          this.kind = M_EXACT;
          value = k.value;
          break;
        case 'prefix':
          this.kind = M_PREFIX;
          value = k.value;
          break;
        case 'suffix':
          this.kind = M_SUFFIX;
          value = k.value;
          break;
        case 'regex':
          this.kind = M_REGEX;
          this.regex = compileSafeRegex(k.value);
          break;
        case 'present':
          this.kind = M_PRESENT;
          this.present = k.value;
          break;
        default: {
          this.kind = M_PATH_PREFIX;
          value = k.value;
          while (value.length > 1 && value.endsWith('/')) value = value.slice(0, -1);
          if (value === '/') value = '';
        }
      }
    }
    this.value = this.ignoreCase ? toLowerAscii(value) : value;
  }

  test(s: string): boolean {
    const v = this.value;
    switch (this.kind) {
      case M_EXACT:
        return this.ignoreCase ? s.length === v.length && regionEqualsIgnoreCase(s, 0, v) : s === v;
      case M_PREFIX:
        return this.ignoreCase ? regionEqualsIgnoreCase(s, 0, v) : s.startsWith(v);
      case M_SUFFIX:
        return this.ignoreCase ? regionEqualsIgnoreCase(s, s.length - v.length, v) : s.endsWith(v);
      case M_REGEX:
        return (this.regex as SafeRegex).test(s);
      case M_PATH_PREFIX: {
        if (v === '') return true;
        const ok = this.ignoreCase ? regionEqualsIgnoreCase(s, 0, v) : s.startsWith(v);
        if (!ok) return false;
        return s.length === v.length || s.charCodeAt(v.length) === 0x2f;
      }
      default:
        return true;
    }
  }

  /**
   * Length of the path prefix this matcher consumed on `path` (which it matched), for prefix rewrites:
   * prefix → its length; path-separated prefix → its length without the trailing slash; exact and regex →
   * the whole path (Envoy: prefix_rewrite replaces "the matched prefix (or path)").
   */
  matchedPrefixLength(path: string): number {
    switch (this.kind) {
      case M_PREFIX:
      case M_PATH_PREFIX:
        return this.value.length;
      case M_EXACT:
      case M_REGEX:
      case M_SUFFIX:
        return path.length;
      default:
        // No path condition: Istio emits `prefix: "/"`, so the "/" is what a prefix rewrite replaces.
        return path.charCodeAt(0) === 0x2f ? 1 : 0;
    }
  }
}
