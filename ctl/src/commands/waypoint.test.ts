/**
 * ambientctl waypoint against the lab API server with our CRDs (no istiod: the test writes the Programmed
 * condition itself where a command waits for it). Output lines are compared exactly: they follow istioctl's.
 */
import { join } from 'node:path';
import { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Lab, startLab } from '../../../lab/apiserver/testkit.ts';
import { loadKubeConfig } from '../../../pkg/kube/index.ts';
import { runCli } from '../cli.ts';
import { commands } from './index.ts';
import { table, waypointGateway } from './waypoint.ts';

let lab: Lab;
let core: CoreV1Api;
let custom: CustomObjectsApi;

async function run(...argv: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(commands, [...argv, '--kubeconfig', lab.api.kubeconfigPath], {
    out: (l) => out.push(l),
    err: (l) => err.push(l),
  });
  return { code, out, err };
}

async function setProgrammed(namespace: string, name: string, status: 'True' | 'False'): Promise<void> {
  const r = await lab.req(
    'PATCH',
    `/apis/gateway.networking.k8s.io/v1/namespaces/${namespace}/gateways/${name}/status`,
    {
      status: {
        conditions: [
          {
            type: 'Programmed',
            status,
            reason: status === 'True' ? 'Programmed' : 'AddressNotAssigned',
            message: status === 'True' ? 'Resource programmed' : 'no instances',
            lastTransitionTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
          },
        ],
      },
    },
    { 'content-type': 'application/merge-patch+json' },
  );
  expect(r.status).toBe(200);
}

beforeAll(async () => {
  lab = await startLab({ controllers: false });
  await lab.k(['apply', '-k', join(import.meta.dirname, '../../../deploy/crds')]);
  const kc = loadKubeConfig(lab.api.kubeconfigPath);
  core = kc.makeApiClient(CoreV1Api);
  custom = kc.makeApiClient(CustomObjectsApi);
  for (const name of ['bookinfo', 'ambient-ns'])
    await core.createNamespace({
      body: {
        metadata: { name, labels: name === 'ambient-ns' ? { 'istio.io/dataplane-mode': 'ambient' } : {} },
      },
    });
}, 60_000);

afterAll(async () => {
  await lab?.close();
});

describe('waypoint generate', () => {
  it('prints the Gateway istioctl would (namespace only when given)', async () => {
    const r = await run('waypoint', 'generate', '--for', 'all', '--name', 'foo');
    expect(r.code).toBe(0);
    expect(r.out.join('\n')).toBe(
      [
        'apiVersion: gateway.networking.k8s.io/v1',
        'kind: Gateway',
        'metadata:',
        '  labels:',
        '    istio.io/waypoint-for: all',
        '  name: foo',
        'spec:',
        '  gatewayClassName: istio-waypoint',
        '  listeners:',
        '  - name: mesh',
        '    port: 15008',
        '    protocol: HBONE',
      ].join('\n'),
    );
    const n = await run('waypoint', 'generate', '-n', 'bookinfo');
    expect(n.out.join('\n')).toMatch(/^metadata:\n {2}name: waypoint\n {2}namespace: bookinfo$/m);
    expect(n.out.join('\n')).not.toMatch(/labels/);
  });

  it.each([
    [
      ['--for', 'everything'],
      'MESH_ERR_CTL_USAGE: invalid traffic type: everything. Valid options are: [all none service workload]',
    ],
    [
      ['--name', 'none'],
      "MESH_ERR_CTL_USAGE: invalid name provided for waypoint, 'none' is a reserved value",
    ],
  ])('rejects %j', async (args, message) => {
    const r = await run('waypoint', 'generate', ...args);
    expect(r.code).toBe(1);
    expect(r.err).toEqual([message]);
  });
});

describe('waypoint apply', () => {
  it('applies the waypoint and enrols the namespace, warning that it is not ambient', async () => {
    const r = await run('waypoint', 'apply', '-n', 'bookinfo', '--enroll-namespace');
    expect(r.err).toEqual([]);
    expect(r.out).toEqual([
      '⚠️ Warning: namespace is not enrolled in ambient. Consider running\t`kubectl label namespace bookinfo istio.io/dataplane-mode=ambient`',
      '✅ waypoint bookinfo/waypoint applied',
      '✅ namespace bookinfo labeled with "istio.io/use-waypoint: waypoint"',
    ]);
    expect(r.code).toBe(0);
    const gw = (await custom.getNamespacedCustomObject({
      group: 'gateway.networking.k8s.io',
      version: 'v1',
      plural: 'gateways',
      namespace: 'bookinfo',
      name: 'waypoint',
    })) as { spec: unknown; metadata: { labels?: Record<string, string> } };
    expect(gw.spec).toEqual(
      waypointGateway({ name: 'waypoint', namespace: 'bookinfo', trafficType: null }).spec,
    );
    expect(gw.metadata.labels?.['istio.io/waypoint-for']).toBeUndefined();
    expect((await core.readNamespace({ name: 'bookinfo' })).metadata?.labels).toMatchObject({
      'istio.io/use-waypoint': 'waypoint',
    });
  });

  it('does not switch an enrolled namespace to another waypoint without --overwrite', async () => {
    const r = await run('waypoint', 'apply', '-n', 'bookinfo', '--name', 'second', '--enroll-namespace');
    expect(r.code).toBe(0);
    expect(r.out).toEqual([
      '⚠️ Warning: namespace (bookinfo) already has an enrolled Waypoint. Consider adding the `--overwrite` flag to your apply command.',
    ]);
    const o = await run(
      'waypoint',
      'apply',
      '-n',
      'bookinfo',
      '--name',
      'second',
      '--enroll-namespace',
      '--overwrite',
      '--for',
      'workload',
    );
    expect(o.out.slice(-2)).toEqual([
      '✅ waypoint bookinfo/second applied',
      '✅ namespace bookinfo labeled with "istio.io/use-waypoint: second"',
    ]);
    expect((await core.readNamespace({ name: 'bookinfo' })).metadata?.labels?.['istio.io/use-waypoint']).toBe(
      'second',
    );
  });

  it('--wait returns once istiod marks the waypoint Programmed', async () => {
    const timer = setTimeout(() => void setProgrammed('ambient-ns', 'waypoint', 'True'), 300);
    const r = await run('waypoint', 'apply', '-n', 'ambient-ns', '--wait', '--enroll-namespace');
    clearTimeout(timer);
    expect(r.err).toEqual([]);
    expect(r.out).toEqual([
      '✅ waypoint ambient-ns/waypoint applied',
      '✅ waypoint ambient-ns/waypoint is ready!',
      '✅ namespace ambient-ns labeled with "istio.io/use-waypoint: waypoint"',
    ]);
  });

  it('--wait gives up after --waypoint-timeout', async () => {
    const r = await run(
      'waypoint',
      'apply',
      '-n',
      'ambient-ns',
      '--name',
      'slow',
      '-w',
      '--waypoint-timeout',
      '1s',
    );
    expect(r.code).toBe(1);
    expect(r.out).toEqual(['✅ waypoint ambient-ns/slow applied']);
    expect(r.err).toEqual(['MESH_ERR_CTL_TIMEOUT: timed out while waiting for waypoint\tambient-ns/slow']);
  });

  it('names a missing namespace', async () => {
    const r = await run('waypoint', 'apply', '-n', 'nowhere');
    expect(r.code).toBe(1);
    expect(r.err[0]).toMatch(/^MESH_ERR_CTL_CLUSTER: namespace: nowhere not found/);
  });
});

describe('waypoint list and status', () => {
  it('lists the waypoints of a namespace and of all namespaces', async () => {
    const r = await run('waypoint', 'list', '-n', 'bookinfo');
    expect(r.out).toEqual([
      'NAME         REVISION     TRAFFIC TYPE     PROGRAMMED',
      'second       default      workload         False',
      'waypoint     default      service          False',
    ]);
    const a = await run('waypoint', 'list', '-A');
    expect(a.out).toEqual([
      'NAMESPACE      NAME         REVISION     TRAFFIC TYPE     PROGRAMMED',
      'ambient-ns     slow         default      service          False',
      'ambient-ns     waypoint     default      service          True',
      'bookinfo       second       default      workload         False',
      'bookinfo       waypoint     default      service          False',
    ]);
    expect((await run('waypoint', 'list', '-n', 'default')).out).toEqual(['No waypoints found.']);
  });

  it('shows the Programmed condition; --no-wait does not wait', async () => {
    const r = await run('waypoint', 'status', '-n', 'ambient-ns', '--name', 'waypoint');
    expect(r.out).toEqual([
      'NAME         STATUS     TYPE           REASON         MESSAGE',
      'waypoint     True       Programmed     Programmed     Resource programmed',
    ]);
    await setProgrammed('bookinfo', 'waypoint', 'False');
    const n = await run('waypoint', 'status', '-n', 'bookinfo', '--no-wait');
    expect(n.code).toBe(0);
    expect(n.out).toEqual([
      'NAME         STATUS     TYPE           REASON                 MESSAGE',
      'second                                                        ',
      'waypoint     False      Programmed     AddressNotAssigned     no instances',
    ]);
    const t = await run(
      'waypoint',
      'status',
      '-n',
      'bookinfo',
      '--name',
      'second',
      '--waypoint-timeout',
      '1s',
    );
    expect(t.code).toBe(1);
    expect(t.err).toEqual([
      'MESH_ERR_CTL_TIMEOUT: failed to print waypoint status: timed out while retrieving status for waypoint\tbookinfo/second',
    ]);
  });
});

describe('waypoint delete', () => {
  it('deletes by name, says which were not found, and --all empties a namespace', async () => {
    const r = await run('waypoint', 'delete', '-n', 'bookinfo', 'second', 'missing');
    expect(r.code).toBe(0);
    expect(r.out).toEqual(['waypoint bookinfo/missing not found', 'waypoint bookinfo/second deleted']);
    const a = await run('waypoint', 'delete', '--all', '-n', 'ambient-ns');
    expect(a.out).toEqual(['waypoint ambient-ns/slow deleted', 'waypoint ambient-ns/waypoint deleted']);
    expect((await run('waypoint', 'list', '-n', 'ambient-ns')).out).toEqual(['No waypoints found.']);
  });

  it.each([
    [['--all', 'x'], 'MESH_ERR_CTL_USAGE: cannot specify waypoint names when deleting all waypoints'],
    [[], 'MESH_ERR_CTL_USAGE: must specify a waypoint name or delete all using --all'],
  ])('rejects %j', async (args, message) => {
    const r = await run('waypoint', 'delete', ...args);
    expect(r.code).toBe(1);
    expect(r.err).toEqual([message]);
  });
});

describe('table', () => {
  it('pads every cell but the last to its column width plus five, like Go tabwriter', () => {
    expect(
      table([
        ['NAME', 'REVISION', 'PROGRAMMED'],
        ['waypoint', 'default', 'True'],
      ]),
    ).toEqual(['NAME         REVISION     PROGRAMMED', 'waypoint     default      True']);
  });
});
