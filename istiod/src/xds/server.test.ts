/**
 * The delta ADS server with real grpc-js on loopback, driven by pkg/xds's client (as ztunnel and the waypoint
 * use it) and by raw streams where the test needs to misbehave (garbage, unknown types, never ACKing).
 */

import { createServer } from 'node:http';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Registry } from '../../../pkg/metrics/index.ts';
import { eventually, sleep } from '../../../pkg/testing/index.ts';
import { subscription, XdsClient } from '../../../pkg/xds/client.ts';
import {
  ADDRESS_TYPE_URL,
  Address,
  AggregatedDiscoveryServiceClient,
  AUTHORIZATION_TYPE_URL,
  Authorization,
  DeltaDiscoveryRequest,
  type DeltaDiscoveryResponse,
  Node,
  Workload,
} from '../../../pkg/xds/index.ts';
import { type Authenticator, CaError } from '../ca/service.ts';
import { AmbientIndex } from '../index/index.ts';
import { formatNodeId, handleDebugRequest, XdsServer } from './index.ts';

const logger = pino({ level: 'silent' });
const NODE_ID = formatNodeId('ztunnel', '10.0.0.9', 'ztunnel-abc', 'istio-system');

function wlBytes(uid: string, ip = 1, extra: Partial<Workload> = {}): Uint8Array {
  const w = Workload.fromPartial({
    uid,
    name: uid,
    namespace: 'default',
    addresses: [Uint8Array.of(10, 0, 0, ip)],
    ...extra,
  });
  return Address.encode({ type: { $case: 'workload', value: w } }).finish();
}

function authBytes(name: string): Uint8Array {
  return Authorization.encode(Authorization.fromPartial({ name, namespace: 'default' })).finish();
}

/** A fake of what ztunnel keeps: a map per type, updated by the client's handlers. */
class Store {
  readonly addresses = new Map<string, Address>();
  readonly authorizations = new Map<string, Authorization>();
  readonly updates: Array<{ type: string; added: string[]; removed: string[] }> = [];
  reject: ((name: string) => boolean) | null = null;

  subscriptions() {
    return [
      subscription(ADDRESS_TYPE_URL, Address, (added, removed) => {
        for (const name of added.keys()) {
          if (this.reject?.(name)) throw new Error(`refusing ${name}`);
        }
        for (const [k, v] of added) this.addresses.set(k, v);
        for (const k of removed) this.addresses.delete(k);
        this.updates.push({ type: 'wds', added: [...added.keys()], removed: [...removed] });
      }),
      subscription(AUTHORIZATION_TYPE_URL, Authorization, (added, removed) => {
        for (const [k, v] of added) this.authorizations.set(k, v);
        for (const k of removed) this.authorizations.delete(k);
        this.updates.push({ type: 'wads', added: [...added.keys()], removed: [...removed] });
      }),
    ];
  }
}

interface Harness {
  readonly xds: XdsServer;
  readonly grpcServer: grpc.Server;
  readonly target: string;
  readonly registry: Registry;
}

async function startServer(
  opts: { authenticator?: Authenticator; quietMs?: number } = {},
  xdsIn?: XdsServer,
  registryIn?: Registry,
): Promise<Harness> {
  const registry = registryIn ?? new Registry();
  const xds =
    xdsIn ?? new XdsServer({ registry, logger, debounceQuietMs: opts.quietMs ?? 20, debounceMaxMs: 1000 });
  const grpcServer = new grpc.Server();
  xds.register(grpcServer, { authenticator: opts.authenticator ?? null });
  const port = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return { xds, grpcServer, target: `127.0.0.1:${port}`, registry };
}

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

function newClient(h: Harness, store: Store, extra: { token?: string; registry?: Registry } = {}): XdsClient {
  const client = new XdsClient({
    address: h.target,
    credentials: grpc.credentials.createInsecure(),
    node: Node.fromPartial({ id: NODE_ID, metadata: { ISTIO_VERSION: '1.99' } }),
    subscriptions: store.subscriptions(),
    token: extra.token ? () => extra.token ?? null : undefined,
    logger,
    registry: extra.registry,
    backoffInitialMs: 20,
    backoffMaxMs: 200,
  });
  client.start();
  cleanups.push(() => client.close());
  return client;
}

function rawStream(h: Harness, md = new grpc.Metadata()) {
  const c = new AggregatedDiscoveryServiceClient(h.target, grpc.credentials.createInsecure());
  cleanups.push(() => c.close());
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

describe('XdsServer over grpc-js', () => {
  let h: Harness;

  beforeEach(async () => {
    h = await startServer();
    cleanups.push(() => {
      h.xds.close();
      h.grpcServer.forceShutdown();
    });
    h.xds.update(
      ADDRESS_TYPE_URL,
      new Map([
        ['w1', wlBytes('w1', 1)],
        ['w2', wlBytes('w2', 2)],
      ]),
    );
    h.xds.update(AUTHORIZATION_TYPE_URL, new Map([['default/p1', authBytes('p1')]]));
    h.xds.flushNow();
  });

  it('initial sync delivers everything, then ready resolves; syncz shows the client synced', async () => {
    const store = new Store();
    const client = newClient(h, store);
    await client.ready;
    expect([...store.addresses.keys()].sort()).toEqual(['w1', 'w2']);
    expect([...store.authorizations.keys()]).toEqual(['default/p1']);
    await eventually(() => {
      const [s] = h.xds.syncz();
      expect(s?.proxy).toBe(NODE_ID);
      expect(s?.podNamespace).toBe('istio-system');
      expect(s?.istioVersion).toBe('1.99');
      expect(s?.types.wds).toMatchObject({ resourcesAcked: 2, inFlight: null, state: 'SYNCED', acks: 1 });
      expect(s?.types.wads).toMatchObject({ resourcesAcked: 1, state: 'SYNCED' });
    });
    const metrics = await h.registry.metrics();
    expect(metrics).toMatch(/pilot_xds\{version="1.99"\} 1/);
    expect(metrics).toMatch(/pilot_xds_pushes\{type="wds"\} 1/);
    expect(metrics).toMatch(/pilot_xds_sync_state\{type="wds",state="SYNCED"\} 1/);
  });

  it('an empty type still gets an (empty) initial response, so the client becomes ready', async () => {
    h.xds.update(AUTHORIZATION_TYPE_URL, new Map([['default/p1', null]]));
    h.xds.flushNow();
    const store = new Store();
    const client = newClient(h, store);
    await client.ready;
    expect(store.authorizations.size).toBe(0);
  });

  it('a change pushes only the changed resource; a delete arrives as removed_resources', async () => {
    const store = new Store();
    const client = newClient(h, store);
    await client.ready;
    store.updates.length = 0;
    h.xds.update(
      ADDRESS_TYPE_URL,
      new Map([
        ['w2', wlBytes('w2', 22)],
        ['w1', wlBytes('w1', 1)],
      ]),
    );
    await eventually(() => expect(store.updates).toHaveLength(1));
    expect(store.updates[0]).toEqual({ type: 'wds', added: ['w2'], removed: [] });
    h.xds.update(ADDRESS_TYPE_URL, new Map([['w1', null]]));
    await eventually(() => expect(store.updates).toHaveLength(2));
    expect(store.updates[1]).toEqual({ type: 'wds', added: [], removed: ['w1'] });
    expect([...store.addresses.keys()]).toEqual(['w2']);
  });

  it('pushes are debounced: a burst of changes arrives as one push after the quiet period', async () => {
    const slow = await startServer({ quietMs: 100 });
    cleanups.push(() => {
      slow.xds.close();
      slow.grpcServer.forceShutdown();
    });
    const store = new Store();
    const client = newClient(slow, store);
    await client.ready;
    store.updates.length = 0;
    const t0 = performance.now();
    for (let i = 0; i < 5; i++) {
      slow.xds.update(ADDRESS_TYPE_URL, new Map([[`burst-${i}`, wlBytes(`burst-${i}`, 50 + i)]]));
      await sleep(20);
    }
    await eventually(() => expect(store.updates).toHaveLength(1));
    expect(performance.now() - t0).toBeGreaterThanOrEqual(180);
    expect(store.updates[0]?.added.sort()).toEqual(['burst-0', 'burst-1', 'burst-2', 'burst-3', 'burst-4']);
  });

  it('reconnect with initial_resource_versions receives only what changed (and removals)', async () => {
    const store = new Store();
    const client = newClient(h, store);
    await client.ready;
    const before = new Map(client.resourceVersions(ADDRESS_TYPE_URL));
    expect(before.size).toBe(2);
    // While the client is away: w1 changes, w2 is deleted, w3 appears.
    h.xds.disconnectAll();
    h.xds.update(
      ADDRESS_TYPE_URL,
      new Map([
        ['w1', wlBytes('w1', 11)],
        ['w2', null],
        ['w3', wlBytes('w3', 3)],
      ]),
    );
    h.xds.flushNow();
    store.updates.length = 0;
    await eventually(() => expect(store.updates.filter((u) => u.type === 'wds')).toHaveLength(1), {
      timeoutMs: 5000,
    });
    const wds = store.updates.find((u) => u.type === 'wds')!;
    expect(wds.added.sort()).toEqual(['w1', 'w3']);
    expect(wds.removed).toEqual(['w2']);
    // The unchanged authorization was not resent (empty response, just "you are synced").
    expect(store.updates.find((u) => u.type === 'wads')).toEqual({ type: 'wads', added: [], removed: [] });
    expect([...store.addresses.keys()].sort()).toEqual(['w1', 'w3']);
  });

  it('raw reconnect: exactly the changed and removed names come back', async () => {
    const versions = h.xds.versions(ADDRESS_TYPE_URL);
    const raw = rawStream(h);
    raw.stream.write(
      DeltaDiscoveryRequest.fromPartial({
        node: { id: NODE_ID },
        typeUrl: ADDRESS_TYPE_URL,
        resourceNamesSubscribe: ['*'],
        initialResourceVersions: { w1: versions.get('w1')!, w2: 'stale-version', gone: 'x' },
      }),
    );
    await eventually(() => expect(raw.responses).toHaveLength(1));
    const r = raw.responses[0]!;
    expect(r.resources.map((x) => x.name)).toEqual(['w2']);
    expect(r.resources[0]?.version).toBe(versions.get('w2'));
    expect(r.removedResources).toEqual(['gone']);
  });

  it('a NACK keeps the last good state, is counted and shown in syncz; later changes still flow', async () => {
    const store = new Store();
    const client = newClient(h, store);
    await client.ready;
    const goodVersion = client.resourceVersions(ADDRESS_TYPE_URL).get('w1');
    store.reject = (name) => name === 'w1';
    h.xds.update(ADDRESS_TYPE_URL, new Map([['w1', wlBytes('w1', 99)]]));
    await eventually(() => {
      const [s] = h.xds.syncz();
      expect(s?.types.wds?.nacks).toBe(1);
      expect(s?.types.wds?.state).toBe('NACKED');
      expect(s?.types.wds?.lastNack?.message).toContain('refusing w1');
    });
    // The client kept its previous w1 and version.
    expect(client.resourceVersions(ADDRESS_TYPE_URL).get('w1')).toBe(goodVersion);
    const kept = store.addresses.get('w1')?.type;
    expect(kept?.$case === 'workload' && [...kept.value.addresses[0]!]).toEqual([10, 0, 0, 1]);
    expect(await h.registry.metrics()).toMatch(/pilot_total_xds_rejects\{type="wds"\} 1/);
    // Nothing is stuck in flight: the next change is delivered.
    store.reject = null;
    h.xds.update(ADDRESS_TYPE_URL, new Map([['w4', wlBytes('w4', 4)]]));
    await eventually(() => expect(store.addresses.has('w4')).toBe(true));
    await eventually(() => expect(h.xds.syncz()[0]?.types.wds?.state).toBe('SYNCED'));
  });

  it('an unknown type URL is ignored and the stream keeps working', async () => {
    const raw = rawStream(h);
    raw.stream.write(
      DeltaDiscoveryRequest.fromPartial({
        node: { id: NODE_ID },
        typeUrl: 'type.googleapis.com/example.Nope',
      }),
    );
    await sleep(50);
    expect(raw.responses).toHaveLength(0);
    expect(raw.status()).toBeNull();
    raw.stream.write(
      DeltaDiscoveryRequest.fromPartial({ typeUrl: ADDRESS_TYPE_URL, resourceNamesSubscribe: ['*'] }),
    );
    await eventually(() => expect(raw.responses).toHaveLength(1));
    expect(raw.responses[0]?.resources).toHaveLength(2);
  });

  it('explicit (non-wildcard) subscriptions get only the named resources', async () => {
    const raw = rawStream(h);
    raw.stream.write(
      DeltaDiscoveryRequest.fromPartial({
        node: { id: NODE_ID },
        typeUrl: ADDRESS_TYPE_URL,
        resourceNamesSubscribe: ['w2'],
      }),
    );
    await eventually(() => expect(raw.responses).toHaveLength(1));
    expect(raw.responses[0]?.resources.map((r) => r.name)).toEqual(['w2']);
    raw.stream.write(
      DeltaDiscoveryRequest.fromPartial({
        typeUrl: ADDRESS_TYPE_URL,
        responseNonce: raw.responses[0]!.nonce,
        resourceNamesSubscribe: ['w1'],
      }),
    );
    await eventually(() => expect(raw.responses).toHaveLength(2));
    expect(raw.responses[1]?.resources.map((r) => r.name)).toEqual(['w1']);
  });

  it('garbage closes that stream with an error status; the server and other clients are unaffected', async () => {
    const store = new Store();
    const good = newClient(h, store);
    await good.ready;
    const generic = new grpc.Client(h.target, grpc.credentials.createInsecure());
    cleanups.push(() => generic.close());
    const call = generic.makeBidiStreamRequest(
      '/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources',
      (b: Buffer) => b,
      (b: Buffer) => b,
    );
    const status = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
    call.on('error', () => {});
    call.on('data', () => {});
    call.write(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]));
    const s = await status;
    expect(s.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(s.details).toMatch(/cannot decode/);
    // A request without a node is refused too.
    const noNode = rawStream(h);
    noNode.stream.write(DeltaDiscoveryRequest.fromPartial({ typeUrl: ADDRESS_TYPE_URL }));
    await eventually(() => expect(noNode.status()?.code).toBe(grpc.status.INVALID_ARGUMENT));
    // A malformed node id as well.
    const badNode = rawStream(h);
    badNode.stream.write(
      DeltaDiscoveryRequest.fromPartial({ node: { id: 'nonsense' }, typeUrl: ADDRESS_TYPE_URL }),
    );
    await eventually(() => expect(badNode.status()?.details).toMatch(/4 parts/));
    // The good client still gets updates.
    h.xds.update(ADDRESS_TYPE_URL, new Map([['after', wlBytes('after', 77)]]));
    await eventually(() => expect(store.addresses.has('after')).toBe(true));
    await eventually(() => expect(h.xds.connectionCount).toBe(1));
  });

  it('a slow client (never reading or ACKing) does not block others; its pending state is a bounded dirty set', async () => {
    const slow = rawStream(h);
    slow.stream.pause();
    slow.stream.write(
      DeltaDiscoveryRequest.fromPartial({
        node: { id: NODE_ID },
        typeUrl: ADDRESS_TYPE_URL,
        resourceNamesSubscribe: ['*'],
      }),
    );
    const store = new Store();
    const fast = newClient(h, store);
    await fast.ready;
    const names = ['a', 'b', 'c'];
    for (let round = 0; round < 60; round++) {
      h.xds.update(
        ADDRESS_TYPE_URL,
        new Map(names.map((n, i) => [n, wlBytes(n, 100 + i, { node: `r${round}` })])),
      );
      if (round % 10 === 0) h.xds.flushNow();
    }
    h.xds.flushNow();
    await eventually(() => {
      const w = store.addresses.get('c')?.type;
      expect(w?.$case === 'workload' && w.value.node).toBe('r59');
    });
    const slowStatus = h.xds.syncz().find((s) => s.types.wds?.acks === 0)!;
    expect(slowStatus).toBeDefined();
    const wds = slowStatus.types.wds!;
    // One response in flight (the initial one), never more; everything since is one entry per name.
    expect(wds.pushes).toBe(1);
    expect(wds.inFlight).not.toBeNull();
    expect(wds.resourcesPending).toBeLessThanOrEqual(names.length);
    expect(wds.state).toBe('STALE');
  });

  it('serves /debug/syncz and /debug/ambientz', async () => {
    const store = new Store();
    await newClient(h, store).ready;
    const index = new AmbientIndex();
    index.upsert('Service', {
      metadata: { name: 's', namespace: 'default' },
      spec: { clusterIP: '10.96.0.1', ports: [{ port: 80 }] },
    });
    index.flush();
    const http = createServer((req, res) => {
      if (!handleDebugRequest({ xds: h.xds, index }, req, res)) res.writeHead(404).end();
    });
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    cleanups.push(() => http.close());
    const port = (http.address() as { port: number }).port;
    const syncz = (await (await fetch(`http://127.0.0.1:${port}/debug/syncz`)).json()) as Array<{
      proxy: string;
    }>;
    expect(syncz.map((s) => s.proxy)).toEqual([NODE_ID]);
    const dump = (await (await fetch(`http://127.0.0.1:${port}/debug/ambientz?type=wds`)).json()) as {
      wds: Record<string, { service?: { hostname: string } }>;
    };
    expect(dump.wds['default/s.default.svc.cluster.local']?.service?.hostname).toBe(
      's.default.svc.cluster.local',
    );
    expect((await fetch(`http://127.0.0.1:${port}/other`)).status).toBe(404);
  });

  it('SotW StreamAggregatedResources answers UNIMPLEMENTED', async () => {
    const c = new AggregatedDiscoveryServiceClient(h.target, grpc.credentials.createInsecure());
    cleanups.push(() => c.close());
    const stream = c.streamAggregatedResources();
    const status = new Promise<grpc.StatusObject>((resolve) => stream.on('status', resolve));
    stream.on('error', () => {});
    stream.write({
      versionInfo: '',
      resourceNames: [],
      resourceLocators: [],
      typeUrl: ADDRESS_TYPE_URL,
      responseNonce: '',
    });
    expect((await status).code).toBe(grpc.status.UNIMPLEMENTED);
  });

  it('client metrics count messages per type URL', async () => {
    const registry = new Registry();
    const client = newClient(h, new Store(), { registry });
    await client.ready;
    const text = await registry.metrics();
    expect(text).toContain(`istio_xds_message_total{url="${ADDRESS_TYPE_URL}"} 1`);
    expect(text).toContain(`istio_xds_message_total{url="${AUTHORIZATION_TYPE_URL}"} 1`);
    h.xds.disconnectAll();
    await eventually(async () =>
      expect(await registry.metrics()).toMatch(
        /istio_xds_connection_terminations_total\{reason="Reconnect"\} 1/,
      ),
    );
  });
});

describe('XdsServer authentication', () => {
  const authenticator: Authenticator = {
    async authenticate(token) {
      if (token === 'ztunnel-token')
        return { namespace: 'istio-system', serviceAccount: 'ztunnel', podName: null, podUid: null };
      if (token === 'other-token')
        return { namespace: 'default', serviceAccount: 'sleep', podName: null, podUid: null };
      throw new CaError(grpc.status.UNAUTHENTICATED, 'request authenticate failure: token not authenticated');
    },
  };
  let h: Harness;

  beforeEach(async () => {
    h = await startServer({ authenticator });
    cleanups.push(() => {
      h.xds.close();
      h.grpcServer.forceShutdown();
    });
  });

  it.each([
    ['no token', undefined, grpc.status.UNAUTHENTICATED],
    ['a bad token', 'bad', grpc.status.UNAUTHENTICATED],
    ['a token for another namespace than the node claims', 'other-token', grpc.status.PERMISSION_DENIED],
  ] as const)('%s is refused', async (_n, token, code) => {
    const md = new grpc.Metadata();
    if (token) md.set('authorization', `Bearer ${token}`);
    const raw = rawStream(h, md);
    raw.stream.write(
      DeltaDiscoveryRequest.fromPartial({
        node: { id: NODE_ID },
        typeUrl: ADDRESS_TYPE_URL,
        resourceNamesSubscribe: ['*'],
      }),
    );
    await eventually(() => expect(raw.status()?.code).toBe(code));
    expect(h.xds.connectionCount).toBe(0);
  });

  it('a valid token for the node namespace is served and shown in syncz', async () => {
    const store = new Store();
    const client = newClient(h, store, { token: 'ztunnel-token' });
    await client.ready;
    expect(h.xds.syncz()[0]?.identity).toBe('istio-system/ztunnel');
  });
});
