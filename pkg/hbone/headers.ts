/**
 * The three request headers an HBONE client adds to each CONNECT (ztunnel `proxy/outbound.rs`), and their
 * parsers for the server side:
 * - `baggage`: the source's peer metadata with ztunnel's keys (`baggage.rs`), W3C Baggage syntax;
 * - `forwarded`: `for="<ip:port>"` with the original client address (RFC 7239);
 * - `traceparent`: W3C Trace Context, a fresh random trace id per connection when none is propagated.
 */
import { randomFillSync } from 'node:crypto';
import { formatAuthority } from './authority.ts';

// ---------- baggage ----------

/** Source workload metadata carried in `baggage`; null = unknown (the key is omitted). */
export interface Baggage {
  readonly clusterId: string | null;
  readonly namespace: string | null;
  readonly workloadName: string | null;
  readonly serviceName: string | null;
  readonly revision: string | null;
  readonly region: string | null;
  readonly zone: string | null;
}

export const EMPTY_BAGGAGE: Baggage = Object.freeze({
  clusterId: null,
  namespace: null,
  workloadName: null,
  serviceName: null,
  revision: null,
  region: null,
  zone: null,
});

/** Workload kinds whose name ztunnel writes as `k8s.<kind>.name` and reads back as the workload name. */
export const BAGGAGE_WORKLOAD_KINDS = ['deployment', 'cronjob', 'pod', 'job'] as const;
export type WorkloadKind = (typeof BAGGAGE_WORKLOAD_KINDS)[number];

/** W3C baggage-octet: printable ASCII except space, `"`, `,`, `;`, `\`; anything else is percent-encoded. */
function baggageValue(v: string): string {
  let plain = true;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f || c === 0x22 || c === 0x2c || c === 0x3b || c === 0x5c || c === 0x25) {
      plain = false;
      break;
    }
  }
  return plain ? v : encodeURIComponent(v);
}

/** `k8s.cluster.name=…,k8s.namespace.name=…,k8s.<kind>.name=…,service.name=…,service.version=…`. */
export function formatBaggage(b: Partial<Baggage>, kind: WorkloadKind = 'deployment'): string {
  let out = '';
  const add = (key: string, v: string | null | undefined): void => {
    if (v === null || v === undefined || v.length === 0) return;
    out += `${out.length === 0 ? '' : ','}${key}=${baggageValue(v)}`;
  };
  add('k8s.cluster.name', b.clusterId);
  add('k8s.namespace.name', b.namespace);
  add(`k8s.${kind}.name`, b.workloadName);
  add('service.name', b.serviceName);
  add('service.version', b.revision);
  add('cloud.region', b.region);
  add('cloud.availability_zone', b.zone);
  return out;
}

function decodeValue(v: string): string | null {
  if (v.length === 0) return null;
  if (!v.includes('%')) return v;
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
}

/**
 * Parses one or more `baggage` header values; unknown keys and malformed members are ignored, empty values
 * read as unknown (as ztunnel does). Member properties after `;` are dropped.
 */
export function parseBaggage(header: string | readonly string[] | undefined): Baggage {
  if (header === undefined) return EMPTY_BAGGAGE;
  const out = {
    clusterId: null as string | null,
    namespace: null as string | null,
    workloadName: null as string | null,
    serviceName: null as string | null,
    revision: null as string | null,
    region: null as string | null,
    zone: null as string | null,
  };
  const values = typeof header === 'string' ? [header] : header;
  for (const value of values) {
    for (const member of value.split(',')) {
      const eq = member.indexOf('=');
      if (eq === -1) continue;
      const key = member.slice(0, eq).trim();
      let raw = member.slice(eq + 1);
      const semi = raw.indexOf(';');
      if (semi !== -1) raw = raw.slice(0, semi);
      const v = decodeValue(raw.trim());
      switch (key) {
        case 'k8s.cluster.name':
          out.clusterId = v;
          break;
        case 'k8s.namespace.name':
          out.namespace = v;
          break;
        case 'k8s.deployment.name':
        case 'k8s.cronjob.name':
        case 'k8s.pod.name':
        case 'k8s.job.name':
          out.workloadName = v;
          break;
        case 'service.name':
          out.serviceName = v;
          break;
        case 'service.version':
          out.revision = v;
          break;
        case 'cloud.region':
          out.region = v;
          break;
        case 'cloud.availability_zone':
          out.zone = v;
          break;
      }
    }
  }
  return out;
}

// ---------- forwarded ----------

/** `for="1.2.3.4:5678"` / `for="[::1]:5678"` (port null: `for=1.2.3.4` / `for="[::1]"`), RFC 7239 §6. */
export function formatForwardedFor(ip: string, port: number | null = null): string {
  if (port === null) return ip.includes(':') ? `for="[${ip}]"` : `for=${ip}`;
  return `for="${formatAuthority(ip, port)}"`;
}

/** One `Forwarded` element's parameters (RFC 7239 §4); null when absent. */
export interface ForwardedElement {
  readonly for: string | null;
  readonly by: string | null;
  readonly host: string | null;
  readonly proto: string | null;
}

const TOKEN_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * Splits on `sep` outside quoted strings. RFC 7239 values are tokens or quoted strings, and a quoted IPv6
 * `for` contains `:` but never an unquoted `,` or `;`, so this is enough to parse it strictly.
 */
function splitOutsideQuotes(s: string, sep: number): string[] | null {
  const out: string[] = [];
  let start = 0;
  let quoted = false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (quoted) {
      if (c === 0x5c /* \ */) i++;
      else if (c === 0x22) quoted = false;
    } else if (c === 0x22) quoted = true;
    else if (c === sep) {
      out.push(s.slice(start, i));
      start = i + 1;
    }
  }
  if (quoted) return null;
  out.push(s.slice(start));
  return out;
}

function unquote(v: string): string | null {
  if (v.length === 0) return null;
  if (v.charCodeAt(0) !== 0x22) return TOKEN_RE.test(v) ? v : null;
  if (v.length < 2 || v.charCodeAt(v.length - 1) !== 0x22) return null;
  return v.slice(1, -1).replace(/\\(.)/g, '$1');
}

/** Parses a `Forwarded` header into its elements; null when it is malformed. */
export function parseForwarded(header: string): ForwardedElement[] | null {
  const elements = splitOutsideQuotes(header, 0x2c);
  if (elements === null) return null;
  const out: ForwardedElement[] = [];
  for (const element of elements) {
    const pairs = splitOutsideQuotes(element, 0x3b);
    if (pairs === null) return null;
    const e = {
      for: null as string | null,
      by: null as string | null,
      host: null as string | null,
      proto: null as string | null,
    };
    for (const pair of pairs) {
      const p = pair.trim();
      if (p.length === 0) continue;
      const eq = p.indexOf('=');
      if (eq <= 0) return null;
      const key = p.slice(0, eq).toLowerCase();
      const value = unquote(p.slice(eq + 1));
      if (value === null) return null;
      if (key === 'for' || key === 'by' || key === 'host' || key === 'proto') e[key] = value;
    }
    out.push(e);
  }
  return out;
}

/**
 * The address in the first element's `for` (`1.2.3.4`, `1.2.3.4:80`, `[::1]`, `[::1]:80`); port is null
 * when absent or obfuscated; null when there is no usable address.
 */
export function forwardedClient(header: string | undefined): { ip: string; port: number | null } | null {
  if (header === undefined) return null;
  const first = parseForwarded(header)?.[0]?.for;
  if (first === null || first === undefined) return null;
  if (first.startsWith('[')) {
    const close = first.indexOf(']');
    if (close === -1) return null;
    const ip = first.slice(1, close);
    const rest = first.slice(close + 1);
    const port = rest.startsWith(':') ? Number(rest.slice(1)) : Number.NaN;
    return { ip, port: Number.isInteger(port) && port > 0 && port <= 65_535 ? port : null };
  }
  const colon = first.indexOf(':');
  if (colon === -1) return { ip: first, port: null };
  const port = Number(first.slice(colon + 1));
  return {
    ip: first.slice(0, colon),
    port: Number.isInteger(port) && port > 0 && port <= 65_535 ? port : null,
  };
}

// ---------- traceparent ----------

export interface TraceParent {
  readonly version: number;
  /** 32 lowercase hex digits, not all zero. */
  readonly traceId: string;
  /** 16 lowercase hex digits, not all zero. */
  readonly parentId: string;
  readonly flags: number;
}

const TRACEPARENT_RE = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const ZERO_TRACE = '0'.repeat(32);
const ZERO_PARENT = '0'.repeat(16);
/** Bytes of randomness for one traceparent: a 16-byte trace id and an 8-byte parent id. */
const TRACE_RANDOM_BYTES = 24;

/** A fresh W3C traceparent, version 00, unsampled (ztunnel's `TraceParent::new`). */
/** Random bytes drawn in blocks: one `randomFillSync` per 170 traceparents instead of one per stream. */
const RANDOM_POOL = Buffer.alloc(TRACE_RANDOM_BYTES * 170);
let randomAt = RANDOM_POOL.length;

export function newTraceparent(): string {
  if (randomAt + TRACE_RANDOM_BYTES > RANDOM_POOL.length) {
    randomFillSync(RANDOM_POOL);
    randomAt = 0;
  }
  const hex = RANDOM_POOL.toString('hex', randomAt, randomAt + TRACE_RANDOM_BYTES);
  randomAt += TRACE_RANDOM_BYTES;
  let traceId = hex.slice(0, 32);
  let parentId = hex.slice(32);
  // All-zero ids are invalid; the odds are 2^-128, but a parser downstream would reject the header.
  if (traceId === ZERO_TRACE) traceId = `${ZERO_TRACE.slice(1)}1`;
  if (parentId === ZERO_PARENT) parentId = `${ZERO_PARENT.slice(1)}1`;
  return `00-${traceId}-${parentId}-00`;
}

export function formatTraceparent(t: TraceParent): string {
  return `${t.version.toString(16).padStart(2, '0')}-${t.traceId}-${t.parentId}-${t.flags.toString(16).padStart(2, '0')}`;
}

/** Strict W3C parse: version `ff` and all-zero ids are invalid; version 00 allows nothing after the flags. */
export function parseTraceparent(header: string | undefined): TraceParent | null {
  if (header === undefined) return null;
  const m = TRACEPARENT_RE.exec(header.trim());
  if (m === null) return null;
  const [, ver, traceId, parentId, flags, rest] = m as unknown as [
    string,
    string,
    string,
    string,
    string,
    string?,
  ];
  if (ver === 'ff' || traceId === ZERO_TRACE || parentId === ZERO_PARENT) return null;
  if (ver === '00' && rest !== undefined) return null;
  return { version: Number.parseInt(ver, 16), traceId, parentId, flags: Number.parseInt(flags, 16) };
}
