/**
 * The Gateway controller's Kubernetes side: the writes it makes (server-side apply of the deployed objects,
 * status merge patches with a resourceVersion precondition, GatewayClass creation) behind a small interface a
 * unit test can fake, and label-selected informers for the Deployments and ServiceAccounts it manages.
 */
import {
  AppsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  makeInformer,
  PatchStrategy,
  setHeaderOptions,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { describeError } from '../../../pkg/errors/index.ts';
import { isConflict, isNotFound } from '../../../pkg/kube/index.ts';
import type {
  Condition,
  GatewayAddress,
  GatewayClassObject,
  ListenerStatus,
  LiveObject,
  Manifest,
} from './index.ts';
import { FIELD_MANAGER, GATEWAY_GROUP, GATEWAY_VERSION, MANAGED_LABEL } from './names.ts';

export type ManagedKind = Manifest['kind'];

export interface GatewayStatusPatch {
  readonly conditions: readonly Condition[];
  /** null removes the field. */
  readonly addresses: readonly GatewayAddress[] | null;
  readonly listeners: readonly ListenerStatus[];
}

/** Every write the controller makes, and the one read it needs outside its caches. */
export interface GatewayApi {
  /** Server-side apply (force, our field manager): creates the object or brings our fields in line. */
  apply(m: Manifest): Promise<void>;
  /** The live object, or null when there is none. */
  get(kind: ManagedKind, namespace: string, name: string): Promise<LiveObject | null>;
  patchGatewayStatus(
    namespace: string,
    name: string,
    resourceVersion: string,
    s: GatewayStatusPatch,
  ): Promise<void>;
  /** Creates a GatewayClass; resolves false when it already exists. */
  createGatewayClass(obj: GatewayClassObject): Promise<boolean>;
  patchGatewayClassStatus(
    name: string,
    resourceVersion: string,
    conditions: readonly Condition[],
  ): Promise<void>;
}

const APPLY = setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply);
const MERGE_PATCH = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

function timeString(t: Condition['lastTransitionTime']): string | undefined {
  return t instanceof Date ? t.toISOString() : t;
}

function conditionsJson(conditions: readonly Condition[]) {
  return conditions.map((c) => ({ ...c, lastTransitionTime: timeString(c.lastTransitionTime) }));
}

export class KubeGatewayApi implements GatewayApi {
  private readonly core: CoreV1Api;
  private readonly apps: AppsV1Api;
  private readonly custom: CustomObjectsApi;

  constructor(kc: KubeConfig) {
    this.core = kc.makeApiClient(CoreV1Api);
    this.apps = kc.makeApiClient(AppsV1Api);
    this.custom = kc.makeApiClient(CustomObjectsApi);
  }

  async apply(m: Manifest): Promise<void> {
    const req = {
      name: m.metadata.name,
      namespace: m.metadata.namespace,
      body: m,
      fieldManager: FIELD_MANAGER,
      force: true,
    };
    switch (m.kind) {
      case 'ServiceAccount':
        await this.core.patchNamespacedServiceAccount(req, APPLY);
        return;
      case 'Service':
        await this.core.patchNamespacedService(req, APPLY);
        return;
      case 'Deployment':
        await this.apps.patchNamespacedDeployment(req, APPLY);
        return;
    }
  }

  async get(kind: ManagedKind, namespace: string, name: string): Promise<LiveObject | null> {
    try {
      switch (kind) {
        case 'ServiceAccount':
          return (await this.core.readNamespacedServiceAccount({ name, namespace })) as LiveObject;
        case 'Service':
          return (await this.core.readNamespacedService({ name, namespace })) as LiveObject;
        case 'Deployment':
          return (await this.apps.readNamespacedDeployment({ name, namespace })) as LiveObject;
      }
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  }

  async patchGatewayStatus(
    namespace: string,
    name: string,
    resourceVersion: string,
    s: GatewayStatusPatch,
  ): Promise<void> {
    const body = {
      // resourceVersion makes this a compare-and-swap: a concurrent writer causes a 409 and a later retry.
      metadata: { resourceVersion },
      status: {
        conditions: conditionsJson(s.conditions),
        addresses: s.addresses,
        listeners: s.listeners.map((l) => ({ ...l, conditions: conditionsJson(l.conditions) })),
      },
    };
    await this.custom.patchNamespacedCustomObjectStatus(
      { group: GATEWAY_GROUP, version: GATEWAY_VERSION, plural: 'gateways', namespace, name, body },
      MERGE_PATCH,
    );
  }

  async createGatewayClass(obj: GatewayClassObject): Promise<boolean> {
    try {
      await this.custom.createClusterCustomObject({
        group: GATEWAY_GROUP,
        version: GATEWAY_VERSION,
        plural: 'gatewayclasses',
        body: obj,
      });
      return true;
    } catch (err) {
      if (isConflict(err)) return false;
      throw err;
    }
  }

  async patchGatewayClassStatus(
    name: string,
    resourceVersion: string,
    conditions: readonly Condition[],
  ): Promise<void> {
    await this.custom.patchClusterCustomObjectStatus(
      {
        group: GATEWAY_GROUP,
        version: GATEWAY_VERSION,
        plural: 'gatewayclasses',
        name,
        body: { metadata: { resourceVersion }, status: { conditions: conditionsJson(conditions) } },
      },
      MERGE_PATCH,
    );
  }
}

/** First restart delay after a list/watch failure; doubled up to RESTART_MAX_MS (as the shared informers). */
const RESTART_INITIAL_MS = 1000;
const RESTART_MAX_MS = 30_000;
/** Only what carries the managed label: the controller never needs the cluster's other Deployments. */
const MANAGED_SELECTOR = MANAGED_LABEL;

export type OwnedEvent = 'add' | 'update' | 'delete';

/**
 * List+watch of the Deployments and ServiceAccounts that carry `gateway.istio.io/managed`, restarted with
 * back-off when the watch fails. `synced` resolves once both have listed.
 */
export class OwnedInformers {
  readonly synced: Promise<void>;
  private readonly informers: Array<{
    kind: ManagedKind;
    start: () => Promise<void>;
    stop: () => Promise<void>;
    delayMs: number;
    timer: NodeJS.Timeout | null;
  }> = [];
  private stopped = false;

  constructor(
    kc: KubeConfig,
    logger: Logger,
    onEvent: (kind: ManagedKind, event: OwnedEvent, obj: LiveObject) => void,
  ) {
    const core = kc.makeApiClient(CoreV1Api);
    const apps = kc.makeApiClient(AppsV1Api);
    let pending = 2;
    let resolveSynced: () => void = () => {};
    this.synced = new Promise((resolve) => {
      resolveSynced = resolve;
    });
    const sources: Array<[ManagedKind, string, () => Promise<KubernetesListObject<KubernetesObject>>]> = [
      [
        'Deployment',
        '/apis/apps/v1/deployments',
        () => apps.listDeploymentForAllNamespaces({ labelSelector: MANAGED_SELECTOR }),
      ],
      [
        'ServiceAccount',
        '/api/v1/serviceaccounts',
        () => core.listServiceAccountForAllNamespaces({ labelSelector: MANAGED_SELECTOR }),
      ],
    ];
    for (const [kind, path, listFn] of sources) {
      let listed = false;
      const list = async () => {
        const result = await listFn();
        // The informer delivers the listed objects in a later microtask; a macrotask runs after them.
        if (!listed) {
          listed = true;
          setImmediate(() => {
            if (--pending === 0) resolveSynced();
          });
        }
        return result;
      };
      const informer = makeInformer(kc, path, list, MANAGED_SELECTOR);
      const entry = {
        kind,
        start: () => informer.start(),
        stop: () => informer.stop(),
        delayMs: RESTART_INITIAL_MS,
        timer: null as NodeJS.Timeout | null,
      };
      for (const ev of ['add', 'update', 'delete'] as const)
        informer.on(ev, (obj: KubernetesObject) => {
          entry.delayMs = RESTART_INITIAL_MS;
          onEvent(kind, ev, obj as LiveObject);
        });
      informer.on('error', (err: unknown) => {
        if (this.stopped) return;
        logger.warn(
          { code: 'MESH_ERR_ISTIOD_INFORMER', kind, err: describeError(err), retryInMs: entry.delayMs },
          'informer failed; restarting',
        );
        const delay = entry.delayMs;
        entry.delayMs = Math.min(RESTART_MAX_MS, entry.delayMs * 2);
        entry.timer = setTimeout(() => {
          entry.timer = null;
          if (!this.stopped) entry.start().catch(() => {});
        }, delay);
      });
      this.informers.push(entry);
    }
  }

  async start(): Promise<void> {
    await Promise.all(this.informers.map((i) => i.start()));
  }

  stop(): void {
    this.stopped = true;
    for (const i of this.informers) {
      if (i.timer) clearTimeout(i.timer);
      i.stop().catch(() => {});
    }
  }
}
