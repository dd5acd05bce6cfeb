/**
 * The controller against a recording fake API: events in, writes out. Our writes are fed back as the informer
 * events the API server would send, to show that the loop settles (no write storm) and reacts to readiness.
 */
import { KubeConfig } from '@kubernetes/client-node';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { Registry } from '../../../pkg/metrics/index.ts';
import { eventually } from '../../../pkg/testing/index.ts';
import { GatewayController } from './controller.ts';
import type { Condition, GatewayClassObject, GatewayObject, LiveObject, Manifest } from './index.ts';
import type { GatewayApi, GatewayStatusPatch, ManagedKind } from './kube.ts';

const logger = pino({ level: 'silent' });
const NOW = '2025-06-01T00:00:00Z';

class FakeApi implements GatewayApi {
  readonly log: string[] = [];
  readonly objects = new Map<string, LiveObject>();
  readonly statuses = new Map<string, GatewayStatusPatch>();
  readonly classStatuses = new Map<string, readonly Condition[]>();
  failApply = 0;
  /** Answer class creation with 404, as when the Gateway API CRDs are not installed. */
  noGatewayApi = false;
  private rv = 100;

  async apply(m: Manifest): Promise<void> {
    if (this.failApply > 0) {
      this.failApply--;
      throw new Error('apiserver says no');
    }
    this.log.push(`apply ${m.kind} ${m.metadata.namespace}/${m.metadata.name}`);
    this.objects.set(`${m.kind}/${m.metadata.namespace}/${m.metadata.name}`, {
      ...JSON.parse(JSON.stringify(m)),
      metadata: { ...m.metadata, resourceVersion: String(++this.rv) },
    });
  }
  async get(kind: ManagedKind, namespace: string, name: string): Promise<LiveObject | null> {
    return this.objects.get(`${kind}/${namespace}/${name}`) ?? null;
  }
  async patchGatewayStatus(
    namespace: string,
    name: string,
    _rv: string,
    s: GatewayStatusPatch,
  ): Promise<void> {
    this.log.push(`status Gateway ${namespace}/${name}`);
    this.statuses.set(`${namespace}/${name}`, s);
  }
  async createGatewayClass(obj: GatewayClassObject): Promise<boolean> {
    if (this.noGatewayApi)
      throw Object.assign(new Error('the server could not find the requested resource'), { code: 404 });
    this.log.push(`create GatewayClass ${obj.metadata?.name}`);
    return true;
  }
  async patchGatewayClassStatus(name: string, _rv: string, conditions: readonly Condition[]): Promise<void> {
    this.log.push(`status GatewayClass ${name}`);
    this.classStatuses.set(name, conditions);
  }
  take(): string[] {
    return this.log.splice(0);
  }
}

function setup() {
  const api = new FakeApi();
  const registry = new Registry();
  const c = new GatewayController({
    kubeConfig: new KubeConfig(),
    api,
    build: { image: 'img:1', xdsAddress: 'istiod.istio-system.svc:15012', clusterId: 'K', trustDomain: 'td' },
    domainSuffix: 'cluster.local',
    deploy: true,
    createClasses: true,
    watchOwned: false,
    registry,
    logger,
    now: () => NOW,
  });
  return { api, c, registry };
}

function waypoint(name = 'waypoint', extra: Partial<GatewayObject> = {}): GatewayObject {
  return {
    metadata: { name, namespace: 'bookinfo', uid: `uid-${name}`, generation: 1, resourceVersion: '1' },
    spec: {
      gatewayClassName: 'istio-waypoint',
      listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }],
    },
    ...extra,
  };
}

/** Feeds the fake's objects back as the informer events the API server would send. */
function echo(api: FakeApi, c: GatewayController) {
  for (const [id, obj] of api.objects) {
    const kind = id.split('/')[0] as ManagedKind;
    if (kind === 'Service')
      c.observe('Service', 'add', { ...obj, spec: { ...(obj.spec as object), clusterIP: '10.96.0.9' } });
    else c.observeOwned(kind, 'add', obj);
  }
}

describe('GatewayController', () => {
  it('creates the built-in classes once and marks classes of ours Accepted', async () => {
    const { api, c } = setup();
    await c.start(Promise.resolve());
    await c.idle();
    expect(api.take().sort()).toEqual(['create GatewayClass istio', 'create GatewayClass istio-waypoint']);
    const cls: GatewayClassObject = {
      metadata: { name: 'istio-waypoint', generation: 1, resourceVersion: '5' },
      spec: { controllerName: 'istio.io/mesh-controller' },
    };
    c.observe('GatewayClass', 'add', cls);
    c.observe('GatewayClass', 'add', {
      metadata: { name: 'other' },
      spec: { controllerName: 'example.com/x' },
    });
    await c.idle();
    expect(api.take()).toEqual(['status GatewayClass istio-waypoint']);
    // Until its own update event arrives, a re-run must not write the same status again.
    c.observe('GatewayClass', 'update', cls);
    await c.idle();
    expect(api.take()).toEqual([]);
    c.observe('GatewayClass', 'update', {
      ...cls,
      metadata: { ...cls.metadata, resourceVersion: '6' },
      status: { conditions: api.classStatuses.get('istio-waypoint') },
    });
    await c.idle();
    expect(api.take()).toEqual([]);
    c.stop();
  });

  it('without the Gateway API CRDs, creating the classes is not an error', async () => {
    const { api, c, registry } = setup();
    api.noGatewayApi = true;
    await c.start(Promise.resolve());
    await c.idle();
    expect(api.take()).toEqual([]);
    expect(await registry.metrics()).not.toMatch(/istiod_gateway_controller_errors_total\{/);
    c.stop();
  });

  it('deploys a waypoint, settles, and programs it once its Service has a ready endpoint', async () => {
    const { api, c, registry } = setup();
    c.observe('Gateway', 'add', waypoint());
    await c.start(Promise.resolve());
    await c.idle();
    expect(api.take().filter((l) => !l.includes('GatewayClass'))).toEqual([
      'apply ServiceAccount bookinfo/waypoint',
      'apply Service bookinfo/waypoint',
      'apply Deployment bookinfo/waypoint',
      'status Gateway bookinfo/waypoint',
    ]);
    expect(api.statuses.get('bookinfo/waypoint')?.addresses).toBeNull();

    // The objects' own events: the Service now exists (no endpoints yet), which is news for the status…
    echo(api, c);
    await c.idle();
    expect(api.take()).toEqual(['status Gateway bookinfo/waypoint']);
    const written = api.statuses.get('bookinfo/waypoint')!;
    expect(written.conditions.find((x) => x.type === 'Programmed')).toMatchObject({
      status: 'False',
      reason: 'AddressNotAssigned',
    });
    // …and the Gateway's own status update finds nothing to do.
    c.observe(
      'Gateway',
      'update',
      waypoint('waypoint', {
        metadata: { ...waypoint().metadata, resourceVersion: '2' },
        status: { conditions: written.conditions, listeners: written.listeners },
      }),
    );
    await c.idle();
    expect(api.take()).toEqual([]);

    c.observe('EndpointSlice', 'add', {
      metadata: {
        name: 'waypoint-abc',
        namespace: 'bookinfo',
        labels: { 'kubernetes.io/service-name': 'waypoint' },
      },
      endpoints: [{ addresses: ['10.244.1.7'], conditions: { ready: true } }],
    });
    await c.idle();
    expect(api.take()).toEqual(['status Gateway bookinfo/waypoint']);
    const ready = api.statuses.get('bookinfo/waypoint')!;
    expect(ready.addresses).toEqual([
      { type: 'IPAddress', value: '10.96.0.9' },
      { type: 'Hostname', value: 'waypoint.bookinfo.svc.cluster.local' },
    ]);
    expect(ready.conditions.find((x) => x.type === 'Programmed')?.status).toBe('True');
    expect(await registry.metrics()).toMatch(
      /istiod_gateway_controller_writes_total\{kind="Deployment",op="apply"\} 1/,
    );
    c.stop();
  });

  it('re-applies an object that drifted or disappeared', async () => {
    const { api, c } = setup();
    c.observe('Gateway', 'add', waypoint());
    await c.start(Promise.resolve());
    await c.idle();
    echo(api, c);
    await c.idle();
    api.take();
    const d = api.objects.get('Deployment/bookinfo/waypoint')!;
    // biome-ignore lint/suspicious/noExplicitAny: editing a plain manifest
    const drifted: any = JSON.parse(JSON.stringify(d));
    drifted.spec.template.spec.containers[0].image = 'someone-else:2';
    drifted.metadata.resourceVersion = '999';
    c.observeOwned('Deployment', 'update', drifted);
    await c.idle();
    expect(api.take()).toEqual(['apply Deployment bookinfo/waypoint']);
    api.objects.delete('ServiceAccount/bookinfo/waypoint');
    c.observeOwned('ServiceAccount', 'delete', api.objects.get('Deployment/bookinfo/waypoint')!);
    c.observeOwned('ServiceAccount', 'delete', {
      metadata: {
        name: 'waypoint',
        namespace: 'bookinfo',
        labels: { 'gateway.istio.io/managed': 'istio.io-mesh-controller' },
        ownerReferences: [{ kind: 'Gateway', name: 'waypoint', uid: 'uid-waypoint' }],
      },
    });
    await c.idle();
    expect(api.take()).toContain('apply ServiceAccount bookinfo/waypoint');
    c.stop();
  });

  it('leaves alone objects with our name that we do not manage', async () => {
    const { api, c } = setup();
    c.observe('Service', 'add', {
      metadata: { name: 'waypoint', namespace: 'bookinfo' },
      spec: { type: 'ClusterIP' },
    });
    api.objects.set('ServiceAccount/bookinfo/waypoint', {
      metadata: { name: 'waypoint', namespace: 'bookinfo' },
    });
    c.observe('Gateway', 'add', waypoint());
    await c.start(Promise.resolve());
    await c.idle();
    expect(api.take().filter((l) => !l.includes('GatewayClass'))).toEqual([
      'apply Deployment bookinfo/waypoint',
      'status Gateway bookinfo/waypoint',
    ]);
    c.stop();
  });

  it('ignores Gateways of other classes and ones pointing at an existing deployment', async () => {
    const { api, c } = setup();
    c.observe('Gateway', 'add', {
      ...waypoint('foreign'),
      spec: { gatewayClassName: 'nginx', listeners: [{ name: 'http', port: 80, protocol: 'HTTP' }] },
    });
    c.observe('Gateway', 'add', {
      ...waypoint('manual'),
      spec: {
        gatewayClassName: 'istio',
        addresses: [{ type: 'Hostname', value: 'existing.example' }],
        listeners: [{ name: 'http', port: 80, protocol: 'HTTP' }],
      },
    });
    await c.start(Promise.resolve());
    await c.idle();
    expect(api.take().filter((l) => !l.includes('GatewayClass'))).toEqual([]);
    c.stop();
  });

  it('retries failures with back-off, counting each and logging a repeated error once', async () => {
    const lines: Array<{ msg: string; code?: string }> = [];
    const api = new FakeApi();
    const registry = new Registry();
    const c = new GatewayController({
      kubeConfig: new KubeConfig(),
      api,
      build: { image: 'img:1', xdsAddress: 'x:15012', clusterId: 'K', trustDomain: 'td' },
      domainSuffix: 'cluster.local',
      deploy: true,
      createClasses: false,
      watchOwned: false,
      registry,
      logger: pino(
        { level: 'debug' },
        { write: (s: string) => void lines.push(JSON.parse(s) as { msg: string; code?: string }) },
      ),
      now: () => NOW,
    });
    api.failApply = 2;
    c.observe('Gateway', 'add', waypoint());
    await c.start(Promise.resolve());
    await eventually(() => expect(lines.some((l) => l.msg === 'gateway reconcile recovered')).toBe(true), {
      timeoutMs: 5000,
      what: 'recovered after retries',
    });
    expect(api.log).toContain('apply ServiceAccount bookinfo/waypoint');
    expect(lines.filter((l) => l.code === 'MESH_ERR_ISTIOD_GATEWAY')).toHaveLength(1);
    expect(await registry.metrics()).toMatch(/istiod_gateway_controller_errors_total\{kind="Gateway"\} 1/);
    c.stop();
  });
});
