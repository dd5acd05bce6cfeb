/**
 * Helpers for the lab's root-tier tests: unique prefixes and address blocks, a snapshot of the machine's own
 * network namespace (to prove the lab never touches it), and a census of what a lab may leave behind.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { uniqueSuffix } from '../../../pkg/testing/index.ts';
import { listNetns, names, netnsInode, netnsPath, processesInNetns } from '../index.ts';

function sh(cmd: string, args: readonly string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A prefix no other run uses (`t<5 random>-`). */
export function testPrefix(): string {
  return `t${uniqueSuffix(5)}-`;
}

/** A random address block in 100..199 (labs are isolated anyway; this keeps logs unambiguous). */
export function testBlock(): number {
  return 100 + Math.floor(Math.random() * 100);
}

export function testRoot(): string {
  return mkdtempSync(join(tmpdir(), 'lab-test-'));
}

/**
 * Links, routes (all tables), policy rules and iptables of the machine's own namespace, with counters and
 * generation comments removed so that only configuration changes show.
 */
export function rootNetnsSnapshot(): string {
  const iptables = sh('iptables-save', [])
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/g, ''))
    .join('\n');
  const links = sh('ip', ['-o', 'link'])
    .split('\n')
    .map((l) => l.replace(/\\\s+link\/.*$/, ''))
    .join('\n');
  return [links, sh('ip', ['route', 'show', 'table', 'all']), sh('ip', ['rule']), iptables].join('\n----\n');
}

export interface Leftovers {
  readonly netns: string[];
  readonly mounts: string[];
  readonly files: string[];
  readonly processes: number[];
}

/** Everything of a lab with this prefix and root that still exists. */
export function leftovers(prefix: string, root: string): Leftovers {
  const matcher = names.matcher(prefix);
  const netns = listNetns().filter((n) => matcher.test(n));
  const inodes = new Set(netns.map((n) => netnsInode(netnsPath(n))).filter((x): x is number => x !== null));
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m.startsWith(root) || m.includes(`/netns/${prefix}`));
  let files: string[] = [];
  try {
    files = readdirSync(root, { recursive: true }).map(String);
  } catch {
    files = [];
  }
  return { netns, mounts, files, processes: [...processesInNetns(inodes).keys()] };
}

export function pidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}
