/**
 * ambientctl waypoint generate | apply | list | status | delete: the waypoint journey (SCENARIOS.md C, "Deploy
 * a waypoint for the namespace"), with istioctl waypoint's flags, messages and table shapes (upstream
 * istioctl/pkg/waypoint, facts only). A waypoint is a Gateway of class `istio-waypoint` with one `mesh` listener
 * (15008, HBONE); istiod deploys it and marks it Programmed once it runs (docs/waypoint.md).
 *
 * Deviations, on purpose: `list` shows the traffic type istiod applies (`service` when the Gateway has no
 * `istio.io/waypoint-for` label) where istioctl prints `none`; `status --name` shows one waypoint, and prints
 * one final row per waypoint instead of a row per poll; there is no `--revision` (one control plane).
 */
import {
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  PatchStrategy,
  setHeaderOptions,
} from '@kubernetes/client-node';
import { stringify } from 'yaml';
import { parseDuration } from '../../../pkg/config/index.ts';
import { MeshError } from '../../../pkg/errors/index.ts';
import { isNotFound, statusCodeOf } from '../../../pkg/kube/index.ts';
import type { Command, CommandContext } from '../cli.ts';
import { kubeConfigFor } from './install.ts';

export const WAYPOINT_CLASS = 'istio-waypoint';
export const DEFAULT_WAYPOINT_NAME = 'waypoint';
const USE_WAYPOINT_LABEL = 'istio.io/use-waypoint';
const WAYPOINT_FOR_LABEL = 'istio.io/waypoint-for';
const DATAPLANE_MODE_LABEL = 'istio.io/dataplane-mode';
const REVISION_LABEL = 'istio.io/rev';
const TRAFFIC_TYPES = ['all', 'none', 'service', 'workload'] as const;
/** istioctl's default for --waypoint-timeout. */
const DEFAULT_TIMEOUT = '90s';
/** How often --wait looks at the Gateway (istioctl: every second). */
const POLL_MS = 1000;
/** Field manager of the server-side apply that creates the Gateway (istioctl uses "istioctl"). */
const FIELD_MANAGER = 'ambientctl';
/** tabwriter(minwidth 0, tabwidth 8, padding 5, ' '), as istioctl prints its tables. */
const COLUMN_PADDING = 5;

const GATEWAYS = { group: 'gateway.networking.k8s.io', version: 'v1', plural: 'gateways' } as const;
const APPLY = setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply);
const MERGE_PATCH = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

interface Condition {
  readonly type: string;
  readonly status: string;
  readonly reason?: string;
  readonly message?: string;
}

interface Gateway {
  readonly metadata?: { name?: string; namespace?: string; labels?: Record<string, string> };
  readonly spec?: { gatewayClassName?: string };
  readonly status?: { conditions?: Condition[] };
}

const NAMESPACE_OPTION = { namespace: { type: 'string', short: 'n' } } as const;
const NAME_OPTION = { name: { type: 'string' } } as const;

function str(ctx: CommandContext, key: string): string | undefined {
  const v = ctx.values[key];
  return typeof v === 'string' ? v : undefined;
}

/** `-n`, else the kubeconfig context's namespace, else `default` (kubectl's rule). */
function namespaceOf(ctx: CommandContext, kc: KubeConfig): string {
  return str(ctx, 'namespace') || kc.getContextObject(kc.getCurrentContext())?.namespace || 'default';
}

function timeoutMs(ctx: CommandContext): number {
  const text = str(ctx, 'waypoint-timeout') ?? DEFAULT_TIMEOUT;
  const ms = parseDuration(text);
  if (ms === null)
    throw new MeshError('MESH_ERR_CTL_USAGE', `invalid --waypoint-timeout ${JSON.stringify(text)}`, {
      hint: 'a duration such as 90s or 2m',
    });
  return ms;
}

function clusterError(err: unknown): MeshError {
  if (err instanceof MeshError) return err;
  const code = statusCodeOf(err);
  const body = (err as { body?: unknown }).body;
  let detail = err instanceof Error ? err.message : String(err);
  if (typeof body === 'string') {
    try {
      detail = (JSON.parse(body) as { message?: string }).message ?? detail;
    } catch {
      // not JSON: keep the error message
    }
  }
  return new MeshError('MESH_ERR_CTL_CLUSTER', code ? `${detail} (HTTP ${code})` : detail, { cause: err });
}

/** The Gateway `waypoint generate` prints and `waypoint apply` applies (istioctl's makeGateway). */
export function waypointGateway(o: { name: string; namespace: string | null; trafficType: string | null }) {
  if (o.name === 'none')
    throw new MeshError(
      'MESH_ERR_CTL_USAGE',
      "invalid name provided for waypoint, 'none' is a reserved value",
    );
  if (o.trafficType !== null && !(TRAFFIC_TYPES as readonly string[]).includes(o.trafficType)) {
    throw new MeshError(
      'MESH_ERR_CTL_USAGE',
      `invalid traffic type: ${o.trafficType}. Valid options are: [${TRAFFIC_TYPES.join(' ')}]`,
    );
  }
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: {
      // Only set when asked for: otherwise istiod picks the default (service), or the class's label.
      ...(o.trafficType !== null ? { labels: { [WAYPOINT_FOR_LABEL]: o.trafficType } } : {}),
      name: o.name,
      ...(o.namespace !== null ? { namespace: o.namespace } : {}),
    },
    spec: {
      gatewayClassName: WAYPOINT_CLASS,
      listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }],
    },
  };
}

/** Lines of a table as Go's tabwriter prints it: every cell but the last padded to its column width + 5. */
export function table(rows: readonly (readonly string[])[]): string[] {
  const widths: number[] = [];
  for (const r of rows)
    r.forEach((cell, i) => {
      if (i < r.length - 1) widths[i] = Math.max(widths[i] ?? 0, cell.length);
    });
  return rows.map((r) =>
    r.map((cell, i) => (i < r.length - 1 ? cell.padEnd((widths[i] ?? 0) + COLUMN_PADDING) : cell)).join(''),
  );
}

function conditionOf(gw: Gateway, type: string): Condition | undefined {
  return gw.status?.conditions?.find((c) => c.type === type);
}

function isProgrammed(gw: Gateway): boolean {
  return conditionOf(gw, 'Programmed')?.status === 'True';
}

function byNamespaceThenName(a: Gateway, b: Gateway): number {
  const ka = `${a.metadata?.namespace ?? ''}\u0000${a.metadata?.name ?? ''}`;
  const kb = `${b.metadata?.namespace ?? ''}\u0000${b.metadata?.name ?? ''}`;
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

class WaypointClient {
  readonly core: CoreV1Api;
  readonly custom: CustomObjectsApi;

  constructor(kc: KubeConfig) {
    this.core = kc.makeApiClient(CoreV1Api);
    this.custom = kc.makeApiClient(CustomObjectsApi);
  }

  /** Waypoints (Gateways of class istio-waypoint) in a namespace, or everywhere for null, sorted. */
  async list(namespace: string | null): Promise<Gateway[]> {
    let items: Gateway[];
    try {
      const res = (
        namespace === null
          ? await this.custom.listClusterCustomObject(GATEWAYS)
          : await this.custom.listNamespacedCustomObject({ ...GATEWAYS, namespace })
      ) as { items?: Gateway[] };
      items = res.items ?? [];
    } catch (err) {
      if (isNotFound(err)) return []; // Gateway API CRDs not installed: no waypoints
      throw clusterError(err);
    }
    return items.filter((g) => g.spec?.gatewayClassName === WAYPOINT_CLASS).sort(byNamespaceThenName);
  }

  async get(namespace: string, name: string): Promise<Gateway | null> {
    try {
      return (await this.custom.getNamespacedCustomObject({ ...GATEWAYS, namespace, name })) as Gateway;
    } catch (err) {
      if (isNotFound(err)) return null;
      throw clusterError(err);
    }
  }

  async namespaceLabels(namespace: string): Promise<Record<string, string>> {
    try {
      return (await this.core.readNamespace({ name: namespace })).metadata?.labels ?? {};
    } catch (err) {
      if (isNotFound(err)) throw new MeshError('MESH_ERR_CTL_CLUSTER', `namespace: ${namespace} not found`);
      throw clusterError(err);
    }
  }

  /** Polls until the waypoint is Programmed; the last Gateway seen (null when it never appeared) on timeout. */
  async waitProgrammed(
    namespace: string,
    name: string,
    ms: number,
  ): Promise<{ ok: boolean; last: Gateway | null }> {
    const deadline = Date.now() + ms;
    for (;;) {
      await new Promise((r) => setTimeout(r, POLL_MS));
      const gw = await this.get(namespace, name).catch(() => null);
      if (gw && isProgrammed(gw)) return { ok: true, last: gw };
      if (Date.now() > deadline) return { ok: false, last: gw };
    }
  }
}

export const waypointCommands: Command[] = [
  {
    path: ['waypoint', 'generate'],
    summary: 'Print the waypoint Gateway as YAML (istioctl waypoint generate).',
    usage: '[-n NS] [--name waypoint] [--for service|workload|all|none]',
    options: { ...NAMESPACE_OPTION, ...NAME_OPTION, for: { type: 'string' } },
    run(ctx) {
      const gw = waypointGateway({
        name: str(ctx, 'name') || DEFAULT_WAYPOINT_NAME,
        // As istioctl: the namespace appears only when given.
        namespace: str(ctx, 'namespace') ?? null,
        trafficType: str(ctx, 'for') ?? null,
      });
      ctx.out(stringify(gw, { indentSeq: false, sortMapEntries: true }).trimEnd());
      return 0;
    },
  },
  {
    path: ['waypoint', 'apply'],
    summary:
      'Deploy a waypoint (--for TYPE: service|workload|all|none); --enroll-namespace makes the namespace use it.',
    usage:
      '[-n NS] [--name waypoint] [--for TYPE] [--enroll-namespace] [--overwrite] [-w] [--waypoint-timeout 90s]',
    options: {
      ...NAMESPACE_OPTION,
      ...NAME_OPTION,
      for: { type: 'string' },
      'enroll-namespace': { type: 'boolean' },
      overwrite: { type: 'boolean' },
      wait: { type: 'boolean', short: 'w' },
      'waypoint-timeout': { type: 'string' },
    },
    async run(ctx) {
      const kc = kubeConfigFor(ctx);
      const client = new WaypointClient(kc);
      const ns = namespaceOf(ctx, kc);
      const name = str(ctx, 'name') || DEFAULT_WAYPOINT_NAME;
      const ms = timeoutMs(ctx);
      const gw = waypointGateway({ name, namespace: ns, trafficType: str(ctx, 'for') ?? null });
      const enroll = ctx.values['enroll-namespace'] === true;
      const labels = await client.namespaceLabels(ns);
      if (enroll) {
        if (ctx.values.overwrite !== true && labels[USE_WAYPOINT_LABEL]) {
          // A warning, not an error, as istioctl: the namespace keeps the waypoint it uses.
          ctx.out(
            `⚠️ Warning: namespace (${ns}) already has an enrolled Waypoint. Consider adding the \`--overwrite\` flag to your apply command.`,
          );
          return 0;
        }
        if (labels[DATAPLANE_MODE_LABEL] !== 'ambient') {
          ctx.out(
            `⚠️ Warning: namespace is not enrolled in ambient. Consider running\t\`kubectl label namespace ${ns} ${DATAPLANE_MODE_LABEL}=ambient\``,
          );
        }
      }
      try {
        await client.custom.patchNamespacedCustomObject(
          { ...GATEWAYS, namespace: ns, name, body: gw, fieldManager: FIELD_MANAGER },
          APPLY,
        );
      } catch (err) {
        if (isNotFound(err)) {
          throw new MeshError(
            'MESH_ERR_CTL_CLUSTER',
            `missing Kubernetes Gateway CRDs need to be installed before applying a waypoint: ${clusterError(err).message}`,
            { hint: 'kubectl apply -k deploy/crds (ambientctl install does it)' },
          );
        }
        throw clusterError(err);
      }
      ctx.out(`✅ waypoint ${ns}/${name} applied`);
      if (ctx.values.wait === true) {
        const r = await client.waitProgrammed(ns, name, ms);
        if (!r.ok)
          throw new MeshError('MESH_ERR_CTL_TIMEOUT', `timed out while waiting for waypoint\t${ns}/${name}`);
        ctx.out(`✅ waypoint ${ns}/${name} is ready!`);
      }
      if (enroll) {
        try {
          await client.core.patchNamespace(
            { name: ns, body: { metadata: { labels: { [USE_WAYPOINT_LABEL]: name } } } },
            MERGE_PATCH,
          );
        } catch (err) {
          throw new MeshError(
            'MESH_ERR_CTL_CLUSTER',
            `failed to label namespace with waypoint: ${clusterError(err).message}`,
          );
        }
        ctx.out(`✅ namespace ${ns} labeled with "${USE_WAYPOINT_LABEL}: ${name}"`);
      }
      return 0;
    },
  },
  {
    path: ['waypoint', 'list'],
    summary: 'List the waypoints of a namespace (-A: all namespaces).',
    usage: '[-n NS | -A]',
    options: { ...NAMESPACE_OPTION, 'all-namespaces': { type: 'boolean', short: 'A' } },
    async run(ctx) {
      const kc = kubeConfigFor(ctx);
      const all = ctx.values['all-namespaces'] === true;
      const gws = await new WaypointClient(kc).list(all ? null : namespaceOf(ctx, kc));
      if (gws.length === 0) {
        ctx.out('No waypoints found.');
        return 0;
      }
      const header = ['NAME', 'REVISION', 'TRAFFIC TYPE', 'PROGRAMMED'];
      const rows = gws.map((g) => [
        g.metadata?.name ?? '',
        g.metadata?.labels?.[REVISION_LABEL] || 'default',
        g.metadata?.labels?.[WAYPOINT_FOR_LABEL] || 'service',
        conditionOf(g, 'Programmed')?.status ?? 'False',
      ]);
      const lines = all
        ? table([['NAMESPACE', ...header], ...rows.map((r, i) => [gws[i]?.metadata?.namespace ?? '', ...r])])
        : table([header, ...rows]);
      for (const l of lines) ctx.out(l);
      return 0;
    },
  },
  {
    path: ['waypoint', 'status'],
    summary: 'Show whether waypoints are Programmed; waits for them unless --no-wait.',
    usage: '[-n NS | -A] [--name NAME] [--no-wait] [--waypoint-timeout 90s]',
    options: {
      ...NAMESPACE_OPTION,
      ...NAME_OPTION,
      'all-namespaces': { type: 'boolean', short: 'A' },
      wait: { type: 'boolean', short: 'w' },
      'waypoint-timeout': { type: 'string' },
    },
    async run(ctx) {
      const kc = kubeConfigFor(ctx);
      const client = new WaypointClient(kc);
      const all = ctx.values['all-namespaces'] === true;
      const wait = ctx.values.wait !== false; // istioctl: --wait defaults to true
      const ms = timeoutMs(ctx);
      const name = str(ctx, 'name');
      let gws = await client.list(all ? null : namespaceOf(ctx, kc));
      if (name) gws = gws.filter((g) => g.metadata?.name === name);
      if (gws.length === 0) {
        ctx.out('No waypoints found.');
        return 0;
      }
      const rows: string[][] = [];
      for (const g of gws) {
        const ns = g.metadata?.namespace ?? '';
        const n = g.metadata?.name ?? '';
        let current: Gateway = g;
        if (wait && !isProgrammed(g)) {
          const r = await client.waitProgrammed(ns, n, ms);
          if (!r.ok) {
            throw new MeshError(
              'MESH_ERR_CTL_TIMEOUT',
              `failed to print waypoint status: timed out while retrieving status for waypoint\t${ns}/${n}`,
            );
          }
          current = r.last ?? g;
        }
        const c = conditionOf(current, 'Programmed');
        const cells = [n, c?.status ?? '', c?.type ?? '', c?.reason ?? '', c?.message ?? ''];
        rows.push(all ? [ns, ...cells] : cells);
      }
      const header = ['NAME', 'STATUS', 'TYPE', 'REASON', 'MESSAGE'];
      for (const l of table([all ? ['NAMESPACE', ...header] : header, ...rows])) ctx.out(l);
      return 0;
    },
  },
  {
    path: ['waypoint', 'delete'],
    summary: 'Delete waypoints by name, or all of a namespace with --all.',
    usage: '[NAME…] [--all] [-n NS]',
    positionals: true,
    options: { ...NAMESPACE_OPTION, all: { type: 'boolean' } },
    async run(ctx) {
      const all = ctx.values.all === true;
      if (all && ctx.positionals.length > 0)
        throw new MeshError(
          'MESH_ERR_CTL_USAGE',
          'cannot specify waypoint names when deleting all waypoints',
        );
      if (!all && ctx.positionals.length === 0)
        throw new MeshError('MESH_ERR_CTL_USAGE', 'must specify a waypoint name or delete all using --all');
      const kc = kubeConfigFor(ctx);
      const client = new WaypointClient(kc);
      const ns = namespaceOf(ctx, kc);
      const existing = new Set((await client.list(ns)).map((g) => g.metadata?.name ?? ''));
      const names: string[] = [];
      if (all) names.push(...existing);
      else
        for (const n of ctx.positionals) {
          if (existing.has(n)) names.push(n);
          else ctx.out(`waypoint ${ns}/${n} not found`);
        }
      const failures: string[] = [];
      for (const n of names) {
        try {
          await client.custom.deleteNamespacedCustomObject({ ...GATEWAYS, namespace: ns, name: n });
          ctx.out(`waypoint ${ns}/${n} deleted`);
        } catch (err) {
          if (isNotFound(err)) ctx.out(`waypoint ${ns}/${n} not found`);
          else failures.push(`${ns}/${n}: ${clusterError(err).message}`);
        }
      }
      if (failures.length > 0)
        throw new MeshError('MESH_ERR_CTL_CLUSTER', `delete failed: ${failures.join('; ')}`);
      return 0;
    },
  },
];
