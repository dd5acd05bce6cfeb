import { describe, expect, it } from 'vitest';
import { eventually, uniqueSuffix } from './index.ts';

describe('eventually', () => {
  it('returns once the check passes', async () => {
    let n = 0;
    const v = await eventually(
      () => {
        n++;
        if (n < 3) throw new Error('not yet');
        return n;
      },
      { intervalMs: 1 },
    );
    expect(v).toBe(3);
  });

  it('treats false as not yet and reports the last failure on timeout', async () => {
    await expect(
      eventually(() => false, { timeoutMs: 30, intervalMs: 5, what: 'pod ready' }),
    ).rejects.toThrow(/eventually\(pod ready\) did not hold after 30ms .*check returned false/);
  });

  it('makes distinct suffixes', () => {
    const s = new Set(Array.from({ length: 50 }, () => uniqueSuffix()));
    expect(s.size).toBe(50);
  });
});
