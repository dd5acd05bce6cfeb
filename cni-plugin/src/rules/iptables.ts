/**
 * iptables form of the rule model: `iptables-restore --noflush` input that (re)writes OUR chains atomically
 * and adds the jumps from the built-in chains only when they are missing, so applying twice changes
 * nothing (declaring `:ISTIO_X - [0:0]` under --noflush flushes that chain and nothing else). Removal deletes
 * exactly our jumps and chains. Both read the current state from `iptables-save` (parseIptablesSave).
 */
import {
  builtinChain,
  CHAIN_OUTPUT,
  CHAIN_POSTROUTING,
  CHAIN_PREROUTING,
  type Family,
  type Hook,
  hex,
  hooksOf,
  iptablesChain,
  isFamilySpecific,
  type Match,
  type PerFamily,
  RESTORE_MASK,
  type Rule,
  type RuleSet,
  type Table,
  type Target,
  tablesOf,
} from './model.ts';

/** Our chains in a pod netns and in the host netns. */
export const POD_CHAINS: readonly string[] = [CHAIN_PREROUTING, CHAIN_OUTPUT];
export const HOST_CHAINS: readonly string[] = [CHAIN_POSTROUTING];

/** One table of `iptables-save` output. */
export interface SavedTable {
  /** Chain name → policy (`ACCEPT`, … or `-` for user chains). */
  readonly chains: Map<string, string>;
  /** Rule lines as printed, e.g. `-A PREROUTING -j ISTIO_PRERT`. */
  readonly rules: string[];
}

export type SavedTables = Map<string, SavedTable>;

/** Parses `iptables-save` output (comments and counters ignored). */
export function parseIptablesSave(text: string): SavedTables {
  const tables: SavedTables = new Map();
  let current: SavedTable | null = null;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('*')) {
      current = { chains: new Map(), rules: [] };
      tables.set(line.slice(1), current);
    } else if (line === 'COMMIT') {
      current = null;
    } else if (current && line.startsWith(':')) {
      const [name, policy] = line.slice(1).split(/\s+/);
      if (name) current.chains.set(name, policy ?? '-');
    } else if (current && line.startsWith('-A ')) {
      // `iptables-save -c` prefixes counters: `[0:0] -A …`; plain save does not.
      current.rules.push(line);
    } else if (current && /^\[\d+:\d+\] -A /.test(line)) {
      current.rules.push(line.replace(/^\[\d+:\d+\] /, ''));
    }
  }
  return tables;
}

function addr(a: PerFamily, family: Family): string {
  return family === 4 ? a.v4 : a.v6;
}

function withPrefix(ip: string, family: Family): string {
  return ip.includes('/') ? ip : `${ip}/${family === 4 ? 32 : 128}`;
}

function neg(not: boolean | undefined): string {
  return not ? '! ' : '';
}

/**
 * The match and target part of one rule, in the order iptables-save prints it: `-s`, `-d`, `-o`, `-p` first,
 * then the `-m` modules in model order. `dst` overrides the destination (one rule per probe target IP).
 */
export function ruleSpec(rule: Rule, family: Family, dst?: string): string {
  const head: string[] = [];
  const mods: string[] = [];
  let src = '';
  let dest = dst ? `-d ${withPrefix(dst, family)}` : '';
  let oif = '';
  let proto = '';
  for (const m of rule.matches) {
    switch (m.kind) {
      case 'src':
        src = `${neg(m.not)}-s ${addr(m.addr, family)}`;
        break;
      case 'dst':
        dest = `${neg(m.not)}-d ${addr(m.addr, family)}`;
        break;
      case 'probeTargets':
        break;
      case 'oif':
        oif = `${neg(m.not)}-o ${m.name}`;
        break;
      case 'proto':
        proto = `-p ${m.proto}`;
        break;
      default:
        mods.push(moduleMatch(m, rule));
    }
  }
  for (const part of [src, dest, oif, proto]) if (part) head.push(part);
  return [...head, ...mods, target(rule.target, family)].join(' ');
}

function l4(rule: Rule): string {
  const p = rule.matches.find((m) => m.kind === 'proto');
  return p && p.kind === 'proto' ? p.proto : 'tcp';
}

function moduleMatch(m: Match, rule: Rule): string {
  switch (m.kind) {
    case 'dport':
      return `-m ${l4(rule)} ${neg(m.not)}--dport ${m.port}`;
    case 'sport':
      return `-m ${l4(rule)} --sport ${m.port}`;
    case 'mark':
      return `-m mark ${neg(m.not)}--mark ${hex(m.value)}/${hex(m.mask)}`;
    case 'connmark':
      return `-m connmark --mark ${hex(m.value)}/${hex(m.mask)}`;
    case 'socketExists':
      return '-m owner --socket-exists';
    default:
      throw new Error(`BUG: match ${m.kind} is not a module match`);
  }
}

function target(t: Target, family: Family): string {
  switch (t.kind) {
    case 'accept':
      return '-j ACCEPT';
    case 'redirect':
      return `-j REDIRECT --to-ports ${t.port}`;
    case 'setConnmark':
      return `-j CONNMARK --set-xmark ${hex(t.value)}/${hex(t.mask)}`;
    case 'restoreMark':
      return `-j CONNMARK --restore-mark --nfmask ${hex(RESTORE_MASK)} --ctmask ${hex(RESTORE_MASK)}`;
    case 'ctZone':
      return `-j CT --zone ${t.zone}`;
    case 'snat':
      return `-j SNAT --to-source ${family === 4 ? t.addr.v4 : t.addr.v6}`;
  }
}

/** `-A <chain> …` lines of a table for one family. */
export function ruleLines(set: RuleSet, table: Table, family: Family): string[] {
  const out: string[] = [];
  for (const hook of hooksOf(set, table)) {
    const chain = iptablesChain(hook);
    for (const rule of set.rules) {
      if (rule.chain.table !== table || rule.chain.hook !== hook) continue;
      if (rule.matches.some((m) => m.kind === 'probeTargets')) {
        const ips = family === 4 ? set.probes.v4 : set.probes.v6;
        for (const ip of ips) out.push(`-A ${chain} ${ruleSpec(rule, family, ip)}`);
      } else if (isFamilySpecific(rule) || set.families.includes(family)) {
        out.push(`-A ${chain} ${ruleSpec(rule, family)}`);
      }
    }
  }
  return out;
}

/** The jump line from the built-in chain of `hook` to ours, exactly as iptables-save prints it. */
export function jumpLine(hook: Hook): string {
  return `-A ${builtinChain(hook)} -j ${iptablesChain(hook)}`;
}

/**
 * iptables-restore --noflush input applying `set` for one family. With `current` (parsed iptables-save of
 * the target netns) jumps that already exist are not added again and our chains left in tables the set no
 * longer uses (e.g. `raw` after DNS capture was switched off) are removed; with `null` the fresh form is
 * rendered (golden files).
 */
export function renderRestore(set: RuleSet, family: Family, current: SavedTables | null): string {
  const ours = set.scope === 'pod' ? POD_CHAINS : HOST_CHAINS;
  const out: string[] = [];
  const tables = tablesOf(set);
  if (current) {
    for (const [name, saved] of current) {
      if (tables.includes(name as Table)) continue;
      const section = removalSection(name, saved, ours);
      if (section) out.push(...section);
    }
  }
  for (const table of tables) {
    const hooks = hooksOf(set, table);
    out.push(`*${table}`);
    for (const hook of hooks) out.push(`:${iptablesChain(hook)} - [0:0]`);
    const saved = current?.get(table);
    // Stale chains of ours in a table we still use (a hook we no longer need).
    if (saved) {
      for (const chain of ours) {
        if (!saved.chains.has(chain) || hooks.some((h) => iptablesChain(h) === chain)) continue;
        for (const line of saved.rules) if (isJumpTo(line, chain)) out.push(line.replace(/^-A /, '-D '));
        out.push(`:${chain} - [0:0]`, `-X ${chain}`);
      }
    }
    for (const hook of hooks) {
      const jump = jumpLine(hook);
      if (!saved?.rules.includes(jump)) out.push(jump);
    }
    out.push(...ruleLines(set, table, family));
    out.push('COMMIT');
  }
  return `${out.join('\n')}\n`;
}

function isJumpTo(line: string, chain: string): boolean {
  return /^-A [A-Z]+ -j /.test(line) && line.endsWith(` -j ${chain}`);
}

function removalSection(table: string, saved: SavedTable, ours: readonly string[]): string[] | null {
  const present = ours.filter((c) => saved.chains.has(c));
  const jumps = saved.rules.filter((line) => ours.some((c) => isJumpTo(line, c)));
  if (present.length === 0 && jumps.length === 0) return null;
  const out = [`*${table}`];
  // Every jump to our chains, as often as it occurs (a duplicate left by an older agent goes too).
  for (const line of jumps) out.push(line.replace(/^-A /, '-D '));
  for (const chain of present) out.push(`:${chain} - [0:0]`);
  for (const chain of present) out.push(`-X ${chain}`);
  out.push('COMMIT');
  return out;
}

/**
 * iptables-restore --noflush input removing our chains and the jumps to them from every table of `current`;
 * null when there is nothing of ours.
 */
export function renderRemoval(current: SavedTables, ours: readonly string[]): string | null {
  const out: string[] = [];
  for (const [name, saved] of current) {
    const section = removalSection(name, saved, ours);
    if (section) out.push(...section);
  }
  return out.length === 0 ? null : `${out.join('\n')}\n`;
}
