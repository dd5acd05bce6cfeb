/**
 * Reading the lab's API from the host (admin kubeconfig) to wait for workloads and to explain the ones that
 * do not become Ready: pod phase, container states, restarts, and the last lines of the failing containers'
 * logs, read from the node's /var/log/pods (the lab API serves no pods/log).
 */
import { readdirSync, readFileSync } from 'node:fs';
import https from 'node:https';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { readCriLog } from '../runtime/logs.ts';
import type { LabPaths } from './paths.ts';

type Obj = Record<string, unknown>;
function obj(v: unknown): Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {};
}
function arr(v: unknown): Obj[] {
  return Array.isArray(v) ? v.map(obj) : [];
}
function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}
function num(v: unknown): number {
  return typeof v === 'number' ? v : 0;
}

/** A minimal admin client for the lab API server (reads only). */
export class LabApi {
  private readonly server: URL;
  private readonly ca: string;
  private readonly token: string;
  private readonly agent: https.Agent;

  constructor(kubeconfigPath: string) {
    const kc = obj(parseYaml(readFileSync(kubeconfigPath, 'utf8')));
    const cluster = obj(arr(kc.clusters)[0]?.cluster);
    const user = obj(arr(kc.users)[0]?.user);
    this.server = new URL(str(cluster.server));
    this.ca = Buffer.from(str(cluster['certificate-authority-data']), 'base64').toString('utf8');
    this.token = str(user.token);
    this.agent = new https.Agent({ ca: this.ca, keepAlive: true, maxSockets: 4 });
  }

  get(path: string, timeoutMs = 10_000): Promise<Obj> {
    return new Promise((resolve, reject) => {
      const req = https.request(
        new URL(path, this.server),
        {
          agent: this.agent,
          headers: { authorization: `Bearer ${this.token}`, accept: 'application/json' },
          timeout: timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            if (res.statusCode === 200) {
              try {
                resolve(obj(JSON.parse(text)));
              } catch (err) {
                reject(err);
              }
            } else if (res.statusCode === 404) {
              resolve({});
            } else {
              reject(new Error(`GET ${path}: HTTP ${res.statusCode}: ${text.slice(0, 300)}`));
            }
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`GET ${path}: timed out`)));
      req.on('error', reject);
      req.end();
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

export interface WorkloadRef {
  readonly kind: 'Deployment' | 'DaemonSet';
  readonly namespace: string;
  readonly name: string;
  /** Shown in progress and reports (e.g. "istiod"). */
  readonly label?: string;
}

export interface WorkloadState {
  readonly ref: WorkloadRef;
  readonly exists: boolean;
  readonly ready: boolean;
  /** "1/1 ready", "0/2 ready", "not found". */
  readonly summary: string;
  /** Not Ready and not going to be: every pod that is not Ready fails to pull its image (no program for it). */
  readonly stuck: boolean;
  readonly selector: string;
}

function workloadPath(w: WorkloadRef): string {
  return `/apis/apps/v1/namespaces/${w.namespace}/${w.kind === 'Deployment' ? 'deployments' : 'daemonsets'}/${w.name}`;
}

function matchLabelsSelector(o: Obj): string {
  const ml = obj(obj(obj(o.spec).selector).matchLabels);
  return Object.entries(ml)
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(',');
}

async function podsReady(
  api: LabApi,
  namespace: string,
  selector: string,
): Promise<{ ready: number; total: number; pullErrors: number }> {
  const list = await api.get(
    `/api/v1/namespaces/${namespace}/pods?labelSelector=${encodeURIComponent(selector)}`,
  );
  const pods = arr(list.items).filter((p) => !obj(p.metadata).deletionTimestamp);
  const isReady = (p: Obj): boolean =>
    arr(obj(p.status).conditions).some((c) => c.type === 'Ready' && c.status === 'True');
  const ready = pods.filter(isReady).length;
  // In the lab an image is a program of this tree: a pull error does not go away by waiting.
  const pullErrors = pods.filter(
    (p) =>
      !isReady(p) &&
      arr(obj(p.status).containerStatuses).some(
        (c) => str(obj(obj(c.state).waiting).reason) === 'ErrImagePull',
      ),
  ).length;
  return { ready, total: pods.length, pullErrors };
}

export async function workloadState(api: LabApi, w: WorkloadRef): Promise<WorkloadState> {
  const o = await api.get(workloadPath(w));
  if (!o.metadata)
    return { ref: w, exists: false, ready: false, summary: 'not found', selector: '', stuck: false };
  const selector = matchLabelsSelector(o);
  const st = obj(o.status);
  let want: number;
  if (w.kind === 'Deployment')
    want = typeof obj(o.spec).replicas === 'number' ? num(obj(o.spec).replicas) : 1;
  else want = num(st.desiredNumberScheduled);
  // Count Ready pods directly: controller status lags a little behind pod status.
  const pods = await podsReady(api, w.namespace, selector);
  const ready = want > 0 && pods.ready >= want && pods.total === pods.ready;
  const stuck = !ready && pods.pullErrors > 0 && pods.pullErrors === pods.total - pods.ready;
  return {
    ref: w,
    exists: true,
    ready,
    summary: `${pods.ready}/${want} ready${stuck ? ', image not runnable' : ''}`,
    selector,
    stuck,
  };
}

/**
 * Polls until every workload is Ready (or stuck on an image the lab cannot run) or the time is up; returns the
 * last state of each.
 */
export async function waitForWorkloads(
  api: LabApi,
  workloads: readonly WorkloadRef[],
  timeoutMs: number,
  onReady?: (s: WorkloadState) => void,
): Promise<WorkloadState[]> {
  const deadline = performance.now() + timeoutMs;
  const reported = new Set<string>();
  for (;;) {
    const states = await Promise.all(workloads.map((w) => workloadState(api, w)));
    for (const s of states) {
      const key = `${s.ref.namespace}/${s.ref.name}`;
      if (s.ready && !reported.has(key)) {
        reported.add(key);
        onReady?.(s);
      }
    }
    if (states.every((s) => s.ready || s.stuck) || performance.now() >= deadline) return states;
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** `kubectl get pods -A -o wide`-like table of the lab's pods. */
export async function podTable(api: LabApi, namespace?: string): Promise<string> {
  const list = await api.get(namespace ? `/api/v1/namespaces/${namespace}/pods` : '/api/v1/pods');
  const rows: string[][] = [['NAMESPACE', 'NAME', 'READY', 'STATUS', 'RESTARTS', 'IP', 'NODE']];
  for (const p of arr(list.items)) {
    const m = obj(p.metadata);
    const st = obj(p.status);
    const cs = arr(st.containerStatuses);
    const ready = cs.filter((c) => c.ready === true).length;
    const total = arr(obj(p.spec).containers).length;
    rows.push([
      str(m.namespace),
      str(m.name),
      `${ready}/${total}`,
      podStatusWord(p),
      String(cs.reduce((n, c) => n + num(c.restartCount), 0)),
      str(st.podIP) || '<none>',
      str(obj(p.spec).nodeName) || '<none>',
    ]);
  }
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join('   ')
        .trimEnd(),
    )
    .join('\n');
}

/** The STATUS column kubectl shows for a pod. */
export function podStatusWord(p: Obj): string {
  if (obj(p.metadata).deletionTimestamp) return 'Terminating';
  const st = obj(p.status);
  for (const c of arr(st.containerStatuses)) {
    const w = obj(obj(c.state).waiting);
    if (str(w.reason) && str(w.reason) !== 'ContainerCreating') return str(w.reason);
    const t = obj(obj(c.state).terminated);
    if (str(t.reason) && st.phase !== 'Succeeded') return str(t.reason);
  }
  for (const c of arr(st.containerStatuses))
    if (str(obj(obj(c.state).waiting).reason)) return 'ContainerCreating';
  return str(st.phase) || 'Pending';
}

/** Last `lines` lines of a container's log (current instance, else the previous one). */
export function containerLogTail(
  paths: LabPaths,
  pod: { namespace: string; name: string; uid: string; node: string },
  container: string,
  lines: number,
  previous = false,
): string {
  const dir = join(
    paths.nodesDir,
    pod.node,
    'var/log/pods',
    `${pod.namespace}_${pod.name}_${pod.uid}`,
    container,
  );
  let files: number[];
  try {
    files = readdirSync(dir)
      .filter((f) => /^\d+\.log$/.test(f))
      .map((f) => Number.parseInt(f, 10))
      .sort((a, b) => a - b);
  } catch {
    return '';
  }
  const pick = previous ? files.at(-2) : files.at(-1);
  if (pick === undefined) return '';
  const text = readCriLog(join(dir, `${pick}.log`)).trimEnd();
  if (lines <= 0) return text;
  return text.split('\n').slice(-lines).join('\n');
}

/** Why the pods of a workload are not Ready: one block per pod, with log tails of unhappy containers. */
export async function explainWorkload(
  api: LabApi,
  paths: LabPaths,
  s: WorkloadState,
  logLines = 8,
): Promise<string> {
  if (!s.exists) return `    ${s.ref.kind.toLowerCase()} ${s.ref.namespace}/${s.ref.name} does not exist`;
  const list = await api.get(
    `/api/v1/namespaces/${s.ref.namespace}/pods?labelSelector=${encodeURIComponent(s.selector)}`,
  );
  const pods = arr(list.items);
  if (pods.length === 0)
    return `    no pods yet for ${s.ref.kind.toLowerCase()} ${s.ref.namespace}/${s.ref.name}`;
  const out: string[] = [];
  for (const p of pods) {
    const m = obj(p.metadata);
    const st = obj(p.status);
    const node = str(obj(p.spec).nodeName);
    out.push(`    pod ${str(m.namespace)}/${str(m.name)} on ${node || '<unscheduled>'}: ${podStatusWord(p)}`);
    for (const c of arr(st.containerStatuses)) {
      const state = obj(c.state);
      const w = obj(state.waiting);
      const t = obj(state.terminated);
      const last = obj(obj(c.lastState).terminated);
      const parts: string[] = [];
      if (state.running) parts.push('running');
      if (str(w.reason))
        parts.push(`waiting: ${str(w.reason)}${str(w.message) ? ` (${str(w.message)})` : ''}`);
      if (str(t.reason)) parts.push(`terminated: ${str(t.reason)} exit ${num(t.exitCode)}`);
      if (num(c.restartCount)) parts.push(`${num(c.restartCount)} restarts, last exit ${num(last.exitCode)}`);
      parts.push(c.ready === true ? 'ready' : 'not ready');
      out.push(`      container ${str(c.name)}: ${parts.join('; ')}`);
      if (c.ready !== true && node) {
        const ref = { namespace: str(m.namespace), name: str(m.name), uid: str(m.uid), node };
        let tail = containerLogTail(paths, ref, str(c.name), logLines);
        if (!tail && num(c.restartCount)) tail = containerLogTail(paths, ref, str(c.name), logLines, true);
        if (tail) out.push(...tail.split('\n').map((l) => `        | ${l.slice(0, 240)}`));
      }
    }
  }
  return out.join('\n');
}
