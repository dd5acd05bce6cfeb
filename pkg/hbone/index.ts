/**
 * HBONE: TCP tunnelled in HTTP/2 CONNECT streams over mTLS (TLS 1.3, ALPN h2) on port 15008 — the transport
 * between ztunnels and waypoints. This module has the server (one per pod listener, or per waypoint), the
 * client connection pool, the data-path pipe, and the helpers for the `baggage`, `forwarded` and `traceparent`
 * request headers.
 */
/** An `IP:port` CONNECT target; `ip` has no brackets. */
export interface HboneAddress {
  readonly ip: string;
  readonly port: number;
  readonly family: 4 | 6;
}

/** One end of a TCP connection. */
export interface Endpoint {
  readonly ip: string;
  readonly port: number;
}

/** The well-known HBONE port. */
export const HBONE_PORT = 15008;

export { canonicalIp, formatAuthority, parseAuthority } from './authority.ts';
export { HboneError } from './errors.ts';
export {
  BAGGAGE_WORKLOAD_KINDS,
  type Baggage,
  EMPTY_BAGGAGE,
  type ForwardedElement,
  formatBaggage,
  formatForwardedFor,
  formatTraceparent,
  forwardedClient,
  newTraceparent,
  parseBaggage,
  parseForwarded,
  parseTraceparent,
  type TraceParent,
  type WorkloadKind,
} from './headers.ts';
export { PAUSE_HIGH_WATER, type PipeDone, type PipeStats, pipeBidirectional } from './pipe.ts';
export {
  type HboneConnectOptions,
  HbonePool,
  type HbonePoolOptions,
  HbonePoolStats,
  poolKey,
  type SocketTarget,
} from './pool.ts';
export {
  ConnectRequest,
  HboneServer,
  type HboneServerOptions,
  HboneServerStats,
  type ListenSpec,
  REJECT_STATUSES,
  type RejectStatus,
} from './server.ts';
export * from './settings.ts';
export { buffersOnlyWritev } from './writev.ts';
