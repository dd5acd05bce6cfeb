/**
 * SPIFFE identities of the shape Istio uses: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
 * Parsing is strict (exactly that shape) because identities decide authorization; principals in policies are
 * the same string without the `spiffe://` prefix.
 */

export const SPIFFE_SCHEME = 'spiffe://';

/** SPIFFE trust-domain characters (spec: lowercase letters, digits, dots, dashes, underscores). */
const TRUST_DOMAIN_RE = /^[a-z0-9._-]+$/;
/** Path segment characters allowed by the SPIFFE spec; Kubernetes names are a subset. */
const SEGMENT_RE = /^[A-Za-z0-9._-]+$/;
/** Longest SPIFFE ID the spec allows. */
export const MAX_SPIFFE_ID_LENGTH = 2048;

export interface Identity {
  readonly trustDomain: string;
  readonly namespace: string;
  readonly serviceAccount: string;
}

export type ParseResult = { ok: true; identity: Identity } | { ok: false; error: string };

function validSegment(s: string): boolean {
  return SEGMENT_RE.test(s) && s !== '.' && s !== '..';
}

export function parseSpiffeId(uri: string): ParseResult {
  if (uri.length > MAX_SPIFFE_ID_LENGTH)
    return { ok: false, error: `longer than ${MAX_SPIFFE_ID_LENGTH} bytes` };
  if (!uri.startsWith(SPIFFE_SCHEME))
    return { ok: false, error: `${JSON.stringify(uri)} does not start with spiffe://` };
  const rest = uri.slice(SPIFFE_SCHEME.length);
  const parts = rest.split('/');
  if (parts.length !== 5) {
    return { ok: false, error: `${JSON.stringify(uri)} is not of the form spiffe://<td>/ns/<ns>/sa/<sa>` };
  }
  const [td, nsKey, ns, saKey, sa] = parts as [string, string, string, string, string];
  if (!TRUST_DOMAIN_RE.test(td)) return { ok: false, error: `invalid trust domain ${JSON.stringify(td)}` };
  if (nsKey !== 'ns' || saKey !== 'sa') {
    return { ok: false, error: `${JSON.stringify(uri)} is not of the form spiffe://<td>/ns/<ns>/sa/<sa>` };
  }
  if (!validSegment(ns)) return { ok: false, error: `invalid namespace ${JSON.stringify(ns)}` };
  if (!validSegment(sa)) return { ok: false, error: `invalid service account ${JSON.stringify(sa)}` };
  return { ok: true, identity: { trustDomain: td, namespace: ns, serviceAccount: sa } };
}

export function formatSpiffeId(id: Identity): string {
  return `${SPIFFE_SCHEME}${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

/** Istio's principal form: the SPIFFE ID without the scheme. */
export function principalOf(id: Identity): string {
  return `${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
}

export function identityKey(id: Identity): string {
  return formatSpiffeId(id);
}

export function sameIdentity(a: Identity, b: Identity): boolean {
  return (
    a.trustDomain === b.trustDomain && a.namespace === b.namespace && a.serviceAccount === b.serviceAccount
  );
}
