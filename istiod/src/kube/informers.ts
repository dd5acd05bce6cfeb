/**
 * Informers for the kinds the ambient index consumes (ARCHITECTURE.md, istiod "Watches Kubernetes ..."), with
 * @kubernetes/client-node's list+watch. Each kind reports `synced` after its first successful list; a kind whose
 * API is not installed (404, e.g. no Gateway API CRDs) counts as synced and empty, and is retried in the
 * background so installing the CRDs later is picked up without a restart.
 */
import {
  CoreV1Api,
  CustomObjectsApi,
  DiscoveryV1Api,
  type Informer,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  makeInformer,
  type ObjectCache,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { describeError } from '../../../pkg/errors/index.ts';
import { isNotFound } from '../../../pkg/kube/index.ts';
import type { Kind, KindMap } from '../index/index.ts';

/** How a kind is listed and watched. */
export interface KindSource {
  readonly kind: Kind;
  readonly path: string;
  readonly list: (kc: KubeConfig) => () => Promise<KubernetesListObject<KubernetesObject>>;
}

function custom(group: string, version: string, plural: string) {
  return (kc: KubeConfig) => {
    const api = kc.makeApiClient(CustomObjectsApi);
    return async () =>
      (await api.listClusterCustomObject({
        group,
        version,
        plural,
      })) as KubernetesListObject<KubernetesObject>;
  };
}

/** The served version we read for each Istio / Gateway API kind (deploy/crds serves v1 for all of them). */
export const KIND_SOURCES: readonly KindSource[] = [
  {
    kind: 'Namespace',
    path: '/api/v1/namespaces',
    list: (kc) => {
      const api = kc.makeApiClient(CoreV1Api);
      return () => api.listNamespace();
    },
  },
  {
    kind: 'Node',
    path: '/api/v1/nodes',
    list: (kc) => {
      const api = kc.makeApiClient(CoreV1Api);
      return () => api.listNode();
    },
  },
  {
    kind: 'Pod',
    path: '/api/v1/pods',
    list: (kc) => {
      const api = kc.makeApiClient(CoreV1Api);
      return () => api.listPodForAllNamespaces();
    },
  },
  {
    kind: 'Service',
    path: '/api/v1/services',
    list: (kc) => {
      const api = kc.makeApiClient(CoreV1Api);
      return () => api.listServiceForAllNamespaces();
    },
  },
  {
    kind: 'EndpointSlice',
    path: '/apis/discovery.k8s.io/v1/endpointslices',
    list: (kc) => {
      const api = kc.makeApiClient(DiscoveryV1Api);
      return () => api.listEndpointSliceForAllNamespaces();
    },
  },
  {
    kind: 'AuthorizationPolicy',
    path: '/apis/security.istio.io/v1/authorizationpolicies',
    list: custom('security.istio.io', 'v1', 'authorizationpolicies'),
  },
  {
    kind: 'PeerAuthentication',
    path: '/apis/security.istio.io/v1/peerauthentications',
    list: custom('security.istio.io', 'v1', 'peerauthentications'),
  },
  {
    kind: 'ServiceEntry',
    path: '/apis/networking.istio.io/v1/serviceentries',
    list: custom('networking.istio.io', 'v1', 'serviceentries'),
  },
  {
    kind: 'WorkloadEntry',
    path: '/apis/networking.istio.io/v1/workloadentries',
    list: custom('networking.istio.io', 'v1', 'workloadentries'),
  },
  {
    kind: 'Gateway',
    path: '/apis/gateway.networking.k8s.io/v1/gateways',
    list: custom('gateway.networking.k8s.io', 'v1', 'gateways'),
  },
  {
    kind: 'GatewayClass',
    path: '/apis/gateway.networking.k8s.io/v1/gatewayclasses',
    list: custom('gateway.networking.k8s.io', 'v1', 'gatewayclasses'),
  },
];

/** First retry after a list/watch failure; doubled up to RESTART_MAX_MS. */
const RESTART_INITIAL_MS = 1000;
/** Longest wait between restarts (also the re-check period for an API that is not installed). */
const RESTART_MAX_MS = 30_000;

export type InformerEvent = 'add' | 'update' | 'delete';

export interface InformerSetOptions {
  readonly kubeConfig: KubeConfig;
  readonly logger: Logger;
  readonly kinds?: readonly Kind[];
  /** Called for every object event, in order per kind. */
  readonly onEvent: <K extends Kind>(kind: K, event: InformerEvent, obj: KindMap[K]) => void;
}

interface Running {
  readonly kind: Kind;
  readonly informer: Informer<KubernetesObject> & ObjectCache<KubernetesObject>;
  synced: boolean;
  delayMs: number;
  timer: NodeJS.Timeout | null;
}

export class InformerSet {
  /** Resolves once every kind has listed once (or was found not installed). */
  readonly synced: Promise<void>;
  private readonly running: Running[] = [];
  private readonly logger: Logger;
  private resolveSynced: () => void = () => {};
  private stopped = false;

  constructor(opts: InformerSetOptions) {
    this.logger = opts.logger;
    this.synced = new Promise((resolve) => {
      this.resolveSynced = resolve;
    });
    const wanted = new Set(opts.kinds ?? KIND_SOURCES.map((s) => s.kind));
    for (const src of KIND_SOURCES) {
      if (!wanted.has(src.kind)) continue;
      const listFn = src.list(opts.kubeConfig);
      const r: Running = {
        kind: src.kind,
        informer: null as never,
        synced: false,
        delayMs: RESTART_INITIAL_MS,
        timer: null,
      };
      const informer = makeInformer(opts.kubeConfig, src.path, async () => {
        const list = await listFn();
        // The informer delivers the listed objects synchronously once this resolves (in a later microtask);
        // a macrotask runs after them.
        setImmediate(() => this.markSynced(r));
        return list;
      });
      (r as { informer: typeof informer }).informer = informer;
      const emit = (event: InformerEvent) => (obj: KubernetesObject) =>
        opts.onEvent(src.kind, event, obj as KindMap[typeof src.kind]);
      informer.on('add', emit('add'));
      informer.on('update', emit('update'));
      informer.on('delete', emit('delete'));
      informer.on('error', (err: unknown) => this.restart(r, err));
      this.running.push(r);
    }
    if (this.running.length === 0) this.resolveSynced();
  }

  async start(): Promise<void> {
    await Promise.all(this.running.map((r) => r.informer.start()));
  }

  stop(): void {
    this.stopped = true;
    for (const r of this.running) {
      if (r.timer) clearTimeout(r.timer);
      r.informer.stop().catch(() => {});
    }
  }

  /** Which kinds have synced (readiness/debug). */
  status(): Record<string, boolean> {
    return Object.fromEntries(this.running.map((r) => [r.kind, r.synced]));
  }

  private markSynced(r: Running): void {
    r.delayMs = RESTART_INITIAL_MS;
    if (r.synced) return;
    r.synced = true;
    if (this.running.every((x) => x.synced)) this.resolveSynced();
  }

  private restart(r: Running, err: unknown): void {
    if (this.stopped) return;
    if (isNotFound(err)) {
      // The API is not served (CRDs not installed): empty for now, look again later.
      this.markSynced(r);
      r.delayMs = RESTART_MAX_MS;
      this.logger.info({ kind: r.kind }, 'API not installed; will check again');
    } else {
      this.logger.warn(
        { code: 'MESH_ERR_ISTIOD_INFORMER', kind: r.kind, err: describeError(err), retryInMs: r.delayMs },
        'informer failed; restarting',
      );
    }
    const delay = r.delayMs;
    r.delayMs = Math.min(RESTART_MAX_MS, r.delayMs * 2);
    r.timer = setTimeout(() => {
      r.timer = null;
      if (!this.stopped) r.informer.start().catch((e: unknown) => this.restart(r, e));
    }, delay);
  }
}
