/**
 * The real kubectl (v1.32) against the lab API server: discovery, server-side printing, create/apply (without
 * --validate=false), label/annotate, describe, watch, delete, CRDs and their status subresource.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { eventually, type Lab, spawnKubectl, startLab } from './testkit.ts';

const CRDS = new URL('./testdata/crds.yaml', import.meta.url).pathname;
const CRS = new URL('./testdata/crs.yaml', import.meta.url).pathname;

function deployment(ns: string, replicas: number, env: string): string {
  return `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: ${ns}
  labels: {app: web}
spec:
  replicas: ${replicas}
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: registry.example/web:1.0
        ports:
        - {containerPort: 8080, name: http}
        env:
        - {name: MODE, value: "${env}"}
      - name: sidecar
        image: registry.example/helper:1.0
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: ${ns}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
`;
}

describe('kubectl against the lab API server', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await startLab({ controllers: true });
    // `kubectl create namespace` sends a protobuf body.
    await lab.k(['create', 'namespace', 'kt']);
  });

  afterAll(async () => {
    await lab?.close();
  });

  it('lists every resource with api-resources (aggregated discovery)', async () => {
    const out = await lab.k(['api-resources', '-o', 'name']);
    for (const r of [
      'pods',
      'services',
      'deployments.apps',
      'endpointslices.discovery.k8s.io',
      'customresourcedefinitions.apiextensions.k8s.io',
      'tokenreviews.authentication.k8s.io',
      'leases.coordination.k8s.io',
      'clusterroles.rbac.authorization.k8s.io',
    ]) {
      expect(out.split('\n')).toContain(r);
    }
  });

  it('get -A -o yaml returns a List with the bootstrap objects', async () => {
    const doc = parseYaml(await lab.k(['get', 'namespaces,services', '-A', '-o', 'yaml'])) as {
      kind: string;
      items: Array<{ metadata: { name: string } }>;
    };
    expect(doc.kind).toBe('List');
    const names = doc.items.map((i) => i.metadata.name);
    expect(names).toEqual(expect.arrayContaining(['default', 'kube-system', 'kt', 'kubernetes']));
  });

  it('create -f, then apply twice: the update lands and last-applied-configuration is kept', async () => {
    await lab.k(
      ['create', '-f', '-'],
      'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: created, namespace: kt}\ndata: {a: "1"}\n',
    );
    expect(await lab.k(['get', 'cm', 'created', '-n', 'kt', '-o', 'jsonpath={.data.a}'])).toBe('1');
    const first = await lab.k(['apply', '-f', '-'], deployment('kt', 2, 'one'));
    expect(first).toContain('deployment.apps/web created');
    const second = await lab.k(['apply', '-f', '-'], deployment('kt', 3, 'two'));
    expect(second).toContain('deployment.apps/web configured');
    const d = JSON.parse(await lab.k(['get', 'deploy', 'web', '-n', 'kt', '-o', 'json']));
    expect(d.spec.replicas).toBe(3);
    expect(d.spec.template.spec.containers.map((c: { name: string }) => c.name)).toEqual(['web', 'sidecar']);
    expect(d.spec.template.spec.containers[0].env).toEqual([{ name: 'MODE', value: 'two' }]);
    const last = JSON.parse(d.metadata.annotations['kubectl.kubernetes.io/last-applied-configuration']);
    expect(last.spec.replicas).toBe(3);
    expect(d.metadata.generation).toBe(2);
    // Re-applying the same file changes nothing.
    expect(await lab.k(['apply', '-f', '-'], deployment('kt', 3, 'two'))).toContain(
      'deployment.apps/web unchanged',
    );
  });

  it('label and annotate, and the selector finds the object', async () => {
    await lab.k(['label', 'cm', 'created', '-n', 'kt', 'tier=gold']);
    await lab.k(['annotate', 'cm', 'created', '-n', 'kt', 'note=hello']);
    expect(await lab.k(['get', 'cm', '-n', 'kt', '-l', 'tier in (gold,silver)', '-o', 'name'])).toBe(
      'configmap/created\n',
    );
    expect(await lab.k(['get', 'cm', '-n', 'kt', '-l', '!tier', '-o', 'name'])).not.toContain('created');
    expect(
      await lab.k(['get', 'cm', 'created', '-n', 'kt', '-o', 'jsonpath={.metadata.annotations.note}']),
    ).toBe('hello');
    await lab.k(['label', 'cm', 'created', '-n', 'kt', 'tier-']);
    expect(await lab.k(['get', 'cm', 'created', '-n', 'kt', '-o', 'jsonpath={.metadata.labels}'])).toBe('');
    expect(
      await lab.k(['get', 'cm', 'created', '-n', 'kt', '-o', 'jsonpath={.metadata.annotations.note}']),
    ).toBe('hello');
  });

  it('get prints server-side tables, describe pod works', async () => {
    const pods = await eventually(async () => {
      const out = await lab.k(['get', 'pods', '-n', 'kt', '-o', 'wide']);
      // Rolling from 2 to 3 replicas with a new template: 2 old + 2 new pods (maxSurge 25% of 3 rounds up to 1).
      return out.split('\n').filter((l) => l.startsWith('web-')).length === 4 ? out : null;
    });
    expect(pods.split('\n')[0]).toMatch(/^NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE\s+IP\s+NODE/);
    expect(pods).toContain('0/2');
    const name = pods
      .split('\n')
      .find((l) => l.startsWith('web-'))
      ?.split(/\s+/)[0] as string;
    const describe = await lab.kubectl(['describe', 'pod', name, '-n', 'kt']);
    expect(describe.code).toBe(0);
    expect(describe.stdout).toMatch(/Controlled By:\s+ReplicaSet\/web-/);
    expect(describe.stdout).toContain('FailedScheduling');
    expect(await lab.k(['describe', 'deployment', 'web', '-n', 'kt'])).toContain('RollingUpdate');
  });

  it('get --watch streams a change', async () => {
    const w = spawnKubectl(lab, ['get', 'configmaps', '-n', 'kt', '--watch', '-o', 'name']);
    try {
      await eventually(() => w.output().includes('configmap/created'));
      await lab.k(
        ['create', '-f', '-'],
        'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: watched, namespace: kt}\n',
      );
      await eventually(() => w.output().includes('configmap/watched'));
    } finally {
      w.child.kill('SIGKILL');
    }
  });

  it('delete removes objects and waits for them to go', async () => {
    await lab.k(['delete', 'cm', 'watched', '-n', 'kt']);
    const r = await lab.kubectl(['get', 'cm', 'watched', '-n', 'kt']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('NotFound');
    await lab.k(['delete', '-f', '-'], deployment('kt', 3, 'two'));
    await eventually(async () => (await lab.k(['get', 'rs,pods', '-n', 'kt', '-o', 'name'])).trim() === '');
  });

  it('CRDs for Istio and Gateway API: objects created, listed in every served version, status updated', async () => {
    expect(await lab.k(['apply', '-f', CRDS])).toContain(
      'customresourcedefinition.apiextensions.k8s.io/gateways.gateway.networking.k8s.io created',
    );
    await lab.k([
      'wait',
      '--for=condition=Established',
      'crd/gateways.gateway.networking.k8s.io',
      '--timeout=10s',
    ]);
    expect(await lab.k(['apply', '-f', CRS])).toContain('gateway.gateway.networking.k8s.io/waypoint created');
    // Apply again with a change: custom resources take a JSON merge patch (no strategic merge).
    const changed = readFileSync(CRS, 'utf8').replace('action: DENY', 'action: ALLOW');
    expect(await lab.k(['apply', '-f', '-'], changed)).toContain(
      'authorizationpolicy.security.istio.io/deny-all configured',
    );
    const ap = await lab.k([
      'get',
      'authorizationpolicies.v1beta1.security.istio.io',
      'deny-all',
      '-o',
      'jsonpath={.apiVersion} {.spec.action}',
    ]);
    expect(ap).toBe('security.istio.io/v1beta1 ALLOW');
    expect(await lab.k(['get', 'ap', '-A'])).toMatch(/default\s+deny-all\s+ALLOW/);
    const gw = JSON.parse(await lab.k(['get', 'gtw', 'waypoint', '-o', 'json']));
    expect(gw.spec.listeners[0].allowedRoutes).toEqual({ namespaces: { from: 'Same' } });
    await lab.k([
      'patch',
      'gtw',
      'waypoint',
      '--subresource=status',
      '--type=merge',
      '-p',
      JSON.stringify({
        status: {
          addresses: [{ value: '10.96.0.20' }],
          conditions: [
            {
              type: 'Programmed',
              status: 'True',
              reason: 'Programmed',
              message: 'ok',
              lastTransitionTime: '2024-01-01T00:00:00Z',
            },
          ],
        },
      }),
    ]);
    expect(await lab.k(['get', 'gtw', 'waypoint'])).toMatch(
      /waypoint\s+istio-waypoint\s+10\.96\.0\.20\s+True/,
    );
    // The main resource ignores status changes; the status subresource ignores spec changes.
    await lab.k([
      'patch',
      'gtw',
      'waypoint',
      '--type=merge',
      '-p',
      '{"status":{"addresses":[{"value":"1.1.1.1"}]},"spec":{"gatewayClassName":"istio"}}',
    ]);
    await lab.k([
      'patch',
      'gtw',
      'waypoint',
      '--subresource=status',
      '--type=merge',
      '-p',
      '{"spec":{"gatewayClassName":"other"}}',
    ]);
    const after = JSON.parse(await lab.k(['get', 'gtw', 'waypoint', '-o', 'json']));
    expect(after.status.addresses[0].value).toBe('10.96.0.20');
    expect(after.spec.gatewayClassName).toBe('istio');
    expect(after.metadata.generation).toBe(2);
    // Strategic merge patch is rejected for custom resources, like kube-apiserver does.
    const smp = await lab.kubectl(['patch', 'gtw', 'waypoint', '--type=strategic', '-p', '{"spec":{}}']);
    expect(smp.code).not.toBe(0);
    expect(smp.stderr).toMatch(/UnsupportedMediaType|unknown format|not supported/i);
    // Schema validation: an enum violation is a 422 with the field path.
    const bad = await lab.kubectl(
      ['apply', '-f', '-'],
      'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: bad, namespace: default}\nspec: {action: MAYBE}\n',
    );
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('spec.action');
    expect(await lab.k(['explain', 'gateways.spec.listeners.port'])).toContain('port');
  });

  it('create generators send protobuf bodies; they decode to the same objects', async () => {
    await lab.k(['create', 'configmap', 'gen-cm', '-n', 'kt', '--from-literal=a=1', '--from-literal=b=2']);
    await lab.k(['create', 'secret', 'generic', 'gen-secret', '-n', 'kt', '--from-literal=password=s3cret']);
    await lab.k(['create', 'serviceaccount', 'gen-sa', '-n', 'kt']);
    await lab.k([
      'create',
      'deployment',
      'gen-dep',
      '-n',
      'kt',
      '--image=registry.example/app:2',
      '--port=8080',
      '--replicas=2',
    ]);
    await lab.k(['create', 'service', 'clusterip', 'gen-svc', '-n', 'kt', '--tcp=80:8080']);
    await lab.k(['create', 'role', 'gen-role', '-n', 'kt', '--verb=get,list', '--resource=pods']);
    await lab.k(['create', 'rolebinding', 'gen-rb', '-n', 'kt', '--role=gen-role', '--user=bob']);
    const cm = JSON.parse(await lab.k(['get', 'cm', 'gen-cm', '-n', 'kt', '-o', 'json']));
    expect(cm.data).toEqual({ a: '1', b: '2' });
    const secret = JSON.parse(await lab.k(['get', 'secret', 'gen-secret', '-n', 'kt', '-o', 'json']));
    expect(Buffer.from(secret.data.password, 'base64').toString()).toBe('s3cret');
    expect(secret.type).toBe('Opaque');
    const dep = JSON.parse(await lab.k(['get', 'deploy', 'gen-dep', '-n', 'kt', '-o', 'json']));
    expect(dep.spec.replicas).toBe(2);
    expect(dep.spec.selector).toEqual({ matchLabels: { app: 'gen-dep' } });
    expect(dep.spec.template.spec.containers[0]).toMatchObject({
      name: 'app',
      image: 'registry.example/app:2',
      ports: [{ containerPort: 8080, protocol: 'TCP' }],
    });
    const svc = JSON.parse(await lab.k(['get', 'svc', 'gen-svc', '-n', 'kt', '-o', 'json']));
    expect(svc.spec.ports[0]).toMatchObject({ name: '80-8080', port: 80, targetPort: 8080, protocol: 'TCP' });
    expect(svc.spec.clusterIP).toMatch(/^10\.96\./);
    const token = (await lab.k(['create', 'token', 'gen-sa', '-n', 'kt', '--audience=istio-ca'])).trim();
    expect(token.split('.').length).toBe(3);
    const rb = JSON.parse(await lab.k(['get', 'rolebinding', 'gen-rb', '-n', 'kt', '-o', 'json']));
    expect(rb.roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'gen-role' });
    // RBAC decisions through SelfSubjectAccessReview and impersonation (--as).
    expect((await lab.k(['auth', 'can-i', 'list', 'pods', '-n', 'kt', '--as=bob'])).trim()).toBe('yes');
    expect(
      (await lab.kubectl(['auth', 'can-i', 'delete', 'pods', '-n', 'kt', '--as=bob'])).stdout.trim(),
    ).toBe('no');
    const forbidden = await lab.kubectl(['get', 'pods', '-n', 'default', '--as=bob']);
    expect(forbidden.stderr).toContain('User "bob" cannot list resource "pods"');
    expect(await lab.k(['auth', 'whoami', '--as=bob', '--as-group=team'])).toMatch(/Username\s+bob/);
  });

  it('deleting a CRD removes its objects and its discovery entry', async () => {
    await lab.k(['delete', 'crd', 'authorizationpolicies.security.istio.io']);
    await eventually(
      async () => !(await lab.k(['api-resources', '-o', 'name'])).includes('authorizationpolicies'),
    );
    const docs = parseAllDocuments(await lab.k(['get', 'gtw', '-A', '-o', 'yaml']));
    expect(docs.length).toBe(1);
  });
});
