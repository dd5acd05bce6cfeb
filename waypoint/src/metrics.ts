/**
 * Istio's standard metrics as a waypoint reports them (reporter="waypoint"): the HTTP/gRPC request metrics
 * (`istio_requests_total`, `istio_request_duration_milliseconds`, `istio_request_bytes`,
 * `istio_response_bytes`) and, for streams proxied as opaque TCP, the `istio_tcp_*` family. Label names and
 * bucket boundaries are Istio's (istio.io "Istio Standard Metrics"); missing values are "unknown".
 */
import type { Baggage } from '../../pkg/hbone/index.ts';
import { Counter, Histogram, type Registry } from '../../pkg/metrics/index.ts';

/** Labels shared by every Istio standard metric (request_protocol decides http|grpc|tcp). */
export const PEER_LABELS = [
  'reporter',
  'source_workload',
  'source_canonical_service',
  'source_canonical_revision',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_version',
  'source_cluster',
  'destination_service',
  'destination_service_namespace',
  'destination_service_name',
  'destination_workload',
  'destination_canonical_service',
  'destination_canonical_revision',
  'destination_workload_namespace',
  'destination_principal',
  'destination_app',
  'destination_version',
  'destination_cluster',
  'request_protocol',
  'response_flags',
  'connection_security_policy',
] as const;

export const HTTP_LABELS = [...PEER_LABELS, 'response_code', 'grpc_response_status'] as const;

export type PeerLabels = Record<(typeof PEER_LABELS)[number], string>;
export type HttpLabels = Record<(typeof HTTP_LABELS)[number], string>;

/** Istio's request-duration buckets (milliseconds). */
export const DURATION_BUCKETS_MS = [
  0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000,
  3600000,
];
/** Istio's request/response size buckets (bytes): powers of ten from 1 to 10^8. */
export const SIZE_BUCKETS = [1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000];

export const UNKNOWN = 'unknown';
const v = (s: string | null | undefined): string => (s ? s : UNKNOWN);

/** Who called: the HBONE peer identity (the source workload's, presented by its ztunnel) and its baggage. */
export interface SourcePeer {
  /** `spiffe://…` of the HBONE client. */
  readonly principal: string;
  readonly baggage: Baggage;
}

/** The upstream endpoint a request went to (null fields: not chosen, e.g. denied or no route). */
export interface DestinationPeer {
  readonly workloadName: string;
  readonly workloadNamespace: string;
  readonly canonicalService: string;
  readonly canonicalRevision: string;
  /** `spiffe://…` the endpoint presents. */
  readonly principal: string;
  readonly cluster: string;
}

export interface DestinationServiceRef {
  readonly hostname: string;
  readonly namespace: string;
  readonly name: string;
}

/**
 * The peer part of the labels; computed once per downstream connection/request and then completed with
 * the response fields. `response_flags` "-" means none, like Envoy.
 */
export function peerLabels(
  src: SourcePeer,
  dst: DestinationPeer | null,
  service: DestinationServiceRef | null,
  protocol: 'http' | 'grpc' | 'tcp',
  responseFlags: string,
): PeerLabels {
  const b = src.baggage;
  return {
    reporter: 'waypoint',
    source_workload: v(b.workloadName),
    source_canonical_service: v(b.serviceName ?? b.workloadName),
    source_canonical_revision: v(b.revision ?? (b.workloadName ? 'latest' : null)),
    source_workload_namespace: v(b.namespace),
    source_principal: v(src.principal),
    source_app: v(b.serviceName ?? b.workloadName),
    source_version: v(b.revision),
    source_cluster: v(b.clusterId),
    destination_service: v(service?.hostname),
    destination_service_namespace: v(service?.namespace),
    destination_service_name: v(service?.name),
    destination_workload: v(dst?.workloadName),
    destination_canonical_service: v(dst?.canonicalService),
    destination_canonical_revision: v(dst?.canonicalRevision),
    destination_workload_namespace: v(dst?.workloadNamespace),
    destination_principal: v(dst?.principal),
    destination_app: v(dst?.canonicalService),
    destination_version: v(dst?.canonicalRevision),
    destination_cluster: v(dst?.cluster),
    request_protocol: protocol,
    response_flags: responseFlags || '-',
    // Everything reaching a waypoint arrived over HBONE mTLS.
    connection_security_policy: 'mutual_tls',
  };
}

export function httpLabels(peer: PeerLabels, responseCode: number, grpcStatus: string | null): HttpLabels {
  return {
    ...peer,
    response_code: String(responseCode),
    grpc_response_status: grpcStatus ?? '',
  };
}

/** Label sets whose series are cached for the per-request path (a waypoint sees far fewer in practice). */
const MAX_CACHED_LABEL_SETS = 4096;

interface HttpChildren {
  readonly requests: { inc(value?: number): void };
  readonly duration: { observe(value: number): void };
  readonly requestBytes: { observe(value: number): void };
  readonly responseBytes: { observe(value: number): void };
}

export class WaypointMetrics {
  private readonly children = new Map<string, HttpChildren>();
  readonly requests: Counter<(typeof HTTP_LABELS)[number]>;
  readonly duration: Histogram<(typeof HTTP_LABELS)[number]>;
  readonly requestBytes: Histogram<(typeof HTTP_LABELS)[number]>;
  readonly responseBytes: Histogram<(typeof HTTP_LABELS)[number]>;
  readonly tcpOpened: Counter<(typeof PEER_LABELS)[number]>;
  readonly tcpClosed: Counter<(typeof PEER_LABELS)[number]>;
  readonly tcpSent: Counter<(typeof PEER_LABELS)[number]>;
  readonly tcpReceived: Counter<(typeof PEER_LABELS)[number]>;
  readonly tcpFailed: Counter<(typeof PEER_LABELS)[number]>;
  /** Local rejections before any request could be read (malformed HTTP, oversize headers, …), by reason. */
  readonly downstreamErrors: Counter<'reason'>;

  constructor(registry: Registry) {
    const http = [...HTTP_LABELS];
    const tcp = [...PEER_LABELS];
    const registers = [registry];
    this.requests = new Counter({
      name: 'istio_requests_total',
      help: 'Total number of requests',
      labelNames: http,
      registers,
    });
    this.duration = new Histogram({
      name: 'istio_request_duration_milliseconds',
      help: 'Duration of requests in milliseconds',
      labelNames: http,
      buckets: DURATION_BUCKETS_MS,
      registers,
    });
    this.requestBytes = new Histogram({
      name: 'istio_request_bytes',
      help: 'Size of HTTP requests in bytes',
      labelNames: http,
      buckets: SIZE_BUCKETS,
      registers,
    });
    this.responseBytes = new Histogram({
      name: 'istio_response_bytes',
      help: 'Size of HTTP responses in bytes',
      labelNames: http,
      buckets: SIZE_BUCKETS,
      registers,
    });
    const c = (name: string, help: string) => new Counter({ name, help, labelNames: tcp, registers });
    this.tcpOpened = c('istio_tcp_connections_opened_total', 'The total number of TCP connections opened');
    this.tcpClosed = c('istio_tcp_connections_closed_total', 'The total number of TCP connections closed');
    this.tcpSent = c(
      'istio_tcp_sent_bytes_total',
      'The size of total bytes sent during response in case of a TCP connection',
    );
    this.tcpReceived = c(
      'istio_tcp_received_bytes_total',
      'The size of total bytes received during request in case of a TCP connection',
    );
    this.tcpFailed = c(
      'istio_tcp_connections_failed_total',
      'The total number of TCP connections that failed',
    );
    this.downstreamErrors = new Counter({
      name: 'istio_waypoint_downstream_errors_total',
      help: 'Streams or requests rejected before routing (malformed HTTP, oversize headers, protocol errors)',
      labelNames: ['reason'],
      registers,
    });
  }

  /** One finished request: count, duration, sizes. */
  request(labels: HttpLabels, durationMs: number, requestBytes: number, responseBytes: number): void {
    const c = this.httpChildren(labels);
    c.requests.inc();
    c.duration.observe(durationMs);
    c.requestBytes.observe(requestBytes);
    c.responseBytes.observe(responseBytes);
  }

  /**
   * The four series of one label set, looked up by a plain join of the values instead of prom-client
   * validating, sorting and hashing the 27-label object on each of the four updates (bench/l7/profile.ts:
   * +4% requests/s at saturation, no change at 500 req/s). The map is only a lookup in front of prom-client's
   * own children, so clearing it when it grows past its cap loses nothing.
   */
  private httpChildren(labels: HttpLabels): HttpChildren {
    let key = '';
    for (const name of HTTP_LABELS) key += `${labels[name]}\u0001`;
    let c = this.children.get(key);
    if (c === undefined) {
      if (this.children.size >= MAX_CACHED_LABEL_SETS) this.children.clear();
      c = {
        requests: this.requests.labels(labels),
        duration: this.duration.labels(labels),
        requestBytes: this.requestBytes.labels(labels),
        responseBytes: this.responseBytes.labels(labels),
      };
      this.children.set(key, c);
    }
    return c;
  }

  tcpOpen(labels: PeerLabels): void {
    this.tcpOpened.inc(labels);
  }

  /** received = bytes from the client (request direction), sent = toward the client. */
  tcpClose(labels: PeerLabels, received: number, sent: number, failed: boolean): void {
    this.tcpClosed.inc(labels);
    if (received > 0) this.tcpReceived.inc(labels, received);
    if (sent > 0) this.tcpSent.inc(labels, sent);
    if (failed) this.tcpFailed.inc(labels);
  }
}
