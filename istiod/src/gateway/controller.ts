/**
 * The Gateway deployment and status controller. It sees Gateways, GatewayClasses, Services and EndpointSlices
 * through the ambient controller's informers (`observe`, so nothing is watched twice) and the Deployments and
 * ServiceAccounts it manages through its own label-selected informers. Every event only enqueues the Gateway (or
 * class) it concerns; one worker reconciles queued keys in order, so a burst of events is one reconcile.
 *
 * A reconcile computes the desired objects and status from the caches and writes only what differs: an object
 * whose live state already has every field we want is not applied again, a status that would not change is not
 * patched. Our own writes come back as events, find nothing to do, and stop there (no write loop). Failures
 * retry with back-off (at most MAX_ATTEMPTS times until the next event), are counted, and are logged once per
 * distinct error and object.
 *
 * Objects with our name that we did not create (no `gateway.istio.io/managed` label) are left alone, as
 * upstream does: a user may bring their own ServiceAccount or Service. Deleting a Gateway deletes nothing here:
 * its objects carry an owner reference to it and the garbage collector removes them.
 */
import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { describeError } from '../../../pkg/errors/index.ts';
import { isNotFound } from '../../../pkg/kube/index.ts';
import { Counter, type Registry } from '../../../pkg/metrics/index.ts';
import type { InformerEvent } from '../kube/informers.ts';
import { BUILTIN_CLASSES, builtinClassObject, CLASS_INFOS, classInfoFor } from './classes.ts';
import type { GatewayClassObject, GatewayObject, LiveObject, Manifest, OwnerReference } from './index.ts';
import {
  type GatewayApi,
  KubeGatewayApi,
  type ManagedKind,
  type OwnedEvent,
  OwnedInformers,
} from './kube.ts';
import { GATEWAY_NAME_LABEL, MANAGED_LABEL } from './names.ts';
import {
  type BuildContext,
  buildResources,
  gatewayResourceName,
  isManagedGateway,
  satisfies,
} from './resources.ts';
import { desiredClassConditions, desiredGatewayStatus, type ServiceView } from './status.ts';

export interface GatewayControllerOptions {
  readonly kubeConfig: KubeConfig;
  /** Defaults to the Kubernetes API of `kubeConfig`; tests pass a recorder. */
  readonly api?: GatewayApi;
  readonly build: BuildContext;
  readonly domainSuffix: string;
  /** Deploy ServiceAccount/Service/Deployment for Gateways (PILOT_ENABLE_GATEWAY_API_DEPLOYMENT_CONTROLLER). */
  readonly deploy: boolean;
  /** Create the built-in GatewayClasses (PILOT_ENABLE_GATEWAY_API_GATEWAYCLASS_CONTROLLER). */
  readonly createClasses: boolean;
  /** Watch managed Deployments/ServiceAccounts (false in tests that feed `observeOwned` by hand). */
  readonly watchOwned?: boolean;
  readonly registry: Registry;
  readonly logger: Logger;
  /** RFC 3339 "now" for condition transitions (tests pin it). */
  readonly now?: () => string;
}

/** Shared informer kinds the controller listens to (others are ignored cheaply). */
type ObservedKind = 'Gateway' | 'GatewayClass' | 'Service' | 'EndpointSlice';

interface ServiceLike {
  readonly metadata?: LiveObject['metadata'];
  readonly spec?: {
    readonly type?: string;
    readonly clusterIP?: string;
    readonly clusterIPs?: readonly string[];
    readonly ports?: ReadonlyArray<{ readonly port?: number }>;
  };
  readonly status?: {
    readonly loadBalancer?: {
      readonly ingress?: ReadonlyArray<{ readonly ip?: string; readonly hostname?: string }>;
    };
  };
}

interface SliceLike {
  readonly metadata?: LiveObject['metadata'];
  readonly endpoints?: ReadonlyArray<{
    readonly addresses?: readonly string[];
    readonly conditions?: { readonly ready?: boolean };
  }>;
}

/** Retries per key before waiting for the next event (upstream's queue uses 5). */
const MAX_ATTEMPTS = 5;
const RETRY_INITIAL_MS = 200;
const RETRY_MAX_MS = 30_000;
const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
/** How often to look for the GatewayClass API when the Gateway API CRDs are not installed (as the informers). */
const CLASS_API_RECHECK_MS = 30_000;

const GW = 'gw:';
const CLASS = 'class:';

function keyOf(o: { metadata?: { name?: string; namespace?: string } }): string {
  return `${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
}

interface HasMeta {
  readonly metadata?: LiveObject['metadata'];
}

function isManagedObject(o: HasMeta | undefined | null): boolean {
  return o?.metadata?.labels?.[MANAGED_LABEL] !== undefined;
}

/** The Gateway a managed object belongs to: its Gateway owner reference, else its gateway-name label. */
function ownerGateway(o: HasMeta): string | null {
  const ns = o.metadata?.namespace ?? '';
  const ref = (o.metadata?.ownerReferences ?? []).find((r: OwnerReference) => r.kind === 'Gateway');
  if (ref?.name) return `${ns}/${ref.name}`;
  const label = o.metadata?.labels?.[GATEWAY_NAME_LABEL];
  return label ? `${ns}/${label}` : null;
}

function readyEndpoints(slice: SliceLike): number {
  let n = 0;
  // EndpointSlice semantics: an unset `ready` means ready.
  for (const ep of slice.endpoints ?? [])
    if (ep.conditions?.ready !== false && (ep.addresses?.length ?? 0) > 0) n++;
  return n;
}

function nowSeconds(): string {
  return new Date().toISOString().replace(/\.\d+Z$/, 'Z');
}

/** Everything but apiVersion/kind (list items may lack them) must already be on the live object. */
function upToDate(desired: Manifest, live: LiveObject): boolean {
  for (const [k, v] of Object.entries(desired)) {
    if (k === 'apiVersion' || k === 'kind') continue;
    if (!satisfies(v, live[k], k)) return false;
  }
  return true;
}

export class GatewayController {
  private readonly api: GatewayApi;
  private readonly opts: GatewayControllerOptions;
  private readonly logger: Logger;
  private readonly now: () => string;
  private readonly owned: OwnedInformers | null;

  private readonly gateways = new Map<string, GatewayObject>();
  private readonly classes = new Map<string, GatewayClassObject>();
  /** Services we manage (full objects); only the keys of the others, to never overwrite them. */
  private readonly managedServices = new Map<string, ServiceLike>();
  private readonly foreignServices = new Set<string>();
  private readonly deployments = new Map<string, LiveObject>();
  private readonly serviceAccounts = new Map<string, LiveObject>();
  /** Service key → slice name → ready endpoints. */
  private readonly readyBySlice = new Map<string, Map<string, number>>();

  private readonly queue = new Set<string>();
  private readonly attempts = new Map<string, number>();
  private readonly retryTimers = new Map<string, NodeJS.Timeout>();
  /** Looks for the GatewayClass API again while the Gateway API CRDs are missing. */
  private readonly recheckTimers = new Set<NodeJS.Timeout>();
  /** Last error message logged per key (logged again only when it changes). */
  private readonly lastError = new Map<string, string>();
  /**
   * What we last wrote, keyed by object: the resourceVersion our cache showed and the content. Until the write's
   * own event updates the cache, a reconcile sees the old object; it must not write the same thing again.
   */
  private readonly lastWrite = new Map<string, { rv: string; content: string }>();
  /** Foreign objects already reported (logged once). */
  private readonly reportedForeign = new Set<string>();
  private ready = false;
  private running = false;
  private scheduled = false;
  private stopped = false;

  private readonly writes: Counter<'kind' | 'op'>;
  private readonly errors: Counter<'kind'>;

  constructor(opts: GatewayControllerOptions) {
    this.opts = opts;
    this.api = opts.api ?? new KubeGatewayApi(opts.kubeConfig);
    this.logger = opts.logger;
    this.now = opts.now ?? nowSeconds;
    this.writes = new Counter({
      name: 'istiod_gateway_controller_writes_total',
      help: 'Writes made by the Gateway controller (apply of a deployed object, status patch, class creation).',
      labelNames: ['kind', 'op'],
      registers: [opts.registry],
    });
    this.errors = new Counter({
      name: 'istiod_gateway_controller_errors_total',
      help: 'Failed Gateway controller reconciles, by the kind being reconciled.',
      labelNames: ['kind'],
      registers: [opts.registry],
    });
    this.owned =
      opts.watchOwned === false
        ? null
        : new OwnedInformers(opts.kubeConfig, opts.logger, (kind, event, obj) =>
            this.observeOwned(kind, event, obj),
          );
  }

  /**
   * Starts the owned informers and begins reconciling once they and `sharedSynced` (the ambient informers) have
   * listed: acting on a partial cache would re-apply objects that already exist.
   */
  async start(sharedSynced: Promise<void>): Promise<void> {
    if (this.owned) {
      await this.owned.start();
      await this.owned.synced;
    }
    await sharedSynced;
    if (this.stopped) return;
    this.ready = true;
    for (const name of new Set([...BUILTIN_CLASSES.keys(), ...this.classes.keys()]))
      this.enqueue(CLASS + name);
    for (const key of this.gateways.keys()) this.enqueue(GW + key);
  }

  stop(): void {
    this.stopped = true;
    this.owned?.stop();
    for (const t of this.retryTimers.values()) clearTimeout(t);
    this.retryTimers.clear();
    for (const t of this.recheckTimers) clearTimeout(t);
    this.recheckTimers.clear();
    this.queue.clear();
  }

  /** Resolves when nothing is queued or running (tests). Pending retries do not count. */
  async idle(): Promise<void> {
    while (this.queue.size > 0 || this.running || this.scheduled) await new Promise((r) => setTimeout(r, 10));
  }

  /** Shared informer events (called for every kind; the ones not observed return at once). */
  observe(kind: string, event: InformerEvent, obj: unknown): void {
    switch (kind as ObservedKind) {
      case 'Gateway':
        this.onGateway(event, obj as GatewayObject);
        break;
      case 'GatewayClass':
        this.onClass(event, obj as GatewayClassObject);
        break;
      case 'Service':
        this.onService(event, obj as ServiceLike);
        break;
      case 'EndpointSlice':
        this.onSlice(event, obj as SliceLike);
        break;
    }
  }

  /** Events of the managed Deployments and ServiceAccounts. */
  observeOwned(kind: ManagedKind, event: OwnedEvent, obj: LiveObject): void {
    const store = kind === 'Deployment' ? this.deployments : this.serviceAccounts;
    const key = keyOf(obj);
    if (event === 'delete' || !isManagedObject(obj)) {
      store.delete(key);
      this.lastWrite.delete(`${kind}/${key}`);
    } else store.set(key, obj);
    const owner = ownerGateway(obj);
    if (owner) this.enqueue(GW + owner);
  }

  private onGateway(event: InformerEvent, gw: GatewayObject): void {
    const key = keyOf(gw);
    if (event === 'delete') {
      this.gateways.delete(key);
      this.lastWrite.delete(`Gateway/${key}/status`);
      this.forget(GW + key);
      return;
    }
    this.gateways.set(key, gw);
    this.enqueue(GW + key);
  }

  private onClass(event: InformerEvent, cls: GatewayClassObject): void {
    const name = cls.metadata?.name ?? '';
    if (event === 'delete') this.classes.delete(name);
    else this.classes.set(name, cls);
    this.enqueue(CLASS + name);
    for (const [key, gw] of this.gateways) if (gw.spec?.gatewayClassName === name) this.enqueue(GW + key);
  }

  private onService(event: InformerEvent, svc: ServiceLike): void {
    const key = keyOf(svc);
    const wasManaged = this.managedServices.has(key);
    if (event === 'delete') {
      this.managedServices.delete(key);
      this.foreignServices.delete(key);
      this.lastWrite.delete(`Service/${key}`);
    } else if (isManagedObject(svc)) {
      this.managedServices.set(key, svc);
      this.foreignServices.delete(key);
    } else {
      this.managedServices.delete(key);
      this.foreignServices.add(key);
    }
    if (wasManaged || isManagedObject(svc)) {
      const owner = ownerGateway(svc);
      if (owner) this.enqueue(GW + owner);
    }
  }

  private onSlice(event: InformerEvent, slice: SliceLike): void {
    const svcName = slice.metadata?.labels?.[SERVICE_NAME_LABEL];
    if (!svcName) return;
    const svcKey = `${slice.metadata?.namespace ?? ''}/${svcName}`;
    const sliceName = slice.metadata?.name ?? '';
    let bySlice = this.readyBySlice.get(svcKey);
    const before = bySlice?.get(sliceName) ?? 0;
    const after = event === 'delete' ? 0 : readyEndpoints(slice);
    if (event === 'delete') {
      bySlice?.delete(sliceName);
      if (bySlice?.size === 0) this.readyBySlice.delete(svcKey);
    } else {
      if (!bySlice) {
        bySlice = new Map();
        this.readyBySlice.set(svcKey, bySlice);
      }
      bySlice.set(sliceName, after);
    }
    // Status only cares whether a managed Service has any ready endpoint.
    if (before > 0 === after > 0) return;
    const svc = this.managedServices.get(svcKey);
    const owner = svc ? ownerGateway(svc) : null;
    if (owner) this.enqueue(GW + owner);
  }

  private enqueue(key: string): void {
    if (!this.ready || this.stopped) return;
    this.queue.add(key);
    this.schedule();
  }

  private forget(key: string): void {
    const t = this.retryTimers.get(key);
    if (t) clearTimeout(t);
    this.retryTimers.delete(key);
    this.attempts.delete(key);
    this.lastError.delete(key);
  }

  private schedule(): void {
    if (this.scheduled || this.running) return;
    this.scheduled = true;
    // Informer events arrive in bursts: drain once per turn of the event loop.
    setImmediate(() => {
      this.scheduled = false;
      void this.drain();
    });
  }

  private async drain(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      while (this.queue.size > 0 && !this.stopped) {
        const key = this.queue.values().next().value as string;
        this.queue.delete(key);
        await this.runOne(key);
      }
    } finally {
      this.running = false;
    }
    if (this.queue.size > 0 && !this.stopped) this.schedule();
  }

  private async runOne(key: string): Promise<void> {
    const kind = key.startsWith(GW) ? 'Gateway' : 'GatewayClass';
    try {
      if (kind === 'Gateway') await this.reconcileGateway(key.slice(GW.length));
      else await this.reconcileClass(key.slice(CLASS.length));
      if (this.lastError.has(key))
        this.logger.info({ object: key.slice(key.indexOf(':') + 1), kind }, 'gateway reconcile recovered');
      this.forget(key);
    } catch (err) {
      this.errors.inc({ kind });
      const message = describeError(err);
      const object = key.slice(key.indexOf(':') + 1);
      if (this.lastError.get(key) !== message) {
        this.lastError.set(key, message);
        this.logger.warn(
          { code: 'MESH_ERR_ISTIOD_GATEWAY', kind, object, err: message },
          'gateway reconcile failed',
        );
      } else {
        this.logger.debug({ kind, object, err: message }, 'gateway reconcile failed again');
      }
      const n = (this.attempts.get(key) ?? 0) + 1;
      this.attempts.set(key, n);
      if (n >= MAX_ATTEMPTS) {
        // Wait for the next event about this object; keep lastError so the same failure is not logged again.
        this.attempts.delete(key);
        return;
      }
      const delay = Math.min(RETRY_MAX_MS, RETRY_INITIAL_MS * 2 ** (n - 1));
      const timer = setTimeout(() => {
        this.retryTimers.delete(key);
        this.enqueue(key);
      }, delay);
      timer.unref();
      this.retryTimers.set(key, timer);
    }
  }

  private async reconcileClass(name: string): Promise<void> {
    const cls = this.classes.get(name);
    if (!cls && this.opts.createClasses) {
      const obj = builtinClassObject(name);
      if (obj) {
        // Create only, never update: the class is the user's to change once it exists (upstream behaviour).
        let created: boolean;
        try {
          created = await this.api.createGatewayClass(obj);
        } catch (err) {
          if (!isNotFound(err)) throw err;
          // The Gateway API CRDs are not installed (yet): look again later, it is not an error.
          this.logger.debug({ gatewayClass: name }, 'GatewayClass API not installed; will check again');
          const timer = setTimeout(() => {
            this.recheckTimers.delete(timer);
            this.enqueue(CLASS + name);
          }, CLASS_API_RECHECK_MS);
          timer.unref();
          this.recheckTimers.add(timer);
          return;
        }
        if (created) {
          this.writes.inc({ kind: 'GatewayClass', op: 'create' });
          this.logger.info({ gatewayClass: name }, 'created GatewayClass');
        }
        return; // its add event brings it back here for status
      }
    }
    if (!cls) return;
    if (!CLASS_INFOS.has(cls.spec?.controllerName ?? '') || cls.metadata?.deletionTimestamp) return;
    const conditions = desiredClassConditions({
      generation: cls.metadata?.generation ?? 0,
      current: cls.status?.conditions ?? [],
      now: this.now(),
    });
    if (!conditions) return;
    const rv = cls.metadata?.resourceVersion ?? '';
    const id = `GatewayClass/${name}/status`;
    if (this.alreadyWritten(id, rv, conditions)) return;
    try {
      await this.api.patchGatewayClassStatus(name, rv, conditions);
    } catch (err) {
      this.lastWrite.delete(id);
      throw err;
    }
    this.writes.inc({ kind: 'GatewayClass', op: 'status' });
  }

  /** True when `content` was written while the cache showed `rv` (so the cache is merely behind). */
  private alreadyWritten(id: string, rv: string, content: unknown): boolean {
    const text = JSON.stringify(content, (k, v: unknown) => (k === 'lastTransitionTime' ? undefined : v));
    const last = this.lastWrite.get(id);
    if (last && last.rv === rv && last.content === text) return true;
    this.lastWrite.set(id, { rv, content: text });
    return false;
  }

  private async reconcileGateway(key: string): Promise<void> {
    const gw = this.gateways.get(key);
    if (!gw || gw.metadata?.deletionTimestamp) return;
    const info = classInfoFor(gw.spec?.gatewayClassName ?? '', (n) => this.classes.get(n));
    // Not one of our classes, or a Gateway pointing at an existing deployment (spec.addresses): not ours to run.
    if (!info || !isManagedGateway(gw)) return;
    const namespace = gw.metadata?.namespace ?? '';
    const name = gatewayResourceName(gw, info);
    let firstError: unknown = null;
    if (this.opts.deploy) {
      const desired = buildResources(gw, info, this.opts.build);
      for (const m of [desired.serviceAccount, desired.service, desired.deployment]) {
        try {
          await this.ensure(m);
        } catch (err) {
          firstError ??= err;
        }
      }
    }
    const svcKey = `${namespace}/${name}`;
    const svc = this.managedServices.get(svcKey);
    const { status, changed } = desiredGatewayStatus({
      gateway: gw,
      info,
      serviceName: name,
      domainSuffix: this.opts.domainSuffix,
      service: svc ? this.serviceView(svcKey, svc) : null,
      now: this.now(),
    });
    const rv = gw.metadata?.resourceVersion ?? '';
    if (changed && !this.alreadyWritten(`Gateway/${key}/status`, rv, status)) {
      try {
        await this.api.patchGatewayStatus(namespace, gw.metadata?.name ?? '', rv, status);
      } catch (err) {
        this.lastWrite.delete(`Gateway/${key}/status`);
        // Deleted meanwhile: its delete event is on the way and there is nothing left to write.
        if (isNotFound(err)) return;
        throw err;
      }
      this.writes.inc({ kind: 'Gateway', op: 'status' });
    }
    if (firstError) throw firstError;
  }

  private serviceView(key: string, svc: ServiceLike): ServiceView {
    const ips = svc.spec?.clusterIPs?.length
      ? svc.spec.clusterIPs
      : svc.spec?.clusterIP
        ? [svc.spec.clusterIP]
        : [];
    let ready = 0;
    for (const n of this.readyBySlice.get(key)?.values() ?? []) ready += n;
    return {
      type: svc.spec?.type ?? 'ClusterIP',
      clusterIPs: ips.filter((ip) => ip && ip !== 'None'),
      ports: (svc.spec?.ports ?? []).map((p) => p.port ?? 0),
      loadBalancer: (svc.status?.loadBalancer?.ingress ?? [])
        .map((i) => i.ip || i.hostname || '')
        .filter((a) => a !== ''),
      readyEndpoints: ready,
    };
  }

  /** Applies one desired object unless it is up to date or belongs to someone else. */
  private async ensure(m: Manifest): Promise<void> {
    const key = `${m.metadata.namespace}/${m.metadata.name}`;
    let live: LiveObject | null | undefined =
      m.kind === 'Deployment'
        ? this.deployments.get(key)
        : m.kind === 'ServiceAccount'
          ? this.serviceAccounts.get(key)
          : (this.managedServices.get(key) as LiveObject | undefined);
    if (!live) {
      // Our caches only hold managed objects (Services: all). An unmanaged one with this name may exist.
      live =
        m.kind === 'Service'
          ? this.foreignServices.has(key)
            ? { metadata: {} }
            : null
          : await this.api.get(m.kind, m.metadata.namespace, m.metadata.name);
    }
    if (live && !isManagedObject(live)) {
      const id = `${m.kind}/${key}`;
      if (!this.reportedForeign.has(id)) {
        this.reportedForeign.add(id);
        this.logger.info(
          { kind: m.kind, object: key },
          'an object with this name exists and is not managed by the gateway controller; leaving it alone',
        );
      }
      return;
    }
    this.reportedForeign.delete(`${m.kind}/${key}`);
    if (live && upToDate(m, live)) return;
    const id = `${m.kind}/${key}`;
    if (this.alreadyWritten(id, live?.metadata?.resourceVersion ?? '', m)) return;
    try {
      await this.api.apply(m);
    } catch (err) {
      this.lastWrite.delete(id);
      throw err;
    }
    this.writes.inc({ kind: m.kind, op: 'apply' });
    this.logger.info(
      { kind: m.kind, object: key },
      live ? 'updated gateway object' : 'created gateway object',
    );
  }
}
