/**
 * The iptables ruleset of the lab service proxy, rendered as `iptables-restore --noflush` input (pure; see
 * proxy.ts for applying it). The layout follows kube-proxy's iptables mode so that the istio-cni agent and
 * anyone reading `iptables-save` on a node see the familiar shape:
 *
 *   nat PREROUTING, OUTPUT → LAB-SERVICES                 (jump rules installed once, see proxy.ts)
 *   nat POSTROUTING        → LAB-POSTROUTING              MASQUERADE what LAB-MARK-MASQ marked (hairpin)
 *   LAB-SERVICES:  -d <ClusterIP> -p <proto> --dport <port> → LAB-SVC-<hash>
 *                  -m addrtype --dst-type LOCAL → LAB-NODEPORTS (when any NodePort exists)
 *   LAB-SVC-<hash>: one rule per endpoint, `-m statistic --mode random --probability 1/(n-i)` for all but the
 *                   last → LAB-SEP-<hash>   (uniform choice, as kube-proxy)
 *   LAB-SEP-<hash>: -s <endpoint> → LAB-MARK-MASQ (a pod reaching itself through its Service); DNAT to ip:port
 *   filter OUTPUT, FORWARD → LAB-SERVICES: REJECT to ClusterIP:port of services with no ready endpoint
 *
 * Every chain we own is declared in every restore, which flushes it (noflush mode only keeps chains that are
 * not named), so a sync is a complete, atomic replacement; chains of services that disappeared are deleted in
 * the same transaction.
 */
import { createHash } from 'node:crypto';

export type ProxyProtocol = 'TCP' | 'UDP' | 'SCTP';

export interface ProxyEndpoint {
  readonly ip: string;
  readonly port: number;
}

export interface ProxyServicePort {
  /** Service port name ('' for an unnamed single port). */
  readonly name: string;
  readonly protocol: ProxyProtocol;
  readonly port: number;
  /** NodePort (optional): the same endpoints on every node address of this port. */
  readonly nodePort?: number;
  /** Ready endpoints only (EndpointSlice conditions.ready). */
  readonly endpoints: readonly ProxyEndpoint[];
}

export interface ProxyService {
  readonly namespace: string;
  readonly name: string;
  /** IPv4 ClusterIPs; empty (or "None") for headless services, which the proxy ignores. */
  readonly clusterIPs: readonly string[];
  readonly ports: readonly ProxyServicePort[];
}

export const CHAIN = {
  services: 'LAB-SERVICES',
  nodePorts: 'LAB-NODEPORTS',
  postrouting: 'LAB-POSTROUTING',
  markMasq: 'LAB-MARK-MASQ',
  svcPrefix: 'LAB-SVC-',
  sepPrefix: 'LAB-SEP-',
} as const;

/** kube-proxy's masquerade bit. */
export const MASQ_MARK = '0x4000';

/** Chain name from a hash of its identity (iptables allows 28 characters). */
function chainName(prefix: string, key: string): string {
  const h = createHash('sha256').update(key).digest('base64url').replace(/[-_]/g, 'X').toUpperCase();
  return `${prefix}${h.slice(0, 16)}`;
}

function comment(text: string): string {
  return `-m comment --comment "${text.replace(/["\\]/g, '')}"`;
}

function proto(p: ProxyProtocol): string {
  return p.toLowerCase();
}

function isIpv4(ip: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(ip);
}

export interface RenderedRules {
  /** iptables-restore input. */
  readonly text: string;
  /** The per-service/endpoint nat chains this ruleset defines (for stale-chain removal on the next sync). */
  readonly chains: ReadonlySet<string>;
}

/** Renders the complete ruleset; `stale` are previously-owned chains to delete now. */
export function renderRules(
  services: readonly ProxyService[],
  stale: ReadonlySet<string> = new Set(),
): RenderedRules {
  const natChains: string[] = [CHAIN.services, CHAIN.nodePorts, CHAIN.postrouting, CHAIN.markMasq];
  const natRules: string[] = [];
  const filterRules: string[] = [];
  const owned = new Set<string>();
  const sorted = [...services].sort((a, b) =>
    `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`),
  );

  natRules.push(
    `-A ${CHAIN.postrouting} -m mark ! --mark ${MASQ_MARK}/${MASQ_MARK} -j RETURN`,
    `-A ${CHAIN.postrouting} -j MARK --xor-mark ${MASQ_MARK}`,
    `-A ${CHAIN.postrouting} ${comment('lab service traffic requiring SNAT')} -j MASQUERADE`,
    `-A ${CHAIN.markMasq} -j MARK --or-mark ${MASQ_MARK}`,
  );
  let anyNodePort = false;
  for (const svc of sorted) {
    const vips = svc.clusterIPs.filter(isIpv4);
    for (const port of svc.ports) {
      const id = `${svc.namespace}/${svc.name}:${port.name}`;
      const p = proto(port.protocol);
      const eps = [...port.endpoints]
        .filter((e) => isIpv4(e.ip))
        .sort((a, b) => `${a.ip}:${a.port}`.localeCompare(`${b.ip}:${b.port}`));
      if (eps.length === 0) {
        for (const vip of vips) {
          filterRules.push(
            `-A ${CHAIN.services} ${comment(`${id} has no endpoints`)} -d ${vip}/32 -p ${p} -m ${p} --dport ${port.port} -j REJECT --reject-with icmp-port-unreachable`,
          );
        }
        continue;
      }
      if (vips.length === 0 && !port.nodePort) continue;
      const svcChain = chainName(CHAIN.svcPrefix, `${id}/${port.protocol}`);
      natChains.push(svcChain);
      owned.add(svcChain);
      for (const vip of vips) {
        natRules.push(
          `-A ${CHAIN.services} ${comment(`${id} cluster IP`)} -d ${vip}/32 -p ${p} -m ${p} --dport ${port.port} -j ${svcChain}`,
        );
      }
      if (port.nodePort) {
        anyNodePort = true;
        natRules.push(
          `-A ${CHAIN.nodePorts} ${comment(id)} -p ${p} -m ${p} --dport ${port.nodePort} -j ${CHAIN.markMasq}`,
        );
        natRules.push(
          `-A ${CHAIN.nodePorts} ${comment(id)} -p ${p} -m ${p} --dport ${port.nodePort} -j ${svcChain}`,
        );
      }
      eps.forEach((ep, i) => {
        const sep = chainName(CHAIN.sepPrefix, `${id}/${port.protocol}/${ep.ip}:${ep.port}`);
        natChains.push(sep);
        owned.add(sep);
        const n = eps.length - i;
        const stat = n > 1 ? ` -m statistic --mode random --probability ${(1 / n).toFixed(10)}` : '';
        natRules.push(`-A ${svcChain} ${comment(`${id} -> ${ep.ip}:${ep.port}`)}${stat} -j ${sep}`);
        natRules.push(`-A ${sep} ${comment(id)} -s ${ep.ip}/32 -j ${CHAIN.markMasq}`);
        natRules.push(
          `-A ${sep} ${comment(id)} -p ${p} -m ${p} -j DNAT --to-destination ${ep.ip}:${ep.port}`,
        );
      });
    }
  }
  if (anyNodePort) {
    natRules.push(
      `-A ${CHAIN.services} ${comment('lab service nodeports; must be last')} -m addrtype --dst-type LOCAL -j ${CHAIN.nodePorts}`,
    );
  }
  const toDelete = [...stale].filter((c) => !owned.has(c));
  const lines = [
    '*nat',
    ...natChains.map((c) => `:${c} - [0:0]`),
    ...toDelete.map((c) => `:${c} - [0:0]`),
    ...natRules,
    ...toDelete.map((c) => `-X ${c}`),
    'COMMIT',
    '*filter',
    `:${CHAIN.services} - [0:0]`,
    ...filterRules,
    'COMMIT',
    '',
  ];
  return { text: lines.join('\n'), chains: owned };
}

/** The jump rules from built-in chains into ours: [table, chain, rule args]. */
export const JUMPS: readonly (readonly [string, string, readonly string[]])[] = [
  ['nat', 'PREROUTING', ['-m', 'comment', '--comment', 'lab service portals', '-j', CHAIN.services]],
  ['nat', 'OUTPUT', ['-m', 'comment', '--comment', 'lab service portals', '-j', CHAIN.services]],
  ['nat', 'POSTROUTING', ['-m', 'comment', '--comment', 'lab postrouting rules', '-j', CHAIN.postrouting]],
  [
    'filter',
    'OUTPUT',
    [
      '-m',
      'conntrack',
      '--ctstate',
      'NEW',
      '-m',
      'comment',
      '--comment',
      'lab service portals',
      '-j',
      CHAIN.services,
    ],
  ],
  [
    'filter',
    'FORWARD',
    [
      '-m',
      'conntrack',
      '--ctstate',
      'NEW',
      '-m',
      'comment',
      '--comment',
      'lab service portals',
      '-j',
      CHAIN.services,
    ],
  ],
];

/** Our chains present in an `iptables-save` dump (to delete after a crash or on teardown). */
export function ownedChainsIn(save: string): { nat: Set<string>; filter: Set<string> } {
  const out = { nat: new Set<string>(), filter: new Set<string>() };
  let table: 'nat' | 'filter' | null = null;
  for (const line of save.split('\n')) {
    if (line.startsWith('*')) table = line === '*nat' ? 'nat' : line === '*filter' ? 'filter' : null;
    const m = /^:(LAB-[A-Z0-9-]+) /.exec(line);
    if (m?.[1] && table) out[table].add(m[1]);
  }
  return out;
}
