/**
 * Delta ADS client for ztunnel and the waypoint (after istio/ztunnel src/xds/client.rs): one
 * `DeltaAggregatedResources` stream carrying every subscribed type, reconnecting with capped exponential
 * back-off and jitter.
 *
 * - Each type has a handler `onUpdate(added, removed)`. Responses are applied one at a time, in order. A response
 *   whose resources do not decode, or whose handler throws, is NACKed with `error_detail` and leaves the
 *   client's versions as they were (handlers must apply a response all-or-nothing); otherwise it is ACKed.
 * - The versions of applied resources are remembered and sent as `initial_resource_versions` on reconnect, so the
 *   server resends only what changed and tells us what was removed meanwhile.
 * - `ready` resolves once every type has applied its first response ("first sync done").
 * - Metrics (ztunnel's names): `istio_xds_message_total{url}`, `istio_xds_message_bytes_total{url}`,
 *   `istio_xds_connection_terminations_total{reason}` with reason ConnectionError (the stream failed before any
 *   response), Error (failed after), Reconnect (the server ended it), Complete (we closed it).
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { describeError } from '../errors/index.ts';
import { Counter, type Registry } from '../metrics/index.ts';
import {
  AggregatedDiscoveryServiceClient,
  type Any,
  DeltaDiscoveryRequest,
  type DeltaDiscoveryResponse,
  type Node,
  type ProtoDecoder,
  unpackAny,
} from './index.ts';

/** First reconnect delay; doubled per failed attempt (ztunnel starts in the same range). */
export const BACKOFF_INITIAL_MS = 100;
/** Longest wait between reconnects (ztunnel caps at 15 s). */
export const BACKOFF_MAX_MS = 15_000;
/** `google.rpc.Code.INVALID_ARGUMENT`, sent in NACKs. */
const RPC_INVALID_ARGUMENT = 3;

export type TerminationReason = 'ConnectionError' | 'Error' | 'Reconnect' | 'Complete';

/** A subscription to one resource type. Build with `subscription()` to keep the resource type checked. */
export interface TypeSubscription {
  readonly typeUrl: string;
  /** Names to subscribe to; omitted or empty means wildcard (everything of the type). */
  readonly names?: readonly string[];
  /** Decodes and applies one response; throws to NACK. */
  apply(added: ReadonlyMap<string, Any>, removed: readonly string[]): void | Promise<void>;
}

/**
 * A typed subscription: resources are unpacked (type URL checked, strict decode) before `onUpdate` sees them;
 * a resource that does not decode fails the whole response (NACK) without calling `onUpdate`.
 */
export function subscription<T>(
  typeUrl: string,
  codec: ProtoDecoder<T>,
  onUpdate: (added: ReadonlyMap<string, T>, removed: readonly string[]) => void | Promise<void>,
  names?: readonly string[],
): TypeSubscription {
  return {
    typeUrl,
    names,
    apply(added, removed) {
      const decoded = new Map<string, T>();
      for (const [name, any] of added) {
        const r = unpackAny(any, codec, typeUrl);
        if (!r.ok) throw new Error(`resource ${name}: ${r.error.message}`);
        decoded.set(name, r.value);
      }
      return onUpdate(decoded, removed);
    },
  };
}

export interface XdsClientOptions {
  /** `host:port` of istiod (or any delta-ADS server). */
  readonly address: string;
  readonly credentials: grpc.ChannelCredentials;
  readonly node: Node;
  readonly subscriptions: readonly TypeSubscription[];
  /** Bearer token for each new stream (the pod's service-account token), or null for none. */
  readonly token?: () => string | null | Promise<string | null>;
  readonly logger: Logger;
  readonly registry?: Registry;
  readonly backoffInitialMs?: number;
  readonly backoffMaxMs?: number;
  readonly channelOptions?: grpc.ChannelOptions;
}

interface Metrics {
  readonly messages: Counter<'url'>;
  readonly bytes: Counter<'url'>;
  readonly terminations: Counter<'reason'>;
}

function counter<L extends string>(
  registry: Registry,
  name: string,
  help: string,
  labelNames: L[],
): Counter<L> {
  // Several clients (ztunnel has one, tests many) may share a registry.
  const existing = registry.getSingleMetric(name);
  if (existing) return existing as Counter<L>;
  return new Counter({ name, help, labelNames, registers: [registry] });
}

function createMetrics(registry: Registry | undefined): Metrics | null {
  if (!registry) return null;
  return {
    messages: counter(registry, 'istio_xds_message_total', 'Total number of messages received (unstable)', [
      'url',
    ]),
    bytes: counter(registry, 'istio_xds_message_bytes_total', 'Total number of bytes received (unstable)', [
      'url',
    ]),
    terminations: counter(
      registry,
      'istio_xds_connection_terminations_total',
      'The total number of completed connections to xds server (unstable)',
      ['reason'],
    ),
  };
}

type Stream = grpc.ClientDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

export interface XdsClientStatus {
  readonly connected: boolean;
  readonly synced: boolean;
  readonly attempts: number;
  readonly lastError: string | null;
  readonly types: Record<
    string,
    { readonly resources: number; readonly acks: number; readonly nacks: number }
  >;
}

export class XdsClient {
  /** Resolves when every subscribed type has applied its first response. */
  readonly ready: Promise<void>;
  private readonly opts: XdsClientOptions;
  private readonly logger: Logger;
  private readonly metrics: Metrics | null;
  private readonly client: InstanceType<typeof AggregatedDiscoveryServiceClient>;
  private readonly subs = new Map<string, TypeSubscription>();
  private readonly versions = new Map<string, Map<string, string>>();
  private readonly counts = new Map<string, { acks: number; nacks: number }>();
  private readonly syncedTypes = new Set<string>();
  private resolveReady: () => void = () => {};
  private stream: Stream | null = null;
  private received = false;
  private attempts = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  private closed = false;
  private started = false;
  private lastError: string | null = null;

  constructor(opts: XdsClientOptions) {
    this.opts = opts;
    this.logger = opts.logger;
    this.metrics = createMetrics(opts.registry);
    for (const s of opts.subscriptions) {
      this.subs.set(s.typeUrl, s);
      this.versions.set(s.typeUrl, new Map());
      this.counts.set(s.typeUrl, { acks: 0, nacks: 0 });
    }
    this.ready = new Promise((resolve) => {
      this.resolveReady = resolve;
    });
    this.client = new AggregatedDiscoveryServiceClient(opts.address, opts.credentials, opts.channelOptions);
  }

  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    this.connect();
  }

  /** Ends the stream and stops reconnecting. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const s = this.stream;
    this.stream = null;
    if (s) {
      this.metrics?.terminations.inc({ reason: 'Complete' });
      s.cancel();
    }
    this.client.close();
  }

  /** Versions of the resources applied for a type (what reconnects announce). */
  resourceVersions(typeUrl: string): ReadonlyMap<string, string> {
    return this.versions.get(typeUrl) ?? new Map();
  }

  status(): XdsClientStatus {
    return {
      connected: this.stream !== null && this.received,
      synced: this.syncedTypes.size === this.subs.size,
      attempts: this.attempts,
      lastError: this.lastError,
      types: Object.fromEntries(
        [...this.subs.keys()].map((t) => [
          t,
          { resources: this.versions.get(t)!.size, ...this.counts.get(t)! },
        ]),
      ),
    };
  }

  private connect(): void {
    if (this.closed) return;
    this.attempts++;
    const tokenFn = this.opts.token;
    Promise.resolve(tokenFn ? tokenFn() : null).then(
      (token) => this.open(token),
      (err: unknown) => this.failed(null, `cannot read token: ${describeError(err)}`, 'ConnectionError'),
    );
  }

  private open(token: string | null): void {
    if (this.closed) return;
    const md = new grpc.Metadata();
    if (token) md.set('authorization', `Bearer ${token}`);
    const stream = this.client.deltaAggregatedResources(md);
    this.stream = stream;
    this.received = false;
    let queue: Promise<void> = Promise.resolve();
    stream.on('data', (resp: DeltaDiscoveryResponse) => {
      queue = queue.then(() => this.handle(stream, resp));
    });
    stream.on('error', (err: grpc.ServiceError) => {
      if (this.stream !== stream) return;
      const reason: TerminationReason = !this.received
        ? 'ConnectionError'
        : err.code === grpc.status.UNAVAILABLE
          ? 'Reconnect'
          : 'Error';
      this.failed(stream, `${grpc.status[err.code] ?? err.code}: ${err.details || err.message}`, reason);
    });
    stream.on('end', () => {
      if (this.stream !== stream) return;
      this.failed(stream, 'stream ended by the server', this.received ? 'Reconnect' : 'ConnectionError');
    });
    let first = true;
    for (const [typeUrl, sub] of this.subs) {
      const names = sub.names && sub.names.length > 0 ? [...sub.names] : ['*'];
      stream.write(
        DeltaDiscoveryRequest.fromPartial({
          node: first ? this.opts.node : undefined,
          typeUrl,
          resourceNamesSubscribe: names,
          initialResourceVersions: Object.fromEntries(this.versions.get(typeUrl)!),
        }),
      );
      first = false;
    }
    this.logger.debug({ address: this.opts.address, attempt: this.attempts }, 'xDS stream opened');
  }

  private failed(stream: Stream | null, message: string, reason: TerminationReason): void {
    if (stream && this.stream !== stream) return;
    this.stream = null;
    if (this.closed) return;
    stream?.cancel();
    this.lastError = message;
    this.metrics?.terminations.inc({ reason });
    const delay = this.backoff();
    this.logger.warn(
      { code: 'MESH_ERR_XDS_STREAM', address: this.opts.address, reason, err: message, retryInMs: delay },
      'xDS stream terminated',
    );
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, delay);
  }

  /** Exponential back-off with jitter in [d/2, d]; reset after a stream delivered a response. */
  private backoff(): number {
    const initial = this.opts.backoffInitialMs ?? BACKOFF_INITIAL_MS;
    const max = this.opts.backoffMaxMs ?? BACKOFF_MAX_MS;
    const exp = Math.min(max, initial * 2 ** Math.min(this.attempts - 1, 30));
    return Math.round(exp / 2 + (Math.random() * exp) / 2);
  }

  private async handle(stream: Stream, resp: DeltaDiscoveryResponse): Promise<void> {
    if (this.stream !== stream) return;
    if (!this.received) {
      this.received = true;
      // A working stream resets the back-off.
      this.attempts = 0;
    }
    const url = resp.typeUrl;
    let size = 0;
    for (const r of resp.resources) size += r.resource?.value.byteLength ?? 0;
    this.metrics?.messages.inc({ url });
    this.metrics?.bytes.inc({ url }, size);
    const sub = this.subs.get(url);
    let error: string | null = null;
    const added = new Map<string, Any>();
    if (!sub) {
      error = `unexpected type ${url}`;
    } else {
      for (const r of resp.resources) {
        const name = r.name || r.resourceName?.name || '';
        if (!r.resource) {
          error = `resource ${name} has no body`;
          break;
        }
        added.set(name, r.resource);
      }
      if (error === null) {
        try {
          await sub.apply(added, resp.removedResources);
        } catch (err) {
          error = err instanceof Error ? err.message : String(err);
        }
      }
    }
    if (this.stream !== stream) return;
    const counts = this.counts.get(url);
    if (error !== null) {
      if (counts) counts.nacks++;
      this.logger.warn(
        { code: 'MESH_ERR_XDS_NACK', typeUrl: url, nonce: resp.nonce, err: error },
        'rejecting xDS response (NACK)',
      );
      stream.write(
        DeltaDiscoveryRequest.fromPartial({
          typeUrl: url,
          responseNonce: resp.nonce,
          errorDetail: { code: RPC_INVALID_ARGUMENT, message: error, details: [] },
        }),
      );
      return;
    }
    const versions = this.versions.get(url)!;
    for (const r of resp.resources) versions.set(r.name || r.resourceName?.name || '', r.version);
    for (const n of resp.removedResources) versions.delete(n);
    if (counts) counts.acks++;
    stream.write(DeltaDiscoveryRequest.fromPartial({ typeUrl: url, responseNonce: resp.nonce }));
    if (!this.syncedTypes.has(url)) {
      this.syncedTypes.add(url);
      if (this.syncedTypes.size === this.subs.size) {
        this.logger.info({ address: this.opts.address }, 'xDS initial sync complete');
        this.resolveReady();
      }
    }
  }
}
