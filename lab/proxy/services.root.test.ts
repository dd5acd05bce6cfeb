/**
 * Root tier: Services in a 2-node lab. The service proxy DNATs a ClusterIP to endpoints on both nodes (from
 * pods and from the node itself), spreads connections over all endpoints, follows endpoint changes, rejects
 * services without endpoints and removes its chains on teardown. The cluster DNS in the fabric namespace
 * resolves service names from inside pods through resolv.conf search paths (getent, curl by name).
 */
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../../pkg/testing/index.ts';
import { ClusterDns, type DnsRecordSet } from '../dns/index.ts';
import { LabNetwork, runInNetns } from '../node/index.ts';
import { leftovers, testBlock, testPrefix, testRoot } from '../node/testdata/helpers.ts';
import { type PodInput, PodRuntime } from '../runtime/index.ts';
import { type ProxyService, ServiceProxy } from './index.ts';

const APP = fileURLToPath(new URL('../runtime/testdata/app.ts', import.meta.url));
const prefix = testPrefix();
const root = testRoot();
let net: LabNetwork;
let runtimes: PodRuntime[] = [];
let proxies: ServiceProxy[] = [];
let dns: ClusterDns;
let vip = '';
const eps: { name: string; node: number; uid: string; ip: string }[] = [
  { name: 'ep-a', node: 0, uid: 'svc-ep-a', ip: '' },
  { name: 'ep-b', node: 1, uid: 'svc-ep-b', ip: '' },
  { name: 'ep-c', node: 1, uid: 'svc-ep-c', ip: '' },
];
const CLIENT = 'svc-client';

function pod(uid: string, name: string, image: string, env: Record<string, string> = {}): PodInput {
  return {
    uid,
    namespace: 'shop',
    name,
    terminationGracePeriodSeconds: 1,
    containers: [
      {
        name: 'c',
        image,
        env: Object.entries(env).map(([k, v]) => ({ name: k, value: v })),
        ...(image === 'lab/app' ? { readinessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 0.1 } } : {}),
      },
    ],
  };
}

function webService(endpoints: readonly { ip: string }[]): ProxyService {
  return {
    namespace: 'shop',
    name: 'web',
    clusterIPs: [vip],
    ports: [
      {
        name: 'http',
        protocol: 'TCP',
        port: 80,
        endpoints: endpoints.map((e) => ({ ip: e.ip, port: 8080 })),
      },
    ],
  };
}

async function syncAll(services: ProxyService[]): Promise<void> {
  await Promise.all(proxies.map((p) => p.sync(services)));
}

function records(): DnsRecordSet {
  return {
    services: [
      {
        namespace: 'shop',
        name: 'web',
        clusterIPs: [vip],
        ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
      },
      {
        namespace: 'shop',
        name: 'backends',
        clusterIPs: [],
        ports: [],
        endpoints: eps.map((e) => ({ ip: e.ip, hostname: e.name })),
      },
    ],
  };
}

/** Runs `n` HTTP requests from the client pod (one connection each) and counts answers per endpoint name. */
async function spread(url: string, n: number): Promise<Record<string, number>> {
  const r = await runtimes[0]!.exec(
    CLIENT,
    ['sh', '-c', `i=0; while [ $i -lt ${n} ]; do curl -sS -m 3 ${url}; i=$((i+1)); done`],
    { timeoutMs: 60_000 },
  );
  const counts: Record<string, number> = {};
  for (const line of r.stdout.split('\n').filter(Boolean)) {
    const who = line.split(' ')[0] ?? '?';
    counts[who] = (counts[who] ?? 0) + 1;
  }
  return counts;
}

beforeAll(async () => {
  net = await LabNetwork.create({ prefix, root, nodes: 2, block: testBlock() });
  vip = `10.${net.plan.block}.240.10`;
  const resolveImage = (image: string) =>
    image === 'lab/app'
      ? { entry: APP }
      : image === 'curlimages/curl'
        ? { hostCommand: ['/bin/sleep', 'infinity'] }
        : null;
  runtimes = await Promise.all(net.nodes.map((n) => PodRuntime.forNode(net, n.name, { resolveImage })));
  proxies = await Promise.all(net.nodes.map((n) => ServiceProxy.create({ netnsPath: n.netnsPath })));
  dns = await ClusterDns.forLab(net);
  for (const e of eps) runtimes[e.node]!.runPod(pod(e.uid, e.name, 'lab/app', { NAME: e.name }));
  runtimes[0]!.runPod(pod(CLIENT, 'client', 'curlimages/curl'));
  for (const e of eps) {
    const s = await eventually(
      () => {
        const st = runtimes[e.node]!.status(e.uid);
        if (st?.conditions.find((c) => c.type === 'Ready')?.status !== 'True') throw new Error('not ready');
        return st;
      },
      { timeoutMs: 20_000, what: `${e.name} ready` },
    );
    e.ip = s?.podIP ?? '';
  }
  await eventually(() => runtimes[0]!.status(CLIENT)?.phase === 'Running', { what: 'client running' });
});

afterAll(async () => {
  await dns?.stop();
  await Promise.allSettled(proxies.map((p) => p.teardown()));
  await Promise.allSettled(runtimes.map((r) => r.shutdown({ gracePeriodSeconds: 1 })));
  await net?.destroy();
  const left = leftovers(prefix, root);
  rmSync(root, { recursive: true, force: true });
  expect(left).toEqual({ netns: [], mounts: [], files: [], processes: [] });
});

describe('service proxy', () => {
  it('a ClusterIP reaches endpoints on both nodes and spreads 60 connections over all of them', async () => {
    await syncAll([webService(eps)]);
    const counts = await spread(`http://${vip}/`, 60);
    expect(Object.values(counts).reduce((a, b) => a + b, 0)).toBe(60);
    expect(Object.keys(counts).sort()).toEqual(['ep-a', 'ep-b', 'ep-c']);
  });

  it('works from the node itself (OUTPUT) as well as from pods', async () => {
    const r = await runInNetns(net.node(1).netns, 'curl', ['-sS', '-m', '3', `http://${vip}/`]);
    expect(r.stdout).toMatch(/^ep-[abc] from /);
  });

  it('stops sending to a removed endpoint; a service without endpoints is rejected at once', async () => {
    await syncAll([webService(eps.filter((e) => e.name !== 'ep-b'))]);
    const counts = await spread(`http://${vip}/`, 30);
    expect(counts['ep-b']).toBeUndefined();
    expect(Object.keys(counts).sort()).toEqual(['ep-a', 'ep-c']);
    await syncAll([webService([])]);
    const t0 = performance.now();
    const r = await runtimes[0]!.exec(CLIENT, ['curl', '-sS', '-m', '3', `http://${vip}/`]);
    expect(r.exitCode).toBe(7);
    expect(performance.now() - t0).toBeLessThan(2_000);
    await syncAll([webService(eps)]);
  });

  it('NodePort: every node address forwards the port to the endpoints', async () => {
    const base = webService(eps);
    await syncAll([{ ...base, ports: [{ ...base.ports[0]!, nodePort: 30080 }] }]);
    const r = await runtimes[0]!.exec(CLIENT, ['curl', '-sS', '-m', '3', `http://${net.node(1).ip}:30080/`]);
    expect(r.stdout).toMatch(/^ep-[abc] from /);
    await syncAll([webService(eps)]);
  });

  it('a pod reaching itself through its Service (hairpin) works', async () => {
    await syncAll([webService(eps.filter((e) => e.name === 'ep-a'))]);
    const r = await runtimes[0]!.exec('svc-ep-a', ['curl', '-sS', '-m', '3', `http://${vip}/`]);
    expect(r.stdout).toMatch(/^ep-a from /);
    await syncAll([webService(eps)]);
  });
});

describe('cluster DNS', () => {
  beforeAll(async () => {
    await dns.update(records());
  });

  it('resolves service names from inside a pod, with the search paths of its namespace', async () => {
    const rt = runtimes[0]!;
    for (const name of ['web.shop.svc.cluster.local', 'web.shop', 'web']) {
      const r = await rt.exec(CLIENT, ['getent', 'hosts', name]);
      expect(r.exitCode, `${name}: ${r.stderr}`).toBe(0);
      expect(r.stdout.split(/\s+/)[0]).toBe(vip);
    }
    const headless = await rt.exec(CLIENT, ['getent', 'ahostsv4', 'backends.shop.svc.cluster.local']);
    expect(
      new Set(
        headless.stdout
          .split('\n')
          .filter(Boolean)
          .map((l) => l.split(/\s+/)[0]),
      ),
    ).toEqual(new Set(eps.map((e) => e.ip)));
    expect(
      (await rt.exec(CLIENT, ['getent', 'hosts', 'ep-b.backends.shop.svc.cluster.local'])).stdout,
    ).toContain(eps[1]?.ip);
    expect((await rt.exec(CLIENT, ['getent', 'hosts', 'nothing.shop.svc.cluster.local'])).exitCode).toBe(2);
  });

  it('answers NXDOMAIN for unknown cluster names and serves pods on every node (curl by name)', async () => {
    const code = await runtimes[1]!.exec('svc-ep-b', [
      process.execPath,
      '-e',
      "require('dns').promises.resolve4('nope.shop.svc.cluster.local').then(()=>console.log('found'),e=>console.log(e.code))",
    ]);
    expect(code.stdout.trim()).toBe('ENOTFOUND');
    const byName = await runtimes[0]!.exec(CLIENT, ['curl', '-sS', '-m', '3', 'http://web/']);
    expect(byName.stdout).toMatch(/^ep-[abc] from /);
  });

  it('follows record updates', async () => {
    await dns.update({ services: [] });
    expect(
      (await runtimes[0]!.exec(CLIENT, ['getent', 'hosts', 'web.shop.svc.cluster.local'])).exitCode,
    ).toBe(2);
    await dns.update(records());
    expect(
      (await runtimes[0]!.exec(CLIENT, ['getent', 'hosts', 'web.shop.svc.cluster.local'])).exitCode,
    ).toBe(0);
  });
});

describe('teardown', () => {
  it('removes every chain and jump the proxy installed', async () => {
    await Promise.all(proxies.map((p) => p.teardown()));
    for (const n of net.nodes) {
      const save = (await runInNetns(n.netns, 'iptables-save', [])).stdout;
      expect(save).not.toMatch(/LAB-/);
    }
  });
});
