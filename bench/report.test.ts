import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadResults, renderReport } from './report.ts';

describe('docs/benchmarks.md', () => {
  it('is exactly what bench/report.ts renders from bench/results (tables are generated, never typed)', () => {
    const doc = readFileSync(join(import.meta.dirname, '..', 'docs', 'benchmarks.md'), 'utf8');
    expect(doc).toBe(renderReport(loadResults()));
  });

  it('renders ratios and spreads', () => {
    const md = renderReport([
      {
        benchmark: 'x',
        rows: [
          { name: 'ref', value: 10, unit: 'op/s', reference: null, ratio: null, min: 9, max: 11, samples: 3 },
          { name: 'ours', value: 20, unit: 'op/s', reference: 'ref', ratio: 2, min: 19, max: 21, samples: 3 },
        ],
      },
    ]);
    expect(md).toContain('| ours | 20 | op/s | 19–21 | ref | 2 |');
  });
});
