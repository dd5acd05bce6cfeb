import { connect, createServer, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { Drain, type Drainable, drainableServer } from './index.ts';

function member(name: string, finishAfterMs: number | null): Drainable & { forced: boolean } {
  const m = {
    name,
    forced: false,
    drain: () =>
      new Promise<void>((resolve) => {
        if (finishAfterMs !== null) setTimeout(resolve, finishAfterMs);
      }),
    forceClose: () => {
      m.forced = true;
    },
  };
  return m;
}

describe('Drain', () => {
  it('finishes gracefully when every member drains before the deadline', async () => {
    const d = new Drain();
    const a = member('a', 5);
    const b = member('b', 10);
    d.add(a);
    d.add(b);
    const res = await d.run(1000);
    expect(res).toMatchObject({ graceful: true, forced: [] });
    expect(a.forced || b.forced).toBe(false);
    expect(d.signal.aborted).toBe(true);
  });

  it('force-closes stragglers at the deadline and names them', async () => {
    const d = new Drain();
    const slow = member('slow', null);
    d.add(member('fast', 1));
    d.add(slow);
    const res = await d.run(30);
    expect(res.graceful).toBe(false);
    expect(res.forced).toEqual(['slow']);
    expect(slow.forced).toBe(true);
    // run() is idempotent
    expect(await d.run(30)).toBe(res);
  });

  it('force-closes members that join after draining started', async () => {
    const d = new Drain();
    await d.run(10);
    const late = member('late', 1);
    d.add(late);
    expect(late.forced).toBe(true);
  });

  it('drains a real server: open connections may finish, new ones are refused, stragglers are destroyed', async () => {
    const server = createServer((s) => s.on('data', (b) => s.write(b)));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const d = new Drain();
    d.add(drainableServer('echo', server));
    const client: Socket = connect(port, '127.0.0.1');
    await new Promise((r) => client.once('connect', r));
    const closed = new Promise((r) => client.once('close', r));
    const result = d.run(100);
    // The open connection still works during the grace period.
    client.write('ping');
    const echoed = await new Promise<Buffer>((r) => client.once('data', r));
    expect(String(echoed)).toBe('ping');
    // New connections are refused.
    const refused = await new Promise<string>((r) => {
      const c = connect(port, '127.0.0.1');
      c.on('error', (e: NodeJS.ErrnoException) => r(e.code ?? 'error'));
      c.on('connect', () => r('connected'));
    });
    expect(refused).toBe('ECONNREFUSED');
    const res = await result;
    expect(res.forced).toEqual(['echo']);
    await closed;
  });
});
