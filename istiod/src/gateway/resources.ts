/**
 * The ServiceAccount, Service and Deployment a managed Gateway gets (pure builders; upstream's `waypoint` and
 * `kube-gateway` templates and deploymentcontroller.go, facts only):
 *
 * - named `<gateway>` for waypoints, `<gateway>-<class>` for ingress (`gateway.istio.io/name-override` and
 *   `gateway.istio.io/service-account` annotations override), owned by the Gateway;
 * - labelled `gateway.networking.k8s.io/gateway-name=<gateway>` and `gateway.istio.io/managed=<controller>`, plus
 *   the Gateway's `spec.infrastructure` labels/annotations (else the Gateway's own, as Istio copies them);
 * - the Service selects the pods by gateway name; a waypoint's exposes 15021 `status-port` (appProtocol tcp) and
 *   15008 `mesh` (appProtocol all), an ingress gateway's 15021 and each listener port; its type comes from the
 *   `networking.istio.io/service-type` annotation (default ClusterIP for waypoints, LoadBalancer for ingress);
 * - the Deployment runs the proxy image with the environment ztunnel also reads (pod identity from the downward
 *   API, istiod's address, the projected `istio-ca` token and the `istio-ca-root-cert` ConfigMap), readiness on
 *   `:15021/healthz/ready`, non-root with every capability dropped, and its pods opted out of ambient capture
 *   (`istio.io/dataplane-mode=none`): a proxy's own traffic is never redirected.
 */
import type { ClassInfo } from './classes.ts';
import type { GatewayListener, GatewayObject, Manifest, OwnerReference } from './index.ts';
import {
  DATAPLANE_MODE_LABEL,
  GATEWAY_API_VERSION,
  GATEWAY_NAME_LABEL,
  HBONE_PORT,
  MANAGED_LABEL,
  METRICS_PORT,
  NAME_OVERRIDE_ANNOTATION,
  SERVICE_ACCOUNT_ANNOTATION,
  SERVICE_TYPE_ANNOTATION,
  STATUS_PORT,
} from './names.ts';

/** Everything the builders need besides the Gateway and its class. */
export interface BuildContext {
  /** The proxy image (waypoints and ingress gateways run the same L7 engine). */
  readonly image: string;
  /** `host:port` of istiod's TLS xDS and CA endpoint (15012). */
  readonly xdsAddress: string;
  readonly clusterId: string;
  readonly trustDomain: string;
}

export interface DesiredResources {
  readonly serviceAccount: Manifest;
  readonly service: Manifest;
  readonly deployment: Manifest;
}

/** The proxy runs as this non-root user and group (Istio's proxy UID/GID). */
const PROXY_UID = 1337;
/** Projected token lifetime; the kubelet refreshes it at 80% (Istio's value). */
const TOKEN_EXPIRATION_SECONDS = 43_200;
/**
 * Istio's waypoint template uses 2 s. Ours is 5 s: on SIGTERM the waypoint keeps accepting for its minimum drain
 * window (MINIMUM_DRAIN_DURATION, 2 s) while istiod moves ztunnels away from it, then lets in-flight requests
 * finish — so removing or rolling a waypoint refuses no connection (test/e2e/waypoint.test.ts).
 */
const WAYPOINT_TERMINATION_GRACE_SECONDS = 5;
/** Never copied from the Gateway: kubectl's bookkeeping would be huge and churn every object. */
const NOT_COPIED_ANNOTATIONS = new Set(['kubectl.kubernetes.io/last-applied-configuration']);
/** Labels in this prefix belong to the Gateway API itself and are not copied from `spec.infrastructure`. */
const GATEWAY_API_PREFIX = 'gateway.networking.k8s.io/';
/** A Service port name is a DNS label of at most 63 characters. */
const MAX_PORT_NAME = 63;

/** Upstream IsManaged: a Gateway with addresses other than one IP names an existing deployment we leave alone. */
export function isManagedGateway(gw: GatewayObject): boolean {
  const addresses = gw.spec?.addresses ?? [];
  if (addresses.length === 0) return true;
  if (addresses.length > 1) return false;
  const t = addresses[0]?.type;
  return t === undefined || t === 'IPAddress';
}

/** Name of the Deployment and Service: `<gw>` (waypoints) or `<gw>-<class>`, unless overridden. */
export function gatewayResourceName(gw: GatewayObject, info: ClassInfo): string {
  const override = gw.metadata?.annotations?.[NAME_OVERRIDE_ANNOTATION];
  if (override) return override;
  return defaultName(gw, info);
}

export function serviceAccountName(gw: GatewayObject, info: ClassInfo): string {
  return gw.metadata?.annotations?.[SERVICE_ACCOUNT_ANNOTATION] || defaultName(gw, info);
}

function defaultName(gw: GatewayObject, info: ClassInfo): string {
  const name = gw.metadata?.name ?? '';
  return info.disableNameSuffix ? name : `${name}-${gw.spec?.gatewayClassName ?? ''}`;
}

function infrastructureMetadata(gw: GatewayObject): {
  labels: Record<string, string>;
  annotations: Record<string, string>;
} {
  const infra = gw.spec?.infrastructure;
  const pick = (m: Readonly<Record<string, string>> | undefined, fromInfra: boolean) => {
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(m ?? {})) {
      if (fromInfra && k.startsWith(GATEWAY_API_PREFIX)) continue;
      if (NOT_COPIED_ANNOTATIONS.has(k)) continue;
      out[k] = v;
    }
    return out;
  };
  return {
    labels: infra?.labels ? pick(infra.labels, true) : pick(gw.metadata?.labels, false),
    annotations: infra?.annotations ? pick(infra.annotations, true) : pick(gw.metadata?.annotations, false),
  };
}

function ownerReference(gw: GatewayObject): OwnerReference {
  // No controller/blockOwnerDeletion (as upstream): deleting the Gateway needs no finalizer permission.
  return {
    apiVersion: GATEWAY_API_VERSION,
    kind: 'Gateway',
    name: gw.metadata?.name ?? '',
    uid: gw.metadata?.uid ?? '',
  };
}

/** A listener name made a valid Service port name (upstream sanitizeListenerNameForPort). */
function portName(l: GatewayListener, index: number): string {
  const name = (l.name ?? '').replaceAll('.', '-').slice(0, MAX_PORT_NAME);
  return name || `${(l.protocol ?? '').toLowerCase()}-${index}`;
}

function servicePorts(gw: GatewayObject, info: ClassInfo): Array<Record<string, unknown>> {
  const ports: Array<Record<string, unknown>> = [
    { name: 'status-port', port: STATUS_PORT, protocol: 'TCP', appProtocol: 'tcp' },
  ];
  if (info.proxyType === 'waypoint') {
    ports.push({ name: 'mesh', port: HBONE_PORT, protocol: 'TCP', appProtocol: 'all' });
    return ports;
  }
  const seen = new Set<number>([STATUS_PORT]);
  (gw.spec?.listeners ?? []).forEach((l, i) => {
    if (l.port === undefined || seen.has(l.port)) return;
    seen.add(l.port);
    ports.push({
      name: portName(l, i),
      port: l.port,
      protocol: 'TCP',
      appProtocol: (l.protocol ?? '').toLowerCase(),
    });
  });
  return ports;
}

function fieldEnv(name: string, fieldPath: string) {
  return { name, valueFrom: { fieldRef: { fieldPath } } };
}

export function buildResources(gw: GatewayObject, info: ClassInfo, ctx: BuildContext): DesiredResources {
  const gwName = gw.metadata?.name ?? '';
  const namespace = gw.metadata?.namespace ?? '';
  const name = gatewayResourceName(gw, info);
  const sa = serviceAccountName(gw, info);
  const infra = infrastructureMetadata(gw);
  const isWaypoint = info.proxyType === 'waypoint';

  // Upstream setLabelOverrides: a gateway that does not say otherwise is never captured; a waypoint never is.
  if (
    !isWaypoint &&
    infra.labels[DATAPLANE_MODE_LABEL] === undefined &&
    !gw.metadata?.labels?.[DATAPLANE_MODE_LABEL]
  )
    infra.labels[DATAPLANE_MODE_LABEL] = 'none';
  const labels: Record<string, string> = {
    ...infra.labels,
    [GATEWAY_NAME_LABEL]: gwName,
    [MANAGED_LABEL]: info.controllerLabel,
  };
  const metadata = (): Manifest['metadata'] => ({
    name,
    namespace,
    labels,
    ...(Object.keys(infra.annotations).length > 0 ? { annotations: infra.annotations } : {}),
    ownerReferences: [ownerReference(gw)],
  });
  const selector = { [GATEWAY_NAME_LABEL]: gwName };

  const serviceAccount: Manifest = {
    apiVersion: 'v1',
    kind: 'ServiceAccount',
    metadata: { ...metadata(), name: sa },
  };

  const serviceType = gw.metadata?.annotations?.[SERVICE_TYPE_ANNOTATION] || info.defaultServiceType;
  const service: Manifest = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: metadata(),
    spec: { type: serviceType, selector, ports: servicePorts(gw, info) },
  };

  const podLabels: Record<string, string> = {
    ...labels,
    'sidecar.istio.io/inject': 'false',
    'service.istio.io/canonical-name': name,
    'service.istio.io/canonical-revision': 'latest',
    ...(isWaypoint ? { [DATAPLANE_MODE_LABEL]: 'none' } : {}),
  };
  const podAnnotations: Record<string, string> = {
    ...infra.annotations,
    'prometheus.io/scrape': 'true',
    'prometheus.io/port': String(METRICS_PORT),
    'prometheus.io/path': '/stats/prometheus',
  };
  const containerPorts: Array<Record<string, unknown>> = [
    { name: 'status-port', containerPort: STATUS_PORT, protocol: 'TCP' },
    { name: 'metrics', containerPort: METRICS_PORT, protocol: 'TCP' },
  ];
  if (isWaypoint) containerPorts.unshift({ name: 'mesh', containerPort: HBONE_PORT, protocol: 'TCP' });
  const env = [
    fieldEnv('POD_NAME', 'metadata.name'),
    fieldEnv('POD_NAMESPACE', 'metadata.namespace'),
    fieldEnv('INSTANCE_IP', 'status.podIP'),
    fieldEnv('SERVICE_ACCOUNT', 'spec.serviceAccountName'),
    fieldEnv('NODE_NAME', 'spec.nodeName'),
    { name: 'PROXY_TYPE', value: info.proxyType },
    { name: 'GATEWAY_NAME', value: gwName },
    { name: 'XDS_ADDRESS', value: ctx.xdsAddress },
    { name: 'CA_ADDRESS', value: ctx.xdsAddress },
    { name: 'CLUSTER_ID', value: ctx.clusterId },
    { name: 'TRUST_DOMAIN', value: ctx.trustDomain },
    { name: 'ISTIO_META_CLUSTER_ID', value: ctx.clusterId },
    { name: 'ISTIO_META_WORKLOAD_NAME', value: name },
  ];
  const podSecurityContext: Record<string, unknown> = {
    runAsNonRoot: true,
    runAsUser: PROXY_UID,
    runAsGroup: PROXY_UID,
    fsGroup: PROXY_UID,
    seccompProfile: { type: 'RuntimeDefault' },
  };
  // An ingress listener may be a privileged port (80, 443); a non-root proxy may bind it (upstream does this).
  if (!isWaypoint) podSecurityContext.sysctls = [{ name: 'net.ipv4.ip_unprivileged_port_start', value: '0' }];
  const readiness = { httpGet: { path: '/healthz/ready', port: STATUS_PORT } };
  const deployment: Manifest = {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: metadata(),
    spec: {
      selector: { matchLabels: selector },
      template: {
        metadata: { labels: podLabels, annotations: podAnnotations },
        spec: {
          serviceAccountName: sa,
          ...(isWaypoint ? { terminationGracePeriodSeconds: WAYPOINT_TERMINATION_GRACE_SECONDS } : {}),
          securityContext: podSecurityContext,
          containers: [
            {
              name: 'istio-proxy',
              image: ctx.image,
              ports: containerPorts,
              env,
              // Fast first readiness (startup probe every second), then the usual period (Istio's values).
              startupProbe: { ...readiness, periodSeconds: 1, failureThreshold: 30 },
              readinessProbe: { ...readiness, periodSeconds: 15, failureThreshold: 4 },
              resources: {
                requests: { cpu: '100m', memory: '128Mi' },
                limits: { cpu: '2', memory: '1Gi' },
              },
              securityContext: {
                allowPrivilegeEscalation: false,
                privileged: false,
                readOnlyRootFilesystem: true,
                runAsNonRoot: true,
                runAsUser: PROXY_UID,
                runAsGroup: PROXY_UID,
                capabilities: { drop: ['ALL'] },
              },
              volumeMounts: [
                { name: 'istio-token', mountPath: '/var/run/secrets/tokens' },
                { name: 'istiod-ca-cert', mountPath: '/var/run/secrets/istio' },
                { name: 'tmp', mountPath: '/tmp' },
              ],
            },
          ],
          volumes: [
            {
              name: 'istio-token',
              projected: {
                sources: [
                  {
                    serviceAccountToken: {
                      audience: 'istio-ca',
                      expirationSeconds: TOKEN_EXPIRATION_SECONDS,
                      path: 'istio-token',
                    },
                  },
                ],
              },
            },
            { name: 'istiod-ca-cert', configMap: { name: 'istio-ca-root-cert' } },
            { name: 'tmp', emptyDir: {} },
          ],
        },
      },
    },
  };
  return { serviceAccount, service, deployment };
}

/**
 * True when `live` already has everything `desired` asks for: maps compared key by key (extra live keys, e.g.
 * server defaults or other managers' labels, are fine), lists element by element with the same length. Owner
 * references only need ours to be present. This is the "only write on change" test before a server-side apply.
 */
export function satisfies(desired: unknown, live: unknown, path = ''): boolean {
  if (path === 'metadata.ownerReferences') {
    const uids = new Set((Array.isArray(live) ? live : []).map((r: { uid?: string }) => r?.uid));
    return (desired as OwnerReference[]).every((r) => uids.has(r.uid));
  }
  if (Array.isArray(desired)) {
    if (!Array.isArray(live) || live.length !== desired.length) return false;
    return desired.every((d, i) => satisfies(d, live[i], `${path}[]`));
  }
  if (desired !== null && typeof desired === 'object') {
    if (live === null || typeof live !== 'object' || Array.isArray(live)) return false;
    for (const [k, v] of Object.entries(desired)) {
      if (v === undefined) continue;
      if (!satisfies(v, (live as Record<string, unknown>)[k], path ? `${path}.${k}` : k)) return false;
    }
    return true;
  }
  return desired === live;
}
