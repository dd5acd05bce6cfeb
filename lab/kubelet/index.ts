/**
 * lab/kubelet: the per-node kubelet of the lab (node registration, lease, pods → PodRuntime, pods/status,
 * graceful deletion, events) and the Services/EndpointSlices → service proxy + cluster DNS sync.
 */
export { Kubelet, type KubeletOptions, kubeletError, NODE_LEASE_NAMESPACE } from './kubelet.ts';
export {
  expand,
  PodWaiting,
  parseQuantity,
  qosClass,
  type ResolveContext,
  type ResolvedPod,
  resolvePod,
  resolveVolumes,
  type ServiceLink,
  serviceLinkEnv,
} from './podspec.ts';
export { ServiceSync, type ServiceSyncOptions, type ServiceView, serviceView } from './services.ts';
