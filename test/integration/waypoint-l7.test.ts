/**
 * The waypoint L7 compiler against the lab API server (in-process, no root): its informers list and watch the L7
 * CRDs, the ambient informers feed it services and waypoints, and its status writer puts our entries into
 * HTTPRoute `status.parents` (leaving another controller's entry alone) and `WaypointAccepted` on a
 * VirtualService, through the status subresource.
 */
import { join } from 'node:path';
import { CustomObjectsApi } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { AmbientIndex } from '../../istiod/src/index/index.ts';
import { AmbientController } from '../../istiod/src/kube/controller.ts';
import { WaypointAccess } from '../../istiod/src/l7/access.ts';
import { L7Controller } from '../../istiod/src/l7/controller.ts';
import { L7StatusWriter } from '../../istiod/src/l7/status.ts';
import { DEFAULT_TYPES, XdsServer } from '../../istiod/src/xds/server.ts';
import { type Lab, startLab } from '../../lab/apiserver/testkit.ts';
import { loadKubeConfig } from '../../pkg/kube/index.ts';
import { Registry } from '../../pkg/metrics/index.ts';
import { createLogger } from '../../pkg/telemetry/index.ts';
import { eventually } from '../../pkg/testing/index.ts';
import { WAYPOINT_SERVICE_TYPE_URL } from '../../pkg/xds/index.ts';

const logger = createLogger({ component: 'test', level: 'silent' });
let lab: Lab;
let custom: CustomObjectsApi;
let ambient: AmbientController;
let l7: L7Controller;
let xds: XdsServer;
let status: L7StatusWriter;

const GW_API = { group: 'gateway.networking.k8s.io', version: 'v1' };

function yaml(docs: unknown[]): string {
  return docs.map((d) => stringify(d)).join('---\n');
}

beforeAll(async () => {
  lab = await startLab();
  const kc = loadKubeConfig(lab.api.kubeconfigPath);
  custom = kc.makeApiClient(CustomObjectsApi);
  await lab.k(['apply', '-k', join(import.meta.dirname, '../../deploy/crds')]);
  const svc = (name: string) => ({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: 'default' },
    spec: { selector: { app: name }, ports: [{ name: 'http', port: 9080, targetPort: 9080 }] },
  });
  await lab.k(
    ['apply', '-f', '-'],
    yaml([
      {
        apiVersion: 'v1',
        kind: 'Namespace',
        metadata: { name: 'default', labels: { 'istio.io/use-waypoint': 'waypoint' } },
      },
      {
        apiVersion: 'gateway.networking.k8s.io/v1',
        kind: 'Gateway',
        metadata: { name: 'waypoint', namespace: 'default' },
        spec: {
          gatewayClassName: 'istio-waypoint',
          listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }],
        },
      },
      svc('reviews'),
      svc('reviews-v2'),
      svc('details'),
      {
        apiVersion: 'gateway.networking.k8s.io/v1',
        kind: 'HTTPRoute',
        metadata: { name: 'reviews', namespace: 'default' },
        spec: {
          parentRefs: [{ group: '', kind: 'Service', name: 'reviews' }, { name: 'ingress' }],
          rules: [
            {
              backendRefs: [
                { name: 'reviews-v2', port: 9080 },
                { name: 'missing', port: 9080 },
              ],
            },
          ],
        },
      },
      {
        apiVersion: 'networking.istio.io/v1alpha3',
        kind: 'VirtualService',
        metadata: { name: 'details', namespace: 'default' },
        spec: {
          hosts: ['details'],
          http: [{ timeout: '3s', route: [{ destination: { host: 'details' } }] }],
        },
      },
    ]),
  );
  // The waypoint is ready (the Gateway controller would write this), and the ingress controller already reported
  // on its own parent of the route.
  await lab.k([
    'patch',
    'gateway',
    'waypoint',
    '-n',
    'default',
    '--subresource=status',
    '--type=merge',
    '-p',
    JSON.stringify({
      status: { addresses: [{ type: 'Hostname', value: 'waypoint.default.svc.cluster.local' }] },
    }),
  ]);
  await lab.k([
    'patch',
    'httproute',
    'reviews',
    '-n',
    'default',
    '--subresource=status',
    '--type=merge',
    '-p',
    JSON.stringify({
      status: {
        parents: [
          {
            parentRef: { name: 'ingress' },
            controllerName: 'istio.io/gateway-controller',
            conditions: [
              {
                type: 'Accepted',
                status: 'True',
                reason: 'Accepted',
                message: 'x',
                lastTransitionTime: '2024-01-01T00:00:00Z',
              },
            ],
          },
        ],
      },
    }),
  ]);
  const registry = new Registry();
  const index = new AmbientIndex();
  xds = new XdsServer({
    registry,
    logger,
    types: [...DEFAULT_TYPES, WAYPOINT_SERVICE_TYPE_URL],
    access: new Map([[WAYPOINT_SERVICE_TYPE_URL, new WaypointAccess(index)]]),
  });
  status = new L7StatusWriter(kc, logger);
  l7 = await L7Controller.create({ kubeConfig: kc, index, xds, status, logger });
  ambient = await AmbientController.create({
    kubeConfig: kc,
    index,
    xds,
    registry,
    logger,
    observer: l7.observer,
  });
  await Promise.all([ambient.synced, l7.synced]);
}, 120_000);

afterAll(async () => {
  l7?.stop();
  ambient?.stop();
  status?.stop();
  xds?.close();
  await lab?.close();
});

interface Cond {
  type: string;
  status: string;
  reason: string;
  message: string;
}

describe('waypoint L7 compiler with the lab API server', () => {
  it('compiles ServiceConfigs from watched objects', async () => {
    await eventually(() => {
      const v = xds.versions(WAYPOINT_SERVICE_TYPE_URL);
      // Every Service of the namespace binds to its waypoint, the API server's own `kubernetes` too.
      expect([...v.keys()].sort()).toEqual([
        'default/details.default.svc.cluster.local',
        'default/kubernetes.default.svc.cluster.local',
        'default/reviews-v2.default.svc.cluster.local',
        'default/reviews.default.svc.cluster.local',
      ]);
    });
    expect(l7.l7.config('default/details.default.svc.cluster.local')?.routes[0]?.action?.timeoutMs).toBe(
      3000,
    );
  });

  it('writes our route parent status next to the other controller entry', async () => {
    // The first write may predate the waypoint's binding (informers list in any order); it converges.
    await eventually(async () => {
      const r = (await custom.getNamespacedCustomObjectStatus({
        ...GW_API,
        plural: 'httproutes',
        namespace: 'default',
        name: 'reviews',
      })) as {
        status?: {
          parents?: Array<{ controllerName: string; parentRef: { name: string }; conditions: Cond[] }>;
        };
      };
      const [theirs, ours] = r.status?.parents ?? [];
      expect(r.status?.parents).toHaveLength(2);
      expect(theirs?.controllerName).toBe('istio.io/gateway-controller');
      expect(theirs?.conditions[0]?.message).toBe('x');
      expect(ours?.controllerName).toBe('istio.io/mesh-controller');
      expect(ours?.parentRef.name).toBe('reviews');
      const byType = Object.fromEntries(
        (ours?.conditions ?? []).map((c) => [c.type, `${c.status}/${c.reason}/${c.message}`]),
      );
      expect(byType).toEqual({
        Accepted: 'True/Accepted/Route was valid',
        ResolvedRefs: 'False/BackendNotFound/backend(missing.default.svc.cluster.local) not found',
        ResolvedWaypoints: 'True/ResolvedWaypoints/All waypoints resolved',
      });
    });
  });

  it('fixing the route updates only our entry', async () => {
    await custom.patchNamespacedCustomObject({
      ...GW_API,
      plural: 'httproutes',
      namespace: 'default',
      name: 'reviews',
      body: [
        { op: 'replace', path: '/spec/rules/0/backendRefs', value: [{ name: 'reviews-v2', port: 9080 }] },
      ],
    });
    await eventually(async () => {
      const r = (await custom.getNamespacedCustomObjectStatus({
        ...GW_API,
        plural: 'httproutes',
        namespace: 'default',
        name: 'reviews',
      })) as { status?: { parents?: Array<{ controllerName: string; conditions: Cond[] }> } };
      const ours = r.status?.parents?.find((p) => p.controllerName === 'istio.io/mesh-controller');
      expect(ours?.conditions.find((c) => c.type === 'ResolvedRefs')?.status).toBe('True');
      expect(r.status?.parents).toHaveLength(2);
    });
  });

  it('sets WaypointAccepted on the VirtualService', async () => {
    await eventually(async () => {
      const vs = (await custom.getNamespacedCustomObjectStatus({
        group: 'networking.istio.io',
        version: 'v1',
        plural: 'virtualservices',
        namespace: 'default',
        name: 'details',
      })) as { status?: { conditions?: Cond[] } };
      expect(vs.status?.conditions?.find((c) => c.type === 'WaypointAccepted')).toMatchObject({
        status: 'True',
        reason: 'Accepted',
        message: 'applied by waypoints to details.default.svc.cluster.local',
      });
    });
  });
});
