/**
 * Root tier: real network namespaces A and B joined by a veth pair, iptables REDIRECT, transparent
 * (spoofed-source) connects, SO_MARK counted by iptables, and the error paths, always checking that the
 * test's thread is back in its own namespace afterwards.
 *
 *   A (a0: 10.200.N.1/24, fd00:200:N::1/64)  <-- veth -->  B (b0: 10.200.N.2/24, fd00:200:N::2/64)
 *   B routes 10.201.N.0/24 (the "spoofed client" range, not assigned anywhere) via A.
 */
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { isMeshError, type MeshError } from '../errors/index.ts';
import {
  closeFd,
  connectInNetns,
  currentNetnsInode,
  getMark,
  listenInNetns,
  listenTcpInNetns,
  netnsInode,
  openNetns,
  originalDst,
  setMark,
  socketFd,
  tcpSocketInNetns,
} from './index.ts';
import { randomSubnet, TestNetns, vethPair } from './testdata/topology.ts';

const N = randomSubnet();
const A_IP = `10.200.${N}.1`;
const B_IP = `10.200.${N}.2`;
const A_IP6 = `fd00:200:${N.toString(16)}::1`;
const B_IP6 = `fd00:200:${N.toString(16)}::2`;
const SPOOFED = `10.201.${N}.50`;
const MARK = 0x539;

let A: TestNetns;
let B: TestNetns;
let initialInode: number;
const cleanups: Array<() => void> = [];

function expectHomeNetns(): void {
  expect(currentNetnsInode()).toBe(initialInode);
}

function catchMeshError(fn: () => unknown): MeshError {
  try {
    fn();
  } catch (err) {
    if (isMeshError(err)) return err;
    throw err;
  }
  throw new Error('expected a MeshError, nothing was thrown');
}

/** Starts a server in `ns` and registers its cleanup; returns the server. */
async function serverIn(
  ns: TestNetns,
  host: string,
  port: number,
  onConn: (s: net.Socket) => void,
  extra: { mark?: number; reusePort?: boolean; ipv6Only?: boolean } = {},
): Promise<net.Server> {
  const server = net.createServer(onConn);
  await listenInNetns(server, { netns: ns.path, host, port, ...extra });
  cleanups.push(() => server.close());
  return server;
}

/** Reads until the peer ends, bounded. */
function readAll(s: net.Socket, timeoutMs = 5_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`read timed out after ${timeoutMs} ms, got ${JSON.stringify(buf)}`));
    }, timeoutMs);
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      buf += d;
    });
    s.on('end', () => {
      clearTimeout(t);
      resolve(buf);
    });
    s.on('error', (err) => {
      clearTimeout(t);
      reject(err);
    });
  });
}

beforeAll(() => {
  initialInode = currentNetnsInode();
  A = TestNetns.create();
  B = TestNetns.create();
  vethPair(A, 'a0', B, 'b0');
  A.ip('addr', 'add', `${A_IP}/24`, 'dev', 'a0');
  B.ip('addr', 'add', `${B_IP}/24`, 'dev', 'b0');
  A.ip('-6', 'addr', 'add', `${A_IP6}/64`, 'dev', 'a0', 'nodad');
  B.ip('-6', 'addr', 'add', `${B_IP6}/64`, 'dev', 'b0', 'nodad');
  for (const ns of [A, B]) {
    ns.sysctl('net.ipv4.conf.all.rp_filter', '0');
    ns.sysctl('net.ipv4.conf.default.rp_filter', '0');
  }
  A.sysctl('net.ipv4.conf.a0.rp_filter', '0');
  B.sysctl('net.ipv4.conf.b0.rp_filter', '0');
  // B sends replies for the spoofed client range back through A.
  B.ip('route', 'add', `10.201.${N}.0/24`, 'via', A_IP);
});

afterEach(() => {
  while (cleanups.length > 0) {
    try {
      cleanups.pop()!();
    } catch {
      // best effort
    }
  }
  expectHomeNetns();
});

afterAll(() => {
  A?.delete();
  B?.delete();
});

describe('listeners inside a namespace + iptables REDIRECT + originalDst', () => {
  it('accepts a connection REDIRECTed by nat OUTPUT inside A and reports the original IPv4 destination', async () => {
    A.iptables(
      '-t',
      'nat',
      '-A',
      'OUTPUT',
      '-p',
      'tcp',
      '-d',
      B_IP,
      '--dport',
      '8080',
      '-j',
      'REDIRECT',
      '--to-ports',
      '15001',
    );
    const seen: Array<{ dst: ReturnType<typeof originalDst>; local: string | undefined }> = [];
    await serverIn(
      A,
      '0.0.0.0',
      15001,
      (s) => {
        seen.push({ dst: originalDst(s), local: s.localAddress });
        s.end('via-15001');
      },
      { mark: MARK, reusePort: true },
    );
    expectHomeNetns();
    const client = await connectInNetns({ netns: A.path, host: B_IP, port: 8080, timeoutMs: 5_000 });
    expect(await readAll(client)).toBe('via-15001');
    expect(seen).toHaveLength(1);
    expect(seen[0]!.dst).toEqual({ address: B_IP, port: 8080, family: 4 });
  });

  it('accepts a connection REDIRECTed by nat PREROUTING inside A (traffic from B)', async () => {
    A.iptables(
      '-t',
      'nat',
      '-A',
      'PREROUTING',
      '-p',
      'tcp',
      '-d',
      A_IP,
      '--dport',
      '9090',
      '-j',
      'REDIRECT',
      '--to-ports',
      '15006',
    );
    const seen: Array<{ dst: ReturnType<typeof originalDst>; remote: string | undefined }> = [];
    await serverIn(A, '0.0.0.0', 15006, (s) => {
      seen.push({ dst: originalDst(socketFd(s)), remote: s.remoteAddress });
      s.end('via-15006');
    });
    const client = await connectInNetns({ netns: B.path, host: A_IP, port: 9090, timeoutMs: 5_000 });
    expect(await readAll(client)).toBe('via-15006');
    expect(seen).toEqual([{ dst: { address: A_IP, port: 9090, family: 4 }, remote: B_IP }]);
  });

  it('reports the original IPv6 destination (ip6tables nat OUTPUT REDIRECT)', async () => {
    A.ip6tables(
      '-t',
      'nat',
      '-A',
      'OUTPUT',
      '-p',
      'tcp',
      '-d',
      B_IP6,
      '--dport',
      '8080',
      '-j',
      'REDIRECT',
      '--to-ports',
      '15001',
    );
    const seen: Array<ReturnType<typeof originalDst>> = [];
    await serverIn(
      A,
      '::',
      15001,
      (s) => {
        seen.push(originalDst(s));
        s.end('via-v6');
      },
      { ipv6Only: true },
    );
    const client = await connectInNetns({ netns: A.path, host: B_IP6, port: 8080, timeoutMs: 5_000 });
    expect(await readAll(client)).toBe('via-v6');
    expect(seen).toEqual([{ address: B_IP6, port: 8080, family: 6 }]);
  });

  it('reports an IPv4 original destination on a dual-stack (::) listener (v4-mapped socket)', async () => {
    A.iptables(
      '-t',
      'nat',
      '-A',
      'OUTPUT',
      '-p',
      'tcp',
      '-d',
      B_IP,
      '--dport',
      '8081',
      '-j',
      'REDIRECT',
      '--to-ports',
      '15011',
    );
    const seen: Array<ReturnType<typeof originalDst>> = [];
    await serverIn(A, '::', 15011, (s) => {
      seen.push(originalDst(s));
      s.end('via-dual');
    });
    const client = await connectInNetns({ netns: A.path, host: B_IP, port: 8081, timeoutMs: 5_000 });
    expect(await readAll(client)).toBe('via-dual');
    expect(seen).toEqual([{ address: B_IP, port: 8081, family: 4 }]);
  });

  it('throws MESH_ERR_NETNS_ORIGINAL_DST for a connection conntrack never saw (namespace without nat rules)', async () => {
    const C = TestNetns.create();
    cleanups.push(() => C.delete());
    const errors: MeshError[] = [];
    await serverIn(C, '127.0.0.1', 7100, (s) => {
      errors.push(catchMeshError(() => originalDst(s)));
      s.end('x');
    });
    const client = await connectInNetns({ netns: C.path, host: '127.0.0.1', port: 7100, timeoutMs: 5_000 });
    expect(await readAll(client)).toBe('x');
    expect(errors).toHaveLength(1);
    expect(errors[0]!.code).toBe('MESH_ERR_NETNS_ORIGINAL_DST');
    expect(errors[0]!.details).toMatchObject({ op: 'getsockopt(SO_ORIGINAL_DST)', errno: 'ENOENT' });
  });
});

describe('transparent (spoofed-source) connect', () => {
  it('connects from A with a source address A does not own; B sees that address; bytes flow both ways', async () => {
    // Istio's in-pod rules: mark ztunnel's sockets' connections, restore the mark on replies, and route
    // marked replies to the local stack so that they reach the transparent socket.
    A.iptables(
      '-t',
      'mangle',
      '-A',
      'OUTPUT',
      '-m',
      'mark',
      '--mark',
      '0x539/0xfff',
      '-j',
      'CONNMARK',
      '--set-xmark',
      '0x111/0xfff',
    );
    A.iptables(
      '-t',
      'mangle',
      '-A',
      'PREROUTING',
      '-m',
      'connmark',
      '--mark',
      '0x111/0xfff',
      '-j',
      'CONNMARK',
      '--restore-mark',
      '--nfmask',
      '0xffffffff',
      '--ctmask',
      '0xffffffff',
    );
    A.ip('rule', 'add', 'fwmark', '0x111/0xfff', 'lookup', '100');
    A.ip('route', 'add', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', '100');
    expect(A.ip('addr', 'show')).not.toContain(SPOOFED);

    const remotes: string[] = [];
    await serverIn(B, B_IP, 7000, (s) => {
      remotes.push(`${s.remoteAddress}`);
      s.once('data', (d) => s.end(`pong:${d.toString()}:${s.remoteAddress}`));
    });
    const client = await connectInNetns({
      netns: A.path,
      host: B_IP,
      port: 7000,
      mark: MARK,
      transparent: true,
      bind: { host: SPOOFED },
      timeoutMs: 5_000,
    });
    expect(client.localAddress).toBe(SPOOFED);
    expect(getMark(client)).toBe(MARK);
    client.write('ping');
    expect(await readAll(client)).toBe(`pong:ping:${SPOOFED}`);
    expect(remotes).toEqual([SPOOFED]);
  });

  it('also binds a spoofed source with a fixed port', async () => {
    // Reuses the rules of the previous test when run in order; add them if this test runs alone.
    if (!A.exec('iptables-save', '-t', 'mangle').includes('0x111/0xfff')) {
      A.iptables(
        '-t',
        'mangle',
        '-A',
        'OUTPUT',
        '-m',
        'mark',
        '--mark',
        '0x539/0xfff',
        '-j',
        'CONNMARK',
        '--set-xmark',
        '0x111/0xfff',
      );
      A.iptables(
        '-t',
        'mangle',
        '-A',
        'PREROUTING',
        '-m',
        'connmark',
        '--mark',
        '0x111/0xfff',
        '-j',
        'CONNMARK',
        '--restore-mark',
      );
      A.ip('rule', 'add', 'fwmark', '0x111/0xfff', 'lookup', '100');
      A.ip('route', 'add', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', '100');
    }
    await serverIn(B, B_IP, 7003, (s) => s.end(`${s.remoteAddress}:${s.remotePort}`));
    const client = await connectInNetns({
      netns: A.path,
      host: B_IP,
      port: 7003,
      mark: MARK,
      transparent: true,
      bind: { host: `10.201.${N}.51`, port: 40_123 },
      timeoutMs: 5_000,
    });
    expect(await readAll(client)).toBe(`10.201.${N}.51:40123`);
  });
});

describe('SO_MARK', () => {
  it('marks every packet of a socket created with mark (counted by an iptables mark match in A)', async () => {
    A.iptables(
      '-t',
      'mangle',
      '-A',
      'OUTPUT',
      '-p',
      'tcp',
      '--dport',
      '7001',
      '-m',
      'mark',
      '--mark',
      '0x539',
      '-m',
      'comment',
      '--comment',
      'amb-mark-7001',
    );
    A.iptables(
      '-t',
      'mangle',
      '-A',
      'OUTPUT',
      '-p',
      'tcp',
      '--dport',
      '7001',
      '-m',
      'comment',
      '--comment',
      'amb-all-7001',
    );
    await serverIn(B, B_IP, 7001, (s) => s.once('data', () => s.end('ok')));
    // Unmarked connection first: counted by "all" only.
    const plain = await connectInNetns({ netns: A.path, host: B_IP, port: 7001, timeoutMs: 5_000 });
    expect(getMark(plain)).toBe(0);
    plain.write('x');
    expect(await readAll(plain)).toBe('ok');
    expect(A.rulePackets('mangle', 'amb-mark-7001')).toBe(0);
    const unmarkedPackets = A.rulePackets('mangle', 'amb-all-7001');
    expect(unmarkedPackets).toBeGreaterThan(0);

    const marked = await connectInNetns({
      netns: A.path,
      host: B_IP,
      port: 7001,
      mark: MARK,
      timeoutMs: 5_000,
    });
    expect(getMark(marked)).toBe(MARK);
    marked.write('y');
    expect(await readAll(marked)).toBe('ok');
    expect(A.rulePackets('mangle', 'amb-mark-7001')).toBeGreaterThan(0);
    expect(A.rulePackets('mangle', 'amb-all-7001')).toBeGreaterThan(unmarkedPackets);
  });

  it('setMark marks a socket after creation (the packets sent afterwards carry it)', async () => {
    A.iptables(
      '-t',
      'mangle',
      '-A',
      'OUTPUT',
      '-p',
      'tcp',
      '--dport',
      '7002',
      '-m',
      'mark',
      '--mark',
      '0x777',
      '-m',
      'comment',
      '--comment',
      'amb-mark-7002',
    );
    await serverIn(B, B_IP, 7002, (s) => s.once('data', () => s.end('ok')));
    const c = await connectInNetns({ netns: A.path, host: B_IP, port: 7002, timeoutMs: 5_000 });
    expect(A.rulePackets('mangle', 'amb-mark-7002')).toBe(0);
    setMark(c, 0x777);
    expect(getMark(socketFd(c))).toBe(0x777);
    c.write('z');
    expect(await readAll(c)).toBe('ok');
    expect(A.rulePackets('mangle', 'amb-mark-7002')).toBeGreaterThan(0);
  });
});

describe('error paths keep the thread in its own namespace', () => {
  it('EADDRINUSE without reusePort, inside the namespace', () => {
    const fd = listenTcpInNetns({ netns: A.path, host: '0.0.0.0', port: 7200 });
    cleanups.push(() => closeFd(fd));
    const err = catchMeshError(() => listenTcpInNetns({ netns: A.path, host: '0.0.0.0', port: 7200 }));
    expect(err.code).toBe('MESH_ERR_NETNS_SOCKET');
    expect(err.details).toMatchObject({ op: 'bind', errno: 'EADDRINUSE', netns: A.path });
    expect(err.message).toContain(`bind 0.0.0.0:7200 in netns ${A.path}: EADDRINUSE`);
    expectHomeNetns();
    // The same port is free in the root namespace and in B: the sockets really live in A.
    const inB = listenTcpInNetns({ netns: B.path, host: '0.0.0.0', port: 7200 });
    closeFd(inB);
  });

  it('SO_REUSEPORT lets two listeners share a port in one namespace, and both accept', async () => {
    const hits = new Set<string>();
    const s1 = await serverIn(A, A_IP, 7300, (s) => s.end('1'), { reusePort: true });
    const s2 = await serverIn(A, A_IP, 7300, (s) => s.end('2'), { reusePort: true });
    expect((s1.address() as net.AddressInfo).port).toBe(7300);
    expect((s2.address() as net.AddressInfo).port).toBe(7300);
    // The kernel hashes connections over the group; 40 connections reach both with near certainty.
    for (let i = 0; i < 40 && hits.size < 2; i++) {
      const c = await connectInNetns({ netns: B.path, host: A_IP, port: 7300, timeoutMs: 5_000 });
      hits.add(await readAll(c));
    }
    expect([...hits].sort()).toEqual(['1', '2']);
    // A third listener without reusePort is refused.
    const err = catchMeshError(() => listenTcpInNetns({ netns: A.path, host: A_IP, port: 7300 }));
    expect(err.details).toMatchObject({ op: 'bind', errno: 'EADDRINUSE' });
  });

  it('a nonexistent namespace path is MESH_ERR_NETNS_OPEN', () => {
    const err = catchMeshError(() =>
      listenTcpInNetns({ netns: '/var/run/netns/amb-t-does-not-exist', host: '0.0.0.0', port: 1 }),
    );
    expect(err.code).toBe('MESH_ERR_NETNS_OPEN');
    expect(err.details).toMatchObject({ op: 'open', errno: 'ENOENT' });
    expectHomeNetns();
  });

  it('an fd that is not a namespace is MESH_ERR_NETNS_SETNS (EINVAL), for listeners and outbound sockets', () => {
    const fd = listenTcpInNetns({ netns: A.path, host: '127.0.0.1', port: 0 }); // a socket fd, not a netns
    cleanups.push(() => closeFd(fd));
    const e1 = catchMeshError(() => listenTcpInNetns({ netns: fd, host: '127.0.0.1', port: 0 }));
    expect(e1.code).toBe('MESH_ERR_NETNS_SETNS');
    expect(e1.details).toMatchObject({ op: 'setns', errno: 'EINVAL' });
    expectHomeNetns();
    const e2 = catchMeshError(() => tcpSocketInNetns({ netns: fd, family: 4 }));
    expect(e2.code).toBe('MESH_ERR_NETNS_SETNS');
    expectHomeNetns();
  });

  it('failures after entering the namespace (bind of an address A lacks, bad option) leave the thread home', () => {
    const e1 = catchMeshError(() => listenTcpInNetns({ netns: A.path, host: '192.0.2.77', port: 7400 }));
    expect(e1.details).toMatchObject({ op: 'bind', errno: 'EADDRNOTAVAIL' });
    expectHomeNetns();
    const e2 = catchMeshError(() =>
      tcpSocketInNetns({ netns: A.path, family: 4, bind: { host: '192.0.2.77' } }),
    );
    expect(e2.details).toMatchObject({ op: 'bind', errno: 'EADDRNOTAVAIL' });
    expectHomeNetns();
    // A namespace fd that is fine, reused many times: no fd leaks, no drift.
    const nsfd = openNetns(A.path);
    try {
      for (let i = 0; i < 200; i++) {
        catchMeshError(() => listenTcpInNetns({ netns: nsfd, host: '192.0.2.77', port: 7400 }));
      }
    } finally {
      closeFd(nsfd);
    }
    expectHomeNetns();
    expect(netnsInode(A.path)).not.toBe(initialInode);
  });

  it('a failure while the thread is inside the namespace (socket() -> EMFILE) still brings it back', () => {
    const script = fileURLToPath(new URL('./testdata/emfile-child.ts', import.meta.url));
    const r = spawnSync(process.execPath, [script, A.path], { timeout: 20_000, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const seen = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
    expect(seen).toEqual({
      listen: { code: 'MESH_ERR_NETNS_SOCKET', op: 'socket', errno: 'EMFILE', home: true },
      outbound: { code: 'MESH_ERR_NETNS_SOCKET', op: 'socket', errno: 'EMFILE', home: true },
      differentNs: true,
      homeAtEnd: true,
    });
  });

  it('a refused connect inside a namespace is a MeshError with ECONNREFUSED', async () => {
    const err = await connectInNetns({ netns: A.path, host: B_IP, port: 7999, timeoutMs: 5_000 }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(isMeshError(err, 'MESH_ERR_NETNS_SOCKET')).toBe(true);
    expect((err as MeshError).details).toMatchObject({ op: 'connect', errno: 'ECONNREFUSED' });
  });

  it('a connect to an unreachable peer times out with ETIMEDOUT', async () => {
    // Packets to this address are dropped in B, so the SYN is never answered.
    B.iptables('-A', 'INPUT', '-p', 'tcp', '--dport', '7998', '-j', 'DROP');
    const started = Date.now();
    const err = await connectInNetns({ netns: A.path, host: B_IP, port: 7998, timeoutMs: 300 }).then(
      () => null,
      (e: unknown) => e,
    );
    expect((err as MeshError).details).toMatchObject({ op: 'connect', errno: 'ETIMEDOUT' });
    expect(Date.now() - started).toBeLessThan(3_000);
  });
});
