/**
 * Where the waypoint's ServiceConfigs come from: istiod over delta ADS (production), or a static list (tests,
 * benchmarks without a control plane: STATIC_CONFIG=<file with a JSON array of ServiceConfig in proto3 JSON>).
 * Either way updates go through the same `apply` (ConfigStore.apply), which throws to reject (NACK) one.
 */
import { readFileSync } from 'node:fs';
import { type ChannelCredentials, credentials } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { MeshError } from '../../pkg/errors/index.ts';
import type { Registry } from '../../pkg/metrics/index.ts';
import { subscription, XdsClient } from '../../pkg/xds/client.ts';
import { ServiceConfig } from '../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import { Node } from '../../pkg/xds/gen/envoy/config/core/v3/base.ts';
import { WAYPOINT_SERVICE_TYPE_URL } from '../../pkg/xds/index.ts';

export type ApplyFn = (added: ReadonlyMap<string, ServiceConfig>, removed: readonly string[]) => void;

export interface ConfigSource {
  /** Starts delivering updates to `apply`. */
  start(apply: ApplyFn): void;
  /** Resolves once the first update has been accepted. */
  readonly ready: Promise<void>;
  close(): void;
  status(): unknown;
}

export interface XdsSourceOptions {
  readonly address: string;
  /** PEM roots that verify istiod. */
  readonly rootCaPem: () => string;
  readonly serverName: string;
  readonly token: () => string;
  /** `router~<podIP>~<pod>.<ns>~<ns>.svc.cluster.local`. */
  readonly nodeId: string;
  readonly clusterId: string;
  readonly logger: Logger;
  readonly registry: Registry;
  /** Tests: plaintext or other credentials instead of TLS with `rootCaPem`. */
  readonly credentials?: ChannelCredentials;
}

/** ServiceConfigs from istiod (WAYPOINT_SERVICE_TYPE_URL, wildcard: istiod sends what concerns us). */
export class XdsConfigSource implements ConfigSource {
  private readonly opts: XdsSourceOptions;
  private client: XdsClient | null = null;
  private readonly readyP = Promise.withResolvers<void>();

  constructor(opts: XdsSourceOptions) {
    this.opts = opts;
  }

  get ready(): Promise<void> {
    return this.readyP.promise;
  }

  start(apply: ApplyFn): void {
    const o = this.opts;
    this.client = new XdsClient({
      address: o.address,
      credentials: o.credentials ?? credentials.createSsl(Buffer.from(o.rootCaPem())),
      channelOptions: { 'grpc.ssl_target_name_override': o.serverName },
      node: Node.fromPartial({
        id: o.nodeId,
        cluster: o.clusterId,
        userAgentName: 'ambient-ts-waypoint',
      }),
      token: () => o.token().trim(),
      logger: o.logger,
      registry: o.registry,
      subscriptions: [subscription(WAYPOINT_SERVICE_TYPE_URL, ServiceConfig, apply)],
    });
    this.client.ready.then(() => this.readyP.resolve());
    this.client.start();
  }

  close(): void {
    this.client?.close();
  }

  status(): unknown {
    return this.client?.status() ?? { connected: false, synced: false };
  }
}

/** A fixed list, with `update` to push more (tests); `update` throws when the store rejects it. */
export class StaticConfigSource implements ConfigSource {
  private apply: ApplyFn | null = null;
  private readonly initial: readonly ServiceConfig[];
  private readonly readyP = Promise.withResolvers<void>();
  private updates = 0;
  private rejected = 0;

  constructor(initial: readonly ServiceConfig[]) {
    this.initial = initial;
  }

  /** Reads a JSON array of ServiceConfig (proto3 JSON mapping) from a file. */
  static fromFile(path: string): StaticConfigSource {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(path, 'utf8'));
    } catch (err) {
      throw new MeshError('MESH_ERR_CONFIG_INVALID', `STATIC_CONFIG=${path}: ${(err as Error).message}`);
    }
    if (!Array.isArray(parsed)) {
      throw new MeshError(
        'MESH_ERR_CONFIG_INVALID',
        `STATIC_CONFIG=${path}: expected a JSON array of ServiceConfig`,
      );
    }
    return new StaticConfigSource(parsed.map((o) => ServiceConfig.fromJSON(o)));
  }

  get ready(): Promise<void> {
    return this.readyP.promise;
  }

  start(apply: ApplyFn): void {
    this.apply = apply;
    this.update(this.initial, []);
    this.readyP.resolve();
  }

  update(added: readonly ServiceConfig[], removed: readonly string[] = []): void {
    if (this.apply === null) throw new Error('StaticConfigSource.update before start');
    this.updates++;
    try {
      this.apply(new Map(added.map((c) => [c.name, c])), removed);
    } catch (err) {
      this.rejected++;
      throw err;
    }
  }

  close(): void {
    this.apply = null;
  }

  status(): unknown {
    return { static: true, updates: this.updates, rejected: this.rejected };
  }
}
