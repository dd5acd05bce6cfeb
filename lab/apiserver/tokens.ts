/**
 * ServiceAccount tokens (TokenRequest) in the format kube-apiserver mints: ES256 JWTs with `iss`, `sub`
 * `system:serviceaccount:<ns>:<sa>`, `aud`, `exp`/`iat`/`nbf`, `jti` and the private `kubernetes.io` claim
 * naming the namespace, the service account and the bound pod/secret/node. The signing key is kept in
 * `<dataDir>/pki/sa.key` so tokens survive restarts.
 */
import { createHash, randomUUID, webcrypto } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { exportJWK, importPKCS8, type JWK, type JWTPayload, jwtVerify, SignJWT } from 'jose';
import { MeshError } from '../../pkg/errors/index.ts';
import { isObject, strAt } from './json.ts';
import { writeSecretFile } from './pki.ts';

type CryptoKey = webcrypto.CryptoKey;

export const DEFAULT_ISSUER = 'https://kubernetes.default.svc.cluster.local';

export interface BoundRef {
  readonly kind: 'Pod' | 'Secret' | 'Node';
  readonly name: string;
  readonly uid: string;
}

export interface MintRequest {
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly serviceAccountUid: string;
  readonly audiences: readonly string[];
  readonly expirationSeconds: number;
  readonly bound: BoundRef | null;
  /** Node the bound pod runs on (kube-apiserver adds it to the claims since 1.30). */
  readonly node: { readonly name: string; readonly uid: string } | null;
}

/** The claims of a token that passed signature, issuer and time checks. */
export interface VerifiedToken {
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly serviceAccountUid: string;
  readonly audiences: readonly string[];
  readonly jti: string;
  readonly pod: { readonly name: string; readonly uid: string } | null;
  readonly secret: { readonly name: string; readonly uid: string } | null;
  readonly node: { readonly name: string; readonly uid: string } | null;
}

function ref(v: unknown): { name: string; uid: string } | null {
  const name = strAt(v, 'name');
  const uid = strAt(v, 'uid');
  return name !== null && uid !== null ? { name, uid } : null;
}

export class TokenIssuer {
  readonly issuer: string;
  private readonly privateKey: CryptoKey;
  private readonly publicKey: CryptoKey;
  readonly keyId: string;
  private readonly publicJwk: JWK;

  private constructor(issuer: string, privateKey: CryptoKey, publicKey: CryptoKey, keyId: string, jwk: JWK) {
    this.issuer = issuer;
    this.privateKey = privateKey;
    this.publicKey = publicKey;
    this.keyId = keyId;
    this.publicJwk = jwk;
  }

  static async loadOrCreate(dir: string, issuer: string): Promise<TokenIssuer> {
    const path = join(dir, 'sa.key');
    try {
      let pem: string;
      try {
        pem = await readFile(path, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        const pair = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
          'sign',
          'verify',
        ]);
        const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', pair.privateKey));
        pem = `-----BEGIN PRIVATE KEY-----\n${der
          .toString('base64')
          .match(/.{1,64}/g)
          ?.join('\n')}\n-----END PRIVATE KEY-----\n`;
        await writeSecretFile(path, pem);
      }
      const privateKey = (await importPKCS8(pem, 'ES256', { extractable: true })) as CryptoKey;
      const jwk = await exportJWK(privateKey);
      const pubJwk: JWK = { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y };
      const publicKey = (await webcrypto.subtle.importKey(
        'jwk',
        pubJwk as webcrypto.JsonWebKey,
        { name: 'ECDSA', namedCurve: 'P-256' },
        true,
        ['verify'],
      )) as CryptoKey;
      const spki = Buffer.from(await webcrypto.subtle.exportKey('spki', publicKey));
      // kube-apiserver derives the key id from the SHA-256 of the DER public key, base64url encoded.
      const keyId = createHash('sha256').update(spki).digest('base64url');
      return new TokenIssuer(issuer, privateKey, publicKey, keyId, {
        ...pubJwk,
        kid: keyId,
        use: 'sig',
        alg: 'ES256',
      });
    } catch (err) {
      throw new MeshError(
        'MESH_ERR_LAB_PKI',
        `cannot load or create the service-account signing key ${path}: ${String(err)}`,
        {
          cause: err,
        },
      );
    }
  }

  async mint(req: MintRequest, now = new Date()): Promise<{ token: string; expires: Date }> {
    const iat = Math.floor(now.getTime() / 1000);
    const exp = iat + req.expirationSeconds;
    const k8s: Record<string, unknown> = {
      namespace: req.namespace,
      serviceaccount: { name: req.serviceAccount, uid: req.serviceAccountUid },
    };
    if (req.bound?.kind === 'Pod') k8s.pod = { name: req.bound.name, uid: req.bound.uid };
    if (req.bound?.kind === 'Secret') k8s.secret = { name: req.bound.name, uid: req.bound.uid };
    if (req.bound?.kind === 'Node') k8s.node = { name: req.bound.name, uid: req.bound.uid };
    else if (req.node) k8s.node = { name: req.node.name, uid: req.node.uid };
    const payload: JWTPayload = { 'kubernetes.io': k8s };
    const token = await new SignJWT(payload)
      .setProtectedHeader({ alg: 'ES256', kid: this.keyId })
      .setIssuer(this.issuer)
      .setSubject(`system:serviceaccount:${req.namespace}:${req.serviceAccount}`)
      .setAudience([...req.audiences])
      .setIssuedAt(iat)
      .setNotBefore(iat)
      .setExpirationTime(exp)
      .setJti(randomUUID())
      .sign(this.privateKey);
    return { token, expires: new Date(exp * 1000) };
  }

  /**
   * Checks signature, issuer and time; returns the claims or a reason string. Audience and bound-object
   * checks need the API's state and happen in the caller.
   */
  async verify(token: string): Promise<VerifiedToken | string> {
    if (token.split('.').length !== 3) return 'not a JWT';
    try {
      const { payload } = await jwtVerify(token, this.publicKey, {
        issuer: this.issuer,
        algorithms: ['ES256'],
      });
      const k8s = payload['kubernetes.io'];
      if (!isObject(k8s)) return 'token lacks the kubernetes.io claim';
      const ns = strAt(k8s, 'namespace');
      const sa = ref(k8s.serviceaccount);
      if (ns === null || sa === null) return 'token lacks namespace or service account claims';
      const aud = payload.aud;
      return {
        namespace: ns,
        serviceAccount: sa.name,
        serviceAccountUid: sa.uid,
        audiences: Array.isArray(aud) ? aud : typeof aud === 'string' ? [aud] : [],
        jti: typeof payload.jti === 'string' ? payload.jti : '',
        pod: ref(k8s.pod),
        secret: ref(k8s.secret),
        node: ref(k8s.node),
      };
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === 'ERR_JWT_EXPIRED') return 'token has expired';
      return `invalid token: ${(err as Error).message}`;
    }
  }

  /** The JWKS document served at /openid/v1/jwks. */
  jwks(): { keys: JWK[] } {
    return { keys: [this.publicJwk] };
  }
}
