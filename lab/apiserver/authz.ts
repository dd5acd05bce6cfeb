/**
 * Authorization. `RbacAuthorizer` evaluates the stored Roles/ClusterRoles and their bindings the way the
 * kube-apiserver RBAC authorizer does (subjects User/Group/ServiceAccount, verbs, apiGroups, resources with
 * `resource/subresource`, resourceNames, nonResourceURLs with a trailing `*`, ClusterRole aggregation), so
 * our own manifests' RBAC is exercised in the lab. Shortcuts, documented in docs/lab-apiserver.md:
 * `system:masters` and `system:nodes` may do anything (the lab has no Node authorizer), and every
 * authenticated user may read discovery, OpenAPI, version and the OIDC documents.
 */
import type { UserInfo } from './api.ts';
import { isObject, type JsonObject, objAt, stringMap } from './json.ts';
import { labelSelectorFromObject, matchesLabels } from './selectors.ts';
import { forbidden } from './status.ts';
import type { Store } from './store.ts';

export interface AuthzAttributes {
  readonly verb: string;
  readonly group?: string;
  readonly resource?: string;
  readonly subresource?: string;
  readonly namespace?: string;
  readonly name?: string;
  readonly nonResourcePath?: string;
}

export interface Authorizer {
  /** Resolves when allowed; throws a 403 Status otherwise. */
  authorize(user: UserInfo, attrs: AuthzAttributes): Promise<void>;
  /** The same decision without throwing (SubjectAccessReviews). */
  allowed(user: UserInfo, attrs: AuthzAttributes): boolean;
}

export const alwaysAllow: Authorizer = {
  authorize: async () => {},
  allowed: () => true,
};

/** Answers a (Self)SubjectAccessReview body with the authorizer's decision. */
export function accessReview(
  authorizer: Authorizer,
  user: UserInfo,
  body: JsonObject,
  self: boolean,
): JsonObject {
  const spec = objAt(body, 'spec') ?? {};
  const ra = objAt(spec, 'resourceAttributes');
  const na = objAt(spec, 'nonResourceAttributes');
  let subject = user;
  if (!self) {
    subject = {
      username: typeof spec.user === 'string' ? spec.user : '',
      groups: Array.isArray(spec.groups) ? spec.groups.filter((g): g is string => typeof g === 'string') : [],
    };
  }
  const str = (o: JsonObject | null, k: string): string =>
    o && typeof o[k] === 'string' ? (o[k] as string) : '';
  const attrs: AuthzAttributes = na
    ? { verb: str(na, 'verb'), nonResourcePath: str(na, 'path') }
    : {
        verb: str(ra, 'verb'),
        group: str(ra, 'group'),
        resource: str(ra, 'resource'),
        subresource: str(ra, 'subresource'),
        namespace: str(ra, 'namespace'),
        name: str(ra, 'name'),
      };
  const allowed = authorizer.allowed(subject, attrs);
  return {
    kind: self ? 'SelfSubjectAccessReview' : 'SubjectAccessReview',
    apiVersion: 'authorization.k8s.io/v1',
    metadata: { creationTimestamp: null },
    spec,
    status: allowed ? { allowed: true, reason: 'allowed by the lab RBAC authorizer' } : { allowed: false },
  };
}

const RBAC = 'rbac.authorization.k8s.io';
/** Groups allowed everything: cluster admins, and kubelets (stand-in for the Node authorizer). */
const SUPER_GROUPS = new Set(['system:masters', 'system:nodes']);
/** Non-resource paths every authenticated user may GET (system:discovery and friends). */
const PUBLIC_PREFIXES = [
  '/api',
  '/apis',
  '/version',
  '/openapi',
  '/.well-known/openid-configuration',
  '/openid/v1/jwks',
];

function strings(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

function subjectMatches(s: unknown, user: UserInfo, bindingNs: string): boolean {
  if (!isObject(s)) return false;
  const name = s.name;
  switch (s.kind) {
    case 'User':
      return name === user.username;
    case 'Group':
      return typeof name === 'string' && user.groups.includes(name);
    case 'ServiceAccount': {
      const ns = typeof s.namespace === 'string' && s.namespace ? s.namespace : bindingNs;
      return user.username === `system:serviceaccount:${ns}:${String(name)}`;
    }
    default:
      return false;
  }
}

function ruleAllows(rule: unknown, a: AuthzAttributes): boolean {
  if (!isObject(rule)) return false;
  const verbs = strings(rule.verbs);
  if (!verbs.includes('*') && !verbs.includes(a.verb)) return false;
  if (a.nonResourcePath !== undefined) {
    return strings(rule.nonResourceURLs).some(
      (u) =>
        u === '*' ||
        u === a.nonResourcePath ||
        (u.endsWith('*') && (a.nonResourcePath as string).startsWith(u.slice(0, -1))),
    );
  }
  const groups = strings(rule.apiGroups);
  if (!groups.includes('*') && !groups.includes(a.group ?? '')) return false;
  const resources = strings(rule.resources);
  const want = a.subresource ? `${a.resource}/${a.subresource}` : (a.resource ?? '');
  const resOk = resources.some(
    (r) => r === '*' || r === want || (a.subresource && r === `*/${a.subresource}`),
  );
  if (!resOk) return false;
  const names = strings(rule.resourceNames);
  return names.length === 0 || (a.name !== undefined && a.name !== '' && names.includes(a.name));
}

export class RbacAuthorizer implements Authorizer {
  private readonly store: Store;

  constructor(store: Store) {
    this.store = store;
  }

  private clusterRoleRules(name: string, seen = new Set<string>()): unknown[] {
    if (seen.has(name)) return [];
    seen.add(name);
    const role = this.store.get(`${RBAC}/clusterroles`, '', name);
    if (!role) return [];
    const rules = Array.isArray(role.rules) ? [...role.rules] : [];
    const agg = objAt(role, 'aggregationRule');
    for (const sel of Array.isArray(agg?.clusterRoleSelectors) ? agg.clusterRoleSelectors : []) {
      let parsed: ReturnType<typeof labelSelectorFromObject>;
      try {
        parsed = labelSelectorFromObject(sel);
      } catch {
        continue;
      }
      for (const other of this.store.list(`${RBAC}/clusterroles`)) {
        const otherName = String(objAt(other, 'metadata')?.name ?? '');
        if (otherName !== name && matchesLabels(parsed, stringMap(objAt(other, 'metadata')?.labels)))
          rules.push(...this.clusterRoleRules(otherName, seen));
      }
    }
    return rules;
  }

  private rulesFor(ref: JsonObject | null, ns: string): unknown[] {
    if (!ref || typeof ref.name !== 'string') return [];
    if (ref.kind === 'ClusterRole') return this.clusterRoleRules(ref.name);
    if (ref.kind === 'Role') {
      const role = this.store.get(`${RBAC}/roles`, ns, ref.name);
      return role && Array.isArray(role.rules) ? role.rules : [];
    }
    return [];
  }

  allowed(user: UserInfo, a: AuthzAttributes): boolean {
    if (user.groups.some((g) => SUPER_GROUPS.has(g))) return true;
    if (
      a.nonResourcePath !== undefined &&
      a.verb === 'get' &&
      PUBLIC_PREFIXES.some(
        (p) => a.nonResourcePath === p || (a.nonResourcePath as string).startsWith(`${p}/`),
      )
    )
      return true;
    for (const b of this.store.list(`${RBAC}/clusterrolebindings`)) {
      if (!(Array.isArray(b.subjects) && b.subjects.some((s) => subjectMatches(s, user, '')))) continue;
      if (this.rulesFor(objAt(b, 'roleRef'), '').some((r) => ruleAllows(r, a))) return true;
    }
    if (a.namespace) {
      for (const b of this.store.list(`${RBAC}/rolebindings`, a.namespace)) {
        if (
          !(
            Array.isArray(b.subjects) &&
            b.subjects.some((s) => subjectMatches(s, user, a.namespace as string))
          )
        )
          continue;
        if (this.rulesFor(objAt(b, 'roleRef'), a.namespace).some((r) => ruleAllows(r, a))) return true;
      }
    }
    return false;
  }

  async authorize(user: UserInfo, a: AuthzAttributes): Promise<void> {
    if (this.allowed(user, a)) return;
    if (a.nonResourcePath !== undefined) {
      throw forbidden(`forbidden: User "${user.username}" cannot ${a.verb} path "${a.nonResourcePath}"`, {});
    }
    const res = a.subresource ? `${a.resource}/${a.subresource}` : (a.resource ?? '');
    const qualified = a.group ? `${a.resource}.${a.group}` : (a.resource ?? '');
    const scope = a.namespace ? `in the namespace "${a.namespace}"` : 'at the cluster scope';
    const what = a.name ? `${qualified} "${a.name}"` : qualified;
    throw forbidden(
      `${what} is forbidden: User "${user.username}" cannot ${a.verb} resource "${res}" in API group "${a.group ?? ''}" ${scope}`,
      {
        ...(a.name ? { name: a.name } : {}),
        ...(a.group ? { group: a.group } : {}),
        kind: a.resource ?? '',
      },
    );
  }
}

/** Default ClusterRoles/Bindings a fresh cluster has (kube-apiserver's RBAC bootstrap policy, abridged). */
export function bootstrapRbac(): Array<{ key: string; obj: JsonObject }> {
  const label = { 'kubernetes.io/bootstrapping': 'rbac-defaults' };
  const annotations = { 'rbac.authorization.kubernetes.io/autoupdate': 'true' };
  const role = (
    name: string,
    rules: JsonObject[],
    extraLabels: Record<string, string> = {},
  ): { key: string; obj: JsonObject } => ({
    key: `${RBAC}/clusterroles`,
    obj: {
      apiVersion: `${RBAC}/v1`,
      kind: 'ClusterRole',
      metadata: { name, labels: { ...label, ...extraLabels }, annotations },
      rules,
    },
  });
  const binding = (
    name: string,
    roleName: string,
    subjects: JsonObject[],
  ): { key: string; obj: JsonObject } => ({
    key: `${RBAC}/clusterrolebindings`,
    obj: {
      apiVersion: `${RBAC}/v1`,
      kind: 'ClusterRoleBinding',
      metadata: { name, labels: label, annotations },
      roleRef: { apiGroup: RBAC, kind: 'ClusterRole', name: roleName },
      subjects,
    },
  });
  const read = ['get', 'list', 'watch'];
  const write = ['create', 'delete', 'deletecollection', 'patch', 'update'];
  const workloads = [
    {
      apiGroups: [''],
      resources: [
        'pods',
        'pods/status',
        'services',
        'endpoints',
        'configmaps',
        'secrets',
        'serviceaccounts',
        'events',
        'persistentvolumeclaims',
      ],
      verbs: [...read, ...write],
    },
    {
      apiGroups: ['apps'],
      resources: [
        'deployments',
        'deployments/scale',
        'replicasets',
        'replicasets/scale',
        'daemonsets',
        'statefulsets',
      ],
      verbs: [...read, ...write],
    },
    { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: read },
    { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: [...read, ...write] },
  ];
  return [
    role('cluster-admin', [
      { apiGroups: ['*'], resources: ['*'], verbs: ['*'] },
      { nonResourceURLs: ['*'], verbs: ['*'] },
    ]),
    role(
      'admin',
      [...workloads, { apiGroups: [RBAC], resources: ['roles', 'rolebindings'], verbs: [...read, ...write] }],
      { 'kubernetes.io/bootstrapping': 'rbac-defaults' },
    ),
    role('edit', workloads),
    role(
      'view',
      workloads.map((r) => ({
        ...r,
        resources: (r.resources as string[]).filter((x) => x !== 'secrets'),
        verbs: read,
      })),
    ),
    role('system:auth-delegator', [
      { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
      { apiGroups: ['authorization.k8s.io'], resources: ['subjectaccessreviews'], verbs: ['create'] },
    ]),
    role('system:basic-user', [
      {
        apiGroups: ['authorization.k8s.io'],
        resources: ['selfsubjectaccessreviews', 'selfsubjectrulesreviews'],
        verbs: ['create'],
      },
      { apiGroups: ['authentication.k8s.io'], resources: ['selfsubjectreviews'], verbs: ['create'] },
    ]),
    binding('cluster-admin', 'cluster-admin', [{ apiGroup: RBAC, kind: 'Group', name: 'system:masters' }]),
    binding('system:basic-user', 'system:basic-user', [
      { apiGroup: RBAC, kind: 'Group', name: 'system:authenticated' },
    ]),
  ];
}
