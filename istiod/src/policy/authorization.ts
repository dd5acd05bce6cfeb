/**
 * AuthorizationPolicy → ztunnel's L4 `istio.security.Authorization` (ARCHITECTURE.md, "Authorization
 * translation for ztunnel"), following upstream istiod's ambient translation
 * (pilot/pkg/serviceregistry/kube/controller/ambient/authorization.go):
 *
 * - `targetRef(s)` policies are for waypoints: nothing for ztunnel, no ZtunnelAccepted condition.
 * - selector → WORKLOAD_SELECTOR, none → NAMESPACE, none in the root namespace → GLOBAL.
 * - CUSTOM/AUDIT are not sent; the policy's condition says so.
 * - Each AP rule becomes one xDS rule whose clauses are: the `to` operations (ORed), the `from` sources (ORed),
 *   then one clause per `when` condition. A rule with none of them matches everything.
 * - ALLOW rules that use any HTTP attribute are omitted (so an ALLOW policy whose every rule is HTTP-only allows
 *   nothing): stricter than written.
 * - DENY rules keep their L4 parts. Where stripping the HTTP parts leaves a match with no L4 field, that part
 *   of the rule matched on HTTP attributes only and must now match every connection, so the clause becomes an
 *   empty clause (which ztunnel evaluates as "matches"). Upstream emits an empty Match there instead, which
 *   ztunnel skips, so the DENY would never fire; we keep upstream's intent ("enforced without the HTTP rules,
 *   more restrictive") rather than its bytes. docs/istiod-xds.md records the difference.
 * - Strings: `*` → presence, `*x` → suffix, `x*` → prefix, else exact. Ports and IPs that do not parse are
 *   skipped, as upstream does.
 */
import { ipToBytes, parseCidr } from '../../../pkg/rbac/index.ts';
import {
  Action,
  Authorization,
  type Clause,
  type Match,
  type Rule,
  Scope,
  type ServiceAccountMatch,
  type StringMatch,
  type security,
} from '../../../pkg/xds/index.ts';
import { annotationsOf } from '../kube/labels.ts';
import type {
  AuthorizationCondition,
  AuthorizationOperation,
  AuthorizationPolicy,
  AuthorizationRule,
  AuthorizationSource,
} from '../kube/types.ts';

/** A ZtunnelAccepted condition body: reason + message, with `accepted` = the policy was sent to ztunnel. */
export interface PolicyStatus {
  readonly accepted: boolean;
  readonly reason: string;
  readonly message: string;
}

export interface ConvertedAuthorization {
  /** Null when nothing is sent to ztunnel. */
  readonly authorization: Authorization | null;
  /** Null when no ZtunnelAccepted condition applies (targetRef policies: those are the waypoint's). */
  readonly status: PolicyStatus | null;
}

/** The ZtunnelAccepted condition type Istio writes on AuthorizationPolicies. */
export const ZTUNNEL_ACCEPTED = 'ZtunnelAccepted';
/** Reason when a policy (or part of it) cannot be enforced by ztunnel. */
export const REASON_UNSUPPORTED = 'UnsupportedValue';
export const REASON_ACCEPTED = 'Accepted';
export const MESSAGE_ACCEPTED = 'attached to ztunnel';
/** Annotation that turns a policy into a dry run (evaluated and logged, never enforced). */
export const DRY_RUN_ANNOTATION = 'istio.io/dry-run';

const HTTP_RULE_MESSAGE = (found: string, boilerplate: string) =>
  `ztunnel does not support HTTP attributes (found: ${found}). ` +
  `In ambient mode you must use a waypoint proxy to enforce HTTP rules. ${boilerplate}`;
const DENY_BOILERPLATE =
  'DENY policy with HTTP attributes is enforced without the HTTP rules. This will be more restrictive than requested.';
const ALLOW_BOILERPLATE =
  'Within an ALLOW policy, rules matching HTTP attributes are omitted. This will be more restrictive than requested.';

/** `when` keys ztunnel can evaluate; any other key is an HTTP (L7) attribute. */
export const L4_WHEN_KEYS: ReadonlySet<string> = new Set([
  'source.ip',
  'source.namespace',
  'source.principal',
  'destination.ip',
  'destination.port',
]);

export function hasTargetRefs(ap: AuthorizationPolicy): boolean {
  const s = ap.spec;
  return !!s && (!!s.targetRef || (s.targetRefs?.length ?? 0) > 0);
}

export function convertAuthorizationPolicy(
  rootNamespace: string,
  ap: AuthorizationPolicy,
): ConvertedAuthorization {
  const spec = ap.spec ?? {};
  if (hasTargetRefs(ap)) return { authorization: null, status: null };
  const namespace = ap.metadata?.namespace ?? '';
  const name = ap.metadata?.name ?? '';
  let scope: Scope = Scope.WORKLOAD_SELECTOR;
  if (!spec.selector) scope = namespace === rootNamespace ? Scope.GLOBAL : Scope.NAMESPACE;
  const actionName = (spec.action ?? 'ALLOW').toUpperCase() || 'ALLOW';
  let action: Action;
  if (actionName === 'ALLOW') action = Action.ALLOW;
  else if (actionName === 'DENY') action = Action.DENY;
  else {
    return {
      authorization: null,
      status: {
        accepted: false,
        reason: REASON_UNSUPPORTED,
        message: `ztunnel does not support the ${actionName} action`,
      },
    };
  }
  const rules: Rule[] = [];
  const l7Found = new Set<string>();
  for (const rule of spec.rules ?? []) {
    const converted = convertRule(action, rule, namespace, l7Found);
    if (converted) rules.push(converted);
  }
  const authorization = Authorization.create({
    name,
    namespace,
    scope,
    action,
    rules,
    dryRun: annotationsOf(ap)[DRY_RUN_ANNOTATION]?.toLowerCase() === 'true',
  });
  if (l7Found.size > 0) {
    const found = [...l7Found].sort().join(', ');
    return {
      authorization,
      status: {
        accepted: true,
        reason: REASON_UNSUPPORTED,
        message: HTTP_RULE_MESSAGE(found, action === Action.DENY ? DENY_BOILERPLATE : ALLOW_BOILERPLATE),
      },
    };
  }
  return { authorization, status: { accepted: true, reason: REASON_ACCEPTED, message: MESSAGE_ACCEPTED } };
}

function httpOperationFields(op: AuthorizationOperation): string[] {
  const out: string[] = [];
  for (const f of ['hosts', 'notHosts', 'methods', 'notMethods', 'paths', 'notPaths'] as const) {
    if ((op[f]?.length ?? 0) > 0) out.push(f);
  }
  return out;
}

function httpSourceFields(s: AuthorizationSource): string[] {
  const out: string[] = [];
  for (const f of [
    'remoteIpBlocks',
    'notRemoteIpBlocks',
    'requestPrincipals',
    'notRequestPrincipals',
  ] as const) {
    if ((s[f]?.length ?? 0) > 0) out.push(f);
  }
  return out;
}

/** Returns the xDS rule, or null when the rule is omitted (ALLOW with HTTP attributes). */
function convertRule(
  action: Action,
  rule: AuthorizationRule,
  namespace: string,
  l7Found: Set<string>,
): Rule | null {
  let foundL7 = false;
  const clauses: Clause[] = [];
  if (rule.to && rule.to.length > 0) {
    let matchAll = false;
    const matches: Match[] = [];
    for (const to of rule.to) {
      const op = to.operation ?? {};
      const http = httpOperationFields(op);
      const m = match({
        destinationPorts: toPorts(op.ports),
        notDestinationPorts: toPorts(op.notPorts),
      });
      if (http.length > 0) {
        foundL7 = true;
        for (const f of http) l7Found.add(f);
        if (isEmptyMatch(m)) matchAll = true;
      }
      matches.push(m);
    }
    clauses.push({ matches: matchAll ? [] : matches });
  }
  if (rule.from && rule.from.length > 0) {
    let matchAll = false;
    const matches: Match[] = [];
    for (const from of rule.from) {
      const src = from.source ?? {};
      const http = httpSourceFields(src);
      const m = match({
        sourceIps: toAddresses(src.ipBlocks),
        notSourceIps: toAddresses(src.notIpBlocks),
        namespaces: toStringMatches(src.namespaces),
        notNamespaces: toStringMatches(src.notNamespaces),
        serviceAccounts: toServiceAccounts(src.serviceAccounts, namespace),
        notServiceAccounts: toServiceAccounts(src.notServiceAccounts, namespace),
        principals: toStringMatches(src.principals),
        notPrincipals: toStringMatches(src.notPrincipals),
      });
      if (http.length > 0) {
        foundL7 = true;
        for (const f of http) l7Found.add(f);
        if (isEmptyMatch(m)) matchAll = true;
      }
      matches.push(m);
    }
    clauses.push({ matches: matchAll ? [] : matches });
  }
  for (const when of rule.when ?? []) {
    if (!L4_WHEN_KEYS.has(when.key)) {
      foundL7 = true;
      l7Found.add(when.key);
      // Only reachable for DENY (ALLOW drops the rule below): an HTTP-only condition now holds for every
      // connection, which an empty clause expresses.
      clauses.push({ matches: [] });
      continue;
    }
    clauses.push({ matches: [whenMatch(when)] });
  }
  if (action === Action.ALLOW && foundL7) return null;
  return { clauses };
}

function whenMatch(when: AuthorizationCondition): Match {
  const pos = when.values;
  const neg = when.notValues;
  switch (when.key) {
    case 'source.namespace':
      return match({ namespaces: toStringMatches(pos), notNamespaces: toStringMatches(neg) });
    case 'source.principal':
      return match({ principals: toStringMatches(pos), notPrincipals: toStringMatches(neg) });
    case 'source.ip':
      return match({ sourceIps: toAddresses(pos), notSourceIps: toAddresses(neg) });
    case 'destination.ip':
      return match({ destinationIps: toAddresses(pos), notDestinationIps: toAddresses(neg) });
    default:
      return match({ destinationPorts: toPorts(pos), notDestinationPorts: toPorts(neg) });
  }
}

function match(fields: Partial<Match>): Match {
  return {
    namespaces: fields.namespaces ?? [],
    notNamespaces: fields.notNamespaces ?? [],
    serviceAccounts: fields.serviceAccounts ?? [],
    notServiceAccounts: fields.notServiceAccounts ?? [],
    principals: fields.principals ?? [],
    notPrincipals: fields.notPrincipals ?? [],
    sourceIps: fields.sourceIps ?? [],
    notSourceIps: fields.notSourceIps ?? [],
    destinationIps: fields.destinationIps ?? [],
    notDestinationIps: fields.notDestinationIps ?? [],
    destinationPorts: fields.destinationPorts ?? [],
    notDestinationPorts: fields.notDestinationPorts ?? [],
  };
}

function isEmptyMatch(m: Match): boolean {
  for (const v of Object.values(m) as unknown[][]) if (v.length > 0) return false;
  return true;
}

/** Istio's wildcard forms: `*` → presence, `*x` → suffix x, `x*` → prefix x, otherwise exact. */
export function toStringMatch(v: string): StringMatch {
  if (v === '*') return { matchType: { $case: 'presence', value: {} } };
  if (v.startsWith('*')) return { matchType: { $case: 'suffix', value: v.slice(1) } };
  if (v.endsWith('*')) return { matchType: { $case: 'prefix', value: v.slice(0, -1) } };
  return { matchType: { $case: 'exact', value: v } };
}

function toStringMatches(values: readonly string[] | undefined): StringMatch[] {
  return (values ?? []).map(toStringMatch);
}

/** `ns/sa`, or a bare `sa` meaning the policy's own namespace. */
function toServiceAccounts(values: readonly string[] | undefined, namespace: string): ServiceAccountMatch[] {
  return (values ?? []).map((v) => {
    const slash = v.indexOf('/');
    return slash === -1
      ? { namespace, serviceAccount: v }
      : { namespace: v.slice(0, slash), serviceAccount: v.slice(slash + 1) };
  });
}

/** Decimal ports 0..65535; anything else is skipped (as upstream's ParseUint does). */
function toPorts(values: readonly string[] | undefined): number[] {
  const out: number[] = [];
  for (const v of values ?? []) {
    if (!/^\d+$/.test(v)) continue;
    const p = Number(v);
    if (p <= 65535) out.push(p);
  }
  return out;
}

/** Addresses or CIDRs; a bare address gets its full length; invalid entries are skipped. */
function toAddresses(values: readonly string[] | undefined): security.Address[] {
  const out: security.Address[] = [];
  for (const v of values ?? []) {
    if (v.length === 0) continue;
    const c = parseCidr(v);
    if (c) out.push({ address: ipToBytes(c.ip), length: c.prefix });
  }
  return out;
}
