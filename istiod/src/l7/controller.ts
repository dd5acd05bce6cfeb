/**
 * The waypoint L7 compiler wired to Kubernetes and the xDS server: informers for the kinds only it reads
 * (HTTPRoute, GRPCRoute, VirtualService, DestinationRule, RequestAuthentication, ReferenceGrant), an observer on
 * the ambient pipeline for the rest (services, workloads, gateways, AuthorizationPolicies), and one flush per
 * event-loop turn that hands changed ServiceConfigs and waypoint scopes to the xDS server (which debounces
 * pushes), status to the status writer, and each new problem to the log once.
 */
import {
  CustomObjectsApi,
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
import { ServiceConfig } from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import { WAYPOINT_SERVICE_TYPE_URL } from '../../../pkg/xds/index.ts';
import type { AmbientIndex, IndexChange, Kind } from '../index/index.ts';
import type { InformerEvent } from '../kube/informers.ts';
import type { KubeObject } from '../kube/types.ts';
import { metricType } from '../xds/metrics.ts';
import type { XdsServer } from '../xds/server.ts';
import { L7_KINDS, L7Index, type L7IndexChange, type L7Kind, type L7KindMap } from './l7index.ts';
import type { L7StatusSink } from './status.ts';

/** How each L7 kind is listed and watched (the versions deploy/crds serves). */
const SOURCES: Readonly<Record<L7Kind, { group: string; version: string; plural: string }>> = {
  HTTPRoute: { group: 'gateway.networking.k8s.io', version: 'v1', plural: 'httproutes' },
  GRPCRoute: { group: 'gateway.networking.k8s.io', version: 'v1', plural: 'grpcroutes' },
  VirtualService: { group: 'networking.istio.io', version: 'v1', plural: 'virtualservices' },
  DestinationRule: { group: 'networking.istio.io', version: 'v1', plural: 'destinationrules' },
  RequestAuthentication: { group: 'security.istio.io', version: 'v1', plural: 'requestauthentications' },
  ReferenceGrant: { group: 'gateway.networking.k8s.io', version: 'v1beta1', plural: 'referencegrants' },
};

/** First retry after a list/watch failure; doubled up to RESTART_MAX_MS (as istiod/src/kube/informers.ts). */
const RESTART_INITIAL_MS = 1000;
/** Longest wait between restarts, and the re-check period for a kind whose CRD is not installed. */
const RESTART_MAX_MS = 30_000;

/** What the ambient pipeline tells an observer (istiod/src/kube/controller.ts AmbientObserver). */
export interface AmbientEvents {
  event(kind: Kind, event: InformerEvent, obj: KubeObject): void;
  flushed(change: IndexChange): void;
}

export interface L7ControllerOptions {
  /** Null or absent: no informers (tests feed `apply` directly). */
  readonly kubeConfig?: KubeConfig | null;
  readonly index: AmbientIndex;
  readonly xds: XdsServer;
  /** Null or absent: status is computed but not written. */
  readonly status?: L7StatusSink | null;
  readonly logger: Logger;
}

interface Running {
  readonly kind: L7Kind;
  readonly informer: Informer<KubernetesObject> & ObjectCache<KubernetesObject>;
  synced: boolean;
  delayMs: number;
  timer: NodeJS.Timeout | null;
}

export class L7Controller {
  readonly l7: L7Index;
  /** Resolves once every L7 kind has listed once (or was found not installed). */
  readonly synced: Promise<void>;
  /** Pass as the ambient pipeline's observer. */
  readonly observer: AmbientEvents;
  private readonly xds: XdsServer;
  private readonly status: L7StatusSink | null;
  private readonly logger: Logger;
  private readonly running: Running[] = [];
  private resolveSynced: () => void = () => {};
  private scheduled = false;
  private stopped = false;

  constructor(opts: L7ControllerOptions) {
    if (!opts.xds.isScoped(WAYPOINT_SERVICE_TYPE_URL))
      throw new Error(
        `BUG: the XdsServer must serve ${WAYPOINT_SERVICE_TYPE_URL} with an access rule (WaypointAccess): waypoint config is never for every client`,
      );
    this.l7 = new L7Index(opts.index);
    this.xds = opts.xds;
    this.status = opts.status ?? null;
    this.logger = opts.logger;
    this.synced = new Promise((resolve) => {
      this.resolveSynced = resolve;
    });
    this.observer = {
      event: (kind, _event, obj) => this.l7.ambientEvent(kind, obj),
      flushed: (change) => {
        this.l7.ambientFlushed(change);
        if (this.l7.dirty) this.schedule();
      },
    };
    if (opts.kubeConfig) this.makeInformers(opts.kubeConfig);
    else this.resolveSynced();
    this.schedule();
  }

  /** Builds the controller and starts its informers. */
  static async create(opts: L7ControllerOptions): Promise<L7Controller> {
    const c = new L7Controller(opts);
    await Promise.all(c.running.map((r) => r.informer.start()));
    return c;
  }

  /** An L7 object event (informers; tests). */
  apply<K extends L7Kind>(kind: K, event: InformerEvent, obj: L7KindMap[K]): void {
    if (event === 'delete') this.l7.remove(kind, obj);
    else this.l7.upsert(kind, obj);
    this.schedule();
  }

  /** Flushes now and publishes the result (tests, shutdown); normally once per event-loop turn. */
  flush(): L7IndexChange {
    const change = this.l7.flush();
    this.publish(change);
    return change;
  }

  private schedule(): void {
    if (this.scheduled || this.stopped) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      if (this.stopped) return;
      try {
        this.flush();
      } catch (err) {
        this.logger.error({ err: describeError(err) }, 'BUG: waypoint L7 flush failed');
      }
    });
  }

  private publish(change: L7IndexChange): void {
    if (change.resources.size > 0) this.xds.update(WAYPOINT_SERVICE_TYPE_URL, change.resources);
    for (const [waypoint, names] of change.scopes)
      this.xds.setScope(WAYPOINT_SERVICE_TYPE_URL, waypoint, names);
    for (const s of change.statuses) this.status?.enqueue(s);
    for (const p of change.problems) {
      this.logger.warn(
        { code: 'MESH_ERR_ISTIOD_L7_CONFIG', object: p.object, problem: p.message },
        'waypoint L7 config partly skipped',
      );
    }
  }

  /** `/debug/waypointz`: per waypoint, the ServiceConfigs it is sent and its connected clients. */
  waypointz(opts: { waypoint: string | null; configs: boolean }): unknown {
    const type = metricType(WAYPOINT_SERVICE_TYPE_URL);
    const clients = this.xds.syncz().filter((s) => s.types[type]?.scope);
    const out: Record<string, unknown> = {};
    const scopes = [...this.l7.allScopes()].sort(([a], [b]) => (a < b ? -1 : 1));
    for (const [waypoint, names] of scopes) {
      if (opts.waypoint !== null && opts.waypoint !== waypoint) continue;
      const sorted = [...names].sort();
      const entry: Record<string, unknown> = {
        serves: sorted.filter((n) => this.l7.config(n)?.waypoints.includes(waypoint)),
        backends: sorted.filter((n) => !this.l7.config(n)?.waypoints.includes(waypoint)),
        clients: clients
          .filter((c) => c.types[type]?.scope === waypoint)
          .map((c) => ({
            proxy: c.proxy,
            identity: c.identity,
            state: c.types[type]?.state,
            resourcesAcked: c.types[type]?.resourcesAcked,
          })),
      };
      if (opts.configs) {
        entry.configs = Object.fromEntries(
          sorted.flatMap((n) => {
            const cfg = this.l7.config(n);
            return cfg ? [[n, ServiceConfig.toJSON(cfg)]] : [];
          }),
        );
      }
      out[waypoint] = entry;
    }
    return { waypoints: out };
  }

  stop(): void {
    this.stopped = true;
    for (const r of this.running) {
      if (r.timer) clearTimeout(r.timer);
      r.informer.stop().catch(() => {});
    }
  }

  // ---- informers ---------------------------------------------------------------------------------------------

  private makeInformers(kc: KubeConfig): void {
    const api = kc.makeApiClient(CustomObjectsApi);
    for (const kind of L7_KINDS) {
      const src = SOURCES[kind];
      const r: Running = {
        kind,
        informer: null as never,
        synced: false,
        delayMs: RESTART_INITIAL_MS,
        timer: null,
      };
      const informer = makeInformer(kc, `/apis/${src.group}/${src.version}/${src.plural}`, async () => {
        const list = (await api.listClusterCustomObject(src)) as KubernetesListObject<KubernetesObject>;
        // The informer delivers the listed objects in later microtasks; a macrotask runs after them.
        setImmediate(() => this.markSynced(r));
        return list;
      });
      (r as { informer: typeof informer }).informer = informer;
      const emit = (event: InformerEvent) => (obj: KubernetesObject) =>
        this.apply(kind, event, obj as L7KindMap[typeof kind]);
      informer.on('add', emit('add'));
      informer.on('update', emit('update'));
      informer.on('delete', emit('delete'));
      informer.on('error', (err: unknown) => this.restart(r, err));
      this.running.push(r);
    }
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
