/**
 * EndpointSlice and Endpoints controllers (kube-controller-manager's, for Services with a selector).
 * Every non-terminal pod matching the selector that has an IP becomes an endpoint, like kube:
 * - EndpointSlices (`kubernetes.io/service-name`, managed-by `endpointslice-controller.k8s.io`, owned by the
 *   Service): conditions.ready = pod Ready and not terminating, serving = pod Ready, terminating = being
 *   deleted; nodeName, zone (node label), targetRef; ports resolved per pod (named targetPorts via container
 *   port names), so pods resolving differently land in different slices; at most 100 endpoints per slice.
 * - Endpoints: ready pods under `addresses`, the rest under `notReadyAddresses` (terminating pods left out,
 *   unless `publishNotReadyAddresses`).
 * Selector-less Services are left to their owners. Not modelled: dual-stack, topology hints, mirroring.
 */
import {
  arrAt,
  clone,
  isInteger,
  isObject,
  type JsonObject,
  objAt,
  stableStringify,
  stringMap,
} from '../apiserver/json.ts';
import { ApiError } from '../apiserver/status.ts';
import type { StoreEvent } from '../apiserver/store.ts';
import type { WorkQueue } from './queue.ts';
import {
  type Controller,
  type ControllerContext,
  deleting,
  K,
  labelsOf,
  md,
  nameOf,
  newControllerRef,
  nsKey,
  nsOf,
  podReady,
  splitKey,
  uidOf,
} from './util.ts';

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
export const MANAGED_BY_LABEL = 'endpointslice.kubernetes.io/managed-by';
export const MANAGED_BY = 'endpointslice-controller.k8s.io';
/** kube's --max-endpoints-per-slice default. */
const MAX_ENDPOINTS_PER_SLICE = 100;
const HEADLESS_LABEL = 'service.kubernetes.io/headless';

interface Port {
  readonly name: string;
  readonly port: number;
  readonly protocol: string;
  readonly appProtocol?: string;
}

function selectorOf(svc: JsonObject): Record<string, string> | null {
  const sel = stringMap(objAt(svc, 'spec')?.selector);
  return Object.keys(sel).length > 0 ? sel : null;
}

function selects(sel: Record<string, string>, pod: JsonObject): boolean {
  const l = labelsOf(pod);
  return Object.entries(sel).every(([k, v]) => l[k] === v);
}

/** Resolves each service port for this pod (named target ports look up container ports). */
function resolvePorts(svc: JsonObject, pod: JsonObject): Port[] {
  const out: Port[] = [];
  const containers = arrAt(objAt(pod, 'spec'), 'containers').filter(isObject);
  for (const sp of arrAt(objAt(svc, 'spec'), 'ports')) {
    if (!isObject(sp)) continue;
    const protocol = typeof sp.protocol === 'string' ? sp.protocol : 'TCP';
    let port: number | null = null;
    const tp = sp.targetPort ?? sp.port;
    if (isInteger(tp)) port = tp;
    else if (typeof tp === 'string') {
      for (const c of containers) {
        for (const cp of Array.isArray(c.ports) ? c.ports : []) {
          if (
            isObject(cp) &&
            cp.name === tp &&
            (cp.protocol ?? 'TCP') === protocol &&
            isInteger(cp.containerPort)
          )
            port = cp.containerPort;
        }
      }
    }
    if (port === null) continue;
    const p: Port = { name: typeof sp.name === 'string' ? sp.name : '', port, protocol };
    out.push(typeof sp.appProtocol === 'string' ? { ...p, appProtocol: sp.appProtocol } : p);
  }
  return out;
}

function podIp(pod: JsonObject): string | null {
  const ip = objAt(pod, 'status')?.podIP;
  return typeof ip === 'string' && ip !== '' ? ip : null;
}

export class EndpointsController implements Controller {
  readonly name = 'endpoints';
  private readonly ctx: ControllerContext;

  constructor(ctx: ControllerContext) {
    this.ctx = ctx;
  }

  initial(q: WorkQueue): void {
    for (const s of this.ctx.store.list(K.services)) q.add(nsKey(s));
  }

  onEvent(ev: StoreEvent, q: WorkQueue): void {
    if (ev.key === K.services) q.add(nsKey(ev.object));
    else if (ev.key === K.pods) {
      for (const svc of this.ctx.store.list(K.services, nsOf(ev.object))) {
        const sel = selectorOf(svc);
        if (sel && (selects(sel, ev.object) || (ev.prev !== null && selects(sel, ev.prev))))
          q.add(nsKey(svc));
      }
    } else if (ev.key === K.endpointslices) {
      const l = labelsOf(ev.object);
      const svc = l[SERVICE_NAME_LABEL];
      if (svc && l[MANAGED_BY_LABEL] === MANAGED_BY) q.add(`${nsOf(ev.object)}/${svc}`);
    } else if (ev.key === K.endpoints) q.add(nsKey(ev.object));
    else if (ev.key === K.nodes)
      for (const s of this.ctx.store.list(K.services)) if (selectorOf(s)) q.add(nsKey(s));
  }

  async reconcile(key: string): Promise<void> {
    const [ns, name] = splitKey(key);
    const svc = this.ctx.store.get(K.services, ns, name);
    const managedSlices = this.ctx.store
      .list(K.endpointslices, ns)
      .filter(
        (s) => labelsOf(s)[SERVICE_NAME_LABEL] === name && labelsOf(s)[MANAGED_BY_LABEL] === MANAGED_BY,
      );
    const c = this.ctx.client;
    if (!svc || deleting(svc)) {
      await Promise.all(
        managedSlices.map((s) =>
          c.delete('discovery.k8s.io/v1/endpointslices', ns, nameOf(s)).catch(ignore404),
        ),
      );
      if (!svc && this.ctx.store.get(K.endpoints, ns, name))
        await c.delete('v1/endpoints', ns, name).catch(ignore404);
      return;
    }
    const sel = selectorOf(svc);
    if (!sel || objAt(svc, 'spec')?.type === 'ExternalName') {
      await Promise.all(
        managedSlices.map((s) =>
          c.delete('discovery.k8s.io/v1/endpointslices', ns, nameOf(s)).catch(ignore404),
        ),
      );
      return;
    }
    const pods = this.ctx.store
      .list(K.pods, ns)
      .filter(
        (p) =>
          selects(sel, p) &&
          podIp(p) !== null &&
          !['Succeeded', 'Failed'].includes(String(objAt(p, 'status')?.phase)),
      );
    await this.syncSlices(svc, pods, managedSlices);
    await this.syncEndpoints(svc, pods);
  }

  private endpointFor(pod: JsonObject): JsonObject {
    const terminating = deleting(pod);
    const ready = podReady(pod);
    const ep: JsonObject = {
      addresses: [podIp(pod)],
      conditions: { ready: ready && !terminating, serving: ready, terminating },
      targetRef: { kind: 'Pod', namespace: nsOf(pod), name: nameOf(pod), uid: uidOf(pod) },
    };
    const nodeName = objAt(pod, 'spec')?.nodeName;
    if (typeof nodeName === 'string' && nodeName) {
      ep.nodeName = nodeName;
      const node = this.ctx.store.get(K.nodes, '', nodeName);
      const zone = node ? labelsOf(node)['topology.kubernetes.io/zone'] : undefined;
      if (zone) ep.zone = zone;
    }
    const hostname = objAt(pod, 'spec')?.hostname;
    if (typeof hostname === 'string' && hostname) ep.hostname = hostname;
    return ep;
  }

  private async syncSlices(svc: JsonObject, pods: JsonObject[], existing: JsonObject[]): Promise<void> {
    const ns = nsOf(svc);
    const name = nameOf(svc);
    // Group endpoints by their resolved port set.
    const groups = new Map<string, { ports: Port[]; endpoints: JsonObject[] }>();
    for (const p of pods) {
      const ports = resolvePorts(svc, p);
      const sig = stableStringify(ports);
      const g = groups.get(sig) ?? { ports, endpoints: [] };
      g.endpoints.push(this.endpointFor(p));
      groups.set(sig, g);
    }
    const desired: Array<{ ports: Port[] | null; endpoints: JsonObject[] }> = [];
    for (const g of groups.values()) {
      g.endpoints.sort((a, b) =>
        String((a.targetRef as JsonObject).name).localeCompare(String((b.targetRef as JsonObject).name)),
      );
      for (let i = 0; i < g.endpoints.length; i += MAX_ENDPOINTS_PER_SLICE)
        desired.push({ ports: g.ports, endpoints: g.endpoints.slice(i, i + MAX_ENDPOINTS_PER_SLICE) });
    }
    // A Service without endpoints keeps one empty placeholder slice, like kube.
    if (desired.length === 0) desired.push({ ports: null, endpoints: [] });
    const labels: Record<string, string> = {
      ...labelsOf(svc),
      [SERVICE_NAME_LABEL]: name,
      [MANAGED_BY_LABEL]: MANAGED_BY,
    };
    if (objAt(svc, 'spec')?.clusterIP === 'None') labels[HEADLESS_LABEL] = '';
    const remaining = [...existing].sort((a, b) => nameOf(a).localeCompare(nameOf(b)));
    const c = this.ctx.client;
    for (const want of desired) {
      const body: JsonObject = { addressType: 'IPv4', endpoints: want.endpoints };
      if (want.ports) body.ports = want.ports;
      // Reuse a slice with the same ports (else any left) so updates beat create+delete churn.
      let idx = remaining.findIndex((s) => stableStringify(s.ports ?? null) === stableStringify(want.ports));
      if (idx < 0) idx = remaining.length > 0 ? 0 : -1;
      if (idx >= 0) {
        const cur = remaining.splice(idx, 1)[0] as JsonObject;
        const same =
          stableStringify(cur.endpoints ?? []) === stableStringify(want.endpoints) &&
          stableStringify(cur.ports ?? null) === stableStringify(want.ports) &&
          stableStringify(labelsOf(cur)) === stableStringify(labels);
        if (!same) {
          const next: JsonObject = { ...clone(cur), ...body, metadata: { ...clone(md(cur)), labels } };
          if (!want.ports) delete next.ports;
          await c.update('discovery.k8s.io/v1/endpointslices', next);
        }
      } else {
        await c.create('discovery.k8s.io/v1/endpointslices', {
          apiVersion: 'discovery.k8s.io/v1',
          kind: 'EndpointSlice',
          metadata: {
            generateName: `${name}-`,
            namespace: ns,
            labels,
            ownerReferences: [newControllerRef(svc, 'v1', 'Service')],
          },
          ...body,
        });
      }
    }
    await Promise.all(
      remaining.map((s) => c.delete('discovery.k8s.io/v1/endpointslices', ns, nameOf(s)).catch(ignore404)),
    );
  }

  private async syncEndpoints(svc: JsonObject, pods: JsonObject[]): Promise<void> {
    const ns = nsOf(svc);
    const name = nameOf(svc);
    const publishNotReady = objAt(svc, 'spec')?.publishNotReadyAddresses === true;
    const subsets = new Map<
      string,
      { ports: Port[]; addresses: JsonObject[]; notReadyAddresses: JsonObject[] }
    >();
    for (const p of pods) {
      if (deleting(p) && !publishNotReady) continue;
      const ports = resolvePorts(svc, p).map((x) => (x.name ? x : { port: x.port, protocol: x.protocol }));
      const sig = stableStringify(ports);
      const s = subsets.get(sig) ?? { ports: ports as Port[], addresses: [], notReadyAddresses: [] };
      const addr: JsonObject = {
        ip: podIp(p),
        targetRef: { kind: 'Pod', namespace: ns, name: nameOf(p), uid: uidOf(p) },
      };
      const nodeName = objAt(p, 'spec')?.nodeName;
      if (typeof nodeName === 'string' && nodeName) addr.nodeName = nodeName;
      (podReady(p) || publishNotReady ? s.addresses : s.notReadyAddresses).push(addr);
      subsets.set(sig, s);
    }
    const list: JsonObject[] = [...subsets.values()].map((s) => {
      const o: JsonObject = {};
      const byIp = (a: JsonObject, b: JsonObject) => String(a.ip).localeCompare(String(b.ip));
      if (s.addresses.length) o.addresses = s.addresses.sort(byIp);
      if (s.notReadyAddresses.length) o.notReadyAddresses = s.notReadyAddresses.sort(byIp);
      if (s.ports.length) o.ports = s.ports;
      return o;
    });
    const labels: Record<string, string> = { ...labelsOf(svc) };
    if (objAt(svc, 'spec')?.clusterIP === 'None') labels[HEADLESS_LABEL] = '';
    const cur = this.ctx.store.get(K.endpoints, ns, name);
    const body: JsonObject = {
      apiVersion: 'v1',
      kind: 'Endpoints',
      metadata: { name, namespace: ns, labels },
    };
    if (list.length) body.subsets = list;
    if (!cur) {
      await this.ctx.client.create('v1/endpoints', body).catch((err: unknown) => {
        if (!(err instanceof ApiError && err.code === 409)) throw err;
      });
      return;
    }
    if (
      stableStringify(cur.subsets ?? []) === stableStringify(list) &&
      stableStringify(labelsOf(cur)) === stableStringify(labels)
    )
      return;
    const next: JsonObject = { ...clone(cur), metadata: { ...clone(md(cur)), labels } };
    if (list.length) next.subsets = list;
    else delete next.subsets;
    await this.ctx.client.update('v1/endpoints', next);
  }
}

function ignore404(err: unknown): void {
  if (!(err instanceof ApiError && err.code === 404)) throw err;
}
