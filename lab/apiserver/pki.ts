/**
 * The lab's certificate authority: one ECDSA P-256 CA kept in `<dataDir>/pki` (so kubeconfigs and pods'
 * `kube-root-ca.crt` stay valid across restarts), a serving certificate re-issued on every start (its SANs
 * follow the options), and client certificates on request (CN = user, O = groups, like kube-apiserver's x509
 * authenticator). Certificates are built with node:crypto and pkg/identity's DER codec (docs/decisions/0002:
 * @peculiar/x509 needs a global reflect-metadata polyfill).
 */
import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { MeshError } from '../../pkg/errors/index.ts';
import { x509 } from '../../pkg/identity/index.ts';

/** The CA outlives any lab; ten years like kubeadm's CA. */
const CA_VALIDITY_MS = 10 * 365 * 24 * 3600 * 1000;
/** Leaf certificates are re-issued at every start; one year is ample and matches kubeadm. */
const LEAF_VALIDITY_MS = 365 * 24 * 3600 * 1000;
/** Backdating absorbs small clock differences between the lab processes' view of "now". */
const BACKDATE_MS = 5 * 60 * 1000;

export interface KeyPairPem {
  readonly certPem: string;
  readonly keyPem: string;
}

/** Writes a file atomically with owner-only permissions (keys and tokens live here). */
export async function writeSecretFile(path: string, data: string): Promise<void> {
  const tmp = `${path}.tmp`;
  await writeFile(tmp, data, { mode: 0o600 });
  await rename(tmp, path);
}

function keyPem(k: KeyObject): string {
  return k.export({ type: 'pkcs8', format: 'pem' }).toString();
}

export class LabCa {
  readonly certPem: string;
  private readonly issuer: x509.Issuer;

  private constructor(certPem: string, key: KeyObject) {
    this.certPem = certPem;
    this.issuer = x509.issuerFrom(Buffer.from(new X509Certificate(certPem).raw), key);
  }

  /** Loads `<dir>/ca.crt` + `ca.key`, or creates them on first use. */
  static async loadOrCreate(dir: string, commonName: string): Promise<LabCa> {
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const certPath = join(dir, 'ca.crt');
      const keyPath = join(dir, 'ca.key');
      let certPem: string | null = null;
      try {
        certPem = await readFile(certPath, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
      if (certPem !== null) return new LabCa(certPem, createPrivateKey(await readFile(keyPath, 'utf8')));
      const { privateKey, publicKey } = x509.generateP256();
      const now = Date.now();
      const der = x509.buildCertificate(
        {
          publicKey,
          subject: [[x509.OID.commonName, commonName]],
          notBefore: new Date(now - BACKDATE_MS),
          notAfter: new Date(now + CA_VALIDITY_MS),
          isCA: true,
          keyUsage: [x509.KU.digitalSignature, x509.KU.keyCertSign, x509.KU.cRLSign],
        },
        'self',
        privateKey,
      );
      const pem = x509.certToPem(der);
      await writeSecretFile(keyPath, keyPem(privateKey));
      await writeFile(certPath, pem);
      return new LabCa(pem, privateKey);
    } catch (err) {
      throw new MeshError('MESH_ERR_LAB_PKI', `cannot load or create the lab CA in ${dir}: ${String(err)}`, {
        cause: err,
      });
    }
  }

  /** A serving certificate for the given DNS names and IP addresses. */
  issueServing(hosts: readonly string[]): KeyPairPem {
    const unique = [...new Set(hosts)];
    return this.issue([[x509.OID.commonName, 'kube-apiserver']], [x509.OID.serverAuth], {
      dns: unique.filter((h) => isIP(h) === 0),
      ips: unique.filter((h) => isIP(h) !== 0),
    });
  }

  /** A client certificate: kube-apiserver reads the user from CN and the groups from O. */
  issueClient(user: string, groups: readonly string[] = []): KeyPairPem {
    const subject: Array<[string, string]> = [
      ...groups.map((g): [string, string] => [x509.OID.organization, g]),
      [x509.OID.commonName, user],
    ];
    return this.issue(subject, [x509.OID.clientAuth]);
  }

  private issue(
    subject: ReadonlyArray<readonly [string, string]>,
    eku: readonly string[],
    san?: x509.SanEntries,
  ): KeyPairPem {
    const { privateKey, publicKey } = x509.generateP256();
    const now = Date.now();
    const der = x509.buildCertificate(
      {
        publicKey,
        subject,
        notBefore: new Date(now - BACKDATE_MS),
        notAfter: new Date(now + LEAF_VALIDITY_MS),
        isCA: false,
        keyUsage: [x509.KU.digitalSignature, x509.KU.keyEncipherment],
        extKeyUsage: eku,
        ...(san ? { san } : {}),
      },
      this.issuer,
    );
    return { certPem: x509.certToPem(der), keyPem: keyPem(privateKey) };
  }
}
