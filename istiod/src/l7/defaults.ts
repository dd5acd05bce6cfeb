/**
 * Istio's defaults that the compiler writes out explicitly, so the waypoint applies exactly what istiod decided
 * (upstream pilot/pkg/networking/core/route/retry: DefaultPolicy; mesh config defaultHttpRetryPolicy).
 */
import type { RetryPolicy } from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';

/** Retries after the first try when a route sets none (Istio's mesh default). */
export const DEFAULT_RETRY_ATTEMPTS = 2;
export const DEFAULT_RETRY_ON: readonly string[] = [
  'connect-failure',
  'refused-stream',
  'unavailable',
  'cancelled',
  'retriable-status-codes',
];
/** 503 is retriable by default (Istio's EXCLUDE_UNSAFE_503_FROM_DEFAULT_RETRY is off by default). */
export const DEFAULT_RETRIABLE_STATUS_CODES: readonly number[] = [503];

/** A fresh copy of the default retry policy (callers may adjust per-try timeouts). */
export function defaultRetryPolicy(): RetryPolicy {
  return {
    attempts: DEFAULT_RETRY_ATTEMPTS,
    perTryTimeoutMs: 0,
    retryOn: [...DEFAULT_RETRY_ON],
    retriableStatusCodes: [...DEFAULT_RETRIABLE_STATUS_CODES],
    backoffBaseMs: 0,
  };
}

/** gRPC status names (VirtualService fault.abort.grpcStatus) → codes. */
export const GRPC_STATUS_CODES: Readonly<Record<string, number>> = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
};

/** HTTP status of a VirtualService destination that does not resolve (Envoy's cluster-not-found default). */
export const UNKNOWN_DESTINATION_STATUS = 503;
