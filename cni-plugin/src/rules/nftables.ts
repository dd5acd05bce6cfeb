/**
 * Native nftables form of the rule model: one `inet` table per scope (`istio-ambient` in a pod netns,
 * `istio-ambient-host` in the node netns) whose base chains carry the rules directly. The script first
 * declares, deletes and re-creates the table in one `nft -f` transaction, so applying is atomic and
 * idempotent and removal (`delete table`) leaves the netns exactly as before.
 */
import {
  type Family,
  type Hook,
  isFamilySpecific,
  type Match,
  NFT_HOST_TABLE,
  NFT_POD_TABLE,
  type PerFamily,
  type Rule,
  type RuleSet,
  type Table,
  type Target,
} from './model.ts';

/** Base chain per (table, hook): type, hook and priority as iptables-nft registers them. */
const BASE_CHAINS: ReadonlyArray<{ table: Table; hook: Hook; decl: string }> = [
  { table: 'raw', hook: 'prerouting', decl: 'type filter hook prerouting priority raw; policy accept;' },
  { table: 'raw', hook: 'output', decl: 'type filter hook output priority raw; policy accept;' },
  {
    table: 'mangle',
    hook: 'prerouting',
    decl: 'type filter hook prerouting priority mangle; policy accept;',
  },
  { table: 'mangle', hook: 'output', decl: 'type route hook output priority mangle; policy accept;' },
  { table: 'nat', hook: 'prerouting', decl: 'type nat hook prerouting priority dstnat; policy accept;' },
  // `dstnat` is not a valid keyword for the output hook in nft 1.0; -100 is its value.
  { table: 'nat', hook: 'output', decl: 'type nat hook output priority -100; policy accept;' },
  { table: 'nat', hook: 'postrouting', decl: 'type nat hook postrouting priority srcnat; policy accept;' },
];

export function nftTableName(set: Pick<RuleSet, 'scope'>): string {
  return set.scope === 'pod' ? NFT_POD_TABLE : NFT_HOST_TABLE;
}

/** `mangle-prerouting` etc. */
export function nftChainName(table: Table, hook: Hook): string {
  return `${table}-${hook}`;
}

function hex8(n: number): string {
  return `0x${n.toString(16).padStart(8, '0')}`;
}

function plainAddr(a: string): string {
  return a.replace(/\/(32|128)$/, '');
}

function ipKw(family: Family): string {
  return family === 4 ? 'ip' : 'ip6';
}

function op(not: boolean | undefined): string {
  return not ? '!= ' : '';
}

function famAddr(a: PerFamily, family: Family): string {
  return plainAddr(family === 4 ? a.v4 : a.v6);
}

function matchExpr(m: Match, rule: Rule, family: Family | null): string | null {
  switch (m.kind) {
    case 'src':
      return `${ipKw(family ?? 4)} saddr ${op(m.not)}${famAddr(m.addr, family ?? 4)}`;
    case 'dst':
      return `${ipKw(family ?? 4)} daddr ${op(m.not)}${famAddr(m.addr, family ?? 4)}`;
    case 'probeTargets':
      return `${ipKw(family ?? 4)} daddr @probe-v${family ?? 4}`;
    case 'oif':
      return `oifname ${op(m.not)}"${m.name}"`;
    case 'proto':
      // A port match names the protocol itself (`tcp dport …`).
      return rule.matches.some((x) => x.kind === 'dport' || x.kind === 'sport')
        ? null
        : `meta l4proto ${m.proto}`;
    case 'dport':
    case 'sport': {
      const p = rule.matches.find((x) => x.kind === 'proto');
      const proto = p && p.kind === 'proto' ? p.proto : 'tcp';
      const not = m.kind === 'dport' ? m.not : false;
      return `${proto} ${m.kind} ${op(not)}${m.port}`;
    }
    case 'mark':
      return `meta mark & ${hex8(m.mask)} ${m.not ? '!=' : '=='} ${hex8(m.value)}`;
    case 'connmark':
      return `ct mark & ${hex8(m.mask)} == ${hex8(m.value)}`;
    case 'socketExists':
      // `meta skuid` only evaluates for packets with a local socket: the nft spelling of --socket-exists.
      return 'meta skuid >= 0';
  }
}

function targetExpr(t: Target, family: Family | null): string {
  switch (t.kind) {
    case 'accept':
      return 'accept';
    case 'redirect':
      return `redirect to :${t.port}`;
    case 'setConnmark':
      return `ct mark set ct mark & ${hex8(~t.mask >>> 0)} | ${hex8(t.value)}`;
    case 'restoreMark':
      return 'meta mark set ct mark';
    case 'ctZone':
      return `ct zone set ${t.zone}`;
    case 'snat':
      return `snat ${ipKw(family ?? 4)} to ${famAddr(t.addr, family ?? 4)}`;
  }
}

/** The nft statements of one rule: one per family when it is family specific, else one (maybe nfproto-bound). */
export function ruleStatements(rule: Rule, families: readonly Family[]): string[] {
  if (isFamilySpecific(rule)) {
    return families.map((f) => statement(rule, f, null));
  }
  // Family-agnostic rule in an inet table: bind it to the one family programmed, like iptables would.
  const only = families.length === 1 ? families[0]! : null;
  return [statement(rule, null, only)];
}

function statement(rule: Rule, family: Family | null, nfproto: Family | null): string {
  const parts: string[] = [];
  if (nfproto) parts.push(`meta nfproto ${nfproto === 4 ? 'ipv4' : 'ipv6'}`);
  for (const m of rule.matches) {
    const e = matchExpr(m, rule, family);
    if (e) parts.push(e);
  }
  parts.push('counter', targetExpr(rule.target, family));
  return parts.join(' ');
}

/** The `nft -f` script that (re)creates the table of `set` atomically. */
export function renderNftApply(set: RuleSet): string {
  const table = nftTableName(set);
  const out: string[] = [`table inet ${table} {}`, `delete table inet ${table}`, `table inet ${table} {`];
  if (set.scope === 'host') {
    for (const family of set.families) {
      const ips = family === 4 ? set.probes.v4 : set.probes.v6;
      const type = family === 4 ? 'ipv4_addr' : 'ipv6_addr';
      const elements = ips.length > 0 ? `; elements = { ${ips.join(', ')} }` : '';
      out.push(`\tset probe-v${family} { type ${type}${elements}; }`);
    }
  }
  for (const base of BASE_CHAINS) {
    const rules = set.rules.filter((r) => r.chain.table === base.table && r.chain.hook === base.hook);
    if (rules.length === 0) continue;
    out.push(`\tchain ${nftChainName(base.table, base.hook)} {`, `\t\t${base.decl}`);
    for (const rule of rules) {
      out.push(`\t\t# ${rule.why}`);
      for (const s of ruleStatements(rule, set.families)) out.push(`\t\t${s}`);
    }
    out.push('\t}');
  }
  out.push('}');
  return `${out.join('\n')}\n`;
}

/** The `nft -f` script removing the table of a scope; succeeds whether or not it exists. */
export function renderNftRemove(scope: RuleSet['scope']): string {
  const table = nftTableName({ scope });
  return `table inet ${table} {}\ndelete table inet ${table}\n`;
}
