/**
 * `npm run bench -- [name…]`: runs the named benchmarks (default: all) — each `bench/<name>/run.ts` in its own
 * process — then regenerates the tables in docs/benchmarks.md from every `bench/results/*.json`. Options go to
 * every benchmark run and need the `--name=value` form (`npm run bench -- l4 --reps=5`): a bare word is a
 * benchmark name.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { BENCH_DIR } from './lib.ts';
import { writeReport } from './report.ts';

function available(): string[] {
  return readdirSync(BENCH_DIR, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(BENCH_DIR, d.name, 'run.ts')))
    .map((d) => d.name)
    .sort();
}

const args = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const names = args.length > 0 ? args : available();
const unknown = names.filter((n) => !available().includes(n));
if (unknown.length > 0) {
  console.error(`unknown benchmark(s): ${unknown.join(', ')}; available: ${available().join(', ')}`);
  process.exit(2);
}
let failed = 0;
for (const name of names) {
  console.log(`\n== bench ${name}`);
  const res = spawnSync(
    process.execPath,
    [join(BENCH_DIR, name, 'run.ts'), ...process.argv.slice(2).filter((a) => a.startsWith('-'))],
    {
      stdio: 'inherit',
    },
  );
  if (res.status !== 0) {
    failed++;
    console.error(`bench ${name} failed (exit ${res.status ?? res.signal})`);
  }
}
const file = writeReport();
console.log(`\nregenerated ${file}`);
process.exit(failed > 0 ? 1 : 0);
