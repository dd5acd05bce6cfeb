/**
 * istiod's xDS serving: the delta ADS server, node id parsing, push debouncing and pilot_* metrics.
 */
export { DEBOUNCE_MAX_MS, DEBOUNCE_QUIET_MS, Debouncer } from './debounce.ts';
export { type DebugSources, handleDebugRequest } from './debug.ts';
export { metricType } from './metrics.ts';
export { formatNodeId, NODE_TYPES, type NodeParseResult, type ParsedNode, parseNodeId } from './node.ts';
export {
  type AccessDecision,
  type AccessRequest,
  DEFAULT_TYPES,
  MAX_REQUEST_BYTES,
  resourceVersion,
  type ServeOptions,
  type SyncStatus,
  type TypeAccess,
  type TypeSyncStatus,
  XdsServer,
  type XdsServerOptions,
} from './server.ts';
