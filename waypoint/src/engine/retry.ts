/**
 * Retry decisions with Envoy's `retry_on` semantics (router filter, x-envoy-retry-on / x-envoy-retry-grpc-on)
 * and Istio's defaults.
 *
 * - `5xx`: any 5xx response, or no response at all (reset, connect failure, refused stream, per-try timeout).
 * - `gateway-error`: 502/503/504, and no response at all (Envoy treats a reset like a locally generated 503).
 * - `reset`: no response at all (disconnect/reset/per-try timeout), including connect failures.
 * - `connect-failure`: the upstream connection could not be established (also covered by 5xx/gateway-error).
 * - `refused-stream`: the upstream reset the stream with REFUSED_STREAM.
 * - `retriable-4xx`: 409 only.
 * - `retriable-status-codes`: the status is in `retriable_status_codes`.
 * - gRPC: `cancelled` (1), `deadline-exceeded` (4), `resource-exhausted` (8), `internal` (13),
 *   `unavailable` (14) on the response's `grpc-status`.
 *
 * Istio's default for a route without a retry block (istioctl proxy-config routes, any Istio ≥ 1.8): 2
 * retries, `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes` with 503, the
 * previous_hosts host predicate and host_selection_retry_max_attempts 5. Note that a plain 503 *response* is
 * retried by this default only through retriable-status-codes (Envoy: the status list applies).
 *
 * Back-off (Envoy router docs, "x-envoy-max-retries"): fully jittered exponential, base 25 ms by default,
 * retry N waits a uniform random time in [0, (2^N − 1) × base), capped at max = 10 × base.
 */
import type { RetryPolicy } from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import type { CompiledRetryPolicy, Rng } from './index.ts';

export const RETRY_ON_5XX = 1 << 0;
export const RETRY_ON_GATEWAY_ERROR = 1 << 1;
export const RETRY_ON_RESET = 1 << 2;
export const RETRY_ON_CONNECT_FAILURE = 1 << 3;
export const RETRY_ON_REFUSED_STREAM = 1 << 4;
export const RETRY_ON_RETRIABLE_4XX = 1 << 5;
export const RETRY_ON_RETRIABLE_STATUS_CODES = 1 << 6;
export const RETRY_ON_GRPC_CANCELLED = 1 << 7;
export const RETRY_ON_GRPC_DEADLINE_EXCEEDED = 1 << 8;
export const RETRY_ON_GRPC_INTERNAL = 1 << 9;
export const RETRY_ON_GRPC_RESOURCE_EXHAUSTED = 1 << 10;
export const RETRY_ON_GRPC_UNAVAILABLE = 1 << 11;

const RETRY_ON_NAMES: ReadonlyMap<string, number> = new Map([
  ['5xx', RETRY_ON_5XX],
  ['gateway-error', RETRY_ON_GATEWAY_ERROR],
  ['reset', RETRY_ON_RESET],
  ['connect-failure', RETRY_ON_CONNECT_FAILURE],
  ['refused-stream', RETRY_ON_REFUSED_STREAM],
  ['retriable-4xx', RETRY_ON_RETRIABLE_4XX],
  ['retriable-status-codes', RETRY_ON_RETRIABLE_STATUS_CODES],
  ['cancelled', RETRY_ON_GRPC_CANCELLED],
  ['deadline-exceeded', RETRY_ON_GRPC_DEADLINE_EXCEEDED],
  ['internal', RETRY_ON_GRPC_INTERNAL],
  ['resource-exhausted', RETRY_ON_GRPC_RESOURCE_EXHAUSTED],
  ['unavailable', RETRY_ON_GRPC_UNAVAILABLE],
]);

/** Envoy's default retry back-off base interval. */
export const DEFAULT_BACKOFF_BASE_MS = 25;
/** Envoy: max_interval defaults to 10 × base_interval. */
const BACKOFF_MAX_FACTOR = 10;
/** Istio's default retry count (mesh config defaultHttpRetryPolicy unset). */
const ISTIO_DEFAULT_ATTEMPTS = 2;
/** Istio sets host_selection_retry_max_attempts: 5 with the previous_hosts predicate. */
const ISTIO_HOST_SELECTION_RETRY_MAX_ATTEMPTS = 5;
const ISTIO_DEFAULT_RETRY_ON =
  RETRY_ON_CONNECT_FAILURE | RETRY_ON_REFUSED_STREAM | RETRY_ON_GRPC_UNAVAILABLE | RETRY_ON_GRPC_CANCELLED;
const ISTIO_DEFAULT_RETRIABLE_CODES: ReadonlySet<number> = new Set([503]);

/** What Istio configures on a route that has no retry block. */
export const ISTIO_DEFAULT_RETRY_POLICY: CompiledRetryPolicy = Object.freeze({
  attempts: ISTIO_DEFAULT_ATTEMPTS,
  perTryTimeoutMs: 0,
  retryOn: ISTIO_DEFAULT_RETRY_ON | RETRY_ON_RETRIABLE_STATUS_CODES,
  retriableStatusCodes: ISTIO_DEFAULT_RETRIABLE_CODES,
  baseMs: DEFAULT_BACKOFF_BASE_MS,
  maxMs: DEFAULT_BACKOFF_BASE_MS * BACKOFF_MAX_FACTOR,
  avoidPreviousHosts: true,
  hostSelectionRetryMaxAttempts: ISTIO_HOST_SELECTION_RETRY_MAX_ATTEMPTS,
});

/** `retries: {attempts: 0}`: retries explicitly disabled. */
export const NO_RETRY_POLICY: CompiledRetryPolicy = Object.freeze({
  attempts: 0,
  perTryTimeoutMs: 0,
  retryOn: 0,
  retriableStatusCodes: new Set<number>(),
  baseMs: DEFAULT_BACKOFF_BASE_MS,
  maxMs: DEFAULT_BACKOFF_BASE_MS * BACKOFF_MAX_FACTOR,
  avoidPreviousHosts: false,
  hostSelectionRetryMaxAttempts: 1,
});

/**
 * Compiles a route's retry block. `undefined` (no block) → Istio's default policy; `attempts: 0` → null (no
 * retries); `retry_on` empty → Istio's default conditions. Unknown `retry_on` names are reported through
 * `onUnknown` and ignored (Envoy ignores unknown x-envoy-retry-on values too).
 */
export function compileRetryPolicy(
  p: RetryPolicy | undefined,
  onUnknown: (name: string) => void,
): CompiledRetryPolicy | null {
  if (p === undefined) return ISTIO_DEFAULT_RETRY_POLICY;
  if (p.attempts === 0) return null;
  let retryOn = 0;
  for (const raw of p.retryOn) {
    for (const part of raw.split(',')) {
      const name = part.trim();
      if (name === '') continue;
      const bit = RETRY_ON_NAMES.get(name);
      if (bit === undefined) onUnknown(name);
      else retryOn |= bit;
    }
  }
  let codes: ReadonlySet<number> = new Set(p.retriableStatusCodes);
  if (retryOn === 0) {
    retryOn = ISTIO_DEFAULT_RETRY_ON | RETRY_ON_RETRIABLE_STATUS_CODES;
    if (codes.size === 0) codes = ISTIO_DEFAULT_RETRIABLE_CODES;
  }
  const baseMs = p.backoffBaseMs > 0 ? p.backoffBaseMs : DEFAULT_BACKOFF_BASE_MS;
  return Object.freeze({
    attempts: p.attempts,
    perTryTimeoutMs: p.perTryTimeoutMs,
    retryOn,
    retriableStatusCodes: codes,
    baseMs,
    maxMs: baseMs * BACKOFF_MAX_FACTOR,
    avoidPreviousHosts: true,
    hostSelectionRetryMaxAttempts: ISTIO_HOST_SELECTION_RETRY_MAX_ATTEMPTS,
  });
}

/** How one try ended. Leave fields undefined when they do not apply. */
export interface RetryOutcome {
  /** HTTP status of the upstream response (absent when there was none). */
  readonly status?: number;
  /** `grpc-status` of the response (headers or trailers), when it is a gRPC response. */
  readonly grpcStatus?: number;
  /** The stream/connection was reset or closed before a response (includes per-try timeout). */
  readonly reset?: boolean;
  /** The upstream connection (or HBONE tunnel) could not be established. */
  readonly connectFailure?: boolean;
  /** HTTP/2 RST_STREAM REFUSED_STREAM from the upstream. */
  readonly refusedStream?: boolean;
  /** The per-try timeout fired (Envoy retries it for 5xx, gateway-error and reset). */
  readonly perTryTimeout?: boolean;
}

const GRPC_CANCELLED = 1;
const GRPC_DEADLINE_EXCEEDED = 4;
const GRPC_RESOURCE_EXHAUSTED = 8;
const GRPC_INTERNAL = 13;
const GRPC_UNAVAILABLE = 14;

/**
 * Whether to retry after try number `attempt` (1 = the first try) failed with `outcome`. The caller also
 * needs the cluster's retry budget (ConnectionPoolLimiter.tryStartRetry) and time left in the route timeout.
 */
export function shouldRetry(
  policy: CompiledRetryPolicy | null,
  outcome: RetryOutcome,
  attempt: number,
): boolean {
  if (policy === null || attempt > policy.attempts) return false;
  return retriable(policy, outcome);
}

/** The outcome alone (without the attempt count) is retriable under `policy`. */
export function retriable(policy: CompiledRetryPolicy, o: RetryOutcome): boolean {
  const on = policy.retryOn;
  if (on === 0) return false;
  const noResponse = o.status === undefined;
  if (noResponse) {
    if (o.connectFailure === true) {
      return (on & (RETRY_ON_CONNECT_FAILURE | RETRY_ON_5XX | RETRY_ON_GATEWAY_ERROR | RETRY_ON_RESET)) !== 0;
    }
    if (o.refusedStream === true) {
      return (on & (RETRY_ON_REFUSED_STREAM | RETRY_ON_5XX | RETRY_ON_GATEWAY_ERROR | RETRY_ON_RESET)) !== 0;
    }
    if (o.reset === true || o.perTryTimeout === true) {
      return (on & (RETRY_ON_5XX | RETRY_ON_GATEWAY_ERROR | RETRY_ON_RESET)) !== 0;
    }
    return false;
  }
  const status = o.status as number;
  if ((on & RETRY_ON_5XX) !== 0 && status >= 500 && status <= 599) return true;
  if ((on & RETRY_ON_GATEWAY_ERROR) !== 0 && (status === 502 || status === 503 || status === 504))
    return true;
  if ((on & RETRY_ON_RETRIABLE_4XX) !== 0 && status === 409) return true;
  if ((on & RETRY_ON_RETRIABLE_STATUS_CODES) !== 0 && policy.retriableStatusCodes.has(status)) return true;
  const g = o.grpcStatus;
  if (g !== undefined) {
    if (g === GRPC_CANCELLED) return (on & RETRY_ON_GRPC_CANCELLED) !== 0;
    if (g === GRPC_DEADLINE_EXCEEDED) return (on & RETRY_ON_GRPC_DEADLINE_EXCEEDED) !== 0;
    if (g === GRPC_RESOURCE_EXHAUSTED) return (on & RETRY_ON_GRPC_RESOURCE_EXHAUSTED) !== 0;
    if (g === GRPC_INTERNAL) return (on & RETRY_ON_GRPC_INTERNAL) !== 0;
    if (g === GRPC_UNAVAILABLE) return (on & RETRY_ON_GRPC_UNAVAILABLE) !== 0;
  }
  return false;
}

/**
 * Wait before retry number `retry` (1 = the first retry): uniform in [0, (2^retry − 1) × base), capped at
 * `maxMs`. Integer milliseconds.
 */
export function backoffMs(policy: CompiledRetryPolicy, retry: number, rng: Rng = Math.random): number {
  const n = retry < 1 ? 1 : retry > 30 ? 30 : retry;
  let range = (2 ** n - 1) * policy.baseMs;
  if (range > policy.maxMs) range = policy.maxMs;
  return Math.floor(rng() * range);
}
