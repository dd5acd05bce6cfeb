/**
 * Removing a lab: the processes living in its namespaces, its mounts, its network namespaces (deleting a
 * namespace takes its links, routes, rules and iptables tables with it) and its directories.
 *
 * Processes are found two ways: the pids recorded in state files (checked against their start time, so a
 * reused pid is never killed), and every process whose network namespace is one of the lab's (by inode).
 * The second way needs no record at all, which is what makes cleanup after a crash complete.
 */
import { readdirSync, readFileSync, readlinkSync, rmdirSync, rmSync, statSync } from 'node:fs';
import { isAbsolute, join, relative, resolve } from 'node:path';
import type { Logger } from '../../pkg/telemetry/index.ts';
import { names, validatePrefix } from './plan.ts';
import {
  processStartTime,
  readRegistry,
  readStates,
  removeRegistry,
  STATE_DIR,
  type StateRecord,
} from './state.ts';
import { ip, run } from './sys.ts';

export const NETNS_DIR = '/var/run/netns';
/** SIGTERM first, SIGKILL after this long. */
export const DEFAULT_CLEANUP_GRACE_MS = 1_000;
/** Give up waiting for killed processes to disappear after this long (a process stuck in D state). */
const KILL_WAIT_MS = 5_000;
const POLL_MS = 25;
/** Extra scans for processes that appeared while we were killing (a live runtime restarting containers). */
const RESCAN_ROUNDS = 3;

export interface CleanupOptions {
  /** The lab root, when known; otherwise taken from the registry `/run/ambient-lab/<prefix>lab.json`. */
  readonly root?: string;
  readonly graceMs?: number;
  readonly logger?: Logger;
}

export interface CleanupReport {
  readonly netns: string[];
  readonly killed: number[];
  readonly unmounted: string[];
  readonly removed: string[];
  readonly errors: string[];
}

export function netnsPath(name: string): string {
  return join(NETNS_DIR, name);
}

/** Names of all named network namespaces. */
export function listNetns(): string[] {
  try {
    return readdirSync(NETNS_DIR);
  } catch {
    return [];
  }
}

/** Inode of a named network namespace, or null when it does not exist. */
export function netnsInode(path: string): number | null {
  try {
    return statSync(path).ino;
  } catch {
    return null;
  }
}

function isAlive(pid: number, startTime: string | null): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (rest[0] === 'Z' || rest[0] === 'X') return false;
    return startTime === null || rest[19] === startTime;
  } catch {
    return false;
  }
}

/** Pids (with start times) of processes whose network namespace has one of these inodes. */
export function processesInNetns(inodes: ReadonlySet<number>): Map<number, string> {
  const found = new Map<number, string>();
  if (inodes.size === 0) return found;
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return found;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    if (pid === process.pid) continue;
    let link: string;
    try {
      link = readlinkSync(`/proc/${pid}/ns/net`);
    } catch {
      continue;
    }
    const m = /^net:\[(\d+)\]$/.exec(link);
    if (!m || !inodes.has(Number(m[1]))) continue;
    const st = processStartTime(pid);
    if (st !== null) found.set(pid, st);
  }
  return found;
}

/** SIGTERM, wait up to graceMs, SIGKILL, wait until gone (bounded). Returns the pids signalled. */
export async function killProcesses(
  targets: ReadonlyMap<number, string>,
  graceMs: number,
): Promise<number[]> {
  const signalled: number[] = [];
  const send = (pid: number, sig: NodeJS.Signals): void => {
    try {
      process.kill(pid, sig);
    } catch {
      // already gone
    }
  };
  for (const [pid, st] of targets) {
    if (isAlive(pid, st)) {
      send(pid, 'SIGTERM');
      signalled.push(pid);
    }
  }
  const alive = (): number[] => [...targets].filter(([p, st]) => isAlive(p, st)).map(([p]) => p);
  const waitGone = async (ms: number): Promise<boolean> => {
    const deadline = performance.now() + ms;
    while (performance.now() < deadline) {
      if (alive().length === 0) return true;
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
    return alive().length === 0;
  };
  if (signalled.length === 0) return signalled;
  if (graceMs > 0 && (await waitGone(graceMs))) return signalled;
  for (const pid of alive()) send(pid, 'SIGKILL');
  await waitGone(KILL_WAIT_MS);
  return signalled;
}

/** Mount points (from /proc/self/mountinfo, unescaped) at or below `dir`, deepest first. */
export function mountsUnder(dir: string): string[] {
  let text: string;
  try {
    text = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  const base = resolve(dir);
  const out: string[] = [];
  for (const line of text.split('\n')) {
    const mp = line.split(' ')[4];
    if (!mp) continue;
    const path = mp.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
    if (path === base || path.startsWith(`${base}/`)) out.push(path);
  }
  return out.sort((a, b) => b.length - a.length);
}

/** Whether `p` is strictly inside `root` (never the root itself, never outside through `..`). */
export function isInside(root: string, p: string): boolean {
  const rel = relative(resolve(root), resolve(p));
  return rel !== '' && !rel.startsWith('..') && !isAbsolute(rel);
}

/**
 * Removes everything recorded in `states` and every namespace matching the prefix. Used by
 * LabNetwork.destroy() and cleanupLeftovers(); idempotent.
 */
export async function removeLab(
  prefix: string,
  roots: readonly string[],
  states: readonly (StateRecord & { readonly file?: string })[],
  opts: { graceMs?: number; logger?: Logger } = {},
): Promise<CleanupReport> {
  const report: CleanupReport = { netns: [], killed: [], unmounted: [], removed: [], errors: [] };
  const matcher = names.matcher(prefix);
  const nsNames = new Set(listNetns().filter((n) => matcher.test(n)));
  for (const s of states) for (const n of s.netns) if (n.startsWith(prefix)) nsNames.add(n);

  // 1. processes: recorded ones and everything living in the lab's namespaces.
  const inodes = new Set<number>();
  for (const n of nsNames) {
    const ino = netnsInode(netnsPath(n));
    if (ino !== null) inodes.add(ino);
  }
  const targets = processesInNetns(inodes);
  for (const s of states) {
    for (const p of s.pids)
      if (p.pid !== process.pid && isAlive(p.pid, p.startTime)) targets.set(p.pid, p.startTime);
  }
  report.killed.push(...(await killProcesses(targets, opts.graceMs ?? DEFAULT_CLEANUP_GRACE_MS)));
  // A pod runtime still running in some process may restart a container we just killed: look again (bounded)
  // until the namespaces are empty, so that no process keeps a deleted namespace alive.
  for (let round = 0; round < RESCAN_ROUNDS; round++) {
    await new Promise((r) => setTimeout(r, POLL_MS * 2));
    const again = processesInNetns(inodes);
    if (again.size === 0) break;
    report.killed.push(...(await killProcesses(again, 0)));
  }

  // 2. mounts in this mount namespace under the lab roots, and recorded ones.
  const mounts = new Set<string>();
  for (const r of roots) for (const m of mountsUnder(r)) mounts.add(m);
  for (const s of states) for (const m of s.mounts) for (const x of mountsUnder(m)) mounts.add(x);
  for (const m of [...mounts].sort((a, b) => b.length - a.length)) {
    const r = await run('umount', ['-l', m], { allowFailure: true });
    if (r.code === 0) report.unmounted.push(m);
    else report.errors.push(`umount ${m}: ${r.stderr.trim()}`);
  }

  // 3. network namespaces (their links, routes, rules and iptables state go with them).
  for (const n of nsNames) {
    const r = await ip(null, 'netns', 'del', n).catch((e: unknown) => e);
    if (netnsInode(netnsPath(n)) === null) report.netns.push(n);
    else report.errors.push(`ip netns del ${n}: ${String(r)}`);
  }

  // 4. directories, only ever inside a lab root.
  for (const s of states) {
    for (const d of s.dirs) {
      if (!roots.some((r) => isInside(r, d))) {
        report.errors.push(`refusing to remove ${d}: not inside the lab root`);
        continue;
      }
      try {
        rmSync(d, { recursive: true, force: true, maxRetries: 3 });
        report.removed.push(d);
      } catch (e) {
        report.errors.push(`rm ${d}: ${String(e)}`);
      }
    }
  }
  for (const s of states) if ('file' in s && typeof s.file === 'string') rmSync(s.file, { force: true });
  for (const r of roots) {
    try {
      rmdirSync(join(r, STATE_DIR));
    } catch {
      // other owners' files remain, or already gone
    }
  }
  removeRegistry(prefix);
  if (report.errors.length > 0)
    opts.logger?.warn({ prefix, errors: report.errors }, 'lab cleanup incomplete');
  return report;
}

/**
 * Removes whatever a lab with this prefix left behind (a crashed run): processes in its namespaces, its
 * namespaces, mounts under its root and the directories its state files record. Safe to call when nothing
 * is left.
 */
export async function cleanupLeftovers(prefix: string, opts: CleanupOptions = {}): Promise<CleanupReport> {
  validatePrefix(prefix);
  const roots = new Set<string>();
  if (opts.root) roots.add(resolve(opts.root));
  const reg = readRegistry(prefix);
  if (reg) roots.add(resolve(reg.root));
  const states = [...roots].flatMap((r) => readStates(r)).filter((s) => s.prefix === prefix);
  return removeLab(prefix, [...roots], states, opts);
}
