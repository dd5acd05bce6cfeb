/**
 * Building and reading the X.509 pieces the mesh needs, with node:crypto for keys and signatures and our DER
 * codec for structure (docs/decisions/0002). Profiles follow Istio: workload leaves have an empty subject, one
 * critical URI SAN, KU digitalSignature+keyEncipherment, EKU serverAuth+clientAuth, CA:FALSE.
 */
import {
  createHash,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  sign,
  verify,
  X509Certificate,
} from 'node:crypto';
import * as der from './der.ts';

export const OID = {
  ecPublicKey: '1.2.840.10045.2.1',
  rsaEncryption: '1.2.840.113549.1.1.1',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  ecdsaWithSha384: '1.2.840.10045.4.3.3',
  sha256WithRsa: '1.2.840.113549.1.1.11',
  extensionRequest: '1.2.840.113549.1.9.14',
  subjectAltName: '2.5.29.17',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  basicConstraints: '2.5.29.19',
  subjectKeyId: '2.5.29.14',
  authorityKeyId: '2.5.29.35',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  organization: '2.5.4.10',
  commonName: '2.5.4.3',
} as const;

/** Key usage bits (RFC 5280 §4.2.1.3), as bit positions from the most significant bit of the first byte. */
export const KU = { digitalSignature: 0, keyEncipherment: 2, keyCertSign: 5, cRLSign: 6 } as const;

export interface Extension {
  readonly oid: string;
  readonly critical: boolean;
  readonly value: Buffer;
}

// ---------- keys and algorithms ----------

export function generateP256(): { privateKey: KeyObject; publicKey: KeyObject } {
  return generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
}

/** The signature algorithm a key signs with, and the hash. */
function signatureAlgorithm(key: KeyObject): { algId: Buffer; hash: string } {
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'secp384r1') return { algId: der.seq(der.oid(OID.ecdsaWithSha384)), hash: 'sha384' };
    return { algId: der.seq(der.oid(OID.ecdsaWithSha256)), hash: 'sha256' };
  }
  if (key.asymmetricKeyType === 'rsa')
    return { algId: der.seq(der.oid(OID.sha256WithRsa), der.nul()), hash: 'sha256' };
  throw new Error(`unsupported signing key type ${key.asymmetricKeyType}`);
}

const HASH_BY_SIG_OID: Readonly<Record<string, string>> = {
  [OID.ecdsaWithSha256]: 'sha256',
  [OID.ecdsaWithSha384]: 'sha384',
  [OID.sha256WithRsa]: 'sha256',
};

function signTbs(tbs: Buffer, key: KeyObject): Buffer {
  const { algId, hash } = signatureAlgorithm(key);
  const signature = sign(hash, tbs, key);
  return der.seq(tbs, algId, der.bitString(signature));
}

// ---------- extensions ----------

function extension(oid: string, critical: boolean, value: Buffer): Buffer {
  return der.seq(der.oid(oid), ...(critical ? [der.bool(true)] : []), der.octetString(value));
}

export interface SanEntries {
  readonly uris?: readonly string[];
  readonly dns?: readonly string[];
  readonly ips?: readonly string[];
}

function ipBytes(ip: string): Buffer {
  if (ip.includes(':')) {
    const [head = '', tail = ''] = ip.split('::');
    const h = head ? head.split(':') : [];
    const t = ip.includes('::') ? (tail ? tail.split(':') : []) : [];
    const groups = ip.includes('::') ? [...h, ...Array(8 - h.length - t.length).fill('0'), ...t] : h;
    const b = Buffer.alloc(16);
    for (const [i, g] of groups.entries()) b.writeUInt16BE(Number.parseInt(g, 16), i * 2);
    return b;
  }
  return Buffer.from(ip.split('.').map(Number));
}

export function sanValue(san: SanEntries): Buffer {
  return der.seq(
    ...(san.uris ?? []).map((u) => der.ctx(6, Buffer.from(u, 'ascii'), true)),
    ...(san.dns ?? []).map((d) => der.ctx(2, Buffer.from(d, 'ascii'), true)),
    ...(san.ips ?? []).map((ip) => der.ctx(7, ipBytes(ip), true)),
  );
}

function keyUsageValue(bits: readonly number[]): Buffer {
  const bytes = Buffer.alloc(2);
  let maxBit = 0;
  for (const b of bits) {
    bytes[b >> 3]! |= 0x80 >> (b & 7);
    maxBit = Math.max(maxBit, b);
  }
  const used = (maxBit >> 3) + 1;
  const unused = 7 - (maxBit & 7);
  return der.bitString(bytes.subarray(0, used), unused);
}

/** Subject key identifier: SHA-1 of the subjectPublicKey bits (RFC 5280 §4.2.1.2 method 1). */
export function subjectKeyId(publicKey: KeyObject): Buffer {
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const top = der.root(spki);
  const [, bits] = der.children(spki, top);
  return createHash('sha1')
    .update(der.readBitString(spki, der.expectTag(bits, der.TAG.BIT_STRING, 'subjectPublicKey')))
    .digest();
}

function name(attrs: ReadonlyArray<readonly [string, string]>): Buffer {
  return der.seq(...attrs.map(([oid, value]) => der.set(der.seq(der.oid(oid), der.utf8(value)))));
}

// ---------- certificates ----------

export interface CertificateTemplate {
  readonly publicKey: KeyObject;
  /** The key's SubjectPublicKeyInfo DER when the caller has it (a parsed CSR): saves re-exporting the key. */
  readonly spkiDer?: Buffer;
  /** RDNs as [OID, value]; empty for Istio workload leaves. */
  readonly subject: ReadonlyArray<readonly [string, string]>;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly isCA: boolean;
  readonly keyUsage: readonly number[];
  readonly extKeyUsage?: readonly string[];
  readonly san?: SanEntries;
  /** Marks the SAN critical; required when the subject is empty (RFC 5280 §4.2.1.6). */
  readonly sanCritical?: boolean;
  readonly serial?: Buffer;
}

export interface Issuer {
  /** DER of the issuer's subject Name, copied byte for byte into the issued certificate. */
  readonly subjectDer: Buffer;
  readonly keyId: Buffer;
  readonly privateKey: KeyObject;
}

/** 16 random bytes, top bit cleared so the INTEGER stays positive and ≤ 20 octets (RFC 5280 §4.1.2.2). */
export function randomSerial(): Buffer {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return b;
}

export function buildCertificate(
  t: CertificateTemplate,
  issuer: Issuer | 'self',
  selfKey?: KeyObject,
): Buffer {
  const subjectDer = name(t.subject);
  // Only CA certificates carry a subject key identifier (and self-signed ones use it as their key id).
  const ski = t.isCA ? subjectKeyId(t.publicKey) : null;
  const signer: Issuer =
    issuer === 'self'
      ? (() => {
          if (!selfKey) throw new Error('self-signed certificate needs its private key');
          return { subjectDer, keyId: ski ?? subjectKeyId(t.publicKey), privateKey: selfKey };
        })()
      : issuer;
  const exts: Buffer[] = [
    extension(OID.keyUsage, true, keyUsageValue(t.keyUsage)),
    ...(t.extKeyUsage && t.extKeyUsage.length > 0
      ? [extension(OID.extKeyUsage, false, der.seq(...t.extKeyUsage.map((o) => der.oid(o))))]
      : []),
    extension(OID.basicConstraints, true, t.isCA ? der.seq(der.bool(true)) : der.seq()),
    ...(ski ? [extension(OID.subjectKeyId, false, der.octetString(ski))] : []),
    extension(OID.authorityKeyId, false, der.seq(der.ctx(0, signer.keyId, true))),
    ...(t.san ? [extension(OID.subjectAltName, t.sanCritical ?? false, sanValue(t.san))] : []),
  ];
  const { algId } = signatureAlgorithm(signer.privateKey);
  const tbs = der.seq(
    der.ctx(0, der.int(2)),
    der.int(t.serial ?? randomSerial()),
    algId,
    signer.subjectDer,
    der.seq(der.time(t.notBefore), der.time(t.notAfter)),
    subjectDer,
    t.spkiDer ?? t.publicKey.export({ type: 'spki', format: 'der' }),
    der.ctx(3, der.seq(...exts)),
  );
  return signTbs(tbs, signer.privateKey);
}

/** Reads the parts of a certificate an issuer needs: subject DER and key identifier. */
export function issuerFrom(certDer: Buffer, privateKey: KeyObject): Issuer {
  const top = der.root(certDer);
  const [tbsNode] = der.children(certDer, top);
  const tbs = der.children(certDer, der.expectTag(tbsNode, der.TAG.SEQUENCE, 'tbsCertificate'));
  // tbs: [0] version?, serial, sigAlg, issuer, validity, subject, spki, …
  const offset = tbs[0]?.tag === 0xa0 ? 1 : 0;
  const subject = der.expectTag(tbs[offset + 4], der.TAG.SEQUENCE, 'subject');
  const ski = extensionsOf(certDer).find((e) => e.oid === OID.subjectKeyId);
  let keyId: Buffer;
  if (ski) {
    const n = der.root(ski.value);
    keyId = Buffer.from(
      der.content(ski.value, der.expectTag(n, der.TAG.OCTET_STRING, 'subjectKeyIdentifier')),
    );
  } else {
    keyId = subjectKeyId(new X509Certificate(certDer).publicKey);
  }
  return { subjectDer: Buffer.from(der.raw(certDer, subject)), keyId, privateKey };
}

export function extensionsOf(certDer: Buffer): Extension[] {
  const top = der.root(certDer);
  const [tbsNode] = der.children(certDer, top);
  const tbs = der.children(certDer, der.expectTag(tbsNode, der.TAG.SEQUENCE, 'tbsCertificate'));
  const extsWrapper = tbs.find((n) => n.tag === 0xa3);
  if (!extsWrapper) return [];
  const [list] = der.children(certDer, extsWrapper);
  return parseExtensions(certDer, der.expectTag(list, der.TAG.SEQUENCE, 'extensions'));
}

function parseExtensions(buf: Buffer, list: der.Node): Extension[] {
  return der.children(buf, list).map((e) => {
    const parts = der.children(buf, der.expectTag(e, der.TAG.SEQUENCE, 'extension'));
    const oid = der.readOid(buf, der.expectTag(parts[0], der.TAG.OID, 'extension id'));
    const critical =
      parts.length === 3 && parts[1]!.tag === der.TAG.BOOLEAN && buf[parts[1]!.contentStart] !== 0;
    const value = der.expectTag(parts[parts.length - 1], der.TAG.OCTET_STRING, 'extension value');
    return { oid, critical, value: Buffer.from(der.content(buf, value)) };
  });
}

/** SAN URIs, DNS names and IPs from a SubjectAltName extension value. */
export function parseSan(value: Buffer): { uris: string[]; dns: string[]; ips: string[] } {
  const out = { uris: [] as string[], dns: [] as string[], ips: [] as string[] };
  for (const n of der.children(value, der.expectTag(der.root(value), der.TAG.SEQUENCE, 'subjectAltName'))) {
    const c = der.content(value, n);
    if (n.tag === 0x86) out.uris.push(c.toString('latin1'));
    else if (n.tag === 0x82) out.dns.push(c.toString('latin1'));
    else if (n.tag === 0x87) out.ips.push(c.length === 4 ? [...c].join('.') : c.toString('hex'));
  }
  return out;
}

// ---------- certification requests (PKCS#10) ----------

/** A CSR with an empty subject and exactly the given SANs (critical), signed by the key, as Istio clients send. */
export function buildCsr(privateKey: KeyObject, san: SanEntries): Buffer {
  const publicKey = createPublicKey(privateKey);
  const extReq = der.seq(
    der.oid(OID.extensionRequest),
    der.set(der.seq(extension(OID.subjectAltName, true, sanValue(san)))),
  );
  const info = der.seq(
    der.int(0),
    der.seq(),
    publicKey.export({ type: 'spki', format: 'der' }),
    der.ctx(0, extReq),
  );
  return signTbs(info, privateKey);
}

export interface ParsedCsr {
  readonly publicKey: KeyObject;
  /** The CSR's SubjectPublicKeyInfo, byte for byte (what a certificate for this key embeds). */
  readonly spkiDer: Buffer;
  /** SANs the requester asked for; informational only — a CA takes identities from authentication. */
  readonly requestedSan: { uris: string[]; dns: string[]; ips: string[] };
}

/** Parses and verifies a CSR's self-signature. Throws DerError or Error with a precise reason. */
export function parseCsr(csrDer: Buffer): ParsedCsr {
  const top = der.root(csrDer);
  const [infoNode, algNode, sigNode] = der.children(
    csrDer,
    der.expectTag(top, der.TAG.SEQUENCE, 'CertificationRequest'),
  );
  const info = der.expectTag(infoNode, der.TAG.SEQUENCE, 'certificationRequestInfo');
  const alg = der.children(csrDer, der.expectTag(algNode, der.TAG.SEQUENCE, 'signatureAlgorithm'));
  const sigOid = der.readOid(csrDer, der.expectTag(alg[0], der.TAG.OID, 'signature algorithm'));
  const hash = HASH_BY_SIG_OID[sigOid];
  if (!hash) throw new Error(`unsupported CSR signature algorithm ${sigOid}`);
  const signature = der.readBitString(csrDer, der.expectTag(sigNode, der.TAG.BIT_STRING, 'signature'));
  const parts = der.children(csrDer, info);
  der.expectTag(parts[0], der.TAG.INTEGER, 'version');
  der.expectTag(parts[1], der.TAG.SEQUENCE, 'subject');
  const spki = der.expectTag(parts[2], der.TAG.SEQUENCE, 'subjectPKInfo');
  let publicKey: KeyObject;
  const spkiDer = Buffer.from(der.raw(csrDer, spki));
  try {
    publicKey = createPublicKey({ key: spkiDer, format: 'der', type: 'spki' });
  } catch (err) {
    throw new Error(`CSR public key unreadable: ${(err as Error).message}`);
  }
  if (!verify(hash, der.raw(csrDer, info), publicKey, signature))
    throw new Error('CSR signature does not verify');
  const requestedSan = { uris: [] as string[], dns: [] as string[], ips: [] as string[] };
  const attrs = parts[3];
  if (attrs && attrs.tag === 0xa0) {
    for (const attr of der.children(csrDer, attrs)) {
      const [oidNode, values] = der.children(csrDer, der.expectTag(attr, der.TAG.SEQUENCE, 'attribute'));
      if (der.readOid(csrDer, der.expectTag(oidNode, der.TAG.OID, 'attribute type')) !== OID.extensionRequest)
        continue;
      const [exts] = der.children(csrDer, der.expectTag(values, der.TAG.SET, 'attribute values'));
      for (const e of parseExtensions(csrDer, der.expectTag(exts, der.TAG.SEQUENCE, 'extensions'))) {
        if (e.oid === OID.subjectAltName) Object.assign(requestedSan, parseSan(e.value));
      }
    }
  }
  return { publicKey, spkiDer, requestedSan };
}

export const certToPem = (d: Buffer): string => der.toPem('CERTIFICATE', d);
export const csrToPem = (d: Buffer): string => der.toPem('CERTIFICATE REQUEST', d);
export const pemCertificates = (text: string): Buffer[] => der.fromPemAll(text, 'CERTIFICATE');
export function pemCsr(text: string): Buffer | null {
  return (
    der.fromPemAll(text, 'CERTIFICATE REQUEST')[0] ??
    der.fromPemAll(text, 'NEW CERTIFICATE REQUEST')[0] ??
    null
  );
}
