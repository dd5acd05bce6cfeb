/**
 * Names the Gateway controller reads and writes: API coordinates, controller and class names, labels,
 * annotations and ports (Istio's pkg/config/constants and istio.io/api label/annotation tables).
 */

/** `gateway.networking.k8s.io` group and the version we read and write. */
export const GATEWAY_GROUP = 'gateway.networking.k8s.io';
export const GATEWAY_VERSION = 'v1';
export const GATEWAY_API_VERSION = `${GATEWAY_GROUP}/${GATEWAY_VERSION}`;

/** Controller names (GatewayClass spec.controllerName) and the class names Istio ships. */
export const INGRESS_CONTROLLER = 'istio.io/gateway-controller';
export const MESH_CONTROLLER = 'istio.io/mesh-controller';
export const INGRESS_CLASS = 'istio';
export const WAYPOINT_CLASS = 'istio-waypoint';

/** Server-side apply field manager (upstream uses its controller name for every managed gateway). */
export const FIELD_MANAGER = INGRESS_CONTROLLER;

/** On every object we create: `<controller name with / replaced by ->`; objects without it are never touched. */
export const MANAGED_LABEL = 'gateway.istio.io/managed';
export const GATEWAY_NAME_LABEL = 'gateway.networking.k8s.io/gateway-name';
export const DATAPLANE_MODE_LABEL = 'istio.io/dataplane-mode';
export const WAYPOINT_FOR_LABEL = 'istio.io/waypoint-for';
export const USE_WAYPOINT_LABEL = 'istio.io/use-waypoint';
/** Istio's revision label (ambientctl shows it; this istiod has a single revision). */
export const REVISION_LABEL = 'istio.io/rev';

/** Gateway annotations Istio honours when deploying. */
export const SERVICE_TYPE_ANNOTATION = 'networking.istio.io/service-type';
export const NAME_OVERRIDE_ANNOTATION = 'gateway.istio.io/name-override';
export const SERVICE_ACCOUNT_ANNOTATION = 'gateway.istio.io/service-account';

/** Ports of the deployed proxies: readiness (`/healthz/ready`), HBONE, Prometheus metrics. */
export const STATUS_PORT = 15021;
export const HBONE_PORT = 15008;
export const METRICS_PORT = 15020;
