import { describe, expect, it } from 'vitest';
import { ipText } from './l7index.ts';
import { mergeRouteParents } from './status.ts';
import { hostMatches, parseDurationMs, regexProblem } from './util.ts';
import { hostCandidates } from './virtualservice.ts';

describe('parseDurationMs', () => {
  it.each([
    ['1s', 1000],
    ['1.5s', 1500],
    ['30ms', 30],
    ['3m', 180_000],
    ['1h30m', 5_400_000],
    ['100us', 1],
    ['0', 0],
    ['0s', 0],
    ['.5s', 500],
  ])('%s → %d', (text, ms) => expect(parseDurationMs(text)).toBe(ms));

  it.each(['', '5', 's', '1x', '-1s', '1s garbage'])('"%s" is not a duration', (text) =>
    expect(parseDurationMs(text)).toBeNull(),
  );
});

describe('regexProblem', () => {
  it.each([
    '.*Mobile.*',
    '/api/v[0-9]+/.*',
    '(?i)abc',
    '\\Afoo\\z',
    '[[:alpha:]]*'.replace('[[:alpha:]]', '[a-z]'),
  ])('%s is accepted', (re) => expect(regexProblem(re)).toBeNull());
  it.each(['(', '(a)\\1', 'a(?=b)', '(?<!x)y', 'x'.repeat(2000)])('%s is refused', (re) =>
    expect(regexProblem(re)).not.toBeNull(),
  );
});

describe('hosts', () => {
  it('expands short names relative to the namespace and tries name.ns both ways', () => {
    expect(hostCandidates('reviews', 'default', 'cluster.local')).toEqual([
      'reviews.default.svc.cluster.local',
    ]);
    expect(hostCandidates('reviews.default', 'x', 'cluster.local')).toEqual([
      'reviews.default',
      'reviews.default.svc.cluster.local',
    ]);
    expect(hostCandidates('httpbin.org', 'x', 'cluster.local')[0]).toBe('httpbin.org');
    expect(hostMatches('*.default.svc.cluster.local', 'reviews.default.svc.cluster.local')).toBe(true);
    expect(hostMatches('*', 'anything')).toBe(true);
    expect(hostMatches('Reviews.default.svc.cluster.local', 'reviews.default.svc.cluster.local')).toBe(true);
  });
});

describe('ipText', () => {
  it('prints IPv4 and compressed IPv6', () => {
    expect(ipText(Uint8Array.of(10, 96, 0, 1))).toBe('10.96.0.1');
    expect(ipText(Uint8Array.of(0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7))).toBe('fd00::7');
    expect(ipText(Uint8Array.of(0x20, 1, 0xd, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1))).toBe(
      '2001:db8:1::1',
    );
    expect(ipText(Uint8Array.of(1, 2, 3))).toBe('');
  });
});

describe('mergeRouteParents', () => {
  const ours = 'istio.io/mesh-controller';
  const cond = (reason: string, status = true) =>
    new Map([['Accepted', { status, reason, message: 'm', observedGeneration: 1 }]]);
  const gwEntry = {
    parentRef: { name: 'bookinfo-gateway' },
    controllerName: 'istio.io/gateway-controller',
    conditions: [{ type: 'Accepted', status: 'True', reason: 'Accepted' }],
  };

  it('keeps other controllers entries, adds ours, and reports no change when nothing changes', () => {
    const first = mergeRouteParents(
      [gwEntry],
      [{ parentRef: { group: '', kind: 'Service', name: 'reviews' }, conditions: cond('Accepted') }],
      'default',
      't1',
    );
    expect(first?.map((p) => p.controllerName)).toEqual(['istio.io/gateway-controller', ours]);
    expect(first?.[1]?.conditions?.[0]).toMatchObject({
      type: 'Accepted',
      status: 'True',
      lastTransitionTime: 't1',
    });
    const again = mergeRouteParents(
      first!,
      [{ parentRef: { group: '', kind: 'Service', name: 'reviews' }, conditions: cond('Accepted') }],
      'default',
      't2',
    );
    expect(again).toBeNull();
  });

  it('updates ours in place (transition time moves only on a status flip) and drops stale ones', () => {
    const cur = mergeRouteParents(
      [gwEntry],
      [
        { parentRef: { group: '', kind: 'Service', name: 'reviews' }, conditions: cond('Accepted') },
        { parentRef: { group: '', kind: 'Service', name: 'details' }, conditions: cond('Accepted') },
      ],
      'default',
      't1',
    )!;
    const next = mergeRouteParents(
      cur,
      [
        {
          parentRef: { group: '', kind: 'Service', name: 'reviews', namespace: 'default' },
          conditions: cond('NoMatchingParent', false),
        },
      ],
      'default',
      't2',
    )!;
    expect(next.map((p) => p.parentRef.name)).toEqual(['bookinfo-gateway', 'reviews']);
    expect(next[1]?.conditions?.[0]).toMatchObject({
      status: 'False',
      reason: 'NoMatchingParent',
      lastTransitionTime: 't2',
    });
    expect(mergeRouteParents(next, [], 'default', 't3')).toEqual([gwEntry]);
  });
});
