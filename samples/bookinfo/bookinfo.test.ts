/**
 * Bookinfo end to end on loopback: the four services run as real child processes wired together through
 * upstream's env (`*_HOSTNAME=127.0.0.1`, `*_SERVICE_PORT=<port>`), and a capture server stands in for a
 * backend where the test needs to see what was sent.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type CaptureServer,
  closedPort,
  httpRequest,
  type SampleChild,
  startCapture,
  startSample,
} from '../testing/child.ts';
import { bookDetails, DETAILS_UNAVAILABLE, RATINGS_UNAVAILABLE, REVIEWS_UNAVAILABLE } from './data.ts';

const PRODUCTPAGE = 'samples/bookinfo/productpage.ts';
const DETAILS = 'samples/bookinfo/details.ts';
const REVIEWS = 'samples/bookinfo/reviews.ts';
const RATINGS = 'samples/bookinfo/ratings.ts';

const POD = {
  v1: 'reviews-v1-7f6b8d9c4b-q2x7z',
  v2: 'reviews-v2-5b667bcbf8-abcde',
  v3: 'reviews-v3-6d8c9f7b5-k9m4p',
} as const;

const children: SampleChild[] = [];
const captures: CaptureServer[] = [];

async function start(entry: string, env: Record<string, string>): Promise<SampleChild> {
  const child = await startSample(entry, { PORT: '0', ...env });
  children.push(child);
  return child;
}

function reviewsEnv(version: 'v1' | 'v2' | 'v3', ratingsPort: number): Record<string, string> {
  return {
    HOSTNAME: POD[version],
    ENABLE_RATINGS: version === 'v1' ? 'false' : 'true',
    STAR_COLOR: version === 'v3' ? 'red' : 'black',
    RATINGS_HOSTNAME: '127.0.0.1',
    RATINGS_SERVICE_PORT: String(ratingsPort),
  };
}

function productpageEnv(detailsPort: number, reviewsPort: number, ratingsPort = 9): Record<string, string> {
  return {
    DETAILS_HOSTNAME: '127.0.0.1',
    DETAILS_SERVICE_PORT: String(detailsPort),
    REVIEWS_HOSTNAME: '127.0.0.1',
    REVIEWS_SERVICE_PORT: String(reviewsPort),
    RATINGS_HOSTNAME: '127.0.0.1',
    RATINGS_SERVICE_PORT: String(ratingsPort),
  };
}

const count = (haystack: string, needle: string) => haystack.split(needle).length - 1;

let ratings: SampleChild;
let details: SampleChild;
const reviews = new Map<string, SampleChild>();
const pages = new Map<string, SampleChild>();

beforeAll(async () => {
  [ratings, details] = await Promise.all([start(RATINGS, {}), start(DETAILS, {})]);
  await Promise.all(
    (['v1', 'v2', 'v3'] as const).map(async (v) => {
      const r = await start(REVIEWS, reviewsEnv(v, ratings.port()));
      reviews.set(v, r);
      pages.set(v, await start(PRODUCTPAGE, productpageEnv(details.port(), r.port(), ratings.port())));
    }),
  );
});

afterAll(async () => {
  await Promise.all([...children.map((c) => c.stop()), ...captures.map((c) => c.close())]);
});

function page(version: string): number {
  const p = pages.get(version);
  if (!p) throw new Error(`no productpage for ${version}`);
  return p.port();
}

describe('productpage', () => {
  it.each([
    ['v1', null],
    ['v2', 'black'],
    ['v3', 'red'],
  ] as const)('reviews %s: the book, details, reviews, pod name and %s stars', async (version, color) => {
    const res = await httpRequest(page(version), '/productpage');
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('text/html; charset=utf-8');
    const html = res.body;
    expect(html).toContain('<title>Simple Bookstore App</title>');
    expect(html).toContain('The Comedy of Errors');
    expect(html).toContain('Book Details');
    expect(html).toContain('PublisherA');
    expect(html).toContain('Book Reviews');
    expect(html).toContain('An extremely entertaining play by Shakespeare.');
    expect(html).toContain('Reviewer2');
    expect(html).toContain(`Reviews served by: <u>${POD[version]}</u>`);
    expect(html).not.toContain('Error fetching');
    if (color === null) {
      expect(html).not.toContain('glyphicon-star');
      expect(html).not.toContain('<font color=');
    } else {
      // Reviewer1: 5 stars, Reviewer2: 4 stars + 1 empty.
      expect(count(html, '<font color="')).toBe(2);
      expect(count(html, `<font color="${color}">`)).toBe(2);
      expect(count(html, 'glyphicon glyphicon-star"')).toBe(9);
      expect(count(html, 'glyphicon glyphicon-star-empty"')).toBe(1);
    }
  });

  it('serves the index, health, static files, the JSON API, and 404/405', async () => {
    const port = page('v2');
    const index = await httpRequest(port, '/');
    expect(index.status).toBe(200);
    expect(index.body).toContain('href="/productpage?u=normal"');
    expect((await httpRequest(port, '/index.html')).status).toBe(200);
    const health = await httpRequest(port, '/health');
    expect(health.body).toBe('Product page is healthy');

    const products = await httpRequest(port, '/api/v1/products');
    expect(products.headers['content-type']).toBe('application/json');
    const list = JSON.parse(products.body) as Array<{ id: number; title: string; descriptionHtml: string }>;
    expect(list).toHaveLength(1);
    expect(list[0]).toMatchObject({ id: 0, title: 'The Comedy of Errors' });

    const product = await httpRequest(port, '/api/v1/products/0');
    expect(product.status).toBe(200);
    expect(JSON.parse(product.body)).toEqual(bookDetails(0));

    const bad = await httpRequest(port, '/api/v1/products/abc');
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body)).toEqual({ error: DETAILS_UNAVAILABLE });

    const revs = await httpRequest(port, '/api/v1/products/0/reviews');
    expect(JSON.parse(revs.body)).toMatchObject({ id: '0', podname: POD.v2, clustername: 'null' });

    const rates = await httpRequest(port, '/api/v1/products/0/ratings');
    expect(JSON.parse(rates.body)).toEqual({ id: 0, ratings: { Reviewer1: 5, Reviewer2: 4 } });

    const css = await httpRequest(port, '/static/bookinfo.css');
    expect(css.status).toBe(200);
    expect(css.headers['content-type']).toBe('text/css; charset=utf-8');
    expect((await httpRequest(port, '/static/bookinfo.js')).status).toBe(200);
    expect((await httpRequest(port, '/static/../productpage.ts')).status).toBe(404);
    expect((await httpRequest(port, '/nope')).status).toBe(404);
    expect((await httpRequest(port, '/productpage', { method: 'POST' })).status).toBe(405);
    expect((await httpRequest(port, '/login')).status).toBe(405);

    const metrics = await httpRequest(port, '/metrics');
    expect(metrics.body).toContain('bookinfo_productpage_requests_total{route="/health",status="200"} 1');
  });
});

describe('details, reviews, ratings APIs', () => {
  it('details: upstream JSON, 400 for a bad id, health', async () => {
    const ok = await httpRequest(details.port(), '/details/7');
    expect(ok.status).toBe(200);
    expect(ok.headers['content-type']).toBe('application/json');
    expect(ok.body).toBe(
      '{"id":7,"author":"William Shakespeare","year":1595,"type":"paperback","pages":200,' +
        '"publisher":"PublisherA","language":"English","ISBN-10":"1234567890","ISBN-13":"123-1234567890"}',
    );
    const bad = await httpRequest(details.port(), '/details/abc');
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body)).toEqual({ error: 'please provide numeric product id' });
    expect(JSON.parse((await httpRequest(details.port(), '/health')).body)).toEqual({
      status: 'Details is healthy',
    });
  });

  it('reviews: v1 without ratings, v2/v3 with coloured stars; 404 for a bad id', async () => {
    const v1 = JSON.parse((await httpRequest(reviews.get('v1')!.port(), '/reviews/0')).body) as unknown;
    expect(v1).toEqual({
      id: '0',
      podname: POD.v1,
      clustername: 'null',
      reviews: [
        {
          reviewer: 'Reviewer1',
          text: 'An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!',
        },
        {
          reviewer: 'Reviewer2',
          text: 'Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare.',
        },
      ],
    });
    const v3 = JSON.parse((await httpRequest(reviews.get('v3')!.port(), '/reviews/0')).body) as {
      reviews: Array<{ rating: unknown }>;
    };
    expect(v3.reviews.map((r) => r.rating)).toEqual([
      { stars: 5, color: 'red' },
      { stars: 4, color: 'red' },
    ]);
    expect((await httpRequest(reviews.get('v2')!.port(), '/reviews/abc')).status).toBe(404);
    expect(JSON.parse((await httpRequest(reviews.get('v2')!.port(), '/health')).body)).toEqual({
      status: 'Reviews is healthy',
    });
  });

  it('ratings: default ratings, 400 for a bad id, POST replaces ratings', async () => {
    const port = ratings.port();
    expect(JSON.parse((await httpRequest(port, '/ratings/0')).body)).toEqual({
      id: 0,
      ratings: { Reviewer1: 5, Reviewer2: 4 },
    });
    const bad = await httpRequest(port, '/ratings/abc');
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body)).toEqual({ error: 'please provide numeric product ID' });
    const posted = await httpRequest(port, '/ratings/42', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"Reviewer1":1,"Reviewer2":2}',
    });
    expect(JSON.parse(posted.body)).toEqual({ id: 42, ratings: { Reviewer1: 1, Reviewer2: 2 } });
    expect(JSON.parse((await httpRequest(port, '/ratings/42')).body)).toEqual({
      id: 42,
      ratings: { Reviewer1: 1, Reviewer2: 2 },
    });
    expect(JSON.parse((await httpRequest(port, '/health')).body)).toEqual({ status: 'Ratings is healthy' });
  });
});

describe('header propagation', () => {
  it('login → end-user, request id and trace headers reach details and (through reviews) ratings', async () => {
    // The capture plays details and ratings; reviews v2 is real, so ratings' request shows what reviews forwards.
    const capture = await startCapture((url) =>
      url.startsWith('/details/')
        ? { status: 200, body: bookDetails(0) }
        : { status: 200, body: { id: 0, ratings: { Reviewer1: 3, Reviewer2: 2 } } },
    );
    captures.push(capture);
    const rev = await start(REVIEWS, reviewsEnv('v2', capture.port));
    const pp = await start(PRODUCTPAGE, productpageEnv(capture.port, rev.port()));

    const login = await httpRequest(pp.port(), '/login', {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        referer: 'http://bookinfo/productpage',
      },
      body: 'username=jason&passwd=x',
    });
    expect(login.status).toBe(302);
    expect(login.headers.location).toBe('http://bookinfo/productpage');
    const setCookie = login.headers['set-cookie']?.[0] ?? '';
    expect(setCookie).toMatch(/^session=[^;]+; HttpOnly; Path=\//);
    const cookie = setCookie.split(';')[0] ?? '';

    const trace = {
      'x-request-id': '6a0b4f2e-0d5c-4b8a-9e1f-0123456789ab',
      'x-b3-traceid': '80f198ee56343ba864fe8b2a57d3eff7',
      'x-b3-spanid': 'e457b5a2e4d86bd1',
      'x-b3-parentspanid': '05e3ac9a4f6e3b90',
      'x-b3-sampled': '1',
      b3: '80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1',
      traceparent: '00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01',
      tracestate: 'vendor=value',
      'x-datadog-trace-id': '1234',
      'user-agent': 'Mozilla/5.0 (iPhone) Mobile',
    };
    const res = await httpRequest(pp.port(), '/productpage', { headers: { ...trace, cookie } });
    expect(res.status).toBe(200);
    expect(res.body).toContain('jason');
    expect(res.body).toContain('sign out');
    expect(res.body).toContain(`<u>${POD.v2}</u>`);

    const toDetails = capture.requests.find((r) => r.url === '/details/0');
    const toRatings = capture.requests.find((r) => r.url === '/ratings/0');
    expect(toDetails).toBeDefined();
    expect(toRatings).toBeDefined();
    for (const seen of [toDetails!, toRatings!]) {
      expect(seen.headers['end-user']).toBe('jason');
      expect(seen.headers.cookie).toBe(cookie);
      for (const [name, value] of Object.entries(trace)) expect(seen.headers[name], name).toBe(value);
    }

    // Logging out clears the session; then no end-user is sent.
    const logout = await httpRequest(pp.port(), '/logout', { headers: { cookie } });
    expect(logout.status).toBe(302);
    expect(logout.headers['set-cookie']?.[0]).toMatch(/^session=; Expires=Thu, 01 Jan 1970/);
    capture.requests.length = 0;
    await httpRequest(pp.port(), '/productpage');
    const anonymous = capture.requests.find((r) => r.url === '/details/0');
    expect(anonymous?.headers['end-user']).toBeUndefined();
    // Without any incoming trace context productpage starts a B3 trace, as upstream's tracer does.
    expect(anonymous?.headers['x-b3-traceid']).toMatch(/^[0-9a-f]{16}$/);
    expect(anonymous?.headers['x-b3-sampled']).toBe('1');
    const ratingsSide = capture.requests.find((r) => r.url === '/ratings/0');
    expect(ratingsSide?.headers['x-b3-traceid']).toBe(anonymous?.headers['x-b3-traceid']);

    // A tampered session cookie is ignored.
    capture.requests.length = 0;
    await httpRequest(pp.port(), '/productpage', { headers: { cookie: `${cookie}x` } });
    expect(capture.requests.find((r) => r.url === '/details/0')?.headers['end-user']).toBeUndefined();
  });

  it('multipart login works too (curl -F)', async () => {
    const pp = pages.get('v1')!;
    const boundary = 'XyZ';
    const body = `--${boundary}\r\nContent-Disposition: form-data; name="username"\r\n\r\nquentin\r\n--${boundary}--\r\n`;
    const login = await httpRequest(pp.port(), '/login', {
      method: 'POST',
      headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
      body,
    });
    expect(login.status).toBe(302);
    expect(login.headers.location).toBe('/productpage');
    const cookie = (login.headers['set-cookie']?.[0] ?? '').split(';')[0] ?? '';
    const res = await httpRequest(pp.port(), '/productpage', { headers: { cookie } });
    expect(res.body).toContain('quentin');
  });
});

describe('failure panels', () => {
  it('details down → the details failure text; reviews still shown', async () => {
    const pp = await start(PRODUCTPAGE, productpageEnv(await closedPort(), reviews.get('v1')!.port()));
    const res = await httpRequest(pp.port(), '/productpage');
    expect(res.status).toBe(200);
    expect(res.body).toContain('Error fetching product details!');
    expect(res.body).toContain(DETAILS_UNAVAILABLE);
    expect(res.body).toContain(`<u>${POD.v1}</u>`);
    const api = await httpRequest(pp.port(), '/api/v1/products/0');
    expect(api.status).toBe(500);
  });

  it('reviews slower than 3 s → the reviews failure text after two 3 s attempts', async () => {
    const slow = await startCapture(() => ({ status: 200, body: {}, delayMs: 4_000 }));
    captures.push(slow);
    const pp = await start(PRODUCTPAGE, productpageEnv(details.port(), slow.port));
    const res = await httpRequest(pp.port(), '/productpage');
    expect(res.status).toBe(200);
    expect(res.body).toContain('Error fetching product reviews!');
    expect(res.body).toContain(REVIEWS_UNAVAILABLE);
    expect(res.body).toContain('Book Details');
    expect(slow.requests).toHaveLength(2);
    expect(res.elapsedMs).toBeGreaterThan(5_800);
    expect(res.elapsedMs).toBeLessThan(9_000);
  });

  it('ratings down → "Ratings service is currently unavailable" on the v2 page', async () => {
    const rev = await start(REVIEWS, reviewsEnv('v2', await closedPort()));
    const pp = await start(PRODUCTPAGE, productpageEnv(details.port(), rev.port()));
    const res = await httpRequest(pp.port(), '/productpage');
    expect(res.status).toBe(200);
    expect(count(res.body, `<p><i>${RATINGS_UNAVAILABLE}</i></p>`)).toBe(2);
    expect(res.body).not.toContain('glyphicon-star');
    expect(res.body).toContain(`<u>${POD.v2}</u>`);
  });

  it('reviews answering 503 twice → the failure panel and, on the API, the 503', async () => {
    const broken = await startCapture(() => ({ status: 503, body: { error: 'no healthy upstream' } }));
    captures.push(broken);
    const pp = await start(PRODUCTPAGE, productpageEnv(details.port(), broken.port));
    const res = await httpRequest(pp.port(), '/productpage');
    expect(res.body).toContain(REVIEWS_UNAVAILABLE);
    expect(broken.requests).toHaveLength(2);
    expect((await httpRequest(pp.port(), '/api/v1/products/0/reviews')).status).toBe(503);
  });
});

describe('termination', () => {
  it.each([PRODUCTPAGE, DETAILS, REVIEWS, RATINGS])(
    '%s exits 0 within a second of SIGTERM',
    async (entry) => {
      const child = await startSample(entry, { PORT: '0' });
      children.push(child);
      const started = performance.now();
      const code = await child.stop();
      expect(code).toBe(0);
      expect(performance.now() - started).toBeLessThan(1_000);
      expect(child.lines.some((l) => l.msg === 'drain complete')).toBe(true);
    },
  );
});
