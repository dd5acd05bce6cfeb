/**
 * The L4 benchmark's programs, each run inside a pod's network namespace with `nsenter --net=<netns path>`
 * (nsenter execs the program, so the child's pid is the program's own): iperf3 server and client, the echo
 * backend, the load generators, and the stunnel pair with its certificates. Every long-running child is
 * recorded so that `stopAll` ends exactly those processes, on success and on failure.
 */
import { type ChildProcess, execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Identity } from '../../pkg/identity/index.ts';
import { FakeCa } from '../../pkg/testing/fake-ca.ts';
import { NODE, RUN_GRACE_MS, runIn, startServer } from '../netns-procs.ts';

const HERE = dirname(fileURLToPath(import.meta.url));

export { killAllNow, stopAll } from '../netns-procs.ts';

export function startIperfServer(netns: string, port: number): Promise<ChildProcess> {
  return startServer(netns, ['iperf3', '-s', '-p', String(port)], [port], 'iperf3 -s');
}

export interface EchoPorts {
  readonly echoPort: number;
  readonly oncePort: number;
  readonly onceBytes: number;
}

export function startEcho(netns: string, cfg: EchoPorts): Promise<ChildProcess> {
  return startServer(
    netns,
    [NODE, join(HERE, 'echo.ts'), JSON.stringify(cfg)],
    [cfg.echoPort, cfg.oncePort],
    'echo backend',
  );
}

/** `iperf3 -c` one stream from a netns: Gbit/s received by the server. */
export async function iperf(
  netns: string,
  host: string,
  port: number,
  seconds: number,
  omit: number,
): Promise<number> {
  const out = await runIn(
    netns,
    ['iperf3', '-c', host, '-p', String(port), '-t', String(seconds), '-O', String(omit), '-J'],
    (seconds + omit) * 1000 + RUN_GRACE_MS,
  );
  const j = JSON.parse(out) as { end?: { sum_received?: { bits_per_second?: number } }; error?: string };
  const bps = j.end?.sum_received?.bits_per_second;
  if (bps === undefined) throw new Error(`iperf3 to ${host}:${port}: ${j.error ?? 'no result'}`);
  return bps / 1e9;
}

export interface LatencyConfig {
  readonly host: string;
  readonly port: number;
  readonly connections: number;
  readonly rate: number;
  readonly durationMs: number;
  readonly warmupMs: number;
  readonly payloadBytes: number;
}

export interface LatencyResult {
  readonly count: number;
  /** Answered requests including the warm-up. */
  readonly completed: number;
  readonly errors: number;
  readonly achievedRate: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
}

/** Fixed-rate request/response (bench/hbone/loadgen.ts) from a netns. */
export async function latency(netns: string, cfg: LatencyConfig): Promise<LatencyResult> {
  const out = await runIn(
    netns,
    [NODE, join(HERE, '..', 'hbone', 'loadgen.ts'), JSON.stringify(cfg)],
    cfg.warmupMs + cfg.durationMs + RUN_GRACE_MS,
  );
  return JSON.parse(out) as LatencyResult;
}

export interface ConnRateConfig {
  readonly host: string;
  readonly port: number;
  readonly concurrency: number;
  readonly durationMs: number;
  readonly warmupMs: number;
  readonly payloadBytes: number;
  readonly timeoutMs: number;
}

export interface ConnRateResult {
  readonly rate: number;
  readonly completed: number;
  readonly counted: number;
  readonly errors: number;
  readonly p50: number;
  readonly p99: number;
}

/** New connections per second (bench/l4/connrate.ts) from a netns. */
export async function connRate(netns: string, cfg: ConnRateConfig): Promise<ConnRateResult> {
  const out = await runIn(
    netns,
    [NODE, join(HERE, 'connrate.ts'), JSON.stringify(cfg)],
    cfg.warmupMs + cfg.durationMs + RUN_GRACE_MS,
  );
  return JSON.parse(out) as ConnRateResult;
}

// ------------------------------------------------------------------------------------------------ stunnel

interface CertFiles {
  readonly key: string;
  readonly chain: string;
  readonly root: string;
}

/**
 * Workload certificates like the mesh's: ECDSA P-256 keys, SPIFFE URI SAN leaf certificates from one CA
 * (pkg/testing FakeCa issues them as istiod does: empty subject, critical URI SAN, server+client EKU).
 */
function writeCerts(dir: string, ns: string): { client: CertFiles; server: CertFiles } {
  const ca = new FakeCa();
  const root = join(dir, 'root.pem');
  writeFileSync(root, ca.rootPem);
  const make = (sa: string): CertFiles => {
    const id: Identity = { trustDomain: 'cluster.local', namespace: ns, serviceAccount: sa };
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const key = join(dir, `${sa}.key`);
    const chain = join(dir, `${sa}.pem`);
    writeFileSync(key, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
    writeFileSync(chain, ca.sign(id, publicKey));
    return { key, chain, root };
  };
  return { client: make('client'), server: make('server') };
}

/** One tunnelled port: the client half listens on 127.0.0.1:`local` in the client pod; the server half
 * listens on `remote` in the server pod and connects to 127.0.0.1:`target` there. */
export interface StunnelRoute {
  readonly name: string;
  readonly local: number;
  readonly remote: number;
  readonly target: number;
}

export interface StunnelPair {
  readonly client: ChildProcess;
  readonly server: ChildProcess;
}

/**
 * The stunnel pair: server half in the server pod's netns, client half in the client pod's, TLS 1.3 only, each
 * side verifying the other's chain (client certificate required), TCP_NODELAY both ways, errors-only logging
 * to stderr.
 */
export async function startStunnel(
  dir: string,
  namespace: string,
  client: { netns: string },
  server: { netns: string; ip: string },
  routes: readonly StunnelRoute[],
): Promise<StunnelPair> {
  const certs = writeCerts(dir, namespace);
  const common = (c: CertFiles) =>
    [
      `cert = ${c.chain}`,
      `key = ${c.key}`,
      `CAfile = ${c.root}`,
      'verifyChain = yes',
      'sslVersionMin = TLSv1.3',
      'sslVersionMax = TLSv1.3',
      'socket = l:TCP_NODELAY=1',
      'socket = r:TCP_NODELAY=1',
    ].join('\n');
  // Log to stderr only: without a syslog daemon glibc's syslog() falls back to /dev/console, a serial port
  // here, which made every logged line cost milliseconds. (TIMEOUTclose = 0 logs an error per connection.)
  const global = 'foreground = yes\nsyslog = no\npid =\ndebug = 3\n';
  const serverConf =
    global +
    routes
      .map(
        (r) =>
          `[${r.name}]\naccept = 0.0.0.0:${r.remote}\nconnect = 127.0.0.1:${r.target}\n${common(certs.server)}\nrequireCert = yes\n`,
      )
      .join('');
  const clientConf =
    global +
    routes
      .map(
        (r) =>
          `[${r.name}]\nclient = yes\naccept = 127.0.0.1:${r.local}\nconnect = ${server.ip}:${r.remote}\n${common(certs.client)}\n`,
      )
      .join('');
  const serverFile = join(dir, 'stunnel-server.conf');
  const clientFile = join(dir, 'stunnel-client.conf');
  writeFileSync(serverFile, serverConf);
  writeFileSync(clientFile, clientConf);
  const s = await startServer(
    server.netns,
    ['stunnel', serverFile],
    routes.map((r) => r.remote),
    'stunnel server',
  );
  const c = await startServer(
    client.netns,
    ['stunnel', clientFile],
    routes.map((r) => r.local),
    'stunnel client',
  );
  return { client: c, server: s };
}

export function toolVersions(): string {
  const first = (cmd: string) => {
    try {
      return execFileSync('sh', ['-c', cmd], { encoding: 'utf8' }).split('\n')[0]!.trim();
    } catch {
      return `${cmd}: missing`;
    }
  };
  return `${first('iperf3 --version')}; ${first('stunnel -version 2>&1 | grep -m1 "^stunnel"')}, running with ${first('openssl version')}`;
}
