/**
 * Header mutations. Order within one HeaderOps follows Envoy's header parser: remove, then set (overwrite),
 * then add (append). Names are lowercase.
 */
import type { HeaderMutation } from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import type { HeaderOps } from './index.ts';

export const EMPTY_HEADER_OPS: HeaderOps = Object.freeze({
  remove: Object.freeze([]) as readonly string[],
  set: Object.freeze([]) as readonly (readonly [string, string])[],
  add: Object.freeze([]) as readonly (readonly [string, string])[],
});

/**
 * Merges mutation levels into one HeaderOps equivalent to applying them one after another in the given order.
 * Envoy (and so Istio, which keeps most_specific_header_mutations_wins off) evaluates the weighted-cluster
 * (backend) level first and the route level after it, so on a conflict the route level wins; callers pass
 * `[backend, route]`.
 */
export function mergeHeaderOps(levels: readonly (HeaderMutation | undefined)[]): HeaderOps {
  const remove: string[] = [];
  const set = new Map<string, string>();
  let add: [string, string][] = [];
  for (const m of levels) {
    if (m === undefined) continue;
    for (const name of m.remove) {
      const n = name.toLowerCase();
      if (!remove.includes(n)) remove.push(n);
      set.delete(n);
      add = add.filter((h) => h[0] !== n);
    }
    for (const h of m.set) {
      const n = h.name.toLowerCase();
      set.set(n, h.value);
      add = add.filter((a) => a[0] !== n);
    }
    for (const h of m.add) add.push([h.name.toLowerCase(), h.value]);
  }
  if (remove.length === 0 && set.size === 0 && add.length === 0) return EMPTY_HEADER_OPS;
  return Object.freeze({
    remove: Object.freeze(remove),
    set: Object.freeze([...set].map(([n, v]) => Object.freeze([n, v] as const))),
    add: Object.freeze(add.map((h) => Object.freeze(h))),
  });
}

/** The minimal header-container interface `applyHeaderOps` needs (a Map, or an adapter over Node headers). */
export interface MutableHeaders {
  delete(name: string): unknown;
  set(name: string, value: string): unknown;
  /** Append one more value for `name` (keeping existing ones). */
  append(name: string, value: string): unknown;
}

/** Applies `ops` to `headers` in Envoy's order. */
export function applyHeaderOps(ops: HeaderOps, headers: MutableHeaders): void {
  for (let i = 0; i < ops.remove.length; i++) headers.delete(ops.remove[i] as string);
  for (let i = 0; i < ops.set.length; i++) {
    const h = ops.set[i] as readonly [string, string];
    headers.set(h[0], h[1]);
  }
  for (let i = 0; i < ops.add.length; i++) {
    const h = ops.add[i] as readonly [string, string];
    headers.append(h[0], h[1]);
  }
}
