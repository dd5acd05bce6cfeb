/**
 * ztunnel's traffic paths end to end in a 2-node lab (issue #8): which way each kind of connection goes on the
 * wire, what the app sees, and what each ztunnel reports about it.
 *
 * Namespace `mesh` (ambient): `client` on node-0; echo pods `echo-local` (node-0) and `echo-remote` (node-1),
 * each behind its own Service; Deployment `echo-lb` with 3 replicas behind Service `echo-lb`. Namespace `plain`
 * (not enrolled): echo pod `web` on node-1 with Service `web`, and client pod `outsider` on node-0.
 *
 *   meshed → meshed, same node:  HBONE to the pod's :15008 inside node-0, never plaintext to the app port
 *   meshed → meshed, cross node: HBONE across the node link, never plaintext
 *   meshed → non-meshed:         plain TCP passthrough to the app port (request line visible on the wire)
 *   non-meshed → meshed:         accepted (PERMISSIVE: no PeerAuthentication), the app sees the caller's IP
 *   Service VIP:                 45 new connections reach all 3 endpoints, and each endpoint's ztunnel counts
 *                                exactly the connections its pods got
 * Each path checks the exact increase of `istio_tcp_connections_opened_total` with Istio's full label set at the
 * ztunnel(s) that must report it, and that the one that must not does not.
 */
import type { V1Pod } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, uniqueSuffix } from '../../pkg/testing/index.ts';
import {
  echoContainer,
  echoPod,
  type Fetch,
  isReady,
  name,
  nodeOf,
  type Packet,
  podIp,
  readCapture,
  redirected,
  type Sample,
  service,
  serviceAccount,
  show,
  sleeperPod,
  spiffe,
  startCapture,
  stopCapture,
  TestLab,
  total,
} from './helpers.ts';

const t = new TestLab();
const MESH = 'mesh';
const PLAIN = 'plain';
const OPENED = 'istio_tcp_connections_opened_total';
const CLOSED = 'istio_tcp_connections_closed_total';
/** Connections per path: enough to see an exact count, few enough to stay quick. */
const N = 3;
const LB_REQUESTS = 45;

let client: V1Pod;
let echoLocal: V1Pod;
let echoRemote: V1Pod;
let web: V1Pod;
let outsider: V1Pod;
let lbPods: V1Pod[];

const fromClient = (url: string): Promise<Fetch> => t.curl(MESH, name(client), url);

async function metricsOf(node: string): Promise<Sample[]> {
  return t.ztunnelMetrics(await t.ztunnelOn(node));
}

/** Metrics of both ztunnels, keyed by node. */
async function snapshot(): Promise<Record<string, Sample[]>> {
  return { 'node-0': await metricsOf('node-0'), 'node-1': await metricsOf('node-1') };
}

/** How much `metric` (labels ⊇ match) grew on `node` between two snapshots. */
function delta(
  before: Record<string, Sample[]>,
  after: Record<string, Sample[]>,
  node: string,
  match: Record<string, string>,
  metric = OPENED,
): number {
  return total(after[node] ?? [], metric, match) - total(before[node] ?? [], metric, match);
}

/** Istio's labels for a connection between two workloads of this test (values as ztunnel must report them). */
function labels(
  reporter: 'source' | 'destination',
  src: { workload: string; ns: string; sa: string | null },
  dst: { workload: string; ns: string; sa: string | null; service: string | null },
  mtls: boolean,
): Record<string, string> {
  return {
    reporter,
    source_workload: src.workload,
    source_workload_namespace: src.ns,
    source_canonical_service: src.workload,
    source_canonical_revision: 'latest',
    source_app: src.workload,
    source_principal: src.sa && mtls ? spiffe(src.ns, src.sa) : 'unknown',
    source_cluster: 'Kubernetes',
    destination_workload: dst.workload,
    destination_workload_namespace: dst.ns,
    destination_canonical_service: dst.workload,
    destination_canonical_revision: 'latest',
    destination_app: dst.workload,
    destination_principal: dst.sa && mtls ? spiffe(dst.ns, dst.sa) : 'unknown',
    destination_cluster: 'Kubernetes',
    destination_service: dst.service ? `${dst.service}.${dst.ns}.svc.cluster.local` : 'unknown',
    destination_service_name: dst.service ?? 'unknown',
    destination_service_namespace: dst.service ? dst.ns : 'unknown',
    request_protocol: 'tcp',
    response_flags: '-',
    connection_security_policy: mtls ? 'mutual_tls' : 'unknown',
  };
}

const CLIENT = { workload: 'client', ns: MESH, sa: 'client' };

/** `N` GETs, each a new connection, all 200 from the expected pod. */
async function getN(from: (url: string) => Promise<Fetch>, url: string, pod: string): Promise<void> {
  for (let i = 0; i < N; i++) {
    const f = await from(`${url}-${i}`);
    expect(f.status, show(f)).toBe(200);
    expect(f.body).toContain(`"pod": "${pod}"`);
  }
}

/** The address the app logged for a request to `path` (echo logs every request with its client address). */
function remoteSeenBy(p: V1Pod, path: string): string {
  const line = t
    .podLog(p)
    .split('\n')
    .find((l) => l.includes(`request made to ${path} `));
  if (!line) throw new Error(`${name(p)} never logged ${path}`);
  return String(JSON.parse(line).remote)
    .replace(/^\[(?:::ffff:)?/, '')
    .replace(/\]?:\d+$/, '');
}

const between = (ps: readonly Packet[], a: string, b: string) =>
  ps.filter((p) => (p.src === a && p.dst === b) || (p.src === b && p.dst === a));
const describePackets = (ps: readonly Packet[]) => ps.map((p) => `${p.src}:${p.sport} > ${p.dst}:${p.dport}`);

beforeAll(async () => {
  const up = await t.up({ nodes: 2 });
  console.log(`lab up (mesh): ${(up.ms / 1000).toFixed(1)}s, block ${t.block}`);
  const t0 = performance.now();
  await t.apply('', {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: MESH, labels: { 'istio.io/dataplane-mode': 'ambient' } },
  });
  await t.kubectl(['create', 'namespace', PLAIN]);
  await t.apply(
    MESH,
    serviceAccount('client'),
    serviceAccount('echo'),
    sleeperPod('client', { node: 'node-0', sa: 'client' }),
    echoPod('echo-local', { node: 'node-0', sa: 'echo' }),
    echoPod('echo-remote', { node: 'node-1', sa: 'echo' }),
    service('echo-local', 'echo-local'),
    service('echo-remote', 'echo-remote'),
    {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'echo-lb' },
      spec: {
        replicas: 3,
        selector: { matchLabels: { app: 'echo-lb' } },
        template: {
          metadata: { labels: { app: 'echo-lb' } },
          spec: {
            serviceAccountName: 'echo',
            terminationGracePeriodSeconds: 0,
            containers: [echoContainer()],
          },
        },
      },
    },
    service('echo-lb', 'echo-lb'),
  );
  await t.apply(
    PLAIN,
    echoPod('web', { node: 'node-1' }),
    service('web', 'web'),
    sleeperPod('outsider', { node: 'node-0' }),
  );
  client = await t.readyPod(MESH, 'app=client');
  echoLocal = await t.readyPod(MESH, 'app=echo-local');
  echoRemote = await t.readyPod(MESH, 'app=echo-remote');
  lbPods = await t.readyPods(MESH, 'app=echo-lb', 3);
  web = await t.readyPod(PLAIN, 'app=web');
  outsider = await t.readyPod(PLAIN, 'app=outsider');
  for (const p of [client, echoLocal, echoRemote, ...lbPods] as V1Pod[])
    expect(redirected(p), `${name(p)} captured`).toBe(true);
  for (const p of [web, outsider] as V1Pod[]) expect(redirected(p), `${name(p)} not captured`).toBe(false);
  // Every Service has its endpoints, and the mesh path works once istiod has told both ztunnels about them.
  await eventually(
    async () => {
      for (const svc of ['echo-local', 'echo-remote', 'echo-lb']) {
        const f = await fromClient(`http://${svc}/warmup`);
        expect(f.status, `${svc}: ${show(f)}`).toBe(200);
      }
      const f = await fromClient(`http://web.${PLAIN}/warmup`);
      expect(f.status, show(f)).toBe(200);
    },
    { timeoutMs: 60_000, intervalMs: 500, what: 'every path answers' },
  );
  console.log(
    `workloads Ready and reachable in ${((performance.now() - t0) / 1000).toFixed(1)}s; echo-lb on ${lbPods.map(nodeOf).join(', ')}`,
  );
});

afterAll(async () => {
  await t.down();
});

describe('ztunnel traffic paths', () => {
  it('meshed → meshed on the same node: HBONE to the pod :15008 inside the node, the app sees the client IP, one ztunnel reports both ends', async () => {
    expect(nodeOf(client)).toBe(nodeOf(echoLocal));
    const marker = `/same-${uniqueSuffix()}`;
    const pcap = `${t.root}/same-node.pcap`;
    const before = await snapshot();
    const cap = await startCapture(t.nodeNetns('node-0'), pcap, {
      filter: `tcp and host ${podIp(client)} and host ${podIp(echoLocal)}`,
    });
    try {
      await getN(fromClient, `http://echo-local${marker}`, name(echoLocal));
    } finally {
      await stopCapture(cap);
    }
    const packets = between(await readCapture(pcap), podIp(client), podIp(echoLocal));
    expect(packets.some((p) => p.src === podIp(client) && p.dport === 15008)).toBe(true);
    expect(describePackets(packets.filter((p) => p.dport !== 15008 && p.sport !== 15008))).toEqual([]);
    expect(packets.filter((p) => p.payload.includes(marker))).toEqual([]);
    expect(remoteSeenBy(echoLocal, `${marker}-0`)).toBe(podIp(client));

    await eventually(
      async () => {
        const after = await snapshot();
        const dst = { workload: 'echo-local', ns: MESH, sa: 'echo', service: 'echo-local' };
        expect(delta(before, after, 'node-0', labels('source', CLIENT, dst, true))).toBe(N);
        expect(delta(before, after, 'node-0', labels('destination', CLIENT, dst, true))).toBe(N);
        expect(delta(before, after, 'node-0', labels('destination', CLIENT, dst, true), CLOSED)).toBe(N);
        expect(delta(before, after, 'node-1', { destination_workload: 'echo-local' })).toBe(0);
      },
      { timeoutMs: 5_000, intervalMs: 200, what: 'same-node metrics' },
    );
  });

  it('meshed → meshed across nodes: only HBONE on the node link, the app sees the client IP, source and destination ztunnels report their side', async () => {
    expect(nodeOf(client)).not.toBe(nodeOf(echoRemote));
    const marker = `/cross-${uniqueSuffix()}`;
    const pcap = `${t.root}/cross-node.pcap`;
    const before = await snapshot();
    const cap = await startCapture(t.fabricNetns, pcap, { iface: 'lab0' });
    try {
      await getN(fromClient, `http://echo-remote${marker}`, name(echoRemote));
    } finally {
      await stopCapture(cap);
    }
    const packets = between(await readCapture(pcap), podIp(client), podIp(echoRemote));
    expect(packets.some((p) => p.src === podIp(client) && p.dport === 15008)).toBe(true);
    expect(describePackets(packets.filter((p) => p.dport !== 15008 && p.sport !== 15008))).toEqual([]);
    expect(packets.filter((p) => p.payload.includes(marker))).toEqual([]);
    expect(remoteSeenBy(echoRemote, `${marker}-0`)).toBe(podIp(client));

    await eventually(
      async () => {
        const after = await snapshot();
        const dst = { workload: 'echo-remote', ns: MESH, sa: 'echo', service: 'echo-remote' };
        expect(delta(before, after, 'node-0', labels('source', CLIENT, dst, true))).toBe(N);
        expect(delta(before, after, 'node-1', labels('destination', CLIENT, dst, true))).toBe(N);
        // Each side reports only its own role.
        expect(
          delta(before, after, 'node-0', { reporter: 'destination', destination_workload: 'echo-remote' }),
        ).toBe(0);
        expect(
          delta(before, after, 'node-1', { reporter: 'source', destination_workload: 'echo-remote' }),
        ).toBe(0);
      },
      { timeoutMs: 5_000, intervalMs: 200, what: 'cross-node metrics' },
    );
  });

  it('meshed → non-meshed: plain TCP passthrough to the app port (request visible on the wire, nothing to :15008); reported by the source only, without mTLS', async () => {
    const marker = `/plain-${uniqueSuffix()}`;
    const pcap = `${t.root}/to-plain.pcap`;
    const before = await snapshot();
    const cap = await startCapture(t.fabricNetns, pcap, { iface: 'lab0' });
    try {
      await getN(fromClient, `http://web.${PLAIN}${marker}`, name(web));
    } finally {
      await stopCapture(cap);
    }
    const packets = between(await readCapture(pcap), podIp(client), podIp(web));
    const requests = packets.filter((p) => p.payload.includes(`GET ${marker}-`));
    expect(describePackets(requests)).toHaveLength(N);
    expect(requests.every((p) => p.src === podIp(client) && p.dport === 3000)).toBe(true);
    expect(describePackets(packets.filter((p) => p.dport === 15008 || p.sport === 15008))).toEqual([]);
    expect(remoteSeenBy(web, `${marker}-0`)).toBe(podIp(client));

    await eventually(
      async () => {
        const after = await snapshot();
        const dst = { workload: 'web', ns: PLAIN, sa: null, service: 'web' };
        const src = labels('source', CLIENT, dst, false);
        // The source principal is the client's own identity even without mTLS to the destination.
        expect(delta(before, after, 'node-0', { ...src, source_principal: spiffe(MESH, 'client') })).toBe(N);
        // web has no ztunnel in front of it: nobody reports the destination side.
        expect(delta(before, after, 'node-1', { destination_workload: 'web' })).toBe(0);
        expect(delta(before, after, 'node-0', { reporter: 'destination', destination_workload: 'web' })).toBe(
          0,
        );
      },
      { timeoutMs: 5_000, intervalMs: 200, what: 'passthrough metrics' },
    );
    // The access log line of such a connection names no destination identity.
    const zlog = t.podLog(await t.ztunnelOn('node-0'));
    const line = zlog
      .split('\n')
      .filter((l) => l.includes('"src.identity"'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.direction === 'outbound' && l['dst.workload'] === 'web');
    expect(line).toMatchObject({
      'src.identity': spiffe(MESH, 'client'),
      'dst.identity': null,
      'dst.namespace': PLAIN,
      msg: 'connection complete',
    });
  });

  it('non-meshed → meshed is accepted under PERMISSIVE (no PeerAuthentication): plaintext to the app, the app sees the caller, the destination ztunnel reports it without mTLS', async () => {
    const pas = await t.getJson<{ items: unknown[] }>(['get', 'peerauthentications', '-A']);
    expect(pas.items).toEqual([]);
    const marker = `/from-plain-${uniqueSuffix()}`;
    const before = await snapshot();
    await getN(
      (url) => t.curl(PLAIN, name(outsider), url),
      `http://echo-remote.${MESH}${marker}`,
      name(echoRemote),
    );
    expect(remoteSeenBy(echoRemote, `${marker}-0`)).toBe(podIp(outsider));
    await eventually(
      async () => {
        const after = await snapshot();
        const src = { workload: 'outsider', ns: PLAIN, sa: null };
        const dst = { workload: 'echo-remote', ns: MESH, sa: 'echo', service: 'echo-remote' };
        const want = labels('destination', src, dst, false);
        // ztunnel knows its own pod's identity even though the caller proved none.
        expect(delta(before, after, 'node-1', { ...want, destination_principal: spiffe(MESH, 'echo') })).toBe(
          N,
        );
        expect(delta(before, after, 'node-0', { source_workload: 'outsider' })).toBe(0);
      },
      { timeoutMs: 5_000, intervalMs: 200, what: 'plaintext inbound metrics' },
    );
  });

  it('a Service VIP spreads new connections over every endpoint; each endpoint node reports exactly what its pods got', async () => {
    const svc = await t.getJson<{ spec: { clusterIP: string } }>(['get', 'service', '-n', MESH, 'echo-lb']);
    expect(svc.spec.clusterIP).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    const before = await snapshot();
    // One curl, many URLs: `Connection: close` makes every request a new TCP connection (one endpoint pick each).
    const urls = Array.from({ length: LB_REQUESTS }, (_, i) => `http://echo-lb/lb-${i}`);
    const r = await t.lab.exec(
      MESH,
      name(client),
      ['curl', '-sS', '-m', '60', '-H', 'Connection: close', '-w', '\nHTTP=%{http_code}\n', ...urls],
      { timeoutMs: 70_000 },
    );
    expect(r.exitCode, r.stderr).toBe(0);
    expect([...r.stdout.matchAll(/HTTP=200/g)]).toHaveLength(LB_REQUESTS);
    const hits = new Map<string, number>(lbPods.map((p) => [name(p), 0]));
    for (const [, pod] of r.stdout.matchAll(/"pod": "([^"]+)"/g))
      hits.set(String(pod), (hits.get(String(pod)) ?? 0) + 1);
    console.log(`echo-lb: ${[...hits].map(([p, n]) => `${p}=${n}`).join(' ')}`);
    expect([...hits.keys()].sort()).toEqual(lbPods.map(name).sort());
    for (const [pod, n] of hits) expect(n, `${pod} got no connection`).toBeGreaterThan(0);

    await eventually(
      async () => {
        const after = await snapshot();
        const dst = { workload: 'echo-lb', ns: MESH, sa: 'echo', service: 'echo-lb' };
        expect(delta(before, after, 'node-0', labels('source', CLIENT, dst, true))).toBe(LB_REQUESTS);
        for (const node of ['node-0', 'node-1']) {
          const got = lbPods
            .filter((p) => nodeOf(p) === node)
            .reduce((n, p) => n + (hits.get(name(p)) ?? 0), 0);
          expect(delta(before, after, node, labels('destination', CLIENT, dst, true)), node).toBe(got);
        }
      },
      { timeoutMs: 5_000, intervalMs: 200, what: 'load-balancing metrics' },
    );
    for (const p of lbPods) expect(isReady(p)).toBe(true);
  });
});
