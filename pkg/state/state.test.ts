import { describe, expect, it } from 'vitest';
import { parseIp } from '../rbac/index.ts';
import { Action, Authorization, Scope } from '../xds/gen/istio/security/authorization.ts';
import {
  Address,
  LoadBalancing_Mode,
  LoadBalancing_Scope,
  TunnelProtocol,
  WorkloadStatus,
} from '../xds/gen/istio/workload/workload.ts';
import { ProxyState } from './index.ts';

const ip = (s: string) => {
  const p = parseIp(s)!;
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, p.words[0]!);
  return b;
};
const SVC = 'default/reviews.default.svc.cluster.local';

function workload(
  name: string,
  addr: string,
  opts: { node?: string; healthy?: boolean; port?: number; sa?: string; policies?: string[] } = {},
) {
  return Address.fromPartial({
    type: {
      $case: 'workload',
      value: {
        uid: `Kubernetes//Pod/default/${name}`,
        name,
        namespace: 'default',
        addresses: [ip(addr)],
        tunnelProtocol: TunnelProtocol.HBONE,
        serviceAccount: opts.sa ?? 'bookinfo-reviews',
        trustDomain: 'cluster.local',
        node: opts.node ?? 'node-a',
        status: opts.healthy === false ? WorkloadStatus.UNHEALTHY : WorkloadStatus.HEALTHY,
        services: { [SVC]: { ports: [{ servicePort: 9080, targetPort: opts.port ?? 0 }] } },
        authorizationPolicies: opts.policies ?? [],
      },
    },
  });
}

function service(lb?: { mode: LoadBalancing_Mode; scopes: LoadBalancing_Scope[] }) {
  return Address.fromPartial({
    type: {
      $case: 'service',
      value: {
        name: 'reviews',
        namespace: 'default',
        hostname: 'reviews.default.svc.cluster.local',
        addresses: [{ network: '', address: ip('10.96.0.20') }],
        ports: [{ servicePort: 9080, targetPort: 9080 }],
        ...(lb ? { loadBalancing: { mode: lb.mode, routingPreference: lb.scopes } } : {}),
      },
    },
  });
}

describe('ProxyState', () => {
  it('indexes workloads by IP and services by VIP, and removes them by resource name', () => {
    const s = new ProxyState();
    const events: string[] = [];
    s.onChange((e) => events.push(`${e.kind}:${e.removed ? '-' : '+'}`));
    s.applyAddresses(
      new Map([
        ['Kubernetes//Pod/default/r1', workload('r1', '10.1.1.5')],
        [SVC, service()],
      ]),
      [],
    );
    const w = s.workloadByIp('', '10.1.1.5')!;
    expect(w).toMatchObject({
      name: 'r1',
      hbone: true,
      healthy: true,
      principal: 'cluster.local/ns/default/sa/bookinfo-reviews',
    });
    expect(s.serviceByVip('', '10.96.0.20')?.key).toBe(SVC);
    expect(s.endpoints(s.service(SVC)!, 9080).map((e) => [e.workload.name, e.targetPort])).toEqual([
      ['r1', 9080],
    ]);
    s.applyAddresses(new Map(), ['Kubernetes//Pod/default/r1', SVC]);
    expect(s.workloadByIp('', '10.1.1.5')).toBeNull();
    expect(s.serviceByVip('', '10.96.0.20')).toBeNull();
    expect(events).toEqual(['workload:+', 'service:+', 'workload:-', 'service:-']);
  });

  it('a workload IP moving to a new workload re-indexes cleanly', () => {
    const s = new ProxyState();
    s.applyAddresses(new Map([['Kubernetes//Pod/default/r1', workload('r1', '10.1.1.5')]]), []);
    s.applyAddresses(new Map([['Kubernetes//Pod/default/r1', workload('r1', '10.1.1.6')]]), []);
    expect(s.workloadByIp('', '10.1.1.5')).toBeNull();
    expect(s.workloadByIp('', '10.1.1.6')?.name).toBe('r1');
  });

  it('picks only healthy endpoints, using the workload target port when set', () => {
    const s = new ProxyState();
    s.applyAddresses(
      new Map([
        ['a', workload('r1', '10.1.1.5', { healthy: false })],
        ['b', workload('r2', '10.1.1.6', { port: 8080 })],
        [SVC, service()],
      ]),
      [],
    );
    for (let i = 0; i < 20; i++) {
      const e = s.pickEndpoint(s.service(SVC)!, 9080, null)!;
      expect([e.workload.name, e.targetPort]).toEqual(['r2', 8080]);
    }
    expect(s.pickEndpoint(s.service(SVC)!, 1234, null)).toBeNull();
  });

  it('spreads over endpoints and honours STRICT node-local load balancing', () => {
    const s = new ProxyState();
    s.applyAddresses(
      new Map([
        ['a', workload('r1', '10.1.1.5', { node: 'node-a' })],
        ['b', workload('r2', '10.1.2.5', { node: 'node-b' })],
        [SVC, service()],
      ]),
      [],
    );
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) seen.add(s.pickEndpoint(s.service(SVC)!, 9080, null)!.workload.name);
    expect(seen).toEqual(new Set(['r1', 'r2']));
    s.applyAddresses(
      new Map([[SVC, service({ mode: LoadBalancing_Mode.STRICT, scopes: [LoadBalancing_Scope.NODE] })]]),
      [],
    );
    const src = s.workloadByIp('', '10.1.2.5')!;
    for (let i = 0; i < 20; i++) expect(s.pickEndpoint(s.service(SVC)!, 9080, src)!.workload.name).toBe('r2');
  });

  it('selects global, namespace and referenced workload policies', () => {
    const s = new ProxyState();
    const pol = (name: string, namespace: string, scope: Scope) =>
      Authorization.fromPartial({ name, namespace, scope, action: Action.ALLOW, rules: [{ clauses: [] }] });
    s.applyAuthorizations(
      new Map([
        ['istio-system/g', pol('g', 'istio-system', Scope.GLOBAL)],
        ['default/n', pol('n', 'default', Scope.NAMESPACE)],
        ['other/n', pol('n', 'other', Scope.NAMESPACE)],
        ['default/w', pol('w', 'default', Scope.WORKLOAD_SELECTOR)],
        ['default/w2', pol('w2', 'default', Scope.WORKLOAD_SELECTOR)],
      ]),
      [],
    );
    s.applyAddresses(new Map([['a', workload('r1', '10.1.1.5', { policies: ['default/w'] })]]), []);
    const keys = s.policiesFor(s.workloadByIp('', '10.1.1.5')!).map((p) => p.key);
    expect(keys.sort()).toEqual(['default/n', 'default/w', 'istio-system/g']);
    s.applyAuthorizations(new Map(), ['default/n']);
    expect(
      s
        .policiesFor(s.workloadByIp('', '10.1.1.5')!)
        .map((p) => p.key)
        .sort(),
    ).toEqual(['default/w', 'istio-system/g']);
  });

  it('rejects an uncompilable policy without applying any of the batch', () => {
    const s = new ProxyState();
    const good = Authorization.fromPartial({ name: 'ok', namespace: 'default', scope: Scope.NAMESPACE });
    const bad = Authorization.fromPartial({ name: 'bad', namespace: 'default', scope: 9 as Scope });
    expect(() =>
      s.applyAuthorizations(
        new Map([
          ['default/ok', good],
          ['default/bad', bad],
        ]),
        [],
      ),
    ).toThrow(/unknown scope/);
    expect(s.counts().policies).toBe(0);
  });
});
