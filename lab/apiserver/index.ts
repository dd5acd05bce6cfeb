/**
 * The lab API server: a Kubernetes-compatible HTTPS API endpoint backed by a durable directory.
 *
 *   const api = await ApiServer.create({ dataDir, host: '127.0.0.1', port: 0 });
 *   api.url; api.kubeconfigPath; api.caPem; api.client (in-process); await api.close();
 *
 * See docs/lab-apiserver.md for what is and is not supported.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { type Logger, pino } from 'pino';
import { stringify as stringifyYaml } from 'yaml';
import { MeshError } from '../../pkg/errors/index.ts';
import { ApiCore } from './api.ts';
import { type Authorizer, alwaysAllow, bootstrapRbac, RbacAuthorizer } from './authz.ts';
import { intToIp, type NetworkConfig, parseCidr } from './builtins.ts';
import { LocalClient } from './client.ts';
import { HttpHandler } from './http.ts';
import { isObject, type JsonObject, objAt } from './json.ts';
import { OpenApi } from './openapi.ts';
import { type KeyPairPem, LabCa, writeSecretFile } from './pki.ts';
import { Registry } from './resources.ts';
import { ApiError } from './status.ts';
import { Store } from './store.ts';
import { DEFAULT_ISSUER, TokenIssuer } from './tokens.ts';

export type { DeleteOptions, ListOptions, PatchType, UserInfo, WriteOptions } from './api.ts';
export { ApiCore } from './api.ts';
export type { LocalWatchOptions } from './client.ts';
export { LocalClient } from './client.ts';
export type { JsonObject } from './json.ts';
export type { KeyPairPem } from './pki.ts';
export { ApiError } from './status.ts';
export type { EventType, StoreEvent } from './store.ts';

export interface ApiServerOptions {
  /** Directory for state (write-ahead log, snapshots), PKI and the admin kubeconfig. Created if missing. */
  readonly dataDir: string;
  /** Listen address; default 127.0.0.1. */
  readonly host?: string;
  /** Listen port; 0 (default) picks a free one. */
  readonly port?: number;
  /** Serve HTTPS with the lab CA (default true); plain HTTP is for debugging only. */
  readonly tls?: boolean;
  /** Extra DNS names / IPs for the serving certificate (the listen host, localhost and 127.0.0.1 are always in). */
  readonly extraSans?: readonly string[];
  /** Address published in the `kubernetes` Endpoints/EndpointSlice (default: the listen host, or 127.0.0.1). */
  readonly advertiseAddress?: string;
  /** ClusterIP range; default 10.96.0.0/16 (the `kubernetes` Service gets the first address). */
  readonly serviceCidr?: string;
  /** NodePort range `min-max`; default 30000-32767. */
  readonly nodePortRange?: string;
  /** Events kept for watches that resume from an older resourceVersion; older start points get 410 Gone. */
  readonly historyWindow?: number;
  /** Write a snapshot after this many logged writes (the log is truncated then). */
  readonly snapshotEvery?: number;
  /** Largest accepted request body (default 3 MiB, kube-apiserver's limit). */
  readonly maxBodyBytes?: number;
  /** 'RBAC' (default) enforces stored Roles/Bindings; 'AlwaysAllow' lets any authenticated user do anything. */
  readonly authorization?: 'RBAC' | 'AlwaysAllow';
  /** Shortest TokenRequest lifetime accepted (kube-apiserver: 600 s); tests lower it to exercise expiry. */
  readonly minTokenExpirationSeconds?: number;
  /** Interval of BOOKMARK events on watches that allow them. */
  readonly bookmarkIntervalMs?: number;
  /** Interval of keep-alive newlines on watches without bookmarks (client-node aborts idle watches at 30 s). */
  readonly watchKeepaliveMs?: number;
  /** Upper bound of a watch's lifetime; without timeoutSeconds a watch ends at a random point in [max/2, max]. */
  readonly maxWatchSeconds?: number;
  /** Name of the cluster/context/user in the written kubeconfig; default `lab`. */
  readonly clusterName?: string;
  readonly logger?: Logger;
}

/** kube-apiserver's default request body limit (--max-request-bytes is 3 MiB for JSON). */
const DEFAULT_MAX_BODY_BYTES = 3 * 1024 * 1024;
/** Enough for a few minutes of a busy lab; older watch start points get 410 and relist. */
const DEFAULT_HISTORY_WINDOW = 10_000;
/** A snapshot every few thousand writes keeps recovery short and the log small. */
const DEFAULT_SNAPSHOT_EVERY = 5_000;
/** kube-apiserver sends bookmarks about once a minute; the lab is small, so a little more often is cheap. */
const DEFAULT_BOOKMARK_INTERVAL_MS = 30_000;
/** Below client-node's 30 s idle abort, so quiet watches are not torn down and re-established. */
const DEFAULT_WATCH_KEEPALIVE_MS = 15_000;
/** kube-apiserver's --min-request-timeout (1800 s) bounds watches the same way. */
const DEFAULT_MAX_WATCH_SECONDS = 1800;
const DEFAULT_MIN_TOKEN_EXPIRATION_SECONDS = 600;
const BOOTSTRAP_NAMESPACES = ['default', 'kube-system', 'kube-public', 'kube-node-lease'];

function parseNetwork(o: ApiServerOptions): NetworkConfig {
  const cidr = o.serviceCidr ?? '10.96.0.0/16';
  const parsed = parseCidr(cidr);
  if (!parsed)
    throw new MeshError(
      'MESH_ERR_LAB_APISERVER_OPTIONS',
      `serviceCidr=${cidr} (expected an IPv4 CIDR with prefix 8..30)`,
    );
  const range = o.nodePortRange ?? '30000-32767';
  const m = /^(\d+)-(\d+)$/.exec(range);
  const min = Number(m?.[1]);
  const max = Number(m?.[2]);
  if (!m || min < 1 || max > 65535 || min > max)
    throw new MeshError(
      'MESH_ERR_LAB_APISERVER_OPTIONS',
      `nodePortRange=${range} (expected min-max within 1-65535)`,
    );
  return { serviceBase: parsed.base, servicePrefix: parsed.prefix, nodePortMin: min, nodePortMax: max };
}

function positive(name: string, v: number | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  if (!Number.isInteger(v) || v <= 0)
    throw new MeshError('MESH_ERR_LAB_APISERVER_OPTIONS', `${name}=${v} (expected a positive integer)`);
  return v;
}

async function loadOrCreateToken(path: string): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    const token = randomBytes(32).toString('base64url');
    await writeSecretFile(path, `${token}\n`);
    return token;
  }
}

export interface KubeconfigUser {
  readonly token?: string;
  readonly clientCert?: KeyPairPem;
}

export class ApiServer {
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly caPem: string;
  readonly kubeconfigPath: string;
  /** Bearer token of the admin user (group system:masters) written into the kubeconfig. */
  readonly adminToken: string;
  readonly api: ApiCore;
  readonly client: LocalClient;
  readonly dataDir: string;
  private readonly server: HttpServer;
  private readonly handler: HttpHandler;
  private readonly store: Store;
  private readonly ca: LabCa;
  private readonly clusterName: string;
  private readonly logger: Logger;
  private closing = false;

  private constructor(init: {
    url: string;
    host: string;
    port: number;
    ca: LabCa;
    kubeconfigPath: string;
    adminToken: string;
    api: ApiCore;
    server: HttpServer;
    handler: HttpHandler;
    store: Store;
    dataDir: string;
    clusterName: string;
    logger: Logger;
  }) {
    this.url = init.url;
    this.host = init.host;
    this.port = init.port;
    this.ca = init.ca;
    this.caPem = init.ca.certPem;
    this.kubeconfigPath = init.kubeconfigPath;
    this.adminToken = init.adminToken;
    this.api = init.api;
    this.client = new LocalClient(init.api);
    this.server = init.server;
    this.handler = init.handler;
    this.store = init.store;
    this.dataDir = init.dataDir;
    this.clusterName = init.clusterName;
    this.logger = init.logger;
  }

  /** Opens the state, binds the port, writes the admin kubeconfig and bootstraps default objects. */
  static async create(o: ApiServerOptions): Promise<ApiServer> {
    const logger = o.logger ?? pino({ level: 'silent' });
    const host = o.host ?? '127.0.0.1';
    const tls = o.tls ?? true;
    const network = parseNetwork(o);
    const historyWindow = positive('historyWindow', o.historyWindow, DEFAULT_HISTORY_WINDOW);
    const snapshotEvery = positive('snapshotEvery', o.snapshotEvery, DEFAULT_SNAPSHOT_EVERY);
    const maxBodyBytes = positive('maxBodyBytes', o.maxBodyBytes, DEFAULT_MAX_BODY_BYTES);
    const advertise =
      o.advertiseAddress ?? (isIP(host) && host !== '0.0.0.0' && host !== '::' ? host : '127.0.0.1');
    if (!isIP(advertise))
      throw new MeshError(
        'MESH_ERR_LAB_APISERVER_OPTIONS',
        `advertiseAddress=${advertise} (expected an IP address)`,
      );
    const pkiDir = join(o.dataDir, 'pki');
    try {
      await mkdir(o.dataDir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new MeshError(
        'MESH_ERR_LAB_STATE_IO',
        `cannot create the data directory ${o.dataDir}: ${String(err)}`,
        { cause: err },
      );
    }
    const ca = await LabCa.loadOrCreate(pkiDir, 'ambient-lab-ca');
    const tokens = await TokenIssuer.loadOrCreate(pkiDir, DEFAULT_ISSUER);
    const adminToken = await loadOrCreateToken(join(pkiDir, 'admin.token'));
    const store = await Store.open({ dir: join(o.dataDir, 'state'), historyWindow, snapshotEvery, logger });
    const registry = new Registry();
    const api = new ApiCore({
      store,
      registry,
      tokens,
      network,
      logger,
      apiAudiences: [DEFAULT_ISSUER],
      minTokenExpirationSeconds: positive(
        'minTokenExpirationSeconds',
        o.minTokenExpirationSeconds,
        DEFAULT_MIN_TOKEN_EXPIRATION_SECONDS,
      ),
    });
    const authorizer: Authorizer =
      (o.authorization ?? 'RBAC') === 'RBAC' ? new RbacAuthorizer(store) : alwaysAllow;
    let ready = false;
    const handler = new HttpHandler({
      api,
      registry,
      openapi: new OpenApi(registry),
      logger,
      adminToken,
      authorizer,
      maxBodyBytes,
      bookmarkIntervalMs: positive('bookmarkIntervalMs', o.bookmarkIntervalMs, DEFAULT_BOOKMARK_INTERVAL_MS),
      watchKeepaliveMs: positive('watchKeepaliveMs', o.watchKeepaliveMs, DEFAULT_WATCH_KEEPALIVE_MS),
      maxWatchSeconds: positive('maxWatchSeconds', o.maxWatchSeconds, DEFAULT_MAX_WATCH_SECONDS),
      ready: () => ready,
    });
    const serviceIp = intToIp(network.serviceBase + 1);
    const sans = [
      '127.0.0.1',
      '::1',
      'localhost',
      host,
      advertise,
      serviceIp,
      'kubernetes',
      'kubernetes.default',
      'kubernetes.default.svc',
      'kubernetes.default.svc.cluster.local',
      ...(o.extraSans ?? []),
    ].filter((h) => h !== '0.0.0.0' && h !== '::');
    let server: HttpServer;
    if (tls) {
      const serving = ca.issueServing(sans);
      server = createHttpsServer(
        {
          key: serving.keyPem,
          cert: serving.certPem,
          ca: ca.certPem,
          requestCert: true,
          rejectUnauthorized: false,
        },
        handler.handle,
      ) as unknown as HttpServer;
    } else {
      server = createHttpServer(handler.handle);
    }
    server.on('clientError', (_err, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
      else socket.destroy();
    });
    server.keepAliveTimeout = 65_000;
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(o.port ?? 0, host, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      await store.close(false);
      throw new MeshError(
        'MESH_ERR_LAB_APISERVER_LISTEN',
        `cannot listen on ${host}:${o.port ?? 0}: ${String(err)}`,
        { cause: err },
      );
    }
    const addr = server.address();
    const port = typeof addr === 'object' && addr ? addr.port : (o.port ?? 0);
    const urlHost = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;
    const url = `${tls ? 'https' : 'http'}://${urlHost}:${port}`;
    handler.setAddress(`${advertise}:${port}`, url);
    const clusterName = o.clusterName ?? 'lab';
    const kubeconfigPath = join(o.dataDir, 'kubeconfig');
    const srv = new ApiServer({
      url,
      host,
      port,
      ca,
      kubeconfigPath,
      adminToken,
      api,
      server,
      handler,
      store,
      dataDir: o.dataDir,
      clusterName,
      logger,
    });
    try {
      await srv.writeKubeconfig(kubeconfigPath, { token: adminToken });
      await srv.bootstrap(advertise, port);
    } catch (err) {
      await srv.close();
      throw err;
    }
    ready = true;
    logger.info({ url, dataDir: o.dataDir, rv: store.rv }, 'lab API server ready');
    return srv;
  }

  /** Writes a kubeconfig for this server with the given credentials (token or client certificate). */
  async writeKubeconfig(path: string, user: KubeconfigUser, namespace = 'default'): Promise<void> {
    const u: JsonObject = {};
    if (user.token) u.token = user.token;
    if (user.clientCert) {
      u['client-certificate-data'] = Buffer.from(user.clientCert.certPem).toString('base64');
      u['client-key-data'] = Buffer.from(user.clientCert.keyPem).toString('base64');
    }
    const cluster: JsonObject = { server: this.url };
    if (this.url.startsWith('https:'))
      cluster['certificate-authority-data'] = Buffer.from(this.caPem).toString('base64');
    const doc = {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: this.clusterName, cluster }],
      users: [{ name: this.clusterName, user: u }],
      contexts: [
        { name: this.clusterName, context: { cluster: this.clusterName, user: this.clusterName, namespace } },
      ],
      'current-context': this.clusterName,
      preferences: {},
    };
    await writeSecretFile(path, stringifyYaml(doc));
  }

  /** A client certificate from the lab CA: the server maps CN to the user and O to groups. */
  issueClientCert(user: string, groups: readonly string[] = []): KeyPairPem {
    return this.ca.issueClient(user, groups);
  }

  /** Default namespaces, the `kubernetes` Service and its endpoints, and the RBAC bootstrap roles. */
  private async bootstrap(advertise: string, port: number): Promise<void> {
    const c = this.client;
    for (const name of BOOTSTRAP_NAMESPACES) {
      if (!c.get('v1/namespaces', '', name)) await c.create('v1/namespaces', { metadata: { name } });
    }
    for (const { key, obj } of bootstrapRbac()) {
      const gvr = key.replace('rbac.authorization.k8s.io/', 'rbac.authorization.k8s.io/v1/');
      const name = String(objAt(obj, 'metadata')?.name);
      if (!c.get(gvr, '', name)) await c.create(gvr, obj);
    }
    const labels = { component: 'apiserver', provider: 'kubernetes' };
    const svc = c.get('v1/services', 'default', 'kubernetes');
    const ports = [{ name: 'https', port: 443, protocol: 'TCP', targetPort: port }];
    if (!svc) {
      await c.create('v1/services', {
        metadata: { name: 'kubernetes', namespace: 'default', labels },
        spec: { type: 'ClusterIP', ports, sessionAffinity: 'None' },
      });
    } else {
      const spec = objAt(svc, 'spec');
      const cur = Array.isArray(spec?.ports) ? spec.ports[0] : undefined;
      if (!isObject(cur) || cur.targetPort !== port)
        await c.update('v1/services', { ...svc, spec: { ...spec, ports } });
    }
    const subsets = [{ addresses: [{ ip: advertise }], ports: [{ name: 'https', port, protocol: 'TCP' }] }];
    const ep = c.get('v1/endpoints', 'default', 'kubernetes');
    if (!ep)
      await c.create('v1/endpoints', {
        metadata: {
          name: 'kubernetes',
          namespace: 'default',
          labels: { 'endpointslice.kubernetes.io/skip-mirror': 'true' },
        },
        subsets,
      });
    else if (JSON.stringify(ep.subsets) !== JSON.stringify(subsets))
      await c.update('v1/endpoints', { ...ep, subsets });
    const slice = {
      addressType: 'IPv4',
      endpoints: [{ addresses: [advertise], conditions: { ready: true } }],
      ports: [{ name: 'https', port, protocol: 'TCP' }],
    };
    const es = c.get('discovery.k8s.io/v1/endpointslices', 'default', 'kubernetes');
    if (!es) {
      await c.create('discovery.k8s.io/v1/endpointslices', {
        metadata: {
          name: 'kubernetes',
          namespace: 'default',
          labels: { 'kubernetes.io/service-name': 'kubernetes' },
        },
        ...slice,
      });
    } else if (
      JSON.stringify(es.endpoints) !== JSON.stringify(slice.endpoints) ||
      JSON.stringify(es.ports) !== JSON.stringify(slice.ports)
    ) {
      await c.update('discovery.k8s.io/v1/endpointslices', { ...es, ...slice });
    }
  }

  /** Current highest resourceVersion (monotonic across restarts). */
  get resourceVersion(): number {
    return this.store.rv;
  }

  /** Subscribes to every durable change, in order (in-process controllers). */
  subscribe(listener: Parameters<Store['subscribe']>[0]): () => void {
    return this.store.subscribe(listener);
  }

  /** Forces a snapshot now (tests; normally automatic). */
  snapshot(): Promise<void> {
    return this.store.snapshot();
  }

  /** Stops accepting requests, ends watches, flushes and snapshots the state. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.handler.closeWatches();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections?.();
    });
    await this.store.close(true);
    this.logger.info({ url: this.url }, 'lab API server stopped');
  }
}

export function isApiError(err: unknown, code?: number): err is ApiError {
  return err instanceof ApiError && (code === undefined || err.code === code);
}
