/**
 * API discovery documents, both forms kubectl 1.32 understands:
 * - aggregated discovery (`apidiscovery.k8s.io/v2` and `v2beta1` APIGroupDiscoveryList on `/api` and `/apis`,
 *   chosen by the Accept header) — one request gives kubectl every resource;
 * - legacy discovery (`APIVersions`, `APIGroupList`, `APIGroup`, `APIResourceList` per group/version).
 * Both are computed from the live registry, so CRDs appear and disappear immediately.
 */
import { createHash } from 'node:crypto';
import type { JsonObject } from './json.ts';
import { apiVersionOf, type Registry, type ResourceType } from './resources.ts';

export const AGGREGATED_V2 = 'application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList';
export const AGGREGATED_V2BETA1 = 'application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList';

function storageVersionHash(t: ResourceType): string {
  return createHash('sha256')
    .update(`${t.group}/${t.storageVersion}/${t.kind}`)
    .digest('base64')
    .slice(0, 11);
}

function legacyResources(t: ResourceType, version: string): JsonObject[] {
  const main: JsonObject = {
    name: t.resource,
    singularName: t.singular,
    namespaced: t.namespaced,
    kind: t.kind,
    verbs: [...t.verbs],
  };
  if (t.shortNames.length) main.shortNames = [...t.shortNames];
  if (t.categories.length) main.categories = [...t.categories];
  if (t.persisted) main.storageVersionHash = storageVersionHash(t);
  const out = [main];
  for (const s of t.subresources) {
    const sub: JsonObject = {
      name: `${t.resource}/${s.name}`,
      singularName: '',
      namespaced: t.namespaced,
      kind: s.kind,
      verbs: [...s.verbs],
    };
    if (s.group !== t.group || (s.version !== version && s.kind !== t.kind)) {
      sub.group = s.group;
      sub.version = s.version;
    }
    out.push(sub);
  }
  return out;
}

export function apiVersions(serverAddress: string): JsonObject {
  return {
    kind: 'APIVersions',
    versions: ['v1'],
    serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress }],
  };
}

export function apiGroupList(reg: Registry): JsonObject {
  return { kind: 'APIGroupList', apiVersion: 'v1', groups: reg.groups().map(groupDoc) };
}

function groupDoc(g: ReturnType<Registry['groups']>[number]): JsonObject {
  const versions = g.versions.map((v) => ({ groupVersion: `${g.name}/${v.version}`, version: v.version }));
  return { name: g.name, versions, preferredVersion: versions[0] };
}

export function apiGroup(reg: Registry, group: string): JsonObject | null {
  const g = reg.groups().find((x) => x.name === group);
  return g ? { kind: 'APIGroup', apiVersion: 'v1', ...groupDoc(g) } : null;
}

export function apiResourceList(reg: Registry, group: string, version: string): JsonObject | null {
  const types =
    group === ''
      ? version === 'v1'
        ? reg.coreResources()
        : []
      : (reg
          .groups()
          .find((g) => g.name === group)
          ?.versions.find((v) => v.version === version)?.resources ?? []);
  if (types.length === 0) return null;
  return {
    kind: 'APIResourceList',
    apiVersion: 'v1',
    groupVersion: apiVersionOf(group, version),
    resources: types.flatMap((t) => legacyResources(t, version)),
  };
}

function aggregatedResource(t: ResourceType, version: string): JsonObject {
  const r: JsonObject = {
    resource: t.resource,
    responseKind: { group: t.group, version, kind: t.kind },
    scope: t.namespaced ? 'Namespaced' : 'Cluster',
    singularResource: t.singular,
    verbs: [...t.verbs],
  };
  if (t.shortNames.length) r.shortNames = [...t.shortNames];
  if (t.categories.length) r.categories = [...t.categories];
  if (t.subresources.length) {
    r.subresources = t.subresources.map((s) => ({
      subresource: s.name,
      responseKind: { group: s.group, version: s.kind === t.kind ? version : s.version, kind: s.kind },
      verbs: [...s.verbs],
    }));
  }
  return r;
}

/** The aggregated document for `/api` (core) or `/apis` (every other group). */
export function aggregatedDiscovery(reg: Registry, core: boolean, apiVersion: 'v2' | 'v2beta1'): JsonObject {
  const items: JsonObject[] = core
    ? [
        {
          metadata: { creationTimestamp: null },
          versions: [
            {
              version: 'v1',
              resources: reg.coreResources().map((t) => aggregatedResource(t, 'v1')),
              freshness: 'Current',
            },
          ],
        },
      ]
    : reg.groups().map((g) => ({
        metadata: { name: g.name, creationTimestamp: null },
        versions: g.versions.map((v) => ({
          version: v.version,
          resources: v.resources.map((t) => aggregatedResource(t, v.version)),
          freshness: 'Current',
        })),
      }));
  return {
    kind: 'APIGroupDiscoveryList',
    apiVersion: `apidiscovery.k8s.io/${apiVersion}`,
    metadata: {},
    items,
  };
}
