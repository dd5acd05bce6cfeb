/**
 * Root tier: a 2-node lab and a PodRuntime per node. Pods are real network namespaces wired by the reference
 * CNI plugins (ptp + host-local), containers are namespaced process trees; everything is removed in afterAll.
 *
 *   node-0 (10.B.0.10, pods 10.B.1.0/24)  ── fabric bridge ──  node-1 (10.B.0.11, pods 10.B.2.0/24)
 */
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../pkg/telemetry/index.ts';
import { eventually } from '../../pkg/testing/index.ts';
import { inCidr, LabNetwork, runInNetns } from '../node/index.ts';
import {
  leftovers,
  pidAlive,
  rootNetnsSnapshot,
  testBlock,
  testPrefix,
  testRoot,
} from '../node/testdata/helpers.ts';
import { PodRuntime, readCriLog } from './index.ts';
import type { ContainerStatus, PodInput, PodStatus, ResolvedImage } from './types.ts';

const APP = fileURLToPath(new URL('./testdata/app.ts', import.meta.url));
const RECORDER = fileURLToPath(new URL('./testdata/recorder-plugin.ts', import.meta.url));

const IMAGES: Record<string, ResolvedImage> = {
  'lab/app': { entry: APP, env: { NAME: 'image-default' } },
  'curlimages/curl': { hostCommand: ['/bin/sleep', 'infinity'] },
  'lab/shell': { hostCommand: ['/bin/sh', '-c'] },
};

const prefix = testPrefix();
const root = testRoot();
let net: LabNetwork;
let rt0: PodRuntime;
let rt1: PodRuntime;
let rootBefore = '';
/** Every status each pod went through, in order. */
const history = new Map<string, PodStatus[]>();
let uidCounter = 0;

function uid(name: string): string {
  return `${name}-${process.pid}-${++uidCounter}`;
}

function ctr(status: PodStatus | null, name?: string): ContainerStatus {
  const c = name ? status?.containerStatuses.find((x) => x.name === name) : status?.containerStatuses[0];
  if (!c) throw new Error(`no container status ${name ?? ''}`);
  return c;
}

function ready(status: PodStatus | null): boolean {
  return status?.conditions.find((c) => c.type === 'Ready')?.status === 'True';
}

async function waitRunning(rt: PodRuntime, id: string, wantReady = true): Promise<PodStatus> {
  return eventually(
    () => {
      const s = rt.status(id);
      if (s?.phase !== 'Running' || (wantReady && !ready(s))) throw new Error(`status: ${JSON.stringify(s)}`);
      return s;
    },
    { timeoutMs: 20_000, intervalMs: 50, what: `pod ${id} running` },
  );
}

function appPod(
  id: string,
  name: string,
  extra: Partial<PodInput> = {},
  env: Record<string, string> = {},
): PodInput {
  return {
    uid: id,
    namespace: 'lab-test',
    name,
    terminationGracePeriodSeconds: 2,
    containers: [
      {
        name: 'app',
        image: 'lab/app',
        env: Object.entries(env).map(([k, v]) => ({ name: k, value: v })),
        ports: [{ name: 'http', containerPort: 8080 }],
        readinessProbe: { tcpSocket: { port: 'http' }, periodSeconds: 0.1 },
      },
    ],
    ...extra,
  };
}

function curlPod(id: string, name: string): PodInput {
  return {
    uid: id,
    namespace: 'lab-test',
    name,
    terminationGracePeriodSeconds: 1,
    containers: [{ name: 'curl', image: 'curlimages/curl' }],
  };
}

beforeAll(async () => {
  rootBefore = rootNetnsSnapshot();
  net = await LabNetwork.create({ prefix, root, nodes: 2, block: testBlock() });
  const common = {
    logger: createLogger({ component: 'lab-test', level: (process.env.LAB_TEST_LOG as 'debug') ?? 'warn' }),
    resolveImage: (image: string) => IMAGES[image] ?? null,
    backoff: { initialMs: 100, maxMs: 800 },
    onStatus: (pod: { uid: string }, s: PodStatus) => {
      const list = history.get(pod.uid) ?? [];
      list.push(s);
      history.set(pod.uid, list);
    },
  };
  [rt0, rt1] = await Promise.all([PodRuntime.forNode(net, 0, common), PodRuntime.forNode(net, 1, common)]);
});

afterAll(async () => {
  await Promise.allSettled([
    rt0?.shutdown({ gracePeriodSeconds: 1 }),
    rt1?.shutdown({ gracePeriodSeconds: 1 }),
  ]);
  await net?.destroy();
  const left = leftovers(prefix, root);
  rmSync(root, { recursive: true, force: true });
  expect(left).toEqual({ netns: [], mounts: [], files: [], processes: [] });
});

describe('pod networking', () => {
  it('a pod on node-0 reaches a pod on node-1 by pod IP; the machine netns is untouched', async () => {
    const server = uid('server');
    const client = uid('client');
    rt1.runPod(appPod(server, 'server', {}, { NAME: 'server-1' }));
    rt0.runPod(curlPod(client, 'client'));
    const [s, c] = await Promise.all([waitRunning(rt1, server), waitRunning(rt0, client)]);
    expect(inCidr(s.podIP ?? '', net.node(1).podCidr)).toBe(true);
    expect(inCidr(c.podIP ?? '', net.node(0).podCidr)).toBe(true);
    expect(s.hostIP).toBe(net.node(1).ip);
    const r = await rt0.exec(client, ['curl', '-sS', '-m', '5', `http://${s.podIP}:8080/`]);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe(`server-1 from ${c.podIP} args=`);
    expect(rootNetnsSnapshot()).toBe(rootBefore);
    await Promise.all([rt1.killPod(server), rt0.killPod(client)]);
  });
});

describe('CNI invocation', () => {
  it('runs the chained plugins with CNI_* env, K8S args and prevResult; DEL releases everything', async () => {
    const node = net.node(0);
    // Plugins run in the node's filesystem view: /var/run there is the node's var/run directory.
    const recordDir = node.hostPath('/var/run/cni-records');
    mkdirSync(recordDir, { recursive: true });
    const wrapper = join(node.dirs.cniBin, 'lab-recorder');
    writeFileSync(wrapper, `#!/bin/sh\nexec '${process.execPath}' '${RECORDER}'\n`);
    chmodSync(wrapper, 0o755);
    const original = readFileSync(node.conflistFile, 'utf8');
    const list = JSON.parse(original) as { plugins: unknown[] };
    list.plugins.push({ type: 'lab-recorder', recordDir: '/var/run/cni-records' });
    writeFileSync(node.conflistFile, JSON.stringify(list));
    const id = uid('cni');
    try {
      const vethsBefore = (await runInNetns(node.netns, 'ip', ['-o', 'link', 'show', 'type', 'veth'])).stdout;
      rt0.runPod(curlPod(id, 'cni-pod'));
      const s = await waitRunning(rt0, id);
      const podIp = s.podIP ?? '';
      expect(inCidr(podIp, node.podCidr)).toBe(true);
      const addFile = readdirSync(recordDir).find((f) => f.startsWith('ADD-'));
      expect(addFile).toBeDefined();
      const add = JSON.parse(readFileSync(join(recordDir, addFile!), 'utf8')) as {
        env: Record<string, string>;
        stdin: { name: string; cniVersion: string; prevResult: { ips: { address: string }[] } };
      };
      const sandbox = rt0.sandbox(id);
      expect(add.env).toMatchObject({
        CNI_COMMAND: 'ADD',
        CNI_IFNAME: 'eth0',
        CNI_NETNS: sandbox?.netnsPath,
        CNI_PATH: '/opt/cni/bin',
      });
      expect(add.env.CNI_CONTAINERID).toMatch(/^[0-9a-f]{64}$/);
      expect(add.env.CNI_ARGS).toBe(
        `IgnoreUnknown=1;K8S_POD_NAMESPACE=lab-test;K8S_POD_NAME=cni-pod;K8S_POD_INFRA_CONTAINER_ID=${add.env.CNI_CONTAINERID};K8S_POD_UID=${id}`,
      );
      expect(add.stdin.name).toBe('lab');
      expect(add.stdin.cniVersion).toBe('1.0.0');
      expect(add.stdin.prevResult.ips[0]?.address).toBe(`${podIp}/24`);
      const lease = join(node.dirs.cniIpam, 'lab', podIp);
      expect(existsSync(lease)).toBe(true);
      const netnsName = sandbox?.netnsPath.split('/').pop() ?? '';
      expect(
        (await runInNetns(node.netns, 'ip', ['-o', 'link', 'show', 'type', 'veth'])).stdout.split('\n')
          .length,
      ).toBeGreaterThan(vethsBefore.split('\n').length);

      await rt0.killPod(id);
      const del = JSON.parse(
        readFileSync(join(recordDir, `DEL-${add.env.CNI_CONTAINERID}.json`), 'utf8'),
      ) as {
        env: Record<string, string>;
        stdin: { prevResult: { ips: { address: string }[] } };
      };
      expect(del.env.CNI_COMMAND).toBe('DEL');
      expect(del.stdin.prevResult.ips[0]?.address).toBe(`${podIp}/24`);
      expect(existsSync(lease)).toBe(false);
      expect(existsSync(`/var/run/netns/${netnsName}`)).toBe(false);
      expect((await runInNetns(node.netns, 'ip', ['-o', 'link', 'show', 'type', 'veth'])).stdout).toBe(
        vethsBefore,
      );
    } finally {
      writeFileSync(node.conflistFile, original);
      rmSync(wrapper, { force: true });
      rmSync(recordDir, { recursive: true, force: true });
    }
  });

  it('a failing chained plugin keeps the pod in ContainerCreating with the CNI error, and cleans up', async () => {
    const node = net.node(0);
    const recordDir = node.hostPath('/var/run/cni-records-fail');
    mkdirSync(recordDir, { recursive: true });
    const wrapper = join(node.dirs.cniBin, 'lab-recorder');
    writeFileSync(wrapper, `#!/bin/sh\nexec '${process.execPath}' '${RECORDER}'\n`);
    chmodSync(wrapper, 0o755);
    const original = readFileSync(node.conflistFile, 'utf8');
    const list = JSON.parse(original) as { plugins: unknown[] };
    list.plugins.push({ type: 'lab-recorder', recordDir: '/var/run/cni-records-fail', failAdd: true });
    writeFileSync(node.conflistFile, JSON.stringify(list));
    const id = uid('cnifail');
    try {
      rt0.runPod(curlPod(id, 'cni-fail'));
      const waiting = await eventually(
        () => {
          const w = ctr(rt0.status(id)).state.waiting;
          if (!w?.message?.includes('recorder refuses')) throw new Error(JSON.stringify(w));
          return w;
        },
        { timeoutMs: 10_000, what: 'CNI error surfaced' },
      );
      expect(waiting.reason).toBe('ContainerCreating');
      expect(waiting.message).toContain('code 11');
      expect(waiting.message).toContain('failAdd set');
      expect(rt0.status(id)?.phase).toBe('Pending');
      // The failed ADD was rolled back (DEL ran, no lease left) and is retried with back-off.
      await eventually(() => readdirSync(recordDir).filter((f) => f.startsWith('ADD-')).length >= 2, {
        timeoutMs: 10_000,
        what: 'sandbox creation retried',
      });
      expect(readdirSync(recordDir).some((f) => f.startsWith('DEL-'))).toBe(true);
      writeFileSync(node.conflistFile, original);
      await waitRunning(rt0, id);
      await rt0.killPod(id);
      expect(readdirSync(join(node.dirs.cniIpam, 'lab')).filter((f) => /^\d/.test(f))).toEqual([]);
    } finally {
      writeFileSync(node.conflistFile, original);
      rmSync(wrapper, { force: true });
      rmSync(recordDir, { recursive: true, force: true });
    }
  });
});

describe('containers', () => {
  it('mounts volumes (per-node hostPath, read-only configMap, shared emptyDir), applies env/args/caps, writes logs', async () => {
    for (const n of net.nodes) {
      mkdirSync(n.hostPath('/var/run/labtest'), { recursive: true });
      writeFileSync(join(n.hostPath('/var/run/labtest'), 'who'), n.name);
    }
    const pods = [0, 1].map((i) => ({ id: uid(`vol${i}`), rt: i === 0 ? rt0 : rt1 }));
    for (const [i, p] of pods.entries()) {
      p.rt.runPod({
        uid: p.id,
        namespace: 'lab-test',
        name: `vol-${i}`,
        terminationGracePeriodSeconds: 2,
        volumes: [
          { name: 'run', hostPath: { path: '/var/run/labtest', type: 'Directory' } },
          {
            name: 'config',
            files: { kind: 'configMap', items: { greeting: 'hello\n', 'sub/dir.txt': 'deep' } },
          },
          { name: 'shared', emptyDir: {} },
        ],
        containers: [
          {
            name: 'app',
            image: 'lab/app',
            args: ['one', 'two'],
            env: [{ name: 'NAME', value: `env-${i}` }],
            volumeMounts: [
              { name: 'run', mountPath: '/var/run/labtest' },
              { name: 'config', mountPath: '/etc/labconfig' },
              { name: 'shared', mountPath: '/shared' },
            ],
            securityContext: { capabilities: { drop: ['ALL'], add: ['NET_ADMIN'] } },
            readinessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 0.1 },
          },
          {
            name: 'sidecar',
            image: 'lab/app',
            env: [{ name: 'PORT', value: '8081' }],
            volumeMounts: [{ name: 'shared', mountPath: '/data/shared' }],
            readinessProbe: { tcpSocket: { port: 8081 }, periodSeconds: 0.1 },
          },
        ],
      });
    }
    const statuses = await Promise.all(pods.map((p) => waitRunning(p.rt, p.id)));
    for (const [i, p] of pods.entries()) {
      const cat = (path: string, container = 'app') => p.rt.exec(p.id, ['cat', path], { container });
      expect((await cat('/var/run/labtest/who')).stdout).toBe(`node-${i}`);
      expect((await cat('/etc/labconfig/greeting')).stdout).toBe('hello\n');
      expect((await cat('/etc/labconfig/sub/dir.txt')).stdout).toBe('deep');
      const write = await p.rt.exec(p.id, ['sh', '-c', 'echo nope > /etc/labconfig/greeting'], {
        container: 'app',
      });
      expect(write.exitCode).not.toBe(0);
      expect(
        (await p.rt.exec(p.id, ['sh', '-c', `echo from-app-${i} > /shared/x`], { container: 'app' }))
          .exitCode,
      ).toBe(0);
      expect((await cat('/data/shared/x', 'sidecar')).stdout).toBe(`from-app-${i}\n`);
      const hello = await p.rt.exec(p.id, ['curl', '-sS', '-m', '5', 'http://127.0.0.1:8080/'], {
        container: 'app',
      });
      expect(hello.stdout.trim()).toBe(`env-${i} from 127.0.0.1 args=one,two`);
      // The container's PID 1 (the init shim) carries the capability set the program runs with.
      const caps = (await cat('/proc/1/status')).stdout;
      expect(caps).toMatch(/CapEff:\s+0000000000001000/);
      expect((await cat('/etc/hostname')).stdout).toBe(`vol-${i}\n`);
      const resolv = (await cat('/etc/resolv.conf')).stdout;
      expect(resolv).toContain(`nameserver ${net.plan.clusterDnsIp}`);
      expect(resolv).toContain('search lab-test.svc.cluster.local svc.cluster.local cluster.local');
      expect(resolv).toContain('options ndots:5');
      expect((await cat('/etc/hosts')).stdout).toContain(`${statuses[i]?.podIP}\tvol-${i}`);
      const logFile = join(net.node(i).dirs.podLogs, `lab-test_vol-${i}_${p.id}`, 'app', '0.log');
      await eventually(() => readCriLog(logFile).includes('listening on 8080'), { what: 'log line' });
      expect(readFileSync(logFile, 'utf8')).toMatch(/^\S+Z stdout F listening on 8080$/m);
      expect(readFileSync(logFile, 'utf8')).toMatch(/^\S+Z stderr F stderr line from env-\d$/m);
      expect(p.rt.logs(p.id, 'sidecar')).toContain('listening on 8081');
    }
    await Promise.all(pods.map((p) => p.rt.killPod(p.id)));
    expect(existsSync(join(net.node(0).dirs.kubeletPods, pods[0]!.id))).toBe(false);
  });

  it('runs init containers first, honours workingDir, refreshes file volumes in place', async () => {
    const id = uid('init');
    rt0.runPod({
      uid: id,
      namespace: 'lab-test',
      name: 'init',
      terminationGracePeriodSeconds: 1,
      volumes: [
        { name: 'work', emptyDir: {} },
        { name: 'token', files: { kind: 'projected', items: { token: 'v1' } } },
      ],
      initContainers: [
        {
          name: 'prepare',
          image: 'lab/shell',
          args: ['echo prepared > /work/state'],
          volumeMounts: [{ name: 'work', mountPath: '/work' }],
        },
      ],
      containers: [
        {
          name: 'main',
          image: 'curlimages/curl',
          workingDir: '/srv/app',
          volumeMounts: [
            { name: 'work', mountPath: '/work' },
            { name: 'token', mountPath: '/var/run/secrets/tokens', readOnly: true },
          ],
        },
      ],
    });
    const s = await waitRunning(rt0, id);
    expect(s.initContainerStatuses?.[0]?.state.terminated).toMatchObject({
      exitCode: 0,
      reason: 'Completed',
    });
    expect(s.conditions.find((c) => c.type === 'Initialized')?.status).toBe('True');
    expect((await rt0.exec(id, ['cat', '/work/state'])).stdout).toBe('prepared\n');
    expect((await rt0.exec(id, ['pwd'])).stdout).toBe('/srv/app\n');
    expect((await rt0.exec(id, ['cat', '/var/run/secrets/tokens/token'])).stdout).toBe('v1');
    rt0.updateVolumeFiles(id, 'token', { kind: 'projected', items: { token: 'v2' } });
    expect((await rt0.exec(id, ['cat', '/var/run/secrets/tokens/token'])).stdout).toBe('v2');
    await rt0.killPod(id);
  });

  it('hostNetwork pods run in the node namespace with the node IP', async () => {
    const id = uid('hostnet');
    rt1.runPod(appPod(id, 'hostnet', { hostNetwork: true }, { PORT: '8080' }));
    const s = await waitRunning(rt1, id);
    expect(s.podIP).toBe(net.node(1).ip);
    const r = await runInNetns(net.node(0).netns, 'curl', [
      '-sS',
      '-m',
      '5',
      `http://${net.node(1).ip}:8080/`,
    ]);
    expect(r.stdout).toBe(`image-default from ${net.node(0).ip} args=\n`);
    expect((await rt1.exec(id, ['hostname'])).stdout).toBe('node-1\n');
    await rt1.killPod(id);
  });

  it('restarts a crashing container with growing back-off (CrashLoopBackOff, restartCount, lastState)', async () => {
    const id = uid('crash');
    rt0.runPod({
      uid: id,
      namespace: 'lab-test',
      name: 'crasher',
      terminationGracePeriodSeconds: 1,
      containers: [{ name: 'c', image: 'lab/shell', args: ['echo crashing; exit 3'] }],
    });
    const s = await eventually(
      () => {
        const st = rt0.status(id);
        if (ctr(st).restartCount < 4) throw new Error(`restartCount ${ctr(st).restartCount}`);
        return st;
      },
      { timeoutMs: 15_000, what: 'four restarts' },
    );
    expect(s?.phase).toBe('Running');
    expect(ctr(s).lastState.terminated).toMatchObject({ exitCode: 3, reason: 'Error' });
    const backoffs = (history.get(id) ?? [])
      .map((st) => ctr(st).state.waiting)
      .filter((w) => w?.reason === 'CrashLoopBackOff')
      .map((w) => /back-off (\S+) /.exec(w?.message ?? '')?.[1]);
    expect([...new Set(backoffs)].slice(0, 3)).toEqual(['100ms', '200ms', '400ms']);
    expect(rt0.logs(id, 'c', true)).toBe('crashing\n');
    await rt0.killPod(id);
  });

  it('restartPolicy Never and OnFailure end in Failed / Succeeded', async () => {
    const never = uid('never');
    const onfail = uid('onfail');
    rt0.runPod({
      uid: never,
      namespace: 'lab-test',
      name: 'never',
      restartPolicy: 'Never',
      containers: [{ name: 'c', image: 'lab/shell', args: ['exit 4'] }],
    });
    rt0.runPod({
      uid: onfail,
      namespace: 'lab-test',
      name: 'onfail',
      restartPolicy: 'OnFailure',
      containers: [{ name: 'c', image: 'lab/shell', args: ['exit 0'] }],
    });
    await eventually(() => rt0.status(never)?.phase === 'Failed', { what: 'Never → Failed' });
    await eventually(() => rt0.status(onfail)?.phase === 'Succeeded', {
      what: 'OnFailure exit 0 → Succeeded',
    });
    expect(ctr(rt0.status(never)).state.terminated?.exitCode).toBe(4);
    expect(ctr(rt0.status(never)).restartCount).toBe(0);
    await Promise.all([rt0.killPod(never), rt0.killPod(onfail)]);
  });

  it('SIGTERM first, SIGKILL after the grace period; the whole process tree dies', async () => {
    const stubborn = uid('stubborn');
    const polite = uid('polite');
    rt0.runPod(
      appPod(
        stubborn,
        'stubborn',
        { terminationGracePeriodSeconds: 1 },
        { IGNORE_TERM: '1', SPAWN_CHILD: '1' },
      ),
    );
    rt0.runPod(appPod(polite, 'polite', { terminationGracePeriodSeconds: 20 }));
    await Promise.all([waitRunning(rt0, stubborn), waitRunning(rt0, polite)]);
    const init = rt0.containerPid(stubborn, 'app');
    expect(init).not.toBeNull();
    const childLine = await eventually(() => {
      const m = /child (\d+)/.exec(rt0.logs(stubborn, 'app'));
      if (!m) throw new Error('no child pid logged yet');
      return m;
    });
    const childInNs = Number(childLine[1]);
    expect(childInNs).toBeGreaterThan(1);
    // The grandchild's host pid (its NSpid line lists the host pid, then the pid inside the container).
    const inNs = readdirSync('/proc')
      .filter((e) => /^\d+$/.test(e))
      .map(Number)
      .filter((pid) => {
        try {
          return readFileSync(`/proc/${pid}/status`, 'utf8').includes(`NSpid:\t${pid}\t${childInNs}`);
        } catch {
          return false;
        }
      });
    expect(inNs.length).toBe(1);
    const t0 = performance.now();
    await rt0.killPod(stubborn);
    const took = performance.now() - t0;
    expect(took).toBeGreaterThan(900);
    expect(took).toBeLessThan(5_000);
    expect(pidAlive(init!)).toBe(false);
    expect(pidAlive(inNs[0]!)).toBe(false);
    const t1 = performance.now();
    await rt0.killPod(polite);
    expect(performance.now() - t1).toBeLessThan(3_000);
    const last = history.get(polite)?.at(-1);
    expect(ctr(last ?? null).state.terminated?.exitCode).toBe(143);
    const lastStubborn = history.get(stubborn)?.at(-1);
    expect(ctr(lastStubborn ?? null).state.terminated?.exitCode).toBe(137);
  });

  it('an unknown image waits in ErrImagePull, never runs anything', async () => {
    const id = uid('noimage');
    rt0.runPod({
      uid: id,
      namespace: 'lab-test',
      name: 'noimage',
      containers: [{ name: 'c', image: 'nope/nothing:1' }],
    });
    const w = await eventually(() => {
      const waiting = ctr(rt0.status(id)).state.waiting;
      if (waiting?.reason !== 'ErrImagePull') throw new Error(JSON.stringify(waiting));
      return waiting;
    });
    expect(w.message).toContain('nope/nothing:1');
    expect(rt0.status(id)?.phase).toBe('Pending');
    expect(rt0.containerPid(id, 'c')).toBeNull();
    await rt0.killPod(id);
  });
});

describe('probes', () => {
  it('HTTP readiness flips Ready true → false; probes come from the node side, not loopback', async () => {
    const id = uid('ready');
    rt0.runPod(
      appPod(id, 'readiness', {
        containers: [
          {
            name: 'app',
            image: 'lab/app',
            ports: [{ name: 'http', containerPort: 8080 }],
            readinessProbe: {
              httpGet: { path: '/ready', port: 'http' },
              periodSeconds: 0.2,
              failureThreshold: 1,
            },
          },
        ],
      }),
    );
    const s = await waitRunning(rt0, id);
    expect(ctr(s).ready).toBe(true);
    const sources = JSON.parse(
      (await rt0.exec(id, ['curl', '-sS', '-m', '5', 'http://127.0.0.1:8080/sources'])).stdout,
    ) as string[];
    expect(sources).toEqual([net.node(0).podGateway]);
    await rt0.exec(id, ['curl', '-sS', '-m', '5', 'http://127.0.0.1:8080/fail']);
    const after = await eventually(
      () => {
        const st = rt0.status(id);
        if (ready(st)) throw new Error('still ready');
        return st;
      },
      { timeoutMs: 5_000, what: 'Ready false' },
    );
    expect(after?.phase).toBe('Running');
    expect(after?.conditions.find((c) => c.type === 'ContainersReady')).toMatchObject({
      status: 'False',
      reason: 'ContainersNotReady',
      message: 'containers with unready status: [app]',
    });
    expect(ctr(after).restartCount).toBe(0);
    await rt0.killPod(id);
  });

  it('TCP readiness: an open port is ready, a closed one is not', async () => {
    const id = uid('tcp');
    rt1.runPod({
      uid: id,
      namespace: 'lab-test',
      name: 'tcp',
      terminationGracePeriodSeconds: 1,
      containers: [
        {
          name: 'open',
          image: 'lab/app',
          ports: [{ name: 'http', containerPort: 8080 }],
          readinessProbe: { tcpSocket: { port: 'http' }, periodSeconds: 0.2 },
        },
        {
          name: 'closed',
          image: 'lab/app',
          env: [{ name: 'PORT', value: '8081' }],
          readinessProbe: { tcpSocket: { port: 9999 }, periodSeconds: 0.2, failureThreshold: 1 },
        },
      ],
    });
    await eventually(() => ctr(rt1.status(id), 'open').ready, { what: 'tcp probe success' });
    await new Promise((r) => setTimeout(r, 600));
    const s = rt1.status(id);
    expect(ctr(s, 'open').ready).toBe(true);
    expect(ctr(s, 'closed').ready).toBe(false);
    expect(ready(s)).toBe(false);
    await rt1.killPod(id);
  });

  it('startup probe gates readiness; exec probes run inside the container', async () => {
    const id = uid('startup');
    rt1.runPod({
      uid: id,
      namespace: 'lab-test',
      name: 'startup',
      terminationGracePeriodSeconds: 1,
      containers: [
        {
          name: 'app',
          image: 'lab/app',
          startupProbe: { httpGet: { path: '/ready', port: 8080 }, periodSeconds: 0.1, failureThreshold: 50 },
          readinessProbe: {
            exec: { command: ['test', '-e', '/tmp/ready'] },
            periodSeconds: 0.1,
            failureThreshold: 1,
          },
        },
      ],
    });
    await eventually(() => ctr(rt1.status(id)).started, { what: 'startup probe passed' });
    expect(ctr(rt1.status(id)).ready).toBe(false);
    await rt1.exec(id, ['touch', '/tmp/ready']);
    await eventually(() => ready(rt1.status(id)), { what: 'exec readiness' });
    await rt1.killPod(id);
  });

  it('a liveness failure restarts the container', async () => {
    const id = uid('live');
    rt1.runPod(
      appPod(id, 'liveness', {
        terminationGracePeriodSeconds: 1,
        containers: [
          {
            name: 'app',
            image: 'lab/app',
            ports: [{ name: 'http', containerPort: 8080 }],
            readinessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 0.1 },
            livenessProbe: {
              httpGet: { path: '/ready', port: 8080 },
              initialDelaySeconds: 1,
              periodSeconds: 0.2,
              failureThreshold: 2,
            },
          },
        ],
      }),
    );
    await waitRunning(rt1, id);
    await rt1.exec(id, ['curl', '-sS', '-m', '5', 'http://127.0.0.1:8080/fail']);
    const s = await eventually(
      () => {
        const st = rt1.status(id);
        if (ctr(st).restartCount < 1 || !ctr(st).state.running) throw new Error(JSON.stringify(ctr(st)));
        return st;
      },
      { timeoutMs: 10_000, what: 'restart after liveness failure' },
    );
    expect(ctr(s).lastState.terminated).toBeDefined();
    // The new instance is healthy again (fresh process) and stays up.
    await new Promise((r) => setTimeout(r, 800));
    expect(ctr(rt1.status(id)).restartCount).toBe(1);
    await rt1.killPod(id);
  });
});
