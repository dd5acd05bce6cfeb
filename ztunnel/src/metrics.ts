/**
 * Istio's TCP metrics with their full label set, as ztunnel reports them (reporter="source" on the client
 * side, "destination" on the server side). Missing values are "unknown", like Istio.
 */
import type { HboneServerStats } from '../../pkg/hbone/index.ts';
import { Counter, Gauge, type Registry } from '../../pkg/metrics/index.ts';
import type { WorkloadInfo } from '../../pkg/state/index.ts';

export const TCP_LABELS = [
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

export type TcpLabels = Record<(typeof TCP_LABELS)[number], string>;

const UNKNOWN = 'unknown';
const v = (s: string | null | undefined) => (s ? s : UNKNOWN);

export interface Peer {
  readonly workload: WorkloadInfo | null;
  /** The principal proven by mTLS (destination side) or expected (source side), `spiffe://…`. */
  readonly principal: string | null;
}

export interface ServiceRef {
  readonly hostname: string;
  readonly namespace: string;
  readonly name: string;
}

export function tcpLabels(
  reporter: 'source' | 'destination',
  src: Peer,
  dst: Peer,
  service: ServiceRef | null,
  mtls: boolean,
  responseFlags = '-',
): TcpLabels {
  const s = src.workload;
  const d = dst.workload;
  return {
    reporter,
    source_workload: v(s?.workloadName || s?.name),
    source_canonical_service: v(s?.canonicalName),
    source_canonical_revision: v(s?.canonicalRevision),
    source_workload_namespace: v(s?.namespace),
    source_principal: v(src.principal),
    source_app: v(s?.canonicalName),
    source_version: v(s?.canonicalRevision),
    source_cluster: v(s?.clusterId),
    destination_service: v(service?.hostname),
    destination_service_namespace: v(service?.namespace),
    destination_service_name: v(service?.name),
    destination_workload: v(d?.workloadName || d?.name),
    destination_canonical_service: v(d?.canonicalName),
    destination_canonical_revision: v(d?.canonicalRevision),
    destination_workload_namespace: v(d?.namespace),
    destination_principal: v(dst.principal),
    destination_app: v(d?.canonicalName),
    destination_version: v(d?.canonicalRevision),
    destination_cluster: v(d?.clusterId),
    request_protocol: 'tcp',
    response_flags: responseFlags,
    connection_security_policy: mtls ? 'mutual_tls' : UNKNOWN,
  };
}

export class TcpMetrics {
  readonly opened: Counter<(typeof TCP_LABELS)[number]>;
  readonly closed: Counter<(typeof TCP_LABELS)[number]>;
  readonly sent: Counter<(typeof TCP_LABELS)[number]>;
  readonly received: Counter<(typeof TCP_LABELS)[number]>;
  readonly failed: Counter<(typeof TCP_LABELS)[number]>;

  constructor(registry: Registry) {
    const labelNames = [...TCP_LABELS];
    const c = (name: string, help: string) => new Counter({ name, help, labelNames, registers: [registry] });
    this.opened = c('istio_tcp_connections_opened_total', 'The total number of TCP connections opened');
    this.closed = c('istio_tcp_connections_closed_total', 'The total number of TCP connections closed');
    this.sent = c(
      'istio_tcp_sent_bytes_total',
      'The size of total bytes sent during response in case of a TCP connection',
    );
    this.received = c(
      'istio_tcp_received_bytes_total',
      'The size of total bytes received during request in case of a TCP connection',
    );
    this.failed = c('istio_tcp_connections_failed_total', 'The total number of TCP connections that failed');
  }

  open(labels: TcpLabels): void {
    this.opened.inc(labels);
  }

  /** sent = bytes toward the client (response direction), received = from the client (request direction). */
  close(labels: TcpLabels, bytesFromClient: number, bytesToClient: number, failed: boolean): void {
    this.closed.inc(labels);
    if (bytesFromClient > 0) this.received.inc(labels, bytesFromClient);
    if (bytesToClient > 0) this.sent.inc(labels, bytesToClient);
    if (failed) this.failed.inc(labels);
  }
}

/** The HBONE server counters summed over every pod proxy this process has run (live and closed). */
export interface HboneTotals {
  hboneTotals(): HboneServerStats;
}

/** Adds `from`'s counters into `into` (gauges too: a closed server's are 0). */
export function addHboneStats(into: HboneServerStats, from: HboneServerStats): void {
  into.connectionsAccepted += from.connectionsAccepted;
  into.tlsHandshakes += from.tlsHandshakes;
  into.tlsFailures += from.tlsFailures;
  into.handshakeTimeouts += from.handshakeTimeouts;
  into.certificateFailures += from.certificateFailures;
  into.peersRejected += from.peersRejected;
  into.sessionsOpened += from.sessionsOpened;
  into.sessionsActive += from.sessionsActive;
  into.sessionErrors += from.sessionErrors;
  into.pingTimeouts += from.pingTimeouts;
  into.idleClosed += from.idleClosed;
  into.streamsOpened += from.streamsOpened;
  into.streamsActive += from.streamsActive;
  into.streamErrors += from.streamErrors;
  into.accepted += from.accepted;
  for (const k of ['400', '401', '503', 'other'] as const) into.rejected[k] += from.rejected[k];
}

/**
 * Inbound HBONE (:15008) health, read from the pods' server counters at scrape time: what was refused before
 * a tunnel existed (TLS failures, handshake timeouts — slowloris —, peers outside the trust domain, no
 * certificate), and how CONNECT streams were answered. Not Istio metrics (ztunnel logs these cases); the
 * names follow Istio's prefix.
 */
export function registerHboneMetrics(registry: Registry, source: HboneTotals): void {
  new Counter({
    name: 'istio_ztunnel_hbone_inbound_connections_total',
    help: 'TCP connections accepted on the pods’ HBONE port (15008).',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(source.hboneTotals().connectionsAccepted);
    },
  });
  new Counter({
    name: 'istio_ztunnel_hbone_inbound_refused_total',
    help:
      'HBONE connections closed before any tunnel, by reason: tls (handshake failed: garbage, no or untrusted ' +
      'client certificate, wrong ALPN), handshake_timeout (handshake not finished in time), peer (no SPIFFE ' +
      'identity in our trust domain), no_certificate (none for the local workload yet).',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      const t = source.hboneTotals();
      this.reset();
      this.inc({ reason: 'tls' }, t.tlsFailures - t.handshakeTimeouts);
      this.inc({ reason: 'handshake_timeout' }, t.handshakeTimeouts);
      this.inc({ reason: 'peer' }, t.peersRejected);
      this.inc({ reason: 'no_certificate' }, t.certificateFailures);
    },
  });
  new Counter({
    name: 'istio_ztunnel_hbone_inbound_streams_total',
    help: 'HBONE CONNECT streams on the pods’ port 15008, by the status answered.',
    labelNames: ['status'],
    registers: [registry],
    collect() {
      const t = source.hboneTotals();
      this.reset();
      this.inc({ status: '200' }, t.accepted);
      this.inc({ status: '400' }, t.rejected[400]);
      this.inc({ status: '401' }, t.rejected[401]);
      this.inc({ status: '503' }, t.rejected[503]);
      this.inc({ status: 'other' }, t.rejected.other);
    },
  });
  new Gauge({
    name: 'istio_ztunnel_hbone_inbound_sessions',
    help: 'Open inbound HBONE (HTTP/2) connections.',
    registers: [registry],
    collect() {
      this.set(source.hboneTotals().sessionsActive);
    },
  });
}
