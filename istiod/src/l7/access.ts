/**
 * Who may read waypoint L7 config, and which (the TypeAccess for WAYPOINT_SERVICE_TYPE_URL on the xDS server).
 *
 * A waypoint connects with node id `router~<podIP>~<pod>.<ns>~<ns>.svc.cluster.local` (type `waypoint` is accepted
 * too) and its service-account token. Its scope, the Gateway it serves, is read from the *pod* named in the node
 * id (label `gateway.networking.k8s.io/gateway-name`), and the claim is checked against the authenticated
 * caller: the token must be for the pod's namespace and for the waypoint's service account (the Gateway
 * controller names it after the Gateway, or after the Gateway's `gateway.istio.io/service-account` annotation);
 * the pod must run as that account; a bound token naming a pod must name that pod. So a client cannot read
 * another waypoint's config by writing another pod into its node id.
 *
 * The Gateway need not be a ready waypoint yet (its addresses appear only once its pods are ready, and a pod's
 * readiness may wait for this very config): an unbound waypoint simply gets an empty set.
 *
 * Other proxy types (ztunnel, sidecar) asking for the type are ignored, as istiod ignores types it has no
 * generator for. On a port without authentication the type is refused unless `requireAuthentication` is false.
 */
import { GATEWAY_NAME_LABEL } from '../index/constants.ts';
import type { AmbientIndex } from '../index/index.ts';
import { annotationsOf, labelsOf } from '../kube/labels.ts';
import type { AccessDecision, AccessRequest, TypeAccess } from '../xds/server.ts';

/** Overrides a Gateway's service account name (istiod/src/gateway/names.ts; Istio's annotation). */
export const SERVICE_ACCOUNT_ANNOTATION = 'gateway.istio.io/service-account';

/** Node types a waypoint may use (Istio's waypoints are `router` proxies). */
export const WAYPOINT_NODE_TYPES: ReadonlySet<string> = new Set(['router', 'waypoint']);

export interface WaypointAccessOptions {
  /** Refuse callers without an authenticated identity (default true; tests and trusted networks may relax it). */
  readonly requireAuthentication?: boolean;
}

export class WaypointAccess implements TypeAccess {
  private readonly index: AmbientIndex;
  private readonly requireAuthentication: boolean;

  constructor(index: AmbientIndex, opts: WaypointAccessOptions = {}) {
    this.index = index;
    this.requireAuthentication = opts.requireAuthentication ?? true;
  }

  authorize(req: AccessRequest): AccessDecision {
    const { node, caller } = req;
    if (!WAYPOINT_NODE_TYPES.has(node.type))
      return { kind: 'ignore', reason: `proxy type "${node.type}" does not receive waypoint configuration` };
    if (!caller && this.requireAuthentication)
      return {
        kind: 'deny',
        reason:
          'waypoint configuration is only served to authenticated clients (use the TLS port with a token)',
      };
    const pod = this.index.get('Pod', `${node.podNamespace}/${node.podName}`);
    if (!pod) return { kind: 'deny', reason: `pod ${node.podNamespace}/${node.podName} not found` };
    const gateway = labelsOf(pod)[GATEWAY_NAME_LABEL];
    if (!gateway)
      return {
        kind: 'deny',
        reason: `pod ${node.podNamespace}/${node.podName} is not a waypoint (no ${GATEWAY_NAME_LABEL} label)`,
      };
    if (caller) {
      const podAccount = pod.spec?.serviceAccountName || 'default';
      const who = `${caller.namespace}/${caller.serviceAccount}`;
      const gw = this.index.get('Gateway', `${node.podNamespace}/${gateway}`);
      const account = annotationsOf(gw)[SERVICE_ACCOUNT_ANNOTATION] || gateway;
      if (caller.namespace !== node.podNamespace || caller.serviceAccount !== account)
        return {
          kind: 'deny',
          reason: `caller ${who} is not the service account (${account}) of waypoint ${node.podNamespace}/${gateway}`,
        };
      if (podAccount !== caller.serviceAccount)
        return {
          kind: 'deny',
          reason: `pod ${node.podNamespace}/${node.podName} runs as ${podAccount}, not as the caller ${who}`,
        };
      if (caller.podName !== null && caller.podName !== node.podName)
        return {
          kind: 'deny',
          reason: `the caller's token is bound to pod ${caller.podName}, not ${node.podName}`,
        };
    }
    return { kind: 'scope', scope: `${node.podNamespace}/${gateway}` };
  }
}
