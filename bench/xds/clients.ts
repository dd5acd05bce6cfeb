/**
 * Child process of the xDS benchmark (bench/xds/run.ts): N lightweight delta-ADS clients on the generated grpc-js
 * `AggregatedDiscoveryServiceClient`, each on its own HTTP/2 connection (local subchannel pool), as N ztunnels
 * would be. Each subscribes wildcard to Address and Authorization, ACKs every response by nonce and counts the
 * response bytes (the serialized DeltaDiscoveryResponse as received, before gRPC framing) and resources.
 *
 * Deliberately lighter than a ztunnel: the DeltaDiscoveryResponse is decoded (names, nonce), the Address
 * payloads inside the `Any`s are not, and nothing is stored per resource — 200 decoded copies of the mesh
 * would measure this process, not istiod.
 *
 * Talks to the parent over IPC (messages below); times are `performance.timeOrigin + performance.now()` (ms),
 * which the parent maps to its own clock with the offset measured by `ping`.
 */
import { type ClientDuplexStream, credentials, Metadata } from '@grpc/grpc-js';
import {
  AggregatedDiscoveryServiceClient,
  AggregatedDiscoveryServiceService,
} from '../../pkg/xds/gen/envoy/service/discovery/v3/ads.ts';
import {
  DeltaDiscoveryRequest,
  DeltaDiscoveryResponse,
} from '../../pkg/xds/gen/envoy/service/discovery/v3/discovery.ts';
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL, Node } from '../../pkg/xds/index.ts';

export type ParentMessage =
  | { readonly op: 'ping'; readonly id: number }
  | { readonly op: 'connect'; readonly port: number; readonly clients: number; readonly addresses: number }
  | { readonly op: 'watch'; readonly round: number; readonly name: string }
  | { readonly op: 'disconnect' }
  | { readonly op: 'exit' };

export interface ClientSync {
  /** When the client held every Address and had the (empty) Authorization response. */
  readonly doneAt: number;
  /** Serialized DeltaDiscoveryResponse bytes received until then. */
  readonly bytes: number;
  readonly responses: number;
}

export type ChildMessage =
  | { readonly op: 'pong'; readonly id: number; readonly t: number }
  | { readonly op: 'synced'; readonly clients: readonly ClientSync[] }
  | { readonly op: 'watching'; readonly round: number }
  | {
      readonly op: 'received';
      readonly round: number;
      readonly times: readonly number[];
      readonly bytes: number;
    }
  | { readonly op: 'disconnected' }
  | { readonly op: 'error'; readonly message: string };

const now = (): number => performance.timeOrigin + performance.now();
const METHOD = AggregatedDiscoveryServiceService.deltaAggregatedResources;

function send(m: ChildMessage): void {
  process.send?.(m);
}

interface Sim {
  readonly client: InstanceType<typeof AggregatedDiscoveryServiceClient>;
  readonly call: ClientDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;
  /** Bytes of the response being decoded (set by the deserializer, read by the data handler). */
  lastBytes: number;
  bytes: number;
  responses: number;
  addresses: number;
  authSeen: boolean;
  synced: boolean;
  doneAt: number;
  /** Time the watched name arrived in the current round, or 0. */
  seenAt: number;
}

let sims: Sim[] = [];
let expectedAddresses = 0;
let syncedCount = 0;
let watch: { round: number; name: string; seen: number; bytesAtStart: number } | null = null;
let failed = false;

function fail(message: string): void {
  if (failed) return;
  failed = true;
  send({ op: 'error', message });
}

function connect(port: number, n: number, addresses: number): void {
  expectedAddresses = addresses;
  syncedCount = 0;
  sims = [];
  for (let i = 0; i < n; i++) {
    const ip = `10.250.${i >> 8}.${i & 255}`;
    const client = new AggregatedDiscoveryServiceClient(`127.0.0.1:${port}`, credentials.createInsecure(), {
      'grpc.use_local_subchannel_pool': 1,
      'grpc.max_receive_message_length': -1,
    });
    let sim: Sim | null = null;
    const call = client.makeBidiStreamRequest<DeltaDiscoveryRequest, DeltaDiscoveryResponse>(
      METHOD.path,
      METHOD.requestSerialize,
      (buf: Buffer) => {
        if (sim) sim.lastBytes = buf.length;
        return DeltaDiscoveryResponse.decode(buf);
      },
      new Metadata(),
    );
    sim = {
      client,
      call,
      lastBytes: 0,
      bytes: 0,
      responses: 0,
      addresses: 0,
      authSeen: false,
      synced: false,
      doneAt: 0,
      seenAt: 0,
    };
    const s = sim;
    call.on('data', (r: DeltaDiscoveryResponse) => onResponse(s, r));
    call.on('error', (err: Error & { code?: number }) => {
      if (err.code !== 1) fail(`client ${i}: ${err.message}`); // 1 = CANCELLED (our disconnect)
    });
    const node = Node.fromPartial({
      id: `ztunnel~${ip}~ztunnel-${i}.istio-system~istio-system.svc.cluster.local`,
    });
    for (const typeUrl of [ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL]) {
      call.write(DeltaDiscoveryRequest.fromPartial({ node, typeUrl, resourceNamesSubscribe: ['*'] }));
    }
    sims.push(s);
  }
}

function onResponse(s: Sim, r: DeltaDiscoveryResponse): void {
  const t = now();
  s.bytes += s.lastBytes;
  s.responses++;
  s.call.write(DeltaDiscoveryRequest.fromPartial({ typeUrl: r.typeUrl, responseNonce: r.nonce }));
  if (r.typeUrl === ADDRESS_TYPE_URL) s.addresses += r.resources.length;
  else if (r.typeUrl === AUTHORIZATION_TYPE_URL) s.authSeen = true;
  if (!s.synced && s.authSeen && s.addresses >= expectedAddresses) {
    s.synced = true;
    s.doneAt = t;
    if (++syncedCount === sims.length) {
      send({
        op: 'synced',
        clients: sims.map((c) => ({ doneAt: c.doneAt, bytes: c.bytes, responses: c.responses })),
      });
    }
  }
  const w = watch;
  if (w && s.seenAt === 0 && r.typeUrl === ADDRESS_TYPE_URL && r.resources.some((x) => x.name === w.name)) {
    s.seenAt = t;
    if (++w.seen === sims.length) {
      const bytes = sims.reduce((a, c) => a + c.bytes, 0) - w.bytesAtStart;
      send({ op: 'received', round: w.round, times: sims.map((c) => c.seenAt), bytes });
      watch = null;
    }
  }
}

function disconnect(): void {
  for (const s of sims) {
    s.call.cancel();
    s.client.close();
  }
  sims = [];
  send({ op: 'disconnected' });
}

process.on('message', (m: ParentMessage) => {
  switch (m.op) {
    case 'ping':
      send({ op: 'pong', id: m.id, t: now() });
      break;
    case 'connect':
      connect(m.port, m.clients, m.addresses);
      break;
    case 'watch':
      for (const s of sims) s.seenAt = 0;
      watch = {
        round: m.round,
        name: m.name,
        seen: 0,
        bytesAtStart: sims.reduce((a, c) => a + c.bytes, 0),
      };
      send({ op: 'watching', round: m.round });
      break;
    case 'disconnect':
      disconnect();
      break;
    case 'exit':
      disconnect();
      process.disconnect();
      break;
  }
});
process.on('disconnect', () => {
  for (const s of sims) s.call.cancel();
  setTimeout(() => process.exit(0), 100).unref();
});
