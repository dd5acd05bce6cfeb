/**
 * What the agent needs from Kubernetes, behind one small interface so the controller is unit-tested with
 * plain objects (FakeKube in tests) and runs against the API with client-node informers:
 * - pods on this node (field selector `spec.nodeName=<node>`) and all namespaces (their labels), as
 *   add/update/delete events; `start()` resolves once both caches are synced;
 * - the capture annotation, written with a JSON merge patch (null removes it);
 * - whether our DaemonSet still exists (Istio's upgrade check before removing the plugin on shutdown).
 */
import {
  AppsV1Api,
  CoreV1Api,
  type KubeConfig,
  type ListWatch,
  PatchStrategy,
  setHeaderOptions,
  type V1Namespace,
  type V1Pod,
} from '@kubernetes/client-node';
import { informer, isNotFound } from '../../../pkg/kube/index.ts';
import { type NamespaceLike, type PodLike, REDIRECTION_ANNOTATION } from './ambient.ts';

export type EventType = 'add' | 'update' | 'delete';

export interface KubeHandlers {
  pod(type: EventType, pod: PodLike): void;
  namespace(type: EventType, ns: NamespaceLike): void;
}

export interface KubeSource {
  /** Starts watching; resolves when the initial lists of pods and namespaces have been delivered. */
  start(handlers: KubeHandlers): Promise<void>;
  stop(): Promise<void>;
  /** Sets (or with null removes) `ambient.istio.io/redirection` on a pod. */
  patchRedirection(namespace: string, name: string, value: string | null): Promise<void>;
  /** True if the DaemonSet exists and is not being deleted, false if not, null if unknown. */
  daemonSetActive(namespace: string, name: string): Promise<boolean | null>;
}

/** The client-node implementation. */
export class ApiKubeSource implements KubeSource {
  readonly #kc: KubeConfig;
  readonly #nodeName: string;
  readonly #core: CoreV1Api;
  readonly #apps: AppsV1Api;
  #pods: ListWatch<V1Pod> | null = null;
  #namespaces: ListWatch<V1Namespace> | null = null;

  constructor(kc: KubeConfig, nodeName: string) {
    this.#kc = kc;
    this.#nodeName = nodeName;
    this.#core = kc.makeApiClient(CoreV1Api);
    this.#apps = kc.makeApiClient(AppsV1Api);
  }

  async start(h: KubeHandlers): Promise<void> {
    const fieldSelector = `spec.nodeName=${this.#nodeName}`;
    const pods = informer<V1Pod>(
      this.#kc,
      '/api/v1/pods',
      () => this.#core.listPodForAllNamespaces({ fieldSelector }),
      { fieldSelector },
    );
    const namespaces = informer<V1Namespace>(this.#kc, '/api/v1/namespaces', () =>
      this.#core.listNamespace(),
    );
    // Namespaces first: a pod event is only decided once its namespace is known.
    namespaces.on('add', (o) => h.namespace('add', o as NamespaceLike));
    namespaces.on('update', (o) => h.namespace('update', o as NamespaceLike));
    namespaces.on('delete', (o) => h.namespace('delete', o as NamespaceLike));
    pods.on('add', (o) => h.pod('add', o as PodLike));
    pods.on('update', (o) => h.pod('update', o as PodLike));
    pods.on('delete', (o) => h.pod('delete', o as PodLike));
    this.#pods = pods;
    this.#namespaces = namespaces;
    await namespaces.start();
    await pods.start();
  }

  async stop(): Promise<void> {
    await Promise.all([this.#pods?.stop(), this.#namespaces?.stop()]);
  }

  async patchRedirection(namespace: string, name: string, value: string | null): Promise<void> {
    await this.#core.patchNamespacedPod(
      { name, namespace, body: { metadata: { annotations: { [REDIRECTION_ANNOTATION]: value } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
  }

  async daemonSetActive(namespace: string, name: string): Promise<boolean | null> {
    try {
      const ds = await this.#apps.readNamespacedDaemonSet({ name, namespace });
      return !ds.metadata?.deletionTimestamp;
    } catch (err) {
      return isNotFound(err) ? false : null;
    }
  }
}
