/**
 * The object store: every object in memory (a lab is small), a global monotonic resourceVersion, a bounded
 * window of past events for watches (older start points get 410 Gone, like a compacted etcd), and the
 * write-ahead log underneath. A write is applied in memory synchronously (so optimistic-concurrency checks
 * need no locks), then acknowledged and published to watchers only after it is durable, in resourceVersion
 * order.
 */
import type { Logger } from 'pino';
import { MeshError } from '../../pkg/errors/index.ts';
import { isObject, type JsonObject } from './json.ts';
import { gone } from './status.ts';
import { Wal, type WalRecord } from './wal.ts';

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoreEvent {
  readonly type: EventType;
  readonly rv: number;
  /** Storage key of the resource type. */
  readonly key: string;
  /** The object after the change; for DELETED, the last state stamped with the deletion's resourceVersion. */
  readonly object: JsonObject;
  /** The object before the change (null for ADDED). */
  readonly prev: JsonObject | null;
}

export interface WatchSpec {
  readonly key: string;
  /** Only objects of this namespace; null = all. */
  readonly namespace: string | null;
  /** Events strictly after this resourceVersion; null = start from the current state (synthetic ADDEDs). */
  readonly fromRv: number | null;
  /** Send the current state as ADDED events first (watch without resourceVersion, or sendInitialEvents). */
  readonly initialState: boolean;
  /** Label/field selector; applied to old and new state so objects moving out of the selection are DELETED. */
  readonly matches: (obj: JsonObject) => boolean;
}

export interface WatchSink {
  send(type: EventType, obj: JsonObject): void;
}

export interface StoreOptions {
  readonly dir: string;
  /** Events kept for watches resuming from an older resourceVersion. */
  readonly historyWindow: number;
  /** Write a snapshot (and drop older log segments) after this many records. */
  readonly snapshotEvery: number;
  readonly logger: Logger;
}

function metaOf(obj: JsonObject): JsonObject {
  return isObject(obj.metadata) ? obj.metadata : {};
}

function ownerUids(obj: JsonObject | null): string[] {
  if (!obj) return [];
  const refs = metaOf(obj).ownerReferences;
  if (!Array.isArray(refs)) return [];
  return refs.map((r) => (isObject(r) && typeof r.uid === 'string' ? r.uid : '')).filter((u) => u !== '');
}

export function objectKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

/** A watch registered with the store. */
export class StoreWatch {
  readonly spec: WatchSpec;
  private readonly sink: WatchSink;
  /** Highest resourceVersion this watcher is known to reflect; older events are skipped. */
  lastRv: number;
  stopped = false;

  constructor(spec: WatchSpec, sink: WatchSink, startRv: number) {
    this.spec = spec;
    this.sink = sink;
    this.lastRv = startRv;
  }

  deliver(ev: StoreEvent): void {
    if (this.stopped || ev.rv <= this.lastRv) return;
    this.lastRv = ev.rv;
    const ns = this.spec.namespace;
    if (ns !== null && metaOf(ev.object).namespace !== ns) return;
    const now = ev.type !== 'DELETED' && this.spec.matches(ev.object);
    const before = ev.prev !== null && this.spec.matches(ev.prev);
    if (ev.type === 'DELETED') {
      if (before) this.sink.send('DELETED', ev.object);
    } else if (now && before) this.sink.send('MODIFIED', ev.object);
    else if (now) this.sink.send('ADDED', ev.object);
    else if (before) this.sink.send('DELETED', ev.object);
  }
}

export class Store {
  private readonly tables = new Map<string, Map<string, JsonObject>>();
  private readonly uidIndex = new Map<string, { key: string; nsName: string }>();
  /** owner uid → dependents (`<storage key>|<ns>/<name>`). */
  private readonly ownerIndex = new Map<string, Set<string>>();
  private readonly watchers = new Map<string, Set<StoreWatch>>();
  private readonly listeners = new Set<(ev: StoreEvent) => void>();
  private readonly history: StoreEvent[] = [];
  private historyStart = 0;
  private readonly pendingEvents: StoreEvent[] = [];
  private readonly wal: Wal;
  private readonly opts: StoreOptions;
  private snapshotting: Promise<void> | null = null;
  private failure: unknown = null;
  /** Highest resourceVersion assigned (in memory). */
  rv = 0;
  /** Highest resourceVersion durable and published. */
  publishedRv = 0;
  /** Watches must start at or after this resourceVersion. */
  compactedRv = 0;

  private constructor(wal: Wal, opts: StoreOptions) {
    this.wal = wal;
    this.opts = opts;
  }

  static async open(opts: StoreOptions): Promise<Store> {
    const { wal, recovered } = await Wal.open(opts.dir);
    const store = new Store(wal, opts);
    const snap = recovered.snapshot;
    if (snap) {
      for (const [key, objs] of Object.entries(snap.objects)) {
        for (const o of objs) {
          const md = metaOf(o);
          store.place(key, objectKey(String(md.namespace ?? ''), String(md.name ?? '')), o);
        }
      }
      store.rv = snap.rv;
    }
    store.compactedRv = store.rv;
    for (const rec of recovered.records) store.replay(rec);
    store.publishedRv = store.rv;
    opts.logger.info(
      { rv: store.rv, snapshotRv: snap?.rv ?? 0, replayed: recovered.records.length, dir: opts.dir },
      'state recovered',
    );
    return store;
  }

  private replay(rec: WalRecord): void {
    const table = this.tables.get(rec.k);
    const prev = table?.get(rec.n) ?? null;
    this.place(rec.k, rec.n, rec.o);
    this.rv = Math.max(this.rv, rec.rv);
    const ev = this.eventFor(rec.k, rec.rv, rec.o, prev);
    if (ev) this.remember(ev);
  }

  private eventFor(
    key: string,
    rv: number,
    obj: JsonObject | null,
    prev: JsonObject | null,
  ): StoreEvent | null {
    if (obj) return { type: prev ? 'MODIFIED' : 'ADDED', rv, key, object: obj, prev };
    if (!prev) return null;
    const object = { ...prev, metadata: { ...metaOf(prev), resourceVersion: String(rv) } };
    return { type: 'DELETED', rv, key, object, prev };
  }

  /** Sets or removes an object in memory and keeps the indexes right. */
  private place(key: string, nsName: string, obj: JsonObject | null): void {
    let table = this.tables.get(key);
    if (!table) {
      table = new Map();
      this.tables.set(key, table);
    }
    const prev = table.get(nsName) ?? null;
    const ref = `${key}|${nsName}`;
    for (const u of ownerUids(prev)) {
      const deps = this.ownerIndex.get(u);
      deps?.delete(ref);
      if (deps?.size === 0) this.ownerIndex.delete(u);
    }
    const prevUid = prev ? metaOf(prev).uid : undefined;
    if (typeof prevUid === 'string') this.uidIndex.delete(prevUid);
    if (obj) {
      table.set(nsName, obj);
      const uid = metaOf(obj).uid;
      if (typeof uid === 'string') this.uidIndex.set(uid, { key, nsName });
      for (const u of ownerUids(obj)) {
        let s = this.ownerIndex.get(u);
        if (!s) {
          s = new Set();
          this.ownerIndex.set(u, s);
        }
        s.add(ref);
      }
    } else table.delete(nsName);
  }

  private remember(ev: StoreEvent): void {
    this.history.push(ev);
    const excess = this.history.length - this.historyStart - this.opts.historyWindow;
    if (excess > 0) {
      const dropped = this.history[this.historyStart + excess - 1] as StoreEvent;
      this.historyStart += excess;
      this.compactedRv = dropped.rv;
      // Compact the backing array now and then instead of shifting on every event.
      if (this.historyStart > this.opts.historyWindow) {
        this.history.splice(0, this.historyStart);
        this.historyStart = 0;
      }
    }
  }

  get(key: string, namespace: string, name: string): JsonObject | undefined {
    return this.tables.get(key)?.get(objectKey(namespace, name));
  }

  /** Objects of a type (optionally one namespace), in etcd key order (namespace, then name). */
  list(key: string, namespace?: string | null): JsonObject[] {
    const table = this.tables.get(key);
    if (!table) return [];
    const prefix = namespace ? `${namespace}/` : null;
    const keys = [...table.keys()].filter((k) => prefix === null || k.startsWith(prefix)).sort();
    return keys.map((k) => table.get(k) as JsonObject);
  }

  count(key: string, namespace?: string): number {
    const table = this.tables.get(key);
    if (!table) return 0;
    if (!namespace) return table.size;
    let n = 0;
    for (const k of table.keys()) if (k.startsWith(`${namespace}/`)) n++;
    return n;
  }

  keys(): IterableIterator<string> {
    return this.tables.keys();
  }

  byUid(uid: string): { key: string; object: JsonObject } | undefined {
    const ref = this.uidIndex.get(uid);
    if (!ref) return undefined;
    const object = this.tables.get(ref.key)?.get(ref.nsName);
    return object ? { key: ref.key, object } : undefined;
  }

  /** Objects whose ownerReferences name `ownerUid`. */
  dependents(ownerUid: string): Array<{ key: string; object: JsonObject }> {
    const out: Array<{ key: string; object: JsonObject }> = [];
    for (const ref of this.ownerIndex.get(ownerUid) ?? []) {
      const bar = ref.indexOf('|');
      const key = ref.slice(0, bar);
      const object = this.tables.get(key)?.get(ref.slice(bar + 1));
      if (object) out.push({ key, object });
    }
    return out;
  }

  /**
   * Writes (or removes, with `obj === null`) an object. The caller has validated it. Stamps
   * `metadata.resourceVersion`, applies it in memory now, and resolves with the stored object (for a removal:
   * the last state stamped with the deletion's resourceVersion) once it is durable.
   */
  commit(key: string, namespace: string, name: string, obj: JsonObject | null): Promise<JsonObject> {
    if (this.failure) return Promise.reject(this.failure);
    const nsName = objectKey(namespace, name);
    const prev = this.tables.get(key)?.get(nsName) ?? null;
    const rv = this.rv + 1;
    if (obj) metaOf(obj).resourceVersion = String(rv);
    const ev = this.eventFor(key, rv, obj, prev);
    if (!ev)
      return Promise.reject(
        new MeshError('MESH_ERR_INTERNAL_BUG', `BUG: removal of missing object ${key} ${nsName}`),
      );
    this.rv = rv;
    this.place(key, nsName, obj);
    this.pendingEvents.push(ev);
    return this.wal.append({ rv, k: key, n: nsName, o: obj }).then(
      () => {
        this.publish(rv);
        this.maybeSnapshot();
        return ev.object;
      },
      (err: unknown) => {
        // The log is broken: memory is ahead of disk. Refuse further writes rather than diverge more.
        this.failure = err;
        this.opts.logger.error({ err }, 'write-ahead log failed; the API server no longer accepts writes');
        throw err;
      },
    );
  }

  private publish(upTo: number): void {
    while (this.pendingEvents.length > 0 && (this.pendingEvents[0] as StoreEvent).rv <= upTo) {
      const ev = this.pendingEvents.shift() as StoreEvent;
      this.publishedRv = ev.rv;
      this.remember(ev);
      for (const w of this.watchers.get(ev.key) ?? []) w.deliver(ev);
      for (const l of this.listeners) {
        try {
          l(ev);
        } catch (err) {
          this.opts.logger.error({ err }, 'store listener threw');
        }
      }
    }
  }

  /**
   * Registers a watch. Throws 410 Gone when `fromRv` is older than the retained history. The current state (if
   * requested) or the history after `fromRv` is sent synchronously before this returns.
   */
  watch(spec: WatchSpec, sink: WatchSink): StoreWatch {
    if (spec.fromRv !== null && spec.fromRv < this.compactedRv) {
      throw gone(`too old resource version: ${spec.fromRv} (${this.compactedRv})`);
    }
    let w: StoreWatch;
    if (spec.fromRv === null || spec.initialState) {
      w = new StoreWatch(spec, sink, this.rv);
      for (const obj of this.list(spec.key, spec.namespace)) if (spec.matches(obj)) sink.send('ADDED', obj);
    } else {
      w = new StoreWatch(spec, sink, spec.fromRv);
      for (let i = this.historyStart; i < this.history.length; i++) {
        const ev = this.history[i] as StoreEvent;
        if (ev.key === spec.key) w.deliver(ev);
      }
      w.lastRv = Math.max(w.lastRv, this.publishedRv);
    }
    let set = this.watchers.get(spec.key);
    if (!set) {
      set = new Set();
      this.watchers.set(spec.key, set);
    }
    set.add(w);
    return w;
  }

  unwatch(w: StoreWatch): void {
    w.stopped = true;
    this.watchers.get(w.spec.key)?.delete(w);
  }

  /** In-process subscription to every published event (controllers); returns an unsubscribe function. */
  subscribe(listener: (ev: StoreEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Resolves when all writes so far are durable and published. */
  async sync(): Promise<void> {
    await this.wal.sync();
  }

  private maybeSnapshot(): void {
    if (this.snapshotting || this.wal.recordsSinceSnapshot < this.opts.snapshotEvery) return;
    this.snapshotting = this.snapshot()
      .catch((err: unknown) => this.opts.logger.error({ err }, 'snapshot failed; the log keeps growing'))
      .finally(() => {
        this.snapshotting = null;
      });
  }

  /** Serialises the current state and writes it as the new snapshot. */
  async snapshot(): Promise<void> {
    const objects: Record<string, JsonObject[]> = {};
    for (const [key, table] of this.tables) if (table.size > 0) objects[key] = [...table.values()];
    const rv = this.rv;
    await this.wal.snapshot(rv, objects);
    this.opts.logger.debug({ rv }, 'snapshot written');
  }

  async close(snapshot: boolean): Promise<void> {
    for (const set of this.watchers.values()) for (const w of set) w.stopped = true;
    this.watchers.clear();
    this.listeners.clear();
    if (this.snapshotting) await this.snapshotting;
    await this.wal.sync();
    if (snapshot && !this.failure) await this.snapshot();
    await this.wal.close();
  }
}
