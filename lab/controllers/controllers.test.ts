/**
 * The lab controllers against a real lab API server: scheduling, Deployments (scale, rollout), DaemonSets,
 * EndpointSlices/Endpoints, namespace lifecycle, garbage collection and pod GC. Pods are made Ready through
 * the pods/status subresource, which is what a kubelet does.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JsonObject } from '../apiserver/json.ts';
import { eventually, type Lab, readyNode, startLab } from '../apiserver/testkit.ts';

type Obj = JsonObject & {
  metadata: {
    name: string;
    namespace?: string;
    uid: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    ownerReferences?: Array<{ uid: string }>;
    deletionTimestamp?: string;
  };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
};

function deployment(ns: string, name: string, replicas: number, image: string): JsonObject {
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name, namespace: ns },
    spec: {
      replicas,
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: { containers: [{ name: 'app', image, ports: [{ name: 'http', containerPort: 8080 }] }] },
      },
    },
  };
}

describe('lab controllers', () => {
  let lab: Lab;
  let ipCounter = 10;

  const c = () => lab.api.client;
  const pods = (ns: string, selector?: string): Obj[] =>
    c().list('v1/pods', ns, selector ? { labelSelector: selector } : {}) as Obj[];
  const active = (ns: string, selector?: string): Obj[] =>
    pods(ns, selector).filter((p) => !p.metadata.deletionTimestamp);

  /** What a kubelet reports once containers run: Running, an IP, Ready. */
  async function makeReady(p: Obj, ready = true): Promise<void> {
    const status = {
      phase: 'Running',
      podIP: (p.status?.podIP as string | undefined) ?? `10.244.0.${ipCounter++}`,
      conditions: [
        {
          type: 'Ready',
          status: ready ? 'True' : 'False',
          lastTransitionTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
        },
        { type: 'PodScheduled', status: 'True' },
      ],
    };
    const r = await lab.req(
      'PATCH',
      `/api/v1/namespaces/${p.metadata.namespace}/pods/${p.metadata.name}/status`,
      { status },
      { 'content-type': 'application/strategic-merge-patch+json' },
    );
    if (r.status !== 200 && r.status !== 404) throw new Error(r.text);
  }

  async function readyAll(ns: string, selector?: string): Promise<void> {
    for (const p of active(ns, selector))
      if (p.spec?.nodeName && p.status?.phase !== 'Running') await makeReady(p);
  }

  async function ns(name: string): Promise<void> {
    await c().create('v1/namespaces', { metadata: { name } });
  }

  beforeAll(async () => {
    lab = await startLab({ controllers: true });
    for (const n of ['node-a', 'node-b'])
      await c().create(
        'v1/nodes',
        readyNode(n, {
          zone: n === 'node-a' ? 'a' : 'b',
          'topology.kubernetes.io/zone': n === 'node-a' ? 'z1' : 'z2',
        }),
      );
  });

  afterAll(async () => {
    await lab?.close();
  });

  it('gives every namespace a default ServiceAccount and the kube-root-ca.crt ConfigMap', async () => {
    await ns('fresh');
    await eventually(() => c().get('v1/serviceaccounts', 'fresh', 'default'));
    const cm = await eventually(() => c().get('v1/configmaps', 'fresh', 'kube-root-ca.crt'));
    expect((cm.data as Record<string, string>)['ca.crt']).toBe(lab.api.caPem);
    await c().delete('v1/serviceaccounts', 'fresh', 'default');
    await eventually(() => c().get('v1/serviceaccounts', 'fresh', 'default'));
  });

  it('schedules round-robin over Ready nodes, honours nodeSelector, leaves unschedulable pods Pending', async () => {
    await ns('sched');
    for (let i = 0; i < 4; i++)
      await c().create('v1/pods', {
        metadata: { name: `rr-${i}`, namespace: 'sched' },
        spec: { containers: [{ name: 'c', image: 'i' }] },
      });
    const nodes = await eventually(() => {
      const ps = pods('sched');
      return ps.every((p) => p.spec?.nodeName) ? ps.map((p) => p.spec?.nodeName as string) : null;
    });
    expect(nodes.filter((n) => n === 'node-a').length).toBe(2);
    expect(nodes.filter((n) => n === 'node-b').length).toBe(2);
    const bound = c().get('v1/pods', 'sched', 'rr-0') as Obj;
    expect(
      (bound.status!.conditions as Array<{ type: string; status: string }>).find(
        (x) => x.type === 'PodScheduled',
      )?.status,
    ).toBe('True');
    await c().create('v1/pods', {
      metadata: { name: 'picky', namespace: 'sched' },
      spec: { nodeSelector: { zone: 'b' }, containers: [{ name: 'c', image: 'i' }] },
    });
    await c().create('v1/pods', {
      metadata: { name: 'nowhere', namespace: 'sched' },
      spec: { nodeSelector: { zone: 'mars' }, containers: [{ name: 'c', image: 'i' }] },
    });
    await eventually(() => (c().get('v1/pods', 'sched', 'picky') as Obj).spec?.nodeName === 'node-b');
    const stuck = await eventually(() => {
      const p = c().get('v1/pods', 'sched', 'nowhere') as Obj;
      return (p.status!.conditions as Array<Record<string, string>> | undefined)?.find(
        (x) => x.type === 'PodScheduled',
      )
        ? p
        : null;
    });
    expect(stuck.status?.phase).toBe('Pending');
    expect(
      (stuck.status!.conditions as Array<Record<string, string>>).find((x) => x.type === 'PodScheduled'),
    ).toMatchObject({ status: 'False', reason: 'Unschedulable' });
    // A new node that matches lets it schedule.
    await c().create('v1/nodes', readyNode('node-mars', { zone: 'mars' }));
    await eventually(() => (c().get('v1/pods', 'sched', 'nowhere') as Obj).spec?.nodeName === 'node-mars');
    await c().delete('v1/nodes', '', 'node-mars');
    // PodGC removes pods bound to a node that no longer exists.
    await eventually(() => c().get('v1/pods', 'sched', 'nowhere') === null);
  });

  it('Deployment → ReplicaSet → Pods; scaling; a template change rolls out', async () => {
    await ns('dep');
    await c().create('apps/v1/deployments', deployment('dep', 'web', 4, 'web:1'));
    const rs1 = await eventually(() => (c().list('apps/v1/replicasets', 'dep') as Obj[])[0]);
    const hash = rs1.metadata.labels?.['pod-template-hash'] as string;
    expect(rs1.metadata.name).toBe(`web-${hash}`);
    expect(rs1.metadata.annotations?.['deployment.kubernetes.io/revision']).toBe('1');
    expect((rs1.spec!.selector as { matchLabels: Record<string, string> }).matchLabels).toEqual({
      app: 'web',
      'pod-template-hash': hash,
    });
    await eventually(() => active('dep').length === 4);
    expect(
      active('dep').every(
        (p) =>
          p.metadata.labels?.['pod-template-hash'] === hash &&
          p.metadata.ownerReferences?.[0]?.uid === rs1.metadata.uid,
      ),
    ).toBe(true);
    const spread = active('dep').map((p) => p.spec?.nodeName);
    await eventually(() => active('dep').every((p) => p.spec?.nodeName));
    expect(new Set(active('dep').map((p) => p.spec?.nodeName))).toEqual(new Set(['node-a', 'node-b']));
    void spread;
    await readyAll('dep');
    await eventually(() => {
      const d = c().get('apps/v1/deployments', 'dep', 'web') as Obj;
      return d.status?.availableReplicas === 4 && d.status?.readyReplicas === 4 ? d : null;
    });
    // Scale up and down through the scale subresource.
    await c().patch('apps/v1/deployments', 'dep', 'web', 'merge', { spec: { replicas: 6 } });
    await eventually(() => active('dep').length === 6);
    await c().patch('apps/v1/deployments', 'dep', 'web', 'merge', { spec: { replicas: 2 } });
    await eventually(() => pods('dep').length === 2);
    await readyAll('dep');
    // Rolling update: new ReplicaSet with revision 2, old one drained; pods made Ready as they come.
    await c().patch('apps/v1/deployments', 'dep', 'web', 'strategic', {
      spec: { replicas: 4, template: { spec: { containers: [{ name: 'app', image: 'web:2' }] } } },
    });
    const done = await eventually(
      async () => {
        await readyAll('dep');
        const d = c().get('apps/v1/deployments', 'dep', 'web') as Obj;
        const cond = (d.status!.conditions as Array<Record<string, string>> | undefined) ?? [];
        const progressing = cond.find((x) => x.type === 'Progressing');
        return progressing?.reason === 'NewReplicaSetAvailable' &&
          d.status?.updatedReplicas === 4 &&
          pods('dep').length === 4
          ? d
          : null;
      },
      15_000,
      50,
    );
    expect(done.metadata.annotations?.['deployment.kubernetes.io/revision']).toBe('2');
    expect(done.status).toMatchObject({
      replicas: 4,
      updatedReplicas: 4,
      readyReplicas: 4,
      availableReplicas: 4,
    });
    expect(
      (done.status!.conditions as Array<Record<string, string>>).find((x) => x.type === 'Available'),
    ).toMatchObject({ status: 'True', reason: 'MinimumReplicasAvailable' });
    const sets = c().list('apps/v1/replicasets', 'dep') as Obj[];
    expect(sets.length).toBe(2);
    const old = sets.find((s) => s.metadata.uid === rs1.metadata.uid) as Obj;
    expect(old.spec?.replicas).toBe(0);
    expect(
      active('dep').every((p) => (p.spec!.containers as Array<{ image: string }>)[0]?.image === 'web:2'),
    ).toBe(true);
    // ScalingReplicaSet events are recorded for kubectl describe.
    const events = c().list('v1/events', 'dep', {
      fieldSelector: 'involvedObject.kind=Deployment,involvedObject.name=web',
    });
    expect(events.some((e) => e.reason === 'ScalingReplicaSet')).toBe(true);
  });

  it('DaemonSet runs one pod per node and follows node add/remove', async () => {
    await ns('ds');
    await c().create('apps/v1/daemonsets', {
      metadata: { name: 'agent', namespace: 'ds' },
      spec: {
        selector: { matchLabels: { app: 'agent' } },
        template: {
          metadata: { labels: { app: 'agent' } },
          spec: { containers: [{ name: 'a', image: 'agent:1' }] },
        },
      },
    });
    const onNodes = () =>
      active('ds')
        .map((p) => p.spec?.nodeName as string)
        .sort();
    await eventually(() => onNodes().join() === 'node-a,node-b');
    await c().create('v1/nodes', readyNode('node-c'));
    await eventually(() => onNodes().join() === 'node-a,node-b,node-c');
    // Daemon pods tolerate NotReady nodes, and carry node affinity for their node.
    const p = active('ds')[0] as Obj;
    expect(JSON.stringify(p.spec?.affinity)).toContain('metadata.name');
    await c().delete('v1/nodes', '', 'node-c');
    await eventually(() => onNodes().join() === 'node-a,node-b');
    await readyAll('ds');
    const ds = await eventually(() => {
      const d = c().get('apps/v1/daemonsets', 'ds', 'agent') as Obj;
      return d.status?.numberReady === 2 ? d : null;
    });
    expect(ds.status).toMatchObject({
      desiredNumberScheduled: 2,
      currentNumberScheduled: 2,
      numberReady: 2,
      updatedNumberScheduled: 2,
    });
    // nodeSelector narrows the set; a template change rolls pods to the new revision.
    await c().patch('apps/v1/daemonsets', 'ds', 'agent', 'strategic', {
      spec: {
        template: { spec: { nodeSelector: { zone: 'a' }, containers: [{ name: 'a', image: 'agent:2' }] } },
      },
    });
    await eventually(() => {
      const ps = active('ds');
      return (
        ps.length === 1 &&
        ps[0]?.spec?.nodeName === 'node-a' &&
        (ps[0]!.spec!.containers as Array<{ image: string }>)[0]?.image === 'agent:2'
      );
    });
  });

  it('DaemonSet maxSurge rollout: each new pod starts beside the old one, which goes once the new one is available, one node at a time', async () => {
    await ns('surge');
    await c().create('apps/v1/daemonsets', {
      metadata: { name: 'zt', namespace: 'surge' },
      spec: {
        selector: { matchLabels: { app: 'zt' } },
        updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
        template: {
          metadata: { labels: { app: 'zt' } },
          spec: { containers: [{ name: 'z', image: 'zt:1' }] },
        },
      },
    });
    const image = (p: Obj) => (p.spec?.containers as Array<{ image: string }> | undefined)?.[0]?.image;
    const onNode = (node: string) => active('surge').filter((p) => p.spec?.nodeName === node);
    const restart = (at: string) =>
      c().patch('apps/v1/daemonsets', 'surge', 'zt', 'strategic', {
        spec: { template: { metadata: { annotations: { 'kubectl.kubernetes.io/restartedAt': at } } } },
      });
    await eventually(() => onNode('node-a').length === 1 && onNode('node-b').length === 1);
    await readyAll('surge');
    const [oldA] = onNode('node-a');
    const [oldB] = onNode('node-b');

    // What `kubectl rollout restart` does: a template annotation, hence a new revision.
    await restart('2030-01-01T00:00:00Z');
    const newA = await eventually(() => onNode('node-a').find((p) => p.metadata.uid !== oldA?.metadata.uid));
    expect(newA.spec?.nodeName).toBe('node-a');
    // Not Ready yet: the old pod stays beside it, and node-b (maxSurge 1) waits.
    await new Promise((r) => setTimeout(r, 300));
    expect(
      onNode('node-a')
        .map((p) => p.metadata.uid)
        .sort(),
    ).toEqual([oldA?.metadata.uid, newA.metadata.uid].sort());
    expect(onNode('node-b').map((p) => p.metadata.uid)).toEqual([oldB?.metadata.uid]);
    // Like kube, status looks at each node's oldest pod: nothing counts as updated while old pods remain.
    const surging = c().get('apps/v1/daemonsets', 'surge', 'zt') as Obj;
    expect(surging.status).toMatchObject({ updatedNumberScheduled: 0, numberAvailable: 2 });
    // Available → the old pod goes, and the next node surges.
    await makeReady(newA);
    await eventually(() => onNode('node-a').length === 1 && onNode('node-b').length === 2);
    expect(onNode('node-a')[0]?.metadata.uid).toBe(newA.metadata.uid);
    const newB = onNode('node-b').find((p) => p.metadata.uid !== oldB?.metadata.uid) as Obj;
    await new Promise((r) => setTimeout(r, 200));
    expect(onNode('node-b')).toHaveLength(2); // old-b stays until new-b is available
    await makeReady(newB);
    await eventually(
      () => onNode('node-b').length === 1 && onNode('node-b')[0]?.metadata.uid === newB.metadata.uid,
    );
    const ds = await eventually(() => {
      const d = c().get('apps/v1/daemonsets', 'surge', 'zt') as Obj;
      return d.status?.updatedNumberScheduled === 2 && d.status?.numberAvailable === 2 ? d : null;
    });
    expect(ds.status?.numberUnavailable).toBeUndefined();
    expect(active('surge').map(image)).toEqual(['zt:1', 'zt:1']);

    // A node whose old pod is not Ready is replaced at once, outside the surge budget, and the unready old
    // pod goes as soon as its replacement exists.
    await makeReady(newB, false);
    await restart('2030-01-02T00:00:00Z');
    await eventually(() => {
      const a = onNode('node-a');
      const b = onNode('node-b');
      return a.length === 2 && b.length === 1 && b[0]?.metadata.uid !== newB.metadata.uid;
    });
  });

  it('Service → EndpointSlice and Endpoints from matching pods with IPs; only Ready ones are ready', async () => {
    await ns('svc');
    await c().create('v1/services', {
      metadata: { name: 'web', namespace: 'svc', labels: { team: 'x' } },
      spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }] },
    });
    const placeholder = await eventually(
      () => (c().list('discovery.k8s.io/v1/endpointslices', 'svc') as Obj[])[0],
    );
    expect(placeholder.endpoints).toEqual([]);
    await c().create('apps/v1/deployments', deployment('svc', 'web', 3, 'web:1'));
    await eventually(() => active('svc').filter((p) => p.spec?.nodeName).length === 3);
    const [p1, p2, p3] = active('svc') as [Obj, Obj, Obj];
    await makeReady(p1);
    await makeReady(p2);
    await makeReady(p3, false);
    const slice = await eventually(() => {
      const s = (
        c().list('discovery.k8s.io/v1/endpointslices', 'svc', {
          labelSelector: 'kubernetes.io/service-name=web',
        }) as Obj[]
      )[0];
      return s && Array.isArray(s.endpoints) && s.endpoints.length === 3 ? s : null;
    });
    expect(slice.metadata.labels).toMatchObject({
      'kubernetes.io/service-name': 'web',
      'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io',
      team: 'x',
    });
    expect(slice.metadata.ownerReferences?.[0]).toMatchObject({
      kind: 'Service',
      name: 'web',
      controller: true,
    });
    expect(slice.addressType).toBe('IPv4');
    expect(slice.ports).toEqual([{ name: 'http', port: 8080, protocol: 'TCP' }]);
    const eps = slice.endpoints as Array<{
      addresses: string[];
      conditions: { ready: boolean };
      nodeName: string;
      zone?: string;
      targetRef: { name: string };
    }>;
    const ready = eps
      .filter((e) => e.conditions.ready)
      .map((e) => e.targetRef.name)
      .sort();
    expect(ready).toEqual([p1.metadata.name, p2.metadata.name].sort());
    expect(eps.every((e) => e.nodeName && e.addresses.length === 1 && e.zone)).toBe(true);
    const ep = await eventually(() => {
      const e = c().get('v1/endpoints', 'svc', 'web') as Obj | null;
      const s = (
        e?.subsets as Array<{ addresses?: unknown[]; notReadyAddresses?: unknown[] }> | undefined
      )?.[0];
      return s?.addresses?.length === 2 && s.notReadyAddresses?.length === 1 ? e : null;
    });
    const subset = (
      ep.subsets as Array<{ addresses: unknown[]; notReadyAddresses: unknown[]; ports: unknown[] }>
    )[0];
    expect(subset?.addresses.length).toBe(2);
    expect(subset?.notReadyAddresses.length).toBe(1);
    expect(subset?.ports).toEqual([{ name: 'http', port: 8080, protocol: 'TCP' }]);
    // A pod turning Ready shows up as ready; deleting the Service removes its slices (ownerReference GC).
    await makeReady(p3);
    await eventually(() => {
      const s = (c().list('discovery.k8s.io/v1/endpointslices', 'svc') as Obj[])[0];
      return (s!.endpoints as Array<{ conditions: { ready: boolean } }>).every((e) => e.conditions.ready);
    });
    await c().delete('v1/services', 'svc', 'web');
    await eventually(
      () =>
        c().list('discovery.k8s.io/v1/endpointslices', 'svc').length === 0 &&
        c().get('v1/endpoints', 'svc', 'web') === null,
    );
  });

  it('deleting a namespace deletes everything in it, then the namespace', async () => {
    await ns('gone');
    await c().create('apps/v1/deployments', deployment('gone', 'web', 2, 'web:1'));
    await c().create('v1/configmaps', {
      metadata: { name: 'held', namespace: 'gone', finalizers: ['example.com/hold'] },
    });
    await eventually(() => active('gone').length === 2);
    await c().delete('v1/namespaces', '', 'gone');
    expect((c().get('v1/namespaces', '', 'gone') as Obj).status?.phase).toBe('Terminating');
    await eventually(() => c().list('apps/v1/deployments', 'gone').length === 0 && pods('gone').length === 0);
    // A finalizer on content holds the namespace until it is removed.
    expect(c().get('v1/namespaces', '', 'gone')).not.toBeNull();
    await c().patch('v1/configmaps', 'gone', 'held', 'merge', { metadata: { finalizers: null } });
    await eventually(() => c().get('v1/namespaces', '', 'gone') === null);
  });

  it('garbage-collects dependents: background, orphan and foreground propagation', async () => {
    await ns('gc');
    const owner = async (name: string) =>
      (await c().create('v1/configmaps', { metadata: { name, namespace: 'gc' } })) as Obj;
    const dependent = (name: string, o: Obj) =>
      c().create('v1/configmaps', {
        metadata: {
          name,
          namespace: 'gc',
          ownerReferences: [
            { apiVersion: 'v1', kind: 'ConfigMap', name: o.metadata.name, uid: o.metadata.uid },
          ],
        },
      });
    const bg = await owner('bg');
    await dependent('bg-child', bg);
    await c().delete('v1/configmaps', 'gc', 'bg');
    await eventually(() => c().get('v1/configmaps', 'gc', 'bg-child') === null);
    const orphan = await owner('orphan');
    await dependent('orphan-child', orphan);
    await c().delete('v1/configmaps', 'gc', 'orphan', { propagationPolicy: 'Orphan' });
    await eventually(() => c().get('v1/configmaps', 'gc', 'orphan') === null);
    const kept = c().get('v1/configmaps', 'gc', 'orphan-child') as Obj;
    expect(kept.metadata.ownerReferences).toBeUndefined();
    const fg = await owner('fg');
    await dependent('fg-child', fg);
    const marked = (await c().delete('v1/configmaps', 'gc', 'fg', {
      propagationPolicy: 'Foreground',
    })) as Obj;
    expect(marked.metadata.deletionTimestamp).toBeTruthy();
    await eventually(
      () =>
        c().get('v1/configmaps', 'gc', 'fg') === null && c().get('v1/configmaps', 'gc', 'fg-child') === null,
    );
    // A dependent whose owner never existed is collected too.
    await c().create('v1/configmaps', {
      metadata: {
        name: 'dangling',
        namespace: 'gc',
        ownerReferences: [
          { apiVersion: 'v1', kind: 'ConfigMap', name: 'x', uid: '00000000-0000-0000-0000-000000000000' },
        ],
      },
    });
    await eventually(() => c().get('v1/configmaps', 'gc', 'dangling') === null);
  });

  it('leaves graceful pod deletion to a live kubelet (node Lease) and finishes it when there is none', async () => {
    await ns('grace');
    await c().create('v1/pods', {
      metadata: { name: 'p', namespace: 'grace' },
      spec: { nodeName: 'node-a', containers: [{ name: 'c', image: 'i' }] },
    });
    const lease = {
      metadata: { name: 'node-a', namespace: 'kube-node-lease' },
      spec: {
        holderIdentity: 'node-a',
        leaseDurationSeconds: 40,
        renewTime: new Date().toISOString().replace('Z', '000Z'),
      },
    };
    await c().create('coordination.k8s.io/v1/leases', lease);
    const deleting = (await c().delete('v1/pods', 'grace', 'p')) as Obj;
    expect(deleting.metadata.deletionTimestamp).toBeTruthy();
    await new Promise((r) => setTimeout(r, 300));
    expect(c().get('v1/pods', 'grace', 'p')).not.toBeNull();
    // The kubelet finishes with grace 0.
    await c().delete('v1/pods', 'grace', 'p', { gracePeriodSeconds: 0 });
    expect(c().get('v1/pods', 'grace', 'p')).toBeNull();
    // Without a lease the lab finishes it on the kubelet's behalf.
    await c().delete('coordination.k8s.io/v1/leases', 'kube-node-lease', 'node-a');
    await c().create('v1/pods', {
      metadata: { name: 'q', namespace: 'grace' },
      spec: { nodeName: 'node-a', containers: [{ name: 'c', image: 'i' }] },
    });
    await c().delete('v1/pods', 'grace', 'q');
    await eventually(() => c().get('v1/pods', 'grace', 'q') === null);
  });
});
