/**
 * What the waypoint's data path shares: config, the current service table (swapped on every accepted xDS
 * push), upstream connections, security (JWT + L7 authorization), telemetry and logging.
 */
import type { Logger } from 'pino';
import type { Identity } from '../../pkg/identity/index.ts';
import type { WaypointConfig } from './config.ts';
import type { ConfigStore } from './config-store.ts';
import type { WaypointMetrics } from './metrics.ts';
import type { Security } from './security.ts';
import type { SpanExporter } from './tracing.ts';
import type { Upstreams } from './upstream.ts';

export interface WaypointContext {
  readonly config: WaypointConfig;
  /** The waypoint's own identity (its certificate upstream and downstream). */
  readonly identity: Identity;
  readonly store: ConfigStore;
  readonly upstreams: Upstreams;
  readonly security: Security;
  readonly metrics: WaypointMetrics;
  /** Null when no OTLP endpoint is configured. */
  readonly spans: SpanExporter | null;
  readonly logger: Logger;
  /** One JSON line per request / TCP stream (CONVENTIONS habit 7); null when ACCESS_LOG=false. */
  readonly accessLog: Logger | null;
  /** Uniform [0,1): faults, weights, sampling (seeded in tests). */
  readonly rng: () => number;
  /** True once SIGTERM drain began: responses carry `connection: close`, h2 sessions get GOAWAY. */
  draining: boolean;
}
