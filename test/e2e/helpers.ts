/**
 * Shared helpers of the lab end-to-end tests (not a test file: vitest only collects `*.test.ts`).
 *
 * A `TestLab` is one throw-away lab per test file, driven as a user drives it: `ambientctl lab up/down/logs` as
 * processes, the real `kubectl` with the lab's kubeconfig, `lab exec` into pods. Its prefix, root and address
 * block are its own (blocks 200–239, apart from the 100–199 the older e2e files draw from), so it can run beside
 * a demo lab or another engineer's.
 *
 * The ztunnel tests also act from the test process itself, inside a pod's network namespace: a socket made
 * there with connectInNetns (no SO_MARK) is captured by the pod's iptables rules exactly like the app's own
 * sockets, so `httpGet`/`KeepAliveHttp` are "the app" at a request rate and with a precision that exec'ing curl
 * cannot give. Sockets made in ztunnel's own netns reach its admin (15000) and metrics (15020) ports.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createPrivateKey, type X509Certificate } from 'node:crypto';
import { type ClientHttp2Session, type ClientHttp2Stream, connect as h2connect } from 'node:http2';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import type { V1Pod, V1PodList } from '@kubernetes/client-node';
import { stringify as stringifyYaml } from 'yaml';
import { Lab, REPO_ROOT } from '../../lab/cluster/lab.ts';
import { containerLogTail } from '../../lab/cluster/workloads.ts';
import { testPrefix, testRoot } from '../../lab/node/testdata/helpers.ts';
import { x509 } from '../../pkg/identity/index.ts';
import { connectInNetns } from '../../pkg/netns/index.ts';
import { eventually } from '../../pkg/testing/index.ts';

const CTL = join(REPO_ROOT, 'ctl', 'main.ts');
export const TD = 'cluster.local';
export const spiffe = (ns: string, sa: string): string => `spiffe://${TD}/ns/${ns}/sa/${sa}`;

export interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
}

// ------------------------------------------------------------------------------------------ pods

export const name = (p: V1Pod): string => String(p.metadata?.name);
export const uid = (p: V1Pod): string => String(p.metadata?.uid);
export const podIp = (p: V1Pod): string => String(p.status?.podIP);
export const nodeOf = (p: V1Pod): string => String(p.spec?.nodeName);
export const isReady = (p: V1Pod): boolean =>
  (p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
export const redirected = (p: V1Pod): boolean =>
  p.metadata?.annotations?.['ambient.istio.io/redirection'] === 'enabled';
export const restarts = (p: V1Pod): number =>
  (p.status?.containerStatuses ?? []).reduce((n, c) => n + (c.restartCount ?? 0), 0);

/** A client pod to exec `curl` into (the lab runs curlimages/curl commands from the host). */
export function sleeperPod(
  podName: string,
  opts: { node?: string; sa?: string; labels?: object } = {},
): object {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: podName, labels: { app: podName, ...opts.labels } },
    spec: {
      ...(opts.node ? { nodeName: opts.node } : {}),
      ...(opts.sa ? { serviceAccountName: opts.sa } : {}),
      terminationGracePeriodSeconds: 0,
      containers: [{ name: 'curl', image: 'curlimages/curl', command: ['/bin/sleep', 'infinity'] }],
    },
  };
}

/** The Gateway API conformance echo backend: answers JSON naming its pod; HTTP on 3000. */
export function echoContainer(): object {
  return {
    name: 'echo',
    image: 'registry.k8s.io/gateway-api/conformance/echo-basic',
    env: [
      { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      { name: 'NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
    ],
    readinessProbe: { httpGet: { path: '/health', port: 3000 }, periodSeconds: 1 },
  };
}

export function echoPod(podName: string, opts: { node?: string; sa?: string; app?: string } = {}): object {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: podName, labels: { app: opts.app ?? podName } },
    spec: {
      ...(opts.node ? { nodeName: opts.node } : {}),
      ...(opts.sa ? { serviceAccountName: opts.sa } : {}),
      terminationGracePeriodSeconds: 0,
      containers: [echoContainer()],
    },
  };
}

export function service(svcName: string, app: string, port = 80, targetPort = 3000): object {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: svcName },
    spec: { selector: { app }, ports: [{ name: 'http', port, targetPort }] },
  };
}

export function serviceAccount(saName: string): object {
  return { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: saName } };
}

// ------------------------------------------------------------------------------------------ lab

export interface Fetch {
  /** curl's exit code (0, 52/56 closed by ztunnel, 28 timeout, …). */
  readonly exit: number;
  /** HTTP status (0 when none). */
  readonly status: number;
  readonly body: string;
  readonly stderr: string;
}

export const show = (f: Fetch): string =>
  `exit ${f.exit} HTTP ${f.status} ${f.stderr.trim()} ${f.body.slice(0, 200)}`;

export class TestLab {
  readonly prefix = testPrefix();
  readonly root = testRoot();
  /** 10.<block>.0.0/16. */
  readonly block = 200 + Math.floor(Math.random() * 40);
  private labOrNull: Lab | null = null;

  get lab(): Lab {
    if (!this.labOrNull) throw new Error('the lab is not up');
    return this.labOrNull;
  }

  /** `ambientctl lab up` (mesh from deploy/profiles/ambient) as a process; throws with its output on failure. */
  async up(opts: { nodes?: number; demo?: boolean } = {}): Promise<Run> {
    const r = await this.ctl('up', [
      ...(opts.demo ? ['--demo'] : []),
      '--nodes',
      String(opts.nodes ?? 2),
      '--block',
      String(this.block),
      '--backoff-ms',
      '1000',
    ]);
    if (r.code !== 0) throw new Error(`lab up failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
    this.labOrNull = Lab.open({ prefix: this.prefix, root: this.root });
    return r;
  }

  async down(): Promise<void> {
    const r = await this.ctl('down', ['--purge']);
    if (r.code !== 0) console.error(`lab down --purge failed (${r.code}): ${r.stdout}\n${r.stderr}`);
  }

  /** `node ctl/main.ts lab <sub> --prefix … --root … <args>` as a process (Node 24 = this test's runtime). */
  ctl(sub: string, args: readonly string[] = [], tail: readonly string[] = []): Promise<Run> {
    const t0 = performance.now();
    return new Promise((resolve, reject) => {
      const child = spawn(
        process.execPath,
        [
          CTL,
          'lab',
          sub,
          '--prefix',
          this.prefix,
          '--root',
          this.root,
          ...args,
          ...(tail.length ? ['--', ...tail] : []),
        ],
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

  async kubectl(args: readonly string[], input?: string): Promise<string> {
    const r = await this.lab.kubectl(args, input === undefined ? {} : { input });
    if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  }

  async getJson<T>(args: readonly string[]): Promise<T> {
    return JSON.parse(await this.kubectl([...args, '-o', 'json'])) as T;
  }

  /** `kubectl apply -f -` of several objects as YAML documents (`kind: List` needs /openapi/v2, not served). */
  apply(ns: string, ...objects: readonly object[]): Promise<string> {
    return this.kubectl(
      ['apply', ...(ns ? ['-n', ns] : []), '-f', '-'],
      objects.map((o) => stringifyYaml(o)).join('---\n'),
    );
  }

  /** Pods not being deleted, read straight from the API (cheaper than kubectl when polling). */
  async pods(ns: string, selector?: string): Promise<V1Pod[]> {
    return (await this.allPods(ns, selector)).filter((p) => !p.metadata?.deletionTimestamp);
  }

  /** Every pod, terminating ones included. */
  async allPods(ns: string, selector?: string): Promise<V1Pod[]> {
    const api = this.lab.api();
    try {
      const q = selector ? `?labelSelector=${encodeURIComponent(selector)}` : '';
      return ((await api.get(`/api/v1/namespaces/${ns}/pods${q}`)) as unknown as V1PodList).items;
    } finally {
      api.close();
    }
  }

  async onePod(ns: string, selector: string): Promise<V1Pod> {
    const [p, ...more] = await this.pods(ns, selector);
    if (!p || more.length)
      throw new Error(`expected one pod ${ns}/${selector}, got ${more.length + (p ? 1 : 0)}`);
    return p;
  }

  /** Waits until exactly `count` pods match and all are Ready; returns them sorted by name. */
  async readyPods(ns: string, selector: string, count: number, timeoutMs = 60_000): Promise<V1Pod[]> {
    return eventually(
      async () => {
        const ps = await this.pods(ns, selector);
        if (ps.length !== count) throw new Error(`${ps.length}/${count} pods ${ns}/${selector}`);
        const notReady = ps.filter((p) => !isReady(p)).map(name);
        if (notReady.length) throw new Error(`not Ready: ${notReady.join(', ')}`);
        return ps.sort((a, b) => name(a).localeCompare(name(b)));
      },
      { timeoutMs, intervalMs: 250, what: `${count} Ready pods ${ns}/${selector}` },
    );
  }

  /** The one pod matching `selector`, once it is Ready. */
  async readyPod(ns: string, selector: string, timeoutMs = 60_000): Promise<V1Pod> {
    const [p] = await this.readyPods(ns, selector, 1, timeoutMs);
    return p as V1Pod;
  }

  /** `curl` from inside a pod (lab exec; curl is the host's): exit code, status and body. */
  async curl(ns: string, pod: string, url: string, maxSec = 5): Promise<Fetch> {
    const r = await this.lab.exec(
      ns,
      pod,
      ['curl', '-sS', '-m', String(maxSec), '-w', '\nHTTP=%{http_code}', url],
      {
        timeoutMs: (maxSec + 10) * 1000,
      },
    );
    const m = /\nHTTP=(\d+)$/.exec(r.stdout);
    return {
      exit: r.exitCode,
      status: Number(m?.[1] ?? 0),
      body: m ? r.stdout.slice(0, m.index) : r.stdout,
      stderr: r.stderr,
    };
  }

  /** A pod's current container log, read from its node's /var/log/pods (gone once the pod is removed). */
  podLog(p: V1Pod, container?: string): string {
    return containerLogTail(
      this.lab.paths,
      { namespace: String(p.metadata?.namespace), name: name(p), uid: uid(p), node: nodeOf(p) },
      container ?? String(p.spec?.containers[0]?.name),
      0,
    );
  }

  /** The network namespace of a pod, as a path the test process can open. */
  async netns(ns: string, pod: string): Promise<string> {
    return (await this.lab.execTarget(ns, pod)).netnsPath;
  }

  nodeNetns(node: string): string {
    return `/var/run/netns/${this.prefix}${node}`;
  }

  get fabricNetns(): string {
    return `/var/run/netns/${this.prefix}fabric`;
  }

  async ztunnels(): Promise<V1Pod[]> {
    return (await this.pods('istio-system', 'app=ztunnel')).filter(isReady);
  }

  async ztunnelOn(node: string): Promise<V1Pod> {
    const z = (await this.ztunnels()).filter((p) => nodeOf(p) === node);
    if (z.length !== 1)
      throw new Error(`expected one Ready ztunnel on ${node}, got ${z.map(name).join(', ')}`);
    return z[0]!;
  }

  /** GET on one of ztunnel's own ports (15000 admin on 127.0.0.1, 15020 metrics), from inside its netns. */
  async ztunnelGet(z: V1Pod, port: number, path: string): Promise<string> {
    const r = await httpGet({
      netns: await this.netns('istio-system', name(z)),
      host: '127.0.0.1',
      port,
      path,
    });
    if (r.status !== 200) throw new Error(`ztunnel ${name(z)} :${port}${path} → ${r.status} ${r.body}`);
    return r.body;
  }

  async ztunnelMetrics(z: V1Pod): Promise<Sample[]> {
    return parsePrometheus(await this.ztunnelGet(z, 15020, '/metrics'));
  }

  async configDump(z: V1Pod): Promise<ConfigDump> {
    return JSON.parse(await this.ztunnelGet(z, 15000, '/config_dump')) as ConfigDump;
  }
}

export interface ConfigDump {
  readonly certificates: {
    identity: string;
    state: string;
    certificate: { identity: string; serial: string; notBefore: string; notAfter: string } | null;
  }[];
  readonly pods: { uid: string; name: string; namespace: string; connections: number }[];
  readonly workloads: { name: string; namespace: string; addresses: string[]; protocol: string }[];
}

// ------------------------------------------------------------------------------------------ HTTP from a netns

export interface HttpResult {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

/**
 * Parses one HTTP/1.1 response at the start of `buf` (Content-Length or chunked framing); null until it is
 * complete. `eof`: the peer has closed, so a response without framing ends here.
 */
function parseResponse(buf: Buffer, eof = false): { res: HttpResult; used: number } | null {
  const end = buf.indexOf('\r\n\r\n');
  if (end === -1) return null;
  const head = buf.subarray(0, end).toString('latin1').split('\r\n');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head[0] ?? '')?.[1] ?? Number.NaN);
  if (Number.isNaN(status)) throw new Error(`not an HTTP response: ${JSON.stringify(head[0])}`);
  const headers: Record<string, string> = {};
  for (const l of head.slice(1)) {
    const i = l.indexOf(':');
    if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  const start = end + 4;
  if (headers['transfer-encoding']?.toLowerCase() === 'chunked') {
    const parts: Buffer[] = [];
    let at = start;
    for (;;) {
      const eol = buf.indexOf('\r\n', at);
      if (eol === -1) return null;
      const size = Number.parseInt(buf.subarray(at, eol).toString('latin1'), 16);
      if (Number.isNaN(size)) throw new Error('bad chunk size');
      if (buf.length < eol + 2 + size + 2) return null;
      if (size === 0) {
        const res = { status, headers, body: Buffer.concat(parts).toString('utf8') };
        return { res, used: eol + 4 };
      }
      parts.push(buf.subarray(eol + 2, eol + 2 + size));
      at = eol + 2 + size + 2;
    }
  }
  const length = Number(headers['content-length'] ?? Number.NaN);
  if (Number.isNaN(length)) {
    if (!eof) return null;
    return { res: { status, headers, body: buf.subarray(start).toString('utf8') }, used: buf.length };
  }
  if (buf.length < start + length) return null;
  return {
    res: { status, headers, body: buf.subarray(start, start + length).toString('utf8') },
    used: start + length,
  };
}

/**
 * One HTTP/1.1 GET on a new TCP connection made inside `netns` (`Connection: close`): with no SO_MARK it is
 * captured by the pod's rules like any app connection. Rejects on any transport failure or timeout.
 */
export async function httpGet(o: {
  readonly netns: string;
  readonly host: string;
  readonly port: number;
  readonly path: string;
  readonly timeoutMs?: number;
}): Promise<HttpResult> {
  const timeoutMs = o.timeoutMs ?? 5000;
  const s = await connectInNetns({ netns: o.netns, host: o.host, port: o.port, timeoutMs });
  return new Promise<HttpResult>((resolve, reject) => {
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (err: Error | null, res?: HttpResult) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      if (err) reject(err);
      else resolve(res!);
    };
    const timer = setTimeout(
      () => finish(new Error(`GET ${o.host}:${o.port}${o.path}: no answer in ${timeoutMs} ms`)),
      timeoutMs,
    );
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      try {
        const r = parseResponse(buf);
        if (r) finish(null, r.res);
      } catch (err) {
        finish(err as Error);
      }
    });
    s.on('error', (err) => finish(err));
    s.on('close', () => {
      try {
        const r = parseResponse(buf, true);
        if (r) finish(null, r.res);
      } catch (err) {
        finish(err as Error);
      }
      finish(
        new Error(`GET ${o.host}:${o.port}${o.path}: closed after ${buf.length} bytes, no complete answer`),
      );
    });
    s.write(`GET ${o.path} HTTP/1.1\r\nHost: ${o.host}\r\nConnection: close\r\n\r\n`);
  });
}

/**
 * One long-lived connection made inside `netns`, carrying HTTP/1.1 keep-alive requests one after another. It
 * records how it ended: `end` (the peer closed cleanly, FIN), `error` (reset or other error) or `local` (we
 * closed it).
 */
export class KeepAliveHttp {
  private readonly socket: Socket;
  private buf = Buffer.alloc(0);
  private waiter: { resolve: (r: HttpResult) => void; reject: (e: Error) => void } | null = null;
  /** Resolves when the connection is gone, with how it ended. */
  readonly ended: Promise<{ how: 'end' | 'error' | 'local'; error: string | null; at: number }>;
  private endedHow: 'end' | 'error' | 'local' | null = null;
  /** Requests answered on this connection. */
  answered = 0;

  private constructor(socket: Socket) {
    this.socket = socket;
    let error: string | null = null;
    this.ended = new Promise((resolve) => {
      socket.on('end', () => {
        this.endedHow ??= 'end';
      });
      socket.on('error', (e) => {
        this.endedHow ??= 'error';
        error = e.message;
      });
      socket.on('close', () => {
        const how = this.endedHow ?? 'end';
        this.waiter?.reject(new Error(`connection closed (${how}${error ? `: ${error}` : ''})`));
        this.waiter = null;
        resolve({ how, error, at: performance.now() });
      });
    });
    socket.on('data', (d: Buffer) => this.onData(d));
  }

  static async open(netns: string, host: string, port: number): Promise<KeepAliveHttp> {
    return new KeepAliveHttp(await connectInNetns({ netns, host, port, timeoutMs: 5000 }));
  }

  get open(): boolean {
    return this.endedHow === null && !this.socket.destroyed;
  }

  private onData(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    if (!this.waiter) return;
    try {
      const r = parseResponse(this.buf);
      if (!r) return;
      this.buf = this.buf.subarray(r.used);
      const w = this.waiter;
      this.waiter = null;
      this.answered++;
      w.resolve(r.res);
    } catch (err) {
      this.waiter?.reject(err as Error);
      this.waiter = null;
    }
  }

  /** Sends one GET and waits for its answer (one request at a time). */
  get(path: string, host = 'backend', timeoutMs = 5000): Promise<HttpResult> {
    if (this.waiter) return Promise.reject(new Error('one request at a time'));
    if (!this.open) return Promise.reject(new Error(`connection already ended (${this.endedHow})`));
    return new Promise<HttpResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new Error(`no answer to ${path} in ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = {
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.socket.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    });
  }

  close(): void {
    this.endedHow ??= 'local';
    this.socket.end();
  }
}

// ------------------------------------------------------------------------------------------ metrics

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

/** Prometheus text exposition → samples (comments skipped; label values unescaped enough for our labels). */
export function parsePrometheus(text: string): Sample[] {
  const out: Sample[] = [];
  for (const l of text.split('\n')) {
    if (l === '' || l.startsWith('#')) continue;
    const m = /^([^{ ]+)(?:\{(.*)\})? (\S+)/.exec(l);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const [, k, v] of String(m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[String(k)] = String(v);
    out.push({ name: String(m[1]), labels, value: Number(m[3]) });
  }
  return out;
}

/** Sum of the samples of `metric` whose labels include every pair of `match`. */
export function total(
  samples: readonly Sample[],
  metric: string,
  match: Readonly<Record<string, string>> = {},
): number {
  let sum = 0;
  for (const s of samples)
    if (s.name === metric && Object.entries(match).every(([k, v]) => s.labels[k] === v)) sum += s.value;
  return sum;
}

// ------------------------------------------------------------------------------------------ capture

export interface Packet {
  readonly src: string;
  readonly sport: number;
  readonly dst: string;
  readonly dport: number;
  readonly payload: string;
}

/** tcpdump inside a network namespace (`-i any` unless told), written to a file. */
export async function startCapture(
  netnsPath: string,
  file: string,
  opts: { iface?: string; filter?: string } = {},
): Promise<ChildProcess> {
  const child = spawn(
    'nsenter',
    [
      `--net=${netnsPath}`,
      'tcpdump',
      '-i',
      opts.iface ?? 'any',
      '-nn',
      '--immediate-mode',
      '-U',
      '-Z',
      'root',
      '-w',
      file,
      opts.filter ?? 'tcp',
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

export async function stopCapture(child: ChildProcess): Promise<void> {
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
  child.kill('SIGINT');
  await closed;
}

/** The capture as packets (addresses, ports, payload as tcpdump -A prints it). */
export async function readCapture(file: string): Promise<Packet[]> {
  const text = await new Promise<string>((resolve, reject) =>
    execFile(
      'tcpdump',
      ['-r', file, '-nn', '-A'],
      { maxBuffer: 256 * 1024 * 1024, encoding: 'latin1' },
      (err, stdout) => (err ? reject(err) : resolve(stdout)),
    ),
  );
  // `-i any` captures prefix the interface and direction: "12:00:00.000000 veth1 In  IP a.b.c.d.p > …".
  const header =
    /^\d\d:\d\d:\d\d\.\d+ (?:\S+\s+(?:In|Out|M|P|B)\s+)?IP (\d+\.\d+\.\d+\.\d+)\.(\d+) > (\d+\.\d+\.\d+\.\d+)\.(\d+): /;
  const packets: { src: string; sport: number; dst: string; dport: number; payload: string[] }[] = [];
  for (const line of text.split('\n')) {
    const m = header.exec(line);
    if (m) packets.push({ src: m[1]!, sport: Number(m[2]), dst: m[3]!, dport: Number(m[4]), payload: [] });
    else packets.at(-1)?.payload.push(line);
  }
  return packets.map((p) => ({ ...p, payload: p.payload.join('\n') }));
}

// ------------------------------------------------------------------------------------------ raw HBONE

export interface MeshRoot {
  readonly certPem: string;
  readonly keyPem: string;
}

/** The mesh's self-signed root and its key (Secret istio-system/istio-ca-secret, written by istiod's CA). */
export async function meshRoot(t: TestLab): Promise<MeshRoot> {
  const secret = await t.getJson<{ data: Record<string, string> }>([
    'get',
    'secret',
    '-n',
    'istio-system',
    'istio-ca-secret',
  ]);
  const pem = (k: string) => Buffer.from(String(secret.data[k]), 'base64').toString('utf8');
  return { certPem: pem('ca-cert.pem'), keyPem: pem('ca-key.pem') };
}

export interface Credentials {
  readonly key: string;
  readonly cert: string;
}

/** A workload certificate for SPIFFE id `id` (any trust domain) signed by `root`, shaped like istiod's. */
export function mintCertificate(root: MeshRoot, id: string): Credentials {
  const { privateKey, publicKey } = x509.generateP256();
  const rootDer = x509.pemCertificates(root.certPem)[0];
  if (!rootDer) throw new Error('no root certificate');
  const der = x509.buildCertificate(
    {
      publicKey,
      subject: [],
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 3600_000),
      isCA: false,
      keyUsage: [x509.KU.digitalSignature, x509.KU.keyEncipherment],
      extKeyUsage: [x509.OID.serverAuth, x509.OID.clientAuth],
      san: { uris: [id] },
      sanCritical: true,
    },
    x509.issuerFrom(rootDer, createPrivateKey(root.keyPem)),
  );
  return { key: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, cert: x509.certToPem(der) };
}

export interface HboneAttempt {
  /** How far it got: TLS refused/closed, or the HTTP/2 status of the request. */
  readonly outcome: 'tls-closed' | 'status';
  readonly status: number;
  readonly error: string;
  readonly tls: TLSSocket;
  /** The server's leaf certificate, once the handshake completed. */
  readonly peer: X509Certificate | null;
  /** For a 200: the tunnel. */
  readonly stream: ClientHttp2Stream | null;
  readonly session: ClientHttp2Session | null;
}

/**
 * From inside `netns`: TLS 1.3 (ALPN h2, optionally a client certificate) to `ip:15008`, the server verified
 * against `caPem` and required to present `serverId`, then HTTP/2 and one request with `headers`.
 */
export async function hboneRequest(o: {
  readonly netns: string;
  readonly ip: string;
  readonly creds: Credentials | null;
  readonly caPem: string;
  readonly serverId: string;
  readonly headers: Readonly<Record<string, string>>;
}): Promise<HboneAttempt> {
  const raw = await connectInNetns({ netns: o.netns, host: o.ip, port: 15008, timeoutMs: 5000 });
  const tls = tlsConnect({
    socket: raw,
    ca: o.caPem,
    ...(o.creds ?? {}),
    ALPNProtocols: ['h2'],
    minVersion: 'TLSv1.3',
    checkServerIdentity: (_host, cert) =>
      String(cert.subjectaltname).split(', ').includes(`URI:${o.serverId}`)
        ? undefined
        : new Error(`unexpected server identity ${cert.subjectaltname}`),
  });
  return new Promise<HboneAttempt>((resolve) => {
    let session: ClientHttp2Session | null = null;
    let peer: X509Certificate | null = null;
    let settled = false;
    const done = (a: Pick<HboneAttempt, 'outcome' | 'status' | 'error' | 'stream'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ ...a, tls, session, peer });
    };
    const closed = (error: string) => done({ outcome: 'tls-closed', status: 0, error, stream: null });
    const timer = setTimeout(() => closed('no answer in 5 s'), 5000);
    tls.on('error', (e) => closed(e.message));
    tls.on('close', () => closed('closed'));
    tls.once('secureConnect', () => {
      const raw = tls.getPeerX509Certificate();
      peer = raw ?? null;
      session = h2connect(`https://${o.ip}:15008`, { createConnection: () => tls });
      session.on('error', (e) => closed(e.message));
      const req = session.request({ ...o.headers }, { endStream: false });
      req.on('error', (e) => closed(e.message));
      req.once('response', (h) =>
        done({ outcome: 'status', status: Number(h[':status']), error: '', stream: req }),
      );
    });
  });
}

export function closeHbone(a: HboneAttempt): void {
  a.session?.destroy();
  a.tls.destroy();
}
