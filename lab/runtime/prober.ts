/**
 * The node process: one long-lived process per node that
 *  - runs the node's probes (prober-main.ts), in the node's network namespace, so a probe costs a JSON line,
 *    not a process;
 *  - holds the node's filesystem view: it runs in its own mount namespace, chrooted into a root built from the
 *    machine's (overlay, tmpfs upper) with the node's directories at their standard paths (LabNode.viewMounts).
 *    CNI plugins are executed inside it (`nsenter --target <pid> --net --mount --root`), so a plugin sees
 *    /etc/cni/net.d, /opt/cni/bin, /var/lib/cni, /var/run/… of *its* node, exactly like on a real node.
 * Started on first use, restarted if it dies, killed with the runtime (pdeathsig).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from '../../pkg/telemetry/index.ts';
import type { LabNode } from '../node/network.ts';
import { tool } from '../node/sys.ts';
import { chrootScript } from './launch.ts';
import type { ProbeAnswer, ProbeRequest } from './prober-main.ts';

const MAIN = fileURLToPath(new URL('./prober-main.ts', import.meta.url));
/** Extra time over a probe's own timeout before the client gives up on an answer. */
const ANSWER_SLACK_MS = 2_000;
const START_TIMEOUT_MS = 15_000;

export type ProbeCall =
  | Omit<Extract<ProbeRequest, { kind: 'http' }>, 'id'>
  | Omit<Extract<ProbeRequest, { kind: 'tcp' }>, 'id'>;

interface Pending {
  readonly resolve: (a: ProbeAnswer) => void;
  readonly timer: NodeJS.Timeout;
}

export class NodeProber {
  private readonly node: LabNode;
  private readonly hostMounts: readonly string[];
  private readonly nodePath: string;
  private readonly logger: Logger | null;
  private readonly onSpawn: (pid: number) => void;
  private child: ChildProcess | null = null;
  private ready: Promise<void> | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private closed = false;
  private buf = '';

  constructor(opts: {
    node: LabNode;
    hostMounts: readonly string[];
    nodePath?: string;
    logger?: Logger;
    onSpawn?: (pid: number) => void;
  }) {
    this.node = opts.node;
    this.hostMounts = opts.hostMounts;
    this.nodePath = opts.nodePath ?? process.execPath;
    this.logger = opts.logger ?? null;
    this.onSpawn = opts.onSpawn ?? (() => undefined);
  }

  /** Pid of the node process, when running. */
  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  /** Pid of the node process holding the node view, started if needed. */
  async viewPid(): Promise<number> {
    await this.start();
    const pid = this.child?.pid;
    if (!pid) throw new Error('node process is not running');
    return pid;
  }

  async probe(call: ProbeCall): Promise<ProbeAnswer> {
    if (this.closed) return { id: 0, ok: false, message: 'prober closed' };
    await this.start();
    const child = this.child;
    if (!child?.stdin) return { id: 0, ok: false, message: 'prober not running' };
    const id = this.nextId++;
    return new Promise<ProbeAnswer>((resolve) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve({ id, ok: false, message: 'probe timed out (no answer from the node prober)' });
      }, call.timeoutMs + ANSWER_SLACK_MS);
      this.pending.set(id, { resolve, timer });
      child.stdin?.write(`${JSON.stringify({ ...call, id })}\n`);
    });
  }

  start(): Promise<void> {
    if (this.ready) return this.ready;
    this.ready = new Promise<void>((resolve, reject) => {
      const dir = join(this.node.dirs.root, 'var/lib/lab/view');
      mkdirSync(join(dir, 'rootfs'), { recursive: true });
      mkdirSync(join(dir, 'scratch'), { recursive: true });
      const script = join(dir, 'setup.sh');
      const spec = {
        dir,
        hostname: this.node.name,
        hostMounts: this.hostMounts,
        mounts: this.node.viewMounts,
      };
      writeFileSync(script, chrootScript(spec, [this.nodePath, MAIN]), { mode: 0o700 });
      const child = spawn(
        tool('setpriv'),
        [
          '--pdeathsig',
          'KILL',
          '--',
          tool('nsenter'),
          `--net=${this.node.netnsPath}`,
          '--',
          tool('unshare'),
          '--mount',
          '--propagation',
          'slave',
          '--uts',
          '--',
          tool('sh'),
          script,
        ],
        { stdio: ['pipe', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '' } },
      );
      this.child = child;
      if (child.pid) this.onSpawn(child.pid);
      const timer = setTimeout(() => reject(new Error('node prober did not start')), START_TIMEOUT_MS);
      let started = false;
      child.stdout?.setEncoding('utf8').on('data', (d: string) => {
        this.buf += d;
        let nl = this.buf.indexOf('\n');
        while (nl >= 0) {
          const line = this.buf.slice(0, nl);
          this.buf = this.buf.slice(nl + 1);
          nl = this.buf.indexOf('\n');
          let a: ProbeAnswer;
          try {
            a = JSON.parse(line) as ProbeAnswer;
          } catch {
            continue;
          }
          if (a.id === 0 && !started) {
            started = true;
            clearTimeout(timer);
            resolve();
            continue;
          }
          const p = this.pending.get(a.id);
          if (p) {
            clearTimeout(p.timer);
            this.pending.delete(a.id);
            p.resolve(a);
          }
        }
      });
      child.stderr?.setEncoding('utf8').on('data', (d: string) => {
        this.logger?.warn({ stderr: d.trim().slice(0, 500) }, 'node prober stderr');
      });
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        if (!started) reject(new Error(`node prober exited before it was ready (${code ?? signal})`));
        this.child = null;
        this.ready = null;
        this.buf = '';
        for (const [id, p] of this.pending) {
          clearTimeout(p.timer);
          p.resolve({ id, ok: false, message: 'node prober exited' });
        }
        this.pending.clear();
        if (!this.closed) this.logger?.warn({ code, signal }, 'node prober exited; restarting on next probe');
      });
    });
    this.ready.catch(() => {
      this.ready = null;
    });
    return this.ready;
  }

  close(): void {
    this.closed = true;
    this.child?.stdin?.end();
    this.child?.kill('SIGKILL');
    this.child = null;
  }
}
