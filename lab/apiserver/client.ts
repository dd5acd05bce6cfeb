/**
 * An in-process client over the API semantics (same validation, admission, concurrency and watch behaviour as
 * HTTP, without the network): what the lab controllers use. Resources are named `v1/pods`,
 * `apps/v1/deployments`, `gateway.networking.k8s.io/v1/gateways`.
 */
import type { ApiCore, DeleteOptions, PatchType, WriteOptions } from './api.ts';
import type { JsonObject } from './json.ts';
import type { ResourceType } from './resources.ts';
import { ApiError, resourceNotFound } from './status.ts';
import type { EventType, StoreWatch } from './store.ts';

export interface ListFilter {
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
}

export interface LocalWatchOptions extends ListFilter {
  readonly namespace?: string;
  readonly resourceVersion?: string;
}

function split(gvr: string): { group: string; version: string; resource: string } {
  const parts = gvr.split('/');
  if (parts.length === 2) return { group: '', version: parts[0] as string, resource: parts[1] as string };
  if (parts.length === 3)
    return { group: parts[0] as string, version: parts[1] as string, resource: parts[2] as string };
  throw new ApiError(
    400,
    'BadRequest',
    `resource "${gvr}" must be <version>/<resource> or <group>/<version>/<resource>`,
  );
}

function nsName(obj: JsonObject): { namespace: string; name: string } {
  const md = (obj.metadata ?? {}) as JsonObject;
  return {
    namespace: typeof md.namespace === 'string' ? md.namespace : '',
    name: typeof md.name === 'string' ? md.name : '',
  };
}

export class LocalClient {
  readonly api: ApiCore;

  constructor(api: ApiCore) {
    this.api = api;
  }

  private type(gvr: string): { t: ResourceType; version: string } {
    const { group, version, resource } = split(gvr);
    const t = this.api.registry.find(group, version, resource);
    if (!t) throw resourceNotFound();
    return { t, version };
  }

  /** The object, or null when it does not exist. */
  get(gvr: string, namespace: string, name: string): JsonObject | null {
    const { t, version } = this.type(gvr);
    try {
      return this.api.get(t, version, namespace, name);
    } catch (err) {
      if (err instanceof ApiError && err.code === 404) return null;
      throw err;
    }
  }

  list(gvr: string, namespace: string | null = null, filter: ListFilter = {}): JsonObject[] {
    const { t, version } = this.type(gvr);
    return this.api.list(t, version, namespace, filter).items;
  }

  create(gvr: string, obj: JsonObject, opts: WriteOptions = {}): Promise<JsonObject> {
    const { t, version } = this.type(gvr);
    return this.api.create(t, version, nsName(obj).namespace, obj, opts);
  }

  update(
    gvr: string,
    obj: JsonObject,
    subresource: '' | 'status' | 'finalize' = '',
    opts: WriteOptions = {},
  ): Promise<JsonObject> {
    const { t, version } = this.type(gvr);
    const { namespace, name } = nsName(obj);
    return this.api.update(t, version, namespace, name, obj, opts, subresource);
  }

  patch(
    gvr: string,
    namespace: string,
    name: string,
    type: PatchType,
    patch: unknown,
    subresource: '' | 'status' = '',
    opts: WriteOptions = {},
  ): Promise<JsonObject> {
    const { t, version } = this.type(gvr);
    return this.api.patch(t, version, namespace, name, type, patch, opts, subresource);
  }

  delete(gvr: string, namespace: string, name: string, opts: DeleteOptions = {}): Promise<JsonObject> {
    const { t, version } = this.type(gvr);
    return this.api.delete(t, version, namespace, name, opts);
  }

  bind(namespace: string, pod: string, node: string): Promise<JsonObject> {
    return this.api.bind(namespace, pod, {
      apiVersion: 'v1',
      kind: 'Binding',
      metadata: { name: pod, namespace },
      target: { apiVersion: 'v1', kind: 'Node', name: node },
    });
  }

  /** Starts a watch; events arrive synchronously with the store's publication. Returns a stop function. */
  watch(
    gvr: string,
    opts: LocalWatchOptions,
    onEvent: (type: EventType, obj: JsonObject) => void,
  ): () => void {
    const { t, version } = this.type(gvr);
    const w: StoreWatch = this.api.watch(t, version, opts.namespace ?? null, opts, { send: onEvent });
    return () => this.api.store.unwatch(w);
  }
}
