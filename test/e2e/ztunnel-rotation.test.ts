/**
 * Workload certificate rotation under continuous traffic in a 2-node lab (issue #8; B2 "rotates before expiry
 * without dropping traffic").
 *
 * ztunnel asks istiod's CA for certificates of SECRET_TTL and renews them at half-life. The test sets
 * SECRET_TTL=60s on the ztunnel DaemonSet (`kubectl set env`, itself rolled out by the maxSurge handover), so
 * the pods' certificates rotate about every 30 s. `mesh/client` (node-0) talks to `mesh/server` (node-1):
 *   - new connections (one every 100 ms) and one long-lived keep-alive connection (a request every 500 ms);
 *   - meanwhile `outside/prober` makes a fresh mTLS handshake to the server pod's :15008 every second (a client
 *     certificate minted from the mesh root) and records the certificate the server presents;
 *   - /config_dump of both ztunnels (admin :15000 in ztunnel's netns) is read every second.
 * Until both pods' certificates have been replaced twice: zero failed requests, the long-lived connection
 * survives with every request answered, and fresh handshakes present each new server certificate (rotation
 * takes effect on the wire, not only in the dump).
 */
import type { V1Pod } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, sleep } from '../../pkg/testing/index.ts';
import {
  type Credentials,
  closeHbone,
  echoPod,
  hboneRequest,
  httpGet,
  KeepAliveHttp,
  type MeshRoot,
  meshRoot,
  mintCertificate,
  name,
  podIp,
  serviceAccount,
  sleeperPod,
  spiffe,
  TestLab,
} from './helpers.ts';

const t = new TestLab();
const MESH = 'mesh';
const OUTSIDE = 'outside';
const APP_PORT = 3000;
const TTL_S = 60;
/** istiod back-dates NotBefore by 2 minutes (clock skew). */
const BACKDATE_S = 120;
/** Rotations to see per identity, and the time they may take (two half-lives plus slack). */
const ROTATIONS = 2;
const MAX_WAIT_MS = 100_000;

let client: V1Pod;
let server: V1Pod;
let prober: V1Pod;
let clientNetns = '';
let proberNetns = '';
let root: MeshRoot;
let proberCreds: Credentials;

interface Cert {
  readonly serial: string;
  readonly notBefore: string;
  readonly notAfter: string;
}

/** The current certificate of `id` in the ztunnel of `node`, from its /config_dump. */
async function certOf(node: string, id: string): Promise<Cert> {
  const dump = await t.configDump(await t.ztunnelOn(node));
  const c = dump.certificates.find((x) => x.certificate?.identity === id)?.certificate;
  if (!c) throw new Error(`no certificate for ${id} on ${node}: ${JSON.stringify(dump.certificates)}`);
  return c;
}

beforeAll(async () => {
  const up = await t.up({ nodes: 2 });
  console.log(`lab up (mesh): ${(up.ms / 1000).toFixed(1)}s, block ${t.block}`);
  const t0 = performance.now();
  await t.kubectl(['set', 'env', 'daemonset/ztunnel', '-n', 'istio-system', `SECRET_TTL=${TTL_S}s`]);
  await t.kubectl(['rollout', 'status', 'daemonset/ztunnel', '-n', 'istio-system', '--timeout=90s']);
  const zs = await t.ztunnels();
  expect(zs).toHaveLength(2);
  for (const z of zs)
    expect(z.spec?.containers[0]?.env).toContainEqual({ name: 'SECRET_TTL', value: `${TTL_S}s` });
  console.log(
    `ztunnel rolled out with SECRET_TTL=${TTL_S}s in ${((performance.now() - t0) / 1000).toFixed(1)}s`,
  );

  await t.apply('', {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: { name: MESH, labels: { 'istio.io/dataplane-mode': 'ambient' } },
  });
  await t.kubectl(['create', 'namespace', OUTSIDE]);
  await t.apply(
    MESH,
    serviceAccount('client'),
    serviceAccount('server'),
    sleeperPod('client', { node: 'node-0', sa: 'client' }),
    echoPod('server', { node: 'node-1', sa: 'server' }),
  );
  await t.apply(OUTSIDE, sleeperPod('prober', { node: 'node-0' }));
  client = await t.readyPod(MESH, 'app=client');
  server = await t.readyPod(MESH, 'app=server');
  prober = await t.readyPod(OUTSIDE, 'app=prober');
  clientNetns = await t.netns(MESH, name(client));
  proberNetns = await t.netns(OUTSIDE, name(prober));
  root = await meshRoot(t);
  proberCreds = mintCertificate(root, spiffe(OUTSIDE, 'prober'));
  await eventually(
    async () => {
      const r = await httpGet({ netns: clientNetns, host: podIp(server), port: APP_PORT, path: '/warmup' });
      expect(r.status).toBe(200);
    },
    { timeoutMs: 30_000, intervalMs: 300, what: 'client → server through the mesh' },
  );
});

afterAll(async () => {
  await t.down();
});

describe('workload certificate rotation', () => {
  it(`ztunnel asks for SECRET_TTL (${TTL_S}s) certificates`, async () => {
    for (const [node, id] of [
      ['node-0', spiffe(MESH, 'client')],
      ['node-1', spiffe(MESH, 'server')],
    ] as const) {
      const c = await eventually(() => certOf(node, id), { timeoutMs: 10_000, intervalMs: 300, what: id });
      const life = (Date.parse(c.notAfter) - Date.parse(c.notBefore)) / 1000;
      expect(life, `${id} lifetime`).toBeGreaterThanOrEqual(TTL_S + BACKDATE_S - 2);
      expect(life, `${id} lifetime`).toBeLessThanOrEqual(TTL_S + BACKDATE_S + 2);
    }
  });

  it('certificates rotate twice under continuous traffic: no failed request, the long-lived connection survives, fresh handshakes get the new certificate', async () => {
    const ids = { client: spiffe(MESH, 'client'), server: spiffe(MESH, 'server') };
    const history = {
      client: [await certOf('node-0', ids.client)],
      server: [await certOf('node-1', ids.server)],
    };
    const stats = { ok: 0, failures: [] as string[], liveOk: 0, probes: 0 };
    /** Server certificate serials presented to the prober's fresh handshakes. */
    const presented = new Set<string>();
    let stop = false;

    // New connections, one every 100 ms.
    const newConnections = (async () => {
      for (let n = 0; !stop; n++) {
        const t0 = performance.now();
        try {
          const r = await httpGet({
            netns: clientNetns,
            host: podIp(server),
            port: APP_PORT,
            path: `/n-${n}`,
          });
          if (r.status === 200) stats.ok++;
          else stats.failures.push(`new #${n}: HTTP ${r.status}`);
        } catch (err) {
          stats.failures.push(`new #${n}: ${(err as Error).message}`);
        }
        await sleep(Math.max(0, 100 - (performance.now() - t0)));
      }
    })();
    // One long-lived connection, a request every 500 ms.
    const live = await KeepAliveHttp.open(clientNetns, podIp(server), APP_PORT);
    const liveLoop = (async () => {
      for (let n = 0; !stop; n++) {
        try {
          const r = await live.get(`/live-${n}`);
          if (r.status === 200) stats.liveOk++;
          else stats.failures.push(`live #${n}: HTTP ${r.status}`);
        } catch (err) {
          stats.failures.push(`live #${n}: ${(err as Error).message}`);
          return;
        }
        await sleep(500);
      }
    })();
    // A fresh mTLS handshake to the server pod every second.
    const probes = (async () => {
      for (let n = 0; !stop; n++) {
        const a = await hboneRequest({
          netns: proberNetns,
          ip: podIp(server),
          creds: proberCreds,
          caPem: root.certPem,
          serverId: ids.server,
          headers: { ':method': 'CONNECT', ':authority': `${podIp(server)}:${APP_PORT}` },
        });
        closeHbone(a);
        stats.probes++;
        if (a.status !== 200) stats.failures.push(`probe #${n}: ${a.outcome} ${a.status} ${a.error}`);
        if (a.peer) presented.add(a.peer.serialNumber);
        await sleep(1000);
      }
    })();

    const t0 = performance.now();
    try {
      while (performance.now() - t0 < MAX_WAIT_MS) {
        await sleep(1000);
        for (const [key, node] of [
          ['client', 'node-0'],
          ['server', 'node-1'],
        ] as const) {
          const c = await certOf(node, ids[key]);
          if (c.serial !== history[key].at(-1)?.serial) {
            history[key].push(c);
            console.log(
              `${key} certificate rotated at +${((performance.now() - t0) / 1000).toFixed(1)}s: serial ${c.serial}`,
            );
          }
        }
        if (history.client.length > ROTATIONS && history.server.length > ROTATIONS) break;
      }
      // A few more seconds, so that handshakes after the last rotation are seen.
      await sleep(3000);
    } finally {
      stop = true;
      await Promise.all([newConnections, liveLoop, probes]);
    }
    console.log(
      `${((performance.now() - t0) / 1000).toFixed(1)}s: ${stats.ok} new connections, ${stats.liveOk} requests on the ` +
        `long-lived one, ${stats.probes} fresh handshakes, ${stats.failures.length} failures; ` +
        `rotations: client ${history.client.length - 1}, server ${history.server.length - 1}`,
    );

    expect(history.client.length - 1, 'client certificate rotations').toBeGreaterThanOrEqual(ROTATIONS);
    expect(history.server.length - 1, 'server certificate rotations').toBeGreaterThanOrEqual(ROTATIONS);
    for (const h of [history.client, history.server])
      for (let i = 1; i < h.length; i++) {
        // Renewed before expiry, around half-life: never a gap in validity.
        expect(Date.parse(h[i]!.notBefore)).toBeLessThan(Date.parse(h[i - 1]!.notAfter));
        expect(Date.parse(h[i]!.notAfter)).toBeGreaterThan(Date.parse(h[i - 1]!.notAfter));
      }
    expect(stats.failures).toEqual([]);
    expect(stats.ok).toBeGreaterThan(200);
    // The long-lived connection is still the same, open one, and answered every request.
    expect(live.open).toBe(true);
    expect(stats.liveOk).toBeGreaterThan(60);
    expect(live.answered).toBe(stats.liveOk);
    expect((await live.get('/live-after')).status).toBe(200);
    live.close();
    // Every server certificate in use after a rotation was presented on the wire to fresh handshakes.
    for (const c of history.server.slice(1))
      expect([...presented], `serial ${c.serial} presented`).toContain(c.serial);
  });
});
