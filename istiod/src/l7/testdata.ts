/**
 * Test fixtures for the L7 compiler: Bookinfo (namespace `default`, port 9080, service accounts
 * `bookinfo-<svc>`, reviews v1/v2/v3 plus per-version Services) behind the namespace waypoint `waypoint`, and
 * builders for the L7 kinds. `World` drives an AmbientIndex and an L7Index the way the controllers do.
 */
import type { ServiceConfig } from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import { AmbientIndex, type Kind, type KindMap } from '../index/index.ts';
import { authzPolicy, ns, pod, svc, waypointGateway } from '../index/testdata.ts';
import type { AuthorizationPolicy } from '../kube/types.ts';
import { L7Index, type L7IndexChange, type L7Kind, type L7KindMap } from './l7index.ts';
import type {
  DestinationRule,
  GRPCRoute,
  HTTPRoute,
  ReferenceGrant,
  RequestAuthentication,
  VirtualService,
} from './types.ts';

export const NS = 'default';
export const WAYPOINT = 'default/waypoint';

export function host(name: string, namespace = NS): string {
  return `${name}.${namespace}.svc.cluster.local`;
}

export function key(name: string, namespace = NS): string {
  return `${namespace}/${host(name, namespace)}`;
}

const T0 = Date.parse('2024-01-01T00:00:00Z');

/** An RFC 3339 creation time `minutes` after a fixed epoch (for "oldest wins" tests). */
export function at(minutes: number): string {
  return new Date(T0 + minutes * 60_000).toISOString();
}

const HTTP_PORT = [{ name: 'http', port: 9080, targetPort: 9080 }];
const CONTAINER_PORT = [{ name: 'http', containerPort: 9080 }];

export interface BookinfoPod {
  readonly name: string;
  readonly app: string;
  readonly version: string;
  readonly ip: string;
}

export const BOOKINFO_PODS: readonly BookinfoPod[] = [
  { name: 'productpage-v1-abc', app: 'productpage', version: 'v1', ip: '10.244.1.10' },
  { name: 'details-v1-abc', app: 'details', version: 'v1', ip: '10.244.1.11' },
  { name: 'ratings-v1-abc', app: 'ratings', version: 'v1', ip: '10.244.1.12' },
  { name: 'reviews-v1-abc', app: 'reviews', version: 'v1', ip: '10.244.1.13' },
  { name: 'reviews-v2-abc', app: 'reviews', version: 'v2', ip: '10.244.1.14' },
  { name: 'reviews-v3-abc', app: 'reviews', version: 'v3', ip: '10.244.1.15' },
];

export function bookinfoPod(p: BookinfoPod, extraLabels: Record<string, string> = {}) {
  return pod(p.name, {
    ip: p.ip,
    labels: { app: p.app, version: p.version, ...extraLabels },
    sa: `bookinfo-${p.app}`,
    ports: CONTAINER_PORT,
    annotations: { 'ambient.istio.io/redirection': 'enabled' },
    replicaSet: { name: `${p.app}-${p.version}-5f7b9`, hash: '5f7b9' },
  });
}

/** The waypoint's own pod (what the Gateway controller deploys). */
export function waypointPod(
  name = 'waypoint-7d9f-x1',
  o: { gateway?: string; sa?: string; ip?: string; namespace?: string } = {},
) {
  const gateway = o.gateway ?? 'waypoint';
  return pod(name, {
    namespace: o.namespace ?? NS,
    ip: o.ip ?? '10.244.1.50',
    sa: o.sa ?? gateway,
    labels: {
      'gateway.networking.k8s.io/gateway-name': gateway,
      'gateway.istio.io/managed': 'istio.io-mesh-controller',
    },
  });
}

let vip = 10;
function nextVip(): string {
  vip++;
  return `10.96.0.${vip}`;
}

/** Bookinfo in `default`, enrolled and bound to the namespace waypoint. */
export function bookinfoObjects(): Array<{ kind: Kind; obj: KindMap[Kind] }> {
  const out: Array<{ kind: Kind; obj: KindMap[Kind] }> = [];
  out.push({
    kind: 'Namespace',
    obj: ns(NS, { 'istio.io/dataplane-mode': 'ambient', 'istio.io/use-waypoint': 'waypoint' }),
  });
  out.push({ kind: 'Gateway', obj: waypointGateway('waypoint') });
  for (const app of ['productpage', 'details', 'ratings', 'reviews'])
    out.push({ kind: 'Service', obj: svc(app, { clusterIP: nextVip(), ports: HTTP_PORT }) });
  for (const v of ['v1', 'v2', 'v3'])
    out.push({
      kind: 'Service',
      obj: svc(`reviews-${v}`, {
        clusterIP: nextVip(),
        ports: HTTP_PORT,
        selector: { app: 'reviews', version: v },
      }),
    });
  for (const p of BOOKINFO_PODS) out.push({ kind: 'Pod', obj: bookinfoPod(p) });
  out.push({ kind: 'Pod', obj: waypointPod() });
  return out;
}

const L7: ReadonlySet<string> = new Set<L7Kind>([
  'HTTPRoute',
  'GRPCRoute',
  'VirtualService',
  'DestinationRule',
  'RequestAuthentication',
  'ReferenceGrant',
]);

type AnyKind = Kind | L7Kind;
type AnyObj = KindMap[Kind] | L7KindMap[L7Kind];

/** An ambient index and an L7 index wired like the controllers wire them, driven synchronously. */
export class World {
  readonly ambient = new AmbientIndex();
  readonly l7 = new L7Index(this.ambient);
  last: L7IndexChange | null = null;

  constructor(objects: ReadonlyArray<{ kind: Kind; obj: KindMap[Kind] }> = bookinfoObjects()) {
    for (const o of objects) this.apply(o.kind, o.obj);
    this.flush();
  }

  apply(kind: AnyKind, obj: AnyObj): this {
    if (L7.has(kind)) this.l7.upsert(kind as L7Kind, obj as L7KindMap[L7Kind]);
    else {
      this.ambient.upsert(kind as Kind, obj as KindMap[Kind]);
      this.l7.ambientEvent(kind as Kind, obj);
    }
    return this;
  }

  delete(kind: AnyKind, obj: AnyObj): this {
    if (L7.has(kind)) this.l7.remove(kind as L7Kind, obj as L7KindMap[L7Kind]);
    else {
      this.ambient.remove(kind as Kind, obj as KindMap[Kind]);
      this.l7.ambientEvent(kind as Kind, obj);
    }
    return this;
  }

  flush(): L7IndexChange {
    this.l7.ambientFlushed(this.ambient.flush());
    this.last = this.l7.flush();
    return this.last;
  }

  config(name: string, namespace = NS): ServiceConfig {
    const c = this.l7.config(key(name, namespace));
    if (!c)
      throw new Error(
        `no ServiceConfig for ${key(name, namespace)}; have ${this.l7.configNames().join(', ')}`,
      );
    return c;
  }

  has(name: string, namespace = NS): boolean {
    return this.l7.config(key(name, namespace)) !== undefined;
  }
}

// ---- L7 object builders ------------------------------------------------------------------------------------

function meta(name: string, namespace: string, created: string | undefined, generation = 1) {
  return { name, namespace, generation, creationTimestamp: created ?? at(0) };
}

export function httpRoute(
  name: string,
  spec: HTTPRoute['spec'],
  o: { namespace?: string; created?: string; generation?: number } = {},
): HTTPRoute {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: meta(name, o.namespace ?? NS, o.created, o.generation),
    spec,
  };
}

export function grpcRoute(
  name: string,
  spec: GRPCRoute['spec'],
  o: { namespace?: string; created?: string } = {},
): GRPCRoute {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'GRPCRoute',
    metadata: meta(name, o.namespace ?? NS, o.created),
    spec,
  };
}

/** parentRefs entry for a Service (GAMMA). */
export function serviceParent(name: string, o: { namespace?: string; port?: number } = {}) {
  return { group: '', kind: 'Service', name, ...o };
}

export function backend(name: string, o: { port?: number; weight?: number; namespace?: string } = {}) {
  return { name, port: 9080, ...o };
}

export function virtualService(
  name: string,
  spec: VirtualService['spec'],
  o: { namespace?: string; created?: string; apiVersion?: string } = {},
): VirtualService {
  return {
    apiVersion: o.apiVersion ?? 'networking.istio.io/v1',
    kind: 'VirtualService',
    metadata: meta(name, o.namespace ?? NS, o.created),
    spec,
  };
}

export function destinationRule(
  name: string,
  spec: DestinationRule['spec'],
  o: { namespace?: string; created?: string } = {},
): DestinationRule {
  return {
    apiVersion: 'networking.istio.io/v1',
    kind: 'DestinationRule',
    metadata: meta(name, o.namespace ?? NS, o.created),
    spec,
  };
}

export function referenceGrant(
  name: string,
  namespace: string,
  spec: ReferenceGrant['spec'],
): ReferenceGrant {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1beta1',
    kind: 'ReferenceGrant',
    metadata: { name, namespace },
    spec,
  };
}

export function requestAuthentication(
  name: string,
  spec: RequestAuthentication['spec'],
  namespace = NS,
): RequestAuthentication {
  return {
    apiVersion: 'security.istio.io/v1',
    kind: 'RequestAuthentication',
    metadata: { name, namespace, generation: 1 },
    spec,
  };
}

export function targetedPolicy(
  name: string,
  spec: AuthorizationPolicy['spec'],
  namespace = NS,
  annotations?: Record<string, string>,
): AuthorizationPolicy {
  const ap = authzPolicy(name, namespace, spec);
  return annotations ? { ...ap, metadata: { ...ap.metadata, annotations } } : ap;
}

/** The Bookinfo reviews DestinationRule (subsets v1/v2/v3 by `version`). */
export function reviewsSubsets(): DestinationRule {
  return destinationRule('reviews', {
    host: 'reviews',
    subsets: ['v1', 'v2', 'v3'].map((v) => ({ name: v, labels: { version: v } })),
  });
}
