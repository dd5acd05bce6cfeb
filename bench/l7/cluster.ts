/**
 * The L7 benchmark's lab side: namespaces, pods, Services and the HTTPRoute it measures; the waypoint
 * (deployed with `ambientctl waypoint apply --enroll-namespace --wait` as a user does, then pinned to a node);
 * where the waypoint process runs; its `istio_requests_total`; one-off HTTP requests from inside a pod's netns
 * for routing checks. Pod lookup, /proc accounting and ztunnel helpers come from bench/l4/cluster.ts.
 */
import { spawn } from 'node:child_process';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { join } from 'node:path';
import type { V1Pod, V1PodList } from '@kubernetes/client-node';
import { stringify as stringifyYaml } from 'yaml';
import { type Lab, REPO_ROOT } from '../../lab/cluster/lab.ts';
import { connectInNetns } from '../../pkg/netns/index.ts';
import { AMBIENT_LABEL } from '../l4/cluster.ts';

export const WAYPOINT = 'waypoint';
const GATEWAY_NAME_LABEL = 'gateway.networking.k8s.io/gateway-name';

async function kubectl(lab: Lab, args: readonly string[], input?: string): Promise<string> {
  const r = await lab.kubectl(args, input === undefined ? {} : { input });
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed: ${r.stderr.trim()}`);
  return r.stdout;
}

export async function apply(lab: Lab, objects: readonly object[]): Promise<void> {
  await kubectl(lab, ['apply', '-f', '-'], objects.map((o) => stringifyYaml(o)).join('---\n'));
}

/** A pod that only sleeps (the lab runs `/bin/sleep`); the benchmark runs its programs in the pod's netns. */
function sleeper(namespace: string, name: string, node: string, app: string): object {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, labels: { app } },
    spec: {
      nodeName: node,
      terminationGracePeriodSeconds: 0,
      containers: [{ name: 'main', image: 'curlimages/curl', command: ['/bin/sleep', 'infinity'] }],
    },
  };
}

function service(namespace: string, name: string, port: number, targetPort: number): object {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace },
    spec: {
      selector: { app: 'server' },
      ports: [{ name: 'http', appProtocol: 'http', port, targetPort }],
    },
  };
}

export interface Layout {
  readonly plain: string;
  readonly l4: string;
  readonly wp: string;
  readonly clientNode: string;
  readonly serverNode: string;
  /** Where nginx and haproxy run (the waypoint's node). */
  readonly proxyNode: string;
  readonly servicePort: number;
  readonly v1Port: number;
  readonly v2Port: number;
}

/**
 * Namespaces (the enrolled ones labelled before their pods exist, so the CNI plugin captures them at sandbox
 * creation), a client pod on the client node and a server pod on the server node in each, the nginx and
 * haproxy pods (not enrolled) on the proxy node, and in each enrolled namespace the Service `echo`
 * (port → v1 port); in the waypoint's namespace also `echo-v1` and `echo-v2`, the HTTPRoute's backends.
 */
export async function deployWorkloads(lab: Lab, l: Layout): Promise<void> {
  await apply(lab, [
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: l.plain } },
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: l.l4, labels: { [AMBIENT_LABEL]: 'ambient' } } },
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: l.wp, labels: { [AMBIENT_LABEL]: 'ambient' } } },
  ]);
  await apply(lab, [
    ...[l.plain, l.l4, l.wp].flatMap((ns) => [
      sleeper(ns, 'client', l.clientNode, 'client'),
      sleeper(ns, 'server', l.serverNode, 'server'),
    ]),
    sleeper(l.plain, 'nginx', l.proxyNode, 'nginx'),
    sleeper(l.plain, 'haproxy', l.proxyNode, 'haproxy'),
    service(l.l4, 'echo', l.servicePort, l.v1Port),
    service(l.wp, 'echo', l.servicePort, l.v1Port),
    service(l.wp, 'echo-v1', l.servicePort, l.v1Port),
    service(l.wp, 'echo-v2', l.servicePort, l.v2Port),
  ]);
}

/**
 * The HTTPRoute (GAMMA: parentRef the Service `echo`) with the routing nginx and haproxy implement: PathPrefix
 * `prefix` + header `header: value` → echo-v1, PathPrefix `prefix` → echo-v2, no other rule (→ 404).
 */
export function httpRoute(
  ns: string,
  port: number,
  r: { prefix: string; header: string; value: string },
): object {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name: 'echo', namespace: ns },
    spec: {
      parentRefs: [{ group: '', kind: 'Service', name: 'echo', port }],
      rules: [
        {
          matches: [
            {
              path: { type: 'PathPrefix', value: r.prefix },
              headers: [{ type: 'Exact', name: r.header, value: r.value }],
            },
          ],
          backendRefs: [{ name: 'echo-v1', port }],
        },
        {
          matches: [{ path: { type: 'PathPrefix', value: r.prefix } }],
          backendRefs: [{ name: 'echo-v2', port }],
        },
      ],
    },
  };
}

export async function clusterIp(lab: Lab, ns: string, name: string): Promise<string> {
  const svc = JSON.parse(await kubectl(lab, ['get', 'service', name, '-n', ns, '-o', 'json'])) as {
    spec?: { clusterIP?: string };
  };
  const ip = svc.spec?.clusterIP;
  if (!ip || ip === 'None') throw new Error(`service ${ns}/${name} has no ClusterIP`);
  return ip;
}

/** `ambientctl <args> --kubeconfig <lab>` as a user runs it; its combined output, or an error. */
export function ambientctl(lab: Lab, args: readonly string[], timeoutMs = 150_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [join(REPO_ROOT, 'ctl', 'main.ts'), ...args, '--kubeconfig', lab.paths.kubeconfig],
      { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`ambientctl ${args.join(' ')} exited ${code}: ${out.trim()}`));
    });
  });
}

async function waypointPods(lab: Lab, ns: string): Promise<V1Pod[]> {
  const list = JSON.parse(
    await kubectl(lab, ['get', 'pods', '-n', ns, '-l', `${GATEWAY_NAME_LABEL}=${WAYPOINT}`, '-o', 'json']),
  ) as V1PodList;
  return list.items;
}

const isReady = (p: V1Pod): boolean =>
  (p.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');

export interface WaypointRef {
  readonly name: string;
  readonly node: string;
  readonly ip: string;
  readonly netns: string;
  /** Host PID of the container's init shim; the waypoint's Node process is a descendant. */
  readonly initPid: number;
}

/**
 * Pins the waypoint's Deployment to `node` (nodeSelector kubernetes.io/hostname) and, unless `accessLog`, turns
 * its per-request access log off (env ACCESS_LOG=false: Istio's default install has no access log, and nginx
 * and haproxy run without one); istiod's controller leaves fields it does not set alone. Waits until the one
 * waypoint pod left is Ready on that node.
 */
export async function pinWaypoint(
  lab: Lab,
  ns: string,
  node: string,
  accessLog: boolean,
  timeoutMs: number,
): Promise<WaypointRef> {
  const patch = {
    spec: {
      template: {
        spec: {
          nodeSelector: { 'kubernetes.io/hostname': node },
          ...(accessLog
            ? {}
            : { containers: [{ name: 'istio-proxy', env: [{ name: 'ACCESS_LOG', value: 'false' }] }] }),
        },
      },
    },
  };
  await kubectl(lab, [
    'patch',
    'deployment',
    WAYPOINT,
    '-n',
    ns,
    '--type',
    'strategic',
    '-p',
    JSON.stringify(patch),
  ]);
  const deadline = performance.now() + timeoutMs;
  let why = '';
  for (;;) {
    const pods = await waypointPods(lab, ns);
    const live = pods.filter((p) => !p.metadata?.deletionTimestamp);
    const p = live[0];
    if (pods.length !== 1 || !p) why = `${pods.length} waypoint pods (${live.length} not terminating)`;
    else if (p.spec?.nodeName !== node) why = `waypoint pod on ${p.spec?.nodeName ?? 'no node'}`;
    else if (!isReady(p)) why = 'waypoint pod not Ready';
    else {
      const env = p.spec?.containers?.[0]?.env ?? [];
      const logOff = env.some((e) => e.name === 'ACCESS_LOG' && e.value === 'false');
      if (logOff === accessLog) throw new Error(`waypoint pod env ACCESS_LOG not as patched`);
      const name = String(p.metadata?.name);
      const t = await lab.execTarget(ns, name);
      if (!t.pid) throw new Error(`waypoint ${name} has no running container`);
      return { name, node, ip: String(p.status?.podIP), netns: t.netnsPath, initPid: t.pid };
    }
    if (performance.now() > deadline)
      throw new Error(`waypoint not pinned to ${node} after ${timeoutMs / 1000}s: ${why}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

export interface Reply {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

/** One HTTP/1.1 GET from inside `netns` (a captured pod's socket is redirected like the app's own). */
export async function getIn(
  netns: string,
  host: string,
  port: number,
  path: string,
  headers: Record<string, string> = {},
  timeoutMs = 5_000,
): Promise<Reply> {
  const socket = await connectInNetns({ netns, host, port, timeoutMs });
  return new Promise<Reply>((resolve, reject) => {
    const r = httpRequest(
      {
        method: 'GET',
        path,
        headers: { host: 'echo', connection: 'close', ...headers },
        createConnection: () => socket,
        timeout: timeoutMs,
      },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(parts).toString('utf8'),
          }),
        );
        res.on('error', reject);
      },
    );
    r.on('timeout', () => r.destroy(new Error(`${host}:${port}${path}: no answer in ${timeoutMs} ms`)));
    r.on('error', reject);
    r.end();
  });
}

/** Sum of the waypoint's `istio_requests_total{reporter="waypoint"}` for destinations in `ns`. */
export async function waypointRequests(w: WaypointRef, ns: string): Promise<number> {
  const text = (await getIn(w.netns, w.ip, 15020, '/metrics')).body;
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith('istio_requests_total{')) continue;
    const close = line.lastIndexOf('}');
    const labels = line.slice(0, close);
    if (!labels.includes('reporter="waypoint"')) continue;
    if (!labels.includes(`destination_service_namespace="${ns}"`)) continue;
    sum += Number(
      line
        .slice(close + 1)
        .trim()
        .split(' ')[0],
    );
  }
  return sum;
}
