/**
 * Probe workers with kubelet's semantics (pkg/kubelet/prober/worker.go): one worker per container and probe
 * type; the first probe after initialDelaySeconds from the container start, then one every periodSeconds (never
 * overlapping); a result only changes after successThreshold consecutive successes or failureThreshold
 * consecutive failures. Readiness starts as failure, liveness as success, startup as "not started".
 * Readiness and liveness do not run before the container has started (startup probe passed, or none). A
 * liveness or startup failure is reported once, then the worker holds until the container is replaced.
 */
import { abortableSleep } from './backoff.ts';
import type { ProbeInput } from './types.ts';

export type ProbeType = 'readiness' | 'liveness' | 'startup';

export interface ProbeOutcome {
  readonly ok: boolean;
  readonly message: string;
}

export interface ResolvedProbe {
  readonly initialDelayMs: number;
  readonly periodMs: number;
  readonly timeoutMs: number;
  readonly successThreshold: number;
  readonly failureThreshold: number;
}

/** Kubernetes defaults; readiness may need several successes, liveness and startup exactly one. */
export function resolveProbeTiming(type: ProbeType, p: ProbeInput): ResolvedProbe {
  const sec = (v: number | undefined, dflt: number, min: number): number =>
    Math.round(Math.max(min, v === undefined || !Number.isFinite(v) || v <= 0 ? dflt : v) * 1000);
  return {
    initialDelayMs: Math.round(Math.max(0, p.initialDelaySeconds ?? 0) * 1000),
    periodMs: sec(p.periodSeconds, 10, 0.01),
    timeoutMs: sec(p.timeoutSeconds, 1, 0.01),
    successThreshold: type === 'readiness' ? Math.max(1, Math.floor(p.successThreshold ?? 1)) : 1,
    failureThreshold: Math.max(1, Math.floor(p.failureThreshold ?? 3)),
  };
}

export interface ProbeWorkerOptions {
  readonly type: ProbeType;
  readonly timing: ResolvedProbe;
  /** Runs one probe (bounded by timing.timeoutMs). */
  readonly run: () => Promise<ProbeOutcome>;
  /** Whether readiness/liveness may run yet (the container has started). */
  readonly started: () => boolean;
  /** Called when the probe's result changes (after thresholds). */
  readonly onResult: (ok: boolean, message: string) => void;
  /** When the container instance started (initialDelay counts from here). */
  readonly containerStart: number;
}

export class ProbeWorker {
  readonly type: ProbeType;
  private readonly opts: ProbeWorkerOptions;
  private readonly abort = new AbortController();
  private lastResult: boolean | null = null;
  private resultRun = 0;
  private current: boolean;
  private onHold = false;
  /** The probe's last outcome message (for events and status messages). */
  lastMessage = '';

  constructor(opts: ProbeWorkerOptions) {
    this.type = opts.type;
    this.opts = opts;
    this.current = opts.type === 'liveness';
  }

  /** The thresholded result: ready / alive / started. */
  get result(): boolean {
    return this.current;
  }

  start(): void {
    void this.loop();
  }

  stop(): void {
    this.abort.abort();
  }

  private async loop(): Promise<void> {
    const signal = this.abort.signal;
    const t = this.opts.timing;
    const firstAt = this.opts.containerStart + t.initialDelayMs;
    await abortableSleep(firstAt - Date.now(), signal);
    while (!signal.aborted) {
      const began = Date.now();
      if (!this.onHold && (this.type === 'startup' || this.opts.started())) {
        const keepGoing = await this.once();
        if (!keepGoing) return;
      }
      await abortableSleep(t.periodMs - (Date.now() - began), signal);
    }
  }

  /** One probe; false when the worker is done (startup succeeded). */
  private async once(): Promise<boolean> {
    let outcome: ProbeOutcome;
    try {
      outcome = await this.opts.run();
    } catch (err) {
      outcome = { ok: false, message: (err as Error).message };
    }
    if (this.abort.signal.aborted) return false;
    this.lastMessage = outcome.message;
    const ok = outcome.ok;
    if (this.lastResult === ok) this.resultRun++;
    else {
      this.lastResult = ok;
      this.resultRun = 1;
    }
    const t = this.opts.timing;
    if ((!ok && this.resultRun < t.failureThreshold) || (ok && this.resultRun < t.successThreshold))
      return true;
    if (this.current !== ok || this.type !== 'readiness') {
      const changed = this.current !== ok;
      this.current = ok;
      if (changed) this.opts.onResult(ok, outcome.message);
    }
    if (this.type === 'startup' && ok) return false;
    if ((this.type === 'liveness' || this.type === 'startup') && !ok) {
      this.onHold = true;
      this.resultRun = 0;
    }
    return true;
  }
}
