/**
 * The few Go behaviours the echo contract exposes, since the conformance suite was written against a Go
 * backend: canonical header names (`net/textproto.CanonicalMIMEHeaderKey`), duration strings
 * (`time.ParseDuration`) and `encoding/json`'s HTML-safe escaping.
 */

/** RFC 7230 token characters: a name with anything else is left as it is, as Go does. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** `x-forwarded-for` → `X-Forwarded-For`: upper-case the first letter and each letter after `-`. */
export function canonicalHeaderKey(name: string): string {
  if (!TOKEN.test(name)) return name;
  let out = '';
  let upper = true;
  for (const c of name) {
    out += upper ? c.toUpperCase() : c.toLowerCase();
    upper = c === '-';
  }
  return out;
}

const UNIT_NS: Readonly<Record<string, number>> = {
  ns: 1,
  us: 1e3,
  µs: 1e3,
  μs: 1e3,
  ms: 1e6,
  s: 1e9,
  m: 60e9,
  h: 3600e9,
};

/** Go's `time.ParseDuration` in milliseconds (e.g. `1s`, `1.5s`, `300ms`, `1m30s`, `-2s`); null when invalid. */
export function parseGoDuration(text: string): number | null {
  let s = text;
  let sign = 1;
  if (s.startsWith('-') || s.startsWith('+')) {
    if (s[0] === '-') sign = -1;
    s = s.slice(1);
  }
  if (s === '0') return 0;
  if (s === '') return null;
  const re = /(\d*\.?\d*)(ns|us|µs|μs|ms|s|m|h)/y;
  let ns = 0;
  let pos = 0;
  while (pos < s.length) {
    re.lastIndex = pos;
    const m = re.exec(s);
    const num = m?.[1];
    if (!m || num === undefined || num === '' || num === '.') return null;
    ns += Number(num) * (UNIT_NS[m[2] ?? ''] ?? 0);
    pos = re.lastIndex;
  }
  return (sign * ns) / 1e6;
}

/** `JSON.stringify` with Go's one-space `MarshalIndent` layout and its escaping of `<`, `>`, `&`. */
export function goJson(value: unknown): string {
  return JSON.stringify(value, null, ' ').replace(
    /[<>&\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}
