/**
 * The waypoint's L7 configuration: ServiceConfig resources by name, compiled into one engine ServiceTable per
 * accepted update. An update is all-or-nothing: when compiling it reports a problem in a resource of this
 * update, the update is rejected (the xDS client NACKs it) and the previous table keeps serving — Envoy's
 * behaviour for a route table with an invalid route. Requests read `store.table` once and keep that table for
 * their lifetime, so a swap never changes a request half-way.
 *
 * A removed service keeps serving, with its last config, for a short retirement window (`retireMs`): istiod
 * pushes the waypoint and the ztunnels independently, so when a service leaves this waypoint (unbound, waypoint
 * being deleted) the waypoint can hear first while ztunnels still send it that service's traffic for a moment —
 * answering it 503 would fail requests the mesh is in the middle of moving (Envoy likewise drains removed
 * listeners). After the window the table is rebuilt without it.
 */
import type { Logger } from 'pino';
import { MeshError } from '../../pkg/errors/index.ts';
import type { ServiceConfig } from '../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import { type BuildError, ServiceTable } from './engine/index.ts';

export interface StoreStatus {
  readonly services: number;
  /** Accepted updates. */
  readonly version: number;
  readonly rejected: number;
  readonly lastError: string | null;
  readonly lastUpdate: string | null;
}

export class ConfigStore {
  private readonly self: string;
  private readonly logger: Logger;
  private readonly configs = new Map<string, ServiceConfig>();
  private current: ServiceTable;
  private version = 0;
  private rejected = 0;
  private lastError: string | null = null;
  private lastUpdate: string | null = null;
  private readonly listeners: Array<() => void> = [];
  /** Removed services still served until their deadline (performance.now() ms). */
  private readonly retiring = new Map<string, { readonly cfg: ServiceConfig; readonly until: number }>();
  private retireTimer: NodeJS.Timeout | null = null;
  private readonly retireMs: number;

  /** `self`: this waypoint as `<namespace>/<gateway>` (ServiceConfig.waypoints entries). */
  constructor(self: string, logger: Logger, opts: { retireMs?: number } = {}) {
    this.self = self;
    this.logger = logger;
    this.retireMs = opts.retireMs ?? 5_000;
    this.current = ServiceTable.build([], { self, logger }).table;
  }

  /** Stops the retirement timer (shutdown). */
  close(): void {
    if (this.retireTimer) clearTimeout(this.retireTimer);
    this.retireTimer = null;
  }

  /** Current configs plus the retiring ones not replaced since. */
  private buildInput(
    next: ReadonlyMap<string, ServiceConfig>,
    retiring: ReadonlyMap<string, { readonly cfg: ServiceConfig }> = this.retiring,
  ): ServiceConfig[] {
    const out = [...next.values()];
    for (const [name, r] of retiring) if (!next.has(name)) out.push(r.cfg);
    return out;
  }

  private scheduleRetirement(): void {
    if (this.retireTimer || this.retiring.size === 0) return;
    const soonest = Math.min(...[...this.retiring.values()].map((r) => r.until));
    this.retireTimer = setTimeout(() => this.retire(), Math.max(0, soonest - performance.now()));
    this.retireTimer.unref();
  }

  /** Drops retiring services whose window has passed and rebuilds the table without them. */
  private retire(): void {
    this.retireTimer = null;
    const now = performance.now();
    let dropped = 0;
    for (const [name, r] of this.retiring)
      if (r.until <= now) {
        this.retiring.delete(name);
        dropped++;
      }
    if (dropped > 0) {
      // Everything left was accepted before; build problems were reported when it arrived.
      this.current = ServiceTable.build(this.buildInput(this.configs), {
        self: this.self,
        logger: this.logger,
        previous: this.current,
      }).table;
      this.logger.info({ retired: dropped, services: this.configs.size }, 'retired removed services');
      for (const fn of this.listeners) fn();
    }
    this.scheduleRetirement();
  }

  get table(): ServiceTable {
    return this.current;
  }

  get size(): number {
    return this.configs.size;
  }

  /** Called after every accepted update. */
  onChange(fn: () => void): void {
    this.listeners.push(fn);
  }

  /**
   * Applies one xDS response (delta: added/updated resources by name, removed names). Throws
   * MESH_ERR_XDS_NACK (so the caller NACKs) when a resource of this update does not compile; nothing changes
   * then.
   */
  apply(added: ReadonlyMap<string, ServiceConfig>, removed: readonly string[]): void {
    const next = new Map(this.configs);
    for (const name of removed) next.delete(name);
    for (const [name, cfg] of added) {
      const key = name || cfg.name;
      if (key === '') {
        this.reject('a ServiceConfig has no name');
      }
      next.set(key, cfg);
    }
    const until = performance.now() + this.retireMs;
    const retiring = new Map(this.retiring);
    for (const name of removed) {
      const old = this.configs.get(name);
      if (old && !next.has(name) && this.retireMs > 0) retiring.set(name, { cfg: old, until });
    }
    for (const name of next.keys()) retiring.delete(name);
    const { table, errors } = ServiceTable.build(this.buildInput(next, retiring), {
      self: this.self,
      logger: this.logger,
      previous: this.current,
    });
    const touched = new Set<string>();
    for (const [name, cfg] of added) {
      touched.add(name);
      touched.add(cfg.name);
    }
    const relevant = errors.filter((e: BuildError) => touched.has(e.service));
    if (relevant.length > 0) {
      this.reject(
        relevant.map((e) => `${e.service}${e.route ? ` route ${e.route}` : ''}: ${e.message}`).join('; '),
      );
    }
    for (const e of errors) {
      // Problems in resources not part of this update were reported when they arrived.
      if (!touched.has(e.service))
        this.logger.debug({ code: e.code, service: e.service, route: e.route }, e.message);
    }
    this.retiring.clear();
    for (const [k, v] of retiring) this.retiring.set(k, v);
    this.configs.clear();
    for (const [k, v] of next) this.configs.set(k, v);
    this.current = table;
    this.scheduleRetirement();
    this.version++;
    this.lastUpdate = new Date().toISOString();
    this.logger.info(
      { services: this.configs.size, added: added.size, removed: removed.length, version: this.version },
      'waypoint configuration updated',
    );
    for (const fn of this.listeners) fn();
  }

  private reject(message: string): never {
    this.rejected++;
    this.lastError = message;
    throw new MeshError('MESH_ERR_XDS_NACK', message);
  }

  /** The raw configs (admin /config_dump). */
  all(): ServiceConfig[] {
    return [...this.configs.values()];
  }

  status(): StoreStatus {
    return {
      services: this.configs.size,
      version: this.version,
      rejected: this.rejected,
      lastError: this.lastError,
      lastUpdate: this.lastUpdate,
    };
  }
}
