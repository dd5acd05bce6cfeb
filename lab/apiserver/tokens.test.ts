/**
 * TokenRequest → TokenReview round trips, bound tokens, and ServiceAccount tokens as API credentials
 * (authentication, then RBAC authorization).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Lab, startLab } from './testkit.ts';

interface Review {
  status: {
    authenticated?: boolean;
    error?: string;
    audiences?: string[];
    user?: { username?: string; uid?: string; groups?: string[]; extra?: Record<string, string[]> };
  };
}

describe('ServiceAccount tokens', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await startLab({ minTokenExpirationSeconds: 1 });
    await lab.req('POST', '/api/v1/namespaces', { metadata: { name: 'mesh' } });
    const sa = await lab.req('POST', '/api/v1/namespaces/mesh/serviceaccounts', {
      metadata: { name: 'ztunnel' },
    });
    expect(sa.status).toBe(201);
  });

  afterAll(async () => {
    await lab?.close();
  });

  async function token(body: Record<string, unknown>, sa = 'ztunnel'): Promise<string> {
    const r = await lab.req('POST', `/api/v1/namespaces/mesh/serviceaccounts/${sa}/token`, {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenRequest',
      spec: body,
    });
    expect(r.status, r.text).toBe(201);
    const tr = r.json as { status: { token: string; expirationTimestamp: string } };
    expect(Date.parse(tr.status.expirationTimestamp)).toBeGreaterThan(Date.now());
    return tr.status.token;
  }

  async function review(tokenValue: string, audiences?: string[]): Promise<Review> {
    const r = await lab.req('POST', '/apis/authentication.k8s.io/v1/tokenreviews', {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenReview',
      spec: { token: tokenValue, ...(audiences ? { audiences } : {}) },
    });
    expect(r.status, r.text).toBe(201);
    return r.json as Review;
  }

  it.each([
    { name: 'matching audience', tokenAud: ['istio-ca'], reviewAud: ['istio-ca'], ok: true },
    { name: 'one of several audiences', tokenAud: ['a', 'istio-ca'], reviewAud: ['istio-ca', 'b'], ok: true },
    { name: 'audience mismatch', tokenAud: ['istio-ca'], reviewAud: ['other'], ok: false },
    { name: 'default API audience', tokenAud: undefined, reviewAud: undefined, ok: true },
    {
      name: 'API audience expected but not in the token',
      tokenAud: ['istio-ca'],
      reviewAud: undefined,
      ok: false,
    },
  ])('TokenReview: $name', async ({ tokenAud, reviewAud, ok }) => {
    const t = await token(tokenAud ? { audiences: tokenAud } : {});
    const r = await review(t, reviewAud);
    expect(r.status.authenticated ?? false).toBe(ok);
    if (ok) {
      expect(r.status.user?.username).toBe('system:serviceaccount:mesh:ztunnel');
      expect(r.status.user?.groups).toEqual([
        'system:serviceaccounts',
        'system:serviceaccounts:mesh',
        'system:authenticated',
      ]);
      expect(r.status.audiences?.length).toBeGreaterThan(0);
    } else {
      expect(r.status.error).toMatch(/audience/);
    }
  });

  it('rejects garbage, expired tokens and tokens of a deleted service account', async () => {
    expect((await review('not-a-token')).status.authenticated ?? false).toBe(false);
    const short = await token({ audiences: ['istio-ca'], expirationSeconds: 1 });
    expect((await review(short, ['istio-ca'])).status.authenticated).toBe(true);
    await new Promise((r) => setTimeout(r, 2100));
    const expired = await review(short, ['istio-ca']);
    expect(expired.status.authenticated ?? false).toBe(false);
    expect(expired.status.error).toMatch(/expired/);
    await lab.req('POST', '/api/v1/namespaces/mesh/serviceaccounts', { metadata: { name: 'temp' } });
    const t = await token({ audiences: ['x'] }, 'temp');
    await lab.req('DELETE', '/api/v1/namespaces/mesh/serviceaccounts/temp');
    expect((await review(t, ['x'])).status.authenticated ?? false).toBe(false);
  });

  it('enforces the minimum lifetime and a missing service account', async () => {
    const strict = await startLab();
    try {
      await strict.req('POST', '/api/v1/namespaces/default/serviceaccounts', { metadata: { name: 'sa' } });
      const r = await strict.req('POST', '/api/v1/namespaces/default/serviceaccounts/sa/token', {
        spec: { expirationSeconds: 60 },
      });
      expect(r.status).toBe(422);
      expect(JSON.stringify(r.json)).toContain('spec.expirationSeconds');
      const missing = await strict.req('POST', '/api/v1/namespaces/default/serviceaccounts/nope/token', {
        spec: {},
      });
      expect(missing.status).toBe(404);
    } finally {
      await strict.close();
    }
  });

  it('a token bound to a pod carries the pod in extra and dies with the pod', async () => {
    const pod = await lab.req('POST', '/api/v1/namespaces/mesh/pods', {
      metadata: { name: 'zt-1' },
      spec: { serviceAccountName: 'ztunnel', containers: [{ name: 'z', image: 'ztunnel' }] },
    });
    expect(pod.status, pod.text).toBe(201);
    const uid = (pod.json as { metadata: { uid: string } }).metadata.uid;
    const wrongUid = await lab.req('POST', '/api/v1/namespaces/mesh/serviceaccounts/ztunnel/token', {
      spec: { boundObjectRef: { kind: 'Pod', apiVersion: 'v1', name: 'zt-1', uid: 'nope' } },
    });
    expect(wrongUid.status).toBe(409);
    const t = await token({
      audiences: ['istio-ca'],
      boundObjectRef: { kind: 'Pod', apiVersion: 'v1', name: 'zt-1', uid },
    });
    const ok = await review(t, ['istio-ca']);
    expect(ok.status.authenticated).toBe(true);
    expect(ok.status.user?.extra?.['authentication.kubernetes.io/pod-name']).toEqual(['zt-1']);
    expect(ok.status.user?.extra?.['authentication.kubernetes.io/pod-uid']).toEqual([uid]);
    const del = await lab.req('DELETE', '/api/v1/namespaces/mesh/pods/zt-1');
    expect(del.status).toBe(200);
    const after = await review(t, ['istio-ca']);
    expect(after.status.authenticated ?? false).toBe(false);
    // A new pod with the same name has a new uid: the old token stays invalid.
    await lab.req('POST', '/api/v1/namespaces/mesh/pods', {
      metadata: { name: 'zt-1' },
      spec: { serviceAccountName: 'ztunnel', containers: [{ name: 'z', image: 'ztunnel' }] },
    });
    expect((await review(t, ['istio-ca'])).status.authenticated ?? false).toBe(false);
  });

  it('authenticates API requests with SA tokens, authorizes them with RBAC, rejects anonymous ones', async () => {
    const t = await token({});
    const asSa = { authorization: `Bearer ${t}` };
    expect(
      (await lab.req('GET', '/api/v1/namespaces/mesh/pods', undefined, { authorization: '' })).status,
    ).toBe(401);
    expect(
      (await lab.req('GET', '/api/v1/namespaces/mesh/pods', undefined, { authorization: 'Bearer wrong' }))
        .status,
    ).toBe(401);
    expect((await lab.req('GET', '/healthz', undefined, { authorization: '' })).status).toBe(200);
    expect((await lab.req('GET', '/readyz', undefined, { authorization: '' })).text).toBe('ok');
    expect((await lab.req('GET', '/api', undefined, asSa)).status).toBe(200);
    const denied = await lab.req('GET', '/api/v1/namespaces/mesh/pods', undefined, asSa);
    expect(denied.status).toBe(403);
    expect((denied.json as { message: string }).message).toBe(
      'pods is forbidden: User "system:serviceaccount:mesh:ztunnel" cannot list resource "pods" in API group "" in the namespace "mesh"',
    );
    await lab.req('POST', '/apis/rbac.authorization.k8s.io/v1/clusterroles', {
      metadata: { name: 'pod-reader' },
      rules: [{ apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch'] }],
    });
    await lab.req('POST', '/apis/rbac.authorization.k8s.io/v1/namespaces/mesh/rolebindings', {
      metadata: { name: 'zt' },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'pod-reader' },
      subjects: [{ kind: 'ServiceAccount', name: 'ztunnel', namespace: 'mesh' }],
    });
    expect((await lab.req('GET', '/api/v1/namespaces/mesh/pods', undefined, asSa)).status).toBe(200);
    expect((await lab.req('GET', '/api/v1/namespaces/default/pods', undefined, asSa)).status).toBe(403);
    expect((await lab.req('DELETE', '/api/v1/namespaces/mesh/pods/zt-1', undefined, asSa)).status).toBe(403);
    // Client certificates from the lab CA work too (CN = user, O = groups).
    const cert = lab.api.issueClientCert('alice', ['system:masters']);
    const { request } = await import('node:https');
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(
        new URL('/api/v1/namespaces', lab.api.url),
        { ca: lab.api.caPem, cert: cert.certPem, key: cert.keyPem },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(200);
  });
});
