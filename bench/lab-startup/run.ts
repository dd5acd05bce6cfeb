/**
 * Lab start-up benchmark (a benchmark, not a test): how long `ambientctl lab up --demo` takes on this machine
 * (what `npm start` does), from nothing to a 2-node lab with the mesh installed and Bookinfo and curl Ready,
 * through the same library the CLI uses.
 *
 *   node bench/lab-startup/run.ts [--reps 3] [--nodes 2] [--no-mesh]
 *
 * Per repetition: a cold start (empty API state: `up --fresh --demo`), `down`, a warm start (`up --demo` with
 * the state kept: the pods come back), `down --purge`. Rows (median over repetitions):
 *
 *   cluster ready        supervisor started → network, API server, DNS, proxies, kubelets (nodes Ready)
 *   Bookinfo Ready       the whole `up --demo`: cluster + `kubectl apply` + every Deployment Ready
 *   warm restart         `up --demo` again after `down` (state kept) until every Deployment is Ready again
 *   lab down             orderly stop (pods, DNS, API server, network) + leftover check, Bookinfo running
 *   --no-mesh            a third start, cold and without the mesh, for comparison
 *
 * The cold start installs the mesh (deploy/profiles/ambient: istiod, istio-cni, ztunnel) and has a "mesh Ready"
 * row; `--no-mesh` leaves the mesh out of every start (and the comparison row).
 * Needs root. Writes bench/results/lab-startup.json.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Lab } from '../../lab/cluster/lab.ts';
import { printRows, type Row, row, writeResult } from '../lib.ts';

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    reps: { type: 'string', default: '3' },
    nodes: { type: 'string', default: '2' },
    'no-mesh': { type: 'boolean', default: false },
  },
  strict: false,
});
const reps = Number(values.reps);
const nodes = Number(values.nodes);
const mesh = values['no-mesh'] !== true;
if (typeof process.getuid === 'function' && process.getuid() !== 0) {
  console.error('the lab start-up benchmark needs root (network namespaces, iptables)');
  process.exit(2);
}

const prefix = 'lbench-';
const samples = {
  cluster: [] as number[],
  /** Cold starts without the mesh (comparison). */
  demo: [] as number[],
  total: [] as number[],
  mesh: [] as number[],
};
const warm: number[] = [];
const downs: number[] = [];
const notes: string[] = [];

for (let i = 0; i < reps; i++) {
  const root = mkdtempSync(join(tmpdir(), 'lab-bench-'));
  try {
    const cold = await Lab.up({ prefix, root, nodes, block: 251, mesh, demo: true, fresh: true });
    if (cold.problems.length > 0) throw new Error(`cold start: not Ready:\n${cold.problems.join('\n')}`);
    samples.cluster.push(cold.timings.clusterMs);
    samples.total.push(cold.timings.totalMs);
    if (cold.timings.meshMs !== undefined) samples.mesh.push(cold.timings.meshMs);
    const t = performance.now();
    await Lab.down({ prefix, root });
    downs.push(performance.now() - t);
    const again = await Lab.up({ prefix, root, mesh: false, demo: true });
    if (again.problems.length > 0) throw new Error(`warm start: not Ready:\n${again.problems.join('\n')}`);
    warm.push(again.timings.totalMs);
    await Lab.down({ prefix, root, purge: true });
    let bare = '';
    if (mesh) {
      // The same without the mesh, for comparison (`lab up --demo --no-mesh`).
      const plain = await Lab.up({ prefix, root, nodes, block: 251, mesh: false, demo: true, fresh: true });
      if (plain.problems.length > 0)
        throw new Error(`--no-mesh start: not Ready:\n${plain.problems.join('\n')}`);
      samples.demo.push(plain.timings.totalMs);
      bare = `, without the mesh ${(plain.timings.totalMs / 1000).toFixed(1)}s`;
      await Lab.down({ prefix, root, purge: true });
    }
    process.stdout.write(
      `rep ${i + 1}/${reps}: cluster ${(cold.timings.clusterMs / 1000).toFixed(1)}s, ` +
        `Bookinfo Ready ${(cold.timings.totalMs / 1000).toFixed(1)}s, warm restart ${(again.timings.totalMs / 1000).toFixed(1)}s${bare}\n`,
    );
  } finally {
    await Lab.down({ prefix, root, purge: true }).catch(() => undefined);
    rmSync(root, { recursive: true, force: true });
  }
}

const s = (ms: number[]): number[] => ms.map((x) => x / 1000);
const rows: Row[] = [];
const cluster = row(`lab up: cluster ready (${nodes} nodes)`, s(samples.cluster), 's');
rows.push(cluster);
if (mesh) rows.push(row('lab up: mesh installed and Ready', s(samples.mesh), 's'));
const total = row(`lab up --demo${mesh ? '' : ' --no-mesh'}: Bookinfo Ready`, s(samples.total), 's');
rows.push(total, row('lab up --demo again after down (state kept)', s(warm), 's', total));
if (mesh) rows.push(row('lab up --demo --no-mesh: Bookinfo Ready', s(samples.demo), 's', total));
rows.push(row('lab down', s(downs), 's'));
if (!mesh) notes.push('without the mesh (--no-mesh): istiod, istio-cni and ztunnel not installed');
const file = writeResult({
  benchmark: 'lab-startup',
  description: `Lab start-up on this machine: ${nodes} nodes, ${mesh ? 'the mesh and ' : ''}Bookinfo + curl Ready (Lab.up, as \`ambientctl lab up --demo${mesh ? '' : ' --no-mesh'}\`), cold (empty state) and warm (after lab down), ${reps} repetitions.`,
  date: new Date().toISOString(),
  machine: { cpus: cpus().length, node: process.version },
  rows,
  notes,
});
printRows(rows);
console.log(`wrote ${file}`);
