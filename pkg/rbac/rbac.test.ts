import { describe, expect, it } from 'vitest';
import { Action, Authorization, type Match, Scope } from '../xds/gen/istio/security/authorization.ts';
import {
  type ConnectionInfo,
  cidrContains,
  compilePolicy,
  evaluate,
  ipToBytes,
  ipToString,
  PolicyError,
  parseCidr,
  parseIp,
} from './index.ts';

function conn(opts: { src?: string; dst?: string; port?: number; id?: string | null } = {}): ConnectionInfo {
  const id = opts.id === undefined ? 'cluster.local/ns/default/sa/bookinfo-productpage' : opts.id;
  const parts = id?.split('/');
  return {
    srcIp: parseIp(opts.src ?? '10.1.1.5')!,
    dstIp: parseIp(opts.dst ?? '10.1.2.7')!,
    dstPort: opts.port ?? 9080,
    identity: id && parts ? { principal: id, namespace: parts[2]!, serviceAccount: parts[4]! } : null,
  };
}

const exact = (value: string) => ({ matchType: { $case: 'exact' as const, value } });
const prefix = (value: string) => ({ matchType: { $case: 'prefix' as const, value } });
const suffix = (value: string) => ({ matchType: { $case: 'suffix' as const, value } });
const presence = () => ({ matchType: { $case: 'presence' as const, value: {} } });
const cidr = (s: string) => {
  const c = parseCidr(s)!;
  return { address: ipToBytes(c.ip), length: c.prefix };
};

function policy(
  action: 'ALLOW' | 'DENY',
  rules: Array<Array<Array<Partial<Match>>>>,
  extra: { dryRun?: boolean; name?: string } = {},
) {
  return compilePolicy(
    Authorization.fromPartial({
      name: extra.name ?? 'p',
      namespace: 'default',
      scope: Scope.NAMESPACE,
      action: Action[action],
      dryRun: extra.dryRun ?? false,
      rules: rules.map((clauses) => ({ clauses: clauses.map((matches) => ({ matches })) })),
    }),
  );
}

describe('authorization evaluation (ztunnel semantics)', () => {
  it.each([
    ['no policies → allow', [], conn(), true],
    ['allow-nothing (ALLOW with zero rules) → deny', [policy('ALLOW', [])], conn(), false],
    ['DENY with zero rules matches nothing → allow', [policy('DENY', [])], conn(), true],
    ['rule with zero clauses matches everything (allow-all)', [policy('ALLOW', [[]])], conn(), true],
    ['DENY rule with zero clauses denies all', [policy('DENY', [[]])], conn(), false],
    [
      'principal exact allow',
      [policy('ALLOW', [[[{ principals: [exact('cluster.local/ns/default/sa/bookinfo-productpage')] }]]])],
      conn(),
      true,
    ],
    [
      'principal exact allow, other caller',
      [policy('ALLOW', [[[{ principals: [exact('cluster.local/ns/default/sa/bookinfo-productpage')] }]]])],
      conn({ id: 'cluster.local/ns/default/sa/bookinfo-ratings' }),
      false,
    ],
    [
      'principal suffix',
      [policy('ALLOW', [[[{ principals: [suffix('/sa/bookinfo-productpage')] }]]])],
      conn(),
      true,
    ],
    [
      'principal prefix',
      [policy('ALLOW', [[[{ principals: [prefix('cluster.local/ns/other/')] }]]])],
      conn(),
      false,
    ],
    [
      'principal required, plaintext caller',
      [policy('ALLOW', [[[{ principals: [presence()] }]]])],
      conn({ id: null }),
      false,
    ],
    [
      'STRICT: DENY not_principals presence rejects plaintext',
      [policy('DENY', [[[{ notPrincipals: [presence()] }]]])],
      conn({ id: null }),
      false,
    ],
    [
      'STRICT: DENY not_principals presence lets mTLS through',
      [policy('DENY', [[[{ notPrincipals: [presence()] }]]])],
      conn(),
      true,
    ],
    ['namespaces match', [policy('ALLOW', [[[{ namespaces: [exact('default')] }]]])], conn(), true],
    [
      'not_namespaces excludes',
      [policy('ALLOW', [[[{ notNamespaces: [exact('default')] }]]])],
      conn(),
      false,
    ],
    [
      'namespaces need an identity',
      [policy('ALLOW', [[[{ namespaces: [exact('default')] }]]])],
      conn({ id: null }),
      false,
    ],
    [
      'service account match',
      [
        policy('ALLOW', [
          [[{ serviceAccounts: [{ namespace: 'default', serviceAccount: 'bookinfo-productpage' }] }]],
        ]),
      ],
      conn(),
      true,
    ],
    [
      'DENY by service account',
      [
        policy('DENY', [
          [[{ serviceAccounts: [{ namespace: 'default', serviceAccount: 'bookinfo-productpage' }] }]],
        ]),
      ],
      conn(),
      false,
    ],
    ['ipBlocks: source in CIDR', [policy('ALLOW', [[[{ sourceIps: [cidr('10.1.0.0/16')] }]]])], conn(), true],
    [
      'ipBlocks: source outside CIDR',
      [policy('ALLOW', [[[{ sourceIps: [cidr('10.2.0.0/16')] }]]])],
      conn(),
      false,
    ],
    ['notIpBlocks', [policy('ALLOW', [[[{ notSourceIps: [cidr('10.1.1.5/32')] }]]])], conn(), false],
    ['destination IP', [policy('ALLOW', [[[{ destinationIps: [cidr('10.1.2.7')] }]]])], conn(), true],
    ['ports match', [policy('ALLOW', [[[{ destinationPorts: [9080] }]]])], conn(), true],
    ['ports mismatch', [policy('ALLOW', [[[{ destinationPorts: [8080] }]]])], conn(), false],
    ['not ports', [policy('DENY', [[[{ notDestinationPorts: [9080] }]]])], conn(), true],
    [
      'clauses AND: from matches, to (port) does not',
      [policy('ALLOW', [[[{ namespaces: [exact('default')] }], [{ destinationPorts: [1] }]]])],
      conn(),
      false,
    ],
    [
      'matches OR within a clause',
      [policy('ALLOW', [[[{ namespaces: [exact('x')] }, { destinationPorts: [9080] }]]])],
      conn(),
      true,
    ],
    [
      'rules OR',
      [policy('ALLOW', [[[{ destinationPorts: [1] }]], [[{ destinationPorts: [9080] }]]])],
      conn(),
      true,
    ],
    ['a match with all groups empty is ignored', [policy('ALLOW', [[[{}]]])], conn(), false],
    [
      'DENY wins over ALLOW',
      [policy('ALLOW', [[]]), policy('DENY', [[[{ destinationPorts: [9080] }]]], { name: 'd' })],
      conn(),
      false,
    ],
    [
      'any matching ALLOW among several',
      [policy('ALLOW', [[[{ destinationPorts: [1] }]]]), policy('ALLOW', [[]], { name: 'b' })],
      conn(),
      true,
    ],
    ['dry-run DENY is not enforced', [policy('DENY', [[]], { dryRun: true })], conn(), true],
    [
      'dry-run ALLOW does not make others default-deny',
      [policy('ALLOW', [], { dryRun: true })],
      conn(),
      true,
    ],
    [
      'IPv4-mapped IPv6 peer matches IPv4 CIDR',
      [policy('ALLOW', [[[{ sourceIps: [cidr('10.1.0.0/16')] }]]])],
      conn({ src: '::ffff:10.1.1.5' }),
      true,
    ],
  ])('%s', (_name, policies, c, allowed) => {
    expect(evaluate(policies, c).allowed).toBe(allowed);
  });

  it('names the deciding policy', () => {
    const d = evaluate([policy('DENY', [[]], { name: 'block' })], conn());
    expect(d).toEqual({ allowed: false, policy: 'default/block', reason: 'deny' });
    expect(evaluate([policy('ALLOW', [[]], { name: 'ok' })], conn())).toEqual({
      allowed: true,
      policy: 'default/ok',
    });
    expect(evaluate([policy('ALLOW', [])], conn())).toEqual({
      allowed: false,
      policy: null,
      reason: 'no-allow-match',
    });
  });

  it('reports dry-run outcomes', () => {
    const seen: Array<[string, boolean]> = [];
    evaluate([policy('DENY', [[]], { dryRun: true, name: 'dr' })], conn(), {
      onDryRun: (p, m) => seen.push([p.key, m]),
    });
    expect(seen).toEqual([['default/dr', true]]);
  });

  it('rejects policies it cannot enforce', () => {
    expect(() =>
      compilePolicy(Authorization.fromPartial({ name: 'x', namespace: 'n', scope: 7 as Scope })),
    ).toThrow(PolicyError);
    expect(() =>
      compilePolicy(
        Authorization.fromPartial({
          name: 'x',
          namespace: 'n',
          rules: [{ clauses: [{ matches: [{ sourceIps: [{ address: new Uint8Array(5), length: 8 }] }] }] }],
        }),
      ),
    ).toThrow(/invalid address/);
    expect(() =>
      compilePolicy(
        Authorization.fromPartial({
          name: 'x',
          namespace: 'n',
          rules: [{ clauses: [{ matches: [{ sourceIps: [{ address: new Uint8Array(4), length: 33 }] }] }] }],
        }),
      ),
    ).toThrow(/invalid address/);
  });
});

describe('ip helpers', () => {
  it.each([
    ['10.0.0.0/8', '10.255.1.2', true],
    ['10.0.0.0/8', '11.0.0.1', false],
    ['0.0.0.0/0', '1.2.3.4', true],
    ['2001:db8::/32', '2001:db8:ffff::1', true],
    ['2001:db8::/32', '2001:db9::1', false],
    ['::/0', '::1', true],
    ['10.0.0.0/8', '::1', false],
    ['fd00::1', 'fd00::1', true],
  ])('%s contains %s: %s', (c, ip, want) => {
    expect(cidrContains(parseCidr(c)!, parseIp(ip)!)).toBe(want);
  });

  it('parses, prints and rejects', () => {
    expect(ipToString(parseIp('10.1.2.3')!)).toBe('10.1.2.3');
    expect(ipToString(parseIp('::ffff:10.1.2.3')!)).toBe('10.1.2.3');
    expect(parseIp('2001:db8::1')!.words).toEqual(Uint32Array.of(0x20010db8, 0, 0, 1));
    expect(parseIp('300.1.1.1')).toBeNull();
    expect(parseIp('hello')).toBeNull();
    expect(parseCidr('10.0.0.0/33')).toBeNull();
    expect(parseCidr('10.0.0.0/x')).toBeNull();
  });
});
