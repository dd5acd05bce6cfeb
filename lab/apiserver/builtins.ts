/**
 * Per-kind behaviour of the built-in types (the "registry strategies" of kube-apiserver): defaulting,
 * server-set fields, validation and update rules, plus the admission steps the mesh depends on
 * (ServiceAccount token volume, default tolerations, ClusterIP/NodePort allocation).
 */
import {
  deepEqual,
  isInteger,
  isObject,
  isString,
  type JsonObject,
  objAt,
  randomSuffix,
  stringMap,
} from './json.ts';
import { labelSelectorFromObject, matchesLabels } from './selectors.ts';
import { ApiError, type FieldError, forbidden } from './status.ts';
import {
  Errors,
  isConfigKey,
  isDns1123Label,
  isDns1123Subdomain,
  isIanaSvcName,
  isQualifiedName,
  isValidIp,
  LABEL_MSG,
  oneOf,
  optArray,
  optBool,
  optInt,
  optObject,
  optString,
  SUBDOMAIN_MSG,
  validateIntOrString,
  validateLabels,
  validateStringMap,
} from './validation.ts';

/** The service network: a CIDR for ClusterIPs and a NodePort range. */
export interface NetworkConfig {
  /** First address of the CIDR as a 32-bit integer. */
  readonly serviceBase: number;
  readonly servicePrefix: number;
  readonly nodePortMin: number;
  readonly nodePortMax: number;
}

export interface StrategyContext {
  readonly now: Date;
  get(key: string, namespace: string, name: string): JsonObject | undefined;
  list(key: string, namespace?: string): readonly JsonObject[];
  readonly network: NetworkConfig;
}

export interface Strategy {
  /** Defaults and server-set fields for a new object; may throw an ApiError (e.g. admission rejections). */
  prepareCreate?(obj: JsonObject, ctx: StrategyContext): void;
  /** Adjusts an update of the main resource (fields the server keeps from the old object). */
  prepareUpdate?(obj: JsonObject, old: JsonObject, ctx: StrategyContext): void;
  /** Field errors for a new (`old === null`) or updated object. */
  validate?(obj: JsonObject, old: JsonObject | null, ctx: StrategyContext): FieldError[];
}

// ---- shared pieces ---------------------------------------------------------------------------------------------

const PROTOCOLS = ['TCP', 'UDP', 'SCTP'] as const;
/** Where every pod finds its ServiceAccount token, CA and namespace (ServiceAccount admission plugin). */
export const SA_MOUNT_PATH = '/var/run/secrets/kubernetes.io/serviceaccount';
/** kube-apiserver projects tokens valid for 1h plus a 7 s jitter marker that kubelets recognise. */
const SA_TOKEN_EXPIRATION_SECONDS = 3607;
/** DefaultTolerationSeconds admission: pods tolerate not-ready/unreachable nodes for 5 minutes. */
const DEFAULT_TOLERATION_SECONDS = 300;

function ensureObject(parent: JsonObject, key: string): JsonObject {
  const v = parent[key];
  if (isObject(v)) return v;
  const o: JsonObject = {};
  parent[key] = o;
  return o;
}

function setDefault(obj: JsonObject, key: string, value: unknown): void {
  if (obj[key] === undefined || obj[key] === null) obj[key] = value;
}

function specOf(obj: JsonObject): JsonObject {
  return ensureObject(obj, 'spec');
}

function imageTagIsLatest(image: string): boolean {
  if (image.includes('@')) return false;
  const last = image.slice(image.lastIndexOf('/') + 1);
  const colon = last.lastIndexOf(':');
  return colon < 0 || last.slice(colon + 1) === 'latest';
}

function defaultContainer(c: JsonObject): void {
  setDefault(c, 'terminationMessagePath', '/dev/termination-log');
  setDefault(c, 'terminationMessagePolicy', 'File');
  if (typeof c.image === 'string')
    setDefault(c, 'imagePullPolicy', imageTagIsLatest(c.image) ? 'Always' : 'IfNotPresent');
  setDefault(c, 'resources', {});
  for (const p of Array.isArray(c.ports) ? c.ports : []) if (isObject(p)) setDefault(p, 'protocol', 'TCP');
  for (const probe of ['livenessProbe', 'readinessProbe', 'startupProbe']) {
    const pr = c[probe];
    if (!isObject(pr)) continue;
    setDefault(pr, 'timeoutSeconds', 1);
    setDefault(pr, 'periodSeconds', 10);
    setDefault(pr, 'successThreshold', 1);
    setDefault(pr, 'failureThreshold', 3);
    if (isObject(pr.httpGet)) {
      setDefault(pr.httpGet, 'scheme', 'HTTP');
      setDefault(pr.httpGet, 'path', '/');
    }
  }
}

/** PodSpec defaults from k8s.io/kubernetes pkg/apis/core/v1/defaults.go (the subset clients observe). */
export function defaultPodSpec(spec: JsonObject): void {
  setDefault(spec, 'restartPolicy', 'Always');
  setDefault(spec, 'dnsPolicy', 'ClusterFirst');
  setDefault(spec, 'schedulerName', 'default-scheduler');
  setDefault(spec, 'terminationGracePeriodSeconds', 30);
  setDefault(spec, 'securityContext', {});
  if (spec.serviceAccountName === undefined && typeof spec.serviceAccount === 'string')
    spec.serviceAccountName = spec.serviceAccount;
  for (const list of ['containers', 'initContainers'])
    for (const c of Array.isArray(spec[list]) ? spec[list] : []) if (isObject(c)) defaultContainer(c);
  for (const v of Array.isArray(spec.volumes) ? spec.volumes : []) {
    if (!isObject(v)) continue;
    for (const src of ['configMap', 'secret', 'projected', 'downwardAPI'])
      if (isObject(v[src])) setDefault(v[src], 'defaultMode', 420);
    if (isObject(v.emptyDir) === false && Object.keys(v).length === 1) v.emptyDir = {};
  }
}

function validateContainer(
  errs: Errors,
  c: unknown,
  f: string,
  names: Set<string>,
  volumeNames: Set<string>,
): void {
  if (!isObject(c)) {
    errs.invalid(f, c, 'must be an object');
    return;
  }
  const name = optString(errs, c, 'name', `${f}.name`);
  if (!name) errs.required(`${f}.name`);
  else {
    if (!isDns1123Label(name)) errs.invalid(`${f}.name`, name, LABEL_MSG);
    if (names.has(name)) errs.duplicate(`${f}.name`, name);
    names.add(name);
  }
  const image = optString(errs, c, 'image', `${f}.image`);
  if (!image || image.trim() === '') errs.required(`${f}.image`);
  for (const k of ['command', 'args']) {
    const l = optArray(errs, c, k, `${f}.${k}`);
    l?.forEach((x, i) => {
      if (typeof x !== 'string') errs.invalid(`${f}.${k}[${i}]`, x, 'must be a string');
    });
  }
  const portNames = new Set<string>();
  optArray(errs, c, 'ports', `${f}.ports`)?.forEach((p, i) => {
    const pf = `${f}.ports[${i}]`;
    if (!isObject(p)) {
      errs.invalid(pf, p, 'must be an object');
      return;
    }
    const cp = optInt(errs, p, 'containerPort', `${pf}.containerPort`, 1, 65535);
    if (cp === undefined && p.containerPort === undefined) errs.required(`${pf}.containerPort`);
    optInt(errs, p, 'hostPort', `${pf}.hostPort`, 0, 65535);
    oneOf(errs, `${pf}.protocol`, optString(errs, p, 'protocol', `${pf}.protocol`), PROTOCOLS);
    const pn = optString(errs, p, 'name', `${pf}.name`);
    if (pn !== undefined) {
      if (!isIanaSvcName(pn))
        errs.invalid(
          `${pf}.name`,
          pn,
          "must be no more than 15 characters and contain only lowercase alphanumerics or '-', with at least one letter",
        );
      if (portNames.has(pn)) errs.duplicate(`${pf}.name`, pn);
      portNames.add(pn);
    }
  });
  optArray(errs, c, 'env', `${f}.env`)?.forEach((e, i) => {
    const ef = `${f}.env[${i}]`;
    if (!isObject(e)) {
      errs.invalid(ef, e, 'must be an object');
      return;
    }
    const n = optString(errs, e, 'name', `${ef}.name`);
    if (!n) errs.required(`${ef}.name`);
    optString(errs, e, 'value', `${ef}.value`);
    optObject(errs, e, 'valueFrom', `${ef}.valueFrom`);
  });
  optArray(errs, c, 'volumeMounts', `${f}.volumeMounts`)?.forEach((m, i) => {
    const mf = `${f}.volumeMounts[${i}]`;
    if (!isObject(m)) {
      errs.invalid(mf, m, 'must be an object');
      return;
    }
    const n = optString(errs, m, 'name', `${mf}.name`);
    if (!n) errs.required(`${mf}.name`);
    else if (!volumeNames.has(n))
      errs.list.push({ field: `${mf}.name`, type: 'NotSupported', value: n, detail: 'volume not found' });
    if (!optString(errs, m, 'mountPath', `${mf}.mountPath`)) errs.required(`${mf}.mountPath`);
  });
  for (const probe of ['livenessProbe', 'readinessProbe', 'startupProbe'])
    optObject(errs, c, probe, `${f}.${probe}`);
  optObject(errs, c, 'resources', `${f}.resources`);
  optObject(errs, c, 'securityContext', `${f}.securityContext`);
}

export function validatePodSpec(errs: Errors, spec: unknown, f: string, template: boolean): void {
  if (!isObject(spec)) {
    if (spec === undefined) errs.required(f);
    else errs.invalid(f, spec, 'must be an object');
    return;
  }
  const volumeNames = new Set<string>();
  optArray(errs, spec, 'volumes', `${f}.volumes`)?.forEach((v, i) => {
    const vf = `${f}.volumes[${i}]`;
    if (!isObject(v)) {
      errs.invalid(vf, v, 'must be an object');
      return;
    }
    const n = optString(errs, v, 'name', `${vf}.name`);
    if (!n) {
      errs.required(`${vf}.name`);
      return;
    }
    if (!isDns1123Label(n)) errs.invalid(`${vf}.name`, n, LABEL_MSG);
    if (volumeNames.has(n)) errs.duplicate(`${vf}.name`, n);
    volumeNames.add(n);
  });
  const names = new Set<string>();
  const containers = optArray(errs, spec, 'containers', `${f}.containers`);
  if (!containers || containers.length === 0) errs.required(`${f}.containers`);
  containers?.forEach((c, i) => {
    validateContainer(errs, c, `${f}.containers[${i}]`, names, volumeNames);
  });
  optArray(errs, spec, 'initContainers', `${f}.initContainers`)?.forEach((c, i) => {
    validateContainer(errs, c, `${f}.initContainers[${i}]`, names, volumeNames);
  });
  const rp = optString(errs, spec, 'restartPolicy', `${f}.restartPolicy`);
  oneOf(errs, `${f}.restartPolicy`, rp, ['Always', 'OnFailure', 'Never']);
  if (template && rp !== undefined && rp !== 'Always')
    errs.notSupported(`${f}.restartPolicy`, rp, ['Always']);
  oneOf(errs, `${f}.dnsPolicy`, optString(errs, spec, 'dnsPolicy', `${f}.dnsPolicy`), [
    'ClusterFirstWithHostNet',
    'ClusterFirst',
    'Default',
    'None',
  ]);
  const sa = optString(errs, spec, 'serviceAccountName', `${f}.serviceAccountName`);
  if (sa && !isDns1123Subdomain(sa)) errs.invalid(`${f}.serviceAccountName`, sa, SUBDOMAIN_MSG);
  const nodeName = optString(errs, spec, 'nodeName', `${f}.nodeName`);
  if (nodeName && !isDns1123Subdomain(nodeName)) errs.invalid(`${f}.nodeName`, nodeName, SUBDOMAIN_MSG);
  validateStringMap(errs, `${f}.nodeSelector`, spec.nodeSelector);
  optBool(errs, spec, 'hostNetwork', `${f}.hostNetwork`);
  optInt(errs, spec, 'terminationGracePeriodSeconds', `${f}.terminationGracePeriodSeconds`, 0);
  optArray(errs, spec, 'tolerations', `${f}.tolerations`)?.forEach((t, i) => {
    if (!isObject(t)) errs.invalid(`${f}.tolerations[${i}]`, t, 'must be an object');
  });
  optObject(errs, spec, 'affinity', `${f}.affinity`);
  optObject(errs, spec, 'securityContext', `${f}.securityContext`);
}

function qosClass(spec: JsonObject): string {
  const containers = [
    ...(Array.isArray(spec.containers) ? spec.containers : []),
    ...(Array.isArray(spec.initContainers) ? spec.initContainers : []),
  ];
  let any = false;
  let guaranteed = containers.length > 0;
  for (const c of containers) {
    const r = isObject(c) ? objAt(c, 'resources') : null;
    const req = stringMap(r?.requests);
    const lim = stringMap(r?.limits);
    if (Object.keys(req).length || Object.keys(lim).length) any = true;
    for (const res of ['cpu', 'memory']) {
      if (lim[res] === undefined || (req[res] !== undefined && req[res] !== lim[res])) guaranteed = false;
    }
  }
  if (!any) return 'BestEffort';
  return guaranteed ? 'Guaranteed' : 'Burstable';
}

/** The ServiceAccount admission plugin: default SA, SA must exist, token/CA/namespace projected volume. */
function admitServiceAccount(pod: JsonObject, spec: JsonObject, ctx: StrategyContext): void {
  const ns = String(objAt(pod, 'metadata')?.namespace ?? '');
  const saName =
    typeof spec.serviceAccountName === 'string' && spec.serviceAccountName
      ? spec.serviceAccountName
      : 'default';
  spec.serviceAccountName = saName;
  spec.serviceAccount = saName;
  const sa = ctx.get('/serviceaccounts', ns, saName);
  // Deviation: the `default` SA may be missing for a moment after its namespace is created (its controller
  // is asynchronous); kube-apiserver would reject the pod, the lab accepts it to spare every client a retry.
  if (!sa && saName !== 'default') {
    throw forbidden(
      `pods "${String(objAt(pod, 'metadata')?.name ?? objAt(pod, 'metadata')?.generateName ?? '')}" is forbidden: error looking up service account ${ns}/${saName}: serviceaccount "${saName}" not found`,
      { kind: 'pods' },
    );
  }
  const automount =
    typeof spec.automountServiceAccountToken === 'boolean'
      ? spec.automountServiceAccountToken
      : sa?.automountServiceAccountToken !== false;
  if (!automount) return;
  const allContainers = [
    ...(Array.isArray(spec.containers) ? spec.containers : []),
    ...(Array.isArray(spec.initContainers) ? spec.initContainers : []),
  ].filter(isObject);
  if (
    allContainers.some((c) =>
      (Array.isArray(c.volumeMounts) ? c.volumeMounts : []).some(
        (m) => isObject(m) && m.mountPath === SA_MOUNT_PATH,
      ),
    )
  )
    return;
  const volName = `kube-api-access-${randomSuffix()}`;
  const volumes = Array.isArray(spec.volumes) ? spec.volumes : [];
  volumes.push({
    name: volName,
    projected: {
      defaultMode: 420,
      sources: [
        { serviceAccountToken: { expirationSeconds: SA_TOKEN_EXPIRATION_SECONDS, path: 'token' } },
        { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
        {
          downwardAPI: {
            items: [{ path: 'namespace', fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } }],
          },
        },
      ],
    },
  });
  spec.volumes = volumes;
  for (const c of allContainers) {
    const mounts = Array.isArray(c.volumeMounts) ? c.volumeMounts : [];
    mounts.push({ name: volName, readOnly: true, mountPath: SA_MOUNT_PATH });
    c.volumeMounts = mounts;
  }
}

function addDefaultTolerations(spec: JsonObject): void {
  const tol = Array.isArray(spec.tolerations) ? spec.tolerations : [];
  for (const key of ['node.kubernetes.io/not-ready', 'node.kubernetes.io/unreachable']) {
    const has = tol.some(
      (t) =>
        isObject(t) &&
        (t.key === key || (t.key === undefined && t.operator === 'Exists')) &&
        (t.effect === undefined || t.effect === 'NoExecute'),
    );
    if (!has)
      tol.push({
        key,
        operator: 'Exists',
        effect: 'NoExecute',
        tolerationSeconds: DEFAULT_TOLERATION_SECONDS,
      });
  }
  spec.tolerations = tol;
}

/** Fields of a pod spec that may change after creation (ValidatePodUpdate). */
function podSpecMutableView(spec: unknown): unknown {
  if (!isObject(spec)) return spec;
  const s: JsonObject = { ...spec };
  for (const k of ['containers', 'initContainers']) {
    if (Array.isArray(s[k]))
      s[k] = (s[k] as unknown[]).map((c) => (isObject(c) ? { ...c, image: undefined } : c));
  }
  delete s.activeDeadlineSeconds;
  delete s.tolerations;
  delete s.terminationGracePeriodSeconds;
  delete s.schedulingGates;
  return s;
}

const podStrategy: Strategy = {
  prepareCreate(obj, ctx) {
    const spec = specOf(obj);
    defaultPodSpec(spec);
    setDefault(spec, 'enableServiceLinks', true);
    setDefault(spec, 'priority', 0);
    setDefault(spec, 'preemptionPolicy', 'PreemptLowerPriority');
    if (!Array.isArray(spec.containers)) return;
    admitServiceAccount(obj, spec, ctx);
    addDefaultTolerations(spec);
    obj.status = { phase: 'Pending', qosClass: qosClass(spec) };
  },
  validate(obj, old) {
    const errs = new Errors();
    validatePodSpec(errs, obj.spec, 'spec', false);
    if (old && errs.empty && !deepEqual(podSpecMutableView(obj.spec), podSpecMutableView(old.spec))) {
      errs.forbidden(
        'spec',
        'pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)',
      );
    }
    return errs.list;
  },
};

// ---- workload controllers' objects ----------------------------------------------------------------------------

function defaultTemplate(spec: JsonObject): void {
  const tpl = ensureObject(spec, 'template');
  defaultPodSpec(ensureObject(tpl, 'spec'));
}

function validateSelectorAndTemplate(errs: Errors, obj: JsonObject, old: JsonObject | null): void {
  const spec = objAt(obj, 'spec');
  if (!spec) {
    errs.required('spec');
    return;
  }
  const sel = spec.selector;
  if (!isObject(sel)) errs.required('spec.selector');
  else {
    let parsed: ReturnType<typeof labelSelectorFromObject> = null;
    try {
      parsed = labelSelectorFromObject(sel);
    } catch (err) {
      errs.invalid('spec.selector', sel, err instanceof ApiError ? err.message : 'invalid selector');
    }
    if (parsed && parsed.length === 0)
      errs.invalid('spec.selector', sel, 'empty selector is invalid for deployment');
    const tpl = objAt(spec, 'template');
    const labels = stringMap(objAt(tpl, 'metadata')?.labels);
    validateLabels(errs, 'spec.template.metadata.labels', objAt(tpl, 'metadata')?.labels);
    if (parsed && parsed.length > 0 && !matchesLabels(parsed, labels))
      errs.invalid('spec.template.metadata.labels', labels, '`selector` does not match template `labels`');
    if (old && !deepEqual(sel, objAt(old, 'spec')?.selector)) errs.immutable('spec.selector', sel);
  }
  const tpl = objAt(spec, 'template');
  if (!tpl) errs.required('spec.template');
  else validatePodSpec(errs, tpl.spec, 'spec.template.spec', true);
}

const deploymentStrategy: Strategy = {
  prepareCreate: defaultDeployment,
  prepareUpdate: defaultDeployment,
  validate(obj, old) {
    const errs = new Errors();
    const spec = objAt(obj, 'spec') ?? {};
    optInt(errs, spec, 'replicas', 'spec.replicas', 0);
    optInt(errs, spec, 'minReadySeconds', 'spec.minReadySeconds', 0);
    optInt(errs, spec, 'revisionHistoryLimit', 'spec.revisionHistoryLimit', 0);
    optBool(errs, spec, 'paused', 'spec.paused');
    const strategy = optObject(errs, spec, 'strategy', 'spec.strategy');
    if (strategy) {
      const type = optString(errs, strategy, 'type', 'spec.strategy.type');
      oneOf(errs, 'spec.strategy.type', type, ['RollingUpdate', 'Recreate']);
      const ru = optObject(errs, strategy, 'rollingUpdate', 'spec.strategy.rollingUpdate');
      if (ru && type === 'Recreate')
        errs.forbidden(
          'spec.strategy.rollingUpdate',
          "may not be specified when strategy `type` is 'Recreate'",
        );
      if (ru) {
        const opts = { min: 0, max: 2 ** 31 - 1, percent: true };
        validateIntOrString(errs, 'spec.strategy.rollingUpdate.maxSurge', ru.maxSurge, opts);
        validateIntOrString(errs, 'spec.strategy.rollingUpdate.maxUnavailable', ru.maxUnavailable, opts);
        const zero = (v: unknown) => v === 0 || v === '0%';
        if (zero(ru.maxSurge) && zero(ru.maxUnavailable))
          errs.invalid(
            'spec.strategy.rollingUpdate.maxUnavailable',
            ru.maxUnavailable,
            'may not be 0 when `maxSurge` is 0',
          );
      }
    }
    validateSelectorAndTemplate(errs, obj, old);
    return errs.list;
  },
};

/** The same defaulting on create and update (kube defaults on every decode). */
function onWrite(f: (obj: JsonObject) => void): Pick<Strategy, 'prepareCreate' | 'prepareUpdate'> {
  return { prepareCreate: f, prepareUpdate: f };
}

function defaultDeployment(obj: JsonObject): void {
  const spec = specOf(obj);
  setDefault(spec, 'replicas', 1);
  setDefault(spec, 'revisionHistoryLimit', 10);
  setDefault(spec, 'progressDeadlineSeconds', 600);
  const strategy = ensureObject(spec, 'strategy');
  setDefault(strategy, 'type', 'RollingUpdate');
  if (strategy.type === 'RollingUpdate') {
    const ru = ensureObject(strategy, 'rollingUpdate');
    setDefault(ru, 'maxSurge', '25%');
    setDefault(ru, 'maxUnavailable', '25%');
  }
  defaultTemplate(spec);
}

const replicaSetStrategy: Strategy = {
  ...onWrite((obj) => {
    const spec = specOf(obj);
    setDefault(spec, 'replicas', 1);
    defaultTemplate(spec);
  }),
  validate(obj, old) {
    const errs = new Errors();
    const spec = objAt(obj, 'spec') ?? {};
    optInt(errs, spec, 'replicas', 'spec.replicas', 0);
    optInt(errs, spec, 'minReadySeconds', 'spec.minReadySeconds', 0);
    validateSelectorAndTemplate(errs, obj, old);
    return errs.list;
  },
};

const daemonSetStrategy: Strategy = {
  ...onWrite((obj) => {
    const spec = specOf(obj);
    setDefault(spec, 'revisionHistoryLimit', 10);
    const us = ensureObject(spec, 'updateStrategy');
    setDefault(us, 'type', 'RollingUpdate');
    if (us.type === 'RollingUpdate') {
      const ru = ensureObject(us, 'rollingUpdate');
      setDefault(ru, 'maxUnavailable', 1);
      setDefault(ru, 'maxSurge', 0);
    }
    defaultTemplate(spec);
  }),
  validate(obj, old) {
    const errs = new Errors();
    const spec = objAt(obj, 'spec') ?? {};
    const us = optObject(errs, spec, 'updateStrategy', 'spec.updateStrategy');
    if (us)
      oneOf(errs, 'spec.updateStrategy.type', optString(errs, us, 'type', 'spec.updateStrategy.type'), [
        'RollingUpdate',
        'OnDelete',
      ]);
    const ru = us ? optObject(errs, us, 'rollingUpdate', 'spec.updateStrategy.rollingUpdate') : undefined;
    if (ru)
      validateIntOrString(errs, 'spec.updateStrategy.rollingUpdate.maxUnavailable', ru.maxUnavailable, {
        min: 0,
        max: 2 ** 31 - 1,
        percent: true,
      });
    validateSelectorAndTemplate(errs, obj, old);
    return errs.list;
  },
};

// ---- services -----------------------------------------------------------------------------------------------

function ipToInt(ip: string): number | null {
  const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(ip);
  if (!m) return null;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return null;
  return (
    (((parts[0] as number) << 24) |
      ((parts[1] as number) << 16) |
      ((parts[2] as number) << 8) |
      (parts[3] as number)) >>>
    0
  );
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** Parses `a.b.c.d/n`; returns null when malformed. */
export function parseCidr(cidr: string): { base: number; prefix: number } | null {
  const [ip, bits] = cidr.split('/');
  const base = ip ? ipToInt(ip) : null;
  const prefix = Number(bits);
  if (base === null || !Number.isInteger(prefix) || prefix < 8 || prefix > 30) return null;
  const mask = prefix === 0 ? 0 : (~0 << (32 - prefix)) >>> 0;
  return { base: (base & mask) >>> 0, prefix };
}

function inServiceCidr(net: NetworkConfig, ip: string): boolean {
  const n = ipToInt(ip);
  if (n === null) return false;
  const size = 2 ** (32 - net.servicePrefix);
  return n > net.serviceBase && n < net.serviceBase + size - 1;
}

function usedClusterIps(ctx: StrategyContext): Set<string> {
  const used = new Set<string>();
  for (const s of ctx.list('/services')) {
    const ip = objAt(s, 'spec')?.clusterIP;
    if (typeof ip === 'string') used.add(ip);
  }
  return used;
}

function usedNodePorts(ctx: StrategyContext): Set<number> {
  const used = new Set<number>();
  for (const s of ctx.list('/services')) {
    const ports = objAt(s, 'spec')?.ports;
    for (const p of Array.isArray(ports) ? ports : [])
      if (isObject(p) && isInteger(p.nodePort)) used.add(p.nodePort);
  }
  return used;
}

/** The first free address of the service CIDR; `.1` goes to the `kubernetes` Service like on a real cluster. */
export function allocateClusterIp(ctx: StrategyContext): string {
  const used = usedClusterIps(ctx);
  const size = 2 ** (32 - ctx.network.servicePrefix);
  for (let i = 1; i < size - 1; i++) {
    const ip = intToIp(ctx.network.serviceBase + i);
    if (!used.has(ip)) return ip;
  }
  throw new ApiError(
    500,
    'InternalError',
    'Internal error occurred: failed to allocate a serviceIP: range is full',
  );
}

function allocateNodePorts(spec: JsonObject, ctx: StrategyContext, errs: Errors): void {
  const type = spec.type;
  if (type !== 'NodePort' && type !== 'LoadBalancer') {
    for (const p of Array.isArray(spec.ports) ? spec.ports : []) if (isObject(p)) delete p.nodePort;
    return;
  }
  const used = usedNodePorts(ctx);
  const { nodePortMin: min, nodePortMax: max } = ctx.network;
  (Array.isArray(spec.ports) ? spec.ports : []).forEach((p, i) => {
    if (!isObject(p)) return;
    if (isInteger(p.nodePort) && p.nodePort !== 0) {
      if (p.nodePort < min || p.nodePort > max)
        errs.invalid(
          `spec.ports[${i}].nodePort`,
          p.nodePort,
          `provided port is not in the valid range. The range of valid ports is ${min}-${max}`,
        );
      return;
    }
    for (let port = min; port <= max; port++) {
      if (!used.has(port)) {
        p.nodePort = port;
        used.add(port);
        return;
      }
    }
    errs.invalid(`spec.ports[${i}].nodePort`, 0, 'range is full');
  });
}

function defaultService(obj: JsonObject): void {
  const spec = specOf(obj);
  setDefault(spec, 'type', 'ClusterIP');
  if (spec.type === 'ExternalName') return;
  setDefault(spec, 'sessionAffinity', 'None');
  setDefault(spec, 'internalTrafficPolicy', 'Cluster');
  if (spec.type === 'NodePort' || spec.type === 'LoadBalancer')
    setDefault(spec, 'externalTrafficPolicy', 'Cluster');
  if (spec.type === 'LoadBalancer') setDefault(spec, 'allocateLoadBalancerNodePorts', true);
  for (const p of Array.isArray(spec.ports) ? spec.ports : []) {
    if (!isObject(p)) continue;
    setDefault(p, 'protocol', 'TCP');
    if (p.targetPort === undefined || p.targetPort === 0 || p.targetPort === '') p.targetPort = p.port;
  }
}

function setServiceIpFields(spec: JsonObject): void {
  if (spec.type === 'ExternalName') return;
  if (typeof spec.clusterIP === 'string' && spec.clusterIP !== '') spec.clusterIPs = [spec.clusterIP];
  setDefault(spec, 'ipFamilies', ['IPv4']);
  setDefault(spec, 'ipFamilyPolicy', 'SingleStack');
}

const serviceStrategy: Strategy = {
  prepareCreate(obj, ctx) {
    defaultService(obj);
    const spec = specOf(obj);
    obj.status = { loadBalancer: {} };
    if (spec.type === 'ExternalName') return;
    if (
      (spec.clusterIP === undefined || spec.clusterIP === '') &&
      Array.isArray(spec.clusterIPs) &&
      typeof spec.clusterIPs[0] === 'string'
    )
      spec.clusterIP = spec.clusterIPs[0];
    if (spec.clusterIP === undefined || spec.clusterIP === '') spec.clusterIP = allocateClusterIp(ctx);
    setServiceIpFields(spec);
  },
  prepareUpdate(obj, old) {
    defaultService(obj);
    const spec = specOf(obj);
    const oldSpec = objAt(old, 'spec') ?? {};
    // Clients (kubectl apply, controllers with stale copies) often omit the allocated address; keep it.
    if (
      (spec.clusterIP === undefined || spec.clusterIP === '') &&
      spec.type !== 'ExternalName' &&
      oldSpec.type !== 'ExternalName'
    ) {
      spec.clusterIP = oldSpec.clusterIP;
      spec.clusterIPs = oldSpec.clusterIPs;
    }
    // Keep allocated node ports the client did not mention (matched by port number).
    const oldPorts = Array.isArray(oldSpec.ports) ? oldSpec.ports.filter(isObject) : [];
    for (const p of Array.isArray(spec.ports) ? spec.ports : []) {
      if (!isObject(p) || (isInteger(p.nodePort) && p.nodePort !== 0)) continue;
      const prev = oldPorts.find((o) => o.port === p.port && (o.protocol ?? 'TCP') === (p.protocol ?? 'TCP'));
      if (prev && isInteger(prev.nodePort)) p.nodePort = prev.nodePort;
    }
    setServiceIpFields(spec);
  },
  validate(obj, old, ctx) {
    const errs = new Errors();
    const spec = objAt(obj, 'spec');
    if (!spec) {
      errs.required('spec');
      return errs.list;
    }
    const type = optString(errs, spec, 'type', 'spec.type');
    oneOf(errs, 'spec.type', type, ['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName']);
    validateStringMap(errs, 'spec.selector', spec.selector);
    oneOf(errs, 'spec.sessionAffinity', optString(errs, spec, 'sessionAffinity', 'spec.sessionAffinity'), [
      'None',
      'ClientIP',
    ]);
    if (type === 'ExternalName') {
      const en = optString(errs, spec, 'externalName', 'spec.externalName');
      if (!en) errs.required('spec.externalName');
      return errs.list;
    }
    const clusterIP = optString(errs, spec, 'clusterIP', 'spec.clusterIP');
    const headless = clusterIP === 'None';
    if (
      clusterIP &&
      !headless &&
      (!isValidIp(clusterIP) || !inServiceCidr(ctx.network, clusterIP)) &&
      (!old || objAt(old, 'spec')?.clusterIP !== clusterIP)
    )
      errs.invalid(
        'spec.clusterIPs',
        [clusterIP],
        'failed to allocate IP: the provided IP is not in the valid range',
      );
    if (old) {
      const oldIp = objAt(old, 'spec')?.clusterIP;
      if (
        typeof oldIp === 'string' &&
        oldIp !== '' &&
        clusterIP !== oldIp &&
        objAt(old, 'spec')?.type !== 'ExternalName'
      )
        errs.invalid('spec.clusterIPs[0]', clusterIP ?? '', 'may not change once set');
    } else if (clusterIP && !headless && usedClusterIps(ctx).has(clusterIP)) {
      errs.invalid(
        'spec.clusterIPs',
        [clusterIP],
        `failed to allocate IP ${clusterIP}: provided IP is already allocated`,
      );
    }
    const ports = optArray(errs, spec, 'ports', 'spec.ports');
    if ((!ports || ports.length === 0) && !headless) errs.required('spec.ports');
    const names = new Set<string>();
    const seen = new Set<string>();
    ports?.forEach((p, i) => {
      const f = `spec.ports[${i}]`;
      if (!isObject(p)) {
        errs.invalid(f, p, 'must be an object');
        return;
      }
      const name = optString(errs, p, 'name', `${f}.name`);
      if ((ports.length > 1 && !name) || name === '') errs.required(`${f}.name`);
      if (name) {
        if (!isDns1123Label(name)) errs.invalid(`${f}.name`, name, LABEL_MSG);
        if (names.has(name)) errs.duplicate(`${f}.name`, name);
        names.add(name);
      }
      const port = optInt(errs, p, 'port', `${f}.port`, 1, 65535);
      if (p.port === undefined) errs.required(`${f}.port`);
      const proto = optString(errs, p, 'protocol', `${f}.protocol`);
      oneOf(errs, `${f}.protocol`, proto, PROTOCOLS);
      const key = `${port}/${proto ?? 'TCP'}`;
      if (port !== undefined && seen.has(key)) errs.duplicate(f, { port, protocol: proto ?? 'TCP' });
      seen.add(key);
      validateIntOrString(errs, `${f}.targetPort`, p.targetPort, { min: 1, max: 65535, names: true });
      optInt(errs, p, 'nodePort', `${f}.nodePort`, 0, 65535);
      optString(errs, p, 'appProtocol', `${f}.appProtocol`);
    });
    if (errs.empty) allocateNodePorts(spec, ctx, errs);
    return errs.list;
  },
};

// ---- the rest of core/v1 ----------------------------------------------------------------------------------------

export const NAMESPACE_NAME_LABEL = 'kubernetes.io/metadata.name';

function namespaceLabels(obj: JsonObject): void {
  const md = ensureObject(obj, 'metadata');
  const labels = ensureObject(md, 'labels');
  if (typeof md.name === 'string') labels[NAMESPACE_NAME_LABEL] = md.name;
}

const namespaceStrategy: Strategy = {
  prepareCreate(obj) {
    const spec = specOf(obj);
    spec.finalizers = ['kubernetes'];
    obj.status = { phase: 'Active' };
    namespaceLabels(obj);
  },
  prepareUpdate(obj, old) {
    namespaceLabels(obj);
    // spec.finalizers changes only through the `finalize` subresource.
    const oldSpec = objAt(old, 'spec');
    obj.spec = oldSpec ? { ...oldSpec } : {};
  },
};

function validateDataMap(errs: Errors, field: string, v: unknown, base64: boolean): void {
  if (v === undefined || v === null) return;
  if (!isObject(v)) {
    errs.invalid(field, v, 'must be a map of strings');
    return;
  }
  for (const [k, val] of Object.entries(v)) {
    if (!isConfigKey(k))
      errs.invalid(field, k, "a valid config key must consist of alphanumeric characters, '-', '_' or '.'");
    if (typeof val !== 'string') errs.invalid(`${field}[${k}]`, val, 'must be a string');
    else if (base64 && !/^[A-Za-z0-9+/]*={0,2}$/.test(val.replace(/\s/g, '')))
      errs.invalid(`${field}[${k}]`, '<value omitted>', 'illegal base64 data');
  }
}

function immutableData(errs: Errors, obj: JsonObject, old: JsonObject | null): void {
  if (old?.immutable !== true) return;
  for (const k of ['data', 'binaryData', 'immutable']) {
    if (!deepEqual(obj[k], old[k])) errs.forbidden(k, 'field is immutable when `immutable` is set');
  }
}

const configMapStrategy: Strategy = {
  validate(obj, old) {
    const errs = new Errors();
    validateDataMap(errs, 'data', obj.data, false);
    validateDataMap(errs, 'binaryData', obj.binaryData, true);
    optBool(errs, obj, 'immutable', 'immutable');
    immutableData(errs, obj, old);
    return errs.list;
  },
};

function foldStringData(obj: JsonObject): void {
  if (isObject(obj.stringData)) {
    const data = isObject(obj.data) ? obj.data : {};
    for (const [k, v] of Object.entries(obj.stringData))
      if (typeof v === 'string') data[k] = Buffer.from(v).toString('base64');
    obj.data = data;
  }
  delete obj.stringData;
  setDefault(obj, 'type', 'Opaque');
}

const secretStrategy: Strategy = {
  prepareCreate: foldStringData,
  prepareUpdate: foldStringData,
  validate(obj, old) {
    const errs = new Errors();
    validateDataMap(errs, 'data', obj.data, true);
    const type = optString(errs, obj, 'type', 'type');
    if (old && type !== old.type) errs.immutable('type', type);
    const data = isObject(obj.data) ? obj.data : {};
    if (type === 'kubernetes.io/tls')
      for (const k of ['tls.crt', 'tls.key']) if (data[k] === undefined) errs.required(`data[${k}]`);
    if (
      type === 'kubernetes.io/service-account-token' &&
      !stringMap(objAt(obj, 'metadata')?.annotations)['kubernetes.io/service-account.name']
    )
      errs.required('metadata.annotations[kubernetes.io/service-account.name]');
    optBool(errs, obj, 'immutable', 'immutable');
    immutableData(errs, obj, old);
    return errs.list;
  },
};

const serviceAccountStrategy: Strategy = {
  validate(obj) {
    const errs = new Errors();
    optBool(errs, obj, 'automountServiceAccountToken', 'automountServiceAccountToken');
    optArray(errs, obj, 'secrets', 'secrets');
    optArray(errs, obj, 'imagePullSecrets', 'imagePullSecrets');
    return errs.list;
  },
};

const nodeStrategy: Strategy = {
  validate(obj) {
    const errs = new Errors();
    const spec = optObject(errs, obj, 'spec', 'spec');
    if (spec) {
      optBool(errs, spec, 'unschedulable', 'spec.unschedulable');
      optArray(errs, spec, 'taints', 'spec.taints')?.forEach((t, i) => {
        if (!isObject(t)) {
          errs.invalid(`spec.taints[${i}]`, t, 'must be an object');
          return;
        }
        if (typeof t.key !== 'string' || !isQualifiedName(t.key))
          errs.invalid(`spec.taints[${i}].key`, t.key, 'must be a qualified name');
        oneOf(errs, `spec.taints[${i}].effect`, optString(errs, t, 'effect', `spec.taints[${i}].effect`), [
          'NoSchedule',
          'PreferNoSchedule',
          'NoExecute',
        ]);
        if (t.effect === undefined) errs.required(`spec.taints[${i}].effect`);
      });
    }
    const status = optObject(errs, obj, 'status', 'status');
    if (status) optArray(errs, status, 'conditions', 'status.conditions');
    return errs.list;
  },
};

function validateEndpointPorts(
  errs: Errors,
  f: string,
  ports: unknown[] | undefined,
  allowZero: boolean,
): void {
  ports?.forEach((p, i) => {
    if (!isObject(p)) {
      errs.invalid(`${f}[${i}]`, p, 'must be an object');
      return;
    }
    optInt(errs, p, 'port', `${f}[${i}].port`, allowZero ? 0 : 1, 65535);
    oneOf(errs, `${f}[${i}].protocol`, optString(errs, p, 'protocol', `${f}[${i}].protocol`), PROTOCOLS);
    optString(errs, p, 'name', `${f}[${i}].name`);
  });
}

const endpointsStrategy: Strategy = {
  ...onWrite((obj) => {
    for (const s of Array.isArray(obj.subsets) ? obj.subsets : [])
      for (const p of isObject(s) && Array.isArray(s.ports) ? s.ports : [])
        if (isObject(p)) setDefault(p, 'protocol', 'TCP');
  }),
  validate(obj) {
    const errs = new Errors();
    optArray(errs, obj, 'subsets', 'subsets')?.forEach((s, i) => {
      const f = `subsets[${i}]`;
      if (!isObject(s)) {
        errs.invalid(f, s, 'must be an object');
        return;
      }
      for (const k of ['addresses', 'notReadyAddresses']) {
        optArray(errs, s, k, `${f}.${k}`)?.forEach((a, j) => {
          const ip = isObject(a) ? a.ip : undefined;
          if (typeof ip !== 'string' || !isValidIp(ip))
            errs.invalid(`${f}.${k}[${j}].ip`, ip, 'must be a valid IP address');
        });
      }
      validateEndpointPorts(errs, `${f}.ports`, optArray(errs, s, 'ports', `${f}.ports`), false);
    });
    return errs.list;
  },
};

const endpointSliceStrategy: Strategy = {
  ...onWrite((obj) => {
    for (const p of Array.isArray(obj.ports) ? obj.ports : [])
      if (isObject(p)) setDefault(p, 'protocol', 'TCP');
  }),
  validate(obj, old) {
    const errs = new Errors();
    const at = optString(errs, obj, 'addressType', 'addressType');
    if (!at) errs.required('addressType');
    oneOf(errs, 'addressType', at, ['IPv4', 'IPv6', 'FQDN']);
    if (old && old.addressType !== obj.addressType) errs.immutable('addressType', obj.addressType);
    optArray(errs, obj, 'endpoints', 'endpoints')?.forEach((e, i) => {
      const f = `endpoints[${i}]`;
      if (!isObject(e)) {
        errs.invalid(f, e, 'must be an object');
        return;
      }
      const addrs = optArray(errs, e, 'addresses', `${f}.addresses`);
      if (!addrs || addrs.length === 0) errs.required(`${f}.addresses`);
      addrs?.forEach((a, j) => {
        if (typeof a !== 'string' || (at !== 'FQDN' && !isValidIp(a)))
          errs.invalid(`${f}.addresses[${j}]`, a, 'must be a valid IP address');
      });
      optObject(errs, e, 'conditions', `${f}.conditions`);
      optString(errs, e, 'nodeName', `${f}.nodeName`);
    });
    validateEndpointPorts(errs, 'ports', optArray(errs, obj, 'ports', 'ports'), true);
    return errs.list;
  },
};

const eventStrategy: Strategy = {
  validate(obj) {
    const errs = new Errors();
    optObject(errs, obj, 'involvedObject', 'involvedObject');
    for (const k of ['reason', 'message', 'type']) optString(errs, obj, k, k);
    optInt(errs, obj, 'count', 'count');
    return errs.list;
  },
};

const leaseStrategy: Strategy = {
  validate(obj) {
    const errs = new Errors();
    const spec = optObject(errs, obj, 'spec', 'spec');
    if (spec) {
      optString(errs, spec, 'holderIdentity', 'spec.holderIdentity');
      optInt(errs, spec, 'leaseDurationSeconds', 'spec.leaseDurationSeconds', 1);
      optInt(errs, spec, 'leaseTransitions', 'spec.leaseTransitions', 0);
      optString(errs, spec, 'acquireTime', 'spec.acquireTime');
      optString(errs, spec, 'renewTime', 'spec.renewTime');
    }
    return errs.list;
  },
};

const roleStrategy: Strategy = {
  validate(obj) {
    const errs = new Errors();
    optArray(errs, obj, 'rules', 'rules')?.forEach((r, i) => {
      const f = `rules[${i}]`;
      if (!isObject(r)) {
        errs.invalid(f, r, 'must be an object');
        return;
      }
      const verbs = optArray(errs, r, 'verbs', `${f}.verbs`);
      if (!verbs || verbs.length === 0) errs.required(`${f}.verbs`, 'verbs must contain at least one value');
      for (const k of ['apiGroups', 'resources', 'resourceNames', 'nonResourceURLs', 'verbs'])
        optArray(errs, r, k, `${f}.${k}`)?.forEach((x, j) => {
          if (!isString(x)) errs.invalid(`${f}.${k}[${j}]`, x, 'must be a string');
        });
    });
    return errs.list;
  },
};

function bindingStrategy(cluster: boolean): Strategy {
  return {
    validate(obj, old) {
      const errs = new Errors();
      const ref = optObject(errs, obj, 'roleRef', 'roleRef');
      if (!ref) errs.required('roleRef');
      else {
        const kind = optString(errs, ref, 'kind', 'roleRef.kind');
        oneOf(errs, 'roleRef.kind', kind, cluster ? ['ClusterRole'] : ['Role', 'ClusterRole']);
        if (!optString(errs, ref, 'name', 'roleRef.name')) errs.required('roleRef.name');
        if (old && !deepEqual(ref, old.roleRef)) errs.immutable('roleRef', ref);
      }
      optArray(errs, obj, 'subjects', 'subjects')?.forEach((s, i) => {
        const f = `subjects[${i}]`;
        if (!isObject(s)) {
          errs.invalid(f, s, 'must be an object');
          return;
        }
        oneOf(errs, `${f}.kind`, optString(errs, s, 'kind', `${f}.kind`), [
          'ServiceAccount',
          'User',
          'Group',
        ]);
        if (!optString(errs, s, 'name', `${f}.name`)) errs.required(`${f}.name`);
      });
      return errs.list;
    },
  };
}

/** Strategies by storage key; kinds not listed are stored as given (after generic metadata checks). */
export const STRATEGIES: ReadonlyMap<string, Strategy> = new Map<string, Strategy>([
  ['/pods', podStrategy],
  ['/services', serviceStrategy],
  ['/namespaces', namespaceStrategy],
  ['/configmaps', configMapStrategy],
  ['/secrets', secretStrategy],
  ['/serviceaccounts', serviceAccountStrategy],
  ['/nodes', nodeStrategy],
  ['/endpoints', endpointsStrategy],
  ['/events', eventStrategy],
  ['apps/deployments', deploymentStrategy],
  ['apps/replicasets', replicaSetStrategy],
  ['apps/daemonsets', daemonSetStrategy],
  ['discovery.k8s.io/endpointslices', endpointSliceStrategy],
  ['coordination.k8s.io/leases', leaseStrategy],
  ['rbac.authorization.k8s.io/roles', roleStrategy],
  ['rbac.authorization.k8s.io/clusterroles', roleStrategy],
  ['rbac.authorization.k8s.io/rolebindings', bindingStrategy(false)],
  ['rbac.authorization.k8s.io/clusterrolebindings', bindingStrategy(true)],
]);
