/**
 * Waypoint configuration, read once from the environment (the Deployment istiod creates sets the same
 * variables as ztunnel's DaemonSet: POD_NAME, POD_NAMESPACE, INSTANCE_IP, SERVICE_ACCOUNT, XDS/CA address,
 * the projected istio-ca token and the istio-ca-root-cert mount), then frozen.
 */
import * as env from '../../pkg/config/index.ts';
import { MeshError } from '../../pkg/errors/index.ts';
import { LEVELS, type Level } from '../../pkg/telemetry/index.ts';

const KiB = 1024;
const MiB = 1024 * KiB;

export interface WaypointConfig {
  /** istiod xDS endpoint (host:port, TLS) — XDS_ADDRESS. */
  readonly xdsAddress: string;
  /** istiod CA endpoint — CA_ADDRESS (defaults to the xDS address). */
  readonly caAddress: string;
  /** PEM root(s) that verify istiod's serving certificate (the istio-ca-root-cert ConfigMap, mounted). */
  readonly xdsRootCaPath: string;
  /** Projected service-account token with audience istio-ca, sent as a bearer token to xDS and the CA. */
  readonly tokenPath: string;
  readonly clusterId: string;
  readonly trustDomain: string;
  readonly podName: string;
  readonly podNamespace: string;
  readonly instanceIp: string;
  /**
   * The waypoint's own service account (its identity is spiffe://<td>/ns/<ns>/sa/<sa>); null = read the
   * `sub` claim of the projected token (system:serviceaccount:<ns>:<sa>).
   */
  readonly serviceAccount: string | null;
  /**
   * The Gateway this pod serves (`<namespace>/<name>` is matched against ServiceConfig.waypoints); null = any
   * service whose config lists a waypoint is treated as served (istiod only sends us what concerns us).
   */
  readonly gatewayName: string | null;
  /** Inbound HBONE port (Istio: 15008). */
  readonly hbonePort: number;
  /** Port of the destination ztunnel's HBONE listener on each endpoint (always 15008 outside tests). */
  readonly upstreamHbonePort: number;
  readonly adminPort: number;
  readonly statsPort: number;
  readonly readinessPort: number;
  /** Lifetime asked of the CA for the waypoint's certificate (Istio: 24h). */
  readonly workloadCertTtlMs: number;
  /** How long SIGTERM waits for requests and tunnels to finish. */
  readonly drainGraceMs: number;
  /**
   * On SIGTERM, how long the waypoint keeps accepting new HBONE connections (answering them normally, with
   * GOAWAY to existing ones and `connection: close` on HTTP/1.1) before it closes its listener: the time istiod
   * needs to move ztunnels off a deleted or terminating waypoint. Bounded by the drain grace.
   */
  readonly minDrainMs: number;
  /**
   * How long a service removed from this waypoint's config keeps being served with its last config, while the
   * ztunnels (pushed independently) stop sending its traffic here (config-store.ts). 0 removes at once.
   */
  readonly removedServiceGraceMs: number;
  readonly logLevel: Level;
  /** One JSON access-log line per request / TCP stream (module "access"). */
  readonly accessLog: boolean;
  /** Request header block limit; larger requests get 431 (Envoy's max_request_headers_kb default is 60). */
  readonly maxRequestHeadersBytes: number;
  /** Time allowed to receive a request's headers (slowloris guard). */
  readonly requestHeadersTimeoutMs: number;
  /** Time allowed to receive a whole request; 0 = none (Envoy's request_timeout default; streams live long). */
  readonly requestTimeoutMs: number;
  /** A downstream keep-alive connection with no request for this long is closed (Envoy idle_timeout: 1h). */
  readonly downstreamIdleTimeoutMs: number;
  /** How long to wait for the first bytes of a stream on a port whose protocol must be sniffed. */
  readonly protocolDetectionTimeoutMs: number;
  /** Upstream TCP/HBONE connect budget (Istio's cluster connect_timeout: 10s). */
  readonly upstreamConnectTimeoutMs: number;
  /** Idle upstream keep-alive connections are closed after this (Istio's default idle timeout is 1h). */
  readonly upstreamIdleTimeoutMs: number;
  /** Request bodies up to this size are buffered so a retry can resend them; larger ones disable retries. */
  readonly retryBufferBytes: number;
  /** OTLP/HTTP JSON traces endpoint (…/v1/traces), or null for no span export. */
  readonly otlpTracesEndpoint: string | null;
  /** Percent of new traces sampled (incoming sampled flags are honoured); Istio's meshConfig sampling. */
  readonly traceSampling: number;
  /** service.name of exported spans. */
  readonly traceServiceName: string;
}

function otlpEndpoint(e: env.Env): string | null {
  const traces = env.optionalStr(e, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT');
  if (traces) return traces;
  const base = env.optionalStr(e, 'OTEL_EXPORTER_OTLP_ENDPOINT');
  if (!base) return null;
  return `${base.replace(/\/+$/, '')}/v1/traces`;
}

function percent(e: env.Env, name: string, def: number): number {
  const v = env.optionalStr(e, name);
  if (v === null) return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0 || n > 100) {
    throw new MeshError(
      'MESH_ERR_CONFIG_INVALID',
      `${name}=${JSON.stringify(v)} (expected a percentage 0..100)`,
      {
        details: { variable: name },
      },
    );
  }
  return n;
}

export function loadConfig(e: env.Env = process.env): WaypointConfig {
  const xds = env.str(e, 'XDS_ADDRESS', 'istiod.istio-system.svc:15012');
  const podName = env.str(e, 'POD_NAME', 'waypoint');
  const podNamespace = env.str(e, 'POD_NAMESPACE', 'default');
  const otlp = otlpEndpoint(e);
  return env.freeze({
    xdsAddress: xds,
    caAddress: env.str(e, 'CA_ADDRESS', xds),
    xdsRootCaPath: env.str(e, 'XDS_ROOT_CA', '/var/run/secrets/istio/root-cert.pem'),
    tokenPath: env.str(e, 'PROXY_TOKEN', '/var/run/secrets/tokens/istio-token'),
    clusterId: env.str(e, 'CLUSTER_ID', 'Kubernetes'),
    trustDomain: env.str(e, 'TRUST_DOMAIN', 'cluster.local'),
    podName,
    podNamespace,
    instanceIp: env.str(e, 'INSTANCE_IP', '127.0.0.1'),
    serviceAccount: env.optionalStr(e, 'SERVICE_ACCOUNT'),
    gatewayName: env.optionalStr(e, 'GATEWAY_NAME') ?? env.optionalStr(e, 'ISTIO_META_WAYPOINT_NAME'),
    hbonePort: env.int(e, 'HBONE_PORT', 15008, { min: 0, max: 65535 }),
    upstreamHbonePort: env.int(e, 'UPSTREAM_HBONE_PORT', 15008, { min: 1, max: 65535 }),
    adminPort: env.int(e, 'ADMIN_PORT', 15000, { min: 0, max: 65535 }),
    statsPort: env.int(e, 'STATS_PORT', 15020, { min: 0, max: 65535 }),
    readinessPort: env.int(e, 'READINESS_PORT', 15021, { min: 0, max: 65535 }),
    workloadCertTtlMs: env.duration(e, 'SECRET_TTL', 24 * 3600_000, { minMs: 60_000 }),
    drainGraceMs: env.duration(e, 'DRAIN_DURATION', 4_500),
    minDrainMs: env.duration(e, 'MINIMUM_DRAIN_DURATION', 2_000),
    removedServiceGraceMs: env.duration(e, 'REMOVED_SERVICE_GRACE', 5_000),
    logLevel: env.oneOf(e, 'LOG_LEVEL', 'info', LEVELS),
    accessLog: env.bool(e, 'ACCESS_LOG', true),
    maxRequestHeadersBytes: env.int(e, 'MAX_REQUEST_HEADERS_KB', 60, { min: 1, max: 8192 }) * KiB,
    requestHeadersTimeoutMs: env.duration(e, 'REQUEST_HEADERS_TIMEOUT', 60_000, { minMs: 1 }),
    requestTimeoutMs: env.duration(e, 'REQUEST_TIMEOUT', 0),
    downstreamIdleTimeoutMs: env.duration(e, 'DOWNSTREAM_IDLE_TIMEOUT', 3_600_000, { minMs: 1 }),
    protocolDetectionTimeoutMs: env.duration(e, 'PROTOCOL_DETECTION_TIMEOUT', 5_000, { minMs: 1 }),
    upstreamConnectTimeoutMs: env.duration(e, 'UPSTREAM_CONNECT_TIMEOUT', 10_000, { minMs: 1 }),
    upstreamIdleTimeoutMs: env.duration(e, 'UPSTREAM_IDLE_TIMEOUT', 3_600_000, { minMs: 1 }),
    retryBufferBytes: env.int(e, 'RETRY_BUFFER_BYTES', 1 * MiB, { min: 0, max: 64 * MiB }),
    otlpTracesEndpoint: otlp,
    traceSampling: percent(e, 'TRACE_SAMPLING', 100),
    traceServiceName: env.str(
      e,
      'OTEL_SERVICE_NAME',
      `${podName.replace(/-[a-z0-9]+-[a-z0-9]+$/, '')}.${podNamespace}`,
    ),
  });
}
