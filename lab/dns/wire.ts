/**
 * DNS wire format (RFC 1035, EDNS0 from RFC 6891), just what an authoritative-only server needs: parse a
 * query defensively (every length checked, compression pointers only backwards and bounded, names ≤ 255
 * octets, labels ≤ 63), and build a response with name compression and truncation to the client's UDP size.
 */

export const TYPE = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  OPT: 41,
  ANY: 255,
} as const;
export const CLASS_IN = 1;
export const CLASS_ANY = 255;

export const RCODE = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
} as const;

export const OPCODE_QUERY = 0;
const HEADER_LEN = 12;
const MAX_NAME = 255;
const MAX_LABEL = 63;
/** Bound on compression-pointer hops while reading one name. */
const MAX_POINTERS = 32;
/** Without EDNS a UDP response must fit 512 octets (RFC 1035 §4.2.1). */
export const CLASSIC_UDP_SIZE = 512;
/** What we advertise and cap EDNS responses at (the DNS flag day 2020 recommendation). */
export const EDNS_UDP_SIZE = 1232;

export class DnsFormatError extends Error {
  override readonly name = 'DnsFormatError';
}

export interface Question {
  /** As received (case kept), without the trailing dot; '' for the root. */
  readonly name: string;
  readonly type: number;
  readonly class: number;
}

export interface Header {
  readonly id: number;
  readonly qr: boolean;
  readonly opcode: number;
  readonly rd: boolean;
  readonly qdcount: number;
  readonly ancount: number;
  readonly nscount: number;
  readonly arcount: number;
}

export interface Query {
  readonly header: Header;
  readonly questions: readonly Question[];
  /** EDNS OPT record of the query, when present. */
  readonly edns: { readonly udpSize: number; readonly version: number } | null;
}

export function parseHeader(buf: Uint8Array): Header | null {
  if (buf.length < HEADER_LEN) return null;
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const flags = v.getUint16(2);
  return {
    id: v.getUint16(0),
    qr: (flags & 0x8000) !== 0,
    opcode: (flags >> 11) & 0xf,
    rd: (flags & 0x0100) !== 0,
    qdcount: v.getUint16(4),
    ancount: v.getUint16(6),
    nscount: v.getUint16(8),
    arcount: v.getUint16(10),
  };
}

/** Reads a (possibly compressed) name at `offset`; returns it and the offset after it. */
export function readName(buf: Uint8Array, offset: number): [name: string, next: number] {
  const labels: string[] = [];
  let pos = offset;
  let next = -1;
  let hops = 0;
  let total = 0;
  for (;;) {
    if (pos >= buf.length) throw new DnsFormatError('name runs past the message');
    const len = buf[pos] ?? 0;
    if ((len & 0xc0) === 0xc0) {
      if (pos + 1 >= buf.length) throw new DnsFormatError('truncated compression pointer');
      const target = ((len & 0x3f) << 8) | (buf[pos + 1] ?? 0);
      if (target >= pos) throw new DnsFormatError('compression pointer does not point backwards');
      if (++hops > MAX_POINTERS) throw new DnsFormatError('too many compression pointers');
      if (next < 0) next = pos + 2;
      pos = target;
      continue;
    }
    if ((len & 0xc0) !== 0) throw new DnsFormatError('unsupported label type');
    if (len === 0) {
      if (next < 0) next = pos + 1;
      break;
    }
    if (len > MAX_LABEL) throw new DnsFormatError('label longer than 63 octets');
    if (pos + 1 + len > buf.length) throw new DnsFormatError('label runs past the message');
    total += len + 1;
    if (total > MAX_NAME) throw new DnsFormatError('name longer than 255 octets');
    let label = '';
    for (let i = pos + 1; i <= pos + len; i++) {
      const c = buf[i] ?? 0;
      // Keep printable ASCII except the separator; escape anything else so names never alias.
      label +=
        c > 0x20 && c < 0x7f && c !== 0x2e && c !== 0x5c
          ? String.fromCharCode(c)
          : `\\${c.toString().padStart(3, '0')}`;
    }
    labels.push(label);
    pos += 1 + len;
  }
  return [labels.join('.'), next];
}

/** Skips a resource record at `offset`; returns [type, class, ttl, rdata offset, rdlength, next]. */
function readRecordHeader(buf: Uint8Array, offset: number): [number, number, number, number, number, number] {
  const [, p] = readName(buf, offset);
  if (p + 10 > buf.length) throw new DnsFormatError('record header runs past the message');
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const type = v.getUint16(p);
  const cls = v.getUint16(p + 2);
  const ttl = v.getUint32(p + 4);
  const rdlen = v.getUint16(p + 8);
  if (p + 10 + rdlen > buf.length) throw new DnsFormatError('rdata runs past the message');
  return [type, cls, ttl, p + 10, rdlen, p + 10 + rdlen];
}

/** Parses a query; throws DnsFormatError for anything malformed (the caller answers FORMERR). */
export function parseQuery(buf: Uint8Array): Query {
  const header = parseHeader(buf);
  if (!header) throw new DnsFormatError('shorter than a header');
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let pos = HEADER_LEN;
  const questions: Question[] = [];
  for (let i = 0; i < header.qdcount; i++) {
    const [name, p] = readName(buf, pos);
    if (p + 4 > buf.length) throw new DnsFormatError('question runs past the message');
    questions.push({ name, type: v.getUint16(p), class: v.getUint16(p + 2) });
    pos = p + 4;
  }
  for (let i = 0; i < header.ancount + header.nscount; i++) pos = readRecordHeader(buf, pos)[5];
  let edns: Query['edns'] = null;
  for (let i = 0; i < header.arcount; i++) {
    const [type, cls, ttl, , , next] = readRecordHeader(buf, pos);
    if (type === TYPE.OPT) {
      if (edns) throw new DnsFormatError('more than one OPT record');
      edns = { udpSize: Math.max(CLASSIC_UDP_SIZE, cls), version: (ttl >>> 16) & 0xff };
    }
    pos = next;
  }
  return { header, questions, edns };
}

// ---------------------------------------------------------------- building responses

export type RData =
  | { readonly a: string }
  | { readonly aaaa: string }
  | { readonly cname: string }
  | { readonly ptr: string }
  | { readonly ns: string }
  | { readonly txt: readonly string[] }
  | {
      readonly srv: {
        readonly priority: number;
        readonly weight: number;
        readonly port: number;
        readonly target: string;
      };
    }
  | {
      readonly soa: {
        readonly mname: string;
        readonly rname: string;
        readonly serial: number;
        readonly refresh: number;
        readonly retry: number;
        readonly expire: number;
        readonly minimum: number;
      };
    };

export interface ResourceRecord {
  readonly name: string;
  readonly type: number;
  readonly ttl: number;
  readonly data: RData;
}

export interface ResponseInit {
  readonly id: number;
  readonly opcode: number;
  readonly rd: boolean;
  readonly aa: boolean;
  readonly rcode: number;
  readonly question: Question | null;
  readonly answers: readonly ResourceRecord[];
  readonly authority: readonly ResourceRecord[];
  readonly additional: readonly ResourceRecord[];
  /** Include an OPT record advertising this UDP size (when the query had EDNS). */
  readonly ednsUdpSize: number | null;
}

class Writer {
  private buf = new Uint8Array(512);
  len = 0;
  private readonly names = new Map<string, number>();

  private ensure(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  u8(v: number): void {
    this.ensure(1);
    this.buf[this.len++] = v & 0xff;
  }

  u16(v: number): void {
    this.u8(v >>> 8);
    this.u8(v);
  }

  u32(v: number): void {
    this.u16(v >>> 16);
    this.u16(v & 0xffff);
  }

  bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  setU16(at: number, v: number): void {
    this.buf[at] = (v >>> 8) & 0xff;
    this.buf[at + 1] = v & 0xff;
  }

  /** Writes a name, compressing against names written before (offsets < 0x4000 only). */
  name(name: string, compress = true): void {
    const labels = name === '' ? [] : splitLabels(name);
    for (let i = 0; i < labels.length; i++) {
      const suffix = labels
        .slice(i)
        .map((l) => l.toLowerCase())
        .join('.');
      const at = compress ? this.names.get(suffix) : undefined;
      if (at !== undefined) {
        this.u16(0xc000 | at);
        return;
      }
      if (this.len < 0x4000) this.names.set(suffix, this.len);
      const bytes = labelBytes(labels[i] ?? '');
      this.u8(bytes.length);
      this.bytes(bytes);
    }
    this.u8(0);
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

/** Splits a presentation name into labels (honouring `\DDD` escapes produced by readName). */
function splitLabels(name: string): string[] {
  return name.replace(/\.$/, '').split('.');
}

function labelBytes(label: string): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < label.length && out.length < MAX_LABEL; i++) {
    const c = label.charCodeAt(i);
    if (c === 0x5c && /^\d{3}$/.test(label.slice(i + 1, i + 4))) {
      out.push(Number(label.slice(i + 1, i + 4)) & 0xff);
      i += 3;
    } else out.push(c & 0x7f);
  }
  return Uint8Array.from(out);
}

function ipv4Bytes(ip: string): Uint8Array {
  return Uint8Array.from(ip.split('.').map((x) => Number(x) & 0xff));
}

function ipv6Bytes(ip: string): Uint8Array {
  const [head = '', tail = ''] = ip.split('::');
  const h = head ? head.split(':') : [];
  const t = ip.includes('::') && tail ? tail.split(':') : [];
  const groups = [...h, ...new Array(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  const out = new Uint8Array(16);
  groups.slice(0, 8).forEach((g, i) => {
    const n = Number.parseInt(g || '0', 16) & 0xffff;
    out[i * 2] = n >>> 8;
    out[i * 2 + 1] = n & 0xff;
  });
  return out;
}

function writeRecord(w: Writer, rr: ResourceRecord): void {
  w.name(rr.name);
  w.u16(rr.type);
  w.u16(CLASS_IN);
  w.u32(rr.ttl);
  const lenAt = w.len;
  w.u16(0);
  const start = w.len;
  const d = rr.data;
  if ('a' in d) w.bytes(ipv4Bytes(d.a));
  else if ('aaaa' in d) w.bytes(ipv6Bytes(d.aaaa));
  else if ('cname' in d) w.name(d.cname);
  else if ('ptr' in d) w.name(d.ptr);
  else if ('ns' in d) w.name(d.ns);
  else if ('txt' in d) {
    for (const s of d.txt) {
      const b = new TextEncoder().encode(s).subarray(0, 255);
      w.u8(b.length);
      w.bytes(b);
    }
  } else if ('srv' in d) {
    w.u16(d.srv.priority);
    w.u16(d.srv.weight);
    w.u16(d.srv.port);
    // RFC 2782: the target is never compressed (resolvers such as c-ares reject it otherwise).
    w.name(d.srv.target, false);
  } else if ('soa' in d) {
    w.name(d.soa.mname);
    w.name(d.soa.rname);
    w.u32(d.soa.serial);
    w.u32(d.soa.refresh);
    w.u32(d.soa.retry);
    w.u32(d.soa.expire);
    w.u32(d.soa.minimum);
  }
  w.setU16(lenAt, w.len - start);
}

function build(r: ResponseInit, tc: boolean, withRecords: boolean): Uint8Array {
  const w = new Writer();
  w.u16(r.id);
  const flags =
    0x8000 |
    ((r.opcode & 0xf) << 11) |
    (r.aa ? 0x0400 : 0) |
    (tc ? 0x0200 : 0) |
    (r.rd ? 0x0100 : 0) |
    (r.rcode & 0xf);
  w.u16(flags);
  const answers = withRecords ? r.answers : [];
  const authority = withRecords ? r.authority : [];
  const additional = withRecords ? r.additional : [];
  w.u16(r.question ? 1 : 0);
  w.u16(answers.length);
  w.u16(authority.length);
  w.u16(additional.length + (r.ednsUdpSize !== null ? 1 : 0));
  if (r.question) {
    w.name(r.question.name);
    w.u16(r.question.type);
    w.u16(r.question.class);
  }
  for (const rr of answers) writeRecord(w, rr);
  for (const rr of authority) writeRecord(w, rr);
  for (const rr of additional) writeRecord(w, rr);
  if (r.ednsUdpSize !== null) {
    w.u8(0); // root name
    w.u16(TYPE.OPT);
    w.u16(r.ednsUdpSize);
    w.u32(0);
    w.u16(0);
  }
  return w.finish();
}

/** Encodes a response; when it exceeds `maxSize`, sends the header and question only with TC set. */
export function encodeResponse(r: ResponseInit, maxSize = 65535): Uint8Array {
  const full = build(r, false, true);
  if (full.length <= maxSize) return full;
  return build(r, true, false);
}

/** Encodes a query (for tests and clients). */
export function encodeQuery(
  id: number,
  name: string,
  type: number,
  opts: { rd?: boolean; edns?: number } = {},
): Uint8Array {
  const w = new Writer();
  w.u16(id);
  w.u16(opts.rd === false ? 0 : 0x0100);
  w.u16(1);
  w.u16(0);
  w.u16(0);
  w.u16(opts.edns ? 1 : 0);
  w.name(name);
  w.u16(type);
  w.u16(CLASS_IN);
  if (opts.edns) {
    w.u8(0);
    w.u16(TYPE.OPT);
    w.u16(opts.edns);
    w.u32(0);
    w.u16(0);
  }
  return w.finish();
}

export interface ParsedAnswer {
  readonly name: string;
  readonly type: number;
  readonly ttl: number;
  /** A/AAAA address, CNAME/PTR/NS target, SRV "prio weight port target", or hex for others. */
  readonly value: string;
}

export interface ParsedResponse {
  readonly id: number;
  readonly rcode: number;
  readonly aa: boolean;
  readonly tc: boolean;
  readonly ra: boolean;
  readonly answers: readonly ParsedAnswer[];
  readonly authority: readonly ParsedAnswer[];
  readonly additional: readonly ParsedAnswer[];
}

/** Decodes a response (for tests and diagnostics). */
export function parseResponse(buf: Uint8Array): ParsedResponse {
  const h = parseHeader(buf);
  if (!h) throw new DnsFormatError('shorter than a header');
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const flags = v.getUint16(2);
  let pos = HEADER_LEN;
  for (let i = 0; i < h.qdcount; i++) pos = readName(buf, pos)[1] + 4;
  const section = (n: number): ParsedAnswer[] => {
    const out: ParsedAnswer[] = [];
    for (let i = 0; i < n; i++) {
      const [name] = readName(buf, pos);
      const [type, , ttl, rd, rdlen, next] = readRecordHeader(buf, pos);
      let value: string;
      if (type === TYPE.A && rdlen === 4) value = Array.from(buf.subarray(rd, rd + 4)).join('.');
      else if (type === TYPE.CNAME || type === TYPE.PTR || type === TYPE.NS) value = readName(buf, rd)[0];
      else if (type === TYPE.SRV)
        value = `${v.getUint16(rd)} ${v.getUint16(rd + 2)} ${v.getUint16(rd + 4)} ${readName(buf, rd + 6)[0]}`;
      else value = Buffer.from(buf.subarray(rd, rd + rdlen)).toString('hex');
      out.push({ name, type, ttl, value });
      pos = next;
    }
    return out;
  };
  const answers = section(h.ancount);
  const authority = section(h.nscount);
  const additional = section(h.arcount);
  return {
    id: h.id,
    rcode: flags & 0xf,
    aa: (flags & 0x0400) !== 0,
    tc: (flags & 0x0200) !== 0,
    ra: (flags & 0x0080) !== 0,
    answers,
    authority,
    additional,
  };
}
