/**
 * The waypoint L7 compiler (docs/waypoint-l7.md): HTTPRoute/GRPCRoute with Service parents (GAMMA),
 * VirtualService + DestinationRule, and AuthorizationPolicy/RequestAuthentication with targetRefs → one
 * `ambient.waypoint.v1.ServiceConfig` per destination service, served over delta ADS to the waypoints that serve
 * the service or route to it. Pure translation in routes.ts / virtualservice.ts / destinationrule.ts /
 * security.ts / compiler.ts; incremental state in l7index.ts; Kubernetes (informers, status) in controller.ts
 * and status.ts; xDS access control in access.ts.
 *
 * This file holds the types the translation files share.
 */
import type { Route } from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';

/** A destination service as the translators see it. */
export interface ServiceRef {
  /** `<ns>/<hostname>`: the ServiceConfig (and Address) resource name. */
  readonly key: string;
  readonly kind: 'Service' | 'ServiceEntry';
  readonly namespace: string;
  /** Kubernetes Service name, or ServiceEntry name. */
  readonly name: string;
  readonly hostname: string;
  readonly ports: ReadonlyArray<{ readonly port: number; readonly name: string }>;
}

/** What route/VirtualService translation reads from the rest of the cluster. */
export interface TranslateContext {
  readonly domainSuffix: string;
  readonly rootNamespace: string;
  /** A Kubernetes Service by namespace and name. */
  service(namespace: string, name: string): ServiceRef | undefined;
  /** Services of a ServiceEntry (one per host). */
  serviceEntry(namespace: string, name: string): readonly ServiceRef[];
  /**
   * The service for a hostname as seen from `fromNamespace`: a ServiceEntry host there wins, then the Kubernetes
   * Service the FQDN names, then the oldest ServiceEntry with that host anywhere.
   */
  hostname(host: string, fromNamespace: string): ServiceRef | undefined;
  /** DestinationRule subsets defined for a service (null when no DestinationRule applies). */
  subsets(serviceKey: string): ReadonlySet<string> | null;
  /** Whether a ReferenceGrant in `to.namespace` lets `from` reference `to`. */
  grantAllows(
    from: { readonly group: string; readonly kind: string; readonly namespace: string },
    to: { readonly group: string; readonly kind: string; readonly namespace: string; readonly name: string },
  ): boolean;
}

/** A translated route with what ordering needs (Gateway API precedence). */
export interface RouteEntry {
  readonly route: Route;
  /** Source object age and identity: oldest wins a tie. */
  readonly created: number;
  readonly namespace: string;
  readonly name: string;
  /** Position of the rule/match inside its object (stable order for equal precedence). */
  readonly position: number;
  /** A rule without matches (sorted last, as Istio does). */
  readonly matchless: boolean;
}

/** A problem reported in status: Gateway API / Istio reason + message. */
export interface Problem {
  readonly reason: string;
  readonly message: string;
}

export { WaypointAccess, type WaypointAccessOptions } from './access.ts';
export { type CompileInput, type CompileOutput, compileWaypointConfig } from './compiler.ts';
export { L7Controller, type L7ControllerOptions } from './controller.ts';
export { L7_KINDS, L7Index, type L7IndexChange, type L7Kind, type L7KindMap } from './l7index.ts';
export { type L7StatusSink, type L7StatusUpdate, L7StatusWriter } from './status.ts';
