/**
 * CustomResourceDefinitions: validation and status of the CRD object itself, the `ResourceType` that serves
 * its objects, and the structural-schema pipeline applied to every custom object on write, in kube-apiserver's
 * order: drop nulls of non-nullable fields, prune unknown fields, apply defaults, validate.
 * Not implemented: CEL rules (`x-kubernetes-validations`), `anyOf`/`oneOf`/`not`, webhook conversion
 * (all versions are served with conversion strategy None: only `apiVersion` changes).
 */
import type { Strategy } from './builtins.ts';
import { clone, deepEqual, isInteger, isObject, type JsonObject, objAt, stableStringify } from './json.ts';
import {
  ALL_VERBS,
  type CrdServing,
  type ResourceType,
  type SubresourceInfo,
  sortVersions,
} from './resources.ts';
import type { FieldError } from './status.ts';
import {
  Errors,
  isDns1123Label,
  isDns1123Subdomain,
  LABEL_MSG,
  oneOf,
  optArray,
  optObject,
  optString,
} from './validation.ts';

export const CRD_KEY = 'apiextensions.k8s.io/customresourcedefinitions';
const STATUS_VERBS = ['get', 'patch', 'update'] as const;

function names(crd: JsonObject): JsonObject {
  return objAt(objAt(crd, 'spec'), 'names') ?? {};
}

function defaultCrd(obj: JsonObject): void {
  const spec = isObject(obj.spec) ? obj.spec : {};
  const n = objAt(spec, 'names');
  if (n && typeof n.kind === 'string') {
    if (n.singular === undefined) n.singular = n.kind.toLowerCase();
    if (n.listKind === undefined) n.listKind = `${n.kind}List`;
  }
  if (spec.conversion === undefined) spec.conversion = { strategy: 'None' };
}

/** Status the apiextensions controllers would converge to: names accepted, established, stored versions. */
export function crdStatus(obj: JsonObject, old: JsonObject | null, now: string): JsonObject {
  const versions = Array.isArray(objAt(obj, 'spec')?.versions)
    ? (objAt(obj, 'spec')?.versions as unknown[])
    : [];
  const storage = versions.find((v) => isObject(v) && v.storage === true);
  const stored = new Set<string>(
    Array.isArray(objAt(old, 'status')?.storedVersions)
      ? (objAt(old, 'status')?.storedVersions as string[])
      : [],
  );
  if (isObject(storage) && typeof storage.name === 'string') stored.add(storage.name);
  const oldConds = Array.isArray(objAt(old, 'status')?.conditions)
    ? (objAt(old, 'status')?.conditions as unknown[])
    : [];
  const since = (type: string): string => {
    const c = oldConds.find((x) => isObject(x) && x.type === type);
    return isObject(c) && typeof c.lastTransitionTime === 'string' ? c.lastTransitionTime : now;
  };
  return {
    conditions: [
      {
        type: 'NamesAccepted',
        status: 'True',
        lastTransitionTime: since('NamesAccepted'),
        reason: 'NoConflicts',
        message: 'no conflicts found',
      },
      {
        type: 'Established',
        status: 'True',
        lastTransitionTime: since('Established'),
        reason: 'InitialNamesAccepted',
        message: 'the initial names have been accepted',
      },
    ],
    acceptedNames: clone(names(obj)),
    storedVersions: [...stored],
  };
}

export const crdStrategy: Strategy = {
  prepareCreate: defaultCrd,
  prepareUpdate: defaultCrd,
  validate(obj, old): FieldError[] {
    const errs = new Errors();
    const spec = objAt(obj, 'spec');
    if (!spec) {
      errs.required('spec');
      return errs.list;
    }
    const group = optString(errs, spec, 'group', 'spec.group');
    if (!group) errs.required('spec.group');
    else if (!isDns1123Subdomain(group) || !group.includes('.'))
      errs.invalid('spec.group', group, 'should be a domain with at least one dot');
    const n = optObject(errs, spec, 'names', 'spec.names');
    if (!n) errs.required('spec.names');
    const plural = n ? optString(errs, n, 'plural', 'spec.names.plural') : undefined;
    const kind = n ? optString(errs, n, 'kind', 'spec.names.kind') : undefined;
    if (!plural) errs.required('spec.names.plural');
    else if (!isDns1123Label(plural)) errs.invalid('spec.names.plural', plural, LABEL_MSG);
    if (!kind) errs.required('spec.names.kind');
    else if (!/^[A-Za-z][A-Za-z0-9]*$/.test(kind))
      errs.invalid(
        'spec.names.kind',
        kind,
        'may have mixed case, but should otherwise match: [a-z]([-a-z0-9]*[a-z0-9])?',
      );
    const singular = n ? optString(errs, n, 'singular', 'spec.names.singular') : undefined;
    if (singular && !isDns1123Label(singular)) errs.invalid('spec.names.singular', singular, LABEL_MSG);
    for (const k of ['shortNames', 'categories']) n && optArray(errs, n, k, `spec.names.${k}`);
    const name = objAt(obj, 'metadata')?.name;
    if (plural && group && name !== `${plural}.${group}`)
      errs.invalid('metadata.name', name, `must be spec.names.plural+"."+spec.group`);
    const scope = optString(errs, spec, 'scope', 'spec.scope');
    if (!scope) errs.required('spec.scope');
    oneOf(errs, 'spec.scope', scope, ['Namespaced', 'Cluster']);
    const versions = optArray(errs, spec, 'versions', 'spec.versions');
    if (!versions || versions.length === 0)
      errs.required('spec.versions', 'must have exactly one version marked as storage version');
    let storage = 0;
    const seen = new Set<string>();
    versions?.forEach((v, i) => {
      const f = `spec.versions[${i}]`;
      if (!isObject(v)) {
        errs.invalid(f, v, 'must be an object');
        return;
      }
      const vn = optString(errs, v, 'name', `${f}.name`);
      if (!vn) errs.required(`${f}.name`);
      else {
        if (!isDns1123Label(vn)) errs.invalid(`${f}.name`, vn, LABEL_MSG);
        if (seen.has(vn)) errs.duplicate(`${f}.name`, vn);
        seen.add(vn);
      }
      if (typeof v.served !== 'boolean') errs.required(`${f}.served`);
      if (typeof v.storage !== 'boolean') errs.required(`${f}.storage`);
      if (v.storage === true) storage++;
      const schema = objAt(v, 'schema');
      const oapi = objAt(schema, 'openAPIV3Schema');
      if (!oapi) errs.required(`${f}.schema.openAPIV3Schema`, 'schemas are required');
      else if (oapi.type !== 'object')
        errs.invalid(`${f}.schema.openAPIV3Schema.type`, oapi.type, 'must be object at the root');
      optArray(errs, v, 'additionalPrinterColumns', `${f}.additionalPrinterColumns`)?.forEach((c, j) => {
        const cf = `${f}.additionalPrinterColumns[${j}]`;
        if (!isObject(c)) {
          errs.invalid(cf, c, 'must be an object');
          return;
        }
        if (!optString(errs, c, 'name', `${cf}.name`)) errs.required(`${cf}.name`);
        if (!optString(errs, c, 'jsonPath', `${cf}.jsonPath`)) errs.required(`${cf}.jsonPath`);
        oneOf(errs, `${cf}.type`, optString(errs, c, 'type', `${cf}.type`), [
          'integer',
          'number',
          'string',
          'boolean',
          'date',
        ]);
      });
      const sub = optObject(errs, v, 'subresources', `${f}.subresources`);
      const sc = sub ? optObject(errs, sub, 'scale', `${f}.subresources.scale`) : undefined;
      if (sc) {
        if (!optString(errs, sc, 'specReplicasPath', `${f}.subresources.scale.specReplicasPath`))
          errs.required(`${f}.subresources.scale.specReplicasPath`);
        if (!optString(errs, sc, 'statusReplicasPath', `${f}.subresources.scale.statusReplicasPath`))
          errs.required(`${f}.subresources.scale.statusReplicasPath`);
      }
    });
    if (versions && versions.length > 0 && storage !== 1)
      errs.invalid(
        'spec.versions',
        versions.length,
        'must have exactly one version marked as storage version',
      );
    if (old) {
      const os = objAt(old, 'spec') ?? {};
      if (os.group !== spec.group) errs.immutable('spec.group', spec.group);
      if (os.scope !== spec.scope) errs.immutable('spec.scope', spec.scope);
      if (objAt(os, 'names')?.plural !== plural) errs.immutable('spec.names.plural', plural);
    }
    return errs.list;
  },
};

function jsonPathToField(p: string): string {
  return p.startsWith('.') ? p.slice(1) : p;
}

/** The ResourceType serving a CRD's objects, or null when the CRD serves nothing. */
export function crdToType(crd: JsonObject): ResourceType | null {
  const spec = objAt(crd, 'spec');
  const n = names(crd);
  const group = spec?.group;
  const plural = n.plural;
  const kind = n.kind;
  if (typeof group !== 'string' || typeof plural !== 'string' || typeof kind !== 'string') return null;
  const versions = (Array.isArray(spec?.versions) ? spec.versions : []).filter(isObject);
  const served = versions.filter((v) => v.served === true && typeof v.name === 'string');
  const storage = versions.find((v) => v.storage === true);
  if (served.length === 0 || !storage || typeof storage.name !== 'string') return null;
  const schemas = new Map<string, JsonObject | null>();
  const printerColumns = new Map<string, readonly JsonObject[]>();
  const selectableFields = new Map<string, readonly string[]>();
  let statusSub = false;
  let scale: CrdServing['scale'] = null;
  for (const v of served) {
    const vn = v.name as string;
    schemas.set(vn, objAt(objAt(v, 'schema'), 'openAPIV3Schema'));
    printerColumns.set(
      vn,
      (Array.isArray(v.additionalPrinterColumns) ? v.additionalPrinterColumns : []).filter(isObject),
    );
    selectableFields.set(
      vn,
      (Array.isArray(v.selectableFields) ? v.selectableFields : [])
        .map((f) => (isObject(f) && typeof f.jsonPath === 'string' ? jsonPathToField(f.jsonPath) : ''))
        .filter((s) => s !== ''),
    );
    const sub = objAt(v, 'subresources');
    if (sub && isObject(sub.status)) statusSub = true;
    const sc = objAt(sub, 'scale');
    if (sc && typeof sc.specReplicasPath === 'string' && typeof sc.statusReplicasPath === 'string') {
      scale = {
        specReplicasPath: jsonPathToField(sc.specReplicasPath),
        statusReplicasPath: jsonPathToField(sc.statusReplicasPath),
        labelSelectorPath:
          typeof sc.labelSelectorPath === 'string' ? jsonPathToField(sc.labelSelectorPath) : null,
      };
    }
  }
  const versionNames = sortVersions(served.map((v) => v.name as string));
  const subresources: SubresourceInfo[] = [];
  const preferred = versionNames[0] as string;
  if (statusSub) subresources.push({ name: 'status', group, version: preferred, kind, verbs: STATUS_VERBS });
  if (scale)
    subresources.push({
      name: 'scale',
      group: 'autoscaling',
      version: 'v1',
      kind: 'Scale',
      verbs: STATUS_VERBS,
    });
  const md = objAt(crd, 'metadata');
  return {
    key: `${group}/${plural}`,
    group,
    versions: versionNames,
    storageVersion: storage.name,
    resource: plural,
    singular: typeof n.singular === 'string' ? n.singular : kind.toLowerCase(),
    kind,
    listKind: typeof n.listKind === 'string' ? n.listKind : `${kind}List`,
    namespaced: spec?.scope !== 'Cluster',
    shortNames: Array.isArray(n.shortNames)
      ? n.shortNames.filter((s): s is string => typeof s === 'string')
      : [],
    categories: Array.isArray(n.categories)
      ? n.categories.filter((s): s is string => typeof s === 'string')
      : [],
    verbs: ALL_VERBS,
    subresources,
    statusSubresource: statusSub,
    generation: true,
    allowCreateOnUpdate: false,
    persisted: true,
    patchMeta: null,
    nameRule: 'subdomain',
    fieldLabels: {},
    crd: {
      crdName: typeof md?.name === 'string' ? md.name : '',
      crdUid: typeof md?.uid === 'string' ? md.uid : '',
      schemas,
      printerColumns,
      scale,
      selectableFields,
    },
  };
}

/** True when two CRD specs serve the same thing (so the registry need not be rebuilt on status-only writes). */
export function sameServing(a: JsonObject, b: JsonObject): boolean {
  return stableStringify(objAt(a, 'spec')) === stableStringify(objAt(b, 'spec'));
}

// ---- structural schema: prune, default, validate ----------------------------------------------------------------

const PRESERVE = 'x-kubernetes-preserve-unknown-fields';
const INT_OR_STRING = 'x-kubernetes-int-or-string';
const EMBEDDED = 'x-kubernetes-embedded-resource';

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (Number.isInteger(v)) return 'integer';
  return typeof v === 'number' ? 'number' : typeof v;
}

function typeMatches(schema: JsonObject, v: unknown): boolean {
  if (schema[INT_OR_STRING] === true) return isInteger(v) || typeof v === 'string';
  switch (schema.type) {
    case 'object':
      return isObject(v);
    case 'array':
      return Array.isArray(v);
    case 'string':
      return typeof v === 'string';
    case 'integer':
      return isInteger(v);
    case 'number':
      return typeof v === 'number';
    case 'boolean':
      return typeof v === 'boolean';
    default:
      return true;
  }
}

/** Applies the CRD's schema for `version` to a custom object in place; returns field errors. */
export function applySchema(obj: JsonObject, schema: JsonObject | null): FieldError[] {
  const errs = new Errors();
  if (!schema) return errs.list;
  walk(obj, schema, '', errs, true);
  return errs.list;
}

function childPath(path: string, key: string): string {
  return path ? `${path}.${key}` : key;
}

function walk(v: unknown, schema: JsonObject, path: string, errs: Errors, root: boolean): void {
  if (!typeMatches(schema, v)) {
    const expected = schema[INT_OR_STRING] === true ? 'integer or string' : String(schema.type);
    errs.invalid(
      path || '<root>',
      v,
      `${path || '<root>'} in body must be of type ${expected}: "${typeName(v)}"`,
    );
    return;
  }
  if (isObject(v)) walkObject(v, schema, path, errs, root);
  else if (Array.isArray(v)) walkArray(v, schema, path, errs);
  validateScalar(v, schema, path, errs);
}

function walkObject(o: JsonObject, schema: JsonObject, path: string, errs: Errors, root: boolean): void {
  const props = objAt(schema, 'properties');
  const additional = objAt(schema, 'additionalProperties');
  const preserve = schema[PRESERVE] === true;
  const embedded = root || schema[EMBEDDED] === true;
  for (const [k, val] of Object.entries(o)) {
    if (embedded && (k === 'apiVersion' || k === 'kind' || k === 'metadata')) continue;
    const ps = props ? objAt(props, k) : additional;
    if (val === null && !(ps && ps.nullable === true)) {
      delete o[k];
      continue;
    }
    if (!ps) {
      if (!preserve && !(props === null && schema.additionalProperties === true)) delete o[k];
    }
  }
  // Defaults fill properties that are absent after pruning (and their nested defaults follow).
  if (props) {
    for (const [k, ps] of Object.entries(props)) {
      if (!isObject(ps) || ps.default === undefined || o[k] !== undefined) continue;
      o[k] = clone(ps.default);
    }
  }
  for (const [k, val] of Object.entries(o)) {
    if (embedded && (k === 'apiVersion' || k === 'kind' || k === 'metadata')) continue;
    const ps = props ? objAt(props, k) : additional;
    if (ps) walk(val, ps, childPath(path, k), errs, false);
  }
  const required = Array.isArray(schema.required) ? schema.required : [];
  for (const r of required)
    if (typeof r === 'string' && o[r] === undefined) errs.required(childPath(path, r));
  const count = Object.keys(o).length;
  if (isInteger(schema.maxProperties) && count > schema.maxProperties)
    errs.list.push({
      field: path,
      type: 'TooMany',
      detail: `must have at most ${schema.maxProperties} properties`,
    });
  if (isInteger(schema.minProperties) && count < schema.minProperties)
    errs.invalid(path, count, `must have at least ${schema.minProperties} properties`);
}

function walkArray(a: unknown[], schema: JsonObject, path: string, errs: Errors): void {
  const items = objAt(schema, 'items');
  if (items) {
    for (let i = 0; i < a.length; i++) {
      if (a[i] === null && items.nullable !== true) continue;
      walk(a[i], items, `${path}[${i}]`, errs, false);
    }
  }
  if (isInteger(schema.maxItems) && a.length > schema.maxItems)
    errs.list.push({
      field: path,
      type: 'TooMany',
      value: a.length,
      detail: `must have at most ${schema.maxItems} items`,
    });
  if (isInteger(schema.minItems) && a.length < schema.minItems)
    errs.invalid(path, a.length, `${path} in body should have at least ${schema.minItems} items`);
  const listType = schema['x-kubernetes-list-type'];
  if (listType === 'set') {
    for (let i = 0; i < a.length; i++)
      for (let j = 0; j < i; j++) if (deepEqual(a[i], a[j])) errs.duplicate(`${path}[${i}]`, a[i]);
  } else if (listType === 'map' && Array.isArray(schema['x-kubernetes-list-map-keys'])) {
    const keys = (schema['x-kubernetes-list-map-keys'] as unknown[]).filter(
      (k): k is string => typeof k === 'string',
    );
    const seen = new Set<string>();
    a.forEach((item, i) => {
      if (!isObject(item)) return;
      const id = JSON.stringify(keys.map((k) => item[k] ?? null));
      if (seen.has(id)) errs.duplicate(`${path}[${i}]`, Object.fromEntries(keys.map((k) => [k, item[k]])));
      seen.add(id);
    });
  }
}

function validateScalar(v: unknown, schema: JsonObject, path: string, errs: Errors): void {
  const p = path || '<root>';
  if (Array.isArray(schema.enum) && !schema.enum.some((e) => deepEqual(e, v)))
    errs.notSupported(
      p,
      v,
      schema.enum.map((e) => (typeof e === 'string' ? e : JSON.stringify(e))),
    );
  if (typeof v === 'number') {
    if (
      typeof schema.minimum === 'number' &&
      (schema.exclusiveMinimum === true ? v <= schema.minimum : v < schema.minimum)
    )
      errs.invalid(p, v, `${p} in body should be greater than or equal to ${schema.minimum}`);
    if (
      typeof schema.maximum === 'number' &&
      (schema.exclusiveMaximum === true ? v >= schema.maximum : v > schema.maximum)
    )
      errs.invalid(p, v, `${p} in body should be less than or equal to ${schema.maximum}`);
  }
  if (typeof v === 'string') {
    const len = [...v].length;
    if (isInteger(schema.maxLength) && len > schema.maxLength)
      errs.list.push({
        field: p,
        type: 'TooLong',
        value: v,
        detail: `may not be more than ${schema.maxLength} bytes`,
      });
    if (isInteger(schema.minLength) && len < schema.minLength)
      errs.invalid(p, v, `${p} in body should be at least ${schema.minLength} chars long`);
    if (typeof schema.pattern === 'string') {
      const re = compilePattern(schema.pattern);
      if (re && !re.test(v)) errs.invalid(p, v, `${p} in body should match '${schema.pattern}'`);
    }
  }
}

const patternCache = new Map<string, RegExp | null>();

/** CRD patterns are Go RE2; the common subset compiles as ECMAScript. Others are skipped, not guessed. */
function compilePattern(p: string): RegExp | null {
  let re = patternCache.get(p);
  if (re === undefined) {
    try {
      re = new RegExp(p, 'u');
    } catch {
      re = null;
    }
    patternCache.set(p, re);
  }
  return re;
}
