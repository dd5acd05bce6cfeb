/**
 * Unit tier (any user): the netns/socket API in the test's own namespace (entering one's own namespace is
 * skipped, so no privilege is needed), argument and error mapping, the lazy addon loader, and the Node 24
 * behaviour of `new net.Socket({ fd })` that connectInNetns relies on.
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { isMeshError, type MeshError } from '../errors/index.ts';
import { loadAddon, native } from './addon.ts';
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
  SELF_NETNS,
  socketFd,
  tcpSocketInNetns,
} from './index.ts';

const home = currentNetnsInode();
const cleanups: Array<() => void> = [];

afterEach(() => {
  while (cleanups.length > 0) cleanups.pop()!();
  expect(currentNetnsInode()).toBe(home);
});

function catchMeshError(fn: () => unknown): MeshError {
  try {
    fn();
  } catch (err) {
    if (isMeshError(err)) return err;
    throw err;
  }
  throw new Error('expected a MeshError, nothing was thrown');
}

async function rejection(p: Promise<unknown>): Promise<MeshError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  if (!isMeshError(err)) throw new Error(`expected a MeshError rejection, got ${String(err)}`);
  return err;
}

async function echoServer(): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer((s) => s.once('data', (d) => s.end(`echo:${d.toString()}`)));
  await listenInNetns(server, { netns: SELF_NETNS, host: '127.0.0.1', port: 0 });
  cleanups.push(() => server.close());
  return { server, port: (server.address() as net.AddressInfo).port };
}

/** A loopback port nobody listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as net.AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

function readAll(s: net.Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error(`read timeout, got ${buf}`)), 5_000);
    s.on('data', (d: Buffer) => {
      buf += d.toString();
    });
    s.on('end', () => {
      clearTimeout(t);
      resolve(buf);
    });
    s.on('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
  });
}

describe('addon loading', () => {
  it('a missing addon is MESH_ERR_NETNS_ADDON_MISSING, thrown at load time', () => {
    const e = catchMeshError(() => loadAddon('/nonexistent/amb-t/netns.node'));
    expect(e.code).toBe('MESH_ERR_NETNS_ADDON_MISSING');
    expect(e.details).toMatchObject({ op: 'dlopen', path: '/nonexistent/amb-t/netns.node' });
    expect(e.hint).toContain('npm ci');
  });
});

describe('namespaces', () => {
  it('opens a netns file, identifies it by inode, and closes it once', () => {
    const fd = openNetns(SELF_NETNS);
    expect(netnsInode(fd)).toBe(home);
    expect(netnsInode('/proc/self/ns/net')).toBe(home);
    closeFd(fd);
    const e = catchMeshError(() => closeFd(fd));
    expect(e.details).toMatchObject({ op: 'close', errno: 'EBADF' });
  });

  it('refuses paths that are missing, not a namespace, or another kind of namespace', () => {
    const missing = catchMeshError(() => openNetns('/var/run/netns/amb-t-missing'));
    expect(missing.code).toBe('MESH_ERR_NETNS_OPEN');
    expect(missing.details).toMatchObject({ op: 'open', errno: 'ENOENT' });
    expect(missing.message).toBe('open /var/run/netns/amb-t-missing: ENOENT (No such file or directory)');
    const file = catchMeshError(() => openNetns('/proc/self/status'));
    expect(file.code).toBe('MESH_ERR_NETNS_OPEN');
    expect(file.details).toMatchObject({ errno: 'EINVAL' });
    const uts = catchMeshError(() => openNetns('/proc/self/ns/uts'));
    expect(uts.code).toBe('MESH_ERR_NETNS_OPEN');
    expect(uts.message).toContain('not a network namespace');
    expect(catchMeshError(() => netnsInode('/var/run/netns/amb-t-missing')).code).toBe('MESH_ERR_NETNS_OPEN');
  });

  it('listening on a nonexistent namespace path is MESH_ERR_NETNS_OPEN', () => {
    const e = catchMeshError(() =>
      listenTcpInNetns({ netns: '/var/run/netns/amb-t-missing', host: '0.0.0.0', port: 0 }),
    );
    expect(e.code).toBe('MESH_ERR_NETNS_OPEN');
  });
});

describe('listeners', () => {
  it('returns an fd that net.Server.listen({ fd }) serves (IPv4 and IPv6 loopback)', async () => {
    for (const host of ['127.0.0.1', '::1']) {
      const fd = listenTcpInNetns({ netns: SELF_NETNS, host, port: 0, backlog: 16 });
      const server = net.createServer((s) => s.end('hi'));
      await new Promise<void>((resolve) => server.listen({ fd }, resolve));
      cleanups.push(() => server.close());
      expect(socketFd(server)).toBe(fd);
      const { port, address } = server.address() as net.AddressInfo;
      expect(address).toBe(host);
      const c = net.connect(port, host);
      expect(await readAll(c)).toBe('hi');
    }
  });

  it('validates arguments with MESH_ERR_NETNS_SOCKET / EINVAL', () => {
    for (const bad of [
      { netns: SELF_NETNS, host: 'localhost', port: 1 },
      { netns: SELF_NETNS, host: '127.0.0.1', port: 70_000 },
      { netns: SELF_NETNS, host: '127.0.0.1', port: 1, mark: -1 },
      { netns: SELF_NETNS, host: '127.0.0.1', port: 1, backlog: 0 },
      { netns: -3, host: '127.0.0.1', port: 1 },
    ]) {
      const e = catchMeshError(() => listenTcpInNetns(bad));
      expect(e.code).toBe('MESH_ERR_NETNS_SOCKET');
      expect(e.details.errno).toBe('EINVAL');
    }
  });

  it('EADDRINUSE without reusePort names op, address and errno', () => {
    const fd = listenTcpInNetns({ netns: SELF_NETNS, host: '127.0.0.1', port: 0 });
    const server = net.createServer();
    server.listen({ fd }); // the server owns the fd now
    cleanups.push(() => server.close());
    const { port } = server.address() as net.AddressInfo;
    const e = catchMeshError(() => listenTcpInNetns({ netns: SELF_NETNS, host: '127.0.0.1', port }));
    expect(e.code).toBe('MESH_ERR_NETNS_SOCKET');
    expect(e.details).toMatchObject({ op: 'bind', errno: 'EADDRINUSE' });
    expect(e.message).toBe(
      `bind 127.0.0.1:${port} in netns ${SELF_NETNS}: EADDRINUSE (Address already in use)`,
    );
  });
});

describe('outbound sockets: new net.Socket({ fd }) + connect() in Node 24', () => {
  it('connects when connect() follows the constructor in the same tick, and bytes flow', async () => {
    const { port } = await echoServer();
    const fd = tcpSocketInNetns({ netns: SELF_NETNS, family: 4, bind: { host: '127.0.0.9' } });
    const s = new net.Socket({ fd });
    s.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      s.once('connect', resolve);
      s.once('error', reject);
    });
    expect(s.localAddress).toBe('127.0.0.9');
    expect(socketFd(s)).toBe(fd);
    s.write('x');
    expect(await readAll(s)).toBe('echo:x');
  });

  it("surfaces ECONNREFUSED as a normal 'error' event (syscall connect)", async () => {
    const port = await closedPort();
    const s = new net.Socket({ fd: tcpSocketInNetns({ netns: SELF_NETNS, family: 4 }) });
    s.connect(port, '127.0.0.1');
    const err = await new Promise<NodeJS.ErrnoException>((resolve, reject) => {
      s.once('error', resolve);
      s.once('connect', () => reject(new Error('connected to a closed port?')));
    });
    expect(err.code).toBe('ECONNREFUSED');
    expect(err.syscall).toBe('connect');
    await new Promise((r) => s.once('close', r));
    expect(s.destroyed).toBe(true);
  });

  it('documents the trap: connect() after a turn of the event loop fails with ENOTCONN (read)', async () => {
    const s = new net.Socket({ fd: tcpSocketInNetns({ netns: SELF_NETNS, family: 4 }) });
    const err = await new Promise<NodeJS.ErrnoException>((resolve, reject) => {
      s.once('error', resolve);
      setTimeout(
        () => reject(new Error('no ENOTCONN: Node no longer reads in the constructor; revisit')),
        2_000,
      );
    });
    expect(err.code).toBe('ENOTCONN');
    expect(err.syscall).toBe('read');
  });

  it('connectInNetns resolves a connected socket; IPv6 too', async () => {
    const { port } = await echoServer();
    const s = await connectInNetns({ netns: SELF_NETNS, host: '127.0.0.1', port, timeoutMs: 5_000 });
    expect(s.remotePort).toBe(port);
    expect(getMark(s)).toBe(0);
    s.write('y');
    expect(await readAll(s)).toBe('echo:y');

    const server6 = net.createServer((c) => c.end('six'));
    await listenInNetns(server6, { netns: SELF_NETNS, host: '::1', port: 0, ipv6Only: true });
    cleanups.push(() => server6.close());
    const s6 = await connectInNetns({
      netns: SELF_NETNS,
      host: '::1',
      port: (server6.address() as net.AddressInfo).port,
      timeoutMs: 5_000,
    });
    expect(s6.remoteFamily).toBe('IPv6');
    expect(await readAll(s6)).toBe('six');
  });

  it('connectInNetns rejects with MeshError: ECONNREFUSED, names, family mismatch', async () => {
    const port = await closedPort();
    const refused = await rejection(
      connectInNetns({ netns: SELF_NETNS, host: '127.0.0.1', port, timeoutMs: 5_000 }),
    );
    expect(refused.code).toBe('MESH_ERR_NETNS_SOCKET');
    expect(refused.details).toMatchObject({ op: 'connect', errno: 'ECONNREFUSED' });
    expect(refused.message).toBe(`connect 127.0.0.1:${port} in netns ${SELF_NETNS}: ECONNREFUSED`);
    const named = await rejection(connectInNetns({ netns: SELF_NETNS, host: 'localhost', port }));
    expect(named.details.errno).toBe('EINVAL');
    const mismatch = await rejection(
      connectInNetns({ netns: SELF_NETNS, host: '127.0.0.1', port, bind: { host: '::1' } }),
    );
    expect(mismatch.details).toMatchObject({ op: 'bind', errno: 'EINVAL' });
  });
});

describe('socket helpers', () => {
  it('socketFd needs an fd-backed socket', () => {
    const e = catchMeshError(() => socketFd(new net.Socket()));
    expect(e.code).toBe('MESH_ERR_NETNS_SOCKET');
    expect(e.details).toMatchObject({ errno: 'EBADF' });
  });

  it('originalDst of something that is not an IP socket is MESH_ERR_NETNS_ORIGINAL_DST', () => {
    const [a, b] = native().seqpacketPair();
    cleanups.push(() => {
      closeFd(a);
      closeFd(b);
    });
    const unix = catchMeshError(() => originalDst(a));
    expect(unix.code).toBe('MESH_ERR_NETNS_ORIGINAL_DST');
    expect(unix.details).toMatchObject({ errno: 'EAFNOSUPPORT' });
    const fd = openNetns(SELF_NETNS);
    const notSock = catchMeshError(() => originalDst(fd));
    closeFd(fd);
    expect(notSock.code).toBe('MESH_ERR_NETNS_ORIGINAL_DST');
    expect(notSock.details).toMatchObject({ op: 'getsockname', errno: 'ENOTSOCK' });
  });
});
