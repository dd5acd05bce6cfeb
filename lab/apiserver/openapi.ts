/**
 * OpenAPI v3 (`/openapi/v3` and `/openapi/v3/<api|apis/group>/<version>`), shaped for what kubectl 1.32 reads:
 * - `kubectl apply/create` ask whether the PATCH operation of the object's GVK accepts the `fieldValidation`
 *   query parameter; it does, so kubectl leaves validation to the server (no OpenAPI v2 / protobuf needed);
 * - `kubectl apply` looks for `application/strategic-merge-patch+json` in that operation's request body; built-in
 *   kinds list it, custom kinds do not (so kubectl sends JSON merge patches for them, as with a real server).
 *   Built-in component schemas carry no `x-kubernetes-group-version-kind`, so kubectl computes strategic
 *   patches from its compiled-in types (exact merge keys) instead of from a partial schema here.
 * - custom kinds publish their CRD schema with the GVK extension, so `kubectl explain` works for them.
 * `/openapi/v2` is not served (404); kubectl 1.32 does not need it for the commands above.
 */
import { createHash } from 'node:crypto';
import { type JsonObject, stableStringify } from './json.ts';
import { apiVersionOf, type Registry, type ResourceType } from './resources.ts';

const QUERY_PARAMS: Readonly<Record<string, string>> = {
  dryRun: 'When present, indicates that modifications should not be persisted.',
  fieldManager: 'fieldManager is a name associated with the actor or entity that is making these changes.',
  fieldValidation:
    'fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields.',
  force: 'Force is going to "force" Apply requests.',
  pretty: "If 'true', then the output is pretty printed.",
};

function param(name: string, type = 'string'): JsonObject {
  return { name, in: 'query', description: QUERY_PARAMS[name] ?? name, schema: { type, uniqueItems: true } };
}

const PATH_NAME = { name: 'name', in: 'path', required: true, schema: { type: 'string', uniqueItems: true } };
const PATH_NAMESPACE = {
  name: 'namespace',
  in: 'path',
  required: true,
  schema: { type: 'string', uniqueItems: true },
};

function schemaName(t: ResourceType, version: string): string {
  const g = t.group === '' ? 'core' : t.group.split('.').reverse().join('.');
  return t.crd
    ? `${t.group.split('.').reverse().join('.')}.${version}.${t.kind}`
    : `io.k8s.api.${g}.${version}.${t.kind}`;
}

function opId(verb: string, t: ResourceType, version: string, namespaced: boolean, suffix = ''): string {
  const g = (t.group || 'core')
    .split('.')
    .map((p) => p.charAt(0).toUpperCase() + p.slice(1))
    .join('');
  return `${verb}${g}${version.charAt(0).toUpperCase()}${version.slice(1)}${namespaced ? 'Namespaced' : ''}${t.kind}${suffix}`;
}

function ref(name: string): JsonObject {
  return { $ref: `#/components/schemas/${name}` };
}

function operations(t: ResourceType, version: string): JsonObject {
  const paths: JsonObject = {};
  const base = t.group === '' ? `/api/${version}` : `/apis/${t.group}/${version}`;
  const collection = t.namespaced ? `${base}/namespaces/{namespace}/${t.resource}` : `${base}/${t.resource}`;
  const item = `${collection}/{name}`;
  const gvk = { group: t.group, version, kind: t.kind };
  const schema = ref(schemaName(t, version));
  const body = {
    content: { 'application/json': { schema }, 'application/yaml': { schema } },
    required: true,
  };
  const ok = { '200': { description: 'OK', content: { 'application/json': { schema } } } };
  const nsParams = t.namespaced ? [PATH_NAMESPACE] : [];
  const ext = (action: string) => ({ 'x-kubernetes-action': action, 'x-kubernetes-group-version-kind': gvk });
  const patchContent: JsonObject = {
    'application/apply-patch+yaml': { schema: ref('io.k8s.apimachinery.pkg.apis.meta.v1.Patch') },
    'application/json-patch+json': { schema: ref('io.k8s.apimachinery.pkg.apis.meta.v1.Patch') },
    'application/merge-patch+json': { schema: ref('io.k8s.apimachinery.pkg.apis.meta.v1.Patch') },
  };
  if (t.patchMeta)
    patchContent['application/strategic-merge-patch+json'] = {
      schema: ref('io.k8s.apimachinery.pkg.apis.meta.v1.Patch'),
    };
  const writeParams = [param('dryRun'), param('fieldManager'), param('fieldValidation')];
  const coll: JsonObject = { parameters: [...nsParams, param('pretty')] };
  if (t.verbs.includes('list'))
    coll.get = { operationId: opId('list', t, version, t.namespaced), responses: ok, ...ext('list') };
  if (t.verbs.includes('create'))
    coll.post = {
      operationId: opId('create', t, version, t.namespaced),
      parameters: writeParams,
      requestBody: body,
      responses: ok,
      ...ext('post'),
    };
  if (t.verbs.includes('deletecollection'))
    coll.delete = {
      operationId: opId('deletecollection', t, version, t.namespaced),
      responses: ok,
      ...ext('deletecollection'),
    };
  paths[collection] = coll;
  if (t.verbs.includes('get')) {
    paths[item] = {
      parameters: [PATH_NAME, ...nsParams, param('pretty')],
      get: { operationId: opId('read', t, version, t.namespaced), responses: ok, ...ext('get') },
      put: {
        operationId: opId('replace', t, version, t.namespaced),
        parameters: writeParams,
        requestBody: body,
        responses: ok,
        ...ext('put'),
      },
      patch: {
        operationId: opId('patch', t, version, t.namespaced),
        parameters: [...writeParams, param('force', 'boolean')],
        requestBody: { content: patchContent, required: true },
        responses: ok,
        ...ext('patch'),
      },
      delete: { operationId: opId('delete', t, version, t.namespaced), responses: ok, ...ext('delete') },
    };
  }
  for (const s of t.subresources) {
    const sgvk = { group: s.group, version: s.kind === t.kind ? version : s.version, kind: s.kind };
    const sschema =
      s.kind === t.kind ? schema : ref(`io.k8s.api.${s.group || 'core'}.${s.version}.${s.kind}`);
    const sext = (action: string) => ({
      'x-kubernetes-action': action,
      'x-kubernetes-group-version-kind': sgvk,
    });
    const sok = { '200': { description: 'OK', content: { 'application/json': { schema: sschema } } } };
    const entry: JsonObject = { parameters: [PATH_NAME, ...nsParams, param('pretty')] };
    if (s.verbs.includes('get'))
      entry.get = {
        operationId: opId('read', t, version, t.namespaced, capital(s.name)),
        responses: sok,
        ...sext('get'),
      };
    if (s.verbs.includes('update'))
      entry.put = {
        operationId: opId('replace', t, version, t.namespaced, capital(s.name)),
        parameters: writeParams,
        requestBody: { content: { 'application/json': { schema: sschema } }, required: true },
        responses: sok,
        ...sext('put'),
      };
    if (s.verbs.includes('patch'))
      entry.patch = {
        operationId: opId('patch', t, version, t.namespaced, capital(s.name)),
        parameters: [...writeParams, param('force', 'boolean')],
        requestBody: { content: patchContent, required: true },
        responses: sok,
        ...sext('patch'),
      };
    if (s.verbs.includes('create'))
      entry.post = {
        operationId: opId('create', t, version, t.namespaced, capital(s.name)),
        parameters: writeParams,
        requestBody: { content: { 'application/json': { schema: sschema } }, required: true },
        responses: sok,
        ...sext('post'),
      };
    paths[`${item}/${s.name}`] = entry;
  }
  return paths;
}

function capital(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function componentSchema(t: ResourceType, version: string): JsonObject {
  const crdSchema = t.crd?.schemas.get(version);
  if (t.crd && crdSchema) {
    return { ...crdSchema, 'x-kubernetes-group-version-kind': [{ group: t.group, version, kind: t.kind }] };
  }
  return {
    description: `${t.kind} (${apiVersionOf(t.group, version)}); the lab API server does not publish full schemas of built-in kinds.`,
    type: 'object',
    properties: {
      apiVersion: { type: 'string' },
      kind: { type: 'string' },
      metadata: ref('io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta'),
    },
  };
}

/** Caches documents per registry generation: building them is cheap but kubectl asks often. */
export class OpenApi {
  private readonly reg: Registry;
  private generation = -1;
  private docs = new Map<string, { body: string; hash: string }>();

  constructor(reg: Registry) {
    this.reg = reg;
  }

  private refresh(): void {
    if (this.generation === this.reg.generation) return;
    const docs = new Map<string, { body: string; hash: string }>();
    const gvs = new Map<string, Array<{ t: ResourceType; version: string }>>();
    for (const t of this.reg.all()) {
      for (const version of t.versions) {
        const path = t.group === '' ? `api/${version}` : `apis/${t.group}/${version}`;
        let l = gvs.get(path);
        if (!l) {
          l = [];
          gvs.set(path, l);
        }
        l.push({ t, version });
      }
    }
    for (const [path, types] of gvs) {
      const paths: JsonObject = {};
      const schemas: JsonObject = {
        'io.k8s.apimachinery.pkg.apis.meta.v1.Patch': {
          description:
            'Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.',
          type: 'object',
        },
        'io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta': {
          description: 'ObjectMeta is metadata that all persisted resources must have.',
          type: 'object',
          'x-kubernetes-preserve-unknown-fields': true,
        },
        'io.k8s.api.autoscaling.v1.Scale': {
          description: 'Scale represents a scaling request for a resource.',
          type: 'object',
          'x-kubernetes-preserve-unknown-fields': true,
        },
      };
      for (const { t, version } of types) {
        Object.assign(paths, operations(t, version));
        schemas[schemaName(t, version)] = componentSchema(t, version);
        for (const s of t.subresources) {
          if (s.kind !== t.kind)
            schemas[`io.k8s.api.${s.group || 'core'}.${s.version}.${s.kind}`] ??= {
              type: 'object',
              'x-kubernetes-preserve-unknown-fields': true,
            };
        }
      }
      const doc = {
        openapi: '3.0.0',
        info: { title: 'Kubernetes', version: 'v1.32.0' },
        paths,
        components: { schemas },
      };
      const body = JSON.stringify(doc);
      docs.set(path, {
        body,
        hash: createHash('sha512').update(stableStringify(doc)).digest('hex').slice(0, 128).toUpperCase(),
      });
    }
    this.docs = docs;
    this.generation = this.reg.generation;
  }

  root(): JsonObject {
    this.refresh();
    const paths: JsonObject = {};
    for (const [p, d] of [...this.docs.entries()].sort(([a], [b]) => a.localeCompare(b))) {
      paths[p] = { serverRelativeURL: `/openapi/v3/${p}?hash=${d.hash}` };
    }
    return { paths };
  }

  /** The document for `api/v1` or `apis/<group>/<version>`, or null. */
  groupVersion(path: string): { body: string; hash: string } | null {
    this.refresh();
    return this.docs.get(path) ?? null;
  }
}
