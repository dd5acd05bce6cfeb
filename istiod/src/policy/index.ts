/**
 * Istio security policy → ztunnel L4 authorization (`istio.security.Authorization`): AuthorizationPolicy
 * translation with its ZtunnelAccepted status, and PeerAuthentication's static STRICT and port-level policies.
 * Pure functions of Kubernetes objects; the ambient index decides which workloads reference what.
 */
export {
  type ConvertedAuthorization,
  convertAuthorizationPolicy,
  DRY_RUN_ANNOTATION,
  hasTargetRefs,
  L4_WHEN_KEYS,
  MESSAGE_ACCEPTED,
  type PolicyStatus,
  REASON_ACCEPTED,
  REASON_UNSUPPORTED,
  toStringMatch,
  ZTUNNEL_ACCEPTED,
} from './authorization.ts';
export {
  applicablePeerAuthentications,
  CONVERTED_PEER_AUTHENTICATION_PREFIX,
  convertedPeerAuthenticationName,
  convertPeerAuthentication,
  isWideSelector,
  oldest,
  peerAuthenticationKeys,
  STATIC_STRICT_POLICY_NAME,
  staticStrictPolicy,
} from './peerauthentication.ts';
