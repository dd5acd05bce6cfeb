/**
 * One HBONE CONNECT stream accepted by the waypoint: who sent it (the HBONE peer is the source workload's
 * ztunnel presenting the source workload's identity), where the client was going (the CONNECT authority: a
 * service VIP:port or a pod IP:port), what the client is (baggage, forwarded), and which protocol runs
 * inside. HTTP requests on the stream find it through the socket (HTTP/1.1) or the session (h2c).
 */
import type { Duplex } from 'node:stream';
import { type Baggage, forwardedClient, parseBaggage } from '../../pkg/hbone/index.ts';
import type { Identity } from '../../pkg/identity/index.ts';
import { formatSpiffeId, principalOf } from '../../pkg/identity/index.ts';
import type { SourcePeer } from './metrics.ts';
import type { Protocol } from './protocol.ts';

let nextId = 1;

export class DownstreamConn {
  readonly id: number;
  /** The CONNECT authority: the address and port the client dialled. */
  readonly destIp: string;
  readonly port: number;
  /** The HBONE peer identity (source workload). */
  readonly peer: Identity;
  /** `spiffe://…`, for metrics and logs. */
  readonly peerId: string;
  /** Without the scheme, for authorization. */
  readonly principal: string;
  /** Original client address from `forwarded` (else the HBONE peer's address). */
  readonly sourceIp: string;
  readonly sourcePort: number | null;
  readonly baggage: Baggage;
  readonly baggageHeader: string | null;
  readonly forwarded: string | null;
  readonly traceparent: string | null;
  /** The port's declared protocol ("" = detect). */
  readonly declared: string;
  readonly tunnel: Duplex;
  readonly started: number;
  readonly source: SourcePeer;
  protocol: Protocol | null = null;
  requests = 0;

  constructor(
    tunnel: Duplex,
    destIp: string,
    port: number,
    peer: Identity,
    hbonePeerIp: string,
    baggage: string | null,
    forwarded: string | null,
    traceparent: string | null,
    declared: string,
  ) {
    this.id = nextId++;
    this.tunnel = tunnel;
    this.destIp = destIp;
    this.port = port;
    this.peer = peer;
    this.peerId = formatSpiffeId(peer);
    this.principal = principalOf(peer);
    const fwd = forwarded !== null ? forwardedClient(forwarded) : null;
    this.sourceIp = fwd?.ip ?? hbonePeerIp;
    this.sourcePort = fwd?.port ?? null;
    this.baggageHeader = baggage;
    this.baggage = parseBaggage(baggage ?? undefined);
    this.forwarded = forwarded;
    this.traceparent = traceparent;
    this.declared = declared;
    this.started = performance.now();
    this.source = { principal: this.peerId, baggage: this.baggage };
  }

  /** `ip:port` of the original client for logs. */
  get sourceAddr(): string {
    const ip = this.sourceIp.includes(':') ? `[${this.sourceIp}]` : this.sourceIp;
    return this.sourcePort === null ? ip : `${ip}:${this.sourcePort}`;
  }
}
