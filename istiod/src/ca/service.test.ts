import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials, Metadata, Server, ServerCredentials, status } from '@grpc/grpc-js';
import { afterAll, describe, expect, it } from 'vitest';
import { x509 } from '../../../pkg/identity/index.ts';
import { createRegistry } from '../../../pkg/metrics/index.ts';
import { createLogger } from '../../../pkg/telemetry/index.ts';
import {
  IstioCertificateRequest,
  IstioCertificateServiceClient,
  IstioCertificateServiceService,
} from '../../../pkg/xds/gen/istio/v1/auth/ca.ts';
import { CaMaterial } from './authority.ts';
import { type Authenticator, CaError, CaService, type NodeIndex } from './service.ts';

const dir = mkdtempSync(join(tmpdir(), 'amb-ca-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const logger = createLogger({ component: 'istiod', level: 'silent' });

/** Tokens are "ns:sa[:pod]"; pods listed per node. */
const authenticator: Authenticator = {
  async authenticate(token) {
    if (token === 'expired')
      throw new CaError(status.UNAUTHENTICATED, 'request authenticate failure: token expired');
    const [namespace, serviceAccount, podName] = token.split(':');
    return { namespace: namespace!, serviceAccount: serviceAccount!, podName: podName ?? null, podUid: null };
  },
};
const nodes: NodeIndex = {
  async nodeOfPod(ns, name) {
    return ns === 'istio-system' && name === 'ztunnel-a' ? 'node-a' : null;
  },
  async serviceAccountOnNode(ns, sa, node) {
    return node === 'node-a' && ns === 'default' && sa === 'bookinfo-productpage';
  },
};

function service(material = CaMaterial.selfSigned('cluster.local').material) {
  return new CaService({
    material: () => material,
    authenticator,
    nodes,
    trustDomain: 'cluster.local',
    trustedNodeAccounts: new Set(['istio-system/ztunnel']),
    registry: createRegistry(),
    logger,
  });
}

function csr(san: x509.SanEntries = { uris: ['spiffe://cluster.local/ns/whatever/sa/x'] }) {
  return x509.csrToPem(x509.buildCsr(x509.generateP256().privateKey, san));
}

function req(over: Partial<IstioCertificateRequest> = {}) {
  return IstioCertificateRequest.fromPartial({ csr: csr(), ...over });
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (err) {
    return err instanceof CaError ? status[err.grpcCode] : `unexpected ${String(err)}`;
  }
}

const sanOf = (pem: string) => new X509Certificate(pem).subjectAltName;

describe('CA service', () => {
  it('issues the caller its own identity with the Istio profile and a 24h default TTL', async () => {
    const chain = await service().createCertificate('default:bookinfo-productpage', req());
    expect(chain).toHaveLength(2);
    const leaf = new X509Certificate(chain[0]!);
    expect(leaf.subjectAltName).toBe('URI:spiffe://cluster.local/ns/default/sa/bookinfo-productpage');
    expect(leaf.subject ?? '').toBe('');
    const ttl = Date.parse(leaf.validTo) - Date.now();
    expect(ttl).toBeGreaterThan(24 * 3600_000 - 60_000);
    expect(ttl).toBeLessThanOrEqual(24 * 3600_000);
    expect(Date.now() - Date.parse(leaf.validFrom)).toBeGreaterThanOrEqual(119_000);
    expect(leaf.checkIssued(new X509Certificate(chain[1]!))).toBe(true);
  });

  it('takes the SAN from authentication, never from the CSR', async () => {
    const chain = await service().createCertificate(
      'default:bookinfo-ratings',
      req({
        csr: csr({ uris: ['spiffe://cluster.local/ns/istio-system/sa/istiod'], dns: ['evil.example'] }),
      }),
    );
    expect(sanOf(chain[0]!)).toBe('URI:spiffe://cluster.local/ns/default/sa/bookinfo-ratings');
  });

  it('honours requested TTLs up to 90 days and rejects longer', async () => {
    const s = service();
    const chain = await s.createCertificate('a:b', req({ validityDuration: 3600n }));
    expect(Date.parse(new X509Certificate(chain[0]!).validTo) - Date.now()).toBeLessThanOrEqual(3600_000);
    expect(await code(s.createCertificate('a:b', req({ validityDuration: BigInt(91 * 86400) })))).toBe(
      'INVALID_ARGUMENT',
    );
    expect(await code(s.createCertificate('a:b', req({ validityDuration: -5n })))).toBe('INVALID_ARGUMENT');
  });

  it.each([
    [
      'trusted node agent, SA with a pod on its node',
      'istio-system:ztunnel:ztunnel-a',
      'spiffe://cluster.local/ns/default/sa/bookinfo-productpage',
      'OK',
    ],
    [
      'trusted node agent, SA without a pod on its node',
      'istio-system:ztunnel:ztunnel-a',
      'spiffe://cluster.local/ns/default/sa/bookinfo-ratings',
      'PERMISSION_DENIED',
    ],
    [
      'trusted account whose token is not pod-bound',
      'istio-system:ztunnel',
      'spiffe://cluster.local/ns/default/sa/bookinfo-productpage',
      'PERMISSION_DENIED',
    ],
    [
      'trusted account, pod not on any node',
      'istio-system:ztunnel:ghost',
      'spiffe://cluster.local/ns/default/sa/bookinfo-productpage',
      'PERMISSION_DENIED',
    ],
    [
      'untrusted caller',
      'default:bookinfo-details:details-1',
      'spiffe://cluster.local/ns/default/sa/bookinfo-productpage',
      'PERMISSION_DENIED',
    ],
    [
      'own identity via impersonation metadata',
      'default:bookinfo-details',
      'spiffe://cluster.local/ns/default/sa/bookinfo-details',
      'OK',
    ],
    [
      'foreign trust domain',
      'istio-system:ztunnel:ztunnel-a',
      'spiffe://evil.org/ns/default/sa/bookinfo-productpage',
      'PERMISSION_DENIED',
    ],
    [
      'malformed identity',
      'istio-system:ztunnel:ztunnel-a',
      'spiffe://cluster.local/default/bookinfo',
      'INVALID_ARGUMENT',
    ],
  ])('impersonation: %s', async (_name, token, identity, want) => {
    const s = service();
    const res = s.createCertificate(token, req({ metadata: { ImpersonatedIdentity: identity } }));
    expect(await code(res)).toBe(want);
    if (want === 'OK') expect(sanOf((await res)[0]!)).toBe(`URI:${identity}`);
  });

  it.each([
    ['no token', null, req(), 'UNAUTHENTICATED'],
    ['expired token', 'expired', req(), 'UNAUTHENTICATED'],
    ['garbage CSR', 'a:b', req({ csr: 'hello' }), 'INVALID_ARGUMENT'],
    [
      'CSR with garbage base64 body',
      'a:b',
      req({ csr: '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n' }),
      'INVALID_ARGUMENT',
    ],
    ['oversize CSR', 'a:b', req({ csr: 'x'.repeat(70_000) }), 'INVALID_ARGUMENT'],
    [
      'impersonation value not a string',
      'a:b',
      req({ metadata: { ImpersonatedIdentity: 5 } }),
      'INVALID_ARGUMENT',
    ],
  ])('rejects %s', async (_name, token, r, want) => {
    expect(await code(service().createCertificate(token, r))).toBe(want);
  });

  it.each([
    ['ed25519', () => generateKeyPairSync('ed25519').privateKey],
    ['RSA 1024', () => generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey],
    ['EC P-521', () => generateKeyPairSync('ec', { namedCurve: 'secp521r1' }).privateKey],
  ])('rejects a %s key', async (_name, key) => {
    const keyFile = join(dir, `k-${_name.replace(/\W/g, '')}.pem`);
    writeFileSync(keyFile, key().export({ type: 'pkcs8', format: 'pem' }));
    const pem = execFileSync(
      'openssl',
      [
        'req',
        '-new',
        '-key',
        keyFile,
        '-subj',
        '/',
        '-addext',
        'subjectAltName=URI:spiffe://cluster.local/ns/a/sa/b',
      ],
      {
        encoding: 'utf8',
      },
    );
    expect(await code(service().createCertificate('a:b', req({ csr: pem })))).toBe('INVALID_ARGUMENT');
  });

  it('accepts an RSA 2048 CSR made by openssl', async () => {
    const keyFile = join(dir, 'rsa2048.pem');
    writeFileSync(
      keyFile,
      generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }),
    );
    const pem = execFileSync('openssl', ['req', '-new', '-key', keyFile, '-subj', '/'], { encoding: 'utf8' });
    const chain = await service().createCertificate('a:b', req({ csr: pem }));
    expect(sanOf(chain[0]!)).toBe('URI:spiffe://cluster.local/ns/a/sa/b');
  });

  it('plug-in CA with an intermediate: openssl verify -CAfile root -untrusted chain accepts issued leaves', async () => {
    const rootKey = x509.generateP256();
    const now = Date.now();
    const rootDer = x509.buildCertificate(
      {
        publicKey: rootKey.publicKey,
        subject: [[x509.OID.organization, 'Operator Root']],
        notBefore: new Date(now - 3600_000),
        notAfter: new Date(now + 3650 * 86_400_000),
        isCA: true,
        keyUsage: [x509.KU.keyCertSign, x509.KU.cRLSign],
      },
      'self',
      rootKey.privateKey,
    );
    const interKey = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const interDer = x509.buildCertificate(
      {
        publicKey: interKey.publicKey,
        subject: [[x509.OID.organization, 'Operator Intermediate']],
        notBefore: new Date(now - 3600_000),
        notAfter: new Date(now + 365 * 86_400_000),
        isCA: true,
        keyUsage: [x509.KU.keyCertSign, x509.KU.cRLSign],
      },
      x509.issuerFrom(rootDer, rootKey.privateKey),
    );
    const material = CaMaterial.fromFiles(
      {
        'ca-cert.pem': x509.certToPem(interDer),
        'ca-key.pem': interKey.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
        'cert-chain.pem': x509.certToPem(interDer) + x509.certToPem(rootDer),
        'root-cert.pem': x509.certToPem(rootDer),
      },
      'plugged',
    );
    const chain = await service(material).createCertificate('default:bookinfo-productpage', req());
    expect(chain).toHaveLength(3); // leaf, intermediate, root bundle
    writeFileSync(join(dir, 'root.pem'), chain[2]!);
    writeFileSync(join(dir, 'chain.pem'), chain[1]!);
    writeFileSync(join(dir, 'leaf.pem'), chain[0]!);
    const out = execFileSync(
      'openssl',
      [
        'verify',
        '-CAfile',
        join(dir, 'root.pem'),
        '-untrusted',
        join(dir, 'chain.pem'),
        join(dir, 'leaf.pem'),
      ],
      {
        encoding: 'utf8',
      },
    );
    expect(out.trim()).toBe(`${join(dir, 'leaf.pem')}: OK`);
  });

  it('rejects inconsistent plug-in material with a clear error', () => {
    const a = CaMaterial.selfSigned('cluster.local').files;
    const b = CaMaterial.selfSigned('cluster.local').files;
    expect(() => CaMaterial.fromFiles({ ...a, 'ca-key.pem': b['ca-key.pem'] }, 'plugged')).toThrow(
      /does not match/,
    );
    expect(() => CaMaterial.fromFiles({ ...a, 'root-cert.pem': b['ca-cert.pem'] }, 'plugged')).toThrow(
      /does not chain/,
    );
    expect(() => CaMaterial.fromFiles({ ...a, 'ca-cert.pem': 'nope' }, 'plugged')).toThrow(/cannot parse/);
  });

  it('serves CreateCertificate over gRPC with the bearer token from metadata', async () => {
    const server = new Server();
    server.addService(IstioCertificateServiceService, service().handlers());
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    const client = new IstioCertificateServiceClient(`127.0.0.1:${port}`, credentials.createInsecure());
    const call = (token: string | null) =>
      new Promise<{ code: number; chain: string[] }>((resolve) => {
        const md = new Metadata();
        if (token) md.set('authorization', `Bearer ${token}`);
        client.createCertificate(req(), md, (err, res) =>
          resolve({ code: err?.code ?? 0, chain: res?.certChain ?? [] }),
        );
      });
    const ok = await call('default:bookinfo-productpage');
    expect(ok.code).toBe(status.OK);
    expect(sanOf(ok.chain[0]!)).toBe('URI:spiffe://cluster.local/ns/default/sa/bookinfo-productpage');
    expect((await call(null)).code).toBe(status.UNAUTHENTICATED);
    client.close();
    server.forceShutdown();
  });
});
