/**
 * The lab's kube-controller-manager (+ scheduler), running in-process beside the API server:
 * namespace lifecycle, scheduling, Deployment → ReplicaSet → Pod, DaemonSet, EndpointSlice/Endpoints,
 * ownerReference garbage collection, pod GC. They read the API server's in-memory state and write through the
 * same API semantics as remote clients (validation, admission, optimistic concurrency).
 *
 *   const controllers = await Controllers.create({ api, logger });
 *   controllers.run();  …  await controllers.close();
 */
import type { Logger } from 'pino';
import { pino } from 'pino';
import type { ApiServer } from '../apiserver/index.ts';
import type { StoreEvent } from '../apiserver/store.ts';
import { DaemonSetController } from './daemonset.ts';
import { DeploymentController } from './deployment.ts';
import { EndpointsController } from './endpoints.ts';
import { GarbageCollector } from './gc.ts';
import { NamespaceController } from './namespace.ts';
import { PodGarbageCollector } from './podgc.ts';
import { WorkQueue } from './queue.ts';
import { ReplicaSetController } from './replicaset.ts';
import { Scheduler } from './scheduler.ts';
import { type Controller, type ControllerContext, EventRecorder } from './util.ts';

export { NODE_LEASE_NAMESPACE } from './podgc.ts';
export type { Controller, ControllerContext } from './util.ts';

export interface ControllersOptions {
  readonly api: ApiServer;
  readonly logger?: Logger;
  /** A node whose Lease was renewed within this window counts as having a live kubelet (kube: 40 s). */
  readonly nodeLeaseFreshMs?: number;
  /** Which controllers to run (default: all). */
  readonly only?: readonly string[];
}

/** kube-controller-manager's --node-monitor-grace-period. */
const DEFAULT_NODE_LEASE_FRESH_MS = 40_000;
/** How often expired Events are swept. */
const EVENT_SWEEP_INTERVAL_MS = 5 * 60 * 1000;

export class Controllers {
  private readonly ctx: ControllerContext;
  private readonly entries: Array<{ controller: Controller; queue: WorkQueue }>;
  private unsubscribe: (() => void) | null = null;

  private constructor(ctx: ControllerContext, controllers: Controller[], logger: Logger) {
    this.ctx = ctx;
    this.entries = controllers.map((controller) => ({
      controller,
      queue: new WorkQueue(
        controller.name,
        (key) => controller.reconcile(key),
        logger.child({ controller: controller.name }),
      ),
    }));
  }

  static async create(o: ControllersOptions): Promise<Controllers> {
    const logger = o.logger ?? pino({ level: 'silent' });
    const api = o.api.api;
    const ctx: ControllerContext = {
      client: o.api.client,
      api,
      store: api.store,
      logger,
      caPem: o.api.caPem,
      events: new EventRecorder(o.api.client, api.store, logger),
      nodeLeaseFreshMs: o.nodeLeaseFreshMs ?? DEFAULT_NODE_LEASE_FRESH_MS,
    };
    const all: Controller[] = [
      new NamespaceController(ctx),
      new Scheduler(ctx),
      new DeploymentController(ctx),
      new ReplicaSetController(ctx),
      new DaemonSetController(ctx),
      new EndpointsController(ctx),
      new GarbageCollector(ctx),
      new PodGarbageCollector(ctx),
    ];
    const chosen = o.only ? all.filter((c) => o.only?.includes(c.name)) : all;
    return new Controllers(ctx, chosen, logger);
  }

  /** Subscribes to changes and queues a full resync. */
  run(): void {
    if (this.unsubscribe) return;
    this.unsubscribe = this.ctx.store.subscribe((ev: StoreEvent) => {
      for (const { controller, queue } of this.entries) controller.onEvent(ev, queue);
    });
    for (const { controller, queue } of this.entries) controller.initial(queue);
    this.ctx.events.startSweeper(EVENT_SWEEP_INTERVAL_MS);
  }

  /**
   * Resolves once no controller has queued or running work and every write is durable and published (retry
   * timers may still be pending). Tests use it to wait for the controllers to settle.
   */
  async idle(): Promise<void> {
    // Two quiet rounds in a row: one controller's writes can wake another one.
    for (let quiet = 0; quiet < 2; ) {
      await this.ctx.store.sync();
      await new Promise<void>((r) => setImmediate(r));
      if (this.entries.some((e) => e.queue.busy())) {
        quiet = 0;
        await Promise.all(this.entries.map((e) => e.queue.idle()));
      } else quiet++;
    }
  }

  async close(): Promise<void> {
    this.unsubscribe?.();
    this.unsubscribe = null;
    this.ctx.events.stop();
    await Promise.all(this.entries.map((e) => e.queue.stop()));
  }
}
