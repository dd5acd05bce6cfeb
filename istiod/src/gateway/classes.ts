/**
 * What each of our controllers deploys (upstream `classInfo`, facts only): the waypoint class keeps the
 * Gateway's name for its objects, listens for HBONE and reports both the ClusterIP and the Service hostname;
 * the ingress class names its objects `<gateway>-<class>`, exposes the listener ports on a LoadBalancer Service
 * and reports hostnames (or the load balancer's addresses).
 */
import type { GatewayClassObject } from './index.ts';
import { INGRESS_CLASS, INGRESS_CONTROLLER, MESH_CONTROLLER, WAYPOINT_CLASS } from './names.ts';

export interface ClassInfo {
  readonly controller: string;
  /** Value of `gateway.istio.io/managed` on what we create: the controller name with `/` → `-`. */
  readonly controllerLabel: string;
  /** GatewayClass spec.description when we create the class. */
  readonly description: string;
  /** `waypoint` proxies terminate HBONE on 15008; `router` proxies serve the Gateway's own listeners. */
  readonly proxyType: 'waypoint' | 'router';
  /** Objects are named after the Gateway alone (waypoints) rather than `<gateway>-<class>`. */
  readonly disableNameSuffix: boolean;
  readonly defaultServiceType: 'ClusterIP' | 'LoadBalancer';
  /** Which address kinds status reports: both (waypoints), or hostnames only (ingress). */
  readonly addressType: 'Both' | 'Hostname';
}

export const CLASS_INFOS: ReadonlyMap<string, ClassInfo> = new Map([
  [
    INGRESS_CONTROLLER,
    {
      controller: INGRESS_CONTROLLER,
      controllerLabel: 'istio.io-gateway-controller',
      description: 'The default Istio GatewayClass',
      proxyType: 'router',
      disableNameSuffix: false,
      defaultServiceType: 'LoadBalancer',
      addressType: 'Hostname',
    },
  ],
  [
    MESH_CONTROLLER,
    {
      controller: MESH_CONTROLLER,
      controllerLabel: 'istio.io-mesh-controller',
      description: 'The default Istio waypoint GatewayClass',
      proxyType: 'waypoint',
      disableNameSuffix: true,
      defaultServiceType: 'ClusterIP',
      addressType: 'Both',
    },
  ],
]);

/** Classes that work even when no GatewayClass object exists, and that the class controller creates. */
export const BUILTIN_CLASSES: ReadonlyMap<string, string> = new Map([
  [INGRESS_CLASS, INGRESS_CONTROLLER],
  [WAYPOINT_CLASS, MESH_CONTROLLER],
]);

/**
 * The ClassInfo for a Gateway's class: the class object's controller when it exists, the built-in controller
 * for a built-in class name otherwise; null when the class is not ours.
 */
export function classInfoFor(
  className: string,
  classes: (name: string) => GatewayClassObject | undefined,
): ClassInfo | null {
  const cls = classes(className);
  const controller = cls ? (cls.spec?.controllerName ?? '') : (BUILTIN_CLASSES.get(className) ?? '');
  return CLASS_INFOS.get(controller) ?? null;
}

/** The GatewayClass object the class controller creates for a built-in class. */
export function builtinClassObject(name: string): GatewayClassObject | null {
  const controller = BUILTIN_CLASSES.get(name);
  const info = controller ? CLASS_INFOS.get(controller) : undefined;
  if (!info) return null;
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'GatewayClass',
    metadata: { name },
    spec: { controllerName: info.controller, description: info.description },
  };
}
