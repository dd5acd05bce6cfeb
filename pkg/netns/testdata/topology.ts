/**
 * Test helpers for the root-tier pkg/netns tests: throwaway network namespaces (`amb-t-<random>`), veth pairs
 * created directly inside them (nothing ever appears in the root namespace), iptables and sysctl inside a
 * namespace. Every command has a timeout. Deleting a namespace removes its links, routes, rules and
 * iptables tables with it.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';

/** `amb-t-nsx<pid>-<hex>`: the pid lets a later run remove what a crashed run (e.g. an abort) left behind. */
const NAME = /^amb-t-nsx(\d+)-[0-9a-f]{8}$/;
const live = new Set<TestNetns>();

export function run(cmd: string, args: readonly string[], timeoutMs = 10_000): string {
  return execFileSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs, stdio: ['ignore', 'pipe', 'pipe'] });
}

export class TestNetns {
  readonly name: string;
  readonly path: string;

  private constructor(name: string) {
    this.name = name;
    this.path = `/var/run/netns/${name}`;
  }

  static create(): TestNetns {
    sweepStale();
    const ns = new TestNetns(`amb-t-nsx${process.pid}-${randomBytes(4).toString('hex')}`);
    run('ip', ['netns', 'add', ns.name]);
    live.add(ns);
    try {
      ns.ip('link', 'set', 'lo', 'up');
    } catch (err) {
      ns.delete();
      throw err;
    }
    return ns;
  }

  ip(...args: string[]): string {
    return run('ip', ['-n', this.name, ...args]);
  }

  exec(cmd: string, ...args: string[]): string {
    return run('ip', ['netns', 'exec', this.name, cmd, ...args]);
  }

  iptables(...args: string[]): string {
    return this.exec('iptables', '-w', '5', ...args);
  }

  ip6tables(...args: string[]): string {
    return this.exec('ip6tables', '-w', '5', ...args);
  }

  sysctl(key: string, value: string): void {
    this.exec('sysctl', '-qw', `${key}=${value}`);
  }

  /** Packet count of the (iptables-save -c) rule carrying `--comment <comment>` in `table`. */
  rulePackets(table: string, comment: string): number {
    const out = this.exec('iptables-save', '-c', '-t', table);
    const line = out.split('\n').find((l) => l.includes(`--comment ${comment}`));
    const m = line ? /^\[(\d+):(\d+)\]/.exec(line) : null;
    if (!m) throw new Error(`no counted rule with comment ${comment} in ${this.name}/${table}:\n${out}`);
    return Number(m[1]);
  }

  delete(): void {
    live.delete(this);
    try {
      run('ip', ['netns', 'del', this.name]);
    } catch {
      // already gone
    }
  }
}

// Last resort if afterAll never ran (an exception in a hook, process.exit): 'exit' handlers may run sync code.
process.once('exit', () => {
  for (const ns of live) ns.delete();
});

let swept = false;
/** Deletes namespaces this helper created in processes that no longer exist (crashed runs). Once per process. */
function sweepStale(): void {
  if (swept) return;
  swept = true;
  let names: string[];
  try {
    names = readdirSync('/var/run/netns');
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(NAME.exec(name)?.[1]);
    if (!pid || pid === process.pid || pidAlive(pid)) continue;
    try {
      run('ip', ['netns', 'del', name]);
    } catch {
      // raced with another sweeper
    }
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Links `a` and `b` with a veth pair (`aIf` in a, `bIf` in b) and brings both ends up. */
export function vethPair(a: TestNetns, aIf: string, b: TestNetns, bIf: string): void {
  a.ip('link', 'add', aIf, 'type', 'veth', 'peer', 'name', bIf, 'netns', b.name);
  a.ip('link', 'set', aIf, 'up');
  b.ip('link', 'set', bIf, 'up');
}

/** A random third octet so that concurrent runs never share a subnet (they are isolated anyway). */
export function randomSubnet(): number {
  return 1 + (randomBytes(1)[0]! % 250);
}
