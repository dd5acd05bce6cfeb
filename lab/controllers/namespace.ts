/**
 * Namespace lifecycle (kube-controller-manager's namespace, serviceaccount and root-ca-cert-publisher
 * controllers): every active namespace has ServiceAccount `default` and ConfigMap `kube-root-ca.crt`; a
 * terminating namespace has its content deleted, then its `kubernetes` finalizer removed so it disappears.
 */
import { clone, type JsonObject, objAt } from '../apiserver/json.ts';
import { ApiError } from '../apiserver/status.ts';
import type { StoreEvent } from '../apiserver/store.ts';
import { RequeueAfter, type WorkQueue } from './queue.ts';
import { type Controller, type ControllerContext, deleting, K, nameOf, nsOf } from './util.ts';

/** How often a terminating namespace is re-checked while content (e.g. terminating pods) remains. */
const TERMINATING_RECHECK_MS = 500;
export const ROOT_CA_CONFIGMAP = 'kube-root-ca.crt';

export class NamespaceController implements Controller {
  readonly name = 'namespace';
  private readonly ctx: ControllerContext;

  constructor(ctx: ControllerContext) {
    this.ctx = ctx;
  }

  initial(q: WorkQueue): void {
    for (const ns of this.ctx.store.list(K.namespaces)) q.add(nameOf(ns));
  }

  onEvent(ev: StoreEvent, q: WorkQueue): void {
    if (ev.key === K.namespaces) q.add(nameOf(ev.object));
    else if (ev.key === K.serviceaccounts && ev.type === 'DELETED' && nameOf(ev.object) === 'default')
      q.add(nsOf(ev.object));
    else if (ev.type === 'DELETED' && nsOf(ev.object) !== '') {
      const ns = this.ctx.store.get(K.namespaces, '', nsOf(ev.object));
      if (ns && deleting(ns)) q.add(nsOf(ev.object));
    }
    if (ev.key === K.configmaps && ev.type !== 'ADDED' && nameOf(ev.object) === ROOT_CA_CONFIGMAP)
      q.add(nsOf(ev.object));
  }

  async reconcile(name: string): Promise<void> {
    const ns = this.ctx.store.get(K.namespaces, '', name);
    if (!ns) return;
    if (deleting(ns)) return this.terminate(ns);
    const c = this.ctx.client;
    if (!this.ctx.store.get(K.serviceaccounts, name, 'default')) {
      await ignoreExists(c.create('v1/serviceaccounts', { metadata: { name: 'default', namespace: name } }));
    }
    const cm = this.ctx.store.get(K.configmaps, name, ROOT_CA_CONFIGMAP);
    const data = { 'ca.crt': this.ctx.caPem };
    const annotations = {
      'kubernetes.io/description':
        'Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.',
    };
    if (!cm) {
      await ignoreExists(
        c.create('v1/configmaps', {
          metadata: { name: ROOT_CA_CONFIGMAP, namespace: name, annotations },
          data,
        }),
      );
    } else if (objAt(cm, 'data')?.['ca.crt'] !== this.ctx.caPem && !deleting(cm)) {
      await c.update('v1/configmaps', { ...clone(cm), data });
    }
  }

  /** Deletes everything in the namespace; when nothing is left, drops the `kubernetes` finalizer. */
  private async terminate(ns: JsonObject): Promise<void> {
    const name = nameOf(ns);
    const q = this.ctx;
    let remaining = 0;
    const deletions: Array<Promise<unknown>> = [];
    for (const t of q.api.registry.all()) {
      if (!t.namespaced || !t.persisted) continue;
      const items = q.store.list(t.key, name);
      remaining += items.length;
      for (const o of items) {
        if (deleting(o)) continue;
        deletions.push(
          q.api
            .delete(t, t.storageVersion, name, nameOf(o), { propagationPolicy: 'Background' })
            .catch((err: unknown) => {
              if (!(err instanceof ApiError && err.code === 404)) throw err;
            }),
        );
      }
    }
    await Promise.all(deletions);
    if (remaining > 0) {
      // Content with finalizers or graceful deletion is still going away; look again shortly.
      throw new RequeueAfter(TERMINATING_RECHECK_MS, `namespace ${name} still has ${remaining} objects`);
    }
    const spec = objAt(ns, 'spec');
    const finalizers = Array.isArray(spec?.finalizers) ? spec.finalizers : [];
    if (finalizers.length > 0) {
      await q.client.update(
        'v1/namespaces',
        { ...clone(ns), spec: { ...spec, finalizers: finalizers.filter((f) => f !== 'kubernetes') } },
        'finalize',
      );
    }
  }
}

async function ignoreExists(p: Promise<unknown>): Promise<void> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ApiError && (err.code === 409 || err.code === 403 || err.code === 404)) return;
    throw err;
  }
}
