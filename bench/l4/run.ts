/**
 * L4 data-path benchmark (issue #8): in one 2-node lab, a client pod on one node and a server pod on the
 * other, measured side by side over three paths in the same run, interleaved:
 *
 *   direct    pod → pod, no mesh (namespace not enrolled)
 *   ztunnel   the same pods' twins in an enrolled namespace (istio.io/dataplane-mode=ambient): the client's
 *             traffic is redirected to its node's ztunnel, crosses to the server node's ztunnel over HBONE
 *             (mTLS HTTP/2 CONNECT to :15008) and reaches the server; capture is verified from ztunnel's
 *             istio_tcp_connections_opened_total (reporter=destination, mutual_tls) after every run
 *   stunnel   a stunnel client in the (non-enrolled) client pod's netns and a stunnel server in the server
 *             pod's netns: TLS 1.3, both certificates verified, ECDSA P-256 workload certificates like the mesh
 *
 *   node bench/l4/run.ts [--reps=3] [--duration=4] [--rate=1000] [--connections=10] [--keep]
 *   npm run bench -- l4 [--reps=3] …   (through bench/run.ts options need the `--name=value` form)
 *
 * Per path and repetition: iperf3 one stream (-t duration -O 1); fixed-rate request/response, `connections`
 * persistent connections, 1 KiB each way, `rate` req/s (bench/hbone/loadgen.ts), p50/p99; new connections
 * per second (bench/l4/connrate.ts: connect, 100 B request, 100 B answer, the server closes; `connections`
 * loops); the proxies' CPU (/proc/PID/stat of both ztunnels, or both stunnels) per 1 000 requests, per 1 000
 * new connections and per GB, and their peak RSS (VmHWM). Every client program runs in the client pod's
 * netns and every server in the server pod's (nsenter with the netns path the lab runtime reports); load goes
 * only to the lab's pod addresses. Needs root, iperf3, stunnel4 (Debian), nsenter and ss.
 *
 * Writes bench/results/l4.json; `npm run bench -- l4` also regenerates docs/benchmarks.md. The lab (prefix
 * l4bench-, 10.252.0.0/16) and every process started are removed at the end, also on failure or Ctrl-C
 * (`--keep` leaves the lab up for a look: `ambientctl lab down --prefix l4bench- --root <root> --purge`).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Lab, REPO_ROOT } from '../../lab/cluster/lab.ts';
import { median, printRows, type Row, row, writeResult } from '../lib.ts';
import {
  cpuSeconds,
  deployWorkloads,
  largestProcess,
  memoryMiB,
  type OpenedCounts,
  openedConnections,
  type PodRef,
  processTree,
  waitForPod,
  type ZtunnelRef,
  ztunnels,
} from './cluster.ts';
import {
  connRate,
  iperf,
  killAllNow,
  latency,
  startEcho,
  startIperfServer,
  startStunnel,
  stopAll,
  toolVersions,
} from './tools.ts';

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    reps: { type: 'string', default: '3' },
    duration: { type: 'string', default: '4' },
    rate: { type: 'string', default: '1000' },
    connections: { type: 'string', default: '10' },
    keep: { type: 'boolean', default: false },
  },
  strict: false,
});
const REPS = Number(values.reps);
/** Seconds each measurement counts (iperf3 -t, latency and connection-rate windows). */
const DURATION_S = Number(values.duration);
const RATE = Number(values.rate);
const CONNECTIONS = Number(values.connections);
const KEEP = values.keep === true;

const PREFIX = 'l4bench-';
/** 10.252.0.0/16: outside the default-prefix hash range (20..219), the test labs' 100..199 and lab-startup's 251. */
const BLOCK = 252;
const NS_PLAIN = 'l4-plain';
const NS_MESH = 'l4-mesh';
const CLIENT_NODE = 'node-0';
const SERVER_NODE = 'node-1';

const IPERF_PORT = 5201;
const ECHO_PORT = 7000;
const ONCE_PORT = 7001;
/** stunnel server half (server pod) and client half (client pod, 127.0.0.1) ports per tunnelled port. */
const STUNNEL_ROUTES = [
  { name: 'iperf', remote: 25201, local: 35201, target: IPERF_PORT },
  { name: 'echo', remote: 27000, local: 37000, target: ECHO_PORT },
  { name: 'once', remote: 27001, local: 37001, target: ONCE_PORT },
] as const;

/** iperf3 `-O`: seconds of slow start left out of its result. */
const IPERF_OMIT_S = 1;
/** Unrecorded iperf3 run per proxied path before the repetitions (V8 warm-up of a ztunnel that idled). */
const WARMUP_IPERF_S = 2;
const LATENCY_WARMUP_MS = 1_000;
const PAYLOAD_BYTES = 1024;
const CONN_WARMUP_MS = 500;
/** Request and answer size of a connection-rate connection ("one small request/response"). */
const CONN_PAYLOAD_BYTES = 100;
/** A connection-rate connection not done by then counts as an error. */
const CONN_TIMEOUT_MS = 5_000;
/** Pause between runs so one run's closing sockets do not land in the next. */
const GAP_MS = 300;
const POD_TIMEOUT_MS = 90_000;
/** How long the mesh may take to carry the first connection over HBONE (xDS + certificates). */
const HBONE_READY_TIMEOUT_MS = 60_000;

type PathName = 'direct' | 'ztunnel' | 'stunnel';
const PATHS: readonly PathName[] = ['direct', 'ztunnel', 'stunnel'];
const LABEL: Record<PathName, string> = {
  direct: 'direct (no mesh)',
  ztunnel: 'ztunnel pair (HBONE)',
  stunnel: 'stunnel pair (TLS 1.3)',
};

interface PathSetup {
  readonly name: PathName;
  /** Where the client programs run. */
  readonly clientNetns: string;
  readonly host: string;
  readonly iperfPort: number;
  readonly echoPort: number;
  readonly oncePort: number;
  /** The proxy processes (both halves) for CPU; empty for direct. */
  readonly cpuPids: readonly number[];
  /** One process per half for memory. */
  readonly memPids: readonly number[];
}

interface Samples {
  gbps: number[];
  cpuPerGB: number[];
  p50: number[];
  p99: number[];
  cpuPerKReq: number[];
  connRate: number[];
  cpuPerKConn: number[];
  hwm: number[];
  rss: number[];
  errors: number;
  lowRate: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = (line: string) => process.stdout.write(`${line}\n`);

function requireTools(): void {
  const missing = ['iperf3', 'stunnel', 'nsenter', 'ss'].filter((t) => {
    try {
      execFileSync('sh', ['-c', `command -v ${t}`], { stdio: 'ignore' });
      return false;
    } catch {
      return true;
    }
  });
  if (missing.length > 0) {
    console.error(`missing: ${missing.join(', ')} (apt-get install -y iperf3 stunnel4 util-linux iproute2)`);
    process.exit(2);
  }
}

// ------------------------------------------------------------------------------------------------ teardown

let labRoot: string | null = null;
let workDir: string | null = null;
let teardownOnce: Promise<void> | null = null;

/** Stops our processes, then the lab (purged) and removes the scratch directory; idempotent. */
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

// ------------------------------------------------------------------------------------------------ capture

class CaptureCheck {
  private last: OpenedCounts;
  /** Connections seen at the server's ztunnel over HBONE since the start (our runs only). */
  total = 0;
  private readonly lab: Lab;
  private readonly zs: readonly ZtunnelRef[];

  private constructor(lab: Lab, zs: readonly ZtunnelRef[], first: OpenedCounts) {
    this.lab = lab;
    this.zs = zs;
    this.last = first;
  }

  static async create(lab: Lab, zs: readonly ZtunnelRef[]): Promise<CaptureCheck> {
    return new CaptureCheck(lab, zs, await openedConnections(lab, zs, NS_MESH));
  }

  /** Throws unless at least `atLeast` more connections arrived over HBONE at the server's ztunnel. */
  async expect(atLeast: number, what: string): Promise<void> {
    const now = await openedConnections(this.lab, this.zs, NS_MESH);
    const dst = now.destinationMtls - this.last.destinationMtls;
    const src = now.source - this.last.source;
    this.last = now;
    this.total += dst;
    if (dst < atLeast || src < atLeast)
      throw new Error(
        `${what}: traffic was not captured by the mesh: ztunnel counted ${src} outbound and ${dst} inbound ` +
          `mutual_tls connections of ${NS_MESH}, expected at least ${atLeast} each`,
      );
  }
}

/** Connects through the mesh until a connection arrives over HBONE (xDS and certificates are in place). */
async function waitForHbone(lab: Lab, zs: readonly ZtunnelRef[], mesh: PathSetup): Promise<number> {
  const t0 = performance.now();
  const start = await openedConnections(lab, zs, NS_MESH);
  for (;;) {
    await connRate(mesh.clientNetns, {
      host: mesh.host,
      port: mesh.oncePort,
      concurrency: 1,
      durationMs: 200,
      warmupMs: 0,
      payloadBytes: CONN_PAYLOAD_BYTES,
      timeoutMs: CONN_TIMEOUT_MS,
    });
    const now = await openedConnections(lab, zs, NS_MESH);
    if (now.destinationMtls > start.destinationMtls) return performance.now() - t0;
    if (performance.now() - t0 > HBONE_READY_TIMEOUT_MS)
      throw new Error(
        `no connection of ${NS_MESH} reached the server's ztunnel over HBONE within ` +
          `${HBONE_READY_TIMEOUT_MS / 1000}s (outbound counted ${now.source - start.source})`,
      );
    await sleep(500);
  }
}

// ------------------------------------------------------------------------------------------------ rows

function resultRows(s: Record<PathName, Samples>): Row[] {
  const rows: Row[] = [];
  /** With direct: direct, ztunnel ÷ direct, stunnel ÷ direct, ztunnel ÷ stunnel; else stunnel, ztunnel ÷ stunnel. */
  const compared = (
    what: string,
    unit: string,
    pick: (x: Samples) => number[],
    withDirect: boolean,
  ): void => {
    const named = (p: PathName) => `${what}: ${LABEL[p]}`;
    const stunnel = row(named('stunnel'), pick(s.stunnel), unit);
    if (withDirect) {
      const direct = row(named('direct'), pick(s.direct), unit);
      rows.push(
        direct,
        row(named('ztunnel'), pick(s.ztunnel), unit, direct),
        row(named('stunnel'), pick(s.stunnel), unit, direct),
        row(named('ztunnel'), pick(s.ztunnel), unit, stunnel),
      );
    } else rows.push(stunnel, row(named('ztunnel'), pick(s.ztunnel), unit, stunnel));
  };
  compared('iperf3 1 stream', 'Gbit/s', (x) => x.gbps, true);
  compared(`latency p50 at ${RATE} req/s`, 'ms', (x) => x.p50, true);
  compared(`latency p99 at ${RATE} req/s`, 'ms', (x) => x.p99, true);
  for (const q of ['p50', 'p99'] as const) {
    for (const p of ['ztunnel', 'stunnel'] as const) {
      const added = s[p][q].map((x, i) => x - s.direct[q][i]!);
      rows.push(row(`latency ${q} added over direct: ${LABEL[p]}`, added, 'ms'));
    }
  }
  compared('new connections', 'conn/s', (x) => x.connRate, true);
  compared('proxy CPU per 1000 requests (both halves)', 'CPU s', (x) => x.cpuPerKReq, false);
  compared('proxy CPU per 1000 new connections (both halves)', 'CPU s', (x) => x.cpuPerKConn, false);
  compared('proxy CPU per GB moved (both halves)', 'CPU s/GB', (x) => x.cpuPerGB, false);
  compared('proxy peak RSS (VmHWM, larger half)', 'MiB', (x) => x.hwm, false);
  return rows;
}

// ------------------------------------------------------------------------------------------------ main

async function main(): Promise<void> {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    console.error('the L4 benchmark needs root (it runs a lab: network namespaces, iptables)');
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
  labRoot = mkdtempSync(join(tmpdir(), 'l4bench-lab-'));
  workDir = mkdtempSync(join(tmpdir(), 'l4bench-'));

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

  await deployWorkloads(
    lab,
    { plain: NS_PLAIN, mesh: NS_MESH },
    { client: CLIENT_NODE, server: SERVER_NODE },
  );
  const wait = (ns: string, name: string, captured: boolean): Promise<PodRef> =>
    waitForPod(lab, ns, name, { captured, timeoutMs: POD_TIMEOUT_MS });
  const [plainClient, plainServer, meshClient, meshServer] = await Promise.all([
    wait(NS_PLAIN, 'client', false),
    wait(NS_PLAIN, 'server', false),
    wait(NS_MESH, 'client', true),
    wait(NS_MESH, 'server', true),
  ]);
  for (const [c, s] of [
    [plainClient, plainServer],
    [meshClient, meshServer],
  ] as const) {
    if (c.node === s.node) throw new Error(`${c.namespace}: client and server both on ${c.node}`);
  }
  const zmap = await ztunnels(lab);
  const zClient = zmap.get(CLIENT_NODE);
  const zServer = zmap.get(SERVER_NODE);
  if (!zClient || !zServer) throw new Error(`no Ready ztunnel on ${zClient ? SERVER_NODE : CLIENT_NODE}`);
  const zs = [zClient, zServer];
  log(
    `pods Ready: client ${plainClient.ip}/${meshClient.ip} on ${CLIENT_NODE}, ` +
      `server ${plainServer.ip}/${meshServer.ip} on ${SERVER_NODE}`,
  );

  const echo = { echoPort: ECHO_PORT, oncePort: ONCE_PORT, onceBytes: CONN_PAYLOAD_BYTES };
  for (const srv of [plainServer, meshServer]) {
    await startIperfServer(srv.netns, IPERF_PORT);
    await startEcho(srv.netns, echo);
  }
  const stunnel = await startStunnel(workDir, NS_PLAIN, plainClient, plainServer, STUNNEL_ROUTES);

  const zTrees = zs.map((z) => processTree(z.initPid));
  const setups: Record<PathName, PathSetup> = {
    direct: {
      name: 'direct',
      clientNetns: plainClient.netns,
      host: plainServer.ip,
      iperfPort: IPERF_PORT,
      echoPort: ECHO_PORT,
      oncePort: ONCE_PORT,
      cpuPids: [],
      memPids: [],
    },
    ztunnel: {
      name: 'ztunnel',
      clientNetns: meshClient.netns,
      host: meshServer.ip,
      iperfPort: IPERF_PORT,
      echoPort: ECHO_PORT,
      oncePort: ONCE_PORT,
      cpuPids: zTrees.flat(),
      memPids: zTrees.map(largestProcess),
    },
    stunnel: {
      name: 'stunnel',
      clientNetns: plainClient.netns,
      host: '127.0.0.1',
      iperfPort: STUNNEL_ROUTES[0].local,
      echoPort: STUNNEL_ROUTES[1].local,
      oncePort: STUNNEL_ROUTES[2].local,
      cpuPids: [stunnel.client.pid!, stunnel.server.pid!],
      memPids: [stunnel.client.pid!, stunnel.server.pid!],
    },
  };

  const hboneMs = await waitForHbone(lab, zs, setups.ztunnel);
  log(`HBONE carries ${NS_MESH} traffic (${(hboneMs / 1000).toFixed(1)}s after the pods were Ready)`);
  const capture = await CaptureCheck.create(lab, zs);
  for (const p of ['ztunnel', 'stunnel'] as const) {
    const s = setups[p];
    await iperf(s.clientNetns, s.host, s.iperfPort, WARMUP_IPERF_S, 0);
    if (p === 'ztunnel') await capture.expect(2, 'warm-up iperf3');
  }
  log(`set up in ${((performance.now() - started) / 1000).toFixed(0)} s; measuring`);

  const empty = (): Samples => ({
    gbps: [],
    cpuPerGB: [],
    p50: [],
    p99: [],
    cpuPerKReq: [],
    connRate: [],
    cpuPerKConn: [],
    hwm: [],
    rss: [],
    errors: 0,
    lowRate: 0,
  });
  const samples: Record<PathName, Samples> = { direct: empty(), ztunnel: empty(), stunnel: empty() };

  for (let rep = 0; rep < REPS; rep++) {
    // Rotate the order every repetition so no path always runs first or right after the heaviest.
    const order = PATHS.map((_, i) => PATHS[(i + rep) % PATHS.length]!);
    for (const p of order) {
      const s = setups[p];
      await sleep(GAP_MS);
      const before = cpuSeconds(s.cpuPids);
      const g = await iperf(s.clientNetns, s.host, s.iperfPort, DURATION_S, IPERF_OMIT_S);
      const used = cpuSeconds(s.cpuPids) - before;
      // The omitted slow-start second moved data too, at about the same rate.
      const perGB = used / ((g * (DURATION_S + IPERF_OMIT_S)) / 8);
      samples[p].gbps.push(g);
      samples[p].cpuPerGB.push(perGB);
      if (p === 'ztunnel') await capture.expect(2, 'iperf3');
      log(
        `rep ${rep + 1} ${LABEL[p].padEnd(24)} iperf3 ${g.toFixed(2)} Gbit/s` +
          (p === 'direct' ? '' : ` (proxies ${perGB.toFixed(3)} CPU s/GB)`),
      );
    }
    for (const p of order) {
      const s = setups[p];
      await sleep(GAP_MS);
      const before = cpuSeconds(s.cpuPids);
      const r = await latency(s.clientNetns, {
        host: s.host,
        port: s.echoPort,
        connections: CONNECTIONS,
        rate: RATE,
        durationMs: DURATION_S * 1000,
        warmupMs: LATENCY_WARMUP_MS,
        payloadBytes: PAYLOAD_BYTES,
      });
      const used = cpuSeconds(s.cpuPids) - before;
      samples[p].p50.push(r.p50);
      samples[p].p99.push(r.p99);
      samples[p].cpuPerKReq.push(used / (r.completed / 1000));
      samples[p].errors += r.errors;
      if (r.achievedRate < 0.95 * RATE) samples[p].lowRate++;
      if (p === 'ztunnel') await capture.expect(CONNECTIONS, 'latency run');
      log(
        `rep ${rep + 1} ${LABEL[p].padEnd(24)} latency p50 ${r.p50.toFixed(3)} ms p99 ${r.p99.toFixed(3)} ms ` +
          `(${Math.round(r.achievedRate)} req/s` +
          (p === 'direct' ? ')' : `, proxies ${((used * 1000) / r.completed).toFixed(3)} CPU s/1000 req)`),
      );
    }
    for (const p of order) {
      const s = setups[p];
      await sleep(GAP_MS);
      const before = cpuSeconds(s.cpuPids);
      const r = await connRate(s.clientNetns, {
        host: s.host,
        port: s.oncePort,
        concurrency: CONNECTIONS,
        durationMs: DURATION_S * 1000,
        warmupMs: CONN_WARMUP_MS,
        payloadBytes: CONN_PAYLOAD_BYTES,
        timeoutMs: CONN_TIMEOUT_MS,
      });
      const used = cpuSeconds(s.cpuPids) - before;
      samples[p].connRate.push(r.rate);
      samples[p].cpuPerKConn.push(used / (r.completed / 1000));
      samples[p].errors += r.errors;
      if (p === 'ztunnel') await capture.expect(r.completed, 'connection-rate run');
      log(
        `rep ${rep + 1} ${LABEL[p].padEnd(24)} ${Math.round(r.rate)} new conn/s (p50 ${r.p50.toFixed(2)} ms, ` +
          `${r.errors} errors` +
          (p === 'direct' ? ')' : `, proxies ${((used * 1000) / r.completed).toFixed(3)} CPU s/1000 conn)`),
      );
    }
    for (const p of PATHS) {
      const mem = setups[p].memPids.map(memoryMiB);
      samples[p].hwm.push(mem.length === 0 ? 0 : Math.max(...mem.map((m) => m.hwm)));
      samples[p].rss.push(mem.length === 0 ? 0 : Math.max(...mem.map((m) => m.rss)));
    }
  }

  // The non-enrolled namespace must never have gone through a ztunnel.
  const plain = await openedConnections(lab, zs, NS_PLAIN);
  if (plain.source > 0 || plain.destinationMtls > 0)
    throw new Error(`${NS_PLAIN} traffic went through ztunnel (${JSON.stringify(plain)}): not a direct path`);

  const rows = resultRows(samples);
  const loadEnd = loadavg()[0]!;
  const errors = Object.fromEntries(PATHS.map((p) => [p, samples[p].errors]));
  const lowRate = PATHS.filter((p) => samples[p].lowRate > 0);
  const mem = (p: PathName) =>
    `${LABEL[p]} ${median(samples[p].rss).toFixed(1)} MiB now, ${median(samples[p].hwm).toFixed(1)} MiB peak`;
  const file = writeResult({
    benchmark: 'l4',
    description:
      'Cross-node L4 data path in a 2-node lab (client pod on node-0, server pod on node-1): direct pod to pod ' +
      'without the mesh, through the ztunnel pair (namespace enrolled in ambient: HBONE mTLS between the ' +
      "nodes' ztunnels), and through a stunnel TLS 1.3 mutual-TLS pair in the same pods' network namespaces; " +
      `iperf3 one stream, fixed-rate request/response (${RATE} req/s, ${CONNECTIONS} connections, 1 KiB), new ` +
      "connections per second, and the proxies' CPU and memory.",
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, node: process.version },
    rows,
    notes: [
      `Method: ${REPS} interleaved repetitions (path order rotated each time), rows are medians, spread min–max; ` +
        `each measurement counts ${DURATION_S} s: iperf3 -t ${DURATION_S} -O ${IPERF_OMIT_S}; latency after ` +
        `${LATENCY_WARMUP_MS / 1000} s warm-up; connection rate after ${CONN_WARMUP_MS / 1000} s warm-up. One ` +
        `unrecorded ${WARMUP_IPERF_S} s iperf3 run per proxied path first. Clients run in the client pod's ` +
        "network namespace, servers (iperf3 -s, bench/l4/echo.ts) in the server pod's (nsenter).",
      `Rows: "iperf3 1 stream" = Gbit/s client → server; "latency p50/p99" = request/response time at ${RATE} ` +
        `req/s over ${CONNECTIONS} persistent connections, ${PAYLOAD_BYTES} B each way, from the intended send ` +
        'time (bench/hbone/loadgen.ts); "added over direct" = the same minus direct, paired by repetition; ' +
        `"new connections" = connect, ${CONN_PAYLOAD_BYTES} B request, ${CONN_PAYLOAD_BYTES} B answer, server ` +
        `closes, ${CONNECTIONS} concurrent loops as fast as they go (bench/l4/connrate.ts); "proxy CPU" = ` +
        'user+system CPU seconds of both proxy halves (/proc/PID/stat: both ztunnel processes, or both stunnel ' +
        'processes) during the latency run per 1000 requests, during the connection-rate run per 1000 ' +
        'connections, during iperf3 per GB; "peak RSS" = the larger VmHWM of the two halves after each repetition.',
      'ratio: vs direct, higher is better for Gbit/s and conn/s and worse for latency; the goal rows compare the ' +
        'ztunnel pair with the stunnel pair (C/OpenSSL, the floor for an mTLS proxy pair).',
      `ztunnel: deploy/profiles/ambient, one per node, capture verified after every run (each run's ` +
        `connections counted by istio_tcp_connections_opened_total at both ztunnels, reporter=destination with ` +
        `mutual_tls; ${capture.total} in all). ztunnel writes one access-log line per connection (Istio's ` +
        'behaviour); stunnel logs errors only (debug = 3, stderr, no syslog). A new connection costs stunnel ' +
        'a TLS handshake (session resumption on), ztunnel a new HTTP/2 stream on its pooled HBONE connection.',
      `Code measured: ${codeVersion()}.`,
      `stunnel: TLS 1.3 only, verifyChain both ways, client certificate required, ECDSA P-256 SPIFFE ` +
        `certificates from one CA like the mesh's (no SAN check: stunnel has none), TCP_NODELAY. ${toolVersions()}.`,
      `Memory after the runs (larger half, median over repetitions): ${mem('ztunnel')}; ${mem('stunnel')}.`,
      `All processes (lab, istiod, both ztunnels, load generators, backends) share the machine's ` +
        `${cpus().length} cores; machine load average (1 min) at start ${loadStart.toFixed(1)}, at end ` +
        `${loadEnd.toFixed(1)}.`,
      ...(Object.values(errors).some((n) => n > 0)
        ? [`Load generator connection errors over all runs: ${JSON.stringify(errors)}.`]
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
    'Gbit/s',
    '×direct',
    '×stunnel',
    'p50 ms',
    'p99 ms',
    'conn/s',
    '×stunnel',
    'CPU s/1k req',
    'CPU s/1k conn',
    'CPU s/GB',
    'peak RSS MiB',
  ];
  const lines = PATHS.map((p) => {
    const proxy = p !== 'direct';
    return [
      LABEL[p],
      fmt(m(p, 'gbps')),
      fmt(m(p, 'gbps') / m('direct', 'gbps')),
      fmt(m(p, 'gbps') / m('stunnel', 'gbps')),
      fmt(m(p, 'p50'), 3),
      fmt(m(p, 'p99'), 3),
      fmt(m(p, 'connRate'), 0),
      fmt(m(p, 'connRate') / m('stunnel', 'connRate')),
      proxy ? fmt(m(p, 'cpuPerKReq'), 3) : '—',
      proxy ? fmt(m(p, 'cpuPerKConn'), 3) : '—',
      proxy ? fmt(m(p, 'cpuPerGB'), 3) : '—',
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
  console.error(`bench l4 failed: ${(err as Error).stack ?? String(err)}`);
} finally {
  await teardown();
}
process.exit(failed ? 1 : 0);
