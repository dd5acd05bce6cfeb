/**
 * What every sample program shares: one pino logger (JSON lines on stdout), listeners that report the port they
 * got (port 0 = any free port; tests read it from the `listening` line), one access line per request, and
 * drain-then-exit(0) on SIGTERM through `pkg/drain`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Server } from 'node:net';
import { type Env, int, optionalStr } from '../../pkg/config/index.ts';
import { Drain, type Drainable, drainableServer, exitOnTermination } from '../../pkg/drain/index.ts';
import { describeError } from '../../pkg/errors/index.ts';
import { createLogger, type Logger } from '../../pkg/telemetry/index.ts';

/** Grace for in-flight requests after SIGTERM: well inside a pod's default 30 s terminationGracePeriodSeconds. */
export const DRAIN_GRACE_MS = 5_000;

export interface SampleRuntime {
  readonly logger: Logger;
  readonly drain: Drain;
}

/** Creates the logger and installs the SIGTERM/SIGINT handler; call first thing in `main`. */
export function startRuntime(component: string, base: Readonly<Record<string, string>> = {}): SampleRuntime {
  const logger = createLogger({ component, base });
  const drain = new Drain();
  exitOnTermination(drain, { graceMs: DRAIN_GRACE_MS, logger });
  return { logger, drain };
}

/** A listen port from env (`0` = any free port), else the program's conventional port. */
export function portFromEnv(env: Env, name: string, def: number): number {
  return int(env, name, def, { min: 0, max: 65_535 });
}

/**
 * `BIND_ADDRESS` (e.g. `127.0.0.1` in tests). Unset: Node's default, `::` when IPv6 is available else
 * `0.0.0.0`, like upstream Bookinfo binding every address of the pod.
 */
export function bindAddress(env: Env): string | null {
  return optionalStr(env, 'BIND_ADDRESS');
}

export interface ListenOptions {
  readonly name: string;
  readonly port: number;
  readonly host: string | null;
  readonly runtime: SampleRuntime;
  /** Defaults to `drainableServer(name, server)`. */
  readonly drainable?: Drainable;
}

/** Binds (failing loudly), registers the listener with the drain and logs `listening` with the real port. */
export async function listen(server: Server, opts: ListenOptions): Promise<number> {
  // Registered before listening so the drain sees every connection.
  const drainable = opts.drainable ?? drainableServer(opts.name, server);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const done = () => {
      server.off('error', reject);
      resolve();
    };
    if (opts.host === null) server.listen(opts.port, done);
    else server.listen(opts.port, opts.host, done);
  });
  opts.runtime.drain.add(drainable);
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : opts.port;
  const address = typeof addr === 'object' && addr !== null ? addr.address : String(addr);
  opts.runtime.logger.info({ listener: opts.name, port, address }, 'listening');
  return port;
}

/** Runs `main`; a startup failure is logged as one fatal line and exits 1 (never half-started). */
export function runMain(component: string, main: () => Promise<void>): void {
  main().catch((err: unknown) => {
    process.stderr.write(
      `${JSON.stringify({ level: 'fatal', component, err: describeError(err), msg: 'startup failed' })}\n`,
    );
    process.exit(1);
  });
}

/** `ip:port` the way Go prints a remote address (`[::1]:5000` for IPv6). */
export function remoteAddr(socket: { remoteAddress?: string | undefined; remotePort?: number | undefined }) {
  const ip = socket.remoteAddress ?? '';
  return ip.includes(':') ? `[${ip}]:${socket.remotePort ?? 0}` : `${ip}:${socket.remotePort ?? 0}`;
}

/** Logs exactly one access line when the response is done (or the client went away). */
export function logAccess(logger: Logger, req: IncomingMessage, res: ServerResponse): void {
  const started = performance.now();
  res.once('close', () => {
    logger.info(
      {
        method: req.method,
        uri: req.url,
        status: res.statusCode,
        completed: res.writableFinished,
        durationMs: Math.round(performance.now() - started),
        remote: remoteAddr(req.socket),
      },
      'request',
    );
  });
}

/** Reads a request body up to `limit` bytes; resolves null when it is larger (the caller answers 413). */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooBig = false;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) tooBig = true;
      else chunks.push(chunk);
    });
    req.once('end', () => resolve(tooBig ? null : Buffer.concat(chunks)));
    req.once('error', reject);
  });
}

/** Writes a complete response with a body and a Content-Length. */
export function send(
  res: ServerResponse,
  status: number,
  contentType: string,
  body: string | Buffer,
  extra: Readonly<Record<string, string | string[]>> = {},
): void {
  const buf = typeof body === 'string' ? Buffer.from(body) : body;
  res.writeHead(status, { ...extra, 'Content-Type': contentType, 'Content-Length': String(buf.length) });
  res.end(buf);
}

export function sendJson(res: ServerResponse, status: number, value: unknown): void {
  send(res, status, 'application/json', JSON.stringify(value));
}
