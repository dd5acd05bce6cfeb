/**
 * The cluster zone: Kubernetes DNS records (the kube-dns / CoreDNS `kubernetes` plugin schema) computed from
 * Services and their endpoints, answered authoritatively.
 *
 * - `<svc>.<ns>.svc.<zone>` A → ClusterIP; headless → the ready endpoint IPs.
 * - `<hostname>.<svc>.<ns>.svc.<zone>` A for headless endpoints (hostname, or the dashed IP when none).
 * - `_<port>._<proto>.<svc>.<ns>.svc.<zone>` SRV for named ports (→ the service, or each headless endpoint).
 * - ExternalName services: CNAME (never chased outside the zone: the lab has no upstream).
 * - `<a-b-c-d>.<ns>.pod.<zone>` A → a.b.c.d for any valid IPv4 ("pods insecure", CoreDNS's default).
 * - PTR for ClusterIPs and headless endpoints under in-addr.arpa.
 * - Unknown names in the zone → NXDOMAIN (names that exist with other types, and empty non-terminals such as
 *   `<ns>.svc.<zone>`, → NOERROR without answers), with the SOA in the authority section for negative caching.
 * - Everything else → REFUSED: this server does not recurse.
 */
import { type Question, RCODE, type RData, type ResourceRecord, TYPE } from './wire.ts';

/** TTL of every answer (CoreDNS kubernetes plugin default). */
export const RECORD_TTL = 5;

export interface DnsServicePort {
  readonly name: string;
  readonly port: number;
  readonly protocol: 'TCP' | 'UDP' | 'SCTP';
}

export interface DnsEndpoint {
  readonly ip: string;
  readonly hostname?: string;
  /** Not-ready endpoints are left out (default true). */
  readonly ready?: boolean;
}

export interface DnsService {
  readonly namespace: string;
  readonly name: string;
  /** ClusterIPs; empty (or ['None']) for a headless service. */
  readonly clusterIPs: readonly string[];
  readonly ports: readonly DnsServicePort[];
  /** Used for headless services (A and SRV records per endpoint). */
  readonly endpoints?: readonly DnsEndpoint[];
  /** type: ExternalName. */
  readonly externalName?: string;
}

export interface DnsRecordSet {
  readonly services: readonly DnsService[];
}

export interface ZoneAnswer {
  readonly rcode: number;
  readonly aa: boolean;
  readonly answers: ResourceRecord[];
  readonly authority: ResourceRecord[];
  readonly additional: ResourceRecord[];
}

interface Node {
  a: string[];
  aaaa: string[];
  srv: { priority: number; weight: number; port: number; target: string }[];
  cname: string | null;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** Bound on CNAME chains followed inside the zone. */
const MAX_CNAME_HOPS = 8;

function reverseName(ip: string): string {
  return `${ip.split('.').reverse().join('.')}.in-addr.arpa`;
}

export class ClusterZone {
  readonly domain: string;
  private readonly nsIp: string | null;
  private nodes = new Map<string, Node>();
  /** Every name that exists (owners and their ancestors inside the zone). */
  private existing = new Set<string>();
  private ptr = new Map<string, string>();
  private serial = 1;

  constructor(domain = 'cluster.local', nsIp: string | null = null) {
    this.domain = domain.toLowerCase().replace(/\.$/, '');
    this.nsIp = nsIp;
    this.setRecords({ services: [] });
  }

  /** Replaces the zone's content. */
  setRecords(set: DnsRecordSet): void {
    const nodes = new Map<string, Node>();
    const existing = new Set<string>();
    const ptr = new Map<string, string>();
    const node = (name: string): Node => {
      let n = nodes.get(name);
      if (!n) {
        n = { a: [], aaaa: [], srv: [], cname: null };
        nodes.set(name, n);
        for (let s = name; s.length >= this.domain.length; s = s.slice(s.indexOf('.') + 1)) {
          existing.add(s);
          if (s === this.domain || !s.includes('.')) break;
        }
      }
      return n;
    };
    node(this.domain);
    if (this.nsIp) node(`ns.dns.${this.domain}`).a.push(this.nsIp);
    for (const svc of set.services) {
      const ns = svc.namespace.toLowerCase();
      const name = svc.name.toLowerCase();
      if (!DNS_LABEL.test(ns) || !DNS_LABEL.test(name)) continue;
      const fqdn = `${name}.${ns}.svc.${this.domain}`;
      const n = node(fqdn);
      if (svc.externalName) {
        n.cname = svc.externalName.toLowerCase().replace(/\.$/, '');
        continue;
      }
      const vips = svc.clusterIPs.filter((ip) => ip !== 'None' && ip !== '');
      const headless = vips.length === 0;
      const ready = (svc.endpoints ?? []).filter((e) => e.ready !== false && IPV4.test(e.ip));
      if (!headless) {
        for (const ip of vips) {
          if (IPV4.test(ip)) n.a.push(ip);
          else if (ip.includes(':')) n.aaaa.push(ip);
          if (IPV4.test(ip)) ptr.set(reverseName(ip), fqdn);
        }
      } else {
        for (const e of ready) {
          n.a.push(e.ip);
          const host = e.hostname && DNS_LABEL.test(e.hostname) ? e.hostname : e.ip.replaceAll('.', '-');
          const epName = `${host}.${fqdn}`;
          node(epName).a.push(e.ip);
          if (e.hostname) ptr.set(reverseName(e.ip), epName);
        }
      }
      for (const p of svc.ports) {
        if (!p.name || !DNS_LABEL.test(p.name)) continue;
        const srvName = `_${p.name}._${p.protocol.toLowerCase()}.${fqdn}`;
        const s = node(srvName);
        if (!headless) s.srv.push({ priority: 0, weight: 100, port: p.port, target: fqdn });
        else {
          const w = ready.length ? Math.max(1, Math.floor(100 / ready.length)) : 100;
          for (const e of ready) {
            const host = e.hostname && DNS_LABEL.test(e.hostname) ? e.hostname : e.ip.replaceAll('.', '-');
            s.srv.push({ priority: 0, weight: w, port: p.port, target: `${host}.${fqdn}` });
          }
        }
      }
    }
    this.nodes = nodes;
    this.existing = existing;
    this.ptr = ptr;
    this.serial = (this.serial + 1) >>> 0;
  }

  private soa(): ResourceRecord {
    return {
      name: this.domain,
      type: TYPE.SOA,
      ttl: RECORD_TTL,
      data: {
        soa: {
          mname: `ns.dns.${this.domain}`,
          rname: `hostmaster.${this.domain}`,
          serial: this.serial,
          refresh: 7200,
          retry: 1800,
          expire: 86400,
          minimum: RECORD_TTL,
        },
      },
    };
  }

  /** Answers one question. */
  answer(q: Question): ZoneAnswer {
    const name = q.name.toLowerCase().replace(/\.$/, '');
    const inZone = name === this.domain || name.endsWith(`.${this.domain}`);
    if (!inZone) {
      if (name.endsWith('.in-addr.arpa') && (q.type === TYPE.PTR || q.type === TYPE.ANY)) {
        const target = this.ptr.get(name);
        if (target) return ok([rr(q.name, TYPE.PTR, { ptr: target })]);
        return { rcode: RCODE.NXDOMAIN, aa: true, answers: [], authority: [], additional: [] };
      }
      return { rcode: RCODE.REFUSED, aa: false, answers: [], authority: [], additional: [] };
    }
    const answers: ResourceRecord[] = [];
    let owner = q.name;
    let current = name;
    for (let hop = 0; hop <= MAX_CNAME_HOPS; hop++) {
      const n = this.nodes.get(current) ?? this.podNode(current);
      if (!n) {
        if (hop > 0 || this.existing.has(current)) break;
        return { rcode: RCODE.NXDOMAIN, aa: true, answers: [], authority: [this.soa()], additional: [] };
      }
      if (n.cname && q.type !== TYPE.CNAME) {
        answers.push(rr(owner, TYPE.CNAME, { cname: n.cname }));
        const target = n.cname;
        if (target !== this.domain && !target.endsWith(`.${this.domain}`)) break;
        owner = target;
        current = target;
        continue;
      }
      answers.push(...this.recordsOf(owner, n, q.type));
      break;
    }
    if (q.type === TYPE.SOA && current === this.domain) answers.push(this.soa());
    if (q.type === TYPE.NS && current === this.domain)
      answers.push(rr(q.name, TYPE.NS, { ns: `ns.dns.${this.domain}` }));
    const additional: ResourceRecord[] = [];
    for (const a of answers) {
      if (a.type !== TYPE.SRV || !('srv' in a.data)) continue;
      const t = this.nodes.get(a.data.srv.target);
      for (const ip of t?.a ?? []) additional.push(rr(a.data.srv.target, TYPE.A, { a: ip }));
    }
    return {
      rcode: RCODE.NOERROR,
      aa: true,
      answers,
      authority: answers.length === 0 ? [this.soa()] : [],
      additional,
    };
  }

  private recordsOf(owner: string, n: Node, type: number): ResourceRecord[] {
    const out: ResourceRecord[] = [];
    const any = type === TYPE.ANY;
    if (type === TYPE.A || any) for (const ip of n.a) out.push(rr(owner, TYPE.A, { a: ip }));
    if (type === TYPE.AAAA || any) for (const ip of n.aaaa) out.push(rr(owner, TYPE.AAAA, { aaaa: ip }));
    if (type === TYPE.SRV || any) for (const s of n.srv) out.push(rr(owner, TYPE.SRV, { srv: s }));
    if (type === TYPE.CNAME && n.cname) out.push(rr(owner, TYPE.CNAME, { cname: n.cname }));
    return out;
  }

  /** `<a-b-c-d>.<ns>.pod.<zone>` → a node with that A record. */
  private podNode(name: string): Node | null {
    const suffix = `.pod.${this.domain}`;
    if (!name.endsWith(suffix)) return null;
    const parts = name.slice(0, -suffix.length).split('.');
    if (parts.length !== 2 || !DNS_LABEL.test(parts[1] ?? '')) return null;
    const ip = (parts[0] ?? '').replaceAll('-', '.');
    if (!IPV4.test(ip)) return null;
    return { a: [ip], aaaa: [], srv: [], cname: null };
  }
}

function rr(name: string, type: number, data: RData): ResourceRecord {
  return { name, type, ttl: RECORD_TTL, data };
}

function ok(answers: ResourceRecord[]): ZoneAnswer {
  return { rcode: RCODE.NOERROR, aa: true, answers, authority: [], additional: [] };
}
