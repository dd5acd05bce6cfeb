import { describe, expect, it } from 'vitest';
import { ProxyState } from '../../../pkg/state/index.ts';
import { Address, TunnelProtocol, WorkloadStatus } from '../../../pkg/xds/gen/istio/workload/workload.ts';
import { routeOutbound } from './route.ts';

const b = (ip: string) => Uint8Array.from(ip.split('.').map(Number));
const SVC = 'default/reviews.default.svc.cluster.local';
const WP_SVC = 'default/waypoint.default.svc.cluster.local';

function wl(
  name: string,
  ip: string,
  o: {
    hbone?: boolean;
    svc?: Record<string, number>;
    waypoint?: string;
    sa?: string;
    healthy?: boolean;
  } = {},
) {
  return [
    `Kubernetes//Pod/default/${name}`,
    Address.fromPartial({
      type: {
        $case: 'workload',
        value: {
          uid: `Kubernetes//Pod/default/${name}`,
          name,
          namespace: 'default',
          addresses: [b(ip)],
          tunnelProtocol: o.hbone === false ? TunnelProtocol.NONE : TunnelProtocol.HBONE,
          serviceAccount: o.sa ?? name,
          trustDomain: 'cluster.local',
          status: o.healthy === false ? WorkloadStatus.UNHEALTHY : WorkloadStatus.HEALTHY,
          services: Object.fromEntries(
            Object.entries(o.svc ?? {}).map(([k, tp]) => [
              k,
              { ports: [{ servicePort: k === WP_SVC ? 15008 : 9080, targetPort: tp }] },
            ]),
          ),
          ...(o.waypoint
            ? {
                waypoint: {
                  destination: { $case: 'address', value: { network: '', address: b(o.waypoint) } },
                  hboneMtlsPort: 15008,
                },
              }
            : {}),
        },
      },
    }),
  ] as const;
}

function svc(key: string, vip: string, port: number, waypoint?: string) {
  const [ns, host] = key.split('/') as [string, string];
  return [
    key,
    Address.fromPartial({
      type: {
        $case: 'service',
        value: {
          name: host.split('.')[0]!,
          namespace: ns,
          hostname: host,
          addresses: [{ network: '', address: b(vip) }],
          ports: [{ servicePort: port, targetPort: port === 15008 ? 15008 : 9080 }],
          ...(waypoint
            ? {
                waypoint: {
                  destination: { $case: 'address', value: { network: '', address: b(waypoint) } },
                  hboneMtlsPort: 15008,
                },
              }
            : {}),
        },
      },
    }),
  ] as const;
}

function state(entries: ReadonlyArray<readonly [string, Address]>) {
  const s = new ProxyState();
  s.applyAddresses(new Map(entries), []);
  return s;
}

describe('routeOutbound', () => {
  it('captured workload IP → HBONE to pod:15008 with its identity', () => {
    const s = state([wl('reviews-1', '10.1.0.5')]);
    expect(routeOutbound(s, null, 'default', '', '10.1.0.5', 9080)).toMatchObject({
      kind: 'hbone',
      peerIp: '10.1.0.5',
      peerPort: 15008,
      authority: '10.1.0.5:9080',
      identities: [{ trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'reviews-1' }],
      viaWaypoint: false,
    });
  });

  it('uncaptured workload IP → plain TCP', () => {
    const s = state([wl('legacy', '10.1.0.6', { hbone: false })]);
    expect(routeOutbound(s, null, 'default', '', '10.1.0.6', 80)).toMatchObject({
      kind: 'direct',
      ip: '10.1.0.6',
      port: 80,
    });
  });

  it('service VIP → healthy endpoint with the target port, HBONE when captured', () => {
    const s = state([svc(SVC, '10.96.0.20', 9080), wl('reviews-1', '10.1.0.5', { svc: { [SVC]: 9081 } })]);
    expect(routeOutbound(s, null, 'default', '', '10.96.0.20', 9080)).toMatchObject({
      kind: 'hbone',
      peerIp: '10.1.0.5',
      authority: '10.1.0.5:9081',
      service: { hostname: 'reviews.default.svc.cluster.local' },
    });
  });

  it('service VIP with only unhealthy or no endpoints → deny with a reason', () => {
    const s = state([
      svc(SVC, '10.96.0.20', 9080),
      wl('reviews-1', '10.1.0.5', { svc: { [SVC]: 9080 }, healthy: false }),
    ]);
    expect(routeOutbound(s, null, 'default', '', '10.96.0.20', 9080)).toMatchObject({
      kind: 'deny',
      reason: /no healthy upstream/,
    });
    expect(routeOutbound(s, null, 'default', '', '10.96.0.20', 1234)).toMatchObject({ kind: 'deny' });
  });

  it('service with a waypoint → HBONE to a waypoint pod, authority = VIP:port', () => {
    const s = state([
      svc(SVC, '10.96.0.20', 9080, '10.96.0.99'),
      svc(WP_SVC, '10.96.0.99', 15008),
      wl('waypoint-1', '10.1.0.50', { svc: { [WP_SVC]: 15008 }, sa: 'waypoint' }),
      wl('reviews-1', '10.1.0.5', { svc: { [SVC]: 9080 } }),
    ]);
    expect(routeOutbound(s, null, 'default', '', '10.96.0.20', 9080)).toMatchObject({
      kind: 'hbone',
      peerIp: '10.1.0.50',
      authority: '10.96.0.20:9080',
      viaWaypoint: true,
      identities: [{ serviceAccount: 'waypoint' }],
    });
    // The waypoint's own traffic to the service is not sent back into itself.
    const wp = s.workloadByIp('', '10.1.0.50');
    expect(routeOutbound(s, wp, 'default', '', '10.96.0.20', 9080)).toMatchObject({
      kind: 'hbone',
      peerIp: '10.1.0.5',
      viaWaypoint: false,
    });
  });

  it('workload with a waypoint → waypoint; a missing waypoint denies', () => {
    const s = state([
      svc(WP_SVC, '10.96.0.99', 15008),
      wl('waypoint-1', '10.1.0.50', { svc: { [WP_SVC]: 15008 } }),
      wl('db', '10.1.0.7', { waypoint: '10.96.0.99' }),
    ]);
    expect(routeOutbound(s, null, 'default', '', '10.1.0.7', 5432)).toMatchObject({
      kind: 'hbone',
      peerIp: '10.1.0.50',
      authority: '10.1.0.7:5432',
      viaWaypoint: true,
    });
    const broken = state([wl('db', '10.1.0.7', { waypoint: '10.96.0.98' })]);
    expect(routeOutbound(broken, null, 'default', '', '10.1.0.7', 5432)).toMatchObject({
      kind: 'deny',
      reason: 'waypoint not found',
    });
  });

  it('unknown destination → passthrough', () => {
    expect(routeOutbound(new ProxyState(), null, 'default', '', '192.0.2.10', 443)).toEqual({
      kind: 'direct',
      ip: '192.0.2.10',
      port: 443,
      workload: null,
      service: null,
    });
  });
});
