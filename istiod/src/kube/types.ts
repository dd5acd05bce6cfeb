/**
 * The slice of each Kubernetes kind the ambient index reads, as structural types: every field optional, so the
 * typed objects of `@kubernetes/client-node` (Dates for timestamps) and the plain JSON of a watch stream or a
 * test table (strings) both fit. Field names follow the Kubernetes, Istio and Gateway API schemas; only what
 * istiod uses is declared (the CRD manifests in deploy/crds carry the full schemas we serve).
 */

/** RFC 3339 string from JSON, or a Date from client-node's typed deserialisation. */
export type Timestamp = Date | string;

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
  readonly generateName?: string;
  readonly generation?: number;
  readonly resourceVersion?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly annotations?: Readonly<Record<string, string>>;
  readonly creationTimestamp?: Timestamp;
  readonly deletionTimestamp?: Timestamp;
  readonly ownerReferences?: readonly OwnerReference[];
}

export interface KubeObject {
  readonly apiVersion?: string;
  readonly kind?: string;
  readonly metadata?: ObjectMeta;
}

export interface Condition {
  readonly type: string;
  readonly status: string;
  readonly reason?: string;
  readonly message?: string;
  readonly observedGeneration?: number;
  readonly lastTransitionTime?: Timestamp;
}

export interface Namespace extends KubeObject {}

export interface Node extends KubeObject {}

export interface ServiceAccount extends KubeObject {}

export interface ContainerPort {
  readonly name?: string;
  readonly containerPort: number;
  readonly protocol?: string;
}

export interface Pod extends KubeObject {
  readonly spec?: {
    readonly nodeName?: string;
    readonly serviceAccountName?: string;
    readonly hostNetwork?: boolean;
    readonly containers?: ReadonlyArray<{ readonly ports?: readonly ContainerPort[] }>;
    readonly initContainers?: ReadonlyArray<{ readonly ports?: readonly ContainerPort[] }>;
  };
  readonly status?: {
    readonly phase?: string;
    readonly podIP?: string;
    readonly podIPs?: ReadonlyArray<{ readonly ip?: string }>;
    readonly conditions?: ReadonlyArray<{ readonly type: string; readonly status: string }>;
  };
}

export interface ServicePort {
  readonly name?: string;
  readonly protocol?: string;
  readonly appProtocol?: string;
  readonly port: number;
  /** A number, or the name of a container port. */
  readonly targetPort?: number | string;
}

export interface Service extends KubeObject {
  readonly spec?: {
    readonly type?: string;
    readonly selector?: Readonly<Record<string, string>>;
    readonly clusterIP?: string;
    readonly clusterIPs?: readonly string[];
    readonly ipFamilies?: readonly string[];
    readonly ports?: readonly ServicePort[];
    readonly internalTrafficPolicy?: string;
    readonly trafficDistribution?: string;
    readonly publishNotReadyAddresses?: boolean;
  };
  readonly status?: { readonly conditions?: readonly Condition[] };
}

export interface EndpointSlice extends KubeObject {
  readonly addressType?: string;
  readonly endpoints?: ReadonlyArray<{
    readonly addresses?: readonly string[];
    readonly conditions?: { readonly ready?: boolean };
    readonly targetRef?: { readonly kind?: string; readonly name?: string; readonly namespace?: string };
  }>;
  readonly ports?: ReadonlyArray<{
    readonly name?: string;
    readonly port?: number;
    readonly protocol?: string;
  }>;
}

/** istio.io/api type/v1beta1 WorkloadSelector. */
export interface WorkloadSelector {
  readonly matchLabels?: Readonly<Record<string, string>>;
}

export interface PolicyTargetReference {
  readonly group?: string;
  readonly kind?: string;
  readonly name?: string;
  readonly namespace?: string;
}

export interface AuthorizationSource {
  readonly principals?: readonly string[];
  readonly notPrincipals?: readonly string[];
  readonly requestPrincipals?: readonly string[];
  readonly notRequestPrincipals?: readonly string[];
  readonly namespaces?: readonly string[];
  readonly notNamespaces?: readonly string[];
  readonly serviceAccounts?: readonly string[];
  readonly notServiceAccounts?: readonly string[];
  readonly ipBlocks?: readonly string[];
  readonly notIpBlocks?: readonly string[];
  readonly remoteIpBlocks?: readonly string[];
  readonly notRemoteIpBlocks?: readonly string[];
}

export interface AuthorizationOperation {
  readonly hosts?: readonly string[];
  readonly notHosts?: readonly string[];
  readonly ports?: readonly string[];
  readonly notPorts?: readonly string[];
  readonly methods?: readonly string[];
  readonly notMethods?: readonly string[];
  readonly paths?: readonly string[];
  readonly notPaths?: readonly string[];
}

export interface AuthorizationCondition {
  readonly key: string;
  readonly values?: readonly string[];
  readonly notValues?: readonly string[];
}

export interface AuthorizationRule {
  readonly from?: ReadonlyArray<{ readonly source?: AuthorizationSource }>;
  readonly to?: ReadonlyArray<{ readonly operation?: AuthorizationOperation }>;
  readonly when?: readonly AuthorizationCondition[];
}

/** security.istio.io/v1 AuthorizationPolicy. */
export interface AuthorizationPolicy extends KubeObject {
  readonly spec?: {
    readonly selector?: WorkloadSelector | null;
    readonly targetRef?: PolicyTargetReference | null;
    readonly targetRefs?: readonly PolicyTargetReference[];
    /** ALLOW (default), DENY, AUDIT or CUSTOM. */
    readonly action?: string;
    readonly provider?: { readonly name?: string };
    readonly rules?: readonly AuthorizationRule[];
  };
}

/** UNSET (default), DISABLE, PERMISSIVE or STRICT. */
export interface MutualTls {
  readonly mode?: string;
}

/** security.istio.io/v1 PeerAuthentication. */
export interface PeerAuthentication extends KubeObject {
  readonly spec?: {
    readonly selector?: WorkloadSelector | null;
    readonly mtls?: MutualTls | null;
    /** Keyed by port number (a string in JSON). */
    readonly portLevelMtls?: Readonly<Record<string, MutualTls>>;
  };
}

/** networking.istio.io WorkloadEntry spec (also the shape of ServiceEntry endpoints). */
export interface WorkloadEntrySpec {
  readonly address?: string;
  readonly ports?: Readonly<Record<string, number>>;
  readonly labels?: Readonly<Record<string, string>>;
  readonly network?: string;
  readonly locality?: string;
  readonly weight?: number;
  readonly serviceAccount?: string;
}

export interface WorkloadEntry extends KubeObject {
  readonly spec?: WorkloadEntrySpec;
}

export interface ServiceEntryPort {
  readonly number: number;
  readonly protocol?: string;
  readonly name?: string;
  readonly targetPort?: number;
}

/** networking.istio.io ServiceEntry. */
export interface ServiceEntry extends KubeObject {
  readonly spec?: {
    readonly hosts?: readonly string[];
    readonly addresses?: readonly string[];
    readonly ports?: readonly ServiceEntryPort[];
    /** MESH_INTERNAL or MESH_EXTERNAL. */
    readonly location?: string;
    /** NONE, STATIC, DNS, DNS_ROUND_ROBIN or DYNAMIC_DNS. */
    readonly resolution?: string;
    readonly endpoints?: readonly WorkloadEntrySpec[];
    readonly workloadSelector?: { readonly labels?: Readonly<Record<string, string>> } | null;
    readonly subjectAltNames?: readonly string[];
  };
  readonly status?: {
    readonly conditions?: readonly Condition[];
    /** Written by Istio's IP auto-allocation controller for hosts without spec.addresses. */
    readonly addresses?: ReadonlyArray<{ readonly value?: string; readonly host?: string }>;
  };
}

export interface GatewayListener {
  readonly name?: string;
  readonly port?: number;
  readonly protocol?: string;
  readonly allowedRoutes?: {
    readonly namespaces?: {
      /** All, Same (default) or Selector. */
      readonly from?: string;
      readonly selector?: LabelSelector;
    };
  };
}

export interface LabelSelector {
  readonly matchLabels?: Readonly<Record<string, string>>;
  readonly matchExpressions?: ReadonlyArray<{
    readonly key: string;
    readonly operator: string;
    readonly values?: readonly string[];
  }>;
}

/** gateway.networking.k8s.io Gateway. */
export interface Gateway extends KubeObject {
  readonly spec?: {
    readonly gatewayClassName?: string;
    readonly listeners?: readonly GatewayListener[];
  };
  readonly status?: {
    readonly addresses?: ReadonlyArray<{ readonly type?: string; readonly value?: string }>;
  };
}

/** gateway.networking.k8s.io GatewayClass (cluster-scoped). */
export interface GatewayClass extends KubeObject {
  readonly spec?: { readonly controllerName?: string };
}
