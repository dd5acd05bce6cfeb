/**
 * Unix SOCK_SEQPACKET sockets with SCM_RIGHTS fd passing: the transport of ZDS (the CNI node agent is the
 * server, ztunnel the client; one protobuf message per packet, a pod's netns fd attached).
 *
 * The sockets are polled by the libuv loop of the calling thread (uv_poll_t), like Node's own sockets: no
 * extra threads, no busy polling. An open socket keeps the loop alive (see `unref()`) and is never garbage
 * collected while open; a closed one releases everything.
 *
 * fd ownership:
 * - `send(data, fds)` never takes ownership: the kernel duplicates the fds into the message (queued sends
 *   keep their own duplicates), so the caller may close its fds as soon as `send` returns.
 * - fds delivered with a 'message' event are close-on-exec and owned by the receiver, who must close them
 *   (`closeFd`) or hand them on. If no 'message' listener is attached, they are closed immediately.
 */
import { EventEmitter } from 'node:events';
import { chmodSync, statSync, unlinkSync } from 'node:fs';
import { MeshError } from '../errors/index.ts';
import { call, type NativeSeqpacketEvent, type NativeSeqpacketHandle, native, toMeshError } from './addon.ts';

/** The largest message sent or received (bytes). Larger incoming messages are an error, never delivered half. */
export const SEQPACKET_MAX_MESSAGE = 64 * 1024;
/** The most fds carried by one message. */
export const SEQPACKET_MAX_FDS = 64;

function seqError(op: string, target: string, errno: string, message: string): MeshError {
  return new MeshError('MESH_ERR_NETNS_SEQPACKET', `${op} ${target}: ${errno} (${message})`, {
    details: { op, errno, target },
  });
}

function closeQuietly(fd: number): void {
  try {
    native().closeFd(fd);
  } catch {
    // already closed: nothing left to release
  }
}

export interface SeqpacketSocketEvents {
  /** One message; `fds` (possibly empty) are owned by the listener, who must close them. */
  message: [data: Buffer, fds: number[]];
  /** The socket failed (recvmsg, a truncated message, a queued send); 'close' follows. */
  error: [err: MeshError];
  /** All queued sends went out. */
  drain: [];
  /** Emitted once: after close(), the peer's hangup (EOF) or an error. */
  close: [hadError: boolean];
}

interface Pending {
  data: Buffer;
  fds: number[];
}

/** One end of a SOCK_SEQPACKET connection. */
export class SeqpacketSocket extends EventEmitter<SeqpacketSocketEvents> {
  /** The socket file this socket connected to, or null for accepted and paired sockets. */
  readonly path: string | null;
  #handle: NativeSeqpacketHandle;
  #queue: Pending[] = [];
  #closed = false;

  /** Connects to a listening SOCK_SEQPACKET socket at `path` (completes immediately for unix sockets). */
  static connect(path: string): SeqpacketSocket {
    const fd = call((a) => a.seqpacketConnect(path));
    return new SeqpacketSocket(fd, path);
  }

  /** A connected pair in this process (socketpair): handy for tests and for handing one end to a child. */
  static pair(): [SeqpacketSocket, SeqpacketSocket] {
    const [a, b] = call((addon) => addon.seqpacketPair());
    let first: SeqpacketSocket;
    try {
      first = new SeqpacketSocket(a);
    } catch (err) {
      closeQuietly(b);
      throw err;
    }
    try {
      return [first, new SeqpacketSocket(b)];
    } catch (err) {
      first.close();
      throw err;
    }
  }

  /**
   * Wraps a connected SOCK_SEQPACKET fd and starts receiving. Takes ownership of `fd` on success; if this
   * throws, the fd is still the caller's.
   */
  constructor(fd: number, path: string | null = null) {
    super();
    this.path = path;
    this.#handle = call((a) => new a.SeqpacketHandle(fd, false, this.#onEvent));
  }

  /** True once close() ran or the connection ended. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Messages waiting for socket buffer space. */
  get pendingSends(): number {
    return this.#queue.length;
  }

  /**
   * Sends one message, optionally with fds (SCM_RIGHTS). Returns true if it went out now, false if it was
   * queued behind a full socket buffer ('drain' follows when the queue empties). Throws MeshError
   * MESH_ERR_NETNS_SEQPACKET if the socket is closed, the message is empty or too large, or sendmsg fails
   * (e.g. EPIPE after the peer closed). The caller keeps ownership of `fds`.
   */
  send(data: Uint8Array, fds: readonly number[] = []): boolean {
    if (this.#closed) throw seqError('sendmsg', 'closed socket', 'EPIPE', 'the socket is closed');
    if (data.byteLength === 0) {
      throw seqError('sendmsg', 'empty message', 'EINVAL', 'a zero-length message reads as EOF on the peer');
    }
    if (data.byteLength > SEQPACKET_MAX_MESSAGE) {
      throw seqError('sendmsg', `${data.byteLength} bytes`, 'EMSGSIZE', `limit is ${SEQPACKET_MAX_MESSAGE}`);
    }
    if (fds.length > SEQPACKET_MAX_FDS) {
      throw seqError('sendmsg', `${fds.length} fds`, 'EINVAL', `limit is ${SEQPACKET_MAX_FDS}`);
    }
    for (const fd of fds) {
      if (!Number.isInteger(fd) || fd < 0)
        throw seqError('sendmsg', `fd ${fd}`, 'EBADF', 'not a file descriptor');
    }
    const buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    if (this.#queue.length === 0) {
      if (call(() => this.#handle.send(buf, fds))) return true;
    }
    // Queue a private copy: duplicates of the fds (the caller may close its own) and of the bytes.
    const dups: number[] = [];
    try {
      for (const fd of fds) dups.push(call((a) => a.dupFd(fd)));
    } catch (err) {
      for (const d of dups) closeQuietly(d);
      throw err;
    }
    this.#queue.push({ data: Buffer.from(buf), fds: dups });
    if (this.#queue.length === 1) call(() => this.#handle.setWritable(true));
    return false;
  }

  /** Closes the socket (idempotent). Queued sends are dropped; 'close' is emitted on the next tick. */
  close(): void {
    this.#destroy(null);
  }

  /** Lets the process exit while this socket is open. */
  unref(): this {
    if (!this.#closed) this.#handle.unref();
    return this;
  }

  /** Undoes unref(). */
  ref(): this {
    if (!this.#closed) this.#handle.ref();
    return this;
  }

  #destroy(err: MeshError | null): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#handle.close();
    for (const m of this.#queue) for (const fd of m.fds) closeQuietly(fd);
    this.#queue = [];
    process.nextTick(() => {
      if (err) this.emit('error', err);
      this.emit('close', err !== null);
    });
  }

  #flush(): void {
    while (this.#queue.length > 0) {
      const m = this.#queue[0]!;
      let sent: boolean;
      try {
        sent = this.#handle.send(m.data, m.fds);
      } catch (err) {
        this.#destroy(toMeshError(err));
        return;
      }
      if (!sent) return;
      this.#queue.shift();
      for (const fd of m.fds) closeQuietly(fd);
    }
    this.#handle.setWritable(false);
    this.emit('drain');
  }

  // Called by the native handle from the event loop.
  #onEvent = (kind: NativeSeqpacketEvent, a?: unknown, b?: unknown): void => {
    switch (kind) {
      case 'message': {
        const fds = b as number[];
        if (this.#closed || this.listenerCount('message') === 0) {
          for (const fd of fds) closeQuietly(fd);
          return;
        }
        this.emit('message', a as Buffer, fds);
        return;
      }
      case 'writable':
        this.#flush();
        return;
      case 'end':
        this.#destroy(null);
        return;
      case 'error':
        this.#destroy(toMeshError(a));
        return;
      default:
        return;
    }
  };
}

export interface SeqpacketServerOptions {
  /** listen(2) backlog; default 16. */
  backlog?: number;
  /** chmod the socket file to this mode after binding (e.g. 0o600); default: leave the umask's choice. */
  mode?: number;
}

export interface SeqpacketServerEvents {
  /** A new client; the listener owns the socket. Without a listener the connection is closed at once. */
  connection: [socket: SeqpacketSocket];
  /** accept(2) failed (e.g. EMFILE); the server keeps listening. */
  error: [err: MeshError];
  /** The server stopped listening (after close()). */
  close: [];
}

/** A listening SOCK_SEQPACKET socket bound to a path. */
export class SeqpacketServer extends EventEmitter<SeqpacketServerEvents> {
  readonly path: string;
  #handle: NativeSeqpacketHandle;
  #ino: number;
  #dev: number;
  #closed = false;

  /**
   * Binds and listens on `path`. A stale socket file (no process accepting on it) is replaced; a live one
   * fails with EADDRINUSE; a non-socket file at the path fails with EEXIST and is left alone.
   */
  static listen(path: string, opts: SeqpacketServerOptions = {}): SeqpacketServer {
    const backlog = opts.backlog ?? 16;
    if (!Number.isInteger(backlog) || backlog < 1) throw seqError('listen', path, 'EINVAL', 'bad backlog');
    const fd = call((a) => a.seqpacketListen(path, backlog));
    try {
      if (opts.mode !== undefined) chmodSync(path, opts.mode);
      return new SeqpacketServer(path, fd);
    } catch (err) {
      closeQuietly(fd);
      throw err instanceof MeshError ? err : toFsError('listen', path, err);
    }
  }

  private constructor(path: string, fd: number) {
    super();
    this.path = path;
    const file = statSync(path);
    this.#ino = file.ino;
    this.#dev = file.dev;
    this.#handle = call((a) => new a.SeqpacketHandle(fd, true, this.#onEvent));
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Stops accepting and removes the socket file if it is still the one this server created. Connections
   * already accepted stay open (close them yourself). 'close' is emitted on the next tick.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#handle.close();
    try {
      const st = statSync(this.path);
      if (st.ino === this.#ino && st.dev === this.#dev) unlinkSync(this.path);
    } catch {
      // already gone
    }
    process.nextTick(() => this.emit('close'));
  }

  unref(): this {
    if (!this.#closed) this.#handle.unref();
    return this;
  }

  ref(): this {
    if (!this.#closed) this.#handle.ref();
    return this;
  }

  #onEvent = (kind: NativeSeqpacketEvent, a?: unknown): void => {
    if (kind === 'error') {
      this.emit('error', toMeshError(a));
      return;
    }
    if (kind !== 'connection') return;
    const fd = a as number;
    if (this.#closed || this.listenerCount('connection') === 0) {
      closeQuietly(fd);
      return;
    }
    let socket: SeqpacketSocket;
    try {
      socket = new SeqpacketSocket(fd);
    } catch (err) {
      closeQuietly(fd);
      this.emit('error', toMeshError(err));
      return;
    }
    this.emit('connection', socket);
  };
}

function toFsError(op: string, path: string, err: unknown): MeshError {
  const code = (err as NodeJS.ErrnoException).code ?? 'EIO';
  return new MeshError('MESH_ERR_NETNS_SEQPACKET', `${op} ${path}: ${code}`, {
    details: { op, errno: code, target: path },
    cause: err,
  });
}
