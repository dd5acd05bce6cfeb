/**
 * Kubernetes client setup shared by the components. In a pod, `loadKubeConfig()` uses the mounted service
 * account (token, CA, KUBERNETES_SERVICE_HOST/PORT), exactly as on a real cluster; outside, KUBECONFIG.
 */
import {
  KubeConfig,
  type KubernetesObject,
  type ListPromise,
  ListWatch,
  Watch,
} from '@kubernetes/client-node';

export { KubeConfig } from '@kubernetes/client-node';

/** Where Kubernetes mounts the service account in every pod. */
export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export function loadKubeConfig(kubeconfigPath?: string): KubeConfig {
  const kc = new KubeConfig();
  if (kubeconfigPath) kc.loadFromFile(kubeconfigPath);
  else kc.loadFromDefault();
  return kc;
}

/** The HTTP status of a client-node error (ApiException has `code`), or null. */
export function statusCodeOf(err: unknown): number | null {
  if (err && typeof err === 'object') {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'number') return code;
    const status = (err as { statusCode?: unknown }).statusCode;
    if (typeof status === 'number') return status;
  }
  return null;
}

export const isNotFound = (err: unknown): boolean => statusCodeOf(err) === 404;
export const isConflict = (err: unknown): boolean => statusCodeOf(err) === 409;

export interface InformerOptions {
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
}

/**
 * A list+watch cache (client-node's ListWatch) that starts when `start()` is called, with optional label and
 * field selectors applied to both the list and the watch.
 */
export function informer<T extends KubernetesObject>(
  kc: KubeConfig,
  path: string,
  listFn: ListPromise<T>,
  opts: InformerOptions = {},
): ListWatch<T> {
  return new ListWatch<T>(path, new Watch(kc), listFn, false, opts.labelSelector, opts.fieldSelector);
}
