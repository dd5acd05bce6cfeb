/**
 * PeerAuthentication in ambient (ARCHITECTURE.md, "PeerAuthentication"), after upstream istiod's
 * authorization.go / policies.go:
 *
 * - When any PeerAuthentication exists, one static DENY policy `<root>/istio_converted_static_strict`
 *   (WORKLOAD_SELECTOR, `not_principals: [presence]`: reject connections without a peer identity) is sent.
 * - Each workload references it when its effective mode is STRICT. The effective mode is resolved mesh (root
 *   namespace, no selector) → namespace (no selector) → workload (selector), the oldest policy winning at each
 *   level; UNSET inherits; DISABLE behaves like PERMISSIVE (ztunnel never downgrades to plaintext).
 * - A workload-selector policy with `portLevelMtls` that differs from its top-level mode becomes
 *   `<ns>/converted_peer_authentication_<name>`, a DENY policy carrying both the top-level strictness and the
 *   per-port exceptions (ztunnel denies on any DENY match, so a separate "exception" policy could not re-allow a
 *   port the static policy denies); workloads then reference it instead of the static one.
 *
 * Where upstream's boolean expressions disagree with their own comments (a PERMISSIVE workload under a STRICT
 * mesh skipping its STRICT ports; an UNSET namespace policy hiding a STRICT mesh), we implement the documented
 * inheritance. docs/istiod-xds.md lists both cases.
 */
import { Action, Authorization, type Clause, type Match, type Rule, Scope } from '../../../pkg/xds/index.ts';
import { compareAge, isEmptySelector, isSubset } from '../kube/labels.ts';
import type { MutualTls, PeerAuthentication } from '../kube/types.ts';

/** Underscores are illegal in Kubernetes names, so these never collide with a user's AuthorizationPolicy. */
export const STATIC_STRICT_POLICY_NAME = 'istio_converted_static_strict';
export const CONVERTED_PEER_AUTHENTICATION_PREFIX = 'converted_peer_authentication_';

type Mode = 'UNSET' | 'DISABLE' | 'PERMISSIVE' | 'STRICT';

function modeOf(m: MutualTls | null | undefined): Mode {
  const v = (m?.mode ?? '').toUpperCase();
  return v === 'STRICT' || v === 'PERMISSIVE' || v === 'DISABLE' ? v : 'UNSET';
}

const isStrict = (m: MutualTls | null | undefined) => modeOf(m) === 'STRICT';
const isUnset = (m: MutualTls | null | undefined) => modeOf(m) === 'UNSET';
/** PERMISSIVE or DISABLE: both accept plaintext in ambient. */
const isNonStrict = (m: MutualTls | null | undefined) => {
  const mode = modeOf(m);
  return mode === 'PERMISSIVE' || mode === 'DISABLE';
};

/** Namespace- or mesh-wide: no selector, or one with no labels. */
export function isWideSelector(pa: PeerAuthentication): boolean {
  return isEmptySelector(pa.spec?.selector?.matchLabels);
}

const presence = () => ({ matchType: { $case: 'presence' as const, value: {} } });

function denyNoIdentity(ports: number[] = []): Match {
  return {
    namespaces: [],
    notNamespaces: [],
    serviceAccounts: [],
    notServiceAccounts: [],
    principals: [],
    notPrincipals: [presence()],
    sourceIps: [],
    notSourceIps: [],
    destinationIps: [],
    notDestinationIps: [],
    destinationPorts: ports,
    notDestinationPorts: [],
  };
}

function exceptPort(port: number): Match {
  return { ...denyNoIdentity(), notPrincipals: [], notDestinationPorts: [port] };
}

/** The static STRICT policy: deny every connection that has no mTLS identity. */
export function staticStrictPolicy(rootNamespace: string): Authorization {
  return Authorization.create({
    name: STATIC_STRICT_POLICY_NAME,
    namespace: rootNamespace,
    scope: Scope.WORKLOAD_SELECTOR,
    action: Action.DENY,
    rules: [{ clauses: [{ matches: [denyNoIdentity()] }] }],
  });
}

export function convertedPeerAuthenticationName(paName: string): string {
  return `${CONVERTED_PEER_AUTHENTICATION_PREFIX}${paName}`;
}

/** The oldest policy of a list (ties broken by namespace/name), or null. */
export function oldest<T extends PeerAuthentication>(list: readonly T[]): T | null {
  let best: T | null = null;
  for (const p of list) if (best === null || compareAge(p, best) < 0) best = p;
  return best;
}

/** Effective strictness above the workload level: namespace policy unless UNSET, else the mesh policy. */
function parentStrict(nsCfg: PeerAuthentication | null, rootCfg: PeerAuthentication | null): boolean {
  if (nsCfg && !isUnset(nsCfg.spec?.mtls)) return isStrict(nsCfg.spec?.mtls);
  return rootCfg ? isStrict(rootCfg.spec?.mtls) : false;
}

function sortedPorts(pa: PeerAuthentication): Array<[number, MutualTls]> {
  const out: Array<[number, MutualTls]> = [];
  for (const [k, v] of Object.entries(pa.spec?.portLevelMtls ?? {})) {
    if (!/^\d+$/.test(k) || Number(k) > 65535) continue;
    out.push([Number(k), v]);
  }
  return out.sort((a, b) => a[0] - b[0]);
}

/**
 * The PeerAuthentications that can apply to a workload: mesh-wide ones (root namespace, no selector), and those
 * in its namespace that are namespace-wide or select its labels. Root-namespace policies with a selector are
 * ignored, as in Istio.
 */
export function applicablePeerAuthentications(
  all: Iterable<PeerAuthentication>,
  rootNamespace: string,
  namespace: string,
  labels: Readonly<Record<string, string>>,
): PeerAuthentication[] {
  const out: PeerAuthentication[] = [];
  for (const pa of all) {
    const ns = pa.metadata?.namespace ?? '';
    if (ns === rootNamespace && !pa.spec?.selector) out.push(pa);
    else if (ns === namespace && (!pa.spec?.selector || isSubset(pa.spec.selector.matchLabels, labels)))
      out.push(pa);
  }
  return out;
}

/**
 * The policy keys a workload must reference for the PeerAuthentications that apply to it: the static STRICT
 * policy, and/or its converted port-level policy. Sorted.
 */
export function peerAuthenticationKeys(
  rootNamespace: string,
  applicable: readonly PeerAuthentication[],
): string[] {
  let meshCfg: PeerAuthentication | null = null;
  let nsCfg: PeerAuthentication | null = null;
  let wlCfg: PeerAuthentication | null = null;
  for (const pa of applicable) {
    const ns = pa.metadata?.namespace ?? '';
    if (isWideSelector(pa)) {
      if (ns === rootNamespace) {
        if (meshCfg === null || compareAge(pa, meshCfg) < 0) meshCfg = pa;
      } else if (nsCfg === null || compareAge(pa, nsCfg) < 0) nsCfg = pa;
    } else if (ns !== rootNamespace && (wlCfg === null || compareAge(pa, wlCfg) < 0)) wlCfg = pa;
  }
  let strict = parentStrict(nsCfg, meshCfg);
  let portKey = '';
  if (wlCfg) {
    const mtls = wlCfg.spec?.mtls;
    const key = `${wlCfg.metadata?.namespace ?? ''}/${convertedPeerAuthenticationName(wlCfg.metadata?.name ?? '')}`;
    const ports = sortedPorts(wlCfg).map(([, m]) => m);
    if (isStrict(mtls)) strict = true;
    else if (isNonStrict(mtls)) strict = false;
    if (ports.length > 0) {
      if (isStrict(mtls)) {
        if (ports.some(isNonStrict)) {
          portKey = key;
          strict = false;
        }
      } else if (isNonStrict(mtls)) {
        if (ports.some(isStrict)) portKey = key;
      } else if (strict) {
        if (ports.some(isNonStrict)) {
          portKey = key;
          strict = false;
        }
      } else if (ports.some(isStrict)) portKey = key;
    }
  }
  const keys: string[] = [];
  if (strict) keys.push(`${rootNamespace}/${STATIC_STRICT_POLICY_NAME}`);
  if (portKey) keys.push(portKey);
  return keys.sort();
}

/**
 * The converted form of a workload-selector PeerAuthentication with port-level settings, given the oldest
 * namespace-wide and mesh-wide policies; null when it needs no policy of its own.
 */
export function convertPeerAuthentication(
  rootNamespace: string,
  pa: PeerAuthentication,
  nsCfg: PeerAuthentication | null,
  rootCfg: PeerAuthentication | null,
): Authorization | null {
  const ns = pa.metadata?.namespace ?? '';
  const ports = sortedPorts(pa);
  if (ns === rootNamespace || isWideSelector(pa) || ports.length === 0) return null;
  const mtls = pa.spec?.mtls;
  const parent = parentStrict(nsCfg, rootCfg);
  const workloadStrict = isStrict(mtls) || (isUnset(mtls) && parent);
  const clauses: Clause[] = [];
  const rules: Rule[] = [];
  if (isStrict(mtls)) clauses.push({ matches: [denyNoIdentity()] });
  let foundNonStrict = false;
  for (const [port, portMtls] of ports) {
    if (isStrict(portMtls)) {
      // Already enforced by the workload's own strictness.
      if (workloadStrict) continue;
      rules.push({ clauses: [{ matches: [denyNoIdentity([port])] }] });
    } else if (isNonStrict(portMtls)) {
      if (!workloadStrict) continue;
      foundNonStrict = true;
      clauses.push({ matches: [exceptPort(port)] });
    }
  }
  if (isStrict(mtls) && !foundNonStrict) return null;
  if (clauses.length === 0 && rules.length === 0) return null;
  // An inherited STRICT mode is merged in so that the static policy need not (and must not) be referenced.
  if (parent && foundNonStrict) clauses.push({ matches: [denyNoIdentity()] });
  if (clauses.length > 0) rules.push({ clauses });
  return Authorization.create({
    name: convertedPeerAuthenticationName(pa.metadata?.name ?? ''),
    namespace: ns,
    scope: Scope.WORKLOAD_SELECTOR,
    action: Action.DENY,
    rules,
  });
}
