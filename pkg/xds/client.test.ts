/**
 * The delta ADS client against a scripted in-test server: ACK/NACK, initial_resource_versions on reconnect,
 * back-off after failures, readiness, bearer tokens and metrics. (The full client ⇄ istiod exchange is tested in
 * istiod/src/xds/server.test.ts.)
 */
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { Registry } from '../metrics/index.ts';
import { eventually } from '../testing/index.ts';
import { subscription, XdsClient } from './client.ts';
import {
  ADDRESS_TYPE_URL,
  Address,
  AggregatedDiscoveryServiceService,
  AUTHORIZATION_TYPE_URL,
  Authorization,
  type DeltaDiscoveryRequest,
  DeltaDiscoveryResponse,
  Node,
  packAddress,
  packAuthorization,
  Workload,
} from './index.ts';

const logger = pino({ level: 'silent' });

type Stream = grpc.ServerDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

/** A delta ADS server whose behaviour per stream is scripted by the test. */
async function fakeServer(onStream: (stream: Stream, index: number, metadata: grpc.Metadata) => void) {
  const server = new grpc.Server();
  let count = 0;
  server.addService(AggregatedDiscoveryServiceService, {
    streamAggregatedResources: (call: grpc.ServerDuplexStream<unknown, unknown>) => call.end(),
    deltaAggregatedResources: (call: Stream) => onStream(call, count++, call.metadata),
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  return { server, target: `127.0.0.1:${port}`, streams: () => count };
}

function workloadResource(uid: string, version: string) {
  return {
    name: uid,
    version,
    aliases: [],
    resource: packAddress({ type: { $case: 'workload', value: Workload.fromPartial({ uid }) } }),
  };
}

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

function client(
  target: string,
  onAddresses: (added: ReadonlyMap<string, Address>, removed: readonly string[]) => void,
  extra: { registry?: Registry; token?: string; withAuthz?: boolean } = {},
) {
  const subs = [subscription(ADDRESS_TYPE_URL, Address, onAddresses)];
  if (extra.withAuthz) subs.push(subscription(AUTHORIZATION_TYPE_URL, Authorization, () => {}));
  const c = new XdsClient({
    address: target,
    credentials: grpc.credentials.createInsecure(),
    node: Node.fromPartial({ id: 'ztunnel~10.0.0.1~z.istio-system~istio-system.svc.cluster.local' }),
    subscriptions: subs,
    token: extra.token ? () => extra.token! : undefined,
    logger,
    registry: extra.registry,
    backoffInitialMs: 10,
    backoffMaxMs: 50,
  });
  c.start();
  cleanups.push(() => c.close());
  return c;
}

describe('XdsClient', () => {
  it('ACKs applied responses, NACKs a throwing handler (keeping its versions), and reports both', async () => {
    const requests: DeltaDiscoveryRequest[] = [];
    const { server, target } = await fakeServer((s) => {
      s.on('data', (r: DeltaDiscoveryRequest) => {
        requests.push(r);
        if (r.responseNonce === '') {
          s.write(
            DeltaDiscoveryResponse.fromPartial({
              typeUrl: ADDRESS_TYPE_URL,
              nonce: 'n1',
              resources: [workloadResource('a', 'v1')],
            }),
          );
        } else if (r.responseNonce === 'n1') {
          s.write(
            DeltaDiscoveryResponse.fromPartial({
              typeUrl: ADDRESS_TYPE_URL,
              nonce: 'n2',
              resources: [workloadResource('bad', 'v9')],
            }),
          );
        }
      });
    });
    cleanups.push(() => server.forceShutdown());
    const seen: string[] = [];
    const c = client(target, (added) => {
      if (added.has('bad')) throw new Error('cannot apply bad');
      seen.push(...added.keys());
    });
    await c.ready;
    await eventually(() => expect(requests.some((r) => r.responseNonce === 'n2')).toBe(true));
    const ack = requests.find((r) => r.responseNonce === 'n1')!;
    expect(ack.errorDetail).toBeUndefined();
    const nack = requests.find((r) => r.responseNonce === 'n2')!;
    expect(nack.errorDetail?.message).toBe('cannot apply bad');
    expect(seen).toEqual(['a']);
    expect([...c.resourceVersions(ADDRESS_TYPE_URL)]).toEqual([['a', 'v1']]);
    expect(c.status().types[ADDRESS_TYPE_URL]).toEqual({ resources: 1, acks: 1, nacks: 1 });
    // The first request carried the node, the wildcard subscription and no versions.
    expect(requests[0]).toMatchObject({
      typeUrl: ADDRESS_TYPE_URL,
      resourceNamesSubscribe: ['*'],
      initialResourceVersions: {},
    });
    expect(requests[0]?.node?.id).toMatch(/^ztunnel~/);
  });

  it('a resource that does not decode is NACKed without calling the handler', async () => {
    const requests: DeltaDiscoveryRequest[] = [];
    const { server, target } = await fakeServer((s) => {
      s.on('data', (r: DeltaDiscoveryRequest) => {
        requests.push(r);
        if (r.responseNonce === '') {
          s.write(
            DeltaDiscoveryResponse.fromPartial({
              typeUrl: ADDRESS_TYPE_URL,
              nonce: 'x',
              // An Authorization where an Address belongs.
              resources: [
                {
                  name: 'wrong',
                  version: '1',
                  resource: packAuthorization(Authorization.fromPartial({ name: 'p' })),
                },
              ],
            }),
          );
        }
      });
    });
    cleanups.push(() => server.forceShutdown());
    let calls = 0;
    client(target, () => {
      calls++;
    });
    await eventually(() =>
      expect(requests.find((r) => r.responseNonce === 'x')?.errorDetail?.message).toMatch(/wrong/),
    );
    expect(calls).toBe(0);
  });

  it('reconnects with back-off after failures and announces its versions; counts terminations', async () => {
    const registry = new Registry();
    const initial: Array<Record<string, string>> = [];
    const { server, target, streams } = await fakeServer((s, i) => {
      if (i < 2) {
        // Refuse the first two streams before any response.
        s.emit('error', { code: grpc.status.UNAVAILABLE, details: 'warming up' });
        return;
      }
      s.on('data', (r: DeltaDiscoveryRequest) => {
        if (r.responseNonce !== '') return;
        initial.push({ ...r.initialResourceVersions });
        const resources = i === 2 ? [workloadResource('a', 'v1'), workloadResource('b', 'v1')] : [];
        s.write(DeltaDiscoveryResponse.fromPartial({ typeUrl: ADDRESS_TYPE_URL, nonce: `n${i}`, resources }));
        // The third stream is ended by the server after its response (a "reconnect").
        if (i === 2)
          setTimeout(() => s.emit('error', { code: grpc.status.UNAVAILABLE, details: 'rebalance' }), 20);
      });
    });
    cleanups.push(() => server.forceShutdown());
    const c = client(target, () => {}, { registry });
    await c.ready;
    await eventually(() => expect(streams()).toBe(4));
    await eventually(() => expect(initial).toHaveLength(2));
    expect(initial[0]).toEqual({});
    expect(initial[1]).toEqual({ a: 'v1', b: 'v1' });
    const text = await registry.metrics();
    expect(text).toMatch(/istio_xds_connection_terminations_total\{reason="ConnectionError"\} 2/);
    expect(text).toMatch(/istio_xds_connection_terminations_total\{reason="Reconnect"\} 1/);
    c.close();
    expect(await registry.metrics()).toMatch(
      /istio_xds_connection_terminations_total\{reason="Complete"\} 1/,
    );
  });

  it('is ready only when every type has been synced, and sends its bearer token', async () => {
    const tokens: string[] = [];
    let sendAuthz: (() => void) | null = null;
    const { server, target } = await fakeServer((s, _i, md) => {
      tokens.push(String(md.get('authorization')[0]));
      s.on('data', (r: DeltaDiscoveryRequest) => {
        if (r.responseNonce !== '') return;
        const resp = DeltaDiscoveryResponse.fromPartial({ typeUrl: r.typeUrl, nonce: r.typeUrl });
        if (r.typeUrl === AUTHORIZATION_TYPE_URL) sendAuthz = () => s.write(resp);
        else s.write(resp);
      });
    });
    cleanups.push(() => server.forceShutdown());
    const c = client(target, () => {}, { token: 'sa-token', withAuthz: true });
    let ready = false;
    c.ready.then(() => {
      ready = true;
    });
    await eventually(() => expect(sendAuthz).not.toBeNull());
    await new Promise((r) => setTimeout(r, 30));
    expect(ready).toBe(false);
    sendAuthz!();
    await c.ready;
    expect(tokens).toEqual(['Bearer sa-token']);
  });
});
