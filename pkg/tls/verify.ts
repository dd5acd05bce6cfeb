/**
 * SPIFFE checks on top of OpenSSL's chain verification. Workload certificates carry one URI SAN and no DNS
 * SAN, so Node's default hostname check would fail every handshake: the client replaces it with a check that
 * the server's SPIFFE identity is one of those expected (ztunnel `IdentityVerifier`), and the server, after
 * OpenSSL has verified the client chain against the roots, requires a SPIFFE identity in its trust domain and
 * takes the first one as the peer identity (ztunnel `TrustDomainVerifier`, `identity_from_connection`).
 *
 * SANs are read from the certificate DER with our own decoder rather than from Node's `subjectaltname`
 * string, whose quoting of unusual characters is one more parser to trust.
 */
import type { PeerCertificate, TLSSocket } from 'node:tls';
import { MeshError } from '../errors/index.ts';
import { formatSpiffeId, type Identity, parseSpiffeId, sameIdentity, x509 } from '../identity/index.ts';

/** The SPIFFE identities in a DER certificate's URI SANs, in order; malformed SPIFFE URIs are skipped. */
export function spiffeIdentitiesOf(certDer: Buffer): Identity[] {
  let san: Buffer | null = null;
  try {
    for (const ext of x509.extensionsOf(certDer)) {
      if (ext.oid === x509.OID.subjectAltName) {
        san = ext.value;
        break;
      }
    }
    if (san === null) return [];
    const out: Identity[] = [];
    for (const uri of x509.parseSan(san).uris) {
      const parsed = parseSpiffeId(uri);
      if (parsed.ok) out.push(parsed.identity);
    }
    return out;
  } catch {
    // An undecodable certificate has no identity we can trust.
    return [];
  }
}

/** The peer's SPIFFE identities on an established TLS socket (empty without a peer certificate). */
export function peerIdentities(socket: TLSSocket): Identity[] {
  const cert = socket.getPeerCertificate();
  // Node returns {} (no `raw`) when the peer sent no certificate.
  if (cert === null || cert.raw === undefined) return [];
  return spiffeIdentitiesOf(cert.raw);
}

function describeIds(ids: readonly Identity[]): string {
  return ids.length === 0 ? 'none' : ids.map(formatSpiffeId).join(', ');
}

/**
 * A `checkServerIdentity` for `tls.connect`: accepts the server iff one of its SPIFFE identities is in
 * `expected` (order irrelevant). OpenSSL has already verified the chain against our roots when this runs.
 * The hostname argument is ignored: HBONE dials IPs and SPIFFE certificates name no host.
 */
export function spiffeServerCheck(
  expected: readonly Identity[],
): (hostname: string, cert: PeerCertificate) => Error | undefined {
  return (_hostname, cert) => {
    const got = cert.raw === undefined ? [] : spiffeIdentitiesOf(cert.raw);
    for (const id of got) {
      for (const want of expected) if (sameIdentity(id, want)) return undefined;
    }
    return new MeshError(
      'MESH_ERR_TLS_PEER_IDENTITY',
      `server identity ${describeIds(got)} is not one of the expected ${describeIds(expected)}`,
      { details: { peer: got[0] ? formatSpiffeId(got[0]) : 'none' } },
    );
  };
}

export type ClientPeerCheck =
  | { readonly ok: true; readonly identity: Identity }
  | { readonly ok: false; readonly reason: string };

/**
 * Server side, after the handshake: the client must have been verified by OpenSSL (`authorized`), carry a
 * SPIFFE identity in `trustDomain`, and its first SPIFFE SAN becomes the peer identity.
 */
export function checkClientPeer(socket: TLSSocket, trustDomain: string): ClientPeerCheck {
  if (!socket.authorized) {
    return { ok: false, reason: `client certificate not verified (${String(socket.authorizationError)})` };
  }
  const ids = peerIdentities(socket);
  const first = ids[0];
  if (first === undefined) return { ok: false, reason: 'client certificate has no SPIFFE URI SAN' };
  for (const id of ids) if (id.trustDomain === trustDomain) return { ok: true, identity: first };
  return {
    ok: false,
    reason: `client identities ${describeIds(ids)} are not in trust domain ${JSON.stringify(trustDomain)}`,
  };
}
