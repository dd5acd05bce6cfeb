/**
 * Waypoint L7 config over the real delta ADS server (grpc-js on loopback): a waypoint gets exactly the services of
 * its Gateway (and updates, and removals), a ztunnel asking for the type gets nothing, and a client cannot read
 * another waypoint's config by claiming its pod in the node id.
 */
import { createServer } from 'node:http';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Registry } from '../../../pkg/metrics/index.ts';
import { eventually, sleep } from '../../../pkg/testing/index.ts';
import { subscription, XdsClient } from '../../../pkg/xds/client.ts';
import { ServiceConfig } from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import {
  ADDRESS_TYPE_URL,
  Address,
  AggregatedDiscoveryServiceClient,
  DeltaDiscoveryRequest,
  type DeltaDiscoveryResponse,
  Node,
  WAYPOINT_SERVICE_TYPE_URL,
} from '../../../pkg/xds/index.ts';
import { type Authenticator, CaError, type Caller } from '../ca/service.ts';
import { AmbientIndex } from '../index/index.ts';
import { ns, svc, waypointGateway } from '../index/testdata.ts';
import { AmbientPipeline } from '../kube/controller.ts';
import { DEFAULT_TYPES, formatNodeId, handleDebugRequest, XdsServer } from '../xds/index.ts';
import { WaypointAccess } from './access.ts';
import { L7Controller } from './controller.ts';
import { bookinfoObjects, key, waypointPod } from './testdata.ts';

const logger = pino({ level: 'silent' });

const CALLERS: Readonly<Record<string, Caller>> = {
  'waypoint-token': { namespace: 'default', serviceAccount: 'waypoint', podName: null, podUid: null },
  'bound-waypoint-token': {
    namespace: 'default',
    serviceAccount: 'waypoint',
    podName: 'waypoint-7d9f-x1',
    podUid: 'u',
  },
  'team-b-token': { namespace: 'team-b', serviceAccount: 'waypoint-b', podName: null, podUid: null },
  'sleep-token': { namespace: 'default', serviceAccount: 'sleep', podName: null, podUid: null },
  'ztunnel-token': { namespace: 'istio-system', serviceAccount: 'ztunnel', podName: null, podUid: null },
};

const authenticator: Authenticator = {
  async authenticate(token) {
    const c = CALLERS[token];
    if (!c) throw new CaError(grpc.status.UNAUTHENTICATED, 'token not authenticated');
    return c;
  },
};

const WAYPOINT_NODE = formatNodeId('router', '10.244.1.50', 'waypoint-7d9f-x1', 'default');
const TEAM_B_NODE = formatNodeId('router', '10.244.3.50', 'waypoint-b-1', 'team-b');

interface Harness {
  readonly index: AmbientIndex;
  readonly pipeline: AmbientPipeline;
  readonly l7: L7Controller;
  readonly xds: XdsServer;
  readonly target: string;
  readonly plainTarget: string;
}

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

async function bind(server: grpc.Server): Promise<string> {
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return `127.0.0.1:${port}`;
}

async function start(): Promise<Harness> {
  const registry = new Registry();
  const index = new AmbientIndex();
  const xds = new XdsServer({
    registry,
    logger,
    debounceQuietMs: 10,
    debounceMaxMs: 200,
    types: [...DEFAULT_TYPES, WAYPOINT_SERVICE_TYPE_URL],
    access: new Map([[WAYPOINT_SERVICE_TYPE_URL, new WaypointAccess(index)]]),
  });
  const l7 = new L7Controller({ index, xds, logger });
  const pipeline = new AmbientPipeline({ index, xds, registry, logger, observer: l7.observer });
  for (const { kind, obj } of bookinfoObjects()) pipeline.apply(kind, 'add', obj);
  // A second waypoint in team-b serving its own service.
  pipeline.apply('Namespace', 'add', ns('team-b', { 'istio.io/use-waypoint': 'waypoint-b' }));
  pipeline.apply('Gateway', 'add', waypointGateway('waypoint-b', { namespace: 'team-b' }));
  pipeline.apply('Service', 'add', svc('secret', { namespace: 'team-b', clusterIP: '10.96.5.5' }));
  pipeline.apply(
    'Pod',
    'add',
    waypointPod('waypoint-b-1', { gateway: 'waypoint-b', namespace: 'team-b', ip: '10.244.3.50' }),
  );
  // A second replica of the default waypoint, and a pod of another Gateway in default.
  pipeline.apply('Pod', 'add', waypointPod('waypoint-7d9f-x2', { ip: '10.244.1.51' }));
  pipeline.apply('Pod', 'add', waypointPod('other-1', { gateway: 'other', ip: '10.244.1.60' }));
  pipeline.flush();
  l7.flush();
  xds.flushNow();
  const secure = new grpc.Server();
  xds.register(secure, { authenticator });
  const plain = new grpc.Server();
  xds.register(plain);
  const target = await bind(secure);
  const plainTarget = await bind(plain);
  cleanups.push(() => {
    l7.stop();
    xds.close();
    secure.forceShutdown();
    plain.forceShutdown();
  });
  return { index, pipeline, l7, xds, target, plainTarget };
}

class Store {
  readonly configs = new Map<string, ServiceConfig>();
  readonly updates: Array<{ added: string[]; removed: string[] }> = [];
}

function waypointClient(
  h: Harness,
  store: Store,
  nodeId = WAYPOINT_NODE,
  token = 'waypoint-token',
): XdsClient {
  const client = new XdsClient({
    address: h.target,
    credentials: grpc.credentials.createInsecure(),
    node: Node.fromPartial({ id: nodeId, metadata: { ISTIO_VERSION: 'ambient-ts' } }),
    subscriptions: [
      subscription(WAYPOINT_SERVICE_TYPE_URL, ServiceConfig, (added, removed) => {
        for (const [k, v] of added) store.configs.set(k, v);
        for (const k of removed) store.configs.delete(k);
        store.updates.push({ added: [...added.keys()], removed: [...removed] });
      }),
    ],
    token: () => token,
    logger,
    backoffInitialMs: 20,
    backoffMaxMs: 200,
  });
  client.start();
  cleanups.push(() => client.close());
  return client;
}

function rawStream(target: string, token: string | null) {
  const c = new AggregatedDiscoveryServiceClient(target, grpc.credentials.createInsecure());
  cleanups.push(() => c.close());
  const md = new grpc.Metadata();
  if (token) md.set('authorization', `Bearer ${token}`);
  const stream = c.deltaAggregatedResources(md);
  const responses: DeltaDiscoveryResponse[] = [];
  let status: grpc.StatusObject | null = null;
  stream.on('data', (r: DeltaDiscoveryResponse) => responses.push(r));
  stream.on('error', () => {});
  stream.on('status', (s: grpc.StatusObject) => {
    status = s;
  });
  return { stream, responses, status: () => status };
}

const BOOKINFO_KEYS = [
  'details',
  'productpage',
  'ratings',
  'reviews',
  'reviews-v1',
  'reviews-v2',
  'reviews-v3',
]
  .map((s) => key(s))
  .sort();

describe('waypoint L7 config over delta ADS', () => {
  let h: Harness;
  beforeEach(async () => {
    h = await start();
  });

  it('a waypoint gets exactly the services of its Gateway, then changes and removals', async () => {
    const store = new Store();
    const client = waypointClient(h, store);
    await client.ready;
    expect([...store.configs.keys()].sort()).toEqual(BOOKINFO_KEYS);
    expect(store.configs.get(key('reviews'))?.endpoints).toHaveLength(3);

    // A ztunnel-only change (a new unbound namespace's service) is not pushed to the waypoint.
    store.updates.length = 0;
    h.pipeline.apply('Namespace', 'add', ns('plain'));
    h.pipeline.apply('Service', 'add', svc('x', { namespace: 'plain', clusterIP: '10.96.9.9' }));
    await sleep(100);
    expect(store.updates).toEqual([]);

    // Opting details out of the waypoint removes it from this waypoint's set.
    h.pipeline.apply(
      'Service',
      'update',
      svc('details', {
        clusterIP: '10.96.0.12',
        labels: { 'istio.io/use-waypoint': 'none' },
        ports: [{ name: 'http', port: 9080, targetPort: 9080 }],
      }),
    );
    await eventually(() => expect(store.configs.has(key('details'))).toBe(false));
    expect(store.updates.at(-1)?.removed).toEqual([key('details')]);

    const [sync] = h.xds.syncz().filter((s) => s.proxy === WAYPOINT_NODE);
    expect(sync?.types.wpds).toMatchObject({ scope: 'default/waypoint', state: 'SYNCED' });
  });

  it('the team-b waypoint gets only its own service', async () => {
    const store = new Store();
    await waypointClient(h, store, TEAM_B_NODE, 'team-b-token').ready;
    expect([...store.configs.keys()]).toEqual(['team-b/secret.team-b.svc.cluster.local']);
  });

  it('a token bound to the pod in the node id is accepted', async () => {
    const store = new Store();
    await waypointClient(h, store, WAYPOINT_NODE, 'bound-waypoint-token').ready;
    expect(store.configs.size).toBe(BOOKINFO_KEYS.length);
  });

  it('a ztunnel asking for the type gets no answer for it, and its Address stream keeps working', async () => {
    const raw = rawStream(h.target, 'ztunnel-token');
    const ztunnelNode = formatNodeId('ztunnel', '10.0.0.9', 'ztunnel-abc', 'istio-system');
    raw.stream.write(
      DeltaDiscoveryRequest.fromPartial({
        node: { id: ztunnelNode },
        typeUrl: WAYPOINT_SERVICE_TYPE_URL,
        resourceNamesSubscribe: ['*'],
      }),
    );
    await sleep(100);
    expect(raw.responses).toHaveLength(0);
    expect(raw.status()).toBeNull();
    raw.stream.write(
      DeltaDiscoveryRequest.fromPartial({ typeUrl: ADDRESS_TYPE_URL, resourceNamesSubscribe: ['*'] }),
    );
    await eventually(() => expect(raw.responses).toHaveLength(1));
    expect(raw.responses[0]?.typeUrl).toBe(ADDRESS_TYPE_URL);
    expect(raw.responses[0]?.resources.length).toBeGreaterThan(0);
    Address.decode(raw.responses[0]!.resources[0]!.resource!.value);
  });

  it.each([
    ['another account claiming the waypoint pod', WAYPOINT_NODE, 'sleep-token', /not the service account/],
    [
      "the waypoint's account claiming another Gateway's pod",
      formatNodeId('router', '10.244.1.60', 'other-1', 'default'),
      'waypoint-token',
      /not the service account \(other\)/,
    ],
    [
      'a pod that does not exist',
      formatNodeId('router', '10.244.1.99', 'ghost', 'default'),
      'waypoint-token',
      /not found/,
    ],
    [
      'a non-waypoint pod',
      formatNodeId('router', '10.244.1.13', 'reviews-v1-abc', 'default'),
      'waypoint-token',
      /is not a waypoint/,
    ],
    [
      'a token bound to another replica',
      formatNodeId('router', '10.244.1.51', 'waypoint-7d9f-x2', 'default'),
      'bound-waypoint-token',
      /bound to pod waypoint-7d9f-x1/,
    ],
    ["another namespace's waypoint token", WAYPOINT_NODE, 'team-b-token', /claims namespace default/],
  ])('refuses %s with PERMISSION_DENIED', async (_n, nodeId, token, message) => {
    const raw = rawStream(h.target, token);
    raw.stream.write(
      DeltaDiscoveryRequest.fromPartial({
        node: { id: nodeId },
        typeUrl: WAYPOINT_SERVICE_TYPE_URL,
        resourceNamesSubscribe: ['*'],
      }),
    );
    await eventually(() => expect(raw.status()?.code).toBe(grpc.status.PERMISSION_DENIED));
    expect(raw.status()?.details).toMatch(message);
    expect(raw.responses).toHaveLength(0);
  });

  it('refuses the type on the unauthenticated port', async () => {
    const raw = rawStream(h.plainTarget, null);
    raw.stream.write(
      DeltaDiscoveryRequest.fromPartial({ node: { id: WAYPOINT_NODE }, typeUrl: WAYPOINT_SERVICE_TYPE_URL }),
    );
    await eventually(() => expect(raw.status()?.code).toBe(grpc.status.PERMISSION_DENIED));
    expect(raw.status()?.details).toMatch(/authenticated/);
  });

  it('explicit names outside the scope are never sent', async () => {
    const raw = rawStream(h.target, 'waypoint-token');
    raw.stream.write(
      DeltaDiscoveryRequest.fromPartial({
        node: { id: WAYPOINT_NODE },
        typeUrl: WAYPOINT_SERVICE_TYPE_URL,
        resourceNamesSubscribe: ['team-b/secret.team-b.svc.cluster.local', key('reviews')],
      }),
    );
    await eventually(() => expect(raw.responses).toHaveLength(1));
    expect(raw.responses[0]?.resources.map((r) => r.name)).toEqual([key('reviews')]);
  });

  it('/debug/waypointz lists each waypoint, what it is sent and who is connected', async () => {
    await waypointClient(h, new Store()).ready;
    const http = createServer((req, res) => {
      if (!handleDebugRequest({ xds: h.xds, index: h.index, waypoints: h.l7 }, req, res))
        res.writeHead(404).end();
    });
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    cleanups.push(() => http.close());
    const port = (http.address() as { port: number }).port;
    await eventually(async () => {
      const body = (await (
        await fetch(`http://127.0.0.1:${port}/debug/waypointz?waypoint=default/waypoint&configs=1`)
      ).json()) as {
        waypoints: Record<
          string,
          {
            serves: string[];
            backends: string[];
            clients: Array<{ proxy: string; state: string }>;
            configs: Record<string, { hostname: string }>;
          }
        >;
      };
      const wp = body.waypoints['default/waypoint'];
      expect(Object.keys(body.waypoints)).toEqual(['default/waypoint']);
      expect(wp?.serves).toEqual(BOOKINFO_KEYS);
      expect(wp?.clients).toEqual([expect.objectContaining({ proxy: WAYPOINT_NODE, state: 'SYNCED' })]);
      expect(wp?.configs[key('reviews')]?.hostname).toBe('reviews.default.svc.cluster.local');
    });
  });
});
