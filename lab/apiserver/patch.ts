/**
 * The three PATCH formats kube-apiserver accepts on JSON objects:
 * - JSON merge patch (RFC 7386),
 * - JSON patch (RFC 6902),
 * - strategic merge patch (apimachinery `strategicpatch`): lists with a patch strategy "merge" are merged by
 *   their merge key, plus the directives `$patch` (replace/delete/merge), `$retainKeys`,
 *   `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>` that kubectl emits.
 */
import { clone, deepEqual, isObject, type JsonObject } from './json.ts';
import { ApiError, badRequest } from './status.ts';

/** How one list field merges; paths are field names joined by `.` with list items transparent. */
export interface ListMeta {
  /** Items are merged (by `mergeKey` for lists of objects, by value for primitive lists) instead of replaced. */
  readonly merge: boolean;
  readonly mergeKey?: string;
}

/** Strategic-merge metadata of one kind: dotted field path (e.g. `spec.containers.ports`) → list strategy. */
export type PatchMeta = ReadonlyMap<string, ListMeta>;

function patchFailed(message: string): ApiError {
  return new ApiError(422, 'Invalid', message);
}

// ---- JSON merge patch -------------------------------------------------------------------------------------

export function applyMergePatch(target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return clone(patch);
  const out: JsonObject = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = applyMergePatch(out[k], v);
  }
  return out;
}

// ---- JSON patch ---------------------------------------------------------------------------------------------

function parsePointer(p: unknown): string[] {
  if (typeof p !== 'string') throw badRequest('json patch: path must be a string');
  if (p === '') return [];
  if (!p.startsWith('/')) throw badRequest(`json patch: invalid JSON pointer "${p}"`);
  return p
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function arrayIndex(arr: unknown[], tok: string, forInsert: boolean): number {
  if (forInsert && tok === '-') return arr.length;
  if (!/^(0|[1-9]\d*)$/.test(tok)) throw patchFailed(`json patch: invalid array index "${tok}"`);
  const i = Number(tok);
  if (i > arr.length || (!forInsert && i === arr.length))
    throw patchFailed(`json patch: index ${i} out of bounds`);
  return i;
}

/** Returns the container and final token for a pointer; containers are mutated in place on a cloned doc. */
function resolveParent(doc: unknown, tokens: readonly string[]): { parent: unknown; last: string } {
  let cur = doc;
  for (let i = 0; i < tokens.length - 1; i++) {
    const t = tokens[i] as string;
    if (Array.isArray(cur)) cur = cur[arrayIndex(cur, t, false)];
    else if (isObject(cur) && Object.hasOwn(cur, t)) cur = cur[t];
    else throw patchFailed(`json patch: path "/${tokens.slice(0, i + 1).join('/')}" does not exist`);
  }
  return { parent: cur, last: tokens[tokens.length - 1] as string };
}

function getAt(doc: unknown, tokens: readonly string[]): unknown {
  let cur = doc;
  for (const t of tokens) {
    if (Array.isArray(cur)) cur = cur[arrayIndex(cur, t, false)];
    else if (isObject(cur) && Object.hasOwn(cur, t)) cur = cur[t];
    else throw patchFailed(`json patch: path "/${tokens.join('/')}" does not exist`);
  }
  return cur;
}

function addAt(doc: unknown, tokens: readonly string[], value: unknown): unknown {
  if (tokens.length === 0) return value;
  const { parent, last } = resolveParent(doc, tokens);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, last, true), 0, value);
  else if (isObject(parent)) parent[last] = value;
  else throw patchFailed(`json patch: cannot add to a scalar at "/${tokens.join('/')}"`);
  return doc;
}

function removeAt(doc: unknown, tokens: readonly string[]): unknown {
  if (tokens.length === 0) throw patchFailed('json patch: cannot remove the whole document');
  const { parent, last } = resolveParent(doc, tokens);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, last, false), 1);
  else if (isObject(parent) && Object.hasOwn(parent, last)) delete parent[last];
  else throw patchFailed(`json patch: path "/${tokens.join('/')}" does not exist`);
  return doc;
}

export function applyJsonPatch(target: unknown, patch: unknown): unknown {
  if (!Array.isArray(patch)) throw badRequest('json patch: the patch must be a JSON array of operations');
  let doc = clone(target);
  for (const op of patch) {
    if (!isObject(op)) throw badRequest('json patch: each operation must be an object');
    const path = parsePointer(op.path);
    switch (op.op) {
      case 'add':
        if (!('value' in op)) throw badRequest('json patch: "add" needs a value');
        doc = addAt(doc, path, clone(op.value));
        break;
      case 'remove':
        doc = removeAt(doc, path);
        break;
      case 'replace':
        if (!('value' in op)) throw badRequest('json patch: "replace" needs a value');
        getAt(doc, path);
        if (path.length === 0) doc = clone(op.value);
        else doc = addAt(removeAt(doc, path), path, clone(op.value));
        break;
      case 'move': {
        const from = parsePointer(op.from);
        const v = getAt(doc, from);
        doc = addAt(removeAt(doc, from), path, v);
        break;
      }
      case 'copy': {
        const v = clone(getAt(doc, parsePointer(op.from)));
        doc = addAt(doc, path, v);
        break;
      }
      case 'test':
        if (!deepEqual(getAt(doc, path), op.value))
          throw patchFailed(`json patch: test failed at "${String(op.path)}"`);
        break;
      default:
        throw badRequest(`json patch: unsupported operation "${String(op.op)}"`);
    }
  }
  return doc;
}

// ---- strategic merge patch ----------------------------------------------------------------------------------

const DELETE = Symbol('delete');
const SET_ORDER = '$setElementOrder/';
const DELETE_FROM_PRIMITIVE = '$deleteFromPrimitiveList/';

function join(path: string, key: string): string {
  return path ? `${path}.${key}` : key;
}

/** Applies a strategic merge patch. `meta` lists the merge-strategy lists of the kind; others are replaced. */
export function applyStrategicMergePatch(original: unknown, patch: unknown, meta: PatchMeta): JsonObject {
  if (!isObject(patch)) throw badRequest('strategic merge patch: the patch must be a JSON object');
  const merged = mergeMap(isObject(original) ? clone(original) : {}, patch, '', meta);
  return merged === DELETE ? {} : merged;
}

function mergeMap(
  original: JsonObject,
  patch: JsonObject,
  path: string,
  meta: PatchMeta,
): JsonObject | typeof DELETE {
  const directive = patch.$patch;
  if (directive !== undefined) {
    if (directive === 'replace') return stripDirectives(patch);
    if (directive === 'delete') return DELETE;
    if (directive !== 'merge')
      throw badRequest(`strategic merge patch: unknown $patch directive "${String(directive)}"`);
  }
  if (patch.$retainKeys !== undefined) {
    if (!Array.isArray(patch.$retainKeys))
      throw badRequest('strategic merge patch: $retainKeys must be a list');
    const keep = new Set(patch.$retainKeys.filter((k): k is string => typeof k === 'string'));
    for (const k of Object.keys(original)) if (!keep.has(k)) delete original[k];
  }
  const orders: Array<[string, unknown[]]> = [];
  for (const [k, pv] of Object.entries(patch)) {
    if (k === '$patch' || k === '$retainKeys') continue;
    if (k.startsWith(SET_ORDER)) {
      if (!Array.isArray(pv)) throw badRequest(`strategic merge patch: ${k} must be a list`);
      orders.push([k.slice(SET_ORDER.length), pv]);
      continue;
    }
    if (k.startsWith(DELETE_FROM_PRIMITIVE)) {
      const field = k.slice(DELETE_FROM_PRIMITIVE.length);
      if (!Array.isArray(pv)) throw badRequest(`strategic merge patch: ${k} must be a list`);
      const cur = original[field];
      if (Array.isArray(cur)) original[field] = cur.filter((x) => !pv.some((d) => deepEqual(d, x)));
      continue;
    }
    if (k.startsWith('$')) throw badRequest(`strategic merge patch: unknown directive "${k}"`);
    const fieldPath = join(path, k);
    if (pv === null) {
      delete original[k];
      continue;
    }
    const ov = original[k];
    if (isObject(pv)) {
      const merged = mergeMap(isObject(ov) ? ov : {}, pv, fieldPath, meta);
      if (merged === DELETE) delete original[k];
      else original[k] = merged;
    } else if (Array.isArray(pv)) {
      original[k] = mergeList(Array.isArray(ov) ? ov : [], pv, fieldPath, meta);
    } else {
      original[k] = pv;
    }
  }
  for (const [field, order] of orders) {
    const cur = original[field];
    if (Array.isArray(cur)) original[field] = applyOrder(cur, order, meta.get(join(path, field))?.mergeKey);
  }
  return original;
}

function stripDirectives(v: JsonObject): JsonObject {
  const out: JsonObject = {};
  for (const [k, val] of Object.entries(v)) if (!k.startsWith('$')) out[k] = val;
  return out;
}

function keyOf(item: unknown, mergeKey: string): unknown {
  return isObject(item) ? item[mergeKey] : undefined;
}

function mergeList(original: unknown[], patch: unknown[], path: string, meta: PatchMeta): unknown[] {
  const lm = meta.get(path);
  if (!lm?.merge) {
    // Atomic list: the patch value replaces it; nested directives make no sense there but are stripped.
    return patch.map((x) => (isObject(x) ? stripDirectives(x) : x));
  }
  if (!lm.mergeKey) {
    // Primitive list with merge strategy (e.g. metadata.finalizers): set union, original order first.
    if (patch.some((x) => isObject(x) && x.$patch === 'replace')) return patch.filter((x) => !isObject(x));
    const out = [...original];
    for (const x of patch) if (!out.some((o) => deepEqual(o, x))) out.push(x);
    return out;
  }
  const mk = lm.mergeKey;
  if (patch.some((x) => isObject(x) && x.$patch === 'replace' && Object.keys(x).length === 1)) {
    return patch
      .filter((x) => !(isObject(x) && x.$patch === 'replace'))
      .map((x) => (isObject(x) ? stripDirectives(x) : x));
  }
  let out = [...original];
  for (const item of patch) {
    if (!isObject(item)) throw badRequest(`strategic merge patch: items of ${path} must be objects`);
    const key = item[mk];
    if (key === undefined)
      throw badRequest(`strategic merge patch: map in ${path} does not contain declared merge key: ${mk}`);
    if (item.$patch === 'delete') {
      out = out.filter((o) => !deepEqual(keyOf(o, mk), key));
      continue;
    }
    const idx = out.findIndex((o) => deepEqual(keyOf(o, mk), key));
    const base = idx >= 0 && isObject(out[idx]) ? (out[idx] as JsonObject) : {};
    const merged = mergeMap(clone(base), item, path, meta);
    if (merged === DELETE) {
      if (idx >= 0) out.splice(idx, 1);
    } else if (idx >= 0) out[idx] = merged;
    else out.push(merged);
  }
  return out;
}

/** `$setElementOrder`: items named in the order come first in that order; items only on the server follow. */
function applyOrder(list: unknown[], order: unknown[], mergeKey: string | undefined): unknown[] {
  const keyFn = (x: unknown): unknown => (mergeKey ? keyOf(x, mergeKey) : x);
  const orderKeys = order.map((o) => (mergeKey ? keyOf(o, mergeKey) : o));
  const ordered: unknown[] = [];
  const rest: unknown[] = [];
  for (const item of list) (orderKeys.some((k) => deepEqual(k, keyFn(item))) ? ordered : rest).push(item);
  ordered.sort(
    (a, b) =>
      orderKeys.findIndex((k) => deepEqual(k, keyFn(a))) - orderKeys.findIndex((k) => deepEqual(k, keyFn(b))),
  );
  return [...ordered, ...rest];
}
