/**
 * Test support: fully populated sample messages, keyed by fully qualified proto name. Every field
 * of every message is set to a non-default value in at least one sample, repeated fields and maps
 * hold two or more entries, enums use non-zero values, and each oneof appears in every branch.
 * `roundtrip.test.ts` checks that claim against protoc's descriptors, so a field added to a
 * .proto without a sample here fails the tests.
 */
import * as wp from '../gen/ambient/waypoint/v1/waypoint.ts';
import * as core from '../gen/envoy/config/core/v3/base.ts';
import * as discovery from '../gen/envoy/service/discovery/v3/discovery.ts';
import * as semver from '../gen/envoy/type/v3/semantic_version.ts';
import * as rpc from '../gen/google/rpc/status.ts';
import * as security from '../gen/istio/security/authorization.ts';
import * as ca from '../gen/istio/v1/auth/ca.ts';
import * as wl from '../gen/istio/workload/workload.ts';
import * as zds from '../gen/istio/workload/zds/zds.ts';

const ip4 = (a: number, b: number, c: number, d: number): Uint8Array => new Uint8Array([a, b, c, d]);
const ip6 = new Uint8Array([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
const anyOf = (name: string, ...bytes: number[]) => ({
  typeUrl: `type.googleapis.com/example.${name}`,
  value: new Uint8Array(bytes),
});
/** A Struct exercising every google.protobuf.Value kind. */
const struct = {
  NAME: 'reviews-v1-abc',
  NAMESPACE: 'default',
  LABELS: { app: 'reviews', version: 'v1' },
  PORTS: [9080, 15008.5],
  MESH: true,
  NOTHING: null,
};

// ---- istio.workload ----

const port1 = wl.Port.fromPartial({
  servicePort: 9080,
  targetPort: 19080,
  appProtocol: wl.AppProtocol.HTTP2,
});
const port2 = wl.Port.fromPartial({ servicePort: 443, targetPort: 8443, appProtocol: wl.AppProtocol.TLS });
const portList = wl.PortList.fromPartial({ ports: [port1, port2] });
const netAddr = wl.NetworkAddress.fromPartial({ network: 'net-west', address: ip4(10, 96, 0, 12) });
const netAddr6 = wl.NetworkAddress.fromPartial({ network: 'net-east', address: ip6 });
const hostname = wl.NamespacedHostname.fromPartial({
  namespace: 'istio-system',
  hostname: 'waypoint.istio-system.svc.cluster.local',
});
const gwByHost = wl.GatewayAddress.fromPartial({
  destination: { $case: 'hostname', value: hostname },
  hboneMtlsPort: 15008,
});
const gwByAddr = wl.GatewayAddress.fromPartial({
  destination: { $case: 'address', value: netAddr },
  hboneMtlsPort: 15009,
});
const locality = wl.Locality.fromPartial({ region: 'eu-west1', zone: 'eu-west1-b', subzone: 'rack-7' });
const appTunnel = wl.ApplicationTunnel.fromPartial({
  protocol: wl.ApplicationTunnel_Protocol.PROXY,
  port: 15088,
});
const wlExtension = wl.Extension.fromPartial({ name: 'vendor.example/x', config: anyOf('Cfg', 8, 1) });
const loadBalancing = wl.LoadBalancing.fromPartial({
  routingPreference: [
    wl.LoadBalancing_Scope.NETWORK,
    wl.LoadBalancing_Scope.REGION,
    wl.LoadBalancing_Scope.NODE,
  ],
  mode: wl.LoadBalancing_Mode.FAILOVER,
  healthPolicy: wl.LoadBalancing_HealthPolicy.ALLOW_ALL,
  dnsConnectStrategy: wl.LoadBalancing_DnsConnectStrategy.FIRST_HEALTHY_RACE,
});

export const workload = wl.Workload.fromPartial({
  uid: 'Kubernetes//Pod/default/reviews-v1-abc',
  name: 'reviews-v1-abc',
  namespace: 'default',
  addresses: [ip4(10, 244, 1, 7), ip6],
  hostname: 'reviews-v1-abc.example.internal',
  network: 'net-west',
  tunnelProtocol: wl.TunnelProtocol.HBONE,
  trustDomain: 'cluster.local',
  serviceAccount: 'bookinfo-reviews',
  waypoint: gwByHost,
  networkGateway: gwByAddr,
  node: 'node-a',
  canonicalName: 'reviews',
  canonicalRevision: 'v1',
  workloadType: wl.WorkloadType.POD,
  workloadName: 'reviews-v1',
  nativeTunnel: true,
  applicationTunnel: appTunnel,
  services: {
    'default/reviews.default.svc.cluster.local': portList,
    'default/reviews-canary.default.svc.cluster.local': wl.PortList.fromPartial({ ports: [port2] }),
  },
  authorizationPolicies: ['default/allow-productpage', 'default/deny-all-else'],
  status: wl.WorkloadStatus.UNHEALTHY,
  clusterId: 'Kubernetes',
  locality,
  networkMode: wl.NetworkMode.HOST_NETWORK,
  extensions: [wlExtension, wl.Extension.fromPartial({ name: 'second', config: anyOf('Other') })],
  capacity: 3,
});

export const service = wl.Service.fromPartial({
  name: 'reviews',
  namespace: 'default',
  hostname: 'reviews.default.svc.cluster.local',
  addresses: [netAddr, netAddr6],
  ports: [port1, port2],
  subjectAltNames: [
    'spiffe://cluster.local/ns/default/sa/reviews',
    'spiffe://other.local/ns/default/sa/reviews',
  ],
  waypoint: gwByAddr,
  loadBalancing,
  ipFamilies: wl.IPFamilies.DUAL,
  extensions: [wlExtension, wlExtension],
  canonical: true,
  ingressUseWaypoint: true,
});

// ---- istio.security ----

const sm = {
  exact: security.StringMatch.fromPartial({ matchType: { $case: 'exact', value: 'default' } }),
  prefix: security.StringMatch.fromPartial({ matchType: { $case: 'prefix', value: 'cluster.local/ns/' } }),
  suffix: security.StringMatch.fromPartial({ matchType: { $case: 'suffix', value: '/sa/reviews' } }),
  presence: security.StringMatch.fromPartial({ matchType: { $case: 'presence', value: {} } }),
};
const cidr = (address: Uint8Array, length: number) => security.Address.fromPartial({ address, length });
const saMatch = security.ServiceAccountMatch.fromPartial({
  namespace: 'default',
  serviceAccount: 'productpage',
});
const saMatch2 = security.ServiceAccountMatch.fromPartial({
  namespace: 'istio-system',
  serviceAccount: 'gateway',
});
const match = security.Match.fromPartial({
  namespaces: [sm.exact, sm.prefix],
  notNamespaces: [sm.suffix, sm.presence],
  serviceAccounts: [saMatch, saMatch2],
  notServiceAccounts: [saMatch2, saMatch],
  principals: [sm.prefix, sm.exact],
  notPrincipals: [sm.presence, sm.suffix],
  sourceIps: [cidr(ip4(10, 0, 0, 0), 8), cidr(ip6, 64)],
  notSourceIps: [cidr(ip4(10, 1, 0, 0), 16), cidr(ip4(192, 168, 1, 1), 32)],
  destinationIps: [cidr(ip4(172, 16, 0, 0), 12), cidr(ip6, 128)],
  notDestinationIps: [cidr(ip4(172, 16, 5, 0), 24), cidr(ip4(172, 16, 6, 0), 24)],
  destinationPorts: [9080, 15021, 70000],
  notDestinationPorts: [22, 2379],
});
const clause = security.Clause.fromPartial({
  matches: [match, security.Match.fromPartial({ destinationPorts: [80] })],
});
const rule = security.Rule.fromPartial({ clauses: [clause, clause] });

export const authorization = security.Authorization.fromPartial({
  name: 'allow-productpage',
  namespace: 'default',
  scope: security.Scope.WORKLOAD_SELECTOR,
  action: security.Action.DENY,
  rules: [rule, security.Rule.fromPartial({ clauses: [clause] })],
  dryRun: true,
});

// ---- istio.v1.auth ----

const roots = ca.Roots.fromPartial({
  caCert: ['-----BEGIN CERTIFICATE-----\nroot1', '-----BEGIN CERTIFICATE-----\nroot2'],
});

// ---- istio.workload.zds ----

const windowsNs = zds.WindowsNamespace.fromPartial({
  id: 4242,
  guid: '8f3e0c1a-0000-4000-8000-000000000001',
});
const workloadInfo = zds.WorkloadInfo.fromPartial({
  name: 'reviews-v1-abc',
  namespace: 'default',
  serviceAccount: 'bookinfo-reviews',
  windowsNamespace: windowsNs,
});
const addWorkload = zds.AddWorkload.fromPartial({ uid: 'pod-uid-1', workloadInfo });
const keepWorkload = zds.KeepWorkload.fromPartial({ uid: 'pod-uid-2' });
const delWorkload = zds.DelWorkload.fromPartial({ uid: 'pod-uid-3' });
const ack = zds.Ack.fromPartial({ error: 'netns for pod-uid-1 is gone' });

// ---- envoy ----

const semVer = semver.SemanticVersion.fromPartial({ majorNumber: 1, minorNumber: 28, patch: 3 });
const buildVersion = core.BuildVersion.fromPartial({
  version: semVer,
  metadata: { 'revision.sha': 'abc', dirty: false },
});
const coreExtension = core.Extension.fromPartial({
  name: 'envoy.filters.http.router',
  category: 'envoy.filters.http',
  typeDescriptor: 'legacy',
  version: buildVersion,
  disabled: true,
  typeUrls: ['type.googleapis.com/a.B', 'type.googleapis.com/c.D'],
});
const coreLocality = core.Locality.fromPartial({
  region: 'us-east1',
  zone: 'us-east1-c',
  subZone: 'k8s-node-3',
});
const nodeBase = {
  id: 'ztunnel~10.244.1.3~ztunnel-x7k2.istio-system~istio-system.svc.cluster.local',
  cluster: 'Kubernetes',
  metadata: struct,
  locality: coreLocality,
  userAgentName: 'ambient-ts-ztunnel',
  extensions: [coreExtension, core.Extension.fromPartial({ name: 'second' })],
  clientFeatures: ['envoy.lb.does_not_support_overprovisioning', 'xds.config.resource-in-sotw'],
};
export const node = core.Node.fromPartial({
  ...nodeBase,
  userAgentVersionType: { $case: 'userAgentVersion', value: '0.1.0' },
});
const nodeWithBuild = core.Node.fromPartial({
  ...nodeBase,
  userAgentVersionType: { $case: 'userAgentBuildVersion', value: buildVersion },
});
const metadata = core.Metadata.fromPartial({
  filterMetadata: { 'istio.workload': { uid: 'x' }, 'envoy.lb': { canary: true } },
  typedFilterMetadata: { 'com.example.a': anyOf('A', 1), 'com.example.b': anyOf('B', 2, 3) },
});
const controlPlane = core.ControlPlane.fromPartial({ identifier: 'istiod-5d9f7-abc' });
const status = rpc.Status.fromPartial({
  code: 3,
  message: 'rejected Address default/reviews: bad ip length 5',
  details: [anyOf('BadRequest', 10, 0), anyOf('DebugInfo', 18, 1, 120)],
});
const locator = discovery.ResourceLocator.fromPartial({
  name: 'default/reviews.default.svc.cluster.local',
  dynamicParameters: { shard: '3', tier: 'gold' },
});
const locator2 = discovery.ResourceLocator.fromPartial({
  name: 'other',
  dynamicParameters: { a: '1', b: '2' },
});
const single = discovery.DynamicParameterConstraints_SingleConstraint.fromPartial({
  key: 'shard',
  constraintType: { $case: 'value', value: '3' },
});
const singleExists = discovery.DynamicParameterConstraints_SingleConstraint.fromPartial({
  key: 'tier',
  constraintType: { $case: 'exists', value: {} },
});
const leaf = discovery.DynamicParameterConstraints.fromPartial({
  type: { $case: 'constraint', value: single },
});
const leaf2 = discovery.DynamicParameterConstraints.fromPartial({
  type: { $case: 'constraint', value: singleExists },
});
const constraintList = discovery.DynamicParameterConstraints_ConstraintList.fromPartial({
  constraints: [leaf, leaf2],
});
const resourceName = discovery.ResourceName.fromPartial({
  name: 'default/reviews.default.svc.cluster.local',
  dynamicParameterConstraints: discovery.DynamicParameterConstraints.fromPartial({
    type: { $case: 'andConstraints', value: constraintList },
  }),
});
const resourceName2 = discovery.ResourceName.fromPartial({
  name: 'gone',
  dynamicParameterConstraints: leaf2,
});
const addressAny = {
  typeUrl: 'type.googleapis.com/istio.workload.Address',
  value: wl.Address.encode(
    wl.Address.fromPartial({ type: { $case: 'service', value: { name: 'reviews', namespace: 'default' } } }),
  ).finish(),
};
const resource = discovery.Resource.fromPartial({
  name: 'Kubernetes//Pod/default/reviews-v1-abc',
  resourceName,
  aliases: ['net-west/10.244.1.7', 'net-east/fd00::7'],
  version: '2024-05-01T00:00:00Z/42',
  resource: addressAny,
  ttl: { seconds: 30n, nanos: 500_000_000 },
  cacheControl: discovery.Resource_CacheControl.fromPartial({ doNotCache: true }),
  metadata,
});

// ---- ambient.waypoint.v1 ----

const wpSm = {
  exact: wp.StringMatch.fromPartial({ kind: { $case: 'exact', value: '/productpage' } }),
  prefix: wp.StringMatch.fromPartial({ kind: { $case: 'prefix', value: '/static' }, ignoreCase: true }),
  regex: wp.StringMatch.fromPartial({ kind: { $case: 'regex', value: '.*Mobile.*' } }),
  suffix: wp.StringMatch.fromPartial({ kind: { $case: 'suffix', value: '.css' } }),
  present: wp.StringMatch.fromPartial({ kind: { $case: 'present', value: true } }),
  pathPrefix: wp.StringMatch.fromPartial({ kind: { $case: 'pathSeparatedPrefix', value: '/api/v1' } }),
};
const wpHeaderMatch = wp.HeaderMatch.fromPartial({ name: 'end-user', value: wpSm.exact, invert: true });
const wpHeaderMatch2 = wp.HeaderMatch.fromPartial({ name: 'user-agent', value: wpSm.regex });
const wpRouteMatch = wp.RouteMatch.fromPartial({
  path: wpSm.pathPrefix,
  headers: [wpHeaderMatch, wpHeaderMatch2],
  queryParams: [
    wp.HeaderMatch.fromPartial({ name: 'debug', value: wpSm.present }),
    wp.HeaderMatch.fromPartial({ name: 'v', value: wpSm.suffix }),
  ],
  method: wp.StringMatch.fromPartial({ kind: { $case: 'exact', value: 'GET' } }),
  authority: wpSm.prefix,
  port: 9080,
});
const wpHeaderValue = wp.HeaderValue.fromPartial({ name: 'x-route', value: 'v2' });
const wpHeaderValue2 = wp.HeaderValue.fromPartial({ name: 'x-canary', value: 'true' });
const wpMutation = wp.HeaderMutation.fromPartial({
  set: [wpHeaderValue, wpHeaderValue2],
  add: [wpHeaderValue2, wpHeaderValue],
  remove: ['x-debug', 'cookie'],
});
const wpBackend = wp.WeightedBackend.fromPartial({
  service: 'default/reviews.default.svc.cluster.local',
  port: 9080,
  subset: 'v2',
  weight: 60,
  requestHeaders: wpMutation,
  responseHeaders: wpMutation,
  errorStatus: 500,
});
const wpBackend2 = wp.WeightedBackend.fromPartial({
  service: 'default/reviews-v3.default.svc.cluster.local',
  weight: 40,
});
const wpRedirect = wp.Redirect.fromPartial({
  scheme: 'https',
  host: 'bookinfo.example.com',
  port: 8443,
  fullPath: '/login',
  prefixReplace: '/v2',
  statusCode: 302,
});
const wpDirect = wp.DirectResponse.fromPartial({ status: 503, body: 'maintenance' });
const wpRewrite = wp.Rewrite.fromPartial({
  fullPath: '/productpage',
  prefixReplace: '/',
  host: 'productpage.default.svc.cluster.local',
  regexMatch: '^/v1/(.*)$',
  regexSubstitution: '/\\1',
});
const wpMirror = wp.Mirror.fromPartial({
  service: 'default/reviews.default.svc.cluster.local',
  port: 9080,
  subset: 'v3',
  percent: 12.5,
});
const wpAbort = wp.Fault_Abort.fromPartial({ httpStatus: 403, grpcStatus: 7, percent: 30 });
const wpDelay = wp.Fault_Delay.fromPartial({ fixedDelayMs: 7000, percent: 50 });
const wpFault = wp.Fault.fromPartial({ abort: wpAbort, delay: wpDelay });
const wpRetry = wp.RetryPolicy.fromPartial({
  attempts: 3,
  perTryTimeoutMs: 500,
  retryOn: ['5xx', 'connect-failure'],
  retriableStatusCodes: [503, 429],
  backoffBaseMs: 25,
});
const wpAction = wp.RouteAction.fromPartial({
  backends: [wpBackend, wpBackend2],
  redirect: wpRedirect,
  directResponse: wpDirect,
  rewrite: wpRewrite,
  requestHeaders: wpMutation,
  responseHeaders: wpMutation,
  mirrors: [wpMirror, wp.Mirror.fromPartial({ service: 'default/ratings.default.svc.cluster.local' })],
  fault: wpFault,
  timeoutMs: 1000,
  retries: wpRetry,
});
const wpSource = wp.RouteSource.fromPartial({ kind: 'HTTPRoute', namespace: 'default', name: 'reviews' });
const wpRoute = wp.Route.fromPartial({
  name: 'default.reviews.0',
  source: wpSource,
  ports: [9080, 9443],
  matches: [wpRouteMatch, wp.RouteMatch.fromPartial({ path: wpSm.exact })],
  action: wpAction,
});
const wpConsistentHash = wp.ConsistentHash.fromPartial({
  key: { $case: 'httpHeaderName', value: 'x-user' },
  minimumRingSize: 1024n,
});
const wpLoadBalancer = wp.LoadBalancer.fromPartial({
  simple: wp.LoadBalancer_Simple.LEAST_REQUEST,
  consistentHash: wpConsistentHash,
});
const wpPool = wp.ConnectionPool.fromPartial({
  maxConnections: 1,
  http1MaxPendingRequests: 2,
  http2MaxRequests: 3,
  maxRequestsPerConnection: 1,
  maxRetries: 4,
  connectTimeoutMs: 250,
  idleTimeoutMs: 60_000,
});
const wpOutlier = wp.OutlierDetection.fromPartial({
  enabled: true,
  consecutive5xxErrors: 5,
  consecutiveGatewayErrors: 3,
  intervalMs: 10_000,
  baseEjectionTimeMs: 30_000,
  maxEjectionPercent: 50,
  minHealthPercent: 10,
});
const wpPolicy = wp.TrafficPolicy.fromPartial({
  loadBalancer: wpLoadBalancer,
  connectionPool: wpPool,
  outlierDetection: wpOutlier,
});
const wpSubset = wp.Subset.fromPartial({
  name: 'v2',
  labels: { version: 'v2', app: 'reviews' },
  trafficPolicy: wpPolicy,
});
const wpPort = wp.ServicePort.fromPartial({ port: 9080, targetPort: 19080, name: 'http', protocol: 'http' });
const wpPort2 = wp.ServicePort.fromPartial({
  port: 9443,
  targetPort: 8443,
  name: 'grpc-x',
  protocol: 'grpc',
});
const wpEndpoint = wp.Endpoint.fromPartial({
  workloadUid: 'Kubernetes//Pod/default/reviews-v2-abc',
  address: '10.244.1.8',
  ports: { 9080: 19080, 9443: 8443 },
  identity: 'spiffe://cluster.local/ns/default/sa/bookinfo-reviews',
  healthy: true,
  hbone: true,
  subsets: ['v2', 'not-v1'],
  node: 'node-a',
  workloadName: 'reviews-v2',
  workloadNamespace: 'default',
  canonicalService: 'reviews',
  canonicalRevision: 'v2',
  serviceAccount: 'bookinfo-reviews',
});
const wpSourceMatch = wp.AuthzSource.fromPartial({
  principals: ['cluster.local/ns/default/sa/bookinfo-productpage', 'cluster.local/ns/default/sa/*'],
  notPrincipals: ['*/sa/bad', 'x*'],
  requestPrincipals: ['issuer/subject', '*'],
  notRequestPrincipals: ['bad/*', 'x'],
  namespaces: ['default', 'bookinfo'],
  notNamespaces: ['kube-system', 'other'],
  ipBlocks: ['10.0.0.0/8', '192.168.1.1'],
  notIpBlocks: ['10.1.0.0/16', '10.2.0.0/16'],
  remoteIpBlocks: ['203.0.113.0/24', '198.51.100.7'],
  notRemoteIpBlocks: ['203.0.113.9', '198.51.100.0/24'],
  serviceAccounts: ['default/bookinfo-productpage', 'default/sleep'],
  notServiceAccounts: ['default/bad', 'other/x'],
});
const wpOperation = wp.AuthzOperation.fromPartial({
  hosts: ['details', 'details.default.svc.cluster.local'],
  notHosts: ['evil.example', '*.evil'],
  ports: ['9080', '15021'],
  notPorts: ['22', '2379'],
  methods: ['GET', 'HEAD'],
  notMethods: ['DELETE', 'PUT'],
  paths: ['/details/*', '/health'],
  notPaths: ['/admin*', '/debug'],
});
const wpCondition = wp.AuthzCondition.fromPartial({
  key: 'request.auth.claims[iss]',
  values: ['testing@secure.istio.io', 'other@issuer'],
  notValues: ['bad@issuer', 'x'],
});
const wpRule = wp.AuthzRule.fromPartial({
  from: [wpSourceMatch, wp.AuthzSource.fromPartial({ namespaces: ['x'] })],
  to: [wpOperation, wp.AuthzOperation.fromPartial({ methods: ['POST'] })],
  when: [wpCondition, wp.AuthzCondition.fromPartial({ key: 'source.ip', values: ['10.0.0.1'] })],
});
const wpAuthz = wp.AuthzPolicy.fromPartial({
  name: 'allow-details',
  namespace: 'default',
  action: wp.AuthzPolicy_Action.CUSTOM,
  rules: [wpRule, wp.AuthzRule.fromPartial({})],
  dryRun: true,
});
const wpJwtHeader = wp.JwtHeader.fromPartial({ name: 'authorization', prefix: 'Bearer ' });
const wpClaim = wp.ClaimToHeader.fromPartial({ header: 'x-jwt-sub', claim: 'sub' });
const wpJwt = wp.JwtRule.fromPartial({
  issuer: 'testing@secure.istio.io',
  audiences: ['bookinfo', 'reviews'],
  jwksUri: 'https://example.com/jwks.json',
  jwks: '{"keys":[]}',
  fromHeaders: [wpJwtHeader, wp.JwtHeader.fromPartial({ name: 'x-jwt' })],
  fromParams: ['token', 'access_token'],
  fromCookies: ['session', 'jwt'],
  outputPayloadToHeader: 'x-jwt-payload',
  forwardOriginalToken: true,
  outputClaimToHeaders: [wpClaim, wp.ClaimToHeader.fromPartial({ header: 'x-jwt-iss', claim: 'iss' })],
  source: 'default/jwt-example',
  jwksFetchTimeoutMs: 5000,
});
const wpServiceConfig = wp.ServiceConfig.fromPartial({
  name: 'default/reviews.default.svc.cluster.local',
  namespace: 'default',
  hostname: 'reviews.default.svc.cluster.local',
  serviceName: 'reviews',
  addresses: ['10.96.0.12', 'fd00::12'],
  ports: [wpPort, wpPort2],
  waypoints: ['default/waypoint', 'istio-system/shared'],
  endpoints: [wpEndpoint, wp.Endpoint.fromPartial({ address: '10.244.2.9' })],
  subsets: [wpSubset, wp.Subset.fromPartial({ name: 'v1', labels: { version: 'v1' } })],
  trafficPolicy: wpPolicy,
  routes: [wpRoute, wp.Route.fromPartial({ name: 'default' })],
  authorization: [wpAuthz, wp.AuthzPolicy.fromPartial({ name: 'deny', action: wp.AuthzPolicy_Action.DENY })],
  jwtRules: [wpJwt, wp.JwtRule.fromPartial({ issuer: 'other' })],
  routeSource: wpSource,
  resolution: 'DNS',
});

/** Fully qualified proto name -> samples. */
export const SAMPLES: Readonly<Record<string, readonly unknown[]>> = {
  'ambient.waypoint.v1.ServiceConfig': [wpServiceConfig],
  'ambient.waypoint.v1.ServicePort': [wpPort, wpPort2],
  'ambient.waypoint.v1.Endpoint': [wpEndpoint],
  'ambient.waypoint.v1.Endpoint.PortsEntry': [
    wp.Endpoint_PortsEntry.fromPartial({ key: 9080, value: 19080 }),
  ],
  'ambient.waypoint.v1.Subset': [wpSubset],
  'ambient.waypoint.v1.Subset.LabelsEntry': [
    wp.Subset_LabelsEntry.fromPartial({ key: 'version', value: 'v2' }),
  ],
  'ambient.waypoint.v1.TrafficPolicy': [wpPolicy],
  'ambient.waypoint.v1.LoadBalancer': [wpLoadBalancer],
  'ambient.waypoint.v1.ConsistentHash': [
    wpConsistentHash,
    wp.ConsistentHash.fromPartial({ key: { $case: 'httpCookie', value: 'session' } }),
    wp.ConsistentHash.fromPartial({ key: { $case: 'useSourceIp', value: true } }),
    wp.ConsistentHash.fromPartial({ key: { $case: 'httpQueryParameterName', value: 'user' } }),
  ],
  'ambient.waypoint.v1.ConnectionPool': [wpPool],
  'ambient.waypoint.v1.OutlierDetection': [wpOutlier],
  'ambient.waypoint.v1.RouteSource': [wpSource],
  'ambient.waypoint.v1.Route': [wpRoute],
  'ambient.waypoint.v1.StringMatch': Object.values(wpSm),
  'ambient.waypoint.v1.HeaderMatch': [wpHeaderMatch, wpHeaderMatch2],
  'ambient.waypoint.v1.RouteMatch': [wpRouteMatch],
  'ambient.waypoint.v1.RouteAction': [wpAction],
  'ambient.waypoint.v1.WeightedBackend': [wpBackend, wpBackend2],
  'ambient.waypoint.v1.Redirect': [wpRedirect],
  'ambient.waypoint.v1.DirectResponse': [wpDirect],
  'ambient.waypoint.v1.Rewrite': [wpRewrite],
  'ambient.waypoint.v1.HeaderValue': [wpHeaderValue],
  'ambient.waypoint.v1.HeaderMutation': [wpMutation],
  'ambient.waypoint.v1.Mirror': [wpMirror],
  'ambient.waypoint.v1.Fault': [wpFault],
  'ambient.waypoint.v1.Fault.Abort': [wpAbort],
  'ambient.waypoint.v1.Fault.Delay': [wpDelay],
  'ambient.waypoint.v1.RetryPolicy': [wpRetry],
  'ambient.waypoint.v1.AuthzPolicy': [wpAuthz],
  'ambient.waypoint.v1.AuthzRule': [wpRule],
  'ambient.waypoint.v1.AuthzSource': [wpSourceMatch],
  'ambient.waypoint.v1.AuthzOperation': [wpOperation],
  'ambient.waypoint.v1.AuthzCondition': [wpCondition],
  'ambient.waypoint.v1.JwtRule': [wpJwt],
  'ambient.waypoint.v1.JwtHeader': [wpJwtHeader],
  'ambient.waypoint.v1.ClaimToHeader': [wpClaim],

  'istio.workload.Address': [
    wl.Address.fromPartial({ type: { $case: 'workload', value: workload } }),
    wl.Address.fromPartial({ type: { $case: 'service', value: service } }),
  ],
  'istio.workload.Service': [service],
  'istio.workload.LoadBalancing': [loadBalancing],
  'istio.workload.Workload': [workload],
  'istio.workload.Workload.ServicesEntry': [
    wl.Workload_ServicesEntry.fromPartial({ key: 'ns/h', value: portList }),
  ],
  'istio.workload.Locality': [locality],
  'istio.workload.PortList': [portList],
  'istio.workload.Port': [port1, port2],
  'istio.workload.ApplicationTunnel': [appTunnel],
  'istio.workload.GatewayAddress': [gwByHost, gwByAddr],
  'istio.workload.NetworkAddress': [netAddr, netAddr6],
  'istio.workload.NamespacedHostname': [hostname],
  'istio.workload.Extension': [wlExtension],

  'istio.security.Authorization': [authorization],
  'istio.security.Rule': [rule],
  'istio.security.Clause': [clause],
  'istio.security.Match': [match],
  'istio.security.Address': [cidr(ip4(10, 0, 0, 0), 8), cidr(ip6, 64)],
  'istio.security.ServiceAccountMatch': [saMatch],
  'istio.security.StringMatch': [sm.exact, sm.prefix, sm.suffix, sm.presence],

  'istio.v1.auth.IstioCertificateRequest': [
    ca.IstioCertificateRequest.fromPartial({
      csr: '-----BEGIN CERTIFICATE REQUEST-----\nMIIB',
      validityDuration: 86_400n,
      metadata: { ImpersonatedIdentity: 'spiffe://cluster.local/ns/default/sa/reviews', other: [1, 'two'] },
    }),
    // int64 beyond 2^53 must survive exactly.
    ca.IstioCertificateRequest.fromPartial({
      csr: 'x',
      validityDuration: 9_007_199_254_740_993n,
      metadata: {},
    }),
  ],
  'istio.v1.auth.IstioCertificateResponse': [
    ca.IstioCertificateResponse.fromPartial({ certChain: ['leaf', 'intermediate'], rootCert: roots }),
  ],
  'istio.v1.auth.Roots': [roots],

  'istio.workload.zds.ZdsHello': [zds.ZdsHello.fromPartial({ version: zds.Version.V1 })],
  'istio.workload.zds.WorkloadInfo': [workloadInfo],
  'istio.workload.zds.WindowsNamespace': [windowsNs],
  'istio.workload.zds.AddWorkload': [addWorkload],
  'istio.workload.zds.KeepWorkload': [keepWorkload],
  'istio.workload.zds.DelWorkload': [delWorkload],
  'istio.workload.zds.SnapshotSent': [zds.SnapshotSent.fromPartial({})],
  'istio.workload.zds.Ack': [ack],
  'istio.workload.zds.WorkloadRequest': [
    zds.WorkloadRequest.fromPartial({ payload: { $case: 'add', value: addWorkload } }),
    zds.WorkloadRequest.fromPartial({ payload: { $case: 'keep', value: keepWorkload } }),
    zds.WorkloadRequest.fromPartial({ payload: { $case: 'del', value: delWorkload } }),
    zds.WorkloadRequest.fromPartial({ payload: { $case: 'snapshotSent', value: {} } }),
  ],
  'istio.workload.zds.WorkloadResponse': [
    zds.WorkloadResponse.fromPartial({ payload: { $case: 'ack', value: ack } }),
  ],

  'envoy.type.v3.SemanticVersion': [semVer],
  'envoy.config.core.v3.Locality': [coreLocality],
  'envoy.config.core.v3.BuildVersion': [buildVersion],
  'envoy.config.core.v3.Extension': [coreExtension],
  'envoy.config.core.v3.Node': [node, nodeWithBuild],
  'envoy.config.core.v3.Metadata': [metadata],
  'envoy.config.core.v3.Metadata.FilterMetadataEntry': [
    core.Metadata_FilterMetadataEntry.fromPartial({ key: 'k', value: { a: 1 } }),
  ],
  'envoy.config.core.v3.Metadata.TypedFilterMetadataEntry': [
    core.Metadata_TypedFilterMetadataEntry.fromPartial({ key: 'k', value: anyOf('T', 1) }),
  ],
  'envoy.config.core.v3.ControlPlane': [controlPlane],

  'google.rpc.Status': [status],

  'envoy.service.discovery.v3.ResourceLocator': [locator],
  'envoy.service.discovery.v3.ResourceLocator.DynamicParametersEntry': [
    discovery.ResourceLocator_DynamicParametersEntry.fromPartial({ key: 'shard', value: '3' }),
  ],
  'envoy.service.discovery.v3.ResourceName': [resourceName],
  'envoy.service.discovery.v3.DiscoveryRequest': [
    discovery.DiscoveryRequest.fromPartial({
      versionInfo: '2024-05-01/41',
      node,
      resourceNames: ['a', 'b'],
      resourceLocators: [locator, locator2],
      typeUrl: 'type.googleapis.com/istio.workload.Address',
      responseNonce: 'nonce-41',
      errorDetail: status,
    }),
  ],
  'envoy.service.discovery.v3.DiscoveryResponse': [
    discovery.DiscoveryResponse.fromPartial({
      versionInfo: '2024-05-01/42',
      resources: [addressAny, addressAny],
      canary: true,
      typeUrl: 'type.googleapis.com/istio.workload.Address',
      nonce: 'nonce-42',
      controlPlane,
    }),
  ],
  'envoy.service.discovery.v3.DeltaDiscoveryRequest': [
    discovery.DeltaDiscoveryRequest.fromPartial({
      node: nodeWithBuild,
      typeUrl: 'type.googleapis.com/istio.security.Authorization',
      resourceNamesSubscribe: ['*', 'default/allow'],
      resourceNamesUnsubscribe: ['old/a', 'old/b'],
      resourceLocatorsSubscribe: [locator, locator2],
      resourceLocatorsUnsubscribe: [locator2, locator],
      initialResourceVersions: { 'default/allow': 'v1', 'default/deny': 'v7' },
      responseNonce: 'nonce-7',
      errorDetail: status,
    }),
  ],
  'envoy.service.discovery.v3.DeltaDiscoveryRequest.InitialResourceVersionsEntry': [
    discovery.DeltaDiscoveryRequest_InitialResourceVersionsEntry.fromPartial({ key: 'a', value: 'v1' }),
  ],
  'envoy.service.discovery.v3.DeltaDiscoveryResponse': [
    discovery.DeltaDiscoveryResponse.fromPartial({
      systemVersionInfo: 'istiod-1',
      resources: [resource, discovery.Resource.fromPartial({ name: 'b', version: '1' })],
      typeUrl: 'type.googleapis.com/istio.workload.Address',
      removedResources: ['gone/a', 'gone/b'],
      removedResourceNames: [resourceName2, resourceName],
      nonce: 'nonce-8',
      controlPlane,
    }),
  ],
  'envoy.service.discovery.v3.DynamicParameterConstraints': [
    leaf,
    discovery.DynamicParameterConstraints.fromPartial({
      type: { $case: 'orConstraints', value: constraintList },
    }),
    discovery.DynamicParameterConstraints.fromPartial({
      type: { $case: 'andConstraints', value: constraintList },
    }),
    discovery.DynamicParameterConstraints.fromPartial({ type: { $case: 'notConstraints', value: leaf2 } }),
  ],
  'envoy.service.discovery.v3.DynamicParameterConstraints.SingleConstraint': [single, singleExists],
  'envoy.service.discovery.v3.DynamicParameterConstraints.SingleConstraint.Exists': [{}],
  'envoy.service.discovery.v3.DynamicParameterConstraints.ConstraintList': [constraintList],
  'envoy.service.discovery.v3.Resource': [resource],
  'envoy.service.discovery.v3.Resource.CacheControl': [
    discovery.Resource_CacheControl.fromPartial({ doNotCache: true }),
  ],
};
