import { describe, expect, it } from 'vitest';
import { formatSpiffeId, parseSpiffeId, principalOf } from './spiffe.ts';

describe('SPIFFE ids', () => {
  it.each([
    [
      'spiffe://cluster.local/ns/default/sa/bookinfo-productpage',
      'cluster.local',
      'default',
      'bookinfo-productpage',
    ],
    ['spiffe://td_1-x/ns/a.b/sa/c_d', 'td_1-x', 'a.b', 'c_d'],
  ])('parses %s', (uri, td, ns, sa) => {
    const r = parseSpiffeId(uri);
    expect(r).toEqual({ ok: true, identity: { trustDomain: td, namespace: ns, serviceAccount: sa } });
    if (r.ok) expect(formatSpiffeId(r.identity)).toBe(uri);
  });

  it.each([
    ['http://cluster.local/ns/a/sa/b', /does not start with spiffe/],
    ['spiffe://cluster.local/ns/a/sa/b/extra', /not of the form/],
    ['spiffe://cluster.local/ns/a/sa/', /invalid service account/],
    ['spiffe://cluster.local/ns//sa/b', /invalid namespace/],
    ['spiffe://cluster.local/sa/b/ns/a', /not of the form/],
    ['spiffe://Cluster.Local/ns/a/sa/b', /invalid trust domain/],
    ['spiffe:///ns/a/sa/b', /invalid trust domain/],
    ['spiffe://cluster.local/ns/../sa/b', /invalid namespace/],
    ['spiffe://cluster.local/ns/a b/sa/b', /invalid namespace/],
    ['spiffe://cluster.local/ns/a/sa/b?x=1', /invalid service account/],
    ['spiffe://cluster.local/ns/a/sa/b#f', /invalid service account/],
    [`spiffe://cluster.local/ns/${'a'.repeat(2100)}/sa/b`, /longer than 2048/],
    ['spiffe://cluster.local', /not of the form/],
  ])('rejects %s', (uri, why) => {
    const r = parseSpiffeId(uri);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.error).toMatch(why);
  });

  it('principal drops the scheme', () => {
    expect(principalOf({ trustDomain: 'cluster.local', namespace: 'ns1', serviceAccount: 'sa1' })).toBe(
      'cluster.local/ns/ns1/sa/sa1',
    );
  });
});
