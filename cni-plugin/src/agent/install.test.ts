/**
 * Installer: wrapper + plugin files, conflist insertion (last, once, others untouched), idempotence,
 * single-plugin configs, drift detection and repair, uninstall.
 */
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { eventually } from '../../../pkg/testing/index.ts';
import { silentLogger } from '../testdata/helpers.ts';
import { Installer, insertPlugin, pluginEntry, wrapperScript } from './install.ts';

let dir: string;
let bin: string;
let net: string;
let installer: Installer;

const BRIDGE = {
  cniVersion: '1.0.0',
  name: 'k8s-pod-network',
  plugins: [
    { type: 'bridge', bridge: 'cni0', ipam: { type: 'host-local', ranges: [[{ subnet: '10.244.1.0/24' }]] } },
    { type: 'portmap', capabilities: { portMappings: true } },
  ],
};

function make(): Installer {
  return new Installer({
    binDir: bin,
    netDir: net,
    confName: null,
    nodePath: '/usr/local/bin/node 24',
    installNodeBinary: false,
    runDirOnHost: '/var/run/istio-cni',
    excludeNamespaces: ['kube-system', 'istio-system'],
    podNamespace: 'istio-system',
    logLevel: 'info',
    logger: silentLogger(),
  });
}

function readJson(path: string): { plugins: Array<Record<string, unknown>> } & Record<string, unknown> {
  return JSON.parse(readFileSync(path, 'utf8')) as { plugins: Array<Record<string, unknown>> };
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'amb-t-cni-install-'));
  bin = join(dir, 'bin');
  net = join(dir, 'net');
  mkdirSync(bin);
  mkdirSync(net);
  installer = make();
});

afterEach(() => {
  installer.stopWatching();
  rmSync(dir, { recursive: true, force: true });
});

describe('install', () => {
  it('appends istio-cni as the last plugin of the first config by name, keeping the others intact', async () => {
    writeFileSync(join(net, '10-bridge.conflist'), JSON.stringify(BRIDGE));
    writeFileSync(join(net, '99-other.conflist'), JSON.stringify({ ...BRIDGE, name: 'other' }));
    const r = await installer.install();
    expect(r.confPath).toBe(join(net, '10-bridge.conflist'));
    const doc = readJson(r.confPath);
    expect(doc.plugins.slice(0, 2)).toEqual(BRIDGE.plugins);
    expect(doc.plugins[2]).toEqual({
      type: 'istio-cni',
      plugin_log_level: 'info',
      cni_agent_run_dir: '/var/run/istio-cni',
      ambient_enabled: true,
      exclude_namespaces: ['kube-system', 'istio-system'],
      pod_namespace: 'istio-system',
    });
    expect(doc.name).toBe('k8s-pod-network');
    expect(readJson(join(net, '99-other.conflist')).plugins).toHaveLength(2);
    const wrapper = join(bin, 'istio-cni');
    expect(statSync(wrapper).mode & 0o111).not.toBe(0);
    expect(readFileSync(wrapper, 'utf8')).toContain(
      `exec '/usr/local/bin/node 24' "$dir/istio-cni.d/plugin.mjs" "$@"`,
    );
    for (const f of ['plugin.mjs', 'plugin/cni.mjs', 'plugin/io.mjs', 'protocol.mjs']) {
      expect(existsSync(join(bin, 'istio-cni.d', f)), f).toBe(true);
    }
    expect(readFileSync(join(bin, 'istio-cni.d', 'plugin.mjs'), 'utf8')).toContain("from './plugin/cni.mjs'");
    expect(await installer.check()).toBeNull();
  });

  it('is idempotent: a second install writes nothing; a stale entry in the middle is moved to the end', async () => {
    writeFileSync(
      join(net, '10-bridge.conflist'),
      JSON.stringify({
        ...BRIDGE,
        plugins: [BRIDGE.plugins[0], { type: 'istio-cni', old: true }, BRIDGE.plugins[1]],
      }),
    );
    await installer.install();
    const second = await make().install();
    expect(second.written).toEqual([]);
    const doc = readJson(join(net, '10-bridge.conflist'));
    expect(doc.plugins.map((p) => p.type)).toEqual(['bridge', 'portmap', 'istio-cni']);
  });

  it('turns a single-plugin .conf into a .conflist', async () => {
    const { plugins, ...rest } = BRIDGE;
    writeFileSync(join(net, '05-bridge.conf'), JSON.stringify({ ...rest, ...plugins[0] }));
    const r = await installer.install();
    expect(r.confPath).toBe(join(net, '05-bridge.conflist'));
    expect(existsSync(join(net, '05-bridge.conf'))).toBe(false);
    const doc = readJson(r.confPath);
    expect(doc).toMatchObject({ cniVersion: '1.0.0', name: 'k8s-pod-network' });
    expect(doc.plugins.map((p) => p.type)).toEqual(['bridge', 'istio-cni']);
  });

  it('fails clearly while no CNI config exists', async () => {
    await expect(installer.install()).rejects.toMatchObject({ code: 'MESH_ERR_CNI_INSTALL' });
  });

  it('rejects a config that is not a CNI config', () => {
    expect(() =>
      insertPlugin(
        'x',
        '[]',
        pluginEntry({ runDirOnHost: '/r', excludeNamespaces: [], podNamespace: 'n', logLevel: 'info' }),
      ),
    ).toThrow(/not a JSON object/);
  });

  it('quotes the node path in the wrapper, or uses the copied node binary', () => {
    expect(wrapperScript("/opt/it's/node")).toContain(
      `exec '/opt/it'\\''s/node' "$dir/istio-cni.d/plugin.mjs" "$@"`,
    );
    expect(wrapperScript(null)).toContain('exec "$dir/istio-cni.d/node" "$dir/istio-cni.d/plugin.mjs" "$@"');
  });

  it('copies the Node binary next to the plugin when asked (nodes without the agent image)', async () => {
    writeFileSync(join(net, '10-bridge.conflist'), JSON.stringify(BRIDGE));
    const copying = new Installer({
      binDir: bin,
      netDir: net,
      confName: null,
      nodePath: process.execPath,
      installNodeBinary: true,
      runDirOnHost: '/var/run/istio-cni',
      excludeNamespaces: [],
      podNamespace: 'istio-system',
      logLevel: 'info',
      logger: silentLogger(),
    });
    await copying.install();
    expect(statSync(join(bin, 'istio-cni.d', 'node')).size).toBe(statSync(process.execPath).size);
    expect((await copying.install()).written).toEqual([]);
  });
});

describe('drift', () => {
  it('detects a removed entry, a deleted wrapper and a preempting config, and watch() repairs them', async () => {
    const conf = join(net, '10-bridge.conflist');
    writeFileSync(conf, JSON.stringify(BRIDGE));
    await installer.install();
    writeFileSync(conf, JSON.stringify(BRIDGE)); // the primary CNI rewrote its config
    expect(await installer.check()).toMatch(/istio-cni entry/);
    await installer.install();
    unlinkSync(join(bin, 'istio-cni'));
    expect(await installer.check()).toMatch(/missing or changed/);
    await installer.install();
    writeFileSync(join(net, '00-new.conflist'), JSON.stringify({ ...BRIDGE, name: 'new' }));
    expect(await installer.check()).toMatch(/preempted/);
    unlinkSync(join(net, '00-new.conflist'));

    const drifts: string[] = [];
    installer.watch(60_000, (reason) => {
      drifts.push(reason);
      installer.install().catch(() => {});
    });
    writeFileSync(conf, JSON.stringify(BRIDGE));
    await eventually(async () => (await installer.check()) === null && drifts.length > 0, {
      what: 'watch repairs the conflist',
      timeoutMs: 5_000,
    });
    expect(readJson(conf).plugins.at(-1)?.type).toBe('istio-cni');
  });

  it('the periodic check catches drift without fs events', async () => {
    writeFileSync(join(net, '10-bridge.conflist'), JSON.stringify(BRIDGE));
    await installer.install();
    const drifts: string[] = [];
    installer.watch(100, (reason) => drifts.push(reason));
    installer.stopWatching();
    installer.watch(100, (reason) => drifts.push(reason));
    unlinkSync(join(bin, 'istio-cni.d', 'protocol.mjs'));
    await eventually(() => drifts.length > 0, { what: 'periodic check', timeoutMs: 3_000 });
  });
});

describe('uninstall', () => {
  it('removes only our entry and our files', async () => {
    const conf = join(net, '10-bridge.conflist');
    writeFileSync(conf, JSON.stringify(BRIDGE));
    await installer.install();
    await installer.uninstall();
    expect(readJson(conf)).toEqual(BRIDGE);
    expect(existsSync(join(bin, 'istio-cni'))).toBe(false);
    expect(existsSync(join(bin, 'istio-cni.d'))).toBe(false);
    await installer.uninstall(); // idempotent
  });
});
