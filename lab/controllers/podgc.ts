/**
 * Pod garbage collection and the stand-in for absent kubelets:
 * - pods bound to a node that does not exist are force-deleted (kube's PodGC "orphaned pods");
 * - a pod in graceful deletion is finished (deleted with grace 0) when its node has no live kubelet, i.e. no
 *   `kube-node-lease/<node>` Lease renewed recently. With a live kubelet, finishing is the kubelet's job
 *   (after SIGTERM/SIGKILL of the containers), exactly as on a real cluster.
 */
import { objAt } from '../apiserver/json.ts';
import { ApiError } from '../apiserver/status.ts';
import type { StoreEvent } from '../apiserver/store.ts';
import { RequeueAfter, type WorkQueue } from './queue.ts';
import { type Controller, type ControllerContext, deleting, K, md, nsKey, splitKey } from './util.ts';

export const NODE_LEASE_NAMESPACE = 'kube-node-lease';
/** How often a terminating pod with a live kubelet is looked at again (in case the kubelet dies). */
const LIVE_KUBELET_RECHECK_MS = 5_000;

export class PodGarbageCollector implements Controller {
  readonly name = 'podgc';
  private readonly ctx: ControllerContext;

  constructor(ctx: ControllerContext) {
    this.ctx = ctx;
  }

  initial(q: WorkQueue): void {
    for (const p of this.ctx.store.list(K.pods))
      if (deleting(p) || objAt(p, 'spec')?.nodeName) q.add(nsKey(p));
  }

  onEvent(ev: StoreEvent, q: WorkQueue): void {
    if (ev.key === K.pods && ev.type !== 'DELETED') {
      const node = objAt(ev.object, 'spec')?.nodeName;
      if (deleting(ev.object) || (typeof node === 'string' && node && !this.ctx.store.get(K.nodes, '', node)))
        q.add(nsKey(ev.object));
    } else if (ev.key === K.nodes && ev.type === 'DELETED') {
      const gone = String(md(ev.object).name ?? '');
      for (const p of this.ctx.store.list(K.pods)) if (objAt(p, 'spec')?.nodeName === gone) q.add(nsKey(p));
    } else if (ev.key === K.leases && ev.type === 'DELETED') {
      for (const p of this.ctx.store.list(K.pods)) if (deleting(p)) q.add(nsKey(p));
    }
  }

  /** True when the node's kubelet renewed its Lease within the freshness window. */
  private kubeletAlive(node: string): boolean {
    const lease = this.ctx.store.get(K.leases, NODE_LEASE_NAMESPACE, node);
    const renew = objAt(lease ?? {}, 'spec')?.renewTime;
    if (typeof renew !== 'string') return false;
    return Date.now() - Date.parse(renew) < this.ctx.nodeLeaseFreshMs;
  }

  async reconcile(key: string): Promise<void> {
    const [ns, name] = splitKey(key);
    const pod = this.ctx.store.get(K.pods, ns, name);
    if (!pod) return;
    const node = objAt(pod, 'spec')?.nodeName;
    const bound = typeof node === 'string' && node !== '';
    const nodeExists = bound && this.ctx.store.get(K.nodes, '', node as string) !== undefined;
    if (bound && !nodeExists) return this.forceDelete(ns, name);
    if (!deleting(pod)) return;
    if (bound && this.kubeletAlive(node as string))
      throw new RequeueAfter(LIVE_KUBELET_RECHECK_MS, 'kubelet is alive and finishes the pod');
    return this.forceDelete(ns, name);
  }

  private async forceDelete(ns: string, name: string): Promise<void> {
    try {
      await this.ctx.client.delete('v1/pods', ns, name, { gracePeriodSeconds: 0 });
    } catch (err) {
      if (!(err instanceof ApiError && err.code === 404)) throw err;
    }
  }
}
