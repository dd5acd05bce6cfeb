import { describe, expect, it } from 'vitest';
import { activeCoarseTimers, coarseTimeout, TICK_MS } from './index.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('coarse timers', () => {
  it('fires once after the delay, within one tick', async () => {
    const fired: unknown[] = [];
    const started = performance.now();
    coarseTimeout(200, (arg) => fired.push([arg, performance.now() - started]), 'x');
    await sleep(200 + TICK_MS * 2 + 50);
    expect(fired).toHaveLength(1);
    const [arg, at] = fired[0] as [string, number];
    expect(arg).toBe('x');
    expect(at).toBeGreaterThanOrEqual(200 - 1);
    expect(at).toBeLessThanOrEqual(200 + TICK_MS * 2 + 50);
    expect(activeCoarseTimers()).toBe(0);
  });

  it('refresh postpones and clear cancels', async () => {
    let fired = 0;
    const t = coarseTimeout(TICK_MS * 2, () => fired++);
    const c = coarseTimeout(TICK_MS, () => fired++);
    c.clear();
    for (let i = 0; i < 4; i++) {
      await sleep(TICK_MS / 2);
      t.refresh();
    }
    expect(fired).toBe(0);
    await sleep(TICK_MS * 4);
    expect(fired).toBe(1);
  });
});
