/**
 * Bookinfo ratings (port 9080): `GET /ratings/<id>` → `{"id": <id>, "ratings": {"Reviewer1": 5,
 * "Reviewer2": 4}}`; `POST /ratings/<id>` with a JSON object replaces that product's ratings (kept in
 * memory); a non-numeric id → 400 `{"error": "please provide numeric product ID"}`; `GET /health`.
 *
 * Upstream's failure images are selected by SERVICE_VERSION, as upstream does:
 *   v-faulty       half of the GETs answer 503 `{"error": "Service unavailable"}`;
 *   v-delayed      half of the GETs answer after 7 s;
 *   v-unavailable  flips between serving and 503 every 60 s;
 *   v-unhealthy    flips every 15 min, and /health answers 500 while unhealthy.
 * The database-backed v2 (MongoDB/MySQL) is not implemented; it serves the in-memory ratings.
 *
 * Env: PORT (9080; also the first CLI argument), BIND_ADDRESS, SERVICE_VERSION (v1).
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { str } from '../../pkg/config/index.ts';
import type { Logger } from '../../pkg/telemetry/index.ts';
import {
  bindAddress,
  listen,
  logAccess,
  portFromEnv,
  readBody,
  runMain,
  type SampleRuntime,
  sendJson,
  startRuntime,
} from '../lib/runtime.ts';
import { DEFAULT_RATINGS } from './data.ts';

const DELAYED_MS = 7_000;
const UNAVAILABLE_FLIP_MS = 60_000;
const UNHEALTHY_FLIP_MS = 15 * 60_000;
const MAX_RATINGS_BODY = 64 * 1024;
/** Products with user-posted ratings kept at most (the demo posts one or two). */
const MAX_POSTED = 1_000;

type Mode = 'v1' | 'v-faulty' | 'v-delayed' | 'v-unavailable' | 'v-unhealthy';
const MODES: readonly string[] = ['v1', 'v-faulty', 'v-delayed', 'v-unavailable', 'v-unhealthy'];

class Ratings {
  private readonly mode: Mode;
  private readonly log: Logger;
  private readonly posted = new Map<number, unknown>();
  private unavailable = false;
  private healthy = true;

  constructor(mode: Mode, log: Logger, runtime: SampleRuntime) {
    this.mode = mode;
    this.log = log;
    const flip =
      mode === 'v-unavailable' ? UNAVAILABLE_FLIP_MS : mode === 'v-unhealthy' ? UNHEALTHY_FLIP_MS : 0;
    if (flip > 0) {
      const timer = setInterval(() => {
        this.unavailable = !this.unavailable;
        if (mode === 'v-unhealthy') this.healthy = !this.healthy;
        this.log.info({ unavailable: this.unavailable, healthy: this.healthy }, 'availability flipped');
      }, flip);
      timer.unref();
      runtime.drain.signal.addEventListener('abort', () => clearInterval(timer));
    }
  }

  readonly handle = (req: IncomingMessage, res: ServerResponse): void => {
    logAccess(this.log, req, res);
    const path = new URL(req.url ?? '/', 'http://ratings').pathname;
    if (path === '/health' && req.method === 'GET') {
      req.resume();
      if (this.healthy) sendJson(res, 200, { status: 'Ratings is healthy' });
      else sendJson(res, 500, { status: 'Ratings is not healthy' });
      return;
    }
    if (/^\/ratings\/[0-9]*/.test(path)) {
      // Upstream: parseInt of the last segment, so `/ratings/12abc` is product 12.
      const id = Number.parseInt(path.split('/').pop() ?? '', 10);
      if (req.method === 'GET') {
        req.resume();
        if (Number.isNaN(id)) sendJson(res, 400, { error: 'please provide numeric product ID' });
        else this.get(res, id);
        return;
      }
      if (req.method === 'POST') {
        this.post(req, res, id).catch(() => sendJson(res, 500, { error: 'internal error' }));
        return;
      }
    }
    req.resume();
    sendJson(res, 404, { error: 'not found' });
  };

  private ratingsFor(id: number): unknown {
    return this.posted.get(id) ?? { id, ratings: DEFAULT_RATINGS };
  }

  private get(res: ServerResponse, id: number): void {
    const serve = () => sendJson(res, 200, this.ratingsFor(id));
    const unavailable = () => sendJson(res, 503, { error: 'Service unavailable' });
    const half = Math.random() <= 0.5;
    if (this.mode === 'v-faulty' && half) unavailable();
    else if (this.mode === 'v-delayed' && half) setTimeout(serve, DELAYED_MS);
    else if ((this.mode === 'v-unavailable' || this.mode === 'v-unhealthy') && this.unavailable)
      unavailable();
    else serve();
  }

  private async post(req: IncomingMessage, res: ServerResponse, id: number): Promise<void> {
    const body = await readBody(req, MAX_RATINGS_BODY);
    if (Number.isNaN(id)) return sendJson(res, 400, { error: 'please provide numeric product ID' });
    let ratings: unknown;
    try {
      ratings = JSON.parse(body?.toString('utf8') ?? '');
    } catch {
      return sendJson(res, 400, { error: 'please provide valid ratings JSON' });
    }
    if (this.posted.size >= MAX_POSTED && !this.posted.has(id)) {
      const oldest = this.posted.keys().next();
      if (!oldest.done) this.posted.delete(oldest.value);
    }
    this.posted.set(id, { id, ratings });
    sendJson(res, 200, this.ratingsFor(id));
  }
}

async function main(): Promise<void> {
  const env = process.env;
  const port = portFromEnv(process.argv[2] !== undefined ? { PORT: process.argv[2] } : env, 'PORT', 9080);
  const version = str(env, 'SERVICE_VERSION', 'v1');
  const runtime = startRuntime('bookinfo-ratings');
  if (!MODES.includes(version)) {
    runtime.logger.warn(
      { serviceVersion: version },
      'SERVICE_VERSION not supported; serving in-memory ratings',
    );
  }
  const mode = (MODES.includes(version) ? version : 'v1') as Mode;
  const app = new Ratings(mode, runtime.logger, runtime);
  await listen(createServer(app.handle), { name: 'http', port, host: bindAddress(env), runtime });
  runtime.logger.info({ serviceVersion: mode }, 'ratings ready');
}

runMain('bookinfo-ratings', main);
