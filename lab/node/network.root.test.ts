/**
 * Root tier: the lab topology. A 2-node LabNetwork is built in lab-owned namespaces only (the machine's own
 * links, routes, rules and iptables are compared before/after), nodes reach each other, destroy() removes
 * everything and is idempotent, and cleanupLeftovers(prefix) cleans up after a lab whose owner was SIGKILLed.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { eventually } from '../../pkg/testing/index.ts';
import { cleanupLeftovers, LabNetwork, NetnsPortForward, readRegistry, run, runInNetns } from './index.ts';
import {
  leftovers,
  pidAlive,
  rootNetnsSnapshot,
  testBlock,
  testPrefix,
  testRoot,
} from './testdata/helpers.ts';

const ORPHAN = fileURLToPath(new URL('./testdata/orphan.ts', import.meta.url));
const cleanups: (() => Promise<unknown> | undefined)[] = [];

afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

describe('LabNetwork', () => {
  it('builds fabric + nodes in lab namespaces only, with host-gw routes, and destroys everything', async () => {
    const prefix = testPrefix();
    const root = testRoot();
    const block = testBlock();
    cleanups.push(() =>
      cleanupLeftovers(prefix, { root }).then(() => rmSync(root, { recursive: true, force: true })),
    );
    const before = rootNetnsSnapshot();
    const net = await LabNetwork.create({ prefix, root, nodes: 2, block });
    const [n0, n1] = [net.node(0), net.node(1)];

    expect(leftovers(prefix, root).netns.sort()).toEqual([
      `${prefix}fabric`,
      `${prefix}node-0`,
      `${prefix}node-1`,
    ]);
    expect(n0).toMatchObject({ name: 'node-0', ip: `10.${block}.0.10`, podCidr: `10.${block}.1.0/24` });
    expect(n1).toMatchObject({ name: 'node-1', ip: `10.${block}.0.11`, podCidr: `10.${block}.2.0/24` });
    const routes = (await runInNetns(n0.netns, 'ip', ['route'])).stdout;
    expect(routes).toContain(`default via 10.${block}.0.1 dev eth0`);
    expect(routes).toContain(`10.${block}.2.0/24 via 10.${block}.0.11 dev eth0`);
    expect(routes).toContain(`unreachable 10.${block}.1.0/24`);
    const fabricRoutes = (await runInNetns(net.fabric.netns, 'ip', ['route'])).stdout;
    expect(fabricRoutes).toContain(`10.${block}.1.0/24 via 10.${block}.0.10`);
    expect((await runInNetns(n1.netns, 'sysctl', ['-n', 'net.ipv4.ip_forward'])).stdout.trim()).toBe('1');

    const conflist = JSON.parse(readFileSync(n0.conflistFile, 'utf8')) as {
      cniVersion: string;
      plugins: { type: string; ipam?: { ranges: { subnet: string }[][]; dataDir: string } }[];
    };
    expect(conflist.cniVersion).toBe('1.0.0');
    expect(conflist.plugins.map((p) => p.type)).toEqual(['ptp', 'portmap']);
    expect(conflist.plugins[0]?.ipam?.ranges[0]?.[0]?.subnet).toBe(n0.podCidr);
    expect(conflist.plugins[0]?.ipam?.dataDir).toBeUndefined();
    expect(existsSync(`${n0.dirs.cniBin}/host-local`)).toBe(true);
    expect(n0.hostPath('/var/run/ztunnel')).toBe(`${root}/nodes/node-0/var/run/ztunnel`);
    expect(n1.hostPath('/var/run/ztunnel')).not.toBe(n0.hostPath('/var/run/ztunnel'));
    expect(n0.hostPath('/proc')).toBe('/proc');

    // Node-to-node TCP over the fabric: a listener in node-1, a client in node-0.
    const server = spawn(
      'nsenter',
      [
        `--net=${n1.netnsPath}`,
        '--',
        process.execPath,
        '-e',
        `require('http').createServer((q,s)=>s.end('node-1 says hi')).listen(7000,'${n1.ip}',()=>console.log('up'))`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    cleanups.push(() => {
      server.kill('SIGKILL');
      return undefined;
    });
    await new Promise((r) => server.stdout?.once('data', r));
    const r = await runInNetns(n0.netns, 'curl', ['-sS', '-m', '5', `http://${n1.ip}:7000/`]);
    expect(r.stdout).toBe('node-1 says hi');
    expect(rootNetnsSnapshot()).toBe(before);

    // A service of this process (machine netns, loopback) exposed on the API server address of the fabric.
    const upstream = http.createServer((q, s) => s.end(`upstream saw ${q.url}`));
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
    cleanups.push(() => {
      upstream.close();
      return undefined;
    });
    const fwd = await NetnsPortForward.start({
      netnsPath: net.fabric.netnsPath,
      listenHost: net.fabric.apiServerIp,
      listenPort: 6443,
      target: { host: '127.0.0.1', port: (upstream.address() as AddressInfo).port },
      root,
      prefix,
    });
    const viaFabric = await runInNetns(n1.netns, 'curl', [
      '-sS',
      '-m',
      '5',
      `http://${net.fabric.apiServerIp}:6443/x`,
    ]);
    expect(viaFabric.stdout).toBe('upstream saw /x');
    await fwd.close();
    upstream.close();
    expect(rootNetnsSnapshot()).toBe(before);

    const report = await net.destroy();
    expect(report.errors).toEqual([]);
    expect(report.netns.sort()).toEqual([`${prefix}fabric`, `${prefix}node-0`, `${prefix}node-1`]);
    await eventually(() => !pidAlive(server.pid ?? -1), { what: 'server in node netns killed' });
    expect(leftovers(prefix, root)).toEqual({ netns: [], mounts: [], files: [], processes: [] });
    expect(readRegistry(prefix)).toBeNull();
    expect(rootNetnsSnapshot()).toBe(before);
    const again = await net.destroy();
    expect(again.errors).toEqual([]);
    expect(again.netns).toEqual([]);
  });

  it('refuses an existing prefix unless replace is set; rejects bad prefixes', async () => {
    const prefix = testPrefix();
    const root = testRoot();
    cleanups.push(() =>
      cleanupLeftovers(prefix, { root }).then(() => rmSync(root, { recursive: true, force: true })),
    );
    const net = await LabNetwork.create({ prefix, root, nodes: 1, block: testBlock() });
    await expect(LabNetwork.create({ prefix, root, nodes: 1, block: testBlock() })).rejects.toMatchObject({
      code: 'MESH_ERR_LAB_NET_EXISTS',
    });
    const net2 = await LabNetwork.create({ prefix, root, nodes: 1, block: testBlock(), replace: true });
    await net2.destroy();
    await net.destroy();
    await expect(LabNetwork.create({ prefix: 'Bad_', root, nodes: 1, block: 5 })).rejects.toMatchObject({
      code: 'MESH_ERR_LAB_NET_INVALID',
    });
  });
});

describe('cleanupLeftovers', () => {
  it('removes namespaces, processes, mounts and files of a lab whose owner was SIGKILLed', async () => {
    const prefix = testPrefix();
    const root = testRoot();
    cleanups.push(() =>
      cleanupLeftovers(prefix, { root }).then(() => rmSync(root, { recursive: true, force: true })),
    );
    const before = rootNetnsSnapshot();
    const child: ChildProcess = spawn(process.execPath, [ORPHAN, prefix, root, String(testBlock())], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    cleanups.push(() => {
      child.kill('SIGKILL');
      return undefined;
    });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const line = await new Promise<string>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`orphan did not start: ${stderr}`)), 30_000);
      child.stdout?.once('data', (d: Buffer) => {
        clearTimeout(t);
        resolve(d.toString());
      });
    });
    const info = JSON.parse(line) as { ready: boolean; container: number; dns: number; stray: number };
    expect(info.ready).toBe(true);
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;

    // What a crash leaves: namespaces, directories, the stray process (the rest died with their owner).
    const left = leftovers(prefix, root);
    expect(left.netns.length).toBeGreaterThanOrEqual(4);
    expect(left.files.length).toBeGreaterThan(0);
    expect(pidAlive(info.stray)).toBe(true);
    await eventually(() => !pidAlive(info.container) && !pidAlive(info.dns), {
      what: 'container and DNS died with their owner (pdeathsig)',
    });

    const report = await cleanupLeftovers(prefix);
    expect(report.errors).toEqual([]);
    expect(report.killed).toContain(info.stray);
    expect(pidAlive(info.stray)).toBe(false);
    expect(leftovers(prefix, root)).toEqual({ netns: [], mounts: [], files: [], processes: [] });
    expect(readdirSync(root)).toEqual([]);
    expect(readRegistry(prefix)).toBeNull();
    expect(rootNetnsSnapshot()).toBe(before);
    expect((await run('ip', ['netns', 'list'])).stdout).not.toContain(prefix);
  });
});
