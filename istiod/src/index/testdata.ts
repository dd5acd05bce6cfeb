/**
 * Plain-object builders for index tests (the shapes a watch stream delivers), and decoding helpers.
 */
import type {
  AuthorizationPolicy,
  EndpointSlice,
  Gateway,
  Namespace,
  Node,
  PeerAuthentication,
  Pod,
  Service,
  ServiceEntry,
  WorkloadEntry,
} from '../kube/types.ts';

const T0 = '2024-01-01T00:00:00Z';

export function ns(
  name: string,
  labels: Record<string, string> = {},
  annotations?: Record<string, string>,
): Namespace {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels, annotations } };
}

export function node(name: string, labels: Record<string, string> = {}): Node {
  return { apiVersion: 'v1', kind: 'Node', metadata: { name, labels } };
}

export interface PodOptions {
  readonly namespace?: string;
  readonly ip?: string | null;
  readonly ips?: string[];
  readonly labels?: Record<string, string>;
  readonly annotations?: Record<string, string>;
  readonly sa?: string;
  readonly node?: string;
  readonly ready?: boolean;
  readonly phase?: string;
  readonly hostNetwork?: boolean;
  readonly ports?: Array<{ name?: string; containerPort: number }>;
  readonly replicaSet?: { name: string; hash: string };
  readonly owner?: { kind: string; name: string };
  readonly deleting?: boolean;
}

export function pod(name: string, o: PodOptions = {}): Pod {
  const labels = { ...o.labels };
  let ownerReferences:
    | Array<{ apiVersion: string; kind: string; name: string; controller: boolean; uid: string }>
    | undefined;
  let generateName: string | undefined;
  if (o.replicaSet) {
    labels['pod-template-hash'] = o.replicaSet.hash;
    ownerReferences = [
      { apiVersion: 'apps/v1', kind: 'ReplicaSet', name: o.replicaSet.name, controller: true, uid: 'u' },
    ];
    generateName = `${o.replicaSet.name}-`;
  } else if (o.owner) {
    ownerReferences = [
      { apiVersion: 'v1', kind: o.owner.kind, name: o.owner.name, controller: true, uid: 'u' },
    ];
    generateName = `${o.owner.name}-`;
  }
  const ip = o.ip === undefined ? '10.0.0.1' : o.ip;
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name,
      namespace: o.namespace ?? 'default',
      labels,
      annotations: o.annotations,
      generateName,
      ownerReferences,
      creationTimestamp: T0,
      deletionTimestamp: o.deleting ? '2024-01-02T00:00:00Z' : undefined,
    },
    spec: {
      nodeName: o.node ?? 'node-1',
      serviceAccountName: o.sa ?? 'default',
      hostNetwork: o.hostNetwork,
      containers: [{ ports: o.ports ?? [] }],
    },
    status: {
      phase: o.phase ?? 'Running',
      podIP: ip ?? undefined,
      podIPs: o.ips ? o.ips.map((i) => ({ ip: i })) : ip ? [{ ip }] : undefined,
      conditions: [{ type: 'Ready', status: o.ready === false ? 'False' : 'True' }],
    },
  };
}

export interface ServiceOptions {
  readonly namespace?: string;
  readonly selector?: Record<string, string> | null;
  readonly clusterIP?: string;
  readonly ports?: Array<{
    name?: string;
    port: number;
    targetPort?: number | string;
    appProtocol?: string;
    protocol?: string;
  }>;
  readonly labels?: Record<string, string>;
  readonly annotations?: Record<string, string>;
  readonly internalTrafficPolicy?: string;
  readonly trafficDistribution?: string;
  readonly type?: string;
  readonly ipFamilies?: string[];
  readonly publishNotReadyAddresses?: boolean;
}

export function svc(name: string, o: ServiceOptions = {}): Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name,
      namespace: o.namespace ?? 'default',
      labels: o.labels,
      annotations: o.annotations,
      creationTimestamp: T0,
      generation: 1,
    },
    spec: {
      type: o.type,
      selector: o.selector === null ? undefined : (o.selector ?? { app: name }),
      clusterIP: o.clusterIP ?? '10.96.0.10',
      ports: o.ports ?? [{ name: 'http', port: 80, targetPort: 8080 }],
      internalTrafficPolicy: o.internalTrafficPolicy,
      trafficDistribution: o.trafficDistribution,
      ipFamilies: o.ipFamilies,
      publishNotReadyAddresses: o.publishNotReadyAddresses,
    },
  };
}

export function waypointGateway(
  name: string,
  o: {
    namespace?: string;
    waypointFor?: string;
    address?: { type?: string; value: string } | null;
    allowedFrom?: string;
    selector?: Record<string, string>;
  } = {},
): Gateway {
  const namespace = o.namespace ?? 'default';
  const address =
    o.address === null
      ? []
      : [o.address ?? { type: 'Hostname', value: `${name}.${namespace}.svc.cluster.local` }];
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: { name, namespace, labels: o.waypointFor ? { 'istio.io/waypoint-for': o.waypointFor } : {} },
    spec: {
      gatewayClassName: 'istio-waypoint',
      listeners: [
        {
          name: 'mesh',
          port: 15008,
          protocol: 'HBONE',
          allowedRoutes: o.allowedFrom
            ? {
                namespaces: {
                  from: o.allowedFrom,
                  selector: o.selector ? { matchLabels: o.selector } : undefined,
                },
              }
            : undefined,
        },
      ],
    },
    status: { addresses: address },
  };
}

export function authzPolicy(
  name: string,
  namespace: string,
  spec: AuthorizationPolicy['spec'],
  generation = 1,
): AuthorizationPolicy {
  return {
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name, namespace, generation },
    spec,
  };
}

export function peerAuth(
  name: string,
  namespace: string,
  spec: PeerAuthentication['spec'],
): PeerAuthentication {
  return {
    apiVersion: 'security.istio.io/v1',
    kind: 'PeerAuthentication',
    metadata: { name, namespace, creationTimestamp: T0 },
    spec,
  };
}

export function serviceEntry(name: string, spec: ServiceEntry['spec'], namespace = 'default'): ServiceEntry {
  return {
    apiVersion: 'networking.istio.io/v1',
    kind: 'ServiceEntry',
    metadata: { name, namespace, creationTimestamp: T0, generation: 1 },
    spec,
  };
}

export function workloadEntry(
  name: string,
  spec: WorkloadEntry['spec'],
  labels: Record<string, string> = {},
  namespace = 'default',
): WorkloadEntry {
  return {
    apiVersion: 'networking.istio.io/v1',
    kind: 'WorkloadEntry',
    metadata: { name, namespace, labels, creationTimestamp: T0 },
    spec,
  };
}

export function endpointSlice(
  name: string,
  service: string,
  endpoints: NonNullable<EndpointSlice['endpoints']>,
  ports: NonNullable<EndpointSlice['ports']>,
  namespace = 'default',
): EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name, namespace, labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    endpoints,
    ports,
  };
}

/** 4-byte wire form of a dotted IPv4 address. */
export function v4(s: string): Uint8Array {
  return Uint8Array.from(s.split('.').map(Number));
}
