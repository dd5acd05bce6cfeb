/**
 * The L4 benchmark's lab side: the workload pods it measures between, where they (and the ztunnels) run, the
 * processes behind a pod, and ztunnel's connection counters. Everything goes through lab/cluster/lab.ts the
 * way a user does: the real kubectl with the lab kubeconfig, the supervisor's exec target for a pod's netns
 * path and container PID, `lab exec` for curl inside ztunnel's pod.
 */
import { readdirSync, readFileSync } from 'node:fs';
import type { V1Pod, V1PodList } from '@kubernetes/client-node';
import { stringify as stringifyYaml } from 'yaml';
import type { Lab } from '../../lab/cluster/lab.ts';

/** Namespace label that enrols a namespace in the ambient mesh. */
export const AMBIENT_LABEL = 'istio.io/dataplane-mode';
/** Written by the CNI agent once a pod's traffic is redirected to ztunnel. */
const REDIRECTION_ANNOTATION = 'ambient.istio.io/redirection';

export interface PodRef {
  readonly namespace: string;
  readonly name: string;
  readonly node: string;
  readonly ip: string;
  /** The pod sandbox's network namespace (a bind mount under /var/run/netns). */
  readonly netns: string;
}

export interface ZtunnelRef extends PodRef {
  /** Host PID of the container's init (the lab's shim); ztunnel is a descendant. */
  readonly initPid: number;
}

async function kubectl(lab: Lab, args: readonly string[], input?: string): Promise<string> {
  const r = await lab.kubectl(args, input === undefined ? {} : { input });
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed: ${r.stderr.trim()}`);
  return r.stdout;
}

/**
 * A pod that only sleeps (the curl sample's image runs host programs: the lab starts `/bin/sleep`), pinned to
 * a node; the benchmark runs its programs inside the pod's network namespace from the host.
 */
function sleeper(namespace: string, name: string, node: string): object {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, labels: { app: name } },
    spec: {
      nodeName: node,
      terminationGracePeriodSeconds: 0,
      containers: [{ name: 'main', image: 'curlimages/curl', command: ['/bin/sleep', 'infinity'] }],
    },
  };
}

/**
 * Creates the namespaces (the enrolled one labelled before its pods exist, so the CNI plugin captures them
 * at sandbox creation) and a client pod on `clientNode` and a server pod on `serverNode` in each.
 */
export async function deployWorkloads(
  lab: Lab,
  namespaces: { readonly plain: string; readonly mesh: string },
  nodes: { readonly client: string; readonly server: string },
): Promise<void> {
  const objects: object[] = [
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespaces.plain } },
    {
      apiVersion: 'v1',
      kind: 'Namespace',
      metadata: { name: namespaces.mesh, labels: { [AMBIENT_LABEL]: 'ambient' } },
    },
  ];
  await kubectl(lab, ['apply', '-f', '-'], objects.map((o) => stringifyYaml(o)).join('---\n'));
  const pods = [namespaces.plain, namespaces.mesh].flatMap((ns) => [
    sleeper(ns, 'client', nodes.client),
    sleeper(ns, 'server', nodes.server),
  ]);
  await kubectl(lab, ['apply', '-f', '-'], pods.map((o) => stringifyYaml(o)).join('---\n'));
}

async function listPods(lab: Lab, namespace: string, selector?: string): Promise<V1Pod[]> {
  const list = JSON.parse(
    await kubectl(lab, ['get', 'pods', '-n', namespace, ...(selector ? ['-l', selector] : []), '-o', 'json']),
  ) as V1PodList;
  return list.items.filter((p) => !p.metadata?.deletionTimestamp);
}

function isReady(p: V1Pod): boolean {
  return (p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');
}

/** Waits until the named pod is Ready (and, when asked, captured by the mesh); then where it runs. */
export async function waitForPod(
  lab: Lab,
  namespace: string,
  name: string,
  opts: { captured: boolean; timeoutMs: number },
): Promise<PodRef> {
  const deadline = performance.now() + opts.timeoutMs;
  let why = 'not found';
  for (;;) {
    const p = (await listPods(lab, namespace)).find((x) => x.metadata?.name === name);
    if (p) {
      const captured = p.metadata?.annotations?.[REDIRECTION_ANNOTATION] === 'enabled';
      if (!isReady(p)) why = `not Ready (phase ${p.status?.phase ?? '?'})`;
      else if (opts.captured && !captured) why = `Ready but not annotated ${REDIRECTION_ANNOTATION}=enabled`;
      else if (!opts.captured && captured) throw new Error(`${namespace}/${name} is captured by the mesh`);
      else return podRef(lab, p);
    }
    if (performance.now() > deadline)
      throw new Error(`pod ${namespace}/${name}: ${why} after ${opts.timeoutMs / 1000}s`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function podRef(lab: Lab, p: V1Pod): Promise<PodRef> {
  const namespace = String(p.metadata?.namespace);
  const name = String(p.metadata?.name);
  const t = await lab.execTarget(namespace, name);
  return { namespace, name, node: String(p.spec?.nodeName), ip: String(p.status?.podIP), netns: t.netnsPath };
}

/** The Ready ztunnel of every node, by node name. */
export async function ztunnels(lab: Lab): Promise<Map<string, ZtunnelRef>> {
  const out = new Map<string, ZtunnelRef>();
  for (const p of (await listPods(lab, 'istio-system', 'app=ztunnel')).filter(isReady)) {
    const ref = await podRef(lab, p);
    const t = await lab.execTarget(ref.namespace, ref.name);
    if (!t.pid) throw new Error(`ztunnel ${ref.name} has no running container`);
    out.set(ref.node, { ...ref, initPid: t.pid });
  }
  return out;
}

/** `pid` and all its descendants (one scan of /proc). */
export function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${e}/stat`, 'utf8');
    } catch {
      continue;
    }
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(e));
    children.set(ppid, list);
  }
  const out: number[] = [];
  const todo = [pid];
  while (todo.length > 0) {
    const p = todo.pop()!;
    out.push(p);
    todo.push(...(children.get(p) ?? []));
  }
  return out;
}

/** Kernel clock ticks per second (USER_HZ): /proc/PID/stat times are in these. */
const CLOCK_TICKS = 100;

/** CPU seconds (user + system, all threads) the processes used so far (/proc/PID/stat fields 14, 15). */
export function cpuSeconds(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    ticks += Number(fields[11]) + Number(fields[12]);
  }
  return ticks / CLOCK_TICKS;
}

/** Resident memory of a process now (VmRSS) and at its peak (VmHWM), MiB. */
export function memoryMiB(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)?.[1] ?? Number.NaN);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024 };
}

/** The process of a tree with the largest resident set (a container's program, not its init shim). */
export function largestProcess(pids: readonly number[]): number {
  let best = pids[0]!;
  let most = -1;
  for (const pid of pids) {
    const m = memoryMiB(pid).rss;
    if (m > most) {
      most = m;
      best = pid;
    }
  }
  return best;
}

/** One sample of a Prometheus text exposition: name, labels, value. */
interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

function parseMetrics(text: string, metric: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${metric}{`) && !line.startsWith(`${metric} `)) continue;
    const close = line.lastIndexOf('}');
    const labels: Record<string, string> = {};
    if (close !== -1) {
      for (const m of line.slice(metric.length + 1, close).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g))
        labels[m[1]!] = m[2]!;
    }
    out.push({
      name: metric,
      labels,
      value: Number(
        line
          .slice(close + 1)
          .trim()
          .split(' ')[0],
      ),
    });
  }
  return out;
}

/** ztunnel's TCP connection counters for the workloads of one namespace, summed over ztunnels. */
export interface OpenedCounts {
  /** reporter=source, source workload in the namespace (the client's ztunnel). */
  readonly source: number;
  /** reporter=destination, destination workload in the namespace, connection_security_policy=mutual_tls:
   * connections that arrived over HBONE at the server's ztunnel. */
  readonly destinationMtls: number;
}

const OPENED = 'istio_tcp_connections_opened_total';

/** Scrapes `istio_tcp_connections_opened_total` from each ztunnel's :15020/metrics (in its own netns). */
export async function openedConnections(
  lab: Lab,
  zs: readonly ZtunnelRef[],
  namespace: string,
): Promise<OpenedCounts> {
  let source = 0;
  let destinationMtls = 0;
  for (const z of zs) {
    const r = await lab.exec(
      z.namespace,
      z.name,
      ['curl', '-sS', '-m', '5', 'http://localhost:15020/metrics'],
      { timeoutMs: 10_000 },
    );
    if (r.exitCode !== 0)
      throw new Error(`metrics of ${z.name}: curl exit ${r.exitCode}: ${r.stderr.trim()}`);
    for (const s of parseMetrics(r.stdout, OPENED)) {
      if (s.labels.reporter === 'source' && s.labels.source_workload_namespace === namespace)
        source += s.value;
      if (
        s.labels.reporter === 'destination' &&
        s.labels.destination_workload_namespace === namespace &&
        s.labels.connection_security_policy === 'mutual_tls'
      )
        destinationMtls += s.value;
    }
  }
  return { source, destinationMtls };
}
