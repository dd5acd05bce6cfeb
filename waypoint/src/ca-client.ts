/**
 * The waypoint's identity helpers. Its CSRs go through the shared CA client (pkg/identity/ca-client.ts) with
 * `impersonate: false`: unlike ztunnel it never asks for another identity; istiod signs the identity its token
 * proves.
 */

/**
 * `namespace`/`serviceAccount` from a Kubernetes service-account token's `sub` claim
 * (`system:serviceaccount:<ns>:<sa>`), without verifying it (istiod does); null when it is not one.
 */
export function serviceAccountFromToken(token: string): { namespace: string; serviceAccount: string } | null {
  const parts = token.trim().split('.');
  if (parts.length !== 3) return null;
  try {
    const claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as { sub?: unknown };
    const m =
      typeof claims.sub === 'string' ? /^system:serviceaccount:([^:]+):([^:]+)$/.exec(claims.sub) : null;
    return m ? { namespace: m[1]!, serviceAccount: m[2]! } : null;
  } catch {
    return null;
  }
}
