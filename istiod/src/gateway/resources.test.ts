import { describe, expect, it } from 'vitest';
import { CLASS_INFOS } from './classes.ts';
import type { GatewayListener, GatewayObject, Manifest } from './index.ts';
import { INGRESS_CONTROLLER, MESH_CONTROLLER } from './names.ts';
import {
  type BuildContext,
  buildResources,
  gatewayResourceName,
  isManagedGateway,
  satisfies,
} from './resources.ts';

const WAYPOINT = CLASS_INFOS.get(MESH_CONTROLLER)!;
const INGRESS = CLASS_INFOS.get(INGRESS_CONTROLLER)!;
const ctx: BuildContext = {
  image: 'ambient-ts/waypoint:0.1.0',
  xdsAddress: 'istiod.istio-system.svc:15012',
  clusterId: 'Kubernetes',
  trustDomain: 'cluster.local',
};

function gateway(
  name: string,
  o: {
    className?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    listeners?: GatewayListener[];
    infrastructure?: { labels?: Record<string, string>; annotations?: Record<string, string> };
    addresses?: Array<{ type?: string; value: string }>;
  } = {},
): GatewayObject {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: {
      name,
      namespace: 'bookinfo',
      uid: `uid-${name}`,
      generation: 1,
      labels: o.labels,
      annotations: o.annotations,
    },
    spec: {
      gatewayClassName: o.className ?? 'istio-waypoint',
      listeners: o.listeners ?? [{ name: 'mesh', port: 15008, protocol: 'HBONE' }],
      ...(o.infrastructure ? { infrastructure: o.infrastructure } : {}),
      ...(o.addresses ? { addresses: o.addresses } : {}),
    },
  };
}

// biome-ignore lint/suspicious/noExplicitAny: reading into the built manifests
const spec = (m: Manifest): any => m.spec;
// biome-ignore lint/suspicious/noExplicitAny: reading into the built manifests
const podSpec = (m: Manifest): any => spec(m).template.spec;

describe('buildResources: waypoint (class istio-waypoint)', () => {
  const r = buildResources(
    gateway('waypoint', { labels: { 'istio.io/waypoint-for': 'service' } }),
    WAYPOINT,
    ctx,
  );

  it('names every object after the Gateway, labels them and makes the Gateway their owner', () => {
    for (const m of [r.serviceAccount, r.service, r.deployment]) {
      expect(m.metadata.name).toBe('waypoint');
      expect(m.metadata.namespace).toBe('bookinfo');
      expect(m.metadata.labels).toEqual({
        'istio.io/waypoint-for': 'service',
        'gateway.networking.k8s.io/gateway-name': 'waypoint',
        'gateway.istio.io/managed': 'istio.io-mesh-controller',
      });
      expect(m.metadata.ownerReferences).toEqual([
        {
          apiVersion: 'gateway.networking.k8s.io/v1',
          kind: 'Gateway',
          name: 'waypoint',
          uid: 'uid-waypoint',
        },
      ]);
    }
    expect([r.serviceAccount.apiVersion, r.service.apiVersion, r.deployment.apiVersion]).toEqual([
      'v1',
      'v1',
      'apps/v1',
    ]);
  });

  it('exposes status-port 15021 and mesh 15008 on a ClusterIP Service selecting the pods', () => {
    expect(spec(r.service)).toEqual({
      type: 'ClusterIP',
      selector: { 'gateway.networking.k8s.io/gateway-name': 'waypoint' },
      ports: [
        { name: 'status-port', port: 15021, protocol: 'TCP', appProtocol: 'tcp' },
        { name: 'mesh', port: 15008, protocol: 'TCP', appProtocol: 'all' },
      ],
    });
  });

  it('runs the proxy image uncaptured, with the ztunnel-style identity and istiod settings', () => {
    const d = spec(r.deployment);
    expect(d.selector).toEqual({ matchLabels: { 'gateway.networking.k8s.io/gateway-name': 'waypoint' } });
    expect(d.template.metadata.labels).toMatchObject({
      'gateway.networking.k8s.io/gateway-name': 'waypoint',
      'gateway.istio.io/managed': 'istio.io-mesh-controller',
      'istio.io/dataplane-mode': 'none',
      'sidecar.istio.io/inject': 'false',
      'service.istio.io/canonical-name': 'waypoint',
    });
    const p = podSpec(r.deployment);
    expect(p.serviceAccountName).toBe('waypoint');
    const c = p.containers[0];
    expect(c.image).toBe('ambient-ts/waypoint:0.1.0');
    const env = Object.fromEntries(
      c.env.map((e: { name: string; value?: string; valueFrom?: { fieldRef: { fieldPath: string } } }) => [
        e.name,
        e.value ?? `field:${e.valueFrom?.fieldRef.fieldPath}`,
      ]),
    );
    expect(env).toMatchObject({
      POD_NAME: 'field:metadata.name',
      POD_NAMESPACE: 'field:metadata.namespace',
      INSTANCE_IP: 'field:status.podIP',
      SERVICE_ACCOUNT: 'field:spec.serviceAccountName',
      PROXY_TYPE: 'waypoint',
      GATEWAY_NAME: 'waypoint',
      XDS_ADDRESS: 'istiod.istio-system.svc:15012',
      CA_ADDRESS: 'istiod.istio-system.svc:15012',
      TRUST_DOMAIN: 'cluster.local',
    });
    expect(c.readinessProbe.httpGet).toEqual({ path: '/healthz/ready', port: 15021 });
    expect(c.ports.map((x: { containerPort: number }) => x.containerPort)).toEqual([15008, 15021, 15020]);
    expect(c.securityContext).toEqual({
      allowPrivilegeEscalation: false,
      privileged: false,
      readOnlyRootFilesystem: true,
      runAsNonRoot: true,
      runAsUser: 1337,
      runAsGroup: 1337,
      capabilities: { drop: ['ALL'] },
    });
    expect(p.securityContext.sysctls).toBeUndefined();
    expect(p.volumes).toContainEqual({
      name: 'istio-token',
      projected: {
        sources: [
          { serviceAccountToken: { audience: 'istio-ca', expirationSeconds: 43200, path: 'istio-token' } },
        ],
      },
    });
    expect(p.volumes).toContainEqual({ name: 'istiod-ca-cert', configMap: { name: 'istio-ca-root-cert' } });
    expect(c.volumeMounts).toContainEqual({ name: 'istio-token', mountPath: '/var/run/secrets/tokens' });
    expect(c.volumeMounts).toContainEqual({ name: 'istiod-ca-cert', mountPath: '/var/run/secrets/istio' });
  });

  it('takes the Service type from networking.istio.io/service-type', () => {
    const np = buildResources(
      gateway('waypoint', { annotations: { 'networking.istio.io/service-type': 'NodePort' } }),
      WAYPOINT,
      ctx,
    );
    expect(spec(np.service).type).toBe('NodePort');
    // Gateway annotations are copied, as upstream does.
    expect(np.service.metadata.annotations).toEqual({ 'networking.istio.io/service-type': 'NodePort' });
  });

  it('forces dataplane-mode none on waypoint pods even if the Gateway says ambient', () => {
    const g = buildResources(
      gateway('wp', { labels: { 'istio.io/dataplane-mode': 'ambient' } }),
      WAYPOINT,
      ctx,
    );
    expect(spec(g.deployment).template.metadata.labels['istio.io/dataplane-mode']).toBe('none');
  });
});

describe('buildResources: ingress (class istio)', () => {
  const gw = gateway('bookinfo-gateway', {
    className: 'istio',
    listeners: [
      { name: 'http', port: 80, protocol: 'HTTP' },
      { name: 'https.example.com', port: 443, protocol: 'HTTPS' },
      { name: 'http-again', port: 80, protocol: 'HTTP' },
    ],
  });
  const r = buildResources(gw, INGRESS, ctx);

  it('names objects <gateway>-<class> and exposes 15021 plus each listener port once, on a LoadBalancer', () => {
    expect(r.deployment.metadata.name).toBe('bookinfo-gateway-istio');
    expect(r.serviceAccount.metadata.name).toBe('bookinfo-gateway-istio');
    expect(r.service.metadata.labels['gateway.istio.io/managed']).toBe('istio.io-gateway-controller');
    expect(r.service.metadata.labels['istio.io/dataplane-mode']).toBe('none');
    expect(spec(r.service)).toEqual({
      type: 'LoadBalancer',
      selector: { 'gateway.networking.k8s.io/gateway-name': 'bookinfo-gateway' },
      ports: [
        { name: 'status-port', port: 15021, protocol: 'TCP', appProtocol: 'tcp' },
        { name: 'http', port: 80, protocol: 'TCP', appProtocol: 'http' },
        { name: 'https-example-com', port: 443, protocol: 'TCP', appProtocol: 'https' },
      ],
    });
  });

  it('runs a router that may bind privileged ports without root', () => {
    const p = podSpec(r.deployment);
    expect(p.containers[0].env).toContainEqual({ name: 'PROXY_TYPE', value: 'router' });
    expect(p.securityContext.sysctls).toEqual([{ name: 'net.ipv4.ip_unprivileged_port_start', value: '0' }]);
    expect(p.securityContext.runAsNonRoot).toBe(true);
  });

  it('honours name and service account overrides', () => {
    const o = buildResources(
      gateway('gw', {
        className: 'istio',
        annotations: {
          'gateway.istio.io/name-override': 'edge',
          'gateway.istio.io/service-account': 'edge-sa',
        },
      }),
      INGRESS,
      ctx,
    );
    expect(o.deployment.metadata.name).toBe('edge');
    expect(o.service.metadata.name).toBe('edge');
    expect(o.serviceAccount.metadata.name).toBe('edge-sa');
    expect(podSpec(o.deployment).serviceAccountName).toBe('edge-sa');
  });
});

describe('infrastructure labels and annotations', () => {
  it('come from spec.infrastructure when set (minus gateway.networking.k8s.io/ keys), else from the Gateway', () => {
    const withInfra = buildResources(
      gateway('wp', {
        labels: { team: 'a' },
        annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{...}', note: 'x' },
        infrastructure: {
          labels: { 'gateway.networking.k8s.io/foo': 'dropped', cost: 'b' },
          annotations: { owner: 'ops' },
        },
      }),
      WAYPOINT,
      ctx,
    );
    expect(withInfra.service.metadata.labels).toEqual({
      cost: 'b',
      'gateway.networking.k8s.io/gateway-name': 'wp',
      'gateway.istio.io/managed': 'istio.io-mesh-controller',
    });
    expect(withInfra.service.metadata.annotations).toEqual({ owner: 'ops' });
    const copied = buildResources(
      gateway('wp', {
        annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{...}', note: 'x' },
      }),
      WAYPOINT,
      ctx,
    );
    expect(copied.service.metadata.annotations).toEqual({ note: 'x' });
  });
});

describe('isManagedGateway / gatewayResourceName', () => {
  it.each([
    [undefined, true],
    [[{ value: '10.0.0.1' }], true],
    [[{ type: 'IPAddress', value: '10.0.0.1' }], true],
    [[{ type: 'Hostname', value: 'existing.example' }], false],
    [
      [
        { type: 'IPAddress', value: '10.0.0.1' },
        { type: 'IPAddress', value: '10.0.0.2' },
      ],
      false,
    ],
  ])('addresses %j → managed %s', (addresses, managed) => {
    expect(isManagedGateway(gateway('g', { addresses }))).toBe(managed);
  });

  it('suffixes the class for ingress only', () => {
    expect(gatewayResourceName(gateway('g'), WAYPOINT)).toBe('g');
    expect(gatewayResourceName(gateway('g', { className: 'custom' }), INGRESS)).toBe('g-custom');
  });
});

describe('satisfies (only write on change)', () => {
  it.each([
    ['extra live keys are fine', { a: 1, m: { x: '1' } }, { a: 1, b: 2, m: { x: '1', y: '2' } }, true],
    ['a changed scalar is drift', { a: 1 }, { a: 2 }, false],
    ['a missing key is drift', { a: { b: 1 } }, { a: {} }, false],
    ['lists compare by position and length', { l: [{ n: 1 }] }, { l: [{ n: 1, d: 0 }] }, true],
    ['a longer live list is drift', { l: [{ n: 1 }] }, { l: [{ n: 1 }, { n: 2 }] }, false],
    ['an object vs a list is drift', { l: [] }, { l: {} }, false],
  ])('%s', (_what, desired, live, ok) => {
    expect(satisfies(desired, live)).toBe(ok);
  });

  it('needs only our owner reference among the live ones', () => {
    const ours = [{ uid: 'u1', name: 'gw' }];
    expect(satisfies(ours, [{ uid: 'other' }, { uid: 'u1' }], 'metadata.ownerReferences')).toBe(true);
    expect(satisfies(ours, [{ uid: 'other' }], 'metadata.ownerReferences')).toBe(false);
  });

  it('a built Deployment is satisfied by itself plus server defaults', () => {
    const r = buildResources(gateway('wp'), WAYPOINT, ctx);
    const live = JSON.parse(JSON.stringify(r.deployment));
    live.spec.replicas = 1;
    live.spec.template.spec.containers[0].imagePullPolicy = 'IfNotPresent';
    live.spec.template.spec.containers[0].env[0].valueFrom.fieldRef.apiVersion = 'v1';
    live.metadata.annotations = { 'deployment.kubernetes.io/revision': '1' };
    for (const k of ['metadata', 'spec'] as const) expect(satisfies(r.deployment[k], live[k], k)).toBe(true);
    live.spec.template.spec.containers[0].image = 'old:1';
    expect(satisfies(r.deployment.spec, live.spec, 'spec')).toBe(false);
  });
});
