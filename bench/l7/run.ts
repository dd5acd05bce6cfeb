/**
 * L7 benchmark (issue #9): the waypoint against nginx and haproxy as L7 reverse proxies with the same routing,
 * and against the L4-only mesh path, in one 2-node lab run, side by side, interleaved per repetition. An
 * HTTP/1.1 client (bench/l7/httpload.ts) in a client pod on node-0, an HTTP backend (bench/l7/server.ts,
 * 1 KiB answers) in a server pod on node-1, over five paths:
 *
 *   direct    no proxy, namespace not enrolled: client pod → server pod
 *   l4        namespace enrolled (ambient), no waypoint: client → its ztunnel → HBONE → server's ztunnel →
 *             server, addressed by the Service's ClusterIP
 *   waypoint  a second enrolled namespace with a waypoint (`ambientctl waypoint apply --enroll-namespace
 *             --wait`, pinned to node-1) and an HTTPRoute (GAMMA, parentRef the Service `echo`): PathPrefix
 *             /api + header `x-backend: v1` → Service echo-v1, PathPrefix /api → echo-v2, else 404; client →
 *             ztunnel → HBONE → waypoint → HBONE → server's ztunnel → server. Every run is checked against
 *             the waypoint's istio_requests_total (reporter=waypoint)
 *   nginx     nginx (one worker) in a non-enrolled pod on the waypoint's node with the same routing (location
 *             prefix + map on the header → upstream keepalive pools); client and server not enrolled
 *   haproxy   haproxy (one thread, mode http, ACLs on path and header, keep-alive to the server) likewise
 *
 * Every path gets requests `GET /api/bench` with `x-backend: v1` (the v1 rule) and must answer 200 from v1;
 * the routing itself (v1, v2, 404) is checked once per proxy before measuring. Per path and repetition: the
 * maximum rate (closed loop, `--max-connections` keep-alive connections), latency p50/p99 at a fixed rate
 * (`--rate` req/s over `--connections` connections, from the scheduled send time when a request had to wait),
 * the proxy's CPU (/proc/PID/stat utime+stime: the waypoint's Node process, nginx master+worker, haproxy; the
 * two ztunnels for l4 and waypoint) per 1 000 requests of the fixed-rate run, and its peak RSS (VmHWM).
 *
 *   node bench/l7/run.ts [--reps=3] [--duration=4] [--rate=500] [--connections=10] [--max-connections=16]
 *                        [--access-log] [--keep]
 *   npm run bench -- l7 [--reps=3] …   (through bench/run.ts options need the `--name=value` form)
 *
 * `--access-log` keeps the waypoint's default per-request access log and gives nginx and haproxy one too
 * (all to a pipe that is drained); by default all three run without (Istio's default install has none).
 *
 * Writes bench/results/l7.json; `npm run bench -- l7` also regenerates docs/benchmarks.md. The lab (prefix
 * l7bench-, 10.253.0.0/16), nginx, haproxy and every process started are removed at the end, also on failure
 * or Ctrl-C (`--keep` leaves the lab up: `ambientctl lab down --prefix l7bench- --root <root> --purge`).
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Lab, REPO_ROOT } from '../../lab/cluster/lab.ts';
import {
  cpuSeconds,
  memoryMiB,
  openedConnections,
  type PodRef,
  processTree,
  waitForPod,
  type ZtunnelRef,
  ztunnels,
} from '../l4/cluster.ts';
import { median, printRows, type Row, row, writeResult } from '../lib.ts';
import {
  ambientctl,
  apply,
  clusterIp,
  deployWorkloads,
  getIn,
  httpRoute,
  type Layout,
  pinWaypoint,
  type WaypointRef,
  waypointRequests,
} from './cluster.ts';
import type { HttpLoadConfig, HttpLoadResult } from './httpload.ts';
import {
  httpLoad,
  killAllNow,
  type Routing,
  startBackend,
  startHaproxy,
  startNginx,
  stopAll,
  toolVersions,
} from './procs.ts';

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    reps: { type: 'string', default: '3' },
    duration: { type: 'string', default: '4' },
    rate: { type: 'string', default: '500' },
    connections: { type: 'string', default: '10' },
    'max-connections': { type: 'string', default: '16' },
    'access-log': { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
  },
  strict: false,
});
const REPS = Number(values.reps);
/** Seconds each measurement counts (after its warm-up). */
const DURATION_S = Number(values.duration);
const RATE = Number(values.rate);
const CONNECTIONS = Number(values.connections);
const MAX_CONNECTIONS = Number(values['max-connections']);
const ACCESS_LOG = values['access-log'] === true;
const KEEP = values.keep === true;

const PREFIX = 'l7bench-';
/** 10.253.0.0/16: outside the default-prefix hash range (20..219), the test labs' 100..199, lab-startup's 251
 * and l4's 252. */
const BLOCK = 253;
const CLIENT_NODE = 'node-0';
const SERVER_NODE = 'node-1';
const LAYOUT: Layout = {
  plain: 'l7-plain',
  l4: 'l7-l4',
  wp: 'l7-wp',
  clientNode: CLIENT_NODE,
  serverNode: SERVER_NODE,
  // nginx and haproxy where the waypoint runs (it is pinned there).
  proxyNode: SERVER_NODE,
  servicePort: 80,
  v1Port: 8080,
  v2Port: 8081,
};
const PROXY_PORT = 8080;
const ROUTE = { prefix: '/api', header: 'x-backend', value: 'v1' } as const;
const REQUEST_PATH = '/api/bench';
const EXPECT_V1 = 'x-served-by: v1';
const BODY_BYTES = 1024;

const WARMUP_MS = 1_000;
/** Unrecorded closed-loop run per path before the repetitions (JIT warm-up of proxies that idled). */
const FIRST_WARMUP_MS = 2_000;
/** Pause between runs so one run's tail does not land in the next. */
const GAP_MS = 300;
const POD_TIMEOUT_MS = 90_000;
const WAYPOINT_TIMEOUT_MS = 90_000;
/** How long routing may take to be in place everywhere (xDS to ztunnels and the waypoint). */
const ROUTING_TIMEOUT_MS = 90_000;
/** A run with more wrong answers than this share fails the benchmark (a broken path, not a slow one). */
const MAX_BAD_SHARE = 0.01;

type PathName = 'direct' | 'l4' | 'waypoint' | 'nginx' | 'haproxy';
const PATHS: readonly PathName[] = ['direct', 'l4', 'waypoint', 'nginx', 'haproxy'];
const PROXIES = ['waypoint', 'nginx', 'haproxy'] as const;
const LABEL: Record<PathName, string> = {
  direct: 'direct (no proxy)',
  l4: 'L4 only (ztunnel pair)',
  waypoint: 'waypoint (ztunnels + waypoint)',
  nginx: 'nginx (1 worker)',
  haproxy: 'haproxy (1 thread)',
};

const PROXY_LABEL: Record<(typeof PROXIES)[number], string> = {
  waypoint: 'waypoint',
  nginx: LABEL.nginx,
  haproxy: LABEL.haproxy,
};

interface PathSetup {
  readonly name: PathName;
  readonly clientNetns: string;
  readonly host: string;
  readonly port: number;
  /** The L7 proxy's processes (CPU, memory); empty for direct and l4. */
  readonly proxyPids: readonly number[];
  /** Both ztunnels' processes for the mesh paths; empty otherwise. */
  readonly ztunnelPids: readonly number[];
}

interface Samples {
  maxRps: number[];
  /** Proxy CPU seconds per wall second during the max-rate run. */
  maxBusy: number[];
  /** Both ztunnels' CPU seconds per wall second during the max-rate run (mesh paths). */
  maxZtunnelBusy: number[];
  p50: number[];
  p99: number[];
  proxyCpuPerK: number[];
  ztunnelCpuPerK: number[];
  hwm: number[];
  errors: number;
  bad: number;
  reconnects: number;
  lowRate: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = (line: string) => process.stdout.write(`${line}\n`);

function requireTools(): void {
  const missing = ['nginx', 'haproxy', 'nsenter', 'ss'].filter((t) => {
    try {
      execFileSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' });
      return false;
    } catch {
      return true;
    }
  });
  if (missing.length > 0) {
    console.error(
      `missing: ${missing.join(', ')} (apt-get install -y nginx-light haproxy util-linux iproute2)`,
    );
    process.exit(2);
  }
}

// ------------------------------------------------------------------------------------------------ teardown

let labRoot: string | null = null;
let workDir: string | null = null;
let teardownOnce: Promise<void> | null = null;

/** Stops our processes (nginx, haproxy, backends, generators), then the lab (purged), then the scratch dir. */
function teardown(): Promise<void> {
  teardownOnce ??= (async () => {
    await stopAll();
    if (labRoot !== null) {
      if (KEEP) log(`lab kept: node ctl/main.ts lab down --prefix ${PREFIX} --root ${labRoot} --purge`);
      else
        await Lab.down({ prefix: PREFIX, root: labRoot, purge: true }).catch((err: unknown) =>
          console.error(`lab down failed: ${(err as Error).message}`),
        );
    }
    if (workDir !== null) rmSync(workDir, { recursive: true, force: true });
  })();
  return teardownOnce;
}

process.on('exit', killAllNow);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    console.error(`\n${sig}: tearing down`);
    void teardown().finally(() => process.exit(130));
  });
}

// ------------------------------------------------------------------------------------------------ checks

/** Retries `check` until it passes or `timeoutMs` runs out (then its last error). */
async function eventually(what: string, timeoutMs: number, check: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    try {
      await check();
      return performance.now() - t0;
    } catch (err) {
      if (performance.now() - t0 > timeoutMs)
        throw new Error(`${what} (after ${timeoutMs / 1000}s): ${(err as Error).message}`);
    }
    await sleep(500);
  }
}

/** The routing every proxy must implement: v1 rule, v2 rule, no rule → 404. */
async function checkRouting(s: PathSetup): Promise<void> {
  const served = async (path: string, headers: Record<string, string>, want: number, version?: string) => {
    const r = await getIn(s.clientNetns, s.host, s.port, path, headers);
    if (r.status !== want || (version !== undefined && r.headers['x-served-by'] !== version))
      throw new Error(
        `${LABEL[s.name]}: GET ${path} ${JSON.stringify(headers)} → ${r.status} from ` +
          `${String(r.headers['x-served-by'])}, expected ${want}${version ? ` from ${version}` : ''}`,
      );
  };
  const v1 = { [ROUTE.header]: ROUTE.value };
  await served(REQUEST_PATH, v1, 200, 'v1');
  if (s.name === 'direct' || s.name === 'l4') return;
  await served(REQUEST_PATH, {}, 200, 'v2');
  await served(ROUTE.prefix, v1, 200, 'v1');
  await served(`${ROUTE.prefix}x`, v1, 404);
  await served('/other', v1, 404);
}

// ------------------------------------------------------------------------------------------------ rows

function resultRows(s: Record<PathName, Samples>): Row[] {
  const rows: Row[] = [];
  const named = (what: string, p: PathName) => `${what}: ${LABEL[p]}`;
  /** direct; l4 ÷ direct; waypoint ÷ l4; nginx ÷ direct; haproxy ÷ direct; waypoint ÷ nginx; waypoint ÷ haproxy. */
  const allPaths = (what: string, unit: string, pick: (x: Samples) => number[]): void => {
    const r = (p: PathName, ref: Row | null = null) => row(named(what, p), pick(s[p]), unit, ref);
    const direct = r('direct');
    const l4 = r('l4', direct);
    const nginx = r('nginx', direct);
    const haproxy = r('haproxy', direct);
    rows.push(direct, l4, r('waypoint', l4), nginx, haproxy, r('waypoint', nginx), r('waypoint', haproxy));
  };
  /** nginx; haproxy; waypoint ÷ nginx; waypoint ÷ haproxy (the proxy alone: no ztunnels). */
  const proxies = (what: string, unit: string, pick: (x: Samples) => number[]): void => {
    const proxy = (p: (typeof PROXIES)[number]) => `${what}: ${PROXY_LABEL[p]}`;
    const nginx = row(proxy('nginx'), pick(s.nginx), unit);
    const haproxy = row(proxy('haproxy'), pick(s.haproxy), unit);
    rows.push(
      nginx,
      haproxy,
      row(proxy('waypoint'), pick(s.waypoint), unit, nginx),
      row(proxy('waypoint'), pick(s.waypoint), unit, haproxy),
    );
  };
  /** Paired by repetition: `p` minus `base`. */
  const added = (q: 'p50' | 'p99', p: PathName, base: PathName): void => {
    rows.push(
      row(
        `latency ${q} added by ${LABEL[p]} over ${LABEL[base]}`,
        s[p][q].map((x, i) => x - s[base][q][i]!),
        'ms',
      ),
    );
  };
  allPaths(`max req/s (${MAX_CONNECTIONS} connections)`, 'req/s', (x) => x.maxRps);
  allPaths(`latency p50 at ${RATE} req/s`, 'ms', (x) => x.p50);
  allPaths(`latency p99 at ${RATE} req/s`, 'ms', (x) => x.p99);
  for (const q of ['p50', 'p99'] as const) {
    added(q, 'waypoint', 'l4');
    added(q, 'nginx', 'direct');
    added(q, 'haproxy', 'direct');
  }
  proxies(`proxy CPU per 1000 requests at ${RATE} req/s`, 'CPU s', (x) => x.proxyCpuPerK);
  const zl4 = row(
    `ztunnel pair CPU per 1000 requests at ${RATE} req/s: ${LABEL.l4}`,
    s.l4.ztunnelCpuPerK,
    'CPU s',
  );
  rows.push(
    zl4,
    row(
      `ztunnel pair CPU per 1000 requests at ${RATE} req/s: ${LABEL.waypoint}`,
      s.waypoint.ztunnelCpuPerK,
      'CPU s',
      zl4,
    ),
    row(
      `mesh CPU per 1000 requests at ${RATE} req/s (waypoint + ztunnel pair)`,
      s.waypoint.ztunnelCpuPerK.map((z, i) => z + s.waypoint.proxyCpuPerK[i]!),
      'CPU s',
      zl4,
    ),
  );
  proxies('proxy CPU busy during the max req/s run', 'CPU s/s', (x) => x.maxBusy);
  proxies('proxy peak RSS (VmHWM)', 'MiB', (x) => x.hwm);
  return rows;
}

// ------------------------------------------------------------------------------------------------ main

function loadConfig(
  s: PathSetup,
  mode: 'closed' | 'rate',
  durationMs: number,
  warmupMs: number,
): HttpLoadConfig {
  return {
    host: s.host,
    port: s.port,
    path: REQUEST_PATH,
    headers: { [ROUTE.header]: ROUTE.value },
    hostHeader: 'echo',
    mode,
    connections: mode === 'closed' ? MAX_CONNECTIONS : CONNECTIONS,
    rate: RATE,
    durationMs,
    warmupMs,
    expect: EXPECT_V1,
  };
}

async function main(): Promise<void> {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    console.error('the L7 benchmark needs root (it runs a lab: network namespaces, iptables)');
    process.exit(2);
  }
  requireTools();
  const started = performance.now();
  const loadStart = loadavg()[0]!;
  if (loadStart > cpus().length / 2)
    log(
      `! the machine is busy (load average ${loadStart.toFixed(1)} on ${cpus().length} CPUs): every path shares ` +
        'the cores with that work, expect a wide spread',
    );
  labRoot = mkdtempSync(join(tmpdir(), 'l7bench-lab-'));
  workDir = mkdtempSync(join(tmpdir(), 'l7bench-'));
  // nginx's master creates its temp directories here and hands them to the worker.
  chmodSync(workDir, 0o755);

  log(`lab ${PREFIX} (10.${BLOCK}.0.0/16, 2 nodes, mesh) at ${labRoot}`);
  const up = await Lab.up({
    prefix: PREFIX,
    root: labRoot,
    nodes: 2,
    block: BLOCK,
    mesh: true,
    demo: false,
    fresh: true,
    out: (l) => log(`  ${l}`),
  });
  if (up.problems.length > 0) throw new Error(`lab up: not Ready:\n${up.problems.join('\n')}`);
  const lab = up.lab;

  await deployWorkloads(lab, LAYOUT);
  const wait = (ns: string, name: string, captured: boolean): Promise<PodRef> =>
    waitForPod(lab, ns, name, { captured, timeoutMs: POD_TIMEOUT_MS });
  const [plainClient, plainServer, nginxPod, haproxyPod, l4Client, l4Server, wpClient, wpServer] =
    await Promise.all([
      wait(LAYOUT.plain, 'client', false),
      wait(LAYOUT.plain, 'server', false),
      wait(LAYOUT.plain, 'nginx', false),
      wait(LAYOUT.plain, 'haproxy', false),
      wait(LAYOUT.l4, 'client', true),
      wait(LAYOUT.l4, 'server', true),
      wait(LAYOUT.wp, 'client', true),
      wait(LAYOUT.wp, 'server', true),
    ]);
  log(`pods Ready (clients on ${CLIENT_NODE}, servers, nginx and haproxy on ${SERVER_NODE})`);

  // The waypoint, as a user deploys it; then its HTTPRoute; then pinned next to nginx and haproxy.
  const t0 = performance.now();
  await ambientctl(lab, ['waypoint', 'apply', '-n', LAYOUT.wp, '--enroll-namespace', '--wait']);
  await apply(lab, [httpRoute(LAYOUT.wp, LAYOUT.servicePort, ROUTE)]);
  const wp: WaypointRef = await pinWaypoint(lab, LAYOUT.wp, SERVER_NODE, ACCESS_LOG, WAYPOINT_TIMEOUT_MS);
  log(`waypoint ${wp.name} Ready on ${wp.node} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  for (const srv of [plainServer, l4Server, wpServer])
    await startBackend(srv.netns, { [LAYOUT.v1Port]: 'v1', [LAYOUT.v2Port]: 'v2' }, BODY_BYTES);
  const routing: Routing = {
    ...ROUTE,
    v1: `${plainServer.ip}:${LAYOUT.v1Port}`,
    v2: `${plainServer.ip}:${LAYOUT.v2Port}`,
  };
  const proxyOpts = { dir: workDir, port: PROXY_PORT, routing, accessLog: ACCESS_LOG };
  const nginx = await startNginx({ ...proxyOpts, netns: nginxPod.netns });
  const haproxy = await startHaproxy({ ...proxyOpts, netns: haproxyPod.netns });

  const zmap = await ztunnels(lab);
  const zs = [zmap.get(CLIENT_NODE), zmap.get(SERVER_NODE)].filter((z): z is ZtunnelRef => z !== undefined);
  if (zs.length !== 2) throw new Error('no Ready ztunnel on one of the nodes');
  const ztunnelPids = zs.flatMap((z) => processTree(z.initPid));
  // The waypoint's container: the init shim and the Node process under it (only the latter for memory).
  const wpPids = processTree(wp.initPid);
  const setups: Record<PathName, PathSetup> = {
    direct: {
      name: 'direct',
      clientNetns: plainClient.netns,
      host: plainServer.ip,
      port: LAYOUT.v1Port,
      proxyPids: [],
      ztunnelPids: [],
    },
    l4: {
      name: 'l4',
      clientNetns: l4Client.netns,
      host: await clusterIp(lab, LAYOUT.l4, 'echo'),
      port: LAYOUT.servicePort,
      proxyPids: [],
      ztunnelPids,
    },
    waypoint: {
      name: 'waypoint',
      clientNetns: wpClient.netns,
      host: await clusterIp(lab, LAYOUT.wp, 'echo'),
      port: LAYOUT.servicePort,
      proxyPids: wpPids,
      ztunnelPids,
    },
    nginx: {
      name: 'nginx',
      clientNetns: plainClient.netns,
      host: nginxPod.ip,
      port: PROXY_PORT,
      proxyPids: processTree(nginx.pid!),
      ztunnelPids: [],
    },
    haproxy: {
      name: 'haproxy',
      clientNetns: plainClient.netns,
      host: haproxyPod.ip,
      port: PROXY_PORT,
      proxyPids: [haproxy.pid!],
      ztunnelPids: [],
    },
  };
  const memPids: Record<(typeof PROXIES)[number], number[]> = {
    waypoint: wpPids.filter((p) => p !== wp.initPid),
    nginx: [...setups.nginx.proxyPids],
    haproxy: [...setups.haproxy.proxyPids],
  };

  // Routing in place on every path (xDS to the ztunnels and the waypoint), and the waypoint really serving.
  for (const p of PATHS) {
    const ms = await eventually(`${LABEL[p]}: routing`, ROUTING_TIMEOUT_MS, () => checkRouting(setups[p]));
    log(`routing checked: ${LABEL[p]} (${(ms / 1000).toFixed(1)} s)`);
  }
  let wpCount = await waypointRequests(wp, LAYOUT.wp);
  if (wpCount < 5)
    throw new Error(`the waypoint counted ${wpCount} requests of the routing check, expected 5`);
  const wpBefore = wpCount;
  /** Throws unless the waypoint counted (nearly) every request the generator completed. */
  const checkWaypoint = async (completed: number, what: string): Promise<void> => {
    const now = await waypointRequests(wp, LAYOUT.wp);
    const seen = now - wpCount;
    wpCount = now;
    if (seen < completed * 0.99)
      throw new Error(
        `${what}: the waypoint counted ${seen} requests (istio_requests_total, reporter=waypoint) of the ` +
          `${completed} the client completed: traffic did not go through it`,
      );
  };
  const l4Opened = async (): Promise<number> =>
    Math.min(...Object.values(await openedConnections(lab, zs, LAYOUT.l4)));
  let l4Count = await l4Opened();
  const checkL4 = async (what: string): Promise<void> => {
    const now = await l4Opened();
    if (now - l4Count < CONNECTIONS)
      throw new Error(
        `${what}: ztunnel counted ${now - l4Count} HBONE connections of ${LAYOUT.l4}: not captured`,
      );
    l4Count = now;
  };

  for (const p of PATHS) {
    const r = await httpLoad(setups[p].clientNetns, loadConfig(setups[p], 'closed', FIRST_WARMUP_MS, 0));
    if (p === 'waypoint') await checkWaypoint(r.completed, 'warm-up');
  }
  l4Count = await l4Opened();
  log(`set up in ${((performance.now() - started) / 1000).toFixed(0)} s; measuring`);

  const empty = (): Samples => ({
    maxRps: [],
    maxBusy: [],
    maxZtunnelBusy: [],
    p50: [],
    p99: [],
    proxyCpuPerK: [],
    ztunnelCpuPerK: [],
    hwm: [],
    errors: 0,
    bad: 0,
    reconnects: 0,
    lowRate: 0,
  });
  const samples = Object.fromEntries(PATHS.map((p) => [p, empty()])) as Record<PathName, Samples>;
  const account = (p: PathName, r: HttpLoadResult, what: string): void => {
    samples[p].errors += r.errors;
    samples[p].bad += r.bad;
    samples[p].reconnects += r.reconnects;
    if (r.bad > r.completed * MAX_BAD_SHARE)
      throw new Error(`${LABEL[p]} ${what}: ${r.bad} of ${r.completed} answers were not 200 from v1`);
  };

  const durationMs = DURATION_S * 1000;
  for (let rep = 0; rep < REPS; rep++) {
    // Rotate the order every repetition so no path always runs first or right after the heaviest.
    const order = PATHS.map((_, i) => PATHS[(i + rep) % PATHS.length]!);
    for (const p of order) {
      const s = setups[p];
      await sleep(GAP_MS);
      const before = cpuSeconds(s.proxyPids);
      const zBefore = cpuSeconds(s.ztunnelPids);
      const t = performance.now();
      const r = await httpLoad(s.clientNetns, loadConfig(s, 'closed', durationMs, WARMUP_MS));
      const wall = (performance.now() - t) / 1000;
      const busy = (cpuSeconds(s.proxyPids) - before) / wall;
      const zBusy = (cpuSeconds(s.ztunnelPids) - zBefore) / wall;
      account(p, r, 'max req/s');
      samples[p].maxRps.push(r.rps);
      samples[p].maxBusy.push(busy);
      samples[p].maxZtunnelBusy.push(zBusy);
      if (p === 'waypoint') await checkWaypoint(r.completed, 'max req/s run');
      if (p === 'l4') await checkL4('max req/s run');
      log(
        `rep ${rep + 1} ${LABEL[p].padEnd(30)} max ${Math.round(r.rps)} req/s (p50 ${r.p50.toFixed(2)} ms` +
          (s.proxyPids.length > 0 ? `, proxy ${busy.toFixed(2)} CPU s/s` : '') +
          (s.ztunnelPids.length > 0 ? `, ztunnels ${zBusy.toFixed(2)} CPU s/s)` : ')'),
      );
    }
    for (const p of order) {
      const s = setups[p];
      await sleep(GAP_MS);
      const before = cpuSeconds(s.proxyPids);
      const zBefore = cpuSeconds(s.ztunnelPids);
      const r = await httpLoad(s.clientNetns, loadConfig(s, 'rate', durationMs, WARMUP_MS));
      const perK = (used: number) => used / (r.completed / 1000);
      const proxy = perK(cpuSeconds(s.proxyPids) - before);
      const zt = perK(cpuSeconds(s.ztunnelPids) - zBefore);
      account(p, r, 'latency run');
      samples[p].p50.push(r.p50);
      samples[p].p99.push(r.p99);
      samples[p].proxyCpuPerK.push(proxy);
      samples[p].ztunnelCpuPerK.push(zt);
      if (r.rps < 0.95 * RATE) samples[p].lowRate++;
      if (p === 'waypoint') await checkWaypoint(r.completed, 'latency run');
      if (p === 'l4') await checkL4('latency run');
      log(
        `rep ${rep + 1} ${LABEL[p].padEnd(30)} latency p50 ${r.p50.toFixed(3)} ms p99 ${r.p99.toFixed(3)} ms ` +
          `(${Math.round(r.rps)} req/s` +
          (s.proxyPids.length > 0 ? `, proxy ${proxy.toFixed(3)} CPU s/1000 req` : '') +
          (s.ztunnelPids.length > 0 ? `, ztunnels ${zt.toFixed(3)} CPU s/1000 req)` : ')'),
      );
    }
    for (const p of PROXIES) {
      samples[p].hwm.push(memPids[p].reduce((sum, pid) => sum + memoryMiB(pid).hwm, 0));
    }
  }

  // The non-enrolled namespace must never have gone through a ztunnel.
  const plain = await openedConnections(lab, zs, LAYOUT.plain);
  if (plain.source > 0 || plain.destinationMtls > 0)
    throw new Error(
      `${LAYOUT.plain} traffic went through ztunnel (${JSON.stringify(plain)}): not a direct path`,
    );

  const rows = resultRows(samples);
  const loadEnd = loadavg()[0]!;
  const counts = (k: 'errors' | 'bad' | 'reconnects') =>
    PATHS.filter((p) => samples[p][k] > 0).map((p) => `${p} ${samples[p][k]}`);
  const lowRate = PATHS.filter((p) => samples[p].lowRate > 0);
  const busy = (p: PathName) => median(samples[p].maxBusy).toFixed(2);
  const zBusy = (p: PathName) => median(samples[p].maxZtunnelBusy).toFixed(2);
  const file = writeResult({
    benchmark: 'l7',
    description:
      'HTTP/1.1 through L7 proxies in a 2-node lab (client pod on node-0, server pod on node-1, 1 KiB answers): ' +
      'the waypoint (namespace enrolled in ambient with `ambientctl waypoint apply --enroll-namespace`, an ' +
      'HTTPRoute on the Service: path prefix + header select the backend Service) against nginx and haproxy ' +
      "with the same routing in a non-enrolled pod on the waypoint's node, the L4-only mesh path (ztunnel " +
      `pair, no waypoint) and no proxy; closed-loop maximum rate (${MAX_CONNECTIONS} keep-alive connections), ` +
      `latency at ${RATE} req/s (${CONNECTIONS} connections), the proxies' CPU and memory.`,
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, node: process.version },
    rows,
    notes: [
      `Method: ${REPS} interleaved repetitions (path order rotated each time), rows are medians, spread min–max; ` +
        `each run counts ${DURATION_S} s after a ${WARMUP_MS / 1000} s warm-up; one unrecorded ` +
        `${FIRST_WARMUP_MS / 1000} s closed-loop run per path first. The generator (bench/l7/httpload.ts, raw ` +
        "keep-alive sockets, one request in flight per connection) runs in the client pod's network namespace, " +
        "the backend (bench/l7/server.ts, Node http, v1 on 8080, v2 on 8081) in the server pod's (nsenter). " +
        `Every request is GET ${REQUEST_PATH} with ${ROUTE.header}: ${ROUTE.value} and must be answered 200 by v1.`,
      `Rows: "max req/s" = answers per second with ${MAX_CONNECTIONS} connections each sending its next ` +
        `request when the previous answer is complete; "latency p50/p99" = at ${RATE} req/s on one schedule over ` +
        `${CONNECTIONS} connections, from the send time, or from the scheduled time when the request waited for ` +
        'a free connection (no coordinated omission); "added by" = the difference paired by repetition; "proxy ' +
        'CPU" = user+system CPU seconds (/proc/PID/stat) of the L7 proxy (the waypoint container: Node process ' +
        'and its init shim; nginx master + worker; haproxy) per 1000 requests of the fixed-rate run; "ztunnel ' +
        'pair CPU" = both ztunnels, same run; "CPU busy" = proxy CPU seconds per second during the max req/s ' +
        'run (1.0 = one core saturated); "peak RSS" = VmHWM after each repetition (waypoint Node process; ' +
        'nginx master + worker).',
      'Routing, the same on the three proxies and checked before measuring (v1, v2 and 404 answers): the ' +
        `waypoint's HTTPRoute (parentRef Service echo) PathPrefix ${ROUTE.prefix} + header ${ROUTE.header}: ` +
        `${ROUTE.value} → Service echo-v1, PathPrefix ${ROUTE.prefix} → echo-v2, else 404; nginx: location = ` +
        `${ROUTE.prefix} and ${ROUTE.prefix}/, map on the header → upstream v1/v2 (keepalive 64), else return ` +
        `404; haproxy: acl path ${ROUTE.prefix} / path_beg ${ROUTE.prefix}/ and req.hdr, use_backend, deny 404; ` +
        'http-reuse always. All keep-alive both sides without request limits.',
      `Paths: client and server pods in three namespaces: not enrolled (direct, nginx, haproxy), enrolled ` +
        `(L4 only: ztunnel pair, Service ClusterIP), enrolled with the waypoint (Service ClusterIP → client ` +
        `ztunnel → HBONE → waypoint → HBONE → server ztunnel; each run verified against the waypoint's ` +
        `istio_requests_total{reporter="waypoint"}, ${wpCount - wpBefore} requests in all). The waypoint is ` +
        `pinned to ${SERVER_NODE} (nodeSelector patched into its Deployment), nginx and haproxy run in ` +
        `non-enrolled pods there. nginx and haproxy speak plain HTTP on both sides; the waypoint terminates and ` +
        're-originates mTLS HBONE (HTTP/2 CONNECT) on both sides, like Istio.',
      ACCESS_LOG
        ? 'Access logs on: the waypoint its default JSON line per request (to the lab runtime), nginx and ' +
          'haproxy one line per request to stdout (a pipe the benchmark drains).'
        : 'Access logs off on all three proxies: the waypoint with ACCESS_LOG=false patched into its ' +
          "Deployment (its default is on; Istio's default install logs nothing), nginx access_log off, haproxy " +
          'no log. `--access-log` measures with them on.',
      `CPU during the max req/s runs (median CPU s/s, ${cpus().length} cores in all): waypoint path: waypoint ` +
        `${busy('waypoint')} + both ztunnels ${zBusy('waypoint')}; L4 only: both ztunnels ${zBusy('l4')}; nginx ` +
        `${busy('nginx')}; haproxy ${busy('haproxy')}. The rest went to the generator, the backend and the lab.`,
      'Where the waypoint spends its CPU: `node bench/l7/profile.ts` runs the same Waypoint code in-process ' +
        '(V8 profile by component and function, event-loop delay and GC pauses; no lab, no root).',
      `Code measured: ${codeVersion()}. ${toolVersions()}.`,
      `All processes (lab, istiod, both ztunnels, the waypoint, nginx, haproxy, generators, backends) share ` +
        `the machine's ${cpus().length} cores; machine load average (1 min) at start ${loadStart.toFixed(1)}, at ` +
        `end ${loadEnd.toFixed(1)}.`,
      ...(counts('errors').length > 0
        ? [`Load generator errors over all runs: ${counts('errors').join(', ')}.`]
        : []),
      ...(counts('bad').length > 0 ? [`Answers not 200 from v1: ${counts('bad').join(', ')}.`] : []),
      ...(counts('reconnects').length > 0
        ? [`Connections closed by the path and reopened: ${counts('reconnects').join(', ')}.`]
        : []),
      ...(lowRate.length > 0
        ? [`Latency runs below 95% of the target rate: ${lowRate.map((p) => LABEL[p]).join(', ')}.`]
        : []),
    ],
  });

  printTable(samples);
  log('');
  printRows(rows);
  log(`\nwrote ${file} in ${((performance.now() - started) / 1000).toFixed(0)} s (teardown follows)`);
}

/** The checkout the lab ran (the mesh runs from this tree): commit, and whether the tree had changes. */
function codeVersion(): string {
  try {
    return `git ${execFileSync('git', ['describe', '--always', '--dirty'], { cwd: REPO_ROOT, encoding: 'utf8' }).trim()}`;
  } catch {
    return 'unknown (not a git checkout)';
  }
}

function printTable(s: Record<PathName, Samples>): void {
  const fmt = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '—');
  const m = (p: PathName, k: keyof Samples) => median(s[p][k] as number[]);
  const header = [
    'path',
    'max req/s',
    '×direct',
    'p50 ms',
    'p99 ms',
    'proxy CPU s/1k',
    'ztunnels CPU s/1k',
    'busy',
    'peak RSS MiB',
  ];
  const lines = PATHS.map((p) => {
    const proxy = (PROXIES as readonly string[]).includes(p);
    const mesh = p === 'l4' || p === 'waypoint';
    return [
      LABEL[p],
      fmt(m(p, 'maxRps'), 0),
      fmt(m(p, 'maxRps') / m('direct', 'maxRps')),
      fmt(m(p, 'p50'), 3),
      fmt(m(p, 'p99'), 3),
      proxy ? fmt(m(p, 'proxyCpuPerK'), 3) : '—',
      mesh ? fmt(m(p, 'ztunnelCpuPerK'), 3) : '—',
      proxy ? fmt(m(p, 'maxBusy')) : '—',
      proxy ? fmt(m(p, 'hwm'), 1) : '—',
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  log('');
  log(line(header));
  log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
  for (const l of lines) log(line(l));
}

let failed = false;
try {
  await main();
} catch (err) {
  failed = true;
  console.error(`bench l7 failed: ${(err as Error).stack ?? String(err)}`);
} finally {
  await teardown();
}
process.exit(failed ? 1 : 0);
