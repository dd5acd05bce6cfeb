/**
 * The kubelet's translation of API objects (no root): env ($(VAR) expansion, service links, valueFrom),
 * volume contents (configMap, secret, downwardAPI, projected token via TokenRequest), waiting on missing
 * objects, the Services/EndpointSlices → proxy/DNS view, and the lab's image map.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JsonObject } from '../apiserver/json.ts';
import { type Lab, startLab } from '../apiserver/testkit.ts';
import { lookupLabImage } from '../images.ts';
import type { EnvVar, VolumeInput } from '../runtime/types.ts';
import {
  expand,
  PodWaiting,
  parseQuantity,
  qosClass,
  type ResolveContext,
  resolvePod,
  serviceLinkEnv,
} from './podspec.ts';
import { serviceView } from './services.ts';

const REPO = new URL('../..', import.meta.url).pathname;

describe('env helpers', () => {
  it('expands $(VAR) like kube: defined refs replaced, $$ escapes, unknown refs kept', () => {
    const vars = new Map([
      ['A', 'x'],
      ['B', 'y'],
    ]);
    expect(expand('$(A)-$(B)', vars)).toBe('x-y');
    expect(expand('$$(A)', vars)).toBe('$(A)');
    expect(expand('$(C) $A $', vars)).toBe('$(C) $A $');
    expect(expand('$(A', vars)).toBe('$(A');
  });

  it('renders docker-link service variables', () => {
    const env = Object.fromEntries(
      serviceLinkEnv({
        namespace: 'default',
        name: 'product-page',
        clusterIP: '10.96.0.9',
        ports: [
          { name: 'http', port: 9080, protocol: 'TCP' },
          { name: 'dns-udp', port: 53, protocol: 'UDP' },
        ],
      }),
    );
    expect(env).toMatchObject({
      PRODUCT_PAGE_SERVICE_HOST: '10.96.0.9',
      PRODUCT_PAGE_SERVICE_PORT: '9080',
      PRODUCT_PAGE_SERVICE_PORT_HTTP: '9080',
      PRODUCT_PAGE_SERVICE_PORT_DNS_UDP: '53',
      PRODUCT_PAGE_PORT: 'tcp://10.96.0.9:9080',
      PRODUCT_PAGE_PORT_53_UDP: 'udp://10.96.0.9:53',
      PRODUCT_PAGE_PORT_53_UDP_PROTO: 'udp',
      PRODUCT_PAGE_PORT_9080_TCP_ADDR: '10.96.0.9',
    });
  });

  it('parses quantities and computes the QoS class', () => {
    expect(parseQuantity('500m')).toBe(0.5);
    expect(parseQuantity('256Mi')).toBe(256 * 1024 * 1024);
    expect(qosClass({ spec: { containers: [{ name: 'a' }] } })).toBe('BestEffort');
    expect(
      qosClass({
        spec: {
          containers: [{ resources: { limits: { cpu: '1', memory: '1Gi' }, requests: { cpu: '1' } } }],
        },
      }),
    ).toBe('Guaranteed');
    expect(qosClass({ spec: { containers: [{ resources: { requests: { cpu: '1' } } }] } })).toBe('Burstable');
  });
});

describe('lab images', () => {
  it('maps the mesh images, the samples and curl; unknown images and missing programs are pull errors', () => {
    const istiod = lookupLabImage('ambient-ts/istiod:0.1.0', REPO);
    expect(istiod).toMatchObject({ ok: true, image: { entry: 'istiod/src/main.ts' } });
    expect(lookupLabImage('docker.io/ambient-ts/install-cni:0.1.0', REPO)).toMatchObject({
      ok: true,
      image: { entry: 'cni-plugin/src/main.ts' },
    });
    expect(lookupLabImage('docker.io/istio/examples-bookinfo-reviews-v3:1.20.3', REPO)).toMatchObject({
      ok: true,
      image: { entry: 'samples/bookinfo/reviews.ts', env: { STAR_COLOR: 'red' } },
    });
    expect(lookupLabImage('curlimages/curl', REPO)).toMatchObject({
      ok: true,
      image: { hostCommand: ['/usr/bin/curl'] },
    });
    expect(lookupLabImage('nginx:1.27', REPO)).toMatchObject({
      ok: false,
      reason: expect.stringContaining('not a lab image'),
    });
    // A mapped image whose program is not in the tree fails the same way, naming the file.
    expect(lookupLabImage('ambient-ts/istiod:0.1.0', '/nonexistent')).toMatchObject({
      ok: false,
      reason: expect.stringContaining('istiod/src/main.ts does not exist'),
    });
  });
});

describe('serviceView', () => {
  it('keeps ready endpoints per port, resolves headless and ExternalName services for DNS', () => {
    const svc = (name: string, spec: JsonObject): JsonObject => ({
      metadata: { name, namespace: 'ns' },
      spec,
    });
    const slice = (svcName: string, endpoints: JsonObject[], ports: JsonObject[]): JsonObject => ({
      metadata: { namespace: 'ns', name: `${svcName}-x`, labels: { 'kubernetes.io/service-name': svcName } },
      addressType: 'IPv4',
      endpoints,
      ports,
    });
    const view = serviceView(
      [
        svc('web', {
          clusterIP: '10.96.0.10',
          clusterIPs: ['10.96.0.10'],
          ports: [{ name: 'http', port: 80, protocol: 'TCP', nodePort: 30080 }],
        }),
        svc('db', { clusterIP: 'None', ports: [{ name: '', port: 5432 }] }),
        svc('ext', { type: 'ExternalName', externalName: 'example.com' }),
      ],
      [
        slice(
          'web',
          [
            { addresses: ['10.1.1.2'], conditions: { ready: true } },
            { addresses: ['10.1.1.3'], conditions: { ready: false } },
            { addresses: ['10.1.2.4'] },
          ],
          [{ name: 'http', port: 8080, protocol: 'TCP' }],
        ),
        slice(
          'db',
          [{ addresses: ['10.1.1.9'], hostname: 'db-0', conditions: { ready: true } }],
          [{ port: 5432 }],
        ),
      ],
    );
    expect(view.proxy.find((p) => p.name === 'web')).toEqual({
      namespace: 'ns',
      name: 'web',
      clusterIPs: ['10.96.0.10'],
      ports: [
        {
          name: 'http',
          protocol: 'TCP',
          port: 80,
          nodePort: 30080,
          endpoints: [
            { ip: '10.1.1.2', port: 8080 },
            { ip: '10.1.2.4', port: 8080 },
          ],
        },
      ],
    });
    expect(view.dns.find((d) => d.name === 'db')).toMatchObject({
      clusterIPs: [],
      endpoints: [{ ip: '10.1.1.9', hostname: 'db-0' }],
    });
    expect(view.dns.find((d) => d.name === 'ext')).toMatchObject({ externalName: 'example.com' });
    expect(view.proxy.some((p) => p.name === 'ext')).toBe(false);
  });
});

describe('resolvePod against the lab API server', () => {
  let lab: Lab;
  let ctx: ResolveContext;

  beforeAll(async () => {
    lab = await startLab({ serviceCidr: '10.96.0.0/16' });
    const c = lab.api.client;
    ctx = {
      client: c,
      nodeName: 'node-0',
      nodeIp: '10.9.0.10',
      requestToken: async (req) => {
        const res = await lab.api.api.createToken(req.namespace, req.serviceAccount, {
          spec: {
            ...(req.audiences ? { audiences: req.audiences } : {}),
            expirationSeconds: req.expirationSeconds,
            boundObjectRef: { kind: 'Pod', apiVersion: 'v1', name: req.pod.name, uid: req.pod.uid },
          },
        });
        const st = res.status as JsonObject;
        return { token: String(st.token), expiresAt: new Date(String(st.expirationTimestamp)) };
      },
    };
    await c.create('v1/namespaces', { metadata: { name: 'app' } });
    await c.create('v1/serviceaccounts', { metadata: { name: 'default', namespace: 'app' } });
    await c.create('v1/serviceaccounts', { metadata: { name: 'web', namespace: 'app' } });
    await c.create('v1/configmaps', {
      metadata: { name: 'kube-root-ca.crt', namespace: 'app' },
      data: { 'ca.crt': lab.api.caPem },
    });
    await c.create('v1/configmaps', {
      metadata: { name: 'cfg', namespace: 'app' },
      data: { mode: 'fast', 'app.conf': 'x=1\n' },
    });
    await c.create('v1/secrets', {
      metadata: { name: 'sec', namespace: 'app' },
      data: { password: Buffer.from('hunter2').toString('base64') },
    });
    await c.create('v1/services', {
      metadata: { name: 'backend', namespace: 'app' },
      spec: { ports: [{ name: 'http', port: 8080 }], selector: { app: 'backend' } },
    });
  });

  afterAll(async () => {
    await lab?.close();
  });

  async function createPod(spec: JsonObject, name = 'web-1'): Promise<JsonObject> {
    return lab.api.client.create('v1/pods', {
      metadata: { name, namespace: 'app', labels: { app: 'web', tier: 'front' } },
      spec: { nodeName: 'node-0', serviceAccountName: 'web', ...spec },
    });
  }

  function envOf(env: readonly EnvVar[] | undefined): Record<string, string> {
    return Object.fromEntries((env ?? []).map((e) => [e.name, e.fieldPath ? `<${e.fieldPath}>` : e.value]));
  }

  it('resolves env: values with $(VAR), fieldRef, configMap/secret keys, envFrom, service links, pod IP at start', async () => {
    const pod = await createPod({
      containers: [
        {
          name: 'app',
          image: 'ambient-ts/istiod:0.1.0',
          command: ['run', '--mode=$(MODE)'],
          args: ['$(POD_NAME)', '$$(POD_NAME)'],
          envFrom: [{ configMapRef: { name: 'cfg' }, prefix: 'CFG_' }],
          env: [
            { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
            { name: 'NODE', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
            { name: 'TIER', valueFrom: { fieldRef: { fieldPath: "metadata.labels['tier']" } } },
            { name: 'HOST_IP', valueFrom: { fieldRef: { fieldPath: 'status.hostIP' } } },
            { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
            { name: 'MODE', valueFrom: { configMapKeyRef: { name: 'cfg', key: 'mode' } } },
            { name: 'PASSWORD', valueFrom: { secretKeyRef: { name: 'sec', key: 'password' } } },
            { name: 'MISSING', valueFrom: { secretKeyRef: { name: 'nope', key: 'x', optional: true } } },
            { name: 'GREETING', value: 'hello $(POD_NAME) on $(NODE)' },
          ],
        },
      ],
    });
    const r = await resolvePod(ctx, pod);
    const c = r.input.containers[0];
    expect(c?.command).toEqual(['run', '--mode=fast']);
    expect(c?.args).toEqual(['web-1', '$(POD_NAME)']);
    const env = envOf(c?.env);
    expect(env).toMatchObject({
      POD_NAME: 'web-1',
      NODE: 'node-0',
      TIER: 'front',
      HOST_IP: '10.9.0.10',
      POD_IP: '<status.podIP>',
      MODE: 'fast',
      PASSWORD: 'hunter2',
      GREETING: 'hello web-1 on node-0',
      CFG_mode: 'fast',
      BACKEND_SERVICE_HOST: expect.stringMatching(/^10\.96\./),
      BACKEND_SERVICE_PORT_HTTP: '8080',
      KUBERNETES_SERVICE_HOST: '10.96.0.1',
      KUBERNETES_SERVICE_PORT: '443',
    });
    expect(env).not.toHaveProperty('MISSING');
    // `app.conf` is a valid variable name for kube (C identifier plus - and .), so it is kept.
    expect(env['CFG_app.conf']).toBe('x=1\n');
  });

  it('fills volumes: configMap items, secret, downwardAPI, projected service-account token bound to the pod', async () => {
    const pod = await createPod(
      {
        containers: [{ name: 'app', image: 'x' }],
        volumes: [
          { name: 'cfg', configMap: { name: 'cfg', items: [{ key: 'app.conf', path: 'conf/app.conf' }] } },
          { name: 'sec', secret: { secretName: 'sec', defaultMode: 0o400 } },
          { name: 'opt', secret: { secretName: 'absent', optional: true } },
          {
            name: 'info',
            downwardAPI: { items: [{ path: 'labels', fieldRef: { fieldPath: 'metadata.labels' } }] },
          },
          {
            name: 'istio-token',
            projected: {
              sources: [
                {
                  serviceAccountToken: {
                    audience: 'istio-ca',
                    expirationSeconds: 43200,
                    path: 'istio-token',
                  },
                },
              ],
            },
          },
          { name: 'scratch', emptyDir: {} },
          { name: 'run', hostPath: { path: '/var/run/ztunnel', type: 'DirectoryOrCreate' } },
        ],
      },
      'web-2',
    );
    const r = await resolvePod(ctx, pod);
    const vol = (name: string): VolumeInput | undefined => r.input.volumes?.find((v) => v.name === name);
    const files = (name: string) => {
      const v = vol(name);
      return v && 'files' in v ? v.files : null;
    };
    expect(files('cfg')?.items).toEqual({ 'conf/app.conf': 'x=1\n' });
    expect(Buffer.from(files('sec')?.items.password as Uint8Array).toString()).toBe('hunter2');
    expect(files('sec')?.defaultMode).toBe(0o400);
    expect(files('opt')?.items).toEqual({});
    expect(files('info')?.items).toEqual({ labels: 'app="web"\ntier="front"' });
    expect(vol('scratch')).toEqual({ name: 'scratch', emptyDir: {} });
    expect(vol('run')).toEqual({
      name: 'run',
      hostPath: { path: '/var/run/ztunnel', type: 'DirectoryOrCreate' },
    });
    // The API server's admission added the default kube-api-access volume: token, CA and namespace.
    const access = r.input.volumes?.find((v) => v.name.startsWith('kube-api-access-'));
    const items = access && 'files' in access ? access.files.items : {};
    expect(Object.keys(items).sort()).toEqual(['ca.crt', 'namespace', 'token']);
    expect(items['ca.crt']).toBe(lab.api.caPem);
    expect(items.namespace).toBe('app');
    // The istio-ca token: audience istio-ca, bound to this pod.
    const token = String(files('istio-token')?.items['istio-token']);
    const claims = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as JsonObject;
    expect(claims.aud).toEqual(['istio-ca']);
    expect((claims['kubernetes.io'] as JsonObject).pod).toMatchObject({ name: 'web-2' });
    // Refresh at 80 % of the shortest lifetime: the kube-api-access token's 3607 s (the istio-ca one has 12 h).
    expect(r.refreshAt).not.toBeNull();
    expect((r.refreshAt as number) - Date.now()).toBeGreaterThan(0.8 * 3607_000 - 60_000);
    expect((r.refreshAt as number) - Date.now()).toBeLessThanOrEqual(0.8 * 3607_000);
    expect([...r.deps].sort()).toEqual([
      'configmaps/app/cfg',
      'configmaps/app/kube-root-ca.crt',
      'secrets/app/absent',
      'secrets/app/sec',
    ]);
  });

  it('waits for missing ConfigMaps (volume) and Secrets (env) with kubelet reasons', async () => {
    const vol = await createPod(
      { containers: [{ name: 'app', image: 'x' }], volumes: [{ name: 'c', configMap: { name: 'later' } }] },
      'web-3',
    );
    const err = await resolvePod(ctx, vol).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PodWaiting);
    expect(err).toMatchObject({ reason: 'ContainerCreating', eventReason: 'FailedMount' });
    expect((err as Error).message).toContain('configmap "later" not found');

    const env = await createPod(
      {
        containers: [
          {
            name: 'app',
            image: 'x',
            env: [{ name: 'K', valueFrom: { secretKeyRef: { name: 'sec', key: 'nokey' } } }],
          },
        ],
      },
      'web-4',
    );
    await expect(resolvePod(ctx, env)).rejects.toMatchObject({
      reason: 'CreateContainerConfigError',
      message: expect.stringContaining("couldn't find key nokey in Secret app/sec"),
    });
  });
});
