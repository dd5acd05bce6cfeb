/**
 * REST semantics over HTTP: Status errors, validation, selectors, paging, patches, finalizers, generation,
 * subresources, allocation, watches and dry runs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Lab, startLab } from './testkit.ts';

const POD = { apiVersion: 'v1', kind: 'Pod', spec: { containers: [{ name: 'app', image: 'app:1' }] } };

function pod(
  name: string,
  labels: Record<string, string> = {},
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return { ...POD, metadata: { name, labels }, ...extra };
}

interface StatusBody {
  kind: string;
  code: number;
  reason: string;
  message: string;
  details?: {
    name?: string;
    kind?: string;
    group?: string;
    causes?: Array<{ field: string; reason: string }>;
  };
}

describe('lab API server semantics', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await startLab({
      maxBodyBytes: 64 * 1024,
      bookmarkIntervalMs: 100,
      serviceCidr: '10.50.0.0/24',
      nodePortRange: '31000-31002',
    });
    expect((await lab.req('POST', '/api/v1/namespaces', { metadata: { name: 't' } })).status).toBe(201);
  });

  afterAll(async () => {
    await lab?.close();
  });

  describe('errors are Status objects with Kubernetes codes and reasons', () => {
    const big = 'x'.repeat(100 * 1024);
    const cases: Array<{
      name: string;
      method: string;
      path: string;
      body?: unknown;
      headers?: Record<string, string>;
      code: number;
      reason: string;
      field?: string;
      message?: RegExp;
    }> = [
      {
        name: 'invalid JSON',
        method: 'POST',
        path: '/api/v1/namespaces/t/pods',
        body: '{"metadata":',
        code: 400,
        reason: 'BadRequest',
      },
      {
        name: 'invalid YAML',
        method: 'POST',
        path: '/api/v1/namespaces/t/pods',
        body: 'metadata: [unclosed',
        headers: { 'content-type': 'application/yaml' },
        code: 400,
        reason: 'BadRequest',
      },
      {
        name: 'a JSON array body',
        method: 'POST',
        path: '/api/v1/namespaces/t/configmaps',
        body: '[1,2]',
        code: 400,
        reason: 'BadRequest',
      },
      { name: 'unknown resource', method: 'GET', path: '/api/v1/widgets', code: 404, reason: 'NotFound' },
      {
        name: 'unknown group',
        method: 'GET',
        path: '/apis/nope.example.com/v1/things',
        code: 404,
        reason: 'NotFound',
      },
      {
        name: 'unserved version',
        method: 'GET',
        path: '/apis/apps/v1beta2/deployments',
        code: 404,
        reason: 'NotFound',
      },
      {
        name: 'wrong apiVersion in the body',
        method: 'POST',
        path: '/api/v1/namespaces/t/pods',
        body: { ...pod('p'), apiVersion: 'apps/v1' },
        code: 400,
        reason: 'BadRequest',
        message: /does not match the expected API version/,
      },
      {
        name: 'wrong kind in the body',
        method: 'POST',
        path: '/api/v1/namespaces/t/pods',
        body: { ...pod('p'), kind: 'Service' },
        code: 400,
        reason: 'BadRequest',
      },
      {
        name: 'oversize body',
        method: 'POST',
        path: '/api/v1/namespaces/t/configmaps',
        body: { metadata: { name: 'big' }, data: { a: big } },
        code: 413,
        reason: 'RequestEntityTooLarge',
      },
      {
        name: 'unsupported media type',
        method: 'POST',
        path: '/api/v1/namespaces/t/configmaps',
        body: 'a=b',
        headers: { 'content-type': 'text/plain' },
        code: 415,
        reason: 'UnsupportedMediaType',
      },
      {
        name: 'unsupported patch type',
        method: 'PATCH',
        path: '/api/v1/namespaces/t/configmaps/x',
        body: '{}',
        headers: { 'content-type': 'application/json' },
        code: 415,
        reason: 'UnsupportedMediaType',
      },
      {
        name: 'method not allowed',
        method: 'PUT',
        path: '/api/v1/namespaces/t/configmaps',
        body: '{}',
        code: 405,
        reason: 'MethodNotAllowed',
      },
      {
        name: 'get of a missing object',
        method: 'GET',
        path: '/apis/apps/v1/namespaces/t/deployments/nope',
        code: 404,
        reason: 'NotFound',
        message: /^deployments.apps "nope" not found$/,
      },
      {
        name: 'missing namespace',
        method: 'POST',
        path: '/api/v1/namespaces/ghost/configmaps',
        body: { metadata: { name: 'c' } },
        code: 404,
        reason: 'NotFound',
        message: /namespaces "ghost" not found/,
      },
      {
        name: 'pod without containers',
        method: 'POST',
        path: '/api/v1/namespaces/t/pods',
        body: { metadata: { name: 'p' }, spec: {} },
        code: 422,
        reason: 'Invalid',
        field: 'spec.containers',
      },
      {
        name: 'container without image',
        method: 'POST',
        path: '/api/v1/namespaces/t/pods',
        body: { metadata: { name: 'p' }, spec: { containers: [{ name: 'c' }] } },
        code: 422,
        reason: 'Invalid',
        field: 'spec.containers[0].image',
      },
      {
        name: 'name not DNS-1123',
        method: 'POST',
        path: '/api/v1/namespaces/t/configmaps',
        body: { metadata: { name: 'Bad_Name' } },
        code: 422,
        reason: 'Invalid',
        field: 'metadata.name',
      },
      {
        name: 'no name',
        method: 'POST',
        path: '/api/v1/namespaces/t/configmaps',
        body: { metadata: {} },
        code: 422,
        reason: 'Invalid',
        field: 'metadata.name',
      },
      {
        name: 'service port out of range',
        method: 'POST',
        path: '/api/v1/namespaces/t/services',
        body: { metadata: { name: 's' }, spec: { ports: [{ port: 70000 }] } },
        code: 422,
        reason: 'Invalid',
        field: 'spec.ports[0].port',
      },
      {
        name: 'selector does not match the template',
        method: 'POST',
        path: '/apis/apps/v1/namespaces/t/deployments',
        body: {
          metadata: { name: 'd' },
          spec: {
            selector: { matchLabels: { a: 'b' } },
            template: { metadata: { labels: { a: 'c' } }, spec: POD.spec },
          },
        },
        code: 422,
        reason: 'Invalid',
        field: 'spec.template.metadata.labels',
      },
      {
        name: 'wrongly typed field',
        method: 'POST',
        path: '/apis/apps/v1/namespaces/t/deployments',
        body: {
          metadata: { name: 'd' },
          spec: {
            replicas: 'three',
            selector: { matchLabels: { a: 'b' } },
            template: { metadata: { labels: { a: 'b' } }, spec: POD.spec },
          },
        },
        code: 422,
        reason: 'Invalid',
        field: 'spec.replicas',
      },
      {
        name: 'bad label selector',
        method: 'GET',
        path: '/api/v1/pods?labelSelector=a%20in%20(',
        code: 400,
        reason: 'BadRequest',
      },
      {
        name: 'unsupported field selector',
        method: 'GET',
        path: '/api/v1/pods?fieldSelector=spec.bogus%3Dx',
        code: 400,
        reason: 'BadRequest',
        message: /field label not supported/,
      },
      {
        name: 'deep nesting',
        method: 'POST',
        path: '/api/v1/namespaces/t/configmaps',
        body: `${'['.repeat(500)}${']'.repeat(500)}`,
        code: 400,
        reason: 'BadRequest',
      },
    ];
    it.each(cases)('$name → $code $reason', async (c) => {
      const r = await lab.req(c.method, c.path, c.body, c.headers);
      expect(r.status, r.text).toBe(c.code);
      const s = r.json as StatusBody;
      expect(s.kind).toBe('Status');
      expect(s.code).toBe(c.code);
      expect(s.reason).toBe(c.reason);
      if (c.field) expect(s.details?.causes?.map((x) => x.field)).toContain(c.field);
      if (c.message) expect(s.message).toMatch(c.message);
    });

    it('409 AlreadyExists and 409 Conflict on a stale resourceVersion', async () => {
      expect(
        (await lab.req('POST', '/api/v1/namespaces/t/configmaps', { metadata: { name: 'dup' } })).status,
      ).toBe(201);
      const again = await lab.req('POST', '/api/v1/namespaces/t/configmaps', { metadata: { name: 'dup' } });
      expect(again.status).toBe(409);
      expect((again.json as StatusBody).reason).toBe('AlreadyExists');
      const cur = (await lab.req('GET', '/api/v1/namespaces/t/configmaps/dup')).json as {
        metadata: { resourceVersion: string };
      };
      expect(
        (
          await lab.req('PUT', '/api/v1/namespaces/t/configmaps/dup', {
            metadata: { name: 'dup', resourceVersion: cur.metadata.resourceVersion },
            data: { a: '1' },
          })
        ).status,
      ).toBe(200);
      const stale = await lab.req('PUT', '/api/v1/namespaces/t/configmaps/dup', {
        metadata: { name: 'dup', resourceVersion: cur.metadata.resourceVersion },
        data: { a: '2' },
      });
      expect(stale.status).toBe(409);
      expect((stale.json as StatusBody).reason).toBe('Conflict');
      expect((stale.json as StatusBody).message).toContain('the object has been modified');
    });

    it('accepts YAML bodies and answers YAML when asked', async () => {
      const r = await lab.req(
        'POST',
        '/api/v1/namespaces/t/configmaps',
        'metadata:\n  name: from-yaml\ndata:\n  k: v\n',
        { 'content-type': 'application/yaml', accept: 'application/yaml' },
      );
      expect(r.status).toBe(201);
      expect(r.headers['content-type']).toBe('application/yaml');
      expect(r.text).toContain('name: from-yaml');
    });
  });

  it('lists with label and field selectors, limit and continue', async () => {
    for (const [name, labels] of [
      ['a', { app: 'x', tier: 'web' }],
      ['b', { app: 'y', tier: 'web' }],
      ['c', { app: 'z' }],
    ] as const) {
      expect((await lab.req('POST', '/api/v1/namespaces/t/pods', pod(name, labels))).status).toBe(201);
    }
    const names = async (q: string) =>
      (
        (await lab.req('GET', `/api/v1/namespaces/t/pods?${q}`)).json as {
          items: Array<{ metadata: { name: string } }>;
        }
      ).items.map((i) => i.metadata.name);
    const table: Array<[string, string[]]> = [
      ['labelSelector=app%3Dx', ['a']],
      ['labelSelector=app%3D%3Dy', ['b']],
      ['labelSelector=app!%3Dx', ['b', 'c']],
      ['labelSelector=app%20in%20(x,z)', ['a', 'c']],
      ['labelSelector=app%20notin%20(x,z)', ['b']],
      ['labelSelector=tier', ['a', 'b']],
      ['labelSelector=!tier', ['c']],
      ['labelSelector=tier%3Dweb,app!%3Dx', ['b']],
      ['fieldSelector=metadata.name%3Db', ['b']],
      ['fieldSelector=metadata.name!%3Db', ['a', 'c']],
      ['fieldSelector=status.phase%3DPending', ['a', 'b', 'c']],
      ['fieldSelector=spec.nodeName%3D', ['a', 'b', 'c']],
      ['fieldSelector=spec.nodeName%3Dnode-1', []],
    ];
    for (const [q, want] of table) expect(await names(q), q).toEqual(want);
    const page1 = (await lab.req('GET', '/api/v1/namespaces/t/pods?limit=2')).json as {
      items: unknown[];
      metadata: { continue: string; remainingItemCount: number; resourceVersion: string };
    };
    expect(page1.items.length).toBe(2);
    expect(page1.metadata.remainingItemCount).toBe(1);
    const page2 = (
      await lab.req(
        'GET',
        `/api/v1/namespaces/t/pods?limit=2&continue=${encodeURIComponent(page1.metadata.continue)}`,
      )
    ).json as {
      items: Array<{ metadata: { name: string } }>;
      metadata: { continue?: string; resourceVersion: string };
    };
    expect(page2.items.map((i) => i.metadata.name)).toEqual(['c']);
    expect(page2.metadata.continue).toBeUndefined();
    expect(page2.metadata.resourceVersion).toBe(page1.metadata.resourceVersion);
    expect((await lab.req('GET', '/api/v1/namespaces/t/pods?continue=garbage')).status).toBe(400);
    // Secrets by type, events by involved object.
    await lab.req('POST', '/api/v1/namespaces/t/secrets', {
      metadata: { name: 'tls' },
      type: 'kubernetes.io/tls',
      data: { 'tls.crt': 'eA==', 'tls.key': 'eA==' },
    });
    await lab.req('POST', '/api/v1/namespaces/t/secrets', {
      metadata: { name: 'plain' },
      stringData: { a: 'b' },
    });
    const secrets = (
      await lab.req('GET', '/api/v1/namespaces/t/secrets?fieldSelector=type%3Dkubernetes.io/tls')
    ).json as { items: Array<{ metadata: { name: string } }> };
    expect(secrets.items.map((i) => i.metadata.name)).toEqual(['tls']);
    const plain = (await lab.req('GET', '/api/v1/namespaces/t/secrets/plain')).json as {
      data: Record<string, string>;
      type: string;
      stringData?: unknown;
    };
    expect(plain).toMatchObject({ data: { a: 'Yg==' }, type: 'Opaque' });
    expect(plain.stringData).toBeUndefined();
  });

  it('applies merge, JSON and strategic merge patches, and server-side apply', async () => {
    const template = (containers: unknown[]) => ({
      metadata: { labels: { app: 'p' } },
      spec: { containers },
    });
    const d = await lab.req('POST', '/apis/apps/v1/namespaces/t/deployments', {
      metadata: { name: 'smp', labels: { a: '1' } },
      spec: {
        selector: { matchLabels: { app: 'p' } },
        template: template([
          {
            name: 'app',
            image: 'app:1',
            env: [
              { name: 'X', value: '1' },
              { name: 'Y', value: '2' },
            ],
            ports: [{ containerPort: 80 }],
          },
          { name: 'side', image: 'side:1' },
        ]),
      },
    });
    expect(d.status, d.text).toBe(201);
    const dpatch = (type: string, body: unknown) =>
      lab.req('PATCH', '/apis/apps/v1/namespaces/t/deployments/smp', body, { 'content-type': type });
    expect(
      (await dpatch('application/merge-patch+json', { metadata: { labels: { a: null, b: '2' } } })).status,
    ).toBe(200);
    const smp = await dpatch('application/strategic-merge-patch+json', {
      spec: {
        template: {
          spec: {
            containers: [
              {
                name: 'app',
                image: 'app:2',
                env: [
                  { name: 'Y', value: '3' },
                  { name: 'X', $patch: 'delete' },
                ],
                ports: [{ containerPort: 81 }],
              },
            ],
          },
        },
      },
    });
    expect(smp.status, smp.text).toBe(200);
    const dp = smp.json as {
      metadata: { labels: Record<string, string> };
      spec: {
        template: {
          spec: {
            containers: Array<{
              name: string;
              image: string;
              env?: unknown[];
              ports?: Array<{ containerPort: number }>;
            }>;
          };
        };
      };
    };
    expect(dp.metadata.labels).toEqual({ b: '2' });
    const cs = dp.spec.template.spec.containers;
    expect(cs.map((c) => `${c.name}=${c.image}`)).toEqual(['app=app:2', 'side=side:1']);
    expect(cs[0]?.env).toEqual([{ name: 'Y', value: '3' }]);
    expect(cs[0]?.ports?.map((p) => p.containerPort)).toEqual([80, 81]);
    const replace = await dpatch('application/strategic-merge-patch+json', {
      spec: {
        template: { spec: { containers: [{ $patch: 'replace' }, { name: 'only', image: 'only:1' }] } },
      },
    });
    expect((replace.json as typeof dp).spec.template.spec.containers.map((c) => c.name)).toEqual(['only']);
    await lab.req('POST', '/api/v1/namespaces/t/pods', { ...POD, metadata: { name: 'patched' } });
    const patch = (type: string, body: unknown, sub = '') =>
      lab.req('PATCH', `/api/v1/namespaces/t/pods/patched${sub}`, body, { 'content-type': type });
    expect(
      (
        await patch('application/strategic-merge-patch+json', {
          spec: { containers: [{ name: 'app', image: 'app:9' }] },
        })
      ).status,
    ).toBe(200);
    const jp = await patch('application/json-patch+json', [
      { op: 'add', path: '/metadata/annotations', value: { k: 'v' } },
      { op: 'replace', path: '/spec/containers/0/image', value: 'app:10' },
    ]);
    expect(jp.status, jp.text).toBe(200);
    const failed = await patch('application/json-patch+json', [
      { op: 'test', path: '/metadata/name', value: 'other' },
    ]);
    expect(failed.status).toBe(422);
    // Changing anything but images in a pod spec is refused, like kube-apiserver does.
    const forbidden = await patch('application/merge-patch+json', { spec: { restartPolicy: 'Never' } });
    expect(forbidden.status).toBe(422);
    // Server-side apply: creates, then merges without removing fields it does not mention.
    const apply = (body: string) =>
      lab.req('PATCH', '/api/v1/namespaces/t/configmaps/ssa?fieldManager=test', body, {
        'content-type': 'application/apply-patch+yaml',
      });
    expect(
      (await apply('apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {a: "1"}\n')).status,
    ).toBe(201);
    const second = await apply('apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {b: "2"}\n');
    expect((second.json as { data: unknown }).data).toEqual({ a: '1', b: '2' });
  });

  it('finalizers keep an object until they are removed; generation counts spec changes only', async () => {
    await lab.req('POST', '/api/v1/namespaces/t/configmaps', {
      metadata: { name: 'held', finalizers: ['example.com/hold'] },
    });
    const del = await lab.req('DELETE', '/api/v1/namespaces/t/configmaps/held');
    expect(del.status).toBe(202);
    const held = (await lab.req('GET', '/api/v1/namespaces/t/configmaps/held')).json as {
      metadata: { deletionTimestamp?: string; finalizers: string[] };
    };
    expect(held.metadata.deletionTimestamp).toBeTruthy();
    const adding = await lab.req(
      'PATCH',
      '/api/v1/namespaces/t/configmaps/held',
      { metadata: { finalizers: ['example.com/hold', 'example.com/more'] } },
      { 'content-type': 'application/merge-patch+json' },
    );
    expect(adding.status).toBe(422);
    expect(
      (
        await lab.req(
          'PATCH',
          '/api/v1/namespaces/t/configmaps/held',
          { metadata: { finalizers: null } },
          { 'content-type': 'application/merge-patch+json' },
        )
      ).status,
    ).toBe(200);
    expect((await lab.req('GET', '/api/v1/namespaces/t/configmaps/held')).status).toBe(404);

    const dep = {
      metadata: { name: 'gen' },
      spec: {
        replicas: 1,
        selector: { matchLabels: { a: 'b' } },
        template: { metadata: { labels: { a: 'b' } }, spec: POD.spec },
      },
    };
    const created = (await lab.req('POST', '/apis/apps/v1/namespaces/t/deployments', dep)).json as {
      metadata: { generation: number };
      spec: Record<string, unknown>;
    };
    expect(created.metadata.generation).toBe(1);
    expect(created.spec.strategy).toEqual({
      type: 'RollingUpdate',
      rollingUpdate: { maxSurge: '25%', maxUnavailable: '25%' },
    });
    const gen = async () =>
      (
        (await lab.req('GET', '/apis/apps/v1/namespaces/t/deployments/gen')).json as {
          metadata: { generation: number };
        }
      ).metadata.generation;
    const mp = (body: unknown, sub = '') =>
      lab.req('PATCH', `/apis/apps/v1/namespaces/t/deployments/gen${sub}`, body, {
        'content-type': 'application/merge-patch+json',
      });
    await mp({ metadata: { labels: { x: 'y' } } });
    expect(await gen()).toBe(1);
    await mp({ spec: { replicas: 2 } });
    expect(await gen()).toBe(2);
    const st = await mp({ status: { replicas: 5 }, spec: { replicas: 9 } }, '/status');
    expect((st.json as { status: { replicas: number }; spec: { replicas: number } }).status.replicas).toBe(5);
    expect((st.json as { spec: { replicas: number } }).spec.replicas).toBe(2);
    expect(await gen()).toBe(2);
    const scale = await lab.req('GET', '/apis/apps/v1/namespaces/t/deployments/gen/scale');
    expect(scale.json).toMatchObject({
      kind: 'Scale',
      apiVersion: 'autoscaling/v1',
      spec: { replicas: 2 },
      status: { replicas: 5, selector: 'a=b' },
    });
    expect((await mp({ spec: { replicas: 4 } }, '/scale')).status).toBe(200);
    expect(await gen()).toBe(3);
    // A selector is immutable in apps/v1.
    expect(
      (
        await mp({
          spec: { selector: { matchLabels: { a: 'c' } }, template: { metadata: { labels: { a: 'c' } } } },
        })
      ).status,
    ).toBe(422);
  });

  it('allocates ClusterIPs and NodePorts from the configured ranges', async () => {
    const kube = (await lab.req('GET', '/api/v1/namespaces/default/services/kubernetes')).json as {
      spec: { clusterIP: string };
    };
    expect(kube.spec.clusterIP).toBe('10.50.0.1');
    const svc = (name: string, spec: Record<string, unknown>) =>
      lab.req('POST', '/api/v1/namespaces/t/services', {
        metadata: { name },
        spec: { ports: [{ port: 80 }], ...spec },
      });
    const a = (await svc('a', {})).json as {
      spec: {
        clusterIP: string;
        clusterIPs: string[];
        ports: Array<{ targetPort: number; protocol: string }>;
      };
    };
    expect(a.spec.clusterIP).toBe('10.50.0.2');
    expect(a.spec.clusterIPs).toEqual(['10.50.0.2']);
    expect(a.spec.ports[0]).toMatchObject({ targetPort: 80, protocol: 'TCP' });
    expect((await svc('fixed', { clusterIP: '10.50.0.200' })).status).toBe(201);
    expect((await svc('taken', { clusterIP: '10.50.0.200' })).status).toBe(422);
    expect((await svc('outside', { clusterIP: '10.99.0.5' })).status).toBe(422);
    const np = (await svc('np', { type: 'NodePort' })).json as {
      spec: { ports: Array<{ nodePort: number }> };
    };
    expect(np.spec.ports[0]?.nodePort).toBe(31000);
    const headless = (await svc('headless', { clusterIP: 'None' })).json as { spec: { clusterIP: string } };
    expect(headless.spec.clusterIP).toBe('None');
    const change = await lab.req(
      'PATCH',
      '/api/v1/namespaces/t/services/a',
      { spec: { clusterIP: '10.50.0.9' } },
      { 'content-type': 'application/merge-patch+json' },
    );
    expect(change.status).toBe(422);
    // Deleting a Service frees its address.
    await lab.req('DELETE', '/api/v1/namespaces/t/services/a');
    expect(((await svc('b', {})).json as { spec: { clusterIP: string } }).spec.clusterIP).toBe('10.50.0.2');
  });

  it('watches: initial state, bookmarks, initial-events-end, timeouts, selector transitions', async () => {
    const list = (await lab.req('GET', '/api/v1/namespaces/t/configmaps')).json as {
      metadata: { resourceVersion: string };
    };
    const rv = list.metadata.resourceVersion;
    const watch = lab.req(
      'GET',
      `/api/v1/namespaces/t/configmaps?watch=1&resourceVersion=${rv}&allowWatchBookmarks=true&timeoutSeconds=1&labelSelector=w%3Dyes`,
    );
    await new Promise((r) => setTimeout(r, 100));
    await lab.req('POST', '/api/v1/namespaces/t/configmaps', {
      metadata: { name: 'w1', labels: { w: 'yes' } },
    });
    await lab.req(
      'PATCH',
      '/api/v1/namespaces/t/configmaps/w1',
      { data: { a: 'b' } },
      { 'content-type': 'application/merge-patch+json' },
    );
    await lab.req(
      'PATCH',
      '/api/v1/namespaces/t/configmaps/w1',
      { metadata: { labels: { w: 'no' } } },
      { 'content-type': 'application/merge-patch+json' },
    );
    await lab.req('POST', '/api/v1/namespaces/t/configmaps', { metadata: { name: 'other' } });
    const res = await watch;
    const events = res.text
      .split('\n')
      .filter((l) => l.trim())
      .map(
        (l) =>
          JSON.parse(l) as { type: string; object: { metadata: { name?: string; resourceVersion: string } } },
      );
    const typed = events
      .filter((e) => e.type !== 'BOOKMARK')
      .map((e) => `${e.type} ${e.object.metadata.name}`);
    expect(typed).toEqual(['ADDED w1', 'MODIFIED w1', 'DELETED w1']);
    expect(events.some((e) => e.type === 'BOOKMARK')).toBe(true);
    const rvs = events.map((e) => Number(e.object.metadata.resourceVersion));
    expect([...rvs].sort((a, b) => a - b)).toEqual(rvs);
    const initial = await lab.req(
      'GET',
      '/api/v1/namespaces/t/configmaps?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1&fieldSelector=metadata.name%3Dother',
    );
    const lines = initial.text
      .trim()
      .split('\n')
      .map(
        (l) =>
          JSON.parse(l) as {
            type: string;
            object: { metadata: { name?: string; annotations?: Record<string, string> } };
          },
      );
    expect(lines[0]).toMatchObject({ type: 'ADDED', object: { metadata: { name: 'other' } } });
    expect(lines[1]).toMatchObject({
      type: 'BOOKMARK',
      object: { metadata: { annotations: { 'k8s.io/initial-events-end': 'true' } } },
    });
  });

  it('dryRun=All validates without persisting; generateName picks a name; a terminating namespace takes nothing new', async () => {
    const dry = await lab.req('POST', '/api/v1/namespaces/t/configmaps?dryRun=All', {
      metadata: { name: 'dry' },
    });
    expect(dry.status).toBe(201);
    expect((await lab.req('GET', '/api/v1/namespaces/t/configmaps/dry')).status).toBe(404);
    const gen = (
      await lab.req('POST', '/api/v1/namespaces/t/configmaps', { metadata: { generateName: 'gen-' } })
    ).json as { metadata: { name: string } };
    expect(gen.metadata.name).toMatch(/^gen-[bcdfghjklmnpqrstvwxz2456789]{5}$/);
    await lab.req('POST', '/api/v1/namespaces', {
      metadata: { name: 'doomed', finalizers: ['example.com/x'] },
    });
    await lab.req('POST', '/api/v1/namespaces/doomed/configmaps', { metadata: { name: 'c' } });
    const d = await lab.req('DELETE', '/api/v1/namespaces/doomed');
    expect((d.json as { status: { phase: string } }).status.phase).toBe('Terminating');
    const refused = await lab.req('POST', '/api/v1/namespaces/doomed/configmaps', {
      metadata: { name: 'late' },
    });
    expect(refused.status).toBe(403);
    expect((refused.json as StatusBody).message).toContain('because it is being terminated');
    expect((await lab.req('DELETE', '/api/v1/namespaces/default')).status).toBe(403);
    // deletecollection with a selector.
    await lab.req('POST', '/api/v1/namespaces/t/configmaps', {
      metadata: { name: 'dc1', labels: { dc: '1' } },
    });
    await lab.req('POST', '/api/v1/namespaces/t/configmaps', {
      metadata: { name: 'dc2', labels: { dc: '1' } },
    });
    expect((await lab.req('DELETE', '/api/v1/namespaces/t/configmaps?labelSelector=dc%3D1')).status).toBe(
      200,
    );
    expect(
      (
        (await lab.req('GET', '/api/v1/namespaces/t/configmaps?labelSelector=dc')).json as {
          items: unknown[];
        }
      ).items,
    ).toEqual([]);
  });

  it('serves discovery, OpenAPI v3, version and OIDC documents', async () => {
    const agg = await lab.req('GET', '/apis', undefined, {
      accept: 'application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json',
    });
    expect(agg.headers['content-type']).toBe(
      'application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList',
    );
    expect((agg.json as { kind: string }).kind).toBe('APIGroupDiscoveryList');
    const legacy = (await lab.req('GET', '/apis/apps/v1')).json as { resources: Array<{ name: string }> };
    expect(legacy.resources.map((r) => r.name)).toEqual(
      expect.arrayContaining(['deployments', 'deployments/status', 'deployments/scale']),
    );
    expect(((await lab.req('GET', '/version')).json as { gitVersion: string }).gitVersion).toMatch(
      /^v1\.32\./,
    );
    const root = (await lab.req('GET', '/openapi/v3')).json as {
      paths: Record<string, { serverRelativeURL: string }>;
    };
    const doc = (await lab.req('GET', root.paths['apis/apps/v1']?.serverRelativeURL as string)).json as {
      paths: Record<string, { patch?: { parameters: Array<{ name: string }> } }>;
    };
    expect(
      doc.paths['/apis/apps/v1/namespaces/{namespace}/deployments/{name}']?.patch?.parameters.map(
        (p) => p.name,
      ),
    ).toContain('fieldValidation');
    expect((await lab.req('GET', '/openapi/v2')).status).toBe(404);
    expect(
      ((await lab.req('GET', '/.well-known/openid-configuration')).json as { issuer: string }).issuer,
    ).toBe('https://kubernetes.default.svc.cluster.local');
    expect(((await lab.req('GET', '/openid/v1/jwks')).json as { keys: unknown[] }).keys.length).toBe(1);
  });
});
