/**
 * Informers → ambient index → xDS server (+ status writer): the ambient half of istiod's control loop.
 *
 * `AmbientPipeline` is the I/O-free part: it applies object events to the index and, once per event-loop turn,
 * flushes the index and hands the changed resources to the xDS server (which debounces pushes) and the changed
 * conditions to the status sink. `AmbientController` adds the Kubernetes informers in front of it.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { describeError } from '../../../pkg/errors/index.ts';
import { Counter, type Registry } from '../../../pkg/metrics/index.ts';
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL } from '../../../pkg/xds/index.ts';
import type { AmbientIndex, IndexChange, Kind, KindMap } from '../index/index.ts';
import { REASON_UNSUPPORTED, ZTUNNEL_ACCEPTED } from '../policy/index.ts';
import type { XdsServer } from '../xds/index.ts';
import { type InformerEvent, InformerSet } from './informers.ts';
import type { StatusSink } from './status.ts';

/** Told of every object event (after the index stored it) and of every flush's change (the waypoint L7 compiler). */
export interface AmbientObserver {
  event(kind: Kind, event: InformerEvent, obj: KindMap[Kind]): void;
  flushed(change: IndexChange): void;
}

export interface AmbientPipelineOptions {
  readonly index: AmbientIndex;
  readonly xds: XdsServer;
  /** Null or absent: conditions are computed but not written (e.g. a read-only istiod). */
  readonly status?: StatusSink | null;
  readonly registry: Registry;
  readonly logger: Logger;
  readonly observer?: AmbientObserver | null;
}

export class AmbientPipeline {
  readonly index: AmbientIndex;
  private readonly xds: XdsServer;
  private readonly status: StatusSink | null;
  private readonly observer: AmbientObserver | null;
  private readonly logger: Logger;
  private readonly events: Counter<'type' | 'event'>;
  private readonly rejected: Counter<'type' | 'name'>;
  private scheduled = false;

  constructor(opts: AmbientPipelineOptions) {
    this.index = opts.index;
    this.xds = opts.xds;
    this.status = opts.status ?? null;
    this.observer = opts.observer ?? null;
    this.logger = opts.logger;
    this.events = new Counter({
      name: 'pilot_k8s_cfg_events',
      help: 'Events from k8s config.',
      labelNames: ['type', 'event'],
      registers: [opts.registry],
    });
    this.rejected = new Counter({
      name: 'pilot_total_rejected_configs',
      help: 'Total number of configs that Pilot had to reject or ignore.',
      labelNames: ['type', 'name'],
      registers: [opts.registry],
    });
    // Whatever the index already holds (e.g. built before the pipeline) is served too.
    this.publish({
      addresses: opts.index.encodedAddresses(),
      authorizations: opts.index.encodedAuthorizations(),
      statuses: [],
    });
  }

  apply<K extends Kind>(kind: K, event: InformerEvent, obj: KindMap[K]): void {
    this.events.inc({
      type: kind,
      event: event === 'add' ? 'add' : event === 'update' ? 'update' : 'delete',
    });
    if (event === 'delete') this.index.remove(kind, obj);
    else this.index.upsert(kind, obj);
    this.observer?.event(kind, event, obj);
    this.schedule();
  }

  /** Flushes now (tests and shutdown); normally flushes run once per event-loop turn. */
  flush(): IndexChange {
    const change = this.index.flush();
    this.publish(change);
    this.observer?.flushed(change);
    return change;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    // Informer events arrive in bursts (a relist delivers every object): one flush per turn of the loop.
    setImmediate(() => {
      this.scheduled = false;
      try {
        this.flush();
      } catch (err) {
        this.logger.error({ err: describeError(err) }, 'BUG: ambient index flush failed');
      }
    });
  }

  private publish(change: IndexChange): void {
    if (change.addresses.size > 0) this.xds.update(ADDRESS_TYPE_URL, change.addresses);
    if (change.authorizations.size > 0) this.xds.update(AUTHORIZATION_TYPE_URL, change.authorizations);
    for (const s of change.statuses) {
      const accepted = s.conditions.get(ZTUNNEL_ACCEPTED);
      if (accepted && accepted.reason === REASON_UNSUPPORTED) {
        this.rejected.inc({ type: s.kind, name: `${s.namespace}/${s.name}` });
        this.logger.info(
          { kind: s.kind, object: `${s.namespace}/${s.name}`, message: accepted.message },
          'policy only partly enforceable by ztunnel',
        );
      }
      this.status?.enqueue(s);
    }
  }
}

export interface AmbientControllerOptions extends AmbientPipelineOptions {
  readonly kubeConfig: KubeConfig;
  /** Restrict the watched kinds (tests); default: all the index consumes. */
  readonly kinds?: readonly Kind[];
  /**
   * Also told every object event, after the index (e.g. the Gateway controller, which needs Gateways, Services
   * and EndpointSlices too: one set of watches serves both).
   */
  readonly observe?: <K extends Kind>(kind: K, event: InformerEvent, obj: KindMap[K]) => void;
}

export class AmbientController {
  readonly pipeline: AmbientPipeline;
  private readonly informers: InformerSet;

  private constructor(opts: AmbientControllerOptions) {
    this.pipeline = new AmbientPipeline(opts);
    this.informers = new InformerSet({
      kubeConfig: opts.kubeConfig,
      logger: opts.logger,
      kinds: opts.kinds,
      onEvent: (kind, event, obj) => {
        this.pipeline.apply(kind, event, obj);
        try {
          opts.observe?.(kind, event, obj);
        } catch (err) {
          opts.logger.error({ kind, err: describeError(err) }, 'BUG: informer event observer failed');
        }
      },
    });
  }

  /** Starts the informers; `synced` tells when every kind has listed once (gate readiness on it). */
  static async create(opts: AmbientControllerOptions): Promise<AmbientController> {
    const c = new AmbientController(opts);
    await c.informers.start();
    return c;
  }

  get synced(): Promise<void> {
    return this.informers.synced;
  }

  informerStatus(): Record<string, boolean> {
    return this.informers.status();
  }

  stop(): void {
    this.informers.stop();
  }
}
