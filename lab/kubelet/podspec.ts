/**
 * API Pod → runtime PodInput, as kubelet prepares a pod: environment (service links, envFrom, env with
 * `valueFrom` and `$(VAR)` expansion, also applied to command/args) and volume contents (configMap, secret,
 * downwardAPI, projected with serviceAccountToken via TokenRequest). Everything read from the API is read at
 * the moment of resolution; a missing ConfigMap/Secret/ServiceAccount makes the pod wait (PodWaiting) and the
 * kubelet retries, as kubelet's volume manager and container start do.
 */
import { cpus, totalmem } from 'node:os';
import type { LocalClient } from '../apiserver/client.ts';
import type { JsonObject } from '../apiserver/json.ts';
import type { ContainerInput, EnvVar, PodInput, ProbeInput, VolumeInput } from '../runtime/types.ts';

/** Why a pod cannot start yet (kubelet's words), with the container waiting reason to report. */
export class PodWaiting extends Error {
  override readonly name = 'PodWaiting';
  /** Container waiting reason: volumes → ContainerCreating, env → CreateContainerConfigError. */
  readonly reason: 'ContainerCreating' | 'CreateContainerConfigError';
  /** Event reason: FailedMount or Failed. */
  readonly eventReason: string;

  constructor(reason: PodWaiting['reason'], eventReason: string, message: string) {
    super(message);
    this.reason = reason;
    this.eventReason = eventReason;
  }
}

export interface TokenRequestInput {
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly audiences: readonly string[] | null;
  readonly expirationSeconds: number;
  readonly pod: { readonly name: string; readonly uid: string };
}

export interface ResolveContext {
  readonly client: LocalClient;
  /** TokenRequest (serviceaccounts/token) for a projected token, bound to the pod. */
  requestToken(req: TokenRequestInput): Promise<{ token: string; expiresAt: Date }>;
  readonly nodeName: string;
  readonly nodeIp: string;
}

export interface ResolvedVolumes {
  readonly volumes: VolumeInput[];
  /** `configmaps/<ns>/<name>` and `secrets/<ns>/<name>` the file volumes were built from. */
  readonly deps: Set<string>;
  /** When the earliest projected token should be refreshed (80 % of its lifetime), epoch ms; null: none. */
  readonly refreshAt: number | null;
}

export interface ResolvedPod {
  readonly input: PodInput;
  readonly deps: Set<string>;
  readonly refreshAt: number | null;
}

type Obj = JsonObject;

function obj(v: unknown): Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {};
}
function arr(v: unknown): Obj[] {
  return Array.isArray(v) ? v.filter((x) => x !== null && typeof x === 'object').map((x) => x as Obj) : [];
}
function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}
function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}
function strings(v: unknown): string[] | undefined {
  return Array.isArray(v) ? v.map(String) : undefined;
}

/** kubelet's default projected token lifetime when expirationSeconds is unset. */
const DEFAULT_TOKEN_SECONDS = 3600;
/** Refresh a token when 80 % of its lifetime passed, or after 24 h, whichever is first (kubelet's rule). */
const TOKEN_REFRESH_FRACTION = 0.8;
const TOKEN_MAX_AGE_MS = 24 * 3600 * 1000;
const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;

// ---------------------------------------------------------------------------------------------- env

/** kube's `$(VAR)` expansion: defined references are replaced, `$$` is a literal `$`, others stay as written. */
export function expand(input: string, vars: ReadonlyMap<string, string>): string {
  let out = '';
  for (let i = 0; i < input.length; i++) {
    const ch = input[i];
    if (ch !== '$' || i + 1 >= input.length) {
      out += ch;
      continue;
    }
    const next = input[i + 1];
    if (next === '$') {
      out += '$';
      i++;
    } else if (next === '(') {
      const close = input.indexOf(')', i + 2);
      if (close < 0) {
        out += input.slice(i);
        break;
      }
      const name = input.slice(i + 2, close);
      const v = vars.get(name);
      out += v ?? `$(${name})`;
      i = close;
    } else {
      out += ch;
    }
  }
  return out;
}

export interface ServiceLink {
  readonly namespace: string;
  readonly name: string;
  readonly clusterIP: string;
  readonly ports: readonly { readonly name: string; readonly port: number; readonly protocol: string }[];
}

/** Docker-link style variables kubelet injects for a Service (`FOO_SERVICE_HOST`, `FOO_PORT_80_TCP`, …). */
export function serviceLinkEnv(svc: ServiceLink): [string, string][] {
  const name = svc.name.toUpperCase().replaceAll('-', '_');
  const first = svc.ports[0];
  if (!first) return [];
  const out: [string, string][] = [
    [`${name}_SERVICE_HOST`, svc.clusterIP],
    [`${name}_SERVICE_PORT`, String(first.port)],
  ];
  for (const p of svc.ports) {
    if (p.name)
      out.push([`${name}_SERVICE_PORT_${p.name.toUpperCase().replaceAll('-', '_')}`, String(p.port)]);
  }
  out.push([`${name}_PORT`, `${first.protocol.toLowerCase()}://${svc.clusterIP}:${first.port}`]);
  for (const p of svc.ports) {
    const proto = p.protocol.toLowerCase();
    const prefix = `${name}_PORT_${p.port}_${p.protocol.toUpperCase()}`;
    out.push(
      [prefix, `${proto}://${svc.clusterIP}:${p.port}`],
      [`${prefix}_PROTO`, proto],
      [`${prefix}_PORT`, String(p.port)],
      [`${prefix}_ADDR`, svc.clusterIP],
    );
  }
  return out;
}

function serviceLinks(client: LocalClient, namespace: string, enableLinks: boolean): ServiceLink[] {
  const out: ServiceLink[] = [];
  const add = (s: Obj): void => {
    const spec = obj(s.spec);
    const ip = str(spec.clusterIP);
    if (!ip || ip === 'None') return;
    const md = obj(s.metadata);
    out.push({
      namespace: str(md.namespace) ?? '',
      name: str(md.name) ?? '',
      clusterIP: ip,
      ports: arr(spec.ports).map((p) => ({
        name: str(p.name) ?? '',
        port: num(p.port) ?? 0,
        protocol: str(p.protocol) ?? 'TCP',
      })),
    });
  };
  // The master service is in every pod's environment; the others only in its own namespace (enableServiceLinks).
  const master = client.get('v1/services', 'default', 'kubernetes');
  if (master) add(master);
  if (enableLinks) {
    for (const s of client.list('v1/services', namespace)) {
      if (namespace === 'default' && str(obj(s.metadata).name) === 'kubernetes') continue;
      add(s);
    }
  }
  return out;
}

function labelsText(m: Obj): string {
  return Object.keys(m)
    .sort()
    .map((k) => `${k}=${JSON.stringify(String(m[k]))}`)
    .join('\n');
}

/** A `fieldRef` of the pod (downward API); null when the pod IP is wanted (only known after the sandbox). */
function fieldValue(pod: Obj, path: string, nodeIp: string, hostNetwork: boolean): string | null {
  const md = obj(pod.metadata);
  const spec = obj(pod.spec);
  const sub = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(path);
  if (sub) return String(obj(md[sub[1] as string])[sub[2] as string] ?? '');
  switch (path) {
    case 'metadata.name':
      return str(md.name) ?? '';
    case 'metadata.namespace':
      return str(md.namespace) ?? '';
    case 'metadata.uid':
      return str(md.uid) ?? '';
    case 'metadata.labels':
      return labelsText(obj(md.labels));
    case 'metadata.annotations':
      return labelsText(obj(md.annotations));
    case 'spec.nodeName':
      return str(spec.nodeName) ?? '';
    case 'spec.serviceAccountName':
      return str(spec.serviceAccountName) ?? '';
    case 'status.hostIP':
    case 'status.hostIPs':
      return nodeIp;
    case 'status.podIP':
    case 'status.podIPs':
      return hostNetwork ? nodeIp : null;
    default:
      throw new PodWaiting(
        'CreateContainerConfigError',
        'Failed',
        `unsupported fieldRef fieldPath ${JSON.stringify(path)}`,
      );
  }
}

/** Parses a Kubernetes quantity to a number (cores, bytes). */
export function parseQuantity(q: string): number {
  const m = /^([0-9.]+)([a-zA-Z]*)$/.exec(q.trim());
  if (!m) return Number.NaN;
  const n = Number(m[1]);
  const suffixes: Record<string, number> = {
    '': 1,
    m: 1e-3,
    k: 1e3,
    M: 1e6,
    G: 1e9,
    T: 1e12,
    Ki: 1024,
    Mi: 1024 ** 2,
    Gi: 1024 ** 3,
    Ti: 1024 ** 4,
  };
  const f = suffixes[m[2] ?? ''];
  return f === undefined ? Number.NaN : n * f;
}

/** `resourceFieldRef`: the container's limit/request, or the node's capacity for an unset limit (as kubelet). */
function resourceValue(container: Obj, ref: Obj): string {
  const resource = str(ref.resource) ?? '';
  const [kind, name] = resource.split('.') as [string, string];
  const res = obj(obj(container.resources)[kind]);
  const set = str(res[name]) ?? (typeof res[name] === 'number' ? String(res[name]) : undefined);
  let value: number;
  if (set !== undefined) value = parseQuantity(set);
  else if (kind === 'limits') value = name === 'cpu' ? cpus().length : totalmem();
  else value = 0;
  const divisor = parseQuantity(String(ref.divisor ?? '1')) || 1;
  return String(Math.ceil(value / divisor));
}

function decodeData(v: unknown): Buffer {
  return Buffer.from(typeof v === 'string' ? v : '', 'base64');
}

function getConfigMap(ctx: ResolveContext, ns: string, name: string): Obj | null {
  return ctx.client.get('v1/configmaps', ns, name);
}
function getSecret(ctx: ResolveContext, ns: string, name: string): Obj | null {
  return ctx.client.get('v1/secrets', ns, name);
}

function envFromSources(ctx: ResolveContext, pod: Obj, c: Obj, vars: Map<string, string>): void {
  const ns = str(obj(pod.metadata).namespace) ?? '';
  for (const src of arr(c.envFrom)) {
    const prefix = str(src.prefix) ?? '';
    const cmRef = src.configMapRef ? obj(src.configMapRef) : null;
    const secRef = src.secretRef ? obj(src.secretRef) : null;
    const ref = cmRef ?? secRef;
    if (!ref) continue;
    const name = str(ref.name) ?? '';
    const o = cmRef ? getConfigMap(ctx, ns, name) : getSecret(ctx, ns, name);
    if (!o) {
      if (ref.optional === true) continue;
      throw new PodWaiting(
        'CreateContainerConfigError',
        'Failed',
        `Error: ${cmRef ? 'configmap' : 'secret'} "${name}" not found`,
      );
    }
    const data = obj(o.data);
    for (const [k, v] of Object.entries(data)) {
      const key = prefix + k;
      if (!ENV_NAME.test(key)) continue;
      vars.set(key, cmRef ? String(v) : decodeData(v).toString('utf8'));
    }
  }
}

function containerEnv(
  ctx: ResolveContext,
  pod: Obj,
  c: Obj,
  links: readonly ServiceLink[],
): { env: EnvVar[]; vars: Map<string, string> } {
  const ns = str(obj(pod.metadata).namespace) ?? '';
  const hostNetwork = obj(pod.spec).hostNetwork === true;
  const vars = new Map<string, string>();
  for (const l of links) for (const [k, v] of serviceLinkEnv(l)) vars.set(k, v);
  envFromSources(ctx, pod, c, vars);
  const podIpVars = new Map<string, EnvVar['fieldPath']>();
  for (const e of arr(c.env)) {
    const name = str(e.name) ?? '';
    if (!name) continue;
    podIpVars.delete(name);
    if (e.valueFrom === undefined) {
      vars.set(name, expand(str(e.value) ?? '', vars));
      continue;
    }
    const from = obj(e.valueFrom);
    if (from.fieldRef) {
      const path = str(obj(from.fieldRef).fieldPath) ?? '';
      const v = fieldValue(pod, path, ctx.nodeIp, hostNetwork);
      if (v === null) {
        podIpVars.set(name, path === 'status.podIPs' ? 'status.podIPs' : 'status.podIP');
        vars.set(name, '');
      } else vars.set(name, v);
    } else if (from.resourceFieldRef) {
      vars.set(name, resourceValue(c, obj(from.resourceFieldRef)));
    } else if (from.configMapKeyRef || from.secretKeyRef) {
      const isCm = !!from.configMapKeyRef;
      const ref = obj(isCm ? from.configMapKeyRef : from.secretKeyRef);
      const refName = str(ref.name) ?? '';
      const key = str(ref.key) ?? '';
      const o = isCm ? getConfigMap(ctx, ns, refName) : getSecret(ctx, ns, refName);
      const kind = isCm ? 'configmap' : 'secret';
      if (!o) {
        if (ref.optional === true) continue;
        throw new PodWaiting('CreateContainerConfigError', 'Failed', `Error: ${kind} "${refName}" not found`);
      }
      const data = obj(o.data);
      if (!(key in data) && !(isCm && key in obj(o.binaryData))) {
        if (ref.optional === true) continue;
        throw new PodWaiting(
          'CreateContainerConfigError',
          'Failed',
          `Error: couldn't find key ${key} in ${isCm ? 'ConfigMap' : 'Secret'} ${ns}/${refName}`,
        );
      }
      vars.set(
        name,
        isCm
          ? key in data
            ? String(data[key])
            : decodeData(obj(o.binaryData)[key]).toString('utf8')
          : decodeData(data[key]).toString('utf8'),
      );
    }
  }
  const env: EnvVar[] = [];
  for (const [name, value] of vars) {
    const fp = podIpVars.get(name);
    env.push(fp ? { name, value, fieldPath: fp } : { name, value });
  }
  return { env, vars };
}

// ---------------------------------------------------------------------------------------------- volumes

function keyedItems(
  data: Readonly<Record<string, Buffer | string>>,
  items: Obj[],
  optional: boolean,
  what: string,
): Record<string, string | Uint8Array> {
  const out: Record<string, string | Uint8Array> = {};
  if (items.length === 0) {
    for (const [k, v] of Object.entries(data)) out[k] = v;
    return out;
  }
  for (const it of items) {
    const key = str(it.key) ?? '';
    const path = str(it.path) ?? key;
    const v = data[key];
    if (v === undefined) {
      if (optional) continue;
      throw new PodWaiting('ContainerCreating', 'FailedMount', `${what} references non-existent key ${key}`);
    }
    out[path] = v;
  }
  return out;
}

function configMapData(o: Obj): Record<string, Buffer | string> {
  const out: Record<string, Buffer | string> = {};
  for (const [k, v] of Object.entries(obj(o.data))) out[k] = String(v);
  for (const [k, v] of Object.entries(obj(o.binaryData))) out[k] = decodeData(v);
  return out;
}

function secretData(o: Obj): Record<string, Buffer | string> {
  const out: Record<string, Buffer | string> = {};
  for (const [k, v] of Object.entries(obj(o.data))) out[k] = decodeData(v);
  return out;
}

function downwardItems(
  pod: Obj,
  items: Obj[],
  ctx: ResolveContext,
  containers: Obj[],
): Record<string, string> {
  const out: Record<string, string> = {};
  const hostNetwork = obj(pod.spec).hostNetwork === true;
  for (const it of items) {
    const path = str(it.path) ?? '';
    if (it.fieldRef) {
      const v = fieldValue(pod, str(obj(it.fieldRef).fieldPath) ?? '', ctx.nodeIp, hostNetwork);
      out[path] = v ?? '';
    } else if (it.resourceFieldRef) {
      const ref = obj(it.resourceFieldRef);
      const c = containers.find((x) => x.name === ref.containerName) ?? containers[0] ?? {};
      out[path] = resourceValue(c, ref);
    }
  }
  return out;
}

interface FilesBuild {
  items: Record<string, string | Uint8Array>;
  deps: string[];
  refreshAt: number | null;
}

async function projectedSources(
  ctx: ResolveContext,
  pod: Obj,
  sources: Obj[],
  volName: string,
): Promise<FilesBuild> {
  const md = obj(pod.metadata);
  const ns = str(md.namespace) ?? '';
  const out: FilesBuild = { items: {}, deps: [], refreshAt: null };
  const containers = arr(obj(pod.spec).containers);
  for (const s of sources) {
    if (s.serviceAccountToken) {
      const t = obj(s.serviceAccountToken);
      const sa = str(obj(pod.spec).serviceAccountName) ?? 'default';
      const seconds = num(t.expirationSeconds) ?? DEFAULT_TOKEN_SECONDS;
      const aud = str(t.audience);
      let token: { token: string; expiresAt: Date };
      try {
        token = await ctx.requestToken({
          namespace: ns,
          serviceAccount: sa,
          audiences: aud ? [aud] : null,
          expirationSeconds: seconds,
          pod: { name: str(md.name) ?? '', uid: str(md.uid) ?? '' },
        });
      } catch (err) {
        throw new PodWaiting(
          'ContainerCreating',
          'FailedMount',
          `MountVolume.SetUp failed for volume "${volName}" : failed to fetch token: ${(err as Error).message}`,
        );
      }
      out.items[str(t.path) ?? 'token'] = token.token;
      const lifetime = token.expiresAt.getTime() - Date.now();
      const at = Date.now() + Math.min(lifetime * TOKEN_REFRESH_FRACTION, TOKEN_MAX_AGE_MS);
      out.refreshAt = out.refreshAt === null ? at : Math.min(out.refreshAt, at);
    } else if (s.configMap || s.secret) {
      const isCm = !!s.configMap;
      const ref = obj(isCm ? s.configMap : s.secret);
      const name = str(ref.name) ?? '';
      out.deps.push(`${isCm ? 'configmaps' : 'secrets'}/${ns}/${name}`);
      const o = isCm ? getConfigMap(ctx, ns, name) : getSecret(ctx, ns, name);
      if (!o) {
        if (ref.optional === true) continue;
        throw new PodWaiting(
          'ContainerCreating',
          'FailedMount',
          `MountVolume.SetUp failed for volume "${volName}" : ${isCm ? 'configmap' : 'secret'} "${name}" not found`,
        );
      }
      Object.assign(
        out.items,
        keyedItems(
          isCm ? configMapData(o) : secretData(o),
          arr(ref.items),
          ref.optional === true,
          `${isCm ? 'configmap' : 'secret'} "${name}"`,
        ),
      );
    } else if (s.downwardAPI) {
      Object.assign(out.items, downwardItems(pod, arr(obj(s.downwardAPI).items), ctx, containers));
    } else {
      throw new PodWaiting(
        'ContainerCreating',
        'FailedMount',
        `volume "${volName}": projected source ${Object.keys(s).join(',')} is not supported in the lab`,
      );
    }
  }
  return out;
}

/**
 * The pod's volumes with file contents resolved. `only` limits the work to these volume names (a refresh);
 * other volumes are then left out of the result.
 */
export async function resolveVolumes(
  ctx: ResolveContext,
  pod: Obj,
  only?: ReadonlySet<string>,
): Promise<ResolvedVolumes> {
  const ns = str(obj(pod.metadata).namespace) ?? '';
  const volumes: VolumeInput[] = [];
  const deps = new Set<string>();
  let refreshAt: number | null = null;
  const containers = arr(obj(pod.spec).containers);
  for (const v of arr(obj(pod.spec).volumes)) {
    const name = str(v.name) ?? '';
    if (only && !only.has(name)) continue;
    if (v.hostPath) {
      const hp = obj(v.hostPath);
      volumes.push({
        name,
        hostPath: {
          path: str(hp.path) ?? '',
          ...(str(hp.type) !== undefined ? { type: str(hp.type) as never } : {}),
        },
      });
    } else if (v.emptyDir) {
      const ed = obj(v.emptyDir);
      volumes.push({
        name,
        emptyDir: {
          ...(str(ed.medium) ? { medium: str(ed.medium) as string } : {}),
          ...(str(ed.sizeLimit) ? { sizeLimit: str(ed.sizeLimit) as string } : {}),
        },
      });
    } else if (v.configMap || v.secret) {
      const isCm = !!v.configMap;
      const ref = obj(isCm ? v.configMap : v.secret);
      const refName = str(isCm ? ref.name : ref.secretName) ?? '';
      deps.add(`${isCm ? 'configmaps' : 'secrets'}/${ns}/${refName}`);
      const o = isCm ? getConfigMap(ctx, ns, refName) : getSecret(ctx, ns, refName);
      let items: Record<string, string | Uint8Array> = {};
      if (!o) {
        if (ref.optional !== true)
          throw new PodWaiting(
            'ContainerCreating',
            'FailedMount',
            `MountVolume.SetUp failed for volume "${name}" : ${isCm ? 'configmap' : 'secret'} "${refName}" not found`,
          );
      } else {
        items = keyedItems(
          isCm ? configMapData(o) : secretData(o),
          arr(ref.items),
          ref.optional === true,
          `${isCm ? 'configmap' : 'secret'} "${refName}"`,
        );
      }
      const mode = num(ref.defaultMode);
      volumes.push({
        name,
        files: {
          kind: isCm ? 'configMap' : 'secret',
          items,
          ...(mode !== undefined ? { defaultMode: mode } : {}),
        },
      });
    } else if (v.downwardAPI) {
      const d = obj(v.downwardAPI);
      const mode = num(d.defaultMode);
      volumes.push({
        name,
        files: {
          kind: 'downwardAPI',
          items: downwardItems(pod, arr(d.items), ctx, containers),
          ...(mode !== undefined ? { defaultMode: mode } : {}),
        },
      });
    } else if (v.projected) {
      const p = obj(v.projected);
      const built = await projectedSources(ctx, pod, arr(p.sources), name);
      for (const d of built.deps) deps.add(d);
      if (built.refreshAt !== null)
        refreshAt = refreshAt === null ? built.refreshAt : Math.min(refreshAt, built.refreshAt);
      const mode = num(p.defaultMode);
      volumes.push({
        name,
        files: {
          kind: 'projected',
          items: built.items,
          ...(mode !== undefined ? { defaultMode: mode } : {}),
        },
      });
    } else {
      const kind = Object.keys(v).find((k) => k !== 'name') ?? 'unknown';
      throw new PodWaiting(
        'ContainerCreating',
        'FailedMount',
        `volume "${name}": volume type ${kind} is not supported in the lab (hostPath, emptyDir, configMap, secret, downwardAPI, projected are)`,
      );
    }
  }
  return { volumes, deps, refreshAt };
}

// ---------------------------------------------------------------------------------------------- containers

function probe(v: unknown): ProbeInput | undefined {
  return v && typeof v === 'object' ? (v as ProbeInput) : undefined;
}

function container(ctx: ResolveContext, pod: Obj, c: Obj, links: readonly ServiceLink[]): ContainerInput {
  const { env, vars } = containerEnv(ctx, pod, c, links);
  const command = strings(c.command)?.map((a) => expand(a, vars));
  const args = strings(c.args)?.map((a) => expand(a, vars));
  const ports = arr(c.ports).map((p) => ({
    containerPort: num(p.containerPort) ?? 0,
    ...(str(p.name) ? { name: str(p.name) as string } : {}),
    ...(str(p.protocol) ? { protocol: str(p.protocol) as 'TCP' } : {}),
    ...(num(p.hostPort) ? { hostPort: num(p.hostPort) as number } : {}),
    ...(str(p.hostIP) ? { hostIP: str(p.hostIP) as string } : {}),
  }));
  const mounts = arr(c.volumeMounts).map((m) => ({
    name: str(m.name) ?? '',
    mountPath: str(m.mountPath) ?? '',
    ...(m.readOnly === true ? { readOnly: true } : {}),
    ...(str(m.subPath) ? { subPath: expand(str(m.subPath) as string, vars) } : {}),
  }));
  const readiness = probe(c.readinessProbe);
  const liveness = probe(c.livenessProbe);
  const startup = probe(c.startupProbe);
  return {
    name: str(c.name) ?? '',
    image: str(c.image) ?? '',
    ...(command?.length ? { command } : {}),
    ...(args ? { args } : {}),
    ...(str(c.workingDir) ? { workingDir: str(c.workingDir) as string } : {}),
    env,
    ports,
    volumeMounts: mounts,
    ...(readiness ? { readinessProbe: readiness } : {}),
    ...(liveness ? { livenessProbe: liveness } : {}),
    ...(startup ? { startupProbe: startup } : {}),
    ...(c.securityContext ? { securityContext: obj(c.securityContext) } : {}),
  };
}

/** Everything the runtime needs to run this pod; throws PodWaiting when something it needs is not there yet. */
export async function resolvePod(ctx: ResolveContext, pod: Obj): Promise<ResolvedPod> {
  const md = obj(pod.metadata);
  const spec = obj(pod.spec);
  const ns = str(md.namespace) ?? '';
  const links = serviceLinks(ctx.client, ns, spec.enableServiceLinks !== false);
  const initContainers = arr(spec.initContainers).map((c) => container(ctx, pod, c, links));
  const containers = arr(spec.containers).map((c) => container(ctx, pod, c, links));
  const vols = await resolveVolumes(ctx, pod);
  const dnsConfig = spec.dnsConfig ? (obj(spec.dnsConfig) as PodInput['dnsConfig']) : undefined;
  const grace = num(spec.terminationGracePeriodSeconds);
  const input: PodInput = {
    uid: str(md.uid) ?? '',
    namespace: ns,
    name: str(md.name) ?? '',
    hostNetwork: spec.hostNetwork === true,
    ...(str(spec.restartPolicy) ? { restartPolicy: str(spec.restartPolicy) as 'Always' } : {}),
    ...(grace !== undefined ? { terminationGracePeriodSeconds: grace } : {}),
    ...(str(spec.dnsPolicy) ? { dnsPolicy: str(spec.dnsPolicy) as 'ClusterFirst' } : {}),
    ...(dnsConfig ? { dnsConfig } : {}),
    ...(str(spec.hostname) ? { hostname: str(spec.hostname) as string } : {}),
    ...(str(spec.subdomain) ? { subdomain: str(spec.subdomain) as string } : {}),
    ...(Array.isArray(spec.hostAliases) ? { hostAliases: spec.hostAliases as never } : {}),
    ...(initContainers.length ? { initContainers } : {}),
    containers,
    volumes: vols.volumes,
  };
  return { input, deps: vols.deps, refreshAt: vols.refreshAt };
}

/** Pod QoS class from requests/limits, as the API server's status shows it. */
export function qosClass(pod: Obj): 'Guaranteed' | 'Burstable' | 'BestEffort' {
  const cs = [...arr(obj(pod.spec).containers), ...arr(obj(pod.spec).initContainers)];
  let any = false;
  let guaranteed = cs.length > 0;
  for (const c of cs) {
    const r = obj(c.resources);
    const req = obj(r.requests);
    const lim = obj(r.limits);
    if (Object.keys(req).length || Object.keys(lim).length) any = true;
    for (const k of ['cpu', 'memory']) {
      if (lim[k] === undefined) guaranteed = false;
      else if (req[k] !== undefined && String(req[k]) !== String(lim[k])) guaranteed = false;
    }
  }
  if (!any) return 'BestEffort';
  return guaranteed ? 'Guaranteed' : 'Burstable';
}
