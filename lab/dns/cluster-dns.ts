/**
 * ClusterDns: runs the DNS server process (main.ts) inside a lab network namespace — by default the fabric
 * namespace, on the cluster DNS address of the address plan (10.B.0.2, a second address of the fabric bridge),
 * which every node reaches on its own subnet and every pod through its node. Pods' resolv.conf point there
 * (lab/runtime writes it). The process dies with its owner (pdeathsig and stdin EOF).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { MeshError } from '../../pkg/errors/index.ts';
import type { Logger } from '../../pkg/telemetry/index.ts';
import type { LabNetwork } from '../node/network.ts';
import { StateRecorder } from '../node/state.ts';
import { tool } from '../node/sys.ts';
import type { DnsRecordSet } from './zone.ts';

const MAIN = fileURLToPath(new URL('./main.ts', import.meta.url));
const START_TIMEOUT_MS = 15_000;
const APPLY_TIMEOUT_MS = 10_000;

export interface ClusterDnsOptions {
  /** Network namespace to run in. */
  readonly netnsPath: string;
  readonly address: string;
  readonly port?: number;
  readonly domain?: string;
  readonly logger?: Logger;
  /** Records the process for cleanupLeftovers (lab root + prefix). */
  readonly state?: { readonly root: string; readonly prefix: string };
  readonly nodePath?: string;
}

export class ClusterDns {
  readonly address: string;
  readonly port: number;
  private readonly child: ChildProcess;
  private readonly logger: Logger | null;
  private readonly state: StateRecorder | null;
  private sent = 0;
  private applied = 0;
  private readonly waiters: { n: number; resolve: () => void }[] = [];
  private exited = false;

  private constructor(
    child: ChildProcess,
    address: string,
    port: number,
    logger: Logger | null,
    state: StateRecorder | null,
  ) {
    this.child = child;
    this.address = address;
    this.port = port;
    this.logger = logger;
    this.state = state;
  }

  /** Starts the server; resolves once it is bound (rejects with MESH_ERR_LAB_DNS_START otherwise). */
  static async start(opts: ClusterDnsOptions): Promise<ClusterDns> {
    const state = opts.state ? new StateRecorder(opts.state.root, opts.state.prefix, 'dns') : null;
    const args = [
      '--pdeathsig',
      'KILL',
      '--',
      tool('nsenter'),
      `--net=${opts.netnsPath}`,
      '--',
      opts.nodePath ?? process.execPath,
      MAIN,
      '--address',
      opts.address,
      '--port',
      String(opts.port ?? 53),
      '--domain',
      opts.domain ?? 'cluster.local',
    ];
    const child = spawn(tool('setpriv'), args, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '' },
    });
    if (child.pid) state?.addPid(child.pid, 'cluster dns');
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      stderr = (stderr + d).slice(-2000);
      opts.logger?.warn({ stderr: d.trim().slice(0, 500) }, 'cluster dns stderr');
    });
    const lines: ((line: Record<string, unknown>) => void)[] = [];
    let buf = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let nl = buf.indexOf('\n');
      while (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        nl = buf.indexOf('\n');
        try {
          const msg = JSON.parse(line) as Record<string, unknown>;
          for (const l of lines) l(msg);
        } catch {
          // not ours
        }
      }
    });
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('timed out')), START_TIMEOUT_MS);
      lines.push((m) => {
        if (m.ready === true && typeof m.port === 'number') {
          clearTimeout(timer);
          resolve(m.port);
        } else if (m.ready === false) {
          clearTimeout(timer);
          reject(new Error(String(m.error)));
        }
      });
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`exited with ${code}: ${stderr.trim().slice(-400)}`));
      });
    }).catch((err: unknown) => {
      child.kill('SIGKILL');
      state?.drop();
      throw new MeshError(
        'MESH_ERR_LAB_DNS_START',
        `cluster DNS on ${opts.address}:${opts.port ?? 53} in ${opts.netnsPath}: ${(err as Error).message}`,
      );
    });
    const dns = new ClusterDns(child, opts.address, port, opts.logger ?? null, state);
    lines.push((m) => {
      if (typeof m.applied === 'number') dns.onApplied(m.applied);
    });
    child.on('exit', (code, signal) => {
      dns.exited = true;
      for (const w of dns.waiters.splice(0)) w.resolve();
      if (code !== 0) dns.logger?.warn({ code, signal }, 'cluster dns exited');
    });
    return dns;
  }

  /** Starts the cluster DNS of a lab network (fabric netns, cluster DNS address, port 53). */
  static forLab(network: LabNetwork, opts: { logger?: Logger } = {}): Promise<ClusterDns> {
    return ClusterDns.start({
      netnsPath: network.fabric.netnsPath,
      address: network.fabric.clusterDnsIp,
      domain: network.clusterDomain,
      state: { root: network.root, prefix: network.prefix },
      ...(opts.logger ? { logger: opts.logger } : {}),
    });
  }

  get pid(): number | null {
    return this.child.pid ?? null;
  }

  /** Replaces the served records; resolves once the server applied them. */
  update(records: DnsRecordSet): Promise<void> {
    if (this.exited)
      return Promise.reject(new MeshError('MESH_ERR_LAB_DNS_START', 'cluster DNS is not running'));
    const n = ++this.sent;
    this.child.stdin?.write(`${JSON.stringify({ records })}\n`);
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new MeshError('MESH_ERR_LAB_DNS_START', 'cluster DNS did not apply records')),
        APPLY_TIMEOUT_MS,
      );
      this.waiters.push({
        n,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
      this.onApplied(this.applied);
    });
  }

  async stop(): Promise<void> {
    if (!this.exited) {
      const gone = new Promise<void>((r) => this.child.once('exit', () => r()));
      this.child.stdin?.end();
      const t = setTimeout(() => this.child.kill('SIGKILL'), 2_000);
      await gone;
      clearTimeout(t);
    }
    this.state?.drop();
  }

  private onApplied(n: number): void {
    this.applied = n;
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i];
      if (w && w.n <= n) {
        this.waiters.splice(i, 1);
        w.resolve();
      }
    }
  }
}
