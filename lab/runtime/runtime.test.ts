/**
 * Unit tier for the pod runtime's pure parts and the CNI invoker (run without namespaces against a fake
 * plugin in a temp dir): phase computation, back-off, probe thresholds, capability sets, resolv.conf/hosts,
 * CRI logs, the prober's HTTP/TCP probes on loopback.
 */
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Backoff } from './backoff.ts';
import {
  addNetworkList,
  CniError,
  cniArgs,
  delNetworkList,
  loadNetworkList,
  pluginConfig,
  resultIpv4,
} from './cni.ts';
import { capabilitySet, DEFAULT_CAPABILITIES, setupScript } from './launch.ts';
import { CriLogWriter, readCriLog } from './logs.ts';
import { httpProbe, tcpProbe } from './prober-main.ts';
import { ProbeWorker, resolveProbeTiming } from './probes.ts';
import { buildPodStatus, type ContainerRecord, newContainerRecord, podPhase } from './status.ts';
import type { PodInput } from './types.ts';
import { etcHosts, resolvConf } from './volumes.ts';

const tmp = mkdtempSync(join(tmpdir(), 'lab-runtime-unit-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function rec(state: ContainerRecord['state'], exitCode?: number, last = false): ContainerRecord {
  const r = newContainerRecord('c', 'img', false, { readiness: false, startup: false });
  r.state = state;
  if (state === 'terminated' || last) {
    const t = {
      exitCode: exitCode ?? 0,
      reason: 'Completed' as const,
      startedAt: 'x',
      finishedAt: 'y',
      containerID: 'lab://1',
    };
    if (state === 'terminated') r.terminated = t;
    if (last) r.lastTerminated = t;
  }
  if (state === 'running') r.runningSince = new Date();
  return r;
}

describe('podPhase (kubelet getPhase)', () => {
  const cases: [string, 'Always' | 'OnFailure' | 'Never', ContainerRecord[], string][] = [
    ['waiting, never started', 'Always', [rec('waiting')], 'Pending'],
    ['running', 'Always', [rec('running')], 'Running'],
    ['crash loop (waiting with last state)', 'Always', [rec('waiting', 1, true)], 'Running'],
    ['one running one waiting', 'Always', [rec('running'), rec('waiting')], 'Pending'],
    ['all exited 0, Never', 'Never', [rec('terminated', 0)], 'Succeeded'],
    ['exited 1, Never', 'Never', [rec('terminated', 1)], 'Failed'],
    ['exited 1, OnFailure (restarting)', 'OnFailure', [rec('terminated', 1)], 'Running'],
    ['exited 0, OnFailure', 'OnFailure', [rec('terminated', 0)], 'Succeeded'],
    ['exited 0, Always (restarting)', 'Always', [rec('terminated', 0)], 'Running'],
  ];
  it.each(cases)('%s → %s', (_what, restartPolicy, containers, phase) => {
    expect(
      podPhase({
        restartPolicy,
        createdAt: new Date(),
        hostIP: '1.1.1.1',
        podIP: null,
        initialized: true,
        initFailed: false,
        initContainers: [],
        containers,
        transitions: new Map(),
      }),
    ).toBe(phase);
  });

  it('conditions: Ready false with the unready container names; transition times move only on change', () => {
    const c = rec('running');
    const view = {
      restartPolicy: 'Always' as const,
      createdAt: new Date('2024-01-01T00:00:00Z'),
      hostIP: '10.0.0.10',
      podIP: '10.0.1.5',
      initialized: true,
      initFailed: false,
      initContainers: [],
      containers: [c],
      transitions: new Map(),
    };
    const s1 = buildPodStatus(view);
    expect(s1.conditions.find((x) => x.type === 'Ready')).toMatchObject({
      status: 'False',
      reason: 'ContainersNotReady',
      message: 'containers with unready status: [c]',
      lastTransitionTime: '2024-01-01T00:00:00Z',
    });
    expect(s1.podIPs).toEqual([{ ip: '10.0.1.5' }]);
    c.ready = true;
    const s2 = buildPodStatus(view);
    expect(s2.conditions.find((x) => x.type === 'Ready')?.status).toBe('True');
    expect(s2.conditions.find((x) => x.type === 'Ready')?.lastTransitionTime).not.toBe(
      '2024-01-01T00:00:00Z',
    );
  });
});

describe('Backoff', () => {
  it('restarts at once, then doubles up to the cap; a long run resets it', () => {
    const b = new Backoff({ initialMs: 10_000, maxMs: 300_000 });
    expect([0, 1, 2, 3, 4, 5, 6, 7].map(() => b.next(1000))).toEqual([
      0, 10_000, 20_000, 40_000, 80_000, 160_000, 300_000, 300_000,
    ]);
    expect(b.next(700_000)).toBe(0);
  });
});

describe('ProbeWorker thresholds', () => {
  it('readiness needs successThreshold successes; failureThreshold failures flip it back', async () => {
    const results = [true, true, false, false, false, true, true];
    const seen: boolean[] = [];
    let i = 0;
    const w = new ProbeWorker({
      type: 'readiness',
      timing: { initialDelayMs: 0, periodMs: 5, timeoutMs: 5, successThreshold: 2, failureThreshold: 3 },
      run: async () => ({ ok: results[i++] ?? true, message: '' }),
      started: () => true,
      onResult: (ok) => seen.push(ok),
      containerStart: Date.now(),
    });
    w.start();
    await new Promise((r) => setTimeout(r, 150));
    w.stop();
    expect(seen.slice(0, 3)).toEqual([true, false, true]);
  });

  it('defaults as Kubernetes; liveness/startup use successThreshold 1', () => {
    expect(resolveProbeTiming('readiness', {})).toEqual({
      initialDelayMs: 0,
      periodMs: 10_000,
      timeoutMs: 1_000,
      successThreshold: 1,
      failureThreshold: 3,
    });
    expect(resolveProbeTiming('liveness', { successThreshold: 5, periodSeconds: 0.2 })).toMatchObject({
      successThreshold: 1,
      periodMs: 200,
    });
  });
});

describe('capabilities', () => {
  it('default set + add − drop; drop ALL keeps only adds; privileged is all', () => {
    expect(capabilitySet(undefined)).toEqual([...DEFAULT_CAPABILITIES]);
    expect(capabilitySet({ capabilities: { drop: ['ALL'], add: ['NET_ADMIN', 'CAP_SYS_ADMIN'] } })).toEqual([
      'net_admin',
      'sys_admin',
    ]);
    expect(capabilitySet({ capabilities: { drop: ['NET_RAW'] } })).not.toContain('net_raw');
    expect(capabilitySet({ privileged: true })).toBeNull();
    expect(() => capabilitySet({ capabilities: { add: ['FLY'] } })).toThrow(/unknown capability/);
  });

  it('the setup script quotes every value and ends by exec-ing chroot + setpriv', () => {
    const script = setupScript({
      dir: "/lab/it's",
      netnsPath: '/var/run/netns/x',
      hostname: 'pod',
      hostMounts: [],
      mounts: [{ source: '/src dir', target: '/etc/x', kind: 'dir', readOnly: true }],
      workingDir: '/',
      capabilities: ['net_admin'],
      argv: ['/bin/echo', "a'b"],
      env: {},
    });
    expect(script).toContain(`R='/lab/it'\\''s/rootfs'`);
    expect(script).toContain(`lab_mount '/src dir' '/etc/x' dir ro`);
    expect(script).toMatch(/exec \S+chroot "\$R" \S+setpriv --bounding-set=-all,\+net_admin -- /);
    expect(script).toContain(`'a'\\''b'`);
  });
});

describe('resolv.conf and /etc/hosts', () => {
  const pod: PodInput = { uid: 'u', namespace: 'shop', name: 'web-1', containers: [] };
  const dns = { clusterDnsIp: '10.1.0.2', clusterDomain: 'cluster.local' };
  it('ClusterFirst: cluster DNS, namespace search paths, ndots:5; dnsConfig merges', () => {
    expect(resolvConf(pod, '', dns)).toBe(
      'search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.1.0.2\noptions ndots:5\n',
    );
    const merged = resolvConf(
      {
        ...pod,
        dnsConfig: { searches: ['extra.local'], options: [{ name: 'ndots', value: '2' }, { name: 'edns0' }] },
      },
      '',
      dns,
    );
    expect(merged).toContain('cluster.local extra.local');
    expect(merged).toContain('options ndots:2 edns0');
  });
  it('hostNetwork + ClusterFirst falls back to the node resolv.conf; hosts maps the pod IP', () => {
    expect(resolvConf({ ...pod, hostNetwork: true }, 'nameserver 10.1.0.2\noptions ndots:1\n', dns)).toBe(
      'nameserver 10.1.0.2\noptions ndots:1\n',
    );
    const hosts = etcHosts(
      { ...pod, hostAliases: [{ ip: '1.2.3.4', hostnames: ['a', 'b'] }] },
      '10.1.1.5',
      '',
      'cluster.local',
    );
    expect(hosts).toContain('10.1.1.5\tweb-1\n');
    expect(hosts).toContain('1.2.3.4\ta\tb\n');
  });
});

describe('CRI logs', () => {
  it('one framed line per output line; partial lines joined; previous instance kept', async () => {
    const dir = join(tmp, 'logs');
    const w = new CriLogWriter(dir, 0);
    w.write('stdout', Buffer.from('hello\nwor'));
    w.write('stderr', Buffer.from('oops\n'));
    w.write('stdout', Buffer.from('ld\nno newline'));
    await w.close();
    const raw = readFileSync(w.file, 'utf8');
    expect(raw).toMatch(/^\d{4}-\d\d-\d\dT\S+Z stdout F hello$/m);
    expect(raw).toMatch(/ stderr F oops$/m);
    expect(readCriLog(w.file)).toBe('hello\noops\nworld\nno newline\n');
  });
});

describe('CNI invoker (no namespaces)', () => {
  const bin = join(tmp, 'bin');
  const conf = join(tmp, 'net.d');
  const cache = join(tmp, 'cache');
  const record = join(tmp, 'record.log');

  function setup(failDel = false): void {
    for (const d of [bin, conf]) {
      rmSync(d, { recursive: true, force: true });
      mkdirSync(d, { recursive: true });
    }
    const mk = (name: string, body: string) => {
      writeFileSync(join(bin, name), `#!/bin/sh\n${body}\n`);
      chmodSync(join(bin, name), 0o755);
    };
    mk(
      'first',
      `cat > /dev/null; echo "first $CNI_COMMAND $CNI_ARGS" >> ${record}; [ "$CNI_COMMAND" = ADD ] && echo '{"cniVersion":"1.0.0","ips":[{"address":"10.9.1.7/24"}]}'; exit 0`,
    );
    mk(
      'second',
      `in=$(cat); echo "second $CNI_COMMAND $in" >> ${record}; ${failDel ? '[ "$CNI_COMMAND" = DEL ] && { echo \'{"code":7,"msg":"bad","details":"d"}\'; exit 1; };' : ''} [ "$CNI_COMMAND" = ADD ] && echo '{"cniVersion":"1.0.0","ips":[{"address":"10.9.1.7/24"}],"second":true}'; exit 0`,
    );
    writeFileSync(
      join(conf, '20-b.conflist'),
      JSON.stringify({
        cniVersion: '1.0.0',
        name: 'net',
        plugins: [{ type: 'first' }, { type: 'second', k: 1 }],
      }),
    );
    writeFileSync(join(conf, '10-a.conflist'), '{ not json');
    rmSync(record, { force: true });
  }

  const rt = {
    containerId: 'abc',
    netns: '/var/run/netns/none',
    ifName: 'eth0',
    args: [
      ['IgnoreUnknown', '1'],
      ['K8S_POD_NAME', 'p'],
    ] as [string, string][],
  };

  it('loads the first valid conflist, chains prevResult, runs DEL in reverse with the cached result', async () => {
    setup();
    const list = loadNetworkList(conf);
    expect(list.file.endsWith('20-b.conflist')).toBe(true);
    const result = await addNetworkList(list, rt, { binDirs: [bin], cacheDir: cache, timeoutMs: 5_000 });
    expect(result.second).toBe(true);
    expect(resultIpv4(result)).toBe('10.9.1.7');
    const errors = await delNetworkList(list, rt, { binDirs: [bin], cacheDir: cache, timeoutMs: 5_000 });
    expect(errors).toEqual([]);
    const lines = readFileSync(record, 'utf8').trim().split('\n');
    expect(lines[0]).toBe('first ADD IgnoreUnknown=1;K8S_POD_NAME=p');
    const secondAdd = JSON.parse(lines[1]?.replace(/^second ADD /, '') ?? '{}') as Record<string, unknown>;
    expect(secondAdd).toMatchObject({ name: 'net', cniVersion: '1.0.0', type: 'second', k: 1 });
    expect(secondAdd.prevResult).toEqual({ cniVersion: '1.0.0', ips: [{ address: '10.9.1.7/24' }] });
    expect(lines[2]).toMatch(/^second DEL .*"second":true/);
    expect(lines[3]).toMatch(/^first DEL/);
  });

  it('surfaces CNI error JSON as CniError and keeps going on DEL', async () => {
    setup(true);
    const list = loadNetworkList(conf);
    await addNetworkList(list, rt, { binDirs: [bin], cacheDir: cache });
    const errors = await delNetworkList(list, rt, { binDirs: [bin], cacheDir: cache });
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(CniError);
    expect(errors[0]).toMatchObject({
      cniCode: 7,
      cniMsg: 'bad',
      cniDetails: 'd',
      plugin: 'second',
      command: 'DEL',
    });
    expect(readFileSync(record, 'utf8')).toMatch(/first DEL/);
    await expect(
      addNetworkList({ ...list, plugins: [{ type: 'missing' }] }, rt, { binDirs: [bin], cacheDir: cache }),
    ).rejects.toMatchObject({ code: 'MESH_ERR_LAB_CNI_CONFIG' });
  });

  it('pluginConfig injects runtimeConfig only for declared capabilities; CNI_ARGS format', () => {
    const list = { file: '', name: 'n', cniVersion: '1.0.0', disableCheck: false, plugins: [] };
    const c = pluginConfig(list, { type: 'portmap', capabilities: { portMappings: true } }, null, {
      ...rt,
      capabilityArgs: { portMappings: [{ hostPort: 80 }], bandwidth: {} },
    });
    expect(c.runtimeConfig).toEqual({ portMappings: [{ hostPort: 80 }] });
    expect(cniArgs([['A', '1']])).toBe('A=1');
  });
});

describe('prober probes (loopback)', () => {
  it('HTTP: 2xx/3xx success, 5xx failure, headers sent, redirect followed on the same host', async () => {
    const seen: Record<string, string | undefined>[] = [];
    const server = http.createServer((req, res) => {
      seen.push({
        url: req.url,
        ua: req.headers['user-agent'],
        x: req.headers['x-probe'] as string | undefined,
      });
      if (req.url === '/bad') res.statusCode = 503;
      if (req.url === '/moved') {
        res.statusCode = 302;
        res.setHeader('location', '/ok');
      }
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as AddressInfo).port;
    const base = {
      id: 1,
      kind: 'http' as const,
      scheme: 'HTTP' as const,
      host: '127.0.0.1',
      port,
      timeoutMs: 1000,
    };
    expect((await httpProbe({ ...base, path: '/ok', headers: [{ name: 'X-Probe', value: 'yes' }] })).ok).toBe(
      true,
    );
    expect(await httpProbe({ ...base, path: '/bad', headers: [] })).toMatchObject({
      ok: false,
      message: 'HTTP probe failed with statuscode: 503',
    });
    expect((await httpProbe({ ...base, path: '/moved', headers: [] })).ok).toBe(true);
    expect(seen[0]).toEqual({ url: '/ok', ua: 'kube-probe/1.31', x: 'yes' });
    expect(seen.map((s) => s.url)).toEqual(['/ok', '/bad', '/moved', '/ok']);
    expect((await tcpProbe({ id: 2, kind: 'tcp', host: '127.0.0.1', port, timeoutMs: 1000 })).ok).toBe(true);
    server.close();
    await new Promise((r) => setTimeout(r, 20));
    expect((await tcpProbe({ id: 3, kind: 'tcp', host: '127.0.0.1', port, timeoutMs: 1000 })).ok).toBe(false);
  });
});
