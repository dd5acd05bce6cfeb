/**
 * Live inbound connections, so that a policy change can close the ones it now denies (ztunnel re-checks
 * open connections when authorization changes). Checks are debounced: a burst of xDS updates costs one pass.
 */
import type { Logger } from 'pino';
import { type ConnectionInfo, evaluate } from '../../../pkg/rbac/index.ts';
import type { ProxyState } from '../../../pkg/state/index.ts';

/** Policy pushes arrive in bursts; one re-check after they settle. */
const RECHECK_DEBOUNCE_MS = 50;

export interface TrackedConnection {
  /** Workload uid of the destination pod (its current policies are looked up at re-check time). */
  readonly workloadUid: string;
  readonly info: ConnectionInfo;
  /** Closes both sides; called at most once. */
  close(reason: string): void;
}

export class ConnectionRegistry {
  /** Live connections by destination workload uid. */
  private readonly live = new Map<string, Set<TrackedConnection>>();
  private count = 0;
  private readonly state: ProxyState;
  private readonly logger: Logger;
  private timer: NodeJS.Timeout | null = null;
  closedByPolicy = 0;

  constructor(state: ProxyState, logger: Logger) {
    this.state = state;
    this.logger = logger;
    // Any policy change may deny something; a workload change matters only for a workload with live inbound
    // connections (its policy references may have changed) — not for every pod update in the mesh.
    state.onChange((e) => {
      if (e.kind === 'policy' || (e.kind === 'workload' && this.live.has(e.uid))) this.scheduleRecheck();
    });
  }

  add(c: TrackedConnection): void {
    const set = this.live.get(c.workloadUid);
    if (set) set.add(c);
    else this.live.set(c.workloadUid, new Set([c]));
    this.count++;
  }

  delete(c: TrackedConnection): void {
    const set = this.live.get(c.workloadUid);
    if (!set?.delete(c)) return;
    this.count--;
    if (set.size === 0) this.live.delete(c.workloadUid);
  }

  get size(): number {
    return this.count;
  }

  private scheduleRecheck(): void {
    if (this.timer || this.count === 0) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.recheck();
    }, RECHECK_DEBOUNCE_MS);
    this.timer.unref();
  }

  /** Re-evaluates every live connection against current policy; closes the denied ones. */
  recheck(): number {
    let closed = 0;
    for (const [uid, set] of [...this.live]) {
      const w = this.state.workload(uid);
      if (!w) continue;
      // Policies are looked up once per destination workload, not per connection.
      const policies = this.state.policiesFor(w);
      for (const c of [...set]) {
        const d = evaluate(policies, c.info);
        if (d.allowed) continue;
        this.delete(c);
        closed++;
        this.closedByPolicy++;
        this.logger.info(
          { workload: c.workloadUid, policy: d.policy, reason: d.reason },
          'closing connection now denied by policy',
        );
        c.close(`policy ${d.policy ?? 'default deny'}`);
      }
    }
    return closed;
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
