/**
 * The lab end to end, driven exactly as a user drives it: `ambientctl lab up/exec/down` as processes, the
 * real `kubectl` with the lab's kubeconfig, Bookinfo and curl from samples/. One 2-node lab for the whole file
 * (its own prefix, root and address block, so it can run beside a demo lab), without the mesh at first (the
 * mesh install is checked near the end, before `lab down`).
 *
 *   A3: Bookinfo Ready, /productpage 200 through Service + DNS from a pod on node A, all reviews versions
 *   pods reach pods on the other node by pod IP; deleted pods are replaced and their sandbox (CNI DEL) is gone
 *   a crashing container restarts with back-off; a failing readiness probe leaves the Service's endpoints
 *   `lab down` leaves nothing behind; `lab up` again keeps the cluster state
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type {
  V1DeploymentList,
  V1EndpointSliceList,
  V1Endpoints,
  V1Lease,
  V1NodeList,
  V1Pod,
  V1PodList,
} from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify as stringifyYaml } from 'yaml';
import { DEMO_MANIFESTS, DEMO_WORKLOADS, Lab, MESH_WORKLOADS, REPO_ROOT } from '../../lab/cluster/lab.ts';
import { waitForWorkloads } from '../../lab/cluster/workloads.ts';
import { listNetns, readRegistry } from '../../lab/node/index.ts';
import {
  leftovers,
  pidAlive,
  rootNetnsSnapshot,
  testBlock,
  testPrefix,
  testRoot,
} from '../../lab/node/testdata/helpers.ts';
import { eventually } from '../../pkg/testing/index.ts';

const prefix = testPrefix();
const root = testRoot();
const block = testBlock();
const CTL = join(REPO_ROOT, 'ctl', 'main.ts');
const NS = 'lab-e2e';

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
}

/** `node ctl/main.ts lab <sub> --prefix … --root … <args>` as a process (Node 24 = this test's runtime). */
function ctl(sub: string, args: readonly string[] = [], tail: readonly string[] = []): Promise<Run> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [CTL, 'lab', sub, '--prefix', prefix, '--root', root, ...args, ...(tail.length ? ['--', ...tail] : [])],
      { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 170_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({
        code: code ?? 1,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        ms: performance.now() - t0,
      });
    });
  });
}

let lab: Lab;
let rootBefore = '';
let down = false;

async function kubectl(args: readonly string[], input?: string): Promise<string> {
  const r = await lab.kubectl(args, input === undefined ? {} : { input });
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** `kubectl get … -o json`, typed as the caller expects (client-node's types; timestamps stay strings). */
async function getJson<T>(args: readonly string[]): Promise<T> {
  return JSON.parse(await kubectl([...args, '-o', 'json'])) as T;
}

async function pods(ns: string, selector?: string): Promise<V1Pod[]> {
  const list = await getJson<V1PodList>(['get', 'pods', '-n', ns, ...(selector ? ['-l', selector] : [])]);
  return list.items.filter((p) => !p.metadata?.deletionTimestamp);
}

const isReady = (p: V1Pod): boolean =>
  (p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');

function podNetns(uid: string): string {
  return `${prefix}pod-${createHash('sha256').update(uid).digest('hex').slice(0, 12)}`;
}

function nodeNetns(node: string): string {
  return `${prefix}node-${node.replace(/^node-/, '')}`;
}

async function ip(netns: string, args: readonly string[]): Promise<string> {
  const r = await new Promise<Run>((resolve) => {
    const child = spawn('ip', ['-n', netns, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.on('close', (code) =>
      resolve({ code: code ?? 1, stdout: Buffer.concat(out).toString(), stderr: '', ms: 0 }),
    );
  });
  return r.code === 0 ? r.stdout : '';
}

async function endpointIps(ns: string, svc: string): Promise<{ ready: string[]; notReady: string[] }> {
  const ep = await getJson<V1Endpoints>(['get', 'endpoints', '-n', ns, svc]);
  const ready: string[] = [];
  const notReady: string[] = [];
  for (const s of ep.subsets ?? []) {
    for (const a of s.addresses ?? []) ready.push(a.ip);
    for (const a of s.notReadyAddresses ?? []) notReady.push(a.ip);
  }
  return { ready, notReady };
}

beforeAll(async () => {
  rootBefore = rootNetnsSnapshot();
  const up = await ctl('up', ['--no-mesh', '--nodes', '2', '--block', String(block), '--backoff-ms', '1000']);
  if (up.code !== 0) throw new Error(`lab up failed (${up.code}):\n${up.stdout}\n${up.stderr}`);
  expect(up.stdout).toContain('The lab is running in the background');
  lab = Lab.open({ prefix, root });
  console.log(`lab up (no mesh): ${(up.ms / 1000).toFixed(1)}s`);
});

afterAll(async () => {
  if (!down) await ctl('down', ['--purge']);
});

describe('lab', () => {
  it('registers two Ready nodes with InternalIP and pod CIDR', async () => {
    const nodes = (await getJson<V1NodeList>(['get', 'nodes'])).items;
    expect(nodes.map((n) => n.metadata?.name).sort()).toEqual(['node-0', 'node-1']);
    for (const [i, n] of nodes.entries()) {
      expect(n.status?.conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
      expect(n.metadata?.labels?.['kubernetes.io/hostname']).toBe(n.metadata?.name);
      expect(n.status?.addresses).toContainEqual({ type: 'InternalIP', address: `10.${block}.0.${10 + i}` });
      expect(n.spec?.podCIDR).toBe(`10.${block}.${i + 1}.0/24`);
    }
    const lease = await getJson<V1Lease>(['get', 'lease', '-n', 'kube-node-lease', 'node-0']);
    expect(Date.now() - Date.parse(String(lease.spec?.renewTime))).toBeLessThan(30_000);
  });

  it('runs Bookinfo and curl applied with the real kubectl: every pod Ready', async () => {
    await kubectl(['apply', '-n', 'default', ...DEMO_MANIFESTS.flatMap((f) => ['-f', f])]);
    const api = lab.api();
    try {
      const t0 = performance.now();
      const states = await waitForWorkloads(api, DEMO_WORKLOADS, 90_000);
      expect(states.filter((s) => !s.ready).map((s) => `${s.ref.name} ${s.summary}`)).toEqual([]);
      console.log(`Bookinfo + curl Ready in ${((performance.now() - t0) / 1000).toFixed(1)}s`);
    } finally {
      api.close();
    }
    const all = await pods('default');
    expect(all).toHaveLength(7);
    expect(new Set(all.map((p) => p.spec?.nodeName))).toEqual(new Set(['node-0', 'node-1']));
    for (const p of all) expect(p.status?.podIP).toMatch(new RegExp(`^10\\.${block}\\.[12]\\.`));
  });

  it('serves /productpage (200, naming a reviews pod) from the curl pod via lab exec, all three reviews versions over 30 requests', async () => {
    const [curl] = await pods('default', 'app=curl');
    const script =
      'for i in $(seq 30); do curl -s -m 10 -w "\\nHTTP=%{http_code}\\n" ' +
      'http://productpage.default.svc.cluster.local:9080/productpage; done';
    const r = await ctl('exec', [String(curl?.metadata?.name)], ['sh', '-c', script]);
    expect(r.code, r.stderr).toBe(0);
    const codes = r.stdout.match(/HTTP=\d+/g) ?? [];
    expect(codes).toHaveLength(30);
    expect(new Set(codes)).toEqual(new Set(['HTTP=200']));
    const reviewPods = new Set((await pods('default', 'app=reviews')).map((p) => String(p.metadata?.name)));
    const served = r.stdout.match(/reviews-v[123]-[a-z0-9]+-[a-z0-9]+/g) ?? [];
    expect(served.length).toBeGreaterThanOrEqual(30);
    for (const s of served) expect(reviewPods.has(s)).toBe(true);
    expect(new Set(served.map((s) => s.slice(0, 'reviews-vN'.length)))).toEqual(
      new Set(['reviews-v1', 'reviews-v2', 'reviews-v3']),
    );
  });

  it('lets a pod on node B reach a pod on node A by pod IP', async () => {
    const all = (await pods('default')).filter((p) => p.metadata?.labels?.app !== 'curl');
    const a = all.find((p) => p.spec?.nodeName === 'node-0');
    const b = all.find((p) => p.spec?.nodeName === 'node-1');
    expect(a && b).toBeTruthy();
    const r = await lab.exec('default', String(b?.metadata?.name), [
      'curl',
      '-s',
      '-m',
      '5',
      `http://${a?.status?.podIP}:9080/health`,
    ]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/healthy/i);
  });

  it('replaces a deleted pod: the Deployment makes a new one, CNI DEL ran (netns, veth, IP lease gone), endpoints follow', async () => {
    const [old] = await pods('default', 'app=ratings');
    const uid = String(old?.metadata?.uid);
    const oldIp = String(old?.status?.podIP);
    const node = String(old?.spec?.nodeName);
    const netns = podNetns(uid);
    expect(listNetns()).toContain(netns);
    const route = await ip(nodeNetns(node), ['route', 'get', oldIp]);
    const veth = /dev (\S+)/.exec(route)?.[1] ?? '';
    expect(veth).toMatch(/^veth/);
    const lease = join(root, 'nodes', node, 'var/lib/cni/networks/lab', oldIp);
    expect(existsSync(lease)).toBe(true);

    await kubectl([
      'delete',
      'pod',
      '-n',
      'default',
      String(old?.metadata?.name),
      '--wait=true',
      '--timeout=60s',
    ]);
    const fresh = await eventually(
      async () => {
        const [p] = await pods('default', 'app=ratings');
        if (!p || p.metadata?.uid === uid || !isReady(p)) throw new Error('no new Ready ratings pod yet');
        return p;
      },
      { timeoutMs: 60_000, intervalMs: 250, what: 'a new Ready ratings pod' },
    );
    expect(listNetns()).not.toContain(netns);
    expect(await ip(nodeNetns(node), ['link', 'show', veth])).toBe('');
    expect(existsSync(lease)).toBe(false);
    await eventually(
      async () => {
        const ep = await endpointIps('default', 'ratings');
        expect(ep.ready).toEqual([fresh.status?.podIP]);
      },
      { timeoutMs: 10_000, intervalMs: 200, what: 'ratings endpoints updated' },
    );
  });

  it('restarts a crashing container with back-off; restartCount grows', async () => {
    await kubectl(['create', 'namespace', NS]);
    await kubectl(
      ['apply', '-n', NS, '-f', '-'],
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'crasher' },
        spec: {
          terminationGracePeriodSeconds: 0,
          containers: [
            { name: 'c', image: 'curlimages/curl', command: ['/bin/sh', '-c', 'echo boom; exit 3'] },
          ],
        },
      }),
    );
    const messages = new Set<string>();
    const st = await eventually(
      async () => {
        const p = await getJson<V1Pod>(['get', 'pod', '-n', NS, 'crasher']);
        const c = p.status?.containerStatuses?.[0];
        const w = c?.state?.waiting;
        if (w?.reason === 'CrashLoopBackOff') messages.add(/back-off (\S+)/.exec(w.message ?? '')?.[1] ?? '');
        if (!c || c.restartCount < 3) throw new Error(`restartCount ${c?.restartCount}`);
        return c;
      },
      { timeoutMs: 45_000, intervalMs: 200, what: 'restartCount >= 3' },
    );
    expect(st.lastState?.terminated?.exitCode).toBe(3);
    // The lab runs with --backoff-ms 1000: 0 s, 1 s, 2 s, 4 s … (kubelet: 0, 10 s, 20 s …); seen as growing delays.
    expect(messages.size).toBeGreaterThanOrEqual(2);
    const logs = await ctl('logs', ['-n', NS, 'crasher', '--previous']);
    expect(logs.stdout).toContain('boom');
  });

  it('takes a pod whose readiness probe fails out of the Service endpoints (and the node proxy), back when it passes', async () => {
    await kubectl(
      ['apply', '-n', NS, '-f', '-'],
      // Two YAML documents (a `kind: List` makes kubectl validate against /openapi/v2, which the lab does not serve).
      [
        {
          apiVersion: 'v1',
          kind: 'Pod',
          metadata: { name: 'ready', labels: { app: 'ready' } },
          spec: {
            terminationGracePeriodSeconds: 0,
            containers: [
              {
                name: 'c',
                image: 'curlimages/curl',
                command: ['/bin/sh', '-c', 'touch /tmp/ready; exec sleep infinity'],
                readinessProbe: { exec: { command: ['test', '-f', '/tmp/ready'] }, periodSeconds: 1 },
              },
            ],
          },
        },
        {
          apiVersion: 'v1',
          kind: 'Service',
          metadata: { name: 'ready' },
          spec: { selector: { app: 'ready' }, ports: [{ port: 80 }] },
        },
      ]
        .map((o) => stringifyYaml(o))
        .join('---\n'),
    );
    const pod = await eventually(
      async () => {
        const p = await getJson<V1Pod>(['get', 'pod', '-n', NS, 'ready']);
        if (!isReady(p)) throw new Error('not ready');
        return p;
      },
      { timeoutMs: 30_000, intervalMs: 200, what: 'pod ready Ready' },
    );
    const podIp = String(pod.status?.podIP);
    const nodeNs = nodeNetns(String(pod.spec?.nodeName));
    const dnat = async (): Promise<boolean> => {
      const r = await new Promise<string>((resolve) => {
        const child = spawn('nsenter', [`--net=/var/run/netns/${nodeNs}`, 'iptables-save', '-t', 'nat'], {
          stdio: ['ignore', 'pipe', 'ignore'],
        });
        const out: Buffer[] = [];
        child.stdout.on('data', (d: Buffer) => out.push(d));
        child.on('close', () => resolve(Buffer.concat(out).toString()));
      });
      return r.includes(`--to-destination ${podIp}:80`);
    };
    await eventually(async () => expect((await endpointIps(NS, 'ready')).ready).toEqual([podIp]), {
      timeoutMs: 10_000,
      what: 'ready endpoint',
    });
    await eventually(async () => expect(await dnat()).toBe(true), { timeoutMs: 10_000, what: 'DNAT rule' });

    const rm = await ctl('exec', ['-n', NS, 'ready'], ['rm', '/tmp/ready']);
    expect(rm.code, rm.stderr).toBe(0);
    await eventually(
      async () => {
        const ep = await endpointIps(NS, 'ready');
        expect(ep).toEqual({ ready: [], notReady: [podIp] });
      },
      { timeoutMs: 15_000, intervalMs: 200, what: 'pod out of the endpoints' },
    );
    const slices = await getJson<V1EndpointSliceList>([
      'get',
      'endpointslices',
      '-n',
      NS,
      '-l',
      'kubernetes.io/service-name=ready',
    ]);
    expect(slices.items[0]?.endpoints?.[0]?.conditions?.ready).toBe(false);
    await eventually(async () => expect(await dnat()).toBe(false), {
      timeoutMs: 10_000,
      what: 'DNAT removed',
    });

    expect((await lab.exec(NS, 'ready', ['touch', '/tmp/ready'])).exitCode).toBe(0);
    await eventually(async () => expect((await endpointIps(NS, 'ready')).ready).toEqual([podIp]), {
      timeoutMs: 15_000,
      what: 'pod back in the endpoints',
    });
  });

  it('installs the mesh from deploy/ with kubectl: istiod and istio-cni (and ztunnel) Ready', async () => {
    const r = await lab.kubectl([
      'apply',
      '--server-side=false',
      '-k',
      join(REPO_ROOT, 'deploy/profiles/ambient'),
    ]);
    expect(r.code, r.stderr).toBe(0);
    // ztunnel is written under its own issue; until ztunnel/src/main.ts exists its pods fail with ErrImagePull
    // (an image without a program), so only istiod and istio-cni are required then.
    const ztunnelWritten = existsSync(join(REPO_ROOT, 'ztunnel/src/main.ts'));
    const want = MESH_WORKLOADS.filter((w) => ztunnelWritten || w.name !== 'ztunnel');
    const api = lab.api();
    try {
      const t0 = performance.now();
      const states = await waitForWorkloads(api, want, 90_000);
      expect(states.filter((s) => !s.ready).map((s) => `${s.ref.name} ${s.summary}`)).toEqual([]);
      console.log(
        `mesh (${want.map((w) => w.label).join(', ')}) Ready in ${((performance.now() - t0) / 1000).toFixed(1)}s`,
      );
    } finally {
      api.close();
    }
    // The agent chained its plugin into every node's conflist (it runs as a hostNetwork pod of that node).
    for (const n of ['node-0', 'node-1']) {
      const conf = readFileSync(join(root, 'nodes', n, 'etc/cni/net.d/10-lab.conflist'), 'utf8');
      expect(conf).toContain('"istio-cni"');
    }
  });

  it('lab down leaves no namespace, link, rule, mount or process behind (and keeps the API state)', async () => {
    const pid = lab.pid();
    expect(pid).toBeGreaterThan(0);
    const r = await ctl('down');
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    console.log(`lab down: ${(r.ms / 1000).toFixed(1)}s`);
    expect(pidAlive(pid as number)).toBe(false);
    const left = leftovers(prefix, root);
    expect(left.netns).toEqual([]);
    expect(left.mounts).toEqual([]);
    expect(left.processes).toEqual([]);
    expect(readFileSync('/proc/mounts', 'utf8')).not.toContain(root);
    expect(rootNetnsSnapshot()).toBe(rootBefore);
    expect(readRegistry(prefix)).toBeNull();
    // No process of ours anywhere (forwarder, DNS, probers, containers all mention the root or run in it).
    const ours = readdirSync('/proc')
      .filter((d) => /^\d+$/.test(d))
      .filter((d) => {
        try {
          return readFileSync(`/proc/${d}/cmdline`, 'utf8').includes(root);
        } catch {
          return false;
        }
      });
    expect(ours).toEqual([]);
    expect(readdirSync(root).sort()).toEqual(['api', 'kubeconfig', 'lab.json', 'logs', 'node-disks']);
  });

  it('lab up again brings the same cluster back (durable API state), then down --purge removes it all', async () => {
    const up = await ctl('up', ['--no-mesh']);
    expect(up.code, `${up.stdout}\n${up.stderr}`).toBe(0);
    const deploys = (await getJson<V1DeploymentList>(['get', 'deployments', '-n', 'default'])).items.map(
      (d) => d.metadata?.name,
    );
    expect(deploys).toEqual(expect.arrayContaining(DEMO_WORKLOADS.map((w) => w.name)));
    const api = lab.api();
    try {
      const states = await waitForWorkloads(
        api,
        DEMO_WORKLOADS.filter((w) => w.name === 'productpage-v1'),
        90_000,
      );
      expect(states[0]?.ready).toBe(true);
    } finally {
      api.close();
    }
    const r = await ctl('down', ['--purge']);
    expect(r.code, r.stderr).toBe(0);
    down = true;
    expect(existsSync(root)).toBe(false);
    expect(leftovers(prefix, root).netns).toEqual([]);
    expect(rootNetnsSnapshot()).toBe(rootBefore);
  });
});
