/**
 * The one rule model for in-pod traffic redirection and the host-side probe SNAT. Both renderers
 * (`iptables.ts` → iptables-restore input, `nftables.ts` → an `nft -f` script) read the same `RuleSet`, so
 * the two forms cannot drift apart; the golden files in `testdata/` pin both.
 *
 * The rules follow Istio's in-pod mode (istio/istio `cni/pkg/iptables/iptables.go`, facts only) and
 * ARCHITECTURE.md "In-pod redirection rules":
 * - mangle: a packet carrying ztunnel's mark 0x539/0xfff gets connmark 0x111/0xfff; on output the mark is
 *   restored from the connmark so replies of ztunnel's connections keep it.
 * - nat OUTPUT: accept replies to the probe SNAT address; (DNS → 15053 when DNS capture is on); accept TCP
 *   marked 0x111; accept traffic to the loopback interface; REDIRECT other TCP not to 127.0.0.1 and not
 *   marked 0x539 to 15001.
 * - nat PREROUTING: accept TCP from the probe SNAT address; REDIRECT TCP not to 127.0.0.1, not to 15008,
 *   not marked 0x539 to 15006 (skipped when inbound capture is bypassed).
 * - policy routing: `ip rule fwmark 0x111/0xfff pref 32764 lookup 100`, `ip route local 0.0.0.0/0 dev lo
 *   table 100` (and the IPv6 equivalents).
 * - host (the node netns): locally originated TCP (a socket exists: kubelet probes) to a captured pod IP is
 *   SNATed to the probe address, so the pod's rules can tell probes from forwarded traffic.
 */

/** ztunnel marks every socket it opens in a pod netns with this (ARCHITECTURE.md: SO_MARK 1337). */
export const INPOD_MARK = 0x539;
export const INPOD_MASK = 0xfff;
/** The connmark/fwmark that steers ztunnel's connections' packets through routing table 100. */
export const INPOD_TPROXY_MARK = 0x111;
export const INPOD_TPROXY_MASK = 0xfff;
/** `CONNMARK --restore-mark` copies the whole mark (Istio restores with full masks). */
export const RESTORE_MASK = 0xffffffff;
export const ROUTE_TABLE_INBOUND = 100;
/** Priority of the fwmark rule: just before the kernel's `main` (32766) and `default` (32767) rules. */
export const ROUTE_RULE_PREF = 32764;

export const ZTUNNEL_OUTBOUND_PORT = 15001;
export const ZTUNNEL_INBOUND_PLAINTEXT_PORT = 15006;
export const ZTUNNEL_INBOUND_PORT = 15008;
export const DNS_CAPTURE_PORT = 15053;
export const DNS_PORT = 53;

/** Kubelet probes reach captured pods from this source (ARCHITECTURE.md "probe SNAT address"). */
export const PROBE_SNAT_V4 = '169.254.7.127';
/** Istio's IPv6 probe SNAT address (HOST_PROBE_V6_SNAT_ADDRESS default). */
export const PROBE_SNAT_V6 = 'fd16:9254:7127:1337:ffff:ffff:ffff:ffff';

/** Our iptables chains (Istio's names), one per hook, jumped to from the built-in chain of that hook. */
export const CHAIN_PREROUTING = 'ISTIO_PRERT';
export const CHAIN_OUTPUT = 'ISTIO_OUTPUT';
export const CHAIN_POSTROUTING = 'ISTIO_POSTRT';
/** The one nftables table holding every in-pod rule (nft backend). */
export const NFT_POD_TABLE = 'istio-ambient';
/** The nftables table holding the host-side probe SNAT (nft backend). */
export const NFT_HOST_TABLE = 'istio-ambient-host';

export type Family = 4 | 6;
/** How rules are programmed: iptables-restore (default, like Istio) or native nftables. */
export type Backend = 'iptables' | 'nftables';
export type Table = 'raw' | 'mangle' | 'nat';
export type Hook = 'prerouting' | 'output' | 'postrouting';

/** Where a rule lives: iptables renders it in our chain for the hook, nftables in a base chain of our table. */
export interface ChainRef {
  readonly table: Table;
  readonly hook: Hook;
}

/** An address that differs per family (loopback, the probe SNAT address). */
export interface PerFamily {
  readonly v4: string;
  readonly v6: string;
}

export const LOOPBACK: PerFamily = { v4: '127.0.0.1/32', v6: '::1/128' };
export const PROBE_SOURCE: PerFamily = { v4: `${PROBE_SNAT_V4}/32`, v6: `${PROBE_SNAT_V6}/128` };

/**
 * One match of a rule. iptables prints `-s/-d/-o/-p` first and the `-m` modules in the order given here,
 * so the model lists modules in the order `iptables-save` shows them (the root tests compare verbatim).
 */
export type Match =
  | { readonly kind: 'src'; readonly addr: PerFamily; readonly not?: boolean }
  | { readonly kind: 'dst'; readonly addr: PerFamily; readonly not?: boolean }
  | { readonly kind: 'oif'; readonly name: string; readonly not?: boolean }
  | { readonly kind: 'proto'; readonly proto: 'tcp' | 'udp' }
  | { readonly kind: 'dport'; readonly port: number; readonly not?: boolean }
  | { readonly kind: 'sport'; readonly port: number }
  | { readonly kind: 'mark'; readonly value: number; readonly mask: number; readonly not?: boolean }
  | { readonly kind: 'connmark'; readonly value: number; readonly mask: number }
  /** The packet belongs to a local socket (host side: kubelet's probe connections, not forwarded traffic). */
  | { readonly kind: 'socketExists' }
  /** Destination is one of the captured pods' IPs (Istio keeps them in an ipset; see HostProbes). */
  | { readonly kind: 'probeTargets' };

export type Target =
  | { readonly kind: 'accept' }
  | { readonly kind: 'redirect'; readonly port: number }
  /** `CONNMARK --set-xmark value/mask`: clear `mask` bits of the connmark, then set `value`. */
  | { readonly kind: 'setConnmark'; readonly value: number; readonly mask: number }
  /** `CONNMARK --restore-mark` with full masks: packet mark := connmark. */
  | { readonly kind: 'restoreMark' }
  | { readonly kind: 'ctZone'; readonly zone: number }
  | { readonly kind: 'snat'; readonly addr: PerFamily };

export interface Rule {
  readonly chain: ChainRef;
  readonly matches: readonly Match[];
  readonly target: Target;
  /** One line on why the rule exists; rendered as a comment in the golden files and docs. */
  readonly why: string;
}

/** Policy routing that sends packets with the 0x111 fwmark to the local table (per family). */
export interface Routing {
  readonly fwmark: number;
  readonly mask: number;
  readonly pref: number;
  readonly table: number;
}

/** Pod IPs whose probe traffic the host SNATs (the host rule set's `probeTargets`). */
export interface HostProbes {
  readonly v4: readonly string[];
  readonly v6: readonly string[];
}

export interface RuleSet {
  /** `pod` rules go into a pod netns; `host` rules into the node netns the agent runs in. */
  readonly scope: 'pod' | 'host';
  readonly families: readonly Family[];
  readonly rules: readonly Rule[];
  readonly routing: Routing | null;
  /** Only for the host scope: the addresses `probeTargets` stands for. */
  readonly probes: HostProbes;
}

/** Per-pod switches (Istio's PodLevelOverrides plus the global DNS setting). */
export interface PodRuleOptions {
  /** Families to program: 4 always when the pod has an IPv4 address, 6 when it has IPv6. */
  readonly families: readonly Family[];
  /** Redirect DNS (udp/tcp 53) to ztunnel's 15053. Off by default until ztunnel serves DNS. */
  readonly dnsCapture: boolean;
  /** `ambient.istio.io/bypass-inbound-capture: "true"` (Istio's ingress mode): no inbound redirection. */
  readonly bypassInbound: boolean;
}

const NAT_PRERT: ChainRef = { table: 'nat', hook: 'prerouting' };
const NAT_OUTPUT: ChainRef = { table: 'nat', hook: 'output' };
const NAT_POSTRT: ChainRef = { table: 'nat', hook: 'postrouting' };
const MANGLE_PRERT: ChainRef = { table: 'mangle', hook: 'prerouting' };
const MANGLE_OUTPUT: ChainRef = { table: 'mangle', hook: 'output' };
const RAW_PRERT: ChainRef = { table: 'raw', hook: 'prerouting' };
const RAW_OUTPUT: ChainRef = { table: 'raw', hook: 'output' };

const NOT_INPOD_MARK: Match = { kind: 'mark', value: INPOD_MARK, mask: INPOD_MASK, not: true };
const NOT_LOOPBACK: Match = { kind: 'dst', addr: LOOPBACK, not: true };

/** The in-pod rule set for one pod, in Istio's order. */
export function podRules(opts: PodRuleOptions): RuleSet {
  const rules: Rule[] = [];
  if (!opts.bypassInbound) {
    rules.push({
      chain: MANGLE_PRERT,
      matches: [{ kind: 'mark', value: INPOD_MARK, mask: INPOD_MASK }],
      target: { kind: 'setConnmark', value: INPOD_TPROXY_MARK, mask: INPOD_TPROXY_MASK },
      why: "ztunnel's packets (mark 0x539) tag their connection with 0x111",
    });
    rules.push({
      chain: NAT_PRERT,
      matches: [
        { kind: 'src', addr: PROBE_SOURCE },
        { kind: 'proto', proto: 'tcp' },
      ],
      target: { kind: 'accept' },
      why: 'kubelet probes, SNATed to the probe address on the node, are not captured',
    });
  }
  rules.push({
    chain: NAT_OUTPUT,
    matches: [
      { kind: 'dst', addr: PROBE_SOURCE },
      { kind: 'proto', proto: 'tcp' },
    ],
    target: { kind: 'accept' },
    why: 'replies to probes go straight back',
  });
  if (!opts.bypassInbound) {
    rules.push({
      chain: NAT_PRERT,
      matches: [
        NOT_LOOPBACK,
        { kind: 'proto', proto: 'tcp' },
        { kind: 'dport', port: ZTUNNEL_INBOUND_PORT, not: true },
        NOT_INPOD_MARK,
      ],
      target: { kind: 'redirect', port: ZTUNNEL_INBOUND_PLAINTEXT_PORT },
      why: 'inbound TCP (except HBONE on 15008) goes to ztunnel inbound plaintext 15006',
    });
  }
  rules.push({
    chain: MANGLE_OUTPUT,
    matches: [{ kind: 'connmark', value: INPOD_TPROXY_MARK, mask: INPOD_TPROXY_MASK }],
    target: { kind: 'restoreMark' },
    why: "packets of ztunnel's connections get the 0x111 mark back from the connmark",
  });
  if (opts.dnsCapture) {
    rules.push({
      chain: NAT_OUTPUT,
      matches: [
        { kind: 'oif', name: 'lo', not: true },
        { kind: 'proto', proto: 'udp' },
        NOT_INPOD_MARK,
        { kind: 'dport', port: DNS_PORT },
      ],
      target: { kind: 'redirect', port: DNS_CAPTURE_PORT },
      why: 'DNS over UDP to a non-local resolver goes to the ztunnel DNS proxy',
    });
    rules.push({
      chain: NAT_OUTPUT,
      matches: [
        NOT_LOOPBACK,
        { kind: 'proto', proto: 'tcp' },
        { kind: 'dport', port: DNS_PORT },
        NOT_INPOD_MARK,
      ],
      target: { kind: 'redirect', port: DNS_CAPTURE_PORT },
      why: 'DNS over TCP goes to the ztunnel DNS proxy',
    });
    rules.push({
      chain: RAW_OUTPUT,
      matches: [
        { kind: 'proto', proto: 'udp' },
        { kind: 'mark', value: INPOD_MARK, mask: INPOD_MASK },
        { kind: 'dport', port: DNS_PORT },
      ],
      target: { kind: 'ctZone', zone: 1 },
      why: 'proxy → upstream DNS in its own conntrack zone (istio/istio#33469)',
    });
    rules.push({
      chain: RAW_PRERT,
      matches: [{ kind: 'proto', proto: 'udp' }, NOT_INPOD_MARK, { kind: 'sport', port: DNS_PORT }],
      target: { kind: 'ctZone', zone: 1 },
      why: 'upstream DNS → proxy replies in the same zone',
    });
  }
  rules.push({
    chain: NAT_OUTPUT,
    matches: [
      { kind: 'proto', proto: 'tcp' },
      { kind: 'mark', value: INPOD_TPROXY_MARK, mask: INPOD_TPROXY_MASK },
    ],
    target: { kind: 'accept' },
    why: "ztunnel's own connections (0x111) are not redirected",
  });
  rules.push({
    chain: NAT_OUTPUT,
    matches: [NOT_LOOPBACK, { kind: 'oif', name: 'lo' }],
    target: { kind: 'accept' },
    why: 'an app calling itself through its own pod IP stays on lo',
  });
  rules.push({
    chain: NAT_OUTPUT,
    matches: [NOT_LOOPBACK, { kind: 'proto', proto: 'tcp' }, NOT_INPOD_MARK],
    target: { kind: 'redirect', port: ZTUNNEL_OUTBOUND_PORT },
    why: 'all other outbound TCP goes to ztunnel outbound 15001',
  });
  return {
    scope: 'pod',
    families: normaliseFamilies(opts.families),
    rules,
    routing: {
      fwmark: INPOD_TPROXY_MARK,
      mask: INPOD_TPROXY_MASK,
      pref: ROUTE_RULE_PREF,
      table: ROUTE_TABLE_INBOUND,
    },
    probes: { v4: [], v6: [] },
  };
}

/** The host (node netns) rule set: probe SNAT for the given captured pod IPs. */
export function hostRules(families: readonly Family[], probes: HostProbes): RuleSet {
  return {
    scope: 'host',
    families: normaliseFamilies(families),
    rules: [
      {
        chain: NAT_POSTRT,
        matches: [{ kind: 'probeTargets' }, { kind: 'proto', proto: 'tcp' }, { kind: 'socketExists' }],
        target: { kind: 'snat', addr: { v4: PROBE_SNAT_V4, v6: PROBE_SNAT_V6 } },
        why: 'node-local connections (kubelet probes) to captured pods come from the probe address',
      },
    ],
    routing: null,
    probes: {
      v4: [...new Set(probes.v4)].sort(),
      v6: [...new Set(probes.v6)].sort(),
    },
  };
}

function normaliseFamilies(families: readonly Family[]): Family[] {
  const out: Family[] = [];
  if (families.includes(4)) out.push(4);
  if (families.includes(6)) out.push(6);
  return out;
}

/** The custom chain name iptables uses for a hook. */
export function iptablesChain(hook: Hook): string {
  switch (hook) {
    case 'prerouting':
      return CHAIN_PREROUTING;
    case 'output':
      return CHAIN_OUTPUT;
    case 'postrouting':
      return CHAIN_POSTROUTING;
  }
}

/** The built-in chain a hook corresponds to. */
export function builtinChain(hook: Hook): string {
  return hook.toUpperCase();
}

/** True when the rule depends on the address family (it has an address match or an SNAT). */
export function isFamilySpecific(rule: Rule): boolean {
  return (
    rule.target.kind === 'snat' ||
    rule.matches.some((m) => m.kind === 'src' || m.kind === 'dst' || m.kind === 'probeTargets')
  );
}

/** The tables a rule set touches, in the order iptables-restore input lists them. */
export function tablesOf(set: RuleSet): Table[] {
  const order: Table[] = ['mangle', 'nat', 'raw'];
  return order.filter((t) => set.rules.some((r) => r.chain.table === t));
}

/** Hooks used in a table, in Istio's jump order (prerouting first, then output, then postrouting). */
export function hooksOf(set: RuleSet, table: Table): Hook[] {
  const order: Hook[] = ['prerouting', 'output', 'postrouting'];
  return order.filter((h) => set.rules.some((r) => r.chain.table === table && r.chain.hook === h));
}

/** `0x539` style hex, as iptables-save prints marks. */
export function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

/** Families of a list of IPs (`10.0.0.1`, `fd00::1`, with or without a prefix length). */
export function familiesOf(ips: readonly string[]): Family[] {
  const out = new Set<Family>();
  for (const ip of ips) out.add(ip.includes(':') ? 6 : 4);
  if (out.size === 0) out.add(4);
  return normaliseFamilies([...out]);
}

/** The `ip -batch` command (run under `ip -4`/`ip -6`) adding or deleting the fwmark rule. */
export function routeRuleCommand(r: Routing, op: 'add' | 'del'): string {
  return `rule ${op} fwmark ${hex(r.fwmark)}/${hex(r.mask)} pref ${r.pref} lookup ${r.table}`;
}

/** The `ip -batch` command adding (replace: idempotent) or deleting the local route of table 100. */
export function routeLocalCommand(r: Routing, family: Family, op: 'add' | 'del'): string {
  const dst = family === 4 ? '0.0.0.0/0' : '::/0';
  return `route ${op === 'add' ? 'replace' : 'del'} local ${dst} dev lo table ${r.table}`;
}

/** True when `ip rule show` output has our fwmark rule (e.g. `32764:\tfrom all fwmark 0x111/0xfff lookup 100`). */
export function hasRouteRule(ipRuleShow: string, r: Routing): boolean {
  const want = `fwmark ${hex(r.fwmark)}/${hex(r.mask)} lookup ${r.table}`;
  return ipRuleShow.split('\n').some((l) => l.startsWith(`${r.pref}:`) && l.includes(want));
}

/** True when `ip route show table N` output has the local default route via lo. */
export function hasLocalRoute(ipRouteShow: string): boolean {
  return ipRouteShow.split('\n').some((l) => /^local (default|0\.0\.0\.0\/0|::\/0) dev lo\b/.test(l.trim()));
}
