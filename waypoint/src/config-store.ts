/**
 * The waypoint's L7 configuration: ServiceConfig resources by name, compiled into one engine ServiceTable per
 * accepted update. An update is all-or-nothing: when compiling it reports a problem in a resource of this
 * update, the update is rejected (the xDS client NACKs it) and the previous table keeps serving — Envoy's
 * behaviour for a route table with an invalid route. Requests read `store.table` once and keep that table for
 * their lifetime, so a swap never changes a request half-way.
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

  /** `self`: this waypoint as `<namespace>/<gateway>` (ServiceConfig.waypoints entries). */
  constructor(self: string, logger: Logger) {
    this.self = self;
    this.logger = logger;
    this.current = ServiceTable.build([], { self, logger }).table;
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
    const { table, errors } = ServiceTable.build([...next.values()], {
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
    this.configs.clear();
    for (const [k, v] of next) this.configs.set(k, v);
    this.current = table;
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
