import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import type { AddressInfo, Server } from 'node:net';
import { connect, createServer, type PeerCertificate, type TLSSocket } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { isMeshError } from '../errors/index.ts';
import { type Identity, WorkloadCertificate, x509 } from '../identity/index.ts';
import { FakeCa } from '../testing/fake-ca.ts';
import {
  ALPN_H2,
  checkClientPeer,
  clientTlsOptions,
  createMtlsContext,
  mtlsContextOptions,
  peerIdentities,
  SecureContextCache,
  serverTlsOptions,
  spiffeIdentitiesOf,
  spiffeServerCheck,
  TLS_VERSION,
} from './index.ts';

const ca = new FakeCa();
const TD = 'cluster.local';
const idOf = (sa: string, td = TD): Identity => ({
  trustDomain: td,
  namespace: 'default',
  serviceAccount: sa,
});

function certFor(identity: Identity, signer = ca, roots = [ca.rootPem]): WorkloadCertificate {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return new WorkloadCertificate(identity, privateKey, [signer.sign(identity, publicKey)], roots);
}

function peerCert(cert: WorkloadCertificate): PeerCertificate {
  return { raw: new X509Certificate(cert.chainPem[0]!).raw } as PeerCertificate;
}

const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

describe('contexts', () => {
  it('pins TLS 1.3 and carries key, chain and roots', () => {
    const c = certFor(idOf('a'));
    const o = mtlsContextOptions(c);
    expect(o.minVersion).toBe(TLS_VERSION);
    expect(o.maxVersion).toBe(TLS_VERSION);
    expect(o.cert).toBe(c.chainPem.join(''));
    expect(o.ca).toEqual([ca.rootPem]);
    expect(createMtlsContext(c)).toBeDefined();
  });

  it('rejects unusable material with a typed error that never shows the key', () => {
    const c = certFor(idOf('a'));
    const other = certFor(idOf('b'));
    // A key that does not match the certificate.
    const broken = Object.create(c) as WorkloadCertificate;
    Object.defineProperty(broken, 'privateKeyPem', { value: other.privateKeyPem });
    let err: unknown = null;
    try {
      createMtlsContext(broken);
    } catch (e) {
      err = e;
    }
    expect(isMeshError(err, 'MESH_ERR_TLS_CONTEXT')).toBe(true);
    expect(String((err as Error).message)).not.toContain('PRIVATE KEY');
  });

  it('caches one context per identity and rebuilds on rotation (new serial)', () => {
    const cache = new SecureContextCache();
    const a1 = certFor(idOf('a'));
    const a2 = certFor(idOf('a'));
    const b = certFor(idOf('b'));
    const ctx1 = cache.get(a1);
    expect(cache.get(a1)).toBe(ctx1);
    const ctx2 = cache.get(a2);
    expect(ctx2).not.toBe(ctx1);
    expect(cache.get(a2)).toBe(ctx2);
    cache.get(b);
    expect(cache.builds).toBe(3);
    expect(cache.size).toBe(2);
    cache.forget(b);
    expect(cache.size).toBe(1);
  });
});

describe('SPIFFE identities', () => {
  it('reads URI SANs strictly from DER', () => {
    const c = certFor(idOf('reviews'));
    expect(spiffeIdentitiesOf(new X509Certificate(c.chainPem[0]!).raw)).toEqual([idOf('reviews')]);
    // The root has no SAN; garbage has nothing.
    expect(spiffeIdentitiesOf(ca.rootDer)).toEqual([]);
    expect(spiffeIdentitiesOf(Buffer.from('not a certificate'))).toEqual([]);
  });

  it('skips non-SPIFFE and malformed SPIFFE URIs', () => {
    const { privateKey, publicKey } = x509.generateP256();
    const der = x509.buildCertificate(
      {
        publicKey,
        subject: [],
        notBefore: new Date(Date.now() - 60_000),
        notAfter: new Date(Date.now() + 3_600_000),
        isCA: false,
        keyUsage: [x509.KU.digitalSignature],
        san: {
          uris: [
            'https://example.com/x',
            'spiffe://td/ns/a',
            'spiffe://td/ns/a/sa/b',
            'spiffe://TD/ns/c/sa/d',
          ],
        },
      },
      'self',
      privateKey,
    );
    expect(spiffeIdentitiesOf(der)).toEqual([{ trustDomain: 'td', namespace: 'a', serviceAccount: 'b' }]);
  });

  it('client check: accepts iff the server identity is expected', () => {
    const server = peerCert(certFor(idOf('server')));
    expect(spiffeServerCheck([idOf('server')])('1.2.3.4', server)).toBeUndefined();
    expect(spiffeServerCheck([idOf('waypoint'), idOf('server')])('ignored', server)).toBeUndefined();
    const err = spiffeServerCheck([idOf('other')])('1.2.3.4', server);
    expect(isMeshError(err, 'MESH_ERR_TLS_PEER_IDENTITY')).toBe(true);
    expect(err!.message).toContain('spiffe://cluster.local/ns/default/sa/server');
    // Same names, other trust domain: not the same identity.
    expect(spiffeServerCheck([idOf('server', 'other.td')])('x', server)).toBeInstanceOf(Error);
    expect(spiffeServerCheck([])('x', server)).toBeInstanceOf(Error);
    expect(spiffeServerCheck([idOf('server')])('x', {} as PeerCertificate)).toBeInstanceOf(Error);
  });
});

describe('handshakes', () => {
  /** A TLS server with `serverCert`; resolves with the client-peer check of the first connection. */
  async function serve(
    serverCert: WorkloadCertificate,
  ): Promise<{ port: number; peer: Promise<ReturnType<typeof checkClientPeer>> }> {
    let report: (r: ReturnType<typeof checkClientPeer>) => void = () => {};
    const peer = new Promise<ReturnType<typeof checkClientPeer>>((r) => {
      report = r;
    });
    const server = createServer(serverTlsOptions(serverCert, 2000), (s: TLSSocket) => {
      report(checkClientPeer(s, TD));
      s.end();
    });
    server.on('tlsClientError', () => {});
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return { port: (server.address() as AddressInfo).port, peer };
  }

  function dial(port: number, client: WorkloadCertificate, expected: Identity[]): Promise<TLSSocket> {
    return new Promise((resolve, reject) => {
      const s = connect({
        host: '127.0.0.1',
        port,
        ...clientTlsOptions(createMtlsContext(client), expected),
      });
      s.once('secureConnect', () => resolve(s));
      s.once('error', reject);
    });
  }

  it('mTLS with SPIFFE checks on both ends, TLS 1.3 and h2', async () => {
    const { port, peer } = await serve(certFor(idOf('server')));
    const s = await dial(port, certFor(idOf('client')), [idOf('server')]);
    expect(s.getProtocol()).toBe('TLSv1.3');
    expect(s.alpnProtocol).toBe(ALPN_H2);
    expect(peerIdentities(s)).toEqual([idOf('server')]);
    expect(await peer).toEqual({ ok: true, identity: idOf('client') });
    s.destroy();
  });

  it('client refuses an unexpected server identity', async () => {
    const { port } = await serve(certFor(idOf('server')));
    const err = await dial(port, certFor(idOf('client')), [idOf('other')]).catch((e: unknown) => e);
    expect(isMeshError(err, 'MESH_ERR_TLS_PEER_IDENTITY')).toBe(true);
  });

  it('client refuses a server chaining to another root (OpenSSL verification)', async () => {
    const { port } = await serve(certFor(idOf('server'), new FakeCa()));
    const err = await dial(port, certFor(idOf('client')), [idOf('server')]).catch((e: unknown) => e);
    expect((err as NodeJS.ErrnoException).code).toMatch(/UNABLE_TO_VERIFY|SELF_SIGNED|CERT/);
  });

  it('server refuses a client from another trust domain after the handshake', async () => {
    const { port, peer } = await serve(certFor(idOf('server')));
    const s = await dial(port, certFor(idOf('client', 'evil.example')), [idOf('server')]);
    const r = await peer;
    expect(r.ok).toBe(false);
    expect(!r.ok && r.reason).toContain('evil.example');
    s.destroy();
  });
});
