/**
 * The Gateway API deployment controller (ARCHITECTURE.md, istiod "Gateway API controller"; upstream
 * pilot/pkg/config/kube/gateway deploymentcontroller.go, gatewayclass.go, facts only):
 *
 * - makes sure the built-in GatewayClasses `istio` (ingress) and `istio-waypoint` (waypoints) exist and marks
 *   every class of ours Accepted;
 * - for each Gateway of one of our classes, keeps a ServiceAccount, a Service and a Deployment running the proxy,
 *   owned by the Gateway (so the garbage collector removes them with it), written with server-side apply and only
 *   when they drifted from what we want;
 * - writes the Gateway's status: Accepted, Programmed (True once its Service has ready endpoints), the listener
 *   statuses and `status.addresses`, which is what makes a waypoint a waypoint for the ambient index.
 *
 * This file is the module's front door: the shared types and names. `resources.ts` builds the desired
 * objects, `status.ts` the desired status, `kube.ts` talks to the API server, `controller.ts` ties them to events.
 */

export { BUILTIN_CLASSES, CLASS_INFOS, type ClassInfo, classInfoFor } from './classes.ts';
export { GatewayController, type GatewayControllerOptions } from './controller.ts';
export { type GatewayApi, KubeGatewayApi } from './kube.ts';
export * from './names.ts';
export {
  type BuildContext,
  buildResources,
  type DesiredResources,
  gatewayResourceName,
  isManagedGateway,
  serviceAccountName,
} from './resources.ts';
export {
  type ClassStatusInputs,
  desiredClassConditions,
  desiredGatewayStatus,
  type GatewayStatusInputs,
  type ServiceView,
} from './status.ts';

// ---- the slice of the Gateway API objects the controller reads and writes ----------------------------------

export interface Condition {
  readonly type: string;
  readonly status: string;
  readonly reason?: string;
  readonly message?: string;
  readonly observedGeneration?: number;
  readonly lastTransitionTime?: string | Date;
}

export interface OwnerReference {
  readonly apiVersion?: string;
  readonly kind?: string;
  readonly name?: string;
  readonly uid?: string;
  readonly controller?: boolean;
}

export interface ObjectMeta {
  readonly name?: string;
  readonly namespace?: string;
  readonly uid?: string;
  readonly generation?: number;
  readonly resourceVersion?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly annotations?: Readonly<Record<string, string>>;
  readonly ownerReferences?: readonly OwnerReference[];
  readonly deletionTimestamp?: string | Date;
}

export interface GatewayListener {
  readonly name?: string;
  readonly hostname?: string;
  readonly port?: number;
  readonly protocol?: string;
  readonly allowedRoutes?: {
    readonly namespaces?: { readonly from?: string };
    readonly kinds?: ReadonlyArray<{ readonly group?: string; readonly kind?: string }>;
  };
}

export interface RouteGroupKind {
  readonly group: string;
  readonly kind: string;
}

export interface ListenerStatus {
  readonly name: string;
  readonly supportedKinds: readonly RouteGroupKind[];
  readonly attachedRoutes: number;
  readonly conditions: readonly Condition[];
}

export interface GatewayAddress {
  readonly type: 'IPAddress' | 'Hostname';
  readonly value: string;
}

export interface GatewayStatus {
  readonly conditions?: readonly Condition[];
  readonly addresses?: ReadonlyArray<{ readonly type?: string; readonly value?: string }>;
  readonly listeners?: readonly ListenerStatus[];
}

/** gateway.networking.k8s.io/v1 Gateway. */
export interface GatewayObject {
  readonly apiVersion?: string;
  readonly kind?: string;
  readonly metadata?: ObjectMeta;
  readonly spec?: {
    readonly gatewayClassName?: string;
    readonly listeners?: readonly GatewayListener[];
    readonly addresses?: ReadonlyArray<{ readonly type?: string; readonly value?: string }>;
    readonly infrastructure?: {
      readonly labels?: Readonly<Record<string, string>>;
      readonly annotations?: Readonly<Record<string, string>>;
    };
  };
  readonly status?: GatewayStatus;
}

/** gateway.networking.k8s.io/v1 GatewayClass (cluster-scoped). */
export interface GatewayClassObject {
  readonly apiVersion?: string;
  readonly kind?: string;
  readonly metadata?: ObjectMeta;
  readonly spec?: { readonly controllerName?: string; readonly description?: string };
  readonly status?: { readonly conditions?: readonly Condition[] };
}

/** A plain manifest we send (built by resources.ts). */
export interface Manifest {
  readonly apiVersion: string;
  readonly kind: 'ServiceAccount' | 'Service' | 'Deployment';
  readonly metadata: {
    readonly name: string;
    readonly namespace: string;
    readonly labels: Readonly<Record<string, string>>;
    readonly annotations?: Readonly<Record<string, string>>;
    readonly ownerReferences: readonly OwnerReference[];
  };
  readonly [field: string]: unknown;
}

/** What the controller keeps of a live ServiceAccount/Service/Deployment. */
export interface LiveObject {
  readonly metadata?: ObjectMeta;
  readonly [field: string]: unknown;
}
