import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import { Duplex, PassThrough } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '../testing/index.ts';
import { PAUSE_HIGH_WATER, type PipeStats, pipeBidirectional } from './pipe.ts';

const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

/** A connected pair of real TCP sockets with half-open allowed: [client end, server end]. */
async function socketPair(): Promise<[Socket, Socket]> {
  let accepted: (s: Socket) => void = () => {};
  const got = new Promise<Socket>((r) => {
    accepted = r;
  });
  const server = createServer({ allowHalfOpen: true }, (s) => accepted(s));
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const c = connect({ port: (server.address() as AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  await new Promise((r) => c.once('connect', r));
  return [c, await got];
}

/**
 * app ⇄ [x | pipe | y] ⇄ upstream: returns the two outer ends and a promise of the pipe's stats.
 */
async function piped(): Promise<{
  app: Socket;
  upstream: Socket;
  done: Promise<PipeStats>;
  calls: () => number;
}> {
  const [app, x] = await socketPair();
  const [y, upstream] = await socketPair();
  let calls = 0;
  const done = new Promise<PipeStats>((resolve) =>
    pipeBidirectional(
      x,
      y,
      (stats, n: number) => {
        calls += n;
        resolve({ bytesAtoB: stats.bytesAtoB, bytesBtoA: stats.bytesBtoA, error: stats.error });
      },
      1,
    ),
  );
  return { app, upstream, done, calls: () => calls };
}

function readAll(s: Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    s.on('data', (d: Buffer) => parts.push(d));
    s.once('end', () => resolve(Buffer.concat(parts)));
    s.once('error', reject);
  });
}

describe('pipeBidirectional', () => {
  it('half-close: a FIN ends the other side and the reverse direction keeps flowing', async () => {
    const { app, upstream, done, calls } = await piped();
    const upstreamGot = readAll(upstream);
    app.end('request');
    expect((await upstreamGot).toString()).toBe('request');
    // Upstream answers after seeing the FIN, then closes its side.
    const appGot = readAll(app);
    upstream.end('response after FIN');
    expect((await appGot).toString()).toBe('response after FIN');
    const stats = await done;
    expect(stats).toEqual({ bytesAtoB: 7, bytesBtoA: 18, error: null });
    expect(calls()).toBe(1);
  });

  it('a reset on one side resets the other (no silent FIN)', async () => {
    const { app, upstream, done } = await piped();
    const appResult = new Promise<string>((resolve) => {
      app.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      app.once('end', () => resolve('end'));
    });
    app.write('hello');
    await new Promise((r) => upstream.once('data', r));
    upstream.resetAndDestroy();
    expect(await appResult).toBe('ECONNRESET');
    const stats = await done;
    expect(stats.error).not.toBeNull();
  });

  it('respects backpressure: a stalled reader bounds what is buffered', async () => {
    const a = new PassThrough();
    // A writable that never drains: the pipe must pause the source instead of buffering without end.
    let accepted = 0;
    const stalled = new Duplex({
      read() {},
      write(chunk: Buffer, _enc, _cb) {
        accepted += chunk.length;
        // Never calls back: the buffer grows until the pipe pauses `a`.
      },
      highWaterMark: 16 * 1024,
    });
    pipeBidirectional(a, stalled, () => {});
    const chunk = Buffer.alloc(64 * 1024);
    let written = 0;
    for (let i = 0; i < 200; i++) {
      a.write(chunk);
      written += chunk.length;
    }
    await eventually(() => a.isPaused());
    expect(stalled.writableLength).toBeLessThanOrEqual(PAUSE_HIGH_WATER + chunk.length);
    expect(accepted).toBeLessThan(written);
    a.destroy();
    stalled.destroy();
  });

  it('calls onDone once when both are already gone, and handles a pre-destroyed side', async () => {
    const a = new PassThrough();
    const b = new PassThrough();
    b.destroy();
    let calls = 0;
    pipeBidirectional(a, b, () => calls++);
    await eventually(() => a.destroyed && calls === 1);
    await new Promise((r) => setTimeout(r, 20));
    expect(calls).toBe(1);
  });

  it('counts bytes in both directions over many chunks', async () => {
    const { app, upstream, done } = await piped();
    upstream.on('data', (d: Buffer) => upstream.write(d));
    upstream.on('end', () => upstream.end());
    const appGot = readAll(app);
    const total = 5 * 1024 * 1024;
    app.end(Buffer.alloc(total, 7));
    expect((await appGot).length).toBe(total);
    const stats = await done;
    expect(stats.bytesAtoB).toBe(total);
    expect(stats.bytesBtoA).toBe(total);
  });
});
