import { describe, expect, it } from 'vitest';
import { formatAuthority, parseAuthority } from './authority.ts';
import {
  EMPTY_BAGGAGE,
  formatBaggage,
  formatForwardedFor,
  formatTraceparent,
  forwardedClient,
  newTraceparent,
  parseBaggage,
  parseForwarded,
  parseTraceparent,
} from './headers.ts';

describe('authority', () => {
  it.each([
    ['10.0.0.1:8080', { ip: '10.0.0.1', port: 8080, family: 4 }],
    ['[::1]:80', { ip: '::1', port: 80, family: 6 }],
    ['[fd00::1:2]:65535', { ip: 'fd00::1:2', port: 65535, family: 6 }],
    ['1.2.3.4:1', { ip: '1.2.3.4', port: 1, family: 4 }],
  ])('parses %j', (s, want) => {
    expect(parseAuthority(s)).toEqual(want);
    expect(formatAuthority(want.ip, want.port)).toBe(s);
  });

  it.each([
    '',
    'nope',
    '1.2.3.4',
    '[::1]',
    '::1:80',
    '1.2.3.4:',
    '1.2.3.4:0',
    '1.2.3.4:65536',
    '1.2.3.4:+80',
    '1.2.3.4:80:80',
    '01.2.3.4:80',
    '256.1.1.1:80',
    'example.com:443',
    '[1.2.3.4]:80',
    '[fe80::1%eth0]:80',
    '[::1]80',
    ' 1.2.3.4:80',
  ])('rejects %j', (s) => {
    expect(parseAuthority(s)).toBeNull();
  });
});

describe('baggage', () => {
  it('formats ztunnel keys in ztunnel order', () => {
    expect(
      formatBaggage({
        clusterId: 'K1',
        namespace: 'NS1',
        workloadName: 'N1',
        serviceName: 'N2',
        revision: 'V1',
      }),
    ).toBe(
      'k8s.cluster.name=K1,k8s.namespace.name=NS1,k8s.deployment.name=N1,service.name=N2,service.version=V1',
    );
    expect(formatBaggage({ namespace: 'ns', workloadName: 'cron', region: 'r', zone: 'z' }, 'cronjob')).toBe(
      'k8s.namespace.name=ns,k8s.cronjob.name=cron,cloud.region=r,cloud.availability_zone=z',
    );
    expect(formatBaggage({})).toBe('');
  });

  it('parses ztunnel test vectors', () => {
    expect(
      parseBaggage(
        'k8s.cluster.name=K1,k8s.namespace.name=NS1,k8s.deployment.name=N1,service.name=N2,service.version=V1',
      ),
    ).toEqual({
      ...EMPTY_BAGGAGE,
      clusterId: 'K1',
      namespace: 'NS1',
      workloadName: 'N1',
      serviceName: 'N2',
      revision: 'V1',
    });
    // Empty values are unknown.
    expect(parseBaggage('k8s.cluster.name=,k8s.namespace.name=,service.name=')).toEqual(EMPTY_BAGGAGE);
    // Several header lines.
    expect(parseBaggage(['k8s.cluster.name=K1', 'k8s.pod.name=P', 'service.version=V1'])).toEqual({
      ...EMPTY_BAGGAGE,
      clusterId: 'K1',
      workloadName: 'P',
      revision: 'V1',
    });
    expect(parseBaggage(undefined)).toEqual(EMPTY_BAGGAGE);
  });

  it('round-trips values that need W3C percent-encoding, ignores properties and junk', () => {
    const b = { namespace: 'a,b;c d', serviceName: '100%' };
    expect(parseBaggage(formatBaggage(b))).toMatchObject(b);
    expect(parseBaggage(' service.name = svc ;prop=1, junk, =x,other.key=v')).toMatchObject({
      serviceName: 'svc',
    });
  });
});

describe('forwarded', () => {
  it('formats for= per RFC 7239 (quoted when it holds a colon)', () => {
    expect(formatForwardedFor('10.0.0.1', 3456)).toBe('for="10.0.0.1:3456"');
    expect(formatForwardedFor('fd00::1', 80)).toBe('for="[fd00::1]:80"');
    expect(formatForwardedFor('10.0.0.1')).toBe('for=10.0.0.1');
    expect(formatForwardedFor('fd00::1')).toBe('for="[fd00::1]"');
  });

  it('parses elements, quoting and escapes', () => {
    expect(
      parseForwarded('for="[2001:db8:cafe::17]:4711";proto=http;by=203.0.113.43, for=198.51.100.17'),
    ).toEqual([
      { for: '[2001:db8:cafe::17]:4711', by: '203.0.113.43', host: null, proto: 'http' },
      { for: '198.51.100.17', by: null, host: null, proto: null },
    ]);
    expect(parseForwarded('For="a\\"b"')).toEqual([{ for: 'a"b', by: null, host: null, proto: null }]);
    expect(parseForwarded('for="unterminated')).toBeNull();
    expect(parseForwarded('for=1.2.3.4:80')).toBeNull(); // ':' is not a token character
    expect(parseForwarded('=x')).toBeNull();
  });

  it('extracts the client address', () => {
    expect(forwardedClient('for="10.0.0.1:3456"')).toEqual({ ip: '10.0.0.1', port: 3456 });
    expect(forwardedClient('for="[fd00::1]:80", for=1.1.1.1')).toEqual({ ip: 'fd00::1', port: 80 });
    expect(forwardedClient('for=10.0.0.1')).toEqual({ ip: '10.0.0.1', port: null });
    expect(forwardedClient('for="[fd00::1]"')).toEqual({ ip: 'fd00::1', port: null });
    expect(forwardedClient('proto=https')).toBeNull();
    expect(forwardedClient(undefined)).toBeNull();
    for (const [ip, port] of [
      ['10.1.2.3', 1],
      ['fd00::42', 65535],
    ] as const) {
      expect(forwardedClient(formatForwardedFor(ip, port))).toEqual({ ip, port });
    }
  });
});

describe('traceparent', () => {
  it('generates valid, distinct, unsampled version-00 values', () => {
    const a = newTraceparent();
    const b = newTraceparent();
    expect(a).not.toBe(b);
    const p = parseTraceparent(a);
    expect(p).not.toBeNull();
    expect(p!.version).toBe(0);
    expect(p!.flags).toBe(0);
    expect(formatTraceparent(p!)).toBe(a);
  });

  it('parses the W3C example and rejects invalid ones', () => {
    expect(parseTraceparent('00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01')).toEqual({
      version: 0,
      traceId: '0af7651916cd43dd8448eb211c80319c',
      parentId: 'b7ad6b7169203331',
      flags: 1,
    });
    for (const bad of [
      'ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      '00-00000000000000000000000000000000-b7ad6b7169203331-01',
      '00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01',
      '00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01',
      '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra',
      '00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01',
      'garbage',
    ]) {
      expect(parseTraceparent(bad)).toBeNull();
    }
    // Future versions may append fields.
    expect(parseTraceparent('01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra')).not.toBeNull();
  });
});
