/**
 * The Gateway controller of istiod in-process against the lab API server with its controllers (scheduler,
 * Deployment → ReplicaSet → Pod, EndpointSlices, garbage collector) and no kubelets (issue #9). istiod runs as
 * its own service account with the RBAC of deploy/base/istiod, so a missing permission fails here. Pods never
 * start without a kubelet: the test writes a waypoint pod's status (Running, Ready, an IP) as a kubelet would,
 * and the EndpointSlice controller does the rest.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppsV1Api, CoreV1Api, CustomObjectsApi, type V1Pod } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Istiod } from '../../istiod/src/app.ts';
import { loadConfig } from '../../istiod/src/config.ts';
import { type Lab, readyNode, startLab } from '../../lab/apiserver/testkit.ts';
import { loadKubeConfig } from '../../pkg/kube/index.ts';
import { createLogger } from '../../pkg/telemetry/index.ts';
import { eventually, sleep } from '../../pkg/testing/index.ts';

const logger = createLogger({ component: 'test', level: 'silent' });
const DEPLOY = join(import.meta.dirname, '../../deploy');
const NS = 'bookinfo';
const GW = { group: 'gateway.networking.k8s.io', version: 'v1' };
const WAIT = { timeoutMs: 20_000 };

let lab: Lab;
let istiod: Istiod;
let core: CoreV1Api;
let apps: AppsV1Api;
let custom: CustomObjectsApi;
const dir = mkdtempSync(join(tmpdir(), 'amb-gateway-'));

interface Cond {
  type: string;
  status: string;
  reason: string;
  message: string;
}
interface GatewayLike {
  metadata: { uid: string; generation: number };
  status?: {
    conditions?: Cond[];
    addresses?: Array<{ type: string; value: string }>;
    listeners?: Array<{ name: string; conditions: Cond[] }>;
  };
}

function cond(conditions: Cond[] | undefined, type: string): Cond | undefined {
  return conditions?.find((c) => c.type === type);
}

async function gateway(name: string): Promise<GatewayLike> {
  return (await custom.getNamespacedCustomObject({
    ...GW,
    plural: 'gateways',
    namespace: NS,
    name,
  })) as GatewayLike;
}

async function apply(yaml: string): Promise<void> {
  await lab.k(['apply', '-f', '-'], yaml);
}

/** What a kubelet would write once the pod runs and passes its readiness probe. */
async function markReady(pod: V1Pod, ip: string): Promise<void> {
  const now = new Date().toISOString();
  const r = await lab.req(
    'PATCH',
    `/api/v1/namespaces/${pod.metadata!.namespace}/pods/${pod.metadata!.name}/status`,
    {
      status: {
        phase: 'Running',
        podIP: ip,
        podIPs: [{ ip }],
        conditions: [
          { type: 'Ready', status: 'True', lastTransitionTime: now },
          { type: 'ContainersReady', status: 'True', lastTransitionTime: now },
        ],
      },
    },
    { 'content-type': 'application/merge-patch+json' },
  );
  expect(r.status).toBe(200);
}

async function metric(name: string): Promise<number> {
  const text = await istiod.registry.metrics();
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith(`${name}{`)) sum += Number(line.split(' ').pop());
  return sum;
}

beforeAll(async () => {
  lab = await startLab({ controllers: true });
  const admin = loadKubeConfig(lab.api.kubeconfigPath);
  core = admin.makeApiClient(CoreV1Api);
  apps = admin.makeApiClient(AppsV1Api);
  custom = admin.makeApiClient(CustomObjectsApi);
  await lab.k(['apply', '-k', join(DEPLOY, 'crds')]);
  await lab.k(['apply', '-k', join(DEPLOY, 'base/namespace')]);
  await lab.k(['apply', '-f', join(DEPLOY, 'base/istiod/rbac.yaml')]);
  await core.createNamespace({ body: { metadata: { name: NS } } });
  await lab.api.client.create('v1/nodes', readyNode('node-a'));
  // istiod authenticates as its own service account: only what deploy/base/istiod grants works.
  const tok = await core.createNamespacedServiceAccountToken({
    namespace: 'istio-system',
    name: 'istiod',
    body: { spec: { expirationSeconds: 3600 } },
  });
  const kubeconfig = join(dir, 'istiod.kubeconfig');
  await lab.api.writeKubeconfig(kubeconfig, { token: tok.status!.token });
  const config = loadConfig({
    XDS_PLAINTEXT_PORT: '0',
    XDS_SECURE_PORT: '0',
    MONITORING_PORT: '0',
    HTTP_PORT: '0',
    BIND_ADDRESS: '127.0.0.1',
  });
  istiod = await Istiod.create({ config, kubeConfig: loadKubeConfig(kubeconfig), logger });
  await istiod.run();
}, 120_000);

afterAll(async () => {
  await istiod?.close(0);
  await lab?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('GatewayClasses', () => {
  it('creates istio and istio-waypoint and marks them Accepted', async () => {
    await eventually(
      async () => {
        for (const [name, controller] of [
          ['istio', 'istio.io/gateway-controller'],
          ['istio-waypoint', 'istio.io/mesh-controller'],
        ] as const) {
          const c = (await custom.getClusterCustomObject({ ...GW, plural: 'gatewayclasses', name })) as {
            spec: { controllerName: string };
            status?: { conditions?: Cond[] };
          };
          expect(c.spec.controllerName).toBe(controller);
          expect(cond(c.status?.conditions, 'Accepted')).toMatchObject({
            status: 'True',
            reason: 'Accepted',
            message: 'Handled by Istio controller',
          });
        }
      },
      { ...WAIT, what: 'GatewayClasses accepted' },
    );
  });
});

describe('a waypoint Gateway', () => {
  it('gets a ServiceAccount, Service and Deployment owned by it, and is Accepted but not yet Programmed', async () => {
    await apply(`
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: ${NS}
  labels: {istio.io/waypoint-for: service}
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE}
`);
    const uid = (await gateway('waypoint')).metadata.uid;
    const owner = { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', name: 'waypoint', uid };
    const labels = {
      'gateway.networking.k8s.io/gateway-name': 'waypoint',
      'gateway.istio.io/managed': 'istio.io-mesh-controller',
    };
    await eventually(
      async () => {
        const sa = await core.readNamespacedServiceAccount({ namespace: NS, name: 'waypoint' });
        expect(sa.metadata?.labels).toMatchObject(labels);
        expect(sa.metadata?.ownerReferences).toEqual([owner]);
        const svc = await core.readNamespacedService({ namespace: NS, name: 'waypoint' });
        expect(svc.metadata?.labels).toMatchObject(labels);
        expect(svc.metadata?.ownerReferences).toEqual([owner]);
        expect(svc.spec?.type).toBe('ClusterIP');
        expect(svc.spec?.ports?.map((p) => [p.name, p.port, p.appProtocol])).toEqual([
          ['status-port', 15021, 'tcp'],
          ['mesh', 15008, 'all'],
        ]);
        const d = await apps.readNamespacedDeployment({ namespace: NS, name: 'waypoint' });
        expect(d.metadata?.ownerReferences).toEqual([owner]);
        expect(d.spec?.template.metadata?.labels).toMatchObject({
          ...labels,
          'istio.io/dataplane-mode': 'none',
        });
        expect(d.spec?.template.spec?.containers[0]?.image).toBe('ambient-ts/waypoint:0.1.0');
        expect(d.spec?.template.spec?.serviceAccountName).toBe('waypoint');
      },
      { ...WAIT, what: 'waypoint objects' },
    );
    await eventually(
      async () => {
        const s = (await gateway('waypoint')).status;
        expect(cond(s?.conditions, 'Accepted')).toMatchObject({ status: 'True', reason: 'Accepted' });
        expect(cond(s?.conditions, 'Programmed')).toMatchObject({
          status: 'False',
          reason: 'AddressNotAssigned',
          message:
            'Failed to assign to any requested addresses: no instances found for hostname "waypoint.bookinfo.svc.cluster.local"',
        });
        expect(s?.addresses).toBeUndefined();
        expect(s?.listeners?.map((l) => [l.name, cond(l.conditions, 'Accepted')?.status])).toEqual([
          ['mesh', 'True'],
        ]);
      },
      { ...WAIT, what: 'waypoint status before ready' },
    );
  });

  it('is Programmed with its ClusterIP and hostname as addresses once its pod is ready, and binds Services', async () => {
    await apply(`
apiVersion: v1
kind: Service
metadata:
  name: reviews
  namespace: ${NS}
  labels: {istio.io/use-waypoint: waypoint}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
`);
    const pod = await eventually(
      async () => {
        const pods = await core.listNamespacedPod({
          namespace: NS,
          labelSelector: 'gateway.networking.k8s.io/gateway-name=waypoint',
        });
        expect(pods.items).toHaveLength(1);
        expect(pods.items[0]?.spec?.nodeName).toBe('node-a');
        return pods.items[0]!;
      },
      { ...WAIT, what: 'waypoint pod scheduled' },
    );
    await markReady(pod, '10.244.1.50');
    const clusterIP = (await core.readNamespacedService({ namespace: NS, name: 'waypoint' })).spec?.clusterIP;
    await eventually(
      async () => {
        const s = (await gateway('waypoint')).status;
        expect(cond(s?.conditions, 'Programmed')).toMatchObject({
          status: 'True',
          reason: 'Programmed',
          message: 'Resource programmed, assigned to service(s) waypoint.bookinfo.svc.cluster.local:15008',
        });
        expect(s?.addresses).toEqual([
          { type: 'IPAddress', value: clusterIP },
          { type: 'Hostname', value: 'waypoint.bookinfo.svc.cluster.local' },
        ]);
      },
      { ...WAIT, what: 'waypoint programmed' },
    );
    // The ambient index now sees a waypoint: the labelled Service binds to it.
    await eventually(
      async () => {
        const svc = await core.readNamespacedServiceStatus({ namespace: NS, name: 'reviews' });
        expect(cond(svc.status?.conditions as Cond[] | undefined, 'istio.io/WaypointBound')).toMatchObject({
          status: 'True',
          reason: 'WaypointAccepted',
        });
      },
      { ...WAIT, what: 'reviews bound to the waypoint' },
    );
  });

  it('settles: no writes while nothing changes', async () => {
    await sleep(500);
    const before = await metric('istiod_gateway_controller_writes_total');
    await sleep(1500);
    expect(await metric('istiod_gateway_controller_writes_total')).toBe(before);
    expect(await metric('istiod_gateway_controller_errors_total')).toBe(0);
  });

  it('follows networking.istio.io/service-type', async () => {
    await lab.k([
      'annotate',
      '-n',
      NS,
      'gateway.gateway.networking.k8s.io/waypoint',
      'networking.istio.io/service-type=NodePort',
    ]);
    await eventually(
      async () => {
        const svc = await core.readNamespacedService({ namespace: NS, name: 'waypoint' });
        expect(svc.spec?.type).toBe('NodePort');
      },
      { ...WAIT, what: 'NodePort Service' },
    );
  });

  it('is re-created when someone deletes its Deployment', async () => {
    await apps.deleteNamespacedDeployment({ namespace: NS, name: 'waypoint' });
    await eventually(
      async () => {
        const d = await apps.readNamespacedDeployment({ namespace: NS, name: 'waypoint' });
        expect(d.metadata?.deletionTimestamp).toBeUndefined();
      },
      { ...WAIT, what: 'Deployment re-created' },
    );
  });
});

describe('an ingress Gateway (class istio)', () => {
  it('gets <name>-istio objects exposing 15021 and its listener ports', async () => {
    await apply(`
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: bookinfo-gateway
  namespace: ${NS}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Same}}}
`);
    await eventually(
      async () => {
        const svc = await core.readNamespacedService({ namespace: NS, name: 'bookinfo-gateway-istio' });
        expect(svc.metadata?.labels?.['gateway.istio.io/managed']).toBe('istio.io-gateway-controller');
        expect(svc.spec?.type).toBe('LoadBalancer');
        expect(svc.spec?.ports?.map((p) => p.port)).toEqual([15021, 80]);
        const d = await apps.readNamespacedDeployment({ namespace: NS, name: 'bookinfo-gateway-istio' });
        expect(d.spec?.template.spec?.containers[0]?.env).toContainEqual({
          name: 'PROXY_TYPE',
          value: 'router',
        });
        await core.readNamespacedServiceAccount({ namespace: NS, name: 'bookinfo-gateway-istio' });
        const s = (await gateway('bookinfo-gateway')).status;
        expect(cond(s?.conditions, 'Accepted')?.status).toBe('True');
        expect(s?.listeners?.map((l) => [l.name, cond(l.conditions, 'Accepted')?.status])).toEqual([
          ['http', 'True'],
        ]);
      },
      { ...WAIT, what: 'ingress objects and status' },
    );
  });
});

describe('istiod RBAC (deploy/base/istiod)', () => {
  it.each([
    ['create', 'deployments', 'yes'],
    ['patch', 'services', 'yes'],
    ['patch', 'gateways.gateway.networking.k8s.io --subresource=status', 'yes'],
    ['create', 'gatewayclasses.gateway.networking.k8s.io', 'yes'],
    // Least privilege: the garbage collector deletes what a Gateway owned; istiod never deletes it.
    ['delete', 'deployments', 'no'],
    ['update', 'gatewayclasses.gateway.networking.k8s.io', 'no'],
    ['patch', 'gateways.gateway.networking.k8s.io', 'no'],
  ])('%s %s: %s', async (verb, resource, answer) => {
    const r = await lab.kubectl([
      'auth',
      'can-i',
      verb,
      ...resource.split(' '),
      '-n',
      NS,
      '--as',
      'system:serviceaccount:istio-system:istiod',
    ]);
    expect(r.stdout.trim()).toBe(answer);
  });
});

describe('deleting a Gateway', () => {
  it('removes its ServiceAccount, Service and Deployment (garbage collection by owner reference)', async () => {
    await custom.deleteNamespacedCustomObject({ ...GW, plural: 'gateways', namespace: NS, name: 'waypoint' });
    await eventually(
      async () => {
        const gone = async (read: () => Promise<unknown>) =>
          read().then(
            () => false,
            (err: { code?: number }) => err.code === 404,
          );
        expect(await gone(() => core.readNamespacedServiceAccount({ namespace: NS, name: 'waypoint' }))).toBe(
          true,
        );
        expect(await gone(() => core.readNamespacedService({ namespace: NS, name: 'waypoint' }))).toBe(true);
        expect(await gone(() => apps.readNamespacedDeployment({ namespace: NS, name: 'waypoint' }))).toBe(
          true,
        );
      },
      { ...WAIT, what: 'waypoint objects collected' },
    );
    // The ingress gateway's objects are untouched.
    await core.readNamespacedService({ namespace: NS, name: 'bookinfo-gateway-istio' });
  });
});
