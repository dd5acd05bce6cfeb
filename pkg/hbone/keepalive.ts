/**
 * HTTP/2 PING keepalive for one HBONE connection (ztunnel `do_ping_pong`, both ends): a PING every
 * interval; when one is not acknowledged within the timeout, the peer is presumed gone and `onDead` drops
 * the connection. Both delays run on the shared coarse clock (pkg/timers), not one timer per connection.
 */
import type { Http2Session } from 'node:http2';
import { CoarseTimer, coarseTimeout } from '../timers/index.ts';

export class KeepAlive {
  private readonly session: Http2Session;
  private readonly interval: CoarseTimer;
  private readonly timeout: CoarseTimer;
  private readonly onDead: (arg: unknown) => void;
  private readonly arg: unknown;
  private stopped = false;
  /** Bound once per connection: `session.ping` needs a callback and passes no context. */
  private readonly onAck: (err: Error | null) => void;

  constructor(
    session: Http2Session,
    intervalMs: number,
    timeoutMs: number,
    onDead: (arg: unknown) => void,
    arg: unknown,
  ) {
    this.session = session;
    this.onDead = onDead;
    this.arg = arg;
    this.onAck = (err) => this.acked(err);
    this.timeout = new CoarseTimer(timeoutMs, keepAliveTimedOut, this);
    // The first PING waits one interval: no need to race the first request (ztunnel does the same).
    this.interval = coarseTimeout(intervalMs, keepAliveSend, this);
  }

  /** @internal */
  send(): void {
    if (this.stopped || this.session.destroyed || this.session.closed) return;
    // false = too many unacknowledged PINGs already, which the timeout below will catch.
    this.session.ping(this.onAck);
    if (this.timeout.deadline === -1) this.timeout.refresh();
  }

  private acked(err: Error | null): void {
    if (this.stopped) return;
    if (err !== null) {
      // The session is closing or gone; its own close/error handling takes over.
      this.stop();
      return;
    }
    this.timeout.clear();
    this.interval.refresh();
  }

  /** @internal */
  timedOut(): void {
    if (this.stopped) return;
    this.stop();
    this.onDead(this.arg);
  }

  stop(): void {
    this.stopped = true;
    this.interval.clear();
    this.timeout.clear();
  }
}

function keepAliveSend(arg: unknown): void {
  (arg as KeepAlive).send();
}

function keepAliveTimedOut(arg: unknown): void {
  (arg as KeepAlive).timedOut();
}
