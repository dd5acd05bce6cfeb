/**
 * `JwtAuthenticator`: the RequestAuthentication rules of one destination, compiled once, applied per request.
 *
 * Per token, checks run in Envoy's order so the rejection text matches: parse (format, header, payload field
 * types) → issuer → nbf/exp with clock skew → audience → key selection (kid/alg/kty) → signature. See index.ts
 * for how several rules and several tokens combine.
 */
import { compactVerify } from 'jose';
import type { Logger } from '../telemetry/index.ts';
import type { JwtRule } from '../xds/gen/ambient/waypoint/v1/waypoint.ts';
import type { JwksKey, JwtConfigError, JwtHeaders, JwtInvalid, JwtNone, JwtOk, JwtResult } from './index.ts';
import { checkJwksUri, JwksCache, parseJwks } from './jwks.ts';
import {
  JWKS_FETCH_TIMEOUT_MS,
  JWT_CLOCK_SKEW_SEC,
  JWT_MAX_TOKEN_BYTES,
  JWT_MAX_TOKENS,
  JWT_STATUS,
  type JwtStatusMessage,
} from './status.ts';

/** The algorithms we verify, and the key each needs. `none` and HMAC are absent on purpose. */
const ALG_KEY: Readonly<Record<string, { readonly kty: JwksKey['kty']; readonly crv: string | null }>> = {
  RS256: { kty: 'RSA', crv: null },
  RS384: { kty: 'RSA', crv: null },
  RS512: { kty: 'RSA', crv: null },
  PS256: { kty: 'RSA', crv: null },
  PS384: { kty: 'RSA', crv: null },
  PS512: { kty: 'RSA', crv: null },
  ES256: { kty: 'EC', crv: 'P-256' },
  ES384: { kty: 'EC', crv: 'P-384' },
  EdDSA: { kty: 'OKP', crv: 'Ed25519' },
};

/** Envoy's default locations when a rule names none (RFC 6750 §2.1 and §2.3). */
const DEFAULT_HEADER = 'authorization';
const DEFAULT_PREFIX = 'Bearer ';
const DEFAULT_PARAM = 'access_token';
/** Claims Istio normalizes from a space-separated string into a list before authorization sees them. */
const SPACE_DELIMITED_CLAIMS = ['scope', 'permission'];
/** RFC 7230 token characters: a header name we may set. */
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const BASE64URL = /^[A-Za-z0-9_-]*$/;
/** Characters a compact JWT is made of; Envoy starts the token at the first of them after the prefix. */
const JWT_CHAR = /[A-Za-z0-9_.-]/;
/** Values we refuse to copy into a header (Node would throw; a claim must not inject headers). */
const UNSAFE_HEADER_VALUE = /[\r\n\0]/;

const HEADER = 0;
const PARAM = 1;
const COOKIE = 2;

interface Location {
  readonly kind: typeof HEADER | typeof PARAM | typeof COOKIE;
  /** Lower-case for headers. */
  readonly name: string;
  /** Header value prefix ("" = the whole value). */
  readonly prefix: string;
  /** Rules that list this location, in rule order. */
  readonly rules: RuleState[];
}

interface RuleState {
  readonly source: string;
  readonly issuer: string;
  /** Sanitized configured audiences; empty = any. */
  readonly audiences: ReadonlySet<string>;
  readonly forward: boolean;
  readonly payloadHeader: string | null;
  readonly claimHeaders: ReadonlyArray<{ readonly header: string; readonly claim: readonly string[] }>;
  /** From the inline `jwks`; null when keys come from `jwksUri` (or from nowhere). */
  readonly inlineKeys: readonly JwksKey[] | null;
  readonly jwksUri: string | null;
}

interface Found {
  readonly token: string;
  readonly loc: Location;
}

interface Decoded {
  readonly token: string;
  readonly alg: string;
  readonly kid: string | null;
  readonly payload: Readonly<Record<string, unknown>>;
  readonly payloadSegment: string;
  readonly iss: string;
  readonly sub: string;
  readonly nbf: number | null;
  readonly exp: number | null;
  readonly aud: readonly string[];
}

export interface JwtAuthenticatorOptions {
  /** Share one cache between the authenticators of a proxy; without it the authenticator owns a private one. */
  readonly jwksCache?: JwksCache;
  /** Default `JWT_CLOCK_SKEW_SEC`. */
  readonly clockSkewSec?: number;
  /** Default `JWT_MAX_TOKEN_BYTES`. */
  readonly maxTokenBytes?: number;
  /** Default `JWT_MAX_TOKENS`. */
  readonly maxTokens?: number;
  /** Clock in ms, for tests. */
  readonly now?: () => number;
  readonly logger?: Logger;
}

function isBase64url(s: string): boolean {
  return s.length % 4 !== 1 && BASE64URL.test(s);
}

function decodeJsonObject(segment: string): Record<string, unknown> | 'base64' | 'json' {
  if (!isBase64url(segment)) return 'base64';
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
  } catch {
    return 'json';
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return 'json';
  return v as Record<string, unknown>;
}

/** Envoy's numeric date check: a number ≥ 0 below 2^64 (fractions truncated); null when absent. */
function numericDate(
  v: unknown,
  notInteger: JwtStatusMessage,
  outOfRange: JwtStatusMessage,
): number | null | JwtStatusMessage {
  if (v === undefined) return null;
  if (typeof v !== 'number' || !Number.isFinite(v)) return notInteger;
  if (v < 0 || v >= 2 ** 64) return outOfRange;
  return Math.floor(v);
}

/** Parses without verifying; returns the Envoy status text of the first problem. */
function decode(token: string, maxBytes: number): Decoded | JwtStatusMessage {
  if (token.length > maxBytes) return JWT_STATUS.verificationFail;
  const a = token.indexOf('.');
  const b = a === -1 ? -1 : token.indexOf('.', a + 1);
  if (b === -1 || token.indexOf('.', b + 1) !== -1) return JWT_STATUS.badFormat;
  const header = decodeJsonObject(token.slice(0, a));
  if (header === 'base64') return JWT_STATUS.headerBadBase64;
  if (header === 'json') return JWT_STATUS.headerBadJson;
  if (typeof header.alg !== 'string') return JWT_STATUS.headerBadAlg;
  if (!Object.hasOwn(ALG_KEY, header.alg)) return JWT_STATUS.headerNotImplementedAlg;
  if (header.kid !== undefined && typeof header.kid !== 'string') return JWT_STATUS.headerBadKid;
  const payloadSegment = token.slice(a + 1, b);
  const payload = decodeJsonObject(payloadSegment);
  if (payload === 'base64') return JWT_STATUS.payloadBadBase64;
  if (payload === 'json') return JWT_STATUS.payloadBadJson;
  if (payload.iss !== undefined && typeof payload.iss !== 'string') return JWT_STATUS.issNotString;
  if (payload.sub !== undefined && typeof payload.sub !== 'string') return JWT_STATUS.subNotString;
  const iat = numericDate(payload.iat, JWT_STATUS.iatNotInteger, JWT_STATUS.iatOutOfRange);
  if (typeof iat === 'string') return iat;
  const nbf = numericDate(payload.nbf, JWT_STATUS.nbfNotInteger, JWT_STATUS.nbfOutOfRange);
  if (typeof nbf === 'string') return nbf;
  const exp = numericDate(payload.exp, JWT_STATUS.expNotInteger, JWT_STATUS.expOutOfRange);
  if (typeof exp === 'string') return exp;
  let aud: string[];
  if (payload.aud === undefined) aud = [];
  else if (typeof payload.aud === 'string') aud = [payload.aud];
  else if (Array.isArray(payload.aud) && payload.aud.every((x) => typeof x === 'string'))
    aud = [...payload.aud];
  else return JWT_STATUS.audNotString;
  if (!isBase64url(token.slice(b + 1))) return JWT_STATUS.signatureBadBase64;
  return {
    token,
    alg: header.alg,
    kid: (header.kid as string | undefined) ?? null,
    payload,
    payloadSegment,
    iss: (payload.iss as string | undefined) ?? '',
    sub: (payload.sub as string | undefined) ?? '',
    nbf,
    exp,
    aud,
  };
}

/** jwt_verify_lib's CheckAudience: `http(s)://` and then a trailing `/` do not count. */
function sanitizeAudience(aud: string): string {
  let s = aud;
  if (s.startsWith('https://')) s = s.slice(8);
  else if (s.startsWith('http://')) s = s.slice(7);
  else return aud;
  return s.endsWith('/') ? s.slice(0, -1) : s;
}

/** Envoy's extractJWT: after the prefix, start at the first JWT character; if there is none, the whole value. */
function fromHeaderValue(value: string, prefix: string): string | null {
  if (prefix === '') return value;
  const pos = value.indexOf(prefix);
  if (pos === -1) return null;
  for (let i = pos + prefix.length; i < value.length; i++) {
    if (JWT_CHAR.test(value[i]!)) return value.slice(i);
  }
  return value;
}

function decodeComponent(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** First value of each parameter, percent-decoded (`+` is not a space, as in Envoy). */
function parseQuery(query: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of query.split('&')) {
    if (!part) continue;
    const eq = part.indexOf('=');
    const name = decodeComponent(eq === -1 ? part : part.slice(0, eq));
    if (!out.has(name)) out.set(name, eq === -1 ? '' : decodeComponent(part.slice(eq + 1)));
  }
  return out;
}

/** First value of each cookie across all `cookie` headers, surrounding quotes removed. */
function parseCookies(header: string | readonly string[] | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (header === undefined) return out;
  for (const line of typeof header === 'string' ? [header] : header) {
    for (const pair of line.split(';')) {
      const eq = pair.indexOf('=');
      if (eq === -1) continue;
      const name = pair.slice(0, eq).trim();
      let value = pair.slice(eq + 1).trim();
      if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
      if (name && !out.has(name)) out.set(name, value);
    }
  }
  return out;
}

/** Envoy's claim-to-header formatting: strings as is, integers without a fraction, other numbers with six
 * decimals (C++ `std::to_string`), booleans as words; anything else is not copied. */
function claimHeaderValue(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number' && Number.isFinite(v)) {
    return Number.isInteger(v) && v >= 0 ? String(v) : v.toFixed(6);
  }
  return null;
}

function claimAt(payload: Readonly<Record<string, unknown>>, path: readonly string[]): unknown {
  let cur: unknown = payload;
  for (const p of path) {
    if (cur === null || typeof cur !== 'object' || Array.isArray(cur) || !Object.hasOwn(cur, p))
      return undefined;
    cur = (cur as Record<string, unknown>)[p];
  }
  return cur;
}

function normalizeClaims(payload: Readonly<Record<string, unknown>>): Readonly<Record<string, unknown>> {
  let out: Record<string, unknown> | null = null;
  for (const name of SPACE_DELIMITED_CLAIMS) {
    const v = payload[name];
    if (typeof v === 'string') {
      out ??= { ...payload };
      out[name] = v.split(' ').filter((s) => s.length > 0);
    }
  }
  return out ?? payload;
}

function invalid(message: JwtStatusMessage, rule: string | null): JwtInvalid {
  return {
    kind: 'invalid',
    status: message === JWT_STATUS.audienceNotAllowed ? 403 : 401,
    message,
    rule,
  };
}

export class JwtAuthenticator {
  /** Problems found in the rules; the authenticator still works, failing closed where a rule is unusable. */
  readonly errors: readonly JwtConfigError[];
  private readonly rules: readonly RuleState[];
  private readonly locations: readonly Location[];
  private readonly none: JwtNone;
  private readonly cache: JwksCache;
  private readonly ownsCache: boolean;
  private readonly acquired: string[] = [];
  private readonly skewSec: number;
  private readonly maxTokenBytes: number;
  private readonly maxTokens: number;
  private readonly now: () => number;
  private closed = false;

  constructor(rules: readonly JwtRule[], opts: JwtAuthenticatorOptions = {}) {
    this.ownsCache = opts.jwksCache === undefined;
    this.cache = opts.jwksCache ?? new JwksCache(opts.logger ? { logger: opts.logger } : {});
    this.skewSec = opts.clockSkewSec ?? JWT_CLOCK_SKEW_SEC;
    this.maxTokenBytes = opts.maxTokenBytes ?? JWT_MAX_TOKEN_BYTES;
    this.maxTokens = opts.maxTokens ?? JWT_MAX_TOKENS;
    this.now = opts.now ?? Date.now;
    const errors: JwtConfigError[] = [];
    const states: RuleState[] = [];
    const locations = new Map<string, Location>();
    const sanitize = new Set<string>();
    rules.forEach((r, index) => {
      const source = r.source || `jwtRules[${index}]`;
      const err = (message: string) => errors.push({ source, issuer: r.issuer, message });
      if (!r.issuer) err('issuer is required; tokens at this rule’s locations are rejected');

      let inlineKeys: readonly JwksKey[] | null = null;
      let jwksUri: string | null = null;
      if (r.jwks) {
        const parsed = parseJwks(r.jwks);
        for (const e of parsed.errors) err(`jwks: ${e}`);
        inlineKeys = parsed.keys;
      } else if (r.jwksUri) {
        const bad = checkJwksUri(r.jwksUri);
        if (bad) err(bad);
        else {
          jwksUri = r.jwksUri;
          this.cache.acquire(jwksUri, r.jwksFetchTimeoutMs || JWKS_FETCH_TIMEOUT_MS);
          this.acquired.push(jwksUri);
        }
      } else {
        err('neither jwks nor jwksUri is set; tokens of this issuer are rejected');
      }

      const headerName = (name: string, what: string): string | null => {
        if (HEADER_NAME.test(name)) return name.toLowerCase();
        err(`${what}: invalid header name ${JSON.stringify(name)}`);
        return null;
      };
      const payloadHeader = r.outputPayloadToHeader
        ? headerName(r.outputPayloadToHeader, 'outputPayloadToHeader')
        : null;
      const claimHeaders: Array<{ header: string; claim: readonly string[] }> = [];
      for (const c of r.outputClaimToHeaders) {
        const header = headerName(c.header, 'outputClaimToHeaders');
        if (header === null) continue;
        if (!c.claim) {
          err(`outputClaimToHeaders: header ${header} names no claim`);
          continue;
        }
        claimHeaders.push({ header, claim: c.claim.split('.') });
      }
      if (payloadHeader) sanitize.add(payloadHeader);
      for (const c of claimHeaders) sanitize.add(c.header);

      const state: RuleState = {
        source,
        issuer: r.issuer,
        audiences: new Set(r.audiences.map(sanitizeAudience)),
        forward: r.forwardOriginalToken,
        payloadHeader,
        claimHeaders,
        inlineKeys,
        jwksUri,
      };
      states.push(state);

      const at = (kind: Location['kind'], name: string, prefix: string) => {
        const key = `${kind}\0${name}\0${prefix}`;
        let loc = locations.get(key);
        if (!loc) {
          loc = { kind, name, prefix, rules: [] };
          locations.set(key, loc);
        }
        loc.rules.push(state);
      };
      for (const h of r.fromHeaders) {
        const name = headerName(h.name, 'fromHeaders');
        if (name !== null) at(HEADER, name, h.prefix);
      }
      for (const p of r.fromParams) if (p) at(PARAM, p, '');
      for (const c of r.fromCookies) if (c) at(COOKIE, c, '');
      if (r.fromHeaders.length === 0 && r.fromParams.length === 0 && r.fromCookies.length === 0) {
        at(HEADER, DEFAULT_HEADER, DEFAULT_PREFIX);
        at(PARAM, DEFAULT_PARAM, '');
      }
    });
    this.errors = errors;
    this.rules = states;
    // Envoy checks headers, then query parameters, then cookies.
    this.locations = [...locations.values()].sort((x, y) => x.kind - y.kind);
    this.none = Object.freeze({ kind: 'none', removeHeaders: Object.freeze([...sanitize]) });
  }

  /** No rules: every request is `none`. */
  get empty(): boolean {
    return this.rules.length === 0;
  }

  /**
   * Authenticates one request. `headers` as Node gives them (lower-case names), `query` the raw query string
   * (without `?`, may be empty). Never throws and never logs the token.
   */
  async authenticate(headers: JwtHeaders, query: string): Promise<JwtResult> {
    const found = this.extract(headers, query);
    if (found === null) return invalid(JWT_STATUS.multipleTokens, null);
    if (found.length === 0) return this.none;
    const decoded = new Map<string, Decoded | JwtStatusMessage>();
    let failure: JwtInvalid | null = null;
    for (const rule of this.rules) {
      let ok = true;
      let any = false;
      const good: Array<{ readonly found: Found; readonly decoded: Decoded }> = [];
      for (const f of found) {
        if (!f.loc.rules.includes(rule)) continue;
        any = true;
        let d = decoded.get(f.token);
        if (d === undefined) {
          d = decode(f.token, this.maxTokenBytes);
          decoded.set(f.token, d);
        }
        const status = typeof d === 'string' ? d : await this.verify(rule, d);
        if (status !== null) {
          ok = false;
          // Prefer the reason from a rule of the token's own issuer over "issuer is not configured".
          if (
            failure === null ||
            (failure.message === JWT_STATUS.unknownIssuer && status !== failure.message)
          )
            failure = invalid(status, status === JWT_STATUS.unknownIssuer ? null : rule.source);
          break;
        }
        good.push({ found: f, decoded: d as Decoded });
      }
      if (any && ok) return this.accept(rule, good);
    }
    // Every token sits at some rule's location, so at least one rule saw a token and failed.
    return failure ?? invalid(JWT_STATUS.verificationFail, null);
  }

  /** Releases the key sets this authenticator fetches (and its private cache). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.ownsCache) this.cache.close();
    else for (const uri of this.acquired) this.cache.release(uri);
  }

  private extract(headers: JwtHeaders, query: string): Found[] | null {
    const out: Found[] = [];
    let params: Map<string, string> | null = null;
    let cookies: Map<string, string> | null = null;
    for (const loc of this.locations) {
      let token: string | null | undefined = null;
      if (loc.kind === HEADER) {
        const v = headers[loc.name];
        if (v === undefined) continue;
        if (typeof v !== 'string') {
          for (const one of v) {
            const t = fromHeaderValue(one, loc.prefix);
            if (t === null) continue;
            out.push({ token: t, loc });
            if (out.length > this.maxTokens) return null;
          }
          continue;
        }
        token = fromHeaderValue(v, loc.prefix);
      } else if (loc.kind === PARAM) {
        if (!query) continue;
        params ??= parseQuery(query);
        token = params.get(loc.name);
      } else {
        cookies ??= parseCookies(headers.cookie);
        token = cookies.get(loc.name);
      }
      if (token === null || token === undefined) continue;
      out.push({ token, loc });
      if (out.length > this.maxTokens) return null;
    }
    return out;
  }

  private async verify(rule: RuleState, d: Decoded): Promise<JwtStatusMessage | null> {
    if (!rule.issuer || d.iss !== rule.issuer) return JWT_STATUS.unknownIssuer;
    const now = Math.floor(this.now() / 1000);
    if (d.nbf !== null && now + this.skewSec < d.nbf) return JWT_STATUS.notYetValid;
    if (d.exp !== null && now > d.exp + this.skewSec) return JWT_STATUS.expired;
    if (rule.audiences.size > 0 && !d.aud.some((a) => rule.audiences.has(sanitizeAudience(a))))
      return JWT_STATUS.audienceNotAllowed;
    const keys = rule.inlineKeys ?? (rule.jwksUri !== null ? await this.cache.get(rule.jwksUri) : null);
    if (keys === null) return JWT_STATUS.jwksFetchFail;
    if (keys.length === 0) return JWT_STATUS.jwksNoValidKeys;
    const need = ALG_KEY[d.alg]!;
    let candidates = 0;
    for (const k of keys) {
      if (k.kty !== need.kty || (need.crv !== null && k.crv !== need.crv)) continue;
      if (k.alg !== null && k.alg !== d.alg) continue;
      if (d.kid !== null && k.kid !== null && k.kid !== d.kid) continue;
      candidates++;
      try {
        await compactVerify(d.token, k.key, { algorithms: [d.alg] });
        return null;
      } catch {
        // Try the next candidate key (rotation publishes several).
      }
    }
    return candidates === 0 ? JWT_STATUS.jwksKidAlgMismatch : JWT_STATUS.verificationFail;
  }

  private accept(rule: RuleState, good: ReadonlyArray<{ found: Found; decoded: Decoded }>): JwtOk {
    const first = good[0]!.decoded;
    const removeHeaders = [...this.none.removeHeaders];
    const removeParams: string[] = [];
    if (!rule.forward) {
      for (const g of good) {
        const loc = g.found.loc;
        // Envoy removes the whole header or the query parameter; cookies are left alone (as Envoy does).
        if (loc.kind === HEADER && !removeHeaders.includes(loc.name)) removeHeaders.push(loc.name);
        else if (loc.kind === PARAM && !removeParams.includes(loc.name)) removeParams.push(loc.name);
      }
    }
    const setHeaders: Array<readonly [string, string]> = [];
    if (rule.payloadHeader !== null) setHeaders.push([rule.payloadHeader, first.payloadSegment]);
    for (const c of rule.claimHeaders) {
      const v = claimHeaderValue(claimAt(first.payload, c.claim));
      if (v !== null && v !== '' && !UNSAFE_HEADER_VALUE.test(v)) setHeaders.push([c.header, v]);
    }
    const azp = first.payload.azp;
    return {
      kind: 'ok',
      rule: rule.source,
      principal: `${first.iss}/${first.sub}`,
      issuer: first.iss,
      subject: first.sub,
      audiences: first.aud,
      presenter: typeof azp === 'string' ? azp : null,
      claims: normalizeClaims(first.payload),
      removeHeaders,
      removeParams,
      setHeaders,
    };
  }
}

/** Applies a `none`/`ok` result's header edits to a Node header object (HTTP/1 or HTTP/2), in place. */
export function applyJwtHeaderEdits(
  headers: Record<string, string | string[] | undefined>,
  result: JwtNone | JwtOk,
): void {
  for (const name of result.removeHeaders) delete headers[name];
  if (result.kind === 'ok') for (const [name, value] of result.setHeaders) headers[name] = value;
}

/** Removes every occurrence of the named query parameters from a request path, keeping the rest as sent. */
export function stripQueryParams(path: string, names: readonly string[]): string {
  if (names.length === 0) return path;
  const q = path.indexOf('?');
  if (q === -1) return path;
  const hash = path.indexOf('#', q);
  const query = hash === -1 ? path.slice(q + 1) : path.slice(q + 1, hash);
  const kept = query.split('&').filter((part) => {
    const eq = part.indexOf('=');
    return !names.includes(decodeComponent(eq === -1 ? part : part.slice(0, eq)));
  });
  const rest = hash === -1 ? '' : path.slice(hash);
  return kept.length === 0 ? path.slice(0, q) + rest : `${path.slice(0, q)}?${kept.join('&')}${rest}`;
}
