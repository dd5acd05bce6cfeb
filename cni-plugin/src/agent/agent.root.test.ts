/**
 * Root tier, end to end on real namespaces: the agent in-process with the real rules engine (iptables),
 * a fake ztunnel on the real ZDS socket and Kubernetes objects from FakeKube.
 *
 *   client C (10.21.N.2) ── node H (10.21.N.1 | 10.22.N.1, forwards) ── pod P (10.22.N.2)
 *                                                                    └─ pod Q (10.22.N.3, dataplane-mode=none)
 *
 * H plays the node netns the agent runs in (HOST_NETNS), so the host probe SNAT lands there and nowhere
 * else. Checks: the fd ztunnel receives is P's netns; outbound TCP from P lands on the 15001 listener
 * (SO_ORIGINAL_DST = the real destination) unless marked 0x539; inbound from C lands on 15006; a node-local
 * connection from H (a kubelet probe) reaches the app from 169.254.7.127; release restores P exactly; an
 * agent restart re-sends the snapshot without duplicating rules; Q is never touched.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectInNetns, listenInNetns, netnsInode, originalDst } from '../../../pkg/netns/index.ts';
import { eventually } from '../../../pkg/testing/index.ts';
import { FakeKube, makePod, postPlugin } from '../testdata/fakes.ts';
import { FakeZtunnel, type PluginRun, runPluginBinary, silentLogger } from '../testdata/helpers.ts';
import { CniTestNetns, randomOctet, veth } from '../testdata/netns.ts';
import { IstioCniAgent } from './app.ts';
import { loadConfig } from './config.ts';

const N = randomOctet();
const C_IP = `10.21.${N}.2`;
const H_C_IP = `10.21.${N}.1`;
const H_IP = `10.22.${N}.1`;
const P_IP = `10.22.${N}.2`;
const Q_IP = `10.22.${N}.3`;

let C: CniTestNetns;
let H: CniTestNetns;
let P: CniTestNetns;
let Q: CniTestNetns;
let dir: string;
const servers: net.Server[] = [];
const ztunnels: FakeZtunnel[] = [];
const agents: IstioCniAgent[] = [];

beforeAll(() => {
  C = CniTestNetns.create();
  H = CniTestNetns.create();
  P = CniTestNetns.create();
  Q = CniTestNetns.create();
  veth(C, 'c0', H, 'hc');
  veth(H, 'hp', P, 'eth0');
  veth(H, 'hq', Q, 'eth0');
  C.ip('addr', 'add', `${C_IP}/24`, 'dev', 'c0');
  C.ip('route', 'add', 'default', 'via', H_C_IP);
  H.ip('addr', 'add', `${H_C_IP}/24`, 'dev', 'hc');
  H.ip('addr', 'add', `${H_IP}/32`, 'dev', 'hp');
  H.ip('route', 'add', `${P_IP}/32`, 'dev', 'hp');
  H.ip('addr', 'add', `${H_IP}/32`, 'dev', 'hq');
  H.ip('route', 'add', `${Q_IP}/32`, 'dev', 'hq');
  H.exec('sysctl', '-qw', 'net.ipv4.ip_forward=1');
  for (const [ns, ip] of [
    [P, P_IP],
    [Q, Q_IP],
  ] as const) {
    ns.ip('addr', 'add', `${ip}/32`, 'dev', 'eth0');
    ns.ip('route', 'add', `${H_IP}/32`, 'dev', 'eth0');
    ns.ip('route', 'add', 'default', 'via', H_IP, 'dev', 'eth0');
  }
  dir = mkdtempSync(join(tmpdir(), 'amb-t-cni-e2e-'));
});

afterAll(async () => {
  for (const z of ztunnels) z.close();
  for (const a of agents) await a.close({ cleanup: true }).catch(() => {});
  for (const s of servers) s.close();
  for (const ns of [C, H, P, Q]) ns?.delete();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** A listener in `ns` that reports each accepted connection's peer and original destination. */
async function listener(
  ns: CniTestNetns,
  port: number,
  mark?: number,
): Promise<{ next: () => Promise<{ remote: string; dst: string }> }> {
  const queue: Array<{ remote: string; dst: string }> = [];
  const waiters: Array<(v: { remote: string; dst: string }) => void> = [];
  const server = net.createServer((sock) => {
    let dst = '';
    try {
      const od = originalDst(sock);
      dst = `${od.address}:${od.port}`;
    } catch {
      dst = '(none)';
    }
    const v = { remote: sock.remoteAddress ?? '', dst };
    sock.end(`hello from ${port}\n`);
    const w = waiters.shift();
    if (w) w(v);
    else queue.push(v);
  });
  servers.push(server);
  await listenInNetns(server, {
    netns: ns.path,
    host: '0.0.0.0',
    port,
    ...(mark === undefined ? {} : { mark }),
  });
  return {
    next: () => {
      const v = queue.shift();
      return v
        ? Promise.resolve(v)
        : withTimeout(new Promise((r) => waiters.push(r)), 5_000, `a connection on ${port}`);
    },
  };
}

async function roundTrip(opts: Parameters<typeof connectInNetns>[0]): Promise<string> {
  const sock = await connectInNetns({ timeoutMs: 5_000, ...opts });
  return withTimeout(
    new Promise<string>((resolve, reject) => {
      let buf = '';
      sock.on('data', (d: Buffer) => {
        buf += d.toString();
      });
      sock.on('end', () => resolve(buf));
      sock.on('error', reject);
    }),
    5_000,
    'reply',
  );
}

const kube = new FakeKube();
kube.namespace('shop', { 'istio.io/dataplane-mode': 'ambient' });
kube.addPod(makePod('uid-p', 'shop', 'cart', { ip: P_IP, serviceAccount: 'cart' }));
kube.addPod(makePod('uid-q', 'shop', 'legacy', { ip: Q_IP, labels: { 'istio.io/dataplane-mode': 'none' } }));

async function startAgent(): Promise<{ agent: IstioCniAgent; socket: string; zdsPath: string }> {
  const config = loadConfig({
    NODE_NAME: 'node-a',
    CNI_AGENT_RUN_DIR: join(dir, 'run'),
    CNI_BIN_DIR: join(dir, 'bin'),
    ZTUNNEL_SOCKET: join(dir, 'ztunnel', 'ztunnel.sock'),
    READINESS_PORT: '0',
    MONITORING_PORT: '0',
    BIND_ADDRESS: '127.0.0.1',
    SKIP_CNI_INSTALL: 'true',
    HOST_NETNS: H.path,
    ADD_POD_WAIT: '1s',
  });
  const agent = await IstioCniAgent.create({ config, kube, logger: silentLogger() });
  agents.push(agent);
  await agent.run();
  return { agent, socket: config.pluginSocket, zdsPath: config.ztunnelSocket };
}

function cniAdd(uid: string, name: string, ns: CniTestNetns, ip: string) {
  return {
    containerId: `ctr-${uid}`,
    netns: ns.path,
    ifName: 'eth0',
    podName: name,
    podNamespace: 'shop',
    podUid: uid,
    ips: [`${ip}/32`],
    cniVersion: '1.0.0',
  };
}

describe('capture in real namespaces', () => {
  let pristineP = '';
  let pristineQ = '';
  let capturedP = '';
  let first: { agent: IstioCniAgent; socket: string; zdsPath: string };
  let z1: FakeZtunnel;

  it('captures the ambient pod and hands ztunnel its netns', async () => {
    pristineP = P.dump();
    pristineQ = Q.dump();
    first = await startAgent();
    z1 = FakeZtunnel.connect(first.zdsPath);
    ztunnels.push(z1);
    await eventually(() => z1.snapshots === 1, { what: 'first snapshot' });
    const r = await postPlugin(first.socket, '/cmdadd', cniAdd('uid-p', 'cart', P, P_IP));
    expect(r).toEqual({ status: 200, body: { captured: true, reason: 'namespace label' } });
    expect(z1.adds).toEqual([
      {
        uid: 'uid-p',
        name: 'cart',
        namespace: 'shop',
        serviceAccount: 'cart',
        netnsInode: netnsInode(P.path),
      },
    ]);
    expect(kube.annotation('uid-p')).toBe('enabled');
    const saved = P.exec('iptables-save');
    expect(saved).toContain(
      '-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001',
    );
    expect(saved).toContain(
      '-A ISTIO_PRERT ! -d 127.0.0.1/32 -p tcp -m tcp ! --dport 15008 -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15006',
    );
    expect(P.exec('ip', 'rule', 'show')).toContain('fwmark 0x111/0xfff lookup 100');
    capturedP = P.dump();
  });

  it('puts the probe SNAT for the pod IP in the node netns only', () => {
    const nat = H.exec('iptables-save', '-t', 'nat');
    expect(nat).toContain(
      `-A ISTIO_POSTRT -d ${P_IP}/32 -p tcp -m owner --socket-exists -j SNAT --to-source 169.254.7.127`,
    );
    expect(nat).not.toContain(Q_IP);
  });

  it('never touches a dataplane-mode=none pod', async () => {
    const r = await postPlugin(first.socket, '/cmdadd', cniAdd('uid-q', 'legacy', Q, Q_IP));
    expect(r.body).toMatchObject({ captured: false });
    await first.agent.controller.idle();
    expect(Q.dump()).toBe(pristineQ);
    expect(z1.adds.map((a) => a.uid)).not.toContain('uid-q');
    expect(kube.annotation('uid-q')).toBeNull();
  });

  it('redirects outbound TCP to 15001 (original destination kept), but not sockets marked 0x539', async () => {
    const outbound = await listener(P, 15001, 0x539);
    const upstream = await listener(H, 8080);
    expect(await roundTrip({ netns: P.path, host: H_IP, port: 8080 })).toBe('hello from 15001\n');
    expect((await outbound.next()).dst).toBe(`${H_IP}:8080`);
    expect(await roundTrip({ netns: P.path, host: H_IP, port: 8080, mark: 0x539 })).toBe('hello from 8080\n');
    expect((await upstream.next()).remote).toBe(P_IP);
    // Loopback inside the pod is never redirected.
    const local = await listener(P, 9090);
    expect(await roundTrip({ netns: P.path, host: '127.0.0.1', port: 9090 })).toBe('hello from 9090\n');
    await local.next();
  });

  it('redirects inbound TCP to 15006, but lets node-local probes through from 169.254.7.127', async () => {
    const inbound = await listener(P, 15006, 0x539);
    const app = await listener(P, 8081);
    expect(await roundTrip({ netns: C.path, host: P_IP, port: 8081 })).toBe('hello from 15006\n');
    expect(await inbound.next()).toEqual({ remote: C_IP, dst: `${P_IP}:8081` });
    expect(await roundTrip({ netns: H.path, host: P_IP, port: 8081 })).toBe('hello from 8081\n');
    expect((await app.next()).remote).toBe('169.254.7.127');
  });

  it('an agent restart re-sends the snapshot and does not duplicate rules', async () => {
    await first.agent.close({ cleanup: false });
    agents.splice(agents.indexOf(first.agent), 1);
    await eventually(() => z1.closed, { what: 'ztunnel sees the agent go' });
    expect(P.dump()).toBe(capturedP);
    const second = await startAgent();
    const z2 = FakeZtunnel.connect(second.zdsPath);
    ztunnels.push(z2);
    await eventually(() => z2.snapshots === 1, { what: 'snapshot from the restarted agent' });
    expect(z2.adds).toEqual([expect.objectContaining({ uid: 'uid-p', netnsInode: netnsInode(P.path) })]);
    await second.agent.controller.idle();
    expect(P.dump()).toBe(capturedP);
    first = second;
    z1 = z2;
  });

  it('releases the pod when the namespace label goes: the pod netns is exactly as before capture', async () => {
    kube.namespace('shop', {});
    await eventually(() => kube.annotation('uid-p') === null && z1.dels.includes('uid-p'), {
      what: 'release',
    });
    expect(P.dump()).toBe(pristineP);
    expect(H.exec('iptables-save', '-t', 'nat')).not.toContain(P_IP);
    expect(await roundTrip({ netns: C.path, host: P_IP, port: 8081 })).toBe('hello from 8081\n');
  });

  it('re-captures when labelled again (netns from the state file) and cleans the node on uninstall', async () => {
    kube.namespace('shop', { 'istio.io/dataplane-mode': 'ambient' });
    await eventually(() => kube.annotation('uid-p') === 'enabled', { what: 'capture of a running pod' });
    expect(P.dump()).toBe(capturedP);
    await first.agent.close({ cleanup: true });
    agents.splice(agents.indexOf(first.agent), 1);
    expect(H.exec('iptables-save', '-t', 'nat')).not.toContain('ISTIO_POSTRT -d');
    // In-pod rules stay on agent shutdown: the pod remains captured for the next agent.
    expect(P.dump()).toBe(capturedP);
  });
});

describe('a runtime-style CNI chain (ptp + host-local + installed istio-cni)', () => {
  /** Runs one plugin of the chain in the node netns H, like a container runtime on that node. */
  function execPlugin(binary: string, env: Record<string, string>, conf: unknown): Promise<PluginRun> {
    return runPluginBinary('nsenter', env, JSON.stringify(conf), 30_000, [`--net=${H.path}`, '--', binary]);
  }

  it('the agent installs itself last in the conflist; ADD through the chain captures the pod; DEL and uninstall clean up', async () => {
    const bin = join(dir, 'chain-bin');
    const netDir = join(dir, 'chain-net');
    mkdirSync(bin, { recursive: true });
    mkdirSync(netDir, { recursive: true });
    const subnet = `10.23.${N}.0/24`;
    const confFile = join(netDir, '10-ptp.conflist');
    writeFileSync(
      confFile,
      JSON.stringify({
        cniVersion: '1.0.0',
        name: 'amb-t-chain',
        plugins: [
          {
            type: 'ptp',
            ipMasq: false,
            ipam: {
              type: 'host-local',
              ranges: [[{ subnet }]],
              routes: [{ dst: '0.0.0.0/0' }],
              dataDir: join(dir, 'ipam'),
            },
          },
        ],
      }),
    );
    const config = loadConfig({
      NODE_NAME: 'node-a',
      CNI_AGENT_RUN_DIR: join(dir, 'run-chain'),
      ZTUNNEL_SOCKET: join(dir, 'ztunnel-chain', 'ztunnel.sock'),
      CNI_BIN_DIR: bin,
      CNI_NET_DIR: netDir,
      READINESS_PORT: '0',
      MONITORING_PORT: '0',
      BIND_ADDRESS: '127.0.0.1',
      HOST_NETNS: H.path,
      CLEANUP_ON_SHUTDOWN: 'always',
    });
    const agent = await IstioCniAgent.create({ config, kube, logger: silentLogger() });
    agents.push(agent);
    await agent.run();
    const z = FakeZtunnel.connect(config.ztunnelSocket);
    ztunnels.push(z);
    await eventually(() => z.snapshots === 1, { what: 'snapshot' });
    const list = JSON.parse(readFileSync(confFile, 'utf8')) as { plugins: Array<{ type: string }> };
    expect(list.plugins.map((p) => p.type)).toEqual(['ptp', 'istio-cni']);

    const R = CniTestNetns.create();
    kube.addPod(makePod('uid-r', 'shop', 'runner', { ip: null, serviceAccount: 'runner' }));
    const env = {
      CNI_CONTAINERID: 'ctr-runner',
      CNI_NETNS: R.path,
      CNI_IFNAME: 'eth0',
      CNI_PATH: `/usr/lib/cni:${bin}`,
      CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=runner;K8S_POD_UID=uid-r',
    };
    try {
      const plugins = list.plugins as Array<Record<string, unknown>>;
      let prev: unknown;
      for (const p of plugins) {
        const binary = p.type === 'istio-cni' ? join(bin, 'istio-cni') : `/usr/lib/cni/${String(p.type)}`;
        const conf = {
          cniVersion: '1.0.0',
          name: 'amb-t-chain',
          ...p,
          ...(prev ? { prevResult: prev } : {}),
        };
        const r = await execPlugin(binary, { ...env, CNI_COMMAND: 'ADD' }, conf);
        expect(r.code, `${String(p.type)}: ${r.stdout} ${r.stderr}`).toBe(0);
        const result = JSON.parse(r.stdout) as Record<string, unknown>;
        if (p.type === 'istio-cni') expect(result).toEqual(prev);
        prev = result;
      }
      const ip = ((prev as { ips: Array<{ address: string }> }).ips[0]?.address ?? '').split('/')[0]!;
      expect(ip.startsWith(`10.23.${N}.`)).toBe(true);
      expect(kube.annotation('uid-r')).toBe('enabled');
      expect(z.adds).toEqual([
        expect.objectContaining({ uid: 'uid-r', name: 'runner', netnsInode: netnsInode(R.path) }),
      ]);
      expect(R.exec('iptables-save', '-t', 'nat')).toContain('--to-ports 15001');
      expect(H.exec('iptables-save', '-t', 'nat')).toContain(`-A ISTIO_POSTRT -d ${ip}/32`);

      for (const p of [...plugins].reverse()) {
        const binary = p.type === 'istio-cni' ? join(bin, 'istio-cni') : `/usr/lib/cni/${String(p.type)}`;
        const r = await execPlugin(
          binary,
          { ...env, CNI_COMMAND: 'DEL' },
          { cniVersion: '1.0.0', name: 'amb-t-chain', ...p, prevResult: prev },
        );
        expect(r.code, `${String(p.type)} DEL: ${r.stdout} ${r.stderr}`).toBe(0);
      }
      expect(agent.state.get('uid-r')).toBeNull();
      kube.deletePod('uid-r');
      await eventually(() => z.dels.includes('uid-r'), { what: 'ztunnel del for the deleted pod' });
    } finally {
      R.delete();
    }
    await agent.close();
    agents.splice(agents.indexOf(agent), 1);
    expect(
      (JSON.parse(readFileSync(confFile, 'utf8')) as { plugins: Array<{ type: string }> }).plugins.map(
        (p) => p.type,
      ),
    ).toEqual(['ptp']);
    expect(existsSync(join(bin, 'istio-cni'))).toBe(false);
  });
});
