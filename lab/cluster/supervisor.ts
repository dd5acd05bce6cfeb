/**
 * The lab supervisor: the one long-lived process of a lab (`node lab/main.ts supervise --root <root>`), the
 * stand-in for a cluster's control plane and its nodes' kubelets and kube-proxies. In order:
 *
 *   1. remove leftovers of a crashed run with the same prefix (processes, namespaces, mounts, directories)
 *   2. the network: fabric netns + bridge, one netns per node (lab/node)
 *   3. the API server on 127.0.0.1:<random port> (state in <root>/api, kept across runs) + the controllers,
 *      service CIDR 10.B.240.0/20, advertised as 10.B.0.3:<port>
 *   4. the API server inside the lab: a port forward 10.B.0.3:<port> (fabric) → 127.0.0.1:<port>, which the
 *      `default/kubernetes` Service (10.B.240.1:443) points at; the cluster DNS on 10.B.0.2
 *   5. a service proxy per node, fed with Services + EndpointSlices together with the DNS
 *   6. a kubelet per node (Node, Lease, pods)
 *   7. the admin kubeconfig at <root>/kubeconfig, the control socket at <root>/control.sock
 *
 * SIGTERM (or POST /v1/shutdown): kubelets kill their pods (SIGTERM, SIGKILL after at most 5 s, CNI DEL),
 * then the sync, DNS, forward, API server (snapshot) stop and the network is destroyed; the API state stays.
 * Containers die with the supervisor if it is killed (pdeathsig); the next `up`/`down` removes the rest.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { describeError, MeshError } from '../../pkg/errors/index.ts';
import type { Logger } from '../../pkg/telemetry/index.ts';
import { ClusterDns } from '../dns/cluster-dns.ts';
import { type ControlPlane, startControlPlane } from '../index.ts';
import { Kubelet, kubeletError } from '../kubelet/kubelet.ts';
import { ServiceSync } from '../kubelet/services.ts';
import { cleanupLeftovers } from '../node/cleanup.ts';
import { NetnsPortForward } from '../node/forward.ts';
import { LabNetwork } from '../node/network.ts';
import { ServiceProxy } from '../proxy/proxy.ts';
import type { ExecResult } from '../runtime/types.ts';
import type { ExecTarget } from './control.ts';
import { restoreNodeDisks, saveNodeDisks } from './node-disk.ts';
import type { LabConfig, LabPaths } from './paths.ts';

/** Pods get at most this long to stop when the lab goes down (their own grace periods are often 30 s). */
export const SHUTDOWN_GRACE_SECONDS = 5;

export interface StepReporter {
  start(name: string): void;
  done(detail?: string): void;
}

export interface SupervisorOptions {
  readonly config: LabConfig;
  readonly paths: LabPaths;
  readonly logger: Logger;
  readonly steps?: StepReporter;
}

export class LabSupervisor {
  readonly config: LabConfig;
  readonly paths: LabPaths;
  network: LabNetwork | null = null;
  controlPlane: ControlPlane | null = null;
  kubelets: Kubelet[] = [];
  private forward: NetnsPortForward | null = null;
  private dns: ClusterDns | null = null;
  private proxies: ServiceProxy[] = [];
  private sync: ServiceSync | null = null;
  private readonly logger: Logger;
  private stopping: Promise<void> | null = null;
  private building: Promise<void> | null = null;
  private aborted = false;

  private readonly steps: StepReporter;

  constructor(opts: SupervisorOptions) {
    this.config = opts.config;
    this.paths = opts.paths;
    this.logger = opts.logger;
    this.steps = opts.steps ?? { start: () => undefined, done: () => undefined };
  }

  /** Builds the whole lab; on failure (or a stop() meanwhile) tears down what was built and throws. */
  async start(): Promise<void> {
    this.building = this.build(this.steps);
    try {
      await this.building;
    } catch (err) {
      if (!this.aborted) this.logger.error({ err: describeError(err) }, 'lab start failed; tearing down');
      await this.stop().catch((e: unknown) =>
        this.logger.error({ err: describeError(e) }, 'teardown after failed start failed'),
      );
      throw err;
    }
  }

  private checkAborted(): void {
    if (this.aborted) throw new MeshError('MESH_ERR_LAB_SUPERVISOR', 'the lab was stopped while starting');
  }

  private async build(steps: StepReporter): Promise<void> {
    const { config, paths, logger } = this;
    const prefix = config.prefix;
    mkdirSync(paths.logsDir, { recursive: true });

    steps.start('Remove leftovers of an earlier run');
    const left = await cleanupLeftovers(prefix, { root: paths.root, logger });
    steps.done(
      left.netns.length || left.killed.length
        ? `${left.netns.length} namespaces, ${left.killed.length} processes`
        : 'none',
    );
    this.checkAborted();

    steps.start(`Network: fabric and ${config.nodes} nodes in 10.${config.block}.0.0/16`);
    const network = await LabNetwork.create({
      prefix,
      root: paths.root,
      nodes: config.nodes,
      block: config.block,
      replace: true,
      logger: logger.child({ component: 'lab-network' }),
    });
    this.network = network;
    let restored: string[] = [];
    try {
      restored = restoreNodeDisks(network, paths.nodeDisks);
    } catch (err) {
      logger.warn(
        { err: describeError(err) },
        "could not restore the nodes' CNI configuration; starting fresh",
      );
      rmSync(paths.nodeDisks, { recursive: true, force: true });
    }
    steps.done(
      network.nodes.map((n) => `${n.name}=${n.ip}`).join(' ') +
        (restored.length ? ` (CNI config of ${restored.join(', ')} kept from the last run)` : ''),
    );
    this.checkAborted();

    steps.start('API server and controllers');
    const plan = network.plan;
    this.controlPlane = await startControlPlane({
      dataDir: paths.apiDir,
      host: '127.0.0.1',
      port: 0,
      serviceCidr: plan.serviceCidr,
      advertiseAddress: plan.apiServerIp,
      extraSans: [plan.apiServerIp],
      logger: logger.child({ component: 'lab-apiserver' }),
    });
    const api = this.controlPlane.api;
    await api.writeKubeconfig(paths.kubeconfig, { token: api.adminToken });
    steps.done(api.url);
    this.checkAborted();

    steps.start(
      `API server at ${plan.apiServerIp}:${api.port} and cluster DNS at ${plan.clusterDnsIp} in the lab`,
    );
    this.forward = await NetnsPortForward.start({
      netnsPath: network.fabric.netnsPath,
      listenHost: plan.apiServerIp,
      listenPort: api.port,
      target: { host: '127.0.0.1', port: api.port },
      root: paths.root,
      prefix,
      logger,
    });
    this.dns = await ClusterDns.forLab(network, { logger: logger.child({ component: 'lab-dns' }) });
    steps.done();
    this.checkAborted();

    steps.start('Service proxies');
    this.proxies = await Promise.all(
      network.nodes.map((n) =>
        ServiceProxy.create({
          netnsPath: n.netnsPath,
          logger: logger.child({ component: 'lab-proxy', node: n.name }),
        }),
      ),
    );
    this.sync = await ServiceSync.start({
      client: api.client,
      proxies: this.proxies,
      dns: this.dns,
      logger: logger.child({ component: 'lab-services' }),
    });
    steps.done();
    this.checkAborted();

    steps.start('Kubelets');
    const names = new Set(network.nodes.map((n) => n.name));
    for (const n of api.client.list('v1/nodes')) {
      const name = String((n.metadata as { name?: string } | undefined)?.name ?? '');
      if (!names.has(name)) {
        // A node of an earlier, larger lab: its pods are force-deleted by pod GC and rescheduled.
        await api.client.delete('v1/nodes', '', name).catch(() => undefined);
      }
    }
    const started = await Promise.allSettled(
      network.nodes.map((n) =>
        Kubelet.start({
          api,
          network,
          node: n,
          logger: logger.child({ component: 'kubelet', node: n.name }),
          ...(config.backoff ? { backoff: config.backoff } : {}),
        }).catch((err: unknown) => {
          throw kubeletError(n.name, err);
        }),
      ),
    );
    // Keep the ones that started, so that a failure of another one still stops them.
    this.kubelets = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const failed = started.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    steps.done(`${this.kubelets.length} nodes Ready`);
    this.checkAborted();
  }

  /** Where `lab exec` enters a pod (the node that runs it, a container's PID 1, or the sandbox netns). */
  execTarget(namespace: string, pod: string, container?: string): ExecTarget | null {
    for (const k of this.kubelets) {
      const t = k.runtime.execTarget({ namespace, name: pod }, container);
      if (t) return { node: k.node.name, ...t };
    }
    return null;
  }

  async exec(
    namespace: string,
    pod: string,
    argv: readonly string[],
    opts: { container?: string; timeoutMs?: number; input?: string } = {},
  ): Promise<ExecResult> {
    const k = this.kubelets.find((x) => x.runtime.find({ namespace, name: pod }));
    if (!k)
      return {
        exitCode: 1,
        stdout: '',
        stderr: `pod ${namespace}/${pod} is not running in this lab\n`,
        timedOut: false,
      };
    return k.runtime.exec({ namespace, name: pod }, argv, opts);
  }

  status(): unknown {
    return {
      prefix: this.config.prefix,
      block: this.config.block,
      apiUrl: this.controlPlane?.api.url ?? null,
      kubeconfig: this.paths.kubeconfig,
      nodes: (this.network?.nodes ?? []).map((n) => {
        const k = this.kubelets.find((x) => x.node.name === n.name);
        return {
          name: n.name,
          ip: n.ip,
          podCidr: n.podCidr,
          netns: n.netns,
          pods: (k?.pods() ?? []).map((p) => `${p.namespace}/${p.name}`),
        };
      }),
    };
  }

  /** Orderly shutdown (idempotent): pods first (the API still answers them), the network last. */
  stop(): Promise<void> {
    this.aborted = true;
    if (!this.stopping)
      this.stopping = (async () => {
        await this.building?.catch(() => undefined);
        await this.doStop();
      })();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    const log = this.logger;
    const step = async (what: string, fn: () => Promise<unknown> | unknown): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        log.warn({ err: describeError(err) }, `shutdown: ${what} failed`);
      }
    };
    await Promise.all(
      this.kubelets.map((k) =>
        step(`kubelet ${k.node.name}`, () => k.stop({ gracePeriodSeconds: SHUTDOWN_GRACE_SECONDS })),
      ),
    );
    this.sync?.stop();
    if (this.network && this.kubelets.length > 0) {
      const network = this.network;
      await step("saving the nodes' CNI configuration", () => saveNodeDisks(network, this.paths.nodeDisks));
    }
    await step('cluster DNS', () => this.dns?.stop());
    await step('API port forward', () => this.forward?.close());
    await step('API server', () => this.controlPlane?.close());
    await step('network', () => this.network?.destroy());
    log.info({ prefix: this.config.prefix }, 'lab stopped');
  }
}
