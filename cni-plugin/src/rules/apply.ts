/**
 * Applies and removes the rule model inside a network namespace by running the standard tools through
 * `nsenter --net=<path>` (iptables-restore/ip6tables-restore --noflush, nft -f, ip -batch). Every operation
 * first reads the namespace's current state in ONE process (a fixed shell script printing delimited
 * sections), so applying is idempotent (our chains are rewritten, missing jumps added, existing ones kept)
 * and removal takes away exactly what capture added, including the tables and base chains iptables-nft
 * creates on first use: the nft objects present before the first capture are recorded in the
 * `CaptureRecord` (persisted by the agent) and anything newer and empty is deleted on release.
 */
import { spawn } from 'node:child_process';
import { MeshError } from '../../../pkg/errors/index.ts';
import {
  HOST_CHAINS,
  POD_CHAINS,
  parseIptablesSave,
  renderRemoval,
  renderRestore,
  type SavedTables,
} from './iptables.ts';
import {
  type Backend,
  type Family,
  type HostProbes,
  hasLocalRoute,
  hasRouteRule,
  hostRules,
  type PodRuleOptions,
  podRules,
  type Routing,
  type RuleSet,
  routeLocalCommand,
  routeRuleCommand,
} from './model.ts';
import { renderNftApply, renderNftRemove } from './nftables.ts';

/** What capture changed in a pod netns, enough to undo it exactly; persisted with the pod's state. */
export interface CaptureRecord {
  readonly backend: Backend;
  readonly families: readonly Family[];
  /**
   * iptables-nft objects (`ip nat`, `ip nat PREROUTING`, …) that existed before the first capture; null
   * for the nftables backend or legacy iptables (nothing to clean there).
   */
  readonly preexisting: { readonly tables: readonly string[]; readonly chains: readonly string[] } | null;
  /** Routing entries that existed before capture (`4:rule`, `6:route`, …): left alone on release. */
  readonly preexistingRouting: readonly string[];
}

export interface ExecResult {
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs one command (argv[0] looked up in PATH) with optional stdin; rejects with MESH_ERR_CNI_RULES. */
export type Exec = (argv: readonly string[], stdin?: string) => Promise<ExecResult>;

/** A command that enters `netns` first; null = the current netns (the node netns for host rules). */
export function inNetns(netns: string | null, argv: readonly string[]): string[] {
  return netns === null ? [...argv] : ['nsenter', `--net=${netns}`, '--', ...argv];
}

/** Upper bound for one tool invocation: iptables-restore of a few dozen rules takes milliseconds. */
const COMMAND_TIMEOUT_MS = 15_000;

export const spawnExec: Exec = (argv, stdin) =>
  new Promise<ExecResult>((resolve, reject) => {
    const [cmd, ...args] = argv;
    if (!cmd) {
      reject(new MeshError('MESH_ERR_INTERNAL_BUG', 'BUG: empty command'));
      return;
    }
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], timeout: COMMAND_TIMEOUT_MS });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.once('error', (e) =>
      reject(
        new MeshError('MESH_ERR_CNI_RULES', `${argv.join(' ')}: ${e.message}`, {
          details: { command: cmd },
          cause: e,
        }),
      ),
    );
    child.once('close', (code, signal) => {
      const stdout = Buffer.concat(out).toString();
      const stderr = Buffer.concat(err).toString();
      if (code === 0) resolve({ stdout, stderr });
      else
        reject(
          new MeshError(
            'MESH_ERR_CNI_RULES',
            `${argv.join(' ')} failed (${signal ? `signal ${signal}` : `exit ${code}`}): ${stderr.trim() || stdout.trim()}`,
            { details: { command: cmd, exitCode: code ?? -1 } },
          ),
        );
    });
    child.stdin.on('error', () => {
      // The tool exited before reading stdin; its exit status reports the reason.
    });
    child.stdin.end(stdin ?? '');
  });

const MARK = '@@AMBIENT-TS@@';

/** What one probe of a netns found. */
interface NetnsState {
  readonly v4: SavedTables;
  readonly v6: SavedTables;
  readonly routes: Record<Family, { rule: string; route: string }>;
  /** `nft -j list ruleset`, parsed to table/chain names with rule counts; null when not asked for. */
  readonly nft: NftInventory | null;
}

interface NftInventory {
  readonly tables: Set<string>;
  /** `family table chain` → number of rules. */
  readonly chains: Map<string, number>;
}

/** The iptables tables iptables-nft creates for us; only these are candidates for leftover cleanup. */
const IPTABLES_NFT_TABLES = new Set(['mangle', 'nat', 'raw']);

function parseNftJson(text: string): NftInventory {
  const inv: NftInventory = { tables: new Set(), chains: new Map() };
  const trimmed = text.trim();
  if (!trimmed) return inv;
  const doc = JSON.parse(trimmed) as { nftables?: Array<Record<string, Record<string, unknown>>> };
  for (const item of doc.nftables ?? []) {
    if (item.table) inv.tables.add(`${String(item.table.family)} ${String(item.table.name)}`);
    if (item.chain) {
      inv.chains.set(
        `${String(item.chain.family)} ${String(item.chain.table)} ${String(item.chain.name)}`,
        0,
      );
    }
  }
  for (const item of doc.nftables ?? []) {
    if (!item.rule) continue;
    const key = `${String(item.rule.family)} ${String(item.rule.table)} ${String(item.rule.chain)}`;
    inv.chains.set(key, (inv.chains.get(key) ?? 0) + 1);
  }
  return inv;
}

export interface RulesEngineOptions {
  readonly backend: Backend;
  readonly exec?: Exec;
}

/**
 * Programs pods and the host. Stateless apart from the detected iptables variant: callers keep the
 * CaptureRecord of each pod and serialise operations per netns.
 */
export class RulesEngine {
  readonly backend: Backend;
  /** `nf_tables` when iptables is iptables-nft (leftover tables need cleaning), else `legacy`. */
  readonly iptablesVariant: 'nf_tables' | 'legacy';
  readonly #exec: Exec;

  private constructor(backend: Backend, variant: 'nf_tables' | 'legacy', exec: Exec) {
    this.backend = backend;
    this.iptablesVariant = variant;
    this.#exec = exec;
  }

  /** Checks the tools the backend needs and detects the iptables variant (fails loudly at startup). */
  static async create(opts: RulesEngineOptions): Promise<RulesEngine> {
    const exec = opts.exec ?? spawnExec;
    let variant: 'nf_tables' | 'legacy' = 'nf_tables';
    if (opts.backend === 'iptables') {
      const v = await exec(['iptables', '-V']);
      variant = /nf_tables/.test(v.stdout) ? 'nf_tables' : 'legacy';
      await exec(['iptables-restore', '--version']);
    }
    await exec(['nsenter', '--version']);
    await exec(['ip', '-V']);
    if (opts.backend === 'nftables' || variant === 'nf_tables') await exec(['nft', '--version']);
    return new RulesEngine(opts.backend, variant, exec);
  }

  async #probe(netns: string | null, opts: { v6: boolean; nft: boolean }): Promise<NetnsState> {
    // A fixed script (no interpolation): each tool's output in its own section, errors of optional parts
    // (a routing table that does not exist yet) silenced, and a final marker proving the script ran.
    const sections = [
      this.backend === 'iptables' ? 'iptables-save 2>/dev/null' : ':',
      this.backend === 'iptables' && opts.v6 ? 'ip6tables-save 2>/dev/null' : ':',
      'ip -4 rule show 2>/dev/null',
      'ip -4 route show table 100 2>/dev/null',
      opts.v6 ? 'ip -6 rule show 2>/dev/null' : ':',
      opts.v6 ? 'ip -6 route show table 100 2>/dev/null' : ':',
      opts.nft ? 'nft -j list ruleset 2>/dev/null' : ':',
    ];
    const script = `${sections.join(`; echo '${MARK}'; `)}; echo '${MARK}'; exit 0`;
    const { stdout } = await this.#exec(inNetns(netns, ['sh', '-c', script]));
    const parts = stdout.split(`${MARK}\n`);
    if (parts.length < sections.length + 1) {
      throw new MeshError(
        'MESH_ERR_CNI_RULES',
        `reading the rules of netns ${netns ?? '(own)'} failed: ${stdout}`,
      );
    }
    const at = (i: number): string => parts[i] ?? '';
    return {
      v4: parseIptablesSave(at(0)),
      v6: parseIptablesSave(at(1)),
      routes: { 4: { rule: at(2), route: at(3) }, 6: { rule: at(4), route: at(5) } },
      nft: opts.nft ? parseNftJson(at(6)) : null,
    };
  }

  async #restore(netns: string | null, family: Family, input: string): Promise<void> {
    const tool = family === 4 ? 'iptables-restore' : 'ip6tables-restore';
    await this.#exec(inNetns(netns, [tool, '-w', '5', '--noflush']), input);
  }

  async #nft(netns: string | null, script: string): Promise<void> {
    await this.#exec(inNetns(netns, ['nft', '-f', '-']), script);
  }

  async #ipBatch(netns: string | null, family: Family, lines: readonly string[]): Promise<void> {
    if (lines.length === 0) return;
    await this.#exec(inNetns(netns, ['ip', `-${family}`, '-batch', '-']), `${lines.join('\n')}\n`);
  }

  /**
   * Applies the in-pod rules. `prior` is the record of an earlier capture of the same netns (agent restart,
   * reconcile): its snapshot of pre-existing objects is kept, so release still restores the original state.
   */
  async applyPod(netns: string, opts: PodRuleOptions, prior: CaptureRecord | null): Promise<CaptureRecord> {
    if (prior && prior.backend !== this.backend) await this.removePod(netns, prior);
    const keep = prior && prior.backend === this.backend ? prior : null;
    const set = podRules(opts);
    const v6 = set.families.includes(6);
    const recordNft = this.backend === 'iptables' && this.iptablesVariant === 'nf_tables' && keep === null;
    const state = await this.#probe(netns, { v6: true, nft: recordNft });
    const routing = set.routing as Routing;
    const preexistingRouting: string[] = keep ? [...keep.preexistingRouting] : [];
    if (!keep) {
      for (const f of [4, 6] as Family[]) {
        if (hasRouteRule(state.routes[f].rule, routing)) preexistingRouting.push(`${f}:rule`);
        if (hasLocalRoute(state.routes[f].route)) preexistingRouting.push(`${f}:route`);
      }
    }
    if (this.backend === 'iptables') {
      for (const family of set.families) {
        await this.#restore(netns, family, renderRestore(set, family, family === 4 ? state.v4 : state.v6));
      }
      // A pod that lost its IPv6 address since the last capture: take our v6 chains away.
      if (!v6) {
        const stale = renderRemoval(state.v6, POD_CHAINS);
        if (stale) await this.#restore(netns, 6, stale);
      }
    } else {
      await this.#nft(netns, renderNftApply(set));
    }
    for (const family of set.families) {
      const lines: string[] = [];
      if (!hasRouteRule(state.routes[family].rule, routing)) lines.push(routeRuleCommand(routing, 'add'));
      lines.push(routeLocalCommand(routing, family, 'add'));
      await this.#ipBatch(netns, family, lines);
    }
    let preexisting = keep?.preexisting ?? null;
    if (recordNft && state.nft) {
      preexisting = { tables: [...state.nft.tables].sort(), chains: [...state.nft.chains.keys()].sort() };
    }
    return { backend: this.backend, families: set.families, preexisting, preexistingRouting };
  }

  /**
   * Removes everything capture added. Without a record (state lost) it removes whatever of ours it finds in
   * both forms, leaving iptables-nft's empty tables behind.
   */
  async removePod(netns: string, record: CaptureRecord | null): Promise<void> {
    const cleanNft = record?.preexisting != null;
    const state = await this.#probe(netns, { v6: true, nft: false });
    for (const family of [4, 6] as Family[]) {
      const removal = renderRemoval(family === 4 ? state.v4 : state.v6, POD_CHAINS);
      if (removal) await this.#restore(netns, family, removal);
    }
    if (this.backend === 'nftables' || record === null || record.backend === 'nftables') {
      await this.#nft(netns, renderNftRemove('pod'));
    }
    if (cleanNft && record?.preexisting) {
      const after = await this.#probe(netns, { v6: false, nft: true });
      const script = leftoverCleanup(after.nft, record.preexisting);
      if (script) await this.#nft(netns, script);
    }
    const routing = podRules({ families: [4], dnsCapture: false, bypassInbound: false }).routing as Routing;
    const pre = new Set(record?.preexistingRouting ?? []);
    for (const family of [4, 6] as Family[]) {
      const lines: string[] = [];
      if (!pre.has(`${family}:rule`) && hasRouteRule(state.routes[family].rule, routing)) {
        lines.push(routeRuleCommand(routing, 'del'));
      }
      if (!pre.has(`${family}:route`) && hasLocalRoute(state.routes[family].route)) {
        lines.push(routeLocalCommand(routing, family, 'del'));
      }
      await this.#ipBatch(netns, family, lines);
    }
  }

  /** Programs the host probe SNAT in `netns` (null: the agent's own netns) for the given pod IPs. */
  async syncHost(netns: string | null, families: readonly Family[], probes: HostProbes): Promise<void> {
    const set: RuleSet = hostRules(families, probes);
    if (this.backend === 'iptables') {
      const state = await this.#probe(netns, { v6: set.families.includes(6), nft: false });
      for (const family of set.families) {
        await this.#restore(netns, family, renderRestore(set, family, family === 4 ? state.v4 : state.v6));
      }
    } else {
      await this.#nft(netns, renderNftApply(set));
    }
  }

  /** Removes the host probe SNAT (uninstall). */
  async removeHost(netns: string | null): Promise<void> {
    if (this.backend === 'iptables') {
      const state = await this.#probe(netns, { v6: true, nft: false });
      for (const family of [4, 6] as Family[]) {
        const removal = renderRemoval(family === 4 ? state.v4 : state.v6, HOST_CHAINS);
        if (removal) await this.#restore(netns, family, removal);
      }
    } else {
      await this.#nft(netns, renderNftRemove('host'));
    }
  }

  /** A human-readable dump of a netns's capture state (debug endpoint, docs). */
  async inspect(netns: string | null): Promise<string> {
    const script =
      'echo "# iptables-save"; iptables-save 2>/dev/null; echo "# ip6tables-save"; ip6tables-save 2>/dev/null; ' +
      'echo "# nft list ruleset"; nft list ruleset 2>/dev/null; echo "# ip rule"; ip rule show; ' +
      'echo "# ip route show table 100"; ip route show table 100 2>/dev/null; exit 0';
    return (await this.#exec(inNetns(netns, ['sh', '-c', script]))).stdout;
  }
}

/**
 * `nft -f` script deleting iptables-nft chains and tables that appeared since `before` and are empty (the
 * residue of iptables-restore on a namespace that had no such table). Null when nothing is left over.
 */
export function leftoverCleanup(
  after: NftInventory | null,
  before: { readonly tables: readonly string[]; readonly chains: readonly string[] },
): string | null {
  if (!after) return null;
  const tablesBefore = new Set(before.tables);
  const chainsBefore = new Set(before.chains);
  const lines: string[] = [];
  for (const table of after.tables) {
    const [family, name] = table.split(' ');
    if (!family || !name || (family !== 'ip' && family !== 'ip6') || !IPTABLES_NFT_TABLES.has(name)) continue;
    const chains = [...after.chains.entries()].filter(([k]) => k.startsWith(`${table} `));
    const newEmpty = chains.filter(([k, n]) => !chainsBefore.has(k) && n === 0);
    if (!tablesBefore.has(table)) {
      if (newEmpty.length === chains.length) lines.push(`delete table ${table}`);
      continue;
    }
    for (const [k] of newEmpty) lines.push(`delete chain ${k}`);
  }
  return lines.length === 0 ? null : `${lines.join('\n')}\n`;
}
