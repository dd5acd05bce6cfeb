/**
 * Decoding of `application/vnd.kubernetes.protobuf` request bodies for the kinds kubectl's typed clients
 * send that way (`kubectl create namespace|configmap|secret|serviceaccount|token|role|rolebinding|
 * clusterrole|clusterrolebinding|deployment|service`, `kubectl auth can-i`). The envelope is the 4-byte
 * magic `k8s\0` + runtime.Unknown{typeMeta, raw}; `raw` is the object in the field numbering of
 * k8s.io/api's generated.proto. Responses are always JSON (kubectl accepts it). Other kinds get 415.
 *
 * Go's gogo-protobuf emits non-pointer fields even when empty, so zero values of non-pointer scalars are
 * dropped (what `omitempty` does in JSON); fields marked `ptr` keep them.
 */
import { isObject, type JsonObject } from './json.ts';
import { ApiError, badRequest, unsupportedMediaType } from './status.ts';

type Scalar = 'string' | 'bytes' | 'bool' | 'int32' | 'int64' | 'time' | 'intstr' | 'quantity';

interface Field {
  readonly name: string;
  readonly type: Scalar | (() => Msg) | { readonly map: Scalar | (() => Msg) };
  readonly repeated?: boolean;
  /** A pointer in Go: present means set, even when zero. */
  readonly ptr?: boolean;
}

type Msg = Readonly<Record<number, Field>>;

const f = (name: string, type: Field['type'], extra: Partial<Field> = {}): Field => ({
  name,
  type,
  ...extra,
});
const rep = (name: string, type: Field['type']): Field => ({ name, type, repeated: true });

const OwnerReference: Msg = {
  1: f('kind', 'string'),
  3: f('name', 'string'),
  4: f('uid', 'string'),
  5: f('apiVersion', 'string'),
  6: f('controller', 'bool', { ptr: true }),
  7: f('blockOwnerDeletion', 'bool', { ptr: true }),
};
const ObjectMeta: Msg = {
  1: f('name', 'string'),
  2: f('generateName', 'string'),
  3: f('namespace', 'string'),
  5: f('uid', 'string'),
  6: f('resourceVersion', 'string'),
  7: f('generation', 'int64'),
  8: f('creationTimestamp', 'time'),
  11: f('labels', { map: 'string' }),
  12: f('annotations', { map: 'string' }),
  13: rep('ownerReferences', () => OwnerReference),
  14: rep('finalizers', 'string'),
};
const meta = f('metadata', () => ObjectMeta);
const LabelSelectorRequirement: Msg = {
  1: f('key', 'string'),
  2: f('operator', 'string'),
  3: rep('values', 'string'),
};
const LabelSelector: Msg = {
  1: f('matchLabels', { map: 'string' }),
  2: rep('matchExpressions', () => LabelSelectorRequirement),
};
const LocalObjectReference: Msg = { 1: f('name', 'string') };
const ObjectReference: Msg = {
  1: f('kind', 'string'),
  2: f('namespace', 'string'),
  3: f('name', 'string'),
  4: f('uid', 'string'),
  5: f('apiVersion', 'string'),
};
const ContainerPort: Msg = {
  1: f('name', 'string'),
  2: f('hostPort', 'int32'),
  3: f('containerPort', 'int32'),
  4: f('protocol', 'string'),
  5: f('hostIP', 'string'),
};
const EnvVar: Msg = { 1: f('name', 'string'), 2: f('value', 'string') };
const ResourceRequirements: Msg = {
  1: f('limits', { map: 'quantity' }),
  2: f('requests', { map: 'quantity' }),
};
const Container: Msg = {
  1: f('name', 'string'),
  2: f('image', 'string'),
  3: rep('command', 'string'),
  4: rep('args', 'string'),
  5: f('workingDir', 'string'),
  6: rep('ports', () => ContainerPort),
  7: rep('env', () => EnvVar),
  8: f('resources', () => ResourceRequirements),
  13: f('terminationMessagePath', 'string'),
  14: f('imagePullPolicy', 'string'),
  20: f('terminationMessagePolicy', 'string'),
};
const PodSpec: Msg = {
  2: rep('containers', () => Container),
  3: f('restartPolicy', 'string'),
  4: f('terminationGracePeriodSeconds', 'int64', { ptr: true }),
  6: f('dnsPolicy', 'string'),
  7: f('nodeSelector', { map: 'string' }),
  8: f('serviceAccountName', 'string'),
  10: f('nodeName', 'string'),
  11: f('hostNetwork', 'bool'),
  19: f('schedulerName', 'string'),
  20: rep('initContainers', () => Container),
};
const PodTemplateSpec: Msg = { 1: meta, 2: f('spec', () => PodSpec) };
const RollingUpdateDeployment: Msg = {
  1: f('maxUnavailable', 'intstr', { ptr: true }),
  2: f('maxSurge', 'intstr', { ptr: true }),
};
const DeploymentStrategy: Msg = {
  1: f('type', 'string'),
  2: f('rollingUpdate', () => RollingUpdateDeployment),
};
const DeploymentSpec: Msg = {
  1: f('replicas', 'int32', { ptr: true }),
  2: f('selector', () => LabelSelector),
  3: f('template', () => PodTemplateSpec),
  4: f('strategy', () => DeploymentStrategy),
  5: f('minReadySeconds', 'int32'),
  6: f('revisionHistoryLimit', 'int32', { ptr: true }),
  7: f('paused', 'bool'),
  9: f('progressDeadlineSeconds', 'int32', { ptr: true }),
};
const ServicePort: Msg = {
  1: f('name', 'string'),
  2: f('protocol', 'string'),
  3: f('port', 'int32'),
  4: f('targetPort', 'intstr'),
  5: f('nodePort', 'int32'),
  6: f('appProtocol', 'string', { ptr: true }),
};
const ServiceSpec: Msg = {
  1: rep('ports', () => ServicePort),
  2: f('selector', { map: 'string' }),
  3: f('clusterIP', 'string'),
  4: f('type', 'string'),
  5: rep('externalIPs', 'string'),
  7: f('sessionAffinity', 'string'),
  10: f('externalName', 'string'),
};
const PolicyRule: Msg = {
  1: rep('verbs', 'string'),
  2: rep('apiGroups', 'string'),
  3: rep('resources', 'string'),
  4: rep('resourceNames', 'string'),
  5: rep('nonResourceURLs', 'string'),
};
const AggregationRule: Msg = { 1: rep('clusterRoleSelectors', () => LabelSelector) };
const Subject: Msg = {
  1: f('kind', 'string'),
  2: f('apiGroup', 'string'),
  3: f('name', 'string'),
  4: f('namespace', 'string'),
};
const RoleRef: Msg = { 1: f('apiGroup', 'string'), 2: f('kind', 'string'), 3: f('name', 'string') };
const BoundObjectReference: Msg = {
  1: f('kind', 'string'),
  2: f('apiVersion', 'string'),
  3: f('name', 'string'),
  4: f('uid', 'string'),
};
const TokenRequestSpec: Msg = {
  1: rep('audiences', 'string'),
  3: f('boundObjectRef', () => BoundObjectReference),
  4: f('expirationSeconds', 'int64', { ptr: true }),
};
const ResourceAttributes: Msg = {
  1: f('namespace', 'string'),
  2: f('verb', 'string'),
  3: f('group', 'string'),
  4: f('version', 'string'),
  5: f('resource', 'string'),
  6: f('subresource', 'string'),
  7: f('name', 'string'),
};
const NonResourceAttributes: Msg = { 1: f('path', 'string'), 2: f('verb', 'string') };
const SelfSubjectAccessReviewSpec: Msg = {
  1: f('resourceAttributes', () => ResourceAttributes),
  2: f('nonResourceAttributes', () => NonResourceAttributes),
};

/** Top-level kinds by `apiVersion/kind`. */
const KINDS: Readonly<Record<string, Msg>> = {
  'v1/Namespace': { 1: meta, 2: f('spec', () => ({ 1: rep('finalizers', 'string') })) },
  'v1/ConfigMap': {
    1: meta,
    2: f('data', { map: 'string' }),
    3: f('binaryData', { map: 'bytes' }),
    4: f('immutable', 'bool', { ptr: true }),
  },
  'v1/Secret': {
    1: meta,
    2: f('data', { map: 'bytes' }),
    3: f('type', 'string'),
    4: f('stringData', { map: 'string' }),
    5: f('immutable', 'bool', { ptr: true }),
  },
  'v1/ServiceAccount': {
    1: meta,
    2: rep('secrets', () => ObjectReference),
    3: rep('imagePullSecrets', () => LocalObjectReference),
    4: f('automountServiceAccountToken', 'bool', { ptr: true }),
  },
  'v1/Service': { 1: meta, 2: f('spec', () => ServiceSpec) },
  'apps/v1/Deployment': { 1: meta, 2: f('spec', () => DeploymentSpec) },
  'authentication.k8s.io/v1/TokenRequest': { 1: meta, 2: f('spec', () => TokenRequestSpec) },
  'authentication.k8s.io/v1/SelfSubjectReview': { 1: meta },
  'authorization.k8s.io/v1/SelfSubjectAccessReview': {
    1: meta,
    2: f('spec', () => SelfSubjectAccessReviewSpec),
  },
  'rbac.authorization.k8s.io/v1/Role': { 1: meta, 2: rep('rules', () => PolicyRule) },
  'rbac.authorization.k8s.io/v1/ClusterRole': {
    1: meta,
    2: rep('rules', () => PolicyRule),
    3: f('aggregationRule', () => AggregationRule),
  },
  'rbac.authorization.k8s.io/v1/RoleBinding': {
    1: meta,
    2: rep('subjects', () => Subject),
    3: f('roleRef', () => RoleRef),
  },
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': {
    1: meta,
    2: rep('subjects', () => Subject),
    3: f('roleRef', () => RoleRef),
  },
};

export const PROTOBUF = 'application/vnd.kubernetes.protobuf';
const MAGIC = Buffer.from([0x6b, 0x38, 0x73, 0x00]);

// ---- wire format ---------------------------------------------------------------------------------------------

class Reader {
  readonly buf: Buffer;
  pos: number;
  readonly end: number;

  constructor(buf: Buffer, start = 0, end = buf.length) {
    this.buf = buf;
    this.pos = start;
    this.end = end;
  }

  varint(): bigint {
    let result = 0n;
    let shift = 0n;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw badRequest('protobuf: truncated varint');
      const b = this.buf[this.pos++] as number;
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
      shift += 7n;
    }
    throw badRequest('protobuf: varint too long');
  }

  bytes(): Buffer {
    const len = Number(this.varint());
    if (len < 0 || this.pos + len > this.end)
      throw badRequest('protobuf: length-delimited field overruns the message');
    const out = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }

  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 1) this.pos += 8;
    else if (wire === 2) this.bytes();
    else if (wire === 5) this.pos += 4;
    else throw badRequest(`protobuf: unsupported wire type ${wire}`);
    if (this.pos > this.end) throw badRequest('protobuf: truncated field');
  }
}

function toInt(v: bigint, bits: 32 | 64): number {
  const signed = bits === 32 ? BigInt.asIntN(32, v) : BigInt.asIntN(64, v);
  return Number(signed);
}

function decodeScalar(t: Scalar, r: Reader): unknown {
  switch (t) {
    case 'string':
      return r.bytes().toString('utf8');
    case 'bytes':
      return r.bytes().toString('base64');
    case 'bool':
      return r.varint() !== 0n;
    case 'int32':
      return toInt(r.varint(), 32);
    case 'int64':
      return toInt(r.varint(), 64);
    case 'quantity': {
      const m = decodeMessage(r.bytes(), { 1: f('string', 'string') });
      return typeof m.string === 'string' ? m.string : '0';
    }
    case 'time': {
      const m = decodeMessage(r.bytes(), { 1: f('seconds', 'int64'), 2: f('nanos', 'int32') });
      const s = typeof m.seconds === 'number' ? m.seconds : 0;
      return s === 0 ? undefined : new Date(s * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
    }
    case 'intstr': {
      const m = decodeMessage(r.bytes(), {
        1: f('type', 'int64'),
        2: f('intVal', 'int32'),
        3: f('strVal', 'string'),
      });
      return m.type === 1 ? (m.strVal ?? '') : (m.intVal ?? 0);
    }
  }
  return undefined;
}

function isZero(v: unknown): boolean {
  return (
    v === '' || v === 0 || v === false || v === undefined || (isObject(v) && Object.keys(v).length === 0)
  );
}

function decodeMessage(buf: Buffer, msg: Msg): JsonObject {
  const r = new Reader(buf);
  const out: JsonObject = {};
  while (r.pos < r.end) {
    const key = Number(r.varint());
    const num = key >>> 3;
    const wire = key & 7;
    const field = msg[num];
    if (!field) {
      r.skip(wire);
      continue;
    }
    let value: unknown;
    const t = field.type;
    if (typeof t === 'function') {
      if (wire !== 2) throw badRequest(`protobuf: field ${field.name} must be length-delimited`);
      value = decodeMessage(r.bytes(), t());
    } else if (typeof t === 'object') {
      if (wire !== 2) throw badRequest(`protobuf: map field ${field.name} must be length-delimited`);
      const entry = r.bytes();
      const er = new Reader(entry);
      let k = '';
      let v: unknown;
      while (er.pos < er.end) {
        const ek = Number(er.varint());
        if (ek >>> 3 === 1 && (ek & 7) === 2) k = er.bytes().toString('utf8');
        else if (ek >>> 3 === 2)
          v = typeof t.map === 'function' ? decodeMessage(er.bytes(), t.map()) : decodeScalar(t.map, er);
        else er.skip(ek & 7);
      }
      const m = (isObject(out[field.name]) ? out[field.name] : {}) as JsonObject;
      m[k] = v ?? (t.map === 'string' || t.map === 'bytes' ? '' : {});
      out[field.name] = m;
      continue;
    } else {
      if (
        field.repeated &&
        wire === 2 &&
        t !== 'string' &&
        t !== 'bytes' &&
        t !== 'time' &&
        t !== 'intstr' &&
        t !== 'quantity'
      ) {
        // Packed repeated scalars.
        const sub = new Reader(r.bytes());
        const list = (Array.isArray(out[field.name]) ? out[field.name] : []) as unknown[];
        while (sub.pos < sub.end) list.push(decodeScalar(t, sub));
        out[field.name] = list;
        continue;
      }
      value = decodeScalar(t, r);
    }
    if (field.repeated) {
      const list = (Array.isArray(out[field.name]) ? out[field.name] : []) as unknown[];
      list.push(value);
      out[field.name] = list;
    } else if (field.ptr || !isZero(value)) {
      out[field.name] = value;
    } else {
      delete out[field.name];
    }
  }
  return out;
}

/** Decodes a protobuf request body into the JSON object kube-apiserver would have seen. */
export function decodeProtobufBody(buf: Buffer): JsonObject {
  if (buf.length < MAGIC.length || !buf.subarray(0, MAGIC.length).equals(MAGIC))
    throw badRequest('protobuf: missing the k8s\\0 envelope');
  let unknown: JsonObject;
  try {
    unknown = decodeMessage(buf.subarray(MAGIC.length), {
      1: f('typeMeta', () => ({ 1: f('apiVersion', 'string'), 2: f('kind', 'string') })),
      2: f('raw', 'bytes'),
      3: f('contentEncoding', 'string'),
    });
  } catch (err) {
    if (err instanceof ApiError) throw err;
    throw badRequest(`protobuf: ${(err as Error).message}`);
  }
  const tm = isObject(unknown.typeMeta) ? unknown.typeMeta : {};
  const apiVersion = typeof tm.apiVersion === 'string' ? tm.apiVersion : '';
  const kind = typeof tm.kind === 'string' ? tm.kind : '';
  const schema = KINDS[`${apiVersion}/${kind}`];
  if (!schema) {
    throw unsupportedMediaType(`${PROTOBUF} (${apiVersion}/${kind})`, [
      'application/json',
      'application/yaml',
      `${PROTOBUF} for ${Object.keys(KINDS).join(', ')}`,
    ]);
  }
  if (unknown.contentEncoding)
    throw badRequest(`protobuf: content encoding ${String(unknown.contentEncoding)} is not supported`);
  const raw = Buffer.from(typeof unknown.raw === 'string' ? unknown.raw : '', 'base64');
  return { apiVersion, kind, ...decodeMessage(raw, schema) };
}
