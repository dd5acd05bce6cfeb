/**
 * The ambient L4 data plane end to end, driven as a user drives it: `ambientctl lab up --demo` (istiod,
 * istio-cni and ztunnel from deploy/profiles/ambient, Bookinfo + curl in `default`) as a process, the real
 * `kubectl` with the lab's kubeconfig, `lab exec` into pods, `lab logs`, and tcpdump on the fabric bridge.
 * One 2-node lab for the whole file (its own prefix, root and address block, so it can run beside a demo lab).
 *
 * Extra workloads, made before the namespace is enrolled: the Gateway API `echo` backend (it logs the client
 * address of every request, which is how the app's view of the caller's IP is checked) pinned to the node curl
 * is NOT on, so curl → echo always crosses the node link; a pod labelled `istio.io/dataplane-mode=none` in
 * `default`; and a curl pod in the non-ambient namespace `outside` (the plaintext client for B1).
 *
 *   A4: enrol without restart (annotation, same pods and restartCount, Ready; HBONE on the wire, no plaintext;
 *       the app sees the caller's pod IP; opted-out pod untouched) — and, last, release without restart
 *   B1 STRICT, B4 allow-nothing, B5 principals, B6 L7 rule without waypoint, B7 DENY by service account
 *   a policy change closes a live connection; D1 metrics (Prometheus text) and D2 access logs; ztunnel restart
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import type { V1Pod, V1PodList } from '@kubernetes/client-node';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { stringify as stringifyYaml } from 'yaml';
import { Lab, REPO_ROOT } from '../../lab/cluster/lab.ts';
import { testBlock, testPrefix, testRoot } from '../../lab/node/testdata/helpers.ts';
import { connectInNetns } from '../../pkg/netns/index.ts';
import { eventually, sleep, uniqueSuffix } from '../../pkg/testing/index.ts';

const prefix = testPrefix();
const root = testRoot();
const block = testBlock();
const CTL = join(REPO_ROOT, 'ctl', 'main.ts');
const NS = 'default';
const OUTSIDE = 'outside';
const TD = 'cluster.local';
const spiffe = (ns: string, sa: string) => `spiffe://${TD}/ns/${ns}/sa/${sa}`;
const PRODUCTPAGE = 'http://productpage:9080/productpage';
const DETAILS_ERROR = 'Error fetching product details!';
const REVIEWS_ERROR = 'Error fetching product reviews!';
const BOOKINFO_APPS = ['productpage', 'details', 'reviews', 'ratings'];
/** ztunnel's denial is a closed/reset connection: curl exit 56 (recv failure) or 52 (empty reply). */
const DENIED = [52, 56];
/** Node's http server closes an idle keep-alive connection after 5 s; a margin on top. */
const BASELINE_KEEPALIVE_MS = 6_000;

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
}

/** `node ctl/main.ts lab <sub> --prefix … --root … <args>` as a process (Node 24 = this test's runtime). */
function ctl(sub: string, args: readonly string[] = [], tail: readonly string[] = []): Promise<Run> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [CTL, 'lab', sub, '--prefix', prefix, '--root', root, ...args, ...(tail.length ? ['--', ...tail] : [])],
      { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 170_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({
        code: code ?? 1,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        ms: performance.now() - t0,
      });
    });
  });
}

let lab: Lab;

async function kubectl(args: readonly string[], input?: string): Promise<string> {
  const r = await lab.kubectl(args, input === undefined ? {} : { input });
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

async function getJson<T>(args: readonly string[]): Promise<T> {
  return JSON.parse(await kubectl([...args, '-o', 'json'])) as T;
}

/** `kubectl apply -f -` of several objects as YAML documents (`kind: List` needs /openapi/v2, not served). */
function apply(ns: string, ...objects: readonly object[]): Promise<string> {
  return kubectl(['apply', '-n', ns, '-f', '-'], objects.map((o) => stringifyYaml(o)).join('---\n'));
}

async function pods(ns: string, selector?: string): Promise<V1Pod[]> {
  const list = await getJson<V1PodList>(['get', 'pods', '-n', ns, ...(selector ? ['-l', selector] : [])]);
  return list.items.filter((p) => !p.metadata?.deletionTimestamp);
}

async function onePod(ns: string, selector: string): Promise<V1Pod> {
  const [p, ...more] = await pods(ns, selector);
  if (!p || more.length)
    throw new Error(`expected one pod ${ns}/${selector}, got ${more.length + (p ? 1 : 0)}`);
  return p;
}

const name = (p: V1Pod): string => String(p.metadata?.name);
const podIp = (p: V1Pod): string => String(p.status?.podIP);
const nodeOf = (p: V1Pod): string => String(p.spec?.nodeName);
const isReady = (p: V1Pod): boolean =>
  (p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
const redirected = (p: V1Pod): boolean =>
  p.metadata?.annotations?.['ambient.istio.io/redirection'] === 'enabled';
const restarts = (p: V1Pod): number =>
  (p.status?.containerStatuses ?? []).reduce((n, c) => n + (c.restartCount ?? 0), 0);

interface Fetch {
  /** curl's exit code (0, 52/56 closed by ztunnel, 28 timeout, …). */
  readonly exit: number;
  /** HTTP status (0 when none). */
  readonly status: number;
  readonly body: string;
  readonly stderr: string;
}

/** `curl` from inside a pod (lab exec; curl is the host's): exit code, status and body. */
async function curlFrom(ns: string, pod: string, url: string, maxSec = 5): Promise<Fetch> {
  const r = await lab.exec(ns, pod, ['curl', '-sS', '-m', String(maxSec), '-w', '\nHTTP=%{http_code}', url], {
    timeoutMs: (maxSec + 10) * 1000,
  });
  const m = /\nHTTP=(\d+)$/.exec(r.stdout);
  return {
    exit: r.exitCode,
    status: Number(m?.[1] ?? 0),
    body: m ? r.stdout.slice(0, m.index) : r.stdout,
    stderr: r.stderr,
  };
}

const show = (f: Fetch): string =>
  `exit ${f.exit} HTTP ${f.status} ${f.stderr.trim()} ${f.body.slice(0, 200)}`;

/** GET http://host:port/path from inside a network namespace (ztunnel's admin port lives in its own netns). */
async function fetchInNetns(netns: string, host: string, port: number, path: string): Promise<string> {
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
        res.on('error', reject);
      },
    );
    r.on('error', reject);
    r.end();
  });
}

// Filled in by beforeAll.
let curlPod: V1Pod;
let echoPod: V1Pod;
let optedOut: V1Pod;
let outsidePod: V1Pod;
let curlName = '';

const fromCurl = (url: string, maxSec?: number) => curlFrom(NS, curlName, url, maxSec);

/** The page is served (200) and, unless told otherwise, complete: details and reviews panels. */
async function expectPage(opts: { detailsError?: boolean } = {}): Promise<string> {
  const f = await fromCurl(PRODUCTPAGE);
  expect(f.exit, show(f)).toBe(0);
  expect(f.status, show(f)).toBe(200);
  expect(f.body).toMatch(/<u>reviews-v[123]-/);
  expect(f.body).not.toContain(REVIEWS_ERROR);
  if (opts.detailsError) expect(f.body).toContain(DETAILS_ERROR);
  else {
    expect(f.body).not.toContain(DETAILS_ERROR);
    expect(f.body).toContain('Book Details');
  }
  return f.body;
}

async function expectDenied(f: Promise<Fetch>, accepted: readonly number[] = DENIED): Promise<void> {
  const r = await f;
  expect(accepted, show(r)).toContain(r.exit);
}

/**
 * A plaintext client outside the mesh denied at the destination's inbound capture: ztunnel resets the
 * connection the moment it accepts it, and when that RST lands before curl has checked its non-blocking
 * connect, curl reports it as "Couldn't connect to server" (exit 7) instead of a receive failure.
 */
const DENIED_PLAINTEXT = [7, ...DENIED];

function policy(nameOf: string, spec: object): object {
  return {
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: nameOf },
    spec,
  };
}

/** Deletes every AuthorizationPolicy and PeerAuthentication in `default`, then waits for a full page again. */
async function resetPolicies(): Promise<void> {
  await kubectl(['delete', 'authorizationpolicies,peerauthentications', '--all', '-n', NS, '--wait=true']);
  await eventually(() => expectPage(), { timeoutMs: 20_000, intervalMs: 300, what: 'productpage 200 again' });
}

/** A pod's log through `lab logs` (kubectl logs does not work in the lab). */
async function podLog(ns: string, pod: string): Promise<string> {
  const r = await ctl('logs', ['-n', ns, pod]);
  if (r.code !== 0) throw new Error(`lab logs ${ns}/${pod}: ${r.stderr}`);
  return r.stdout;
}

async function ztunnels(): Promise<V1Pod[]> {
  return (await pods('istio-system', 'app=ztunnel')).filter(isReady);
}

// ------------------------------------------------------------------------------------------ capture

interface Packet {
  readonly src: string;
  readonly sport: number;
  readonly dst: string;
  readonly dport: number;
  readonly payload: string;
}

/** tcpdump on the fabric bridge (every node-to-node packet crosses it), written to a file. */
async function startCapture(file: string): Promise<ChildProcess> {
  const child = spawn(
    'ip',
    [
      'netns',
      'exec',
      `${prefix}fabric`,
      'tcpdump',
      '-i',
      'lab0',
      '-nn',
      '--immediate-mode',
      '-U',
      '-Z',
      'root',
      '-w',
      file,
      'tcp',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let err = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tcpdump did not start: ${err}`)), 10_000);
    child.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('listening on')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('close', (code) => reject(new Error(`tcpdump exited ${code}: ${err}`)));
  });
  return child;
}

async function stopCapture(child: ChildProcess): Promise<void> {
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
  child.kill('SIGINT');
  await closed;
}

/** The capture as packets (addresses, ports, payload as tcpdump -A prints it). */
async function readCapture(file: string): Promise<Packet[]> {
  const text = await new Promise<string>((resolve, reject) =>
    execFile(
      'tcpdump',
      ['-r', file, '-nn', '-A'],
      { maxBuffer: 256 * 1024 * 1024, encoding: 'latin1' },
      (err, stdout) => (err ? reject(err) : resolve(stdout)),
    ),
  );
  const header = /^\d\d:\d\d:\d\d\.\d+ IP (\d+\.\d+\.\d+\.\d+)\.(\d+) > (\d+\.\d+\.\d+\.\d+)\.(\d+): /;
  const packets: { src: string; sport: number; dst: string; dport: number; payload: string[] }[] = [];
  for (const line of text.split('\n')) {
    const m = header.exec(line);
    if (m) packets.push({ src: m[1]!, sport: Number(m[2]), dst: m[3]!, dport: Number(m[4]), payload: [] });
    else packets.at(-1)?.payload.push(line);
  }
  return packets.map((p) => ({ ...p, payload: p.payload.join('\n') }));
}

/** The node index of a pod IP (10.B.(i+1).x), or null for anything else (nodes, fabric services). */
function podNode(ip: string): number | null {
  const m = new RegExp(`^10\\.${block}\\.(\\d+)\\.\\d+$`).exec(ip);
  const third = Number(m?.[1] ?? 0);
  return third >= 1 && third < 240 ? third - 1 : null;
}

// ------------------------------------------------------------------------------------------ lab

beforeAll(async () => {
  const up = await ctl('up', ['--demo', '--nodes', '2', '--block', String(block), '--backoff-ms', '1000']);
  if (up.code !== 0) throw new Error(`lab up failed (${up.code}):\n${up.stdout}\n${up.stderr}`);
  lab = Lab.open({ prefix, root });
  console.log(`lab up --demo (mesh + Bookinfo + curl): ${(up.ms / 1000).toFixed(1)}s`);

  curlPod = await onePod(NS, 'app=curl');
  curlName = name(curlPod);
  const otherNode = nodeOf(curlPod) === 'node-0' ? 'node-1' : 'node-0';
  const t0 = performance.now();
  await kubectl(['create', 'namespace', OUTSIDE]);
  const sleeper = (podName: string, labels: Record<string, string>, extra: object = {}) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: podName, labels },
    spec: {
      terminationGracePeriodSeconds: 0,
      containers: [{ name: 'curl', image: 'curlimages/curl', command: ['/bin/sleep', 'infinity'] }],
      ...extra,
    },
  });
  await apply(
    NS,
    {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'echo', labels: { app: 'echo' } },
      spec: {
        nodeName: otherNode,
        terminationGracePeriodSeconds: 0,
        containers: [
          {
            name: 'echo',
            image: 'registry.k8s.io/gateway-api/conformance/echo-basic',
            env: [
              { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
              { name: 'NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
            ],
            readinessProbe: { httpGet: { path: '/health', port: 3000 }, periodSeconds: 1 },
          },
        ],
      },
    },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'echo' },
      spec: { selector: { app: 'echo' }, ports: [{ name: 'http', port: 80, targetPort: 3000 }] },
    },
    sleeper('opted-out', { app: 'opted-out', 'istio.io/dataplane-mode': 'none' }),
  );
  await apply(OUTSIDE, sleeper('client', { app: 'client' }));
  await eventually(
    async () => {
      echoPod = await onePod(NS, 'app=echo');
      optedOut = await onePod(NS, 'app=opted-out');
      outsidePod = await onePod(OUTSIDE, 'app=client');
      for (const p of [echoPod, optedOut, outsidePod])
        if (!isReady(p)) throw new Error(`${name(p)} not Ready`);
      const ep = await getJson<{ subsets?: { addresses?: unknown[] }[] }>([
        'get',
        'endpoints',
        '-n',
        NS,
        'echo',
      ]);
      if (!ep.subsets?.[0]?.addresses?.length) throw new Error('no echo endpoint yet');
    },
    { timeoutMs: 60_000, intervalMs: 300, what: 'echo, opted-out and outside client Ready' },
  );
  console.log(
    `extra pods Ready in ${((performance.now() - t0) / 1000).toFixed(1)}s; curl on ${nodeOf(curlPod)}, echo on ${nodeOf(echoPod)}`,
  );
});

afterAll(async () => {
  const r = await ctl('down', ['--purge']);
  if (r.code !== 0) console.error(`lab down --purge failed (${r.code}): ${r.stdout}\n${r.stderr}`);
});

afterEach(async () => {
  if (lab) await resetPolicies();
});

describe('ambient L4 data plane', () => {
  /** Pod uid → total container restarts, before enrolment (A4 checks nothing restarted). */
  const before = new Map<string, number>();

  it('A4: labelling the namespace captures every pod without restart; HBONE on the wire; the app sees the caller IP; dataplane-mode=none is left alone', async () => {
    const all = await pods(NS);
    expect(all.filter(redirected).map(name)).toEqual([]);
    for (const p of all) before.set(String(p.metadata?.uid), restarts(p));
    const enrolled = all.filter((p) => p.metadata?.labels?.app !== 'opted-out');
    expect(enrolled).toHaveLength(8); // 6 Bookinfo + curl + echo
    // Plaintext before enrolment, as a baseline.
    await expectPage();
    const baselineAt = performance.now();

    const t0 = performance.now();
    await kubectl(['label', 'namespace', NS, 'istio.io/dataplane-mode=ambient', '--overwrite']);
    await eventually(
      async () => {
        const now = await pods(NS);
        const missing = now.filter((p) => p.metadata?.labels?.app !== 'opted-out' && !redirected(p));
        if (missing.length) throw new Error(`not annotated: ${missing.map(name).join(', ')}`);
      },
      { timeoutMs: 20_000, intervalMs: 200, what: 'every pod annotated ambient.istio.io/redirection' },
    );
    console.log(`A4: all pods captured in ${((performance.now() - t0) / 1000).toFixed(1)}s`);

    // Traffic works through the mesh (captured pods may take a moment to have their certificates).
    await eventually(() => expectPage(), {
      timeoutMs: 20_000,
      intervalMs: 300,
      what: 'productpage through ztunnel',
    });
    // Before looking at the wire, let the mesh converge: every ztunnel knows every enrolled pod as HBONE (until
    // istiod's push lands, ztunnel rightly passes traffic to a not-yet-HBONE destination through in plaintext),
    // and the apps' keep-alive connections from the plaintext baseline have been closed (Node servers close
    // idle ones after 5 s; Istio, like us, never moves an established connection into the mesh).
    const enrolledIps = (await pods(NS)).filter((p) => p.metadata?.labels?.app !== 'opted-out').map(podIp);
    await eventually(
      async () => {
        for (const z of await ztunnels()) {
          const target = await lab.execTarget('istio-system', name(z));
          const dump = JSON.parse(
            await fetchInNetns(target.netnsPath, '127.0.0.1', 15000, '/config_dump'),
          ) as { workloads: { addresses: string[]; protocol: string }[] };
          const hbone = new Set(
            dump.workloads.filter((w) => w.protocol === 'HBONE').flatMap((w) => w.addresses),
          );
          const missing = enrolledIps.filter((ip) => !hbone.has(ip));
          if (missing.length) throw new Error(`${name(z)}: not HBONE yet: ${missing.join(', ')}`);
        }
      },
      { timeoutMs: 20_000, intervalMs: 200, what: 'every ztunnel sees every enrolled pod as HBONE' },
    );
    const idle = BASELINE_KEEPALIVE_MS - (performance.now() - baselineAt);
    if (idle > 0) await sleep(idle);

    // HBONE on the node link: curl (one node) → echo (the other) and productpage → details/reviews/ratings.
    const pcap = join(root, `a4-${uniqueSuffix()}.pcap`);
    const tcpdump = await startCapture(pcap);
    const marker = `/a4-${uniqueSuffix()}`;
    let echoed: Fetch;
    try {
      for (let i = 0; i < 3; i++) await expectPage();
      echoed = await fromCurl(`http://echo${marker}`);
      await sleep(300);
    } finally {
      await stopCapture(tcpdump);
    }
    expect(echoed.status, show(echoed)).toBe(200);
    expect(JSON.parse(echoed.body).path).toBe(marker);
    const packets = await readCapture(pcap);
    // Between the workloads of `default` on different nodes (istio-system's pods talk xDS/CA on 15012, not this).
    const workloadIps = new Set((await pods(NS)).map(podIp));
    const crossNode = packets.filter((p) => {
      const a = podNode(p.src);
      const b = podNode(p.dst);
      return workloadIps.has(p.src) && workloadIps.has(p.dst) && a !== null && b !== null && a !== b;
    });
    const hbone = crossNode.filter((p) => p.dport === 15008);
    expect(hbone.some((p) => p.src === podIp(curlPod) && p.dst === podIp(echoPod))).toBe(true);
    // Nothing between pods of different nodes goes to an application port, or carries an HTTP request line.
    const appPorts = crossNode.filter(
      (p) => [9080, 3000].includes(p.dport) || [9080, 3000].includes(p.sport),
    );
    expect(appPorts.map((p) => `${p.src}:${p.sport} > ${p.dst}:${p.dport}`)).toEqual([]);
    expect(
      crossNode.filter((p) => p.dport !== 15008 && p.sport !== 15008).map((p) => `${p.dst}:${p.dport}`),
    ).toEqual([]);
    expect(crossNode.filter((p) => /GET \/|HTTP\/1\.1|productpage|Book Details/.test(p.payload))).toEqual([]);
    console.log(
      `A4: ${packets.length} packets on lab0, ${crossNode.length} pod-to-pod across nodes, all HBONE (:15008)`,
    );

    // The app sees the caller's own pod IP (ztunnel connects with the original source address).
    const echoLog = await podLog(NS, name(echoPod));
    const line = echoLog.split('\n').find((l) => l.includes(`request made to ${marker} `));
    expect(line).toBeDefined();
    expect(JSON.parse(String(line)).remote).toMatch(
      new RegExp(`^(\\[::ffff:)?${podIp(curlPod).replaceAll('.', '\\.')}\\]?:\\d+$`),
    );

    // Same pods (no re-creation), no container restarted, all Ready (probes still pass through the capture).
    for (let i = 0; i < 3; i++) {
      const now = await pods(NS);
      expect(new Set(now.map((p) => String(p.metadata?.uid)))).toEqual(new Set(before.keys()));
      for (const p of now) {
        expect(restarts(p), name(p)).toBe(before.get(String(p.metadata?.uid)));
        expect(isReady(p), `${name(p)} Ready`).toBe(true);
        expect(p.status?.containerStatuses?.every((c) => c.ready)).toBe(true);
      }
      await sleep(1000);
    }
    // The opted-out pod was never captured, and still talks plaintext to the (PERMISSIVE) mesh.
    const opt = await onePod(NS, 'app=opted-out');
    expect(redirected(opt)).toBe(false);
    const plain = await curlFrom(NS, name(opt), PRODUCTPAGE);
    expect(plain.status, show(plain)).toBe(200);
  });

  it('B1: STRICT PeerAuthentication closes a plaintext client outside the mesh; meshed clients keep working; PERMISSIVE again after delete', async () => {
    const outside = () => curlFrom(OUTSIDE, name(outsidePod), 'http://productpage.default:9080/productpage');
    const permissive = await outside();
    expect(permissive.status, show(permissive)).toBe(200);

    await apply(NS, {
      apiVersion: 'security.istio.io/v1',
      kind: 'PeerAuthentication',
      metadata: { name: 'default' },
      spec: { mtls: { mode: 'STRICT' } },
    });
    const t0 = performance.now();
    await eventually(() => expectDenied(outside(), DENIED_PLAINTEXT), {
      timeoutMs: 20_000,
      intervalMs: 300,
      what: 'outside plaintext client closed',
    });
    console.log(`B1: STRICT enforced in ${((performance.now() - t0) / 1000).toFixed(1)}s`);
    // An uncaptured pod in the namespace is plaintext too.
    await expectDenied(curlFrom(NS, name(optedOut), PRODUCTPAGE), DENIED_PLAINTEXT);
    await expectPage();
    const echoed = await fromCurl('http://echo/strict');
    expect(echoed.status, show(echoed)).toBe(200);

    await kubectl(['delete', 'peerauthentication', '-n', NS, 'default']);
    await eventually(async () => expect((await outside()).status).toBe(200), {
      timeoutMs: 20_000,
      intervalMs: 300,
      what: 'outside client accepted again (PERMISSIVE)',
    });
  });

  it('B4: allow-nothing closes every connection into Bookinfo at ztunnel; deleting it restores 200', async () => {
    await apply(NS, policy('allow-nothing', {}));
    await eventually(() => expectDenied(fromCurl(PRODUCTPAGE)), {
      timeoutMs: 20_000,
      intervalMs: 300,
      what: 'curl → productpage closed',
    });
    for (const url of [
      'http://details:9080/details/0',
      'http://reviews:9080/reviews/0',
      'http://ratings:9080/ratings/0',
    ])
      await expectDenied(fromCurl(url));
    await kubectl(['delete', 'authorizationpolicy', '-n', NS, 'allow-nothing']);
    await eventually(() => expectPage(), {
      timeoutMs: 20_000,
      intervalMs: 300,
      what: 'productpage 200 again',
    });
  });

  it('B5: ALLOW on details from the productpage principal: the page shows details, curl → details is closed', async () => {
    await apply(
      NS,
      policy('details-from-productpage', {
        selector: { matchLabels: { app: 'details' } },
        action: 'ALLOW',
        rules: [{ from: [{ source: { principals: [`${TD}/ns/default/sa/bookinfo-productpage`] } }] }],
      }),
    );
    await eventually(() => expectDenied(fromCurl('http://details:9080/details/0')), {
      timeoutMs: 20_000,
      intervalMs: 300,
      what: 'curl → details closed',
    });
    await expectPage(); // productpage → details allowed: Book Details, no error panel
    // Other services are not selected by the policy.
    const ratings = await fromCurl('http://ratings:9080/ratings/0');
    expect(ratings.status, show(ratings)).toBe(200);
  });

  it('B6: an ALLOW with an HTTP method and no waypoint denies at ztunnel; the status says a waypoint is needed', async () => {
    await apply(
      NS,
      policy('productpage-get', {
        selector: { matchLabels: { app: 'productpage' } },
        action: 'ALLOW',
        rules: [{ to: [{ operation: { methods: ['GET'] } }] }],
      }),
    );
    await eventually(() => expectDenied(fromCurl(PRODUCTPAGE)), {
      timeoutMs: 20_000,
      intervalMs: 300,
      what: 'GET productpage closed (the HTTP rule is dropped: stricter than written)',
    });
    const cond = await eventually(
      async () => {
        const ap = await getJson<{ status?: { conditions?: Record<string, unknown>[] } }>([
          'get',
          'authorizationpolicy',
          '-n',
          NS,
          'productpage-get',
        ]);
        const c = ap.status?.conditions?.find((x) => x.type === 'ZtunnelAccepted');
        if (!c) throw new Error(`no ZtunnelAccepted condition: ${JSON.stringify(ap.status)}`);
        return c;
      },
      { timeoutMs: 15_000, intervalMs: 300, what: 'ZtunnelAccepted condition' },
    );
    expect(cond).toMatchObject({ status: 'True', reason: 'UnsupportedValue', observedGeneration: 1 });
    expect(cond.message).toContain('ztunnel does not support HTTP attributes (found: methods)');
    expect(cond.message).toContain('you must use a waypoint proxy to enforce HTTP rules');
    expect(cond.message).toContain('more restrictive than requested');
    // Only productpage is selected.
    const details = await fromCurl('http://details:9080/details/0');
    expect(details.status, show(details)).toBe(200);
  });

  it('B7: DENY on details from the productpage service account: details panel fails, reviews render, curl → details works', async () => {
    await apply(
      NS,
      policy('deny-productpage-to-details', {
        selector: { matchLabels: { app: 'details' } },
        action: 'DENY',
        rules: [{ from: [{ source: { principals: [`${TD}/ns/default/sa/bookinfo-productpage`] } }] }],
      }),
    );
    await eventually(() => expectPage({ detailsError: true }), {
      timeoutMs: 20_000,
      intervalMs: 300,
      what: 'details panel shows the failure text',
    });
    const details = await fromCurl('http://details:9080/details/0');
    expect(details.status, show(details)).toBe(200);
    expect(details.body).toContain('"ISBN-10"');
    const ap = await getJson<{ status?: { conditions?: Record<string, unknown>[] } }>([
      'get',
      'authorizationpolicy',
      '-n',
      NS,
      'deny-productpage-to-details',
    ]);
    expect(ap.status?.conditions?.find((c) => c.type === 'ZtunnelAccepted')).toMatchObject({
      status: 'True',
      reason: 'Accepted',
    });
  });

  it('a policy change closes a live connection: allow-nothing ends a slow in-flight request within seconds', async () => {
    const path = `/live-${uniqueSuffix()}`;
    const t0 = performance.now();
    const live = curlFrom(NS, curlName, `http://echo${path}?delay=60s`, 80);
    let ended = 0;
    // (Handled here too, so a connection still open when the lab goes down is not an unhandled rejection.)
    live.then(
      () => {
        ended = performance.now();
      },
      () => undefined,
    );
    // The request reached the app (echo logs it before it starts the delay): the connection is established.
    await eventually(
      async () => expect(await podLog(NS, name(echoPod))).toContain(`request made to ${path}?`),
      {
        timeoutMs: 15_000,
        intervalMs: 300,
        what: 'the slow request reached echo',
      },
    );
    expect(ended).toBe(0);
    await sleep(500);
    const applied = performance.now();
    await apply(NS, policy('allow-nothing', {}));
    const r = await Promise.race([
      live,
      sleep(20_000).then(() => {
        throw new Error('the live connection was not closed within 20 s of the policy');
      }),
    ]);
    const closedAfter = (ended || performance.now()) - applied;
    console.log(
      `live connection closed ${(closedAfter / 1000).toFixed(1)}s after allow-nothing (open ${((applied - t0) / 1000).toFixed(1)}s)`,
    );
    expect(DENIED, show(r)).toContain(r.exit);
    expect(closedAfter).toBeLessThan(10_000);
  });

  it('D1/D2: ztunnel metrics (valid Prometheus text, source and destination reports, mutual_tls, principals) and one JSON access line per connection', async () => {
    const zs = await ztunnels();
    expect(zs).toHaveLength(2);
    const zOf = (node: string): V1Pod => {
      const z = zs.find((p) => nodeOf(p) === node);
      if (!z) throw new Error(`no ztunnel on ${node}`);
      return z;
    };
    const zCurl = zOf(nodeOf(curlPod));
    const zEcho = zOf(nodeOf(echoPod));
    const accessLines = async (z: V1Pod): Promise<Record<string, unknown>[]> =>
      (await podLog('istio-system', name(z)))
        .split('\n')
        .filter((l) => l.includes('"src.identity"'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    // Outbound lines carry the original destination (the echo Service VIP:80), inbound ones the pod's address.
    const toEcho = (l: Record<string, unknown>, direction: string) =>
      l.direction === direction &&
      l['dst.workload'] === name(echoPod) &&
      (direction === 'outbound' || l['dst.addr'] === `${podIp(echoPod)}:3000`) &&
      String(l['src.addr']).startsWith(`${podIp(curlPod)}:`);
    const count = async () => ({
      out: (await accessLines(zCurl)).filter((l) => toEcho(l, 'outbound')).length,
      in: (await accessLines(zEcho)).filter((l) => toEcho(l, 'inbound')).length,
    });
    const start = await count();
    for (let i = 0; i < 3; i++) expect((await fromCurl(`http://echo/d2-${i}`)).status).toBe(200);
    await expectPage();
    // One line per connection at each end (3 curl invocations = 3 connections), once they are closed.
    await eventually(async () => expect(await count()).toEqual({ out: start.out + 3, in: start.in + 3 }), {
      timeoutMs: 10_000,
      intervalMs: 300,
      what: 'three access lines per end',
    });
    const inbound = (await accessLines(zEcho)).filter((l) => toEcho(l, 'inbound')).at(-1);
    expect(inbound).toMatchObject({
      'src.identity': spiffe('default', 'curl'),
      'dst.identity': spiffe('default', 'default'),
      'src.workload': curlName,
      'dst.workload': name(echoPod),
      'src.namespace': 'default',
      'dst.namespace': 'default',
      msg: 'connection complete',
    });
    expect(inbound?.bytes_sent).toBeGreaterThan(0);
    expect(inbound?.bytes_recv).toBeGreaterThan(0);
    const outbound = (await accessLines(zCurl)).filter((l) => toEcho(l, 'outbound')).at(-1);
    expect(outbound).toMatchObject({
      'src.identity': spiffe('default', 'curl'),
      'dst.identity': spiffe('default', 'default'),
    });
    expect(outbound?.bytes_sent).toBe(inbound?.bytes_sent);
    expect(outbound?.bytes_recv).toBe(inbound?.bytes_recv);

    // Metrics from both ztunnels (admin/metrics in ztunnel's own netns; curl is the host's).
    const texts: string[] = [];
    for (const z of zs) {
      const r = await lab.exec('istio-system', name(z), [
        'curl',
        '-sS',
        '-m',
        '5',
        'http://localhost:15020/metrics',
      ]);
      expect(r.exitCode, r.stderr).toBe(0);
      texts.push(r.stdout);
    }
    // Prometheus text exposition format: comments (# HELP/# TYPE), samples `name{label="value",…} value [ts]`.
    const labelValue = '"(?:[^"\\\\\\n]|\\\\[\\\\"n])*"';
    const label = `[a-zA-Z_][a-zA-Z0-9_]*=${labelValue}`;
    const number = '(?:[-+]?(?:\\d+(?:\\.\\d*)?|\\.\\d+)(?:[eE][-+]?\\d+)?|NaN|[-+]?Inf)';
    const sample = new RegExp(
      `^[a-zA-Z_:][a-zA-Z0-9_:]*(?:\\{(?:${label}(?:,${label})*,?)?\\})? ${number}(?: -?\\d+)?$`,
    );
    const comment =
      /^# (?:HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*|TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (?:counter|gauge|histogram|summary|untyped))$/;
    const bad: string[] = [];
    const samples: { name: string; labels: Record<string, string>; value: number }[] = [];
    for (const text of texts) {
      for (const l of text.split('\n')) {
        if (l === '') continue;
        if (l.startsWith('#')) {
          if (!comment.test(l)) bad.push(l);
          continue;
        }
        if (!sample.test(l)) {
          bad.push(l);
          continue;
        }
        const m = /^([^{ ]+)(?:\{(.*)\})? (\S+)/.exec(l);
        const labels: Record<string, string> = {};
        for (const [, k, v] of String(m?.[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
          labels[String(k)] = String(v);
        samples.push({ name: String(m?.[1]), labels, value: Number(m?.[3]) });
      }
    }
    expect(bad).toEqual([]);
    const opened = samples.filter((s) => s.name === 'istio_tcp_connections_opened_total' && s.value > 0);
    for (const reporter of ['source', 'destination']) {
      for (const [dstWorkload, dstPrincipal] of [
        ['productpage-v1', spiffe('default', 'bookinfo-productpage')],
        ['echo', spiffe('default', 'default')],
      ]) {
        expect(
          opened.some(
            (s) =>
              s.labels.reporter === reporter &&
              s.labels.connection_security_policy === 'mutual_tls' &&
              s.labels.source_principal === spiffe('default', 'curl') &&
              s.labels.source_workload === 'curl' &&
              s.labels.destination_workload === dstWorkload &&
              s.labels.destination_principal === dstPrincipal,
          ),
          `${reporter} curl → ${dstWorkload}`,
        ).toBe(true);
      }
    }
    // productpage's own calls, reported by its ztunnel as source (mTLS, productpage's identity).
    expect(
      opened.some(
        (s) =>
          s.labels.reporter === 'source' &&
          s.labels.source_principal === spiffe('default', 'bookinfo-productpage') &&
          s.labels.destination_service_name === 'details' &&
          s.labels.connection_security_policy === 'mutual_tls',
      ),
    ).toBe(true);
    for (const family of [
      'istio_tcp_connections_closed_total',
      'istio_tcp_sent_bytes_total',
      'istio_tcp_received_bytes_total',
    ])
      expect(
        samples.some((s) => s.name === family && s.value > 0),
        family,
      ).toBe(true);
  });

  it('restart: a deleted ztunnel pod is replaced by the DaemonSet and the pods of its node connect again within 15 s, for good', async () => {
    const node = nodeOf(curlPod);
    const [old] = (await ztunnels()).filter((z) => nodeOf(z) === node);
    expect(old).toBeDefined();
    const oldUid = String(old?.metadata?.uid);
    const t0 = performance.now();
    await kubectl(['delete', 'pod', '-n', 'istio-system', name(old as V1Pod), '--wait=false']);
    await eventually(
      async () => {
        const fresh = (await ztunnels()).find((z) => nodeOf(z) === node && z.metadata?.uid !== oldUid);
        if (!fresh) throw new Error(`no new Ready ztunnel on ${node}`);
        const echoed = await fromCurl('http://echo/after-restart', 3);
        expect(echoed.status, show(echoed)).toBe(200);
        await expectPage();
      },
      { timeoutMs: 15_000, intervalMs: 250, what: `new ztunnel on ${node} and traffic from its pods` },
    );
    console.log(
      `restart: traffic back ${((performance.now() - t0) / 1000).toFixed(1)}s after deleting ${name(old as V1Pod)}`,
    );
    // Permanently fine: every following connection succeeds, out of and into the node's pods.
    const onNode = (await pods(NS)).filter(
      (p) => nodeOf(p) === node && BOOKINFO_APPS.includes(String(p.metadata?.labels?.app)),
    );
    for (let i = 0; i < 10; i++) {
      const echoed = await fromCurl(`http://echo/steady-${i}`);
      expect(echoed.status, show(echoed)).toBe(200);
      await expectPage();
    }
    // Into the node's Bookinfo pods by pod IP from the other node (lab exec runs the host's curl in echo's pod):
    // any HTTP answer proves the inbound HBONE path through the new ztunnel.
    expect(onNode.length).toBeGreaterThan(0);
    for (const p of onNode) {
      const f = await curlFrom(NS, name(echoPod), `http://${podIp(p)}:9080/`);
      expect(f.exit, show(f)).toBe(0);
      expect(f.status, show(f)).toBeGreaterThan(0);
    }
    const now = await pods(NS);
    for (const p of now) {
      expect(restarts(p), name(p)).toBe(before.get(String(p.metadata?.uid)));
      if (p.metadata?.labels?.app !== 'opted-out') expect(redirected(p), name(p)).toBe(true);
    }
  });

  it('A4: removing the label releases every pod without restart; traffic still 200, plaintext again', async () => {
    await kubectl(['label', 'namespace', NS, 'istio.io/dataplane-mode-']);
    const t0 = performance.now();
    await eventually(
      async () => {
        const still = (await pods(NS)).filter(redirected);
        if (still.length) throw new Error(`still annotated: ${still.map(name).join(', ')}`);
      },
      { timeoutMs: 20_000, intervalMs: 200, what: 'annotation removed from every pod' },
    );
    console.log(`A4: all pods released in ${((performance.now() - t0) / 1000).toFixed(1)}s`);
    await eventually(() => expectPage(), {
      timeoutMs: 20_000,
      intervalMs: 300,
      what: 'productpage without mesh',
    });
    const now = await pods(NS);
    expect(new Set(now.map((p) => String(p.metadata?.uid)))).toEqual(new Set(before.keys()));
    for (const p of now) {
      expect(restarts(p), name(p)).toBe(before.get(String(p.metadata?.uid)));
      expect(isReady(p), `${name(p)} Ready`).toBe(true);
    }
    // Released: curl → echo crosses the node link as plaintext HTTP to the app port again.
    const pcap = join(root, `release-${uniqueSuffix()}.pcap`);
    const tcpdump = await startCapture(pcap);
    try {
      const echoed = await fromCurl('http://echo/released');
      expect(echoed.status, show(echoed)).toBe(200);
      await sleep(300);
    } finally {
      await stopCapture(tcpdump);
    }
    const packets = await readCapture(pcap);
    const plain = packets.filter((p) => p.payload.includes('GET /released'));
    expect(
      plain.map((p) => `${p.src}:${p.sport} > ${p.dst}:${p.dport}`),
      `curl ${podIp(curlPod)} → echo ${podIp(echoPod)}`,
    ).toHaveLength(1);
    expect(
      plain.some(
        (p) =>
          p.src === podIp(curlPod) &&
          p.dst === podIp(echoPod) &&
          p.dport === 3000 &&
          p.payload.includes('GET /released'),
      ),
    ).toBe(true);
  });
});
