/**
 * JSON Web Key Sets: parsing with per-key validation, and a cache of remote key sets (`jwksUri`).
 *
 * The cache fetches each URI once when the first authenticator acquires it, then every `refreshIntervalMs`
 * (Istio's 20 min); a failed fetch keeps the last good set and retries with backoff. Concurrent requests that
 * need a set nobody has yet share one fetch (single-flight). Responses are bounded in time and size.
 */
import { createPublicKey, type JsonWebKey } from 'node:crypto';
import type { Logger } from '../telemetry/index.ts';
import type { JwksKey, ParsedJwks } from './index.ts';
import {
  JWKS_FETCH_TIMEOUT_MS,
  JWKS_MAX_BYTES,
  JWKS_REFRESH_INTERVAL_MS,
  JWKS_RETRY_MIN_MS,
} from './status.ts';

/** Curves we verify with, and the one JWS algorithm each serves. */
const EC_CURVE_ALG: Readonly<Record<string, string>> = { 'P-256': 'ES256', 'P-384': 'ES384' };
const RSA_ALGS = new Set(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512']);
/** JWK members that only private keys carry. */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];
/** jose (and RFC 7518 §3.3) refuse shorter RSA keys at verify time; reject them up front with a clear reason. */
const MIN_RSA_BITS = 2048;

function describe(i: number, jwk: Record<string, unknown>): string {
  return typeof jwk.kid === 'string' ? `keys[${i}] (kid "${jwk.kid}")` : `keys[${i}]`;
}

function parseKey(jwk: Record<string, unknown>): JwksKey | string {
  const kty = jwk.kty;
  if (typeof kty !== 'string') return 'missing "kty"';
  if (jwk.kid !== undefined && typeof jwk.kid !== 'string') return '"kid" is not a string';
  if (jwk.use !== undefined && jwk.use !== 'sig') return `"use" is ${JSON.stringify(jwk.use)}, not "sig"`;
  if (jwk.key_ops !== undefined && (!Array.isArray(jwk.key_ops) || !jwk.key_ops.includes('verify')))
    return '"key_ops" does not include "verify"';
  if (jwk.alg !== undefined && typeof jwk.alg !== 'string') return '"alg" is not a string';
  const alg = (jwk.alg as string | undefined) ?? null;
  for (const m of PRIVATE_MEMBERS) {
    if (m in jwk) return `contains private or symmetric key material ("${m}"); publish public keys only`;
  }
  let crv: string | null = null;
  switch (kty) {
    case 'RSA':
      if (typeof jwk.n !== 'string' || typeof jwk.e !== 'string') return 'RSA key needs string "n" and "e"';
      if (alg !== null && !RSA_ALGS.has(alg))
        return `"alg" ${alg} is not an RSA signature algorithm we accept`;
      break;
    case 'EC': {
      if (typeof jwk.crv !== 'string' || !(jwk.crv in EC_CURVE_ALG))
        return `EC curve ${JSON.stringify(jwk.crv)} is not supported (P-256, P-384)`;
      crv = jwk.crv;
      if (alg !== null && alg !== EC_CURVE_ALG[crv]) return `"alg" ${alg} does not fit curve ${crv}`;
      if (typeof jwk.x !== 'string' || typeof jwk.y !== 'string') return 'EC key needs string "x" and "y"';
      break;
    }
    case 'OKP':
      if (jwk.crv !== 'Ed25519') return `OKP curve ${JSON.stringify(jwk.crv)} is not supported (Ed25519)`;
      crv = 'Ed25519';
      if (alg !== null && alg !== 'EdDSA') return `"alg" ${alg} does not fit curve Ed25519`;
      if (typeof jwk.x !== 'string') return 'OKP key needs a string "x"';
      break;
    default:
      return `"kty" ${JSON.stringify(kty)} is not supported (RSA, EC, OKP)`;
  }
  let key: ReturnType<typeof createPublicKey>;
  try {
    key = createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' });
  } catch (err) {
    return `invalid key material (${(err as Error).message})`;
  }
  if (kty === 'RSA') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < MIN_RSA_BITS) return `RSA key is ${bits} bits, shorter than ${MIN_RSA_BITS}`;
  }
  return { kid: (jwk.kid as string | undefined) ?? null, alg, kty, crv, key };
}

/**
 * Parses a JWKS document. Never throws: problems are listed in `errors`; keys that cannot be used are skipped,
 * the others kept (a key set with one bad key still verifies with the rest).
 */
export function parseJwks(text: string): ParsedJwks {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return { keys: [], errors: ['Jwks is an invalid JSON'] };
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc))
    return { keys: [], errors: ['Jwks is not a JSON object'] };
  const list = (doc as Record<string, unknown>).keys;
  if (list === undefined) return { keys: [], errors: ['Jwks does not have [keys] field'] };
  if (!Array.isArray(list)) return { keys: [], errors: ['[keys] in Jwks is not an array'] };
  const keys: JwksKey[] = [];
  const errors: string[] = [];
  list.forEach((jwk: unknown, i) => {
    if (jwk === null || typeof jwk !== 'object' || Array.isArray(jwk)) {
      errors.push(`keys[${i}]: not a JSON object`);
      return;
    }
    const r = parseKey(jwk as Record<string, unknown>);
    if (typeof r === 'string') errors.push(`${describe(i, jwk as Record<string, unknown>)}: ${r}`);
    else keys.push(r);
  });
  if (keys.length === 0 && errors.length === 0) errors.push("Jwks doesn't have any valid public key");
  return { keys, errors };
}

/** Only http(s) URIs are fetched; anything else is a config error reported by the authenticator. */
export function checkJwksUri(uri: string): string | null {
  let u: URL;
  try {
    u = new URL(uri);
  } catch {
    return `jwksUri "${uri}" is not a URL`;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return `jwksUri "${uri}" must be http or https`;
  return null;
}

/** The subset of `fetch` the cache uses; tests and callers with a custom agent can pass their own. */
export type JwksFetch = (
  url: string,
  init: { readonly signal: AbortSignal; readonly headers: Record<string, string> },
) => Promise<Response>;

export interface JwksCacheOptions {
  /** Default `JWKS_REFRESH_INTERVAL_MS` (20 min, like istiod). */
  readonly refreshIntervalMs?: number;
  /** Default `JWKS_RETRY_MIN_MS`. */
  readonly retryMinMs?: number;
  /** Default `JWKS_MAX_BYTES`. */
  readonly maxBytes?: number;
  /** Default the global `fetch`. */
  readonly fetch?: JwksFetch;
  readonly logger?: Logger;
  /** Clock in ms, for tests. */
  readonly now?: () => number;
}

/** What the cache knows about one URI (admin/debug output). */
export interface JwksStatus {
  readonly uri: string;
  readonly keys: number | null;
  /** ms timestamp of the last successful fetch, or null. */
  readonly fetchedAt: number | null;
  readonly consecutiveFailures: number;
  readonly lastError: string | null;
}

interface Entry {
  readonly uri: string;
  refs: number;
  timeoutMs: number;
  keys: readonly JwksKey[] | null;
  fetchedAt: number | null;
  inflight: Promise<void> | null;
  abort: AbortController | null;
  timer: NodeJS.Timeout | null;
  lastAttempt: number;
  failures: number;
  lastError: string | null;
}

async function readCapped(res: Response, maxBytes: number): Promise<string> {
  const declared = Number(res.headers.get('content-length'));
  if (Number.isFinite(declared) && declared > maxBytes) {
    await res.body?.cancel();
    throw new Error(`response is ${declared} bytes, more than the ${maxBytes} allowed`);
  }
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel();
      throw new Error(`response is more than the ${maxBytes} bytes allowed`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export class JwksCache {
  private readonly refreshIntervalMs: number;
  private readonly retryMinMs: number;
  private readonly maxBytes: number;
  private readonly fetchImpl: JwksFetch;
  private readonly logger: Logger | null;
  private readonly now: () => number;
  private readonly entries = new Map<string, Entry>();
  private closed = false;

  constructor(opts: JwksCacheOptions = {}) {
    this.refreshIntervalMs = opts.refreshIntervalMs ?? JWKS_REFRESH_INTERVAL_MS;
    this.retryMinMs = opts.retryMinMs ?? JWKS_RETRY_MIN_MS;
    this.maxBytes = opts.maxBytes ?? JWKS_MAX_BYTES;
    this.fetchImpl = opts.fetch ?? ((url, init) => fetch(url, init));
    this.logger = opts.logger ?? null;
    this.now = opts.now ?? Date.now;
  }

  /** Registers a user of `uri` and starts fetching it if it is new. Pair with `release`. */
  acquire(uri: string, timeoutMs: number = JWKS_FETCH_TIMEOUT_MS): void {
    if (this.closed) return;
    let e = this.entries.get(uri);
    if (e) {
      e.refs++;
      // Several rules may name one URI with different timeouts: honour the most patient.
      e.timeoutMs = Math.max(e.timeoutMs, timeoutMs);
      return;
    }
    e = {
      uri,
      refs: 1,
      timeoutMs,
      keys: null,
      fetchedAt: null,
      inflight: null,
      abort: null,
      timer: null,
      lastAttempt: Number.NEGATIVE_INFINITY,
      failures: 0,
      lastError: null,
    };
    this.entries.set(uri, e);
    void this.refresh(e);
  }

  release(uri: string): void {
    const e = this.entries.get(uri);
    if (!e || --e.refs > 0) return;
    this.drop(e);
    this.entries.delete(uri);
  }

  /** The current keys without waiting; null when none were ever fetched. */
  peek(uri: string): readonly JwksKey[] | null {
    return this.entries.get(uri)?.keys ?? null;
  }

  /**
   * The keys for `uri`: the last good set at once if there is one, else the result of the fetch in flight, else of
   * a new fetch (at most one per `retryMinMs`). Null when no set is available; never throws.
   */
  async get(uri: string): Promise<readonly JwksKey[] | null> {
    const e = this.entries.get(uri);
    if (!e) return null;
    if (e.keys) return e.keys;
    if (e.inflight) await e.inflight;
    else if (this.now() - e.lastAttempt >= this.retryMinMs) await this.refresh(e);
    return e.keys;
  }

  status(): JwksStatus[] {
    return [...this.entries.values()].map((e) => ({
      uri: e.uri,
      keys: e.keys ? e.keys.length : null,
      fetchedAt: e.fetchedAt,
      consecutiveFailures: e.failures,
      lastError: e.lastError,
    }));
  }

  close(): void {
    this.closed = true;
    for (const e of this.entries.values()) this.drop(e);
    this.entries.clear();
  }

  private drop(e: Entry): void {
    if (e.timer) clearTimeout(e.timer);
    e.timer = null;
    e.abort?.abort();
  }

  private schedule(e: Entry, delayMs: number): void {
    if (this.closed || this.entries.get(e.uri) !== e) return;
    if (e.timer) clearTimeout(e.timer);
    e.timer = setTimeout(() => {
      e.timer = null;
      void this.refresh(e);
    }, delayMs);
    e.timer.unref();
  }

  /** Single-flight fetch of one URI; resolves when done, never rejects. */
  private refresh(e: Entry): Promise<void> {
    if (e.inflight) return e.inflight;
    if (this.closed) return Promise.resolve();
    e.lastAttempt = this.now();
    const abort = new AbortController();
    e.abort = abort;
    const signal = AbortSignal.any([abort.signal, AbortSignal.timeout(e.timeoutMs)]);
    const run = async (): Promise<void> => {
      try {
        const res = await this.fetchImpl(e.uri, { signal, headers: { accept: 'application/json' } });
        if (!res.ok) {
          await res.body?.cancel();
          throw new Error(`HTTP status ${res.status}`);
        }
        const parsed = parseJwks(await readCapped(res, this.maxBytes));
        if (parsed.keys.length === 0) throw new Error(parsed.errors.join('; '));
        if (parsed.errors.length > 0)
          this.logger?.warn({ uri: e.uri, problems: parsed.errors }, 'jwks: some keys were skipped');
        e.keys = parsed.keys;
        e.fetchedAt = this.now();
        e.failures = 0;
        e.lastError = null;
        this.logger?.debug({ uri: e.uri, keys: parsed.keys.length }, 'jwks: fetched');
        this.schedule(e, this.refreshIntervalMs);
      } catch (err) {
        if (abort.signal.aborted) return;
        e.failures++;
        e.lastError = signal.aborted ? `timed out after ${e.timeoutMs} ms` : (err as Error).message;
        const retry = Math.min(this.retryMinMs * 2 ** (e.failures - 1), this.refreshIntervalMs);
        this.logger?.warn(
          {
            uri: e.uri,
            err: e.lastError,
            failures: e.failures,
            retryMs: retry,
            keepingKeys: e.keys !== null,
          },
          'jwks: fetch failed',
        );
        this.schedule(e, retry);
      } finally {
        e.inflight = null;
        if (e.abort === abort) e.abort = null;
      }
    };
    e.inflight = run();
    return e.inflight;
  }
}
