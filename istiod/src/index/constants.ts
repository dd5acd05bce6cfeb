/**
 * Names the ambient index reads and writes: labels, annotations, well-known values (ARCHITECTURE.md, "Labels,
 * annotations, names"; Istio's pkg/config/constants and istio.io/api label/annotation tables).
 */

/** Istio's default cluster id, the first segment of every workload uid. */
export const DEFAULT_CLUSTER_ID = 'Kubernetes';
export const DEFAULT_DOMAIN_SUFFIX = 'cluster.local';
export const DEFAULT_TRUST_DOMAIN = 'cluster.local';
export const DEFAULT_ROOT_NAMESPACE = 'istio-system';

/** Written by the CNI agent once a pod's traffic is captured: its peers then reach it over HBONE. */
export const REDIRECTION_ANNOTATION = 'ambient.istio.io/redirection';
export const REDIRECTION_ENABLED = 'enabled';
/** A workload that terminates HBONE itself (`http`), e.g. a sidecar-less proxy. */
export const TUNNEL_LABEL = 'networking.istio.io/tunnel';

export const USE_WAYPOINT_LABEL = 'istio.io/use-waypoint';
export const USE_WAYPOINT_NAMESPACE_LABEL = 'istio.io/use-waypoint-namespace';
export const WAYPOINT_FOR_LABEL = 'istio.io/waypoint-for';
export const INGRESS_USE_WAYPOINT_LABEL = 'istio.io/ingress-use-waypoint';
/** `none` in istio.io/use-waypoint opts an object out of an inherited waypoint. */
export const USE_WAYPOINT_NONE = 'none';

export const WAYPOINT_FOR_SERVICE = 'service';
export const WAYPOINT_FOR_WORKLOAD = 'workload';
export const WAYPOINT_FOR_ALL = 'all';
export const WAYPOINT_FOR_NONE = 'none';

export const WAYPOINT_GATEWAY_CLASS = 'istio-waypoint';
export const MESH_CONTROLLER = 'istio.io/mesh-controller';
/** Set by the Gateway controller on the Deployment/Service/pods it creates for a Gateway. */
export const GATEWAY_NAME_LABEL = 'gateway.networking.k8s.io/gateway-name';
export const GATEWAY_MANAGED_LABEL = 'gateway.istio.io/managed';
/** The value of GATEWAY_MANAGED_LABEL on what is deployed for a waypoint (the controller name, `/` → `-`). */
export const MESH_CONTROLLER_LABEL = 'istio.io-mesh-controller';
/** `<protocol>` or `<protocol>/<port>` (NONE or PROXY) on a waypoint Gateway or its class. */
export const WAYPOINT_INBOUND_BINDING_ANNOTATION = 'ambient.istio.io/waypoint-inbound-binding';
/** Waypoints listen for HBONE on this port. */
export const HBONE_PORT = 15008;

export const CANONICAL_NAME_LABELS = [
  'service.istio.io/canonical-name',
  'app.kubernetes.io/name',
  'app',
] as const;
export const CANONICAL_REVISION_LABELS = [
  'service.istio.io/canonical-revision',
  'app.kubernetes.io/version',
  'version',
] as const;
export const DEFAULT_CANONICAL_REVISION = 'latest';

export const NETWORK_LABEL = 'topology.istio.io/network';
export const REGION_LABEL = 'topology.kubernetes.io/region';
export const ZONE_LABEL = 'topology.kubernetes.io/zone';
export const SUBZONE_LABEL = 'topology.istio.io/subzone';

/** Legacy spelling of Service.spec.trafficDistribution, also honoured on ServiceEntries and Namespaces. */
export const TRAFFIC_DISTRIBUTION_ANNOTATION = 'networking.istio.io/traffic-distribution';

/** The label EndpointSlices carry to name their Service. */
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

/** Condition type Istio writes on Services/ServiceEntries about their waypoint. */
export const WAYPOINT_BOUND_CONDITION = 'istio.io/WaypointBound';
export const WAYPOINT_ACCEPTED_REASON = 'WaypointAccepted';
