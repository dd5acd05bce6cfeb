/**
 * Which pods the agent captures: the plain-object view of Pods and Namespaces it needs and the decision
 * itself (a pure function, unit-tested with scenario tables). Mirrors Istio's `PodRedirectionEnabled`
 * (istio/istio cni/pkg/util, facts only) and ARCHITECTURE.md: ambient = namespace label or pod label
 * `istio.io/dataplane-mode=ambient`, the pod label is not `none`, not hostNetwork, not in an excluded
 * namespace, not a sidecar-injected pod, not terminated.
 */

export const DATAPLANE_MODE_LABEL = 'istio.io/dataplane-mode';
export const DATAPLANE_MODE_AMBIENT = 'ambient';
export const DATAPLANE_MODE_NONE = 'none';
/** Written by the agent once capture is in place (Istio's `ambient.istio.io/redirection`). */
export const REDIRECTION_ANNOTATION = 'ambient.istio.io/redirection';
export const REDIRECTION_ENABLED = 'enabled';
/** Rules are in place but ztunnel has not acked yet (Istio writes the same value). */
export const REDIRECTION_PENDING = 'pending';
/** Per-pod overrides Istio honours. */
export const BYPASS_INBOUND_ANNOTATION = 'ambient.istio.io/bypass-inbound-capture';
export const DNS_CAPTURE_ANNOTATION = 'ambient.istio.io/dns-capture';
/** A pod with an Istio sidecar is never captured by ambient. */
export const SIDECAR_STATUS_ANNOTATION = 'sidecar.istio.io/status';

/** The fields of a core/v1 Pod the agent reads (client-node objects and plain test objects both fit). */
export interface PodLike {
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    deletionTimestamp?: unknown;
    resourceVersion?: string;
  };
  spec?: {
    nodeName?: string;
    hostNetwork?: boolean;
    serviceAccountName?: string;
  };
  status?: {
    phase?: string;
    podIP?: string;
    podIPs?: Array<{ ip?: string }>;
  };
}

export interface NamespaceLike {
  metadata?: {
    name?: string;
    labels?: Record<string, string>;
  };
}

export interface AmbientPolicy {
  readonly excludedNamespaces: ReadonlySet<string>;
}

export interface Decision {
  readonly ambient: boolean;
  /** Why (for logs, the plugin reply and tests). */
  readonly reason: string;
}

/**
 * Should this pod be captured? `requireIp` is false on the plugin path, where the IPs come from the CNI
 * result before the API has them.
 */
export function ambientDecision(
  pod: PodLike,
  ns: NamespaceLike | null,
  policy: AmbientPolicy,
  requireIp: boolean,
): Decision {
  const namespace = pod.metadata?.namespace ?? '';
  if (policy.excludedNamespaces.has(namespace))
    return { ambient: false, reason: `namespace ${namespace} is excluded` };
  if (pod.spec?.hostNetwork) return { ambient: false, reason: 'hostNetwork pod' };
  const podMode = pod.metadata?.labels?.[DATAPLANE_MODE_LABEL];
  if (podMode === DATAPLANE_MODE_NONE)
    return { ambient: false, reason: `pod label ${DATAPLANE_MODE_LABEL}=none` };
  if (pod.metadata?.annotations?.[SIDECAR_STATUS_ANNOTATION] !== undefined) {
    return { ambient: false, reason: 'pod has an Istio sidecar' };
  }
  const nsMode = ns?.metadata?.labels?.[DATAPLANE_MODE_LABEL];
  if (podMode !== DATAPLANE_MODE_AMBIENT && nsMode !== DATAPLANE_MODE_AMBIENT) {
    return { ambient: false, reason: `neither pod nor namespace has ${DATAPLANE_MODE_LABEL}=ambient` };
  }
  if (isTerminated(pod)) return { ambient: false, reason: `pod phase ${pod.status?.phase}` };
  if (requireIp && podIps(pod).length === 0) return { ambient: false, reason: 'pod has no IP yet' };
  return { ambient: true, reason: podMode === DATAPLANE_MODE_AMBIENT ? 'pod label' : 'namespace label' };
}

/** Kubernetes' terminal phases (Istio's CheckPodTerminal). */
export function isTerminated(pod: PodLike): boolean {
  const phase = pod.status?.phase;
  return phase === 'Succeeded' || phase === 'Failed';
}

/** status.podIPs, else status.podIP. */
export function podIps(pod: PodLike): string[] {
  const ips = (pod.status?.podIPs ?? []).map((p) => p.ip ?? '').filter((ip) => ip.length > 0);
  if (ips.length > 0) return ips;
  return pod.status?.podIP ? [pod.status.podIP] : [];
}

export function redirectionState(pod: PodLike): string | null {
  return pod.metadata?.annotations?.[REDIRECTION_ANNOTATION] ?? null;
}

export function podKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

export function podLabel(pod: PodLike): string {
  return podKey(pod.metadata?.namespace ?? '', pod.metadata?.name ?? '');
}
