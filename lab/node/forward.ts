/**
 * NetnsPortForward: makes a TCP service of the lab process (which lives in the machine's network namespace,
 * e.g. the API server on 127.0.0.1:6443) reachable at an address inside a lab namespace (e.g. the reserved
 * API server address 10.B.0.3:6443 on the fabric bridge), without adding anything to the machine's network:
 *
 *   pod/node ──TCP──► forwarder process (in the fabric netns, listening on 10.B.0.3:6443)
 *            ──unix socket (<root>/run/fwd-*.sock)──► this process ──TCP──► 127.0.0.1:6443
 *
 * The upstream sees connections from loopback (client addresses are not preserved).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MeshError } from '../../pkg/errors/index.ts';
import type { Logger } from '../../pkg/telemetry/index.ts';
import { StateRecorder } from './state.ts';
import { tool } from './sys.ts';

const MAIN = fileURLToPath(new URL('./forward-main.ts', import.meta.url));
const START_TIMEOUT_MS = 15_000;

export interface NetnsPortForwardOptions {
  /** Namespace to listen in (e.g. the fabric's). */
  readonly netnsPath: string;
  readonly listenHost: string;
  readonly listenPort: number;
  /** Where to send connections, reached from this process. */
  readonly target: { readonly host: string; readonly port: number };
  /** Lab root and prefix: the socket goes to `<root>/run/`, the forwarder is recorded for cleanup. */
  readonly root: string;
  readonly prefix: string;
  readonly logger?: Logger;
}

export class NetnsPortForward {
  readonly socketPath: string;
  private readonly server: net.Server;
  private readonly child: ChildProcess;
  private readonly state: StateRecorder;
  private readonly sockets: Set<net.Socket>;

  private constructor(
    socketPath: string,
    server: net.Server,
    child: ChildProcess,
    state: StateRecorder,
    sockets: Set<net.Socket>,
  ) {
    this.socketPath = socketPath;
    this.server = server;
    this.child = child;
    this.state = state;
    this.sockets = sockets;
  }

  static async start(opts: NetnsPortForwardOptions): Promise<NetnsPortForward> {
    const dir = join(opts.root, 'run');
    mkdirSync(dir, { recursive: true });
    const name = `fwd-${opts.listenHost}-${opts.listenPort}`;
    const socketPath = join(dir, `${name}.sock`);
    rmSync(socketPath, { force: true });
    // <root>/run itself is recorded (and removed) by LabNetwork.
    const state = new StateRecorder(opts.root, opts.prefix, name);
    const sockets = new Set<net.Socket>();
    const server = net.createServer((c) => {
      const upstream = net.connect(opts.target.port, opts.target.host);
      sockets.add(c);
      sockets.add(upstream);
      const done = (): void => {
        sockets.delete(c);
        sockets.delete(upstream);
      };
      c.on('close', done);
      c.on('error', () => upstream.destroy());
      upstream.on('error', () => c.destroy());
      c.pipe(upstream);
      upstream.pipe(c);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => resolve());
    });
    const child = spawn(
      tool('setpriv'),
      [
        '--pdeathsig',
        'KILL',
        '--',
        tool('nsenter'),
        `--net=${opts.netnsPath}`,
        '--',
        process.execPath,
        MAIN,
        '--listen',
        `${opts.listenHost}:${opts.listenPort}`,
        '--unix',
        socketPath,
      ],
      { stdio: ['pipe', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '' } },
    );
    if (child.pid) state.addPid(child.pid, `port forward ${opts.listenHost}:${opts.listenPort}`);
    const fwd = new NetnsPortForward(socketPath, server, child, state, sockets);
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('timed out')), START_TIMEOUT_MS);
        child.stdout?.setEncoding('utf8').once('data', (d: string) => {
          clearTimeout(timer);
          if (d.includes('"ready":true')) resolve();
          else reject(new Error(d.trim()));
        });
        child.once('exit', (code) => {
          clearTimeout(timer);
          reject(new Error(`forwarder exited with ${code}`));
        });
      });
    } catch (err) {
      await fwd.close();
      throw new MeshError(
        'MESH_ERR_LAB_NET_COMMAND',
        `port forward ${opts.listenHost}:${opts.listenPort} in ${opts.netnsPath}: ${(err as Error).message}`,
        {
          hint: 'the listen address must be assigned in that namespace (e.g. the API server address on the fabric)',
        },
      );
    }
    opts.logger?.info(
      { listen: `${opts.listenHost}:${opts.listenPort}`, target: `${opts.target.host}:${opts.target.port}` },
      'port forward into lab namespace started',
    );
    return fwd;
  }

  async close(): Promise<void> {
    this.child.stdin?.end();
    this.child.kill('SIGKILL');
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
    rmSync(this.socketPath, { force: true });
    this.state.drop();
  }
}
