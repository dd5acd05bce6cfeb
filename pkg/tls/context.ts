/**
 * mTLS contexts from workload certificates. HBONE is TLS 1.3 only with ALPN `h2` on both ends, and each end
 * presents the *proxied workload's* certificate (ARCHITECTURE.md, ztunnel `src/tls/workload.rs`), so a
 * context belongs to one certificate; it is rebuilt when the certificate rotates (a new serial).
 */
import { createSecureContext, type SecureContext, type SecureContextOptions } from 'node:tls';
import { MeshError } from '../errors/index.ts';
import { identityKey, type WorkloadCertificate } from '../identity/index.ts';

/** HBONE accepts nothing older than TLS 1.3 (ztunnel pins the version in both directions). */
export const TLS_VERSION = 'TLSv1.3';
/** The only application protocol HBONE speaks. */
export const ALPN_H2 = 'h2';
export const ALPN_PROTOCOLS: readonly string[] = [ALPN_H2];

/** Options for `tls.createSecureContext` / `tls.createServer`: key, leaf+intermediates, roots, TLS 1.3 only. */
export function mtlsContextOptions(cert: WorkloadCertificate): SecureContextOptions {
  return {
    key: cert.privateKeyPem,
    cert: cert.chainPem.join(''),
    ca: [...cert.rootsPem],
    minVersion: TLS_VERSION,
    maxVersion: TLS_VERSION,
  };
}

/** A secure context for `cert`; throws MESH_ERR_TLS_CONTEXT (never with key material) when OpenSSL refuses it. */
export function createMtlsContext(cert: WorkloadCertificate): SecureContext {
  try {
    return createSecureContext(mtlsContextOptions(cert));
  } catch (err) {
    throw new MeshError(
      'MESH_ERR_TLS_CONTEXT',
      `cannot build a TLS context for ${identityKey(cert.identity)} (serial ${cert.serial}): ${(err as Error).message}`,
      { cause: err },
    );
  }
}

interface CachedContext {
  readonly serial: string;
  readonly context: SecureContext;
}

/**
 * One secure context per identity, for the certificate currently in use: building a context parses PEM and
 * loads the key (tens of microseconds), too much per connection. A certificate with a different serial (a
 * rotation) replaces the entry; connections made with the old context keep it (OpenSSL reference-counts it).
 */
export class SecureContextCache {
  private readonly entries = new Map<string, CachedContext>();
  /** Contexts built so far (tests and metrics: one per identity and rotation). */
  builds = 0;

  get(cert: WorkloadCertificate): SecureContext {
    const key = identityKey(cert.identity);
    const hit = this.entries.get(key);
    if (hit !== undefined && hit.serial === cert.serial) return hit.context;
    const context = createMtlsContext(cert);
    this.builds++;
    this.entries.set(key, { serial: cert.serial, context });
    return context;
  }

  /** Drops an identity that is no longer used on this node. */
  forget(cert: WorkloadCertificate | string): void {
    this.entries.delete(typeof cert === 'string' ? cert : identityKey(cert.identity));
  }

  get size(): number {
    return this.entries.size;
  }
}
