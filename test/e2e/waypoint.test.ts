/**
 * Waypoint (L7) end to end, as a user drives it: `ambientctl lab up --demo` (mesh + Bookinfo + curl in
 * `default`), `kubectl label namespace default istio.io/dataplane-mode=ambient`, then
 * `ambientctl waypoint apply -n default --enroll-namespace --wait`, and Istio/Gateway API YAML with `kubectl apply`.
 * Scenarios C1–C11 of SCENARIOS.md, each its own test, plus the waypoint lifecycle cases of issue #9.
 *
 * Requests are made either with `curl` exec'd into the curl pod (the user's view) or, when many are needed,
 * from this process with a socket made inside the curl pod's network namespace (captured by its iptables rules
 * exactly like the app's own sockets), so 1000 requests take seconds.
 */
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import type { V1Pod } from '@kubernetes/client-node';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../lab/cluster/lab.ts';
import { connectInNetns } from '../../pkg/netns/index.ts';
import { eventually, sleep } from '../../pkg/testing/index.ts';
import { type Fetch, isReady, name, parsePrometheus, podIp, redirected, show, TestLab } from './helpers.ts';

const t = new TestLab();
const NS = 'default';
const CTL = join(REPO_ROOT, 'ctl', 'main.ts');
const RATINGS_UNAVAILABLE = 'Ratings service is currently unavailable';
const REVIEWS_ERROR = 'Error fetching product reviews!';
const DETAILS_ERROR = 'Error fetching product details!';

let curlPod: V1Pod;
let curlNetns = '';
const vips = new Map<string, string>();

/** `ambientctl <args>` against the lab's kubeconfig, as a process. */
async function ambientctl(args: readonly string[]): Promise<{ code: number; out: string }> {
  const { spawn } = await import('node:child_process');
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CTL, ...args, '--kubeconfig', t.lab.kubeconfig], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 150_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, out });
    });
  });
}

interface Res {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
  readonly ms: number;
}

/**
 * One HTTP/1.1 request from inside the curl pod's netns to `service:port` (its ClusterIP), with the Host header
 * the app would send. A new connection each time (so the capture and the waypoint see each one).
 */
async function req(
  service: string,
  port: number,
  path: string,
  headers: Record<string, string> = {},
  timeoutMs = 15_000,
): Promise<Res> {
  const vip = vips.get(service);
  if (!vip) throw new Error(`no ClusterIP known for ${service}`);
  const t0 = performance.now();
  const socket = await connectInNetns({ netns: curlNetns, host: vip, port, timeoutMs });
  return new Promise<Res>((resolve, reject) => {
    const r = httpRequest(
      {
        method: 'GET',
        path,
        headers: { host: `${service}:${port}`, connection: 'close', ...headers },
        createConnection: () => socket,
        timeout: timeoutMs,
      },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(parts).toString('utf8'),
            ms: performance.now() - t0,
          }),
        );
        res.on('error', reject);
      },
    );
    r.on('timeout', () => r.destroy(new Error(`${service}${path}: no answer in ${timeoutMs} ms`)));
    r.on('error', reject);
    r.end();
  });
}

/** `n` requests, `concurrency` at a time; returns every result (or the error text). */
async function many<T>(
  n: number,
  concurrency: number,
  fn: (i: number) => Promise<T>,
): Promise<(T | string)[]> {
  const out: (T | string)[] = new Array(n);
  let next = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= n) return;
      try {
        out[i] = await fn(i);
      } catch (err) {
        out[i] = (err as Error).message;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return out;
}

const ok = (r: Res | string): r is Res => typeof r !== 'string';

/** The reviews version that answered (`podname` reviews-vN-…). */
function reviewsVersion(r: Res): string {
  const pod = String((JSON.parse(r.body) as { podname?: string }).podname);
  return /^reviews-(v\d)-/.exec(pod)?.[1] ?? `?${pod}`;
}

function count<T extends string>(xs: readonly T[]): Record<string, number> {
  const c: Record<string, number> = {};
  for (const x of xs) c[x] = (c[x] ?? 0) + 1;
  return c;
}

const curl = (url: string, maxSec = 10): Promise<Fetch> => t.curl(NS, name(curlPod), url, maxSec);

async function waypointPods(): Promise<V1Pod[]> {
  return t.pods(NS, 'gateway.networking.k8s.io/gateway-name=waypoint');
}

/** Sum of `istio_requests_total{reporter="waypoint"}` (optionally for one destination service name). */
async function waypointRequests(service?: string, code?: string): Promise<number> {
  let sum = 0;
  for (const w of await waypointPods()) {
    if (!isReady(w)) continue;
    const r = await fetchIn(await t.netns(NS, name(w)), podIp(w), 15020, '/metrics');
    for (const s of parsePrometheus(r)) {
      if (s.name !== 'istio_requests_total' || s.labels.reporter !== 'waypoint') continue;
      if (service && s.labels.destination_service_name !== service) continue;
      if (code && s.labels.response_code !== code) continue;
      sum += s.value;
    }
  }
  return sum;
}

async function fetchIn(netns: string, host: string, port: number, path: string): Promise<string> {
  const socket = await connectInNetns({ netns, host, port, timeoutMs: 5000 });
  return new Promise((resolve, reject) => {
    const r = httpRequest(
      { path, createConnection: () => socket, headers: { connection: 'close' } },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          body += d;
        });
        res.on('end', () => resolve(body));
      },
    );
    r.on('error', reject);
    r.end();
  });
}

function vs(vsName: string, spec: object): object {
  return { apiVersion: 'networking.istio.io/v1', kind: 'VirtualService', metadata: { name: vsName }, spec };
}

function dr(drName: string, spec: object): object {
  return { apiVersion: 'networking.istio.io/v1', kind: 'DestinationRule', metadata: { name: drName }, spec };
}

const REVIEWS_SUBSETS = dr('reviews', {
  host: 'reviews',
  subsets: ['v1', 'v2', 'v3'].map((v) => ({ name: v, labels: { version: v } })),
});

/** Removes every L7 object the tests make, then waits for the default (all versions) routing again. */
async function reset(): Promise<void> {
  await t.kubectl([
    'delete',
    'virtualservices,destinationrules,httproutes,authorizationpolicies,requestauthentications',
    '--all',
    '-n',
    NS,
    '--wait=true',
  ]);
  await eventually(
    async () => {
      const rs = (await many(30, 5, () => req('reviews', 9080, '/reviews/0'))).filter(ok);
      const v = new Set(rs.map(reviewsVersion));
      if (v.size !== 3) throw new Error(`versions ${[...v].join(',')}`);
    },
    { timeoutMs: 30_000, intervalMs: 500, what: 'default routing to all reviews versions' },
  );
}

/** Waits until `check` holds for a fresh batch (config propagation istiod → waypoint). */
function settle(what: string, check: () => Promise<void>, timeoutMs = 30_000): Promise<void> {
  return eventually(check, { timeoutMs, intervalMs: 500, what });
}

/** Calls reviews every ~20 ms (new connection each) while `during` runs, then 2 s more; returns the failures. */
async function underLoad(during: () => Promise<void>): Promise<{ errors: string[]; done: number }> {
  let stop = false;
  const errors: string[] = [];
  let done = 0;
  const load = (async () => {
    for (let i = 0; i < 3000 && !stop; i++) {
      try {
        const r = await req('reviews', 9080, '/reviews/0');
        if (r.status !== 200) errors.push(`${new Date().toISOString()} HTTP ${r.status}`);
      } catch (err) {
        errors.push(`${new Date().toISOString()} ${(err as Error).message}`);
      }
      done++;
      await sleep(20);
    }
  })();
  try {
    await sleep(1000);
    await during();
    await sleep(2000);
  } finally {
    stop = true;
    await load;
  }
  return { errors, done };
}

describe('waypoint (L7)', () => {
  beforeAll(async () => {
    await t.up({ demo: true });
    await t.kubectl(['label', 'namespace', NS, 'istio.io/dataplane-mode=ambient', '--overwrite']);
    await eventually(
      async () => {
        const missing = (await t.pods(NS)).filter((p) => !redirected(p));
        if (missing.length) throw new Error(`not captured: ${missing.map(name).join(', ')}`);
      },
      { timeoutMs: 30_000, intervalMs: 300, what: 'Bookinfo captured' },
    );
    curlPod = await t.onePod(NS, 'app=curl');
    curlNetns = await t.netns(NS, name(curlPod));
    for (const s of ['productpage', 'reviews', 'ratings', 'details']) {
      const svc = await t.getJson<{ spec: { clusterIP: string } }>(['get', 'service', s, '-n', NS]);
      vips.set(s, svc.spec.clusterIP);
    }
    const applied = await ambientctl(['waypoint', 'apply', '-n', NS, '--enroll-namespace', '--wait']);
    expect(applied.code, applied.out).toBe(0);
    expect(applied.out).toContain('waypoint default/waypoint applied');
    // Traffic now goes through the waypoint: its request counter moves.
    await eventually(
      async () => {
        const before = await waypointRequests('productpage');
        const f = await curl('http://productpage:9080/productpage');
        expect(f.status, show(f)).toBe(200);
        expect(await waypointRequests('productpage')).toBeGreaterThan(before);
      },
      { timeoutMs: 60_000, intervalMs: 1000, what: 'productpage through the waypoint' },
    );
  }, 300_000);

  afterAll(async () => {
    await t.down();
  }, 120_000);

  // Every test starts from default routing: no L7 object left by the previous one, pass or fail.
  afterEach(async () => {
    await reset();
  }, 120_000);

  it('C1: a path allow-list on productpage: /productpage 200, / 404', async () => {
    await t.apply(
      NS,
      vs('productpage', {
        hosts: ['productpage'],
        http: [
          {
            match: [
              { uri: { exact: '/productpage' } },
              { uri: { exact: '/login' } },
              { uri: { exact: '/logout' } },
              { uri: { prefix: '/static' } },
              { uri: { prefix: '/api/v1/products' } },
            ],
            route: [{ destination: { host: 'productpage', port: { number: 9080 } } }],
          },
        ],
      }),
    );
    await settle('GET / → 404', async () => {
      expect((await req('productpage', 9080, '/')).status).toBe(404);
    });
    const page = await curl('http://productpage:9080/productpage');
    expect(page.status, show(page)).toBe(200);
    expect((await req('productpage', 9080, '/api/v1/products')).status).toBe(200);
    expect((await req('productpage', 9080, '/health')).status).toBe(404);
  });

  it('C2: subsets by version: all to v1 never has stars, all to v2 always black stars; same with HTTPRoute', async () => {
    await t.apply(
      NS,
      REVIEWS_SUBSETS,
      vs('reviews', {
        hosts: ['reviews'],
        http: [{ route: [{ destination: { host: 'reviews', subset: 'v1' } }] }],
      }),
    );
    await settle('reviews → v1 only', async () => {
      const rs = (await many(20, 5, () => req('reviews', 9080, '/reviews/0'))).filter(ok);
      expect(rs.map(reviewsVersion)).toEqual(Array(20).fill('v1'));
    });
    for (let i = 0; i < 5; i++) {
      const f = await curl('http://productpage:9080/productpage');
      expect(f.status, show(f)).toBe(200);
      expect(f.body).not.toContain('glyphicon-star');
    }
    await t.apply(
      NS,
      vs('reviews', {
        hosts: ['reviews'],
        http: [{ route: [{ destination: { host: 'reviews', subset: 'v2' } }] }],
      }),
    );
    await settle('reviews → v2 only', async () => {
      const rs = (await many(20, 5, () => req('reviews', 9080, '/reviews/0'))).filter(ok);
      expect(rs.map(reviewsVersion)).toEqual(Array(20).fill('v2'));
    });
    for (let i = 0; i < 5; i++) {
      const f = await curl('http://productpage:9080/productpage');
      expect(f.body).toContain('<font color="black">');
      expect(f.body).not.toContain('<font color="red">');
    }
    await reset();

    // Gateway API: per-version Services and an HTTPRoute with a Service parent (GAMMA).
    await t.apply(
      NS,
      ...['v1', 'v2', 'v3'].map((v) => ({
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: `reviews-${v}` },
        spec: { selector: { app: 'reviews', version: v }, ports: [{ name: 'http', port: 9080 }] },
      })),
      {
        apiVersion: 'gateway.networking.k8s.io/v1',
        kind: 'HTTPRoute',
        metadata: { name: 'reviews' },
        spec: {
          parentRefs: [{ group: '', kind: 'Service', name: 'reviews', port: 9080 }],
          rules: [{ backendRefs: [{ name: 'reviews-v1', port: 9080 }] }],
        },
      },
    );
    await settle('HTTPRoute reviews → reviews-v1', async () => {
      const rs = (await many(20, 5, () => req('reviews', 9080, '/reviews/0'))).filter(ok);
      expect(rs.map(reviewsVersion)).toEqual(Array(20).fill('v1'));
    });
    const route = await t.getJson<{
      status?: { parents?: { conditions?: { type: string; status: string }[] }[] };
    }>(['get', 'httproute', 'reviews', '-n', NS]);
    const conds = route.status?.parents?.[0]?.conditions ?? [];
    expect(conds.find((c) => c.type === 'Accepted')?.status).toBe('True');
    expect(conds.find((c) => c.type === 'ResolvedRefs')?.status).toBe('True');
  });

  it('C3: weights 15/25/60, 90/10, 50/50, blue-green over 1000 requests each within tolerance', async () => {
    await t.apply(NS, REVIEWS_SUBSETS);
    const cases: [number, number, number][] = [
      [15, 25, 60],
      [90, 10, 0],
      [50, 50, 0],
      [100, 0, 0],
      [0, 0, 100],
    ];
    for (const w of cases) {
      const route = ['v1', 'v2', 'v3']
        .map((v, i) => ({ destination: { host: 'reviews', subset: v }, weight: w[i] ?? 0 }))
        .filter((r) => r.weight > 0);
      await t.apply(NS, vs('reviews', { hosts: ['reviews'], http: [{ route }] }));
      const n = 1000;
      let c: Record<string, number> = {};
      await settle(
        `weights ${w.join('/')}`,
        async () => {
          const rs = await many(n, 20, () => req('reviews', 9080, '/reviews/0'));
          const good = rs.filter(ok);
          expect(good.length, String(rs.find((r) => !ok(r)))).toBe(n);
          c = count(good.map(reviewsVersion));
          ['v1', 'v2', 'v3'].forEach((v, i) => {
            const p = w[i]! / 100;
            const sigma = Math.sqrt(n * p * (1 - p));
            expect(
              Math.abs((c[v] ?? 0) - n * p),
              `${v}: ${JSON.stringify(c)} for ${w.join('/')}`,
            ).toBeLessThanOrEqual(Math.max(4.5 * sigma, 0));
          });
        },
        60_000,
      );
      console.log(`C3: ${w.join('/')} → ${JSON.stringify(c)}`);
    }
  });

  it('C4: header match: end-user quentin → v3, user-agent .*Mobile.* → v3, others v2', async () => {
    await t.apply(
      NS,
      REVIEWS_SUBSETS,
      vs('reviews', {
        hosts: ['reviews'],
        http: [
          {
            match: [{ headers: { 'end-user': { exact: 'quentin' } } }],
            route: [{ destination: { host: 'reviews', subset: 'v3' } }],
          },
          {
            match: [{ headers: { 'user-agent': { regex: '.*Mobile.*' } } }],
            route: [{ destination: { host: 'reviews', subset: 'v3' } }],
          },
          { route: [{ destination: { host: 'reviews', subset: 'v2' } }] },
        ],
      }),
    );
    await settle('header routing', async () => {
      const q = (
        await many(10, 5, () => req('reviews', 9080, '/reviews/0', { 'end-user': 'quentin' }))
      ).filter(ok);
      expect(q.map(reviewsVersion)).toEqual(Array(10).fill('v3'));
    });
    const mobile = (
      await many(10, 5, () =>
        req('reviews', 9080, '/reviews/0', { 'user-agent': 'Mozilla/5.0 (iPhone) Mobile/15E148' }),
      )
    ).filter(ok);
    expect(mobile.map(reviewsVersion)).toEqual(Array(10).fill('v3'));
    const others = (
      await many(20, 5, () =>
        req('reviews', 9080, '/reviews/0', { 'end-user': 'jason', 'user-agent': 'curl/8' }),
      )
    ).filter(ok);
    expect(others.map(reviewsVersion)).toEqual(Array(20).fill('v2'));
  });

  it('C5: mirror: the caller sees v2 only while v3 receives a copy of every request', async () => {
    await t.apply(
      NS,
      REVIEWS_SUBSETS,
      vs('reviews', {
        hosts: ['reviews'],
        http: [
          {
            route: [{ destination: { host: 'reviews', subset: 'v2' } }],
            mirror: { host: 'reviews', subset: 'v3' },
            mirrorPercentage: { value: 100 },
          },
        ],
      }),
    );
    await settle('reviews → v2', async () => {
      const rs = (await many(10, 5, () => req('reviews', 9080, '/reviews/0'))).filter(ok);
      expect(rs.map(reviewsVersion)).toEqual(Array(10).fill('v2'));
    });
    const v3 = await t.onePod(NS, 'app=reviews,version=v3');
    const lines = () =>
      t
        .podLog(v3)
        .split('\n')
        .filter((l) => l.includes('/reviews/7')).length;
    const before = lines();
    const rs = (await many(20, 4, () => req('reviews', 9080, '/reviews/7'))).filter(ok);
    expect(rs.map(reviewsVersion)).toEqual(Array(20).fill('v2'));
    await eventually(async () => expect(lines() - before).toBe(20), {
      timeoutMs: 10_000,
      intervalMs: 250,
      what: 'reviews-v3 got 20 mirrored requests',
    });
  });

  it('C6: fault abort 403 on 30% of ratings requests; only for end-user testing-user when matched', async () => {
    await t.apply(
      NS,
      vs('ratings', {
        hosts: ['ratings'],
        http: [
          {
            fault: { abort: { httpStatus: 403, percentage: { value: 30 } } },
            route: [{ destination: { host: 'ratings' } }],
          },
        ],
      }),
    );
    const n = 400;
    let aborted = 0;
    await settle('~30% aborted', async () => {
      const rs = (await many(n, 10, () => req('ratings', 9080, '/ratings/0'))).filter(ok);
      expect(rs.length).toBe(n);
      aborted = rs.filter((r) => r.status === 403).length;
      expect(rs.every((r) => r.status === 200 || r.status === 403)).toBe(true);
      const sigma = Math.sqrt(n * 0.3 * 0.7);
      expect(Math.abs(aborted - n * 0.3)).toBeLessThanOrEqual(4.5 * sigma);
    });
    console.log(`C6: ${aborted}/${n} aborted`);
    // Pages: some show ratings unavailable, none break.
    const pages = await many(20, 4, () => req('productpage', 9080, '/productpage'));
    expect(pages.filter(ok).every((p) => p.status === 200)).toBe(true);
    expect(
      pages
        .filter(ok)
        .some((p) => p.body.includes(RATINGS_UNAVAILABLE) || !p.body.includes('glyphicon-star')),
    ).toBe(true);
    // Only for a user: 100% for testing-user, 0% for others.
    await t.apply(
      NS,
      vs('ratings', {
        hosts: ['ratings'],
        http: [
          {
            match: [{ headers: { 'end-user': { exact: 'testing-user' } } }],
            fault: { abort: { httpStatus: 403, percentage: { value: 100 } } },
            route: [{ destination: { host: 'ratings' } }],
          },
          { route: [{ destination: { host: 'ratings' } }] },
        ],
      }),
    );
    await settle('abort only testing-user', async () => {
      const user = (
        await many(10, 5, () => req('ratings', 9080, '/ratings/0', { 'end-user': 'testing-user' }))
      ).filter(ok);
      expect(user.map((r) => r.status)).toEqual(Array(10).fill(403));
      const other = (await many(20, 5, () => req('ratings', 9080, '/ratings/0'))).filter(ok);
      expect(other.map((r) => r.status)).toEqual(Array(20).fill(200));
    });
  });

  it('C7: a 7 s delay on details at 100% → productpage answers in ~3 s (its own timeout); 2 s delay → ~2 s', async () => {
    await t.apply(
      NS,
      vs('details', {
        hosts: ['details'],
        http: [
          {
            fault: { delay: { fixedDelay: '7s', percentage: { value: 100 } } },
            route: [{ destination: { host: 'details' } }],
          },
        ],
      }),
    );
    await settle('details delayed 7 s', async () => {
      const p = await req('productpage', 9080, '/productpage');
      expect(p.status).toBe(200);
      expect(p.body).toContain(DETAILS_ERROR);
      // productpage gives up on details after its own 3 s deadline, long before 7 s.
      expect(p.ms).toBeGreaterThan(2_800);
      expect(p.ms).toBeLessThan(6_000);
    });
    await t.apply(
      NS,
      vs('details', {
        hosts: ['details'],
        http: [
          {
            fault: { delay: { fixedDelay: '2s', percentage: { value: 100 } } },
            route: [{ destination: { host: 'details' } }],
          },
        ],
      }),
    );
    await settle('details delayed 2 s', async () => {
      const p = await req('productpage', 9080, '/productpage');
      expect(p.status).toBe(200);
      expect(p.body).not.toContain(DETAILS_ERROR);
      expect(p.ms).toBeGreaterThan(1_900);
      expect(p.ms).toBeLessThan(2_900);
    });
  });

  it('C8: route timeout 1 s on reviews with a 2 s ratings delay → reviews unavailable in ~1 s; retries mask a failing backend', async () => {
    await t.apply(
      NS,
      REVIEWS_SUBSETS,
      vs('reviews', {
        hosts: ['reviews'],
        http: [{ route: [{ destination: { host: 'reviews', subset: 'v2' } }], timeout: '1s' }],
      }),
      vs('ratings', {
        hosts: ['ratings'],
        http: [
          {
            fault: { delay: { fixedDelay: '2s', percentage: { value: 100 } } },
            route: [{ destination: { host: 'ratings' } }],
          },
        ],
      }),
    );
    await settle('reviews times out at 1 s', async () => {
      const r = await req('reviews', 9080, '/reviews/0');
      expect(r.status).toBe(504);
      expect(r.ms).toBeGreaterThan(900);
      expect(r.ms).toBeLessThan(1_800);
      const p = await req('productpage', 9080, '/productpage');
      expect(p.status).toBe(200);
      expect(p.body).toContain(REVIEWS_ERROR);
      expect(p.ms).toBeLessThan(2_500);
    });
    await reset();

    // A backend failing 1 request in 3: one of three `flaky` endpoints always answers 503.
    await t.apply(
      NS,
      ...['good-1', 'good-2', 'bad'].map((v) => ({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: `flaky-${v}`, labels: { app: 'flaky', version: v } },
        spec: {
          terminationGracePeriodSeconds: 0,
          containers: [
            {
              name: 'http',
              image: 'curlimages/curl',
              command: [
                'python3',
                '-c',
                [
                  'import http.server',
                  'class H(http.server.BaseHTTPRequestHandler):',
                  '    def do_GET(self):',
                  `        code = ${v === 'bad' ? 503 : 200}`,
                  '        body = self.server.server_address[0].encode()',
                  '        self.send_response(code); self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)',
                  '    def log_message(self, *a): pass',
                  'http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()',
                ].join('\n'),
              ],
              readinessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 1 },
            },
          ],
        },
      })),
      {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: 'flaky' },
        spec: { selector: { app: 'flaky' }, ports: [{ name: 'http', port: 8080 }] },
      },
    );
    await t.readyPods(NS, 'app=flaky', 3);
    const svc = await t.getJson<{ spec: { clusterIP: string } }>(['get', 'service', 'flaky', '-n', NS]);
    vips.set('flaky', svc.spec.clusterIP);
    // Without retries (attempts 0) about a third fail; with attempts 3 on 5xx none does.
    await t.apply(
      NS,
      vs('flaky', {
        hosts: ['flaky'],
        http: [{ route: [{ destination: { host: 'flaky' } }], retries: { attempts: 0 } }],
      }),
    );
    await settle('a share of flaky requests fail without retries', async () => {
      const rs = (await many(60, 6, () => req('flaky', 8080, '/'))).filter(ok);
      const failed = rs.filter((r) => r.status === 503).length;
      expect(failed).toBeGreaterThan(5);
    });
    await t.apply(
      NS,
      vs('flaky', {
        hosts: ['flaky'],
        http: [{ route: [{ destination: { host: 'flaky' } }], retries: { attempts: 3, retryOn: '5xx' } }],
      }),
    );
    await settle('retries mask the failing endpoint', async () => {
      const rs = await many(90, 6, () => req('flaky', 8080, '/'));
      expect(rs.filter(ok).map((r) => r.status)).toEqual(Array(90).fill(200));
    });
    await t.kubectl(['delete', 'pod,service', '-l', 'app=flaky', '-n', NS, '--wait=false']);
    await t.kubectl(['delete', 'service', 'flaky', '-n', NS, '--ignore-not-found']);
  });

  it('C9: circuit breaker on productpage: 1 client all 200, 4 concurrent clients see some 503', async () => {
    await t.apply(
      NS,
      dr('productpage', {
        host: 'productpage',
        trafficPolicy: {
          connectionPool: {
            tcp: { maxConnections: 1 },
            http: { http1MaxPendingRequests: 1, http2MaxRequests: 3, maxRequestsPerConnection: 1 },
          },
        },
      }),
    );
    // One client at a time: never over the limits.
    await settle('single client all 200', async () => {
      const rs = await many(20, 1, () => req('productpage', 9080, '/productpage'));
      expect(rs.filter(ok).map((r) => r.status)).toEqual(Array(20).fill(200));
    });
    let overflow = 0;
    await settle('some 503 with 4 concurrent clients', async () => {
      const rs = (await many(80, 4, () => req('productpage', 9080, '/productpage'))).filter(ok);
      overflow = rs.filter((r) => r.status === 503).length;
      expect(rs.every((r) => r.status === 200 || r.status === 503)).toBe(true);
      expect(overflow).toBeGreaterThan(0);
      expect(overflow).toBeLessThan(80);
    });
    console.log(`C9: ${overflow}/80 overflowed`);
    // The 503s are the waypoint's circuit breaker (response flag UO), not a failing backend.
    const [w] = await waypointPods();
    const samples = parsePrometheus(await fetchIn(await t.netns(NS, name(w!)), podIp(w!), 15020, '/metrics'));
    const overflowed = samples
      .filter(
        (x) =>
          x.name === 'istio_requests_total' &&
          x.labels.destination_service_name === 'productpage' &&
          x.labels.response_code === '503',
      )
      .map((x) => x.labels.response_flags);
    expect(overflowed.length).toBeGreaterThan(0);
    expect(new Set(overflowed)).toEqual(new Set(['UO']));
  });

  it('C10: L7 authorization targeting the waypoint: the page works, ratings → details is 403 RBAC: access denied', async () => {
    const targetRefs = [{ kind: 'Gateway', group: 'gateway.networking.k8s.io', name: 'waypoint' }];
    const allow = (apName: string, rules: object[]) => ({
      apiVersion: 'security.istio.io/v1',
      kind: 'AuthorizationPolicy',
      metadata: { name: apName },
      spec: { targetRefs, action: 'ALLOW', rules },
    });
    const sa = (s: string) => `cluster.local/ns/${NS}/sa/${s}`;
    await t.apply(
      NS,
      allow('allow-productpage', [
        {
          to: [
            {
              operation: {
                methods: ['GET'],
                paths: ['/productpage', '/static/*', '/logout', '/api/v1/products'],
              },
            },
          ],
        },
        { to: [{ operation: { methods: ['POST'], paths: ['/login'] } }] },
      ]),
      allow('allow-details', [
        {
          from: [{ source: { principals: [sa('bookinfo-productpage')] } }],
          to: [{ operation: { methods: ['GET'], paths: ['/details/*'] } }],
        },
      ]),
      allow('allow-reviews', [
        {
          from: [{ source: { principals: [sa('bookinfo-productpage')] } }],
          to: [{ operation: { methods: ['GET'] } }],
        },
      ]),
      allow('allow-ratings', [
        {
          from: [{ source: { principals: [sa('bookinfo-reviews')] } }],
          to: [{ operation: { methods: ['GET'] } }],
        },
      ]),
    );
    const ratingsPod = await t.onePod(NS, 'app=ratings');
    await settle('ratings → details denied at the waypoint', async () => {
      const f = await t.curl(NS, name(ratingsPod), 'http://details:9080/details/0');
      expect(f.status, show(f)).toBe(403);
      expect(f.body).toBe('RBAC: access denied');
    });
    for (let i = 0; i < 5; i++) {
      const p = await curl('http://productpage:9080/productpage');
      expect(p.status, show(p)).toBe(200);
      expect(p.body).not.toContain(DETAILS_ERROR);
      expect(p.body).not.toContain(REVIEWS_ERROR);
      // reviews v2/v3 reach ratings (reviews' principal is allowed there): never the ratings error.
      expect(p.body).not.toContain(RATINGS_UNAVAILABLE);
    }
    // Not on the allow-list: GET /.
    expect((await req('productpage', 9080, '/')).status).toBe(403);
  });

  it('C11: JWT: no token 403, valid token 200, corrupted token 401 with www-authenticate invalid_token', async () => {
    const { generateKeyPair, exportJWK, SignJWT } = await import('jose');
    const { privateKey, publicKey } = await generateKeyPair('RS256', { extractable: true });
    const jwk = { ...(await exportJWK(publicKey)), kid: 'test-1', alg: 'RS256', use: 'sig' };
    const issuer = 'testing@secure.istio.io';
    const token = await new SignJWT({ groups: ['group1'] })
      .setProtectedHeader({ alg: 'RS256', kid: 'test-1' })
      .setIssuer(issuer)
      .setSubject(issuer)
      .setIssuedAt()
      .setExpirationTime('1h')
      .sign(privateKey);
    const targetRefs = [{ kind: 'Service', group: '', name: 'productpage' }];
    await t.apply(
      NS,
      {
        apiVersion: 'security.istio.io/v1',
        kind: 'RequestAuthentication',
        metadata: { name: 'jwt-productpage' },
        spec: { targetRefs, jwtRules: [{ issuer, jwks: JSON.stringify({ keys: [jwk] }) }] },
      },
      {
        apiVersion: 'security.istio.io/v1',
        kind: 'AuthorizationPolicy',
        metadata: { name: 'require-jwt' },
        spec: {
          targetRefs,
          action: 'ALLOW',
          rules: [{ when: [{ key: 'request.auth.claims[iss]', values: [issuer] }] }],
        },
      },
    );
    await settle('no token → 403', async () => {
      const r = await req('productpage', 9080, '/productpage');
      expect(r.status).toBe(403);
      expect(r.body).toBe('RBAC: access denied');
    });
    const good = await req('productpage', 9080, '/productpage', { authorization: `Bearer ${token}` });
    expect(good.status).toBe(200);
    const [h, p, s] = token.split('.');
    const corrupted = `${h}.${p}.${s!.slice(0, -4)}AAAA`;
    const bad = await req('productpage', 9080, '/productpage', { authorization: `Bearer ${corrupted}` });
    expect(bad.status).toBe(401);
    expect(String(bad.headers['www-authenticate'])).toMatch(/^Bearer realm=".*", error="invalid_token"$/);
  });

  it('D1/D2 at the waypoint: istio_requests_total with reporter=waypoint and Istio labels, one access log line per request', async () => {
    const marker = `/reviews/${Date.now() % 100_000}`;
    const before = await waypointRequests('reviews', '200');
    for (let i = 0; i < 5; i++) expect((await req('reviews', 9080, marker)).status).toBe(200);
    expect((await req('productpage', 9080, '/no-such-page')).status).toBe(404);
    await eventually(
      async () => expect(await waypointRequests('reviews', '200')).toBeGreaterThanOrEqual(before + 5),
      {
        timeoutMs: 5_000,
        intervalMs: 200,
        what: 'waypoint counted the requests',
      },
    );
    const [w] = await waypointPods();
    const text = await fetchIn(await t.netns(NS, name(w!)), podIp(w!), 15020, '/stats/prometheus');
    const samples = parsePrometheus(text);
    const fromCurl = samples.find(
      (x) =>
        x.name === 'istio_requests_total' &&
        x.labels.reporter === 'waypoint' &&
        x.labels.destination_service_name === 'reviews' &&
        x.labels.source_workload === 'curl',
    );
    expect(fromCurl, 'a reviews sample from curl').toBeDefined();
    expect(fromCurl!.labels).toMatchObject({
      source_workload_namespace: NS,
      source_principal: 'spiffe://cluster.local/ns/default/sa/curl',
      destination_service: 'reviews.default.svc.cluster.local',
      destination_service_namespace: NS,
      destination_principal: 'spiffe://cluster.local/ns/default/sa/bookinfo-reviews',
      request_protocol: 'http',
      response_code: '200',
      connection_security_policy: 'mutual_tls',
    });
    expect(fromCurl!.labels.destination_workload).toMatch(/^reviews-v[123]$/);
    for (const m of [
      'istio_request_duration_milliseconds_bucket',
      'istio_request_bytes_bucket',
      'istio_response_bytes_bucket',
    ])
      expect(
        samples.some((x) => x.name === m && x.labels.reporter === 'waypoint'),
        m,
      ).toBe(true);
    const notFound = samples.find(
      (x) =>
        x.name === 'istio_requests_total' &&
        x.labels.destination_service_name === 'productpage' &&
        x.labels.response_code === '404',
    );
    expect(notFound?.labels.response_flags).toBe('NR');
    // One JSON access line per request, with the path and both identities.
    const lines = t
      .podLog(w!)
      .split('\n')
      .filter((l) => l.includes(marker));
    expect(lines.length).toBe(5);
    const entry = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(JSON.stringify(entry)).toContain('spiffe://cluster.local/ns/default/sa/curl');
    expect(JSON.stringify(entry)).toContain('bookinfo-reviews');
  });

  it('bad input: malformed HTTP, oversize headers, a regex bomb route, a garbage JWKS and invalid JWTs get clean errors; the waypoint stays up', async () => {
    const [wp] = await waypointPods();
    expect(wp).toBeDefined();
    const restartsBefore = (wp?.status?.containerStatuses ?? []).reduce(
      (n, c) => n + (c.restartCount ?? 0),
      0,
    );
    // Raw bytes from the curl pod through ztunnel to the waypoint (service traffic to reviews).
    const raw = async (bytes: string): Promise<string> => {
      const socket = await connectInNetns({
        netns: curlNetns,
        host: vips.get('reviews')!,
        port: 9080,
        timeoutMs: 5000,
      });
      return new Promise((resolve) => {
        let out = '';
        const done = () => resolve(out);
        socket.setEncoding('latin1');
        socket.on('data', (d: string) => {
          out += d;
        });
        socket.on('end', done);
        socket.on('error', done);
        socket.setTimeout(8000, () => socket.destroy());
        socket.on('close', done);
        socket.write(bytes);
      });
    };
    expect(await raw('GET /reviews/0 HTTP/1.1\r\nHost: reviews\r\nBad Header Line\r\n\r\n')).toMatch(
      /^HTTP\/1\.1 400 /,
    );
    expect(
      await raw(`GET /reviews/0 HTTP/1.1\r\nHost: reviews\r\nx-big: ${'a'.repeat(100 * 1024)}\r\n\r\n`),
    ).toMatch(/^HTTP\/1\.1 431 /);
    // A regex bomb in a VirtualService ((a+)+$ backtracks exponentially on "aaa…!"): matched in linear time (or
    // the route is rejected); never hangs.
    await t.apply(
      NS,
      vs('reviews', {
        hosts: ['reviews'],
        http: [
          { match: [{ uri: { regex: '(a+)+$' } }], route: [{ destination: { host: 'reviews' } }] },
          { route: [{ destination: { host: 'reviews' } }] },
        ],
      }),
    );
    await sleep(1500);
    const bomb = await req('reviews', 9080, `/${'a'.repeat(5_000)}!`, {}, 10_000);
    expect(bomb.ms).toBeLessThan(5_000);
    expect([200, 404]).toContain(bomb.status);
    // A RequestAuthentication with a garbage JWKS: a token is invalid (401), no token passes to authorization.
    await t.apply(NS, {
      apiVersion: 'security.istio.io/v1',
      kind: 'RequestAuthentication',
      metadata: { name: 'garbage-jwks' },
      spec: {
        targetRefs: [{ kind: 'Service', group: '', name: 'ratings' }],
        jwtRules: [{ issuer: 'nobody', jwks: '{"keys": [{"kty": "nonsense"}]}' }],
      },
    });
    await settle('garbage JWKS: tokens rejected', async () => {
      const r = await req('ratings', 9080, '/ratings/0', { authorization: 'Bearer not.a.jwt' });
      expect(r.status).toBe(401);
    });
    expect((await req('ratings', 9080, '/ratings/0')).status).toBe(200);
    expect((await req('ratings', 9080, '/ratings/0', { authorization: 'Bearer x' })).status).toBe(401);
    // Still serving, same pod, no restart.
    expect((await req('productpage', 9080, '/productpage')).status).toBe(200);
    const [after] = await waypointPods();
    expect(name(after!)).toBe(name(wp!));
    expect((after?.status?.containerStatuses ?? []).reduce((n, c) => n + (c.restartCount ?? 0), 0)).toBe(
      restartsBefore,
    );
  });

  it('a Service-targeted policy applies only to that Service on the shared waypoint; selector policies are enforced by ztunnel, which sees the waypoint identity', async () => {
    await t.apply(NS, {
      apiVersion: 'security.istio.io/v1',
      kind: 'AuthorizationPolicy',
      metadata: { name: 'deny-ratings-get' },
      spec: {
        targetRefs: [{ kind: 'Service', group: '', name: 'ratings' }],
        action: 'DENY',
        rules: [{ to: [{ operation: { methods: ['GET'] } }] }],
      },
    });
    await settle('ratings denied, details not', async () => {
      expect((await req('ratings', 9080, '/ratings/0')).status).toBe(403);
      expect((await req('details', 9080, '/details/0')).status).toBe(200);
    });
    await reset();
    // A selector policy is not the waypoint's business: ztunnel in front of details enforces it, and it sees the
    // waypoint's identity on service traffic. ALLOW only from the waypoint: service traffic passes.
    await t.apply(NS, {
      apiVersion: 'security.istio.io/v1',
      kind: 'AuthorizationPolicy',
      metadata: { name: 'details-only-from-waypoint' },
      spec: {
        selector: { matchLabels: { app: 'details' } },
        action: 'ALLOW',
        rules: [{ from: [{ source: { principals: [`cluster.local/ns/${NS}/sa/waypoint`] } }] }],
      },
    });
    await settle(
      'details still reachable through the waypoint (ztunnel sees the waypoint identity)',
      async () => {
        expect((await req('details', 9080, '/details/0')).status).toBe(200);
      },
    );
    // Addressed to the pod IP, the request skips the (service) waypoint, so ztunnel sees curl's identity: closed.
    const details = await t.onePod(NS, 'app=details');
    await settle('details pod IP from curl closed by ztunnel', async () => {
      const f = await curl(`http://${podIp(details)}:9080/details/0`, 5);
      expect([52, 56], show(f)).toContain(f.exit);
    });
  });

  it('use-waypoint naming a missing waypoint keeps L4 working; removing the waypoint switches back to L4 without errors', async () => {
    await t.kubectl([
      'label',
      'service',
      'details',
      '-n',
      NS,
      'istio.io/use-waypoint=missing',
      '--overwrite',
    ]);
    await sleep(2000);
    const rs = await many(20, 4, () => req('details', 9080, '/details/0'));
    expect(rs.filter(ok).map((r) => r.status)).toEqual(Array(20).fill(200));
    await t.kubectl(['label', 'service', 'details', '-n', NS, 'istio.io/use-waypoint-']);

    // Remove the waypoint while a client keeps calling: every request answers 200.
    let stop = false;
    const errors: string[] = [];
    const errorTimes: string[] = [];
    let done = 0;
    const load = (async () => {
      for (let i = 0; i < 2000 && !stop; i++) {
        try {
          const r = await req('reviews', 9080, '/reviews/0');
          if (r.status !== 200) errors.push(`HTTP ${r.status}`);
        } catch (err) {
          errors.push((err as Error).message);
          errorTimes.push(new Date().toISOString());
        }
        done++;
        await sleep(20);
      }
    })();
    await sleep(1000);
    const zts = await t.ztunnels();
    const timeline: string[] = [];
    let watching = true;
    const watch = (async () => {
      let bound = true;
      while (watching) {
        const dumps = await Promise.all(
          zts.map((z) => t.ztunnelGet(z, 15000, '/config_dump').catch(() => '')),
        );
        const now = dumps.some((d) => d.includes('waypoint.default.svc'));
        if (now !== bound) timeline.push(`${new Date().toISOString()} ztunnel bound=${now}`);
        bound = now;
        await sleep(100);
      }
    })();
    timeline.push(`${new Date().toISOString()} delete`);
    const del = await ambientctl(['waypoint', 'delete', '-n', NS, 'waypoint']);
    timeline.push(`${new Date().toISOString()} deleted`);
    expect(del.code, del.out).toBe(0);
    await t.kubectl(['label', 'namespace', NS, 'istio.io/use-waypoint-']);
    await eventually(async () => expect(await waypointPods()).toEqual([]), {
      timeoutMs: 30_000,
      intervalMs: 500,
      what: 'waypoint pods gone',
    });
    await sleep(2000);
    stop = true;
    await load;
    watching = false;
    await watch;
    console.log(`waypoint removal timeline:\n${timeline.join('\n')}\nerrors at: ${errorTimes.join(', ')}`);
    if (errors.length > 0) {
      for (const z of await t.ztunnels()) {
        const lines = t
          .podLog(z)
          .split('\n')
          .filter((l) => /"level":(40|50)|"error":"/.test(l));
        console.log(`ztunnel ${name(z)} warnings:\n${lines.slice(-15).join('\n')}`);
      }
    }
    expect(errors.slice(0, 5), `${errors.length} errors in ${done} requests`).toEqual([]);
    // And L4 only now: no waypoint in the path, the page still works.
    const f = await curl('http://productpage:9080/productpage');
    expect(f.status, show(f)).toBe(200);
  });
  it('adding a waypoint at runtime moves traffic to L7 without a failed request', async () => {
    const { errors, done } = await underLoad(async () => {
      const applied = await ambientctl(['waypoint', 'apply', '-n', NS, '--enroll-namespace', '--wait']);
      expect(applied.code, applied.out).toBe(0);
      await eventually(
        async () => {
          const before = await waypointRequests('reviews');
          await req('reviews', 9080, '/reviews/0');
          expect(await waypointRequests('reviews')).toBeGreaterThan(before);
        },
        { timeoutMs: 30_000, intervalMs: 500, what: 'reviews through the new waypoint' },
      );
    });
    expect(errors.slice(0, 5), `${errors.length} errors in ${done} requests`).toEqual([]);
  });
});
