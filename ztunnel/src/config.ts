/**
 * ztunnel configuration, read once from the environment with Istio's ztunnel variable names, then frozen.
 */
import * as env from '../../pkg/config/index.ts';
import { LEVELS, type Level } from '../../pkg/telemetry/index.ts';

export interface ZtunnelConfig {
  /** istiod xDS endpoint (host:port, TLS) — XDS_ADDRESS. */
  readonly xdsAddress: string;
  /** istiod CA endpoint — CA_ADDRESS (defaults to the xDS address). */
  readonly caAddress: string;
  /** PEM root(s) used to verify istiod's serving certificate (the istio-ca-root-cert ConfigMap, mounted). */
  readonly xdsRootCaPath: string;
  /** Projected service-account token with audience istio-ca, sent as a bearer token. */
  readonly tokenPath: string;
  readonly clusterId: string;
  readonly trustDomain: string;
  readonly network: string;
  readonly nodeName: string;
  readonly podName: string;
  readonly podNamespace: string;
  readonly instanceIp: string;
  /** ZDS socket served by the CNI node agent — INPOD_UDS. */
  readonly inpodUds: string;
  /** SO_MARK on every socket ztunnel opens in a pod netns (1337) — INPOD_MARK. */
  readonly inpodMark: number;
  /** Ports inside each pod netns. */
  readonly outboundPort: number;
  readonly inboundPlaintextPort: number;
  readonly inboundPort: number;
  readonly dnsPort: number;
  /** Ports in ztunnel's own netns. */
  readonly adminPort: number;
  readonly statsPort: number;
  readonly readinessPort: number;
  /** Lifetime asked of the CA for workload certificates (Istio: 24h). */
  readonly workloadCertTtlMs: number;
  /** How long SIGTERM waits for connections to finish — TERMINATION_GRACE_PERIOD_SECONDS-ish. */
  readonly drainGraceMs: number;
  readonly logLevel: Level;
}

export function loadConfig(e: env.Env = process.env): ZtunnelConfig {
  const xds = env.str(e, 'XDS_ADDRESS', 'istiod.istio-system.svc:15012');
  return env.freeze({
    xdsAddress: xds,
    caAddress: env.str(e, 'CA_ADDRESS', xds),
    xdsRootCaPath: env.str(e, 'XDS_ROOT_CA', '/var/run/secrets/istio/root-cert.pem'),
    tokenPath: env.str(e, 'PROXY_TOKEN', '/var/run/secrets/tokens/istio-token'),
    clusterId: env.str(e, 'CLUSTER_ID', 'Kubernetes'),
    trustDomain: env.str(e, 'TRUST_DOMAIN', 'cluster.local'),
    network: env.str(e, 'NETWORK', ''),
    nodeName: env.str(e, 'NODE_NAME', ''),
    podName: env.str(e, 'POD_NAME', 'ztunnel'),
    podNamespace: env.str(e, 'POD_NAMESPACE', 'istio-system'),
    instanceIp: env.str(e, 'INSTANCE_IP', '127.0.0.1'),
    inpodUds: env.str(e, 'INPOD_UDS', '/var/run/ztunnel/ztunnel.sock'),
    inpodMark: env.int(e, 'INPOD_MARK', 0x539, { min: 1, max: 0xffffffff }),
    outboundPort: 15001,
    inboundPlaintextPort: 15006,
    inboundPort: 15008,
    dnsPort: 15053,
    adminPort: env.int(e, 'ADMIN_PORT', 15000, { min: 0, max: 65535 }),
    statsPort: env.int(e, 'STATS_PORT', 15020, { min: 0, max: 65535 }),
    readinessPort: env.int(e, 'READINESS_PORT', 15021, { min: 0, max: 65535 }),
    workloadCertTtlMs: env.duration(e, 'SECRET_TTL', 24 * 3600_000, { minMs: 60_000 }),
    drainGraceMs: env.duration(e, 'DRAIN_DURATION', 5_000),
    logLevel: env.oneOf(e, 'LOG_LEVEL', 'info', LEVELS),
  });
}
