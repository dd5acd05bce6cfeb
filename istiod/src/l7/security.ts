/**
 * AuthorizationPolicy and RequestAuthentication attached with `targetRef`/`targetRefs` (the waypoint's policies;
 * selector policies are ztunnel's, see istiod/src/policy) → AuthzPolicy / JwtRule entries of the services they
 * apply to:
 *
 * - kind Service (group "" or core) or ServiceEntry (networking.istio.io) in the policy's namespace: that service;
 * - kind Gateway (gateway.networking.k8s.io) in the policy's namespace: the waypoint itself, so every service it
 *   serves;
 * - kind GatewayClass `istio-waypoint` from the root namespace: every waypoint.
 * A cross-namespace target or another kind is skipped and reported. Rules are passed as written (Istio syntax,
 * evaluated by pkg/rbac on the waypoint); `istio.io/dry-run: "true"` sets dry_run.
 */
import {
  type AuthzPolicy,
  AuthzPolicy_Action,
  type AuthzRule,
  type JwtRule,
} from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import { WAYPOINT_GATEWAY_CLASS } from '../index/constants.ts';
import { annotationsOf } from '../kube/labels.ts';
import type { AuthorizationPolicy, PolicyTargetReference } from '../kube/types.ts';
import { DRY_RUN_ANNOTATION } from '../policy/index.ts';
import { GATEWAY_GROUP, NETWORKING_GROUP } from './constants.ts';
import type { RequestAuthentication } from './types.ts';
import { parseDurationMs } from './util.ts';

export type PolicyTarget =
  | { readonly kind: 'Service' | 'ServiceEntry'; readonly namespace: string; readonly name: string }
  | { readonly kind: 'Gateway'; readonly namespace: string; readonly name: string }
  | { readonly kind: 'GatewayClass'; readonly name: string };

export interface PolicyTargets {
  readonly targets: readonly PolicyTarget[];
  readonly problems: readonly string[];
}

interface TargetedObject {
  readonly metadata?: { readonly namespace?: string; readonly name?: string };
  readonly spec?: {
    readonly targetRef?: PolicyTargetReference | null;
    readonly targetRefs?: readonly PolicyTargetReference[];
  };
}

export function hasPolicyTargets(o: TargetedObject): boolean {
  return !!o.spec?.targetRef || (o.spec?.targetRefs?.length ?? 0) > 0;
}

/** The waypoint targets of a policy (targetRef and targetRefs combined). */
export function policyTargets(o: TargetedObject, rootNamespace: string): PolicyTargets {
  const ns = o.metadata?.namespace ?? '';
  const refs = [...(o.spec?.targetRef ? [o.spec.targetRef] : []), ...(o.spec?.targetRefs ?? [])];
  const targets: PolicyTarget[] = [];
  const problems: string[] = [];
  for (const ref of refs) {
    const kind = ref.kind ?? '';
    const group = ref.group ?? '';
    const name = ref.name ?? '';
    const desc = `targetRef ${group || 'core'}/${kind} "${name}"`;
    if (ref.namespace && ref.namespace !== ns) {
      problems.push(`${desc}: cross-namespace references are not allowed (policy is in "${ns}")`);
      continue;
    }
    if (kind === 'Service' && (group === '' || group === 'core'))
      targets.push({ kind: 'Service', namespace: ns, name });
    else if (kind === 'ServiceEntry' && group === NETWORKING_GROUP)
      targets.push({ kind: 'ServiceEntry', namespace: ns, name });
    else if (kind === 'Gateway' && group === GATEWAY_GROUP)
      targets.push({ kind: 'Gateway', namespace: ns, name });
    else if (kind === 'GatewayClass' && group === GATEWAY_GROUP) {
      if (ns !== rootNamespace)
        problems.push(`${desc}: GatewayClass targets are only allowed in "${rootNamespace}"`);
      else if (name !== WAYPOINT_GATEWAY_CLASS)
        problems.push(`${desc}: only the "${WAYPOINT_GATEWAY_CLASS}" GatewayClass can be targeted`);
      else targets.push({ kind: 'GatewayClass', name });
    } else {
      problems.push(`${desc}: unsupported kind for a waypoint policy`);
    }
  }
  return { targets, problems };
}

const ACTIONS: Readonly<Record<string, AuthzPolicy_Action>> = {
  ALLOW: AuthzPolicy_Action.ALLOW,
  DENY: AuthzPolicy_Action.DENY,
  AUDIT: AuthzPolicy_Action.AUDIT,
  CUSTOM: AuthzPolicy_Action.CUSTOM,
};

const list = (v: readonly string[] | undefined): string[] => [...(v ?? [])];

/** An AuthorizationPolicy as written, or why it cannot be used. */
export function convertAuthzPolicy(ap: AuthorizationPolicy): AuthzPolicy | string {
  const action = ACTIONS[(ap.spec?.action ?? 'ALLOW').toUpperCase()];
  if (action === undefined) return `unknown action "${ap.spec?.action}"`;
  const rules: AuthzRule[] = (ap.spec?.rules ?? []).map((r) => ({
    from: (r.from ?? []).map((f) => {
      const s = f.source ?? {};
      return {
        principals: list(s.principals),
        notPrincipals: list(s.notPrincipals),
        requestPrincipals: list(s.requestPrincipals),
        notRequestPrincipals: list(s.notRequestPrincipals),
        namespaces: list(s.namespaces),
        notNamespaces: list(s.notNamespaces),
        ipBlocks: list(s.ipBlocks),
        notIpBlocks: list(s.notIpBlocks),
        remoteIpBlocks: list(s.remoteIpBlocks),
        notRemoteIpBlocks: list(s.notRemoteIpBlocks),
        serviceAccounts: list(s.serviceAccounts),
        notServiceAccounts: list(s.notServiceAccounts),
      };
    }),
    to: (r.to ?? []).map((t) => {
      const o = t.operation ?? {};
      return {
        hosts: list(o.hosts),
        notHosts: list(o.notHosts),
        ports: list(o.ports),
        notPorts: list(o.notPorts),
        methods: list(o.methods),
        notMethods: list(o.notMethods),
        paths: list(o.paths),
        notPaths: list(o.notPaths),
      };
    }),
    when: (r.when ?? []).map((w) => ({ key: w.key, values: list(w.values), notValues: list(w.notValues) })),
  }));
  return {
    name: ap.metadata?.name ?? '',
    namespace: ap.metadata?.namespace ?? '',
    action,
    rules,
    dryRun: annotationsOf(ap)[DRY_RUN_ANNOTATION] === 'true',
  };
}

/** The JWT rules of a RequestAuthentication; problems list skipped rules. */
export function convertJwtRules(ra: RequestAuthentication, problems: string[]): JwtRule[] {
  const source = `${ra.metadata?.namespace ?? ''}/${ra.metadata?.name ?? ''}`;
  const out: JwtRule[] = [];
  (ra.spec?.jwtRules ?? []).forEach((r, i) => {
    if (!r.issuer) {
      problems.push(`jwtRules[${i}]: issuer is required; rule skipped`);
      return;
    }
    let timeout = 0;
    if (r.timeout !== undefined) {
      const ms = parseDurationMs(r.timeout);
      if (ms === null) problems.push(`jwtRules[${i}]: timeout "${r.timeout}" is not a duration; ignored`);
      else timeout = ms;
    }
    out.push({
      issuer: r.issuer,
      audiences: list(r.audiences),
      jwksUri: r.jwksUri ?? '',
      jwks: r.jwks ?? '',
      fromHeaders: (r.fromHeaders ?? []).map((h) => ({ name: h.name ?? '', prefix: h.prefix ?? '' })),
      fromParams: list(r.fromParams),
      fromCookies: list(r.fromCookies),
      outputPayloadToHeader: r.outputPayloadToHeader ?? '',
      forwardOriginalToken: r.forwardOriginalToken === true,
      outputClaimToHeaders: (r.outputClaimToHeaders ?? []).map((c) => ({
        header: c.header ?? '',
        claim: c.claim ?? '',
      })),
      source,
      jwksFetchTimeoutMs: timeout,
    });
  });
  return out;
}
