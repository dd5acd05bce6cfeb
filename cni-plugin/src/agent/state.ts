/**
 * Node-local pod sandbox state: `<run dir>/pods/<pod uid>.json`, one file per pod, written on every plugin
 * ADD (ambient or not), removed on DEL and when the pod is deleted.
 *
 * Why: Istio finds the netns of pods that were running before the agent started (or before they were
 * labelled) by scanning /proc for the pod's cgroup. The lab shares one /proc among all nodes, so a scan
 * would find other nodes' pods; instead the agent remembers what the runtime told the plugin (CNI_NETNS) —
 * see docs/cni.md "Finding a pod's netns". The file also carries the CaptureRecord, so a restarted agent can
 * still undo a capture exactly.
 */
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describeError, MeshError } from '../../../pkg/errors/index.ts';
import type { CaptureRecord } from '../rules/index.ts';

export interface PodSandbox {
  readonly uid: string;
  readonly namespace: string;
  readonly name: string;
  readonly containerId: string;
  /** The netns path as the agent opens it (already translated to the agent's mounts). */
  readonly netns: string;
  readonly ips: readonly string[];
  readonly updatedAt: string;
  /** Set while the pod is captured; what release must undo. */
  readonly capture: CaptureRecord | null;
}

/** Pod uids are RFC 4122 strings; anything else must not become a file name. */
const UID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

function isSandbox(v: unknown): v is PodSandbox {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  return (
    typeof o.uid === 'string' &&
    UID_RE.test(o.uid) &&
    typeof o.namespace === 'string' &&
    typeof o.name === 'string' &&
    typeof o.containerId === 'string' &&
    typeof o.netns === 'string' &&
    Array.isArray(o.ips) &&
    (o.capture === null || typeof o.capture === 'object')
  );
}

export class PodStateStore {
  readonly dir: string;
  readonly #pods = new Map<string, PodSandbox>();

  constructor(runDir: string) {
    this.dir = join(runDir, 'pods');
  }

  static validUid(uid: string): boolean {
    return UID_RE.test(uid);
  }

  /** Creates the dir and loads every file; unreadable ones are removed and reported. */
  async load(): Promise<{ loaded: number; rejected: string[] }> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const rejected: string[] = [];
    for (const name of await readdir(this.dir)) {
      if (!name.endsWith('.json')) continue;
      const path = join(this.dir, name);
      try {
        const doc = JSON.parse(await readFile(path, 'utf8')) as unknown;
        if (!isSandbox(doc) || `${doc.uid}.json` !== name) throw new Error('not a pod state record');
        this.#pods.set(doc.uid, doc);
      } catch (err) {
        rejected.push(`${name}: ${describeError(err)}`);
        await rm(path, { force: true });
      }
    }
    return { loaded: this.#pods.size, rejected };
  }

  get(uid: string): PodSandbox | null {
    return this.#pods.get(uid) ?? null;
  }

  list(): PodSandbox[] {
    return [...this.#pods.values()];
  }

  byContainerId(containerId: string): PodSandbox | null {
    for (const p of this.#pods.values()) if (p.containerId === containerId) return p;
    return null;
  }

  async set(pod: PodSandbox): Promise<void> {
    if (!UID_RE.test(pod.uid)) {
      throw new MeshError(
        'MESH_ERR_CNI_STATE',
        `refusing pod uid ${JSON.stringify(pod.uid)} as a state file name`,
      );
    }
    const path = join(this.dir, `${pod.uid}.json`);
    const tmp = `${path}.tmp`;
    try {
      await writeFile(tmp, `${JSON.stringify(pod)}\n`, { mode: 0o600 });
      await rename(tmp, path);
    } catch (err) {
      throw new MeshError('MESH_ERR_CNI_STATE', `writing ${path}: ${describeError(err)}`, { cause: err });
    }
    this.#pods.set(pod.uid, pod);
  }

  async setCapture(uid: string, capture: CaptureRecord | null): Promise<void> {
    const pod = this.#pods.get(uid);
    if (pod) await this.set({ ...pod, capture, updatedAt: new Date().toISOString() });
  }

  async remove(uid: string): Promise<void> {
    if (!UID_RE.test(uid)) return;
    this.#pods.delete(uid);
    await rm(join(this.dir, `${uid}.json`), { force: true });
  }
}
