/**
 * istiod in-process against the lab API server (no kubelets, no root): the CA authenticates real
 * TokenRequest tokens through TokenReview and checks impersonation against scheduled pods (issue #5), the
 * root ConfigMap reaches every namespace, a plug-in CA is picked up live, and the ambient index reaches an xDS
 * client as pods get IPs and are enrolled (issue #6).
 */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { credentials, Metadata, status } from '@grpc/grpc-js';
import { CoreV1Api } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Istiod } from '../../istiod/src/app.ts';
import { loadConfig } from '../../istiod/src/config.ts';
import { type Lab, readyNode, startLab } from '../../lab/apiserver/testkit.ts';
import { x509 } from '../../pkg/identity/index.ts';
import { loadKubeConfig } from '../../pkg/kube/index.ts';
import { createLogger } from '../../pkg/telemetry/index.ts';
import { eventually } from '../../pkg/testing/index.ts';
import { subscription, XdsClient } from '../../pkg/xds/client.ts';
import { Node } from '../../pkg/xds/gen/envoy/config/core/v3/base.ts';
import { IstioCertificateServiceClient } from '../../pkg/xds/gen/istio/v1/auth/ca.ts';
import { Address } from '../../pkg/xds/gen/istio/workload/workload.ts';
import { ADDRESS_TYPE_URL } from '../../pkg/xds/index.ts';

const logger = createLogger({ component: 'test', level: 'silent' });
let lab: Lab;
let istiod: Istiod;
let core: CoreV1Api;
const dir = mkdtempSync(join(tmpdir(), 'amb-istiod-'));

async function pod(ns: string, name: string, node: string, sa: string, labels: Record<string, string> = {}) {
  return core.createNamespacedPod({
    namespace: ns,
    body: {
      metadata: { name, namespace: ns, labels },
      spec: { nodeName: node, serviceAccountName: sa, containers: [{ name: 'app', image: 'x' }] },
    },
  });
}

async function token(ns: string, sa: string, podName: string | null, audience = 'istio-ca'): Promise<string> {
  const p = podName ? await core.readNamespacedPod({ namespace: ns, name: podName }) : null;
  const res = await core.createNamespacedServiceAccountToken({
    namespace: ns,
    name: sa,
    body: {
      spec: {
        audiences: [audience],
        expirationSeconds: 3600,
        ...(p
          ? { boundObjectRef: { kind: 'Pod', apiVersion: 'v1', name: podName!, uid: p.metadata!.uid! } }
          : {}),
      },
    },
  });
  return res.status?.token ?? '';
}

function csr(): string {
  return x509.csrToPem(
    x509.buildCsr(x509.generateP256().privateKey, { uris: ['spiffe://cluster.local/ns/x/sa/y'] }),
  );
}

/** CreateCertificate over TLS to :15012, verifying istiod with the mesh root as ztunnel does. */
function createCertificate(
  tok: string | null,
  impersonate?: string,
): Promise<{ code: number; chain: string[]; details: string }> {
  const client = new IstioCertificateServiceClient(
    `127.0.0.1:${istiod.ports.xdsSecure}`,
    credentials.createSsl(Buffer.from(istiod.caMaterial.rootBundlePem())),
    { 'grpc.ssl_target_name_override': 'istiod.istio-system.svc' },
  );
  const md = new Metadata();
  if (tok) md.set('authorization', `Bearer ${tok}`);
  return new Promise((resolve) => {
    client.createCertificate(
      {
        csr: csr(),
        validityDuration: 0n,
        metadata: impersonate ? { ImpersonatedIdentity: impersonate } : undefined,
      },
      md,
      (err, res) => {
        client.close();
        resolve({ code: err?.code ?? 0, chain: res?.certChain ?? [], details: err?.details ?? '' });
      },
    );
  });
}

beforeAll(async () => {
  lab = await startLab({ controllers: true });
  const kc = loadKubeConfig(lab.api.kubeconfigPath);
  core = kc.makeApiClient(CoreV1Api);
  await lab.k(['apply', '-k', join(import.meta.dirname, '../../deploy/crds')]);
  for (const ns of ['istio-system', 'bookinfo'])
    await core.createNamespace({ body: { metadata: { name: ns } } });
  for (const n of ['node-a', 'node-b']) await lab.api.client.create('v1/nodes', readyNode(n));
  for (const [ns, sa] of [
    ['istio-system', 'ztunnel'],
    ['bookinfo', 'bookinfo-productpage'],
    ['bookinfo', 'bookinfo-ratings'],
  ] as const) {
    await core
      .createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: sa, namespace: ns } } })
      .catch(() => {});
  }
  await pod('istio-system', 'ztunnel-a', 'node-a', 'ztunnel');
  await pod('bookinfo', 'productpage-1', 'node-a', 'bookinfo-productpage', { app: 'productpage' });
  await pod('bookinfo', 'ratings-1', 'node-b', 'bookinfo-ratings', { app: 'ratings' });
  const config = {
    ...loadConfig({
      XDS_PLAINTEXT_PORT: '0',
      XDS_SECURE_PORT: '0',
      MONITORING_PORT: '0',
      HTTP_PORT: '0',
      BIND_ADDRESS: '127.0.0.1',
    }),
  };
  istiod = await Istiod.create({ config, kubeConfig: kc, logger });
  await istiod.run();
}, 120_000);

afterAll(async () => {
  await istiod?.close(0);
  await lab?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('istiod CA in the lab (issue #5)', () => {
  it('is ready and stored its self-signed root in istio-ca-secret', async () => {
    expect(istiod.isReady()).toBe(true);
    const res = await fetch(`http://127.0.0.1:${istiod.ports.http}/ready`);
    expect(res.status).toBe(200);
    const s = await core.readNamespacedSecret({ namespace: 'istio-system', name: 'istio-ca-secret' });
    expect(Object.keys(s.data ?? {})).toEqual(expect.arrayContaining(['ca-cert.pem', 'ca-key.pem']));
    expect(new X509Certificate(Buffer.from(s.data!['ca-cert.pem']!, 'base64')).subject).toBe(
      'O=cluster.local',
    );
  });

  it('publishes istio-ca-root-cert in every namespace, and in new ones', async () => {
    await core.createNamespace({ body: { metadata: { name: 'late' } } });
    await eventually(
      async () => {
        for (const ns of ['default', 'istio-system', 'bookinfo', 'late']) {
          const cm = await core.readNamespacedConfigMap({ namespace: ns, name: 'istio-ca-root-cert' });
          expect(cm.data?.['root-cert.pem']).toBe(istiod.caMaterial.rootBundlePem());
        }
      },
      { timeoutMs: 15_000, what: 'root cert ConfigMaps' },
    );
  });

  it("issues a pod's projected token its own identity", async () => {
    const r = await createCertificate(await token('bookinfo', 'bookinfo-productpage', 'productpage-1'));
    expect(r.code).toBe(status.OK);
    expect(new X509Certificate(r.chain[0]!).subjectAltName).toBe(
      'URI:spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage',
    );
  });

  it('lets ztunnel impersonate a service account with a pod on its node, not one without', async () => {
    const tok = await token('istio-system', 'ztunnel', 'ztunnel-a');
    const ok = await createCertificate(tok, 'spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage');
    expect(ok.code).toBe(status.OK);
    expect(new X509Certificate(ok.chain[0]!).subjectAltName).toBe(
      'URI:spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage',
    );
    const denied = await createCertificate(tok, 'spiffe://cluster.local/ns/bookinfo/sa/bookinfo-ratings');
    expect(denied.code).toBe(status.PERMISSION_DENIED);
    expect(denied.details).toMatch(
      /no pod with service account bookinfo\/bookinfo-ratings runs on node node-a/,
    );
  });

  it('refuses impersonation by a non-trusted caller', async () => {
    const r = await createCertificate(
      await token('bookinfo', 'bookinfo-ratings', 'ratings-1'),
      'spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage',
    );
    expect(r.code).toBe(status.PERMISSION_DENIED);
  });

  it('rejects foreign, wrong-audience and missing tokens as UNAUTHENTICATED', async () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const header = Buffer.from(JSON.stringify({ alg: 'ES256', typ: 'JWT' })).toString('base64url');
    const body = Buffer.from(
      JSON.stringify({ iss: 'evil', sub: 'system:serviceaccount:bookinfo:x', aud: ['istio-ca'] }),
    ).toString('base64url');
    const { sign } = await import('node:crypto');
    const sig = sign('sha256', Buffer.from(`${header}.${body}`), {
      key: privateKey,
      dsaEncoding: 'ieee-p1363',
    }).toString('base64url');
    expect((await createCertificate(`${header}.${body}.${sig}`)).code).toBe(status.UNAUTHENTICATED);
    expect(
      (await createCertificate(await token('bookinfo', 'bookinfo-ratings', null, 'some-other-audience')))
        .code,
    ).toBe(status.UNAUTHENTICATED);
    expect((await createCertificate(null)).code).toBe(status.UNAUTHENTICATED);
  });

  it('rejects a token bound to a pod that was deleted', async () => {
    await pod('bookinfo', 'short-lived', 'node-b', 'bookinfo-ratings');
    const tok = await token('bookinfo', 'bookinfo-ratings', 'short-lived');
    await core.deleteNamespacedPod({ namespace: 'bookinfo', name: 'short-lived', gracePeriodSeconds: 0 });
    await eventually(async () => expect((await createCertificate(tok)).code).toBe(status.UNAUTHENTICATED), {
      timeoutMs: 10_000,
      what: 'deleted pod token rejected',
    });
  });

  it('switches to a plug-in CA (Secret cacerts) live; issued leaves verify against the operator root', async () => {
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
    const inter = x509.generateP256();
    const interDer = x509.buildCertificate(
      {
        publicKey: inter.publicKey,
        subject: [[x509.OID.organization, 'Operator Intermediate']],
        notBefore: new Date(now - 3600_000),
        notAfter: new Date(now + 365 * 86_400_000),
        isCA: true,
        keyUsage: [x509.KU.keyCertSign, x509.KU.cRLSign],
      },
      x509.issuerFrom(rootDer, rootKey.privateKey),
    );
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    await core.createNamespacedSecret({
      namespace: 'istio-system',
      body: {
        metadata: { name: 'cacerts', namespace: 'istio-system' },
        data: {
          'ca-cert.pem': b64(x509.certToPem(interDer)),
          'ca-key.pem': b64(inter.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string),
          'cert-chain.pem': b64(x509.certToPem(interDer) + x509.certToPem(rootDer)),
          'root-cert.pem': b64(x509.certToPem(rootDer)),
        },
      },
    });
    await eventually(() => expect(istiod.caMaterial.source).toBe('plugged'), {
      timeoutMs: 15_000,
      what: 'plug-in CA loaded',
    });
    const r = await createCertificate(await token('bookinfo', 'bookinfo-productpage', 'productpage-1'));
    expect(r.code).toBe(status.OK);
    writeFileSync(join(dir, 'root.pem'), x509.certToPem(rootDer));
    writeFileSync(join(dir, 'chain.pem'), r.chain.slice(1, -1).join(''));
    writeFileSync(join(dir, 'leaf.pem'), r.chain[0]!);
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
    await eventually(
      async () => {
        const cm = await core.readNamespacedConfigMap({ namespace: 'bookinfo', name: 'istio-ca-root-cert' });
        expect(cm.data?.['root-cert.pem']).toBe(x509.certToPem(rootDer));
      },
      { timeoutMs: 15_000, what: 'root ConfigMap follows the plug-in root' },
    );
  });
});

describe('istiod xDS in the lab (issue #6)', () => {
  it('streams workloads to a delta-ADS client and flips them to HBONE when captured', async () => {
    const seen = new Map<string, Address>();
    const client = new XdsClient({
      address: `127.0.0.1:${istiod.ports.xdsPlaintext}`,
      credentials: credentials.createInsecure(),
      node: Node.fromPartial({
        id: 'ztunnel~10.0.0.9~ztunnel-a.istio-system~istio-system.svc.cluster.local',
      }),
      subscriptions: [
        subscription(ADDRESS_TYPE_URL, Address, (added, removed) => {
          for (const [k, v] of added) seen.set(k, v);
          for (const k of removed) seen.delete(k);
        }),
      ],
      logger,
    });
    client.start();
    try {
      const uid = 'Kubernetes//Pod/bookinfo/productpage-1';
      await core
        .patchNamespacedPodStatus(
          {
            namespace: 'bookinfo',
            name: 'productpage-1',
            body: { status: { phase: 'Running', podIP: '10.244.1.5', podIPs: [{ ip: '10.244.1.5' }] } },
          },
          undefined,
        )
        .catch(async () => {
          const p = await core.readNamespacedPod({ namespace: 'bookinfo', name: 'productpage-1' });
          p.status = { ...p.status, phase: 'Running', podIP: '10.244.1.5', podIPs: [{ ip: '10.244.1.5' }] };
          await core.replaceNamespacedPodStatus({ namespace: 'bookinfo', name: 'productpage-1', body: p });
        });
      const workload = () => {
        const a = seen.get(uid);
        return a?.type?.$case === 'workload' ? a.type.value : null;
      };
      await eventually(() => expect(workload()?.tunnelProtocol).toBe(0), {
        timeoutMs: 15_000,
        what: 'workload in xDS',
      });
      expect(workload()).toMatchObject({
        name: 'productpage-1',
        namespace: 'bookinfo',
        serviceAccount: 'bookinfo-productpage',
        node: 'node-a',
      });
      await core
        .patchNamespacedPod(
          {
            namespace: 'bookinfo',
            name: 'productpage-1',
            body: { metadata: { annotations: { 'ambient.istio.io/redirection': 'enabled' } } },
          },
          undefined,
        )
        .catch(async () => {
          const p = await core.readNamespacedPod({ namespace: 'bookinfo', name: 'productpage-1' });
          p.metadata!.annotations = { ...p.metadata!.annotations, 'ambient.istio.io/redirection': 'enabled' };
          await core.replaceNamespacedPod({ namespace: 'bookinfo', name: 'productpage-1', body: p });
        });
      await eventually(() => expect(workload()?.tunnelProtocol).toBe(1), {
        timeoutMs: 15_000,
        what: 'HBONE after capture',
      });
      const syncz = (await (
        await fetch(`http://127.0.0.1:${istiod.ports.http}/debug/syncz`)
      ).json()) as unknown;
      expect(JSON.stringify(syncz)).toContain('ztunnel-a.istio-system');
      await core.deleteNamespacedPod({ namespace: 'bookinfo', name: 'productpage-1', gracePeriodSeconds: 0 });
      await eventually(() => expect(seen.has(uid)).toBe(false), {
        timeoutMs: 15_000,
        what: 'workload removed',
      });
    } finally {
      client.close();
    }
  });
});
