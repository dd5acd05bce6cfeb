/**
 * Chain verification with node:crypto: each certificate must be issued and signed by the next, be inside its
 * validity window, and the last must be issued by one of the trust anchors (or be one).
 */
import { X509Certificate } from 'node:crypto';

export type ChainResult = { ok: true } | { ok: false; error: string };

export function verifyChain(
  chain: readonly (string | Buffer)[],
  roots: readonly (string | Buffer)[],
  now = Date.now(),
): ChainResult {
  if (chain.length === 0) return { ok: false, error: 'empty chain' };
  let certs: X509Certificate[];
  let anchors: X509Certificate[];
  try {
    certs = chain.map((c) => new X509Certificate(c));
    anchors = roots.map((c) => new X509Certificate(c));
  } catch (err) {
    return { ok: false, error: `unparseable certificate: ${(err as Error).message}` };
  }
  for (const [i, c] of certs.entries()) {
    if (now < Date.parse(c.validFrom))
      return { ok: false, error: `certificate ${i} not yet valid (from ${c.validFrom})` };
    if (now > Date.parse(c.validTo)) return { ok: false, error: `certificate ${i} expired (${c.validTo})` };
    const parent = certs[i + 1];
    if (parent) {
      if (!parent.ca) return { ok: false, error: `certificate ${i + 1} is not a CA` };
      if (!c.checkIssued(parent) || !c.verify(parent.publicKey)) {
        return { ok: false, error: `certificate ${i} is not signed by certificate ${i + 1}` };
      }
    }
  }
  const last = certs[certs.length - 1]!;
  for (const a of anchors) {
    if (last.fingerprint256 === a.fingerprint256) return { ok: true };
    if (a.ca && last.checkIssued(a) && last.verify(a.publicKey)) {
      if (now > Date.parse(a.validTo)) return { ok: false, error: 'trust anchor expired' };
      return { ok: true };
    }
  }
  return { ok: false, error: 'chain does not lead to a trusted root' };
}
