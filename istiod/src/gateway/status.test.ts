import { describe, expect, it } from 'vitest';
import { CLASS_INFOS } from './classes.ts';
import type { Condition, GatewayListener, GatewayObject, GatewayStatus } from './index.ts';
import { INGRESS_CONTROLLER, MESH_CONTROLLER } from './names.ts';
import { desiredClassConditions, desiredGatewayStatus, type ServiceView } from './status.ts';

const WAYPOINT = CLASS_INFOS.get(MESH_CONTROLLER)!;
const INGRESS = CLASS_INFOS.get(INGRESS_CONTROLLER)!;
const NOW = '2025-06-01T00:00:00Z';
const LATER = '2025-06-02T00:00:00Z';

function gw(
  listeners: GatewayListener[],
  status?: GatewayStatus,
  className = 'istio-waypoint',
): GatewayObject {
  return {
    metadata: { name: 'wp', namespace: 'ns', generation: 3 },
    spec: { gatewayClassName: className, listeners },
    ...(status ? { status } : {}),
  };
}

const MESH: GatewayListener[] = [{ name: 'mesh', port: 15008, protocol: 'HBONE' }];

function svc(o: Partial<ServiceView> = {}): ServiceView {
  return {
    type: 'ClusterIP',
    clusterIPs: ['10.96.0.20'],
    ports: [15021, 15008],
    loadBalancer: [],
    readyEndpoints: 1,
    ...o,
  };
}

function byType(conditions: readonly Condition[], type: string): Condition | undefined {
  return conditions.find((c) => c.type === type);
}

describe('Gateway Programmed condition and addresses', () => {
  it.each([
    [
      'no Service yet',
      null,
      {
        status: 'False',
        reason: 'AddressNotUsable',
        message: 'Failed to assign to any requested addresses: hostname "wp.ns.svc.cluster.local" not found',
      },
      null,
    ],
    [
      'Service without ready endpoints',
      svc({ readyEndpoints: 0 }),
      {
        status: 'False',
        reason: 'AddressNotAssigned',
        message:
          'Failed to assign to any requested addresses: no instances found for hostname "wp.ns.svc.cluster.local"',
      },
      null,
    ],
    [
      'Service with a ready endpoint',
      svc(),
      {
        status: 'True',
        reason: 'Programmed',
        message: 'Resource programmed, assigned to service(s) wp.ns.svc.cluster.local:15008',
      },
      [
        { type: 'IPAddress', value: '10.96.0.20' },
        { type: 'Hostname', value: 'wp.ns.svc.cluster.local' },
      ],
    ],
  ])('%s', (_what, service, programmed, addresses) => {
    const { status, changed } = desiredGatewayStatus({
      gateway: gw(MESH),
      info: WAYPOINT,
      serviceName: 'wp',
      domainSuffix: 'cluster.local',
      service,
      now: NOW,
    });
    expect(changed).toBe(true);
    expect(byType(status.conditions, 'Accepted')).toEqual({
      type: 'Accepted',
      status: 'True',
      reason: 'Accepted',
      message: 'Resource accepted',
      observedGeneration: 3,
      lastTransitionTime: NOW,
    });
    expect(byType(status.conditions, 'Programmed')).toMatchObject({ ...programmed, observedGeneration: 3 });
    expect(status.addresses).toEqual(addresses);
  });

  it('ingress: hostnames only; a LoadBalancer waits for its address, then reports it', () => {
    const base = {
      gateway: gw([{ name: 'http', port: 80, protocol: 'HTTP' }], undefined, 'istio'),
      info: INGRESS,
      serviceName: 'wp-istio',
      domainSuffix: 'cluster.local',
      now: NOW,
    };
    const ports = [15021, 80];
    const clusterIp = desiredGatewayStatus({ ...base, service: svc({ ports }) }).status;
    expect(clusterIp.addresses).toEqual([{ type: 'Hostname', value: 'wp-istio.ns.svc.cluster.local' }]);
    expect(byType(clusterIp.conditions, 'Programmed')?.status).toBe('True');

    const pending = desiredGatewayStatus({ ...base, service: svc({ ports, type: 'LoadBalancer' }) }).status;
    expect(pending.addresses).toBeNull();
    expect(byType(pending.conditions, 'Programmed')).toMatchObject({
      status: 'False',
      reason: 'AddressNotAssigned',
      message:
        'Assigned to service(s) wp-istio.ns.svc.cluster.local:80, but failed to assign to all requested addresses: address pending for hostname "wp-istio.ns.svc.cluster.local"',
    });

    const lb = desiredGatewayStatus({
      ...base,
      service: svc({ ports, type: 'LoadBalancer', loadBalancer: ['172.18.0.5'] }),
    }).status;
    expect(lb.addresses).toEqual([{ type: 'IPAddress', value: '172.18.0.5' }]);
    expect(byType(lb.conditions, 'Programmed')?.status).toBe('True');
  });
});

describe('listener status', () => {
  const listenerStatus = (listeners: GatewayListener[], info = WAYPOINT, className = 'istio-waypoint') =>
    desiredGatewayStatus({
      gateway: gw(listeners, undefined, className),
      info,
      serviceName: 'wp',
      domainSuffix: 'cluster.local',
      service: svc(),
      now: NOW,
    }).status.listeners;

  it('accepts the waypoint mesh listener with no route kinds', () => {
    const [l] = listenerStatus(MESH);
    expect(l).toMatchObject({ name: 'mesh', supportedKinds: [], attachedRoutes: 0 });
    expect(l!.conditions.map((c) => [c.type, c.status, c.reason, c.message])).toEqual([
      ['Accepted', 'True', 'Accepted', 'No errors found'],
      ['Conflicted', 'False', 'NoConflicts', 'No errors found'],
      ['Programmed', 'True', 'Programmed', 'No errors found'],
      ['ResolvedRefs', 'True', 'ResolvedRefs', 'No errors found'],
    ]);
  });

  it.each([
    [
      'waypoint with an HTTP listener',
      [{ name: 'http', port: 80, protocol: 'HTTP' }],
      WAYPOINT,
      'Expected a single listener on port 15008 with protocol "HBONE"',
    ],
    [
      'ingress with HBONE',
      [{ name: 'mesh', port: 15008, protocol: 'HBONE' }],
      INGRESS,
      'protocol "HBONE" is only supported for waypoint proxies',
    ],
    [
      'ingress with lowercase http',
      [{ name: 'h', port: 80, protocol: 'http' }],
      INGRESS,
      'protocol "http" is unsupported. hint: "HTTP" (uppercase) may be supported',
    ],
    [
      'ingress with TCP',
      [{ name: 't', port: 9000, protocol: 'TCP' }],
      INGRESS,
      'protocol "TCP" is supported, but only when PILOT_ENABLE_ALPHA_GATEWAY_API=true is configured',
    ],
    [
      'ingress with UDP',
      [{ name: 'u', port: 53, protocol: 'UDP' }],
      INGRESS,
      'protocol "UDP" is unsupported',
    ],
  ])('rejects %s with UnsupportedProtocol', (_what, listeners, info, message) => {
    const [l] = listenerStatus(
      listeners as GatewayListener[],
      info,
      info === INGRESS ? 'istio' : 'istio-waypoint',
    );
    expect(byType(l!.conditions, 'Accepted')).toMatchObject({
      status: 'False',
      reason: 'UnsupportedProtocol',
      message,
    });
  });

  it('lists HTTPRoute and GRPCRoute for HTTP listeners and flags unsupported allowed kinds', () => {
    const [ok, bad] = listenerStatus(
      [
        { name: 'http', port: 80, protocol: 'HTTP' },
        { name: 'only-tcp', port: 81, protocol: 'HTTP', allowedRoutes: { kinds: [{ kind: 'TCPRoute' }] } },
      ],
      INGRESS,
      'istio',
    );
    expect(ok!.supportedKinds).toEqual([
      { group: 'gateway.networking.k8s.io', kind: 'HTTPRoute' },
      { group: 'gateway.networking.k8s.io', kind: 'GRPCRoute' },
    ]);
    expect(bad!.supportedKinds).toEqual([]);
    expect(byType(bad!.conditions, 'ResolvedRefs')).toMatchObject({
      status: 'False',
      reason: 'InvalidRouteKinds',
      message: 'Invalid route kinds',
    });
  });
});

describe('change detection', () => {
  it('a status fed back is unchanged; transitions keep their time; foreign conditions and route counts stay', () => {
    const first = desiredGatewayStatus({
      gateway: gw(MESH),
      info: WAYPOINT,
      serviceName: 'wp',
      domainSuffix: 'cluster.local',
      service: svc({ readyEndpoints: 0 }),
      now: NOW,
    }).status;
    const foreign: Condition = {
      type: 'example.com/Audited',
      status: 'True',
      reason: 'Yes',
      message: 'by someone else',
      lastTransitionTime: NOW,
    };
    const current: GatewayStatus = {
      conditions: [...first.conditions, foreign],
      listeners: first.listeners.map((l) => ({ ...l, attachedRoutes: 2 })),
    };
    const again = desiredGatewayStatus({
      gateway: gw(MESH, current),
      info: WAYPOINT,
      serviceName: 'wp',
      domainSuffix: 'cluster.local',
      service: svc({ readyEndpoints: 0 }),
      now: LATER,
    });
    expect(again.changed).toBe(false);

    const ready = desiredGatewayStatus({
      gateway: gw(MESH, current),
      info: WAYPOINT,
      serviceName: 'wp',
      domainSuffix: 'cluster.local',
      service: svc(),
      now: LATER,
    });
    expect(ready.changed).toBe(true);
    expect(byType(ready.status.conditions, 'Accepted')?.lastTransitionTime).toBe(NOW);
    expect(byType(ready.status.conditions, 'Programmed')).toMatchObject({
      status: 'True',
      lastTransitionTime: LATER,
    });
    expect(byType(ready.status.conditions, 'example.com/Audited')).toEqual(foreign);
    expect(ready.status.listeners[0]?.attachedRoutes).toBe(2);
  });

  it('drops the status of a listener that no longer exists', () => {
    const current: GatewayStatus = {
      listeners: [{ name: 'old', supportedKinds: [], attachedRoutes: 0, conditions: [] }],
    };
    const r = desiredGatewayStatus({
      gateway: gw(MESH, current),
      info: WAYPOINT,
      serviceName: 'wp',
      domainSuffix: 'cluster.local',
      service: null,
      now: NOW,
    });
    expect(r.changed).toBe(true);
    expect(r.status.listeners.map((l) => l.name)).toEqual(['mesh']);
  });
});

describe('GatewayClass status', () => {
  it('is Accepted by the Istio controller, written once', () => {
    const c = desiredClassConditions({ generation: 1, current: [], now: NOW });
    expect(c).toEqual([
      {
        type: 'Accepted',
        status: 'True',
        reason: 'Accepted',
        message: 'Handled by Istio controller',
        observedGeneration: 1,
        lastTransitionTime: NOW,
      },
    ]);
    expect(desiredClassConditions({ generation: 1, current: c!, now: LATER })).toBeNull();
    expect(desiredClassConditions({ generation: 2, current: c!, now: LATER })?.[0]).toMatchObject({
      observedGeneration: 2,
      lastTransitionTime: NOW,
    });
  });
});
