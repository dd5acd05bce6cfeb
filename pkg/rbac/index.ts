/**
 * Authorization evaluation shared by ztunnel (L4) and the waypoint (whose L7 evaluator extends it).
 *
 * Semantics follow Istio's ztunnel: DENY policies first (any match rejects), then if no ALLOW policy applies the
 * connection is allowed, if any ALLOW policy matches it is allowed, otherwise it is rejected. A policy with no
 * rules matches nothing (so an empty ALLOW policy, "allow-nothing", denies everything); a rule with no clauses
 * matches everything; a clause matches when any of its matches does; a match ANDs its non-empty field groups,
 * each an OR of its values, with `not_*` groups negated; a match with every group empty is ignored. Principals
 * compare without `spiffe://`. Dry-run policies are evaluated for logs only.
 *
 * Policies are compiled once when they arrive over xDS (CIDRs parsed, strings kept as tagged matchers) so the
 * per-connection check does no parsing and allocates nothing.
 */
import type {
  Authorization,
  Address as XdsAddress,
  Match as XdsMatch,
  StringMatch as XdsStringMatch,
} from '../xds/gen/istio/security/authorization.ts';
import { Action, Scope } from '../xds/gen/istio/security/authorization.ts';
import { type Cidr, cidrContains, ipFromBytes, type ParsedIp } from './ip.ts';

export * from './ip.ts';
export * from './l7.ts';

/** A string matcher: kind 0 exact, 1 prefix, 2 suffix, 3 presence (non-empty). */
export interface StringMatcher {
  readonly kind: 0 | 1 | 2 | 3;
  readonly value: string;
}

export interface ServiceAccountMatcher {
  readonly namespace: string;
  readonly serviceAccount: string;
}

export interface CompiledMatch {
  readonly namespaces: readonly StringMatcher[];
  readonly notNamespaces: readonly StringMatcher[];
  readonly principals: readonly StringMatcher[];
  readonly notPrincipals: readonly StringMatcher[];
  readonly serviceAccounts: readonly ServiceAccountMatcher[];
  readonly notServiceAccounts: readonly ServiceAccountMatcher[];
  readonly sourceIps: readonly Cidr[];
  readonly notSourceIps: readonly Cidr[];
  readonly destinationIps: readonly Cidr[];
  readonly notDestinationIps: readonly Cidr[];
  readonly destinationPorts: readonly number[];
  readonly notDestinationPorts: readonly number[];
  /** True when every group is empty: ignored, like ztunnel. */
  readonly empty: boolean;
}

export type PolicyScope = 'global' | 'namespace' | 'workload';

export interface CompiledPolicy {
  /** `<namespace>/<name>`, the key workloads reference in `authorization_policies`. */
  readonly key: string;
  readonly name: string;
  readonly namespace: string;
  readonly scope: PolicyScope;
  readonly action: 'allow' | 'deny';
  readonly dryRun: boolean;
  /** rules → clauses (ANDed) → matches (ORed). */
  readonly rules: ReadonlyArray<ReadonlyArray<ReadonlyArray<CompiledMatch>>>;
}

/** What authorization sees of a connection. `principal` is the peer's SPIFFE id without `spiffe://`. */
export interface ConnectionInfo {
  readonly srcIp: ParsedIp;
  readonly dstIp: ParsedIp;
  readonly dstPort: number;
  /** Null for plaintext (no mTLS identity). */
  readonly identity: {
    readonly namespace: string;
    readonly serviceAccount: string;
    readonly principal: string;
  } | null;
}

export type Decision =
  | { readonly allowed: true; readonly policy: string | null }
  | { readonly allowed: false; readonly policy: string | null; readonly reason: 'deny' | 'no-allow-match' };

export class PolicyError extends Error {
  override readonly name = 'PolicyError';
}

function stringMatcher(m: XdsStringMatch): StringMatcher | null {
  const t = m.matchType;
  if (!t) return null;
  switch (t.$case) {
    case 'exact':
      return { kind: 0, value: t.value };
    case 'prefix':
      return { kind: 1, value: t.value };
    case 'suffix':
      return { kind: 2, value: t.value };
    case 'presence':
      return { kind: 3, value: '' };
    default:
      return null;
  }
}

function strings(list: readonly XdsStringMatch[] | undefined): StringMatcher[] {
  const out: StringMatcher[] = [];
  for (const m of list ?? []) {
    const s = stringMatcher(m);
    if (s) out.push(s);
  }
  return out;
}

function cidrs(list: readonly XdsAddress[] | undefined, where: string): Cidr[] {
  return (list ?? []).map((a) => {
    const ip = ipFromBytes(a.address);
    const max = ip?.v4 ? 32 : 128;
    if (!ip || a.length > max)
      throw new PolicyError(`${where}: invalid address (${a.address.length} bytes/${a.length})`);
    return { ip, prefix: a.length };
  });
}

function ports(list: readonly number[] | undefined, where: string): number[] {
  return (list ?? []).map((p) => {
    if (!Number.isInteger(p) || p < 0 || p > 65535) throw new PolicyError(`${where}: invalid port ${p}`);
    return p;
  });
}

export function compileMatch(m: XdsMatch, where = 'match'): CompiledMatch {
  const c = {
    namespaces: strings(m.namespaces),
    notNamespaces: strings(m.notNamespaces),
    principals: strings(m.principals),
    notPrincipals: strings(m.notPrincipals),
    serviceAccounts: (m.serviceAccounts ?? []).map((s) => ({
      namespace: s.namespace,
      serviceAccount: s.serviceAccount,
    })),
    notServiceAccounts: (m.notServiceAccounts ?? []).map((s) => ({
      namespace: s.namespace,
      serviceAccount: s.serviceAccount,
    })),
    sourceIps: cidrs(m.sourceIps, `${where}.source_ips`),
    notSourceIps: cidrs(m.notSourceIps, `${where}.not_source_ips`),
    destinationIps: cidrs(m.destinationIps, `${where}.destination_ips`),
    notDestinationIps: cidrs(m.notDestinationIps, `${where}.not_destination_ips`),
    destinationPorts: ports(m.destinationPorts, `${where}.destination_ports`),
    notDestinationPorts: ports(m.notDestinationPorts, `${where}.not_destination_ports`),
  };
  const empty = Object.values(c).every((v) => v.length === 0);
  return { ...c, empty };
}

/** Compiles an xDS Authorization; throws PolicyError on values that cannot be enforced (the xDS client NACKs). */
export function compilePolicy(a: Authorization): CompiledPolicy {
  const key = `${a.namespace}/${a.name}`;
  const scope: PolicyScope | null =
    a.scope === Scope.GLOBAL
      ? 'global'
      : a.scope === Scope.NAMESPACE
        ? 'namespace'
        : a.scope === Scope.WORKLOAD_SELECTOR
          ? 'workload'
          : null;
  if (scope === null) throw new PolicyError(`${key}: unknown scope ${a.scope}`);
  const action = a.action === Action.ALLOW ? 'allow' : a.action === Action.DENY ? 'deny' : null;
  if (action === null) throw new PolicyError(`${key}: unknown action ${a.action}`);
  const rules = a.rules.map((r, ri) =>
    r.clauses.map((cl, ci) =>
      cl.matches.map((m, mi) => compileMatch(m, `${key}.rules[${ri}].clauses[${ci}].matches[${mi}]`)),
    ),
  );
  return { key, name: a.name, namespace: a.namespace, scope, action, dryRun: a.dryRun, rules };
}

function stringMatches(m: StringMatcher, s: string): boolean {
  switch (m.kind) {
    case 0:
      return s === m.value;
    case 1:
      return s.startsWith(m.value);
    case 2:
      return s.endsWith(m.value);
    default:
      return s.length > 0;
  }
}

function anyString(list: readonly StringMatcher[], s: string): boolean {
  for (const m of list) if (stringMatches(m, s)) return true;
  return false;
}

function anyCidr(list: readonly Cidr[], ip: ParsedIp): boolean {
  for (const c of list) if (cidrContains(c, ip)) return true;
  return false;
}

function anySa(list: readonly ServiceAccountMatcher[], conn: ConnectionInfo): boolean {
  const id = conn.identity;
  if (!id) return false;
  for (const m of list)
    if (m.namespace === id.namespace && m.serviceAccount === id.serviceAccount) return true;
  return false;
}

/** positive group: empty or any; negative group: empty or none. */
function group<T>(pos: readonly T[], neg: readonly T[], test: (list: readonly T[]) => boolean): boolean {
  if (pos.length > 0 && !test(pos)) return false;
  if (neg.length > 0 && test(neg)) return false;
  return true;
}

export function matchMatches(m: CompiledMatch, conn: ConnectionInfo): boolean {
  const principal = conn.identity?.principal ?? '';
  const ns = conn.identity?.namespace ?? '';
  return (
    group(m.destinationIps, m.notDestinationIps, (l) => anyCidr(l, conn.dstIp)) &&
    group(m.sourceIps, m.notSourceIps, (l) => anyCidr(l, conn.srcIp)) &&
    group(m.destinationPorts, m.notDestinationPorts, (l) => l.includes(conn.dstPort)) &&
    group(m.serviceAccounts, m.notServiceAccounts, (l) => anySa(l, conn)) &&
    group(m.principals, m.notPrincipals, (l) => anyString(l, principal)) &&
    group(m.namespaces, m.notNamespaces, (l) => anyString(l, ns))
  );
}

export function policyMatches(p: CompiledPolicy, conn: ConnectionInfo): boolean {
  for (const rule of p.rules) {
    let ruleMatch = true;
    for (const clause of rule) {
      let clauseMatch = clause.length === 0;
      for (const m of clause) {
        if (m.empty) continue;
        if (matchMatches(m, conn)) {
          clauseMatch = true;
          break;
        }
      }
      if (!clauseMatch) {
        ruleMatch = false;
        break;
      }
    }
    if (ruleMatch) return true;
  }
  return false;
}

export interface EvaluateOptions {
  /** Called for dry-run policies that would have changed the outcome (for logs). */
  readonly onDryRun?: (policy: CompiledPolicy, matched: boolean) => void;
}

/**
 * Decides a connection against the policies that apply to its destination (the caller selects them by scope:
 * global ones, the destination namespace's, and those the workload references).
 */
export function evaluate(
  policies: Iterable<CompiledPolicy>,
  conn: ConnectionInfo,
  opts: EvaluateOptions = {},
): Decision {
  let haveAllow = false;
  let allowMatch: CompiledPolicy | null = null;
  for (const p of policies) {
    if (p.dryRun) {
      opts.onDryRun?.(p, policyMatches(p, conn));
      continue;
    }
    if (p.action === 'deny') {
      if (policyMatches(p, conn)) return { allowed: false, policy: p.key, reason: 'deny' };
    } else {
      haveAllow = true;
      if (allowMatch === null && policyMatches(p, conn)) allowMatch = p;
    }
  }
  if (!haveAllow) return { allowed: true, policy: null };
  if (allowMatch) return { allowed: true, policy: allowMatch.key };
  return { allowed: false, policy: null, reason: 'no-allow-match' };
}
