/**
 * The agent's end of the plugin protocol (see ../protocol.ts): HTTP/1.1 on
 * `<CNI bin dir>/istio-cni.d/pluginevent.sock`.
 * Bodies are size-limited and validated; malformed requests are answered 400, logged once and counted.
 */
import { chmodSync, rmSync, statSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { describeError, isMeshError } from '../../../pkg/errors/index.ts';
import { LogOnce } from '../../../pkg/telemetry/index.ts';
import {
  CMD_ADD_PATH,
  CMD_DEL_PATH,
  type CniAddEvent,
  type CniAddReply,
  type CniDelEvent,
  MAX_EVENT_BYTES,
  parseAddEvent,
  parseDelEvent,
} from '../protocol.ts';
import type { AgentMetrics } from './metrics.ts';

/** Thrown by handlers to answer 503 (the plugin maps it to CNI code 11, try again later). */
export class RetryableError extends Error {}

export interface PluginHandlers {
  add(event: CniAddEvent): Promise<CniAddReply>;
  del(event: CniDelEvent): Promise<void>;
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    connection: 'close',
  });
  res.end(text);
}

export class PluginServer {
  readonly server: Server;
  readonly path: string;

  private constructor(server: Server, path: string) {
    this.server = server;
    this.path = path;
  }

  /** Listens on `path` (a stale socket file is replaced; anything else there is an error). */
  static async listen(
    path: string,
    handlers: PluginHandlers,
    logger: Logger,
    metrics: AgentMetrics,
  ): Promise<PluginServer> {
    const logOnce = new LogOnce(60_000);
    const reject = (res: ServerResponse, status: number, reason: string, message: string): void => {
      metrics.rejected.inc({ source: 'plugin', reason });
      if (logOnce.should(reason)) {
        logger.warn({ code: 'MESH_ERR_CNI_PLUGIN_REQUEST', reason }, `rejected plugin request: ${message}`);
      }
      reply(res, status, { error: message, retryable: false });
    };
    const server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const url = req.url ?? '';
      if (req.method !== 'POST' || (url !== CMD_ADD_PATH && url !== CMD_DEL_PATH)) {
        reject(res, 404, 'route', `no route ${req.method} ${url}`);
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      let aborted = false;
      req.on('data', (d: Buffer) => {
        size += d.length;
        if (size > MAX_EVENT_BYTES && !aborted) {
          aborted = true;
          reject(res, 413, 'oversized', `body larger than ${MAX_EVENT_BYTES} bytes`);
          req.destroy();
        } else if (!aborted) chunks.push(d);
      });
      req.on('end', () => {
        if (aborted) return;
        let body: unknown;
        try {
          body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          reject(res, 400, 'json', 'body is not JSON');
          return;
        }
        if (url === CMD_ADD_PATH) {
          const event = parseAddEvent(body);
          if (typeof event === 'string') {
            reject(res, 400, 'invalid', event);
            return;
          }
          handlers.add(event).then(
            (r) => {
              metrics.pluginRequests.inc({ command: 'add', result: r.captured ? 'captured' : 'skipped' });
              reply(res, 200, r);
            },
            (err: unknown) => {
              const retryable = err instanceof RetryableError;
              metrics.pluginRequests.inc({ command: 'add', result: retryable ? 'retry' : 'error' });
              const message = isMeshError(err) ? err.toString() : describeError(err);
              reply(res, retryable ? 503 : 500, { error: message, retryable });
            },
          );
        } else {
          const event = parseDelEvent(body);
          if (typeof event === 'string') {
            reject(res, 400, 'invalid', event);
            return;
          }
          handlers.del(event).then(
            () => {
              metrics.pluginRequests.inc({ command: 'del', result: 'ok' });
              reply(res, 200, {});
            },
            (err: unknown) => {
              metrics.pluginRequests.inc({ command: 'del', result: 'error' });
              reply(res, 500, { error: describeError(err), retryable: false });
            },
          );
        }
      });
    });
    // Plugin requests wait on rules and ztunnel acks; never let Node's default timeouts cut them short.
    server.requestTimeout = 0;
    server.headersTimeout = 10_000;
    removeStaleSocket(path);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    chmodSync(path, 0o600);
    return new PluginServer(server, path);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
      rmSync(this.path, { force: true });
    });
  }
}

function removeStaleSocket(path: string): void {
  try {
    if (statSync(path).isSocket()) rmSync(path, { force: true });
  } catch {
    // nothing there
  }
}
