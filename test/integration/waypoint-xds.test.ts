/**
 * The waypoint's xDS path against a scripted delta-ADS server (plaintext, in-process): node id and bearer
 * token, wildcard subscription to the ServiceConfig type, readiness only after the first accepted response
 * and the certificate, ACK of good config, NACK of config that does not compile (keeping the last good table),
 * and removals. (istiod's own server is exercised in istiod/src/l7 tests.)
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRegistry } from '../../pkg/metrics/index.ts';
import { createLogger } from '../../pkg/telemetry/index.ts';
import { FakeCa } from '../../pkg/testing/fake-ca.ts';
import { eventually } from '../../pkg/testing/index.ts';
import { ServiceConfig } from '../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import {
  AggregatedDiscoveryServiceService,
  type DeltaDiscoveryRequest,
  DeltaDiscoveryResponse,
  packAny,
  WAYPOINT_SERVICE_TYPE_URL,
} from '../../pkg/xds/index.ts';
import { Waypoint } from '../../waypoint/src/app.ts';
import { loadConfig } from '../../waypoint/src/config.ts';

type Stream = grpc.ServerDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

const logger = createLogger({ component: 'waypoint', level: 'silent' });
const dir = mkdtempSync(join(tmpdir(), 'amb-waypoint-xds-'));
const tokenPath = join(dir, 'istio-token');
/** A token shaped like a projected SA token (the waypoint reads its service account from `sub`). */
const TOKEN = `e30.${Buffer.from(JSON.stringify({ sub: 'system:serviceaccount:default:waypoint' })).toString('base64url')}.sig`;
writeFileSync(tokenPath, `${TOKEN}\n`);

function config(name: string, vip: string, regex = false): ServiceConfig {
  return ServiceConfig.fromPartial({
    name: `default/${name}.default.svc.cluster.local`,
    namespace: 'default',
    hostname: `${name}.default.svc.cluster.local`,
    serviceName: name,
    addresses: [vip],
    ports: [{ port: 80, targetPort: 8080, name: 'http', protocol: 'http' }],
    waypoints: ['default/waypoint'],
    routes: regex
      ? [
          {
            name: 'bad',
            matches: [{ path: { kind: { $case: 'regex', value: '(?=lookahead)' } } }],
            action: { backends: [{ service: `default/${name}.default.svc.cluster.local`, weight: 1 }] },
          },
        ]
      : [],
  });
}

function resource(cfg: ServiceConfig, version: string) {
  return {
    name: cfg.name,
    version,
    aliases: [],
    resource: packAny(ServiceConfig, WAYPOINT_SERVICE_TYPE_URL, cfg),
  };
}

const requests: DeltaDiscoveryRequest[] = [];
const metadata: grpc.Metadata[] = [];
let stream: Stream | null = null;
let server: grpc.Server;
let waypoint: Waypoint;

beforeAll(async () => {
  server = new grpc.Server();
  server.addService(AggregatedDiscoveryServiceService, {
    streamAggregatedResources: (call: grpc.ServerDuplexStream<unknown, unknown>) => call.end(),
    deltaAggregatedResources: (call: Stream) => {
      stream = call;
      metadata.push(call.metadata);
      call.on('data', (r: DeltaDiscoveryRequest) => requests.push(r));
      call.on('error', () => {});
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  waypoint = await Waypoint.create({
    config: loadConfig({
      XDS_ADDRESS: `127.0.0.1:${port}`,
      PROXY_TOKEN: tokenPath,
      POD_NAME: 'waypoint-6d9f7c8b5d-x2x7q',
      POD_NAMESPACE: 'default',
      INSTANCE_IP: '10.244.0.20',
      HBONE_PORT: '0',
      ADMIN_PORT: '0',
      STATS_PORT: '0',
      READINESS_PORT: '0',
      REMOVED_SERVICE_GRACE: '300ms',
    }),
    logger,
    registry: createRegistry(),
    ca: new FakeCa(),
    xdsCredentials: grpc.credentials.createInsecure(),
    hboneListen: { host: '127.0.0.1', port: 0 },
  });
  await waypoint.run();
});

afterAll(async () => {
  await waypoint?.close(0);
  server?.forceShutdown();
  rmSync(dir, { recursive: true, force: true });
});

describe('waypoint xDS', () => {
  it('subscribes as router~<ip>~<pod>.<ns> with its token, and is not ready before the first response', async () => {
    await eventually(() => requests.length > 0);
    const first = requests[0]!;
    expect(first.node?.id).toBe(
      'router~10.244.0.20~waypoint-6d9f7c8b5d-x2x7q.default~default.svc.cluster.local',
    );
    expect(first.typeUrl).toBe(WAYPOINT_SERVICE_TYPE_URL);
    expect(first.resourceNamesSubscribe).toEqual(['*']);
    expect(metadata[0]?.get('authorization')).toEqual([`Bearer ${TOKEN}`]);
    expect(waypoint.configDump().identity).toBe('spiffe://cluster.local/ns/default/sa/waypoint');
    expect(waypoint.ready()).toBe(false);
  });

  it('ACKs the first response and becomes ready', async () => {
    stream!.write(
      DeltaDiscoveryResponse.fromPartial({
        typeUrl: WAYPOINT_SERVICE_TYPE_URL,
        nonce: 'n1',
        resources: [resource(config('a', '10.96.1.1'), 'v1')],
      }),
    );
    await eventually(() => waypoint.ready());
    const ack = requests.find((r) => r.responseNonce === 'n1');
    expect(ack?.errorDetail).toBeUndefined();
    expect(waypoint.store.table.lookup('10.96.1.1', 80)?.name).toBe('default/a.default.svc.cluster.local');
  });

  it('NACKs a response that does not compile and keeps the last good table', async () => {
    stream!.write(
      DeltaDiscoveryResponse.fromPartial({
        typeUrl: WAYPOINT_SERVICE_TYPE_URL,
        nonce: 'n2',
        resources: [resource(config('b', '10.96.1.2', true), 'v1')],
      }),
    );
    await eventually(() => requests.some((r) => r.responseNonce === 'n2'));
    const nack = requests.find((r) => r.responseNonce === 'n2')!;
    expect(nack.errorDetail?.message).toContain('default/b.default.svc.cluster.local');
    expect(waypoint.store.table.lookup('10.96.1.2', 80)).toBeUndefined();
    expect(waypoint.store.table.lookup('10.96.1.1', 80)).toBeDefined();
    expect(waypoint.ready()).toBe(true);
  });

  it('applies removals', async () => {
    stream!.write(
      DeltaDiscoveryResponse.fromPartial({
        typeUrl: WAYPOINT_SERVICE_TYPE_URL,
        nonce: 'n3',
        resources: [resource(config('c', '10.96.1.3'), 'v1')],
        removedResources: ['default/a.default.svc.cluster.local'],
      }),
    );
    await eventually(() => requests.some((r) => r.responseNonce === 'n3'));
    // Still routable for the removed-service grace (ztunnels may still send it here), then gone.
    expect(waypoint.store.table.lookup('10.96.1.1', 80)).toBeDefined();
    await eventually(() => expect(waypoint.store.table.lookup('10.96.1.1', 80)).toBeUndefined(), {
      timeoutMs: 3_000,
      intervalMs: 20,
    });
    expect(waypoint.store.table.lookup('10.96.1.3', 80)).toBeDefined();
    const dump = waypoint.configDump();
    expect(dump.config.rejected).toBe(1);
    expect(dump.services.map((s) => s.name)).toEqual(['default/c.default.svc.cluster.local']);
  });
});
