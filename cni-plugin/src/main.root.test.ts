/**
 * Root tier: the DaemonSet entry point (`main.ts`) as a process, configured only through env like the
 * manifest does, against the lab API server: it installs itself into the CNI config, becomes ready on
 * /readyz, serves metrics, and on SIGTERM drains, uninstalls (no DaemonSet = not an upgrade) and exits 0.
 * Host rules go to a throwaway netns (HOST_NETNS), never to this machine's namespace.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { ApiServer } from '../../lab/apiserver/index.ts';
import { eventually } from '../../pkg/testing/index.ts';
import { CniTestNetns } from './testdata/netns.ts';

const MAIN = fileURLToPath(new URL('./main.ts', import.meta.url));

let child: ChildProcess | null = null;
let api: ApiServer | null = null;
let host: CniTestNetns | null = null;
let dir = '';

afterAll(async () => {
  if (child && child.exitCode === null) child.kill('SIGKILL');
  await api?.close();
  host?.delete();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('istio-cni-node entry point', () => {
  it('installs, becomes ready, and uninstalls on SIGTERM', async () => {
    dir = mkdtempSync(join(tmpdir(), 'amb-t-cni-main-'));
    api = await ApiServer.create({ dataDir: join(dir, 'api'), authorization: 'AlwaysAllow' });
    host = CniTestNetns.create();
    const bin = join(dir, 'bin');
    const net = join(dir, 'net');
    mkdirSync(bin);
    mkdirSync(net);
    const conf = join(net, '10-bridge.conflist');
    const original = { cniVersion: '1.0.0', name: 'k8s', plugins: [{ type: 'bridge' }] };
    writeFileSync(conf, JSON.stringify(original));
    let stdout = '';
    child = spawn(process.execPath, [MAIN], {
      env: {
        PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
        KUBECONFIG: api.kubeconfigPath,
        NODE_NAME: 'node-a',
        POD_NAME: 'istio-cni-node-abcde',
        POD_NAMESPACE: 'istio-system',
        CNI_BIN_DIR: bin,
        CNI_NET_DIR: net,
        CNI_AGENT_RUN_DIR: join(dir, 'run'),
        ZTUNNEL_SOCKET: join(dir, 'ztunnel', 'ztunnel.sock'),
        HOST_NETNS: host.path,
        READINESS_PORT: '0',
        MONITORING_PORT: '0',
        BIND_ADDRESS: '127.0.0.1',
        TERMINATION_DRAIN_DURATION: '3s',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout?.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr?.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)));
    const ready = await eventually(
      () => {
        const line = stdout.split('\n').find((l) => l.includes('istio-cni agent ready'));
        if (!line) throw new Error(`not ready yet; output so far:\n${stdout}`);
        return JSON.parse(line) as { readiness: number; monitoring: number };
      },
      { what: 'agent ready', timeoutMs: 30_000, intervalMs: 100 },
    );
    expect((await fetch(`http://127.0.0.1:${ready.readiness}/readyz`)).status).toBe(200);
    expect(await (await fetch(`http://127.0.0.1:${ready.monitoring}/metrics`)).text()).toContain(
      'istio_cni_install_ready{component="istio-cni"} 1',
    );
    const installed = JSON.parse(readFileSync(conf, 'utf8')) as { plugins: Array<{ type: string }> };
    expect(installed.plugins.map((p) => p.type)).toEqual(['bridge', 'istio-cni']);
    expect(host.exec('iptables-save', '-t', 'nat')).toContain('-A POSTROUTING -j ISTIO_POSTRT');

    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(JSON.parse(readFileSync(conf, 'utf8'))).toEqual(original);
    expect(host.exec('iptables-save', '-t', 'nat')).not.toContain('ISTIO_POSTRT');
  });
});
