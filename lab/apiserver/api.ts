/**
 * The REST semantics of kube-apiserver over the store, independent of HTTP: create/get/list/update/patch/
 * delete/watch with resourceVersion preconditions, status/scale/finalize/binding/token subresources,
 * generation, finalizers and graceful deletion, CRD (un)registration, TokenRequest and TokenReview.
 * The HTTP front end and the in-process client both call this, so both see identical behaviour.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { type NetworkConfig, STRATEGIES, type StrategyContext } from './builtins.ts';
import { applySchema, CRD_KEY, crdStatus, crdStrategy, crdToType, sameServing } from './crd.ts';
import {
  clone,
  deepEqual,
  isInteger,
  isObject,
  type JsonObject,
  nowRfc3339,
  objAt,
  randomSuffix,
  stringMap,
} from './json.ts';
import { applyJsonPatch, applyMergePatch, applyStrategicMergePatch } from './patch.ts';
import { apiVersionOf, fieldLabelsOf, fieldsOf, type Registry, type ResourceType } from './resources.ts';
import {
  type FieldRequirement,
  formatLabelSelector,
  type LabelSelector,
  labelSelectorFromObject,
  labelsOf,
  matchesFields,
  matchesLabels,
  parseFieldSelector,
  parseLabelSelector,
} from './selectors.ts';
import {
  ApiError,
  alreadyExists,
  badRequest,
  conflict,
  type FieldError,
  forbidden,
  invalid,
  methodNotAllowed,
  notFound,
  STALE_OBJECT_MESSAGE,
  unsupportedMediaType,
} from './status.ts';
import { objectKey, type Store, type StoreWatch, type WatchSink } from './store.ts';
import type { TokenIssuer } from './tokens.ts';
import { Errors, validateName, validateObjectMeta } from './validation.ts';

export type PatchType = 'json' | 'merge' | 'strategic' | 'apply';

export const PATCH_CONTENT_TYPES: Readonly<Record<string, PatchType>> = {
  'application/json-patch+json': 'json',
  'application/merge-patch+json': 'merge',
  'application/strategic-merge-patch+json': 'strategic',
  'application/apply-patch+yaml': 'apply',
  'application/apply-patch+cbor': 'apply',
};

export interface UserInfo {
  readonly username: string;
  readonly uid?: string;
  readonly groups: readonly string[];
  readonly extra?: Readonly<Record<string, readonly string[]>>;
}

export interface WriteOptions {
  readonly dryRun?: boolean;
  readonly fieldManager?: string;
  /** Server-side apply: take over conflicting fields (accepted; the lab does not track field owners). */
  readonly force?: boolean;
}

export interface DeleteOptions extends WriteOptions {
  readonly propagationPolicy?: 'Background' | 'Foreground' | 'Orphan';
  readonly gracePeriodSeconds?: number;
  readonly preconditions?: { readonly uid?: string; readonly resourceVersion?: string };
}

export interface ListOptions {
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
  readonly limit?: number;
  readonly continue?: string;
}

export interface ListResult {
  readonly items: JsonObject[];
  readonly resourceVersion: string;
  readonly continue?: string;
  readonly remainingItemCount?: number;
}

export interface WatchOptions {
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
  readonly resourceVersion?: string;
  readonly sendInitialEvents?: boolean;
}

export interface ApiCoreOptions {
  readonly store: Store;
  readonly registry: Registry;
  readonly tokens: TokenIssuer;
  readonly network: NetworkConfig;
  readonly logger: Logger;
  /** Audiences of tokens the API itself accepts (TokenRequest/TokenReview default). */
  readonly apiAudiences: readonly string[];
  readonly minTokenExpirationSeconds: number;
}

/** Finalizers the garbage collector acts on (apimachinery metav1.FinalizerOrphanDependents/DeleteDependents). */
export const FINALIZER_ORPHAN = 'orphan';
export const FINALIZER_FOREGROUND = 'foregroundDeletion';
/** Namespaces kube-apiserver refuses to delete. */
const IMMORTAL_NAMESPACES = new Set(['default', 'kube-system', 'kube-public']);
/** kube-apiserver caps requested token lifetimes at 2^32 seconds. */
const MAX_TOKEN_EXPIRATION_SECONDS = 2 ** 32;
/** Default TokenRequest lifetime (1 h), as in the TokenRequest API. */
const DEFAULT_TOKEN_EXPIRATION_SECONDS = 3600;
/** A token bound to a pod stays valid this long after the pod's deletion started (kube's grace for kubelets). */
const BOUND_POD_DELETION_GRACE_MS = 60_000;
/** generateName retries before giving up (collisions are astronomically rare with 27^5 suffixes). */
const GENERATE_NAME_ATTEMPTS = 8;

function meta(obj: JsonObject): JsonObject {
  if (!isObject(obj.metadata)) obj.metadata = {};
  return obj.metadata as JsonObject;
}

function nameOf(obj: JsonObject): string {
  const n = objAt(obj, 'metadata')?.name;
  return typeof n === 'string' ? n : '';
}

function rvOf(obj: JsonObject): string {
  const rv = objAt(obj, 'metadata')?.resourceVersion;
  return typeof rv === 'string' ? rv : '';
}

function finalizersOf(obj: JsonObject): string[] {
  const f = objAt(obj, 'metadata')?.finalizers;
  return Array.isArray(f) ? f.filter((x): x is string => typeof x === 'string') : [];
}

/** Everything except metadata (and status when it has its own subresource): what `generation` counts. */
function specView(t: ResourceType, obj: JsonObject): JsonObject {
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(obj)) {
    if (k === 'metadata' || k === 'apiVersion' || k === 'kind') continue;
    if (k === 'status' && t.statusSubresource) continue;
    out[k] = v;
  }
  return out;
}

/** Go's `omitempty` on ObjectMeta: empty maps and lists are not stored (kubectl shows none). */
function omitEmptyMeta(md: JsonObject): void {
  for (const k of ['labels', 'annotations'])
    if (isObject(md[k]) && Object.keys(md[k] as JsonObject).length === 0) delete md[k];
  for (const k of ['finalizers', 'ownerReferences', 'managedFields'])
    if (Array.isArray(md[k]) && (md[k] as unknown[]).length === 0) delete md[k];
}

function withoutRv(obj: JsonObject): JsonObject {
  return {
    ...obj,
    metadata: { ...objAt(obj, 'metadata'), resourceVersion: undefined, managedFields: undefined },
  };
}

function encodeContinue(rv: number, start: string): string {
  return Buffer.from(JSON.stringify({ v: 'meta.k8s.io/v1', rv, start })).toString('base64');
}

function decodeContinue(token: string): { rv: number; start: string } {
  try {
    const v: unknown = JSON.parse(Buffer.from(token, 'base64').toString('utf8'));
    if (isObject(v) && typeof v.rv === 'number' && typeof v.start === 'string')
      return { rv: v.rv, start: v.start };
  } catch {
    // fall through
  }
  throw badRequest(`continue key is not valid: ${token.slice(0, 40)}`);
}

export interface Selectors {
  readonly labels: LabelSelector;
  readonly fields: readonly FieldRequirement[];
}

export class ApiCore {
  readonly store: Store;
  readonly registry: Registry;
  readonly tokens: TokenIssuer;
  private readonly opts: ApiCoreOptions;
  private readonly ctx: StrategyContext;

  constructor(opts: ApiCoreOptions) {
    this.opts = opts;
    this.store = opts.store;
    this.registry = opts.registry;
    this.tokens = opts.tokens;
    const store = opts.store;
    this.ctx = {
      get now() {
        return new Date();
      },
      get: (key, ns, name) => store.get(key, ns, name),
      list: (key, ns) => store.list(key, ns),
      network: opts.network,
    };
    // Serve every CRD already in the store (after a restart).
    for (const crd of store.list(CRD_KEY)) this.registerCrd(crd);
  }

  // ---- reads --------------------------------------------------------------------------------------------------

  /** The object as served in `version` (CRDs serve several versions of the same stored object). */
  out(t: ResourceType, version: string, obj: JsonObject): JsonObject {
    const apiVersion = apiVersionOf(t.group, version);
    return obj.apiVersion === apiVersion && obj.kind === t.kind ? obj : { ...obj, apiVersion, kind: t.kind };
  }

  get(t: ResourceType, version: string, namespace: string, name: string): JsonObject {
    const obj = this.store.get(t.key, t.namespaced ? namespace : '', name);
    if (!obj) throw notFound(t, name);
    return this.out(t, version, obj);
  }

  selectors(t: ResourceType, version: string, labelSelector?: string, fieldSelector?: string): Selectors {
    const labels = parseLabelSelector(labelSelector ?? '');
    const fields = parseFieldSelector(fieldSelector ?? '');
    const supported = fieldLabelsOf(t, version);
    for (const f of fields)
      if (!supported.has(f.field)) throw badRequest(`field label not supported: ${f.field}`);
    return { labels, fields };
  }

  matcher(t: ResourceType, version: string, sel: Selectors): (obj: JsonObject) => boolean {
    if ((sel.labels?.length ?? 0) === 0 && sel.fields.length === 0) return () => true;
    return (obj) =>
      matchesLabels(sel.labels, labelsOf(obj)) && matchesFields(sel.fields, fieldsOf(t, obj, version));
  }

  list(t: ResourceType, version: string, namespace: string | null, opts: ListOptions = {}): ListResult {
    const match = this.matcher(
      t,
      version,
      this.selectors(t, version, opts.labelSelector, opts.fieldSelector),
    );
    let listRv = this.store.rv;
    let start: string | null = null;
    if (opts.continue) {
      const c = decodeContinue(opts.continue);
      listRv = c.rv;
      start = c.start;
    }
    const ns = t.namespaced ? namespace : null;
    const items: JsonObject[] = [];
    let next: string | undefined;
    let remaining = 0;
    const limit = opts.limit && opts.limit > 0 ? opts.limit : Number.POSITIVE_INFINITY;
    for (const obj of this.store.list(t.key, ns)) {
      const key = objectKey(String(objAt(obj, 'metadata')?.namespace ?? ''), nameOf(obj));
      if (start !== null && key <= start) continue;
      if (!match(obj)) continue;
      if (items.length >= limit) {
        remaining++;
        continue;
      }
      items.push(this.out(t, version, obj));
      if (items.length === limit) next = key;
    }
    if (remaining === 0) return { items, resourceVersion: String(listRv) };
    return {
      items,
      resourceVersion: String(listRv),
      continue: encodeContinue(listRv, next as string),
      remainingItemCount: remaining,
    };
  }

  watch(
    t: ResourceType,
    version: string,
    namespace: string | null,
    opts: WatchOptions,
    sink: WatchSink,
  ): StoreWatch {
    const match = this.matcher(
      t,
      version,
      this.selectors(t, version, opts.labelSelector, opts.fieldSelector),
    );
    const rvParam = opts.resourceVersion ?? '';
    let fromRv: number | null = null;
    if (rvParam !== '' && rvParam !== '0') {
      if (!/^\d+$/.test(rvParam))
        throw badRequest(`resourceVersion: Invalid value: "${rvParam}": must be a non-negative integer`);
      fromRv = Number(rvParam);
    }
    return this.store.watch(
      {
        key: t.key,
        namespace: t.namespaced ? namespace : null,
        fromRv,
        initialState: fromRv === null || opts.sendInitialEvents === true,
        matches: match,
      },
      { send: (type, obj) => sink.send(type, this.out(t, version, obj)) },
    );
  }

  // ---- writes -------------------------------------------------------------------------------------------------

  /** Checks apiVersion/kind of a request body against the endpoint; returns a private copy to work on. */
  decodeBody(t: ResourceType, version: string, body: unknown, kind = t.kind, group = t.group): JsonObject {
    if (!isObject(body))
      throw badRequest(
        `the body of the request must be a JSON or YAML object, not ${Array.isArray(body) ? 'a list' : typeof body}`,
      );
    const expected = apiVersionOf(group, version);
    if (body.apiVersion !== undefined && body.apiVersion !== expected) {
      throw badRequest(
        `the API version in the data (${String(body.apiVersion)}) does not match the expected API version (${expected})`,
      );
    }
    if (body.kind !== undefined && body.kind !== kind) {
      throw badRequest(
        `${kind} in version "${version}" cannot be handled as a ${kind}: the kind in the data (${String(body.kind)}) does not match the expected kind`,
      );
    }
    if (body.metadata !== undefined && !isObject(body.metadata)) {
      throw badRequest(
        `${kind} in version "${version}" cannot be handled as a ${kind}: metadata must be an object`,
      );
    }
    const obj = clone(body);
    obj.apiVersion = apiVersionOf(group, group === t.group ? t.storageVersion : version);
    obj.kind = kind;
    meta(obj);
    return obj;
  }

  private checkNamespace(t: ResourceType, namespace: string, obj: JsonObject): void {
    const md = meta(obj);
    if (!t.namespaced) {
      delete md.namespace;
      return;
    }
    if (md.namespace !== undefined && md.namespace !== '' && md.namespace !== namespace) {
      throw badRequest(
        'the namespace of the provided object does not match the namespace sent on the request',
      );
    }
    md.namespace = namespace;
  }

  /** Admission shared by create paths: the namespace must exist and not be terminating. */
  private admitNamespace(t: ResourceType, namespace: string, name: string): void {
    if (!t.namespaced) return;
    const ns = this.store.get('/namespaces', '', namespace);
    if (!ns) throw notFound({ group: '', resource: 'namespaces' }, namespace);
    if (objAt(ns, 'metadata')?.deletionTimestamp) {
      throw forbidden(
        `${t.group ? `${t.resource}.${t.group}` : t.resource} "${name}" is forbidden: unable to create new content in namespace ${namespace} because it is being terminated`,
        {
          name,
          kind: t.resource,
          causes: [
            {
              reason: 'NamespaceTerminating',
              message: `namespace ${namespace} is being terminated`,
              field: 'metadata.namespace',
            },
          ],
        },
      );
    }
  }

  private validate(t: ResourceType, _version: string, obj: JsonObject, old: JsonObject | null): FieldError[] {
    const errs = new Errors();
    const md = meta(obj);
    validateObjectMeta(errs, md);
    const name = nameOf(obj);
    if (!name) errs.required('metadata.name', 'name or generateName is required');
    else validateName(errs, 'metadata.name', name, t.nameRule);
    if (old) {
      const om = meta(old);
      if (md.uid !== om.uid) errs.immutable('metadata.uid', md.uid);
    }
    const strategy = t.key === CRD_KEY ? crdStrategy : STRATEGIES.get(t.key);
    if (errs.empty && strategy?.validate) errs.list.push(...strategy.validate(obj, old, this.ctx));
    if (t.key === CRD_KEY && errs.empty) this.validateCrdNames(obj, errs);
    return errs.list;
  }

  private validateCrdNames(obj: JsonObject, errs: Errors): void {
    const t = crdToType(obj);
    if (t && this.registry.isBuiltin(t.key))
      errs.invalid('spec.names.plural', t.resource, `conflicts with the built-in resource ${t.key}`);
  }

  /**
   * Structural-schema pruning and defaulting of a custom object, before anything compares it with the stored
   * version (generation, no-op detection); its validation errors are reported with the others.
   */
  private schemaErrors(t: ResourceType, version: string, obj: JsonObject): FieldError[] {
    return t.crd ? applySchema(obj, t.crd.schemas.get(version) ?? null) : [];
  }

  private failIfInvalid(
    t: ResourceType,
    version: string,
    obj: JsonObject,
    old: JsonObject | null,
    early: readonly FieldError[] = [],
  ): void {
    const errs = [...early, ...this.validate(t, version, obj, old)];
    if (errs.length > 0)
      throw invalid(t.kind, t.group, nameOf(obj) || String(objAt(obj, 'metadata')?.generateName ?? ''), errs);
  }

  async create(
    t: ResourceType,
    version: string,
    namespace: string,
    body: unknown,
    opts: WriteOptions = {},
  ): Promise<JsonObject> {
    if (!t.persisted) throw methodNotAllowed('POST');
    const obj = this.decodeBody(t, version, body);
    return this.createDecoded(t, version, namespace, obj, opts);
  }

  private async createDecoded(
    t: ResourceType,
    version: string,
    namespace: string,
    obj: JsonObject,
    opts: WriteOptions,
  ): Promise<JsonObject> {
    this.checkNamespace(t, namespace, obj);
    const md = meta(obj);
    const ns = t.namespaced ? namespace : '';
    if (
      (md.name === undefined || md.name === '') &&
      typeof md.generateName === 'string' &&
      md.generateName !== ''
    ) {
      for (let i = 0; i < GENERATE_NAME_ATTEMPTS; i++) {
        const candidate = `${md.generateName.slice(0, 58)}${randomSuffix()}`;
        if (!this.store.get(t.key, ns, candidate)) {
          md.name = candidate;
          break;
        }
      }
    }
    const name = nameOf(obj);
    this.admitNamespace(t, namespace, name);
    md.uid = randomUUID();
    md.creationTimestamp = nowRfc3339();
    delete md.resourceVersion;
    delete md.deletionTimestamp;
    delete md.deletionGracePeriodSeconds;
    delete md.managedFields;
    delete md.selfLink;
    if (t.generation) md.generation = 1;
    else delete md.generation;
    // Status is written through the status subresource; nodes are the exception (kubelets register with it).
    if (t.statusSubresource && t.key !== '/nodes') delete obj.status;
    const strategy = t.key === CRD_KEY ? crdStrategy : STRATEGIES.get(t.key);
    strategy?.prepareCreate?.(obj, this.ctx);
    if (t.key === CRD_KEY) obj.status = crdStatus(obj, null, nowRfc3339());
    omitEmptyMeta(md);
    this.failIfInvalid(t, version, obj, null, this.schemaErrors(t, version, obj));
    if (this.store.get(t.key, ns, name)) throw alreadyExists(t, name);
    if (opts.dryRun) return this.out(t, version, obj);
    const stored = await this.commitObject(t, ns, name, obj, null);
    return this.out(t, version, stored);
  }

  /** Writes an object, keeping the CRD registry in step with CRD objects. */
  private async commitObject(
    t: ResourceType,
    ns: string,
    name: string,
    obj: JsonObject,
    old: JsonObject | null,
  ): Promise<JsonObject> {
    const p = this.store.commit(t.key, ns, name, obj);
    if (t.key === CRD_KEY && (!old || !sameServing(old, obj))) this.registerCrd(obj);
    return p;
  }

  private registerCrd(crd: JsonObject): void {
    const t = crdToType(crd);
    if (!t) return;
    if (this.registry.isBuiltin(t.key)) return;
    this.registry.register(t);
  }

  async update(
    t: ResourceType,
    version: string,
    namespace: string,
    name: string,
    body: unknown,
    opts: WriteOptions = {},
    subresource: '' | 'status' | 'finalize' = '',
  ): Promise<JsonObject> {
    const obj = this.decodeBody(t, version, body);
    this.checkNamespace(t, namespace, obj);
    const md = meta(obj);
    if (md.name === undefined || md.name === '') md.name = name;
    if (md.name !== name)
      throw badRequest(
        `the name of the object (${String(md.name)}) does not match the name on the URL (${name})`,
      );
    const ns = t.namespaced ? namespace : '';
    const old = this.store.get(t.key, ns, name);
    if (!old) {
      if (t.allowCreateOnUpdate && subresource === '')
        return this.createDecoded(t, version, namespace, obj, opts);
      throw notFound(t, name);
    }
    const rv = md.resourceVersion;
    if (rv !== undefined && rv !== '' && rv !== rvOf(old)) throw conflict(t, name, STALE_OBJECT_MESSAGE);
    return this.applyUpdate(t, version, old, obj, subresource, opts);
  }

  /** Turns a desired object into the stored one: subresource rules, server fields, generation, finalizers. */
  private async applyUpdate(
    t: ResourceType,
    version: string,
    old: JsonObject,
    desired: JsonObject,
    subresource: '' | 'status' | 'finalize',
    opts: WriteOptions,
  ): Promise<JsonObject> {
    const om = meta(old);
    const name = nameOf(old);
    const ns = typeof om.namespace === 'string' ? om.namespace : '';
    let obj: JsonObject;
    if (subresource === 'status') {
      if (!t.statusSubresource) throw notFound(t, name);
      // ResetObjectMetaForStatus: a status write changes status only.
      obj = clone(old);
      if (desired.status === undefined) delete obj.status;
      else obj.status = clone(desired.status);
    } else if (subresource === 'finalize') {
      obj = clone(old);
      const spec = isObject(obj.spec) ? obj.spec : {};
      spec.finalizers = clone(objAt(desired, 'spec')?.finalizers ?? []);
      obj.spec = spec;
    } else {
      obj = desired;
      const md = meta(obj);
      md.uid = om.uid;
      md.name = om.name;
      if (t.namespaced) md.namespace = om.namespace;
      md.creationTimestamp = om.creationTimestamp;
      md.deletionTimestamp = om.deletionTimestamp;
      md.deletionGracePeriodSeconds = om.deletionGracePeriodSeconds;
      delete md.managedFields;
      delete md.selfLink;
      if (md.deletionTimestamp === undefined) delete md.deletionTimestamp;
      if (md.deletionGracePeriodSeconds === undefined) delete md.deletionGracePeriodSeconds;
      if (t.statusSubresource) {
        if (old.status === undefined) delete obj.status;
        else obj.status = clone(old.status);
      }
      if (om.deletionTimestamp) {
        const added = finalizersOf(obj).filter((f) => !finalizersOf(old).includes(f));
        if (added.length > 0) {
          throw invalid(t.kind, t.group, name, [
            {
              field: 'metadata.finalizers',
              type: 'Forbidden',
              detail: 'no new finalizers can be added if the object is being deleted',
            },
          ]);
        }
      }
      const strategy = t.key === CRD_KEY ? crdStrategy : STRATEGIES.get(t.key);
      strategy?.prepareUpdate?.(obj, old, this.ctx);
      if (t.key === CRD_KEY) obj.status = crdStatus(obj, old, nowRfc3339());
    }
    const early = this.schemaErrors(t, version, obj);
    const md = meta(obj);
    omitEmptyMeta(md);
    if (t.generation) {
      const gen = isInteger(om.generation) ? om.generation : 1;
      md.generation = deepEqual(specView(t, obj), specView(t, old)) ? gen : gen + 1;
    } else if (om.generation !== undefined) md.generation = om.generation;
    else delete md.generation;
    this.failIfInvalid(t, version, obj, old, early);
    md.resourceVersion = om.resourceVersion;
    if (deepEqual(withoutRv(obj), withoutRv(old))) return this.out(t, version, old);
    if (opts.dryRun) return this.out(t, version, obj);
    if (md.deletionTimestamp && this.finalizersDone(t, obj)) {
      return this.out(t, version, await this.remove(t, ns, name));
    }
    return this.out(t, version, await this.commitObject(t, ns, name, obj, old));
  }

  private finalizersDone(t: ResourceType, obj: JsonObject): boolean {
    if (finalizersOf(obj).length > 0) return false;
    if (t.key === '/namespaces') {
      const f = objAt(obj, 'spec')?.finalizers;
      return !Array.isArray(f) || f.length === 0;
    }
    return true;
  }

  async patch(
    t: ResourceType,
    version: string,
    namespace: string,
    name: string,
    type: PatchType,
    patch: unknown,
    opts: WriteOptions = {},
    subresource: '' | 'status' = '',
  ): Promise<JsonObject> {
    const ns = t.namespaced ? namespace : '';
    const old = this.store.get(t.key, ns, name);
    if (type === 'strategic' && t.patchMeta === null) {
      throw unsupportedMediaType('application/strategic-merge-patch+json', [
        'application/json-patch+json',
        'application/merge-patch+json',
        'application/apply-patch+yaml',
      ]);
    }
    if (!old) {
      if (type === 'apply' && subresource === '') {
        const obj = this.decodeBody(t, version, patch);
        meta(obj).name ??= name;
        if (nameOf(obj) !== name)
          throw badRequest(
            `the name of the object (${nameOf(obj)}) does not match the name on the URL (${name})`,
          );
        return this.createDecoded(t, version, namespace, obj, opts);
      }
      throw notFound(t, name);
    }
    const current = this.out(t, version, old);
    let patched: unknown;
    switch (type) {
      case 'merge':
        if (!isObject(patch)) throw badRequest('merge patch: the patch must be a JSON object');
        patched = applyMergePatch(current, patch);
        break;
      case 'json':
        patched = applyJsonPatch(current, patch);
        break;
      case 'strategic':
        patched = applyStrategicMergePatch(current, patch, t.patchMeta ?? new Map());
        break;
      case 'apply': {
        // Server-side apply without field ownership: the applied configuration is merged over the live
        // object (strategic rules for built-ins, merge rules for custom resources); nothing is removed.
        const applied = this.decodeBody(t, version, patch);
        delete meta(applied).resourceVersion;
        patched = t.patchMeta
          ? applyStrategicMergePatch(current, applied, t.patchMeta)
          : applyMergePatch(current, stripNulls(applied));
        break;
      }
    }
    if (!isObject(patched))
      throw new ApiError(422, 'Invalid', 'the patch produced something other than an object');
    const desired = this.decodeBody(t, version, patched);
    const md = meta(desired);
    if (md.name !== name)
      throw badRequest(
        `the name of the object (${String(md.name)}) does not match the name on the URL (${name})`,
      );
    if (t.namespaced && md.namespace !== namespace)
      throw badRequest(
        'the namespace of the provided object does not match the namespace sent on the request',
      );
    const rv = md.resourceVersion;
    if (rv !== undefined && rv !== rvOf(old)) throw conflict(t, name, STALE_OBJECT_MESSAGE);
    return this.applyUpdate(t, version, old, desired, subresource, opts);
  }

  async delete(
    t: ResourceType,
    version: string,
    namespace: string,
    name: string,
    opts: DeleteOptions = {},
  ): Promise<JsonObject> {
    const ns = t.namespaced ? namespace : '';
    const old = this.store.get(t.key, ns, name);
    if (!old) throw notFound(t, name);
    const om = meta(old);
    const pre = opts.preconditions;
    if (pre?.uid && pre.uid !== om.uid) {
      throw conflict(
        t,
        name,
        `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${String(om.uid)}`,
      );
    }
    if (pre?.resourceVersion && pre.resourceVersion !== om.resourceVersion) {
      throw conflict(
        t,
        name,
        `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${String(om.resourceVersion)}`,
      );
    }
    if (t.key === '/namespaces' && IMMORTAL_NAMESPACES.has(name)) {
      throw forbidden(`namespaces "${name}" is forbidden: this namespace may not be deleted`, {
        name,
        kind: 'namespaces',
      });
    }
    const grace = opts.gracePeriodSeconds;
    if (om.deletionTimestamp) {
      // Already terminating: a zero grace period finishes a graceful pod deletion (kubelet / force delete).
      if (t.key === '/pods' && grace === 0 && finalizersOf(old).length === 0 && !opts.dryRun) {
        return this.out(t, version, await this.remove(t, ns, name));
      }
      return this.out(t, version, old);
    }
    const obj = clone(old);
    const md = meta(obj);
    const finalizers = finalizersOf(obj);
    if (opts.propagationPolicy === 'Orphan' && !finalizers.includes(FINALIZER_ORPHAN))
      finalizers.push(FINALIZER_ORPHAN);
    if (opts.propagationPolicy === 'Foreground' && !finalizers.includes(FINALIZER_FOREGROUND))
      finalizers.push(FINALIZER_FOREGROUND);
    if (finalizers.length > 0) md.finalizers = finalizers;
    const now = new Date();
    let graceful = false;
    if (t.key === '/pods') {
      const phase = objAt(obj, 'status')?.phase;
      const scheduled =
        typeof objAt(obj, 'spec')?.nodeName === 'string' && objAt(obj, 'spec')?.nodeName !== '';
      const specGrace = objAt(obj, 'spec')?.terminationGracePeriodSeconds;
      const g = grace ?? (isInteger(specGrace) ? specGrace : 30);
      // Graceful deletion: a bound, non-terminal pod is marked and its kubelet finishes the job.
      if (scheduled && phase !== 'Succeeded' && phase !== 'Failed' && g > 0) {
        md.deletionTimestamp = nowRfc3339(new Date(now.getTime() + g * 1000));
        md.deletionGracePeriodSeconds = g;
        graceful = true;
      }
    }
    if (t.key === '/namespaces') {
      const status = isObject(obj.status) ? obj.status : {};
      status.phase = 'Terminating';
      obj.status = status;
    }
    if (!graceful && (finalizers.length > 0 || !this.finalizersDone(t, obj))) {
      md.deletionTimestamp = nowRfc3339(now);
      md.deletionGracePeriodSeconds = 0;
    }
    if (md.deletionTimestamp) {
      if (t.generation) md.generation = (isInteger(md.generation) ? md.generation : 1) + 1;
      if (opts.dryRun) return this.out(t, version, obj);
      return this.out(t, version, await this.commitObject(t, ns, name, obj, old));
    }
    if (opts.dryRun) return this.out(t, version, old);
    return this.out(t, version, await this.remove(t, ns, name));
  }

  /** Removes an object for good (finalizers done). A CRD takes its custom objects with it. */
  private async remove(t: ResourceType, ns: string, name: string): Promise<JsonObject> {
    if (t.key === CRD_KEY) {
      const crd = this.store.get(t.key, ns, name);
      const served = crd ? crdToType(crd) : null;
      if (served && !this.registry.isBuiltin(served.key)) {
        const pending: Array<Promise<JsonObject>> = [];
        for (const o of this.store.list(served.key)) {
          const m = meta(o);
          pending.push(this.store.commit(served.key, String(m.namespace ?? ''), String(m.name), null));
        }
        this.registry.unregister(served.key);
        await Promise.all(pending);
      }
    }
    return this.store.commit(t.key, ns, name, null);
  }

  async deleteCollection(
    t: ResourceType,
    version: string,
    namespace: string | null,
    list: ListOptions,
    opts: DeleteOptions = {},
  ): Promise<JsonObject[]> {
    const { items } = this.list(t, version, namespace, {
      labelSelector: list.labelSelector,
      fieldSelector: list.fieldSelector,
    });
    const out: JsonObject[] = [];
    for (const o of items) {
      const m = meta(o);
      try {
        out.push(await this.delete(t, version, String(m.namespace ?? ''), String(m.name), opts));
      } catch (err) {
        if (!(err instanceof ApiError && err.code === 404)) throw err;
      }
    }
    return out;
  }

  // ---- subresources -----------------------------------------------------------------------------------------

  private scaleInfo(t: ResourceType): { spec: string[]; status: string[]; selector: string[] | null } {
    if (t.crd?.scale) {
      return {
        spec: t.crd.scale.specReplicasPath.split('.'),
        status: t.crd.scale.statusReplicasPath.split('.'),
        selector: t.crd.scale.labelSelectorPath ? t.crd.scale.labelSelectorPath.split('.') : null,
      };
    }
    if (!t.subresources.some((s) => s.name === 'scale')) throw notFound(t, '');
    return { spec: ['spec', 'replicas'], status: ['status', 'replicas'], selector: null };
  }

  /** autoscaling/v1 Scale for deployments, replicasets and CRDs that declare a scale subresource. */
  getScale(t: ResourceType, namespace: string, name: string): JsonObject {
    const info = this.scaleInfo(t);
    const obj = this.store.get(t.key, t.namespaced ? namespace : '', name);
    if (!obj) throw notFound(t, name);
    const read = (path: string[]): unknown =>
      path.reduce<unknown>((o, k) => (isObject(o) ? o[k] : undefined), obj);
    let selector = '';
    if (info.selector) {
      const s = read(info.selector);
      selector = typeof s === 'string' ? s : '';
    } else {
      try {
        selector = formatLabelSelector(labelSelectorFromObject(objAt(obj, 'spec')?.selector));
      } catch {
        selector = '';
      }
    }
    const md = meta(obj);
    const specReplicas = read(info.spec);
    const statusReplicas = read(info.status);
    return {
      kind: 'Scale',
      apiVersion: 'autoscaling/v1',
      metadata: {
        name,
        ...(t.namespaced ? { namespace } : {}),
        uid: md.uid,
        resourceVersion: md.resourceVersion,
        creationTimestamp: md.creationTimestamp,
      },
      spec: { replicas: isInteger(specReplicas) ? specReplicas : 0 },
      status: { replicas: isInteger(statusReplicas) ? statusReplicas : 0, ...(selector ? { selector } : {}) },
    };
  }

  async updateScale(
    t: ResourceType,
    version: string,
    namespace: string,
    name: string,
    body: unknown,
    opts: WriteOptions = {},
  ): Promise<JsonObject> {
    const info = this.scaleInfo(t);
    const scale = this.decodeBody(t, 'v1', body, 'Scale', 'autoscaling');
    const ns = t.namespaced ? namespace : '';
    const old = this.store.get(t.key, ns, name);
    if (!old) throw notFound(t, name);
    const rv = objAt(scale, 'metadata')?.resourceVersion;
    if (typeof rv === 'string' && rv !== '' && rv !== rvOf(old))
      throw conflict(t, name, STALE_OBJECT_MESSAGE);
    const replicas = objAt(scale, 'spec')?.replicas;
    if (!isInteger(replicas) || replicas < 0) {
      throw invalid('Scale', 'autoscaling', name, [
        {
          field: 'spec.replicas',
          type: 'Invalid',
          value: replicas,
          detail: 'must be greater than or equal to 0',
        },
      ]);
    }
    const obj = clone(old);
    let cur: JsonObject = obj;
    for (const k of info.spec.slice(0, -1)) {
      if (!isObject(cur[k])) cur[k] = {};
      cur = cur[k] as JsonObject;
    }
    cur[info.spec[info.spec.length - 1] as string] = replicas;
    await this.applyUpdate(t, version, old, obj, '', opts);
    return this.getScale(t, namespace, name);
  }

  async patchScale(
    t: ResourceType,
    version: string,
    namespace: string,
    name: string,
    type: PatchType,
    patch: unknown,
    opts: WriteOptions = {},
  ): Promise<JsonObject> {
    const current = this.getScale(t, namespace, name);
    let patched: unknown;
    if (type === 'json') patched = applyJsonPatch(current, patch);
    else if (type === 'merge' || type === 'apply') patched = applyMergePatch(current, patch);
    else patched = applyStrategicMergePatch(current, patch, new Map());
    return this.updateScale(t, version, namespace, name, patched, opts);
  }

  /** pods/binding: what the scheduler posts to assign a node. */
  async bind(namespace: string, name: string, body: unknown): Promise<JsonObject> {
    const t = this.registry.get('', 'pods') as ResourceType;
    if (!isObject(body) || (body.kind !== undefined && body.kind !== 'Binding'))
      throw badRequest('expected a Binding object');
    const target = objAt(body, 'target');
    const node = target?.name;
    if (typeof node !== 'string' || node === '') {
      throw invalid('Binding', '', name, [{ field: 'target.name', type: 'Required' }]);
    }
    const old = this.store.get(t.key, namespace, name);
    if (!old) throw notFound(t, name);
    const spec = objAt(old, 'spec');
    if (typeof spec?.nodeName === 'string' && spec.nodeName !== '') {
      throw conflict(t, name, `pod ${name} is already assigned to node "${spec.nodeName}"`);
    }
    if (objAt(old, 'metadata')?.deletionTimestamp)
      throw conflict(t, name, `pod ${name} is being deleted, cannot be assigned to a host`);
    const obj = clone(old);
    (obj.spec as JsonObject).nodeName = node;
    const status = isObject(obj.status) ? obj.status : {};
    const conds = (Array.isArray(status.conditions) ? status.conditions : []).filter(
      (c) => !(isObject(c) && c.type === 'PodScheduled'),
    );
    conds.push({
      type: 'PodScheduled',
      status: 'True',
      lastProbeTime: null,
      lastTransitionTime: nowRfc3339(),
    });
    status.conditions = conds;
    obj.status = status;
    await this.store.commit(t.key, namespace, name, obj);
    return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', code: 201 };
  }

  /** serviceaccounts/token (TokenRequest). */
  async createToken(namespace: string, saName: string, body: unknown): Promise<JsonObject> {
    const saType = this.registry.get('', 'serviceaccounts') as ResourceType;
    const sa = this.store.get(saType.key, namespace, saName);
    if (!sa) throw notFound(saType, saName);
    if (!isObject(body)) throw badRequest('expected a TokenRequest object');
    if (body.kind !== undefined && body.kind !== 'TokenRequest')
      throw badRequest(`expected kind TokenRequest, got ${String(body.kind)}`);
    const spec = isObject(body.spec) ? clone(body.spec) : {};
    const errs = new Errors();
    const exp = spec.expirationSeconds ?? DEFAULT_TOKEN_EXPIRATION_SECONDS;
    if (!isInteger(exp)) errs.invalid('spec.expirationSeconds', exp, 'must be an integer');
    else if (exp < this.opts.minTokenExpirationSeconds)
      errs.invalid(
        'spec.expirationSeconds',
        exp,
        `may not specify a duration less than ${this.opts.minTokenExpirationSeconds} seconds`,
      );
    else if (exp > MAX_TOKEN_EXPIRATION_SECONDS)
      errs.invalid('spec.expirationSeconds', exp, 'may not specify a duration larger than 2^32 seconds');
    const audiences =
      Array.isArray(spec.audiences) && spec.audiences.length > 0
        ? spec.audiences
        : [...this.opts.apiAudiences];
    if (!audiences.every((a) => typeof a === 'string'))
      errs.invalid('spec.audiences', audiences, 'must be a list of strings');
    const ref = spec.boundObjectRef;
    let bound: { kind: 'Pod' | 'Secret' | 'Node'; name: string; uid: string } | null = null;
    let node: { name: string; uid: string } | null = null;
    if (ref !== undefined && ref !== null) {
      if (!isObject(ref)) errs.invalid('spec.boundObjectRef', ref, 'must be an object');
      else if (ref.kind !== 'Pod' && ref.kind !== 'Secret' && ref.kind !== 'Node')
        errs.notSupported('spec.boundObjectRef.kind', ref.kind, ['Pod', 'Node', 'Secret']);
      else if (typeof ref.name !== 'string' || ref.name === '') errs.required('spec.boundObjectRef.name');
      else {
        const kind = ref.kind;
        const key = kind === 'Pod' ? '/pods' : kind === 'Secret' ? '/secrets' : '/nodes';
        const target = this.store.get(key, kind === 'Node' ? '' : namespace, ref.name);
        if (!target) throw notFound({ group: '', resource: key.slice(1) }, ref.name);
        const uid = String(objAt(target, 'metadata')?.uid ?? '');
        if (typeof ref.uid === 'string' && ref.uid !== '' && ref.uid !== uid) {
          throw conflict(
            { group: '', resource: key.slice(1) },
            ref.name,
            `the UID in the bound object reference (${ref.uid}) does not match the UID in record. The object might have been deleted and then recreated`,
          );
        }
        if (kind === 'Pod') {
          const podSa = objAt(target, 'spec')?.serviceAccountName;
          if (podSa !== saName)
            throw badRequest(
              `cannot bind token for serviceaccount "${saName}" to pod running with different serviceaccount name.`,
            );
          const nodeName = objAt(target, 'spec')?.nodeName;
          const n =
            typeof nodeName === 'string' && nodeName ? this.store.get('/nodes', '', nodeName) : undefined;
          if (n) node = { name: nodeName as string, uid: String(objAt(n, 'metadata')?.uid ?? '') };
        }
        bound = { kind, name: ref.name, uid };
        ref.uid = uid;
      }
    }
    if (!errs.empty) throw invalid('TokenRequest', 'authentication.k8s.io', saName, errs.list);
    const { token, expires } = await this.tokens.mint({
      namespace,
      serviceAccount: saName,
      serviceAccountUid: String(objAt(sa, 'metadata')?.uid ?? ''),
      audiences: audiences as string[],
      expirationSeconds: exp as number,
      bound,
      node,
    });
    spec.audiences = audiences;
    spec.expirationSeconds = exp;
    return {
      kind: 'TokenRequest',
      apiVersion: 'authentication.k8s.io/v1',
      metadata: { name: saName, namespace, creationTimestamp: nowRfc3339() },
      spec,
      status: { token, expirationTimestamp: nowRfc3339(expires) },
    };
  }

  /**
   * Authenticates a ServiceAccount token minted here: signature, issuer, expiry, audience intersection, the
   * service account (uid) and any bound object still existing. Returns the user or the reason.
   */
  async authenticateToken(
    token: string,
    audiences: readonly string[],
  ): Promise<{ user: UserInfo; audiences: string[] } | { error: string }> {
    const v = await this.tokens.verify(token);
    if (typeof v === 'string') return { error: v };
    const target = audiences.length > 0 ? audiences : this.opts.apiAudiences;
    const matched = v.audiences.filter((a) => target.includes(a));
    if (matched.length === 0) {
      return {
        error: `token audiences ${JSON.stringify(v.audiences)} is invalid for the target audiences ${JSON.stringify(target)}`,
      };
    }
    const sa = this.store.get('/serviceaccounts', v.namespace, v.serviceAccount);
    if (!sa) return { error: `serviceaccounts "${v.serviceAccount}" not found` };
    const saUid = String(objAt(sa, 'metadata')?.uid ?? '');
    if (saUid !== v.serviceAccountUid)
      return {
        error: `service account UID (${v.serviceAccountUid}) does not match current service account (${saUid})`,
      };
    const extra: Record<string, string[]> = {};
    if (v.pod) {
      const pod = this.store.get('/pods', v.namespace, v.pod.name);
      if (!pod) return { error: `pods "${v.pod.name}" not found` };
      const pm = objAt(pod, 'metadata');
      if (pm?.uid !== v.pod.uid)
        return { error: `pod UID (${v.pod.uid}) does not match current pod (${String(pm?.uid)})` };
      const dt = pm?.deletionTimestamp;
      if (typeof dt === 'string' && Date.parse(dt) + BOUND_POD_DELETION_GRACE_MS < Date.now())
        return { error: `pod "${v.pod.name}" is being deleted` };
      extra['authentication.kubernetes.io/pod-name'] = [v.pod.name];
      extra['authentication.kubernetes.io/pod-uid'] = [v.pod.uid];
    }
    if (v.secret) {
      const s = this.store.get('/secrets', v.namespace, v.secret.name);
      if (!s || objAt(s, 'metadata')?.uid !== v.secret.uid)
        return { error: `secret "${v.secret.name}" not found or recreated` };
    }
    if (v.node) {
      const n = this.store.get('/nodes', '', v.node.name);
      if (!v.pod && (!n || objAt(n, 'metadata')?.uid !== v.node.uid))
        return { error: `node "${v.node.name}" not found or recreated` };
      extra['authentication.kubernetes.io/node-name'] = [v.node.name];
      extra['authentication.kubernetes.io/node-uid'] = [v.node.uid];
    }
    if (v.jti) extra['authentication.kubernetes.io/credential-id'] = [`JTI=${v.jti}`];
    return {
      user: {
        username: `system:serviceaccount:${v.namespace}:${v.serviceAccount}`,
        uid: saUid,
        groups: ['system:serviceaccounts', `system:serviceaccounts:${v.namespace}`, 'system:authenticated'],
        extra,
      },
      audiences: matched,
    };
  }

  /** authentication.k8s.io/v1 TokenReview (not stored). */
  async tokenReview(body: unknown): Promise<JsonObject> {
    const t = this.registry.get('authentication.k8s.io', 'tokenreviews') as ResourceType;
    const obj = this.decodeBody(t, 'v1', body);
    const spec = isObject(obj.spec) ? obj.spec : {};
    if (typeof spec.token !== 'string' || spec.token === '') {
      throw invalid('TokenReview', 'authentication.k8s.io', '', [{ field: 'spec.token', type: 'Required' }]);
    }
    const audiences = Array.isArray(spec.audiences)
      ? spec.audiences.filter((a): a is string => typeof a === 'string')
      : [];
    const result = await this.authenticateToken(spec.token, audiences);
    const status: JsonObject =
      'error' in result
        ? { user: {}, error: result.error, authenticated: false }
        : {
            authenticated: true,
            user: { ...result.user, extra: result.user.extra ?? {} },
            audiences: result.audiences,
          };
    const md = stringMap(objAt(obj, 'metadata'));
    return {
      kind: 'TokenReview',
      apiVersion: 'authentication.k8s.io/v1',
      metadata: { ...md, creationTimestamp: null },
      spec,
      status,
    };
  }
}

function stripNulls(v: JsonObject): JsonObject {
  const out: JsonObject = {};
  for (const [k, val] of Object.entries(v)) if (val !== null) out[k] = isObject(val) ? stripNulls(val) : val;
  return out;
}
