/**
 * Bookinfo reviews (port 9080): `GET /reviews/<id>` → `{id, podname, clustername, reviews: [...]}` with two
 * reviews. v1 has no ratings; v2 and v3 (`ENABLE_RATINGS=true`) ask ratings and add
 * `rating: {stars, color}` per reviewer (`STAR_COLOR`, black by default; red for v3), or
 * `rating: {error: "Ratings service is currently unavailable"}` when ratings fails. `GET /health`.
 *
 * The ratings deadline is upstream's: 10 s with black stars (v2), 2.5 s otherwise (v3). `podname` is the
 * pod's `HOSTNAME` (Kubernetes sets it to the pod name), which productpage prints as the routing oracle.
 *
 * Env: PORT (9080; also the first CLI argument), BIND_ADDRESS, ENABLE_RATINGS (false), STAR_COLOR (black),
 * SERVICES_DOMAIN, RATINGS_HOSTNAME (ratings), RATINGS_SERVICE_PORT (9080), HOSTNAME, CLUSTER_NAME.
 */

import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { hostname } from 'node:os';
import { optionalStr, str } from '../../pkg/config/index.ts';
import type { Logger } from '../../pkg/telemetry/index.ts';
import { httpGet, parseJson, serviceBase } from '../lib/http-client.ts';
import {
  bindAddress,
  listen,
  logAccess,
  portFromEnv,
  runMain,
  sendJson,
  startRuntime,
} from '../lib/runtime.ts';
import { RATINGS_UNAVAILABLE, type Rating, REVIEWS, type ReviewsResponse } from './data.ts';
import { pickHeaders, REVIEWS_FORWARDED } from './headers.ts';

/** Upstream's ratings deadlines: v2 (black) waits 10 s, v3 (red) only 2.5 s. */
const RATINGS_TIMEOUT_BLACK_MS = 10_000;
const RATINGS_TIMEOUT_OTHER_MS = 2_500;

interface Config {
  readonly port: number;
  readonly host: string | null;
  readonly ratingsEnabled: boolean;
  readonly starColor: string;
  readonly ratingsUrl: string;
  readonly ratingsTimeoutMs: number;
  readonly podName: string;
  readonly clusterName: string;
}

function readConfig(env: NodeJS.ProcessEnv, argv: readonly string[]): Config {
  const domain = optionalStr(env, 'SERVICES_DOMAIN');
  const starColor = str(env, 'STAR_COLOR', 'black');
  const ratings = serviceBase(
    `${str(env, 'RATINGS_HOSTNAME', 'ratings')}${domain ? `.${domain}` : ''}`,
    portFromEnv(env, 'RATINGS_SERVICE_PORT', 9080),
  );
  return Object.freeze({
    port: portFromEnv(argv[2] !== undefined ? { PORT: argv[2] } : env, 'PORT', 9080),
    host: bindAddress(env),
    // Java's Boolean.valueOf: only "true" (any case) enables ratings.
    ratingsEnabled: (env.ENABLE_RATINGS ?? '').trim().toLowerCase() === 'true',
    starColor,
    ratingsUrl: `${ratings}/ratings`,
    ratingsTimeoutMs: starColor === 'black' ? RATINGS_TIMEOUT_BLACK_MS : RATINGS_TIMEOUT_OTHER_MS,
    podName: optionalStr(env, 'HOSTNAME') ?? optionalStr(env, 'POD_NAME') ?? hostname(),
    // Upstream prints an unset CLUSTER_NAME as "null"; productpage hides the cluster then.
    clusterName: optionalStr(env, 'CLUSTER_NAME') ?? 'null',
  });
}

/** Java `int` path parameter: anything else is a 404, as JAX-RS answers. */
export function parseJavaInt(s: string): number | null {
  if (!/^[+-]?\d+$/.test(s)) return null;
  const n = Number(s);
  return n >= -2_147_483_648 && n <= 2_147_483_647 ? n : null;
}

/** Stars per reviewer from ratings, or null when ratings failed. */
async function fetchRatings(
  cfg: Config,
  id: number,
  req: IncomingMessage,
  log: Logger,
): Promise<Record<string, unknown> | null> {
  const url = `${cfg.ratingsUrl}/${id}`;
  const out = await httpGet(url, pickHeaders(req.headers, REVIEWS_FORWARDED), cfg.ratingsTimeoutMs);
  if (!out.ok) {
    log.warn({ url, err: out.error }, 'unable to contact ratings');
    return null;
  }
  if (out.status !== 200) {
    log.warn({ url, status: out.status }, 'ratings answered an error');
    return null;
  }
  const body = parseJson(out.body);
  const ratings =
    typeof body === 'object' && body !== null ? (body as Record<string, unknown>).ratings : null;
  return typeof ratings === 'object' && ratings !== null ? (ratings as Record<string, unknown>) : {};
}

async function reviewsFor(
  cfg: Config,
  id: number,
  req: IncomingMessage,
  log: Logger,
): Promise<ReviewsResponse> {
  const stars = cfg.ratingsEnabled ? await fetchRatings(cfg, id, req, log) : null;
  const rating = (reviewer: string): Rating => {
    const n = stars?.[reviewer];
    return typeof n === 'number' ? { stars: n, color: cfg.starColor } : { error: RATINGS_UNAVAILABLE };
  };
  return {
    id: String(id),
    podname: cfg.podName,
    clustername: cfg.clusterName,
    reviews: REVIEWS.map((r) =>
      cfg.ratingsEnabled
        ? { reviewer: r.reviewer, text: r.text, rating: rating(r.reviewer) }
        : { reviewer: r.reviewer, text: r.text },
    ),
  };
}

function handler(cfg: Config, log: Logger) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    logAccess(log, req, res);
    req.resume();
    const path = new URL(req.url ?? '/', 'http://reviews').pathname;
    const get = req.method === 'GET' || req.method === 'HEAD';
    if (path === '/health' && get) {
      sendJson(res, 200, { status: 'Reviews is healthy' });
      return;
    }
    const m = /^\/reviews\/([^/]+)$/.exec(path);
    const id = m && get ? parseJavaInt(m[1] ?? '') : null;
    if (id === null) {
      sendJson(res, 404, { error: 'not found' });
      return;
    }
    reviewsFor(cfg, id, req, log).then(
      (body) => sendJson(res, 200, body),
      () => sendJson(res, 500, { error: 'internal error' }),
    );
  };
}

async function main(): Promise<void> {
  const cfg = readConfig(process.env, process.argv);
  const runtime = startRuntime('bookinfo-reviews', { pod: cfg.podName });
  await listen(createServer(handler(cfg, runtime.logger)), {
    name: 'http',
    port: cfg.port,
    host: cfg.host,
    runtime,
  });
  runtime.logger.info(
    { ratingsEnabled: cfg.ratingsEnabled, starColor: cfg.starColor, ratings: cfg.ratingsUrl },
    'reviews ready',
  );
}

runMain('bookinfo-reviews', main);
