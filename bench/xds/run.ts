/**
 * xDS benchmark (issue #6): istiod's ambient index + delta ADS server with 10 000 pods, 1 000 services and 200
 * connected delta-xDS clients.
 *
 * istiod runs in this process (AmbientIndex + AmbientPipeline + XdsServer on a grpc-js Server, 127.0.0.1,
 * insecure), so `process.memoryUsage()` here is istiod's alone; the 200 clients run in ONE child process
 * (bench/xds/clients.ts), each on its own HTTP/2 connection, reporting over IPC.
 *
 * Per repetition (fresh index each time):
 * 1. build: 100 namespaces × 100 pods (20 nodes, captured, unique IPs) and 1 000 Services (10 per namespace,
 *    each selecting the 10 pods of one Deployment) applied through the pipeline, flushed (index computes and
 *    encodes 11 000 Address resources, the xDS server hashes their versions). Reference: ts-proto
 *    `Address.encode` of the same 11 000 messages, once.
 * 2. initial sync, default debounce (100 ms quiet): 200 clients connect at once (an istiod restart); time until
 *    the last one holds all 11 000 Addresses, bytes, istiod CPU, istiod RSS/heap after a GC.
 * 3. change rounds: one pod's readiness flips (pipeline.apply), time until each client got a response naming
 *    that workload.
 * 4. the clients disconnect; a new XdsServer with `debounceQuietMs: 0` takes over the same index (new port),
 *    the clients connect again (a second initial-sync sample) and the change rounds repeat.
 *
 * Options (`--name=value`, or env): --reps=3 (REPS), --clients=200 (CLIENTS), --rounds=10 (ROUNDS).
 */
import { type ChildProcess, fork } from 'node:child_process';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { AmbientIndex, podUid } from '../../istiod/src/index/index.ts';
import { node, ns, pod, svc } from '../../istiod/src/index/testdata.ts';
import { AmbientPipeline } from '../../istiod/src/kube/controller.ts';
import type { Namespace, Node, Pod, Service } from '../../istiod/src/kube/types.ts';
import { XdsServer } from '../../istiod/src/xds/server.ts';
import { createRegistry } from '../../pkg/metrics/index.ts';
import { createLogger } from '../../pkg/telemetry/index.ts';
import { Address } from '../../pkg/xds/index.ts';
import { median, percentile, printRows, type Row, row, writeResult } from '../lib.ts';
import type { ChildMessage, ClientSync, ParentMessage } from './clients.ts';

function option(name: string, env: string, def: number): number {
  const arg = process.argv.find((a) => a.startsWith(`--${name}=`));
  const v = Number(arg ? arg.slice(name.length + 3) : (process.env[env] ?? def));
  if (!Number.isFinite(v) || v <= 0) throw new Error(`bad --${name}`);
  return v;
}

const REPS = option('reps', 'REPS', 3);
const CLIENTS = option('clients', 'CLIENTS', 200);
const ROUNDS = option('rounds', 'ROUNDS', 10);
const NAMESPACES = 100;
const SERVICES_PER_NS = 10;
const PODS_PER_SERVICE = 10;
const NODES = 20;
const HERE = dirname(fileURLToPath(import.meta.url));
const MB = 1024 * 1024;

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const logger = createLogger({ component: 'bench', level: 'silent' });
const absNow = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---- cluster objects ---------------------------------------------------------------------------------------

interface Cluster {
  readonly nodes: Node[];
  readonly namespaces: Namespace[];
  readonly pods: Pod[];
  readonly services: Service[];
}

function cluster(): Cluster {
  const c: Cluster = { nodes: [], namespaces: [], pods: [], services: [] };
  for (let i = 0; i < NODES; i++) {
    c.nodes.push(
      node(`node-${i}`, {
        'topology.kubernetes.io/region': 'r1',
        'topology.kubernetes.io/zone': `z${i % 3}`,
      }),
    );
  }
  let p = 0;
  for (let n = 0; n < NAMESPACES; n++) {
    const namespace = `ns-${n}`;
    c.namespaces.push(ns(namespace));
    for (let s = 0; s < SERVICES_PER_NS; s++) {
      const app = `app-${s}`;
      c.services.push(
        svc(app, {
          namespace,
          selector: { app },
          clusterIP: `10.96.${n}.${s + 1}`,
          ports: [{ name: 'http', port: 80, targetPort: 8080 }],
        }),
      );
      for (let k = 0; k < PODS_PER_SERVICE; k++, p++) {
        c.pods.push(
          pod(`${app}-7d9f8c6b5-x${k}q${n}`, {
            namespace,
            ip: `10.1.${n}.${s * PODS_PER_SERVICE + k + 1}`,
            labels: { app, version: 'v1' },
            annotations: { 'ambient.istio.io/redirection': 'enabled' },
            sa: app,
            node: `node-${p % NODES}`,
            ready: true,
            ports: [{ name: 'http', containerPort: 8080 }],
            replicaSet: { name: `${app}-7d9f8c6b5`, hash: '7d9f8c6b5' },
          }),
        );
      }
    }
  }
  return c;
}

// ---- istiod ------------------------------------------------------------------------------------------------

interface Istiod {
  readonly index: AmbientIndex;
  readonly pipeline: AmbientPipeline;
  readonly xds: XdsServer;
  readonly server: Server;
  readonly port: number;
}

async function serve(index: AmbientIndex, debounceQuietMs: number | undefined): Promise<Istiod> {
  const registry = createRegistry();
  const xds = new XdsServer({ registry, logger, debounceQuietMs });
  const pipeline = new AmbientPipeline({ index, xds, status: null, registry, logger });
  const server = new Server();
  xds.register(server);
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))),
  );
  return { index, pipeline, xds, server, port };
}

async function stop(i: Istiod): Promise<void> {
  i.xds.close();
  await new Promise<void>((res) => i.server.tryShutdown(() => res()));
}

/** Index build: every object through the pipeline (as an informer relist delivers them), one flush. */
function build(c: Cluster, index: AmbientIndex, pipeline: AmbientPipeline): number {
  const t = performance.now();
  for (const o of c.nodes) pipeline.apply('Node', 'add', o);
  for (const o of c.namespaces) pipeline.apply('Namespace', 'add', o);
  for (const o of c.services) pipeline.apply('Service', 'add', o);
  for (const o of c.pods) pipeline.apply('Pod', 'add', o);
  pipeline.flush();
  const ms = performance.now() - t;
  if (index.dirty) throw new Error('index still dirty after flush');
  return ms;
}

/** Reference: the raw ts-proto cost of encoding the same 11 000 Address messages once. */
function referenceEncode(index: AmbientIndex): number {
  const msgs = index.addressNames().map((n) => index.address(n)!);
  let bytes = 0;
  const t = performance.now();
  for (const m of msgs) bytes += Address.encode(m).finish().length;
  const ms = performance.now() - t;
  if (bytes === 0) throw new Error('nothing encoded');
  return ms;
}

// ---- clients (child process) -------------------------------------------------------------------------------

class Clients {
  private readonly child: ChildProcess;
  private readonly waiters = new Map<string, (m: ChildMessage) => void>();
  /** child clock − parent clock (ms). */
  offset = 0;
  private error: Error | null = null;

  constructor() {
    this.child = fork(join(HERE, 'clients.ts'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.child.on('message', (m: ChildMessage) => {
      if (m.op === 'error') {
        this.error = new Error(`clients: ${m.message}`);
        for (const w of this.waiters.values()) w(m);
        return;
      }
      const w = this.waiters.get(m.op);
      if (w) {
        this.waiters.delete(m.op);
        w(m);
      }
    });
    this.child.on('exit', (code) => {
      if (code !== 0) this.error = new Error(`clients exited with ${code}`);
    });
  }

  request<O extends ChildMessage['op']>(
    cmd: ParentMessage,
    op: O,
    timeoutMs = 120_000,
  ): Promise<Extract<ChildMessage, { op: O }>> {
    const p = this.wait(op, timeoutMs);
    this.child.send(cmd);
    return p;
  }

  /** The next message `op` from the child. */
  wait<O extends ChildMessage['op']>(op: O, timeoutMs = 120_000): Promise<Extract<ChildMessage, { op: O }>> {
    if (this.error) return Promise.reject(this.error);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${op}`)), timeoutMs);
      this.waiters.set(op, (m) => {
        clearTimeout(timer);
        if (m.op === 'error') reject(this.error);
        else resolve(m as Extract<ChildMessage, { op: O }>);
      });
    });
  }

  /** Clock offset from the ping with the shortest round trip (NTP-style midpoint). */
  async calibrate(): Promise<void> {
    let best = Number.POSITIVE_INFINITY;
    for (let id = 0; id < 20; id++) {
      const t0 = absNow();
      const pong = await this.request({ op: 'ping', id }, 'pong');
      const t1 = absNow();
      if (t1 - t0 < best) {
        best = t1 - t0;
        this.offset = pong.t - (t0 + t1) / 2;
      }
    }
  }

  async close(): Promise<void> {
    const exited = new Promise<void>((res) => this.child.once('exit', () => res()));
    if (this.child.connected) this.child.send({ op: 'exit' } satisfies ParentMessage);
    const timer = setTimeout(() => this.child.kill(), 5000);
    await exited;
    clearTimeout(timer);
  }
}

// ---- phases ------------------------------------------------------------------------------------------------

interface SyncResult {
  readonly allMs: number;
  readonly p50ClientMs: number;
  readonly bytesPerClient: number;
  readonly totalBytes: number;
  readonly cpuMs: number;
}

async function initialSync(clients: Clients, istiod: Istiod): Promise<SyncResult> {
  const addresses = istiod.index.addressNames().length;
  const cpu0 = process.cpuUsage();
  const t0 = absNow();
  const synced = await clients.request(
    { op: 'connect', port: istiod.port, clients: CLIENTS, addresses },
    'synced',
  );
  const cpu = process.cpuUsage(cpu0);
  const done = synced.clients.map((c: ClientSync) => c.doneAt - clients.offset - t0);
  const bytes = synced.clients.map((c: ClientSync) => c.bytes);
  if (istiod.xds.connectionCount !== CLIENTS) {
    throw new Error(`expected ${CLIENTS} connections, server has ${istiod.xds.connectionCount}`);
  }
  return {
    allMs: Math.max(...done),
    p50ClientMs: percentile(done, 50),
    bytesPerClient: median(bytes),
    totalBytes: bytes.reduce((a, b) => a + b, 0),
    cpuMs: (cpu.user + cpu.system) / 1000,
  };
}

let roundCounter = 0;

/** One pod's readiness flips per round; returns per-client latencies (ms) and the last client's per round. */
async function changeRounds(
  clients: Clients,
  istiod: Istiod,
  c: Cluster,
): Promise<{ samples: number[]; last: number[]; bytesPerClient: number[] }> {
  const samples: number[] = [];
  const last: number[] = [];
  const bytesPerClient: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const round = roundCounter++;
    const original = c.pods[(round * 7919) % c.pods.length]!;
    const namespace = original.metadata!.namespace!;
    const name = podUid('Kubernetes', namespace, original.metadata!.name!);
    const ready = (original.status?.conditions ?? []).every((x) => x.status === 'True');
    const changed: Pod = {
      ...original,
      status: { ...original.status, conditions: [{ type: 'Ready', status: ready ? 'False' : 'True' }] },
    };
    c.pods[(round * 7919) % c.pods.length] = changed;
    await clients.request({ op: 'watch', round, name }, 'watching');
    const received = clients.wait('received', 30_000);
    const t0 = absNow();
    istiod.pipeline.apply('Pod', 'update', changed);
    const res = await received;
    const lat = res.times.map((t) => t - clients.offset - t0);
    samples.push(...lat);
    last.push(Math.max(...lat));
    bytesPerClient.push(res.bytes / CLIENTS);
    await sleep(50); // let the last ACKs arrive
  }
  return { samples, last, bytesPerClient };
}

// ---- main --------------------------------------------------------------------------------------------------

const s = {
  build: [] as number[],
  ref: [] as number[],
  syncAll: [] as number[],
  syncP50: [] as number[],
  syncBytes: [] as number[],
  syncTotal: [] as number[],
  syncCpu: [] as number[],
  rss: [] as number[],
  heap: [] as number[],
  buffers: [] as number[],
  peakRss: [] as number[],
  change: {
    debounced: { p50: [] as number[], p99: [] as number[], last: [] as number[], bytes: [] as number[] },
    immediate: { p50: [] as number[], p99: [] as number[], last: [] as number[], bytes: [] as number[] },
  },
};
let addressCount = 0;

const clients = new Clients();
const started = performance.now();
try {
  await clients.calibrate();
  for (let rep = 0; rep < REPS; rep++) {
    gc();
    const c = cluster();
    const index = new AmbientIndex();
    let istiod = await serve(index, undefined);
    s.build.push(build(c, index, istiod.pipeline));
    addressCount = index.addressNames().length;
    s.ref.push(referenceEncode(index));

    for (const mode of ['debounced', 'immediate'] as const) {
      if (mode === 'immediate') {
        await clients.request({ op: 'disconnect' }, 'disconnected');
        await stop(istiod);
        istiod = await serve(index, 0);
      }
      const sync = await initialSync(clients, istiod);
      s.syncAll.push(sync.allMs / 1000);
      s.syncP50.push(sync.p50ClientMs / 1000);
      s.syncBytes.push(sync.bytesPerClient / MB);
      s.syncTotal.push(sync.totalBytes / MB);
      s.syncCpu.push(sync.cpuMs / CLIENTS);
      if (mode === 'debounced') {
        await sleep(200);
        gc();
        const mem = process.memoryUsage();
        s.rss.push(mem.rss / MB);
        s.heap.push(mem.heapUsed / MB);
        s.buffers.push(mem.arrayBuffers / MB);
        s.peakRss.push(process.resourceUsage().maxRSS / 1024);
      }
      const ch = await changeRounds(clients, istiod, c);
      const out = s.change[mode];
      out.p50.push(percentile(ch.samples, 50));
      out.p99.push(percentile(ch.samples, 99));
      out.last.push(median(ch.last));
      out.bytes.push(median(ch.bytesPerClient));
    }
    await clients.request({ op: 'disconnect' }, 'disconnected');
    await stop(istiod);
    process.stderr.write(
      `rep ${rep + 1}/${REPS} done (${((performance.now() - started) / 1000).toFixed(0)} s): sync ${s.syncAll.at(-2)?.toFixed(2)} s, rss ${s.rss.at(-1)?.toFixed(0)} MB\n`,
    );
  }
} finally {
  await clients.close();
}

const ref = row(`ts-proto Address.encode × ${addressCount} (raw encode)`, s.ref, 'ms');
const d = s.change.debounced;
const z = s.change.immediate;
const rows: Row[] = [
  ref,
  row(
    `index build + encode (${NAMESPACES * SERVICES_PER_NS * PODS_PER_SERVICE} pods, ${NAMESPACES * SERVICES_PER_NS} svcs)`,
    s.build,
    'ms',
    ref,
  ),
  row(`initial sync, all ${CLIENTS} clients connecting at once`, s.syncAll, 's'),
  row('initial sync, median client', s.syncP50, 's'),
  row('initial snapshot per client', s.syncBytes, 'MB'),
  row(`initial sync total bytes (${CLIENTS} clients)`, s.syncTotal, 'MB'),
  row('istiod CPU per client initial sync', s.syncCpu, 'ms'),
  row('pod change → client received p50 (100 ms debounce)', d.p50, 'ms'),
  row('pod change → client received p99 (100 ms debounce)', d.p99, 'ms'),
  row(`pod change → all ${CLIENTS} received (100 ms debounce)`, d.last, 'ms'),
  row('pod change → client received p50 (debounce 0)', z.p50, 'ms'),
  row('pod change → client received p99 (debounce 0)', z.p99, 'ms'),
  row(`pod change → all ${CLIENTS} received (debounce 0)`, z.last, 'ms'),
  row(
    'pod change push per client',
    [...d.bytes, ...z.bytes].map((b) => b / 1024),
    'KiB',
  ),
  row(`istiod RSS after sync (${CLIENTS} clients, after GC)`, s.rss, 'MB'),
  row('istiod heap used after sync (after GC)', s.heap, 'MB'),
  row('istiod ArrayBuffers after sync (after GC)', s.buffers, 'MB'),
  row('istiod peak RSS so far (maxRSS)', s.peakRss, 'MB'),
];
printRows(rows);
const file = writeResult({
  benchmark: 'xds',
  description: `istiod ambient index + delta ADS: ${NAMESPACES * SERVICES_PER_NS * PODS_PER_SERVICE} pods, ${NAMESPACES * SERVICES_PER_NS} services, ${CLIENTS} delta-xDS clients (issue #6)`,
  date: new Date().toISOString(),
  machine: { cpus: cpus().length, node: process.version },
  rows,
  notes: [
    `${REPS} repetitions, each with a fresh index; two initial syncs per repetition (default debounce, then a new XdsServer with debounceQuietMs 0 on the same index), ${ROUNDS} change rounds × ${CLIENTS} clients per mode and repetition. p50/p99 are over clients × rounds of one repetition, then the median of the repetitions.`,
    'istiod (index, pipeline, XdsServer, grpc-js server) runs alone in the measuring process; the clients share one child process and the same cores (2 here), so client CPU is in every latency.',
    'Clients decode the DeltaDiscoveryResponse but not the Address payloads and keep nothing per resource (a ztunnel decodes and stores every Address); bytes are serialized DeltaDiscoveryResponse sizes without gRPC framing.',
    'The 100 ms debounce is by design (Istio PILOT_DEBOUNCE_AFTER) and included in the debounced rows. No other xDS server runs here: only the encode row has a reference.',
    'maxRSS is the process high-water mark since start, so later repetitions include earlier ones.',
  ],
});
process.stderr.write(`wrote ${file}\n`);
