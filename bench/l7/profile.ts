/**
 * Where the waypoint's CPU goes, without the lab (the lab's waypoint pod cannot be started with --cpu-prof):
 * the real Waypoint class in a child process run with `node --cpu-prof`, fed the routing of the L7 benchmark
 * (the ServiceConfigs istiod compiles from its HTTPRoute: PathPrefix /api + header → echo-v1, PathPrefix /api →
 * echo-v2) from a static source, certificates from a FakeCa in this process (over IPC). This process plays the
 * rest: the source ztunnel (HbonePool tunnels to the waypoint, authority VIP:80, a client workload's
 * certificate), the destination ztunnel (an HboneServer with the backend's identity that pipes each CONNECT to
 * the backend) and the backend (Node http, 1 KiB answers). Load: the L7 benchmark's generator
 * (bench/l7/httpload.ts) over the tunnels, closed loop. Prints the rate, the waypoint's CPU, and its profile
 * summed by component and by function (self time).
 *
 *   node bench/l7/profile.ts [--seconds=8] [--connections=16] [--rate=<req/s>] [--access-log] [--no-profile]
 *                            [--keep=<file.cpuprofile>]
 *
 * No root, no lab; loopback only. Not a benchmark of its own (bench/run.ts runs only run.ts files).
 */
import { type ChildProcess, fork } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { type AddressInfo, connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { HbonePool, HboneServer, pipeBidirectional } from '../../pkg/hbone/index.ts';
import { CertManager, type Identity } from '../../pkg/identity/index.ts';
import { FakeCa } from '../../pkg/testing/fake-ca.ts';
import { runLoad } from './httpload.ts';

const TD = 'cluster.local';
const NS = 'l7-wp';
const CLIENT: Identity = { trustDomain: TD, namespace: NS, serviceAccount: 'default' };
const BACKEND: Identity = { trustDomain: TD, namespace: NS, serviceAccount: 'backend' };
const WAYPOINT: Identity = { trustDomain: TD, namespace: NS, serviceAccount: 'waypoint' };
const VIP = '10.96.7.10';
const V1_IP = '10.0.7.1';
const V2_IP = '10.0.7.2';
const V1_PORT = 8080;
const V2_PORT = 8081;

interface ChildArgs {
  readonly ztunnelPort: number;
  readonly accessLog: boolean;
  /** Run the V8 sampling profiler (it costs CPU of its own; off to measure the waypoint's CPU alone). */
  readonly profile: boolean;
}

type ToChild =
  | { kind: 'cert'; id: number; chain?: string[]; error?: string }
  | { kind: 'profile-start' }
  | { kind: 'profile-stop' }
  | { kind: 'stop' };
type ToParent =
  | { kind: 'csr'; id: number; identity: Identity; csr: string }
  | { kind: 'ready'; hbonePort: number }
  | { kind: 'profiling' }
  | { kind: 'profile'; file: string; stalls: string }
  | { kind: 'failed'; error: string };

// ------------------------------------------------------------------------------------------------ child

async function waypointChild(args: ChildArgs, dir: string): Promise<void> {
  const { ServiceConfig } = await import('../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts');
  const { StaticConfigSource, Waypoint } = await import('../../waypoint/src/app.ts');
  const { loadConfig } = await import('../../waypoint/src/config.ts');
  const { createLogger } = await import('../../pkg/telemetry/index.ts');
  const send = (m: ToParent) => process.send!(m);
  const pending = new Map<number, { resolve: (c: string[]) => void; reject: (e: Error) => void }>();
  let next = 0;
  const ca = {
    fetchCertificate(identity: Identity, csr: string): Promise<string[]> {
      const id = next++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        send({ kind: 'csr', id, identity, csr });
      });
    },
  };
  let stop: () => Promise<void> = async () => undefined;
  // The V8 profiler through the inspector, only around the measured run (no start-up, no warm-up).
  const { Session } = await import('node:inspector/promises');
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 500 });
  // Event-loop stalls and GC pauses over the measured run: where latency tails come from.
  const { monitorEventLoopDelay, PerformanceObserver } = await import('node:perf_hooks');
  const eld = monitorEventLoopDelay({ resolution: 5 });
  const gcs: { kind: number; ms: number }[] = [];
  const gcObserver = new PerformanceObserver((list) => {
    for (const e of list.getEntries())
      gcs.push({ kind: (e as { detail?: { kind?: number } }).detail?.kind ?? 0, ms: e.duration });
  });
  const stalls = (): string => {
    const ms = (ns: number) => (ns / 1e6).toFixed(1);
    const byKind = new Map<string, { n: number; total: number; max: number }>();
    // perf_hooks constants: 1 minor (scavenge), 2 major (mark-compact), 4 incremental, 8 weak callbacks.
    const names: Record<number, string> = { 1: 'minor', 2: 'major', 4: 'incremental', 8: 'weakcb' };
    for (const g of gcs) {
      const k = names[g.kind] ?? String(g.kind);
      const v = byKind.get(k) ?? { n: 0, total: 0, max: 0 };
      v.n++;
      v.total += g.ms;
      v.max = Math.max(v.max, g.ms);
      byKind.set(k, v);
    }
    const gc = [...byKind]
      .map(([k, v]) => `${k} ${v.n}× (total ${v.total.toFixed(0)} ms, max ${v.max.toFixed(1)} ms)`)
      .join(', ');
    return (
      `event-loop delay p50 ${ms(eld.percentile(50))} ms, p99 ${ms(eld.percentile(99))} ms, max ` +
      `${ms(eld.max)} ms; GC ${gc || 'none'}; heap used ${(process.memoryUsage().heapUsed / 2 ** 20).toFixed(0)} MiB`
    );
  };
  process.on('message', (m: ToChild) => {
    if (m.kind === 'cert') {
      const p = pending.get(m.id);
      pending.delete(m.id);
      if (m.chain) p?.resolve(m.chain);
      else p?.reject(new Error(m.error ?? 'no certificate'));
    } else if (m.kind === 'profile-start') {
      eld.enable();
      gcObserver.observe({ entryTypes: ['gc'] });
      if (args.profile) void session.post('Profiler.start').then(() => send({ kind: 'profiling' }));
      else send({ kind: 'profiling' });
    } else if (m.kind === 'profile-stop') {
      const stopped = args.profile
        ? session.post('Profiler.stop').then((r) => r.profile)
        : Promise.resolve({ nodes: [], samples: [], timeDeltas: [] });
      void stopped.then((profile) => {
        const file = join(dir, 'waypoint.cpuprofile');
        writeFileSync(file, JSON.stringify(profile));
        eld.disable();
        gcObserver.disconnect();
        send({ kind: 'profile', file, stalls: stalls() });
      });
    } else if (m.kind === 'stop') void stop().finally(() => process.exit(0));
  });

  const host = (name: string) => `${name}.${NS}.svc.cluster.local`;
  const key = (name: string) => `${NS}/${host(name)}`;
  const endpoint = (ip: string, port: number, version: string) => ({
    workloadUid: `Kubernetes//Pod/${NS}/server-${version}`,
    address: ip,
    ports: { 80: port },
    identity: `spiffe://${TD}/ns/${NS}/sa/backend`,
    healthy: true,
    hbone: true,
    subsets: [],
    workloadName: 'server',
    workloadNamespace: NS,
    canonicalService: 'server',
    canonicalRevision: 'latest',
    serviceAccount: 'backend',
  });
  const service = (name: string, vip: string, targetPort: number, extra: object) =>
    ServiceConfig.fromPartial({
      name: key(name),
      namespace: NS,
      hostname: host(name),
      serviceName: name,
      addresses: [vip],
      ports: [{ port: 80, targetPort, name: 'http', protocol: 'http' }],
      waypoints: [`${NS}/waypoint`],
      ...extra,
    });
  const prefix = { kind: { $case: 'pathSeparatedPrefix' as const, value: '/api' } };
  const configs = [
    service('echo', VIP, V1_PORT, {
      endpoints: [endpoint(V1_IP, V1_PORT, 'v1')],
      routeSource: 'HTTPRoute',
      routes: [
        {
          name: `${NS}.echo.0`,
          matches: [
            {
              path: prefix,
              headers: [{ name: 'x-backend', value: { kind: { $case: 'exact', value: 'v1' } } }],
            },
          ],
          action: { backends: [{ service: key('echo-v1'), port: 80, weight: 1 }] },
        },
        {
          name: `${NS}.echo.1`,
          matches: [{ path: prefix }],
          action: { backends: [{ service: key('echo-v2'), port: 80, weight: 1 }] },
        },
      ],
    }),
    service('echo-v1', '10.96.7.11', V1_PORT, { endpoints: [endpoint(V1_IP, V1_PORT, 'v1')] }),
    service('echo-v2', '10.96.7.12', V2_PORT, { endpoints: [endpoint(V2_IP, V2_PORT, 'v2')] }),
  ];
  const config = loadConfig({
    POD_NAME: 'waypoint-6d9f7c8b5d-x2x7q',
    POD_NAMESPACE: NS,
    SERVICE_ACCOUNT: 'waypoint',
    GATEWAY_NAME: 'waypoint',
    INSTANCE_IP: '127.0.0.1',
    HBONE_PORT: '0',
    ADMIN_PORT: '0',
    STATS_PORT: '0',
    READINESS_PORT: '0',
    ACCESS_LOG: String(args.accessLog),
  });
  const waypoint = await Waypoint.create({
    config,
    logger: createLogger({ component: 'waypoint', level: 'info' }),
    ca,
    configSource: new StaticConfigSource(configs),
    hboneListen: { host: '127.0.0.1', port: 0 },
    upstreamSocket: () => netConnect({ host: '127.0.0.1', port: args.ztunnelPort }),
  });
  stop = () => waypoint.close(0);
  await waypoint.run();
  for (let i = 0; i < 100; i++) {
    const r = await fetch(`http://127.0.0.1:${waypoint.ports.readiness}/healthz/ready`);
    if (r.status === 200) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  send({ kind: 'ready', hbonePort: waypoint.ports.hbone });
}

// ------------------------------------------------------------------------------------------------ profile

interface ProfileNode {
  readonly id: number;
  readonly callFrame: {
    readonly functionName: string;
    readonly url: string;
    readonly lineNumber: number;
  };
  readonly children?: readonly number[];
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/** Which part of the system a frame belongs to (its file, or a V8/native pseudo frame). */
function component(url: string, fn: string): string {
  if (url === '') {
    if (fn === '(garbage collector)') return 'GC';
    if (fn === '(idle)' || fn === '(program)') return fn;
    return `native: ${fn || '(anonymous)'}`;
  }
  const repo =
    /\/(waypoint\/src\/[^/]+(?:\/[^/]+)?|pkg\/[^/]+)\//.exec(url) ?? /\/(waypoint\/src\/[^/]+)$/.exec(url);
  if (url.includes('/node_modules/')) return `npm: ${/node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)?.[1]}`;
  if (url.startsWith('node:')) {
    const m = url.slice(5);
    if (/tls|crypto/.test(m)) return 'node: tls';
    if (/http2/.test(m)) return 'node: http2';
    if (/_http|internal\/http/.test(m)) return 'node: http/1.1';
    if (/stream|net|buffer/.test(m)) return 'node: streams/net';
    return `node: ${m.split('/').slice(-1)[0]}`;
  }
  const file = /\/((?:waypoint\/src|pkg)\/.+)$/.exec(url)?.[1];
  return file ?? repo?.[1] ?? url;
}

interface Summary {
  readonly total: number;
  readonly byComponent: [string, number][];
  readonly byFunction: [string, number][];
  /** Functions of the repository (waypoint/src, pkg) by inclusive time: the time spent in them and below. */
  readonly inclusive: [string, number][];
}

function frameName(f: ProfileNode['callFrame']): string {
  const where = f.url
    ? `${f.url.replace(/^.*\/(waypoint|pkg|node_modules)\//, '$1/')}:${f.lineNumber + 1}`
    : '';
  return `${f.functionName || '(anonymous)'} ${where}`.trim();
}

const OURS = /\/(waypoint\/src|pkg)\//;

function summarize(p: CpuProfile): Summary {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<number, number>();
  let total = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const dt = p.timeDeltas[i] ?? 0;
    self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + dt);
    total += dt;
  }
  const comp = new Map<string, number>();
  const func = new Map<string, number>();
  const incl = new Map<string, number>();
  for (const [id, us] of self) {
    const f = byId.get(id)!.callFrame;
    const c = component(f.url, f.functionName);
    comp.set(c, (comp.get(c) ?? 0) + us);
    const name = frameName(f);
    func.set(name, (func.get(name) ?? 0) + us);
    const seen = new Set<string>();
    for (let n: number | undefined = id; n !== undefined; n = parent.get(n)) {
      const g = byId.get(n)!.callFrame;
      if (!OURS.test(g.url) || g.url.includes('/node_modules/')) continue;
      const k = frameName(g);
      if (seen.has(k)) continue;
      seen.add(k);
      incl.set(k, (incl.get(k) ?? 0) + us);
    }
  }
  const sorted = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]);
  return { total, byComponent: sorted(comp), byFunction: sorted(func), inclusive: sorted(incl) };
}

// ------------------------------------------------------------------------------------------------ parent

const CLOCK_TICKS = 100;

function cpuOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS;
}

async function parent(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      seconds: { type: 'string', default: '8' },
      connections: { type: 'string', default: '16' },
      /** Fixed rate (req/s) instead of the closed loop. */
      rate: { type: 'string' },
      'access-log': { type: 'boolean', default: false },
      /** Measure only (no V8 profiler in the waypoint). */
      'no-profile': { type: 'boolean', default: false },
      keep: { type: 'string' },
    },
  });
  const seconds = Number(values.seconds);
  const dir = mkdtempSync(join(tmpdir(), 'l7profile-'));
  const ca = new FakeCa();
  const certs = new CertManager({ ca });
  let child: ChildProcess | null = null;
  const closers: Array<() => unknown> = [];
  try {
    const body = Buffer.alloc(1024, 0x62);
    const backendPorts = new Map<number, number>();
    for (const [port, version] of [
      [V1_PORT, 'v1'],
      [V2_PORT, 'v2'],
    ] as const) {
      const headers = {
        'content-type': 'application/octet-stream',
        'content-length': '1024',
        'x-served-by': version,
      };
      const s = createServer({ keepAliveTimeout: 600_000 }, (req, res) => {
        req.resume();
        res.writeHead(200, headers);
        res.end(body);
      });
      await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
      backendPorts.set(port, (s.address() as AddressInfo).port);
      closers.push(() => s.close());
    }
    const backendCert = await certs.get(BACKEND);
    const ztunnel = await HboneServer.create({
      listen: { host: '127.0.0.1', port: 0 },
      certificateFor: () => backendCert,
      trustDomain: TD,
      onStream: (req) => {
        const port = backendPorts.get(req.authority.port);
        if (port === undefined) {
          req.reject(503);
          return;
        }
        const up = netConnect({ host: '127.0.0.1', port, noDelay: true });
        up.once('connect', () => {
          const t = req.accept();
          if (t === null) up.destroy();
          else pipeBidirectional(t, up, () => {});
        });
        up.once('error', () => req.reject(503));
      },
    });
    closers.push(() => ztunnel.close());

    const args: ChildArgs = {
      ztunnelPort: ztunnel.address().port,
      accessLog: values['access-log'] === true,
      profile: values['no-profile'] !== true,
    };
    child = fork(import.meta.filename, ['--waypoint', JSON.stringify(args), dir], {
      stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    });
    child.stdout!.resume();
    const c = child;
    let profiling = () => {};
    let profiled = (_file: string, _stalls: string) => {};
    const hbonePort = await new Promise<number>((resolve, reject) => {
      c.on('message', (m: ToParent) => {
        if (m.kind === 'csr')
          ca.fetchCertificate(m.identity, m.csr).then(
            (chain) => c.send({ kind: 'cert', id: m.id, chain } satisfies ToChild),
            (err: unknown) => c.send({ kind: 'cert', id: m.id, error: String(err) } satisfies ToChild),
          );
        else if (m.kind === 'ready') resolve(m.hbonePort);
        else if (m.kind === 'profiling') profiling();
        else if (m.kind === 'profile') profiled(m.file, m.stalls);
        else if (m.kind === 'failed') reject(new Error(m.error));
      });
      c.once('exit', (code) => reject(new Error(`waypoint child exited ${code}`)));
    });

    const pool = new HbonePool({ certificateFor: (id) => certs.get(id) });
    closers.push(() => pool.close());
    const dial = () =>
      pool.connect({
        source: CLIENT,
        destinationIdentities: [WAYPOINT],
        destination: { ip: '127.0.0.1', port: hbonePort },
        authority: `${VIP}:80`,
        baggage: `k8s.namespace.name=${NS},k8s.deployment.name=client`,
        forwarded: 'for="10.253.1.5"',
      });
    const cfg = {
      host: VIP,
      port: 80,
      path: '/api/bench',
      headers: { 'x-backend': 'v1' },
      hostHeader: 'echo',
      mode: values.rate ? ('rate' as const) : ('closed' as const),
      connections: Number(values.connections),
      rate: Number(values.rate ?? 0),
      warmupMs: 0,
      expect: 'x-served-by: v1',
    };
    // Warm-up (JIT), then the measured run.
    await runLoad({ ...cfg, durationMs: 3_000 }, dial);
    await new Promise<void>((resolve) => {
      profiling = resolve;
      c.send({ kind: 'profile-start' } satisfies ToChild);
    });
    const before = cpuOf(child.pid!);
    const selfBefore = process.cpuUsage();
    const t0 = performance.now();
    const r = await runLoad({ ...cfg, durationMs: seconds * 1000 }, dial);
    const wall = (performance.now() - t0) / 1000;
    const busy = (cpuOf(child.pid!) - before) / wall;
    const used = process.cpuUsage(selfBefore);
    const selfBusy = (used.user + used.system) / 1e6 / wall;
    if (r.bad > 0 || r.errors > 0) throw new Error(`${r.bad} wrong answers, ${r.errors} errors`);
    const { file, stalls } = await new Promise<{ file: string; stalls: string }>((resolve) => {
      profiled = (f, st) => resolve({ file: f, stalls: st });
      c.send({ kind: 'profile-stop' } satisfies ToChild);
    });
    if (values.keep) copyFileSync(file, values.keep);
    const s = summarize(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile);
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    c.send({ kind: 'stop' } satisfies ToChild);
    await exited;
    child = null;
    const active = s.total - (s.byComponent.find(([k]) => k === '(idle)')?.[1] ?? 0);
    const pct = (us: number) => `${((us / active) * 100).toFixed(1).padStart(5)}%`;
    console.log(
      `waypoint in-process, ${cfg.connections} HBONE tunnels, ${cfg.mode === 'rate' ? `${cfg.rate} req/s` : 'closed loop'} ` +
        `${seconds} s: ${Math.round(r.rps)} req/s, ` +
        `p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms; waypoint ${busy.toFixed(2)} CPU s/s = ` +
        `${((busy / r.rps) * 1000).toFixed(3)} CPU s per 1000 requests (access log ${args.accessLog ? 'on' : 'off'}); ` +
        `this process (client, ztunnels, backend) ${selfBusy.toFixed(2)} CPU s/s`,
    );
    console.log(`waypoint during the run: ${stalls}`);
    if (!args.profile) return;
    console.log('\nself time by component (share of the non-idle samples of the measured run):');
    for (const [k, us] of s.byComponent.filter(([k]) => k !== '(idle)').slice(0, 25))
      console.log(`  ${pct(us)}  ${k}`);
    console.log('\ntop functions by self time:');
    for (const [k, us] of s.byFunction.filter(([k]) => !k.startsWith('(idle)')).slice(0, 30))
      console.log(`  ${pct(us)}  ${k}`);
    console.log('\nrepository functions by inclusive time (self + callees):');
    for (const [k, us] of s.inclusive.slice(0, 25)) console.log(`  ${pct(us)}  ${k}`);
    if (values.keep) console.log(`\nprofile kept: ${values.keep} (open in Chrome DevTools → Performance)`);
  } finally {
    child?.kill('SIGKILL');
    for (const close of closers.reverse()) await close();
    certs.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const i = process.argv.indexOf('--waypoint');
  if (i !== -1) {
    waypointChild(JSON.parse(process.argv[i + 1]!) as ChildArgs, process.argv[i + 2]!).catch(
      (err: unknown) => {
        process.send?.({ kind: 'failed', error: String((err as Error).stack ?? err) } satisfies ToParent);
        process.exit(1);
      },
    );
  } else {
    await parent();
    process.exit(0);
  }
}
