/**
 * Durable state: a write-ahead log of JSON lines, fsynced (group commit) before a write is acknowledged, plus
 * periodic snapshots after which older log segments are deleted.
 *
 * Layout of `<dir>`:
 *   snapshot.json          `{ "format": 1, "rv": N, "objects": { "<storage key>": [obj, …] } }`
 *   wal-<seq>.log          records `{"rv":N,"k":"<storage key>","n":"<ns>/<name>","o":<obj>|null}\n`
 * Recovery loads the snapshot, then replays every segment in order, skipping records at or below the
 * snapshot's resourceVersion. A torn final line (crash mid-append, never acknowledged) is truncated away;
 * damage anywhere else is reported, not guessed around.
 */
import { closeSync, fsyncSync, openSync } from 'node:fs';
import { type FileHandle, mkdir, open, readdir, readFile, rename, rm, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { MeshError } from '../../pkg/errors/index.ts';
import { isObject, type JsonObject } from './json.ts';

export interface WalRecord {
  readonly rv: number;
  /** Storage key of the resource type. */
  readonly k: string;
  /** `<namespace>/<name>` (namespace empty for cluster-scoped objects). */
  readonly n: string;
  /** The new object, or null for a removal. */
  readonly o: JsonObject | null;
}

export interface Snapshot {
  readonly rv: number;
  readonly objects: Readonly<Record<string, readonly JsonObject[]>>;
}

export interface Recovered {
  readonly snapshot: Snapshot | null;
  readonly records: readonly WalRecord[];
}

const SNAPSHOT_FORMAT = 1;
const SEGMENT_RE = /^wal-(\d{12})\.log$/;

function segmentName(seq: number): string {
  return `wal-${String(seq).padStart(12, '0')}.log`;
}

function corrupt(message: string, cause?: unknown): MeshError {
  return new MeshError('MESH_ERR_LAB_STATE_CORRUPT', message, cause === undefined ? {} : { cause });
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

interface Waiter {
  resolve(): void;
  reject(err: unknown): void;
}

export class Wal {
  private readonly dir: string;
  private fh: FileHandle;
  private seq: number;
  private pending: string[] = [];
  /** Highest resourceVersion among the pending lines. */
  private pendingMaxRv = 0;
  /** Highest resourceVersion written to each segment: a segment may only go once a snapshot covers it. */
  private readonly segmentMaxRv = new Map<number, number>();
  private waiters: Waiter[] = [];
  private flushing: Promise<void> | null = null;
  private failed: unknown = null;
  private closed = false;
  /** Records appended to the current segment since the last snapshot. */
  recordsSinceSnapshot = 0;

  private constructor(dir: string, fh: FileHandle, seq: number) {
    this.dir = dir;
    this.fh = fh;
    this.seq = seq;
  }

  /** Reads the state in `dir` and opens a fresh segment for new records. */
  static async open(dir: string): Promise<{ wal: Wal; recovered: Recovered }> {
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new MeshError(
        'MESH_ERR_LAB_STATE_IO',
        `cannot create the state directory ${dir}: ${String(err)}`,
        { cause: err },
      );
    }
    const recovered = await Wal.recover(dir);
    const entries = await readdir(dir);
    const seqs = entries
      .map((e) => SEGMENT_RE.exec(e)?.[1])
      .filter((s): s is string => s !== undefined)
      .map(Number);
    const seq = (seqs.length ? Math.max(...seqs) : 0) + 1;
    const fh = await open(join(dir, segmentName(seq)), 'a', 0o600);
    fsyncDir(dir);
    const wal = new Wal(dir, fh, seq);
    wal.recordsSinceSnapshot = recovered.records.length;
    const recoveredMax = recovered.records.reduce((m, r) => Math.max(m, r.rv), recovered.snapshot?.rv ?? 0);
    for (const s of seqs) wal.segmentMaxRv.set(s, recoveredMax);
    return { wal, recovered };
  }

  private static async recover(dir: string): Promise<Recovered> {
    let snapshot: Snapshot | null = null;
    try {
      const text = await readFile(join(dir, 'snapshot.json'), 'utf8');
      const parsed: unknown = JSON.parse(text);
      if (
        !isObject(parsed) ||
        parsed.format !== SNAPSHOT_FORMAT ||
        typeof parsed.rv !== 'number' ||
        !isObject(parsed.objects)
      )
        throw corrupt(
          `${join(dir, 'snapshot.json')} is not a lab API server snapshot (format ${SNAPSHOT_FORMAT})`,
        );
      snapshot = { rv: parsed.rv, objects: parsed.objects as Record<string, JsonObject[]> };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw err instanceof MeshError
          ? err
          : corrupt(`cannot read ${join(dir, 'snapshot.json')}: ${String(err)}`, err);
      }
    }
    const segments = (await readdir(dir)).filter((e) => SEGMENT_RE.test(e)).sort();
    const records: WalRecord[] = [];
    const floor = snapshot?.rv ?? 0;
    for (let s = 0; s < segments.length; s++) {
      const path = join(dir, segments[s] as string);
      const text = await readFile(path, 'utf8');
      let offset = 0;
      while (offset < text.length) {
        const nl = text.indexOf('\n', offset);
        const last = s === segments.length - 1;
        if (nl < 0) {
          // A line without its newline was being appended when the process died: never acknowledged.
          if (!last) throw corrupt(`${path}: truncated record at byte ${offset} in a sealed segment`);
          await truncate(path, Buffer.byteLength(text.slice(0, offset)));
          break;
        }
        const line = text.slice(offset, nl);
        let rec: unknown;
        try {
          rec = JSON.parse(line);
        } catch (err) {
          if (last && text.indexOf('\n', nl + 1) < 0) {
            await truncate(path, Buffer.byteLength(text.slice(0, offset)));
            break;
          }
          throw corrupt(`${path}: unreadable record at byte ${offset}`, err);
        }
        if (
          !isObject(rec) ||
          typeof rec.rv !== 'number' ||
          typeof rec.k !== 'string' ||
          typeof rec.n !== 'string'
        )
          throw corrupt(`${path}: malformed record at byte ${offset}`);
        if (rec.rv > floor)
          records.push({ rv: rec.rv, k: rec.k, n: rec.n, o: isObject(rec.o) ? rec.o : null });
        offset = nl + 1;
      }
    }
    records.sort((a, b) => a.rv - b.rv);
    return { snapshot, records };
  }

  /** Queues a record; resolves once it (and everything before it) is on disk. */
  append(rec: WalRecord): Promise<void> {
    if (this.closed)
      return Promise.reject(new MeshError('MESH_ERR_LAB_STATE_IO', 'the write-ahead log is closed'));
    if (this.failed) return Promise.reject(this.failed);
    this.pending.push(`${JSON.stringify(rec)}\n`);
    this.pendingMaxRv = Math.max(this.pendingMaxRv, rec.rv);
    this.recordsSinceSnapshot++;
    const p = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    if (!this.flushing) this.flushing = this.flushLoop();
    return p;
  }

  /** Resolves when everything appended so far is durable. */
  async sync(): Promise<void> {
    while (this.flushing) await this.flushing;
  }

  private async flushLoop(): Promise<void> {
    // Yield once so writes issued in the same tick share one fsync (group commit).
    await new Promise<void>((r) => setImmediate(r));
    try {
      while (this.pending.length > 0) {
        const data = Buffer.from(this.pending.join(''));
        const waiters = this.waiters;
        const maxRv = this.pendingMaxRv;
        const fh = this.fh;
        const seq = this.seq;
        this.pending = [];
        this.waiters = [];
        this.pendingMaxRv = 0;
        this.segmentMaxRv.set(seq, Math.max(this.segmentMaxRv.get(seq) ?? 0, maxRv));
        try {
          let off = 0;
          while (off < data.length) off += (await fh.write(data, off, data.length - off)).bytesWritten;
          await fh.datasync();
        } catch (err) {
          this.failed = new MeshError(
            'MESH_ERR_LAB_STATE_IO',
            `appending to the write-ahead log failed: ${String(err)}`,
            { cause: err },
          );
          for (const w of [...waiters, ...this.waiters]) w.reject(this.failed);
          this.waiters = [];
          this.pending = [];
          return;
        }
        for (const w of waiters) w.resolve();
      }
    } finally {
      this.flushing = null;
    }
  }

  /**
   * Writes a snapshot of the state at `rv` (serialised at the moment of the call, so it covers every record
   * appended so far), starts a new segment and deletes the segments whose records it all covers.
   */
  async snapshot(rv: number, objects: Record<string, JsonObject[]>): Promise<void> {
    const body = JSON.stringify({ format: SNAPSHOT_FORMAT, rv, objects });
    // Records still pending belong to rv ≤ `rv`; they go to the new segment and are skipped on replay.
    await this.sync();
    const oldSeq = this.seq;
    // Hold off flushes while the segment is swapped: appends queue up and go to the new segment.
    let release = (): void => {};
    this.flushing = new Promise<void>((r) => {
      release = r;
    });
    try {
      const oldFh = this.fh;
      this.fh = await open(join(this.dir, segmentName(oldSeq + 1)), 'a', 0o600);
      this.seq = oldSeq + 1;
      this.recordsSinceSnapshot = this.pending.length;
      await oldFh.close();
      fsyncDir(this.dir);
    } finally {
      this.flushing = null;
      release();
      if (this.pending.length > 0) this.flushing = this.flushLoop();
    }
    const tmp = join(this.dir, 'snapshot.json.tmp');
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(body);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, join(this.dir, 'snapshot.json'));
    fsyncDir(this.dir);
    // Records with a higher resourceVersion than the snapshot may have reached the old segment while it
    // was being written; such a segment stays until a later snapshot covers it.
    for (const e of await readdir(this.dir)) {
      const m = SEGMENT_RE.exec(e);
      const seq = Number(m?.[1]);
      if (m && seq <= oldSeq && (this.segmentMaxRv.get(seq) ?? 0) <= rv) {
        await rm(join(this.dir, e), { force: true });
        this.segmentMaxRv.delete(seq);
      }
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.sync();
    this.closed = true;
    await this.fh.close();
  }
}
