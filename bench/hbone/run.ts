/**
 * HBONE benchmark: our HBONE pair side by side with direct TCP, a stunnel mTLS pair, a plain node:tls pair
 * and the "20-line" Node HTTP/2 CONNECT pair, all on loopback in the same run, interleaved, ≥3 repetitions.
 *
 *   node bench/hbone/run.ts [--reps 3] [--iperf-seconds 3] [--latency-seconds 4] [--rate 1000]
 *                           [--connections 10] [--paths direct,stunnel,node-tls,naive-h2,hbone]
 *
 * Tools come from Debian: `apt-get install -y iperf3 stunnel4` (iperf3 is required; without stunnel its
 * rows are reported missing). The latency load generator is ours (loadgen.ts), since no installed Debian tool
 * does fixed-rate request/response over persistent connections (wrk is closed-loop and not installed).
 *
 * Topology per path (each box its own process): iperf3/loadgen → [client half] → [server half] → iperf3 -s
 * / echo backend. Output: bench/results/hbone.json in the shared format of bench/lib.ts (rows {name, value,
 * unit, reference, ratio, min, max, samples}; `npm run bench hbone` also regenerates docs/benchmarks.md) and
 * a summary table on stdout. See bench/README.md for what the numbers mean.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { type AddressInfo, connect, createServer } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Identity } from '../../pkg/identity/index.ts';
import { FakeCa } from '../../pkg/testing/fake-ca.ts';
import { median, type Row, row, writeResult } from '../lib.ts';
import type { CertFiles, ProxyConfig } from './proxy.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const HOST = '127.0.0.1';
const NODE = process.execPath;
/** How long a child may take to start listening. */
const START_TIMEOUT_MS = 10_000;
/** iperf3 `-O`: seconds of slow-start dropped from its result. */
const IPERF_OMIT_SECONDS = 1;
const LATENCY_WARMUP_MS = 1_000;
/** Unrecorded iperf3 run per proxied path before the repetitions (JIT warm-up). */
const WARMUP_IPERF_SECONDS = 2;
const PAYLOAD_BYTES = 1024;
/** Pause between runs so sockets in TIME_WAIT and iperf3's server reset do not leak into the next one. */
const GAP_MS = 300;

type PathName = 'direct' | 'stunnel' | 'node-tls' | 'naive-h2' | 'hbone';
const ALL_PATHS: PathName[] = ['direct', 'stunnel', 'node-tls', 'naive-h2', 'hbone'];
const LABEL: Record<PathName, string> = {
  direct: 'direct TCP',
  stunnel: 'stunnel mTLS pair',
  'node-tls': 'Node tls pair',
  'naive-h2': '20-line Node h2 pair',
  hbone: 'HBONE pair (ours)',
};

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i !== -1 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : dflt;
}

const REPS = Number(arg('reps', '3'));
const IPERF_SECONDS = Number(arg('iperf-seconds', '3'));
const LATENCY_SECONDS = Number(arg('latency-seconds', '4'));
const RATE = Number(arg('rate', '1000'));
const CONNECTIONS = Number(arg('connections', '10'));
const PATHS = arg('paths', ALL_PATHS.join(','))
  .split(',')
  .filter((p): p is PathName => (ALL_PATHS as string[]).includes(p));

/** Extra Node flags for the proxy processes, e.g. BENCH_PROXY_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'. */
const PROXY_NODE_ARGS = (process.env.BENCH_PROXY_NODE_ARGS ?? '').split(' ').filter((a) => a.length > 0);

const children: ChildProcess[] = [];
function cleanup(): void {
  for (const c of children) if (c.exitCode === null && c.pid !== undefined) c.kill('SIGTERM');
}
process.on('exit', cleanup);
process.on('SIGINT', () => {
  cleanup();
  process.exit(130);
});

function which(tool: string): string | null {
  try {
    return execFileSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, HOST, r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Starts a Node proxy/backend and waits for its READY line. */
async function startNode(cfg: ProxyConfig): Promise<ChildProcess> {
  const child = spawn(NODE, [...PROXY_NODE_ARGS, join(HERE, 'proxy.ts'), JSON.stringify(cfg)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${cfg.mode} did not start`)), START_TIMEOUT_MS);
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('READY')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => reject(new Error(`${cfg.mode} exited with ${code}`)));
  });
  return child;
}

async function waitForPort(port: number): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ host: HOST, port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on ${port}`);
    await sleep(50);
  }
}

/** CPU seconds (user+system) a process used so far, from /proc/PID/stat. */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the comm field; clock ticks of 1/100 s.
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return Number.NaN;
  }
}

/** Peak resident memory (VmHWM) in MiB. */
function peakRssMiB(pid: number): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

interface PathSetup {
  readonly iperfPort: number;
  readonly echoPort: number;
  /** The proxy processes (for CPU and memory); empty for direct. */
  readonly pids: number[];
}

function identity(sa: string): Identity {
  return { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: sa };
}

function writeCerts(dir: string): {
  client: CertFiles;
  server: CertFiles;
  clientId: Identity;
  serverId: Identity;
} {
  const ca = new FakeCa();
  const root = join(dir, 'root.pem');
  writeFileSync(root, ca.rootPem);
  const make = (name: string, id: Identity): CertFiles => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const key = join(dir, `${name}.key`);
    const chain = join(dir, `${name}.pem`);
    writeFileSync(key, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
    writeFileSync(chain, ca.sign(id, publicKey));
    return { key, chain, root };
  };
  const clientId = identity('bench-client');
  const serverId = identity('bench-server');
  return { client: make('client', clientId), server: make('server', serverId), clientId, serverId };
}

async function setupStunnel(
  dir: string,
  certs: ReturnType<typeof writeCerts>,
  iperf: number,
  echo: number,
): Promise<PathSetup> {
  const [si, se, ci, ce] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const common = (c: CertFiles) =>
    [
      `cert = ${c.chain}`,
      `key = ${c.key}`,
      `CAfile = ${c.root}`,
      'verifyChain = yes',
      'sslVersionMin = TLSv1.3',
      'sslVersionMax = TLSv1.3',
      'socket = l:TCP_NODELAY=1',
      'socket = r:TCP_NODELAY=1',
    ].join('\n');
  const global = 'foreground = yes\npid =\ndebug = 3\n';
  const server = `${global}[iperf]\naccept = ${HOST}:${si}\nconnect = ${HOST}:${iperf}\n${common(certs.server)}\nrequireCert = yes\n[echo]\naccept = ${HOST}:${se}\nconnect = ${HOST}:${echo}\n${common(certs.server)}\nrequireCert = yes\n`;
  const client = `${global}[iperf]\nclient = yes\naccept = ${HOST}:${ci}\nconnect = ${HOST}:${si}\n${common(certs.client)}\n[echo]\nclient = yes\naccept = ${HOST}:${ce}\nconnect = ${HOST}:${se}\n${common(certs.client)}\n`;
  const pids: number[] = [];
  for (const [name, conf, ports] of [
    ['stunnel-server.conf', server, [si, se]],
    ['stunnel-client.conf', client, [ci, ce]],
  ] as const) {
    const file = join(dir, name);
    writeFileSync(file, conf);
    const child = spawn('stunnel', [file], { stdio: ['ignore', 'ignore', 'ignore'] });
    children.push(child);
    for (const p of ports) await waitForPort(p);
    pids.push(child.pid!);
  }
  return { iperfPort: ci, echoPort: ce, pids };
}

async function setupPair(
  mode: 'hbone' | 'naive-h2' | 'node-tls',
  certs: ReturnType<typeof writeCerts>,
  iperf: number,
  echo: number,
): Promise<PathSetup> {
  const [ci, ce] = [await freePort(), await freePort()];
  const base = { clientId: certs.clientId, serverId: certs.serverId };
  if (mode === 'node-tls') {
    const [ti, te] = [await freePort(), await freePort()];
    const server = await startNode({
      mode: 'tls-server',
      cert: certs.server,
      identity: base.serverId,
      routes: [
        { listen: ti, target: iperf },
        { listen: te, target: echo },
      ],
    });
    const client = await startNode({
      mode: 'tls-client',
      cert: certs.client,
      identity: base.clientId,
      peerIdentity: base.serverId,
      routes: [
        { listen: ci, target: ti },
        { listen: ce, target: te },
      ],
    });
    return { iperfPort: ci, echoPort: ce, pids: [client.pid!, server.pid!] };
  }
  const serverPort = await freePort();
  const server = await startNode({
    mode: mode === 'hbone' ? 'hbone-server' : 'naive-h2-server',
    cert: certs.server,
    identity: base.serverId,
    listen: serverPort,
  });
  const client = await startNode({
    mode: mode === 'hbone' ? 'hbone-client' : 'naive-h2-client',
    cert: certs.client,
    identity: base.clientId,
    peerIdentity: base.serverId,
    peer: serverPort,
    routes: [
      { listen: ci, target: iperf },
      { listen: ce, target: echo },
    ],
  });
  return { iperfPort: ci, echoPort: ce, pids: [client.pid!, server.pid!] };
}

function runIperf(port: number, seconds = IPERF_SECONDS, omit = IPERF_OMIT_SECONDS): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      'iperf3',
      ['-c', HOST, '-p', String(port), '-t', String(seconds), '-O', String(omit), '-J'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.once('exit', () => {
      try {
        const j = JSON.parse(out) as {
          end?: { sum_received?: { bits_per_second?: number } };
          error?: string;
        };
        const bps = j.end?.sum_received?.bits_per_second;
        if (bps === undefined) reject(new Error(`iperf3: ${j.error ?? 'no result'}`));
        else resolve(bps / 1e9);
      } catch (err) {
        reject(err);
      }
    });
  });
}

interface LatencyResult {
  count: number;
  errors: number;
  achievedRate: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

function runLatency(port: number): Promise<LatencyResult> {
  const cfg = {
    port,
    connections: CONNECTIONS,
    rate: RATE,
    durationMs: LATENCY_SECONDS * 1000,
    warmupMs: LATENCY_WARMUP_MS,
    payloadBytes: PAYLOAD_BYTES,
  };
  return new Promise((resolve, reject) => {
    const child = spawn(NODE, [join(HERE, 'loadgen.ts'), JSON.stringify(cfg)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.once('exit', () => {
      try {
        resolve(JSON.parse(out) as LatencyResult);
      } catch (err) {
        reject(err);
      }
    });
  });
}

function iperfVersion(): string {
  return execFileSync('iperf3', ['--version'], { encoding: 'utf8' }).split('\n')[0] ?? 'iperf3';
}

function stunnelVersion(): string {
  try {
    return execFileSync('sh', ['-c', 'stunnel -version 2>&1 | grep -m1 "^stunnel"'], {
      encoding: 'utf8',
    }).trim();
  } catch {
    return 'stunnel missing';
  }
}

interface Samples {
  readonly gbps: Map<PathName, number[]>;
  readonly cpuPerGB: Map<PathName, number[]>;
  readonly p50: Map<PathName, number[]>;
  readonly p99: Map<PathName, number[]>;
  readonly cpu: Map<PathName, number[]>;
}

/**
 * The rows: throughput (proxies vs stunnel, stunnel and HBONE also vs direct), CPU per GB and CPU at the
 * fixed rate (vs stunnel), latency p50/p99 (vs direct, HBONE also vs stunnel) and the latency each pair adds
 * over direct, paired by repetition.
 */
function resultRows(paths: readonly PathName[], s: Samples): Row[] {
  const rows: Row[] = [];
  const has = (p: PathName) => paths.includes(p);
  const proxied = paths.filter((p) => p !== 'direct');

  const tput = new Map<PathName, Row>();
  for (const p of paths) {
    const r = row(`iperf3 1 stream: ${LABEL[p]}`, s.gbps.get(p)!, 'Gbit/s', null);
    tput.set(p, r);
  }
  const vs = (p: PathName, ref: PathName | null, m: Map<PathName, Row>) =>
    ref !== null && has(ref) && ref !== p ? m.get(ref)! : null;
  for (const p of paths) {
    const ref = p === 'direct' ? null : p === 'stunnel' ? 'direct' : 'stunnel';
    rows.push(row(`iperf3 1 stream: ${LABEL[p]}`, s.gbps.get(p)!, 'Gbit/s', vs(p, ref, tput)));
  }
  if (has('hbone') && has('direct') && has('stunnel')) {
    rows.push(row(`iperf3 1 stream: ${LABEL.hbone}`, s.gbps.get('hbone')!, 'Gbit/s', tput.get('direct')!));
  }

  const perGB = new Map<PathName, Row>();
  for (const p of proxied)
    perGB.set(p, row(`proxy CPU per GB moved: ${LABEL[p]}`, s.cpuPerGB.get(p)!, 'CPU s/GB'));
  for (const p of proxied) {
    rows.push(
      row(`proxy CPU per GB moved: ${LABEL[p]}`, s.cpuPerGB.get(p)!, 'CPU s/GB', vs(p, 'stunnel', perGB)),
    );
  }

  for (const [q, m] of [
    ['p50', s.p50],
    ['p99', s.p99],
  ] as const) {
    const base = new Map<PathName, Row>();
    for (const p of paths) base.set(p, row(`latency ${q}: ${LABEL[p]}`, m.get(p)!, 'ms'));
    for (const p of paths) {
      rows.push(row(`latency ${q}: ${LABEL[p]}`, m.get(p)!, 'ms', vs(p, 'direct', base)));
    }
    if (has('hbone') && has('stunnel')) {
      rows.push(row(`latency ${q}: ${LABEL.hbone}`, m.get('hbone')!, 'ms', base.get('stunnel')!));
    }
    if (has('direct')) {
      const direct = m.get('direct')!;
      for (const p of proxied) {
        const added = m.get(p)!.map((x, i) => x - direct[i]!);
        rows.push(row(`latency ${q} added over direct: ${LABEL[p]}`, added, 'ms'));
      }
    }
  }

  const cores = new Map<PathName, Row>();
  for (const p of proxied)
    cores.set(p, row(`proxy CPU at ${RATE} req/s: ${LABEL[p]}`, s.cpu.get(p)!, 'cores'));
  for (const p of proxied) {
    rows.push(
      row(`proxy CPU at ${RATE} req/s: ${LABEL[p]}`, s.cpu.get(p)!, 'cores', vs(p, 'stunnel', cores)),
    );
  }
  return rows;
}

async function main(): Promise<void> {
  if (which('iperf3') === null) {
    console.error('iperf3 not found: install it with `apt-get install -y iperf3 stunnel4`');
    process.exit(2);
  }
  const paths = PATHS.filter((p) => {
    if (p === 'stunnel' && which('stunnel') === null) {
      console.error('stunnel not found (apt-get install -y stunnel4): stunnel rows will be missing');
      return false;
    }
    return true;
  });
  const dir = mkdtempSync(join(tmpdir(), 'bench-hbone-'));
  const started = performance.now();
  const loadStart = loadavg()[0]!;
  try {
    const certs = writeCerts(dir);
    const iperfPort = await freePort();
    const iperf = spawn('iperf3', ['-s', '-p', String(iperfPort)], { stdio: ['ignore', 'ignore', 'ignore'] });
    children.push(iperf);
    await waitForPort(iperfPort);
    const echoPort = await freePort();
    await startNode({ mode: 'echo', listen: echoPort });

    const setups = new Map<PathName, PathSetup>();
    for (const p of paths) {
      if (p === 'direct') setups.set(p, { iperfPort, echoPort, pids: [] });
      else if (p === 'stunnel') setups.set(p, await setupStunnel(dir, certs, iperfPort, echoPort));
      else setups.set(p, await setupPair(p, certs, iperfPort, echoPort));
    }

    const gbps = new Map<PathName, number[]>(paths.map((p) => [p, []]));
    const p50 = new Map<PathName, number[]>(paths.map((p) => [p, []]));
    const p99 = new Map<PathName, number[]>(paths.map((p) => [p, []]));
    const cpu = new Map<PathName, number[]>(paths.map((p) => [p, []]));
    const cpuPerGB = new Map<PathName, number[]>(paths.map((p) => [p, []]));
    const lost = new Map<PathName, number>(paths.map((p) => [p, 0]));

    // One short unrecorded transfer per path first: fresh Node proxies ramp up over ~2 s while V8 optimizes
    // the data path, which would otherwise land in the first repetition only.
    for (const p of paths) {
      const s = setups.get(p)!;
      if (s.pids.length > 0) await runIperf(s.iperfPort, WARMUP_IPERF_SECONDS, 0);
    }

    for (let rep = 0; rep < REPS; rep++) {
      // Rotate the order each repetition so no path always runs first (or right after the heaviest one).
      const order = paths.map((_, i) => paths[(i + rep) % paths.length]!);
      for (const p of order) {
        const s = setups.get(p)!;
        await sleep(GAP_MS);
        const before = s.pids.map(cpuSeconds);
        const g = await runIperf(s.iperfPort);
        const used = s.pids.reduce((acc, pid, i) => acc + cpuSeconds(pid) - before[i]!, 0);
        // CPU seconds of both proxies per GB moved (the omitted warm-up second moved data too, at about the
        // same rate): less sensitive to other load on the machine than Gbit/s.
        const perGB = used / ((g * (IPERF_SECONDS + IPERF_OMIT_SECONDS)) / 8);
        gbps.get(p)!.push(g);
        cpuPerGB.get(p)!.push(s.pids.length === 0 ? 0 : perGB);
        process.stdout.write(
          `rep ${rep + 1} ${LABEL[p].padEnd(22)} iperf3 ${g.toFixed(2)} Gbit/s (proxies ${perGB.toFixed(3)} CPU s/GB)\n`,
        );
      }
      for (const p of order) {
        const s = setups.get(p)!;
        await sleep(GAP_MS);
        const before = s.pids.map(cpuSeconds);
        const t0 = performance.now();
        const r = await runLatency(s.echoPort);
        const wall = (performance.now() - t0) / 1000;
        const used = s.pids.reduce((acc, pid, i) => acc + cpuSeconds(pid) - before[i]!, 0);
        p50.get(p)!.push(r.p50);
        p99.get(p)!.push(r.p99);
        cpu.get(p)!.push(s.pids.length === 0 ? 0 : used / wall);
        lost.set(p, lost.get(p)! + r.errors);
        process.stdout.write(
          `rep ${rep + 1} ${LABEL[p].padEnd(22)} latency p50 ${r.p50.toFixed(3)} ms p99 ${r.p99.toFixed(3)} ms ` +
            `(${Math.round(r.achievedRate)} req/s, proxies ${(used / wall).toFixed(3)} cores)\n`,
        );
      }
    }

    const rows = resultRows(paths, { gbps, cpuPerGB, p50, p99, cpu });
    const memory: Record<string, number[]> = {};
    for (const p of paths) memory[p] = setups.get(p)!.pids.map((pid) => Math.round(peakRssMiB(pid)));
    const latencyDesc = `${RATE} req/s, ${CONNECTIONS} conns, ${PAYLOAD_BYTES} B`;
    const loadEnd = loadavg()[0]!;
    const file = writeResult({
      benchmark: 'hbone',
      description:
        'HBONE data path (pkg/hbone pool → server over mTLS HTTP/2 CONNECT) side by side with direct TCP, a ' +
        'stunnel mTLS pair, a node:tls pair and the 20-line Node h2 pair; iperf3 one stream and fixed-rate ' +
        `request/response (${latencyDesc}) on loopback.`,
      date: new Date().toISOString(),
      machine: { cpus: cpus().length, node: process.version },
      rows,
      notes: [
        `${REPS} interleaved repetitions (order rotated); iperf3 -t ${IPERF_SECONDS} -O ${IPERF_OMIT_SECONDS} after ` +
          `an unrecorded ${WARMUP_IPERF_SECONDS} s warm-up per path; latency ${LATENCY_SECONDS} s after ` +
          `${LATENCY_WARMUP_MS / 1000} s warm-up (bench/hbone/loadgen.ts).`,
        `Tools: ${iperfVersion()}; ${stunnelVersion()}. Every process shares the ${cpus().length} cores.`,
        `Peak RSS (VmHWM, MiB, client+server half): ${paths
          .filter((p) => memory[p]!.length > 0)
          .map((p) => `${LABEL[p]} ${memory[p]!.join('+')}`)
          .join('; ')}.`,
        `Machine load average (1 min) at start ${loadStart.toFixed(1)}, at end ${loadEnd.toFixed(1)}: ` +
          'other work on the machine shows up as spread.',
        ...(Array.from(lost.values()).some((n) => n > 0)
          ? [`Load generator connection errors: ${JSON.stringify(Object.fromEntries(lost))}.`]
          : []),
      ],
    });

    // ---------- table ----------
    const fmt = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '—');
    const spread = (xs: number[], d = 2) => `${fmt(Math.min(...xs), d)}–${fmt(Math.max(...xs), d)}`;
    const dG = gbps.has('direct') ? median(gbps.get('direct')!) : Number.NaN;
    const sG = gbps.has('stunnel') ? median(gbps.get('stunnel')!) : Number.NaN;
    const d50 = p50.has('direct') ? median(p50.get('direct')!) : Number.NaN;
    const d99 = p99.has('direct') ? median(p99.get('direct')!) : Number.NaN;
    const header = [
      'path',
      'Gbit/s (median, spread)',
      '×direct',
      '×stunnel',
      'CPU s/GB',
      'p50 ms',
      'p99 ms',
      '+p50',
      '+p99',
      'CPU cores @rate',
      'RSS MiB',
    ];
    const lines = paths.map((p) => {
      const g = median(gbps.get(p)!);
      const l50 = median(p50.get(p)!);
      const l99 = median(p99.get(p)!);
      return [
        LABEL[p],
        `${fmt(g)} (${spread(gbps.get(p)!)})`,
        fmt(g / dG),
        fmt(g / sG),
        p === 'direct' ? '—' : fmt(median(cpuPerGB.get(p)!), 3),
        fmt(l50, 3),
        fmt(l99, 3),
        fmt(l50 - d50, 3),
        fmt(l99 - d99, 3),
        p === 'direct' ? '—' : fmt(median(cpu.get(p)!), 3),
        memory[p]!.length === 0 ? '—' : memory[p]!.join('+'),
      ];
    });
    const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
    const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
    console.log('');
    console.log(line(header));
    console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
    for (const l of lines) console.log(line(l));
    console.log('');
    console.log(
      `${REPS} interleaved repetitions; iperf3 -t ${IPERF_SECONDS} -O ${IPERF_OMIT_SECONDS}; latency at ${latencyDesc}, ` +
        `${LATENCY_SECONDS}s after ${LATENCY_WARMUP_MS / 1000}s warm-up; CPU = both proxy processes during the latency run.`,
    );
    console.log(
      'PERFORMANCE.md reference (2 cores): 20-line Node h2 pair 1.9–2.1 Gbit/s, tuned windows 2.9–3.2 Gbit/s.',
    );
    console.log(`wrote ${file} in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  } finally {
    cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
process.exit(0);
