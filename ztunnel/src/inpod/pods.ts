/**
 * The set of captured pods on this node, driven by ZDS: add opens a pod's proxy in its netns (replacing it when
 * the netns changed), del drains and closes it, a snapshot removes pods the agent no longer reports.
 * Certificates of identities no local pod uses any more are forgotten.
 */
import type { Logger } from 'pino';
import { HboneServerStats } from '../../../pkg/hbone/index.ts';
import { formatSpiffeId } from '../../../pkg/identity/index.ts';
import { closeFd, netnsInode } from '../../../pkg/netns/index.ts';
import type { WorkloadInfo } from '../../../pkg/xds/gen/istio/workload/zds/zds.ts';
import { addHboneStats, type HboneTotals } from '../metrics.ts';
import type { ProxyContext } from '../proxy/context.ts';
import { PodProxy } from '../proxy/pod.ts';
import type { PodHandler } from './zds.ts';

interface Entry {
  readonly proxy: PodProxy;
  readonly netnsInode: number;
}

export class PodManager implements PodHandler, HboneTotals {
  private readonly pods = new Map<string, Entry>();
  /** Proxies being drained (no longer in `pods`), and the counters of those already closed. */
  private readonly closing = new Set<PodProxy>();
  private readonly retired = new HboneServerStats();
  private readonly ctx: ProxyContext;
  private readonly logger: Logger;
  private readonly graceMs: number;

  constructor(ctx: ProxyContext, graceMs: number) {
    this.ctx = ctx;
    this.logger = ctx.logger.child({ module: 'inpod' });
    this.graceMs = graceMs;
  }

  has(uid: string): boolean {
    return this.pods.has(uid);
  }

  get size(): number {
    return this.pods.size;
  }

  async add(uid: string, info: WorkloadInfo, netnsFd: number): Promise<void> {
    const inode = netnsInode(netnsFd);
    const existing = this.pods.get(uid);
    if (existing && existing.netnsInode === inode) {
      closeFd(netnsFd);
      return;
    }
    if (existing) {
      this.pods.delete(uid);
      await this.retire(existing.proxy, this.graceMs);
    }
    const proxy = await PodProxy.create(
      this.ctx,
      { uid, name: info.name, namespace: info.namespace, serviceAccount: info.serviceAccount },
      netnsFd,
    );
    this.pods.set(uid, { proxy, netnsInode: inode });
    this.logger.info(
      { uid, pod: `${info.namespace}/${info.name}`, identity: formatSpiffeId(proxy.identity) },
      'pod proxy started',
    );
  }

  async del(uid: string): Promise<void> {
    const e = this.pods.get(uid);
    if (!e) return;
    this.pods.delete(uid);
    await this.retire(e.proxy, this.graceMs);
    this.forgetUnused(e.proxy);
    this.logger.info({ uid, pod: `${e.proxy.info.namespace}/${e.proxy.info.name}` }, 'pod proxy stopped');
  }

  async reconcile(present: ReadonlySet<string>): Promise<void> {
    for (const uid of [...this.pods.keys()]) if (!present.has(uid)) await this.del(uid);
  }

  private forgetUnused(gone: PodProxy): void {
    const id = formatSpiffeId(gone.identity);
    for (const e of this.pods.values()) if (formatSpiffeId(e.proxy.identity) === id) return;
    this.ctx.certs.forget(gone.identity);
  }

  async closeAll(graceMs: number): Promise<void> {
    const all = [...this.pods.values()];
    this.pods.clear();
    await Promise.all(all.map((e) => this.retire(e.proxy, graceMs)));
  }

  private async retire(proxy: PodProxy, graceMs: number): Promise<void> {
    this.closing.add(proxy);
    try {
      await proxy.close(graceMs);
    } finally {
      this.closing.delete(proxy);
      // Counters carry over; the gauges of a closed server are history.
      const s = proxy.hboneStats;
      addHboneStats(this.retired, s);
      this.retired.sessionsActive -= s.sessionsActive;
      this.retired.streamsActive -= s.streamsActive;
    }
  }

  /** Inbound HBONE counters of every proxy this process ran, for metrics (monotonic across pod churn). */
  hboneTotals(): HboneServerStats {
    const t = new HboneServerStats();
    addHboneStats(t, this.retired);
    for (const e of this.pods.values()) addHboneStats(t, e.proxy.hboneStats);
    for (const p of this.closing) addHboneStats(t, p.hboneStats);
    return t;
  }

  dump() {
    return [...this.pods.values()].map((e) => e.proxy.dump());
  }
}
