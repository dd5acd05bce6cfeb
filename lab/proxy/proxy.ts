/**
 * The lab's kube-proxy: programs Service ClusterIP (and optional NodePort) → endpoint DNAT with iptables in one
 * node's network namespace. iptables rather than nftables because the mesh's own node-side rules (istio-cni)
 * are iptables too and `iptables-save` shows both in one place; with the nft backend these are nf_tables rules
 * anyway. Each sync is one `iptables-restore --noflush` transaction that rewrites every chain we own (see
 * rules.ts); syncs are serialised and coalesced (the latest desired state wins).
 */
import { MeshError } from '../../pkg/errors/index.ts';
import type { Logger } from '../../pkg/telemetry/index.ts';
import { run } from '../node/sys.ts';
import { JUMPS, ownedChainsIn, type ProxyService, renderRules } from './rules.ts';

const IPTABLES_WAIT_SECONDS = '5';

export interface ServiceProxyOptions {
  /** The node's network namespace path. */
  readonly netnsPath: string;
  readonly logger?: Logger;
}

export class ServiceProxy {
  readonly netnsPath: string;
  private readonly logger: Logger | null;
  /** Per-service/endpoint nat chains written by the last sync. */
  private owned = new Set<string>();
  private running: Promise<void> | null = null;
  private pending: readonly ProxyService[] | null = null;
  private closed = false;
  /** Number of successful syncs (for tests and metrics). */
  syncs = 0;

  private constructor(opts: ServiceProxyOptions) {
    this.netnsPath = opts.netnsPath;
    this.logger = opts.logger ?? null;
  }

  /** Takes over the node's LAB-* chains (left by a crashed proxy), writes an empty ruleset and the jumps. */
  static async create(opts: ServiceProxyOptions): Promise<ServiceProxy> {
    const proxy = new ServiceProxy(opts);
    const save = await run('iptables-save', ['-t', 'nat'], { netns: opts.netnsPath });
    for (const c of ownedChainsIn(save.stdout).nat) if (/^LAB-(SVC|SEP)-/.test(c)) proxy.owned.add(c);
    await proxy.apply([]);
    for (const [table, chain, rule] of JUMPS) {
      const check = await proxy.iptables(['-t', table, '-C', chain, ...rule], true);
      if (check.code !== 0) await proxy.iptables(['-t', table, '-I', chain, '1', ...rule], false);
    }
    return proxy;
  }

  /** Replaces the node's service rules with exactly these services (ready endpoints only). */
  sync(services: readonly ProxyService[]): Promise<void> {
    if (this.closed)
      return Promise.reject(new MeshError('MESH_ERR_LAB_PROXY_SYNC', 'service proxy is torn down'));
    this.pending = services;
    if (!this.running) {
      this.running = this.drain().finally(() => {
        this.running = null;
      });
    }
    return this.running;
  }

  /** Removes the jumps and every chain we own. Idempotent. */
  async teardown(): Promise<void> {
    this.closed = true;
    await this.running?.catch(() => undefined);
    for (const [table, chain, rule] of JUMPS) {
      for (let i = 0; i < 4; i++) {
        const r = await this.iptables(['-t', table, '-D', chain, ...rule], true);
        if (r.code !== 0) break;
      }
    }
    const save = await run('iptables-save', [], { netns: this.netnsPath, allowFailure: true });
    const chains = ownedChainsIn(save.stdout);
    const lines: string[] = [];
    for (const table of ['nat', 'filter'] as const) {
      const list = [...chains[table]];
      if (list.length === 0) continue;
      lines.push(`*${table}`, ...list.map((c) => `:${c} - [0:0]`), ...list.map((c) => `-X ${c}`), 'COMMIT');
    }
    if (lines.length) await this.restore(`${lines.join('\n')}\n`);
    this.owned.clear();
  }

  private async drain(): Promise<void> {
    while (this.pending) {
      const next = this.pending;
      this.pending = null;
      await this.apply(next);
    }
  }

  private async apply(services: readonly ProxyService[]): Promise<void> {
    const rendered = renderRules(services, this.owned);
    await this.restore(rendered.text);
    this.owned = new Set(rendered.chains);
    this.syncs++;
    this.logger?.debug(
      { netns: this.netnsPath, services: services.length, chains: this.owned.size },
      'service rules synced',
    );
  }

  private async restore(text: string): Promise<void> {
    const r = await run('iptables-restore', ['-w', IPTABLES_WAIT_SECONDS, '--noflush'], {
      netns: this.netnsPath,
      input: text,
      allowFailure: true,
    });
    if (r.code !== 0) {
      throw new MeshError(
        'MESH_ERR_LAB_PROXY_SYNC',
        `iptables-restore in ${this.netnsPath} failed: ${r.stderr.trim().slice(-600)}`,
        {
          details: { netns: this.netnsPath, exitCode: r.code },
        },
      );
    }
  }

  private async iptables(args: readonly string[], allowFailure: boolean) {
    return run('iptables', ['-w', IPTABLES_WAIT_SECONDS, ...args], { netns: this.netnsPath, allowFailure });
  }
}
