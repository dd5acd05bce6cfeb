/**
 * The CA's view of Kubernetes: TokenReview authentication (audience `istio-ca`), the node index used for
 * impersonation checks, loading/creating the CA Secret, and publishing the root ConfigMap.
 */

import { status as grpcStatus } from '@grpc/grpc-js';
import { AuthenticationV1Api, CoreV1Api, type KubeConfig, type V1Secret } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { describeError } from '../../../pkg/errors/index.ts';
import { isConflict, isNotFound } from '../../../pkg/kube/index.ts';
import { type CaFiles, CaMaterial } from './authority.ts';
import { type Authenticator, CaError, type Caller, type NodeIndex } from './service.ts';

export const CA_AUDIENCE = 'istio-ca';
export const PLUGGED_SECRET = 'cacerts';
export const SELF_SIGNED_SECRET = 'istio-ca-secret';
export const ROOT_CONFIGMAP = 'istio-ca-root-cert';
const SA_PREFIX = 'system:serviceaccount:';

export class TokenReviewAuthenticator implements Authenticator {
  private readonly api: AuthenticationV1Api;
  private readonly audiences: readonly string[];

  constructor(kc: KubeConfig, audiences: readonly string[] = [CA_AUDIENCE]) {
    this.api = kc.makeApiClient(AuthenticationV1Api);
    this.audiences = audiences;
  }

  async authenticate(token: string): Promise<Caller> {
    const review = await this.api.createTokenReview({
      body: {
        apiVersion: 'authentication.k8s.io/v1',
        kind: 'TokenReview',
        spec: { token, audiences: [...this.audiences] },
      },
    });
    const st = review.status;
    if (!st?.authenticated) {
      throw new CaError(
        grpcStatus.UNAUTHENTICATED,
        `request authenticate failure: ${st?.error ?? 'token not authenticated'}`,
      );
    }
    if (st.audiences && !st.audiences.some((a) => this.audiences.includes(a))) {
      throw new CaError(
        grpcStatus.UNAUTHENTICATED,
        `token audiences ${st.audiences.join(',')} do not include ${this.audiences.join(',')}`,
      );
    }
    const username = st.user?.username ?? '';
    if (!username.startsWith(SA_PREFIX)) {
      throw new CaError(grpcStatus.UNAUTHENTICATED, `caller ${username} is not a service account`);
    }
    const [namespace, serviceAccount, ...rest] = username.slice(SA_PREFIX.length).split(':');
    if (!namespace || !serviceAccount || rest.length > 0) {
      throw new CaError(grpcStatus.UNAUTHENTICATED, `malformed service account user ${username}`);
    }
    const extra = st.user?.extra ?? {};
    return {
      namespace,
      serviceAccount,
      podName: extra['authentication.kubernetes.io/pod-name']?.[0] ?? null,
      podUid: extra['authentication.kubernetes.io/pod-uid']?.[0] ?? null,
    };
  }
}

function secretFiles(s: V1Secret): Partial<Record<keyof CaFiles, string>> {
  const out: Partial<Record<keyof CaFiles, string>> = {};
  for (const k of ['ca-cert.pem', 'ca-key.pem', 'cert-chain.pem', 'root-cert.pem'] as const) {
    const v = s.data?.[k] ?? null;
    if (v !== null) out[k] = Buffer.from(v, 'base64').toString('utf8');
    else if (s.stringData?.[k] !== undefined) out[k] = s.stringData[k];
  }
  return out;
}

function complete(f: Partial<Record<keyof CaFiles, string>>): f is CaFiles {
  return typeof f['ca-cert.pem'] === 'string' && typeof f['ca-key.pem'] === 'string';
}

/**
 * Finds the CA material: the plug-in Secret if present, else the stored self-signed root, else creates one
 * and stores it (if two istiods race, the loser re-reads the winner's Secret).
 */
export async function loadCaMaterial(
  kc: KubeConfig,
  namespace: string,
  trustDomain: string,
  logger: Logger,
): Promise<CaMaterial> {
  const core = kc.makeApiClient(CoreV1Api);
  const read = async (name: string): Promise<V1Secret | null> => {
    try {
      return await core.readNamespacedSecret({ name, namespace });
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  };
  const plugged = await read(PLUGGED_SECRET);
  if (plugged) {
    const files = secretFiles(plugged);
    if (!complete(files))
      throw new CaError(
        grpcStatus.INTERNAL,
        `Secret ${namespace}/${PLUGGED_SECRET} lacks ca-cert.pem or ca-key.pem`,
      );
    const m = CaMaterial.fromFiles(files, 'plugged');
    logger.info({ secret: PLUGGED_SECRET, fingerprint: m.fingerprint }, 'using plug-in CA');
    return m;
  }
  for (let attempt = 0; attempt < 3; attempt++) {
    const stored = await read(SELF_SIGNED_SECRET);
    if (stored) {
      const files = secretFiles(stored);
      if (!complete(files))
        throw new CaError(grpcStatus.INTERNAL, `Secret ${namespace}/${SELF_SIGNED_SECRET} is incomplete`);
      const m = CaMaterial.fromFiles(files, 'self-signed');
      logger.info({ secret: SELF_SIGNED_SECRET, fingerprint: m.fingerprint }, 'using stored self-signed CA');
      return m;
    }
    const { material, files } = CaMaterial.selfSigned(trustDomain);
    try {
      await core.createNamespacedSecret({
        namespace,
        body: {
          apiVersion: 'v1',
          kind: 'Secret',
          type: 'istio.io/ca-root',
          metadata: { name: SELF_SIGNED_SECRET, namespace },
          data: Object.fromEntries(
            Object.entries(files).map(([k, v]) => [k, Buffer.from(v).toString('base64')]),
          ),
        },
      });
      logger.info(
        { secret: SELF_SIGNED_SECRET, fingerprint: material.fingerprint },
        'created self-signed CA',
      );
      return material;
    } catch (err) {
      if (!isConflict(err)) throw err;
      logger.info('another istiod created the CA secret first; reading it');
    }
  }
  throw new CaError(
    grpcStatus.INTERNAL,
    `could not create or read Secret ${namespace}/${SELF_SIGNED_SECRET}`,
  );
}

/** Creates or updates ConfigMap istio-ca-root-cert in one namespace; returns true when it changed anything. */
export async function publishRootCert(
  core: CoreV1Api,
  namespace: string,
  rootPem: string,
  logger: Logger,
): Promise<boolean> {
  try {
    const cm = await core.readNamespacedConfigMap({ name: ROOT_CONFIGMAP, namespace });
    if (cm.data?.['root-cert.pem'] === rootPem) return false;
    await core.replaceNamespacedConfigMap({
      name: ROOT_CONFIGMAP,
      namespace,
      body: { ...cm, data: { ...cm.data, 'root-cert.pem': rootPem } },
    });
    return true;
  } catch (err) {
    if (!isNotFound(err)) {
      logger.warn({ namespace, err: describeError(err) }, 'cannot update root cert ConfigMap');
      throw err;
    }
  }
  await core.createNamespacedConfigMap({
    namespace,
    body: {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: ROOT_CONFIGMAP, namespace, labels: { 'istio.io/config': 'true' } },
      data: { 'root-cert.pem': rootPem },
    },
  });
  return true;
}
