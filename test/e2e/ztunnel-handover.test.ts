/**
 * ztunnel's graceful handover in a 2-node lab (issue #8): `kubectl rollout restart daemonset/ztunnel` while a
 * meshed client keeps opening connections, with long-lived connections open across it.
 *
 * The DaemonSet rolls with maxSurge 1 / maxUnavailable 0 (deploy/base/ztunnel, like Istio's chart), which the lab's
 * DaemonSet controller models like kube: on each node in turn the new ztunnel starts *beside* the old one, takes
 * the node's pods from the CNI agent (ZDS) and binds their listeners next to the old ones (SO_REUSEPORT); only
 * once it is Ready is the old one deleted, and it drains (ztunnel/src/proxy/pod.ts `close`).
 *
 * `mesh/client` (node-0) talks to `mesh/server` (node-1, cross-node path) and `mesh/local` (node-0, same-node
 * path). Checked:
 *   - zero failed or refused connections among a new connection every 50 ms (both paths) during the whole
 *     rollout;
 *   - a long-lived connection opened before the restart keeps carrying requests (one every 200 ms) after the
 *     first old ztunnel was told to stop, and *completes*: the client closes it 2 s into that ztunnel's drain
 *     with every request answered (connections in flight are drained, not cut);
 *   - a long-lived connection still open at the drain deadline (DRAIN_DURATION, 5 s) — a request the app answers
 *     only after 60 s — is *ended cleanly* then: the client reads an orderly end of stream (FIN, not a reset)
 *     at deadline ± slack;
 *   - afterwards only the new ztunnel pods exist, and their metrics count exactly the new connections.
 */
import type { V1Pod } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, sleep } from '../../pkg/testing/index.ts';
import {
  echoPod,
  httpGet,
  isReady,
  KeepAliveHttp,
  name,
  nodeOf,
  podIp,
  serviceAccount,
  sleeperPod,
  spiffe,
  TestLab,
  total,
  uid,
} from './helpers.ts';

const t = new TestLab();
const MESH = 'mesh';
const APP_PORT = 3000;
/** ztunnel's DRAIN_DURATION default (ztunnel/src/config.ts). */
const DRAIN_MS = 5_000;
const NEW_CONNECTION_EVERY_MS = 50;
const OPENED = 'istio_tcp_connections_opened_total';

let client: V1Pod;
let server: V1Pod;
let local: V1Pod;
let clientNetns = '';
let oldZtunnels: V1Pod[] = [];

interface Traffic {
  ok: number;
  readonly failures: string[];
  stopped: boolean;
}

/** A new connection (one GET) every `everyMs`, alternating targets, without waiting for the previous one. */
function startTraffic(
  targets: readonly { ip: string; label: string }[],
  everyMs: number,
  maxMs: number,
): { stats: Traffic; stop: () => Promise<void> } {
  const stats: Traffic = { ok: 0, failures: [], stopped: false };
  const inflight = new Set<Promise<void>>();
  const loop = (async () => {
    const t0 = performance.now();
    for (let n = 0; !stats.stopped && performance.now() - t0 < maxMs; n++) {
      const next = t0 + (n + 1) * everyMs;
      const target = targets[n % targets.length]!;
      const p = httpGet({
        netns: clientNetns,
        host: target.ip,
        port: APP_PORT,
        path: `/new-${n}`,
        timeoutMs: 10_000,
      }).then(
        (r) => {
          if (r.status === 200) stats.ok++;
          else stats.failures.push(`${target.label} #${n}: HTTP ${r.status}`);
        },
        (err: Error) => {
          stats.failures.push(
            `${target.label} #${n} at +${Math.round(performance.now() - t0)}ms: ${err.message}`,
          );
        },
      );
      inflight.add(p);
      void p.finally(() => inflight.delete(p));
      await sleep(Math.max(0, next - performance.now()));
    }
    await Promise.all(inflight);
  })();
  return {
    stats,
    stop: async () => {
      stats.stopped = true;
      await loop;
    },
  };
}

beforeAll(async () => {
  const up = await t.up({ nodes: 2 });
  console.log(`lab up (mesh): ${(up.ms / 1000).toFixed(1)}s, block ${t.block}`);
  await t.apply('', {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: MESH, labels: { 'istio.io/dataplane-mode': 'ambient' } },
  });
  await t.apply(
    MESH,
    serviceAccount('client'),
    serviceAccount('echo'),
    sleeperPod('client', { node: 'node-0', sa: 'client' }),
    echoPod('server', { node: 'node-1', sa: 'echo' }),
    echoPod('local', { node: 'node-0', sa: 'echo' }),
  );
  client = await t.readyPod(MESH, 'app=client');
  server = await t.readyPod(MESH, 'app=server');
  local = await t.readyPod(MESH, 'app=local');
  clientNetns = await t.netns(MESH, name(client));
  await eventually(
    async () => {
      for (const p of [server, local] as V1Pod[]) {
        const r = await httpGet({ netns: clientNetns, host: podIp(p), port: APP_PORT, path: '/warmup' });
        expect(r.status).toBe(200);
      }
    },
    { timeoutMs: 30_000, intervalMs: 300, what: 'client → server and local through the mesh' },
  );
});

afterAll(async () => {
  await t.down();
});

describe('ztunnel graceful handover', () => {
  it('the ztunnel DaemonSet rolls out with maxSurge 1, maxUnavailable 0', async () => {
    const ds = await t.getJson<{ spec: { updateStrategy: Record<string, unknown> } }>([
      'get',
      'daemonset',
      '-n',
      'istio-system',
      'ztunnel',
    ]);
    expect(ds.spec.updateStrategy).toMatchObject({
      type: 'RollingUpdate',
      rollingUpdate: { maxSurge: 1, maxUnavailable: 0 },
    });
    oldZtunnels = await t.ztunnels();
    expect(oldZtunnels.map(nodeOf).sort()).toEqual(['node-0', 'node-1']);
  });

  it('kubectl rollout restart: zero failed connections, the live connection completes through the drain, a slow one ends cleanly at the drain deadline', async () => {
    const oldUids = new Set(oldZtunnels.map(uid));
    // Opened through the old ztunnels (outbound on node-0, inbound on node-1).
    const live = await KeepAliveHttp.open(clientNetns, podIp(server), APP_PORT);
    const slow = await KeepAliveHttp.open(clientNetns, podIp(server), APP_PORT);
    expect((await live.get('/live-0')).status).toBe(200);
    expect((await slow.get('/slow-0')).status).toBe(200);
    // Waits for an answer the app gives only after 60 s (echo `?delay`): open, idle, and no app timeout.
    const slowAnswer = slow.get('/slow-1?delay=60s', 'server', 90_000).then(
      (r) => `HTTP ${r.status}`,
      (err: Error) => err.message,
    );

    // Timeline from the API: when each old ztunnel was told to stop and when it was gone, when new ones were Ready.
    const stopAt = new Map<string, number>();
    const goneAt = new Map<string, number>();
    const readyAt = new Map<string, number>();
    const oldLogs = new Map<string, string>();
    let watching = true;
    const watch = (async () => {
      while (watching) {
        const all = await t.allPods('istio-system', 'app=ztunnel').catch(() => null);
        const now = performance.now();
        if (all) {
          for (const z of all) {
            if (oldUids.has(uid(z))) {
              if (z.metadata?.deletionTimestamp && !stopAt.has(uid(z))) stopAt.set(uid(z), now);
              const log = t.podLog(z);
              if (log) oldLogs.set(uid(z), log);
            } else if (isReady(z) && !readyAt.has(uid(z))) readyAt.set(uid(z), now);
          }
          for (const u of oldUids) if (!goneAt.has(u) && !all.some((z) => uid(z) === u)) goneAt.set(u, now);
        }
        await sleep(100);
      }
    })();

    const traffic = startTraffic(
      [
        { ip: podIp(server), label: 'cross-node' },
        { ip: podIp(local), label: 'same-node' },
      ],
      NEW_CONNECTION_EVERY_MS,
      120_000,
    );
    // The live connection: a request every 200 ms until 2 s into the first old ztunnel's drain, then closed.
    const liveFailures: string[] = [];
    const liveLoop = (async () => {
      for (let i = 1; ; i++) {
        const first = Math.min(...stopAt.values());
        if (performance.now() > first + 2000) break;
        try {
          const r = await live.get(`/live-${i}`);
          if (r.status !== 200) liveFailures.push(`#${i}: HTTP ${r.status}`);
        } catch (err) {
          liveFailures.push(`#${i}: ${(err as Error).message}`);
          break;
        }
        await sleep(200);
      }
      live.close();
    })();

    await sleep(1000);
    const t0 = performance.now();
    await t.kubectl(['rollout', 'restart', 'daemonset/ztunnel', '-n', 'istio-system']);
    try {
      await eventually(
        async () => {
          const now = await t.allPods('istio-system', 'app=ztunnel');
          const left = now.filter((z) => oldUids.has(uid(z))).map(name);
          if (left.length) throw new Error(`old ztunnels still there: ${left.join(', ')}`);
          const fresh = now.filter((z) => !oldUids.has(uid(z)) && isReady(z));
          expect(fresh.map(nodeOf).sort()).toEqual(['node-0', 'node-1']);
        },
        { timeoutMs: 90_000, intervalMs: 250, what: 'new ztunnels Ready on both nodes, old ones gone' },
      );
      const rolled = performance.now() - t0;
      await liveLoop;
      // Some more traffic through the new ztunnels alone, then stop.
      await sleep(2000);
      await traffic.stop();
      const status = await t.kubectl([
        'rollout',
        'status',
        'daemonset/ztunnel',
        '-n',
        'istio-system',
        '--timeout=10s',
      ]);
      expect(status).toContain('successfully rolled out');

      const firstStop = Math.min(...stopAt.values());
      const slowEnd = await Promise.race([slow.ended, sleep(15_000).then(() => null)]);
      console.log(
        `rollout: ${(rolled / 1000).toFixed(1)}s; old ztunnels told to stop at ${[...stopAt.values()].map((v) => `+${((v - t0) / 1000).toFixed(1)}s`).join(', ')}, ` +
          `gone at ${[...goneAt.values()].map((v) => `+${((v - t0) / 1000).toFixed(1)}s`).join(', ')}; ` +
          `${traffic.stats.ok} new connections ok, ${traffic.stats.failures.length} failed; live connection: ${live.answered} answers; ` +
          `slow connection ended ${slowEnd ? `${slowEnd.how} ${((slowEnd.at - firstStop) / 1000).toFixed(1)}s after the first stop` : 'never'} (${await slowAnswer})`,
      );
      for (const [u, log] of oldLogs) {
        const drain = log
          .split('\n')
          .filter((l) => /drain|termination signal/.test(l))
          .map((l) => {
            try {
              return String(JSON.parse(l).msg);
            } catch {
              return l;
            }
          });
        console.log(`old ztunnel ${u.slice(0, 8)}: ${drain.join(' → ')}`);
      }

      // Zero refused/failed connections, and there was real traffic all along.
      expect(traffic.stats.failures).toEqual([]);
      expect(traffic.stats.ok).toBeGreaterThan((rolled / NEW_CONNECTION_EVERY_MS) * 0.5);
      // Both old pods were stopped (each only once its successor was Ready) and are gone.
      expect(stopAt.size).toBe(2);
      expect(goneAt.size).toBe(2);
      for (const z of oldZtunnels) {
        const successorReady = [...readyAt.entries()].find(([, at]) => at <= (stopAt.get(uid(z)) ?? 0));
        expect(successorReady, `a new ztunnel was Ready before ${name(z)} was stopped`).toBeDefined();
      }
      // The live connection carried requests through the drain and completed: every answer 200, closed by us.
      expect(liveFailures).toEqual([]);
      expect(live.answered).toBeGreaterThan(10);
      expect((await live.ended).how).toBe('local');
      // The slow one was still open when the drain began and was ended cleanly at the drain deadline.
      expect(slowEnd).not.toBeNull();
      expect(slowEnd?.how, slowEnd?.error ?? '').toBe('end');
      expect(await slowAnswer).toContain('connection closed (end)');
      const endedAfter = (slowEnd?.at ?? 0) - firstStop;
      expect(endedAfter).toBeGreaterThan(DRAIN_MS - 1500);
      expect(endedAfter).toBeLessThan(DRAIN_MS + 3000);
    } finally {
      watching = false;
      await watch;
      if (!traffic.stats.stopped) await traffic.stop();
      live.close();
      slow.close();
    }
  });

  it('afterwards only the new ztunnels run, and their metrics count exactly the new connections', async () => {
    const zs = await t.ztunnels();
    expect(zs).toHaveLength(2);
    const oldUids = new Set(oldZtunnels.map(uid));
    expect(zs.filter((z) => oldUids.has(uid(z)))).toEqual([]);
    const z0 = zs.find((z) => nodeOf(z) === 'node-0') as V1Pod;
    const z1 = zs.find((z) => nodeOf(z) === 'node-1') as V1Pod;
    const before = { z0: await t.ztunnelMetrics(z0), z1: await t.ztunnelMetrics(z1) };
    const N = 20;
    for (let i = 0; i < N; i++) {
      const r = await httpGet({
        netns: clientNetns,
        host: podIp(server),
        port: APP_PORT,
        path: `/after-${i}`,
      });
      expect(r.status).toBe(200);
    }
    const src = {
      reporter: 'source',
      source_workload: 'client',
      destination_workload: 'server',
      connection_security_policy: 'mutual_tls',
    };
    const dst = { ...src, reporter: 'destination', source_principal: spiffe(MESH, 'client') };
    await eventually(
      async () => {
        expect(total(await t.ztunnelMetrics(z0), OPENED, src) - total(before.z0, OPENED, src)).toBe(N);
        expect(total(await t.ztunnelMetrics(z1), OPENED, dst) - total(before.z1, OPENED, dst)).toBe(N);
      },
      { timeoutMs: 5_000, intervalMs: 200, what: 'new ztunnels count the connections' },
    );
    // Both new ztunnels proxy the node's pods (taken over from the CNI agent).
    const pods0 = (await t.configDump(z0)).pods.map((p) => p.name).sort();
    const pods1 = (await t.configDump(z1)).pods.map((p) => p.name).sort();
    expect(pods0).toEqual(['client', 'local']);
    expect(pods1).toEqual(['server']);
  });
});
