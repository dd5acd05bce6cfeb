/**
 * What a lab created, on disk, so that `destroy()` and, after a crash, `cleanupLeftovers(prefix)` can remove
 * it. Each owner (the network, each node's pod runtime, the DNS server) writes its own file
 * `<root>/state/<owner>.json`, so owners in different processes never overwrite each other. A file is
 * rewritten atomically (temp file + rename) *before* the object it records is created, so a crash leaves at
 * worst a record of something that does not exist, never the opposite.
 *
 * The registry `/run/ambient-lab/<prefix>.json` maps a prefix to its root, so `lab down` finds a lab by
 * prefix alone. It lives on /run (tmpfs) like the network namespaces themselves: both vanish on reboot.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const REGISTRY_DIR = '/run/ambient-lab';
export const STATE_DIR = 'state';

export interface RecordedPid {
  readonly pid: number;
  /** Field 22 of /proc/<pid>/stat: tells a recorded process from a later one that reuses its pid. */
  readonly startTime: string;
  readonly what: string;
}

export interface StateRecord {
  readonly version: 1;
  readonly prefix: string;
  readonly root: string;
  netns: string[];
  dirs: string[];
  mounts: string[];
  pids: RecordedPid[];
}

export interface RegistryEntry {
  readonly prefix: string;
  readonly root: string;
  readonly createdAt: string;
  readonly ownerPid: number;
}

/** Start time of a live process (jiffies since boot), or null when it does not exist. */
export function processStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return rest[19] ?? null;
  } catch {
    return null;
  }
}

function writeJsonAtomic(file: string, value: unknown): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`);
  renameSync(tmp, file);
}

/** One owner's record of created objects. */
export class StateRecorder {
  readonly file: string;
  private readonly record: StateRecord;

  constructor(root: string, prefix: string, owner: string) {
    mkdirSync(join(root, STATE_DIR), { recursive: true });
    this.file = join(root, STATE_DIR, `${owner}.json`);
    this.record = { version: 1, prefix, root, netns: [], dirs: [], mounts: [], pids: [] };
    this.flush();
  }

  get snapshot(): Readonly<StateRecord> {
    return this.record;
  }

  addNetns(name: string): void {
    if (!this.record.netns.includes(name)) this.record.netns.push(name);
    this.flush();
  }

  removeNetns(name: string): void {
    this.record.netns = this.record.netns.filter((n) => n !== name);
    this.flush();
  }

  addDir(dir: string): void {
    if (!this.record.dirs.includes(dir)) this.record.dirs.push(dir);
    this.flush();
  }

  removeDir(dir: string): void {
    this.record.dirs = this.record.dirs.filter((d) => d !== dir);
    this.flush();
  }

  addMount(path: string): void {
    if (!this.record.mounts.includes(path)) this.record.mounts.push(path);
    this.flush();
  }

  removeMount(path: string): void {
    this.record.mounts = this.record.mounts.filter((m) => m !== path);
    this.flush();
  }

  /** Records a live process; no-op when it already exited. */
  addPid(pid: number, what: string): void {
    const startTime = processStartTime(pid);
    if (startTime === null) return;
    this.record.pids.push({ pid, startTime, what });
    this.flush();
  }

  removePid(pid: number): void {
    this.record.pids = this.record.pids.filter((p) => p.pid !== pid);
    this.flush();
  }

  /** Deletes the file (after everything it recorded is gone). */
  drop(): void {
    rmSync(this.file, { force: true });
  }

  private flush(): void {
    writeJsonAtomic(this.file, this.record);
  }
}

/** A record read back from disk, with the file it came from. */
export interface StoredState extends StateRecord {
  readonly file: string;
}

/** Every owner's record under a lab root (unreadable files are skipped: they hold nothing we could trust). */
export function readStates(root: string): StoredState[] {
  const dir = join(root, STATE_DIR);
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => f.endsWith('.json'));
  } catch {
    return [];
  }
  const out: StoredState[] = [];
  for (const f of files) {
    try {
      const parsed = JSON.parse(readFileSync(join(dir, f), 'utf8')) as StateRecord;
      if (parsed && parsed.version === 1) out.push({ ...parsed, file: join(dir, f) });
    } catch {
      // a torn temp file or garbage: ignore
    }
  }
  return out;
}

export function registryFile(prefix: string): string {
  return join(REGISTRY_DIR, `${prefix}lab.json`);
}

export function writeRegistry(entry: RegistryEntry): void {
  mkdirSync(REGISTRY_DIR, { recursive: true });
  writeJsonAtomic(registryFile(entry.prefix), entry);
}

export function readRegistry(prefix: string): RegistryEntry | null {
  try {
    const parsed = JSON.parse(readFileSync(registryFile(prefix), 'utf8')) as RegistryEntry;
    return parsed && typeof parsed.root === 'string' ? parsed : null;
  } catch {
    return null;
  }
}

export function removeRegistry(prefix: string): void {
  rmSync(registryFile(prefix), { force: true });
}
