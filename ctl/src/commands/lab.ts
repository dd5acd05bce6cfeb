/**
 * ambientctl lab up | status | down | kubectl | exec | logs: the local lab (lab/cluster), a multi-node
 * Kubernetes-shaped cluster in network namespaces on this machine. See docs/lab.md.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, relative } from 'node:path';
import { Lab, REPO_ROOT } from '../../../lab/cluster/lab.ts';
import { DEFAULT_PREFIX } from '../../../lab/cluster/paths.ts';
import { findKubectl, requireRoot } from '../../../lab/cluster/prereq.ts';
import { containerLogTail, podTable } from '../../../lab/cluster/workloads.ts';
import { tool } from '../../../lab/node/sys.ts';
import { MeshError } from '../../../pkg/errors/index.ts';
import type { Command, CommandContext } from '../cli.ts';

const LAB_OPTIONS = {
  prefix: { type: 'string' },
  root: { type: 'string' },
} as const;

function s(ctx: CommandContext, key: string): string | undefined {
  const v = ctx.values[key];
  return typeof v === 'string' ? v : undefined;
}

function labRef(ctx: CommandContext): { prefix: string; root?: string } {
  const root = s(ctx, 'root');
  return { prefix: s(ctx, 'prefix') ?? DEFAULT_PREFIX, ...(root ? { root } : {}) };
}

function intOption(ctx: CommandContext, key: string, min: number, max: number): number | undefined {
  const v = s(ctx, key);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max)
    throw new MeshError('MESH_ERR_CTL_USAGE', `--${key} must be an integer in ${min}..${max}, not ${v}`);
  return n;
}

let nodeCmd: string | null = null;

/**
 * How the user runs Node 24 from their shell: `node` when the first `node` on their PATH (npm's own
 * node_modules/.bin entries left out: `npm start` adds them) is Node 24+, else the Node running us.
 */
function nodeCommand(): string {
  if (nodeCmd) return nodeCmd;
  const dirs = (process.env.PATH ?? '').split(':').filter((d) => d && !d.endsWith('node_modules/.bin'));
  for (const d of dirs) {
    const candidate = join(d, 'node');
    if (!existsSync(candidate)) continue;
    const v = spawnSync(candidate, ['--version'], { encoding: 'utf8', timeout: 5_000 }).stdout ?? '';
    if (Number(/^v(\d+)/.exec(v.trim())?.[1] ?? 0) >= 24) nodeCmd = 'node';
    break;
  }
  if (!nodeCmd) {
    const rel = relative(process.cwd(), join(REPO_ROOT, 'node_modules/.bin/node'));
    nodeCmd =
      existsSync(join(REPO_ROOT, 'node_modules/.bin/node')) && !rel.startsWith('..') ? rel : process.execPath;
  }
  return nodeCmd;
}

/** `node ctl/main.ts lab <sub> [--prefix P] [--root R]` as the user can type it from where they are. */
function labCmd(ctx: CommandContext, sub: string): string {
  const rel = relative(process.cwd(), `${REPO_ROOT}/ctl/main.ts`);
  const base = `${nodeCommand()} ${rel.startsWith('..') ? `${REPO_ROOT}/ctl/main.ts` : rel}`;
  const ref = labRef(ctx);
  const flags = `${ref.prefix !== DEFAULT_PREFIX ? ` --prefix ${ref.prefix}` : ''}${ref.root ? ` --root ${ref.root}` : ''}`;
  const [word, ...rest] = sub.split(' ');
  return `${base} lab ${word}${flags}${rest.length ? ` ${rest.join(' ')}` : ''}`;
}

function runInherit(file: string, args: readonly string[], env?: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: 'inherit', ...(env ? { env } : {}) });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      resolve(code ?? (signal ? 128 + (signal === 'SIGKILL' ? 9 : signal === 'SIGINT' ? 2 : 15) : 1));
    });
  });
}

/** `pod`, or `deploy/<name>` / `deployment/<name>` → the name of a running pod of it. */
async function resolvePodName(lab: Lab, namespace: string, which: string): Promise<string> {
  const m = /^(deploy|deployment|deployments|ds|daemonset|daemonsets)\/(.+)$/.exec(which);
  if (!m) return which.replace(/^(?:pod|pods|po)\//, '');
  const kind = (m[1] ?? '').startsWith('deploy') ? 'deployments' : 'daemonsets';
  const api = lab.api();
  try {
    const w = await api.get(`/apis/apps/v1/namespaces/${namespace}/${kind}/${m[2]}`);
    const ml = ((w.spec as { selector?: { matchLabels?: Record<string, string> } } | undefined)?.selector
      ?.matchLabels ?? {}) as Record<string, string>;
    if (!w.metadata)
      throw new MeshError('MESH_ERR_LAB_RUNTIME_NOT_FOUND', `${kind} ${namespace}/${m[2]} not found`);
    const sel = Object.entries(ml)
      .map(([k, v]) => `${k}=${v}`)
      .join(',');
    const list = await api.get(
      `/api/v1/namespaces/${namespace}/pods?labelSelector=${encodeURIComponent(sel)}`,
    );
    const pods = (
      (list.items ?? []) as {
        metadata?: { name?: string; deletionTimestamp?: string };
        status?: { phase?: string };
      }[]
    )
      .filter((p) => !p.metadata?.deletionTimestamp)
      .sort((a, b) => Number(b.status?.phase === 'Running') - Number(a.status?.phase === 'Running'));
    const name = pods[0]?.metadata?.name;
    if (!name) throw new MeshError('MESH_ERR_LAB_RUNTIME_NOT_FOUND', `${which} has no pods in ${namespace}`);
    return name;
  } finally {
    api.close();
  }
}

export const labCommands: Command[] = [
  {
    path: ['lab', 'up'],
    summary:
      'Start the local lab (nodes in network namespaces, API server, kubelets), install the mesh from deploy/, optionally the demo.',
    usage:
      '[--nodes N] [--demo] [--no-mesh] [--prefix P] [--root DIR] [--block B] [--fresh] [--timeout S] [--verbose]',
    options: {
      ...LAB_OPTIONS,
      nodes: { type: 'string' },
      demo: { type: 'boolean' },
      'no-mesh': { type: 'boolean' },
      block: { type: 'string' },
      fresh: { type: 'boolean' },
      timeout: { type: 'string' },
      verbose: { type: 'boolean', short: 'v' },
      'backoff-ms': { type: 'string' },
    },
    async run(ctx) {
      requireRoot();
      const ref = labRef(ctx);
      const nodes = intOption(ctx, 'nodes', 1, 200);
      const block = intOption(ctx, 'block', 1, 254);
      const timeout = intOption(ctx, 'timeout', 1, 3600);
      const backoff = intOption(ctx, 'backoff-ms', 10, 300_000);
      const demo = ctx.values.demo === true;
      const mesh = ctx.values['no-mesh'] !== true;
      ctx.out(`Starting the ambient-ts lab ${ref.prefix}${ref.root ? ` in ${ref.root}` : ''}`);
      const { lab, problems, timings } = await Lab.up({
        ...ref,
        ...(nodes ? { nodes } : {}),
        ...(block ? { block } : {}),
        ...(timeout ? { timeoutMs: timeout * 1000 } : {}),
        ...(backoff ? { backoff: { initialMs: backoff, maxMs: backoff * 30 } } : {}),
        mesh,
        demo,
        fresh: ctx.values.fresh === true,
        verbose: ctx.values.verbose === true,
        out: ctx.out,
        tty: process.stdout.isTTY === true,
      });
      const c = lab.config;
      ctx.out('');
      ctx.out(
        `The lab is running in the background: ${c.nodes} nodes in 10.${c.block}.0.0/16, root ${lab.root} ` +
          `(ready in ${(timings.totalMs / 1000).toFixed(1)}s).`,
      );
      ctx.out(`  kubeconfig:   ${lab.kubeconfig}`);
      ctx.out(`                export KUBECONFIG=${lab.kubeconfig}   # then plain kubectl works too`);
      ctx.out(`  logs:         ${lab.paths.supervisorLog} (pods: ${labCmd(ctx, 'logs [-n NS] POD')})`);
      ctx.out('Try:');
      ctx.out(`  ${labCmd(ctx, 'kubectl -- get pods -A -o wide')}`);
      if (demo) {
        ctx.out(
          `  ${labCmd(ctx, 'exec deploy/curl')} -- curl -s productpage:9080/productpage | grep -o 'reviews-v[0-9]-[a-z0-9-]*'`,
        );
        if (mesh)
          ctx.out(`  ${labCmd(ctx, 'kubectl')} -- label namespace default istio.io/dataplane-mode=ambient`);
      } else {
        ctx.out(`  ${labCmd(ctx, 'kubectl')} -- apply -f samples/bookinfo/bookinfo.yaml`);
      }
      ctx.out(`  ${labCmd(ctx, 'status')}`);
      ctx.out(
        `Stop it:  ${labCmd(ctx, 'down')}        (keeps the cluster state for the next \`lab up\`; --purge removes it)`,
      );
      if (problems.length > 0) {
        ctx.err('');
        ctx.err(
          `✘ MESH_ERR_LAB_NOT_READY: ${problems.length} component(s) did not become Ready (the lab keeps running):`,
        );
        for (const p of problems) ctx.err(p);
        return 1;
      }
      return 0;
    },
  },
  {
    path: ['lab', 'status'],
    summary: 'Show whether the lab runs, its addresses, nodes and pods.',
    usage: '[--prefix P] [--root DIR]',
    options: { ...LAB_OPTIONS },
    async run(ctx) {
      let lab: Lab;
      try {
        lab = Lab.open(labRef(ctx));
      } catch {
        ctx.out(`No lab ${labRef(ctx).prefix} has been set up (start one with \`${labCmd(ctx, 'up')}\`).`);
        return 3;
      }
      const pid = lab.pid();
      const st = lab.status();
      const c = lab.config;
      if (!pid || st?.phase !== 'ready') {
        ctx.out(
          `Lab ${c.prefix} (root ${lab.root}) is not running${pid && st ? ` (supervisor ${st.phase})` : ''}; ` +
            `its API state ${lab.paths.apiDir} is kept for the next \`lab up\`.`,
        );
        return 3;
      }
      const upFor = st.readyAt ? Math.round((Date.now() - Date.parse(st.readyAt)) / 1000) : 0;
      ctx.out(`Lab ${c.prefix} is running (supervisor pid ${pid}, up ${upFor}s), root ${lab.root}`);
      ctx.out(
        `  API server:  ${st.apiUrl ?? '?'} (in the lab: 10.${c.block}.0.3, Service kubernetes.default)`,
      );
      ctx.out(`  kubeconfig:  ${lab.kubeconfig}`);
      ctx.out(
        `  addresses:   10.${c.block}.0.0/16, cluster DNS 10.${c.block}.0.2, services 10.${c.block}.240.0/20`,
      );
      const live = (await lab.liveStatus().catch(() => null)) as {
        lab?: { nodes?: { name: string; ip: string; podCidr: string; netns: string; pods: string[] }[] };
      } | null;
      ctx.out('Nodes:');
      for (const n of live?.lab?.nodes ?? st.nodes ?? []) {
        const pods = 'pods' in n ? ` ${(n as { pods: string[] }).pods.length} pods` : '';
        ctx.out(`  ${n.name}  ${n.ip}  pods ${n.podCidr}  netns ${n.netns}${pods}`);
      }
      const api = lab.api();
      try {
        ctx.out('Pods:');
        ctx.out(
          (await podTable(api))
            .split('\n')
            .map((l) => `  ${l}`)
            .join('\n'),
        );
      } finally {
        api.close();
      }
      return 0;
    },
  },
  {
    path: ['lab', 'down'],
    summary: 'Stop the lab and remove every namespace, link, rule, mount and process it created.',
    usage: '[--purge] [--prefix P] [--root DIR]',
    options: { ...LAB_OPTIONS, purge: { type: 'boolean' } },
    async run(ctx) {
      requireRoot();
      const ref = labRef(ctx);
      ctx.out(`Stopping the ambient-ts lab ${ref.prefix}`);
      const r = await Lab.down({ ...ref, purge: ctx.values.purge === true, out: ctx.out });
      if (r.cleanup.errors.length > 0) {
        ctx.err(`✘ cleanup incomplete:\n  ${r.cleanup.errors.join('\n  ')}`);
        return 1;
      }
      ctx.out(
        r.purged
          ? `The lab ${ref.prefix} is gone, state included (${r.root} removed).`
          : `The lab ${ref.prefix} is down. Its cluster state stays in ${r.root}/api for the next \`lab up\` ` +
              '(`lab down --purge` removes it).',
      );
      return 0;
    },
  },
  {
    path: ['lab', 'kubectl'],
    summary: 'Run kubectl against the lab (its kubeconfig): ambientctl lab kubectl -- get pods -A',
    usage: '[--prefix P] [--root DIR] -- <kubectl args…>',
    options: { ...LAB_OPTIONS },
    positionals: true,
    async run(ctx) {
      const lab = Lab.open(labRef(ctx));
      const kubectl = findKubectl();
      if (!kubectl) throw new MeshError('MESH_ERR_LAB_PREREQ', 'kubectl is not installed');
      return runInherit(kubectl, ['--kubeconfig', lab.kubeconfig, ...ctx.positionals]);
    },
  },
  {
    path: ['lab', 'exec'],
    summary: "Run a command in a pod's namespaces (network, and a running container's mount/pid/uts).",
    usage: '[-n NAMESPACE] <pod | deploy/NAME> [-c CONTAINER] [--prefix P] [--root DIR] -- <command…>',
    options: {
      ...LAB_OPTIONS,
      namespace: { type: 'string', short: 'n' },
      container: { type: 'string', short: 'c' },
    },
    positionals: true,
    async run(ctx) {
      requireRoot();
      const [which, ...argv] = ctx.positionals;
      if (!which || argv.length === 0)
        throw new MeshError('MESH_ERR_CTL_USAGE', 'lab exec needs a pod and a command: lab exec POD -- CMD…');
      const lab = Lab.open(labRef(ctx));
      lab.requireRunning();
      const ns = s(ctx, 'namespace') ?? 'default';
      const pod = await resolvePodName(lab, ns, which);
      const t = await lab.execTarget(ns, pod, s(ctx, 'container'));
      const args = t.pid
        ? ['--target', String(t.pid), '--net', '--mount', '--uts', '--pid', '--root', '--wd', '--', ...argv]
        : [`--net=${t.netnsPath}`, '--', ...argv];
      return runInherit(tool('nsenter'), args, t.env);
    },
  },
  {
    path: ['lab', 'logs'],
    summary: "Print a pod container's log (from its node's /var/log/pods; the lab API serves no pods/log).",
    usage:
      '[-n NAMESPACE] <pod | deploy/NAME> [-c CONTAINER] [--previous] [--tail N] [--prefix P] [--root DIR]',
    options: {
      ...LAB_OPTIONS,
      namespace: { type: 'string', short: 'n' },
      container: { type: 'string', short: 'c' },
      previous: { type: 'boolean', short: 'p' },
      tail: { type: 'string' },
    },
    positionals: true,
    async run(ctx) {
      const [which] = ctx.positionals;
      if (!which) throw new MeshError('MESH_ERR_CTL_USAGE', 'lab logs needs a pod name');
      const lab = Lab.open(labRef(ctx));
      const ns = s(ctx, 'namespace') ?? 'default';
      const name = await resolvePodName(lab, ns, which);
      const api = lab.api();
      try {
        const pod = await api.get(`/api/v1/namespaces/${ns}/pods/${name}`);
        const md = (pod.metadata ?? {}) as { uid?: string };
        const spec = (pod.spec ?? {}) as { nodeName?: string; containers?: { name: string }[] };
        if (!md.uid) throw new MeshError('MESH_ERR_LAB_RUNTIME_NOT_FOUND', `pod ${ns}/${name} not found`);
        const container = s(ctx, 'container') ?? spec.containers?.[0]?.name ?? '';
        const text = containerLogTail(
          lab.paths,
          { namespace: ns, name, uid: md.uid, node: spec.nodeName ?? '' },
          container,
          intOption(ctx, 'tail', 0, 1_000_000) ?? 0,
          ctx.values.previous === true,
        );
        if (text) ctx.out(text);
        return 0;
      } finally {
        api.close();
      }
    },
  },
];
