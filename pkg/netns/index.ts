/**
 * pkg/netns: the few kernel features Node core lacks, for ztunnel and the CNI agent: sockets created inside a
 * pod's network namespace (setns), SO_MARK, IP_TRANSPARENT/IP_FREEBIND binds, SO_ORIGINAL_DST, and unix
 * SOCK_SEQPACKET with SCM_RIGHTS (the ZDS transport). Sockets are handed to Node as fds:
 * `net.createServer().listen({ fd })`, `new net.Socket({ fd })`.
 *
 * Thread guarantee: every call runs synchronously on the calling thread; a call that enters another network
 * namespace leaves it again before returning, on success and on every error path. Only the calling thread
 * switches (setns affects one thread), so the rest of the process, libuv's threadpool included, never sees
 * a foreign namespace.
 *
 * Errors: every failure is a MeshError (MESH_ERR_NETNS_*) whose details carry `op` (the system call) and
 * `errno` (its name, e.g. EPERM). Importing this module never loads the addon; the first call does, and
 * throws MESH_ERR_NETNS_ADDON_MISSING if it was not built.
 */
import { fstatSync, statSync } from 'node:fs';
import net from 'node:net';
import { MeshError } from '../errors/index.ts';
import { call, toMeshError } from './addon.ts';

export type {
  SeqpacketServerEvents,
  SeqpacketServerOptions,
  SeqpacketSocketEvents,
} from './seqpacket.ts';
export { SEQPACKET_MAX_FDS, SEQPACKET_MAX_MESSAGE, SeqpacketServer, SeqpacketSocket } from './seqpacket.ts';

/** A network namespace: an open fd (see openNetns), or a path such as `/var/run/netns/x` or `/proc/<pid>/ns/net`. */
export type NetnsRef = number | string;

/** The calling thread's own network namespace. */
export const SELF_NETNS = '/proc/thread-self/ns/net';

function invalid(op: string, what: string): MeshError {
  return new MeshError('MESH_ERR_NETNS_SOCKET', `${op}: ${what}: EINVAL`, {
    details: { op, errno: 'EINVAL' },
  });
}

function checkFd(fd: number, op: string): void {
  if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fffffff)
    throw invalid(op, `fd ${fd} is not a file descriptor`);
}

function checkPort(port: number, op: string, allowZero: boolean): void {
  if (!Number.isInteger(port) || port < (allowZero ? 0 : 1) || port > 65535)
    throw invalid(op, `bad port ${port}`);
}

function checkMark(mark: number | undefined, op: string): void {
  if (mark !== undefined && (!Number.isInteger(mark) || mark < 0 || mark > 0xffffffff)) {
    throw invalid(op, `bad mark ${mark}`);
  }
}

function checkHost(host: string, op: string): 4 | 6 {
  const family = net.isIP(host);
  if (family === 0) throw invalid(op, `host ${JSON.stringify(host)} is not a numeric IPv4 or IPv6 address`);
  return family as 4 | 6;
}

function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Opens a network namespace file read-only and close-on-exec, and checks (ioctl NS_GET_NSTYPE) that it is a
 * network namespace. The caller owns the fd: close it with closeFd. MESH_ERR_NETNS_OPEN on failure.
 */
export function openNetns(path: string): number {
  return call((a) => a.openNetns(path));
}

/** close(2) for fds this module handed out (netns fds, unused socket fds, fds received over SEQPACKET). */
export function closeFd(fd: number): void {
  checkFd(fd, 'close');
  call((a) => a.closeFd(fd));
}

/**
 * The inode number identifying a namespace (equal inodes = same namespace), from an fd or a path. Works
 * without the addon. MESH_ERR_NETNS_OPEN if the fd or path cannot be stat'ed.
 */
export function netnsInode(ref: NetnsRef): number {
  try {
    return typeof ref === 'number' ? fstatSync(ref).ino : statSync(ref).ino;
  } catch (cause) {
    const errno = (cause as NodeJS.ErrnoException).code ?? 'EIO';
    const target = typeof ref === 'number' ? `fd ${ref}` : ref;
    throw new MeshError('MESH_ERR_NETNS_OPEN', `stat ${target}: ${errno}`, {
      details: { op: 'stat', errno, target },
      cause,
    });
  }
}

/** The inode of the calling thread's current network namespace. */
export function currentNetnsInode(): number {
  return netnsInode(SELF_NETNS);
}

/** Runs `fn` with an fd for `ref`, opening (and afterwards closing) it when `ref` is a path. */
function withNetns<T>(ref: NetnsRef, op: string, fn: (fd: number, label: string) => T): T {
  if (typeof ref === 'number') {
    checkFd(ref, op);
    return fn(ref, `fd ${ref}`);
  }
  const fd = openNetns(ref);
  try {
    return fn(fd, ref);
  } finally {
    call((a) => a.closeFd(fd));
  }
}

/** Options shared by listening and outbound sockets. */
export interface NetnsSocketOptions {
  /** The namespace the socket lives in. A path is opened and closed again by the call. */
  netns: NetnsRef;
  /** SO_MARK (needs CAP_NET_ADMIN), e.g. 0x539 for ztunnel's own traffic. */
  mark?: number;
  /** IP_TRANSPARENT / IPV6_TRANSPARENT (needs CAP_NET_ADMIN or CAP_NET_RAW). */
  transparent?: boolean;
  /** IP_FREEBIND / IPV6_FREEBIND: allow binding an address not (yet) assigned in the namespace. */
  freebind?: boolean;
}

export interface ListenTcpOptions extends NetnsSocketOptions {
  /** Numeric IPv4 or IPv6 address to bind, e.g. '0.0.0.0', '::', '127.0.0.1'. */
  host: string;
  /** Port to bind; 0 picks one. */
  port: number;
  /** listen(2) backlog; default 511 (as Node). */
  backlog?: number;
  /** SO_REUSEPORT: several listeners on one port, the kernel spreads connections. */
  reusePort?: boolean;
  /** IPV6_V6ONLY for IPv6 hosts; unset keeps the kernel default (dual stack). */
  ipv6Only?: boolean;
}

/**
 * Creates a listening TCP socket inside a network namespace and returns its fd (non-blocking, close-on-exec,
 * SO_REUSEADDR). The fd is the caller's until handed to `net.Server.listen({ fd })`, which then owns it; use
 * `listenInNetns` for that in one step. Errors: MESH_ERR_NETNS_OPEN (path), MESH_ERR_NETNS_SETNS (entering
 * the namespace), MESH_ERR_NETNS_SOCKET (socket/setsockopt/bind/listen, e.g. EADDRINUSE).
 */
export function listenTcpInNetns(opts: ListenTcpOptions): number {
  const op = 'listen';
  checkHost(opts.host, op);
  checkPort(opts.port, op, true);
  checkMark(opts.mark, op);
  const backlog = opts.backlog ?? 511;
  if (!Number.isInteger(backlog) || backlog < 1) throw invalid(op, `bad backlog ${backlog}`);
  return withNetns(opts.netns, op, (fd, label) =>
    call(
      (a) =>
        a.listenTcp({
          netns: fd,
          host: opts.host,
          port: opts.port,
          backlog,
          reusePort: opts.reusePort ?? false,
          ipv6Only: opts.ipv6Only,
          mark: opts.mark,
          transparent: opts.transparent,
          freebind: opts.freebind,
        }),
      label,
    ),
  );
}

/**
 * Opens a listener in a namespace (listenTcpInNetns) and starts `server` on it. The server owns the socket
 * from then on (server.close() closes it). Resolves once listening.
 */
export function listenInNetns(server: net.Server, opts: ListenTcpOptions): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const fd = listenTcpInNetns(opts);
    const onError = (err: Error): void => {
      server.off('listening', onListening);
      reject(
        new MeshError(
          'MESH_ERR_NETNS_SOCKET',
          `listen ${hostPort(opts.host, opts.port)} (fd ${fd}): ${err.message}`,
          {
            details: { op: 'listen', errno: (err as NodeJS.ErrnoException).code },
            cause: err,
          },
        ),
      );
    };
    const onListening = (): void => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    try {
      server.listen({ fd });
    } catch (err) {
      server.off('error', onError);
      server.off('listening', onListening);
      call((a) => a.closeFd(fd));
      reject(err);
    }
  });
}

export interface TcpSocketOptions extends NetnsSocketOptions {
  family: 4 | 6;
  /**
   * Local address to bind before connecting. With `transparent` it may be an address not assigned in the
   * namespace (ztunnel uses the original client IP); port 0 or unset leaves the port to connect()
   * (IP_BIND_ADDRESS_NO_PORT).
   */
  bind?: { host: string; port?: number };
}

/**
 * Creates an unconnected, non-blocking, close-on-exec TCP socket inside a namespace, with the requested
 * options applied and optionally bound. `transparent` defaults `freebind` to true. The fd is the caller's
 * until handed to `new net.Socket({ fd })`.
 *
 * Node 24 starts reading in the `net.Socket` constructor, so `.connect(port, ip)` must follow in the same
 * tick and with a numeric IP: an unconnected TCP socket polled by libuv fails with ENOTCONN (this is what
 * connectInNetns does for you).
 */
export function tcpSocketInNetns(opts: TcpSocketOptions): number {
  const op = 'socket';
  if (opts.family !== 4 && opts.family !== 6) throw invalid(op, `bad family ${String(opts.family)}`);
  checkMark(opts.mark, op);
  const bindPort = opts.bind?.port ?? 0;
  if (opts.bind) {
    if (checkHost(opts.bind.host, 'bind') !== opts.family) {
      throw invalid('bind', `address ${opts.bind.host} is not IPv${opts.family}`);
    }
    checkPort(bindPort, 'bind', true);
  }
  const transparent = opts.transparent ?? false;
  return withNetns(opts.netns, op, (fd, label) =>
    call(
      (a) =>
        a.tcpSocket({
          netns: fd,
          family: opts.family,
          mark: opts.mark,
          transparent,
          freebind: opts.freebind ?? transparent,
          bindHost: opts.bind?.host,
          bindPort,
        }),
      label,
    ),
  );
}

export interface ConnectInNetnsOptions extends NetnsSocketOptions {
  /** Numeric IPv4 or IPv6 destination (no DNS, see tcpSocketInNetns). */
  host: string;
  port: number;
  /** Local address to bind (see TcpSocketOptions.bind); its family must match `host`. */
  bind?: { host: string; port?: number };
  /** Give up after this long (MESH_ERR_NETNS_SOCKET, errno ETIMEDOUT); default 10 s. */
  timeoutMs?: number;
  /**
   * Keep the socket writable after the peer's FIN (net.Socket `allowHalfOpen`). Proxies need it: a client
   * that half-closes still expects the answer. Default false, like net.connect.
   */
  allowHalfOpen?: boolean;
}

/**
 * Connects a TCP socket created inside a namespace and resolves with the connected `net.Socket`. Rejects
 * with MeshError MESH_ERR_NETNS_SOCKET (op 'connect', errno e.g. ECONNREFUSED, ETIMEDOUT) or the socket
 * creation errors of tcpSocketInNetns.
 */
export function connectInNetns(opts: ConnectInNetnsOptions): Promise<net.Socket> {
  return new Promise<net.Socket>((resolve, reject) => {
    const family = checkHost(opts.host, 'connect');
    checkPort(opts.port, 'connect', false);
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const target = hostPort(opts.host, opts.port);
    const label = typeof opts.netns === 'number' ? `fd ${opts.netns}` : opts.netns;
    const { host, port, timeoutMs: _t, allowHalfOpen, ...rest } = opts;
    const fd = tcpSocketInNetns({ ...rest, family });
    let socket: net.Socket;
    try {
      socket = new net.Socket({ fd, allowHalfOpen: allowHalfOpen ?? false });
    } catch (err) {
      call((a) => a.closeFd(fd));
      throw toMeshError(err, label);
    }
    // Same tick as the constructor, numeric address: see tcpSocketInNetns.
    socket.connect({ host, port });
    const fail = (errno: string, cause?: Error): void => {
      cleanup();
      socket.destroy();
      reject(
        new MeshError('MESH_ERR_NETNS_SOCKET', `connect ${target} in netns ${label}: ${errno}`, {
          details: { op: 'connect', errno, target, netns: label },
          cause,
        }),
      );
    };
    const onError = (err: Error): void => fail((err as NodeJS.ErrnoException).code ?? 'EIO', err);
    const onConnect = (): void => {
      cleanup();
      resolve(socket);
    };
    const timer = setTimeout(() => fail('ETIMEDOUT'), timeoutMs);
    const cleanup = (): void => {
      clearTimeout(timer);
      socket.off('error', onError);
      socket.off('connect', onConnect);
    };
    socket.once('error', onError);
    socket.once('connect', onConnect);
  });
}

/** Anything with a socket fd: a raw fd, a net.Socket, or a listening net.Server. */
export type FdLike = number | net.Socket | net.Server;

/**
 * The fd behind a Node socket or server (its libuv handle). MESH_ERR_NETNS_SOCKET (EBADF) if it has none:
 * not yet connected or listening, already destroyed, or not fd-backed.
 */
export function socketFd(socket: net.Socket | net.Server): number {
  const handle = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle;
  const fd = handle?.fd;
  if (typeof fd !== 'number' || fd < 0) {
    throw new MeshError('MESH_ERR_NETNS_SOCKET', 'socketFd: the socket has no open fd: EBADF', {
      details: { op: 'socketFd', errno: 'EBADF' },
    });
  }
  return fd;
}

function toFd(s: FdLike, op: string): number {
  if (typeof s === 'number') {
    checkFd(s, op);
    return s;
  }
  return socketFd(s);
}

export interface OriginalDst {
  address: string;
  port: number;
  family: 4 | 6;
}

/**
 * The destination a connection had before an iptables REDIRECT/DNAT sent it here (SO_ORIGINAL_DST for IPv4
 * and v4-mapped sockets, IP6T_SO_ORIGINAL_DST for IPv6). For a tracked but not redirected connection this
 * is simply the local address. MESH_ERR_NETNS_ORIGINAL_DST if conntrack has no entry (typically ENOENT) or
 * the fd is not a TCP socket.
 */
export function originalDst(socket: FdLike): OriginalDst {
  const fd = toFd(socket, 'originalDst');
  return call((a) => a.originalDst(fd));
}

/** Sets SO_MARK on an existing socket (e.g. one Node created). Needs CAP_NET_ADMIN. */
export function setMark(socket: FdLike, mark: number): void {
  checkMark(mark, 'setMark');
  const fd = toFd(socket, 'setMark');
  call((a) => a.setMark(fd, mark));
}

/** Reads SO_MARK of a socket. */
export function getMark(socket: FdLike): number {
  const fd = toFd(socket, 'getMark');
  return call((a) => a.getMark(fd));
}
