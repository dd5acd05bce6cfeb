/**
 * The agent in-process with injected Kubernetes objects (FakeKube) and a recording rules engine, the real
 * ZDS server (SOCK_SEQPACKET in a temp dir) with a fake ztunnel client, and the real plugin socket. Runs as
 * any user: the "pod netns" of every pod is this process's own (`/proc/self/ns/net`), which is what the fake
 * ztunnel checks the received fds against. Rule programming in real namespaces: agent.root.test.ts.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { netnsInode } from '../../../pkg/netns/index.ts';
import { eventually } from '../../../pkg/testing/index.ts';
import { encodeMessage, WorkloadResponse } from '../../../pkg/xds/index.ts';
import { FakeKube, FakeRules, makePod, postPlugin } from '../testdata/fakes.ts';
import { FakeZtunnel, silentLogger } from '../testdata/helpers.ts';
import { type AmbientPolicy, ambientDecision, type NamespaceLike, type PodLike } from './ambient.ts';
import { IstioCniAgent } from './app.ts';
import { loadConfig } from './config.ts';

const SELF_NETNS = '/proc/self/ns/net';

/** Sum of a counter's series whose labels contain `labelPart`. */
function counterSum(text: string, name: string, labelPart: string): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}{`) && line.includes(labelPart)) sum += Number(line.split(' ').at(-1));
  }
  return sum;
}
const SELF_INODE = netnsInode(SELF_NETNS);

let dir: string;
let agents: IstioCniAgent[] = [];
let ztunnels: FakeZtunnel[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'amb-t-cni-agent-'));
});

afterEach(async () => {
  for (const z of ztunnels) z.close();
  for (const a of agents) await a.close({ cleanup: false });
  agents = [];
  ztunnels = [];
  rmSync(dir, { recursive: true, force: true });
});

interface Harness {
  agent: IstioCniAgent;
  kube: FakeKube;
  rules: FakeRules;
  socket: string;
  zdsPath: string;
}

async function start(
  kube: FakeKube,
  env: Record<string, string> = {},
  rules = new FakeRules(),
): Promise<Harness> {
  const config = loadConfig({
    NODE_NAME: 'node-a',
    CNI_AGENT_RUN_DIR: join(dir, 'run'),
    CNI_BIN_DIR: join(dir, 'bin'),
    ZTUNNEL_SOCKET: join(dir, 'ztunnel', 'ztunnel.sock'),
    READINESS_PORT: '0',
    MONITORING_PORT: '0',
    BIND_ADDRESS: '127.0.0.1',
    SKIP_CNI_INSTALL: 'true',
    ADD_POD_WAIT: '1s',
    ZTUNNEL_ACK_TIMEOUT: '2s',
    ...env,
  });
  const agent = await IstioCniAgent.create({ config, kube, rules, logger: silentLogger() });
  agents.push(agent);
  await agent.run();
  return {
    agent,
    kube,
    rules,
    socket: config.pluginSocket,
    zdsPath: config.ztunnelSocket,
  };
}

function ztunnel(h: Harness): FakeZtunnel {
  const z = FakeZtunnel.connect(h.zdsPath);
  ztunnels.push(z);
  return z;
}

function addEvent(uid: string, namespace: string, name: string, extra: Record<string, unknown> = {}) {
  return {
    containerId: `ctr-${uid}`,
    netns: SELF_NETNS,
    ifName: 'eth0',
    podName: name,
    podNamespace: namespace,
    podUid: uid,
    ips: ['10.244.1.5/24'],
    cniVersion: '1.0.0',
    ...extra,
  };
}

function clusterWith(...pods: ReturnType<typeof makePod>[]): FakeKube {
  const kube = new FakeKube();
  kube.namespace('shop', { 'istio.io/dataplane-mode': 'ambient' });
  kube.namespace('plain', {});
  kube.namespace('kube-system', {});
  for (const p of pods) kube.addPod(p);
  return kube;
}

describe('ambient decision', () => {
  const policy: AmbientPolicy = { excludedNamespaces: new Set(['kube-system', 'istio-system']) };
  const ambientNs: NamespaceLike = {
    metadata: { name: 'shop', labels: { 'istio.io/dataplane-mode': 'ambient' } },
  };
  const plainNs: NamespaceLike = { metadata: { name: 'shop', labels: {} } };
  const cases: Array<[string, PodLike, NamespaceLike, boolean, boolean]> = [
    ['namespace label', makePod('u', 'shop', 'a'), ambientNs, true, true],
    [
      'pod label',
      makePod('u', 'shop', 'a', { labels: { 'istio.io/dataplane-mode': 'ambient' } }),
      plainNs,
      true,
      true,
    ],
    ['no label', makePod('u', 'shop', 'a'), plainNs, true, false],
    [
      'pod opts out',
      makePod('u', 'shop', 'a', { labels: { 'istio.io/dataplane-mode': 'none' } }),
      ambientNs,
      true,
      false,
    ],
    ['hostNetwork', makePod('u', 'shop', 'a', { hostNetwork: true }), ambientNs, true, false],
    [
      'excluded namespace',
      makePod('u', 'kube-system', 'a'),
      { metadata: { name: 'kube-system', labels: { 'istio.io/dataplane-mode': 'ambient' } } },
      true,
      false,
    ],
    ['no IP yet', makePod('u', 'shop', 'a', { ip: null }), ambientNs, true, false],
    ['no IP yet, plugin path', makePod('u', 'shop', 'a', { ip: null }), ambientNs, false, true],
    ['terminated', makePod('u', 'shop', 'a', { phase: 'Succeeded' }), ambientNs, true, false],
    [
      'sidecar',
      makePod('u', 'shop', 'a', { annotations: { 'sidecar.istio.io/status': '{}' } }),
      ambientNs,
      true,
      false,
    ],
  ];
  for (const [name, pod, ns, requireIp, want] of cases) {
    it(name, () => {
      expect(ambientDecision(pod, ns, policy, requireIp).ambient).toBe(want);
    });
  }
});

describe('plugin ADD', () => {
  it('captures an ambient pod: rules, ztunnel add with the netns fd, annotation, state, host probe SNAT', async () => {
    const h = await start(clusterWith(makePod('uid-1', 'shop', 'cart', { serviceAccount: 'cart-sa' })));
    const z = ztunnel(h);
    await eventually(() => z.snapshots === 1, { what: 'snapshot' });
    const r = await postPlugin(h.socket, '/cmdadd', addEvent('uid-1', 'shop', 'cart'));
    expect(r).toEqual({ status: 200, body: { captured: true, reason: 'namespace label' } });
    expect(z.adds).toEqual([
      { uid: 'uid-1', name: 'cart', namespace: 'shop', serviceAccount: 'cart-sa', netnsInode: SELF_INODE },
    ]);
    expect(h.kube.annotation('uid-1')).toBe('enabled');
    expect(h.rules.applies()).toHaveLength(1);
    expect(h.rules.applies()[0]!.opts).toEqual({ families: [4], dnsCapture: false, bypassInbound: false });
    expect(h.rules.hostSyncs.at(-1)).toEqual({ v4: ['10.244.1.5'], v6: [] });
    const state = JSON.parse(readFileSync(join(dir, 'run', 'pods', 'uid-1.json'), 'utf8')) as Record<
      string,
      unknown
    >;
    expect(state).toMatchObject({ uid: 'uid-1', netns: SELF_NETNS, containerId: 'ctr-uid-1' });
    expect(state.capture).not.toBeNull();
  });

  it('skips a non-ambient pod but remembers its netns', async () => {
    const h = await start(clusterWith(makePod('uid-2', 'plain', 'web')));
    const r = await postPlugin(h.socket, '/cmdadd', addEvent('uid-2', 'plain', 'web'));
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ captured: false });
    expect(h.rules.calls).toHaveLength(0);
    expect(existsSync(join(dir, 'run', 'pods', 'uid-2.json'))).toBe(true);
  });

  it('never touches a dataplane-mode=none pod in an ambient namespace', async () => {
    const h = await start(
      clusterWith(makePod('uid-3', 'shop', 'legacy', { labels: { 'istio.io/dataplane-mode': 'none' } })),
    );
    const z = ztunnel(h);
    const r = await postPlugin(h.socket, '/cmdadd', addEvent('uid-3', 'shop', 'legacy'));
    expect(r.body).toMatchObject({ captured: false, reason: expect.stringContaining('none') });
    await h.agent.controller.idle();
    expect(h.rules.calls).toHaveLength(0);
    expect(z.adds).toHaveLength(0);
    expect(h.kube.patches).toHaveLength(0);
  });

  it('answers 503 (try again) and annotates pending when no ztunnel is connected; a ztunnel that connects later gets the pod', async () => {
    const h = await start(clusterWith(makePod('uid-4', 'shop', 'cart')));
    const r = await postPlugin(h.socket, '/cmdadd', addEvent('uid-4', 'shop', 'cart'));
    expect(r.status).toBe(503);
    expect(r.body).toMatchObject({ retryable: true, error: expect.stringContaining('no ztunnel connected') });
    expect(h.kube.annotation('uid-4')).toBe('pending');
    expect(h.rules.applies()).toHaveLength(1); // rules stay in place: the pod is held, not half-open
    const z = ztunnel(h);
    await eventually(() => h.kube.annotation('uid-4') === 'enabled', {
      what: 'retry after ztunnel connected',
    });
    expect(z.adds[0]).toMatchObject({ uid: 'uid-4', netnsInode: SELF_INODE });
  });

  it('waits for the informer to learn about a brand-new pod, and 503s if it never does', async () => {
    const h = await start(clusterWith());
    ztunnel(h);
    const pending = postPlugin(h.socket, '/cmdadd', addEvent('uid-5', 'shop', 'late'));
    setTimeout(() => h.kube.addPod(makePod('uid-5', 'shop', 'late', { ip: null })), 100);
    expect(await pending).toMatchObject({ status: 200, body: { captured: true } });
    const r = await postPlugin(h.socket, '/cmdadd', addEvent('uid-6', 'shop', 'ghost'));
    expect(r.status).toBe(503);
  });

  it('reports rule failures as non-retryable and does not annotate', async () => {
    const rules = new FakeRules();
    rules.failApply = true;
    const h = await start(clusterWith(makePod('uid-7', 'shop', 'cart')), {}, rules);
    ztunnel(h);
    const r = await postPlugin(h.socket, '/cmdadd', addEvent('uid-7', 'shop', 'cart'));
    expect(r.status).toBe(500);
    expect(r.body).toMatchObject({ retryable: false, error: expect.stringContaining('iptables-restore') });
    expect(h.kube.patches).toHaveLength(0);
  });

  it('rejects malformed requests with 400 and counts them', async () => {
    const h = await start(clusterWith());
    expect((await postPlugin(h.socket, '/cmdadd', '{nope')).status).toBe(400);
    expect((await postPlugin(h.socket, '/cmdadd', { containerId: 'x' })).status).toBe(400);
    expect((await postPlugin(h.socket, '/cmdadd', addEvent('../../etc', 'shop', 'x'))).status).toBe(500);
    expect((await postPlugin(h.socket, '/frob', {})).status).toBe(404);
    const text = await h.agent.registry.metrics();
    expect(counterSum(text, 'istio_cni_rejected_input_total', 'source="plugin"')).toBe(3);
  });

  it('DEL forgets the sandbox', async () => {
    const h = await start(clusterWith(makePod('uid-8', 'plain', 'web')));
    await postPlugin(h.socket, '/cmdadd', addEvent('uid-8', 'plain', 'web'));
    expect(h.agent.state.get('uid-8')).not.toBeNull();
    const r = await postPlugin(h.socket, '/cmddel', {
      containerId: 'ctr-uid-8',
      netns: null,
      podName: 'web',
      podNamespace: 'plain',
      podUid: 'uid-8',
    });
    expect(r.status).toBe(200);
    expect(h.agent.state.get('uid-8')).toBeNull();
  });
});

describe('informer-driven capture and release (no restart)', () => {
  it('captures running pods when their namespace is labelled and releases them when unlabelled', async () => {
    const kube = clusterWith(makePod('uid-10', 'plain', 'api', { ip: '10.244.1.9' }));
    const h = await start(kube);
    const z = ztunnel(h);
    await postPlugin(h.socket, '/cmdadd', addEvent('uid-10', 'plain', 'api', { ips: ['10.244.1.9/24'] }));
    expect(h.rules.calls).toHaveLength(0);

    kube.namespace('plain', { 'istio.io/dataplane-mode': 'ambient' });
    await eventually(() => kube.annotation('uid-10') === 'enabled', { what: 'capture after labelling' });
    expect(z.adds.map((a) => a.uid)).toEqual(['uid-10']);
    expect(h.rules.hostSyncs.at(-1)).toEqual({ v4: ['10.244.1.9'], v6: [] });

    kube.namespace('plain', {});
    await eventually(() => kube.annotation('uid-10') === null && z.dels.includes('uid-10'), {
      what: 'release',
    });
    expect(h.rules.removes()).toHaveLength(1);
    expect(h.rules.hostSyncs.at(-1)).toEqual({ v4: [], v6: [] });
    expect(h.agent.dataplane.has('uid-10')).toBe(false);
  });

  it('a pod labelled none later is released; a pod whose netns is unknown is not captured', async () => {
    const kube = clusterWith(makePod('uid-11', 'shop', 'a'), makePod('uid-12', 'shop', 'b'));
    const h = await start(kube);
    ztunnel(h);
    await postPlugin(h.socket, '/cmdadd', addEvent('uid-11', 'shop', 'a'));
    expect(kube.annotation('uid-11')).toBe('enabled');
    kube.updatePod('uid-11', (p) => {
      p.metadata!.labels = { 'istio.io/dataplane-mode': 'none' };
    });
    await eventually(() => kube.annotation('uid-11') === null, { what: 'release on label none' });
    // uid-12 was running before the agent ever saw its ADD: nothing to open, not captured, no hot loop.
    await h.agent.controller.idle();
    expect(kube.annotation('uid-12')).toBeNull();
  });

  it('releases a terminated pod and a deleted pod (ztunnel del, state file removed)', async () => {
    const kube = clusterWith(makePod('uid-13', 'shop', 'job'), makePod('uid-14', 'shop', 'web'));
    const h = await start(kube);
    const z = ztunnel(h);
    await postPlugin(h.socket, '/cmdadd', addEvent('uid-13', 'shop', 'job'));
    await postPlugin(h.socket, '/cmdadd', addEvent('uid-14', 'shop', 'web'));
    kube.updatePod('uid-13', (p) => {
      p.status!.phase = 'Succeeded';
    });
    kube.deletePod('uid-14');
    await eventually(() => z.dels.includes('uid-13') && z.dels.includes('uid-14'), { what: 'dels' });
    await h.agent.controller.idle();
    expect(h.agent.state.get('uid-14')).toBeNull();
    expect(h.rules.removes()).toHaveLength(0); // gone pods' netns need no cleaning
  });
});

describe('ZDS', () => {
  it('a restarted agent re-adopts captured pods and sends them in the snapshot, reusing the capture record', async () => {
    const kube = clusterWith(makePod('uid-20', 'shop', 'cart'));
    const h1 = await start(kube);
    const z1 = ztunnel(h1);
    await postPlugin(h1.socket, '/cmdadd', addEvent('uid-20', 'shop', 'cart'));
    expect(kube.annotation('uid-20')).toBe('enabled');
    await h1.agent.close({ cleanup: false });
    await eventually(() => z1.closed, { what: 'old connection closed' });

    const rules2 = new FakeRules();
    const h2 = await start(kube, {}, rules2);
    expect(rules2.applies()).toHaveLength(1);
    expect(rules2.applies()[0]!.prior).not.toBeNull(); // reconcile from the recorded capture
    const z2 = ztunnel(h2);
    await eventually(() => z2.snapshots === 1, { what: 'snapshot from the new agent' });
    expect(z2.adds).toEqual([expect.objectContaining({ uid: 'uid-20', netnsInode: SELF_INODE })]);
    await h2.agent.controller.idle();
    expect(rules2.applies()).toHaveLength(1); // not applied again by the queue
  });

  it('sends deletes to every connected ztunnel, adds to the newest', async () => {
    const kube = clusterWith(makePod('uid-21', 'shop', 'cart'));
    const h = await start(kube);
    const old = ztunnel(h);
    await eventually(() => old.snapshots === 1);
    const fresh = ztunnel(h);
    await eventually(() => fresh.snapshots === 1);
    await postPlugin(h.socket, '/cmdadd', addEvent('uid-21', 'shop', 'cart'));
    expect(fresh.adds).toHaveLength(1);
    expect(old.adds).toHaveLength(0);
    kube.deletePod('uid-21');
    await eventually(() => old.dels.includes('uid-21') && fresh.dels.includes('uid-21'), {
      what: 'dels to both',
    });
  });

  it('closes a connection that sends garbage, counts it, and keeps serving', async () => {
    const h = await start(clusterWith(makePod('uid-22', 'shop', 'cart')));
    const bad = ztunnel(h);
    bad.socket.send(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f])); // not a ZdsHello
    await eventually(() => bad.closed, { what: 'bad connection closed' });
    const ok = ztunnel(h);
    await eventually(() => ok.snapshots === 1);
    const r = await postPlugin(h.socket, '/cmdadd', addEvent('uid-22', 'shop', 'cart'));
    expect(r.status).toBe(200);
    expect(
      counterSum(await h.agent.registry.metrics(), 'istio_cni_rejected_input_total', 'source="ztunnel"'),
    ).toBe(1);
  });

  it('closes a connection that sends an unsolicited message or a wrong version', async () => {
    const h = await start(clusterWith());
    const chatty = ztunnel(h);
    await eventually(() => chatty.snapshots === 1);
    chatty.socket.send(encodeMessage(WorkloadResponse, { payload: { $case: 'ack', value: { error: '' } } }));
    await eventually(() => chatty.closed, { what: 'unsolicited message closes' });
    const v2 = FakeZtunnel.connect(h.zdsPath, 2);
    ztunnels.push(v2);
    await eventually(() => v2.closed, { what: 'an unknown version closes' });
  });

  it('an ack error or a missing ack fails the add as retryable', async () => {
    const h = await start(clusterWith(makePod('uid-23', 'shop', 'cart')), { ZTUNNEL_ACK_TIMEOUT: '300ms' });
    const z = ztunnel(h);
    await eventually(() => z.snapshots === 1);
    z.ackError = 'netns unusable';
    let r = await postPlugin(h.socket, '/cmdadd', addEvent('uid-23', 'shop', 'cart'));
    expect(r).toMatchObject({ status: 503, body: { error: expect.stringContaining('netns unusable') } });
    z.ackError = '';
    z.silent = true;
    r = await postPlugin(h.socket, '/cmdadd', addEvent('uid-23', 'shop', 'cart'));
    expect(r.status).toBe(503);
    await eventually(() => z.closed, { what: 'silent ztunnel dropped' });
    const z2 = ztunnel(h);
    await eventually(() => h.kube.annotation('uid-23') === 'enabled', {
      what: 'retried on the new connection',
    });
    expect(z2.adds.some((a) => a.uid === 'uid-23')).toBe(true);
  });
});

describe('install drift', () => {
  it('repairs a deleted plugin dir, including the plugin socket in it', async () => {
    const net = join(dir, 'net');
    mkdirSync(net, { recursive: true });
    writeFileSync(
      join(net, '10-lab.conflist'),
      JSON.stringify({ cniVersion: '1.0.0', name: 'lab', plugins: [{ type: 'ptp' }] }),
    );
    const h = await start(clusterWith(makePod('uid-30', 'plain', 'web')), {
      SKIP_CNI_INSTALL: 'false',
      CNI_NET_DIR: net,
      INSTALL_CHECK_INTERVAL: '200ms',
    });
    expect(h.agent.ready).toBe(true);
    rmSync(join(dir, 'bin', 'istio-cni.d'), { recursive: true, force: true });
    await eventually(
      async () => (await postPlugin(h.socket, '/cmdadd', addEvent('uid-30', 'plain', 'web'))).status === 200,
      { what: 'plugin socket and files back', timeoutMs: 5_000 },
    );
    expect(existsSync(join(dir, 'bin', 'istio-cni.d', 'plugin.mjs'))).toBe(true);
    await eventually(() => h.agent.ready, { what: 'ready again' });
  });
});

describe('health and metrics', () => {
  it('serves /readyz on the readiness port and Istio-named metrics', async () => {
    const h = await start(clusterWith());
    const ready = await fetch(`http://127.0.0.1:${h.agent.ports.readiness}/readyz`);
    expect(ready.status).toBe(200);
    const metrics = await (await fetch(`http://127.0.0.1:${h.agent.ports.monitoring}/metrics`)).text();
    expect(metrics).toContain('istio_cni_ztunnel_connected');
    expect(metrics).toContain('istio_cni_pods_captured');
    const lv = await fetch(`http://127.0.0.1:${h.agent.ports.readiness}/logging?level=debug`, {
      method: 'POST',
    });
    expect(await lv.json()).toMatchObject({ default: 'debug' });
    await h.agent.close({ cleanup: false });
    agents = agents.filter((a) => a !== h.agent);
  });

  it('on shutdown keeps the plugin during an upgrade (DaemonSet present) and removes host rules otherwise', async () => {
    const kube = clusterWith();
    kube.daemonSet = true;
    const h = await start(kube);
    await h.agent.close();
    expect(h.rules.hostRemoved).toBe(0);
    const kube2 = clusterWith();
    kube2.daemonSet = false;
    const h2 = await start(kube2);
    await h2.agent.close();
    expect(h2.rules.hostRemoved).toBe(1);
  });
});
