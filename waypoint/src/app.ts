/**
 * The waypoint: its own workload certificate from istiod's CA (its own identity, never impersonating), the
 * ServiceConfig feed from istiod (delta ADS; a rejected update is NACKed and the last good table keeps
 * serving), the HBONE listener (:15008) that runs the L7 path, and the admin (127.0.0.1:15000), stats (:15020)
 * and readiness (:15021, ready once the first config is applied and the certificate issued) endpoints.
 */
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { ChannelCredentials } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { Drain, drainableServer } from '../../pkg/drain/index.ts';
import { describeError, MeshError } from '../../pkg/errors/index.ts';
import { formatBaggage, HbonePool, type ListenSpec, type SocketTarget } from '../../pkg/hbone/index.ts';
import { fileReader, GrpcCaClient } from '../../pkg/identity/ca-client.ts';
import { type CaClient, CertManager, formatSpiffeId, type Identity } from '../../pkg/identity/index.ts';
import type { JwksCache } from '../../pkg/jwt/index.ts';
import { createRegistry, Gauge, type Registry, serveMetrics } from '../../pkg/metrics/index.ts';
import { currentLevels, moduleLogger, setLogLevel } from '../../pkg/telemetry/index.ts';
import { SecureContextCache } from '../../pkg/tls/index.ts';
import { ServiceConfig } from '../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import { serviceAccountFromToken } from './ca-client.ts';
import type { WaypointConfig } from './config.ts';
import { type ConfigSource, StaticConfigSource, XdsConfigSource } from './config-source.ts';
import { ConfigStore } from './config-store.ts';
import type { WaypointContext } from './context.ts';
import { Inbound } from './inbound.ts';
import { WaypointMetrics } from './metrics.ts';
import { MeshSecurity } from './security.ts';
import { SpanExporter } from './tracing.ts';
import { Upstreams } from './upstream.ts';

export interface WaypointInputs {
  readonly config: WaypointConfig;
  readonly logger: Logger;
  readonly registry?: Registry;
  /** Certificates from here instead of istiod's CA (tests: FakeCa). */
  readonly ca?: CaClient;
  /** ServiceConfigs from here instead of istiod (tests, STATIC_CONFIG). */
  readonly configSource?: ConfigSource;
  /** Where the HBONE listener binds; default 0.0.0.0:<hbonePort>. */
  readonly hboneListen?: ListenSpec;
  /** Test hook: where upstream HBONE connections go (default: endpoint IP, port upstreamHbonePort). */
  readonly upstreamSocket?: (target: SocketTarget) => Socket | Promise<Socket>;
  /** Uniform [0,1) for weights, faults, sampling. */
  readonly rng?: () => number;
  readonly jwksCache?: JwksCache;
  /** Tests: credentials for the xDS channel (default TLS verified with XDS_ROOT_CA). */
  readonly xdsCredentials?: ChannelCredentials;
}

/** istiod's serving certificate names (its Service DNS names). */
function serverNameOf(address: string): string {
  const host = address.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
  return /^[\d.]+$/.test(host) || host.includes(':') ? 'istiod.istio-system.svc' : host;
}

/** A Deployment's pod is `<deployment>-<replicaset hash>-<suffix>`; a waypoint's Deployment is its Gateway's name. */
export function gatewayNameFromPod(pod: string): string {
  const m = /^(.+)-[a-z0-9]{5,10}-[a-z0-9]{5}$/.exec(pod);
  return m ? m[1]! : pod;
}

function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', (err) =>
      reject(
        new MeshError('MESH_ERR_CONFIG_INVALID', `cannot listen on ${host}:${port}: ${describeError(err)}`),
      ),
    );
    server.listen(port, host, () => {
      const a = server.address();
      resolve(typeof a === 'object' && a ? a.port : port);
    });
  });
}

function ownIdentity(config: WaypointConfig): Identity {
  let sa = config.serviceAccount;
  if (sa === null) {
    let token: string;
    try {
      token = readFileSync(config.tokenPath, 'utf8');
    } catch (err) {
      throw new MeshError(
        'MESH_ERR_CONFIG_INVALID',
        `SERVICE_ACCOUNT is not set and the token ${config.tokenPath} is unreadable: ${describeError(err)}`,
        { hint: 'set SERVICE_ACCOUNT from spec.serviceAccountName (downward API) or mount the istio-token' },
      );
    }
    const fromToken = serviceAccountFromToken(token);
    if (fromToken === null) {
      throw new MeshError(
        'MESH_ERR_CONFIG_INVALID',
        `SERVICE_ACCOUNT is not set and ${config.tokenPath} names none`,
      );
    }
    sa = fromToken.serviceAccount;
  }
  return { trustDomain: config.trustDomain, namespace: config.podNamespace, serviceAccount: sa };
}

export class Waypoint {
  readonly drain = new Drain();
  readonly registry: Registry;
  readonly certs: CertManager;
  readonly store: ConfigStore;
  readonly identity: Identity;
  readonly inbound: Inbound;
  readonly ctx: WaypointContext;
  readonly ports: { hbone: number; admin: number; stats: number; readiness: number };
  /** The gateway this pod serves, `<namespace>/<name>`. */
  readonly self: string;
  private readonly inputs: WaypointInputs;
  private readonly source: ConfigSource;
  private readonly servers: Server[];
  private readonly security: MeshSecurity;
  private readonly ca: CaClient;
  private configSynced = false;
  private certReady = false;
  private running = false;

  private constructor(
    inputs: WaypointInputs,
    parts: {
      registry: Registry;
      certs: CertManager;
      store: ConfigStore;
      identity: Identity;
      inbound: Inbound;
      ctx: WaypointContext;
      source: ConfigSource;
      servers: Server[];
      ports: Waypoint['ports'];
      security: MeshSecurity;
      ca: CaClient;
      self: string;
    },
  ) {
    this.inputs = inputs;
    this.registry = parts.registry;
    this.certs = parts.certs;
    this.store = parts.store;
    this.identity = parts.identity;
    this.inbound = parts.inbound;
    this.ctx = parts.ctx;
    this.source = parts.source;
    this.servers = parts.servers;
    this.ports = parts.ports;
    this.security = parts.security;
    this.ca = parts.ca;
    this.self = parts.self;
  }

  /** Does every fallible step (identity, binds); a returned Waypoint is listening but not yet configured. */
  static async create(inputs: WaypointInputs): Promise<Waypoint> {
    const { config, logger } = inputs;
    const registry = inputs.registry ?? createRegistry();
    const identity = ownIdentity(config);
    const gateway = config.gatewayName ?? gatewayNameFromPod(config.podName);
    const self = `${config.podNamespace}/${gateway}`;
    const token = fileReader(config.tokenPath);
    const rootCa = fileReader(config.xdsRootCaPath);
    const ca =
      inputs.ca ??
      new GrpcCaClient({
        address: config.caAddress,
        rootCaPem: rootCa,
        token,
        ttlSeconds: Math.round(config.workloadCertTtlMs / 1000),
        serverName: serverNameOf(config.caAddress),
        impersonate: false,
      });
    const certs = new CertManager({ ca, logger: moduleLogger(logger, 'identity') });
    const store = new ConfigStore(self, moduleLogger(logger, 'config'), {
      retireMs: config.removedServiceGraceMs,
    });
    const contexts = new SecureContextCache();
    const pool = new HbonePool({
      name: 'waypoint upstream',
      certificateFor: (id) => certs.peek(id) ?? certs.get(id),
      contexts,
      connectTimeoutMs: config.upstreamConnectTimeoutMs,
      logger: moduleLogger(logger, 'hbone'),
      ...(inputs.upstreamSocket ? { createSocket: inputs.upstreamSocket } : {}),
    });
    const upstreams = new Upstreams({
      pool,
      source: identity,
      hbonePort: config.upstreamHbonePort,
      connectTimeoutMs: config.upstreamConnectTimeoutMs,
      idleTimeoutMs: config.upstreamIdleTimeoutMs,
      baggage: formatBaggage({
        clusterId: config.clusterId,
        namespace: config.podNamespace,
        workloadName: gateway,
        serviceName: gateway,
        revision: 'latest',
      }),
      logger: moduleLogger(logger, 'upstream'),
    });
    const security = new MeshSecurity({
      trustDomain: config.trustDomain,
      logger: moduleLogger(logger, 'authz'),
      ...(inputs.jwksCache ? { jwksCache: inputs.jwksCache } : {}),
    });
    // Pod-addressed pseudo-services are not listed by name: theirs are rebuilt on first use after a push.
    store.onChange(() => security.prune((name) => store.table.byName(name) !== undefined));
    const metrics = new WaypointMetrics(registry);
    const spans =
      config.otlpTracesEndpoint !== null
        ? new SpanExporter(
            config.otlpTracesEndpoint,
            config.traceServiceName,
            moduleLogger(logger, 'tracing'),
          )
        : null;
    const ctx: WaypointContext = {
      config,
      identity,
      store,
      upstreams,
      security,
      metrics,
      spans,
      logger: moduleLogger(logger, 'proxy'),
      accessLog: config.accessLog ? moduleLogger(logger, 'access') : null,
      rng: inputs.rng ?? Math.random,
      draining: false,
    };
    const nodeId = `router~${config.instanceIp}~${config.podName}.${config.podNamespace}~${config.podNamespace}.svc.cluster.local`;
    const source =
      inputs.configSource ??
      new XdsConfigSource({
        address: config.xdsAddress,
        rootCaPem: rootCa,
        serverName: serverNameOf(config.xdsAddress),
        token,
        nodeId,
        clusterId: config.clusterId,
        logger: moduleLogger(logger, 'xds'),
        registry,
        ...(inputs.xdsCredentials ? { credentials: inputs.xdsCredentials } : {}),
      });
    const inbound = await Inbound.create(ctx, {
      listen: inputs.hboneListen ?? { host: '0.0.0.0', port: config.hbonePort },
      certificate: () => certs.peek(identity) ?? certs.get(identity),
    });
    let self_: Waypoint | null = null;
    const admin = createServer((req, res) => self_?.admin(req, res));
    const stats = createServer((req, res) => {
      if (!serveMetrics(registry, req, res)) res.writeHead(404).end();
    });
    const readiness = createServer((req, res) => {
      const ready = self_?.ready() ?? false;
      if ((req.url ?? '').startsWith('/healthz/ready')) {
        res
          .writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' })
          .end(ready ? 'ready\n' : 'not ready\n');
      } else res.writeHead(404).end();
    });
    let ports: Waypoint['ports'];
    try {
      ports = {
        hbone: inbound.port,
        // Admin only on localhost, like Envoy's and ztunnel's; stats and readiness on the pod address.
        admin: await listen(admin, config.adminPort, '127.0.0.1'),
        stats: await listen(stats, config.statsPort, '0.0.0.0'),
        readiness: await listen(readiness, config.readinessPort, '0.0.0.0'),
      };
    } catch (err) {
      inbound.forceClose();
      for (const s of [admin, stats, readiness]) if (s.listening) s.close();
      throw err;
    }
    new Gauge({
      name: 'istio_waypoint_active_tunnels',
      help: 'HBONE streams currently open into the waypoint.',
      registers: [registry],
      collect() {
        this.set(inbound.activeTunnels);
      },
    });
    new Gauge({
      name: 'istio_waypoint_services',
      help: 'ServiceConfigs in the current waypoint configuration.',
      registers: [registry],
      collect() {
        this.set(store.size);
      },
    });
    self_ = new Waypoint(inputs, {
      registry,
      certs,
      store,
      identity,
      inbound,
      ctx,
      source,
      servers: [admin, stats, readiness],
      ports,
      security,
      ca,
      self,
    });
    logger.info(
      {
        identity: formatSpiffeId(identity),
        gateway: self,
        ports,
        xds: inputs.configSource ? 'static' : config.xdsAddress,
      },
      'waypoint listening',
    );
    return self_;
  }

  /** Ready once the first configuration is applied and the certificate is issued (Istio waypoint readiness). */
  ready(): boolean {
    return this.configSynced && this.certReady && !this.ctx.draining;
  }

  /** Starts the config feed and the certificate fetch; resolves at once (readiness reports progress). */
  async run(): Promise<void> {
    if (this.running) return;
    this.running = true;
    const { logger } = this.inputs;
    this.source.start((added, removed) => this.store.apply(added, removed));
    void this.source.ready.then(() => {
      this.configSynced = true;
      logger.info({ services: this.store.size }, 'waypoint configuration synced');
    });
    const fetchCert = () => {
      this.certs.get(this.identity).then(
        () => {
          this.certReady = true;
        },
        (err: unknown) => {
          logger.warn({ err: describeError(err) }, 'waypoint certificate not issued yet; retrying');
          setTimeout(fetchCert, 2_000).unref();
        },
      );
    };
    fetchCert();
    // Requests first (HBONE drains streams), then the upstream side, then control-plane links.
    // Drain.run starts every member at once; the control-plane links (certificates, TLS contexts, xDS) must
    // outlive the proxy's drain, or handshakes accepted during the window fail (reset before TLS).
    let proxyDrained: Promise<void> = Promise.resolve();
    this.drain.add({
      name: 'proxy',
      drain: () => {
        proxyDrained = this.drainProxy();
        return proxyDrained;
      },
      forceClose: () => {
        this.inbound.forceClose();
        this.ctx.upstreams.forceClose();
      },
    });
    for (const [i, s] of this.servers.entries()) this.drain.add(drainableServer(`http-${i}`, s));
    this.drain.add({
      name: 'control',
      drain: async () => {
        await proxyDrained.catch(() => undefined);
        await this.ctx.spans?.close();
        this.source.close();
        this.certs.close();
        this.security.close();
        (this.ca as { close?: () => void }).close?.();
      },
      forceClose: () => {
        this.source.close();
        this.certs.close();
        this.security.close();
      },
    });
  }

  /** The proxy's drain, in order: the minimum window (still accepting), then inbound, then upstream pools. */
  private async drainProxy(): Promise<void> {
    this.ctx.draining = true;
    // Keep accepting for the minimum drain window: ztunnels still routing here (istiod has not pushed the
    // unbinding yet) must not be refused; existing connections get GOAWAY so they move on their next stream.
    this.inbound.hbone.closeSessions();
    const window = Math.min(this.inputs.config.minDrainMs, this.inputs.config.drainGraceMs);
    if (window > 0) await new Promise((resolve) => setTimeout(resolve, window));
    await this.inbound.drain();
    await this.ctx.upstreams.drain();
  }

  async close(graceMs = 0): Promise<void> {
    this.ctx.draining = true;
    if (!this.running) {
      this.inbound.forceClose();
      this.ctx.upstreams.forceClose();
      for (const s of this.servers) s.close();
      this.source.close();
      this.certs.close();
      this.security.close();
      return;
    }
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
          json(200, { levels: currentLevels(this.inputs.logger) });
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
      else if (path === '/stats' || path === '/stats/prometheus') {
        if (!serveMetrics(this.registry, req, res)) json(404, { error: 'not found' });
      } else
        json(404, {
          error: 'not found',
          paths: ['/config_dump', '/logging', '/quitquitquit', '/healthz/ready'],
        });
    } catch (err) {
      json(500, { error: describeError(err) });
    }
  }

  configDump() {
    const configs = this.store.all();
    const table = this.store.table;
    return {
      identity: formatSpiffeId(this.identity),
      gateway: this.self,
      ready: this.ready(),
      services: configs.map((c) => {
        const svc = table.byName(c.name);
        return {
          name: c.name,
          hostname: c.hostname,
          addresses: c.addresses,
          ports: c.ports,
          served: svc?.served ?? false,
          endpoints: c.endpoints.map((e) => ({
            address: e.address,
            identity: e.identity,
            healthy: e.healthy,
            hbone: e.hbone,
            subsets: e.subsets,
            workload: `${e.workloadNamespace}/${e.workloadName}`,
          })),
          routeSource: c.routeSource ?? null,
        };
      }),
      routes: configs
        .filter((c) => c.routes.length > 0)
        .map((c) => {
          const j = ServiceConfig.toJSON({ ...c, endpoints: [] }) as Record<string, unknown>;
          return { service: c.name, routes: j.routes ?? [] };
        }),
      policies: configs
        .filter((c) => c.authorization.length > 0 || c.jwtRules.length > 0)
        .map((c) => {
          const j = ServiceConfig.toJSON({ ...c, endpoints: [], routes: [] }) as Record<string, unknown>;
          return { service: c.name, authorization: j.authorization ?? [], jwtRules: j.jwtRules ?? [] };
        }),
      certificates: this.certs.status(),
      config: { ...this.store.status(), source: this.source.status() },
      inbound: this.inbound.dump(),
      upstream: this.ctx.upstreams.dump(),
      tracing: this.ctx.spans ? { endpoint: this.ctx.spans.endpoint, ...this.ctx.spans.stats } : null,
    };
  }
}

export { StaticConfigSource };
