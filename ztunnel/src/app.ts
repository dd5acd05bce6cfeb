/**
 * ztunnel: wires xDS (workloads, services, policies) into the proxy state, certificates from istiod's CA, the
 * ZDS link to the CNI agent (which pods, and their netns), and the admin, stats and readiness endpoints.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { credentials } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { Drain, drainableServer } from '../../pkg/drain/index.ts';
import { describeError } from '../../pkg/errors/index.ts';
import { fileReader, GrpcCaClient } from '../../pkg/identity/ca-client.ts';
import { CertManager } from '../../pkg/identity/index.ts';
import { Counter, createRegistry, Gauge, type Registry, serveMetrics } from '../../pkg/metrics/index.ts';
import { ProxyState } from '../../pkg/state/index.ts';
import { moduleLogger, setLogLevel } from '../../pkg/telemetry/index.ts';
import { SecureContextCache } from '../../pkg/tls/index.ts';
import { subscription, XdsClient } from '../../pkg/xds/client.ts';
import { Node } from '../../pkg/xds/gen/envoy/config/core/v3/base.ts';
import { Authorization } from '../../pkg/xds/gen/istio/security/authorization.ts';
import { Address } from '../../pkg/xds/gen/istio/workload/workload.ts';
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL } from '../../pkg/xds/index.ts';
import type { ZtunnelConfig } from './config.ts';
import { PodManager } from './inpod/pods.ts';
import { ZdsClient } from './inpod/zds.ts';
import { registerHboneMetrics, TcpMetrics } from './metrics.ts';
import { ConnectionRegistry } from './proxy/connections.ts';
import type { ProxyContext } from './proxy/context.ts';

/** istiod's serving certificate names (its Service DNS names). */
function serverNameOf(address: string): string {
  const host = address.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
  return /^[\d.]+$/.test(host) || host.includes(':') ? 'istiod.istio-system.svc' : host;
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

export interface ZtunnelInputs {
  readonly config: ZtunnelConfig;
  readonly logger: Logger;
  readonly registry?: Registry;
}

export class Ztunnel {
  readonly drain = new Drain();
  readonly state = new ProxyState();
  readonly registry: Registry;
  readonly certs: CertManager;
  readonly pods: PodManager;
  readonly ports: { admin: number; stats: number; readiness: number };
  private readonly xds: XdsClient;
  private readonly zds: ZdsClient;
  private readonly ca: GrpcCaClient;
  private readonly servers: Server[];
  private readonly inputs: ZtunnelInputs;
  private xdsSynced = false;

  private constructor(
    inputs: ZtunnelInputs,
    parts: {
      registry: Registry;
      certs: CertManager;
      pods: PodManager;
      xds: XdsClient;
      zds: ZdsClient;
      ca: GrpcCaClient;
      servers: Server[];
      ports: Ztunnel['ports'];
      state: ProxyState;
    },
  ) {
    this.inputs = inputs;
    this.registry = parts.registry;
    this.certs = parts.certs;
    this.pods = parts.pods;
    this.xds = parts.xds;
    this.zds = parts.zds;
    this.ca = parts.ca;
    this.servers = parts.servers;
    this.ports = parts.ports;
    this.state = parts.state;
  }

  static async create(inputs: ZtunnelInputs): Promise<Ztunnel> {
    const { config, logger } = inputs;
    const registry = inputs.registry ?? createRegistry();
    const state = new ProxyState();
    const token = fileReader(config.tokenPath);
    const rootCa = fileReader(config.xdsRootCaPath);
    const ca = new GrpcCaClient({
      address: config.caAddress,
      rootCaPem: rootCa,
      token,
      ttlSeconds: Math.round(config.workloadCertTtlMs / 1000),
      serverName: serverNameOf(config.caAddress),
      impersonate: true,
    });
    const certs = new CertManager({ ca, logger: moduleLogger(logger, 'identity') });
    const connections = new ConnectionRegistry(state, moduleLogger(logger, 'rbac'));
    const ctx: ProxyContext = {
      config,
      state,
      certs,
      metrics: new TcpMetrics(registry),
      contexts: new SecureContextCache(),
      connections,
      logger: moduleLogger(logger, 'proxy'),
      accessLog: moduleLogger(logger, 'access'),
    };
    const pods = new PodManager(ctx, config.drainGraceMs);
    const zdsErrors = new Counter({
      name: 'istio_zds_protocol_errors_total',
      help: 'Malformed or unexpected messages from the CNI node agent.',
      registers: [registry],
    });
    const zds = new ZdsClient({
      path: config.inpodUds,
      handler: pods,
      logger: moduleLogger(logger, 'inpod'),
      onProtocolError: () => zdsErrors.inc(),
    });
    // Prefetch certificates for captured pods on this node as xDS reveals them.
    state.onChange((e) => {
      if (e.kind !== 'workload' || e.removed) return;
      const w = state.workload(e.uid);
      if (w?.hbone && w.node === config.nodeName) {
        certs.prefetch({
          trustDomain: w.trustDomain,
          namespace: w.namespace,
          serviceAccount: w.serviceAccount,
        });
      }
    });
    const podId = `${config.podName}.${config.podNamespace}`;
    let self: Ztunnel | null = null;
    const xds = new XdsClient({
      address: config.xdsAddress,
      credentials: credentials.createSsl(Buffer.from(rootCa())),
      channelOptions: { 'grpc.ssl_target_name_override': serverNameOf(config.xdsAddress) },
      node: Node.fromPartial({
        id: `ztunnel~${config.instanceIp}~${podId}~${config.podNamespace}.svc.cluster.local`,
        cluster: 'ztunnel',
        userAgentName: 'ambient-ts-ztunnel',
      }),
      token: () => token().trim(),
      logger: moduleLogger(logger, 'xds'),
      registry,
      subscriptions: [
        subscription(ADDRESS_TYPE_URL, Address, (added, removed) => state.applyAddresses(added, removed)),
        subscription(AUTHORIZATION_TYPE_URL, Authorization, (added, removed) =>
          state.applyAuthorizations(added, removed),
        ),
      ],
    });
    registerHboneMetrics(registry, pods);
    new Gauge({
      name: 'istio_ztunnel_pods',
      help: 'Captured pods this ztunnel proxies.',
      registers: [registry],
      collect() {
        this.set(pods.size);
      },
    });

    const admin = createServer((req, res) => self?.admin(req, res));
    const stats = createServer((req, res) => {
      if (!serveMetrics(registry, req, res)) res.writeHead(404).end();
    });
    const readiness = createServer((req, res) => {
      const ready = self?.ready() ?? false;
      if ((req.url ?? '').startsWith('/healthz/ready')) {
        res
          .writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' })
          .end(ready ? 'ready\n' : 'not ready\n');
      } else res.writeHead(404).end();
    });
    // Admin only on localhost, like ztunnel; stats and readiness on the pod address.
    const adminPort = await listen(admin, config.adminPort, '127.0.0.1');
    const statsPort = await listen(stats, config.statsPort, '0.0.0.0');
    const readinessPort = await listen(readiness, config.readinessPort, '0.0.0.0');
    self = new Ztunnel(inputs, {
      registry,
      certs,
      pods,
      xds,
      zds,
      ca,
      servers: [admin, stats, readiness],
      ports: { admin: adminPort, stats: statsPort, readiness: readinessPort },
      state,
    });
    return self;
  }

  /** Ready once xDS has synced and the CNI agent's first snapshot is applied. */
  ready(): boolean {
    return this.xdsSynced && this.zds.synced;
  }

  async run(): Promise<void> {
    this.xds.start();
    // Pods are taken over from the CNI agent only once xDS has synced: a pod's listeners accept connections the
    // moment they are bound (beside a previous ztunnel's, which is still serving during a handover), and without
    // workloads, services and policies we could only route them wrong or refuse them.
    this.xds.ready.then(() => {
      this.xdsSynced = true;
      this.inputs.logger.info(this.state.counts(), 'xDS synced');
      if (!this.drain.draining) this.zds.start();
    });
    for (const [i, s] of this.servers.entries()) this.drain.add(drainableServer(`http-${i}`, s));
    // The pods drain first, with everything they may still need: a connection accepted just before the drain
    // may yet have to open an HBONE connection (certificate, workload state). Only the CNI agent link stops
    // at once: pods it adds from now on are for our successor.
    this.drain.add({
      name: 'pods',
      drain: async () => {
        this.zds.stop();
        await this.pods.closeAll(this.inputs.config.drainGraceMs);
        this.closeControl();
      },
      forceClose: () => {
        void this.pods.closeAll(0);
        this.closeControl();
      },
    });
  }

  private closeControl(): void {
    this.zds.stop();
    this.xds.close();
    this.certs.close();
    this.ca.close();
  }

  async close(graceMs = 0): Promise<void> {
    await this.drain.run(graceMs, this.inputs.logger);
  }

  private admin(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const json = (code: number, body: unknown): void => {
      res.writeHead(code, { 'content-type': 'application/json' }).end(`${JSON.stringify(body, null, 2)}\n`);
    };
    try {
      const path = url.pathname;
      if (path === '/config_dump') json(200, this.configDump());
      else if (path === '/logging') {
        if (req.method !== 'POST' && !url.searchParams.has('level'))
          json(200, { levels: 'POST /logging?level=…' });
        else {
          const r = setLogLevel(this.inputs.logger, url.searchParams.get('level') ?? '');
          json(r.ok ? 200 : 400, r);
        }
      } else if (path === '/quitquitquit') {
        if (req.method !== 'POST') json(405, { error: 'POST only' });
        else {
          json(200, { status: 'draining' });
          void this.close(this.inputs.config.drainGraceMs).then(() => process.exit(0));
        }
      } else if (path === '/healthz/ready') json(this.ready() ? 200 : 503, { ready: this.ready() });
      else json(404, { error: 'not found', paths: ['/config_dump', '/logging', '/quitquitquit'] });
    } catch (err) {
      json(500, { error: describeError(err) });
    }
  }

  configDump() {
    const workloads = [...this.state.allWorkloads()].map((w) => ({
      uid: w.uid,
      name: w.name,
      namespace: w.namespace,
      addresses: w.ips,
      node: w.node,
      protocol: w.hbone ? 'HBONE' : 'TCP',
      status: w.healthy ? 'Healthy' : 'Unhealthy',
      serviceAccount: w.serviceAccount,
      canonicalName: w.canonicalName,
      canonicalRevision: w.canonicalRevision,
      waypoint: w.waypoint,
      services: Object.keys(w.raw.services),
      authorizationPolicies: w.raw.authorizationPolicies,
    }));
    const services = [...this.state.allServices()].map((s) => ({
      name: s.name,
      namespace: s.namespace,
      hostname: s.hostname,
      vips: s.vips.map((v) => `${v.network}/${v.ip}`),
      ports: Object.fromEntries(s.raw.ports.map((p) => [p.servicePort, p.targetPort])),
      waypoint: s.waypoint,
    }));
    const policies = [...this.state.allPolicies()].map((p) => ({
      name: p.name,
      namespace: p.namespace,
      scope: p.scope,
      action: p.action,
      dryRun: p.dryRun,
      rules: p.rules.length,
    }));
    return {
      workloads,
      services,
      policies,
      certificates: this.certs.status(),
      pods: this.pods.dump(),
      xds: { synced: this.xdsSynced },
      zds: { connected: this.zds.connected, synced: this.zds.synced },
    };
  }
}
