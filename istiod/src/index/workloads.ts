/**
 * Pods, WorkloadEntries, ServiceEntry endpoints and non-pod EndpointSlice endpoints → `istio.workload.Workload`
 * (ARCHITECTURE.md, "Ambient index"; upstream ambient/workloads.go). Every non-terminal, non-hostNetwork pod
 * with an IP is a workload, ambient or not; HBONE iff the CNI agent marked it captured.
 */
import { type Port, type PortList, Workload, workload } from '../../../pkg/xds/index.ts';
import { annotationsOf, isSubset, labelsOf } from '../kube/labels.ts';
import type {
  EndpointSlice,
  Namespace,
  Node,
  Pod,
  ServiceEntry,
  WorkloadEntry,
  WorkloadEntrySpec,
} from '../kube/types.ts';
import {
  CANONICAL_NAME_LABELS,
  CANONICAL_REVISION_LABELS,
  DEFAULT_CANONICAL_REVISION,
  NETWORK_LABEL,
  REDIRECTION_ANNOTATION,
  REDIRECTION_ENABLED,
  REGION_LABEL,
  SERVICE_NAME_LABEL,
  SUBZONE_LABEL,
  TUNNEL_LABEL,
  ZONE_LABEL,
} from './constants.ts';
import { type ServiceInfo, serviceHostname } from './services.ts';
import { ipBytes, sorted } from './util.ts';
import { type Waypoint, waypointForInstance, waypointForWorkload } from './waypoints.ts';

const { WorkloadStatus, WorkloadType, TunnelProtocol } = workload;

/** What the builders read from the rest of the index. */
export interface WorkloadContext {
  readonly clusterId: string;
  readonly trustDomain: string;
  /** The network of addresses without a network label. */
  readonly network: string;
  readonly domainSuffix: string;
  readonly waypoints: ReadonlyMap<string, Waypoint>;
  namespace(name: string): Namespace | undefined;
  node(name: string): Node | undefined;
  /** ServiceInfos of Services and ServiceEntries in a namespace, Services first. */
  servicesInNamespace(ns: string): Iterable<ServiceInfo>;
  /** The ServiceInfo of a Kubernetes Service, by namespace and name. */
  kubeService(ns: string, name: string): ServiceInfo | undefined;
  /** Kubernetes Services (without selectors) whose EndpointSlices list this pod. */
  slicedServicesOfPod(ns: string, name: string): Iterable<ServiceInfo>;
  /** Sorted policy keys a workload with these labels references (selector AuthorizationPolicies, PeerAuthentication). */
  policyKeys(ns: string, labels: Readonly<Record<string, string>>): string[];
}

export function podUid(clusterId: string, ns: string, name: string): string {
  return `${clusterId}//Pod/${ns}/${name}`;
}

export function workloadEntryUid(clusterId: string, ns: string, name: string): string {
  return `${clusterId}/networking.istio.io/WorkloadEntry/${ns}/${name}`;
}

export function serviceEntryUid(clusterId: string, ns: string, name: string, address: string): string {
  return `${clusterId}/networking.istio.io/ServiceEntry/${ns}/${name}/${address}`;
}

export function endpointSliceUid(clusterId: string, ns: string, name: string, ip: string): string {
  return `${clusterId}/discovery.k8s.io/EndpointSlice/${ns}/${name}/${ip}`;
}

function firstLabel(labels: Readonly<Record<string, string>>, keys: readonly string[]): string | undefined {
  for (const k of keys) if (Object.hasOwn(labels, k)) return labels[k];
  return undefined;
}

/** Istio's CanonicalService: canonical name/revision labels, with the workload name and `latest` as fallbacks. */
export function canonicalService(
  labels: Readonly<Record<string, string>>,
  workloadName: string,
): { name: string; revision: string } {
  return {
    name: firstLabel(labels, CANONICAL_NAME_LABELS) ?? workloadName,
    revision: firstLabel(labels, CANONICAL_REVISION_LABELS) ?? DEFAULT_CANONICAL_REVISION,
  };
}

/**
 * Istio's workload name heuristics (kube.GetDeployMetaFromPod): a ReplicaSet controller whose name ends in the
 * pod-template-hash is a Deployment (hash stripped); a Job named `<x>-<8..10 digits>` belongs to CronJob `<x>`;
 * other controllers (StatefulSet, DaemonSet, bare ReplicaSet) and bare pods report the pod itself.
 */
export function workloadNameAndType(pod: Pod): { name: string; type: workload.WorkloadType } {
  const meta = pod.metadata;
  const podName = meta?.name ?? '';
  if (!meta?.generateName) return { name: podName, type: WorkloadType.POD };
  const ref = (meta.ownerReferences ?? []).find((r) => r.controller === true);
  if (!ref) return { name: podName, type: WorkloadType.POD };
  const refName = ref.name ?? '';
  const hash = meta.labels?.['pod-template-hash'];
  if (ref.kind === 'ReplicaSet' && hash && refName.endsWith(hash)) {
    const name = refName.endsWith(`-${hash}`) ? refName.slice(0, -(hash.length + 1)) : refName;
    return { name: name || podName, type: WorkloadType.DEPLOYMENT };
  }
  if (ref.kind === 'Job') {
    const m = /^(.+)-\d{8,10}$/.exec(refName);
    if (m) return { name: m[1]!, type: WorkloadType.CRONJOB };
    return { name: refName || podName, type: WorkloadType.JOB };
  }
  return { name: podName, type: WorkloadType.POD };
}

function tunnel(
  labels: Readonly<Record<string, string>>,
  annotations: Readonly<Record<string, string>>,
): { tunnelProtocol: workload.TunnelProtocol; nativeTunnel: boolean } {
  if (labels[TUNNEL_LABEL] === 'http') return { tunnelProtocol: TunnelProtocol.HBONE, nativeTunnel: true };
  if (annotations[REDIRECTION_ANNOTATION] === REDIRECTION_ENABLED) {
    return { tunnelProtocol: TunnelProtocol.HBONE, nativeTunnel: false };
  }
  return { tunnelProtocol: TunnelProtocol.NONE, nativeTunnel: false };
}

function networkOf(ctx: WorkloadContext, labels: Readonly<Record<string, string>>, ns: string): string {
  return labels[NETWORK_LABEL] ?? labelsOf(ctx.namespace(ns))[NETWORK_LABEL] ?? ctx.network;
}

function podLocality(ctx: WorkloadContext, nodeName: string | undefined): workload.Locality | undefined {
  if (!nodeName) return undefined;
  const labels = labelsOf(ctx.node(nodeName));
  const region = labels[REGION_LABEL] ?? '';
  const zone = labels[ZONE_LABEL] ?? '';
  const subzone = labels[SUBZONE_LABEL] ?? '';
  if (!region && !zone && !subzone) return undefined;
  return { region, zone, subzone };
}

function localityFromString(s: string | undefined): workload.Locality | undefined {
  if (!s) return undefined;
  const [region = '', zone = '', subzone = ''] = s.split('/');
  if (!region && !zone && !subzone) return undefined;
  return { region, zone, subzone };
}

function isReady(pod: Pod): boolean {
  return (pod.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
}

function containerPortByName(pod: Pod, name: string): number | null {
  for (const c of pod.spec?.containers ?? []) {
    for (const p of c.ports ?? []) if (p.name === name) return p.containerPort;
  }
  return null;
}

/** The services map for a pod: named target ports resolved against its containers (missing → port omitted). */
function podServices(pod: Pod, services: Iterable<ServiceInfo>): Record<string, PortList> {
  const byKey = new Map<string, PortList>();
  for (const svc of services) {
    if (byKey.has(svc.key)) continue;
    const ports: Port[] = [];
    for (const port of svc.service.ports) {
      let targetPort = port.targetPort;
      const named = svc.portNames.get(port.servicePort);
      if (named && named.targetPortName !== '') {
        const resolved = containerPortByName(pod, named.targetPortName);
        if (resolved === null) continue;
        targetPort = resolved;
      }
      ports.push({ servicePort: port.servicePort, targetPort, appProtocol: workload.AppProtocol.UNKNOWN });
    }
    byKey.set(svc.key, { ports });
  }
  return sortedRecord(byKey);
}

/** Services map for WorkloadEntries and ServiceEntry endpoints (upstream constructServicesFromWorkloadEntry). */
function entryServices(ep: WorkloadEntrySpec, services: Iterable<ServiceInfo>): Record<string, PortList> {
  const byKey = new Map<string, PortList>();
  const epPorts = ep.ports ?? {};
  for (const svc of services) {
    if (byKey.has(svc.key)) continue;
    const ports: Port[] = [];
    for (const port of svc.service.ports) {
      let targetPort = port.targetPort;
      const named = svc.portNames.get(port.servicePort);
      if (svc.kind === 'Service') {
        if (named && named.targetPortName !== '') {
          const tv = epPorts[named.targetPortName];
          if (tv === undefined) continue;
          targetPort = tv;
        }
      } else if (named) {
        // ServiceEntry: endpoint ports are matched by the service port's name.
        const tv = epPorts[named.portName];
        if (tv !== undefined) targetPort = tv;
        else if (targetPort === 0) targetPort = port.servicePort;
      }
      ports.push({ servicePort: port.servicePort, targetPort, appProtocol: workload.AppProtocol.UNKNOWN });
    }
    byKey.set(svc.key, { ports });
  }
  return sortedRecord(byKey);
}

function sortedRecord(m: Map<string, PortList>): Record<string, PortList> {
  const out: Record<string, PortList> = {};
  for (const k of sorted(m.keys())) out[k] = m.get(k)!;
  return out;
}

function selectingServices(
  ctx: WorkloadContext,
  ns: string,
  labels: Readonly<Record<string, string>>,
): ServiceInfo[] {
  const out: ServiceInfo[] = [];
  for (const s of ctx.servicesInNamespace(ns)) if (s.selector && isSubset(s.selector, labels)) out.push(s);
  return out;
}

export function buildPodWorkload(pod: Pod, ctx: WorkloadContext): Workload | null {
  const phase = pod.status?.phase ?? '';
  if ((phase !== 'Running' && phase !== 'Pending') || pod.spec?.hostNetwork) return null;
  const ips =
    pod.status?.podIPs && pod.status.podIPs.length > 0
      ? pod.status.podIPs.map((p) => p.ip ?? '')
      : pod.status?.podIP
        ? [pod.status.podIP]
        : [];
  if (ips.length === 0) return null;
  const addresses: Uint8Array[] = [];
  for (const ip of ips) {
    const b = ipBytes(ip);
    if (!b) return null;
    addresses.push(b);
  }
  const ns = pod.metadata?.namespace ?? '';
  const name = pod.metadata?.name ?? '';
  const labels = labelsOf(pod);
  const services = [...selectingServices(ctx, ns, labels), ...ctx.slicedServicesOfPod(ns, name)];
  const instanceOf = waypointForInstance(pod.metadata, ctx.waypoints);
  let waypoint: Waypoint | null = null;
  let applicationTunnel: workload.ApplicationTunnel | undefined;
  if (instanceOf) {
    // A waypoint's own pods are never sent to a waypoint; they may ask for tunnel metadata on the last hop.
    if (instanceOf.binding)
      applicationTunnel = { protocol: instanceOf.binding.protocol, port: instanceOf.binding.port };
  } else {
    waypoint = waypointForWorkload(pod.metadata, ns, ctx.namespace(ns), ctx.waypoints).waypoint;
  }
  const { name: workloadName, type: workloadType } = workloadNameAndType(pod);
  const canonical = canonicalService(labels, workloadName);
  const healthy = isReady(pod) && !pod.metadata?.deletionTimestamp;
  return Workload.create({
    uid: podUid(ctx.clusterId, ns, name),
    name,
    namespace: ns,
    addresses,
    network: networkOf(ctx, labels, ns),
    ...tunnel(labels, annotationsOf(pod)),
    trustDomain: ctx.trustDomain,
    serviceAccount: pod.spec?.serviceAccountName || 'default',
    waypoint: waypoint?.address,
    node: pod.spec?.nodeName ?? '',
    canonicalName: canonical.name,
    canonicalRevision: canonical.revision,
    workloadType,
    workloadName,
    applicationTunnel,
    services: podServices(pod, services),
    authorizationPolicies: ctx.policyKeys(ns, labels),
    status: healthy ? WorkloadStatus.HEALTHY : WorkloadStatus.UNHEALTHY,
    clusterId: ctx.clusterId,
    locality: podLocality(ctx, pod.spec?.nodeName),
  });
}

export function buildWorkloadEntryWorkload(we: WorkloadEntry, ctx: WorkloadContext): Workload {
  const spec = we.spec ?? {};
  const ns = we.metadata?.namespace ?? '';
  const name = we.metadata?.name ?? '';
  const labels = { ...spec.labels, ...labelsOf(we) };
  const addr = spec.address ? ipBytes(spec.address) : null;
  const canonical = canonicalService(labels, name);
  const waypoint = waypointForWorkload(
    { ...we.metadata, labels },
    ns,
    ctx.namespace(ns),
    ctx.waypoints,
  ).waypoint;
  return Workload.create({
    uid: workloadEntryUid(ctx.clusterId, ns, name),
    name,
    namespace: ns,
    addresses: addr ? [addr] : [],
    network: spec.network || networkOf(ctx, labels, ns),
    ...tunnel(labels, annotationsOf(we)),
    trustDomain: ctx.trustDomain,
    serviceAccount: spec.serviceAccount ?? '',
    waypoint: waypoint?.address,
    canonicalName: canonical.name,
    canonicalRevision: canonical.revision,
    // Istio reports WorkloadEntries as pods named after the entry.
    workloadType: WorkloadType.POD,
    workloadName: name,
    services: entryServices(spec, selectingServices(ctx, ns, labels)),
    authorizationPolicies: ctx.policyKeys(ns, labels),
    status: WorkloadStatus.HEALTHY,
    clusterId: ctx.clusterId,
    locality: localityFromString(spec.locality),
  });
}

/** One workload per endpoint; DNS entries without endpoints get one per host, resolved by the data plane. */
export function buildServiceEntryWorkloads(
  se: ServiceEntry,
  infos: readonly ServiceInfo[],
  ctx: WorkloadContext,
): Workload[] {
  const spec = se.spec ?? {};
  const resolution = (spec.resolution ?? 'NONE').toUpperCase();
  let eps: readonly WorkloadEntrySpec[] = spec.endpoints ?? [];
  const implicit =
    eps.length === 0 && (resolution === 'DNS' || resolution === 'DNS_ROUND_ROBIN') && !spec.workloadSelector;
  if (eps.length === 0 && !implicit) return [];
  if (implicit) eps = infos.map((i) => ({ address: i.hostname }));
  const ns = se.metadata?.namespace ?? '';
  const name = se.metadata?.name ?? '';
  const seLabels = labelsOf(se);
  const out: Workload[] = [];
  eps.forEach((ep, i) => {
    const address = ep.address ?? '';
    const services = implicit ? (infos[i] ? [infos[i]] : []) : infos;
    const epLabels = { ...ep.labels };
    const waypoint = implicit
      ? null
      : waypointForWorkload({ name, namespace: ns, labels: epLabels }, ns, ctx.namespace(ns), ctx.waypoints)
          .waypoint;
    const ip = ipBytes(address);
    const canonical = canonicalService(seLabels, name);
    out.push(
      Workload.create({
        uid: serviceEntryUid(ctx.clusterId, ns, name, address),
        name,
        namespace: ns,
        addresses: ip ? [ip] : [],
        hostname: ip ? '' : address,
        network: ep.network || networkOf(ctx, epLabels, ns),
        ...tunnel(seLabels, annotationsOf(se)),
        trustDomain: ctx.trustDomain,
        serviceAccount: ep.serviceAccount ?? '',
        waypoint: waypoint?.address,
        canonicalName: canonical.name,
        canonicalRevision: canonical.revision,
        workloadType: WorkloadType.POD,
        workloadName: name,
        services: entryServices(ep, services),
        authorizationPolicies: ctx.policyKeys(ns, seLabels),
        status: WorkloadStatus.HEALTHY,
        clusterId: ctx.clusterId,
        locality: localityFromString(ep.locality),
      }),
    );
  });
  return out;
}

/**
 * Endpoints of a Service's EndpointSlice that are not pods (manually managed slices): each becomes a workload
 * with only addresses, health and the service's ports (upstream endpointSlicesBuilder). Pod endpoints are
 * covered by the pod's own workload.
 */
export function buildEndpointSliceWorkloads(slice: EndpointSlice, ctx: WorkloadContext): Workload[] {
  const serviceName = labelsOf(slice)[SERVICE_NAME_LABEL];
  if (!serviceName || slice.addressType === 'FQDN') return [];
  const ns = slice.metadata?.namespace ?? '';
  const name = slice.metadata?.name ?? '';
  const svc = ctx.kubeService(ns, serviceName);
  if (!svc) return [];
  const key = `${ns}/${serviceHostname(serviceName, ns, ctx.domainSuffix)}`;
  const ports: Port[] = [];
  for (const p of slice.ports ?? []) {
    if (p.name === undefined || p.port === undefined || (p.protocol ?? 'TCP') !== 'TCP') continue;
    for (const sp of svc.service.ports) {
      if ((svc.portNames.get(sp.servicePort)?.portName ?? '') !== p.name) continue;
      ports.push({
        servicePort: sp.servicePort,
        targetPort: p.port,
        appProtocol: workload.AppProtocol.UNKNOWN,
      });
      break;
    }
  }
  const out: Workload[] = [];
  const seen = new Set<string>();
  for (const ep of slice.endpoints ?? []) {
    if (ep.targetRef?.kind === 'Pod') continue;
    const first = ep.addresses?.[0];
    if (first === undefined || seen.has(first)) continue;
    seen.add(first);
    const addresses: Uint8Array[] = [];
    let valid = true;
    for (const a of ep.addresses ?? []) {
      const b = ipBytes(a);
      if (!b) valid = false;
      else addresses.push(b);
    }
    if (!valid) continue;
    out.push(
      Workload.create({
        uid: endpointSliceUid(ctx.clusterId, ns, name, first),
        name,
        namespace: ns,
        addresses,
        network: ctx.network,
        trustDomain: ctx.trustDomain,
        services: { [key]: { ports } },
        status: ep.conditions?.ready === false ? WorkloadStatus.UNHEALTHY : WorkloadStatus.HEALTHY,
        clusterId: ctx.clusterId,
      }),
    );
  }
  return out;
}
