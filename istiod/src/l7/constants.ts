/**
 * Names the waypoint L7 compiler writes: status controller name, condition types, API groups. Values live here
 * (not in index.ts) so the translation files can import them without an import cycle through the front door.
 */

/** controllerName of our entries in HTTPRoute/GRPCRoute `status.parents` for Service/ServiceEntry parents. */
export const MESH_CONTROLLER_NAME = 'istio.io/mesh-controller';

export const GATEWAY_GROUP = 'gateway.networking.k8s.io';
export const NETWORKING_GROUP = 'networking.istio.io';

/** Route parent conditions (Gateway API) and Istio's ambient extension. */
export const ROUTE_ACCEPTED = 'Accepted';
export const ROUTE_RESOLVED_REFS = 'ResolvedRefs';
export const ROUTE_RESOLVED_WAYPOINTS = 'ResolvedWaypoints';

/** Condition we own on VirtualService, DestinationRule, and targetRef AuthorizationPolicy/RequestAuthentication. */
export const WAYPOINT_ACCEPTED = 'WaypointAccepted';
