/**
 * The resource types the lab API serves: the built-in kinds the mesh and kubectl use, plus any CRD's kinds
 * (registered live by `crd.ts`). A `ResourceType` carries everything the generic REST machinery needs:
 * names for discovery, scope, verbs, subresources, strategic-merge metadata and field-selector labels.
 */
import { isObject, type JsonObject } from './json.ts';
import type { ListMeta, PatchMeta } from './patch.ts';

export type NameRule = 'subdomain' | 'label' | 'dns1035' | 'path';

export interface SubresourceInfo {
  readonly name: string;
  /** The kind exchanged on this subresource (e.g. `Scale` in group `autoscaling`). */
  readonly group: string;
  readonly version: string;
  readonly kind: string;
  readonly verbs: readonly string[];
}

/** How a CRD's object is served (filled by crd.ts). */
export interface CrdServing {
  readonly crdName: string;
  readonly crdUid: string;
  /** Structural schema per served version (`null` = none, preserve everything). */
  readonly schemas: ReadonlyMap<string, JsonObject | null>;
  readonly printerColumns: ReadonlyMap<string, readonly JsonObject[]>;
  readonly scale: {
    specReplicasPath: string;
    statusReplicasPath: string;
    labelSelectorPath: string | null;
  } | null;
  readonly selectableFields: ReadonlyMap<string, readonly string[]>;
}

export interface ResourceType {
  /** Storage key, `<group>/<resource>` (`/pods` for the core group). */
  readonly key: string;
  readonly group: string;
  /** Served versions, preferred first. */
  readonly versions: readonly string[];
  readonly storageVersion: string;
  readonly resource: string;
  readonly singular: string;
  readonly kind: string;
  readonly listKind: string;
  readonly namespaced: boolean;
  readonly shortNames: readonly string[];
  readonly categories: readonly string[];
  readonly verbs: readonly string[];
  readonly subresources: readonly SubresourceInfo[];
  readonly statusSubresource: boolean;
  /** `metadata.generation` counts spec changes. */
  readonly generation: boolean;
  /** PUT on a missing object creates it (endpoints, events, leases… like the real registry strategies). */
  readonly allowCreateOnUpdate: boolean;
  /** false for virtual kinds (tokenreviews): create returns a computed object and nothing is stored. */
  readonly persisted: boolean;
  /** Strategic-merge list strategies; `null` rejects strategic merge patch with 415 (custom resources). */
  readonly patchMeta: PatchMeta | null;
  readonly nameRule: NameRule;
  /** Extra field-selector labels → dotted path in the object (metadata.name/namespace always work). */
  readonly fieldLabels: Readonly<Record<string, string>>;
  readonly crd: CrdServing | null;
}

export const ALL_VERBS = [
  'create',
  'delete',
  'deletecollection',
  'get',
  'list',
  'patch',
  'update',
  'watch',
] as const;
const NS_VERBS = ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'] as const;
const STATUS_VERBS = ['get', 'patch', 'update'] as const;

// ---- strategic merge metadata (from the Go struct tags of k8s.io/api) ---------------------------------------

const merge = (mergeKey?: string): ListMeta => (mergeKey ? { merge: true, mergeKey } : { merge: true });

function prefixed(
  prefix: string,
  entries: ReadonlyArray<readonly [string, ListMeta]>,
): Array<[string, ListMeta]> {
  return entries.map(([p, m]) => [prefix ? `${prefix}.${p}` : p, m]);
}

const OBJECT_META: ReadonlyArray<readonly [string, ListMeta]> = [
  ['ownerReferences', merge('uid')],
  ['finalizers', merge()],
];

const CONTAINER: ReadonlyArray<readonly [string, ListMeta]> = [
  ['ports', merge('containerPort')],
  ['env', merge('name')],
  ['volumeMounts', merge('mountPath')],
  ['volumeDevices', merge('devicePath')],
];

function podSpecMeta(prefix: string): Array<[string, ListMeta]> {
  const out: Array<[string, ListMeta]> = [];
  for (const list of ['containers', 'initContainers', 'ephemeralContainers']) {
    out.push([`${prefix}.${list}`, merge('name')]);
    out.push(...prefixed(`${prefix}.${list}`, CONTAINER));
  }
  out.push(
    [`${prefix}.volumes`, merge('name')],
    [`${prefix}.imagePullSecrets`, merge('name')],
    [`${prefix}.hostAliases`, merge('ip')],
    [`${prefix}.topologySpreadConstraints`, merge('topologyKey')],
    [`${prefix}.schedulingGates`, merge('name')],
    [`${prefix}.resourceClaims`, merge('name')],
  );
  return out;
}

function meta(
  ...lists: Array<Array<[string, ListMeta]> | ReadonlyArray<readonly [string, ListMeta]>>
): PatchMeta {
  const m = new Map<string, ListMeta>(prefixed('metadata', OBJECT_META));
  for (const l of lists) for (const [k, v] of l) m.set(k, v);
  return m;
}

const CONDITIONS = (path: string): Array<[string, ListMeta]> => [[path, merge('type')]];
const TEMPLATE = (): Array<[string, ListMeta]> => [
  ...prefixed('spec.template.metadata', OBJECT_META),
  ...podSpecMeta('spec.template.spec'),
];

// ---- built-in types -------------------------------------------------------------------------------------------

interface Def {
  group: string;
  version: string;
  resource: string;
  kind: string;
  namespaced: boolean;
  shortNames?: string[];
  categories?: string[];
  verbs?: readonly string[];
  subresources?: SubresourceInfo[];
  generation?: boolean;
  allowCreateOnUpdate?: boolean;
  persisted?: boolean;
  patchMeta?: PatchMeta;
  nameRule?: NameRule;
  fieldLabels?: Record<string, string>;
}

function status(group: string, version: string, kind: string): SubresourceInfo {
  return { name: 'status', group, version, kind, verbs: STATUS_VERBS };
}

function scale(): SubresourceInfo {
  return { name: 'scale', group: 'autoscaling', version: 'v1', kind: 'Scale', verbs: STATUS_VERBS };
}

function build(d: Def): ResourceType {
  const subresources = d.subresources ?? [];
  return {
    key: `${d.group}/${d.resource}`,
    group: d.group,
    versions: [d.version],
    storageVersion: d.version,
    resource: d.resource,
    singular: d.kind.toLowerCase(),
    kind: d.kind,
    listKind: `${d.kind}List`,
    namespaced: d.namespaced,
    shortNames: d.shortNames ?? [],
    categories: d.categories ?? [],
    verbs: d.verbs ?? ALL_VERBS,
    subresources,
    statusSubresource: subresources.some((s) => s.name === 'status'),
    generation: d.generation ?? false,
    allowCreateOnUpdate: d.allowCreateOnUpdate ?? false,
    persisted: d.persisted ?? true,
    patchMeta: d.patchMeta ?? meta(),
    nameRule: d.nameRule ?? 'subdomain',
    fieldLabels: d.fieldLabels ?? {},
    crd: null,
  };
}

const POD_FIELDS = {
  'spec.nodeName': 'spec.nodeName',
  'spec.restartPolicy': 'spec.restartPolicy',
  'spec.schedulerName': 'spec.schedulerName',
  'spec.serviceAccountName': 'spec.serviceAccountName',
  'spec.hostNetwork': 'spec.hostNetwork',
  'status.phase': 'status.phase',
  'status.podIP': 'status.podIP',
  'status.nominatedNodeName': 'status.nominatedNodeName',
};

const EVENT_FIELDS = {
  'involvedObject.kind': 'involvedObject.kind',
  'involvedObject.namespace': 'involvedObject.namespace',
  'involvedObject.name': 'involvedObject.name',
  'involvedObject.uid': 'involvedObject.uid',
  'involvedObject.apiVersion': 'involvedObject.apiVersion',
  'involvedObject.resourceVersion': 'involvedObject.resourceVersion',
  'involvedObject.fieldPath': 'involvedObject.fieldPath',
  reason: 'reason',
  reportingComponent: 'reportingComponent',
  source: 'source.component',
  type: 'type',
};

const CORE = '';
export const BUILTIN_TYPES: readonly ResourceType[] = [
  build({
    group: CORE,
    version: 'v1',
    resource: 'namespaces',
    kind: 'Namespace',
    namespaced: false,
    shortNames: ['ns'],
    verbs: NS_VERBS,
    subresources: [
      status(CORE, 'v1', 'Namespace'),
      { name: 'finalize', group: CORE, version: 'v1', kind: 'Namespace', verbs: ['update'] },
    ],
    patchMeta: meta(CONDITIONS('status.conditions')),
    nameRule: 'label',
    fieldLabels: { 'status.phase': 'status.phase' },
  }),
  build({
    group: CORE,
    version: 'v1',
    resource: 'pods',
    kind: 'Pod',
    namespaced: true,
    shortNames: ['po'],
    categories: ['all'],
    subresources: [
      status(CORE, 'v1', 'Pod'),
      { name: 'binding', group: CORE, version: 'v1', kind: 'Binding', verbs: ['create'] },
    ],
    patchMeta: meta(
      podSpecMeta('spec'),
      CONDITIONS('status.conditions'),
      [['status.podIPs', merge('ip')]],
      [['status.hostIPs', merge('ip')]],
    ),
    fieldLabels: POD_FIELDS,
  }),
  build({
    group: CORE,
    version: 'v1',
    resource: 'services',
    kind: 'Service',
    namespaced: true,
    shortNames: ['svc'],
    categories: ['all'],
    subresources: [status(CORE, 'v1', 'Service')],
    patchMeta: meta([['spec.ports', merge('port')]], CONDITIONS('status.conditions')),
    nameRule: 'dns1035',
  }),
  build({
    group: CORE,
    version: 'v1',
    resource: 'endpoints',
    kind: 'Endpoints',
    namespaced: true,
    shortNames: ['ep'],
    allowCreateOnUpdate: true,
  }),
  build({
    group: CORE,
    version: 'v1',
    resource: 'serviceaccounts',
    kind: 'ServiceAccount',
    namespaced: true,
    shortNames: ['sa'],
    subresources: [
      {
        name: 'token',
        group: 'authentication.k8s.io',
        version: 'v1',
        kind: 'TokenRequest',
        verbs: ['create'],
      },
    ],
    patchMeta: meta([['secrets', merge('name')]]),
  }),
  build({
    group: CORE,
    version: 'v1',
    resource: 'nodes',
    kind: 'Node',
    namespaced: false,
    shortNames: ['no'],
    subresources: [status(CORE, 'v1', 'Node')],
    patchMeta: meta([['spec.podCIDRs', merge()]], CONDITIONS('status.conditions'), [
      ['status.addresses', merge('type')],
    ]),
    fieldLabels: { 'spec.unschedulable': 'spec.unschedulable' },
  }),
  build({
    group: CORE,
    version: 'v1',
    resource: 'configmaps',
    kind: 'ConfigMap',
    namespaced: true,
    shortNames: ['cm'],
  }),
  build({
    group: CORE,
    version: 'v1',
    resource: 'secrets',
    kind: 'Secret',
    namespaced: true,
    fieldLabels: { type: 'type' },
  }),
  build({
    group: CORE,
    version: 'v1',
    resource: 'events',
    kind: 'Event',
    namespaced: true,
    shortNames: ['ev'],
    allowCreateOnUpdate: true,
    fieldLabels: EVENT_FIELDS,
  }),
  build({
    group: 'apps',
    version: 'v1',
    resource: 'deployments',
    kind: 'Deployment',
    namespaced: true,
    shortNames: ['deploy'],
    categories: ['all'],
    subresources: [status('apps', 'v1', 'Deployment'), scale()],
    generation: true,
    patchMeta: meta(TEMPLATE(), CONDITIONS('status.conditions')),
  }),
  build({
    group: 'apps',
    version: 'v1',
    resource: 'replicasets',
    kind: 'ReplicaSet',
    namespaced: true,
    shortNames: ['rs'],
    categories: ['all'],
    subresources: [status('apps', 'v1', 'ReplicaSet'), scale()],
    generation: true,
    patchMeta: meta(TEMPLATE(), CONDITIONS('status.conditions')),
    fieldLabels: { 'status.replicas': 'status.replicas' },
  }),
  build({
    group: 'apps',
    version: 'v1',
    resource: 'daemonsets',
    kind: 'DaemonSet',
    namespaced: true,
    shortNames: ['ds'],
    categories: ['all'],
    subresources: [status('apps', 'v1', 'DaemonSet')],
    generation: true,
    patchMeta: meta(TEMPLATE(), CONDITIONS('status.conditions')),
  }),
  build({
    group: 'discovery.k8s.io',
    version: 'v1',
    resource: 'endpointslices',
    kind: 'EndpointSlice',
    namespaced: true,
    fieldLabels: { addressType: 'addressType' },
  }),
  build({
    group: 'authentication.k8s.io',
    version: 'v1',
    resource: 'tokenreviews',
    kind: 'TokenReview',
    namespaced: false,
    verbs: ['create'],
    persisted: false,
  }),
  build({
    group: 'authentication.k8s.io',
    version: 'v1',
    resource: 'selfsubjectreviews',
    kind: 'SelfSubjectReview',
    namespaced: false,
    verbs: ['create'],
    persisted: false,
  }),
  ...['selfsubjectaccessreviews', 'subjectaccessreviews'].map((resource) =>
    build({
      group: 'authorization.k8s.io',
      version: 'v1',
      resource,
      kind: resource.startsWith('self') ? 'SelfSubjectAccessReview' : 'SubjectAccessReview',
      namespaced: false,
      verbs: ['create'],
      persisted: false,
    }),
  ),
  build({
    group: 'apiextensions.k8s.io',
    version: 'v1',
    resource: 'customresourcedefinitions',
    kind: 'CustomResourceDefinition',
    namespaced: false,
    shortNames: ['crd', 'crds'],
    categories: ['api-extensions'],
    subresources: [status('apiextensions.k8s.io', 'v1', 'CustomResourceDefinition')],
    generation: true,
    patchMeta: meta(CONDITIONS('status.conditions')),
  }),
  ...['roles', 'clusterroles', 'rolebindings', 'clusterrolebindings'].map((resource) =>
    build({
      group: 'rbac.authorization.k8s.io',
      version: 'v1',
      resource,
      kind: {
        roles: 'Role',
        clusterroles: 'ClusterRole',
        rolebindings: 'RoleBinding',
        clusterrolebindings: 'ClusterRoleBinding',
      }[resource] as string,
      namespaced: !resource.startsWith('cluster'),
      nameRule: 'path',
    }),
  ),
  build({
    group: 'coordination.k8s.io',
    version: 'v1',
    resource: 'leases',
    kind: 'Lease',
    namespaced: true,
    allowCreateOnUpdate: true,
  }),
  ...['mutatingwebhookconfigurations', 'validatingwebhookconfigurations'].map((resource) =>
    build({
      group: 'admissionregistration.k8s.io',
      version: 'v1',
      resource,
      kind: resource.startsWith('mutating')
        ? 'MutatingWebhookConfiguration'
        : 'ValidatingWebhookConfiguration',
      namespaced: false,
      categories: ['api-extensions'],
      generation: true,
      patchMeta: meta([['webhooks', merge('name')]]),
    }),
  ),
  build({
    group: 'policy',
    version: 'v1',
    resource: 'poddisruptionbudgets',
    kind: 'PodDisruptionBudget',
    namespaced: true,
    shortNames: ['pdb'],
    subresources: [status('policy', 'v1', 'PodDisruptionBudget')],
    generation: true,
    patchMeta: meta(CONDITIONS('status.conditions')),
  }),
  build({
    group: 'autoscaling',
    version: 'v2',
    resource: 'horizontalpodautoscalers',
    kind: 'HorizontalPodAutoscaler',
    namespaced: true,
    shortNames: ['hpa'],
    categories: ['all'],
    subresources: [status('autoscaling', 'v2', 'HorizontalPodAutoscaler')],
    patchMeta: meta(CONDITIONS('status.conditions')),
  }),
  build({
    group: 'events.k8s.io',
    version: 'v1',
    resource: 'events',
    kind: 'Event',
    namespaced: true,
    shortNames: ['ev'],
    allowCreateOnUpdate: true,
    fieldLabels: {
      reason: 'reason',
      type: 'type',
      'regarding.kind': 'regarding.kind',
      'regarding.name': 'regarding.name',
    },
  }),
];

/** Display order of groups in `/apis`, like kube-apiserver's group priorities; CRD groups follow, sorted. */
const GROUP_ORDER = [
  'apps',
  'events.k8s.io',
  'authentication.k8s.io',
  'authorization.k8s.io',
  'autoscaling',
  'policy',
  'rbac.authorization.k8s.io',
  'admissionregistration.k8s.io',
  'apiextensions.k8s.io',
  'coordination.k8s.io',
  'discovery.k8s.io',
];

export interface GroupInfo {
  readonly name: string;
  /** Served versions, preferred first, each with its resources. */
  readonly versions: ReadonlyArray<{ readonly version: string; readonly resources: readonly ResourceType[] }>;
}

/** Live set of served types. CRDs register and unregister while the server runs; `generation` tracks that. */
export class Registry {
  private readonly types = new Map<string, ResourceType>();
  /** Bumped on every change so discovery/OpenAPI caches know to rebuild. */
  generation = 0;

  constructor(builtins: readonly ResourceType[] = BUILTIN_TYPES) {
    for (const t of builtins) this.types.set(t.key, t);
  }

  all(): IterableIterator<ResourceType> {
    return this.types.values();
  }

  byKey(key: string): ResourceType | undefined {
    return this.types.get(key);
  }

  get(group: string, resource: string): ResourceType | undefined {
    return this.types.get(`${group}/${resource}`);
  }

  /** The type serving `group/version/resource`, if that version is served. */
  find(group: string, version: string, resource: string): ResourceType | undefined {
    const t = this.types.get(`${group}/${resource}`);
    return t?.versions.includes(version) ? t : undefined;
  }

  findKind(group: string, kind: string): ResourceType | undefined {
    for (const t of this.types.values()) if (t.group === group && t.kind === kind) return t;
    return undefined;
  }

  isBuiltin(key: string): boolean {
    const t = this.types.get(key);
    return t !== undefined && t.crd === null;
  }

  register(t: ResourceType): void {
    this.types.set(t.key, t);
    this.generation++;
  }

  unregister(key: string): void {
    if (this.types.delete(key)) this.generation++;
  }

  /** Groups with their versions and resources, in discovery order (core group excluded). */
  groups(): GroupInfo[] {
    const byGroup = new Map<string, Map<string, ResourceType[]>>();
    const preferred = new Map<string, string>();
    for (const t of this.types.values()) {
      if (t.group === '') continue;
      let versions = byGroup.get(t.group);
      if (!versions) {
        versions = new Map();
        byGroup.set(t.group, versions);
      }
      for (const v of t.versions) {
        let list = versions.get(v);
        if (!list) {
          list = [];
          versions.set(v, list);
        }
        list.push(t);
      }
      if (!preferred.has(t.group)) preferred.set(t.group, t.versions[0] as string);
    }
    const names = [...byGroup.keys()].sort((a, b) => {
      const ia = GROUP_ORDER.indexOf(a);
      const ib = GROUP_ORDER.indexOf(b);
      if (ia >= 0 || ib >= 0) return (ia < 0 ? 1e9 : ia) - (ib < 0 ? 1e9 : ib);
      return a.localeCompare(b);
    });
    return names.map((name) => {
      const versions = byGroup.get(name) as Map<string, ResourceType[]>;
      const order = sortVersions([...versions.keys()]);
      return {
        name,
        versions: order.map((version) => ({
          version,
          resources: (versions.get(version) ?? []).sort((a, b) => a.resource.localeCompare(b.resource)),
        })),
      };
    });
  }

  /** Core (`/api/v1`) resources. */
  coreResources(): ResourceType[] {
    return [...this.types.values()]
      .filter((t) => t.group === '')
      .sort((a, b) => a.resource.localeCompare(b.resource));
  }
}

/**
 * Kubernetes version priority (apimachinery `version.CompareKubeAwareVersionStrings`): GA > beta > alpha, higher
 * major first, then higher minor; non-matching strings sort last alphabetically.
 */
export function sortVersions(vs: readonly string[]): string[] {
  const parse = (v: string): [number, number, number] | null => {
    const m = /^v(\d+)(?:(alpha|beta)(\d+))?$/.exec(v);
    if (!m) return null;
    const stage = m[2] === 'alpha' ? 0 : m[2] === 'beta' ? 1 : 2;
    return [stage, Number(m[1]), Number(m[3] ?? 0)];
  };
  return [...vs].sort((a, b) => {
    const pa = parse(a);
    const pb = parse(b);
    if (pa && pb) {
      if (pa[0] !== pb[0]) return pb[0] - pa[0];
      if (pa[1] !== pb[1]) return pb[1] - pa[1];
      return pb[2] - pa[2];
    }
    if (pa) return -1;
    if (pb) return 1;
    return a.localeCompare(b);
  });
}

/** Boolean fields read as "false" when unset, like the Go zero value. */
const BOOLEAN_FIELDS = new Set(['spec.hostNetwork', 'spec.unschedulable']);

/** The values an object exposes to field selectors. */
export function fieldsOf(t: ResourceType, obj: JsonObject, version?: string): Record<string, string> {
  const md = isObject(obj.metadata) ? obj.metadata : {};
  const out: Record<string, string> = {
    'metadata.name': typeof md.name === 'string' ? md.name : '',
  };
  if (t.namespaced) out['metadata.namespace'] = typeof md.namespace === 'string' ? md.namespace : '';
  const labels: Record<string, string> = { ...t.fieldLabels };
  if (t.crd) for (const p of t.crd.selectableFields.get(version ?? t.storageVersion) ?? []) labels[p] = p;
  for (const [label, path] of Object.entries(labels)) {
    let cur: unknown = obj;
    for (const p of path.split('.')) cur = isObject(cur) ? cur[p] : undefined;
    if (typeof cur === 'string') out[label] = cur;
    else if (typeof cur === 'number' || typeof cur === 'boolean') out[label] = String(cur);
    else out[label] = BOOLEAN_FIELDS.has(label) ? 'false' : '';
  }
  return out;
}

/** Supported field-selector labels of a type (for 400s on unknown ones). */
export function fieldLabelsOf(t: ResourceType, version?: string): Set<string> {
  const s = new Set(['metadata.name']);
  if (t.namespaced) s.add('metadata.namespace');
  for (const k of Object.keys(t.fieldLabels)) s.add(k);
  if (t.crd) for (const p of t.crd.selectableFields.get(version ?? t.storageVersion) ?? []) s.add(p);
  return s;
}

export function apiVersionOf(group: string, version: string): string {
  return group ? `${group}/${version}` : version;
}

export function parseApiVersion(apiVersion: string): { group: string; version: string } {
  const i = apiVersion.indexOf('/');
  return i < 0
    ? { group: '', version: apiVersion }
    : { group: apiVersion.slice(0, i), version: apiVersion.slice(i + 1) };
}
