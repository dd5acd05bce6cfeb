/**
 * install / uninstall / profile / version / x precheck: the A1 and A2 journeys. Manifests are kustomize
 * profiles under deploy/profiles; applying them goes through the user's own `kubectl` so what we do is what
 * `kubectl apply -k deploy/profiles/<name>` would do.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppsV1Api, CoreV1Api } from '@kubernetes/client-node';
import { MeshError } from '../../../pkg/errors/index.ts';
import { isNotFound, loadKubeConfig } from '../../../pkg/kube/index.ts';
import type { Command, CommandContext } from '../cli.ts';
import { clientVersion, PROFILES_DIR } from '../repo.ts';

export const DEFAULT_PROFILE = 'ambient';

function kubectl(ctx: CommandContext, args: string[], input?: string) {
  const kc = ctx.values.kubeconfig;
  const full = typeof kc === 'string' ? ['--kubeconfig', kc, ...args] : args;
  const res = spawnSync('kubectl', full, { input, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (res.error) {
    throw new MeshError('MESH_ERR_CTL_KUBECTL', `kubectl could not run: ${res.error.message}`, {
      hint: 'install kubectl and put it on PATH',
    });
  }
  return res;
}

export function profiles(): string[] {
  if (!existsSync(PROFILES_DIR)) return [];
  return readdirSync(PROFILES_DIR, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(PROFILES_DIR, d.name, 'kustomization.yaml')))
    .map((d) => d.name)
    .sort();
}

function profileDir(name: string): string {
  if (!profiles().includes(name)) {
    throw new MeshError('MESH_ERR_CTL_PROFILE', `unknown profile ${JSON.stringify(name)}`, {
      hint: `available profiles: ${profiles().join(', ')}`,
    });
  }
  return join(PROFILES_DIR, name);
}

export function renderProfile(ctx: CommandContext, name: string): string {
  const res = kubectl(ctx, ['kustomize', profileDir(name)]);
  if (res.status !== 0)
    throw new MeshError('MESH_ERR_CTL_KUBECTL', `kubectl kustomize failed: ${res.stderr.trim()}`);
  return res.stdout;
}

export function kubeConfigFor(ctx: CommandContext) {
  const path = typeof ctx.values.kubeconfig === 'string' ? ctx.values.kubeconfig : undefined;
  try {
    return loadKubeConfig(path);
  } catch (err) {
    throw new MeshError(
      'MESH_ERR_CTL_CLUSTER',
      `cannot load kubeconfig ${path ?? '(default)'}: ${(err as Error).message}`,
    );
  }
}

async function controlPlaneVersion(ctx: CommandContext): Promise<string | null> {
  const kc = kubeConfigFor(ctx);
  const apps = kc.makeApiClient(AppsV1Api);
  try {
    const d = await apps.readNamespacedDeployment({ name: 'istiod', namespace: 'istio-system' });
    const image = d.spec?.template.spec?.containers[0]?.image ?? '';
    const tag = image.includes(':') ? image.slice(image.lastIndexOf(':') + 1) : 'unknown';
    const ready = d.status?.readyReplicas ?? 0;
    return `${tag} (${ready}/${d.spec?.replicas ?? 1} ready)`;
  } catch (err) {
    if (isNotFound(err)) return null;
    throw new MeshError('MESH_ERR_CTL_CLUSTER', `cannot reach the cluster: ${(err as Error).message}`);
  }
}

export const installCommands: Command[] = [
  {
    path: ['version'],
    summary: 'Print the client version and the control plane version running in the cluster.',
    options: { short: { type: 'boolean' } },
    async run(ctx) {
      ctx.out(`client version: ${clientVersion()}`);
      if (ctx.values.short) return 0;
      const cp = await controlPlaneVersion(ctx);
      ctx.out(
        cp
          ? `control plane version: ${cp}`
          : 'control plane version: none (no running control plane; run `ambientctl install`)',
      );
      return 0;
    },
  },
  {
    path: ['profile', 'list'],
    summary: 'List the installation profiles.',
    run(ctx) {
      ctx.out('Istio configuration profiles:');
      for (const p of profiles()) ctx.out(`    ${p}`);
      return 0;
    },
  },
  {
    path: ['profile', 'dump'],
    summary: 'Print the manifests a profile installs.',
    usage: '[<profile>]',
    positionals: true,
    run(ctx) {
      ctx.out(renderProfile(ctx, ctx.positionals[0] ?? DEFAULT_PROFILE).trimEnd());
      return 0;
    },
  },
  {
    path: ['profile', 'diff'],
    summary: 'Show the difference between two profiles.',
    usage: '<profile-a> <profile-b>',
    positionals: true,
    run(ctx) {
      const [a, b] = ctx.positionals;
      if (!a || !b) throw new MeshError('MESH_ERR_CTL_USAGE', 'profile diff needs two profile names');
      const dir = mkdtempSync(join(tmpdir(), 'ambientctl-'));
      try {
        writeFileSync(join(dir, a), renderProfile(ctx, a));
        writeFileSync(join(dir, b), renderProfile(ctx, b));
        const res = spawnSync('diff', ['-u', a, b], { cwd: dir, encoding: 'utf8' });
        if (res.status === 0) ctx.out(`Profiles ${a} and ${b} are identical.`);
        else ctx.out(`The difference between profiles:\n${res.stdout.trimEnd()}`);
        return 0;
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  },
  {
    path: ['install'],
    summary: 'Install the mesh (default profile: ambient) with kubectl apply, then wait until it is Ready.',
    options: {
      profile: { type: 'string' },
      wait: { type: 'boolean', default: true },
      timeout: { type: 'string' },
    },
    async run(ctx) {
      const profile = typeof ctx.values.profile === 'string' ? ctx.values.profile : DEFAULT_PROFILE;
      const manifests = renderProfile(ctx, profile);
      const res = kubectl(ctx, ['apply', '--server-side=false', '-f', '-'], manifests);
      if (res.status !== 0)
        throw new MeshError('MESH_ERR_CTL_KUBECTL', `kubectl apply failed: ${res.stderr.trim()}`);
      ctx.out(res.stdout.trimEnd());
      if (ctx.values.wait === false) return 0;
      const timeout = typeof ctx.values.timeout === 'string' ? ctx.values.timeout : '180s';
      for (const [kind, sel] of [
        ['deployment', 'app=istiod'],
        ['daemonset', 'app=ztunnel'],
        ['daemonset', 'k8s-app=istio-cni-node'],
      ] as const) {
        const w = kubectl(ctx, [
          '-n',
          'istio-system',
          'rollout',
          'status',
          kind,
          '-l',
          sel,
          `--timeout=${timeout}`,
        ]);
        if (w.status !== 0 && !/no matching resources|not found/i.test(w.stderr)) {
          throw new MeshError(
            'MESH_ERR_CTL_TIMEOUT',
            `${kind} ${sel} not ready: ${w.stderr.trim() || w.stdout.trim()}`,
          );
        }
      }
      ctx.out(`✔ Installation complete (profile ${profile})`);
      return 0;
    },
  },
  {
    path: ['uninstall'],
    summary: 'Remove what a profile installed.',
    options: { profile: { type: 'string' } },
    run(ctx) {
      const profile = typeof ctx.values.profile === 'string' ? ctx.values.profile : DEFAULT_PROFILE;
      const res = kubectl(ctx, ['delete', '--ignore-not-found', '-f', '-'], renderProfile(ctx, profile));
      if (res.status !== 0)
        throw new MeshError('MESH_ERR_CTL_KUBECTL', `kubectl delete failed: ${res.stderr.trim()}`);
      ctx.out(res.stdout.trimEnd());
      return 0;
    },
  },
  {
    path: ['x', 'precheck'],
    summary: 'Check that the cluster is ready for (or running) the mesh.',
    async run(ctx) {
      const kc = loadKubeConfig(
        typeof ctx.values.kubeconfig === 'string' ? ctx.values.kubeconfig : undefined,
      );
      const core = kc.makeApiClient(CoreV1Api);
      const problems: string[] = [];
      try {
        const nodes = await core.listNode();
        if (nodes.items.length === 0) problems.push('the cluster has no nodes');
        for (const n of nodes.items) {
          const ready = n.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
          if (!ready) problems.push(`node ${n.metadata?.name} is not Ready`);
        }
      } catch (err) {
        problems.push(`cannot list nodes: ${(err as Error).message}`);
      }
      const cp = await controlPlaneVersion(ctx).catch(() => null);
      if (cp && !/\((\d+)\/\1 ready\)/.test(cp)) problems.push(`istiod is not fully ready: ${cp}`);
      if (problems.length > 0) {
        for (const p of problems) ctx.err(`✘ ${p}`);
        return 1;
      }
      ctx.out('✔ No issues found when checking the cluster. Istio is safe to install or upgrade!');
      return 0;
    },
  },
];
