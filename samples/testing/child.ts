/**
 * Test helper: runs a sample program as a real child process on loopback, collects its JSON log lines, and
 * learns the ports it bound from its `listening` lines (programs are started with port 0).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createServer, type IncomingHttpHeaders, request, type Server } from 'node:http';
import { fileURLToPath } from 'node:url';

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 3_000;

export interface LogLine {
  readonly msg?: string;
  readonly [key: string]: unknown;
}

export class SampleChild {
  readonly proc: ChildProcess;
  readonly lines: LogLine[] = [];
  readonly stderr: string[] = [];
  readonly ports = new Map<string, number>();
  private readonly exited: Promise<number | null>;

  constructor(proc: ChildProcess) {
    this.proc = proc;
    let partial = '';
    proc.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      partial += chunk;
      let nl = partial.indexOf('\n');
      while (nl !== -1) {
        const line = partial.slice(0, nl);
        partial = partial.slice(nl + 1);
        nl = partial.indexOf('\n');
        try {
          const parsed = JSON.parse(line) as LogLine;
          this.lines.push(parsed);
          if (
            parsed.msg === 'listening' &&
            typeof parsed.listener === 'string' &&
            typeof parsed.port === 'number'
          ) {
            this.ports.set(parsed.listener, parsed.port);
          }
        } catch {
          this.lines.push({ msg: `(not JSON) ${line}` });
        }
      }
    });
    proc.stderr?.setEncoding('utf8').on('data', (chunk: string) => this.stderr.push(chunk));
    this.exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
  }

  port(listener = 'http'): number {
    const p = this.ports.get(listener);
    if (p === undefined) throw new Error(`no ${listener} listener reported`);
    return p;
  }

  /** Resolves with the exit code (null when killed by a signal). */
  exit(): Promise<number | null> {
    return this.exited;
  }

  /** SIGTERM, then SIGKILL if it has not exited in time. Resolves with the exit code. */
  async stop(): Promise<number | null> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return this.proc.exitCode;
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), STOP_TIMEOUT_MS);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }
}

/**
 * Starts `entry` (repo-relative) with only `env` (plus PATH), bound to 127.0.0.1, and waits for `listeners`
 * to report their ports.
 */
export async function startSample(
  entry: string,
  env: Readonly<Record<string, string>>,
  listeners: readonly string[] = ['http'],
): Promise<SampleChild> {
  const proc = spawn(process.execPath, [`${REPO_ROOT}${entry}`], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', BIND_ADDRESS: '127.0.0.1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const child = new SampleChild(proc);
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!listeners.every((l) => child.ports.has(l))) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`${entry} did not start: exit=${proc.exitCode} stderr=${child.stderr.join('')}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return child;
}

export interface HttpResult {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  readonly elapsedMs: number;
}

/** One HTTP/1.1 request on a fresh connection to 127.0.0.1. */
export function httpRequest(
  port: number,
  path: string,
  opts: {
    method?: string;
    headers?: Record<string, string | string[]>;
    body?: string;
    timeoutMs?: number;
  } = {},
): Promise<HttpResult> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: opts.method ?? 'GET',
        headers: opts.headers ?? {},
        agent: false,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          body += c;
        });
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body,
            elapsedMs: performance.now() - started,
          }),
        );
        res.on('error', reject);
      },
    );
    req.setTimeout(opts.timeoutMs ?? 15_000, () => req.destroy(new Error('test request timed out')));
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** A tiny HTTP server standing in for a backend: records request headers, answers with `respond`. */
export interface CaptureServer {
  readonly server: Server;
  readonly port: number;
  readonly requests: Array<{ readonly url: string; readonly headers: IncomingHttpHeaders }>;
  close(): Promise<void>;
}

export async function startCapture(
  respond: (url: string) => { status: number; body: unknown; delayMs?: number },
): Promise<CaptureServer> {
  const requests: Array<{ url: string; headers: IncomingHttpHeaders }> = [];
  const server = createServer((req, res) => {
    requests.push({ url: req.url ?? '', headers: req.headers });
    req.resume();
    const out = respond(req.url ?? '');
    const answer = () => {
      if (res.destroyed) return;
      res.writeHead(out.status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(out.body));
    };
    if (out.delayMs) setTimeout(answer, out.delayMs).unref();
    else answer();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
  return {
    server,
    port,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A loopback port nothing listens on (bound, then released). */
export async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const addr = s.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}
