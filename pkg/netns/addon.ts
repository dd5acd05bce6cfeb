/**
 * Lazy loader and typed surface of the native addon `build/Release/netns.node` (sources in `src/`), plus the
 * conversion of its errors into MeshError. Nothing is loaded at import time: the first call that needs the
 * addon loads it, and a missing build throws MESH_ERR_NETNS_ADDON_MISSING there and then.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { CODES, type ErrorCode, MeshError } from '../errors/index.ts';

/** Events a native SEQPACKET handle reports through its callback. */
export type NativeSeqpacketEvent = 'connection' | 'message' | 'end' | 'error' | 'writable';

/** The native half of a SeqpacketSocket / SeqpacketServer. It owns its fd from construction on. */
export interface NativeSeqpacketHandle {
  /** The fd, or -1 once closed. */
  readonly fd: number;
  /** sendmsg with SCM_RIGHTS; true if sent, false if the socket buffer is full (nothing sent). */
  send(data: Buffer, fds: readonly number[]): boolean;
  /** Also poll for writability, reported as 'writable' events, while sends are queued. */
  setWritable(on: boolean): void;
  ref(): void;
  unref(): void;
  /** Stops polling and closes the fd; idempotent. Returns whether it was open. */
  close(): boolean;
}

export interface NativeSockOpts {
  netns: number;
  mark?: number | undefined;
  transparent?: boolean | undefined;
  freebind?: boolean | undefined;
}

export interface NativeAddon {
  openNetns(path: string): number;
  closeFd(fd: number): void;
  listenTcp(
    opts: NativeSockOpts & {
      host: string;
      port: number;
      backlog: number;
      reusePort: boolean;
      ipv6Only?: boolean | undefined;
    },
  ): number;
  tcpSocket(
    opts: NativeSockOpts & { family: 4 | 6; bindHost?: string | undefined; bindPort?: number },
  ): number;
  setMark(fd: number, mark: number): void;
  getMark(fd: number): number;
  originalDst(fd: number): { address: string; port: number; family: 4 | 6 };
  seqpacketListen(path: string, backlog: number): number;
  seqpacketConnect(path: string): number;
  seqpacketPair(): [number, number];
  dupFd(fd: number): number;
  SeqpacketHandle: new (
    fd: number,
    listening: boolean,
    onEvent: (kind: NativeSeqpacketEvent, a?: unknown, b?: unknown) => void,
  ) => NativeSeqpacketHandle;
  readonly maxMessage: number;
  readonly maxFds: number;
}

/** Where `npm ci` (scripts/build-native.ts) puts the addon. */
export const ADDON_PATH = fileURLToPath(new URL('./build/Release/netns.node', import.meta.url));

const require = createRequire(import.meta.url);
let loaded: NativeAddon | undefined;

/** Loads the addon from `path`; throws MESH_ERR_NETNS_ADDON_MISSING if it cannot be loaded. */
export function loadAddon(path: string = ADDON_PATH): NativeAddon {
  if (process.platform !== 'linux') {
    throw new MeshError(
      'MESH_ERR_NETNS_ADDON_MISSING',
      `pkg/netns needs Linux (this is ${process.platform})`,
      {
        details: { op: 'dlopen', path },
      },
    );
  }
  try {
    return require(path) as NativeAddon;
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    throw new MeshError(
      'MESH_ERR_NETNS_ADDON_MISSING',
      `cannot load the native addon ${path}: ${cause instanceof Error ? cause.message.split('\n')[0] : String(cause)}`,
      { details: { op: 'dlopen', path, errno: code }, cause },
    );
  }
}

/** The addon, loaded on first use. A failed load is not cached (a later build can still be picked up). */
export function native(): NativeAddon {
  loaded ??= loadAddon();
  return loaded;
}

interface NativeErrorFields {
  meshCode?: unknown;
  op?: unknown;
  target?: unknown;
  errno?: unknown;
  description?: unknown;
}

function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(CODES, code);
}

/**
 * Turns an error thrown by the addon into a MeshError. Native errors carry `meshCode`, `op`, `target`, `errno`;
 * the message becomes `<op> <target>[ in netns <netns>]: <ERRNO> (<strerror>)`. Anything else thrown by the
 * addon (a TypeError from its own argument checks) means this TS layer let a bad argument through: a bug.
 */
export function toMeshError(err: unknown, netns?: string): MeshError {
  if (err instanceof MeshError) return err;
  if (err instanceof Error) {
    const f = err as Error & NativeErrorFields;
    if (isErrorCode(f.meshCode)) {
      const op = String(f.op);
      const target = typeof f.target === 'string' ? f.target : '';
      const errno = String(f.errno);
      const where = netns === undefined ? '' : ` in netns ${netns}`;
      const desc = typeof f.description === 'string' ? ` (${f.description})` : '';
      return new MeshError(f.meshCode, `${op}${target ? ` ${target}` : ''}${where}: ${errno}${desc}`, {
        details: { op, errno, target: target || undefined, netns },
        cause: err,
      });
    }
    return new MeshError('MESH_ERR_INTERNAL_BUG', `BUG: netns addon rejected its arguments: ${err.message}`, {
      cause: err,
    });
  }
  return new MeshError('MESH_ERR_INTERNAL_BUG', `BUG: netns addon threw a non-error: ${String(err)}`);
}

/** Runs a native call, converting whatever it throws with toMeshError. */
export function call<T>(fn: (addon: NativeAddon) => T, netns?: string): T {
  const addon = native();
  try {
    return fn(addon);
  } catch (err) {
    throw toMeshError(err, netns);
  }
}
