/**
 * New-connection rate: `concurrency` loops, each one connecting, sending one small request, reading the
 * answer until the server closes (bench/l4/echo.ts `oncePort`), then starting over, as fast as they can for
 * `warmupMs + durationMs`. Connections completed after the warm-up count for the rate. Prints one JSON line:
 *
 *   {rate, completed, counted, errors, p50, p99}   rate = counted ÷ duration (conn/s); p50/p99 = ms from
 *                                                  connect() to the server's close; completed includes warm-up
 *
 *   node bench/l4/connrate.ts '{"host":"10.1.2.3","port":7001,"concurrency":10,"durationMs":3000,...}'
 */
import { connect, type Socket } from 'node:net';

interface ConnRateConfig {
  readonly host: string;
  readonly port: number;
  readonly concurrency: number;
  readonly durationMs: number;
  readonly warmupMs: number;
  readonly payloadBytes: number;
  /** A connection that has not finished by then counts as an error. */
  readonly timeoutMs: number;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as ConnRateConfig;
const request = Buffer.alloc(cfg.payloadBytes, 0x61);
/** Per-connection latencies after the warm-up; grows by doubling (the rate is not known in advance). */
let samples = new Float64Array(64 * 1024);
let counted = 0;
let completed = 0;
let errors = 0;
let start = 0;
let stopping = false;

class Attempt {
  readonly sock: Socket;
  readonly started: number;
  received = 0;
  failed = false;

  constructor(sock: Socket) {
    this.sock = sock;
    this.started = performance.now();
  }
}

function record(ms: number, at: number): void {
  completed++;
  if (at - start < cfg.warmupMs) return;
  if (counted === samples.length) {
    const bigger = new Float64Array(samples.length * 2);
    bigger.set(samples);
    samples = bigger;
  }
  samples[counted++] = ms;
}

function next(): void {
  if (stopping) return;
  const sock = connect({ host: cfg.host, port: cfg.port, noDelay: true });
  const a = new Attempt(sock);
  sock.setTimeout(cfg.timeoutMs);
  sock.on('connect', () => sock.write(request));
  sock.on('data', (d: Buffer) => {
    a.received += d.length;
  });
  sock.on('timeout', () => {
    a.failed = true;
    sock.destroy();
  });
  sock.on('error', () => {
    a.failed = true;
  });
  sock.on('close', () => {
    const now = performance.now();
    if (a.failed || a.received < cfg.payloadBytes) errors++;
    else record(now - a.started, now);
    next();
  });
}

start = performance.now();
for (let i = 0; i < cfg.concurrency; i++) next();
await new Promise((r) => setTimeout(r, cfg.warmupMs + cfg.durationMs));
stopping = true;
const sorted = samples.subarray(0, counted).sort();
const q = (p: number) =>
  counted === 0 ? Number.NaN : sorted[Math.min(counted - 1, Math.floor(p * counted))]!;
process.stdout.write(
  `${JSON.stringify({
    rate: counted / (cfg.durationMs / 1000),
    completed,
    counted,
    errors,
    p50: q(0.5),
    p99: q(0.99),
  })}\n`,
);
process.exit(0);
