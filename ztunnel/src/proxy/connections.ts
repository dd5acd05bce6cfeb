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
  private readonly live = new Set<TrackedConnection>();
  private readonly state: ProxyState;
  private readonly logger: Logger;
  private timer: NodeJS.Timeout | null = null;
  closedByPolicy = 0;

  constructor(state: ProxyState, logger: Logger) {
    this.state = state;
    this.logger = logger;
    state.onChange((e) => {
      if (e.kind === 'policy' || e.kind === 'workload') this.scheduleRecheck();
    });
  }

  add(c: TrackedConnection): void {
    this.live.add(c);
  }

  delete(c: TrackedConnection): void {
    this.live.delete(c);
  }

  get size(): number {
    return this.live.size;
  }

  private scheduleRecheck(): void {
    if (this.timer || this.live.size === 0) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.recheck();
    }, RECHECK_DEBOUNCE_MS);
    this.timer.unref();
  }

  /** Re-evaluates every live connection against current policy; closes the denied ones. */
  recheck(): number {
    let closed = 0;
    for (const c of [...this.live]) {
      const w = this.state.workload(c.workloadUid);
      if (!w) continue;
      const d = evaluate(this.state.policiesFor(w), c.info);
      if (!d.allowed) {
        this.live.delete(c);
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
