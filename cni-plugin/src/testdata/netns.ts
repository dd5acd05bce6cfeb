/**
 * Root-test helpers: throwaway network namespaces `amb-t-cni-<pid>-<hex>` (a later run removes those of
 * crashed runs), veth links created inside them (nothing appears in the machine's own namespace), and the
 * state dumps the capture tests compare (iptables-save, ip6tables-save, nft, ip rule, table 100).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';

const NAME = /^amb-t-cni-(\d+)-[0-9a-f]{6}$/;
const live = new Set<CniTestNetns>();

export function sh(cmd: string, args: readonly string[], input?: string): string {
  return execFileSync(cmd, args, {
    encoding: 'utf8',
    timeout: 10_000,
    input,
    stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  });
}

export class CniTestNetns {
  readonly name: string;
  readonly path: string;

  private constructor(name: string) {
    this.name = name;
    this.path = `/var/run/netns/${name}`;
  }

  static create(): CniTestNetns {
    sweepStale();
    const ns = new CniTestNetns(`amb-t-cni-${process.pid}-${randomBytes(3).toString('hex')}`);
    sh('ip', ['netns', 'add', ns.name]);
    live.add(ns);
    ns.ip('link', 'set', 'lo', 'up');
    return ns;
  }

  ip(...args: string[]): string {
    return sh('ip', ['-n', this.name, ...args]);
  }

  exec(cmd: string, ...args: string[]): string {
    return sh('ip', ['netns', 'exec', this.name, cmd, ...args]);
  }

  /** Everything capture may touch, normalised (no timestamps or counters) for before/after comparison. */
  dump(): string {
    const strip = (s: string): string =>
      s
        .split('\n')
        .filter((l) => !l.startsWith('#'))
        .map((l) => l.replace(/\[\d+:\d+\]/g, '[0:0]'))
        .join('\n');
    const tryRun = (cmd: string, ...args: string[]): string => {
      try {
        return this.exec(cmd, ...args);
      } catch (err) {
        return `(error: ${(err as Error).message.split('\n')[0]})`;
      }
    };
    const routes = (family: string): string => {
      const out = tryRun('ip', family, 'route', 'show', 'table', '100');
      return out.startsWith('(error:') ? '' : out;
    };
    return [
      '== iptables-save',
      strip(tryRun('iptables-save')),
      '== ip6tables-save',
      strip(tryRun('ip6tables-save')),
      '== nft list ruleset',
      tryRun('nft', 'list', 'ruleset').replace(/packets \d+ bytes \d+/g, 'packets 0 bytes 0'),
      '== ip -4 rule',
      tryRun('ip', '-4', 'rule', 'show'),
      '== ip -6 rule',
      tryRun('ip', '-6', 'rule', 'show'),
      // The kernel keeps a FIB table once created, even when emptied again: "empty" and "does not exist"
      // route identically (a lookup in either falls through to the next rule), so both print as nothing.
      '== ip -4 route table 100',
      routes('-4'),
      '== ip -6 route table 100',
      routes('-6'),
    ].join('\n');
  }

  delete(): void {
    live.delete(this);
    try {
      sh('ip', ['netns', 'del', this.name]);
    } catch {
      // already gone
    }
  }
}

/** Links `a` and `b` with a veth pair and brings both ends up. */
export function veth(a: CniTestNetns, aIf: string, b: CniTestNetns, bIf: string): void {
  a.ip('link', 'add', aIf, 'type', 'veth', 'peer', 'name', bIf, 'netns', b.name);
  a.ip('link', 'set', aIf, 'up');
  b.ip('link', 'set', bIf, 'up');
}

export function randomOctet(): number {
  return 1 + (randomBytes(1)[0]! % 250);
}

process.once('exit', () => {
  for (const ns of live) ns.delete();
});

let swept = false;
function sweepStale(): void {
  if (swept) return;
  swept = true;
  let names: string[] = [];
  try {
    names = readdirSync('/var/run/netns');
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(NAME.exec(name)?.[1]);
    if (!pid || pid === process.pid) continue;
    try {
      process.kill(pid, 0);
      continue;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EPERM') continue;
    }
    try {
      sh('ip', ['netns', 'del', name]);
    } catch {
      // raced with another sweeper
    }
  }
}
