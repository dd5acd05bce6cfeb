/**
 * Fixed-rate request/response load over a few persistent TCP connections: each connection sends a payload,
 * waits for the same number of bytes back (the backend echoes), and sends the next at its next slot
 * (`connections / rate` apart). Latency counts from the *intended* send time, so a stall delays the
 * following requests and shows in the tail (no coordinated omission). Prints one JSON line and exits.
 *
 * `node bench/hbone/loadgen.ts '{"port":1234,"connections":10,"rate":1000,"durationMs":4000,...}'`
 * (`host` defaults to 127.0.0.1; bench/l4 runs it inside a lab pod's netns against another pod's IP). The
 * output's `completed` counts every answered request, warm-up included (for CPU per request).
 */
import { connect, type Socket } from 'node:net';

interface LoadConfig {
  readonly host?: string;
  readonly port: number;
  readonly connections: number;
  /** Requests per second, all connections together. */
  readonly rate: number;
  readonly durationMs: number;
  /** Samples from this first part of the run are dropped. */
  readonly warmupMs: number;
  readonly payloadBytes: number;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as LoadConfig;
const intervalMs = (cfg.connections / cfg.rate) * 1000;
const payload = Buffer.alloc(cfg.payloadBytes, 0x61);
const samples = new Float64Array(
  Math.ceil((cfg.rate * (cfg.durationMs + cfg.warmupMs)) / 1000) + cfg.connections * 4,
);
let count = 0;
let completed = 0;
let errors = 0;
let start = 0;
let stopping = false;

class Conn {
  readonly sock: Socket;
  /** When the current request should have gone out. */
  intended = 0;
  /** What its latency counts from: the send time, or the intended time when it went out late because the
   * previous answer was late (coordinated-omission correction; timer jitter of the generator is not). */
  from = 0;
  received = 0;
  inFlight = false;
  timer: NodeJS.Timeout | null = null;

  constructor(sock: Socket) {
    this.sock = sock;
  }
}

function sendOnTime(c: Conn): void {
  c.timer = null;
  c.from = performance.now();
  send(c);
}

function send(c: Conn): void {
  if (stopping) return;
  c.inFlight = true;
  c.received = 0;
  c.sock.write(payload);
}

function onData(c: Conn, n: number): void {
  c.received += n;
  if (c.received < cfg.payloadBytes) return;
  const now = performance.now();
  c.inFlight = false;
  completed++;
  if (now - start >= cfg.warmupMs && count < samples.length) samples[count++] = now - c.from;
  c.intended += intervalMs;
  const delay = c.intended - now;
  if (delay <= 0) {
    c.from = c.intended;
    send(c);
  } else {
    c.timer = setTimeout(sendOnTime, delay, c);
  }
}

const conns: Conn[] = [];
await Promise.all(
  Array.from(
    { length: cfg.connections },
    () =>
      new Promise<void>((resolve, reject) => {
        const sock = connect({ host: cfg.host ?? '127.0.0.1', port: cfg.port, noDelay: true });
        const c = new Conn(sock);
        sock.on('data', (d: Buffer) => onData(c, d.length));
        sock.on('error', () => {
          errors++;
        });
        sock.once('connect', () => resolve());
        sock.once('error', reject);
        conns.push(c);
      }),
  ),
);

start = performance.now();
conns.forEach((c, i) => {
  // Spread the connections' slots evenly over one interval.
  c.intended = start + (i * intervalMs) / cfg.connections;
  c.timer = setTimeout(sendOnTime, c.intended - start, c);
});

await new Promise((r) => setTimeout(r, cfg.warmupMs + cfg.durationMs));
stopping = true;
for (const c of conns) {
  if (c.timer !== null) clearTimeout(c.timer);
  c.sock.destroy();
}
const sorted = samples.subarray(0, count).sort();
const q = (p: number) => (count === 0 ? Number.NaN : sorted[Math.min(count - 1, Math.floor(p * count))]!);
process.stdout.write(
  `${JSON.stringify({
    count,
    completed,
    errors,
    achievedRate: count / (cfg.durationMs / 1000),
    p50: q(0.5),
    p90: q(0.9),
    p99: q(0.99),
    max: count === 0 ? Number.NaN : sorted[count - 1],
  })}\n`,
);
process.exit(0);
