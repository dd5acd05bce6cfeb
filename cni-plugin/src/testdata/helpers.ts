/**
 * Test helpers for cni-plugin: a fake node agent (HTTP over the plugin socket), running the installed
 * plugin exactly as a container runtime does, a fake ztunnel ZDS client, and a silent logger.
 */
import { spawn } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Writable } from 'node:stream';
import type { Logger } from 'pino';
import { closeFd, netnsInode, SeqpacketSocket } from '../../../pkg/netns/index.ts';
import { createLogger } from '../../../pkg/telemetry/index.ts';
import {
  decodeSafe,
  encodeMessage,
  WorkloadRequest,
  WorkloadResponse,
  ZdsHello,
  zds,
} from '../../../pkg/xds/index.ts';

export function silentLogger(): Logger {
  return createLogger({
    component: 'istio-cni',
    level: process.env.TEST_LOG_LEVEL === 'debug' ? 'debug' : 'silent',
    destination: new Writable({
      write(chunk, _enc, cb) {
        if (process.env.TEST_LOG_LEVEL === 'debug') process.stderr.write(chunk);
        cb();
      },
    }),
  });
}

export interface PluginRun {
  readonly stdout: string;
  readonly stderr: string;
  readonly code: number | null;
  readonly ms: number;
}

/** Executes `binary` like a CNI runtime: env + config on stdin, bounded time. */
export function runPluginBinary(
  binary: string,
  env: Record<string, string>,
  stdin: string,
  timeoutMs = 20_000,
  args: readonly string[] = [],
): Promise<PluginRun> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(binary, args, {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: timeoutMs,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ stdout, stderr, code, ms: performance.now() - started }));
    child.stdin.end(stdin);
  });
}

export type AgentHandler = (
  path: string,
  body: unknown,
) => { status: number; body: unknown } | Promise<{ status: number; body: unknown }>;

/** A fake node agent on a unix socket; records every request. */
export class FakeAgent {
  readonly requests: Array<{ path: string; body: unknown }> = [];
  handler: AgentHandler = () => ({ status: 200, body: { captured: false, reason: 'fake' } });
  readonly #server: Server;

  private constructor(server: Server) {
    this.#server = server;
  }

  static async listen(socket: string): Promise<FakeAgent> {
    let self: FakeAgent | null = null;
    const server = createServer((req: IncomingMessage, res: ServerResponse) => {
      const chunks: Buffer[] = [];
      req.on('data', (d: Buffer) => chunks.push(d));
      req.on('end', () => {
        const body = JSON.parse(Buffer.concat(chunks).toString() || 'null') as unknown;
        self!.requests.push({ path: req.url ?? '', body });
        void Promise.resolve(self!.handler(req.url ?? '', body)).then((out) => {
          const text = JSON.stringify(out.body);
          res.writeHead(out.status, {
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(text),
          });
          res.end(text);
        });
      });
    });
    self = new FakeAgent(server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socket, () => resolve());
    });
    return self;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

export interface ReceivedAdd {
  readonly uid: string;
  readonly name: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  /** Inode of the netns fd that came with the message (the fd itself is closed at once). */
  readonly netnsInode: number | null;
}

/**
 * A fake ztunnel: connects to the ZDS socket, says hello, acks every request (or answers with `ackError`),
 * records adds (with the inode of the netns fd received), deletes and snapshot markers.
 */
export class FakeZtunnel {
  readonly adds: ReceivedAdd[] = [];
  readonly dels: string[] = [];
  readonly keeps: string[] = [];
  snapshots = 0;
  /** Set to make the next acks carry an error. */
  ackError = '';
  /** Set to stop acking (to test timeouts). */
  silent = false;
  readonly socket: SeqpacketSocket;
  closed = false;

  private constructor(socket: SeqpacketSocket) {
    this.socket = socket;
    socket.on('message', (data, fds) => this.#onMessage(data, fds));
    socket.on('close', () => {
      this.closed = true;
    });
    socket.on('error', () => {});
  }

  static connect(path: string, version: number = zds.Version.V1): FakeZtunnel {
    const socket = SeqpacketSocket.connect(path);
    const z = new FakeZtunnel(socket);
    socket.send(encodeMessage(ZdsHello, ZdsHello.create({ version: version as zds.Version })));
    return z;
  }

  #onMessage(data: Buffer, fds: number[]): void {
    let inode: number | null = null;
    for (const fd of fds) {
      try {
        inode ??= netnsInode(fd);
      } finally {
        closeFd(fd);
      }
    }
    const decoded = decodeSafe(WorkloadRequest, data);
    if (!decoded.ok) throw decoded.error;
    const p = decoded.value.payload;
    if (p?.$case === 'add') {
      const info = p.value.workloadInfo;
      this.adds.push({
        uid: p.value.uid,
        name: info?.name ?? '',
        namespace: info?.namespace ?? '',
        serviceAccount: info?.serviceAccount ?? '',
        netnsInode: inode,
      });
    } else if (p?.$case === 'del') this.dels.push(p.value.uid);
    else if (p?.$case === 'keep') this.keeps.push(p.value.uid);
    else if (p?.$case === 'snapshotSent') this.snapshots++;
    if (this.silent) return;
    try {
      this.socket.send(
        encodeMessage(WorkloadResponse, { payload: { $case: 'ack', value: { error: this.ackError } } }),
      );
    } catch {
      // the agent closed the connection (that is what some tests provoke)
    }
  }

  close(): void {
    this.socket.close();
  }
}
