/**
 * Process helpers shared by the lab benchmarks (bench/l4, bench/l7): programs run inside a pod's network
 * namespace with `nsenter --net=<netns path>` (nsenter execs the program, so the child's pid is the program's
 * own). Every long-running child is recorded so that `stopAll` ends exactly those processes, on success and on
 * failure.
 */
import { type ChildProcess, spawn } from 'node:child_process';

export const NODE = process.execPath;
/** How long a server may take to listen. */
const START_TIMEOUT_MS = 15_000;
/** Added to a client run's own duration before it is killed as hung. */
export const RUN_GRACE_MS = 20_000;

const children = new Set<ChildProcess>();

/** SIGTERM to every long-running child still alive (then SIGKILL to whichever ignores it). */
export async function stopAll(): Promise<void> {
  const alive = [...children].filter((c) => c.exitCode === null && c.signalCode === null);
  children.clear();
  await Promise.all(
    alive.map(
      (c) =>
        new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            c.kill('SIGKILL');
            resolve();
          }, 3_000);
          c.once('exit', () => {
            clearTimeout(timer);
            resolve();
          });
          c.kill('SIGTERM');
        }),
    ),
  );
}

/** Synchronous last resort (process 'exit'): SIGKILL whatever is still running. */
export function killAllNow(): void {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  children.clear();
}

function inNetns(netns: string, argv: readonly string[]): ChildProcess {
  return spawn('nsenter', [`--net=${netns}`, '--', ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Runs a program to completion in a netns; its stdout, or an error with its stderr. */
export function runIn(netns: string, argv: readonly string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = inNetns(netns, argv);
    children.add(child);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (d: Buffer) => out.push(d));
    child.stderr!.on('data', (d: Buffer) => err.push(d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      children.delete(child);
      const stdout = Buffer.concat(out).toString('utf8');
      if (code === 0) resolve(stdout);
      else
        reject(
          new Error(
            `${argv.slice(0, 2).join(' ')} in ${netns} exited ${code ?? signal}: ` +
              `${Buffer.concat(err).toString('utf8').trim() || stdout.trim()}`,
          ),
        );
    });
  });
}

/** Waits until something listens on TCP `port` in the netns (ss, so it works for any server). */
async function waitListening(netns: string, port: number, who: ChildProcess, what: string): Promise<void> {
  const deadline = performance.now() + START_TIMEOUT_MS;
  for (;;) {
    if (who.exitCode !== null || who.signalCode !== null)
      throw new Error(`${what} exited (${who.exitCode ?? who.signalCode}) before listening on ${port}`);
    const out = await runIn(netns, ['ss', '-Hltn', `sport = :${port}`], 5_000);
    if (out.trim() !== '') return;
    if (performance.now() > deadline) throw new Error(`${what}: nothing listens on ${port} in ${netns}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Starts a long-running server in a netns and waits until it listens on every port given. */
export async function startServer(
  netns: string,
  argv: readonly string[],
  ports: readonly number[],
  what: string,
): Promise<ChildProcess> {
  const child = inNetns(netns, argv);
  children.add(child);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-2000);
  });
  child.stdout!.resume();
  try {
    for (const p of ports) await waitListening(netns, p, child, what);
  } catch (err) {
    throw new Error(`${(err as Error).message}${stderr ? `\n${stderr.trim()}` : ''}`);
  }
  return child;
}
