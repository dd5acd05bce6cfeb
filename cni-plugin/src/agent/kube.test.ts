/**
 * The agent against the lab API server, in-process (client-node informers with the node field selector,
 * merge-patched annotations, the DaemonSet upgrade check). Rules are recorded (FakeRules); ztunnel is the
 * fake ZDS client. Any user.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AppsV1Api,
  CoreV1Api,
  KubeConfig,
  PatchStrategy,
  setHeaderOptions,
  type V1Pod,
} from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiServer } from '../../../lab/apiserver/index.ts';
import { eventually } from '../../../pkg/testing/index.ts';
import { FakeRules, postPlugin } from '../testdata/fakes.ts';
import { FakeZtunnel, silentLogger } from '../testdata/helpers.ts';
import { IstioCniAgent } from './app.ts';
import { loadConfig } from './config.ts';
import { ApiKubeSource } from './kube.ts';

const MERGE = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

let dir: string;
let api: ApiServer;
let core: CoreV1Api;
let apps: AppsV1Api;
let agent: IstioCniAgent;
let rules: FakeRules;
let z: FakeZtunnel;
let socket: string;

function pod(name: string, namespace: string, node: string, labels: Record<string, string> = {}): V1Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, labels },
    spec: {
      nodeName: node,
      serviceAccountName: 'default',
      containers: [{ name: 'app', image: 'example/app:1' }],
    },
  };
}

async function setIp(namespace: string, name: string, ip: string): Promise<void> {
  await core.patchNamespacedPodStatus(
    { name, namespace, body: { status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] } } },
    MERGE,
  );
}

async function annotation(namespace: string, name: string): Promise<string | undefined> {
  const p = await core.readNamespacedPod({ name, namespace });
  return p.metadata?.annotations?.['ambient.istio.io/redirection'];
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'amb-t-cni-lab-'));
  api = await ApiServer.create({ dataDir: join(dir, 'api'), authorization: 'AlwaysAllow' });
  const kc = new KubeConfig();
  kc.loadFromFile(api.kubeconfigPath);
  core = kc.makeApiClient(CoreV1Api);
  apps = kc.makeApiClient(AppsV1Api);
  for (const ns of ['shop', 'plain', 'istio-system']) {
    await core.createNamespace({
      body: { metadata: { name: ns, labels: ns === 'shop' ? { 'istio.io/dataplane-mode': 'ambient' } : {} } },
    });
  }
  await core.createNamespacedPod({ namespace: 'shop', body: pod('cart', 'shop', 'node-a') });
  await core.createNamespacedPod({ namespace: 'shop', body: pod('elsewhere', 'shop', 'node-b') });
  await core.createNamespacedPod({ namespace: 'plain', body: pod('api', 'plain', 'node-a') });
  const config = loadConfig({
    NODE_NAME: 'node-a',
    POD_NAMESPACE: 'istio-system',
    CNI_AGENT_RUN_DIR: join(dir, 'run'),
    CNI_BIN_DIR: join(dir, 'bin'),
    ZTUNNEL_SOCKET: join(dir, 'ztunnel.sock'),
    READINESS_PORT: '0',
    MONITORING_PORT: '0',
    BIND_ADDRESS: '127.0.0.1',
    SKIP_CNI_INSTALL: 'true',
    ADD_POD_WAIT: '3s',
  });
  rules = new FakeRules();
  agent = await IstioCniAgent.create({
    config,
    kube: new ApiKubeSource(kc, 'node-a'),
    rules,
    logger: silentLogger(),
  });
  await agent.run();
  socket = config.pluginSocket;
  z = FakeZtunnel.connect(config.ztunnelSocket);
  await eventually(() => z.snapshots === 1, { what: 'snapshot' });
}, 60_000);

afterAll(async () => {
  z?.close();
  await agent?.close({ cleanup: false });
  await api?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function cniAdd(uid: string, namespace: string, name: string) {
  return {
    containerId: `ctr-${name}`,
    netns: '/proc/self/ns/net',
    ifName: 'eth0',
    podName: name,
    podNamespace: namespace,
    podUid: uid,
    ips: ['10.244.1.5/24'],
    cniVersion: '1.0.0',
  };
}

describe('against the lab API server', () => {
  it('watches only its node and annotates a captured pod through the API', async () => {
    const cart = await core.readNamespacedPod({ name: 'cart', namespace: 'shop' });
    const r = await postPlugin(socket, '/cmdadd', cniAdd(cart.metadata!.uid!, 'shop', 'cart'));
    expect(r).toEqual({ status: 200, body: { captured: true, reason: 'namespace label' } });
    expect(await annotation('shop', 'cart')).toBe('enabled');
    expect(z.adds.map((a) => a.name)).toEqual(['cart']);
    const other = await core.readNamespacedPod({ name: 'elsewhere', namespace: 'shop' });
    const r2 = await postPlugin(socket, '/cmdadd', cniAdd(other.metadata!.uid!, 'shop', 'elsewhere'));
    expect(r2.status).toBe(503); // not on this node: never in this agent's cache
  });

  it('captures a running pod when its namespace is labelled and releases it when unlabelled', async () => {
    const apiPod = await core.readNamespacedPod({ name: 'api', namespace: 'plain' });
    await postPlugin(socket, '/cmdadd', cniAdd(apiPod.metadata!.uid!, 'plain', 'api'));
    await setIp('plain', 'api', '10.244.1.9');
    expect(await annotation('plain', 'api')).toBeUndefined();
    await core.patchNamespace(
      { name: 'plain', body: { metadata: { labels: { 'istio.io/dataplane-mode': 'ambient' } } } },
      MERGE,
    );
    await eventually(async () => (await annotation('plain', 'api')) === 'enabled', {
      what: 'capture',
      timeoutMs: 10_000,
    });
    await core.patchNamespace(
      { name: 'plain', body: { metadata: { labels: { 'istio.io/dataplane-mode': null } } } },
      MERGE,
    );
    await eventually(async () => (await annotation('plain', 'api')) === undefined, {
      what: 'release',
      timeoutMs: 10_000,
    });
    expect(z.dels).toContain(apiPod.metadata!.uid);
  });

  it('tells an upgrade (DaemonSet present) from an uninstall', async () => {
    const source = new ApiKubeSource(
      (() => {
        const kc = new KubeConfig();
        kc.loadFromFile(api.kubeconfigPath);
        return kc;
      })(),
      'node-a',
    );
    expect(await source.daemonSetActive('istio-system', 'istio-cni-node')).toBe(false);
    await apps.createNamespacedDaemonSet({
      namespace: 'istio-system',
      body: {
        metadata: { name: 'istio-cni-node' },
        spec: {
          selector: { matchLabels: { 'k8s-app': 'istio-cni-node' } },
          template: {
            metadata: { labels: { 'k8s-app': 'istio-cni-node' } },
            spec: { containers: [{ name: 'install-cni', image: 'ambient-ts/install-cni:0.1.0' }] },
          },
        },
      },
    });
    expect(await source.daemonSetActive('istio-system', 'istio-cni-node')).toBe(true);
  });
});
