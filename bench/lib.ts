/**
 * Shared helpers for benchmarks: result rows, repetition statistics, writing `bench/results/<name>.json`.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
export const RESULTS_DIR = join(BENCH_DIR, 'results');

export interface Row {
  readonly name: string;
  /** Median over repetitions. */
  readonly value: number;
  readonly unit: string;
  /** The row this one is compared with (same run), or null. */
  readonly reference: string | null;
  /** value ÷ reference value, or null. */
  readonly ratio: number | null;
  readonly min: number;
  readonly max: number;
  readonly samples: number;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

export function row(
  name: string,
  samples: readonly number[],
  unit: string,
  reference: Row | null = null,
): Row {
  const value = median(samples);
  return {
    name,
    value: round(value),
    unit,
    reference: reference?.name ?? null,
    ratio: reference && reference.value !== 0 ? round(value / reference.value) : null,
    min: round(Math.min(...samples)),
    max: round(Math.max(...samples)),
    samples: samples.length,
  };
}

function round(x: number): number {
  return Math.abs(x) >= 100 ? Math.round(x) : Math.round(x * 1000) / 1000;
}

export interface BenchResult {
  readonly benchmark: string;
  readonly description: string;
  readonly date: string;
  readonly machine: { readonly cpus: number; readonly node: string };
  readonly rows: readonly Row[];
  readonly notes?: readonly string[];
}

export function writeResult(r: BenchResult): string {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const file = join(RESULTS_DIR, `${r.benchmark}.json`);
  writeFileSync(file, `${JSON.stringify(r, null, 2)}\n`);
  return file;
}

export function printRows(rows: readonly Row[]): void {
  for (const r of rows) {
    const ratio = r.ratio === null ? '' : `  ${r.ratio}× ${r.reference}`;
    process.stdout.write(
      `${r.name.padEnd(48)} ${String(r.value).padStart(10)} ${r.unit.padEnd(10)} [${r.min}–${r.max}]${ratio}\n`,
    );
  }
}
