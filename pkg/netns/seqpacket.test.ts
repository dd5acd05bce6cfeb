/**
 * Unit tier (any user): unix SOCK_SEQPACKET sockets with SCM_RIGHTS. Message boundaries, fd passing,
 * hangup, several clients, backpressure, truncated messages (sent by a python3 peer, since our own send()
 * refuses them), stale socket files, fd hygiene and garbage collection.
 */
import { spawn, spawnSync } from 'node:child_process';
import {
  closeSync,
  fstatSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { isMeshError, type MeshError } from '../errors/index.ts';
import { native } from './addon.ts';
import {
  closeFd,
  SEQPACKET_MAX_FDS,
  SEQPACKET_MAX_MESSAGE,
  SeqpacketServer,
  SeqpacketSocket,
} from './index.ts';

let dir: string;
const toClose: Array<{ close(): void }> = [];

function track<T extends { close(): void }>(x: T): T {
  toClose.push(x);
  return x;
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Collects `count` messages from a socket. */
function collect(
  sock: SeqpacketSocket,
  count: number,
  ms = 5_000,
): Promise<Array<{ data: Buffer; fds: number[] }>> {
  const got: Array<{ data: Buffer; fds: number[] }> = [];
  return within(
    new Promise((resolve, reject) => {
      const onMessage = (data: Buffer, fds: number[]): void => {
        got.push({ data, fds });
        if (got.length === count) {
          sock.off('message', onMessage);
          resolve(got);
        }
      };
      sock.on('message', onMessage);
      sock.once('error', reject);
    }),
    ms,
    `${count} messages (got ${got.length})`,
  );
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

function openFdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

function fdFlags(fd: number): number {
  const m = /flags:\s+([0-7]+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  return Number.parseInt(m![1]!, 8);
}
const O_CLOEXEC = 0o2000000;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'amb-t-seq-'));
});

afterEach(() => {
  while (toClose.length > 0) toClose.pop()!.close();
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('SeqpacketSocket', () => {
  it('preserves message boundaries, including a maximum-size message', async () => {
    const [a, b] = SeqpacketSocket.pair().map(track) as [SeqpacketSocket, SeqpacketSocket];
    const big = Buffer.alloc(SEQPACKET_MAX_MESSAGE, 7);
    const got = collect(b, 5);
    for (const m of ['a', 'bb', 'ccc']) expect(a.send(Buffer.from(m))).toBe(true);
    a.send(big);
    a.send(new Uint8Array([1, 2, 3]).subarray(1));
    const msgs = await got;
    expect(msgs.map((m) => m.data.length)).toEqual([1, 2, 3, SEQPACKET_MAX_MESSAGE, 2]);
    expect(msgs.slice(0, 3).map((m) => m.data.toString())).toEqual(['a', 'bb', 'ccc']);
    expect(msgs[3]!.data.equals(big)).toBe(true);
    expect([...msgs[4]!.data]).toEqual([2, 3]);
    expect(msgs.every((m) => m.fds.length === 0)).toBe(true);
  });

  it('passes several fds in one message; the receiver gets new close-on-exec fds for the same files', async () => {
    const [a, b] = SeqpacketSocket.pair().map(track) as [SeqpacketSocket, SeqpacketSocket];
    const files = [0, 1, 2].map((i) => {
      const p = join(dir, `f${i}`);
      writeFileSync(p, `file ${i}`);
      return p;
    });
    const sent = files.map((p) => openSync(p, 'r'));
    const got = collect(b, 1);
    try {
      expect(a.send(Buffer.from('three'), sent)).toBe(true);
    } finally {
      for (const fd of sent) closeSync(fd); // the caller keeps ownership of what it sends
    }
    const [msg] = await got;
    expect(msg!.data.toString()).toBe('three');
    expect(msg!.fds).toHaveLength(3);
    try {
      msg!.fds.forEach((fd, i) => {
        expect(fstatSync(fd).ino).toBe(statSync(files[i]!).ino);
        expect(fdFlags(fd) & O_CLOEXEC).toBe(O_CLOEXEC);
      });
    } finally {
      for (const fd of msg!.fds) closeFd(fd);
    }
  });

  it("emits 'close' (no error) on the peer's hangup; send on a closed socket throws", async () => {
    const [a, b] = SeqpacketSocket.pair();
    const closed = within(new Promise<boolean>((resolve) => b.once('close', resolve)), 5_000, "b's close");
    const aClosed = new Promise<boolean>((resolve) => a.once('close', resolve));
    a.close();
    expect(await closed).toBe(false);
    expect(await aClosed).toBe(false);
    expect(b.closed).toBe(true);
    const e = catchMeshError(() => b.send(Buffer.from('x')));
    expect(e.code).toBe('MESH_ERR_NETNS_SEQPACKET');
    expect(e.details).toMatchObject({ op: 'sendmsg', errno: 'EPIPE' });
    a.close(); // idempotent
  });

  it('send to a peer that hung up (not yet noticed locally) throws EPIPE', () => {
    const [a, b] = SeqpacketSocket.pair();
    track(a);
    b.close();
    const e = catchMeshError(() => a.send(Buffer.from('x')));
    expect(e.details).toMatchObject({ op: 'sendmsg', errno: 'EPIPE' });
  });

  it('rejects empty, oversized and too-many-fds messages before sending', () => {
    const [a] = SeqpacketSocket.pair().map(track) as [SeqpacketSocket, SeqpacketSocket];
    expect(catchMeshError(() => a.send(Buffer.alloc(0))).details).toMatchObject({ errno: 'EINVAL' });
    expect(catchMeshError(() => a.send(Buffer.alloc(SEQPACKET_MAX_MESSAGE + 1))).details).toMatchObject({
      errno: 'EMSGSIZE',
    });
    const fds = new Array<number>(SEQPACKET_MAX_FDS + 1).fill(0);
    expect(catchMeshError(() => a.send(Buffer.from('x'), fds)).details).toMatchObject({ errno: 'EINVAL' });
    expect(catchMeshError(() => a.send(Buffer.from('x'), [-1])).details).toMatchObject({ errno: 'EBADF' });
  });

  it("queues behind a full socket buffer, keeps order and the queued fds valid, then emits 'drain'", async () => {
    const [a, b] = SeqpacketSocket.pair().map(track) as [SeqpacketSocket, SeqpacketSocket];
    const total = 3_000;
    const got = collect(b, total, 15_000);
    const drained = new Promise<void>((resolve) => a.once('drain', resolve));
    const payload = Buffer.alloc(1024, 1);
    const p = join(dir, 'queued');
    writeFileSync(p, 'q');
    let queued = 0;
    let fdIndex = -1;
    for (let i = 0; i < total; i++) {
      payload.writeUInt32BE(i, 0);
      if (i === total - 1) {
        const fd = openSync(p, 'r');
        fdIndex = i;
        if (!a.send(payload, [fd])) queued++;
        closeSync(fd); // queued sends keep their own duplicate
      } else if (!a.send(payload)) {
        queued++;
      }
    }
    expect(queued).toBeGreaterThan(0); // the kernel queue is far smaller than 3 MB
    expect(a.pendingSends).toBe(queued);
    await within(drained, 15_000, 'drain');
    const msgs = await got;
    expect(msgs.map((m) => m.data.readUInt32BE(0))).toEqual([...Array(total).keys()]);
    const last = msgs[fdIndex]!;
    expect(last.fds).toHaveLength(1);
    expect(fstatSync(last.fds[0]!).ino).toBe(statSync(p).ino);
    closeFd(last.fds[0]!);
    expect(a.pendingSends).toBe(0);
  });

  it("closes received fds when nobody listens for 'message' (no leak)", async () => {
    const [a, b] = SeqpacketSocket.pair().map(track) as [SeqpacketSocket, SeqpacketSocket];
    const p = join(dir, 'leak');
    writeFileSync(p, 'l');
    const fd = openSync(p, 'r');
    const before = openFdCount();
    for (let i = 0; i < 20; i++) a.send(Buffer.from('x'), [fd]);
    closeSync(fd);
    await new Promise((r) => setTimeout(r, 100));
    const sentinel = collect(b, 1);
    a.send(Buffer.from('end'));
    expect((await sentinel)[0]!.data.toString()).toBe('end');
    expect(openFdCount()).toBe(before - 1);
  });

  it('connect to a missing path is MESH_ERR_NETNS_SEQPACKET ENOENT', () => {
    const e = catchMeshError(() => SeqpacketSocket.connect(join(dir, 'nope.sock')));
    expect(e.code).toBe('MESH_ERR_NETNS_SEQPACKET');
    expect(e.details).toMatchObject({ op: 'connect', errno: 'ENOENT' });
  });
});

describe('SeqpacketServer', () => {
  it('serves several clients, each on its own connection', async () => {
    const path = join(dir, 'multi.sock');
    const server = track(SeqpacketServer.listen(path));
    server.on('connection', (conn) => {
      track(conn);
      conn.on('message', (data) => conn.send(Buffer.from(`ack ${data.toString()}`)));
    });
    const clients = [0, 1, 2, 3, 4].map(() => track(SeqpacketSocket.connect(path)));
    const replies = clients.map((c) => collect(c, 1));
    clients.forEach((c, i) => {
      c.send(Buffer.from(`client-${i}`));
    });
    const got = await Promise.all(replies);
    expect(got.map((r) => r[0]!.data.toString())).toEqual([0, 1, 2, 3, 4].map((i) => `ack client-${i}`));
  });

  it("reports a client's hangup as 'close' on the accepted socket", async () => {
    const path = join(dir, 'hangup.sock');
    const server = track(SeqpacketServer.listen(path));
    const accepted = new Promise<SeqpacketSocket>((resolve) => server.once('connection', resolve));
    const client = SeqpacketSocket.connect(path);
    const conn = track(await within(accepted, 5_000, 'accept'));
    const closed = new Promise<boolean>((resolve) => conn.once('close', resolve));
    const got = collect(conn, 2);
    client.send(Buffer.from('one'));
    client.send(Buffer.from('two'));
    client.close();
    // Messages sent before the hangup are delivered first, then the close.
    expect((await got).map((m) => m.data.toString())).toEqual(['one', 'two']);
    expect(await within(closed, 5_000, 'close')).toBe(false);
  });

  it('replaces a stale socket file, refuses a live one (EADDRINUSE) and never removes other files (EEXIST)', async () => {
    const path = join(dir, 'stale.sock');
    const stale = native().seqpacketListen(path, 1);
    closeFd(stale); // the file stays behind, nobody accepts on it
    expect(statSync(path).isSocket()).toBe(true);
    const server = SeqpacketServer.listen(path);
    const live = catchMeshError(() => SeqpacketServer.listen(path));
    expect(live.code).toBe('MESH_ERR_NETNS_SEQPACKET');
    expect(live.details).toMatchObject({ errno: 'EADDRINUSE' });
    const closed = new Promise<void>((resolve) => server.once('close', resolve));
    server.close();
    await within(closed, 5_000, 'server close');
    expect(() => statSync(path)).toThrow(); // close() removed its own socket file

    const plain = join(dir, 'plain-file');
    writeFileSync(plain, 'keep me');
    const e = catchMeshError(() => SeqpacketServer.listen(plain));
    expect(e.details).toMatchObject({ errno: 'EEXIST' });
    expect(readFileSync(plain, 'utf8')).toBe('keep me');
  });

  it('reports truncated messages (too large, too many fds) as errors and never delivers them half', async () => {
    const path = join(dir, 'trunc.sock');
    const server = track(SeqpacketServer.listen(path));
    const outcomes: Array<{ messages: number; error: MeshError | null; hadError: boolean }> = [];
    const done = new Promise<void>((resolve) => {
      server.on('connection', (conn) => {
        const o = { messages: 0, error: null as MeshError | null, hadError: false };
        conn.on('message', (_d, fds) => {
          o.messages++;
          for (const fd of fds) closeFd(fd);
        });
        conn.on('error', (err) => {
          o.error = err;
        });
        conn.on('close', (hadError) => {
          o.hadError = hadError;
          outcomes.push(o);
          if (outcomes.length === 2) resolve();
        });
      });
    });
    // python3 is needed by node-gyp anyway; its socket module can send what our send() refuses.
    const script = [
      'import socket, sys, array, time',
      'mode = sys.argv[2]',
      's = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)',
      's.connect(sys.argv[1])',
      "if mode == 'big': s.send(b'x' * 70000)",
      "else: s.sendmsg([b'fds'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [0] * 100))])",
      'time.sleep(0.2)',
      's.close()',
    ].join('\n');
    for (const mode of ['big', 'fds']) {
      const r = spawnSync('python3', ['-c', script, path, mode], {
        timeout: 10_000,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      expect(r.status, r.stderr.toString()).toBe(0);
    }
    await within(done, 10_000, 'two truncated connections');
    for (const o of outcomes) {
      expect(o.messages).toBe(0);
      expect(o.hadError).toBe(true);
      expect(o.error?.code).toBe('MESH_ERR_NETNS_SEQPACKET');
      expect(o.error?.details).toMatchObject({ op: 'recvmsg (truncated)', errno: 'EMSGSIZE' });
    }
  });
});

describe('lifecycle', () => {
  it('survives garbage collection of open, closed and never-used sockets (child process with --expose-gc)', async () => {
    const script = fileURLToPath(new URL('./testdata/gc-child.ts', import.meta.url));
    const child = spawn(process.execPath, ['--expose-gc', script, dir], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const code = await within(
      new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c))),
      20_000,
      'gc child',
    ).finally(() => child.kill('SIGKILL'));
    expect(out.trim().split('\n').at(-1), out).toBe('ok');
    expect(code, out).toBe(0);
  });
});
