/**
 * The waypoint L7 compiler on Bookinfo behind the namespace waypoint: the C1–C9 configurations of
 * SCENARIOS.md written as VirtualService + DestinationRule and as HTTPRoute, precedence between them,
 * ReferenceGrant, invalid input, waypoint policies, scopes, endpoint updates and status.
 */
import { describe, expect, it } from 'vitest';
import {
  AuthzPolicy_Action,
  LoadBalancer_Simple,
  type Route,
  type ServiceConfig,
} from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import { ns, pod, svc } from '../index/testdata.ts';
import type { StatusWant } from './compiler.ts';
import {
  at,
  BOOKINFO_PODS,
  backend,
  bookinfoPod,
  destinationRule,
  grpcRoute,
  httpRoute,
  key,
  referenceGrant,
  requestAuthentication,
  reviewsSubsets,
  serviceParent,
  targetedPolicy,
  virtualService,
  WAYPOINT,
  World,
} from './testdata.ts';

function paths(c: ServiceConfig): string[] {
  return c.routes.map((r) => {
    const p = r.matches[0]?.path?.kind;
    return p ? `${p.$case}:${p.value}` : '*';
  });
}

function backends(r: Route | undefined) {
  return (r?.action?.backends ?? []).map((b) => ({
    service: b.service,
    subset: b.subset,
    weight: b.weight,
    port: b.port,
    errorStatus: b.errorStatus,
  }));
}

function routeStatus(
  w: World,
  kind: string,
  name: string,
  namespace = 'default',
): Array<Record<string, string | undefined>> | undefined {
  const s = w.l7.status(`${kind}/${namespace}/${name}`) as
    | Extract<StatusWant, { parents: unknown }>
    | undefined;
  return s?.parents.map((p) => ({
    ref: p.parentRef.name,
    ...Object.fromEntries(p.conditions.map((c) => [c.type, `${c.status}/${c.reason}/${c.message}`])),
  }));
}

function condition(w: World, objectKey: string) {
  const s = w.l7.status(objectKey) as Extract<StatusWant, { condition: unknown }> | undefined;
  return s?.condition;
}

const productpageAllowList = () =>
  httpRoute('bookinfo', {
    parentRefs: [serviceParent('productpage')],
    rules: [
      {
        matches: [
          { path: { type: 'Exact', value: '/productpage' } },
          { path: { type: 'Exact', value: '/login' } },
          { path: { type: 'Exact', value: '/logout' } },
          { path: { type: 'PathPrefix', value: '/static/' } },
          { path: { type: 'PathPrefix', value: '/api/v1/products' } },
        ],
        backendRefs: [backend('productpage')],
      },
    ],
  });

describe('bound services and scopes', () => {
  it('every Bookinfo service is bound to the namespace waypoint and has a config with its endpoints', () => {
    const w = new World();
    expect([...w.l7.scope(WAYPOINT)].sort()).toEqual(
      ['details', 'productpage', 'ratings', 'reviews', 'reviews-v1', 'reviews-v2', 'reviews-v3']
        .map((s) => key(s))
        .sort(),
    );
    const reviews = w.config('reviews');
    expect(reviews).toMatchObject({
      hostname: 'reviews.default.svc.cluster.local',
      serviceName: 'reviews',
      waypoints: [WAYPOINT],
      ports: [{ port: 9080, targetPort: 9080, name: 'http', protocol: 'http' }],
      routes: [],
      resolution: '',
    });
    expect(reviews.endpoints.map((e) => [e.address, e.canonicalRevision, e.hbone, e.healthy])).toEqual([
      ['10.244.1.13', 'v1', true, true],
      ['10.244.1.14', 'v2', true, true],
      ['10.244.1.15', 'v3', true, true],
    ]);
    expect(reviews.endpoints[0]).toMatchObject({
      identity: 'spiffe://cluster.local/ns/default/sa/bookinfo-reviews',
      workloadName: 'reviews-v1',
      ports: { 9080: 9080 },
      serviceAccount: 'bookinfo-reviews',
    });
    // The waypoint's own pod is no service's endpoint.
    expect(w.l7.configNames().every((n) => !n.includes('waypoint'))).toBe(true);
  });

  it('services that are not bound to a waypoint get nothing unless a route sends to them', () => {
    const w = new World();
    w.apply('Namespace', ns('other'));
    w.apply(
      'Service',
      svc('ratings', { namespace: 'other', clusterIP: '10.96.1.1', ports: [{ name: 'http', port: 9080 }] }),
    );
    w.flush();
    expect(w.has('ratings', 'other')).toBe(false);
  });

  it('removing the waypoint label removes the configs and empties the scope', () => {
    const w = new World();
    w.apply('Namespace', ns('default', { 'istio.io/dataplane-mode': 'ambient' }));
    const change = w.flush();
    expect(w.l7.configNames()).toEqual([]);
    expect(change.scopes.get(WAYPOINT)?.size).toBe(0);
    expect([...change.resources.values()].every((v) => v === null)).toBe(true);
  });
});

describe('C1 path allow-list', () => {
  it('HTTPRoute: one route per match, exact paths first (longest first), then longest PathPrefix; no catch-all', () => {
    const w = new World();
    w.apply('HTTPRoute', productpageAllowList());
    w.flush();
    const c = w.config('productpage');
    expect(paths(c)).toEqual([
      'exact:/productpage',
      'exact:/logout',
      'exact:/login',
      'pathSeparatedPrefix:/api/v1/products',
      'pathSeparatedPrefix:/static',
    ]);
    expect(c.routes.every((r) => r.name === 'default.bookinfo.0')).toBe(true);
    expect(c.routeSource).toEqual({ kind: 'HTTPRoute', namespace: 'default', name: 'bookinfo' });
    expect(backends(c.routes[0])).toEqual([
      { service: key('productpage'), subset: '', weight: 1, port: 9080, errorStatus: 0 },
    ]);
    expect(routeStatus(w, 'HTTPRoute', 'bookinfo')).toEqual([
      {
        ref: 'productpage',
        Accepted: 'true/Accepted/Route was valid',
        ResolvedRefs: 'true/ResolvedRefs/All references resolved',
        ResolvedWaypoints: 'true/ResolvedWaypoints/All waypoints resolved',
      },
    ]);
  });

  it('VirtualService: the rule keeps its ORed matches, plain prefixes, in order', () => {
    const w = new World();
    w.apply(
      'VirtualService',
      virtualService('productpage', {
        hosts: ['productpage'],
        http: [
          {
            match: [
              { uri: { exact: '/productpage' } },
              { uri: { prefix: '/static' } },
              { uri: { exact: '/login' } },
              { uri: { exact: '/logout' } },
              { uri: { prefix: '/api/v1/products' } },
            ],
            route: [{ destination: { host: 'productpage', port: { number: 9080 } } }],
          },
        ],
      }),
    );
    w.flush();
    const [r] = w.config('productpage').routes;
    expect(
      r?.matches.map((m) => {
        const k = m.path?.kind;
        return k ? `${k.$case}:${k.value}` : '';
      }),
    ).toEqual([
      'exact:/productpage',
      'prefix:/static',
      'exact:/login',
      'exact:/logout',
      'prefix:/api/v1/products',
    ]);
    expect(w.config('productpage').routeSource?.kind).toBe('VirtualService');
    expect(condition(w, 'VirtualService/default/productpage')).toMatchObject({
      status: true,
      reason: 'Accepted',
    });
  });

  it('a parentRef port limits the routes to that port', () => {
    const w = new World();
    const r = productpageAllowList();
    w.apply('HTTPRoute', {
      ...r,
      spec: { ...r.spec, parentRefs: [serviceParent('productpage', { port: 9080 })] },
    });
    w.flush();
    expect(w.config('productpage').routes.every((x) => x.ports.length === 1 && x.ports[0] === 9080)).toBe(
      true,
    );
  });
});

describe('C2 subsets', () => {
  const allTo = (subset: string) =>
    virtualService('reviews', {
      hosts: ['reviews'],
      http: [{ route: [{ destination: { host: 'reviews', subset } }] }],
    });

  it('DestinationRule subsets resolve endpoints by pod labels; route all to v1, then v2', () => {
    const w = new World();
    w.apply('DestinationRule', reviewsSubsets()).apply('VirtualService', allTo('v1'));
    w.flush();
    const c = w.config('reviews');
    expect(c.subsets.map((s) => [s.name, s.labels])).toEqual([
      ['v1', { version: 'v1' }],
      ['v2', { version: 'v2' }],
      ['v3', { version: 'v3' }],
    ]);
    expect(c.endpoints.map((e) => e.subsets)).toEqual([['v1'], ['v2'], ['v3']]);
    expect(c.routes).toHaveLength(1);
    expect(c.routes[0]?.matches).toEqual([]);
    // A lone destination without a weight gets everything; its port is the service's only port.
    expect(backends(c.routes[0])).toEqual([
      { service: key('reviews'), subset: 'v1', weight: 100, port: 9080, errorStatus: 0 },
    ]);

    w.apply('VirtualService', allTo('v2'));
    const change = w.flush();
    expect([...change.resources.keys()]).toEqual([key('reviews')]);
    expect(backends(w.config('reviews').routes[0])[0]?.subset).toBe('v2');
  });

  it('a subset without a DestinationRule answers 503 and is reported', () => {
    const w = new World();
    w.apply('VirtualService', allTo('v1'));
    const change = w.flush();
    expect(backends(w.config('reviews').routes[0])[0]).toMatchObject({ subset: 'v1', errorStatus: 503 });
    expect(condition(w, 'VirtualService/default/reviews')).toMatchObject({
      status: false,
      reason: 'Invalid',
    });
    expect(change.problems.map((p) => p.message).join()).toMatch(/subset "v1" .* not defined/);
  });

  it('HTTPRoute: backendRefs to the per-version Services', () => {
    const w = new World();
    w.apply(
      'HTTPRoute',
      httpRoute('reviews', {
        parentRefs: [serviceParent('reviews')],
        rules: [{ backendRefs: [backend('reviews-v2')] }],
      }),
    );
    w.flush();
    const c = w.config('reviews');
    expect(paths(c)).toEqual(['pathSeparatedPrefix:/']);
    expect(backends(c.routes[0])).toEqual([
      { service: key('reviews-v2'), subset: '', weight: 1, port: 9080, errorStatus: 0 },
    ]);
    expect(w.config('reviews-v2').endpoints.map((e) => e.canonicalRevision)).toEqual(['v2']);
  });

  it('moves an endpoint between subsets when its pod labels change, touching only that service', () => {
    const w = new World();
    w.apply('DestinationRule', reviewsSubsets());
    w.flush();
    const v1 = BOOKINFO_PODS.find((p) => p.name === 'reviews-v1-abc')!;
    w.apply('Pod', bookinfoPod(v1, { version: 'v3' }));
    const change = w.flush();
    expect(change.resources.has(key('reviews'))).toBe(true);
    expect(change.resources.has(key('details'))).toBe(false);
    expect(w.config('reviews').endpoints.map((e) => e.subsets)).toEqual([['v3'], ['v2'], ['v3']]);
    w.delete('Pod', bookinfoPod(v1));
    w.flush();
    expect(w.config('reviews').endpoints.map((e) => e.address)).toEqual(['10.244.1.14', '10.244.1.15']);
  });
});

describe('C3 weights', () => {
  it('VirtualService 15/25/60', () => {
    const w = new World();
    w.apply('DestinationRule', reviewsSubsets()).apply(
      'VirtualService',
      virtualService('reviews', {
        hosts: ['reviews'],
        http: [
          {
            route: [
              { destination: { host: 'reviews', subset: 'v1' }, weight: 15 },
              { destination: { host: 'reviews', subset: 'v2' }, weight: 25 },
              { destination: { host: 'reviews', subset: 'v3' }, weight: 60 },
            ],
          },
        ],
      }),
    );
    w.flush();
    expect(backends(w.config('reviews').routes[0]).map((b) => [b.subset, b.weight])).toEqual([
      ['v1', 15],
      ['v2', 25],
      ['v3', 60],
    ]);
  });

  it('VirtualService blue-green 100/0 drops the 0-weight destination', () => {
    const w = new World();
    w.apply('DestinationRule', reviewsSubsets()).apply(
      'VirtualService',
      virtualService('reviews', {
        hosts: ['reviews'],
        http: [
          {
            route: [
              { destination: { host: 'reviews', subset: 'v1' }, weight: 100 },
              { destination: { host: 'reviews', subset: 'v2' }, weight: 0 },
            ],
          },
        ],
      }),
    );
    w.flush();
    expect(backends(w.config('reviews').routes[0]).map((b) => [b.subset, b.weight])).toEqual([['v1', 100]]);
  });

  it('HTTPRoute 90/10 and weight 0 excluded; all zero answers 500', () => {
    const w = new World();
    w.apply(
      'HTTPRoute',
      httpRoute('reviews', {
        parentRefs: [serviceParent('reviews')],
        rules: [
          {
            matches: [{ path: { type: 'PathPrefix', value: '/a' } }],
            backendRefs: [
              backend('reviews-v1', { weight: 90 }),
              backend('reviews-v2', { weight: 10 }),
              backend('reviews-v3', { weight: 0 }),
            ],
          },
          {
            matches: [{ path: { type: 'PathPrefix', value: '/b' } }],
            backendRefs: [backend('reviews-v1', { weight: 0 })],
          },
        ],
      }),
    );
    w.flush();
    const [a, b] = w.config('reviews').routes;
    expect(backends(a).map((x) => [x.service, x.weight])).toEqual([
      [key('reviews-v1'), 90],
      [key('reviews-v2'), 10],
    ]);
    expect(b?.action?.directResponse).toEqual({ status: 500, body: '' });
    expect(b?.action?.backends).toEqual([]);
  });
});

describe('C4 header match', () => {
  it('VirtualService: end-user exact quentin → v3, user-agent regex → v3, others v2', () => {
    const w = new World();
    w.apply('DestinationRule', reviewsSubsets()).apply(
      'VirtualService',
      virtualService('reviews', {
        hosts: ['reviews.default.svc.cluster.local'],
        http: [
          {
            match: [{ headers: { 'end-user': { exact: 'quentin' } } }],
            route: [{ destination: { host: 'reviews', subset: 'v3' } }],
          },
          {
            match: [{ headers: { 'User-Agent': { regex: '.*Mobile.*' } } }],
            route: [{ destination: { host: 'reviews', subset: 'v3' } }],
          },
          { route: [{ destination: { host: 'reviews', subset: 'v2' } }] },
        ],
      }),
    );
    w.flush();
    const routes = w.config('reviews').routes;
    expect(routes).toHaveLength(3);
    expect(routes[0]?.matches[0]?.headers).toEqual([
      {
        name: 'end-user',
        value: { kind: { $case: 'exact', value: 'quentin' }, ignoreCase: false },
        invert: false,
      },
    ]);
    expect(routes[1]?.matches[0]?.headers[0]).toMatchObject({
      name: 'user-agent',
      value: { kind: { $case: 'regex', value: '.*Mobile.*' } },
    });
    expect(routes[2]?.matches).toEqual([]);
  });

  it('HTTPRoute: a header match outranks the plain prefix of another rule; names are lower-cased', () => {
    const w = new World();
    w.apply(
      'HTTPRoute',
      httpRoute('reviews', {
        parentRefs: [serviceParent('reviews')],
        rules: [
          { backendRefs: [backend('reviews-v2')] },
          {
            matches: [
              {
                headers: [
                  { name: 'End-User', value: 'quentin' },
                  { name: 'end-user', value: 'ignored-duplicate' },
                ],
              },
              { headers: [{ type: 'RegularExpression', name: 'user-agent', value: '.*Mobile.*' }] },
            ],
            backendRefs: [backend('reviews-v3')],
          },
        ],
      }),
    );
    w.flush();
    const routes = w.config('reviews').routes;
    // Header rules (PathPrefix "/" + 1 header) precede the rule without matches.
    expect(routes.map((r) => r.matches[0]?.headers.map((h) => h.name).join())).toEqual([
      'end-user',
      'user-agent',
      '',
    ]);
    expect(routes[0]?.matches[0]?.headers).toHaveLength(1);
    expect(backends(routes[2])[0]?.service).toBe(key('reviews-v2'));
  });
});

describe('C5 mirror', () => {
  it('VirtualService mirror with mirrorPercentage', () => {
    const w = new World();
    w.apply('DestinationRule', reviewsSubsets()).apply(
      'VirtualService',
      virtualService('reviews', {
        hosts: ['reviews'],
        http: [
          {
            route: [{ destination: { host: 'reviews', subset: 'v2' } }],
            mirror: { host: 'reviews', subset: 'v3' },
            mirrorPercentage: { value: 100 },
          },
        ],
      }),
    );
    w.flush();
    expect(w.config('reviews').routes[0]?.action?.mirrors).toEqual([
      { service: key('reviews'), port: 9080, subset: 'v3', percent: 100 },
    ]);
  });

  it('HTTPRoute RequestMirror with fraction and percent', () => {
    const w = new World();
    w.apply(
      'HTTPRoute',
      httpRoute('reviews', {
        parentRefs: [serviceParent('reviews')],
        rules: [
          {
            filters: [
              {
                type: 'RequestMirror',
                requestMirror: {
                  backendRef: backend('reviews-v3'),
                  fraction: { numerator: 1, denominator: 4 },
                },
              },
              { type: 'RequestMirror', requestMirror: { backendRef: backend('reviews-v1'), percent: 10 } },
            ],
            backendRefs: [backend('reviews-v2')],
          },
        ],
      }),
    );
    w.flush();
    expect(w.config('reviews').routes[0]?.action?.mirrors).toEqual([
      { service: key('reviews-v3'), port: 9080, subset: '', percent: 25 },
      { service: key('reviews-v1'), port: 9080, subset: '', percent: 10 },
    ]);
  });
});

describe('C6/C7 faults', () => {
  it('abort 403 at 30% for end-user testing-user on ratings; delay 7s at 50% on details', () => {
    const w = new World();
    w.apply(
      'VirtualService',
      virtualService('ratings', {
        hosts: ['ratings'],
        http: [
          {
            match: [{ headers: { 'end-user': { exact: 'testing-user' } } }],
            fault: { abort: { httpStatus: 403, percentage: { value: 30 } } },
            route: [{ destination: { host: 'ratings' } }],
          },
          { route: [{ destination: { host: 'ratings' } }] },
        ],
      }),
    ).apply(
      'VirtualService',
      virtualService('details', {
        hosts: ['details'],
        http: [
          {
            fault: { delay: { fixedDelay: '7s', percentage: { value: 50 } } },
            route: [{ destination: { host: 'details' } }],
          },
        ],
      }),
    );
    w.flush();
    expect(w.config('ratings').routes[0]?.action?.fault).toEqual({
      abort: { httpStatus: 403, grpcStatus: 0, percent: 30 },
      delay: undefined,
    });
    expect(w.config('details').routes[0]?.action?.fault?.delay).toEqual({ fixedDelayMs: 7000, percent: 50 });
  });
});

describe('C8 timeouts and retries', () => {
  it('VirtualService timeout 1s and attempts 3 / 5xx; no retries → Istio default; attempts 0 → none', () => {
    const w = new World();
    w.apply(
      'VirtualService',
      virtualService('reviews', {
        hosts: ['reviews'],
        http: [
          {
            match: [{ uri: { prefix: '/a' } }],
            timeout: '1s',
            retries: { attempts: 3, retryOn: '5xx' },
            route: [{ destination: { host: 'reviews' } }],
          },
          {
            match: [{ uri: { prefix: '/b' } }],
            retries: { attempts: 2, retryOn: 'gateway-error,503', perTryTimeout: '250ms' },
            route: [{ destination: { host: 'reviews' } }],
          },
          {
            match: [{ uri: { prefix: '/c' } }],
            retries: { attempts: 0 },
            route: [{ destination: { host: 'reviews' } }],
          },
          { route: [{ destination: { host: 'reviews' } }] },
        ],
      }),
    );
    w.flush();
    const [a, b, c, d] = w.config('reviews').routes;
    expect(a?.action?.timeoutMs).toBe(1000);
    expect(a?.action?.retries).toEqual({
      attempts: 3,
      perTryTimeoutMs: 0,
      retryOn: ['5xx'],
      retriableStatusCodes: [],
      backoffBaseMs: 0,
    });
    expect(b?.action?.retries).toEqual({
      attempts: 2,
      perTryTimeoutMs: 250,
      retryOn: ['gateway-error', 'retriable-status-codes'],
      retriableStatusCodes: [503],
      backoffBaseMs: 0,
    });
    expect(c?.action?.retries).toEqual({
      attempts: 0,
      perTryTimeoutMs: 0,
      retryOn: [],
      retriableStatusCodes: [],
      backoffBaseMs: 0,
    });
    expect(d?.action?.retries).toEqual({
      attempts: 2,
      perTryTimeoutMs: 0,
      retryOn: ['connect-failure', 'refused-stream', 'unavailable', 'cancelled', 'retriable-status-codes'],
      retriableStatusCodes: [503],
      backoffBaseMs: 0,
    });
    expect(d?.action?.timeoutMs).toBe(0);
  });

  it('HTTPRoute timeouts and the experimental retry stanza', () => {
    const w = new World();
    w.apply(
      'HTTPRoute',
      httpRoute('reviews', {
        parentRefs: [serviceParent('reviews')],
        rules: [
          {
            matches: [{ path: { type: 'PathPrefix', value: '/a' } }],
            timeouts: { request: '1s', backendRequest: '400ms' },
            retry: { attempts: 3, codes: [503, 502], backoff: '100ms' },
            backendRefs: [backend('reviews')],
          },
          {
            matches: [{ path: { type: 'PathPrefix', value: '/b' } }],
            timeouts: { request: '2s' },
            backendRefs: [backend('reviews')],
          },
        ],
      }),
    );
    w.flush();
    const [a, b] = w.config('reviews').routes;
    expect(a?.action?.timeoutMs).toBe(1000);
    expect(a?.action?.retries).toEqual({
      attempts: 3,
      perTryTimeoutMs: 400,
      retryOn: ['connect-failure', 'refused-stream', 'unavailable', 'cancelled', 'retriable-status-codes'],
      retriableStatusCodes: [503, 502],
      backoffBaseMs: 100,
    });
    expect(b?.action?.timeoutMs).toBe(2000);
    expect(b?.action?.retries?.attempts).toBe(2);
  });
});

describe('C9 traffic policy', () => {
  it('DestinationRule connection pool, outlier detection and load balancer', () => {
    const w = new World();
    w.apply(
      'DestinationRule',
      destinationRule('productpage', {
        host: 'productpage',
        trafficPolicy: {
          loadBalancer: { simple: 'LEAST_CONN' },
          connectionPool: {
            tcp: { maxConnections: 1, connectTimeout: '30ms' },
            http: { http1MaxPendingRequests: 1, http2MaxRequests: 3, maxRequestsPerConnection: 1 },
          },
          outlierDetection: {
            consecutive5xxErrors: 1,
            interval: '1s',
            baseEjectionTime: '3m',
            maxEjectionPercent: 100,
          },
        },
      }),
    );
    w.flush();
    expect(w.config('productpage').trafficPolicy).toEqual({
      loadBalancer: { simple: LoadBalancer_Simple.LEAST_REQUEST, consistentHash: undefined },
      connectionPool: {
        maxConnections: 1,
        http1MaxPendingRequests: 1,
        http2MaxRequests: 3,
        maxRequestsPerConnection: 1,
        maxRetries: 0,
        connectTimeoutMs: 30,
        idleTimeoutMs: 0,
      },
      outlierDetection: {
        enabled: true,
        consecutive5xxErrors: 1,
        consecutiveGatewayErrors: 0,
        intervalMs: 1000,
        baseEjectionTimeMs: 180_000,
        maxEjectionPercent: 100,
        minHealthPercent: 0,
      },
    });
    expect(condition(w, 'DestinationRule/default/productpage')).toMatchObject({
      status: true,
      reason: 'Accepted',
    });
  });

  it('consistent hash on a header; subset traffic policy kept; waypoint namespace rule wins over root', () => {
    const w = new World();
    w.apply('Namespace', ns('istio-system'));
    w.apply(
      'DestinationRule',
      destinationRule(
        'root',
        { host: 'reviews.default.svc.cluster.local', trafficPolicy: { loadBalancer: { simple: 'RANDOM' } } },
        { namespace: 'istio-system' },
      ),
    ).apply(
      'DestinationRule',
      destinationRule('reviews', {
        host: 'reviews',
        trafficPolicy: {
          loadBalancer: { consistentHash: { httpHeaderName: 'x-user', minimumRingSize: 1024 } },
        },
        subsets: [
          {
            name: 'v1',
            labels: { version: 'v1' },
            trafficPolicy: { connectionPool: { tcp: { maxConnections: 5 } } },
          },
        ],
      }),
    );
    w.flush();
    const c = w.config('reviews');
    expect(c.trafficPolicy?.loadBalancer?.consistentHash).toEqual({
      key: { $case: 'httpHeaderName', value: 'x-user' },
      minimumRingSize: 1024n,
    });
    expect(c.subsets[0]?.trafficPolicy?.connectionPool?.maxConnections).toBe(5);
    // ratings has only the root-namespace rule.
    w.apply(
      'DestinationRule',
      destinationRule(
        'root-ratings',
        { host: 'ratings.default.svc.cluster.local', trafficPolicy: { loadBalancer: { simple: 'RANDOM' } } },
        { namespace: 'istio-system' },
      ),
    );
    w.flush();
    expect(w.config('ratings').trafficPolicy?.loadBalancer?.simple).toBe(LoadBalancer_Simple.RANDOM);
  });
});

describe('precedence', () => {
  const vsAll = (name: string, subset: string, created: string, host = 'reviews') =>
    virtualService(
      name,
      { hosts: [host], http: [{ route: [{ destination: { host: 'reviews', subset } }] }] },
      { created },
    );

  it('HTTPRoutes attached to a service win over VirtualServices for its host; the VirtualService says so', () => {
    const w = new World();
    w.apply('DestinationRule', reviewsSubsets())
      .apply('VirtualService', vsAll('reviews-vs', 'v1', at(0)))
      .apply(
        'HTTPRoute',
        httpRoute(
          'reviews',
          { parentRefs: [serviceParent('reviews')], rules: [{ backendRefs: [backend('reviews-v3')] }] },
          { created: at(5) },
        ),
      );
    w.flush();
    const c = w.config('reviews');
    expect(c.routeSource?.kind).toBe('HTTPRoute');
    expect(backends(c.routes[0])[0]?.service).toBe(key('reviews-v3'));
    expect(condition(w, 'VirtualService/default/reviews-vs')).toMatchObject({
      status: false,
      reason: 'Overridden',
      message: expect.stringContaining('HTTPRoute/GRPCRoute attached to the service take precedence'),
    });
  });

  it('the oldest VirtualService for a host wins; host forms short, name.ns and FQDN all match', () => {
    const w = new World();
    w.apply('DestinationRule', reviewsSubsets())
      .apply('VirtualService', vsAll('newer', 'v2', at(10), 'reviews.default'))
      .apply('VirtualService', vsAll('older', 'v1', at(1), 'reviews.default.svc.cluster.local'));
    w.flush();
    expect(backends(w.config('reviews').routes[0])[0]?.subset).toBe('v1');
    expect(condition(w, 'VirtualService/default/newer')).toMatchObject({ reason: 'Overridden' });
    w.delete('VirtualService', vsAll('older', 'v1', at(1)));
    w.flush();
    expect(backends(w.config('reviews').routes[0])[0]?.subset).toBe('v2');
  });

  it('VirtualServices for other gateways, or from unrelated namespaces, do not apply', () => {
    const w = new World();
    w.apply(
      'VirtualService',
      virtualService('gw-only', {
        hosts: ['reviews'],
        gateways: ['bookinfo-gateway'],
        http: [{ route: [{ destination: { host: 'reviews' } }] }],
      }),
    )
      .apply(
        'VirtualService',
        virtualService(
          'elsewhere',
          {
            hosts: ['reviews.default.svc.cluster.local'],
            http: [{ route: [{ destination: { host: 'reviews.default.svc.cluster.local' } }] }],
          },
          { namespace: 'team-b' },
        ),
      )
      .apply(
        'VirtualService',
        virtualService(
          'mesh',
          {
            hosts: ['details'],
            gateways: ['mesh'],
            http: [{ route: [{ destination: { host: 'details' } }] }],
          },
          { apiVersion: 'networking.istio.io/v1alpha3' },
        ),
      );
    w.flush();
    expect(w.config('reviews').routes).toEqual([]);
    expect(w.l7.status('VirtualService/team-b/elsewhere')).toBeUndefined();
    expect(w.config('details').routes).toHaveLength(1);
  });

  it('across HTTPRoutes: an exact path in a newer route beats a prefix in an older one; equal matches go to the older', () => {
    const w = new World();
    w.apply(
      'HTTPRoute',
      httpRoute(
        'old',
        {
          parentRefs: [serviceParent('reviews')],
          rules: [
            {
              matches: [{ path: { type: 'PathPrefix', value: '/x' } }],
              backendRefs: [backend('reviews-v1')],
            },
          ],
        },
        { created: at(1) },
      ),
    ).apply(
      'HTTPRoute',
      httpRoute(
        'new',
        {
          parentRefs: [serviceParent('reviews')],
          rules: [
            { matches: [{ path: { type: 'Exact', value: '/x' } }], backendRefs: [backend('reviews-v2')] },
            {
              matches: [{ path: { type: 'PathPrefix', value: '/x' } }],
              backendRefs: [backend('reviews-v3')],
            },
            {
              matches: [{ path: { type: 'PathPrefix', value: '/x' }, method: 'GET' }],
              backendRefs: [backend('reviews-v3')],
            },
          ],
        },
        { created: at(2) },
      ),
    );
    w.flush();
    const c = w.config('reviews');
    expect(c.routes.map((r) => `${r.source?.name}:${r.name}:${r.matches[0]?.method ? 'GET' : ''}`)).toEqual([
      'new:default.new.0:',
      'new:default.new.2:GET',
      'old:default.old.0:',
      'new:default.new.1:',
    ]);
  });

  it('GRPCRoute rules merge into the same table', () => {
    const w = new World();
    w.apply(
      'GRPCRoute',
      grpcRoute('grpc', {
        parentRefs: [serviceParent('reviews')],
        rules: [
          {
            matches: [{ method: { service: 'bookinfo.Reviews', method: 'Get' } }],
            backendRefs: [backend('reviews-v1')],
          },
          { matches: [{ method: { service: 'bookinfo.Reviews' } }], backendRefs: [backend('reviews-v2')] },
        ],
      }),
    );
    w.flush();
    expect(paths(w.config('reviews'))).toEqual(['exact:/bookinfo.Reviews/Get', 'prefix:/bookinfo.Reviews/']);
    expect(routeStatus(w, 'GRPCRoute', 'grpc')?.[0]?.Accepted).toBe('true/Accepted/Route was valid');
  });
});

describe('ReferenceGrant and backends outside the waypoint', () => {
  const setup = () => {
    const w = new World();
    w.apply('Namespace', ns('other'));
    w.apply(
      'Service',
      svc('ratings', {
        namespace: 'other',
        clusterIP: '10.96.1.1',
        ports: [{ name: 'http', port: 9080, targetPort: 9080 }],
      }),
    );
    w.apply(
      'Pod',
      pod('ratings-x', {
        namespace: 'other',
        ip: '10.244.2.1',
        labels: { app: 'ratings' },
        ports: [{ containerPort: 9080 }],
      }),
    );
    w.apply(
      'HTTPRoute',
      httpRoute('cross', {
        parentRefs: [serviceParent('ratings')],
        rules: [{ backendRefs: [backend('ratings', { namespace: 'other' })] }],
      }),
    );
    w.flush();
    return w;
  };

  it('a cross-namespace backend without a ReferenceGrant is RefNotPermitted and answers 500', () => {
    const w = setup();
    expect(backends(w.config('ratings').routes[0])).toEqual([
      { service: key('ratings', 'other'), subset: '', weight: 1, port: 9080, errorStatus: 500 },
    ]);
    expect(w.has('ratings', 'other')).toBe(false);
    expect(routeStatus(w, 'HTTPRoute', 'cross')?.[0]?.ResolvedRefs).toBe(
      'false/RefNotPermitted/backendRef ratings/other not accessible to a HTTPRoute in namespace "default" (missing a ReferenceGrant?)',
    );
  });

  it('with a ReferenceGrant the backend resolves and its config (no waypoints) joins the waypoint scope', () => {
    const w = setup();
    w.apply(
      'ReferenceGrant',
      referenceGrant('allow-default', 'other', {
        from: [{ group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', namespace: 'default' }],
        to: [{ group: '', kind: 'Service' }],
      }),
    );
    w.flush();
    expect(backends(w.config('ratings').routes[0])[0]?.errorStatus).toBe(0);
    const other = w.config('ratings', 'other');
    expect(other.waypoints).toEqual([]);
    expect(other.routes).toEqual([]);
    expect(other.endpoints.map((e) => [e.address, e.hbone])).toEqual([['10.244.2.1', false]]);
    expect(w.l7.scope(WAYPOINT).has(key('ratings', 'other'))).toBe(true);
    expect(routeStatus(w, 'HTTPRoute', 'cross')?.[0]?.ResolvedRefs).toBe(
      'true/ResolvedRefs/All references resolved',
    );
  });

  it('a grant for another kind or name does not count', () => {
    const w = setup();
    w.apply(
      'ReferenceGrant',
      referenceGrant('wrong', 'other', {
        from: [{ group: 'gateway.networking.k8s.io', kind: 'GRPCRoute', namespace: 'default' }],
        to: [{ group: '', kind: 'Service', name: 'ratings' }],
      }),
    );
    w.flush();
    expect(backends(w.config('ratings').routes[0])[0]?.errorStatus).toBe(500);
  });
});

describe('invalid input is skipped, reported, and never crashes', () => {
  it('HTTPRoute: a bad regex drops the route (ResolvedRefs False) and is logged once', () => {
    const w = new World();
    w.apply(
      'HTTPRoute',
      httpRoute('bad', {
        parentRefs: [serviceParent('reviews')],
        rules: [
          {
            matches: [{ path: { type: 'RegularExpression', value: '/(a' } }],
            backendRefs: [backend('reviews')],
          },
        ],
      }),
    );
    const first = w.flush();
    expect(w.config('reviews').routes).toEqual([]);
    expect(routeStatus(w, 'HTTPRoute', 'bad')?.[0]?.ResolvedRefs).toMatch(
      /^false\/InvalidConfiguration\/invalid regex "\/\(a"/,
    );
    expect(first.problems).toHaveLength(1);
    w.apply(
      'Service',
      svc('details', { clusterIP: '10.96.0.99', ports: [{ name: 'http', port: 9080, targetPort: 9080 }] }),
    );
    expect(w.flush().problems).toEqual([]);
  });

  it.each([
    ['backreference', '(a)\\1'],
    ['lookahead', 'a(?=b)'],
  ])('refuses regexes RE2 cannot run (%s)', (_n, re) => {
    const w = new World();
    w.apply(
      'HTTPRoute',
      httpRoute('bad', {
        parentRefs: [serviceParent('reviews')],
        rules: [{ matches: [{ headers: [{ type: 'RegularExpression', name: 'x', value: re }] }] }],
      }),
    );
    w.flush();
    expect(routeStatus(w, 'HTTPRoute', 'bad')?.[0]?.ResolvedRefs).toMatch(/not RE2/);
  });

  it('ExtensionRef (and any unknown filter) rejects the route with InvalidFilter', () => {
    const w = new World();
    w.apply(
      'HTTPRoute',
      httpRoute('ext', {
        parentRefs: [serviceParent('reviews')],
        rules: [
          {
            filters: [{ type: 'ExtensionRef', extensionRef: { group: 'x.io', kind: 'Thing', name: 't' } }],
            backendRefs: [backend('reviews')],
          },
        ],
      }),
    );
    w.flush();
    expect(w.config('reviews').routes).toEqual([]);
    expect(routeStatus(w, 'HTTPRoute', 'ext')?.[0]?.ResolvedRefs).toBe(
      'false/InvalidFilter/unsupported filter type "ExtensionRef"',
    );
  });

  it('RequestRedirect and URLRewrite in one rule conflict', () => {
    const w = new World();
    w.apply(
      'HTTPRoute',
      httpRoute('both', {
        parentRefs: [serviceParent('reviews')],
        rules: [
          {
            filters: [
              { type: 'RequestRedirect', requestRedirect: { hostname: 'x' } },
              { type: 'URLRewrite', urlRewrite: { hostname: 'y' } },
            ],
          },
        ],
      }),
    );
    w.flush();
    expect(routeStatus(w, 'HTTPRoute', 'both')?.[0]?.ResolvedRefs).toMatch(
      /^false\/InvalidFilter\/RequestRedirect and URLRewrite/,
    );
  });

  it('unknown backend kind, missing backend, missing port: soft or hard as Gateway API says', () => {
    const w = new World();
    w.apply(
      'HTTPRoute',
      httpRoute('backends', {
        parentRefs: [serviceParent('reviews')],
        rules: [
          {
            backendRefs: [
              { group: 'example.io', kind: 'Bucket', name: 'b', port: 80 },
              backend('nope'),
              backend('reviews-v1'),
            ],
          },
        ],
      }),
    );
    w.flush();
    expect(backends(w.config('reviews').routes[0]).map((b) => [b.service, b.errorStatus])).toEqual([
      ['default/b', 500],
      [key('nope'), 500],
      [key('reviews-v1'), 0],
    ]);
    expect(routeStatus(w, 'HTTPRoute', 'backends')?.[0]?.ResolvedRefs).toBe(
      'false/InvalidKind/referencing unsupported backendRef: group "example.io" kind "Bucket"; backend(nope.default.svc.cluster.local) not found',
    );
    w.apply(
      'HTTPRoute',
      httpRoute('backends', {
        parentRefs: [serviceParent('reviews')],
        rules: [{ backendRefs: [{ name: 'reviews' }] }],
      }),
    );
    w.flush();
    expect(routeStatus(w, 'HTTPRoute', 'backends')?.[0]?.ResolvedRefs).toBe(
      'false/InvalidDestination/port is required in backendRef',
    );
    expect(w.config('reviews').routes).toEqual([]);
  });

  it('a missing parent Service is NoMatchingParent; an unbound one says why in ResolvedWaypoints', () => {
    const w = new World();
    w.apply('Namespace', ns('plain'));
    w.apply('Service', svc('lonely', { namespace: 'plain', clusterIP: '10.96.2.1' }));
    w.apply(
      'HTTPRoute',
      httpRoute(
        'parents',
        {
          parentRefs: [serviceParent('ghost'), serviceParent('lonely')],
          rules: [{ backendRefs: [backend('lonely', { port: 80 })] }],
        },
        { namespace: 'plain' },
      ),
    );
    w.flush();
    expect(routeStatus(w, 'HTTPRoute', 'parents', 'plain')).toEqual([
      {
        ref: 'ghost',
        Accepted: 'false/NoMatchingParent/parent service: "ghost" not found',
        ResolvedRefs: 'true/ResolvedRefs/All references resolved',
        ResolvedWaypoints: 'true/ResolvedWaypoints/parent not found',
      },
      {
        ref: 'lonely',
        Accepted: 'true/Accepted/Route was valid',
        ResolvedRefs: 'true/ResolvedRefs/All references resolved',
        ResolvedWaypoints:
          'true/ResolvedWaypoints/istio.io/use-waypoint label missing from parent and parent namespace; in ambient mode, route will not be respected',
      },
    ]);
  });

  it('VirtualService: a bad match is skipped, the rest applies, status Invalid', () => {
    const w = new World();
    w.apply(
      'VirtualService',
      virtualService('reviews', {
        hosts: ['reviews'],
        http: [
          {
            match: [{ uri: { regex: '(' } }, { uri: { prefix: '/ok' } }],
            route: [{ destination: { host: 'reviews' } }],
          },
          { match: [{ uri: { exact: '/x', prefix: '/y' } }], route: [{ destination: { host: 'reviews' } }] },
          {
            match: [{ sourceLabels: { app: 'productpage' } }],
            route: [{ destination: { host: 'reviews' } }],
          },
          { delegate: { name: 'd' } },
          { route: [{ destination: { host: 'ghost' } }] },
        ],
      }),
    );
    const change = w.flush();
    const routes = w.config('reviews').routes;
    expect(routes).toHaveLength(2);
    expect(routes[0]?.matches).toHaveLength(1);
    expect(backends(routes[1])[0]).toMatchObject({ service: key('ghost'), errorStatus: 503 });
    const cond = condition(w, 'VirtualService/default/reviews');
    expect(cond).toMatchObject({ status: false, reason: 'Invalid' });
    expect(cond?.message).toMatch(/invalid regex/);
    expect(cond?.message).toMatch(/only one is allowed/);
    expect(cond?.message).toMatch(/sourceLabels/);
    expect(cond?.message).toMatch(/delegate/);
    expect(change.problems.length).toBeGreaterThanOrEqual(5);
  });

  it('garbage objects do not crash the compiler', () => {
    const w = new World();
    const junk = [
      ['HTTPRoute', { metadata: { name: 'j1', namespace: 'default' } }],
      [
        'HTTPRoute',
        {
          metadata: { name: 'j2', namespace: 'default' },
          spec: { parentRefs: [{ kind: 'Service', group: '', name: 'reviews' }], rules: [{}] },
        },
      ],
      [
        'VirtualService',
        { metadata: { name: 'j3', namespace: 'default' }, spec: { hosts: ['reviews'], http: [{}] } },
      ],
      [
        'DestinationRule',
        {
          metadata: { name: 'j4', namespace: 'default' },
          spec: { host: 'reviews', subsets: [{}], trafficPolicy: { loadBalancer: { simple: 'BOGUS' } } },
        },
      ],
      [
        'RequestAuthentication',
        { metadata: { name: 'j5', namespace: 'default' }, spec: { targetRefs: [{}], jwtRules: [{}] } },
      ],
      ['ReferenceGrant', { metadata: { name: 'j6', namespace: 'default' } }],
      [
        'GRPCRoute',
        {
          metadata: { name: 'j7', namespace: 'default' },
          spec: {
            parentRefs: [{ kind: 'Service', group: '', name: 'reviews' }],
            rules: [{ matches: [{ method: {} }] }],
          },
        },
      ],
    ] as const;
    const nulls = [
      [
        'HTTPRoute',
        {
          metadata: { name: 'n1', namespace: 'default' },
          spec: { parentRefs: [null, serviceParent('details')], rules: [null] },
        },
      ],
      [
        'VirtualService',
        {
          metadata: { name: 'n2', namespace: 'default' },
          spec: { hosts: [5, 'ratings'], http: [null, { match: [null] }] },
        },
      ],
      [
        'VirtualService',
        {
          metadata: { name: 'n3', namespace: 'default' },
          spec: { hosts: ['productpage'], http: [{ match: [null], route: [null] }] },
        },
      ],
      [
        'DestinationRule',
        { metadata: { name: 'n4', namespace: 'default' }, spec: { host: 7, subsets: [null] } },
      ],
      [
        'DestinationRule',
        {
          metadata: { name: 'n5', namespace: 'default' },
          spec: { host: 'ratings', subsets: [null, { name: 'v1' }] },
        },
      ],
    ] as const;
    for (const [kind, obj] of [...junk, ...nulls]) w.apply(kind, obj as never);
    w.apply(
      'AuthorizationPolicy',
      targetedPolicy('j8', { targetRefs: [{ kind: 'Pod', name: 'x' }], action: 'WEIRD' }),
    );
    const change = w.flush();
    expect(change.problems.some((p) => p.message.includes('could not be translated'))).toBe(true);
    expect(w.config('ratings').subsets.map((x) => x.name)).toEqual(['v1']);
    // j2's rule without backends answers 500 (Gateway API), which wins over the VirtualService.
    expect(w.config('reviews').routes[0]?.action?.directResponse?.status).toBe(500);
  });
});

describe('waypoint policies', () => {
  it('AuthorizationPolicy targeting the waypoint applies to every service it serves; a Service target only to that one', () => {
    const w = new World();
    w.apply(
      'AuthorizationPolicy',
      targetedPolicy('allow-details', {
        targetRefs: [{ group: '', kind: 'Service', name: 'details' }],
        action: 'ALLOW',
        rules: [
          {
            from: [{ source: { principals: ['cluster.local/ns/default/sa/bookinfo-productpage'] } }],
            to: [{ operation: { methods: ['GET'], paths: ['/details/*'] } }],
          },
        ],
      }),
    ).apply(
      'AuthorizationPolicy',
      targetedPolicy(
        'deny-all-post',
        {
          targetRef: { group: 'gateway.networking.k8s.io', kind: 'Gateway', name: 'waypoint' },
          action: 'DENY',
          rules: [{ to: [{ operation: { methods: ['POST'] } }] }],
        },
        'default',
        { 'istio.io/dry-run': 'true' },
      ),
    );
    w.flush();
    const details = w.config('details').authorization;
    expect(details.map((p) => [p.name, p.action, p.dryRun])).toEqual([
      ['allow-details', AuthzPolicy_Action.ALLOW, false],
      ['deny-all-post', AuthzPolicy_Action.DENY, true],
    ]);
    expect(details[0]?.rules[0]?.from[0]?.principals).toEqual([
      'cluster.local/ns/default/sa/bookinfo-productpage',
    ]);
    expect(details[0]?.rules[0]?.to[0]).toMatchObject({ methods: ['GET'], paths: ['/details/*'] });
    expect(w.config('ratings').authorization.map((p) => p.name)).toEqual(['deny-all-post']);
    expect(condition(w, 'AuthorizationPolicy/default/allow-details')).toMatchObject({
      status: true,
      reason: 'Accepted',
      message: 'bound to default/waypoint',
    });
  });

  it('allow-nothing on the waypoint (no rules) is passed as an ALLOW with zero rules', () => {
    const w = new World();
    w.apply(
      'AuthorizationPolicy',
      targetedPolicy('allow-nothing', {
        targetRefs: [{ group: 'gateway.networking.k8s.io', kind: 'Gateway', name: 'waypoint' }],
      }),
    );
    w.flush();
    expect(w.config('reviews').authorization).toEqual([
      {
        name: 'allow-nothing',
        namespace: 'default',
        action: AuthzPolicy_Action.ALLOW,
        rules: [],
        dryRun: false,
      },
    ]);
  });

  it('bad targets are reported (TargetNotFound) and selector policies are left to ztunnel', () => {
    const w = new World();
    w.apply(
      'AuthorizationPolicy',
      targetedPolicy('bad', {
        targetRefs: [
          { kind: 'Pod', name: 'x' },
          { group: '', kind: 'Service', name: 'ghost' },
        ],
      }),
    )
      .apply(
        'AuthorizationPolicy',
        targetedPolicy('cross', {
          targetRefs: [{ group: '', kind: 'Service', name: 'details', namespace: 'other' }],
        }),
      )
      .apply(
        'AuthorizationPolicy',
        targetedPolicy('selector', { selector: { matchLabels: { app: 'details' } } }),
      );
    w.flush();
    expect(condition(w, 'AuthorizationPolicy/default/bad')).toMatchObject({
      status: false,
      reason: 'TargetNotFound',
    });
    expect(condition(w, 'AuthorizationPolicy/default/bad')?.message).toMatch(
      /unsupported kind.*Service default\/ghost not found/,
    );
    expect(condition(w, 'AuthorizationPolicy/default/cross')?.message).toMatch(/cross-namespace/);
    expect(w.l7.status('AuthorizationPolicy/default/selector')).toBeUndefined();
    expect(w.config('details').authorization).toEqual([]);
  });

  it('RequestAuthentication with targetRefs becomes JWT rules of the targeted services', () => {
    const w = new World();
    w.apply(
      'RequestAuthentication',
      requestAuthentication('jwt', {
        targetRefs: [{ group: '', kind: 'Service', name: 'productpage' }],
        jwtRules: [
          {
            issuer: 'testing@secure.istio.io',
            jwks: '{"keys":[]}',
            fromHeaders: [{ name: 'x-jwt', prefix: 'Bearer ' }],
            forwardOriginalToken: true,
            timeout: '5s',
          },
        ],
      }),
    );
    w.flush();
    expect(w.config('productpage').jwtRules).toEqual([
      {
        issuer: 'testing@secure.istio.io',
        audiences: [],
        jwksUri: '',
        jwks: '{"keys":[]}',
        fromHeaders: [{ name: 'x-jwt', prefix: 'Bearer ' }],
        fromParams: [],
        fromCookies: [],
        outputPayloadToHeader: '',
        forwardOriginalToken: true,
        outputClaimToHeaders: [],
        source: 'default/jwt',
        jwksFetchTimeoutMs: 5000,
      },
    ]);
    expect(w.config('details').jwtRules).toEqual([]);
  });
});

describe('status bookkeeping', () => {
  it('emits route status only on change and removes ours when the route stops naming a Service', () => {
    const w = new World();
    w.apply('HTTPRoute', productpageAllowList());
    const first = w.flush();
    expect(first.statuses.map((s) => `${s.kind}/${s.name}`)).toEqual(['HTTPRoute/bookinfo']);
    w.apply(
      'Service',
      svc('details', { clusterIP: '10.96.0.77', ports: [{ name: 'http', port: 9080, targetPort: 9080 }] }),
    );
    expect(w.flush().statuses).toEqual([]);
    const r = productpageAllowList();
    w.apply('HTTPRoute', { ...r, spec: { ...r.spec, parentRefs: [{ name: 'bookinfo-gateway' }] } });
    const change = w.flush();
    expect(change.statuses).toEqual([
      { kind: 'HTTPRoute', namespace: 'default', name: 'bookinfo', parents: [] },
    ]);
    expect(w.config('productpage').routes).toEqual([]);
  });
});
