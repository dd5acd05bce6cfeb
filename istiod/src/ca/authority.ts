/**
 * The CA's key material and its leaf profile.
 *
 * Material comes from the operator's plug-in Secret `cacerts` (ca-cert.pem, ca-key.pem, cert-chain.pem,
 * root-cert.pem) when it exists, else from Secret `istio-ca-secret` holding a self-signed root istiod created
 * once (O=cluster.local, 10 years). Issued chains are `[leaf, …cert-chain, root]`, as Istio answers.
 */
import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { MeshError } from '../../../pkg/errors/index.ts';
import { formatSpiffeId, type Identity, verifyChain, x509 } from '../../../pkg/identity/index.ts';

/** Leaves are back-dated so a peer whose clock is a little behind still accepts them (Istio: 2 minutes). */
export const BACKDATE_MS = 2 * 60_000;
export const DEFAULT_LEAF_TTL_MS = 24 * 3600_000;
export const MAX_LEAF_TTL_MS = 90 * 24 * 3600_000;
/** Istio's self-signed root lives ten years. */
export const SELF_SIGNED_ROOT_TTL_MS = 10 * 365 * 24 * 3600_000;

export type CaSource = 'plugged' | 'self-signed';

export interface CaFiles {
  readonly 'ca-cert.pem': string;
  readonly 'ca-key.pem': string;
  readonly 'cert-chain.pem'?: string;
  readonly 'root-cert.pem'?: string;
}

export class CaMaterial {
  readonly source: CaSource;
  readonly signingCertPem: string;
  /** Intermediates between the signing cert and the root (from cert-chain.pem, minus the signing cert itself). */
  readonly intermediatesPem: readonly string[];
  /** Trust anchors: root-cert.pem (may hold several during a root rotation). */
  readonly rootsPem: readonly string[];
  readonly fingerprint: string;
  private readonly issuer: x509.Issuer;

  private constructor(
    source: CaSource,
    signingCertPem: string,
    key: KeyObject,
    intermediates: string[],
    roots: string[],
  ) {
    this.source = source;
    this.signingCertPem = signingCertPem;
    this.intermediatesPem = intermediates;
    this.rootsPem = roots;
    const signing = new X509Certificate(signingCertPem);
    this.fingerprint = signing.fingerprint256;
    this.issuer = x509.issuerFrom(Buffer.from(signing.raw), key);
  }

  /** Validates operator-supplied files: key matches cert, cert is a CA, chain leads to the root. */
  static fromFiles(files: CaFiles, source: CaSource): CaMaterial {
    const where = source === 'plugged' ? 'Secret cacerts' : 'Secret istio-ca-secret';
    let key: KeyObject;
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(files['ca-cert.pem']);
      key = createPrivateKey(files['ca-key.pem']);
    } catch (err) {
      throw new MeshError(
        'MESH_ERR_CA_MATERIAL',
        `${where}: cannot parse ca-cert.pem/ca-key.pem: ${(err as Error).message}`,
      );
    }
    if (!cert.ca)
      throw new MeshError('MESH_ERR_CA_MATERIAL', `${where}: ca-cert.pem is not a CA certificate`);
    if (!cert.checkPrivateKey(key))
      throw new MeshError('MESH_ERR_CA_MATERIAL', `${where}: ca-key.pem does not match ca-cert.pem`);
    const signingPem = cert.toString();
    const chainCerts = x509
      .pemCertificates(files['cert-chain.pem'] ?? '')
      .map((d) => new X509Certificate(d).toString());
    const rootCerts = x509
      .pemCertificates(files['root-cert.pem'] ?? '')
      .map((d) => new X509Certificate(d).toString());
    const roots = rootCerts.length > 0 ? rootCerts : [signingPem];
    // cert-chain.pem conventionally starts with ca-cert.pem itself and may end with the root; keep only what
    // lies strictly between the signing cert and the roots.
    const intermediates = chainCerts.filter((c) => c !== signingPem && !roots.includes(c));
    const check = verifyChain([signingPem, ...intermediates], roots);
    if (!check.ok)
      throw new MeshError(
        'MESH_ERR_CA_MATERIAL',
        `${where}: ca-cert.pem does not chain to root-cert.pem: ${check.error}`,
      );
    return new CaMaterial(source, signingPem, key, intermediates, roots);
  }

  /** A fresh self-signed root with Istio's default subject. */
  static selfSigned(trustDomain: string, now = Date.now()): { material: CaMaterial; files: CaFiles } {
    const { privateKey, publicKey } = x509.generateP256();
    const der = x509.buildCertificate(
      {
        publicKey,
        subject: [[x509.OID.organization, trustDomain]],
        notBefore: new Date(now - BACKDATE_MS),
        notAfter: new Date(now + SELF_SIGNED_ROOT_TTL_MS),
        isCA: true,
        keyUsage: [x509.KU.digitalSignature, x509.KU.keyCertSign, x509.KU.cRLSign],
      },
      'self',
      privateKey,
    );
    const pem = x509.certToPem(der);
    const files: CaFiles = {
      'ca-cert.pem': pem,
      'ca-key.pem': privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
      'cert-chain.pem': '',
      'root-cert.pem': '',
    };
    return { material: CaMaterial.fromFiles(files, 'self-signed'), files };
  }

  /** All trust anchors as one PEM bundle, for the istio-ca-root-cert ConfigMap. */
  rootBundlePem(): string {
    return this.rootsPem.join('');
  }

  /**
   * Signs a leaf for `identity` with the CSR's public key and Istio's workload profile. The CSR's own subject
   * and SANs are ignored: identity comes only from authentication.
   */
  signWorkload(
    publicKey: KeyObject,
    identity: Identity,
    ttlMs: number,
    now = Date.now(),
    spkiDer?: Buffer,
  ): string[] {
    return this.sign(publicKey, { uris: [formatSpiffeId(identity)] }, ttlMs, now, spkiDer);
  }

  /** Signs a serving certificate (istiod's own) with DNS SANs. */
  signServing(publicKey: KeyObject, dnsNames: readonly string[], ttlMs: number, now = Date.now()): string[] {
    return this.sign(publicKey, { dns: dnsNames }, ttlMs, now);
  }

  private sign(
    publicKey: KeyObject,
    san: x509.SanEntries,
    ttlMs: number,
    now: number,
    spkiDer?: Buffer,
  ): string[] {
    const der = x509.buildCertificate(
      {
        publicKey,
        ...(spkiDer ? { spkiDer } : {}),
        subject: [],
        notBefore: new Date(now - BACKDATE_MS),
        notAfter: new Date(now + ttlMs),
        isCA: false,
        keyUsage: [x509.KU.digitalSignature, x509.KU.keyEncipherment],
        extKeyUsage: [x509.OID.serverAuth, x509.OID.clientAuth],
        san,
        sanCritical: true,
      },
      this.issuer,
    );
    const chain = [x509.certToPem(der)];
    // Istio: leaf, then the signing CA (when it is not itself the root), intermediates, and the root bundle
    // (every trust anchor, concatenated) as the last element.
    if (!this.rootsPem.includes(this.signingCertPem)) chain.push(this.signingCertPem);
    chain.push(...this.intermediatesPem, this.rootBundlePem());
    return chain;
  }
}
