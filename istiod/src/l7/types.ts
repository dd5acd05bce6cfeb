/**
 * The slice of each L7 kind the waypoint compiler reads, as structural types (every field optional, like
 * istiod/src/kube/types.ts): Gateway API HTTPRoute, GRPCRoute, ReferenceGrant; networking.istio.io
 * VirtualService, DestinationRule; security.istio.io RequestAuthentication. Field names follow the upstream
 * schemas; only what the compiler uses is declared.
 */
import type { Condition, KubeObject, PolicyTargetReference } from '../kube/types.ts';

// ---- Gateway API -------------------------------------------------------------------------------------------

export interface ParentReference {
  readonly group?: string;
  readonly kind?: string;
  readonly namespace?: string;
  readonly name?: string;
  readonly sectionName?: string;
  readonly port?: number;
}

export interface RouteParentStatus {
  readonly parentRef: ParentReference;
  readonly controllerName: string;
  readonly conditions?: readonly Condition[];
}

export interface HTTPHeaderMatch {
  /** Exact (default) or RegularExpression. */
  readonly type?: string;
  readonly name?: string;
  readonly value?: string;
}

export interface HTTPRouteMatch {
  readonly path?: { readonly type?: string; readonly value?: string };
  readonly headers?: readonly HTTPHeaderMatch[];
  readonly queryParams?: readonly HTTPHeaderMatch[];
  readonly method?: string;
}

export interface HTTPHeader {
  readonly name?: string;
  readonly value?: string;
}

export interface HTTPHeaderFilter {
  readonly set?: readonly HTTPHeader[];
  readonly add?: readonly HTTPHeader[];
  readonly remove?: readonly string[];
}

export interface HTTPPathModifier {
  /** ReplaceFullPath or ReplacePrefixMatch. */
  readonly type?: string;
  readonly replaceFullPath?: string;
  readonly replacePrefixMatch?: string;
}

export interface BackendObjectReference {
  readonly group?: string;
  readonly kind?: string;
  readonly name?: string;
  readonly namespace?: string;
  readonly port?: number;
}

export interface HTTPRouteFilter {
  readonly type?: string;
  readonly requestHeaderModifier?: HTTPHeaderFilter;
  readonly responseHeaderModifier?: HTTPHeaderFilter;
  readonly requestRedirect?: {
    readonly scheme?: string;
    readonly hostname?: string;
    readonly path?: HTTPPathModifier;
    readonly port?: number;
    readonly statusCode?: number;
  };
  readonly urlRewrite?: { readonly hostname?: string; readonly path?: HTTPPathModifier };
  readonly requestMirror?: {
    readonly backendRef?: BackendObjectReference;
    readonly percent?: number;
    readonly fraction?: { readonly numerator?: number; readonly denominator?: number };
  };
  readonly extensionRef?: { readonly group?: string; readonly kind?: string; readonly name?: string };
}

export interface HTTPBackendRef extends BackendObjectReference {
  readonly weight?: number;
  readonly filters?: readonly HTTPRouteFilter[];
}

export interface HTTPRouteRule {
  readonly name?: string;
  readonly matches?: readonly HTTPRouteMatch[];
  readonly filters?: readonly HTTPRouteFilter[];
  readonly backendRefs?: readonly HTTPBackendRef[];
  readonly timeouts?: { readonly request?: string; readonly backendRequest?: string };
  /** Experimental channel (GEP-1731). */
  readonly retry?: {
    readonly codes?: readonly number[];
    readonly attempts?: number;
    readonly backoff?: string;
  };
}

export interface RouteStatus {
  readonly parents?: readonly RouteParentStatus[];
}

/** gateway.networking.k8s.io/v1 HTTPRoute. */
export interface HTTPRoute extends KubeObject {
  readonly spec?: {
    readonly parentRefs?: readonly ParentReference[];
    readonly hostnames?: readonly string[];
    readonly rules?: readonly HTTPRouteRule[];
  };
  readonly status?: RouteStatus;
}

export interface GRPCMethodMatch {
  /** Exact (default) or RegularExpression. */
  readonly type?: string;
  readonly service?: string;
  readonly method?: string;
}

export interface GRPCRouteRule {
  readonly name?: string;
  readonly matches?: ReadonlyArray<{
    readonly method?: GRPCMethodMatch;
    readonly headers?: readonly HTTPHeaderMatch[];
  }>;
  readonly filters?: readonly HTTPRouteFilter[];
  readonly backendRefs?: readonly HTTPBackendRef[];
}

/** gateway.networking.k8s.io/v1 GRPCRoute. */
export interface GRPCRoute extends KubeObject {
  readonly spec?: {
    readonly parentRefs?: readonly ParentReference[];
    readonly hostnames?: readonly string[];
    readonly rules?: readonly GRPCRouteRule[];
  };
  readonly status?: RouteStatus;
}

/** gateway.networking.k8s.io/v1beta1 ReferenceGrant. */
export interface ReferenceGrant extends KubeObject {
  readonly spec?: {
    readonly from?: ReadonlyArray<{
      readonly group?: string;
      readonly kind?: string;
      readonly namespace?: string;
    }>;
    readonly to?: ReadonlyArray<{ readonly group?: string; readonly kind?: string; readonly name?: string }>;
  };
}

// ---- networking.istio.io -----------------------------------------------------------------------------------

/** istio.networking StringMatch: exactly one of exact/prefix/regex; `{}` means "present". */
export interface IstioStringMatch {
  readonly exact?: string;
  readonly prefix?: string;
  readonly regex?: string;
}

export interface HTTPMatchRequest {
  readonly name?: string;
  readonly uri?: IstioStringMatch;
  readonly scheme?: IstioStringMatch;
  readonly method?: IstioStringMatch;
  readonly authority?: IstioStringMatch;
  readonly headers?: Readonly<Record<string, IstioStringMatch>>;
  readonly withoutHeaders?: Readonly<Record<string, IstioStringMatch>>;
  readonly queryParams?: Readonly<Record<string, IstioStringMatch>>;
  readonly port?: number;
  readonly ignoreUriCase?: boolean;
  readonly sourceLabels?: Readonly<Record<string, string>>;
  readonly sourceNamespace?: string;
  readonly gateways?: readonly string[];
  readonly statPrefix?: string;
}

export interface HeaderOperations {
  readonly set?: Readonly<Record<string, string>>;
  readonly add?: Readonly<Record<string, string>>;
  readonly remove?: readonly string[];
}

export interface Headers {
  readonly request?: HeaderOperations;
  readonly response?: HeaderOperations;
}

export interface Destination {
  readonly host?: string;
  readonly subset?: string;
  readonly port?: { readonly number?: number };
}

/** istio Percent: `{value: 12.5}`. */
export interface Percent {
  readonly value?: number;
}

export interface HTTPRouteDestination {
  readonly destination?: Destination;
  readonly weight?: number;
  readonly headers?: Headers;
}

export interface VirtualServiceHTTPRoute {
  readonly name?: string;
  readonly match?: readonly HTTPMatchRequest[];
  readonly route?: readonly HTTPRouteDestination[];
  readonly redirect?: {
    readonly uri?: string;
    readonly authority?: string;
    readonly port?: number;
    readonly derivePort?: string;
    readonly scheme?: string;
    readonly redirectCode?: number;
  };
  readonly directResponse?: {
    readonly status?: number;
    readonly body?: { readonly string?: string; readonly bytes?: string };
  };
  readonly delegate?: { readonly name?: string; readonly namespace?: string };
  readonly rewrite?: {
    readonly uri?: string;
    readonly authority?: string;
    readonly uriRegexRewrite?: { readonly match?: string; readonly rewrite?: string };
  };
  readonly timeout?: string;
  readonly retries?: {
    readonly attempts?: number;
    readonly perTryTimeout?: string;
    readonly retryOn?: string;
    readonly retryRemoteLocalities?: boolean;
    readonly backoff?: string;
  };
  readonly fault?: {
    readonly delay?: {
      readonly fixedDelay?: string;
      readonly exponentialDelay?: string;
      readonly percentage?: Percent;
      /** Deprecated integer percentage. */
      readonly percent?: number;
    };
    readonly abort?: {
      readonly httpStatus?: number;
      readonly grpcStatus?: string;
      readonly http2Error?: string;
      readonly percentage?: Percent;
    };
  };
  readonly mirror?: Destination;
  readonly mirrorPercentage?: Percent;
  /** Deprecated integer form of mirrorPercentage. */
  readonly mirrorPercent?: number;
  readonly mirrors?: ReadonlyArray<{ readonly destination?: Destination; readonly percentage?: Percent }>;
  readonly corsPolicy?: unknown;
  readonly headers?: Headers;
}

/** networking.istio.io VirtualService (v1, v1beta1, v1alpha3 share the schema). */
export interface VirtualService extends KubeObject {
  readonly spec?: {
    readonly hosts?: readonly string[];
    readonly gateways?: readonly string[];
    readonly http?: readonly VirtualServiceHTTPRoute[];
    readonly tcp?: readonly unknown[];
    readonly tls?: readonly unknown[];
    readonly exportTo?: readonly string[];
  };
  readonly status?: { readonly conditions?: readonly Condition[] };
}

export interface IstioTrafficPolicy {
  readonly loadBalancer?: {
    readonly simple?: string;
    readonly consistentHash?: {
      readonly httpHeaderName?: string;
      readonly httpCookie?: { readonly name?: string; readonly path?: string; readonly ttl?: string };
      readonly useSourceIp?: boolean;
      readonly httpQueryParameterName?: string;
      readonly minimumRingSize?: number | string;
      readonly ringHash?: { readonly minimumRingSize?: number | string };
      readonly maglev?: { readonly tableSize?: number | string };
    };
  };
  readonly connectionPool?: {
    readonly tcp?: {
      readonly maxConnections?: number;
      readonly connectTimeout?: string;
      readonly idleTimeout?: string;
    };
    readonly http?: {
      readonly http1MaxPendingRequests?: number;
      readonly http2MaxRequests?: number;
      readonly maxRequestsPerConnection?: number;
      readonly maxRetries?: number;
      readonly idleTimeout?: string;
    };
  };
  readonly outlierDetection?: {
    readonly consecutive5xxErrors?: number;
    readonly consecutiveErrors?: number;
    readonly consecutiveGatewayErrors?: number;
    readonly interval?: string;
    readonly baseEjectionTime?: string;
    readonly maxEjectionPercent?: number;
    readonly minHealthPercent?: number;
  };
  readonly portLevelSettings?: readonly unknown[];
  readonly tls?: unknown;
}

/** networking.istio.io DestinationRule. */
export interface DestinationRule extends KubeObject {
  readonly spec?: {
    readonly host?: string;
    readonly trafficPolicy?: IstioTrafficPolicy;
    readonly subsets?: ReadonlyArray<{
      readonly name?: string;
      readonly labels?: Readonly<Record<string, string>>;
      readonly trafficPolicy?: IstioTrafficPolicy;
    }>;
    readonly exportTo?: readonly string[];
    readonly workloadSelector?: unknown;
  };
  readonly status?: { readonly conditions?: readonly Condition[] };
}

// ---- security.istio.io -------------------------------------------------------------------------------------

export interface JWTRule {
  readonly issuer?: string;
  readonly audiences?: readonly string[];
  readonly jwksUri?: string;
  readonly jwks?: string;
  readonly fromHeaders?: ReadonlyArray<{ readonly name?: string; readonly prefix?: string }>;
  readonly fromParams?: readonly string[];
  readonly fromCookies?: readonly string[];
  readonly outputPayloadToHeader?: string;
  readonly forwardOriginalToken?: boolean;
  readonly outputClaimToHeaders?: ReadonlyArray<{ readonly header?: string; readonly claim?: string }>;
  readonly timeout?: string;
}

/** security.istio.io RequestAuthentication. */
export interface RequestAuthentication extends KubeObject {
  readonly spec?: {
    readonly selector?: { readonly matchLabels?: Readonly<Record<string, string>> } | null;
    readonly targetRef?: PolicyTargetReference | null;
    readonly targetRefs?: readonly PolicyTargetReference[];
    readonly jwtRules?: readonly JWTRule[];
  };
  readonly status?: { readonly conditions?: readonly Condition[] };
}
