/**
 * Policy translation, one case per rule of ARCHITECTURE.md ("Authorization translation for ztunnel",
 * "PeerAuthentication"), checked against the expected protos and, for the cases that matter end to end,
 * evaluated through pkg/rbac exactly as ztunnel would.
 */
import { describe, expect, it } from 'vitest';
import { type ConnectionInfo, compilePolicy, evaluate, parseIp } from '../../../pkg/rbac/index.ts';
import { Action, Authorization, type Match, Scope } from '../../../pkg/xds/index.ts';
import type { AuthorizationPolicy, PeerAuthentication } from '../kube/types.ts';
import {
  applicablePeerAuthentications,
  convertAuthorizationPolicy,
  convertPeerAuthentication,
  peerAuthenticationKeys,
  STATIC_STRICT_POLICY_NAME,
  staticStrictPolicy,
} from './index.ts';

const ROOT = 'istio-system';

function ap(
  spec: AuthorizationPolicy['spec'],
  meta: { name?: string; namespace?: string; annotations?: Record<string, string> } = {},
): AuthorizationPolicy {
  return {
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: {
      name: meta.name ?? 'p',
      namespace: meta.namespace ?? 'default',
      annotations: meta.annotations,
    },
    spec,
  };
}

const exact = (value: string) => ({ matchType: { $case: 'exact' as const, value } });
const prefix = (value: string) => ({ matchType: { $case: 'prefix' as const, value } });
const suffix = (value: string) => ({ matchType: { $case: 'suffix' as const, value } });
const presence = () => ({ matchType: { $case: 'presence' as const, value: {} } });
const v4 = (a: number, b: number, c: number, d: number, length = 32) => ({
  address: Uint8Array.of(a, b, c, d),
  length,
});

function m(fields: Partial<Match>): Match {
  return {
    namespaces: [],
    notNamespaces: [],
    serviceAccounts: [],
    notServiceAccounts: [],
    principals: [],
    notPrincipals: [],
    sourceIps: [],
    notSourceIps: [],
    destinationIps: [],
    notDestinationIps: [],
    destinationPorts: [],
    notDestinationPorts: [],
    ...fields,
  };
}

function authz(
  action: 'ALLOW' | 'DENY',
  rules: Match[][][],
  extra: { scope?: Scope; name?: string; namespace?: string; dryRun?: boolean } = {},
): Authorization {
  return Authorization.create({
    name: extra.name ?? 'p',
    namespace: extra.namespace ?? 'default',
    scope: extra.scope ?? Scope.NAMESPACE,
    action: Action[action],
    dryRun: extra.dryRun ?? false,
    rules: rules.map((clauses) => ({ clauses: clauses.map((matches) => ({ matches })) })),
  });
}

/** A connection to 10.0.0.2:<port>; `id` is `ns/sa` for mTLS, null for plaintext. */
function conn(id: string | null, opts: { port?: number; src?: string } = {}): ConnectionInfo {
  const [ns = '', sa = ''] = id?.split('/') ?? [];
  return {
    srcIp: parseIp(opts.src ?? '10.0.0.1')!,
    dstIp: parseIp('10.0.0.2')!,
    dstPort: opts.port ?? 9080,
    identity: id ? { namespace: ns, serviceAccount: sa, principal: `cluster.local/ns/${ns}/sa/${sa}` } : null,
  };
}

function allowed(policies: Authorization[], c: ConnectionInfo): boolean {
  return evaluate(policies.map(compilePolicy), c).allowed;
}

describe('AuthorizationPolicy → istio.security.Authorization', () => {
  const cases: Array<{
    name: string;
    policy: AuthorizationPolicy;
    want: Authorization | null;
    status?: { accepted: boolean; reason: string; message?: RegExp } | null;
  }> = [
    {
      name: 'allow-nothing: ALLOW with no rules',
      policy: ap({}),
      want: authz('ALLOW', []),
      status: { accepted: true, reason: 'Accepted', message: /^attached to ztunnel$/ },
    },
    {
      name: 'empty rule matches everything',
      policy: ap({ rules: [{}] }),
      want: authz('ALLOW', [[]]),
    },
    {
      name: 'principals (exact) in from',
      policy: ap({ rules: [{ from: [{ source: { principals: ['cluster.local/ns/default/sa/sleep'] } }] }] }),
      want: authz('ALLOW', [[[m({ principals: [exact('cluster.local/ns/default/sa/sleep')] })]]]),
    },
    {
      name: 'namespaces and notNamespaces',
      policy: ap({ rules: [{ from: [{ source: { namespaces: ['foo'], notNamespaces: ['bar'] } }] }] }),
      want: authz('ALLOW', [[[m({ namespaces: [exact('foo')], notNamespaces: [exact('bar')] })]]]),
    },
    {
      name: 'serviceAccounts: bare name means the policy namespace',
      policy: ap({ rules: [{ from: [{ source: { serviceAccounts: ['sleep', 'other/curl'] } }] }] }),
      want: authz('ALLOW', [
        [
          [
            m({
              serviceAccounts: [
                { namespace: 'default', serviceAccount: 'sleep' },
                { namespace: 'other', serviceAccount: 'curl' },
              ],
            }),
          ],
        ],
      ]),
    },
    {
      name: 'ipBlocks / notIpBlocks: CIDRs and bare addresses',
      policy: ap({
        rules: [
          { from: [{ source: { ipBlocks: ['10.1.0.0/16', '10.2.3.4'], notIpBlocks: ['10.1.2.0/24'] } }] },
        ],
      }),
      want: authz('ALLOW', [
        [[m({ sourceIps: [v4(10, 1, 0, 0, 16), v4(10, 2, 3, 4)], notSourceIps: [v4(10, 1, 2, 0, 24)] })]],
      ]),
    },
    {
      name: 'ports / notPorts; invalid ports skipped',
      policy: ap({
        rules: [{ to: [{ operation: { ports: ['80', 'http', '70000'], notPorts: ['8080'] } }] }],
      }),
      want: authz('ALLOW', [[[m({ destinationPorts: [80], notDestinationPorts: [8080] })]]]),
    },
    {
      name: 'wildcard string forms: * presence, *x suffix, x* prefix',
      policy: ap({
        rules: [{ from: [{ source: { principals: ['*', '*/sa/sleep', 'cluster.local/ns/foo/*'] } }] }],
      }),
      want: authz('ALLOW', [
        [[m({ principals: [presence(), suffix('/sa/sleep'), prefix('cluster.local/ns/foo/')] })]],
      ]),
    },
    {
      name: 'from, to and when become three ANDed clauses',
      policy: ap({
        rules: [
          {
            from: [{ source: { namespaces: ['foo'] } }, { source: { namespaces: ['bar'] } }],
            to: [{ operation: { ports: ['9080'] } }],
            when: [
              { key: 'source.ip', values: ['10.0.0.0/8'], notValues: ['10.9.0.0/16'] },
              { key: 'destination.port', values: ['9080'] },
              { key: 'source.principal', values: ['*'] },
              { key: 'destination.ip', notValues: ['10.0.0.99'] },
              { key: 'source.namespace', values: ['foo'] },
            ],
          },
        ],
      }),
      want: authz('ALLOW', [
        [
          [m({ destinationPorts: [9080] })],
          [m({ namespaces: [exact('foo')] }), m({ namespaces: [exact('bar')] })],
          [m({ sourceIps: [v4(10, 0, 0, 0, 8)], notSourceIps: [v4(10, 9, 0, 0, 16)] })],
          [m({ destinationPorts: [9080] })],
          [m({ principals: [presence()] })],
          [m({ notDestinationIps: [v4(10, 0, 0, 99)] })],
          [m({ namespaces: [exact('foo')] })],
        ],
      ]),
    },
    {
      name: 'L7 in ALLOW: the rule is dropped (others kept); status explains',
      policy: ap({
        rules: [
          { to: [{ operation: { methods: ['GET'], paths: ['/x'] } }] },
          { from: [{ source: { namespaces: ['foo'] } }] },
          { when: [{ key: 'request.headers[x-foo]', values: ['bar'] }] },
        ],
      }),
      want: authz('ALLOW', [[[m({ namespaces: [exact('foo')] })]]]),
      status: {
        accepted: true,
        reason: 'UnsupportedValue',
        message:
          /^ztunnel does not support HTTP attributes \(found: methods, paths, request\.headers\[x-foo\]\)\. In ambient mode you must use a waypoint proxy to enforce HTTP rules\. Within an ALLOW policy, rules matching HTTP attributes are omitted\. This will be more restrictive than requested\.$/,
      },
    },
    {
      name: 'L7 in ALLOW: every rule dropped leaves an allow-nothing policy',
      policy: ap({ rules: [{ from: [{ source: { requestPrincipals: ['*'] } }] }] }),
      want: authz('ALLOW', []),
      status: { accepted: true, reason: 'UnsupportedValue', message: /found: requestPrincipals/ },
    },
    {
      name: 'remoteIpBlocks are HTTP (X-Forwarded-For) attributes',
      policy: ap({ rules: [{ from: [{ source: { remoteIpBlocks: ['1.2.3.4'] } }] }] }),
      want: authz('ALLOW', []),
      status: { accepted: true, reason: 'UnsupportedValue', message: /found: remoteIpBlocks/ },
    },
    {
      name: 'L7 in DENY: L4 parts kept, HTTP-only parts match everything',
      policy: ap({
        action: 'DENY',
        rules: [
          {
            from: [{ source: { namespaces: ['foo'] } }],
            to: [{ operation: { methods: ['DELETE'], ports: ['9080'] } }],
          },
          {
            from: [{ source: { namespaces: ['bar'] } }],
            to: [{ operation: { paths: ['/admin'] } }],
            when: [{ key: 'request.auth.claims[iss]', values: ['x'] }],
          },
        ],
      }),
      want: authz('DENY', [
        [[m({ destinationPorts: [9080] })], [m({ namespaces: [exact('foo')] })]],
        [[], [m({ namespaces: [exact('bar')] })], []],
      ]),
      status: {
        accepted: true,
        reason: 'UnsupportedValue',
        message: /DENY policy with HTTP attributes is enforced without the HTTP rules\./,
      },
    },
    {
      name: 'CUSTOM is not sent',
      policy: ap({ action: 'CUSTOM', provider: { name: 'ext' }, rules: [{}] }),
      want: null,
      status: {
        accepted: false,
        reason: 'UnsupportedValue',
        message: /^ztunnel does not support the CUSTOM action$/,
      },
    },
    {
      name: 'AUDIT is not sent',
      policy: ap({ action: 'AUDIT', rules: [{}] }),
      want: null,
      status: {
        accepted: false,
        reason: 'UnsupportedValue',
        message: /^ztunnel does not support the AUDIT action$/,
      },
    },
    {
      name: 'targetRefs policies are for waypoints: nothing for ztunnel, no status',
      policy: ap({ targetRefs: [{ kind: 'Service', group: '', name: 'reviews' }], rules: [{}] }),
      want: null,
      status: null,
    },
    {
      name: 'deprecated single targetRef too',
      policy: ap({ targetRef: { kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'wp' } }),
      want: null,
      status: null,
    },
    {
      name: 'selector → WORKLOAD_SELECTOR',
      policy: ap({ selector: { matchLabels: { app: 'reviews' } }, action: 'DENY', rules: [{}] }),
      want: authz('DENY', [[]], { scope: Scope.WORKLOAD_SELECTOR }),
    },
    {
      name: 'root namespace without selector → GLOBAL',
      policy: ap({ rules: [{}] }, { namespace: ROOT }),
      want: authz('ALLOW', [[]], { scope: Scope.GLOBAL, namespace: ROOT }),
    },
    {
      name: 'root namespace with selector stays WORKLOAD_SELECTOR',
      policy: ap({ selector: { matchLabels: { a: 'b' } } }, { namespace: ROOT }),
      want: authz('ALLOW', [], { scope: Scope.WORKLOAD_SELECTOR, namespace: ROOT }),
    },
    {
      name: 'istio.io/dry-run annotation',
      policy: ap({ action: 'DENY', rules: [{}] }, { annotations: { 'istio.io/dry-run': 'true' } }),
      want: authz('DENY', [[]], { dryRun: true }),
    },
  ];

  it.each(cases)('$name', ({ policy, want, status }) => {
    const got = convertAuthorizationPolicy(ROOT, policy);
    expect(got.authorization).toEqual(want);
    if (status === null) expect(got.status).toBeNull();
    else if (status) {
      expect(got.status).toMatchObject({ accepted: status.accepted, reason: status.reason });
      if (status.message) expect(got.status?.message).toMatch(status.message);
    }
    // Whatever we produce must be accepted by ztunnel's compiler (no NACK).
    if (got.authorization) expect(() => compilePolicy(got.authorization!)).not.toThrow();
  });
});

describe('AuthorizationPolicy end to end through pkg/rbac', () => {
  const sleep = 'default/sleep';
  const other = 'default/other';

  it('B4 allow-nothing denies everyone, mTLS or not', () => {
    const p = convertAuthorizationPolicy(ROOT, ap({})).authorization!;
    expect(allowed([p], conn(sleep))).toBe(false);
    expect(allowed([p], conn(null))).toBe(false);
  });

  it('B5 principals: only the named identity is allowed', () => {
    const p = convertAuthorizationPolicy(
      ROOT,
      ap({ rules: [{ from: [{ source: { principals: ['cluster.local/ns/default/sa/sleep'] } }] }] }),
    ).authorization!;
    expect(allowed([p], conn(sleep))).toBe(true);
    expect(allowed([p], conn(other))).toBe(false);
    expect(allowed([p], conn(null))).toBe(false);
  });

  it('B7 DENY by service account wins over an ALLOW-all', () => {
    const deny = convertAuthorizationPolicy(
      ROOT,
      ap(
        { action: 'DENY', rules: [{ from: [{ source: { principals: ['*/sa/sleep'] } }] }] },
        { name: 'deny' },
      ),
    ).authorization!;
    const allowAll = convertAuthorizationPolicy(ROOT, ap({ rules: [{}] }, { name: 'all' })).authorization!;
    expect(allowed([deny, allowAll], conn(sleep))).toBe(false);
    expect(allowed([deny, allowAll], conn(other))).toBe(true);
  });

  it('L7-only ALLOW rule never allows (stricter than written)', () => {
    const p = convertAuthorizationPolicy(ROOT, ap({ rules: [{ to: [{ operation: { methods: ['GET'] } }] }] }))
      .authorization!;
    expect(allowed([p], conn(sleep))).toBe(false);
  });

  it('L7 DENY is enforced without its HTTP parts (more restrictive)', () => {
    const p = convertAuthorizationPolicy(
      ROOT,
      ap({
        action: 'DENY',
        rules: [
          { from: [{ source: { namespaces: ['default'] } }], to: [{ operation: { methods: ['POST'] } }] },
        ],
      }),
    ).authorization!;
    // Every connection from namespace default is denied, whatever the method would have been.
    expect(allowed([p], conn(sleep, { port: 1 }))).toBe(false);
    expect(allowed([p], conn('foo/x'))).toBe(true);
  });

  it('ports and ipBlocks', () => {
    const p = convertAuthorizationPolicy(
      ROOT,
      ap({
        rules: [
          { from: [{ source: { ipBlocks: ['10.0.0.0/24'] } }], to: [{ operation: { ports: ['9080'] } }] },
        ],
      }),
    ).authorization!;
    expect(allowed([p], conn(null, { port: 9080 }))).toBe(true);
    expect(allowed([p], conn(null, { port: 9081 }))).toBe(false);
    expect(allowed([p], conn(null, { port: 9080, src: '10.0.1.1' }))).toBe(false);
  });
});

function pa(
  name: string,
  namespace: string,
  spec: PeerAuthentication['spec'],
  created = '2024-01-01T00:00:00Z',
): PeerAuthentication {
  return {
    apiVersion: 'security.istio.io/v1',
    kind: 'PeerAuthentication',
    metadata: { name, namespace, creationTimestamp: created },
    spec,
  };
}

function keysFor(pas: PeerAuthentication[], ns = 'default', labels: Record<string, string> = { app: 'a' }) {
  return peerAuthenticationKeys(ROOT, applicablePeerAuthentications(pas, ROOT, ns, labels));
}

const STATIC = `${ROOT}/${STATIC_STRICT_POLICY_NAME}`;

describe('PeerAuthentication', () => {
  it('static STRICT policy: DENY not_principals presence, workload-selector scoped', () => {
    expect(staticStrictPolicy(ROOT)).toEqual(
      authz('DENY', [[[m({ notPrincipals: [presence()] })]]], {
        name: 'istio_converted_static_strict',
        namespace: ROOT,
        scope: Scope.WORKLOAD_SELECTOR,
      }),
    );
  });

  it('B1 STRICT rejects plaintext and accepts mTLS', () => {
    const p = staticStrictPolicy(ROOT);
    expect(allowed([p], conn(null))).toBe(false);
    expect(allowed([p], conn('default/sleep'))).toBe(true);
  });

  it.each([
    ['no policies', [], []],
    ['mesh STRICT', [pa('m', ROOT, { mtls: { mode: 'STRICT' } })], [STATIC]],
    ['mesh PERMISSIVE', [pa('m', ROOT, { mtls: { mode: 'PERMISSIVE' } })], []],
    [
      'namespace PERMISSIVE overrides mesh STRICT',
      [pa('m', ROOT, { mtls: { mode: 'STRICT' } }), pa('n', 'default', { mtls: { mode: 'PERMISSIVE' } })],
      [],
    ],
    [
      'namespace UNSET inherits mesh STRICT',
      [pa('m', ROOT, { mtls: { mode: 'STRICT' } }), pa('n', 'default', {})],
      [STATIC],
    ],
    [
      'namespace DISABLE acts like PERMISSIVE',
      [pa('m', ROOT, { mtls: { mode: 'STRICT' } }), pa('n', 'default', { mtls: { mode: 'DISABLE' } })],
      [],
    ],
    [
      'workload STRICT over namespace PERMISSIVE',
      [
        pa('n', 'default', { mtls: { mode: 'PERMISSIVE' } }),
        pa('w', 'default', { selector: { matchLabels: { app: 'a' } }, mtls: { mode: 'STRICT' } }),
      ],
      [STATIC],
    ],
    [
      'workload policy that does not select us is ignored',
      [pa('w', 'default', { selector: { matchLabels: { app: 'zzz' } }, mtls: { mode: 'STRICT' } })],
      [],
    ],
    ['other namespaces do not apply', [pa('n', 'other', { mtls: { mode: 'STRICT' } })], []],
    [
      'oldest namespace policy wins',
      [
        pa('new', 'default', { mtls: { mode: 'PERMISSIVE' } }, '2024-06-01T00:00:00Z'),
        pa('old', 'default', { mtls: { mode: 'STRICT' } }, '2023-01-01T00:00:00Z'),
      ],
      [STATIC],
    ],
    [
      'workload STRICT with a PERMISSIVE port → converted policy instead of static',
      [
        pa('w', 'default', {
          selector: { matchLabels: { app: 'a' } },
          mtls: { mode: 'STRICT' },
          portLevelMtls: { '8080': { mode: 'PERMISSIVE' } },
        }),
      ],
      ['default/converted_peer_authentication_w'],
    ],
    [
      'workload UNSET under STRICT namespace with a DISABLE port → converted',
      [
        pa('n', 'default', { mtls: { mode: 'STRICT' } }),
        pa('w', 'default', {
          selector: { matchLabels: { app: 'a' } },
          portLevelMtls: { '8080': { mode: 'DISABLE' } },
        }),
      ],
      ['default/converted_peer_authentication_w'],
    ],
    [
      'workload PERMISSIVE with a STRICT port → converted only',
      [
        pa('w', 'default', {
          selector: { matchLabels: { app: 'a' } },
          mtls: { mode: 'PERMISSIVE' },
          portLevelMtls: { '9090': { mode: 'STRICT' } },
        }),
      ],
      ['default/converted_peer_authentication_w'],
    ],
  ] as const)('effective mode: %s', (_name, pas, want) => {
    expect(keysFor([...pas])).toEqual(want);
  });

  it('portLevelMtls: STRICT workload with a PERMISSIVE port', () => {
    const w = pa('w', 'default', {
      selector: { matchLabels: { app: 'a' } },
      mtls: { mode: 'STRICT' },
      portLevelMtls: { '8080': { mode: 'PERMISSIVE' } },
    });
    const got = convertPeerAuthentication(ROOT, w, null, null)!;
    expect(got).toEqual(
      authz('DENY', [[[m({ notPrincipals: [presence()] })], [m({ notDestinationPorts: [8080] })]]], {
        name: 'converted_peer_authentication_w',
        scope: Scope.WORKLOAD_SELECTOR,
      }),
    );
    expect(allowed([got], conn(null, { port: 8080 }))).toBe(true);
    expect(allowed([got], conn(null, { port: 9080 }))).toBe(false);
    expect(allowed([got], conn('default/sleep', { port: 9080 }))).toBe(true);
  });

  it('portLevelMtls: inherited STRICT is merged in', () => {
    const ns = pa('n', 'default', { mtls: { mode: 'STRICT' } });
    const w = pa('w', 'default', {
      selector: { matchLabels: { app: 'a' } },
      portLevelMtls: { '8080': { mode: 'PERMISSIVE' } },
    });
    const got = convertPeerAuthentication(ROOT, w, ns, null)!;
    expect(got.rules).toEqual([
      {
        clauses: [
          { matches: [m({ notDestinationPorts: [8080] })] },
          { matches: [m({ notPrincipals: [presence()] })] },
        ],
      },
    ]);
    expect(allowed([got], conn(null, { port: 8080 }))).toBe(true);
    expect(allowed([got], conn(null, { port: 9080 }))).toBe(false);
  });

  it('portLevelMtls: PERMISSIVE workload with STRICT ports gets one rule per port', () => {
    const w = pa('w', 'default', {
      selector: { matchLabels: { app: 'a' } },
      mtls: { mode: 'PERMISSIVE' },
      portLevelMtls: { '9090': { mode: 'STRICT' }, '443': { mode: 'STRICT' } },
    });
    const got = convertPeerAuthentication(ROOT, w, null, pa('m', ROOT, { mtls: { mode: 'STRICT' } }))!;
    expect(got.rules).toEqual([
      { clauses: [{ matches: [m({ notPrincipals: [presence()], destinationPorts: [443] })] }] },
      { clauses: [{ matches: [m({ notPrincipals: [presence()], destinationPorts: [9090] })] }] },
    ]);
    expect(allowed([got], conn(null, { port: 9090 }))).toBe(false);
    expect(allowed([got], conn(null, { port: 80 }))).toBe(true);
  });

  it.each([
    [
      'namespace-wide',
      pa('n', 'default', { mtls: { mode: 'STRICT' }, portLevelMtls: { '80': { mode: 'PERMISSIVE' } } }),
    ],
    [
      'root namespace',
      pa('r', ROOT, { selector: { matchLabels: { a: 'b' } }, portLevelMtls: { '80': { mode: 'STRICT' } } }),
    ],
    [
      'no port settings',
      pa('w', 'default', { selector: { matchLabels: { a: 'b' } }, mtls: { mode: 'STRICT' } }),
    ],
    [
      'all ports agree with STRICT',
      pa('w', 'default', {
        selector: { matchLabels: { a: 'b' } },
        mtls: { mode: 'STRICT' },
        portLevelMtls: { '80': { mode: 'STRICT' } },
      }),
    ],
  ])('no converted policy for %s', (_n, p) => {
    expect(convertPeerAuthentication(ROOT, p, null, null)).toBeNull();
  });
});
