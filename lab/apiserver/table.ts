/**
 * Server-side printing (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`), which `kubectl get` asks
 * for: column definitions and one row of cells per object, like kube-apiserver's printers (the common columns
 * of the built-in kinds; CRDs use their additionalPrinterColumns, default Age).
 */
import { isInteger, isObject, type JsonObject, objAt, stringMap } from './json.ts';
import type { ResourceType } from './resources.ts';

export interface Column {
  readonly name: string;
  readonly type: 'string' | 'integer' | 'number' | 'boolean' | 'date';
  readonly format?: string;
  readonly description?: string;
  readonly priority?: number;
}

type Cell = string | number | boolean | null;

interface Printer {
  readonly columns: readonly Column[];
  cells(obj: JsonObject, now: number): Cell[];
}

/** Same buckets as apimachinery `duration.HumanDuration`. */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < -1) return '<invalid>';
  if (seconds < 0) return '0s';
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 10) return seconds % 60 === 0 ? `${minutes}m` : `${minutes}m${seconds % 60}s`;
  if (minutes < 180) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 8) return minutes % 60 === 0 ? `${hours}h` : `${hours}h${minutes % 60}m`;
  if (hours < 48) return `${hours}h`;
  const days = Math.floor(hours / 24);
  if (hours < 24 * 8) return hours % 24 === 0 ? `${days}d` : `${days}d${hours % 24}h`;
  if (hours < 24 * 365 * 2) return `${days}d`;
  const years = Math.floor(days / 365);
  if (hours < 24 * 365 * 8) return days % 365 === 0 ? `${years}y` : `${years}y${days % 365}d`;
  return `${years}y`;
}

function age(obj: JsonObject, now: number): string {
  const ts = objAt(obj, 'metadata')?.creationTimestamp;
  if (typeof ts !== 'string') return '<unknown>';
  const t = Date.parse(ts);
  return Number.isNaN(t) ? '<unknown>' : humanDuration(now - t);
}

function name(obj: JsonObject): string {
  const n = objAt(obj, 'metadata')?.name;
  return typeof n === 'string' ? n : '';
}

const NAME: Column = {
  name: 'Name',
  type: 'string',
  format: 'name',
  description: 'Name must be unique within a namespace.',
};
const AGE: Column = {
  name: 'Age',
  type: 'string',
  description: 'CreationTimestamp is a timestamp representing the server time when this object was created.',
};

function num(v: unknown): number {
  return isInteger(v) ? v : 0;
}

function arr(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

function conditionTrue(obj: JsonObject, type: string): boolean {
  return arr(objAt(obj, 'status')?.conditions).some(
    (c) => isObject(c) && c.type === type && c.status === 'True',
  );
}

function selectorString(sel: unknown): string {
  const m = stringMap(isObject(sel) && isObject(sel.matchLabels) ? sel.matchLabels : sel);
  const parts = Object.entries(m).map(([k, v]) => `${k}=${v}`);
  return parts.length ? parts.join(',') : '<none>';
}

function containersAndImages(tpl: unknown): [string, string] {
  const cs = arr(objAt(objAt(tpl, 'spec'), 'containers')).filter(isObject);
  return [cs.map((c) => String(c.name ?? '')).join(','), cs.map((c) => String(c.image ?? '')).join(',')];
}

function podStatus(obj: JsonObject): string {
  const status = objAt(obj, 'status') ?? {};
  let reason =
    typeof status.reason === 'string'
      ? status.reason
      : typeof status.phase === 'string'
        ? status.phase
        : 'Pending';
  for (const cs of arr(status.containerStatuses).filter(isObject)) {
    const w = objAt(objAt(cs, 'state'), 'waiting');
    const t = objAt(objAt(cs, 'state'), 'terminated');
    if (w && typeof w.reason === 'string' && w.reason) reason = w.reason;
    else if (t && typeof t.reason === 'string' && t.reason) reason = t.reason;
  }
  if (objAt(obj, 'metadata')?.deletionTimestamp) reason = 'Terminating';
  return reason;
}

const PRINTERS: Readonly<Record<string, Printer>> = {
  '/pods': {
    columns: [
      NAME,
      {
        name: 'Ready',
        type: 'string',
        description: 'The aggregate readiness state of this pod for accepting traffic.',
      },
      { name: 'Status', type: 'string', description: 'The aggregate status of the containers in this pod.' },
      {
        name: 'Restarts',
        type: 'string',
        description: 'The number of times the containers in this pod have been restarted.',
      },
      AGE,
      { name: 'IP', type: 'string', priority: 1, description: 'IP address allocated to the pod.' },
      { name: 'Node', type: 'string', priority: 1, description: 'Name of the Node this pod is assigned to.' },
      { name: 'Nominated Node', type: 'string', priority: 1, description: 'Nominated node name.' },
      { name: 'Readiness Gates', type: 'string', priority: 1, description: 'Pod readiness gates.' },
    ],
    cells(obj, now) {
      const containers = arr(objAt(obj, 'spec')?.containers);
      const statuses = arr(objAt(obj, 'status')?.containerStatuses).filter(isObject);
      const ready = statuses.filter((s) => s.ready === true).length;
      const restarts = statuses.reduce((n, s) => n + num(s.restartCount), 0);
      const status = objAt(obj, 'status') ?? {};
      return [
        name(obj),
        `${ready}/${containers.length}`,
        podStatus(obj),
        String(restarts),
        age(obj, now),
        typeof status.podIP === 'string' ? status.podIP : '<none>',
        typeof objAt(obj, 'spec')?.nodeName === 'string'
          ? (objAt(obj, 'spec')?.nodeName as string)
          : '<none>',
        typeof status.nominatedNodeName === 'string' ? status.nominatedNodeName : '<none>',
        '<none>',
      ];
    },
  },
  '/services': {
    columns: [
      NAME,
      { name: 'Type', type: 'string', description: 'The type of the service.' },
      { name: 'Cluster-IP', type: 'string', description: 'The IP address of the service.' },
      { name: 'External-IP', type: 'string', description: 'External IPs.' },
      { name: 'Port(s)', type: 'string', description: 'The ports of the service.' },
      AGE,
      { name: 'Selector', type: 'string', priority: 1, description: 'Label selector of the pods.' },
    ],
    cells(obj, now) {
      const spec = objAt(obj, 'spec') ?? {};
      const ports = arr(spec.ports)
        .filter(isObject)
        .map(
          (p) =>
            `${String(p.port)}${isInteger(p.nodePort) ? `:${p.nodePort}` : ''}/${String(p.protocol ?? 'TCP')}`,
        );
      const ingress = arr(objAt(objAt(obj, 'status'), 'loadBalancer')?.ingress)
        .filter(isObject)
        .map((i) => String(i.ip ?? i.hostname ?? ''));
      const external = [...arr(spec.externalIPs).map(String), ...ingress];
      return [
        name(obj),
        String(spec.type ?? 'ClusterIP'),
        String(spec.clusterIP ?? '<none>'),
        spec.type === 'ExternalName'
          ? String(spec.externalName ?? '')
          : external.length
            ? external.join(',')
            : spec.type === 'LoadBalancer'
              ? '<pending>'
              : '<none>',
        ports.length ? ports.join(',') : '<none>',
        age(obj, now),
        selectorString(spec.selector),
      ];
    },
  },
  'apps/deployments': {
    columns: [
      NAME,
      { name: 'Ready', type: 'string', description: 'Number of the pod with ready state' },
      {
        name: 'Up-to-date',
        type: 'integer',
        description:
          'Total number of non-terminated pods targeted by this deployment that have the desired template spec.',
      },
      {
        name: 'Available',
        type: 'integer',
        description:
          'Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.',
      },
      AGE,
      {
        name: 'Containers',
        type: 'string',
        priority: 1,
        description: 'Names of each container in the template.',
      },
      {
        name: 'Images',
        type: 'string',
        priority: 1,
        description: 'Images referenced by each container in the template.',
      },
      { name: 'Selector', type: 'string', priority: 1, description: 'Label selector for pods.' },
    ],
    cells(obj, now) {
      const st = objAt(obj, 'status') ?? {};
      const [c, i] = containersAndImages(objAt(obj, 'spec')?.template);
      return [
        name(obj),
        `${num(st.readyReplicas)}/${num(objAt(obj, 'spec')?.replicas)}`,
        num(st.updatedReplicas),
        num(st.availableReplicas),
        age(obj, now),
        c,
        i,
        selectorString(objAt(obj, 'spec')?.selector),
      ];
    },
  },
  'apps/replicasets': {
    columns: [
      NAME,
      { name: 'Desired', type: 'integer', description: 'Number of desired pods.' },
      { name: 'Current', type: 'integer', description: 'Number of actual replicas.' },
      { name: 'Ready', type: 'integer', description: 'The number of ready replicas.' },
      AGE,
      {
        name: 'Containers',
        type: 'string',
        priority: 1,
        description: 'Names of each container in the template.',
      },
      {
        name: 'Images',
        type: 'string',
        priority: 1,
        description: 'Images referenced by each container in the template.',
      },
      { name: 'Selector', type: 'string', priority: 1, description: 'Label selector for pods.' },
    ],
    cells(obj, now) {
      const st = objAt(obj, 'status') ?? {};
      const [c, i] = containersAndImages(objAt(obj, 'spec')?.template);
      return [
        name(obj),
        num(objAt(obj, 'spec')?.replicas),
        num(st.replicas),
        num(st.readyReplicas),
        age(obj, now),
        c,
        i,
        selectorString(objAt(obj, 'spec')?.selector),
      ];
    },
  },
  'apps/daemonsets': {
    columns: [
      NAME,
      {
        name: 'Desired',
        type: 'integer',
        description: 'The total number of nodes that should be running the daemon pod.',
      },
      {
        name: 'Current',
        type: 'integer',
        description: 'The number of nodes running at least one daemon pod.',
      },
      { name: 'Ready', type: 'integer', description: 'The number of nodes with a ready daemon pod.' },
      {
        name: 'Up-to-date',
        type: 'integer',
        description: 'The number of nodes running the updated daemon pod.',
      },
      {
        name: 'Available',
        type: 'integer',
        description: 'The number of nodes with an available daemon pod.',
      },
      { name: 'Node Selector', type: 'string', description: 'NodeSelector of the pod template.' },
      AGE,
      {
        name: 'Containers',
        type: 'string',
        priority: 1,
        description: 'Names of each container in the template.',
      },
      {
        name: 'Images',
        type: 'string',
        priority: 1,
        description: 'Images referenced by each container in the template.',
      },
      { name: 'Selector', type: 'string', priority: 1, description: 'Label selector for pods.' },
    ],
    cells(obj, now) {
      const st = objAt(obj, 'status') ?? {};
      const tpl = objAt(obj, 'spec')?.template;
      const [c, i] = containersAndImages(tpl);
      return [
        name(obj),
        num(st.desiredNumberScheduled),
        num(st.currentNumberScheduled),
        num(st.numberReady),
        num(st.updatedNumberScheduled),
        num(st.numberAvailable),
        selectorString(objAt(objAt(tpl, 'spec'), 'nodeSelector')),
        age(obj, now),
        c,
        i,
        selectorString(objAt(obj, 'spec')?.selector),
      ];
    },
  },
  '/nodes': {
    columns: [
      NAME,
      { name: 'Status', type: 'string', description: 'The status of the node' },
      { name: 'Roles', type: 'string', description: 'The roles of the node' },
      AGE,
      { name: 'Version', type: 'string', description: 'Kubelet Version reported by the node.' },
      {
        name: 'Internal-IP',
        type: 'string',
        priority: 1,
        description: 'List of addresses reachable to the node.',
      },
    ],
    cells(obj, now) {
      const conds = arr(objAt(obj, 'status')?.conditions).filter(isObject);
      const ready = conds.find((c) => c.type === 'Ready');
      let status = ready ? (ready.status === 'True' ? 'Ready' : 'NotReady') : 'Unknown';
      if (objAt(obj, 'spec')?.unschedulable === true) status += ',SchedulingDisabled';
      const roles = Object.keys(stringMap(objAt(obj, 'metadata')?.labels))
        .filter((k) => k.startsWith('node-role.kubernetes.io/'))
        .map((k) => k.slice('node-role.kubernetes.io/'.length));
      const ip = arr(objAt(obj, 'status')?.addresses).find((a) => isObject(a) && a.type === 'InternalIP');
      return [
        name(obj),
        status,
        roles.length ? roles.join(',') : '<none>',
        age(obj, now),
        String(objAt(objAt(obj, 'status'), 'nodeInfo')?.kubeletVersion ?? ''),
        isObject(ip) ? String(ip.address) : '<none>',
      ];
    },
  },
  '/namespaces': {
    columns: [NAME, { name: 'Status', type: 'string', description: 'The status of the namespace' }, AGE],
    cells: (obj, now) => [name(obj), String(objAt(obj, 'status')?.phase ?? ''), age(obj, now)],
  },
  '/configmaps': {
    columns: [NAME, { name: 'Data', type: 'integer', description: 'Number of keys.' }, AGE],
    cells: (obj, now) => [
      name(obj),
      Object.keys(objAt(obj, 'data') ?? {}).length + Object.keys(objAt(obj, 'binaryData') ?? {}).length,
      age(obj, now),
    ],
  },
  '/secrets': {
    columns: [
      NAME,
      { name: 'Type', type: 'string', description: 'The type of the secret' },
      { name: 'Data', type: 'integer', description: 'Number of keys.' },
      AGE,
    ],
    cells: (obj, now) => [
      name(obj),
      String(obj.type ?? 'Opaque'),
      Object.keys(objAt(obj, 'data') ?? {}).length,
      age(obj, now),
    ],
  },
  '/serviceaccounts': {
    columns: [NAME, { name: 'Secrets', type: 'string', description: 'Number of secrets' }, AGE],
    cells: (obj, now) => [name(obj), String(arr(obj.secrets).length), age(obj, now)],
  },
  '/endpoints': {
    columns: [NAME, { name: 'Endpoints', type: 'string', description: 'Endpoints of the service' }, AGE],
    cells(obj, now) {
      const eps: string[] = [];
      for (const s of arr(obj.subsets).filter(isObject)) {
        const ports = arr(s.ports).filter(isObject);
        for (const a of arr(s.addresses).filter(isObject)) {
          if (ports.length === 0) eps.push(String(a.ip));
          for (const p of ports) eps.push(`${String(a.ip)}:${String(p.port)}`);
        }
      }
      return [
        name(obj),
        eps.length
          ? eps.slice(0, 3).join(',') + (eps.length > 3 ? ` + ${eps.length - 3} more...` : '')
          : '<none>',
        age(obj, now),
      ];
    },
  },
  'discovery.k8s.io/endpointslices': {
    columns: [
      NAME,
      { name: 'AddressType', type: 'string', description: 'The type of addresses' },
      { name: 'Ports', type: 'string', description: 'Ports' },
      { name: 'Endpoints', type: 'string', description: 'Addresses' },
      AGE,
    ],
    cells(obj, now) {
      const ports = arr(obj.ports)
        .filter(isObject)
        .map((p) => String(p.port));
      const addrs = arr(obj.endpoints)
        .filter(isObject)
        .flatMap((e) => arr(e.addresses).map(String));
      return [
        name(obj),
        String(obj.addressType ?? ''),
        ports.length ? ports.join(',') : '<unset>',
        addrs.length
          ? addrs.slice(0, 3).join(',') + (addrs.length > 3 ? ` + ${addrs.length - 3} more...` : '')
          : '<unset>',
        age(obj, now),
      ];
    },
  },
  '/events': {
    columns: [
      { name: 'Last Seen', type: 'string', description: 'Time since the last occurrence' },
      { name: 'Type', type: 'string', description: 'Type of this event' },
      { name: 'Reason', type: 'string', description: 'Reason' },
      { name: 'Object', type: 'string', description: 'The object this event is about' },
      { name: 'Message', type: 'string', description: 'Message' },
      { ...NAME, priority: 1 },
    ],
    cells(obj, now) {
      const last = obj.lastTimestamp ?? obj.eventTime ?? objAt(obj, 'metadata')?.creationTimestamp;
      const io = objAt(obj, 'involvedObject') ?? {};
      return [
        typeof last === 'string' ? humanDuration(now - Date.parse(last)) : '<unknown>',
        String(obj.type ?? ''),
        String(obj.reason ?? ''),
        `${String(io.kind ?? '').toLowerCase()}/${String(io.name ?? '')}`,
        String(obj.message ?? ''),
        name(obj),
      ];
    },
  },
  'apiextensions.k8s.io/customresourcedefinitions': {
    columns: [NAME, { name: 'Created At', type: 'date', description: 'Creation time' }],
    cells: (obj) => [name(obj), String(objAt(obj, 'metadata')?.creationTimestamp ?? '')],
  },
  'coordination.k8s.io/leases': {
    columns: [NAME, { name: 'Holder', type: 'string', description: 'The holder of the lease' }, AGE],
    cells: (obj, now) => [name(obj), String(objAt(obj, 'spec')?.holderIdentity ?? ''), age(obj, now)],
  },
};

const DEFAULT_PRINTER: Printer = {
  columns: [NAME, { name: 'Created At', type: 'date', description: 'Creation time' }],
  cells: (obj) => [name(obj), String(objAt(obj, 'metadata')?.creationTimestamp ?? '')],
};

// ---- JSONPath subset for CRD printer columns: .a.b, [n], [*], [?(@.k=="v")] ---------------------------------

export function evalJsonPath(obj: unknown, path: string): unknown[] {
  let cur: unknown[] = [obj];
  const re =
    /\.([A-Za-z0-9_$-]+)|\[(\d+)\]|\[\*\]|\[\?\(@\.([A-Za-z0-9_.-]+)\s*==\s*["']([^"']*)["']\)\]|\['([^']+)'\]/gy;
  let m: RegExpExecArray | null = re.exec(path);
  let consumed = 0;
  while (m) {
    consumed = re.lastIndex;
    const next: unknown[] = [];
    for (const v of cur) {
      if (m[1] !== undefined || m[5] !== undefined) {
        const k = (m[1] ?? m[5]) as string;
        if (isObject(v) && v[k] !== undefined) next.push(v[k]);
      } else if (m[2] !== undefined) {
        if (Array.isArray(v) && v[Number(m[2])] !== undefined) next.push(v[Number(m[2])]);
      } else if (m[3] !== undefined) {
        const keys = m[3].split('.');
        for (const item of Array.isArray(v) ? v : []) {
          const got = keys.reduce<unknown>((o, k) => (isObject(o) ? o[k] : undefined), item);
          if (got !== undefined && String(got) === m[4]) next.push(item);
        }
      } else if (Array.isArray(v)) next.push(...v);
      else if (isObject(v)) next.push(...Object.values(v));
    }
    cur = next;
    m = re.exec(path);
  }
  return consumed === path.length ? cur : [];
}

function crdPrinter(t: ResourceType, version: string): Printer {
  const defs = t.crd?.printerColumns.get(version) ?? [];
  const cols = defs.length
    ? defs
    : [
        {
          name: 'Age',
          type: 'date',
          jsonPath: '.metadata.creationTimestamp',
          description:
            'CreationTimestamp is a timestamp representing the server time when this object was created.',
        },
      ];
  return {
    columns: [
      NAME,
      ...cols.map((c) => {
        const col: Column = {
          name: String(c.name ?? ''),
          type:
            c.type === 'date'
              ? 'date'
              : ((['integer', 'number', 'boolean'].includes(String(c.type))
                  ? c.type
                  : 'string') as Column['type']),
          description: String(c.description ?? ''),
          priority: isInteger(c.priority) ? c.priority : 0,
        };
        return typeof c.format === 'string' ? { ...col, format: c.format } : col;
      }),
    ],
    cells(obj, now) {
      return [
        name(obj),
        ...cols.map((c): Cell => {
          const vals = evalJsonPath(obj, String(c.jsonPath ?? ''));
          if (vals.length === 0) return null;
          const v = vals[0];
          if (c.type === 'date') return typeof v === 'string' ? humanDuration(now - Date.parse(v)) : null;
          if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return v;
          return JSON.stringify(v);
        }),
      ];
    },
  };
}

function printerFor(t: ResourceType, version: string): Printer {
  if (t.crd) return crdPrinter(t, version);
  return PRINTERS[t.key] ?? DEFAULT_PRINTER;
}

export type IncludeObject = 'None' | 'Metadata' | 'Object';

export function partialMetadata(obj: JsonObject): JsonObject {
  return {
    kind: 'PartialObjectMetadata',
    apiVersion: 'meta.k8s.io/v1',
    metadata: objAt(obj, 'metadata') ?? {},
  };
}

function row(p: Printer, obj: JsonObject, include: IncludeObject, now: number): JsonObject {
  const r: JsonObject = { cells: p.cells(obj, now) };
  if (include === 'Object') r.object = obj;
  else if (include === 'Metadata') r.object = partialMetadata(obj);
  return r;
}

export function toTable(
  t: ResourceType,
  version: string,
  items: readonly JsonObject[],
  listMeta: JsonObject,
  include: IncludeObject,
  withColumns = true,
): JsonObject {
  const p = printerFor(t, version);
  const now = Date.now();
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata: listMeta,
    columnDefinitions: withColumns
      ? p.columns.map((c) => ({ description: '', format: '', priority: 0, ...c }))
      : null,
    rows: items.map((o) => row(p, o, include, now)),
  };
}

/** True when the pod is Ready (controllers and printers agree on this definition). */
export function podReady(pod: JsonObject): boolean {
  return conditionTrue(pod, 'Ready');
}
