/**
 * mTLS for HBONE: contexts from workload certificates (TLS 1.3 only, ALPN h2) and SPIFFE peer verification.
 * Both ends present the proxied workload's certificate; chain verification is OpenSSL's against the roots the
 * CA sent, and identity checks are SPIFFE URI SAN checks (see verify.ts).
 */
import type { ConnectionOptions, SecureContext, TlsOptions } from 'node:tls';
import type { Identity, WorkloadCertificate } from '../identity/index.ts';
import { ALPN_PROTOCOLS, mtlsContextOptions } from './context.ts';
import { spiffeServerCheck } from './verify.ts';

export {
  ALPN_H2,
  ALPN_PROTOCOLS,
  createMtlsContext,
  mtlsContextOptions,
  SecureContextCache,
  TLS_VERSION,
} from './context.ts';
export {
  type ClientPeerCheck,
  checkClientPeer,
  peerIdentities,
  spiffeIdentitiesOf,
  spiffeServerCheck,
} from './verify.ts';

/**
 * Options for a `tls.Server` terminating HBONE with `cert`: client certificate required and verified by
 * OpenSSL against the roots (the trust-domain check follows the handshake, `checkClientPeer`).
 */
export function serverTlsOptions(cert: WorkloadCertificate, handshakeTimeoutMs: number): TlsOptions {
  return {
    ...mtlsContextOptions(cert),
    requestCert: true,
    rejectUnauthorized: true,
    ALPNProtocols: [...ALPN_PROTOCOLS],
    handshakeTimeout: handshakeTimeoutMs,
  };
}

/**
 * Options for `tls.connect` presenting the source workload's context and accepting only a server whose
 * SPIFFE identity is in `expected`. No SNI is sent (HBONE dials IPs).
 */
export function clientTlsOptions(context: SecureContext, expected: readonly Identity[]): ConnectionOptions {
  return {
    secureContext: context,
    ALPNProtocols: [...ALPN_PROTOCOLS],
    rejectUnauthorized: true,
    checkServerIdentity: spiffeServerCheck(expected),
  };
}
