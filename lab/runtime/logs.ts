/**
 * Container logs in the CRI format kubelet reads from /var/log/pods (one line per output line:
 * `<RFC3339 time> <stdout|stderr> <F|P> <text>`; `P` marks a partial line split for length), one file per
 * container instance `<container>/<restartCount>.log`, the current and the previous instance kept (for
 * `kubectl logs --previous`).
 */
import { createWriteStream, mkdirSync, readdirSync, readFileSync, rmSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';

/** CRI splits longer lines into partial records (containerd's default max container log line size). */
const MAX_LINE = 16 * 1024;

export function podLogDir(podLogsRoot: string, namespace: string, name: string, uid: string): string {
  return join(podLogsRoot, `${namespace}_${name}_${uid}`);
}

export class CriLogWriter {
  readonly file: string;
  private readonly out: WriteStream;
  private readonly partial: Record<'stdout' | 'stderr', string> = { stdout: '', stderr: '' };

  constructor(containerLogDir: string, restartCount: number) {
    mkdirSync(containerLogDir, { recursive: true });
    this.file = join(containerLogDir, `${restartCount}.log`);
    this.out = createWriteStream(this.file, { flags: 'a' });
    this.out.on('error', () => undefined);
    // Keep this instance's and the previous one's logs.
    for (const f of readdirSync(containerLogDir)) {
      const n = Number.parseInt(f, 10);
      if (f.endsWith('.log') && Number.isInteger(n) && n < restartCount - 1)
        rmSync(join(containerLogDir, f), { force: true });
    }
  }

  write(stream: 'stdout' | 'stderr', chunk: Buffer): void {
    let text = this.partial[stream] + chunk.toString('utf8');
    let nl = text.indexOf('\n');
    while (nl >= 0) {
      this.line(stream, text.slice(0, nl), 'F');
      text = text.slice(nl + 1);
      nl = text.indexOf('\n');
    }
    while (text.length > MAX_LINE) {
      this.line(stream, text.slice(0, MAX_LINE), 'P');
      text = text.slice(MAX_LINE);
    }
    this.partial[stream] = text;
  }

  close(): Promise<void> {
    for (const s of ['stdout', 'stderr'] as const) {
      if (this.partial[s]) this.line(s, this.partial[s], 'F');
      this.partial[s] = '';
    }
    return new Promise((resolve) => this.out.end(resolve));
  }

  private line(stream: 'stdout' | 'stderr', text: string, tag: 'F' | 'P'): void {
    this.out.write(`${new Date().toISOString()} ${stream} ${tag} ${text}\n`);
  }
}

/** The text of a CRI log file (timestamps and stream tags removed, partial lines joined). */
export function readCriLog(file: string): string {
  let raw: string;
  try {
    raw = readFileSync(file, 'utf8');
  } catch {
    return '';
  }
  let out = '';
  for (const line of raw.split('\n')) {
    const m = /^\S+ (?:stdout|stderr) ([FP]) ?(.*)$/.exec(line);
    if (!m) continue;
    out += m[2] ?? '';
    if (m[1] === 'F') out += '\n';
  }
  return out;
}
