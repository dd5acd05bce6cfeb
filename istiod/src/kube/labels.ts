/**
 * Label and metadata helpers shared by the index and the policy translation: selector matching, object keys,
 * timestamps that may be Dates (client-node) or strings (watch JSON, tests).
 */
import type { KubeObject, LabelSelector, Timestamp } from './types.ts';

const EMPTY: Readonly<Record<string, string>> = Object.freeze({});

export function labelsOf(o: KubeObject | null | undefined): Readonly<Record<string, string>> {
  return o?.metadata?.labels ?? EMPTY;
}

export function annotationsOf(o: KubeObject | null | undefined): Readonly<Record<string, string>> {
  return o?.metadata?.annotations ?? EMPTY;
}

export function nameOf(o: KubeObject): string {
  return o.metadata?.name ?? '';
}

export function namespaceOf(o: KubeObject): string {
  return o.metadata?.namespace ?? '';
}

/** `namespace/name` for namespaced objects, `name` for cluster-scoped ones. */
export function keyOf(o: KubeObject): string {
  const ns = o.metadata?.namespace;
  return ns ? `${ns}/${o.metadata?.name ?? ''}` : (o.metadata?.name ?? '');
}

/** True when every `selector` entry is present with the same value in `labels` (an empty selector matches all). */
export function isSubset(
  selector: Readonly<Record<string, string>> | null | undefined,
  labels: Readonly<Record<string, string>>,
): boolean {
  if (!selector) return true;
  for (const k in selector) if (labels[k] !== selector[k]) return false;
  return true;
}

export function isEmptySelector(selector: Readonly<Record<string, string>> | null | undefined): boolean {
  if (!selector) return true;
  for (const _ in selector) return false;
  return true;
}

/** metav1.LabelSelector semantics (matchLabels AND matchExpressions); an empty selector matches everything. */
export function labelSelectorMatches(
  sel: LabelSelector | undefined,
  labels: Readonly<Record<string, string>>,
): boolean {
  if (!sel) return true;
  if (!isSubset(sel.matchLabels, labels)) return false;
  for (const e of sel.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    const v = labels[e.key];
    const values = e.values ?? [];
    switch (e.operator) {
      case 'In':
        if (!has || !values.includes(v as string)) return false;
        break;
      case 'NotIn':
        if (has && values.includes(v as string)) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
      default:
        return false;
    }
  }
  return true;
}

/** Milliseconds since the epoch; objects without a timestamp sort first (0). */
export function timeOf(t: Timestamp | undefined): number {
  if (t === undefined) return 0;
  const ms = t instanceof Date ? t.getTime() : Date.parse(t);
  return Number.isFinite(ms) ? ms : 0;
}

/** Orders objects oldest first, then by namespace/name so equal timestamps still give one stable answer. */
export function compareAge(a: KubeObject, b: KubeObject): number {
  const d = timeOf(a.metadata?.creationTimestamp) - timeOf(b.metadata?.creationTimestamp);
  if (d !== 0) return d;
  const ka = keyOf(a);
  const kb = keyOf(b);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}
