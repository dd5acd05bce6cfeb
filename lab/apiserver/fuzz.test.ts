/**
 * Robustness: a few thousand malformed requests (random methods, paths, bodies, headers; a fixed seed so
 * failures reproduce) must each get a 4xx Status (never a 5xx), and the server must stay healthy.
 */
import { Agent, request } from 'node:https';
import { connect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Lab, startLab } from './testkit.ts';

const SEED = 0x5eed1234;
const REQUESTS = 3000;
const CONCURRENCY = 16;
const RAW_GARBAGE = 40;

/** mulberry32: a tiny deterministic PRNG. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'];
const PATHS = [
  '/api',
  '/apis',
  '/api/v1',
  '/apis/apps',
  '/apis/apps/v1',
  '/api/v2',
  '/apis/apps/v9',
  '/version',
  '/openapi/v3',
  '/openapi/v3/apis/apps/v1',
  '/openapi/v2',
  '/api/v1/namespaces',
  '/api/v1/namespaces/fz',
  '/api/v1/namespaces/fz/status',
  '/api/v1/namespaces/fz/finalize',
  '/api/v1/namespaces/fz/pods',
  '/api/v1/namespaces/fz/pods/p',
  '/api/v1/namespaces/fz/pods/p/status',
  '/api/v1/namespaces/fz/pods/p/binding',
  '/api/v1/namespaces/fz/serviceaccounts/default/token',
  '/api/v1/namespaces/fz/services/s',
  '/api/v1/nodes/n',
  '/api/v1/nodes/n/status',
  '/apis/apps/v1/namespaces/fz/deployments/d',
  '/apis/apps/v1/namespaces/fz/deployments/d/scale',
  '/apis/apps/v1/namespaces/fz/replicasets',
  '/apis/discovery.k8s.io/v1/namespaces/fz/endpointslices',
  '/apis/authentication.k8s.io/v1/tokenreviews',
  '/apis/apiextensions.k8s.io/v1/customresourcedefinitions',
  '/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x.example.com',
  '/apis/rbac.authorization.k8s.io/v1/clusterroles',
  '/apis/coordination.k8s.io/v1/namespaces/fz/leases/l',
  '/api/v1/namespaces/fz/configmaps/c',
  '/api/v1/namespaces/fz/secrets',
  '/api/v1/namespaces/fz/events',
  '/api/v1/pods',
  '/api/v1/namespaces//pods',
  '/api/v1/namespaces/fz/pods/p/status/extra/more',
  '/%zz',
  '/api/v1/namespaces/%2F/pods',
  '/apis/./v1/..',
];
const QUERIES = [
  '',
  '?labelSelector=a%3Db',
  '?labelSelector=%28%28',
  '?labelSelector=a+in+%28b',
  '?fieldSelector=x',
  '?fieldSelector=metadata.name%3D',
  '?limit=-1',
  '?limit=abc',
  '?continue=%%%',
  '?continue=eyJ9',
  '?watch=true&timeoutSeconds=1',
  '?watch=1&resourceVersion=abc&timeoutSeconds=1',
  '?watch=true&resourceVersion=1&timeoutSeconds=1',
  '?dryRun=All',
  '?dryRun=Nope',
  '?propagationPolicy=Sideways',
  '?gracePeriodSeconds=-5',
  '?resourceVersion=999999999',
  '?includeObject=Nonsense',
];
const CONTENT_TYPES = [
  'application/json',
  'application/yaml',
  'application/merge-patch+json',
  'application/json-patch+json',
  'application/strategic-merge-patch+json',
  'application/apply-patch+yaml',
  'application/vnd.kubernetes.protobuf',
  'text/plain',
  '',
  'application/json; charset=utf-8',
  '*/*',
  'multipart/form-data; boundary=x',
];
const ACCEPTS = [
  'application/json',
  'application/yaml',
  'application/json;as=Table;v=v1;g=meta.k8s.io',
  'application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io',
  'application/vnd.kubernetes.protobuf',
  'text/html',
  '*/*',
  '',
  'application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList',
  ';;;,,,',
];

function pick<T>(r: () => number, xs: readonly T[]): T {
  return xs[Math.floor(r() * xs.length)] as T;
}

function randomValue(r: () => number, depth: number): unknown {
  const k = r();
  if (depth > 3 || k < 0.25)
    return pick(r, [null, true, false, 0, -1, 1.5, 2 ** 53, '', 'x', 'ÿ', '../..', 'a'.repeat(300)]);
  if (k < 0.5) return Array.from({ length: Math.floor(r() * 4) }, () => randomValue(r, depth + 1));
  const o: Record<string, unknown> = {};
  const keys = [
    'apiVersion',
    'kind',
    'metadata',
    'spec',
    'status',
    'name',
    'namespace',
    'labels',
    'containers',
    'ports',
    'image',
    'selector',
    'template',
    'data',
    'finalizers',
    'ownerReferences',
    '$patch',
    '$retainKeys',
    'op',
    'path',
    'value',
    'versions',
    'names',
    'token',
    'audiences',
    'target',
  ];
  for (let i = 0; i < 1 + Math.floor(r() * 5); i++) o[pick(r, keys)] = randomValue(r, depth + 1);
  return o;
}

function randomBody(r: () => number): string | undefined {
  const k = r();
  if (k < 0.15) return undefined;
  if (k < 0.3) return JSON.stringify(randomValue(r, 0)).slice(0, Math.floor(r() * 200));
  if (k < 0.4) return Buffer.from(Array.from({ length: 64 }, () => Math.floor(r() * 256))).toString('latin1');
  if (k < 0.5) return 'metadata:\n  name: [\n  - {{\n';
  if (k < 0.6)
    return JSON.stringify([
      {
        op: pick(r, ['add', 'remove', 'replace', 'move', 'copy', 'test', 'zap']),
        path: pick(r, ['/metadata/name', '/spec/x/-', '', '/a~2b', 'nope']),
        value: randomValue(r, 2),
        from: '/metadata',
      },
    ]);
  if (k < 0.75) {
    const base = {
      apiVersion: pick(r, ['v1', 'apps/v1', 'x/y', 7]),
      kind: pick(r, [
        'Pod',
        'Deployment',
        'ConfigMap',
        'Namespace',
        'Node',
        'TokenReview',
        'Binding',
        'Scale',
        'TokenRequest',
        'CustomResourceDefinition',
      ]),
      metadata: {
        name: pick(r, ['p', 'd', 'c', 'fz', 'n', 'Bad Name', '', 'x'.repeat(300)]),
        labels: randomValue(r, 2),
      },
    };
    return JSON.stringify({ ...base, ...(randomValue(r, 1) as object) });
  }
  return JSON.stringify(randomValue(r, 0));
}

describe('fuzzing with malformed requests', () => {
  let lab: Lab;
  beforeAll(async () => {
    lab = await startLab({ controllers: true, maxBodyBytes: 256 * 1024 });
    await lab.req('POST', '/api/v1/namespaces', { metadata: { name: 'fz' } });
  });
  afterAll(async () => {
    await lab?.close();
  });

  it(`answers ${REQUESTS} random requests with no 5xx and stays healthy`, async () => {
    const r = prng(SEED);
    const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY, ca: lab.api.caPem });
    const plan = Array.from({ length: REQUESTS }, () => {
      const headers: Record<string, string> = {};
      const auth = r();
      if (auth < 0.9) headers.authorization = `Bearer ${lab.api.adminToken}`;
      else if (auth < 0.95) headers.authorization = 'Bearer eyJhbGciOiJub25lIn0.e30.';
      const ct = pick(r, CONTENT_TYPES);
      if (ct) headers['content-type'] = ct;
      const accept = pick(r, ACCEPTS);
      if (accept) headers.accept = accept;
      if (r() < 0.05) headers['x-junk'] = 'y'.repeat(Math.floor(r() * 2000));
      return {
        method: pick(r, METHODS),
        path: pick(r, PATHS) + pick(r, QUERIES),
        headers,
        body: randomBody(r),
      };
    });
    const failures: string[] = [];
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < plan.length) {
        const p = plan[next++] as (typeof plan)[number];
        const status = await new Promise<number>((resolve) => {
          const req = request(
            new URL(p.path, lab.api.url),
            { method: p.method, headers: p.headers, agent, timeout: 5_000 },
            (res) => {
              // A watch that was accepted streams until its timeout; its status line is all we need.
              if (res.statusCode === 200 && p.path.includes('watch=')) {
                res.destroy();
                resolve(200);
                return;
              }
              res.resume();
              res.on('end', () => resolve(res.statusCode ?? 0));
              res.on('error', () => resolve(-1));
            },
          );
          req.on('timeout', () => req.destroy());
          req.on('error', () => resolve(-1));
          req.end(p.body);
        });
        if (status >= 500 || status === -1)
          failures.push(
            `${status} ${p.method} ${p.path} ${p.headers['content-type'] ?? ''} ${String(p.body).slice(0, 80)}`,
          );
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    agent.destroy();
    // Garbage on the wire: the HTTP parser rejects it and the server keeps serving.
    for (let i = 0; i < RAW_GARBAGE; i++) {
      await new Promise<void>((resolve) => {
        const s = connect(
          { host: '127.0.0.1', port: lab.api.port, ca: lab.api.caPem, servername: 'localhost' },
          () => {
            s.end(
              i % 2 === 0
                ? `GARBAGE /\u0000 HTTP/9.9\r\n\r\n`
                : Buffer.from(Array.from({ length: 100 }, () => Math.floor(r() * 256))),
            );
          },
        );
        s.on('data', () => {});
        s.on('error', () => resolve());
        s.on('close', () => resolve());
        s.setTimeout(2000, () => s.destroy());
      });
    }
    expect(failures.slice(0, 20)).toEqual([]);
    expect((await lab.req('GET', '/readyz')).text).toBe('ok');
    const list = await lab.req('GET', '/api/v1/namespaces');
    expect(list.status).toBe(200);
    expect((list.json as { items: unknown[] }).items.length).toBeGreaterThan(3);
    expect(
      (await lab.req('POST', '/api/v1/namespaces/default/configmaps', { metadata: { name: 'after-fuzz' } }))
        .status,
    ).toBe(201);
  }, 60_000);
});
