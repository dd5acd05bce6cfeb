/**
 * The istio-cni node agent: wires the Kubernetes watch, the capture dataplane, the ZDS server, the plugin
 * socket, the installer and the health/metrics endpoints.
 *
 * `IstioCniAgent.create()` does every fallible step that needs no cluster (tool checks, state dir, binds of
 * the plugin socket, the ZDS socket, :8000 and :15014); `run()` then syncs the caches, re-adopts the pods a
 * previous agent captured (reconciling their rules idempotently), programs the host rules, opens ZDS
 * snapshots, starts the work queue, installs the plugin and only then reports ready (Istio's order:
 * snapshot before ztunnels are served, plugin installed once the agent can answer it).
 *
 * Shutdown (SIGTERM via the drain): not ready → decide cleanup (`CLEANUP_ON_SHUTDOWN=auto`: like Istio,
 * keep the plugin and host rules while the DaemonSet still exists — an upgrade, the next agent takes
 * over and new pods wait for it instead of starting uncaptured; remove them when the DaemonSet is gone
 * or being deleted) → close the sockets. In-pod rules always stay: captured pods keep being served by
 * ztunnel and are re-adopted by the next agent.
 */
import { mkdirSync, statSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { Drain, drainableServer } from '../../../pkg/drain/index.ts';
import { describeError } from '../../../pkg/errors/index.ts';
import { createRegistry, type Registry, serveMetrics } from '../../../pkg/metrics/index.ts';
import { currentLevels, setLogLevel } from '../../../pkg/telemetry/index.ts';
import { RulesEngine } from '../rules/index.ts';
import type { AgentConfig } from './config.ts';
import { Controller } from './controller.ts';
import { Dataplane, type PodRules } from './dataplane.ts';
import { Installer } from './install.ts';
import type { KubeSource } from './kube.ts';
import { type AgentMetrics, createAgentMetrics } from './metrics.ts';
import { PluginServer } from './pluginserver.ts';
import { PodStateStore } from './state.ts';
import { ZdsServer } from './zds.ts';

/** Istio names the DaemonSet `<name>-node`; its presence at shutdown means "upgrade". */
export const DAEMONSET_NAME = 'istio-cni-node';
/** State files of pods the synced cache does not know are removed at startup once this old. */
const STALE_STATE_MIN_AGE_MS = 60_000;
/** On shutdown, a capture or release already running gets this long to finish before fds are closed. */
const IN_FLIGHT_GRACE_MS = 3_000;

export interface AgentInputs {
  readonly config: AgentConfig;
  readonly kube: KubeSource;
  readonly logger: Logger;
  readonly registry?: Registry;
  /** Rule programming; a RulesEngine for the configured backend when absent. */
  readonly rules?: PodRules;
}

function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const a = server.address();
      resolve(typeof a === 'object' && a ? a.port : port);
    });
  });
}

function socketExists(path: string): boolean {
  try {
    return statSync(path).isSocket();
  } catch {
    return false;
  }
}

function isLoopback(req: IncomingMessage): boolean {
  const a = req.socket.remoteAddress ?? '';
  return a === '127.0.0.1' || a === '::1' || a === '::ffff:127.0.0.1';
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(`${JSON.stringify(body, null, 2)}\n`);
}

export class IstioCniAgent {
  readonly config: AgentConfig;
  readonly registry: Registry;
  readonly metrics: AgentMetrics;
  readonly drain = new Drain();
  readonly dataplane: Dataplane;
  readonly controller: Controller;
  readonly state: PodStateStore;
  readonly zds: ZdsServer;
  readonly installer: Installer | null;
  readonly ports: { readiness: number; monitoring: number };
  readonly #kube: KubeSource;
  readonly #logger: Logger;
  #plugin: PluginServer;
  readonly #listenPlugin: () => Promise<PluginServer>;
  readonly #health: Server;
  readonly #monitoring: Server;
  #installed = false;
  #started = false;
  #stopping = false;
  #closed: Promise<void> | null = null;

  private constructor(
    inputs: AgentInputs,
    parts: {
      registry: Registry;
      metrics: AgentMetrics;
      dataplane: Dataplane;
      controller: Controller;
      state: PodStateStore;
      zds: ZdsServer;
      installer: Installer | null;
      plugin: PluginServer;
      listenPlugin: () => Promise<PluginServer>;
      health: Server;
      monitoring: Server;
      ports: IstioCniAgent['ports'];
    },
  ) {
    this.config = inputs.config;
    this.#kube = inputs.kube;
    this.#logger = inputs.logger;
    this.registry = parts.registry;
    this.metrics = parts.metrics;
    this.dataplane = parts.dataplane;
    this.controller = parts.controller;
    this.state = parts.state;
    this.zds = parts.zds;
    this.installer = parts.installer;
    this.#plugin = parts.plugin;
    this.#listenPlugin = parts.listenPlugin;
    this.#health = parts.health;
    this.#monitoring = parts.monitoring;
    this.ports = parts.ports;
  }

  static async create(inputs: AgentInputs): Promise<IstioCniAgent> {
    const { config, logger } = inputs;
    const registry = inputs.registry ?? createRegistry({ component: 'istio-cni' });
    const metrics = createAgentMetrics(registry);
    const rules =
      inputs.rules ??
      (await RulesEngine.create({ backend: config.nativeNftables ? 'nftables' : 'iptables' }));
    const state = new PodStateStore(config.runDir);
    const loaded = await state.load();
    for (const r of loaded.rejected) {
      metrics.rejected.inc({ source: 'state', reason: 'invalid' });
      logger.warn({ code: 'MESH_ERR_CNI_STATE', file: r }, 'removed an unreadable pod state file');
    }
    logger.info({ pods: loaded.loaded, dir: state.dir }, 'pod sandbox state loaded');
    let self: IstioCniAgent | null = null;
    mkdirSync(dirname(config.ztunnelSocket), { recursive: true });
    const zds = ZdsServer.listen({
      path: config.ztunnelSocket,
      logger: logger.child({ module: 'zds' }),
      metrics,
      ackTimeoutMs: config.ztunnelAckTimeoutMs,
      snapshot: () => self?.dataplane.snapshot() ?? [],
    });
    const dataplane = new Dataplane({
      rules,
      zds,
      kube: inputs.kube,
      state,
      logger: logger.child({ module: 'dataplane' }),
      metrics,
      dnsCapture: config.dnsCapture,
      enableIpv6: config.enableIpv6,
      hostProbeSnat: config.hostProbeSnat,
      hostNetns: config.hostNetns,
      ztunnelWaitOnAddMs: config.ztunnelWaitOnAddMs,
    });
    const hostDir = config.netnsHostDir.replace(/\/+$/, '');
    const mountDir = config.netnsMountDir.replace(/\/+$/, '');
    const controller = new Controller({
      dataplane,
      state,
      policy: { excludedNamespaces: new Set(config.excludedNamespaces) },
      logger: logger.child({ module: 'controller' }),
      metrics,
      addPodWaitMs: config.addPodWaitMs,
      translateNetns: (p) => (p.startsWith(`${hostDir}/`) ? `${mountDir}${p.slice(hostDir.length)}` : p),
    });
    mkdirSync(config.runDir, { recursive: true });
    const listenPlugin = (): Promise<PluginServer> => {
      mkdirSync(dirname(config.pluginSocket), { recursive: true });
      return PluginServer.listen(
        config.pluginSocket,
        { add: (e) => controller.onCniAdd(e), del: (e) => controller.onCniDel(e) },
        logger.child({ module: 'plugin-server' }),
        metrics,
      );
    };
    const plugin = await listenPlugin();
    const health = createServer((req, res) => {
      if (self) self.#serveHealth(req, res);
      else res.writeHead(503).end();
    });
    const monitoring = createServer((req, res) => {
      if (!serveMetrics(registry, req, res))
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    });
    const readiness = await listen(health, config.readinessPort, config.bindAddress);
    const monitoringPort = await listen(monitoring, config.monitoringPort, config.bindAddress);
    const installer = config.skipInstall
      ? null
      : new Installer({
          binDir: config.cniBinDir,
          netDir: config.cniNetDir,
          confName: config.cniConfName,
          nodePath: config.pluginNodePath,
          installNodeBinary: config.installNodeBinary,
          runDirOnHost: config.runDirOnHost,
          excludeNamespaces: config.excludedNamespaces,
          podNamespace: config.podNamespace,
          logLevel: config.logLevel === 'debug' || config.logLevel === 'trace' ? 'debug' : 'info',
          socketPath: config.pluginSocket,
          logger: logger.child({ module: 'install' }),
        });
    self = new IstioCniAgent(inputs, {
      registry,
      metrics,
      dataplane,
      controller,
      state,
      zds,
      installer,
      plugin,
      listenPlugin,
      health,
      monitoring,
      ports: { readiness, monitoring: monitoringPort },
    });
    const agent = self;
    agent.drain.add(drainableServer('readiness', health));
    agent.drain.add(drainableServer('monitoring', monitoring));
    agent.drain.add({
      name: 'istio-cni-agent',
      drain: () => agent.close(),
      forceClose: () => {
        agent.close().catch(() => {});
      },
    });
    return agent;
  }

  get ready(): boolean {
    return this.#started && (this.#installed || this.installer === null) && !this.#stopping;
  }

  #serveHealth(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname === '/readyz') {
      const ok = this.ready;
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ready\n' : 'not ready\n');
      return;
    }
    if (url.pathname === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    // Operator endpoints change or reveal node state: loopback only (the pod runs with hostNetwork).
    if (!isLoopback(req)) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    if (url.pathname === '/logging') {
      const level = url.searchParams.get('level');
      if (req.method === 'POST' && level) {
        const r = setLogLevel(this.#logger, level);
        json(res, r.ok ? 200 : 400, r.ok ? r.levels : { error: r.error });
      } else {
        json(res, 200, currentLevels(this.#logger));
      }
      return;
    }
    if (url.pathname === '/debug/pods') {
      json(res, 200, {
        captured: this.dataplane.describe(),
        sandboxes: this.state.list(),
        ztunnelsConnected: this.zds.connected,
      });
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  }

  /** Syncs, re-adopts, serves, installs; resolves once the agent is ready. */
  async run(): Promise<void> {
    const log = this.#logger;
    await this.#kube.start(this.controller.handlers());
    const restored = await this.controller.restoreCaptured();
    const stale = await this.controller.collectStaleState(STALE_STATE_MIN_AGE_MS);
    log.info({ restored, staleStateRemoved: stale }, 'caches synced; captured pods re-adopted');
    try {
      await this.dataplane.syncHost();
    } catch (err) {
      log.error(
        { err: describeError(err) },
        'programming the host probe SNAT failed; probes of captured pods may fail',
      );
    }
    this.zds.open();
    this.controller.start();
    this.#started = true;
    if (this.installer) await this.#installWithRetry();
    log.info({ readiness: this.ports.readiness, monitoring: this.ports.monitoring }, 'istio-cni agent ready');
  }

  async #installWithRetry(): Promise<void> {
    const installer = this.installer!;
    let delay = 200;
    for (;;) {
      if (this.#stopping) return;
      try {
        await installer.install();
        this.metrics.installs.inc({ result: 'success' });
        break;
      } catch (err) {
        this.metrics.installs.inc({ result: 'failure' });
        this.#logger.warn({ err: describeError(err), retryInMs: delay }, 'plugin install failed; retrying');
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 10_000);
      }
    }
    this.#installed = true;
    this.metrics.installReady.set(1);
    installer.watch(this.config.installCheckIntervalMs, (reason) => {
      if (this.#stopping) return;
      this.#installed = false;
      this.metrics.installReady.set(0);
      this.#logger.warn({ reason }, 'CNI install drifted; re-installing');
      installer
        .install()
        .then(() => this.#ensurePluginSocket())
        .then(
          () => {
            this.metrics.installs.inc({ result: 'success' });
            this.#installed = true;
            this.metrics.installReady.set(1);
          },
          (err: unknown) => {
            this.metrics.installs.inc({ result: 'failure' });
            this.#logger.error({ err: describeError(err) }, 're-install failed; the periodic check retries');
          },
        );
    });
  }

  /** Re-creates the plugin socket if someone removed it with the plugin dir (drift repair). */
  async #ensurePluginSocket(): Promise<void> {
    if (this.#stopping || socketExists(this.config.pluginSocket)) return;
    this.#logger.warn({ socket: this.config.pluginSocket }, 'plugin socket was removed; listening again');
    await this.#plugin.close();
    this.#plugin = await this.#listenPlugin();
  }

  /** Whether shutdown removes the plugin and host rules (see the file comment). */
  async #shouldCleanup(): Promise<boolean> {
    const mode = this.config.cleanupOnShutdown;
    if (mode !== 'auto') return mode === 'always';
    const active = await this.#kube
      .daemonSetActive(this.config.podNamespace, DAEMONSET_NAME)
      .catch(() => null);
    if (active === true) {
      this.#logger.info('DaemonSet still present: an upgrade; leaving the plugin in place');
      return false;
    }
    return true;
  }

  /** Stops everything (idempotent). `cleanup` overrides CLEANUP_ON_SHUTDOWN. */
  close(opts: { cleanup?: boolean } = {}): Promise<void> {
    this.#closed ??= this.#doClose(opts);
    return this.#closed;
  }

  async #doClose(opts: { cleanup?: boolean }): Promise<void> {
    this.#stopping = true;
    this.installer?.stopWatching();
    const cleanup = opts.cleanup ?? (await this.#shouldCleanup());
    if (cleanup) {
      try {
        await this.installer?.uninstall();
        this.metrics.installReady.set(0);
      } catch (err) {
        this.#logger.error({ err: describeError(err) }, 'uninstalling the plugin failed');
      }
      try {
        await this.dataplane.removeHost();
      } catch (err) {
        this.#logger.error({ err: describeError(err) }, 'removing the host rules failed');
      }
    }
    this.controller.stop();
    await Promise.race([this.controller.idle(), new Promise((r) => setTimeout(r, IN_FLIGHT_GRACE_MS))]);
    await this.#plugin.close();
    this.zds.close();
    this.dataplane.close();
    await this.#kube.stop().catch(() => {});
    for (const s of [this.#health, this.#monitoring]) {
      s.closeAllConnections();
      s.close();
    }
    this.#logger.info({ cleanup }, 'istio-cni agent stopped');
  }
}
