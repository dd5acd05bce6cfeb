import { describe, expect, it } from 'vitest';
import { applyHeaderOps, EMPTY_HEADER_OPS, mergeHeaderOps } from './headers.ts';

class Recorder {
  readonly h = new Map<string, string[]>();
  delete(n: string) {
    this.h.delete(n);
  }
  set(n: string, v: string) {
    this.h.set(n, [v]);
  }
  append(n: string, v: string) {
    this.h.set(n, [...(this.h.get(n) ?? []), v]);
  }
}

describe('header mutations', () => {
  it('merging equals applying the levels one after another (backend, then route)', () => {
    const backend = { set: [{ name: 'X-A', value: 'b' }], add: [{ name: 'x-c', value: '1' }], remove: [] };
    const route = {
      set: [{ name: 'x-c', value: 'r' }],
      add: [{ name: 'x-a', value: '2' }],
      remove: ['x-gone', 'X-A'],
    };
    const merged = mergeHeaderOps([backend, route]);
    const seq = new Recorder();
    seq.set('x-gone', 'old');
    seq.set('x-a', 'orig');
    applyHeaderOps(mergeHeaderOps([backend]), seq);
    applyHeaderOps(mergeHeaderOps([route]), seq);
    const once = new Recorder();
    once.set('x-gone', 'old');
    once.set('x-a', 'orig');
    applyHeaderOps(merged, once);
    expect([...once.h].sort()).toEqual([...seq.h].sort());
    expect(Object.fromEntries(once.h)).toEqual({ 'x-a': ['2'], 'x-c': ['r'] });
  });

  it('no mutations → the shared empty object', () => {
    expect(mergeHeaderOps([undefined, { set: [], add: [], remove: [] }])).toBe(EMPTY_HEADER_OPS);
  });
});
