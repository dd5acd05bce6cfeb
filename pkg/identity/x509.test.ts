import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DerError } from './der.ts';
import {
  buildCertificate,
  buildCsr,
  certToPem,
  csrToPem,
  extensionsOf,
  generateP256,
  issuerFrom,
  KU,
  OID,
  parseCsr,
  parseSan,
} from './x509.ts';

const dir = mkdtempSync(join(tmpdir(), 'amb-x509-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function openssl(args: string[], input?: string): string {
  return execFileSync('openssl', args, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
}

function makeRoot(keyType: 'ec' | 'rsa' = 'ec') {
  const { privateKey, publicKey } =
    keyType === 'ec' ? generateP256() : generateKeyPairSync('rsa', { modulusLength: 2048 });
  const now = Date.now();
  const der = buildCertificate(
    {
      publicKey,
      subject: [[OID.organization, 'cluster.local']],
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 10 * 365 * 86_400_000),
      isCA: true,
      keyUsage: [KU.digitalSignature, KU.keyCertSign, KU.cRLSign],
    },
    'self',
    privateKey,
  );
  return { der, privateKey };
}

function makeLeaf(root: { der: Buffer; privateKey: import('node:crypto').KeyObject }, uri: string) {
  const leafKey = generateP256();
  const now = Date.now();
  return buildCertificate(
    {
      publicKey: leafKey.publicKey,
      subject: [],
      notBefore: new Date(now - 120_000),
      notAfter: new Date(now + 86_400_000),
      isCA: false,
      keyUsage: [KU.digitalSignature, KU.keyEncipherment],
      extKeyUsage: [OID.serverAuth, OID.clientAuth],
      san: { uris: [uri] },
      sanCritical: true,
    },
    issuerFrom(root.der, root.privateKey),
  );
}

describe('certificates', () => {
  it('self-signed root is a valid CA to openssl', () => {
    const root = makeRoot();
    const text = openssl(['x509', '-noout', '-text'], certToPem(root.der));
    expect(text).toContain('Subject: O = cluster.local');
    expect(text).toMatch(/Basic Constraints: critical\s+CA:TRUE/);
    expect(text).toMatch(/Key Usage: critical\s+Digital Signature, Certificate Sign, CRL Sign/);
    expect(new X509Certificate(root.der).ca).toBe(true);
  });

  it.each(['ec', 'rsa'] as const)(
    'workload leaf (%s issuer) has Istio profile and verifies with openssl',
    (kt) => {
      const root = makeRoot(kt);
      const uri = 'spiffe://cluster.local/ns/default/sa/bookinfo-productpage';
      const leaf = makeLeaf(root, uri);
      const text = openssl(['x509', '-noout', '-text'], certToPem(leaf));
      expect(text).toMatch(/Subject:\s*\n/);
      expect(text).toMatch(
        /X509v3 Subject Alternative Name: critical\s+URI:spiffe:\/\/cluster\.local\/ns\/default\/sa\/bookinfo-productpage/,
      );
      expect(text).toMatch(/Key Usage: critical\s+Digital Signature, Key Encipherment/);
      expect(text).toMatch(
        /Extended Key Usage:\s+TLS Web Server Authentication, TLS Web Client Authentication/,
      );
      expect(text).toMatch(/Basic Constraints: critical\s+CA:FALSE/);
      const rootFile = join(dir, `root-${kt}.pem`);
      const leafFile = join(dir, `leaf-${kt}.pem`);
      writeFileSync(rootFile, certToPem(root.der));
      writeFileSync(leafFile, certToPem(leaf));
      expect(openssl(['verify', '-CAfile', rootFile, leafFile]).trim()).toBe(`${leafFile}: OK`);
      const x = new X509Certificate(leaf);
      expect(x.subjectAltName).toBe(`URI:${uri}`);
      expect(x.checkIssued(new X509Certificate(root.der))).toBe(true);
      const san = extensionsOf(leaf).find((e) => e.oid === OID.subjectAltName)!;
      expect(san.critical).toBe(true);
      expect(parseSan(san.value).uris).toEqual([uri]);
    },
  );

  it('time encoding switches to GeneralizedTime from 2050', () => {
    const root = makeRoot();
    const { publicKey } = generateP256();
    const d = buildCertificate(
      {
        publicKey,
        subject: [],
        notBefore: new Date('2049-12-31T23:59:59Z'),
        notAfter: new Date('2051-01-01T00:00:00Z'),
        isCA: false,
        keyUsage: [KU.digitalSignature],
      },
      issuerFrom(root.der, root.privateKey),
    );
    const x = new X509Certificate(d);
    expect(new Date(x.validFrom).toISOString()).toBe('2049-12-31T23:59:59.000Z');
    expect(new Date(x.validTo).toISOString()).toBe('2051-01-01T00:00:00.000Z');
  });
});

describe('CSRs', () => {
  it('builds an Istio-style CSR that openssl verifies, and parses it back', () => {
    const { privateKey } = generateP256();
    const uri = 'spiffe://cluster.local/ns/a/sa/b';
    const csr = buildCsr(privateKey, { uris: [uri] });
    const out = openssl(['req', '-noout', '-verify', '-text'], csrToPem(csr));
    expect(out).toMatch(/Subject:\s*\n/);
    expect(out).toMatch(
      /X509v3 Subject Alternative Name: critical\s+URI:spiffe:\/\/cluster\.local\/ns\/a\/sa\/b/,
    );
    const parsed = parseCsr(csr);
    expect(parsed.requestedSan.uris).toEqual([uri]);
    expect(parsed.publicKey.asymmetricKeyType).toBe('ec');
  });

  it('parses a CSR made by openssl', () => {
    const keyFile = join(dir, 'k.pem');
    openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', keyFile]);
    const pem = openssl([
      'req',
      '-new',
      '-key',
      keyFile,
      '-subj',
      '/CN=x',
      '-addext',
      'subjectAltName=URI:spiffe://td/ns/n/sa/s,DNS:a.b',
    ]);
    const body = pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
    const parsed = parseCsr(Buffer.from(body, 'base64'));
    expect(parsed.requestedSan).toEqual({ uris: ['spiffe://td/ns/n/sa/s'], dns: ['a.b'], ips: [] });
  });

  it('rejects a CSR whose signature does not match', () => {
    const { privateKey } = generateP256();
    const csr = Buffer.from(buildCsr(privateKey, { uris: ['spiffe://x/ns/a/sa/b'] }));
    csr[csr.length - 5]! ^= 0xff;
    expect(() => parseCsr(csr)).toThrow();
  });

  it('never crashes or hangs on garbage (deterministic fuzz)', () => {
    const { privateKey } = generateP256();
    const good = buildCsr(privateKey, { uris: ['spiffe://x/ns/a/sa/b'] });
    let seed = 42;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed;
    };
    let rejected = 0;
    for (let i = 0; i < 3000; i++) {
      const b = Buffer.from(i % 3 === 0 ? randomBytes(rand() % 300) : good);
      if (i % 3 !== 0) {
        for (let k = 0; k < 1 + (rand() % 4); k++) b[rand() % b.length] = rand() & 0xff;
      }
      const cut = i % 5 === 0 ? b.subarray(0, rand() % b.length) : b;
      try {
        parseCsr(cut);
      } catch (err) {
        expect(err).toBeInstanceOf(Error);
        rejected++;
      }
    }
    expect(rejected).toBeGreaterThan(2900);
  });

  it('reports DER structure errors precisely', () => {
    expect(() => parseCsr(Buffer.from([0x30, 0x84, 0xff, 0xff, 0xff, 0xff]))).toThrow(DerError);
    expect(() => parseCsr(Buffer.from([0x30, 0x80, 0, 0]))).toThrow(/indefinite length/);
    expect(() => parseCsr(Buffer.from([0x30, 0x00, 0x01]))).toThrow(/trailing bytes/);
  });
});
