/**
 * Bookinfo productpage (port 9080): the HTML page and the JSON API in front of details, reviews and ratings.
 *
 * Call graph and timing as upstream: details once with a 3 s deadline, reviews up to twice with 3 s each
 * (upstream's deliberate "3 s + 1 retry"), ratings (API only) once with 3 s. The page is always 200; a failed
 * backend shows its failure panel. Logging in stores the user in a signed `session` cookie; every backend call
 * then carries `end-user: <user>` plus the trace headers of `headers.ts`.
 *
 * Env: PORT (9080; also the first CLI argument, like upstream), BIND_ADDRESS, SERVICES_DOMAIN,
 * DETAILS_HOSTNAME/REVIEWS_HOSTNAME/RATINGS_HOSTNAME (details/reviews/ratings),
 * DETAILS_SERVICE_PORT/REVIEWS_SERVICE_PORT/RATINGS_SERVICE_PORT (9080), FLOOD_FACTOR (0), SESSION_SECRET.
 */
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { int, optionalStr, str } from '../../pkg/config/index.ts';
import { describeError } from '../../pkg/errors/index.ts';
import type { Logger } from '../../pkg/telemetry/index.ts';
import { httpGet, parseJson, serviceBase } from '../lib/http-client.ts';
import {
  bindAddress,
  listen,
  logAccess,
  portFromEnv,
  readBody,
  runMain,
  type SampleRuntime,
  send,
  startRuntime,
} from '../lib/runtime.ts';
import {
  DETAILS_UNAVAILABLE,
  PRODUCT_RATINGS_UNAVAILABLE,
  PRODUCTS,
  type Product,
  REVIEWS_UNAVAILABLE,
} from './data.ts';
import { b3Context, PRODUCTPAGE_FORWARDED, pickHeaders } from './headers.ts';
import { renderIndexPage, renderProductPage, type ServiceNode } from './page.ts';
import { clearSessionCookie, readCookie, SESSION_COOKIE, SessionCodec, setSessionCookie } from './session.ts';

/** Upstream's per-call deadline (`requests.get(..., timeout=3.0)`). */
export const BACKEND_TIMEOUT_MS = 3_000;
/** Upstream calls reviews twice before giving up ("3 s + 1 retry"). */
export const REVIEWS_ATTEMPTS = 2;
/** Login form bodies are tiny; anything larger is refused. */
const MAX_FORM_BYTES = 64 * 1024;
const HTML = 'text/html; charset=utf-8';
const JSON_TYPE = 'application/json';

interface Config {
  readonly port: number;
  readonly host: string | null;
  readonly detailsUrl: string;
  readonly reviewsUrl: string;
  readonly ratingsUrl: string;
  readonly floodFactor: number;
  readonly session: SessionCodec;
  readonly serviceTree: ServiceNode;
}

function readConfig(env: NodeJS.ProcessEnv, argv: readonly string[]): Config {
  const domain = optionalStr(env, 'SERVICES_DOMAIN');
  const suffix = domain ? `.${domain}` : '';
  const base = (service: string) =>
    serviceBase(
      `${str(env, `${service.toUpperCase()}_HOSTNAME`, service)}${suffix}`,
      portFromEnv(env, `${service.toUpperCase()}_SERVICE_PORT`, 9080),
    );
  const details = base('details');
  const reviews = base('reviews');
  const ratings = base('ratings');
  const argPort = argv[2];
  const port =
    argPort !== undefined ? portFromEnv({ PORT: argPort }, 'PORT', 9080) : portFromEnv(env, 'PORT', 9080);
  const detailsNode: ServiceNode = { name: details, endpoint: 'details', children: [] };
  const ratingsNode: ServiceNode = { name: ratings, endpoint: 'ratings', children: [] };
  const reviewsNode: ServiceNode = { name: reviews, endpoint: 'reviews', children: [ratingsNode] };
  return Object.freeze({
    port,
    host: bindAddress(env),
    detailsUrl: `${details}/details`,
    reviewsUrl: `${reviews}/reviews`,
    ratingsUrl: `${ratings}/ratings`,
    floodFactor: int(env, 'FLOOD_FACTOR', 0, { min: 0, max: 10_000 }),
    session: new SessionCodec(optionalStr(env, 'SESSION_SECRET')),
    // Upstream's index page shows productpage's call graph under details' address; we show our own name.
    serviceTree: { name: 'productpage', endpoint: 'productpage', children: [detailsNode, reviewsNode] },
  });
}

interface Fetched {
  readonly status: number;
  readonly body: unknown;
}

/** One backend call, mapped the way upstream maps it: 200 + JSON, else the backend's status (or 500). */
async function fetchJson(
  url: string,
  headers: Record<string, string>,
  log: Logger,
): Promise<Fetched | number> {
  const out = await httpGet(url, headers, BACKEND_TIMEOUT_MS);
  if (!out.ok) {
    log.warn({ url, err: out.error }, 'backend call failed');
    return 500;
  }
  if (out.status !== 200) {
    log.warn({ url, status: out.status }, 'backend call answered an error');
    return out.status;
  }
  const body = parseJson(out.body);
  if (body === null) {
    log.warn({ url }, 'backend answered 200 with a body that is not JSON');
    return 500;
  }
  return { status: 200, body };
}

class ProductPage {
  private readonly cfg: Config;
  private readonly log: Logger;
  private readonly statics: ReadonlyMap<string, { readonly type: string; readonly body: Buffer }>;
  /** Requests answered, by route and status, for `/metrics`. */
  private readonly counts = new Map<string, number>();

  constructor(cfg: Config, log: Logger) {
    this.cfg = cfg;
    this.log = log;
    const file = (name: string) => readFileSync(new URL(`./static/${name}`, import.meta.url));
    this.statics = new Map([
      ['/static/bookinfo.css', { type: 'text/css; charset=utf-8', body: file('bookinfo.css') }],
      ['/static/bookinfo.js', { type: 'text/javascript; charset=utf-8', body: file('bookinfo.js') }],
    ]);
  }

  readonly handle = (req: IncomingMessage, res: ServerResponse): void => {
    logAccess(this.log, req, res);
    this.route(req, res).catch((err: unknown) => {
      this.log.error({ err: describeError(err), uri: req.url }, 'request failed');
      if (!res.headersSent) send(res, 500, HTML, '<h1>Internal Server Error</h1>\n');
      else res.destroy();
    });
  };

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://productpage');
    const path = url.pathname;
    const method = req.method ?? 'GET';
    const get = method === 'GET' || method === 'HEAD';
    let route = path;
    const api = /^\/api\/v1\/products\/([^/]+)(\/reviews|\/ratings)?$/.exec(path);
    if (api) route = `/api/v1/products/<id>${api[2] ?? ''}`;
    else if (path.startsWith('/static/')) route = '/static';
    res.once('finish', () => this.count(route, res.statusCode));

    if (path === '/login') {
      if (method !== 'POST') return this.notAllowed(res, 'POST');
      return this.login(req, res, url);
    }
    if (!get && !path.startsWith('/static/')) {
      // Drain the body so a keep-alive client can reuse the connection.
      req.resume();
    }
    switch (path) {
      case '/':
      case '/index.html':
        if (!get) return this.notAllowed(res, 'GET, HEAD');
        return send(res, 200, HTML, renderIndexPage(this.cfg.serviceTree));
      case '/health':
        if (!get) return this.notAllowed(res, 'GET, HEAD');
        return send(res, 200, HTML, 'Product page is healthy');
      case '/logout':
        if (!get) return this.notAllowed(res, 'GET, HEAD');
        return this.redirectBack(req, res, clearSessionCookie());
      case '/productpage':
        if (!get) return this.notAllowed(res, 'GET, HEAD');
        return this.productPage(req, res);
      case '/api/v1/products':
        if (!get) return this.notAllowed(res, 'GET, HEAD');
        return send(res, 200, JSON_TYPE, JSON.stringify(PRODUCTS));
      case '/metrics':
        if (!get) return this.notAllowed(res, 'GET, HEAD');
        return send(res, 200, 'text/plain; version=0.0.4; charset=utf-8', this.metrics());
    }
    if (api) {
      if (!get) return this.notAllowed(res, 'GET, HEAD');
      const id = safeDecode(api[1] ?? '');
      return this.apiProduct(req, res, id, api[2] ?? '');
    }
    const file = this.statics.get(path);
    if (file && get) return send(res, 200, file.type, file.body, { 'Cache-Control': 'public, max-age=300' });
    req.resume();
    return send(
      res,
      404,
      HTML,
      '<h1>Not Found</h1>\n<p>The requested URL was not found on the server.</p>\n',
    );
  }

  private notAllowed(res: ServerResponse, allow: string): void {
    send(res, 405, HTML, '<h1>Method Not Allowed</h1>\n', { Allow: allow });
  }

  private user(req: IncomingMessage): string | null {
    const cookie = readCookie(req.headers.cookie, SESSION_COOKIE);
    return cookie === null ? null : this.cfg.session.decode(cookie);
  }

  /** The headers every backend call of this request carries. */
  private forwardHeaders(req: IncomingMessage): Record<string, string> {
    const headers = { ...b3Context(req.headers), ...pickHeaders(req.headers, PRODUCTPAGE_FORWARDED) };
    const user = this.user(req);
    if (user !== null) headers['end-user'] = user;
    return headers;
  }

  private async details(id: string, headers: Record<string, string>): Promise<Fetched> {
    const got = await fetchJson(`${this.cfg.detailsUrl}/${encodeURIComponent(id)}`, headers, this.log);
    return typeof got === 'number' ? { status: got, body: { error: DETAILS_UNAVAILABLE } } : got;
  }

  private async reviews(id: string, headers: Record<string, string>): Promise<Fetched> {
    let last = 500;
    for (let attempt = 0; attempt < REVIEWS_ATTEMPTS; attempt++) {
      const got = await fetchJson(`${this.cfg.reviewsUrl}/${encodeURIComponent(id)}`, headers, this.log);
      if (typeof got !== 'number') return got;
      last = got;
    }
    return { status: last, body: { error: REVIEWS_UNAVAILABLE } };
  }

  private async ratings(id: string, headers: Record<string, string>): Promise<Fetched> {
    const got = await fetchJson(`${this.cfg.ratingsUrl}/${encodeURIComponent(id)}`, headers, this.log);
    return typeof got === 'number' ? { status: got, body: { error: PRODUCT_RATINGS_UNAVAILABLE } } : got;
  }

  private async productPage(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const productId = 0;
    const headers = this.forwardHeaders(req);
    const product: Product | null = PRODUCTS[productId] ?? null;
    const details = await this.details(String(productId), headers);
    if (this.cfg.floodFactor > 0) {
      // productpage-v-flooding: extra reviews calls to show rate limiting; their answers are discarded.
      await Promise.allSettled(
        Array.from({ length: this.cfg.floodFactor }, () => this.reviews(String(productId), headers)),
      );
    }
    const reviews = await this.reviews(String(productId), headers);
    const html = renderProductPage({
      product,
      detailsStatus: details.status,
      details: details.body,
      reviewsStatus: reviews.status,
      reviews: reviews.body,
      user: headers['end-user'] ?? null,
    });
    send(res, 200, HTML, html);
  }

  private async apiProduct(
    req: IncomingMessage,
    res: ServerResponse,
    id: string,
    sub: string,
  ): Promise<void> {
    const headers = this.forwardHeaders(req);
    const got =
      sub === '/reviews'
        ? await this.reviews(id, headers)
        : sub === '/ratings'
          ? await this.ratings(id, headers)
          : await this.details(id, headers);
    send(res, got.status, JSON_TYPE, JSON.stringify(got.body));
  }

  private async login(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const body = await readBody(req, MAX_FORM_BYTES);
    if (body === null) return send(res, 413, HTML, '<h1>Request Entity Too Large</h1>\n');
    const user =
      formValue(req.headers['content-type'] ?? '', body, 'username') ?? url.searchParams.get('username');
    const cookie = user ? setSessionCookie(this.cfg.session.encode(user)) : clearSessionCookie();
    if (user) this.log.info({ user }, 'user logged in');
    this.redirectBack(req, res, cookie);
  }

  /** Upstream answers login/logout with a redirect to the Referer; without one we go to the product page. */
  private redirectBack(req: IncomingMessage, res: ServerResponse, cookie: string): void {
    const location = req.headers.referer ?? '/productpage';
    const body = `<p>Redirecting to <a href="${encodeURI(location)}">${encodeURI(location)}</a>.</p>\n`;
    send(res, 302, HTML, body, { Location: location, 'Set-Cookie': cookie });
  }

  private count(route: string, status: number): void {
    const key = `route="${route}",status="${status}"`;
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
  }

  private metrics(): string {
    const lines = [
      '# HELP bookinfo_productpage_requests_total Requests answered by productpage, by route and status.',
      '# TYPE bookinfo_productpage_requests_total counter',
    ];
    for (const [labels, n] of this.counts) lines.push(`bookinfo_productpage_requests_total{${labels}} ${n}`);
    return `${lines.join('\n')}\n`;
  }
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** A form field from an urlencoded or multipart body (curl `-d` and `-F` both work, as with Flask). */
export function formValue(contentType: string, body: Buffer, name: string): string | null {
  const type = contentType.toLowerCase();
  if (type.startsWith('multipart/form-data')) {
    const boundary = /boundary="?([^";]+)"?/i.exec(contentType)?.[1];
    if (!boundary) return null;
    for (const part of body.toString('utf8').split(`--${boundary}`)) {
      const sep = part.indexOf('\r\n\r\n');
      if (sep === -1) continue;
      const head = part.slice(0, sep);
      if (new RegExp(`name="${name}"`, 'i').test(head)) return part.slice(sep + 4).replace(/\r\n$/, '');
    }
    return null;
  }
  return new URLSearchParams(body.toString('utf8')).get(name);
}

async function main(): Promise<void> {
  const cfg = readConfig(process.env, process.argv);
  const runtime: SampleRuntime = startRuntime('bookinfo-productpage');
  const app = new ProductPage(cfg, runtime.logger);
  const server = createServer(app.handle);
  await listen(server, { name: 'http', port: cfg.port, host: cfg.host, runtime });
  runtime.logger.info(
    { details: cfg.detailsUrl, reviews: cfg.reviewsUrl, ratings: cfg.ratingsUrl },
    'productpage ready',
  );
}

runMain('bookinfo-productpage', main);
