/**
 * istiod configuration, read once from the environment (names follow Istio's where Istio has one), then frozen.
 */
import * as env from '../../pkg/config/index.ts';
import { LEVELS, type Level } from '../../pkg/telemetry/index.ts';

export interface IstiodConfig {
  /** Namespace istiod runs in and keeps its Secrets in (POD_NAMESPACE). */
  readonly namespace: string;
  readonly podName: string;
  /** SPIFFE trust domain (TRUST_DOMAIN). */
  readonly trustDomain: string;
  /** Cluster id used in workload uids (CLUSTER_ID; Istio's default is "Kubernetes"). */
  readonly clusterId: string;
  /** Mesh root namespace: AuthorizationPolicy / PeerAuthentication there apply mesh-wide. */
  readonly rootNamespace: string;
  /** `ns/sa` accounts allowed to request other identities' certificates (CA_TRUSTED_NODE_ACCOUNTS). */
  readonly trustedNodeAccounts: readonly string[];
  readonly defaultCertTtlMs: number;
  readonly maxCertTtlMs: number;
  /** Plaintext xDS (15010), TLS xDS + CA (15012), monitoring (15014), HTTP debug/readiness (8080). */
  readonly xdsPlaintextPort: number;
  readonly xdsSecurePort: number;
  readonly monitoringPort: number;
  readonly httpPort: number;
  /** Where to bind listeners; empty means all interfaces. */
  readonly bindAddress: string;
  /** Lifetime of istiod's own serving certificate on 15012. */
  readonly servingCertTtlMs: number;
  readonly logLevel: Level;
  /** How long SIGTERM waits for in-flight streams before closing them. */
  readonly drainGraceMs: number;
  /** Path to a kubeconfig; in-cluster service account when unset (KUBECONFIG). */
  readonly kubeconfig: string | null;
  /**
   * Deploy a ServiceAccount, Service and Deployment for each Gateway of our classes
   * (PILOT_ENABLE_GATEWAY_API_DEPLOYMENT_CONTROLLER, as in Istio). Status is written either way.
   */
  readonly gatewayDeploymentController: boolean;
  /** Create the GatewayClasses `istio` and `istio-waypoint` when missing (PILOT_ENABLE_GATEWAY_API_GATEWAYCLASS_CONTROLLER). */
  readonly gatewayClassController: boolean;
  /** Image of the proxies deployed for Gateways: waypoints and ingress gateways (GATEWAY_PROXY_IMAGE). */
  readonly gatewayProxyImage: string;
}

export function loadConfig(e: env.Env = process.env): IstiodConfig {
  const namespace = env.str(e, 'POD_NAMESPACE', 'istio-system');
  return env.freeze({
    namespace,
    podName: env.str(e, 'POD_NAME', 'istiod'),
    trustDomain: env.str(e, 'TRUST_DOMAIN', 'cluster.local'),
    clusterId: env.str(e, 'CLUSTER_ID', 'Kubernetes'),
    rootNamespace: env.str(e, 'ROOT_NAMESPACE', namespace),
    trustedNodeAccounts: env.list(e, 'CA_TRUSTED_NODE_ACCOUNTS', ['istio-system/ztunnel']),
    defaultCertTtlMs: env.duration(e, 'DEFAULT_WORKLOAD_CERT_TTL', 24 * 3600_000, { minMs: 60_000 }),
    maxCertTtlMs: env.duration(e, 'MAX_WORKLOAD_CERT_TTL', 90 * 24 * 3600_000, { minMs: 60_000 }),
    xdsPlaintextPort: env.int(e, 'XDS_PLAINTEXT_PORT', 15010, { min: 0, max: 65535 }),
    xdsSecurePort: env.int(e, 'XDS_SECURE_PORT', 15012, { min: 0, max: 65535 }),
    monitoringPort: env.int(e, 'MONITORING_PORT', 15014, { min: 0, max: 65535 }),
    httpPort: env.int(e, 'HTTP_PORT', 8080, { min: 0, max: 65535 }),
    bindAddress: env.str(e, 'BIND_ADDRESS', '0.0.0.0'),
    servingCertTtlMs: env.duration(e, 'ISTIOD_SERVING_CERT_TTL', 30 * 24 * 3600_000, { minMs: 60_000 }),
    logLevel: env.oneOf(e, 'LOG_LEVEL', 'info', LEVELS),
    drainGraceMs: env.duration(e, 'TERMINATION_DRAIN_DURATION', 5_000),
    kubeconfig: env.optionalStr(e, 'KUBECONFIG'),
    gatewayDeploymentController: env.bool(e, 'PILOT_ENABLE_GATEWAY_API_DEPLOYMENT_CONTROLLER', true),
    gatewayClassController: env.bool(e, 'PILOT_ENABLE_GATEWAY_API_GATEWAYCLASS_CONTROLLER', true),
    gatewayProxyImage: env.str(e, 'GATEWAY_PROXY_IMAGE', 'ambient-ts/waypoint:0.1.0'),
  });
}
