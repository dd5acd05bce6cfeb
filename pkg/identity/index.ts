/**
 * Workload identity: SPIFFE IDs, keys, CSRs, certificates, chain checks and the certificate manager.
 */
export { type ChainResult, verifyChain } from './chain.ts';
export {
  type CaClient,
  CertManager,
  type CertManagerOptions,
  type CertStatus,
  INITIAL_BACKOFF_MS,
  MAX_BACKOFF_MS,
  PRIORITY,
  WorkloadCertificate,
} from './manager.ts';
export {
  formatSpiffeId,
  type Identity,
  identityKey,
  type ParseResult,
  parseSpiffeId,
  principalOf,
  sameIdentity,
} from './spiffe.ts';
export * as x509 from './x509.ts';
