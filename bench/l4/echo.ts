/**
 * The L4 benchmark's TCP backend, run by bench/l4/run.ts inside the server pod's network namespace (nsenter):
 *
 *   echoPort  echoes every byte back, for as long as the client keeps the connection (latency runs)
 *   oncePort  reads one request of `onceBytes`, answers with as many bytes and closes first (connection-rate
 *             runs; the server closing first keeps TIME_WAIT off the client's ephemeral ports)
 *
 * Listens on every address of the pod; prints READY once both listen.
 *   node bench/l4/echo.ts '{"echoPort":7000,"oncePort":7001,"onceBytes":100}'
 */
import { createServer, type Socket } from 'node:net';

interface EchoConfig {
  readonly echoPort: number;
  readonly oncePort: number;
  readonly onceBytes: number;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as EchoConfig;
const answer = Buffer.alloc(cfg.onceBytes, 0x62);

function onEchoData(this: Socket, d: Buffer): void {
  this.write(d);
}

function ignore(): void {}

const echo = createServer({ noDelay: true }, (s) => {
  s.on('error', ignore);
  s.on('data', onEchoData);
});

/** Bytes of the request read so far, per connection of the once port. */
const seen = new WeakMap<Socket, number>();

function onOnceData(this: Socket, d: Buffer): void {
  const n = (seen.get(this) ?? 0) + d.length;
  seen.set(this, n);
  if (n >= cfg.onceBytes) this.end(answer);
}

const once = createServer({ noDelay: true }, (s) => {
  s.on('error', ignore);
  s.on('data', onOnceData);
});

await Promise.all([
  new Promise<void>((r) => echo.listen({ port: cfg.echoPort, host: '0.0.0.0', backlog: 1024 }, r)),
  new Promise<void>((r) => once.listen({ port: cfg.oncePort, host: '0.0.0.0', backlog: 1024 }, r)),
]);
process.stdout.write('READY\n');
process.on('SIGTERM', () => process.exit(0));
