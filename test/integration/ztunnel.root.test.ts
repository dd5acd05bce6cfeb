/**
 * ztunnel's data path on real kernel plumbing, without a cluster: two pod network namespaces joined by a veth,
 * Istio's in-pod rules applied by the CNI rules engine, and one in-process ztunnel proxying both pods (as the
 * node's ztunnel does after ZDS hands it their netns). State comes straight from xDS-shaped objects and
 * certificates from a fake CA, so each test isolates the proxy: HBONE mTLS between pods, the original client IP
 * seen by the app, service VIP resolution, L4 authorization (allow/deny, STRICT plaintext rejection), live
 * re-checks when policy changes, and Istio's TCP metrics.
 */
import { execFileSync, spawn } from 'node:child_process';
import { createServer, type Server, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RulesEngine } from '../../cni-plugin/src/rules/index.ts';
import { CertManager } from '../../pkg/identity/index.ts';
import { createRegistry } from '../../pkg/metrics/index.ts';
import { connectInNetns, listenInNetns, openNetns } from '../../pkg/netns/index.ts';
import { ProxyState } from '../../pkg/state/index.ts';
import { createLogger } from '../../pkg/telemetry/index.ts';
import { FakeCa } from '../../pkg/testing/fake-ca.ts';
import { eventually, uniqueSuffix } from '../../pkg/testing/index.ts';
import { SecureContextCache } from '../../pkg/tls/index.ts';
import { Action, Authorization, Scope } from '../../pkg/xds/gen/istio/security/authorization.ts';
import { Address, TunnelProtocol, WorkloadStatus } from '../../pkg/xds/gen/istio/workload/workload.ts';
import { loadConfig } from '../../ztunnel/src/config.ts';
import { TcpMetrics } from '../../ztunnel/src/metrics.ts';
import { ConnectionRegistry } from '../../ztunnel/src/proxy/connections.ts';
import type { ProxyContext } from '../../ztunnel/src/proxy/context.ts';
import { PodProxy } from '../../ztunnel/src/proxy/pod.ts';

const sfx = uniqueSuffix(4);
const NS_A = `amb-t-zt-a-${sfx}`;
const NS_B = `amb-t-zt-b-${sfx}`;
const NS_C = `amb-t-zt-c-${sfx}`; // an uncaptured client (plaintext)
const IP_A = '10.203.7.2';
const IP_B = '10.203.7.3';
const IP_C = '10.203.7.4';
const VIP = '10.203.200.10';
const APP_PORT = 8080;

const sh = (cmd: string) => execFileSync('sh', ['-c', cmd], { stdio: 'pipe' }).toString();
const logger = createLogger({ component: 'test', level: (process.env.TEST_LOG as 'silent') ?? 'silent' });
const registry = createRegistry();
const state = new ProxyState();
const ca = new FakeCa();
const certs = new CertManager({ ca });
let ctx: ProxyContext;
const pods: PodProxy[] = [];
let app: Server;
const appSeen: string[] = [];

function ipBytes(ip: string): Uint8Array {
  return Uint8Array.from(ip.split('.').map(Number));
}

function workload(name: string, ip: string, sa: string, opts: { hbone?: boolean; policies?: string[] } = {}) {
  return Address.fromPartial({
    type: {
      $case: 'workload',
      value: {
        uid: `Kubernetes//Pod/default/${name}`,
        name,
        namespace: 'default',
        addresses: [ipBytes(ip)],
        tunnelProtocol: opts.hbone === false ? TunnelProtocol.NONE : TunnelProtocol.HBONE,
        trustDomain: 'cluster.local',
        serviceAccount: sa,
        node: 'node-a',
        canonicalName: name,
        canonicalRevision: 'v1',
        workloadName: name,
        clusterId: 'Kubernetes',
        status: WorkloadStatus.HEALTHY,
        services:
          name === 'server'
            ? {
                'default/server.default.svc.cluster.local': {
                  ports: [{ servicePort: 80, targetPort: APP_PORT }],
                },
              }
            : {},
        authorizationPolicies: opts.policies ?? [],
      },
    },
  });
}

function setPolicies(list: Authorization[]) {
  const current = [...state.allPolicies()].map((p) => p.key);
  state.applyAuthorizations(
    new Map(list.map((a) => [`${a.namespace}/${a.name}`, a])),
    current.filter((k) => !list.some((a) => `${a.namespace}/${a.name}` === k)),
  );
}

/** Connects from inside a namespace (unmarked: captured like an app's socket), sends a line, reads the answer. */
async function request(ns: string, host: string, port: number, line = 'hello'): Promise<string> {
  const s: Socket = await connectInNetns({ netns: `/var/run/netns/${ns}`, host, port, timeoutMs: 5000 });
  return new Promise((resolve, reject) => {
    let buf = '';
    s.setTimeout(5000, () => s.destroy(new Error('timeout')));
    s.on('data', (d) => {
      buf += d.toString();
    });
    s.on('end', () => resolve(buf));
    s.on('close', (hadErr) =>
      hadErr ? reject(new Error(`closed with error after ${JSON.stringify(buf)}`)) : resolve(buf),
    );
    s.on('error', reject);
    if (process.env.NO_HALF_CLOSE) s.write(`${line}\n`);
    else s.end(`${line}\n`);
  });
}

async function metric(name: string, match: Record<string, string>): Promise<number> {
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
  let total = 0;
  for (const v of m?.values ?? []) {
    if (Object.entries(match).every(([k, want]) => String(v.labels[k]) === want)) total += Number(v.value);
  }
  return total;
}

beforeAll(async () => {
  sh(`ip netns add ${NS_A} && ip netns add ${NS_B} && ip netns add ${NS_C}`);
  sh(
    `ip link add zta${sfx} type veth peer name ztb${sfx} && ip link add ztc${sfx} type veth peer name ztd${sfx}`,
  );
  // A and C both link to B through a tiny bridge in B's namespace, so three "pods" share one L2 segment.
  sh(
    `ip link set zta${sfx} netns ${NS_A} && ip link set ztb${sfx} netns ${NS_B} && ip link set ztc${sfx} netns ${NS_C} && ip link set ztd${sfx} netns ${NS_B}`,
  );
  sh(
    `ip -n ${NS_B} link add br0 type bridge && ip -n ${NS_B} link set ztb${sfx} master br0 && ip -n ${NS_B} link set ztd${sfx} master br0`,
  );
  sh(
    `ip -n ${NS_B} link set br0 up && ip -n ${NS_B} link set ztb${sfx} up && ip -n ${NS_B} link set ztd${sfx} up`,
  );
  sh(`ip -n ${NS_B} addr add ${IP_B}/24 dev br0`);
  sh(`ip -n ${NS_A} addr add ${IP_A}/24 dev zta${sfx} && ip -n ${NS_A} link set zta${sfx} up`);
  sh(`ip -n ${NS_C} addr add ${IP_C}/24 dev ztc${sfx} && ip -n ${NS_C} link set ztc${sfx} up`);
  for (const ns of [NS_A, NS_B, NS_C]) {
    sh(`ip -n ${ns} link set lo up`);
    sh(
      `ip -n ${ns} route add default dev $(ip -n ${ns} -o link show | grep -o 'zt[a-d]${sfx}\\|br0' | head -1)`,
    );
  }
  const rules = await RulesEngine.create({ backend: 'iptables' });
  for (const ns of [NS_A, NS_B])
    await rules.applyPod(
      `/var/run/netns/${ns}`,
      { families: [4], dnsCapture: false, bypassInbound: false },
      null,
    );

  // The app in B: answers with the address it sees as the peer.
  app = createServer((s) => {
    s.on('error', () => {});
    appSeen.push(s.remoteAddress ?? '');
    s.once('data', () => s.end(`from ${s.remoteAddress?.replace('::ffff:', '')}\n`));
  });
  await listenInNetns(app, { netns: `/var/run/netns/${NS_B}`, host: '0.0.0.0', port: APP_PORT });

  state.applyAddresses(
    new Map([
      ['Kubernetes//Pod/default/client', workload('client', IP_A, 'client-sa')],
      ['Kubernetes//Pod/default/server', workload('server', IP_B, 'server-sa', { policies: [] })],
      [
        'default/server.default.svc.cluster.local',
        Address.fromPartial({
          type: {
            $case: 'service',
            value: {
              name: 'server',
              namespace: 'default',
              hostname: 'server.default.svc.cluster.local',
              addresses: [{ network: '', address: ipBytes(VIP) }],
              ports: [{ servicePort: 80, targetPort: APP_PORT }],
            },
          },
        }),
      ],
    ]),
    [],
  );
  const config = loadConfig({ NODE_NAME: 'node-a' });
  ctx = {
    config,
    state,
    certs,
    metrics: new TcpMetrics(registry),
    contexts: new SecureContextCache(),
    connections: new ConnectionRegistry(state, logger),
    logger,
    accessLog: logger,
  };
  pods.push(
    await PodProxy.create(
      ctx,
      { uid: 'uid-a', name: 'client', namespace: 'default', serviceAccount: 'client-sa' },
      openNetns(`/var/run/netns/${NS_A}`),
    ),
  );
  pods.push(
    await PodProxy.create(
      ctx,
      { uid: 'uid-b', name: 'server', namespace: 'default', serviceAccount: 'server-sa' },
      openNetns(`/var/run/netns/${NS_B}`),
    ),
  );
}, 60_000);

afterAll(async () => {
  for (const p of pods) await p.close(0);
  app?.close();
  certs.close();
  ctx?.connections.close();
  for (const ns of [NS_A, NS_B, NS_C]) {
    try {
      sh(`ip netns del ${ns}`);
    } catch {}
  }
});

describe('ztunnel data path (in-pod mode, real namespaces)', () => {
  it('carries pod-to-pod traffic over HBONE mTLS; the app sees the client pod IP', async () => {
    expect(await request(NS_A, IP_B, APP_PORT)).toBe(`from ${IP_A}\n`);
    expect(
      await metric('istio_tcp_connections_opened_total', {
        reporter: 'source',
        connection_security_policy: 'mutual_tls',
        source_workload: 'client',
        destination_workload: 'server',
      }),
    ).toBeGreaterThan(0);
    expect(
      await metric('istio_tcp_connections_opened_total', {
        reporter: 'destination',
        connection_security_policy: 'mutual_tls',
        source_principal: 'spiffe://cluster.local/ns/default/sa/client-sa',
        destination_principal: 'spiffe://cluster.local/ns/default/sa/server-sa',
      }),
    ).toBeGreaterThan(0);
  });

  it('on the wire between the pods there is only TLS to 15008', async () => {
    const dump = await new Promise<string>((resolve) => {
      const out: Buffer[] = [];
      const p = spawn('ip', [
        'netns',
        'exec',
        NS_B,
        'tcpdump',
        '-i',
        'br0',
        '-nn',
        '-l',
        '-A',
        `tcp and host ${IP_A}`,
      ]);
      p.stdout.on('data', (d: Buffer) => out.push(d));
      setTimeout(async () => {
        await request(NS_A, IP_B, APP_PORT, 'SECRET-PLAINTEXT-MARKER');
        setTimeout(() => {
          p.kill('SIGINT');
          resolve(Buffer.concat(out).toString('latin1'));
        }, 500);
      }, 700);
    });
    expect(dump).toMatch(
      new RegExp(`${IP_A.replaceAll('.', '\\.')}\\.\\d+ > ${IP_B.replaceAll('.', '\\.')}\\.15008`),
    );
    expect(dump).not.toContain('SECRET-PLAINTEXT-MARKER');
    expect(dump).not.toMatch(new RegExp(`> ${IP_B.replaceAll('.', '\\.')}\\.${APP_PORT}:`));
  });

  it('resolves a service VIP to an endpoint and its target port', async () => {
    expect(await request(NS_A, VIP, 80)).toBe(`from ${IP_A}\n`);
    expect(
      await metric('istio_tcp_connections_opened_total', {
        reporter: 'source',
        destination_service: 'server.default.svc.cluster.local',
      }),
    ).toBeGreaterThan(0);
  });

  it('accepts plaintext from outside the mesh (PERMISSIVE) on the inbound capture port', async () => {
    expect(await request(NS_C, IP_B, APP_PORT)).toBe(`from ${IP_C}\n`);
  });

  it('STRICT (DENY not_principals presence) closes plaintext and keeps mTLS working', async () => {
    setPolicies([
      Authorization.fromPartial({
        name: 'istio_converted_static_strict',
        namespace: 'istio-system',
        scope: Scope.GLOBAL,
        action: Action.DENY,
        rules: [
          { clauses: [{ matches: [{ notPrincipals: [{ matchType: { $case: 'presence', value: {} } }] }] }] },
        ],
      }),
    ]);
    await expect(request(NS_C, IP_B, APP_PORT)).rejects.toThrow();
    expect(await request(NS_A, IP_B, APP_PORT)).toBe(`from ${IP_A}\n`);
    setPolicies([]);
  });

  it('allow-nothing closes connections into the pod; ALLOW by principal lets the right caller in', async () => {
    setPolicies([
      Authorization.fromPartial({
        name: 'allow-nothing',
        namespace: 'default',
        scope: Scope.NAMESPACE,
        action: Action.ALLOW,
      }),
    ]);
    await expect(request(NS_A, IP_B, APP_PORT)).rejects.toThrow();
    setPolicies([
      Authorization.fromPartial({
        name: 'allow-client',
        namespace: 'default',
        scope: Scope.NAMESPACE,
        action: Action.ALLOW,
        rules: [
          {
            clauses: [
              {
                matches: [
                  {
                    principals: [
                      { matchType: { $case: 'exact', value: 'cluster.local/ns/default/sa/client-sa' } },
                    ],
                  },
                ],
              },
            ],
          },
        ],
      }),
    ]);
    expect(await request(NS_A, IP_B, APP_PORT)).toBe(`from ${IP_A}\n`);
    setPolicies([]);
  });

  it('closes a live connection that a new policy denies', async () => {
    const s = await connectInNetns({
      netns: `/var/run/netns/${NS_A}`,
      host: IP_B,
      port: APP_PORT,
      timeoutMs: 5000,
    });
    s.on('error', () => {});
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    await eventually(() => expect(ctx.connections.size).toBeGreaterThan(0), {
      timeoutMs: 5000,
      what: 'tracked',
    });
    setPolicies([
      Authorization.fromPartial({
        name: 'deny-client',
        namespace: 'default',
        scope: Scope.NAMESPACE,
        action: Action.DENY,
        rules: [
          {
            clauses: [
              { matches: [{ principals: [{ matchType: { $case: 'suffix', value: '/sa/client-sa' } }] }] },
            ],
          },
        ],
      }),
    ]);
    await Promise.race([
      closed,
      new Promise((_, rej) => setTimeout(() => rej(new Error('not closed')), 5000)),
    ]);
    setPolicies([]);
  });
});
