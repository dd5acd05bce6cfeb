/**
 * Child process for seqpacket.test.ts, run with --expose-gc. Checks that:
 * - closed sockets and servers are garbage collected (no reference cycle through the native callback),
 * - an open socket nobody references keeps working (the native handle pins it while it polls),
 * - collecting never crashes, and unref() lets the process exit with sockets still open.
 * Prints `ok` and exits 0 on success.
 */
import { join } from 'node:path';
import { SeqpacketServer, SeqpacketSocket } from '../index.ts';

const maybeGc = (globalThis as { gc?: () => void }).gc;
if (!maybeGc) throw new Error('run with --expose-gc');
const gc: () => void = maybeGc;
const maybeDir = process.argv[2];
if (!maybeDir) throw new Error('usage: gc-child.ts <dir>');
const dir: string = maybeDir;
setTimeout(() => {
  console.error('gc-child: timeout');
  process.exit(3);
}, 15_000).unref();

let collected = 0;
const registry = new FinalizationRegistry<string>(() => {
  collected++;
});

const ROUNDS = 50;
function makeGarbage(): void {
  for (let i = 0; i < ROUNDS; i++) {
    const [a, b] = SeqpacketSocket.pair();
    a.on('message', () => {});
    registry.register(a, 'a');
    registry.register(b, 'b');
    a.close();
    b.close();
  }
  const server = SeqpacketServer.listen(join(dir, 'gc.sock'));
  registry.register(server, 'server');
  server.close();
}

// An open pair whose only references are the native handles: must keep delivering.
function makeOrphans(onMessage: (text: string) => void): SeqpacketSocket {
  const [a, b] = SeqpacketSocket.pair();
  b.on('message', (data) => onMessage(data.toString()));
  return a; // b is referenced by nothing but its native handle
}

async function collectAll(expected: number): Promise<void> {
  for (let i = 0; i < 50 && collected < expected; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function main(): Promise<void> {
  makeGarbage();
  const received: string[] = [];
  const sender = makeOrphans((t) => received.push(t));
  await collectAll(2 * ROUNDS + 1);
  if (collected < 2 * ROUNDS + 1)
    throw new Error(`only ${collected} of ${2 * ROUNDS + 1} closed objects were collected`);
  sender.send(Buffer.from('still alive'));
  for (let i = 0; i < 100 && received.length === 0; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 5));
  }
  if (received[0] !== 'still alive')
    throw new Error(`orphaned socket stopped working: ${JSON.stringify(received)}`);
  // Leave one pair open but unref'd: the process must still exit on its own.
  const [x, y] = SeqpacketSocket.pair();
  x.unref();
  y.unref();
  sender.close();
  console.log('ok');
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
