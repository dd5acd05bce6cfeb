/**
 * lab/runtime: a pod runtime for one lab node (sandbox netns + CNI exactly as a container runtime invokes it,
 * containers as namespaced process trees with volumes, probes from the node netns, restarts with back-off,
 * graceful termination, exec, logs) producing core/v1-shaped pod status. See runtime.ts.
 */
export { Backoff, type BackoffOptions, KUBELET_BACKOFF } from './backoff.ts';
export {
  addNetworkList,
  CniError,
  type CniInvokeOptions,
  type CniNetworkList,
  type CniRuntimeConf,
  checkNetworkList,
  delNetworkList,
  loadNetworkList,
  resultIpv4,
} from './cni.ts';
export { ALL_CAPABILITIES, capabilitySet, DEFAULT_CAPABILITIES } from './launch.ts';
export { readCriLog } from './logs.ts';
export { POD_IFNAME, PodRuntime, type PodRuntimeOptions } from './runtime.ts';
export { buildPodStatus, podPhase } from './status.ts';
export type * from './types.ts';
export { etcHosts, resolvConf } from './volumes.ts';
