/**
 * Garbage collector (ownerReferences), like kube-controller-manager's:
 * - background: an object whose owners are all gone (no object with that uid, or a namespaced owner in
 *   another namespace) is deleted; references to missing owners are dropped when other owners remain;
 * - `orphan` finalizer: dependents lose their reference to the owner, then the finalizer is removed;
 * - `foregroundDeletion` finalizer: dependents are deleted (foreground too); once none is left the finalizer
 *   is removed and the owner goes away.
 */

import { FINALIZER_FOREGROUND, FINALIZER_ORPHAN } from '../apiserver/api.ts';
import { clone, type JsonObject } from '../apiserver/json.ts';
import type { ResourceType } from '../apiserver/resources.ts';
import { ApiError } from '../apiserver/status.ts';
import type { StoreEvent } from '../apiserver/store.ts';
import type { WorkQueue } from './queue.ts';
import {
  type Controller,
  type ControllerContext,
  deleting,
  md,
  nameOf,
  nsOf,
  ownerRefs,
  uidOf,
} from './util.ts';

function finalizers(obj: JsonObject): string[] {
  const f = md(obj).finalizers;
  return Array.isArray(f) ? f.filter((x): x is string => typeof x === 'string') : [];
}

function refKey(key: string, obj: JsonObject): string {
  return `${key}|${nsOf(obj)}/${nameOf(obj)}`;
}

export class GarbageCollector implements Controller {
  readonly name = 'garbagecollector';
  private readonly ctx: ControllerContext;

  constructor(ctx: ControllerContext) {
    this.ctx = ctx;
  }

  private interesting(obj: JsonObject): boolean {
    const f = finalizers(obj);
    return (
      ownerRefs(obj).length > 0 ||
      (deleting(obj) && (f.includes(FINALIZER_ORPHAN) || f.includes(FINALIZER_FOREGROUND)))
    );
  }

  initial(q: WorkQueue): void {
    for (const key of this.ctx.store.keys())
      for (const o of this.ctx.store.list(key)) if (this.interesting(o)) q.add(refKey(key, o));
  }

  onEvent(ev: StoreEvent, q: WorkQueue): void {
    if (ev.type === 'DELETED') {
      for (const d of this.ctx.store.dependents(uidOf(ev.object))) q.add(refKey(d.key, d.object));
      // A dependent left: an owner waiting in foreground deletion may now finish.
      for (const r of ownerRefs(ev.object)) {
        const owner = this.ctx.store.byUid(r.uid);
        if (owner && deleting(owner.object)) q.add(refKey(owner.key, owner.object));
      }
      return;
    }
    if (this.interesting(ev.object)) q.add(refKey(ev.key, ev.object));
  }

  private typeOf(key: string): ResourceType | undefined {
    return this.ctx.api.registry.byKey(key);
  }

  async reconcile(ref: string): Promise<void> {
    const bar = ref.indexOf('|');
    const key = ref.slice(0, bar);
    const nsName = ref.slice(bar + 1);
    const slash = nsName.indexOf('/');
    const ns = nsName.slice(0, slash);
    const name = nsName.slice(slash + 1);
    const obj = this.ctx.store.get(key, ns, name);
    const t = this.typeOf(key);
    if (!obj || !t) return;
    const api = this.ctx.api;
    const fins = finalizers(obj);
    if (deleting(obj) && fins.includes(FINALIZER_ORPHAN)) {
      for (const d of this.ctx.store.dependents(uidOf(obj))) {
        const dt = this.typeOf(d.key);
        if (!dt) continue;
        const next = clone(d.object);
        (next.metadata as JsonObject).ownerReferences = ownerRefs(d.object).filter(
          (r) => r.uid !== uidOf(obj),
        );
        await api.update(dt, dt.storageVersion, nsOf(d.object), nameOf(d.object), next).catch(ignore404);
      }
      await this.dropFinalizer(t, obj, FINALIZER_ORPHAN);
      return;
    }
    if (deleting(obj) && fins.includes(FINALIZER_FOREGROUND)) {
      const deps = this.ctx.store.dependents(uidOf(obj));
      for (const d of deps) {
        const dt = this.typeOf(d.key);
        if (!dt || deleting(d.object)) continue;
        await api
          .delete(dt, dt.storageVersion, nsOf(d.object), nameOf(d.object), {
            propagationPolicy: 'Foreground',
          })
          .catch(ignore404);
      }
      if (deps.length > 0) return;
      await this.dropFinalizer(t, obj, FINALIZER_FOREGROUND);
      return;
    }
    const refs = ownerRefs(obj);
    if (refs.length === 0) return;
    const absent = refs.filter((r) => {
      const owner = this.ctx.store.byUid(r.uid);
      if (!owner) return true;
      const ownerNs = nsOf(owner.object);
      return ownerNs !== '' && ownerNs !== ns;
    });
    if (absent.length === 0) return;
    if (absent.length === refs.length) {
      if (!deleting(obj))
        await api.delete(t, t.storageVersion, ns, name, { propagationPolicy: 'Background' }).catch(ignore404);
      return;
    }
    const next = clone(obj);
    (next.metadata as JsonObject).ownerReferences = refs.filter((r) => !absent.includes(r));
    await api.update(t, t.storageVersion, ns, name, next).catch(ignore404);
  }

  private async dropFinalizer(t: ResourceType, obj: JsonObject, finalizer: string): Promise<void> {
    const next = clone(obj);
    (next.metadata as JsonObject).finalizers = finalizers(obj).filter((f) => f !== finalizer);
    await this.ctx.api.update(t, t.storageVersion, nsOf(obj), nameOf(obj), next).catch(ignore404);
  }
}

function ignore404(err: unknown): void {
  if (!(err instanceof ApiError && err.code === 404)) throw err;
}
