/**
 * Bookinfo details (port 9080): `GET /details/<id>` → the book's details as JSON (upstream's fields and key
 * order, `id` echoed from the path as a number); a non-numeric id → 400 `{"error": "please provide numeric
 * product id"}`; `GET /health` → `{"status": "Details is healthy"}`. It calls nothing.
 *
 * Env: PORT (9080; also the first CLI argument), BIND_ADDRESS. Upstream's details-v2 (ENABLE_EXTERNAL_BOOK_SERVICE,
 * fetching from Google Books) is not implemented: the lab has no Internet; the flag is logged and ignored.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { bool } from '../../pkg/config/index.ts';
import type { Logger } from '../../pkg/telemetry/index.ts';
import {
  bindAddress,
  listen,
  logAccess,
  portFromEnv,
  runMain,
  sendJson,
  startRuntime,
} from '../lib/runtime.ts';
import { bookDetails } from './data.ts';

/** The last path segment as an integer, like upstream's `Integer(path.split('/')[-1])`; null if it is not one. */
export function productIdFromPath(path: string): number | null {
  const parts = path.split('/').filter((p) => p.length > 0);
  const last = parts[parts.length - 1] ?? '';
  if (!/^[+-]?\d+$/.test(last)) return null;
  const n = Number(last);
  return Number.isSafeInteger(n) ? n : null;
}

function handler(log: Logger) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    logAccess(log, req, res);
    req.resume();
    const path = new URL(req.url ?? '/', 'http://details').pathname;
    if (path === '/health') {
      sendJson(res, 200, { status: 'Details is healthy' });
    } else if (path === '/details' || path.startsWith('/details/')) {
      const id = productIdFromPath(path);
      if (id === null) sendJson(res, 400, { error: 'please provide numeric product id' });
      else sendJson(res, 200, bookDetails(id));
    } else {
      sendJson(res, 404, { error: 'not found' });
    }
  };
}

async function main(): Promise<void> {
  const env = process.env;
  const port = portFromEnv(process.argv[2] !== undefined ? { PORT: process.argv[2] } : env, 'PORT', 9080);
  const runtime = startRuntime('bookinfo-details');
  if (bool(env, 'ENABLE_EXTERNAL_BOOK_SERVICE', false)) {
    runtime.logger.warn(
      'ENABLE_EXTERNAL_BOOK_SERVICE is not supported by this sample; serving local details',
    );
  }
  await listen(createServer(handler(runtime.logger)), {
    name: 'http',
    port,
    host: bindAddress(env),
    runtime,
  });
}

runMain('bookinfo-details', main);
