/**
 * Connection-pool circuit breaking per (service, subset), the counters behind Envoy's cluster
 * circuit_breakers as Istio configures them from DestinationRule `connectionPool`:
 *
 * | DestinationRule                  | Envoy threshold           | on overflow                                |
 * |----------------------------------|---------------------------|--------------------------------------------|
 * | tcp.maxConnections               | max_connections           | no new connection; the request waits       |
 * | http.http1MaxPendingRequests     | max_pending_requests      | 503, response flag UO                      |
 * | http.http2MaxRequests            | max_requests (HTTP/1 too) | 503, response flag UO                      |
 * | http.maxRetries                  | max_retries               | the retry is not attempted (upstream_rq_retry_overflow) |
 * | http.maxRequestsPerConnection    | max_requests_per_connection (a hint for the pool) |                    |
 *
 * 0 = not set = unlimited: Istio writes 2^32−1 for every threshold it leaves at its default (Envoy's own
 * defaults of 1024 / 3 retries do not apply under Istio).
 *
 * Counters only: the I/O side calls each try… and its matching end… in pairs. Ends never go below zero, so a
 * double release cannot leave the breaker open for good.
 */
import type { ConnectionPool } from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';

const UNLIMITED = Number.POSITIVE_INFINITY;

function limit(v: number | undefined): number {
  return v === undefined || v === 0 ? UNLIMITED : v;
}

export class ConnectionPoolLimiter {
  /** Open (or opening) upstream connections. */
  connections = 0;
  /** Requests waiting for a connection. */
  pending = 0;
  /** Requests in flight (sent upstream, response not complete), retries included. */
  active = 0;
  /** Retries in flight. */
  activeRetries = 0;
  /** Overflow counters, for stats (Envoy upstream_cx_overflow, upstream_rq_pending_overflow, …). */
  connectionOverflows = 0;
  pendingOverflows = 0;
  requestOverflows = 0;
  retryOverflows = 0;

  maxConnections = UNLIMITED;
  maxPendingRequests = UNLIMITED;
  maxRequests = UNLIMITED;
  maxRetries = UNLIMITED;
  /** 0 = unlimited; 1 = a new connection per request (no keep-alive). */
  maxRequestsPerConnection = 0;
  /** 0 = caller's default. */
  connectTimeoutMs = 0;
  idleTimeoutMs = 0;

  constructor(pool?: ConnectionPool) {
    this.configure(pool);
  }

  /** Applies new limits (xDS push); counters are kept. */
  configure(pool: ConnectionPool | undefined): void {
    this.maxConnections = limit(pool?.maxConnections);
    this.maxPendingRequests = limit(pool?.http1MaxPendingRequests);
    this.maxRequests = limit(pool?.http2MaxRequests);
    this.maxRetries = limit(pool?.maxRetries);
    this.maxRequestsPerConnection = pool?.maxRequestsPerConnection ?? 0;
    this.connectTimeoutMs = pool?.connectTimeoutMs ?? 0;
    this.idleTimeoutMs = pool?.idleTimeoutMs ?? 0;
  }

  /** Before opening a new upstream connection. False: do not open; queue the request as pending instead. */
  tryOpenConnection(): boolean {
    if (this.connections >= this.maxConnections) {
      this.connectionOverflows++;
      return false;
    }
    this.connections++;
    return true;
  }

  /** A connection counted by tryOpenConnection closed (or failed to open). */
  connectionClosed(): void {
    if (this.connections > 0) this.connections--;
  }

  /** Before queueing a request that waits for a connection. False: answer 503 UO. */
  tryEnqueuePending(): boolean {
    if (this.pending >= this.maxPendingRequests) {
      this.pendingOverflows++;
      return false;
    }
    this.pending++;
    return true;
  }

  /** A pending request got a connection, or gave up. */
  dequeuePending(): void {
    if (this.pending > 0) this.pending--;
  }

  /** Before sending any request (first try or retry) upstream. False: answer 503 UO. */
  tryStartRequest(): boolean {
    if (this.active >= this.maxRequests) {
      this.requestOverflows++;
      return false;
    }
    this.active++;
    return true;
  }

  /** The request counted by tryStartRequest finished (any outcome). */
  endRequest(): void {
    if (this.active > 0) this.active--;
  }

  /** Before a retry. False: do not retry; the last try's response stands. */
  tryStartRetry(): boolean {
    if (this.activeRetries >= this.maxRetries) {
      this.retryOverflows++;
      return false;
    }
    this.activeRetries++;
    return true;
  }

  endRetry(): void {
    if (this.activeRetries > 0) this.activeRetries--;
  }
}
