/**
 * Services and ServiceEntry hosts → `istio.workload.Service` (upstream ambient/services.go): resource name
 * `<ns>/<hostname>`, VIPs with their network, ports (service port → numeric target port; named target ports are
 * resolved per workload), app protocol, load balancing from internalTrafficPolicy / trafficDistribution,
 * `resolution: NONE` → PASSTHROUGH, IP families, waypoint binding and `ingress_use_waypoint`.
 */
import {
  type LoadBalancing,
  type NetworkAddress,
  type Port,
  Service,
  workload,
} from '../../../pkg/xds/index.ts';
import { annotationsOf, labelsOf, timeOf } from '../kube/labels.ts';
import type { Service as KubeService, Namespace, ServiceEntry } from '../kube/types.ts';
import { INGRESS_USE_WAYPOINT_LABEL, TRAFFIC_DISTRIBUTION_ANNOTATION } from './constants.ts';
import { ipBytes, parseBool } from './util.ts';
import { type BindingError, type Waypoint, waypointForService } from './waypoints.ts';

export interface ServicePortName {
  readonly portName: string;
  /** Set when a Service port targets a container port by name. */
  readonly targetPortName: string;
}

/** One Service resource plus what the index needs to build workloads against it (never sent). */
export interface ServiceInfo {
  /** `Service/<ns>/<name>` or `ServiceEntry/<ns>/<name>`: the object it came from. */
  readonly sourceKey: string;
  readonly kind: 'Service' | 'ServiceEntry';
  readonly namespace: string;
  readonly name: string;
  readonly hostname: string;
  /** The xDS resource name, `<ns>/<hostname>`. */
  readonly key: string;
  readonly created: number;
  readonly generation: number;
  /** The resource, with `canonical` left false (decided across all sources of a hostname). */
  readonly service: Service;
  readonly portNames: ReadonlyMap<number, ServicePortName>;
  /** Label selector; null selects nothing by labels (selector-less Service, ServiceEntry without one). */
  readonly selector: Readonly<Record<string, string>> | null;
  readonly waypoint: Waypoint | null;
  readonly waypointError: BindingError | null;
  readonly ingressLabelPresent: boolean;
}

export interface ServiceBuildOptions {
  readonly domainSuffix: string;
  readonly network: string;
}

const { AppProtocol, IPFamilies } = workload;
type AppProtocol = workload.AppProtocol;
const LB = workload.LoadBalancing_Scope;
const MODE = workload.LoadBalancing_Mode;

type Distribution = 'PreferSameZone' | 'PreferSameNode' | null;

function distribution(value: string | undefined): Distribution {
  switch ((value ?? '').toLowerCase()) {
    case 'preferclose':
    case 'prefersamezone':
      return 'PreferSameZone';
    case 'prefersamenode':
      return 'PreferSameNode';
    default:
      return null;
  }
}

/** The spec field wins, then the object's annotation, then its namespace's annotation. */
function trafficDistribution(
  spec: string | undefined,
  annotations: Readonly<Record<string, string>>,
  nsObj: Namespace | undefined,
): Distribution {
  if (spec !== undefined && spec !== '') return distribution(spec);
  const own = annotations[TRAFFIC_DISTRIBUTION_ANNOTATION];
  if (own !== undefined) return distribution(own);
  return distribution(annotationsOf(nsObj)[TRAFFIC_DISTRIBUTION_ANNOTATION]);
}

function loadBalancer(d: Distribution): LoadBalancing | undefined {
  if (d === 'PreferSameZone') {
    return lb([LB.NETWORK, LB.REGION, LB.ZONE], MODE.FAILOVER);
  }
  if (d === 'PreferSameNode') {
    return lb([LB.NETWORK, LB.REGION, LB.ZONE, LB.SUBZONE, LB.NODE], MODE.FAILOVER);
  }
  return undefined;
}

function lb(
  routingPreference: workload.LoadBalancing_Scope[],
  mode: workload.LoadBalancing_Mode,
  healthPolicy: workload.LoadBalancing_HealthPolicy = workload.LoadBalancing_HealthPolicy.ONLY_HEALTHY,
): LoadBalancing {
  return { routingPreference, mode, healthPolicy, dnsConnectStrategy: 0 };
}

/**
 * Istio's kube.ConvertProtocol: UDP is UDP; else appProtocol (with Kubernetes' `kubernetes.io/h2c` and
 * `kubernetes.io/ws(s)`), else the port name's prefix before `-`. Only HTTP, HTTP/2 and gRPC have a wire value.
 */
export function appProtocolOf(
  name: string | undefined,
  protocol: string | undefined,
  appProtocol?: string,
): AppProtocol {
  if ((protocol ?? 'TCP').toUpperCase() === 'UDP') return AppProtocol.UNKNOWN;
  let n = name ?? '';
  if (appProtocol !== undefined && appProtocol !== '') {
    if (appProtocol === 'kubernetes.io/h2c') return AppProtocol.HTTP2;
    if (appProtocol === 'kubernetes.io/ws' || appProtocol === 'kubernetes.io/wss') return AppProtocol.HTTP11;
    n = appProtocol;
  }
  return appProtocolFromName(n);
}

/** protocol.Parse of a name prefix, as a wire AppProtocol. */
export function appProtocolFromName(name: string): AppProtocol {
  const lower = name.toLowerCase();
  if (lower.startsWith('grpc-web')) return AppProtocol.UNKNOWN;
  const dash = lower.indexOf('-');
  switch (dash === -1 ? lower : lower.slice(0, dash)) {
    case 'http':
      return AppProtocol.HTTP11;
    case 'http2':
      return AppProtocol.HTTP2;
    case 'grpc':
      return AppProtocol.GRPC;
    default:
      return AppProtocol.UNKNOWN;
  }
}

function ingressUseWaypoint(
  own: Readonly<Record<string, string>>,
  nsObj: Namespace | undefined,
): { present: boolean; use: boolean } {
  let v = own[INGRESS_USE_WAYPOINT_LABEL];
  if (v === undefined) v = labelsOf(nsObj)[INGRESS_USE_WAYPOINT_LABEL];
  if (v === undefined) return { present: false, use: false };
  return { present: true, use: parseBool(v) === true };
}

function networkAddresses(ips: readonly string[], network: string): NetworkAddress[] {
  const out: NetworkAddress[] = [];
  for (const ip of ips) {
    const b = ipBytes(ip);
    if (b) out.push({ network, address: b });
  }
  return out;
}

export function serviceHostname(name: string, namespace: string, domainSuffix: string): string {
  return `${name}.${namespace}.svc.${domainSuffix}`;
}

/** A Kubernetes Service → its ServiceInfo (none for ExternalName, which ambient does not implement). */
export function buildServiceInfo(
  svc: KubeService,
  nsObj: Namespace | undefined,
  waypoints: ReadonlyMap<string, Waypoint>,
  opts: ServiceBuildOptions,
): ServiceInfo | null {
  const spec = svc.spec ?? {};
  if (spec.type === 'ExternalName') return null;
  const namespace = svc.metadata?.namespace ?? '';
  const name = svc.metadata?.name ?? '';
  const hostname = serviceHostname(name, namespace, opts.domainSuffix);
  const portNames = new Map<number, ServicePortName>();
  const ports: Port[] = [];
  for (const p of spec.ports ?? []) {
    portNames.set(p.port, {
      portName: p.name ?? '',
      targetPortName: typeof p.targetPort === 'string' ? p.targetPort : '',
    });
    ports.push({
      servicePort: p.port,
      targetPort: typeof p.targetPort === 'number' ? p.targetPort : 0,
      appProtocol: appProtocolOf(p.name, p.protocol, p.appProtocol),
    });
  }
  const vips = (
    spec.clusterIPs && spec.clusterIPs.length > 0 ? spec.clusterIPs : [spec.clusterIP ?? '']
  ).filter((ip) => ip !== '' && ip !== 'None');
  let loadBalancing: LoadBalancing | undefined;
  if (spec.internalTrafficPolicy === 'Local') {
    loadBalancing = lb([LB.NODE], MODE.STRICT);
  } else {
    loadBalancing = loadBalancer(trafficDistribution(spec.trafficDistribution, annotationsOf(svc), nsObj));
  }
  if (spec.publishNotReadyAddresses) {
    loadBalancing = {
      ...(loadBalancing ?? lb([], MODE.UNSPECIFIED_MODE)),
      healthPolicy: workload.LoadBalancing_HealthPolicy.ALLOW_ALL,
    };
  }
  const families = spec.ipFamilies ?? [];
  const ipFamilies =
    families.length === 2
      ? IPFamilies.DUAL
      : families.length === 1
        ? families[0] === 'IPv4'
          ? IPFamilies.IPV4_ONLY
          : IPFamilies.IPV6_ONLY
        : IPFamilies.AUTOMATIC;
  const binding = waypointForService(svc.metadata, namespace, nsObj, waypoints);
  const ingress = binding.waypoint
    ? ingressUseWaypoint(labelsOf(svc), nsObj)
    : { present: false, use: false };
  const service = Service.create({
    name,
    namespace,
    hostname,
    addresses: networkAddresses(vips, opts.network),
    ports,
    waypoint: binding.waypoint?.address,
    loadBalancing,
    ipFamilies,
    ingressUseWaypoint: ingress.use,
  });
  const selector = spec.selector && Object.keys(spec.selector).length > 0 ? spec.selector : null;
  return {
    sourceKey: `Service/${namespace}/${name}`,
    kind: 'Service',
    namespace,
    name,
    hostname,
    key: `${namespace}/${hostname}`,
    created: timeOf(svc.metadata?.creationTimestamp),
    generation: svc.metadata?.generation ?? 0,
    service,
    portNames,
    selector,
    waypoint: binding.waypoint,
    waypointError: binding.error,
    ingressLabelPresent: ingress.present,
  };
}

function addressPart(v: string): string {
  const slash = v.indexOf('/');
  return slash === -1 ? v : v.slice(0, slash);
}

/** A ServiceEntry → one ServiceInfo per host. */
export function buildServiceEntryInfos(
  se: ServiceEntry,
  nsObj: Namespace | undefined,
  waypoints: ReadonlyMap<string, Waypoint>,
  opts: ServiceBuildOptions,
): ServiceInfo[] {
  const spec = se.spec ?? {};
  const namespace = se.metadata?.namespace ?? '';
  const name = se.metadata?.name ?? '';
  const addresses: NetworkAddress[] = [];
  for (const a of spec.addresses ?? []) {
    const b = ipBytes(addressPart(a));
    // Upstream builds nothing for a ServiceEntry whose addresses do not parse.
    if (!b) return [];
    addresses.push({ network: opts.network, address: b });
  }
  const portNames = new Map<number, ServicePortName>();
  const ports: Port[] = [];
  for (const p of spec.ports ?? []) {
    portNames.set(p.number, { portName: p.name ?? '', targetPortName: '' });
    ports.push({
      servicePort: p.number,
      targetPort: p.targetPort && p.targetPort > 0 ? p.targetPort : p.number,
      appProtocol: appProtocolFromName(p.protocol ?? ''),
    });
  }
  const resolution = (spec.resolution ?? 'NONE').toUpperCase();
  let loadBalancing: LoadBalancing | undefined;
  if (resolution === 'NONE') {
    // Connect to the address the client dialled; health is irrelevant then.
    loadBalancing = lb([], MODE.PASSTHROUGH, workload.LoadBalancing_HealthPolicy.ALLOW_ALL);
  } else {
    loadBalancing = loadBalancer(trafficDistribution(undefined, annotationsOf(se), nsObj));
  }
  const binding = waypointForService(se.metadata, namespace, nsObj, waypoints);
  const ingress = binding.waypoint ? ingressUseWaypoint(labelsOf(se), nsObj) : { present: false, use: false };
  const selectorLabels = spec.workloadSelector?.labels;
  const selector = selectorLabels && Object.keys(selectorLabels).length > 0 ? selectorLabels : null;
  const autoAllocated = se.status?.addresses ?? [];
  const out: ServiceInfo[] = [];
  for (const host of spec.hosts ?? []) {
    let hostAddresses = addresses;
    if (hostAddresses.length === 0 && resolution !== 'NONE' && !host.startsWith('*')) {
      // IPs the auto-allocation controller recorded for this host.
      hostAddresses = networkAddresses(
        autoAllocated.filter((a) => a.host === host).map((a) => a.value ?? ''),
        opts.network,
      );
    }
    out.push({
      sourceKey: `ServiceEntry/${namespace}/${name}`,
      kind: 'ServiceEntry',
      namespace,
      name,
      hostname: host,
      key: `${namespace}/${host}`,
      created: timeOf(se.metadata?.creationTimestamp),
      generation: se.metadata?.generation ?? 0,
      service: Service.create({
        name,
        namespace,
        hostname: host,
        addresses: hostAddresses,
        ports,
        subjectAltNames: [...(spec.subjectAltNames ?? [])],
        waypoint: binding.waypoint?.address,
        loadBalancing,
        ingressUseWaypoint: ingress.use,
      }),
      portNames,
      selector,
      waypoint: binding.waypoint,
      waypointError: binding.error,
      ingressLabelPresent: ingress.present,
    });
  }
  return out;
}

/** Istio's WaypointBound condition for a service's binding, or null (condition removed) when unbound. */
export function waypointBoundCondition(
  info: ServiceInfo,
): { status: boolean; reason: string; message: string } | null {
  if (info.waypoint) {
    let message = `Successfully attached to waypoint ${info.waypoint.key}`;
    if (info.service.ingressUseWaypoint) message += '. Ingress traffic will traverse the waypoint';
    else if (info.ingressLabelPresent)
      message +=
        '. Ingress traffic is not using the waypoint, set the istio.io/ingress-use-waypoint label to true if desired.';
    return { status: true, reason: 'WaypointAccepted', message };
  }
  if (info.waypointError) return { status: false, ...info.waypointError };
  return null;
}
