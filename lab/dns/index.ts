/**
 * lab/dns: the lab's cluster DNS (Kubernetes DNS schema, authoritative only, UDP + TCP), as a library
 * (DnsServer, ClusterZone, wire codec) and as a process in a lab netns (ClusterDns).
 */
export { ClusterDns, type ClusterDnsOptions } from './cluster-dns.ts';
export { DnsServer, type DnsServerOptions, type DnsServerStats } from './server.ts';
export {
  encodeQuery,
  type ParsedResponse,
  parseQuery,
  parseResponse,
  RCODE,
  TYPE,
} from './wire.ts';
export {
  ClusterZone,
  type DnsEndpoint,
  type DnsRecordSet,
  type DnsService,
  type DnsServicePort,
  RECORD_TTL,
} from './zone.ts';
