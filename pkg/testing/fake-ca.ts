/**
 * An in-process CA for tests: a self-signed P-256 root that signs CSRs with Istio's leaf profile. It trusts
 * the identity it is told (no authentication); the real CA lives in istiod.
 */
import type { KeyObject } from 'node:crypto';
import { type CaClient, formatSpiffeId, type Identity, x509 } from '../identity/index.ts';

export class FakeCa implements CaClient {
  readonly rootDer: Buffer;
  readonly rootPem: string;
  private readonly rootKey: KeyObject;
  /** Leaf lifetime; tests shorten it to exercise rotation. */
  ttlMs: number;
  /** Set to make the next fetches fail (counts down). */
  failNext = 0;
  calls = 0;

  constructor(ttlMs = 24 * 3600_000) {
    this.ttlMs = ttlMs;
    const { privateKey, publicKey } = x509.generateP256();
    this.rootKey = privateKey;
    this.rootDer = x509.buildCertificate(
      {
        publicKey,
        subject: [[x509.OID.organization, 'cluster.local']],
        notBefore: new Date(Date.now() - 3600_000),
        notAfter: new Date(Date.now() + 10 * 365 * 86_400_000),
        isCA: true,
        keyUsage: [x509.KU.digitalSignature, x509.KU.keyCertSign, x509.KU.cRLSign],
      },
      'self',
      privateKey,
    );
    this.rootPem = x509.certToPem(this.rootDer);
  }

  sign(id: Identity, publicKey: KeyObject, ttlMs = this.ttlMs): string {
    const now = Date.now();
    const der = x509.buildCertificate(
      {
        publicKey,
        subject: [],
        notBefore: new Date(now - 120_000),
        notAfter: new Date(now + ttlMs),
        isCA: false,
        keyUsage: [x509.KU.digitalSignature, x509.KU.keyEncipherment],
        extKeyUsage: [x509.OID.serverAuth, x509.OID.clientAuth],
        san: { uris: [formatSpiffeId(id)] },
        sanCritical: true,
      },
      x509.issuerFrom(this.rootDer, this.rootKey),
    );
    return x509.certToPem(der);
  }

  async fetchCertificate(id: Identity, csrPem: string): Promise<string[]> {
    this.calls++;
    if (this.failNext > 0) {
      this.failNext--;
      throw new Error('fake CA: unavailable');
    }
    const csr = x509.parseCsr(x509.pemCsr(csrPem)!);
    return [this.sign(id, csr.publicKey), this.rootPem];
  }
}
