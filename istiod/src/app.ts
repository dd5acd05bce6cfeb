/**
 * istiod: wires the CA, the xDS server and the controllers to Kubernetes and to its listeners.
 *
 * `Istiod.create()` does every fallible step (load CA material, bind every port) before anything runs, so a
 * bad start fails loudly instead of half-way (CONVENTIONS.md habit 1).
 */
import { X509Certificate } from 'node:crypto';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import {
  experimental,
  Server as GrpcServer,
  ServerCredentials,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { CoreV1Api, type KubeConfig, type ListWatch, type V1Secret } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { Drain, type Drainable, drainableServer } from '../../pkg/drain/index.ts';
import { describeError } from '../../pkg/errors/index.ts';
import { informer } from '../../pkg/kube/index.ts';
import { createRegistry, Gauge, type Registry, serveMetrics } from '../../pkg/metrics/index.ts';
import { setLogLevel } from '../../pkg/telemetry/index.ts';
import { IstioCertificateServiceService } from '../../pkg/xds/gen/istio/v1/auth/ca.ts';
import { WAYPOINT_SERVICE_TYPE_URL } from '../../pkg/xds/index.ts';
import type { CaMaterial } from './ca/authority.ts';
import { loadCaMaterial, PLUGGED_SECRET, TokenReviewAuthenticator } from './ca/kube.ts';
import { RootCertPublisher } from './ca/publisher.ts';
import { CaService } from './ca/service.ts';
import { ServingCertificate, servingDnsNames } from './ca/serving.ts';
import type { IstiodConfig } from './config.ts';
import { GatewayController } from './gateway/index.ts';
import { AmbientIndex, DEFAULT_DOMAIN_SUFFIX } from './index/index.ts';
import { AmbientController } from './kube/controller.ts';
import { InformerNodeIndex } from './kube/nodeindex.ts';
import { KubeStatusWriter } from './kube/status.ts';
import { WaypointAccess } from './l7/access.ts';
import { L7Controller } from './l7/controller.ts';
import { L7StatusWriter } from './l7/status.ts';
import { handleDebugRequest } from './xds/debug.ts';
import { DEFAULT_TYPES, XdsServer } from './xds/server.ts';

export interface IstiodInputs {
  readonly config: IstiodConfig;
  readonly kubeConfig: KubeConfig;
  readonly logger: Logger;
  readonly registry?: Registry;
}

function bindGrpc(server: GrpcServer, address: string, creds: ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) =>
    server.bindAsync(address, creds, (err, port) => (err ? reject(err) : resolve(port))),
  );
}

function listenHttp(server: HttpServer, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const addr = server.address();
      resolve(typeof addr === 'object' && addr ? addr.port : port);
    });
  });
}

export class Istiod {
  readonly registry: Registry;
  readonly ports: { xdsPlaintext: number; xdsSecure: number; monitoring: number; http: number };
  readonly drain = new Drain();
  private readonly inputs: IstiodInputs;
  private readonly grpcSecure: GrpcServer;
  private readonly grpcPlain: GrpcServer;
  private readonly http: HttpServer;
  private readonly monitoring: HttpServer;
  private readonly serving: ServingCertificate;
  private readonly publisher: RootCertPublisher;
  private readonly cacertsWatch: ListWatch<V1Secret>;
  readonly index: AmbientIndex;
  readonly xds: XdsServer;
  private readonly status: KubeStatusWriter;
  private readonly l7Status: L7StatusWriter;
  /** The waypoint L7 compiler (started in run()). */
  l7: L7Controller | null = null;
  private controller: AmbientController | null = null;
  private gateways: GatewayController | null = null;
  private material: CaMaterial;
  private ready = false;

  private constructor(
    inputs: IstiodInputs,
    registry: Registry,
    parts: {
      grpcSecure: GrpcServer;
      grpcPlain: GrpcServer;
      http: HttpServer;
      monitoring: HttpServer;
      serving: ServingCertificate;
      publisher: RootCertPublisher;
      cacertsWatch: ListWatch<V1Secret>;
      material: CaMaterial;
      ports: Istiod['ports'];
      index: AmbientIndex;
      xds: XdsServer;
      status: KubeStatusWriter;
      l7Status: L7StatusWriter;
    },
  ) {
    this.inputs = inputs;
    this.registry = registry;
    this.grpcSecure = parts.grpcSecure;
    this.grpcPlain = parts.grpcPlain;
    this.http = parts.http;
    this.monitoring = parts.monitoring;
    this.serving = parts.serving;
    this.publisher = parts.publisher;
    this.cacertsWatch = parts.cacertsWatch;
    this.material = parts.material;
    this.ports = parts.ports;
    this.index = parts.index;
    this.xds = parts.xds;
    this.status = parts.status;
    this.l7Status = parts.l7Status;
  }

  static async create(inputs: IstiodInputs): Promise<Istiod> {
    const { config, kubeConfig: kc, logger } = inputs;
    const registry = inputs.registry ?? createRegistry();
    let material = await loadCaMaterial(kc, config.namespace, config.trustDomain, logger);
    const holder = { get: () => material };
    new Gauge({
      name: 'citadel_server_root_cert_expiry_timestamp',
      help: 'The unix timestamp, in seconds, when the root CA certificate expires.',
      registers: [registry],
      collect() {
        const first = holder.get().rootsPem[0];
        if (first) this.set(Date.parse(new X509Certificate(first).validTo) / 1000);
      },
    });
    const index = new AmbientIndex({
      clusterId: config.clusterId,
      trustDomain: config.trustDomain,
      rootNamespace: config.rootNamespace,
    });
    const xds = new XdsServer({
      registry,
      logger: logger.child({ module: 'xds' }),
      controlPlaneId: config.podName,
      // Waypoint L7 config goes only to waypoints, each seeing its own services (istiod/src/l7/access.ts).
      types: [...DEFAULT_TYPES, WAYPOINT_SERVICE_TYPE_URL],
      access: new Map([[WAYPOINT_SERVICE_TYPE_URL, new WaypointAccess(index)]]),
    });
    const status = new KubeStatusWriter(kc, logger.child({ module: 'status' }));
    const l7Status = new L7StatusWriter(kc, logger.child({ module: 'l7-status' }));
    const authenticator = new TokenReviewAuthenticator(kc);
    const ca = new CaService({
      material: () => holder.get(),
      authenticator,
      // Impersonation checks answer from the informer cache the ambient index keeps (no API call per CSR).
      nodes: new InformerNodeIndex(index),
      trustDomain: config.trustDomain,
      trustedNodeAccounts: new Set(config.trustedNodeAccounts),
      defaultTtlMs: config.defaultCertTtlMs,
      maxTtlMs: config.maxCertTtlMs,
      registry,
      logger: logger.child({ module: 'ca' }),
    });
    const serving = new ServingCertificate(
      material,
      servingDnsNames(config.namespace),
      config.servingCertTtlMs,
      logger.child({ module: 'ca' }),
    );
    const grpcOptions = {
      'grpc.max_receive_message_length': 16 * 1024 * 1024,
      'grpc.keepalive_time_ms': 30_000,
    };
    const grpcSecure = new GrpcServer(grpcOptions);
    const grpcPlain = new GrpcServer(grpcOptions);
    grpcSecure.addService(IstioCertificateServiceService, ca.handlers());
    // xDS: authenticated on 15012 (the node id's namespace must be the caller's), open on 15010 as in Istio.
    xds.register(grpcSecure, { authenticator });
    xds.register(grpcPlain);
    const secureCreds = experimental.createCertificateProviderServerCredentials(serving, null, false);
    const host = config.bindAddress;
    const xdsSecure = await bindGrpc(grpcSecure, `${host}:${config.xdsSecurePort}`, secureCreds);
    const xdsPlaintext = await bindGrpc(
      grpcPlain,
      `${host}:${config.xdsPlaintextPort}`,
      ServerCredentials.createInsecure(),
    );

    // The instance is assigned below; handlers read it lazily.
    let self: Istiod | null = null;
    const http = createHttpServer((req, res) => {
      const path = (req.url ?? '/').split('?', 1)[0];
      if (path === '/ready') {
        const ok = self?.isReady() ?? false;
        res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ready\n' : 'not ready\n');
        return;
      }
      if (path === '/debug/ca') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            source: holder.get().source,
            fingerprint: holder.get().fingerprint,
            roots: holder.get().rootsPem.length,
          }),
        );
        return;
      }
      if (handleDebugRequest({ xds, index, waypoints: self?.l7 ?? undefined }, req, res)) return;
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    });
    const monitoring = createHttpServer((req, res) => {
      if (serveMetrics(registry, req, res)) return;
      const url = new URL(req.url ?? '/', 'http://x');
      if (url.pathname === '/logging' && req.method === 'POST') {
        const r = setLogLevel(logger, url.searchParams.get('level') ?? '');
        res.writeHead(r.ok ? 200 : 400, { 'content-type': 'application/json' }).end(JSON.stringify(r));
        return;
      }
      res.writeHead(404).end();
    });
    const httpPort = await listenHttp(http, config.httpPort, host);
    const monitoringPort = await listenHttp(monitoring, config.monitoringPort, host);

    const publisher = new RootCertPublisher(kc, material.rootBundlePem(), logger.child({ module: 'ca' }));
    const core = kc.makeApiClient(CoreV1Api);
    const fieldSelector = `metadata.name=${PLUGGED_SECRET}`;
    const cacertsWatch = informer<V1Secret>(
      kc,
      `/api/v1/namespaces/${config.namespace}/secrets`,
      () => core.listNamespacedSecret({ namespace: config.namespace, fieldSelector }),
      { fieldSelector },
    );
    const instance = new Istiod(inputs, registry, {
      grpcSecure,
      grpcPlain,
      http,
      monitoring,
      serving,
      publisher,
      cacertsWatch,
      material,
      ports: { xdsPlaintext, xdsSecure, monitoring: monitoringPort, http: httpPort },
      index,
      xds,
      status,
      l7Status,
    });
    self = instance;
    const reload = async () => {
      try {
        const next = await loadCaMaterial(kc, config.namespace, config.trustDomain, logger);
        if (next.fingerprint === material.fingerprint && next.rootBundlePem() === material.rootBundlePem())
          return;
        material = next;
        instance.material = next;
        serving.setMaterial(next);
        publisher.setRoot(next.rootBundlePem());
        logger.info({ source: next.source, fingerprint: next.fingerprint }, 'CA material reloaded');
      } catch (err) {
        logger.error({ err: describeError(err) }, 'CA material reload failed; keeping the current CA');
      }
    };
    cacertsWatch.on('add', () => void reload());
    cacertsWatch.on('update', () => void reload());
    cacertsWatch.on('delete', () => void reload());
    return instance;
  }

  isReady(): boolean {
    return this.ready;
  }

  get caMaterial(): CaMaterial {
    return this.material;
  }

  /** Root bundle PEM and istiod's serving chain (tests and `ambientctl` use them). */
  get servingPem(): { chain: string; root: string } {
    return this.serving.pem;
  }

  async run(): Promise<void> {
    await this.publisher.start();
    await this.cacertsWatch.start();
    const { kubeConfig, logger, config } = this.inputs;
    const gateways = new GatewayController({
      kubeConfig,
      build: {
        image: config.gatewayProxyImage,
        // The istiod Service port (not our bind port, which tests set to 0).
        xdsAddress: `istiod.${config.namespace}.svc:15012`,
        clusterId: config.clusterId,
        trustDomain: config.trustDomain,
      },
      domainSuffix: DEFAULT_DOMAIN_SUFFIX,
      deploy: config.gatewayDeploymentController,
      createClasses: config.gatewayClassController,
      registry: this.registry,
      logger: logger.child({ module: 'gateway' }),
    });
    this.gateways = gateways;
    // The waypoint L7 compiler observes the ambient pipeline, so it exists first.
    this.l7 = await L7Controller.create({
      kubeConfig,
      index: this.index,
      xds: this.xds,
      status: this.l7Status,
      logger: logger.child({ module: 'l7' }),
    });
    this.controller = await AmbientController.create({
      kubeConfig,
      index: this.index,
      xds: this.xds,
      status: this.status,
      registry: this.registry,
      logger: logger.child({ module: 'ambient' }),
      // The Gateway controller shares the ambient informers (Gateways, classes, Services, EndpointSlices).
      observe: (kind, event, obj) => gateways.observe(kind, event, obj),
      observer: this.l7.observer,
    });
    // Serve config only once every kind has been listed: a ztunnel must never see a partial mesh.
    await Promise.all([this.controller.synced, this.l7.synced]);
    // Starts writing once its own informers have listed too; readiness does not wait for it.
    gateways.start(this.controller.synced).catch((err: unknown) => {
      logger.error({ err: describeError(err) }, 'BUG: gateway controller failed to start');
    });
    const grpcDrainable = (name: string, s: GrpcServer): Drainable => ({
      name,
      drain: () => new Promise<void>((resolve) => s.tryShutdown(() => resolve())),
      forceClose: () => s.forceShutdown(),
    });
    this.drain.add(grpcDrainable('grpc-secure', this.grpcSecure));
    this.drain.add(grpcDrainable('grpc-plaintext', this.grpcPlain));
    this.drain.add(drainableServer('http', this.http));
    this.drain.add(drainableServer('monitoring', this.monitoring));
    this.ready = true;
    this.inputs.logger.info({ ports: this.ports }, 'istiod ready');
  }

  async close(graceMs = 0): Promise<void> {
    this.ready = false;
    this.publisher.stop();
    await this.cacertsWatch.stop();
    this.serving.close();
    this.controller?.stop();
    this.gateways?.stop();
    this.l7?.stop();
    this.status.stop();
    this.l7Status.stop();
    this.xds.close();
    await this.drain.run(graceMs, this.inputs.logger);
  }
}
