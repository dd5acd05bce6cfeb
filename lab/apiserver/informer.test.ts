/**
 * @kubernetes/client-node informers against the lab API server: ordered add/update/delete, surviving a
 * server restart, and relisting after 410 Gone when their resourceVersion was compacted away.
 */

import { rm } from 'node:fs/promises';
import {
  CoreV1Api,
  KubeConfig,
  makeInformer,
  PatchStrategy,
  setHeaderOptions,
  type V1ConfigMap,
} from '@kubernetes/client-node';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually, type Lab, startLab } from './testkit.ts';

function client(lab: Lab): { kc: KubeConfig; core: CoreV1Api } {
  const kc = new KubeConfig();
  kc.loadFromFile(lab.api.kubeconfigPath);
  return { kc, core: kc.makeApiClient(CoreV1Api) };
}

const MERGE = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

function cm(name: string, data: Record<string, string> = {}): V1ConfigMap {
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name, namespace: 'default', labels: { informer: 'yes' } },
    data,
  };
}

describe('client-node informers', () => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  it('sees add, update and delete in order', async () => {
    const lab = await startLab();
    cleanups.push(() => lab.close());
    const { kc, core } = client(lab);
    const events: string[] = [];
    const informer = makeInformer(
      kc,
      '/api/v1/namespaces/default/configmaps',
      () => core.listNamespacedConfigMap({ namespace: 'default', labelSelector: 'informer=yes' }),
      'informer=yes',
    );
    informer.on('add', (o) => events.push(`add ${o.metadata?.name}`));
    informer.on('update', (o) => events.push(`update ${o.metadata?.name} ${o.data?.v}`));
    informer.on('delete', (o) => events.push(`delete ${o.metadata?.name}`));
    await informer.start();
    cleanups.push(() => informer.stop());
    await core.createNamespacedConfigMap({ namespace: 'default', body: cm('a', { v: '1' }) });
    await core.replaceNamespacedConfigMap({ namespace: 'default', name: 'a', body: cm('a', { v: '2' }) });
    await core.patchNamespacedConfigMap(
      { namespace: 'default', name: 'a', body: { data: { v: '3' } } },
      MERGE,
    );
    await core.createNamespacedConfigMap({ namespace: 'default', body: cm('b') });
    await core.deleteNamespacedConfigMap({ namespace: 'default', name: 'a' });
    // Label removal makes the object leave the selection: a DELETED event for this watch.
    await core.patchNamespacedConfigMap({
      namespace: 'default',
      name: 'b',
      body: [{ op: 'remove', path: '/metadata/labels/informer' }],
    });
    await eventually(() => events.length >= 6);
    expect(events).toEqual(['add a', 'update a 2', 'update a 3', 'add b', 'delete a', 'delete b']);
    expect(informer.list('default').map((o) => o.metadata?.name)).toEqual([]);
  });

  it('survives a server restart and relists after 410 Gone', async () => {
    const first = await startLab({ historyWindow: 5 });
    const dataDir = first.api.dataDir;
    const port = first.api.port;
    const { kc, core } = client(first);
    let lists = 0;
    const names = new Set<string>();
    const informer = makeInformer(
      kc,
      '/api/v1/namespaces/default/configmaps',
      () => {
        lists++;
        return core.listNamespacedConfigMap({ namespace: 'default', labelSelector: 'informer=yes' });
      },
      'informer=yes',
    );
    informer.on('add', (o) => names.add(String(o.metadata?.name)));
    informer.on('delete', (o) => names.delete(String(o.metadata?.name)));
    // The documented client-node pattern: restart the informer after an error, once the test allows it.
    let gate: () => void = () => {};
    const reopened = new Promise<void>((r) => {
      gate = r;
    });
    let errors = 0;
    informer.on('error', () => {
      errors++;
      void reopened.then(() => informer.start());
    });
    await informer.start();
    await core.createNamespacedConfigMap({ namespace: 'default', body: cm('before') });
    await eventually(() => names.has('before'));
    const rvBefore = first.api.resourceVersion;
    // Stop the server (the informer's watch ends and its reconnect fails), then start a new one on the same
    // directory and port, and write more than the history window before the informer comes back.
    await first.api.close();
    await eventually(() => errors > 0);
    const second = await startLab({ dataDir, port, historyWindow: 5 });
    cleanups.push(async () => {
      await informer.stop();
      await second.close();
      await rm(first.dir, { recursive: true, force: true });
    });
    expect(second.api.resourceVersion).toBeGreaterThanOrEqual(rvBefore);
    for (let i = 0; i < 8; i++)
      await core.createNamespacedConfigMap({ namespace: 'default', body: cm(`after-${i}`) });
    await core.deleteNamespacedConfigMap({ namespace: 'default', name: 'before' });
    const listsBefore = lists;
    gate();
    await eventually(() => names.size === 8 && !names.has('before'));
    expect(lists).toBeGreaterThan(listsBefore);
    // And it keeps watching live after the relist.
    await core.createNamespacedConfigMap({ namespace: 'default', body: cm('live') });
    await eventually(() => names.has('live'));
    const created = await core.readNamespacedConfigMap({ namespace: 'default', name: 'live' });
    expect(Number(created.metadata?.resourceVersion)).toBeGreaterThan(rvBefore);
  });

  it('a watch resuming from a compacted resourceVersion gets an ERROR event with 410 Expired', async () => {
    const lab = await startLab({ historyWindow: 3 });
    cleanups.push(() => lab.close());
    const { core } = client(lab);
    const list = await core.listNamespacedConfigMap({ namespace: 'default' });
    const rv = list.metadata?.resourceVersion;
    for (let i = 0; i < 5; i++)
      await core.createNamespacedConfigMap({ namespace: 'default', body: cm(`c${i}`) });
    const res = await lab.req(
      'GET',
      `/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=${rv}`,
    );
    expect(res.status).toBe(200);
    const ev = JSON.parse(res.text.trim().split('\n')[0] as string);
    expect(ev.type).toBe('ERROR');
    expect(ev.object).toMatchObject({ kind: 'Status', code: 410, reason: 'Expired' });
    // A list with a continue token still works, and a fresh watch from the list's resourceVersion too.
    const fresh = await core.listNamespacedConfigMap({ namespace: 'default', limit: 2 });
    expect(fresh.items.length).toBe(2);
    expect(fresh.metadata?._continue).toBeTruthy();
    const rest = await core.listNamespacedConfigMap({
      namespace: 'default',
      limit: 10,
      _continue: fresh.metadata?._continue,
    });
    expect(rest.items.map((i) => i.metadata?.name)).toEqual(
      ['c2', 'c3', 'c4', 'kube-root-ca.crt'].filter((n) => n !== 'kube-root-ca.crt'),
    );
  });
});
