/**
 * lab/node: the lab's nodes as network namespaces on a lab-owned bridge, with per-node directories and CNI
 * configuration, and the cleanup that removes a lab (or a crashed lab's leftovers) completely.
 * See plan.ts for the address plan and network.ts for the topology.
 */
export {
  type CleanupOptions,
  type CleanupReport,
  cleanupLeftovers,
  listNetns,
  NETNS_DIR,
  netnsInode,
  netnsPath,
  processesInNetns,
} from './cleanup.ts';
export { CNI_VERSION, CONFLIST_NAME, NETWORK_NAME, nodeConflist, SYSTEM_CNI_DIR } from './cni-config.ts';
export { NetnsPortForward, type NetnsPortForwardOptions } from './forward.ts';
export {
  CLUSTER_DOMAIN,
  type FabricInfo,
  LabNetwork,
  type LabNetworkOptions,
  type LabNode,
  mapHostPath,
  type NodeDirs,
  type NodeViewMount,
  nodeViewMounts,
  PASSTHROUGH_HOST_PATHS,
  runInNetns,
} from './network.ts';
export {
  type AddressPlan,
  addressPlan,
  inCidr,
  ipv4ToInt,
  MAX_NODES,
  names,
  validatePrefix,
} from './plan.ts';
export { type RecordedPid, readRegistry, readStates, type StateRecord, StateRecorder } from './state.ts';
export { DEFAULT_PATH, type RunOptions, type RunResult, run, shq, tool } from './sys.ts';
