/**
 * One drain helper for every listener (CONVENTIONS.md habit 8, after ztunnel's drain.rs): on SIGTERM a
 * component stops accepting, lets in-flight work finish until the grace deadline, then closes what is left.
 *
 * Each listener or pool registers a `Drainable`. `Drain.run()` starts every graceful drain at once, waits for all
 * of them or the deadline, then force-closes the stragglers and reports which ones they were.
 */
import type { Server, Socket } from 'node:net';
import type { Logger } from 'pino';
import { describeError } from '../errors/index.ts';

export interface Drainable {
  readonly name: string;
  /** Stop accepting new work; resolve once in-flight work is finished. */
  drain(): Promise<void>;
  /** Close whatever is still open, immediately. Must be idempotent. */
  forceClose(): void;
}

export interface DrainResult {
  /** True when everything finished before the deadline. */
  readonly graceful: boolean;
  /** Names of the drainables that had to be force-closed. */
  readonly forced: readonly string[];
  readonly durationMs: number;
}

export class Drain {
  private readonly members = new Set<Drainable>();
  private readonly controller = new AbortController();
  private running: Promise<DrainResult> | null = null;

  /** Aborted when draining starts: accept loops and reconnect loops watch it. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get draining(): boolean {
    return this.controller.signal.aborted;
  }

  /** Registers a member; returns a function that unregisters it (call it when the member closes itself). */
  add(member: Drainable): () => void {
    if (this.draining) {
      // Joined after drain began (e.g. a pod added during shutdown): it never gets to accept anything.
      member.forceClose();
      return () => {};
    }
    this.members.add(member);
    return () => this.members.delete(member);
  }

  get size(): number {
    return this.members.size;
  }

  /** Runs the drain once; later calls return the same result. */
  run(graceMs: number, logger?: Logger): Promise<DrainResult> {
    this.running ??= this.doRun(graceMs, logger);
    return this.running;
  }

  private async doRun(graceMs: number, logger?: Logger): Promise<DrainResult> {
    const started = performance.now();
    this.controller.abort();
    const members = [...this.members];
    const pending = new Set(members);
    logger?.info({ members: members.length, graceMs }, 'drain started');
    const all = Promise.all(
      members.map((m) =>
        m.drain().then(
          () => pending.delete(m),
          (err: unknown) => {
            logger?.warn(
              { member: m.name, err: describeError(err) },
              'graceful drain failed; will force-close',
            );
          },
        ),
      ),
    );
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, graceMs);
    });
    await Promise.race([all, deadline]);
    clearTimeout(timer);
    const forced = [...pending].map((m) => m.name);
    for (const m of pending) {
      try {
        m.forceClose();
      } catch (err) {
        logger?.error({ member: m.name, err: describeError(err) }, 'force close failed');
      }
    }
    this.members.clear();
    const durationMs = Math.round(performance.now() - started);
    if (forced.length > 0) {
      logger?.warn(
        { code: 'MESH_ERR_DRAIN_TIMEOUT', forced, durationMs },
        'drain deadline reached; force-closed',
      );
    } else {
      logger?.info({ durationMs }, 'drain complete');
    }
    return { graceful: forced.length === 0, forced, durationMs };
  }
}

/**
 * Makes a net/http/https/http2 server drainable: tracks its connections; drain = stop accepting (close the
 * listener, close idle HTTP keep-alive connections) and wait for open connections to end; force = destroy them.
 */
export function drainableServer(name: string, server: Server): Drainable {
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  return {
    name,
    drain() {
      return new Promise<void>((resolve) => {
        if (!server.listening) {
          if (sockets.size === 0) return resolve();
        }
        server.close(() => resolve());
        const maybeHttp = server as Server & { closeIdleConnections?: () => void };
        maybeHttp.closeIdleConnections?.();
      });
    },
    forceClose() {
      for (const s of sockets) s.destroy();
      sockets.clear();
      if (server.listening) server.close();
    },
  };
}

export interface TerminationOptions {
  readonly graceMs: number;
  readonly logger?: Logger;
  /** Called after the drain with the exit code; defaults to process.exit. */
  readonly exit?: (code: number) => void;
  readonly signals?: readonly NodeJS.Signals[];
}

/**
 * SIGTERM/SIGINT → drain → exit(0). A second signal while draining exits at once with 1, like an operator
 * pressing Ctrl-C twice. Returns a function removing the handlers.
 */
export function exitOnTermination(drain: Drain, opts: TerminationOptions): () => void {
  const exit = opts.exit ?? ((code: number) => process.exit(code));
  const signals = opts.signals ?? ['SIGTERM', 'SIGINT'];
  const handler = (sig: NodeJS.Signals) => {
    if (drain.draining) {
      opts.logger?.warn({ signal: sig }, 'second signal while draining; exiting now');
      exit(1);
      return;
    }
    opts.logger?.info({ signal: sig }, 'termination signal received');
    drain.run(opts.graceMs, opts.logger).then(() => exit(0));
  };
  for (const s of signals) process.on(s, handler);
  return () => {
    for (const s of signals) process.off(s, handler);
  };
}
