/**
 * Running the system tools the lab is built from (ip, nsenter, unshare, iptables-restore, sysctl, mount…):
 * absolute paths resolved once, a hard timeout on every call, stdin fed from a string, and a MeshError that
 * names the command, its exit status and the tail of its stderr when it fails.
 *
 * `netns` runs the command inside a lab network namespace through `nsenter --net=<path>`: nsenter only
 * changes namespaces and then execs the command, so the command keeps nsenter's pid (a timeout kill hits it).
 */
import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { MeshError } from '../../pkg/errors/index.ts';

/** Default limit for one system command: a netlink call takes milliseconds; a stuck one must not hang a test. */
export const COMMAND_TIMEOUT_MS = 15_000;
/** Keep at most this much of a command's stdout/stderr (iptables-save of a busy node fits easily). */
const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;
/** How much stderr a failure message quotes. */
const STDERR_EXCERPT = 600;

/** Directories searched for system tools, whatever PATH the calling process has. */
const SYSTEM_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/** A PATH for processes the lab starts when the caller gave none (containerd's default). */
export const DEFAULT_PATH = SYSTEM_DIRS.join(':');

const resolved = new Map<string, string>();

/** The absolute path of a system tool; throws MESH_ERR_LAB_NET_COMMAND when it is not installed. */
export function tool(name: string): string {
  const hit = resolved.get(name);
  if (hit) return hit;
  for (const dir of SYSTEM_DIRS) {
    const p = join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      resolved.set(name, p);
      return p;
    } catch {
      // next directory
    }
  }
  throw new MeshError('MESH_ERR_LAB_NET_COMMAND', `${name}: not found in ${SYSTEM_DIRS.join(':')}`, {
    hint: 'the lab needs iproute2, util-linux (nsenter, unshare, setpriv), iptables and the CNI plugins',
    details: { command: name },
  });
}

export interface RunOptions {
  /** Run inside this network namespace (a path such as /var/run/netns/x). */
  readonly netns?: string;
  readonly input?: string | Buffer;
  readonly timeoutMs?: number;
  readonly env?: NodeJS.ProcessEnv;
  /** Resolve with the result instead of throwing on a non-zero exit. */
  readonly allowFailure?: boolean;
}

export interface RunResult {
  /** Exit status, or 128 + signal number when the command was killed by a signal. */
  readonly code: number;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
}

const SIGNAL_NUMBERS: Readonly<Partial<Record<NodeJS.Signals, number>>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGABRT: 6,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGSEGV: 11,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
};

/** `128 + signo`, the exit status a shell reports for a process killed by `signal`. */
export function signalExitCode(signal: NodeJS.Signals): number {
  return 128 + (SIGNAL_NUMBERS[signal] ?? 0);
}

/** `[file, args]` of a command, wrapped in nsenter when it must run in another network namespace. */
export function commandLine(
  cmd: string,
  args: readonly string[],
  netns?: string,
): [file: string, args: string[]] {
  const file = cmd.startsWith('/') ? cmd : tool(cmd);
  if (!netns) return [file, [...args]];
  return [tool('nsenter'), [`--net=${netns}`, '--', file, ...args]];
}

function describeCommand(file: string, args: readonly string[]): string {
  const text = [file, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
  return text.length > 300 ? `${text.slice(0, 300)}…` : text;
}

/** Runs a command to completion (bounded by a timeout) and returns its output. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const [file, argv] = commandLine(cmd, args, opts.netns);
  const timeoutMs = opts.timeoutMs ?? COMMAND_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const child = spawn(file, argv, {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: opts.env ?? { PATH: DEFAULT_PATH, LANG: 'C' },
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outLen = 0;
    let errLen = 0;
    let timedOut = false;
    child.stdout.on('data', (d: Buffer) => {
      if (outLen < MAX_OUTPUT_BYTES) out.push(d);
      outLen += d.length;
    });
    child.stderr.on('data', (d: Buffer) => {
      if (errLen < MAX_OUTPUT_BYTES) err.push(d);
      errLen += d.length;
    });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdin.on('error', () => {
      // the command exited without reading its input; its exit status tells the story
    });
    child.stdin.end(opts.input ?? '');
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(
        new MeshError('MESH_ERR_LAB_NET_COMMAND', `${describeCommand(file, argv)}: ${e.message}`, {
          cause: e,
          details: { command: file },
        }),
      );
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const result: RunResult = {
        code: code ?? (signal ? signalExitCode(signal) : -1),
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        timedOut,
      };
      if ((result.code === 0 && !timedOut) || opts.allowFailure) {
        resolve(result);
        return;
      }
      const why = timedOut ? `timed out after ${timeoutMs} ms` : `exit ${result.code}`;
      const stderr = result.stderr.trim().slice(-STDERR_EXCERPT);
      reject(
        new MeshError(
          'MESH_ERR_LAB_NET_COMMAND',
          `${describeCommand(file, argv)}: ${why}${stderr ? `: ${stderr}` : ''}`,
          { details: { command: file, exitCode: result.code, timedOut } },
        ),
      );
    });
  });
}

/** `ip <args>` inside `netns` (by name: `ip -n`), or in the caller's namespace when netns is null. */
export function ip(netnsName: string | null, ...args: string[]): Promise<RunResult> {
  return run('ip', netnsName ? ['-n', netnsName, ...args] : args);
}

/** Runs many `ip` commands in one process (`ip -batch`), stopping at the first failure. */
export function ipBatch(netnsName: string, lines: readonly string[]): Promise<RunResult> {
  return run('ip', ['-n', netnsName, '-batch', '-'], { input: `${lines.join('\n')}\n` });
}

/** Writes sysctls inside a network namespace (the net.* tree is per namespace). */
export function sysctl(
  netnsPath: string,
  values: Readonly<Record<string, string | number>>,
): Promise<RunResult> {
  const args = ['-q', '-w', ...Object.entries(values).map(([k, v]) => `${k}=${v}`)];
  return run('sysctl', args, { netns: netnsPath });
}

/** Quotes a string for a POSIX shell script. */
export function shq(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}
