/**
 * Copies bytes both ways between two duplexes (an HBONE stream and a TCP socket) with TCP semantics:
 * - a FIN (`end`) on one side ends the other's writable side, and the other direction keeps flowing
 *   (half-close; sockets must be made with `allowHalfOpen: true` or Node closes them on the first FIN);
 * - an error or an abrupt close (reset) on one side destroys both (an RST where the peer is a TCP socket);
 * - backpressure: a side is paused while its peer has PAUSE_HIGH_WATER bytes queued, resumed on `drain`;
 * - after the first write of an event-loop turn, writes are corked until the turn ends, so pieces that
 *   arrive together leave together.
 *
 * This is the hot path: the handlers are module-level functions called with `this` = the emitting stream,
 * each stream carries its peer and its pipe in two symbol slots set once, the per-pipe state is one
 * monomorphic object, and a chunk is counted and handed to the peer as is (no copies, no allocations).
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/**
 * Bytes queued on the writing side before the reading side is paused. `write()` returns false past the
 * stream's own high-water mark (16 KiB), but pausing there costs a pause/resume per few chunks on a fast
 * path; a larger budget keeps the reader streaming while still bounding memory per tunnel direction.
 */
export const PAUSE_HIGH_WATER = 1 << 20;

export interface PipeStats {
  /** Bytes read from `a` and written to `b`. */
  bytesAtoB: number;
  /** Bytes read from `b` and written to `a`. */
  bytesBtoA: number;
  /** The first error either side reported, or null when both closed cleanly. */
  error: Error | null;
}

export type PipeDone<T> = (stats: PipeStats, arg: T) => void;

const kPipe = Symbol('hbone.pipe');
const kPeer = Symbol('hbone.peer');
const kTurn = Symbol('hbone.turn');

interface Piped extends Duplex {
  [kPipe]: Pipe;
  [kPeer]: Piped;
  /** The turn of this side's last chunk. */
  [kTurn]: number;
}

class Pipe implements PipeStats {
  readonly a: Piped;
  bytesAtoB = 0;
  bytesBtoA = 0;
  error: Error | null = null;
  aClosed = false;
  bClosed = false;
  aborted = false;
  readonly done: PipeDone<never>;
  readonly arg: unknown;

  constructor(a: Piped, done: PipeDone<never>, arg: unknown) {
    this.a = a;
    this.done = done;
    this.arg = arg;
  }
}

/** Tears a stream down, as a TCP RST when it is a TCP socket (so the application sees a reset, not a FIN). */
function abort(s: Duplex): void {
  if (s.destroyed) return;
  const sock = s as Partial<Socket>;
  if (typeof sock.resetAndDestroy === 'function' && (sock as Socket).readyState !== 'opening') {
    try {
      // Only plain TCP handles can reset; a TLS or pipe socket throws ERR_INVALID_HANDLE_TYPE.
      sock.resetAndDestroy();
      return;
    } catch {
      // fall through to a plain destroy
    }
  }
  s.destroy();
}

function onData(this: Piped, chunk: Buffer): void {
  const p = this[kPipe];
  if (this === p.a) p.bytesAtoB += chunk.length;
  else p.bytesBtoA += chunk.length;
  const peer = this[kPeer];
  if (peer.destroyed) return;
  // The first chunk of an event-loop turn is written at once (a lone request must not wait); further chunks
  // in the same turn are corked and leave together (one writev) in the check phase. An HTTP/2 stream
  // delivers DATA in pieces cut at TLS record and frame boundaries, so a 64 KiB frame arrives as 16 KiB
  // pieces plus sub-KiB slivers; written one by one, each costs a syscall (measured: about half the pieces
  // on the HBONE server side were under 1 KiB). nextTick would not batch: it runs between pieces.
  if (this[kTurn] !== turn) {
    this[kTurn] = turn;
    if (!turnScheduled) {
      turnScheduled = true;
      setImmediate(nextTurn);
    }
  } else if (peer.writableCorked === 0) {
    peer.cork();
    setImmediate(uncork, peer);
  }
  if (!peer.write(chunk) && peer.writableLength >= PAUSE_HIGH_WATER) this.pause();
}

/** Event-loop turns with data, counted by one shared immediate (not one per pipe). */
let turn = 0;
let turnScheduled = false;

function nextTurn(): void {
  turn++;
  turnScheduled = false;
}

function uncork(s: Duplex): void {
  s.uncork();
}

function onDrain(this: Piped): void {
  const src = this[kPeer];
  if (src.isPaused() && !src.destroyed) src.resume();
}

function onEnd(this: Piped): void {
  const peer = this[kPeer];
  if (!peer.destroyed && !peer.writableEnded) peer.end();
}

function onError(this: Piped, err: Error): void {
  const p = this[kPipe];
  if (p.error === null) p.error = err;
  p.aborted = true;
  abort(this[kPeer]);
}

function onClose(this: Piped): void {
  const p = this[kPipe];
  // Idempotent per side: pipeBidirectional() also calls this for a side that was destroyed beforehand.
  if (this === p.a) {
    if (p.aClosed) return;
    p.aClosed = true;
  } else {
    if (p.bClosed) return;
    p.bClosed = true;
  }
  // A side that closed before both of its directions finished was reset or destroyed: abort the other.
  if (!p.aborted && (!this.readableEnded || !this.writableFinished)) {
    p.aborted = true;
    abort(this[kPeer]);
  }
  if (p.aClosed && p.bClosed) p.done(p, p.arg as never);
}

function attach(s: Piped): void {
  s.on('data', onData);
  s.on('drain', onDrain);
  s.on('end', onEnd);
  s.on('error', onError);
  s.on('close', onClose);
}

/**
 * Pipes `a` ⇄ `b` until both have closed, then calls `onDone(stats, arg)` exactly once. `arg` lets callers
 * pass their per-connection state without allocating a closure.
 */
export function pipeBidirectional<T>(a: Duplex, b: Duplex, onDone: PipeDone<T>, arg: T): void;
export function pipeBidirectional(a: Duplex, b: Duplex, onDone: PipeDone<undefined>): void;
export function pipeBidirectional(a: Duplex, b: Duplex, onDone: PipeDone<never>, arg?: unknown): void {
  const pa = a as Piped;
  const pb = b as Piped;
  const p = new Pipe(pa, onDone, arg);
  pa[kPipe] = p;
  pb[kPipe] = p;
  pa[kPeer] = pb;
  pb[kPeer] = pa;
  pa[kTurn] = -1;
  pb[kTurn] = -1;
  attach(pa);
  attach(pb);
  // A side destroyed beforehand may already have emitted 'close': account for it now (onClose is idempotent).
  if (a.destroyed) onClose.call(pa);
  if (b.destroyed) onClose.call(pb);
}
