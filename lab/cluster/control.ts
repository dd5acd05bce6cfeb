/**
 * The supervisor's control socket: HTTP/1.1 over a unix socket (`<root>/control.sock`, mode 0600, so root
 * only), JSON in and out. It answers what only the supervisor knows, i.e. the pod runtimes' state:
 *
 *   GET  /v1/status                      supervisor phase, nodes, pods per node
 *   POST /v1/exec-target {namespace, pod, container?}
 *                                        → {node, pid|null, env, netnsPath, container}: where `lab exec` enters
 *   POST /v1/exec {namespace, pod, container?, argv, timeoutMs?, input?}
 *                                        → {exitCode, stdout, stderr, timedOut} (buffered; tests and scripts)
 *   POST /v1/shutdown                    orderly shutdown (same as SIGTERM)
 */
import { chmodSync, rmSync } from 'node:fs';
import http from 'node:http';
import { describeError, MeshError } from '../../pkg/errors/index.ts';
import type { ExecResult } from '../runtime/types.ts';

export interface ExecTarget {
  readonly node: string;
  readonly container: string | null;
  readonly pid: number | null;
  readonly env: Record<string, string>;
  readonly netnsPath: string;
}

export interface ExecRequest {
  readonly namespace: string;
  readonly pod: string;
  readonly container?: string;
  readonly argv: readonly string[];
  readonly timeoutMs?: number;
  readonly input?: string;
}

export interface ControlHandlers {
  status(): unknown;
  execTarget(namespace: string, pod: string, container?: string): ExecTarget | null;
  exec(req: ExecRequest): Promise<ExecResult>;
  shutdown(): void;
}

const MAX_BODY = 1024 * 1024;

class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

function readBody(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let len = 0;
    req.on('data', (c: Buffer) => {
      len += c.length;
      if (len > MAX_BODY) {
        reject(new HttpError(413, 'body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      try {
        const text = Buffer.concat(chunks).toString('utf8');
        const v = text ? (JSON.parse(text) as unknown) : {};
        if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object');
        resolve(v as Record<string, unknown>);
      } catch (err) {
        reject(new HttpError(400, `invalid JSON body: ${(err as Error).message}`));
      }
    });
    req.on('error', reject);
  });
}

function reqString(body: Record<string, unknown>, key: string): string {
  const v = body[key];
  if (typeof v !== 'string' || v === '') throw new HttpError(400, `${key} is required`);
  return v;
}

export class ControlServer {
  private readonly server: http.Server;
  readonly path: string;

  private constructor(server: http.Server, path: string) {
    this.server = server;
    this.path = path;
  }

  static async listen(path: string, h: ControlHandlers): Promise<ControlServer> {
    rmSync(path, { force: true });
    const server = http.createServer((req, res) => {
      const send = (status: number, value: unknown): void => {
        const text = JSON.stringify(value);
        res.writeHead(status, {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(text),
        });
        res.end(text);
      };
      const route = async (): Promise<unknown> => {
        const url = req.url ?? '/';
        if (req.method === 'GET' && url === '/v1/status') return h.status();
        if (req.method !== 'POST') throw new HttpError(404, `no route ${req.method} ${url}`);
        const body = await readBody(req);
        if (url === '/v1/exec-target') {
          const t = h.execTarget(
            reqString(body, 'namespace'),
            reqString(body, 'pod'),
            typeof body.container === 'string' ? body.container : undefined,
          );
          if (!t) throw new HttpError(404, 'pod (or container) not running on any node of this lab');
          return t;
        }
        if (url === '/v1/exec') {
          const argv = body.argv;
          if (!Array.isArray(argv) || argv.length === 0 || !argv.every((a) => typeof a === 'string'))
            throw new HttpError(400, 'argv must be a non-empty list of strings');
          return h.exec({
            namespace: reqString(body, 'namespace'),
            pod: reqString(body, 'pod'),
            ...(typeof body.container === 'string' ? { container: body.container } : {}),
            argv: argv as string[],
            ...(typeof body.timeoutMs === 'number' ? { timeoutMs: body.timeoutMs } : {}),
            ...(typeof body.input === 'string' ? { input: body.input } : {}),
          });
        }
        if (url === '/v1/shutdown') {
          setImmediate(() => h.shutdown());
          return { shuttingDown: true };
        }
        throw new HttpError(404, `no route ${req.method} ${url}`);
      };
      route().then(
        (v) => send(200, v),
        (err: unknown) =>
          send(err instanceof HttpError ? err.status : 500, {
            error: err instanceof HttpError ? err.message : describeError(err),
          }),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    chmodSync(path, 0o600);
    return new ControlServer(server, path);
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    rmSync(this.path, { force: true });
  }
}

/** One request to a supervisor's control socket. */
export function controlRequest<T>(
  socketPath: string,
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
  timeoutMs = 60_000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? '' : JSON.stringify(body);
    const req = http.request(
      {
        socketPath,
        method,
        path,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let v: unknown;
          try {
            v = JSON.parse(text);
          } catch {
            v = { error: text };
          }
          if (res.statusCode === 200) resolve(v as T);
          else
            reject(
              new MeshError(
                res.statusCode === 404 ? 'MESH_ERR_LAB_RUNTIME_NOT_FOUND' : 'MESH_ERR_LAB_SUPERVISOR',
                String((v as { error?: unknown }).error ?? `HTTP ${res.statusCode}`),
              ),
            );
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err) =>
      reject(
        new MeshError(
          'MESH_ERR_LAB_NOT_RUNNING',
          `the lab supervisor does not answer on ${socketPath}: ${err.message}`,
        ),
      ),
    );
    req.end(payload);
  });
}
