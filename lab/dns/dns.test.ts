/**
 * Cluster DNS without namespaces: the zone's answers (scenario table), the wire codec, the server on loopback
 * through Node's own resolver (UDP) and raw TCP, truncation, and a fuzz run of malformed packets after which
 * the server still answers.
 */
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { Resolver } from 'node:dns/promises';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DnsServer } from './server.ts';
import { encodeQuery, parseQuery, parseResponse, RCODE, readName, TYPE } from './wire.ts';
import { ClusterZone, type DnsRecordSet } from './zone.ts';

const RECORDS: DnsRecordSet = {
  services: [
    {
      namespace: 'default',
      name: 'web',
      clusterIPs: ['10.9.240.10'],
      ports: [
        { name: 'http', port: 80, protocol: 'TCP' },
        { name: '', port: 81, protocol: 'TCP' },
      ],
    },
    {
      namespace: 'db',
      name: 'pg',
      clusterIPs: [],
      ports: [{ name: 'pg', port: 5432, protocol: 'TCP' }],
      endpoints: [{ ip: '10.9.1.5', hostname: 'pg-0' }, { ip: '10.9.2.6' }, { ip: '10.9.2.7', ready: false }],
    },
    { namespace: 'default', name: 'ext', clusterIPs: [], ports: [], externalName: 'example.com' },
    {
      namespace: 'default',
      name: 'alias',
      clusterIPs: [],
      ports: [],
      externalName: 'web.default.svc.cluster.local',
    },
  ],
};

function ask(zone: ClusterZone, name: string, type: number) {
  return zone.answer({ name, type, class: 1 });
}

describe('ClusterZone', () => {
  const zone = new ClusterZone('cluster.local', '10.9.0.2');
  zone.setRecords(RECORDS);
  const values = (name: string, type: number): string[] =>
    ask(zone, name, type).answers.map((a) => {
      const d = a.data;
      if ('a' in d) return d.a;
      if ('cname' in d) return `CNAME ${d.cname}`;
      if ('srv' in d) return `${d.srv.port} ${d.srv.target}`;
      if ('ptr' in d) return d.ptr;
      return '?';
    });

  const cases: [string, number, number, string[]][] = [
    ['web.default.svc.cluster.local', TYPE.A, RCODE.NOERROR, ['10.9.240.10']],
    ['WEB.Default.svc.cluster.local.', TYPE.A, RCODE.NOERROR, ['10.9.240.10']],
    ['web.default.svc.cluster.local', TYPE.AAAA, RCODE.NOERROR, []],
    ['pg.db.svc.cluster.local', TYPE.A, RCODE.NOERROR, ['10.9.1.5', '10.9.2.6']],
    ['pg-0.pg.db.svc.cluster.local', TYPE.A, RCODE.NOERROR, ['10.9.1.5']],
    ['10-9-2-6.pg.db.svc.cluster.local', TYPE.A, RCODE.NOERROR, ['10.9.2.6']],
    [
      '_http._tcp.web.default.svc.cluster.local',
      TYPE.SRV,
      RCODE.NOERROR,
      ['80 web.default.svc.cluster.local'],
    ],
    [
      '_pg._tcp.pg.db.svc.cluster.local',
      TYPE.SRV,
      RCODE.NOERROR,
      ['5432 pg-0.pg.db.svc.cluster.local', '5432 10-9-2-6.pg.db.svc.cluster.local'],
    ],
    ['ext.default.svc.cluster.local', TYPE.A, RCODE.NOERROR, ['CNAME example.com']],
    [
      'alias.default.svc.cluster.local',
      TYPE.A,
      RCODE.NOERROR,
      ['CNAME web.default.svc.cluster.local', '10.9.240.10'],
    ],
    ['10-9-1-77.anyns.pod.cluster.local', TYPE.A, RCODE.NOERROR, ['10.9.1.77']],
    ['10-9-1-777.anyns.pod.cluster.local', TYPE.A, RCODE.NXDOMAIN, []],
    ['default.svc.cluster.local', TYPE.A, RCODE.NOERROR, []],
    ['nope.default.svc.cluster.local', TYPE.A, RCODE.NXDOMAIN, []],
    ['web.default.svc.cluster.local.default.svc.cluster.local', TYPE.A, RCODE.NXDOMAIN, []],
    ['ns.dns.cluster.local', TYPE.A, RCODE.NOERROR, ['10.9.0.2']],
    ['10.240.9.10.in-addr.arpa', TYPE.PTR, RCODE.NOERROR, ['web.default.svc.cluster.local']],
    ['1.1.1.10.in-addr.arpa', TYPE.PTR, RCODE.NXDOMAIN, []],
    ['example.com', TYPE.A, RCODE.REFUSED, []],
    ['cluster.local.evil', TYPE.A, RCODE.REFUSED, []],
  ];
  it.each(cases)('%s type %i → rcode %i %j', (name, type, rcode, want) => {
    expect(ask(zone, name, type).rcode).toBe(rcode);
    expect(values(name, type)).toEqual(want);
  });

  it('negative answers carry the SOA; record updates replace the zone', () => {
    expect(ask(zone, 'nope.default.svc.cluster.local', TYPE.A).authority[0]?.type).toBe(TYPE.SOA);
    const z = new ClusterZone();
    z.setRecords(RECORDS);
    z.setRecords({ services: [] });
    expect(ask(z, 'web.default.svc.cluster.local', TYPE.A).rcode).toBe(RCODE.NXDOMAIN);
  });
});

describe('wire', () => {
  it('rejects compression loops, forward pointers and overlong names', () => {
    const loop = Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xc0, 12]);
    expect(() => readName(loop, 12)).toThrow(/backwards/);
    const long = new Uint8Array(12 + 5 * 64 + 1);
    for (let i = 0; i < 5; i++) long[12 + i * 64] = 63;
    expect(() => readName(long, 12)).toThrow(/255/);
    const q = encodeQuery(7, 'a.b', TYPE.A, { edns: 4096 });
    expect(parseQuery(q).edns?.udpSize).toBe(4096);
  });
});

describe('DnsServer on loopback', () => {
  const server = new DnsServer({ domain: 'cluster.local' });
  let port = 0;
  beforeAll(async () => {
    const many = Array.from({ length: 120 }, (_, i) => ({ ip: `10.9.3.${i + 1}` }));
    server.setRecords({
      services: [
        ...RECORDS.services,
        { namespace: 'big', name: 'many', clusterIPs: [], ports: [], endpoints: many },
      ],
    });
    port = await server.listen('127.0.0.1', 0);
  });
  afterAll(() => server.close());

  function udp(msg: Uint8Array, timeoutMs = 1000): Promise<Buffer | null> {
    return new Promise((resolve) => {
      const s = dgram.createSocket('udp4');
      const t = setTimeout(() => {
        s.close();
        resolve(null);
      }, timeoutMs);
      s.on('message', (m) => {
        clearTimeout(t);
        s.close();
        resolve(m);
      });
      s.send(msg, port, '127.0.0.1');
    });
  }

  function tcp(msg: Uint8Array): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, '127.0.0.1');
      const frame = Buffer.alloc(2 + msg.length);
      frame.writeUInt16BE(msg.length);
      frame.set(msg, 2);
      let buf = Buffer.alloc(0);
      s.setTimeout(2000, () => s.destroy(new Error('tcp timeout')));
      s.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          s.end();
          resolve(buf.subarray(2, 2 + buf.readUInt16BE(0)));
        }
      });
      s.on('error', reject);
      s.write(frame);
    });
  }

  it("answers Node's resolver (A, SRV, NXDOMAIN, REFUSED)", async () => {
    const r = new Resolver({ timeout: 1000, tries: 1 });
    r.setServers([`127.0.0.1:${port}`]);
    expect(await r.resolve4('web.default.svc.cluster.local')).toEqual(['10.9.240.10']);
    expect(await r.resolveSrv('_http._tcp.web.default.svc.cluster.local')).toMatchObject([
      { name: 'web.default.svc.cluster.local', port: 80, priority: 0, weight: 100 },
    ]);
    await expect(r.resolve4('nope.default.svc.cluster.local')).rejects.toMatchObject({ code: 'ENOTFOUND' });
    await expect(r.resolve4('example.com')).rejects.toMatchObject({ code: 'EREFUSED' });
  });

  it('truncates large UDP answers (TC) and serves them whole over TCP', async () => {
    const q = encodeQuery(42, 'many.big.svc.cluster.local', TYPE.A);
    const overUdp = parseResponse((await udp(q))!);
    expect(overUdp.tc).toBe(true);
    expect(overUdp.answers).toHaveLength(0);
    const overTcp = parseResponse(await tcp(q));
    expect(overTcp.tc).toBe(false);
    expect(overTcp.answers).toHaveLength(120);
    expect(overTcp.id).toBe(42);
  });

  it('survives a fuzz run of malformed packets and still answers', async () => {
    const valid = encodeQuery(1, 'web.default.svc.cluster.local', TYPE.A, { edns: 1232 });
    const sock = dgram.createSocket('udp4');
    let replies = 0;
    sock.on('message', () => {
      replies++;
    });
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
    const N = 3000;
    for (let i = 0; i < N; i++) {
      let pkt: Buffer;
      const mode = i % 4;
      if (mode === 0) pkt = randomBytes(1 + (i % 600));
      else {
        pkt = Buffer.from(valid);
        const flips = 1 + (i % 8);
        for (let f = 0; f < flips; f++) {
          const at = randomBytes(2).readUInt16BE(0) % pkt.length;
          pkt[at] = randomBytes(1)[0] ?? 0;
        }
        if (mode === 3) pkt = pkt.subarray(0, randomBytes(1)[0]! % pkt.length);
      }
      sock.send(pkt, port, '127.0.0.1');
      if (i % 200 === 0) await new Promise((r) => setImmediate(r));
    }
    await new Promise((r) => setTimeout(r, 300));
    sock.close();
    expect(server.stats.errors).toBe(0);
    expect(replies).toBeGreaterThan(0);
    const after = parseResponse((await udp(encodeQuery(9, 'web.default.svc.cluster.local', TYPE.A)))!);
    expect(after.rcode).toBe(RCODE.NOERROR);
    expect(after.answers.map((a) => a.value)).toEqual(['10.9.240.10']);
    // TCP fuzz: garbage frames on one connection, then a valid query on a new one.
    await new Promise<void>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        for (let i = 0; i < 50; i++) s.write(randomBytes(1 + (i % 300)));
        s.end();
      });
      s.on('error', () => resolve());
      s.on('close', () => resolve());
      s.resume();
    });
    expect(
      parseResponse(await tcp(encodeQuery(10, 'web.default.svc.cluster.local', TYPE.A))).answers,
    ).toHaveLength(1);
  });
});
