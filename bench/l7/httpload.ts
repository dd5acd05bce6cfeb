/**
 * HTTP/1.1 load generator for the L7 benchmark, run by bench/l7/run.ts inside the client pod's network
 * namespace (nsenter). Raw keep-alive TCP connections, one request in flight per connection, a precomputed
 * request and a small response parser (status line, Content-Length, `connection: close`), so the generator
 * spends little of the shared CPUs. Two modes:
 *
 *   closed  every connection sends its next request as soon as the previous answer is complete (max req/s)
 *   rate    requests are due every 1/rate s on one schedule for all connections; a due request goes out on
 *           an idle connection at once, or waits for the first connection to free up. Latency counts from the
 *           send time, or from the scheduled time when the request had to wait for a connection (a stall of
 *           the path delays the following requests and shows in the tail: no coordinated omission; the
 *           generator's own timer lateness, ≤ 1 ms, is not counted)
 *
 * Every answer must be `200` and carry `expect` (a raw header line such as `x-served-by: v1`) in its header
 * block, else it counts as `bad`. A connection the server closes is replaced (counted in `reconnects`; a
 * request lost with it counts as an error). Prints one JSON line and exits.
 *
 *   node bench/l7/httpload.ts '{"host":"10.0.0.1","port":80,"path":"/api/x","headers":{},"mode":"rate",…}'
 */
import { connect } from 'node:net';
import type { Duplex } from 'node:stream';

export interface HttpLoadConfig {
  readonly host: string;
  readonly port: number;
  readonly path: string;
  /** Extra request headers (Host is set from `hostHeader`). */
  readonly headers: Readonly<Record<string, string>>;
  readonly hostHeader: string;
  readonly mode: 'closed' | 'rate';
  readonly connections: number;
  /** Requests per second, all connections together (rate mode). */
  readonly rate: number;
  readonly durationMs: number;
  /** Answers in this first part of the run are not counted (nor sampled). */
  readonly warmupMs: number;
  /** A raw header line every answer must contain, e.g. `x-served-by: v1`. */
  readonly expect: string;
}

export interface HttpLoadResult {
  /** Answers in the measured window. */
  readonly count: number;
  /** Every complete answer, warm-up included (for CPU per request). */
  readonly completed: number;
  readonly errors: number;
  readonly bad: number;
  readonly reconnects: number;
  /** Answers per second in the measured window. */
  readonly rps: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
}

const CRLFCRLF = Buffer.from('\r\n\r\n');

/** Opens one connection (a TCP socket by default; bench/l7/profile.ts passes HBONE tunnels). */
export type Dial = () => Promise<Duplex>;

function dialTcp(host: string, port: number): Dial {
  return () =>
    new Promise((resolve, reject) => {
      const sock = connect({ host, port, noDelay: true });
      sock.once('connect', () => {
        sock.off('error', reject);
        resolve(sock);
      });
      sock.once('error', reject);
    });
}

class Conn {
  sock: Duplex | null = null;
  busy = false;
  /** When the current request's latency counts from. */
  from = 0;
  /** Header bytes of the current answer while its header block is incomplete. */
  head: Buffer | null = null;
  /** Body bytes still to come; -1 while reading the header block. */
  remaining = -1;
  closeAfter = false;
  ok = true;
}

export function runLoad(
  cfg: HttpLoadConfig,
  dial: Dial = dialTcp(cfg.host, cfg.port),
): Promise<HttpLoadResult> {
  const headerLines = Object.entries({ host: cfg.hostHeader, ...cfg.headers })
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  const request = Buffer.from(`GET ${cfg.path} HTTP/1.1\r\n${headerLines}\r\n`, 'latin1');
  const expect = Buffer.from(cfg.expect, 'latin1');
  const intervalMs = 1000 / cfg.rate;
  const total = cfg.mode === 'rate' ? Math.ceil((cfg.rate * (cfg.durationMs + cfg.warmupMs)) / 1000) : 0;
  let samples = new Float64Array(cfg.mode === 'rate' ? total + 16 : 1 << 16);
  let count = 0;
  let completed = 0;
  let errors = 0;
  let bad = 0;
  let reconnects = 0;
  let start = 0;
  let measureFrom = 0;
  let stopping = false;
  const idle: Conn[] = [];
  /** Scheduled times of due requests waiting for a connection (rate mode). */
  const waiting: number[] = [];
  let waitingHead = 0;
  let nextSlot = 0;
  let sent = 0;
  let timer: NodeJS.Timeout | null = null;

  const record = (ms: number): void => {
    if (count === samples.length) {
      const grown = new Float64Array(samples.length * 2);
      grown.set(samples);
      samples = grown;
    }
    samples[count++] = ms;
  };

  const send = (c: Conn, from: number): void => {
    c.busy = true;
    c.from = from;
    c.head = null;
    c.remaining = -1;
    c.closeAfter = false;
    c.ok = true;
    c.sock!.write(request);
  };

  /** The connection is free: closed loop sends again, rate mode serves a waiting slot or parks it. */
  const release = (c: Conn): void => {
    c.busy = false;
    if (stopping) return;
    if (cfg.mode === 'closed') {
      send(c, performance.now());
      return;
    }
    if (waitingHead < waiting.length) {
      const slot = waiting[waitingHead++]!;
      if (waitingHead > 1024 && waitingHead * 2 > waiting.length) {
        waiting.splice(0, waitingHead);
        waitingHead = 0;
      }
      send(c, slot);
      return;
    }
    idle.push(c);
  };

  const done = (c: Conn): void => {
    const now = performance.now();
    completed++;
    if (!c.ok) bad++;
    if (now >= measureFrom) record(now - c.from);
    if (c.closeAfter) {
      reopen(c);
      return;
    }
    release(c);
  };

  /** Parses the answer's header block; returns where the body starts in `buf`, or -1 for malformed. */
  const parseHead = (c: Conn, buf: Buffer, end: number): number => {
    // "HTTP/1.1 200 "
    if (buf[9] !== 0x32 || buf[10] !== 0x30 || buf[11] !== 0x30) c.ok = false;
    const head = buf.toString('latin1', 0, end).toLowerCase();
    if (buf.subarray(0, end).indexOf(expect) === -1) c.ok = false;
    const cl = head.indexOf('\r\ncontent-length:');
    if (cl === -1) return -1;
    c.remaining = Number.parseInt(head.slice(cl + 17, head.indexOf('\r\n', cl + 17)).trim(), 10);
    if (!Number.isFinite(c.remaining)) return -1;
    const conn = head.indexOf('\r\nconnection:');
    if (conn !== -1 && head.slice(conn + 13, head.indexOf('\r\n', conn + 13)).trim() === 'close')
      c.closeAfter = true;
    return end + 4;
  };

  const onData = (c: Conn, d: Buffer): void => {
    if (!c.busy) return;
    let buf = d;
    if (c.remaining < 0) {
      if (c.head !== null) buf = Buffer.concat([c.head, d]);
      const end = buf.indexOf(CRLFCRLF);
      if (end === -1) {
        c.head = buf;
        return;
      }
      c.head = null;
      const bodyAt = parseHead(c, buf, end);
      if (bodyAt < 0) {
        errors++;
        reopen(c);
        return;
      }
      c.remaining -= buf.length - bodyAt;
    } else {
      c.remaining -= buf.length;
    }
    if (c.remaining <= 0) done(c);
  };

  const open = async (c: Conn): Promise<void> => {
    const sock = await dial();
    c.sock = sock;
    sock.on('data', (d: Buffer) => onData(c, d));
    sock.on('error', () => undefined);
    sock.once('close', () => {
      if (c.sock !== sock || stopping) return;
      // Closed under us: the request in flight is lost.
      if (c.busy) errors++;
      reopen(c);
    });
  };

  function reopen(c: Conn): void {
    const old = c.sock;
    c.sock = null;
    c.busy = false;
    old?.destroy();
    if (stopping) return;
    reconnects++;
    open(c).then(
      () => release(c),
      () => {
        errors++;
        if (!stopping) setTimeout(reopen, 100, c);
      },
    );
  }

  const tick = (): void => {
    timer = null;
    if (stopping) return;
    const now = performance.now();
    while (nextSlot <= now && sent < total) {
      const c = idle.pop();
      if (c) send(c, now);
      else waiting.push(nextSlot);
      sent++;
      nextSlot = start + sent * intervalMs;
    }
    if (sent < total) timer = setTimeout(tick, Math.max(0, nextSlot - performance.now()));
  };

  return (async () => {
    const conns = Array.from({ length: cfg.connections }, () => new Conn());
    await Promise.all(conns.map(open));
    start = performance.now();
    measureFrom = start + cfg.warmupMs;
    if (cfg.mode === 'closed') {
      for (const c of conns) send(c, start);
    } else {
      idle.push(...conns);
      nextSlot = start;
      tick();
    }
    await new Promise((r) => setTimeout(r, cfg.warmupMs + cfg.durationMs));
    stopping = true;
    const measuredMs = performance.now() - measureFrom;
    if (timer !== null) clearTimeout(timer);
    for (const c of conns) c.sock?.destroy();
    const sorted = samples.subarray(0, count).sort();
    const q = (p: number) => (count === 0 ? Number.NaN : sorted[Math.min(count - 1, Math.floor(p * count))]!);
    return {
      count,
      completed,
      errors,
      bad,
      reconnects,
      rps: count / (measuredMs / 1000),
      p50: q(0.5),
      p90: q(0.9),
      p99: q(0.99),
      max: count === 0 ? Number.NaN : sorted[count - 1]!,
    };
  })();
}

if (import.meta.main) {
  const cfg = JSON.parse(process.argv[2] ?? '{}') as HttpLoadConfig;
  const r = await runLoad(cfg);
  process.stdout.write(`${JSON.stringify(r)}\n`);
  process.exit(0);
}
