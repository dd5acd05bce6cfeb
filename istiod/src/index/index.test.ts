/**
 * The ambient index as a function of Kubernetes objects: one scenario per rule of ARCHITECTURE.md's "Ambient
 * index" and "Waypoint binding", driven with plain objects, checking the resources (and their incremental
 * changes) that ztunnel would receive.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { Address, type Service, type Workload, workload } from '../../../pkg/xds/index.ts';
import { AmbientIndex } from './index.ts';
import {
  authzPolicy,
  endpointSlice,
  node,
  ns,
  peerAuth,
  pod,
  serviceEntry,
  svc,
  v4,
  waypointGateway,
  workloadEntry,
} from './testdata.ts';

const { TunnelProtocol, WorkloadStatus, WorkloadType, LoadBalancing_Mode, LoadBalancing_Scope, AppProtocol } =
  workload;

const uid = (name: string, namespace = 'default') => `Kubernetes//Pod/${namespace}/${name}`;
const svcKey = (name: string, namespace = 'default') => `${namespace}/${name}.${namespace}.svc.cluster.local`;

function wl(index: AmbientIndex, name: string): Workload {
  const a = index.address(name);
  if (a?.type?.$case !== 'workload') throw new Error(`no workload ${name}`);
  return a.type.value;
}

function sv(index: AmbientIndex, name: string): Service {
  const a = index.address(name);
  if (a?.type?.$case !== 'service') throw new Error(`no service ${name}`);
  return a.type.value;
}

function decode(bytes: Uint8Array | null | undefined): Address | null {
  return bytes ? Address.decode(bytes) : null;
}

let index: AmbientIndex;

beforeEach(() => {
  index = new AmbientIndex();
  index.upsert('Namespace', ns('default'));
  index.upsert('Node', node('node-1'));
});

describe('pods → workloads', () => {
  it('fills every field from the pod, its node and its owner', () => {
    index.upsert(
      'Node',
      node('node-1', { 'topology.kubernetes.io/region': 'r1', 'topology.kubernetes.io/zone': 'z1' }),
    );
    index.upsert(
      'Pod',
      pod('reviews-v1-7d9f8c-abcde', {
        ip: '10.0.0.7',
        sa: 'bookinfo-reviews',
        labels: { app: 'reviews', version: 'v1' },
        replicaSet: { name: 'reviews-v1-7d9f8c', hash: '7d9f8c' },
      }),
    );
    const change = index.flush();
    const name = uid('reviews-v1-7d9f8c-abcde');
    expect([...change.addresses.keys()]).toEqual([name]);
    expect(decode(change.addresses.get(name))).toEqual({
      type: { $case: 'workload', value: wl(index, name) },
    });
    expect(wl(index, name)).toMatchObject({
      uid: name,
      name: 'reviews-v1-7d9f8c-abcde',
      namespace: 'default',
      addresses: [v4('10.0.0.7')],
      network: '',
      tunnelProtocol: TunnelProtocol.NONE,
      trustDomain: 'cluster.local',
      serviceAccount: 'bookinfo-reviews',
      node: 'node-1',
      canonicalName: 'reviews',
      canonicalRevision: 'v1',
      workloadType: WorkloadType.DEPLOYMENT,
      workloadName: 'reviews-v1',
      status: WorkloadStatus.HEALTHY,
      clusterId: 'Kubernetes',
      locality: { region: 'r1', zone: 'z1', subzone: '' },
      services: {},
      authorizationPolicies: [],
    });
  });

  it.each([
    ['bare pod', {}, 'p', WorkloadType.POD],
    ['StatefulSet pod reports itself', { owner: { kind: 'StatefulSet', name: 'db' } }, 'p', WorkloadType.POD],
    ['Job', { owner: { kind: 'Job', name: 'migrate' } }, 'migrate', WorkloadType.JOB],
    [
      'CronJob via Job timestamp suffix',
      { owner: { kind: 'Job', name: 'backup-28461234' } },
      'backup',
      WorkloadType.CRONJOB,
    ],
    [
      'ReplicaSet without hash label is not a Deployment',
      { owner: { kind: 'ReplicaSet', name: 'rs' } },
      'p',
      WorkloadType.POD,
    ],
  ] as const)('workload name/type: %s', (_n, opts, wantName, wantType) => {
    index.upsert('Pod', pod('p', opts));
    index.flush();
    expect(wl(index, uid('p'))).toMatchObject({ workloadName: wantName, workloadType: wantType });
  });

  it('canonical labels: explicit, app.kubernetes.io, app, then workload name / latest', () => {
    index.upsert(
      'Pod',
      pod('a', {
        labels: {
          'service.istio.io/canonical-name': 'cn',
          app: 'x',
          'service.istio.io/canonical-revision': 'cr',
        },
      }),
    );
    index.upsert(
      'Pod',
      pod('b', {
        ip: '10.0.0.2',
        labels: { 'app.kubernetes.io/name': 'kn', 'app.kubernetes.io/version': '2' },
      }),
    );
    index.upsert('Pod', pod('c', { ip: '10.0.0.3' }));
    index.flush();
    expect(wl(index, uid('a'))).toMatchObject({ canonicalName: 'cn', canonicalRevision: 'cr' });
    expect(wl(index, uid('b'))).toMatchObject({ canonicalName: 'kn', canonicalRevision: '2' });
    expect(wl(index, uid('c'))).toMatchObject({ canonicalName: 'c', canonicalRevision: 'latest' });
  });

  it('HBONE iff the CNI annotated the pod; labelling the namespace alone changes nothing', () => {
    index.upsert('Pod', pod('p'));
    index.flush();
    expect(wl(index, uid('p')).tunnelProtocol).toBe(TunnelProtocol.NONE);

    index.upsert('Namespace', ns('default', { 'istio.io/dataplane-mode': 'ambient' }));
    expect(index.flush().addresses.size).toBe(0);

    index.upsert('Pod', pod('p', { annotations: { 'ambient.istio.io/redirection': 'enabled' } }));
    const change = index.flush();
    expect([...change.addresses.keys()]).toEqual([uid('p')]);
    expect(wl(index, uid('p')).tunnelProtocol).toBe(TunnelProtocol.HBONE);

    index.upsert('Pod', pod('p'));
    index.flush();
    expect(wl(index, uid('p')).tunnelProtocol).toBe(TunnelProtocol.NONE);
  });

  it('networking.istio.io/tunnel=http marks a native HBONE workload', () => {
    index.upsert('Pod', pod('p', { labels: { 'networking.istio.io/tunnel': 'http' } }));
    index.flush();
    expect(wl(index, uid('p'))).toMatchObject({ tunnelProtocol: TunnelProtocol.HBONE, nativeTunnel: true });
  });

  it('readiness: Ready → HEALTHY, not ready or terminating → UNHEALTHY', () => {
    index.upsert('Pod', pod('p', { ready: false }));
    index.flush();
    expect(wl(index, uid('p')).status).toBe(WorkloadStatus.UNHEALTHY);
    index.upsert('Pod', pod('p'));
    expect(decode(index.flush().addresses.get(uid('p')))?.type).toMatchObject({
      value: { status: WorkloadStatus.HEALTHY },
    });
    index.upsert('Pod', pod('p', { deleting: true }));
    index.flush();
    expect(wl(index, uid('p')).status).toBe(WorkloadStatus.UNHEALTHY);
  });

  it.each([
    ['no IP yet', { ip: null }],
    ['hostNetwork', { hostNetwork: true }],
    ['Succeeded', { phase: 'Succeeded' }],
    ['Failed', { phase: 'Failed' }],
    ['garbage IP', { ip: 'not-an-ip' }],
  ] as const)('no workload for a pod with %s', (_n, opts) => {
    index.upsert('Pod', pod('p', opts));
    expect(index.flush().addresses.size).toBe(0);
  });

  it('a Pending pod with an IP is a workload; dual-stack keeps both addresses', () => {
    index.upsert('Pod', pod('p', { phase: 'Pending', ips: ['10.0.0.1', 'fd00::1'] }));
    index.flush();
    expect(wl(index, uid('p')).addresses.map((a) => a.length)).toEqual([4, 16]);
  });

  it('deleting a pod removes its workload', () => {
    index.upsert('Pod', pod('p'));
    index.flush();
    index.remove('Pod', pod('p'));
    const change = index.flush();
    expect(change.addresses.get(uid('p'))).toBeNull();
    expect(index.address(uid('p'))).toBeUndefined();
  });

  it('network from the pod label, else the namespace label', () => {
    index.upsert('Namespace', ns('default', { 'topology.istio.io/network': 'net-ns' }));
    index.upsert('Pod', pod('a', { labels: { 'topology.istio.io/network': 'net-pod' } }));
    index.upsert('Pod', pod('b', { ip: '10.0.0.2' }));
    index.flush();
    expect(wl(index, uid('a')).network).toBe('net-pod');
    expect(wl(index, uid('b')).network).toBe('net-ns');
  });
});

describe('services', () => {
  it('Service → Service resource; selected pods list it in their services map', () => {
    index.upsert(
      'Service',
      svc('reviews', {
        clusterIP: '10.96.1.1',
        ports: [
          { name: 'http', port: 9080, targetPort: 9080 },
          { name: 'grpc-x', port: 9090, targetPort: 'grpc' },
          { name: 'tcp', port: 3306, targetPort: 3306, appProtocol: 'http2' },
        ],
      }),
    );
    index.upsert(
      'Pod',
      pod('r1', { labels: { app: 'reviews' }, ports: [{ name: 'grpc', containerPort: 7070 }] }),
    );
    index.upsert('Pod', pod('r2', { ip: '10.0.0.2', labels: { app: 'reviews' } }));
    index.upsert('Pod', pod('other', { ip: '10.0.0.3', labels: { app: 'ratings' } }));
    index.flush();
    expect(sv(index, svcKey('reviews'))).toEqual({
      name: 'reviews',
      namespace: 'default',
      hostname: 'reviews.default.svc.cluster.local',
      addresses: [{ network: '', address: v4('10.96.1.1') }],
      ports: [
        { servicePort: 9080, targetPort: 9080, appProtocol: AppProtocol.HTTP11 },
        { servicePort: 9090, targetPort: 0, appProtocol: AppProtocol.GRPC },
        { servicePort: 3306, targetPort: 3306, appProtocol: AppProtocol.HTTP2 },
      ],
      subjectAltNames: [],
      waypoint: undefined,
      loadBalancing: undefined,
      ipFamilies: 0,
      extensions: [],
      canonical: true,
      ingressUseWaypoint: false,
    });
    // Named target port resolved per pod; a pod without that port omits it.
    expect(wl(index, uid('r1')).services).toEqual({
      [svcKey('reviews')]: {
        ports: [
          { servicePort: 9080, targetPort: 9080, appProtocol: 0 },
          { servicePort: 9090, targetPort: 7070, appProtocol: 0 },
          { servicePort: 3306, targetPort: 3306, appProtocol: 0 },
        ],
      },
    });
    expect(wl(index, uid('r2')).services[svcKey('reviews')]?.ports.map((p) => p.servicePort)).toEqual([
      9080, 3306,
    ]);
    expect(wl(index, uid('other')).services).toEqual({});
  });

  it('a new Service updates the selected workloads (and only those)', () => {
    index.upsert('Pod', pod('r1', { labels: { app: 'reviews' } }));
    index.upsert('Pod', pod('x', { ip: '10.0.0.9', labels: { app: 'x' } }));
    index.flush();
    index.upsert('Service', svc('reviews'));
    const change = index.flush();
    expect([...change.addresses.keys()].sort()).toEqual([uid('r1'), svcKey('reviews')].sort());
  });

  it.each([
    [
      'internalTrafficPolicy Local → node only, strict',
      { internalTrafficPolicy: 'Local' },
      {
        routingPreference: [LoadBalancing_Scope.NODE],
        mode: LoadBalancing_Mode.STRICT,
        healthPolicy: 0,
      },
    ],
    [
      'trafficDistribution PreferClose → network/region/zone failover',
      { trafficDistribution: 'PreferClose' },
      {
        routingPreference: [
          LoadBalancing_Scope.NETWORK,
          LoadBalancing_Scope.REGION,
          LoadBalancing_Scope.ZONE,
        ],
        mode: LoadBalancing_Mode.FAILOVER,
        healthPolicy: 0,
      },
    ],
    [
      'annotation traffic-distribution PreferSameNode',
      { annotations: { 'networking.istio.io/traffic-distribution': 'PreferSameNode' } },
      {
        routingPreference: [
          LoadBalancing_Scope.NETWORK,
          LoadBalancing_Scope.REGION,
          LoadBalancing_Scope.ZONE,
          LoadBalancing_Scope.SUBZONE,
          LoadBalancing_Scope.NODE,
        ],
        mode: LoadBalancing_Mode.FAILOVER,
        healthPolicy: 0,
      },
    ],
    [
      'publishNotReadyAddresses → allow all',
      { publishNotReadyAddresses: true },
      {
        routingPreference: [],
        mode: LoadBalancing_Mode.UNSPECIFIED_MODE,
        healthPolicy: workload.LoadBalancing_HealthPolicy.ALLOW_ALL,
      },
    ],
  ] as const)('load balancing: %s', (_n, opts, want) => {
    index.upsert('Service', svc('s', opts));
    index.flush();
    expect(sv(index, svcKey('s')).loadBalancing).toEqual({ ...want, dnsConnectStrategy: 0 });
  });

  it('headless Services have no VIP; ExternalName Services are not sent', () => {
    index.upsert('Service', svc('headless', { clusterIP: 'None' }));
    index.upsert('Service', svc('ext', { type: 'ExternalName', clusterIP: '' }));
    index.flush();
    expect(sv(index, svcKey('headless')).addresses).toEqual([]);
    expect(index.address(svcKey('ext'))).toBeUndefined();
  });

  it('ServiceEntry: resolution NONE → PASSTHROUGH; workloadSelector selects pods; ports by name', () => {
    index.upsert(
      'ServiceEntry',
      serviceEntry('db', {
        hosts: ['db.example.com'],
        addresses: ['240.0.0.1'],
        ports: [{ number: 5432, name: 'tcp-pg', protocol: 'TCP' }],
        resolution: 'NONE',
        workloadSelector: { labels: { app: 'db' } },
      }),
    );
    index.upsert('Pod', pod('db-0', { labels: { app: 'db' } }));
    index.flush();
    expect(sv(index, 'default/db.example.com')).toMatchObject({
      hostname: 'db.example.com',
      addresses: [{ network: '', address: v4('240.0.0.1') }],
      ports: [{ servicePort: 5432, targetPort: 5432, appProtocol: AppProtocol.UNKNOWN }],
      loadBalancing: {
        routingPreference: [],
        mode: LoadBalancing_Mode.PASSTHROUGH,
        healthPolicy: workload.LoadBalancing_HealthPolicy.ALLOW_ALL,
      },
      canonical: true,
    });
    expect(Object.keys(wl(index, uid('db-0')).services)).toEqual(['default/db.example.com']);
  });

  it('ServiceEntry endpoints become workloads; DNS entries without endpoints get one per host', () => {
    index.upsert(
      'ServiceEntry',
      serviceEntry('vm', {
        hosts: ['vm.example.com'],
        ports: [{ number: 80, name: 'http' }],
        resolution: 'STATIC',
        endpoints: [{ address: '192.168.1.5', ports: { http: 8080 }, serviceAccount: 'vm-sa' }],
      }),
    );
    index.upsert(
      'ServiceEntry',
      serviceEntry('ext', { hosts: ['api.example.com'], ports: [{ number: 443 }], resolution: 'DNS' }),
    );
    index.flush();
    expect(wl(index, 'Kubernetes/networking.istio.io/ServiceEntry/default/vm/192.168.1.5')).toMatchObject({
      addresses: [v4('192.168.1.5')],
      serviceAccount: 'vm-sa',
      services: {
        'default/vm.example.com': { ports: [{ servicePort: 80, targetPort: 8080, appProtocol: 0 }] },
      },
    });
    expect(
      wl(index, 'Kubernetes/networking.istio.io/ServiceEntry/default/ext/api.example.com'),
    ).toMatchObject({
      addresses: [],
      hostname: 'api.example.com',
    });
  });

  it('WorkloadEntry selected by a Service, named target port from the entry', () => {
    index.upsert('Service', svc('vm', { ports: [{ name: 'http', port: 80, targetPort: 'web' }] }));
    index.upsert(
      'WorkloadEntry',
      workloadEntry(
        'vm-1',
        { address: '192.168.1.9', ports: { web: 8081 }, serviceAccount: 'vm' },
        { app: 'vm' },
      ),
    );
    index.flush();
    expect(wl(index, 'Kubernetes/networking.istio.io/WorkloadEntry/default/vm-1')).toMatchObject({
      addresses: [v4('192.168.1.9')],
      serviceAccount: 'vm',
      workloadType: WorkloadType.POD,
      services: { [svcKey('vm')]: { ports: [{ servicePort: 80, targetPort: 8081, appProtocol: 0 }] } },
    });
  });

  it('selector-less Service: EndpointSlices map pods to it and add non-pod endpoints', () => {
    index.upsert(
      'Service',
      svc('manual', { selector: null, ports: [{ name: 'http', port: 80, targetPort: 8080 }] }),
    );
    index.upsert('Pod', pod('p'));
    index.upsert(
      'EndpointSlice',
      endpointSlice(
        'manual-abc',
        'manual',
        [
          { addresses: ['10.0.0.1'], targetRef: { kind: 'Pod', name: 'p', namespace: 'default' } },
          { addresses: ['172.16.0.9'], conditions: { ready: false } },
        ],
        [{ name: 'http', port: 8080, protocol: 'TCP' }],
      ),
    );
    index.flush();
    expect(Object.keys(wl(index, uid('p')).services)).toEqual([svcKey('manual')]);
    expect(
      wl(index, 'Kubernetes/discovery.k8s.io/EndpointSlice/default/manual-abc/172.16.0.9'),
    ).toMatchObject({
      addresses: [v4('172.16.0.9')],
      status: WorkloadStatus.UNHEALTHY,
      services: { [svcKey('manual')]: { ports: [{ servicePort: 80, targetPort: 8080, appProtocol: 0 }] } },
    });
  });

  it('a Kubernetes Service wins a hostname over a ServiceEntry in the same namespace', () => {
    index.upsert(
      'ServiceEntry',
      serviceEntry('se', { hosts: ['s.default.svc.cluster.local'], ports: [{ number: 1 }] }),
    );
    index.upsert('Service', svc('s'));
    index.flush();
    expect(sv(index, svcKey('s')).name).toBe('s');
    index.remove('Service', svc('s'));
    index.flush();
    expect(sv(index, svcKey('s')).name).toBe('se');
  });
});

describe('waypoint binding', () => {
  const wpAddress = (name: string, namespace = 'default') => ({
    destination: {
      $case: 'hostname',
      value: { namespace, hostname: `${name}.${namespace}.svc.cluster.local` },
    },
    hboneMtlsPort: 15008,
  });

  beforeEach(() => {
    index.upsert('Service', svc('reviews'));
    index.upsert('Pod', pod('r1', { labels: { app: 'reviews' } }));
  });

  it('namespace label binds services to a service waypoint (default traffic type), not workloads', () => {
    index.upsert('Gateway', waypointGateway('waypoint'));
    index.upsert('Namespace', ns('default', { 'istio.io/use-waypoint': 'waypoint' }));
    index.flush();
    expect(sv(index, svcKey('reviews')).waypoint).toEqual(wpAddress('waypoint'));
    expect(wl(index, uid('r1')).waypoint).toBeUndefined();
    expect(index.conditions('Service', 'default', 'reviews').get('istio.io/WaypointBound')).toEqual({
      status: true,
      reason: 'WaypointAccepted',
      message: 'Successfully attached to waypoint default/waypoint',
      observedGeneration: 1,
    });
  });

  it('waypoint-for workload binds workloads; services report UnsupportedTrafficType', () => {
    index.upsert('Gateway', waypointGateway('wp', { waypointFor: 'workload' }));
    index.upsert('Namespace', ns('default', { 'istio.io/use-waypoint': 'wp' }));
    const change = index.flush();
    expect(wl(index, uid('r1')).waypoint).toEqual(wpAddress('wp'));
    expect(sv(index, svcKey('reviews')).waypoint).toBeUndefined();
    const st = change.statuses.find((s) => s.kind === 'Service' && s.name === 'reviews');
    expect(st?.conditions.get('istio.io/WaypointBound')).toMatchObject({
      status: false,
      reason: 'UnsupportedTrafficType',
      message:
        'attempting to bind to traffic type "service" which the waypoint "default/wp" does not support',
    });
  });

  it('waypoint-for all binds both; waypoint-for none binds neither', () => {
    index.upsert('Gateway', waypointGateway('wp', { waypointFor: 'all' }));
    index.upsert('Service', svc('reviews', { labels: { 'istio.io/use-waypoint': 'wp' } }));
    index.upsert('Pod', pod('r1', { labels: { app: 'reviews', 'istio.io/use-waypoint': 'wp' } }));
    index.flush();
    expect(sv(index, svcKey('reviews')).waypoint).toEqual(wpAddress('wp'));
    expect(wl(index, uid('r1')).waypoint).toEqual(wpAddress('wp'));
    index.upsert('Gateway', waypointGateway('wp', { waypointFor: 'none' }));
    index.flush();
    expect(sv(index, svcKey('reviews')).waypoint).toBeUndefined();
    expect(wl(index, uid('r1')).waypoint).toBeUndefined();
  });

  it('use-waypoint=none on the object opts out of the namespace waypoint', () => {
    index.upsert('Gateway', waypointGateway('wp'));
    index.upsert('Namespace', ns('default', { 'istio.io/use-waypoint': 'wp' }));
    index.upsert('Service', svc('reviews', { labels: { 'istio.io/use-waypoint': 'none' } }));
    index.flush();
    expect(sv(index, svcKey('reviews')).waypoint).toBeUndefined();
    expect(index.conditions('Service', 'default', 'reviews').size).toBe(0);
  });

  it('a waypoint without status.addresses is not ready (and the condition says so)', () => {
    index.upsert('Gateway', waypointGateway('wp', { address: null }));
    index.upsert('Service', svc('reviews', { labels: { 'istio.io/use-waypoint': 'wp' } }));
    index.flush();
    expect(sv(index, svcKey('reviews')).waypoint).toBeUndefined();
    expect(index.conditions('Service', 'default', 'reviews').get('istio.io/WaypointBound')).toMatchObject({
      status: false,
      reason: 'WaypointIsNotReady',
      message: 'waypoint "default/wp" is not ready',
    });
    // Once the waypoint gets an address, the service binds and the condition flips.
    index.upsert('Gateway', waypointGateway('wp'));
    const change = index.flush();
    expect(sv(index, svcKey('reviews')).waypoint).toEqual(wpAddress('wp'));
    expect(
      change.statuses.find((s) => s.name === 'reviews')?.conditions.get('istio.io/WaypointBound'),
    ).toMatchObject({
      status: true,
    });
    // Removing the label removes our condition.
    index.upsert('Service', svc('reviews'));
    const removed = index.flush();
    expect(
      removed.statuses.find((s) => s.name === 'reviews')?.conditions.get('istio.io/WaypointBound'),
    ).toBeNull();
  });

  it('cross-namespace waypoints need allowedRoutes; Same denies, All and Selector allow', () => {
    index.upsert('Namespace', ns('waypoints'));
    index.upsert('Gateway', waypointGateway('shared', { namespace: 'waypoints' }));
    index.upsert(
      'Service',
      svc('reviews', {
        labels: { 'istio.io/use-waypoint': 'shared', 'istio.io/use-waypoint-namespace': 'waypoints' },
      }),
    );
    index.flush();
    expect(sv(index, svcKey('reviews')).waypoint).toBeUndefined();
    expect(index.conditions('Service', 'default', 'reviews').get('istio.io/WaypointBound')).toMatchObject({
      reason: 'AttachmentDenied',
    });
    index.upsert('Gateway', waypointGateway('shared', { namespace: 'waypoints', allowedFrom: 'All' }));
    index.flush();
    expect(sv(index, svcKey('reviews')).waypoint).toEqual(wpAddress('shared', 'waypoints'));
    index.upsert(
      'Gateway',
      waypointGateway('shared', {
        namespace: 'waypoints',
        allowedFrom: 'Selector',
        selector: { mesh: 'yes' },
      }),
    );
    index.flush();
    expect(sv(index, svcKey('reviews')).waypoint).toBeUndefined();
    index.upsert('Namespace', ns('default', { mesh: 'yes' }));
    index.flush();
    expect(sv(index, svcKey('reviews')).waypoint).toEqual(wpAddress('shared', 'waypoints'));
  });

  it('IP status addresses are used when there is no hostname', () => {
    index.upsert('Gateway', waypointGateway('wp', { address: { type: 'IPAddress', value: '10.96.5.5' } }));
    index.upsert('Service', svc('reviews', { labels: { 'istio.io/use-waypoint': 'wp' } }));
    index.flush();
    expect(sv(index, svcKey('reviews')).waypoint).toEqual({
      destination: { $case: 'address', value: { network: '', address: v4('10.96.5.5') } },
      hboneMtlsPort: 15008,
    });
  });

  it("a waypoint's own pods and Service never use a waypoint", () => {
    index.upsert('Gateway', waypointGateway('wp', { waypointFor: 'all' }));
    index.upsert('Namespace', ns('default', { 'istio.io/use-waypoint': 'wp' }));
    index.upsert(
      'Service',
      svc('wp', {
        selector: { 'gateway.networking.k8s.io/gateway-name': 'wp' },
        labels: { 'gateway.istio.io/managed': 'istio.io-mesh-controller' },
      }),
    );
    index.upsert(
      'Pod',
      pod('wp-1', { ip: '10.0.0.50', labels: { 'gateway.networking.k8s.io/gateway-name': 'wp' } }),
    );
    index.flush();
    expect(sv(index, svcKey('wp')).waypoint).toBeUndefined();
    expect(wl(index, uid('wp-1')).waypoint).toBeUndefined();
    expect(wl(index, uid('r1')).waypoint).toEqual(wpAddress('wp'));
  });

  it('ingress-use-waypoint label is carried and explained', () => {
    index.upsert('Gateway', waypointGateway('wp'));
    index.upsert(
      'Service',
      svc('reviews', { labels: { 'istio.io/use-waypoint': 'wp', 'istio.io/ingress-use-waypoint': 'true' } }),
    );
    index.flush();
    expect(sv(index, svcKey('reviews')).ingressUseWaypoint).toBe(true);
    expect(index.conditions('Service', 'default', 'reviews').get('istio.io/WaypointBound')?.message).toBe(
      'Successfully attached to waypoint default/wp. Ingress traffic will traverse the waypoint',
    );
  });
});

describe('policies in the index', () => {
  it('selector policies are referenced by matching workloads; namespace/global ones are only sent', () => {
    index.upsert('Namespace', ns('istio-system'));
    index.upsert('Pod', pod('r1', { labels: { app: 'reviews' } }));
    index.upsert('Pod', pod('p1', { ip: '10.0.0.2', labels: { app: 'productpage' } }));
    index.upsert(
      'AuthorizationPolicy',
      authzPolicy('only-reviews', 'default', { selector: { matchLabels: { app: 'reviews' } } }),
    );
    index.upsert('AuthorizationPolicy', authzPolicy('ns-wide', 'default', { rules: [{}] }));
    index.upsert(
      'AuthorizationPolicy',
      authzPolicy('mesh-reviews', 'istio-system', { selector: { matchLabels: { app: 'reviews' } } }),
    );
    index.upsert('AuthorizationPolicy', authzPolicy('global', 'istio-system', {}));
    index.upsert(
      'AuthorizationPolicy',
      authzPolicy('custom', 'default', { action: 'CUSTOM', selector: { matchLabels: { app: 'reviews' } } }),
    );
    index.upsert(
      'AuthorizationPolicy',
      authzPolicy('wp', 'default', { targetRefs: [{ kind: 'Service', name: 'reviews' }] }),
    );
    const change = index.flush();
    expect(wl(index, uid('r1')).authorizationPolicies).toEqual([
      'default/only-reviews',
      'istio-system/mesh-reviews',
    ]);
    expect(wl(index, uid('p1')).authorizationPolicies).toEqual([]);
    expect(index.authorizationNames()).toEqual([
      'default/ns-wide',
      'default/only-reviews',
      'istio-system/global',
      'istio-system/mesh-reviews',
    ]);
    expect([...change.authorizations.keys()].sort()).toEqual(index.authorizationNames());
    const byName = new Map(change.statuses.map((s) => [s.name, s.conditions.get('ZtunnelAccepted')]));
    expect(byName.get('only-reviews')).toEqual({
      status: true,
      reason: 'Accepted',
      message: 'attached to ztunnel',
      observedGeneration: 1,
    });
    expect(byName.get('custom')).toMatchObject({ status: false, reason: 'UnsupportedValue' });
    expect(byName.has('wp')).toBe(false);

    // Relabelling a pod rebinds it; deleting a policy unbinds it and removes the resource.
    index.upsert('Pod', pod('p1', { ip: '10.0.0.2', labels: { app: 'reviews' } }));
    index.remove('AuthorizationPolicy', authzPolicy('only-reviews', 'default', {}));
    const next = index.flush();
    expect(next.authorizations.get('default/only-reviews')).toBeNull();
    expect(wl(index, uid('p1')).authorizationPolicies).toEqual(['istio-system/mesh-reviews']);
    expect(wl(index, uid('r1')).authorizationPolicies).toEqual(['istio-system/mesh-reviews']);
  });

  it('PeerAuthentication STRICT: static policy sent and referenced by workloads in scope', () => {
    index.upsert('Namespace', ns('other'));
    index.upsert('Pod', pod('a'));
    index.upsert('Pod', pod('b', { ip: '10.0.0.2', namespace: 'other' }));
    index.upsert('PeerAuthentication', peerAuth('strict', 'default', { mtls: { mode: 'STRICT' } }));
    const change = index.flush();
    expect(change.authorizations.has('istio-system/istio_converted_static_strict')).toBe(true);
    expect(wl(index, uid('a')).authorizationPolicies).toEqual(['istio-system/istio_converted_static_strict']);
    expect(wl(index, uid('b', 'other')).authorizationPolicies).toEqual([]);
    index.remove('PeerAuthentication', peerAuth('strict', 'default', {}));
    const gone = index.flush();
    expect(gone.authorizations.get('istio-system/istio_converted_static_strict')).toBeNull();
    expect(wl(index, uid('a')).authorizationPolicies).toEqual([]);
  });

  it('portLevelMtls produces the converted policy, referenced instead of the static one', () => {
    index.upsert('Pod', pod('a', { labels: { app: 'a' } }));
    index.upsert(
      'PeerAuthentication',
      peerAuth('a', 'default', {
        selector: { matchLabels: { app: 'a' } },
        mtls: { mode: 'STRICT' },
        portLevelMtls: { '8080': { mode: 'PERMISSIVE' } },
      }),
    );
    index.flush();
    expect(wl(index, uid('a')).authorizationPolicies).toEqual(['default/converted_peer_authentication_a']);
    expect(index.authorizationNames()).toEqual([
      'default/converted_peer_authentication_a',
      'istio-system/istio_converted_static_strict',
    ]);
  });
});

describe('incremental behaviour', () => {
  it('an unchanged recomputation produces no change; unrelated objects do not touch workloads', () => {
    index.upsert('Service', svc('reviews'));
    index.upsert('Pod', pod('r1', { labels: { app: 'reviews' } }));
    index.flush();
    index.upsert('Pod', pod('r1', { labels: { app: 'reviews' } }));
    index.upsert('Namespace', ns('default'));
    expect(index.flush().addresses.size).toBe(0);
    index.upsert('Node', node('node-1', { unrelated: 'label' }));
    expect(index.dirty).toBe(false);
  });

  it('encoded resources round-trip and are deterministic (same input → same bytes)', () => {
    const build = () => {
      const i = new AmbientIndex();
      i.upsert('Service', svc('b'));
      i.upsert('Service', svc('a', { clusterIP: '10.96.0.11', selector: { app: 'b' } }));
      i.upsert('Pod', pod('p', { labels: { app: 'b' } }));
      i.flush();
      return i.encodedAddresses();
    };
    const x = build();
    const y = build();
    for (const [k, v] of x) expect(Buffer.from(v).equals(Buffer.from(y.get(k)!))).toBe(true);
    const p = decode(x.get(uid('p')))?.type;
    expect(p?.$case === 'workload' && Object.keys(p.value.services)).toEqual([svcKey('a'), svcKey('b')]);
  });
});
