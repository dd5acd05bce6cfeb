/**
 * A small DER codec: just the ASN.1 types X.509 certificates and PKCS#10 requests use. Encoding builds
 * Buffers bottom-up; decoding walks TLVs with strict bounds, because CSRs arrive from untrusted callers.
 * Only definite lengths (DER); lengths above MAX_DER_LENGTH and nesting deeper than MAX_DEPTH are rejected.
 */

/** Largest element we accept; a CSR or certificate is a few KiB, a chain bundle maybe tens. */
export const MAX_DER_LENGTH = 1 << 20;
/** Certificates nest about 8 levels; anything far deeper is hostile. */
export const MAX_DEPTH = 32;

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

export class DerError extends Error {
  override readonly name = 'DerError';
}

// ---------- encoding ----------

function lengthBytes(len: number): Buffer {
  if (len < 0x80) return Buffer.from([len]);
  const bytes: number[] = [];
  let n = len;
  while (n > 0) {
    bytes.unshift(n & 0xff);
    n = Math.floor(n / 256);
  }
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

export function tlv(tag: number, content: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag]), lengthBytes(content.length), content]);
}

export const seq = (...items: Buffer[]): Buffer => tlv(TAG.SEQUENCE, Buffer.concat(items));
export const set = (...items: Buffer[]): Buffer => tlv(TAG.SET, Buffer.concat(items));
export const nul = (): Buffer => Buffer.from([TAG.NULL, 0]);
export const bool = (v: boolean): Buffer => Buffer.from([TAG.BOOLEAN, 1, v ? 0xff : 0]);
export const octetString = (b: Buffer): Buffer => tlv(TAG.OCTET_STRING, b);
/** BIT STRING with zero unused bits (keys, signatures, and byte-aligned flags). */
export const bitString = (b: Buffer, unusedBits = 0): Buffer =>
  tlv(TAG.BIT_STRING, Buffer.concat([Buffer.from([unusedBits]), b]));
export const utf8 = (s: string): Buffer => tlv(TAG.UTF8_STRING, Buffer.from(s, 'utf8'));
/** Context-specific tag [n]; constructed unless `primitive`. */
export const ctx = (n: number, content: Buffer, primitive = false): Buffer =>
  tlv((primitive ? 0x80 : 0xa0) | n, content);

/** INTEGER from a non-negative bigint or unsigned big-endian bytes (a leading zero is added when needed). */
export function int(v: bigint | number | Buffer): Buffer {
  let bytes: Buffer;
  if (Buffer.isBuffer(v)) {
    let i = 0;
    while (i < v.length - 1 && v[i] === 0) i++;
    bytes = v.subarray(i);
  } else {
    let n = BigInt(v);
    if (n < 0n) throw new DerError('negative INTEGER not supported');
    const out: number[] = [];
    do {
      out.unshift(Number(n & 0xffn));
      n >>= 8n;
    } while (n > 0n);
    bytes = Buffer.from(out);
  }
  if (bytes.length === 0) bytes = Buffer.from([0]);
  if ((bytes[0]! & 0x80) !== 0) bytes = Buffer.concat([Buffer.from([0]), bytes]);
  return tlv(TAG.INTEGER, bytes);
}

/** OIDs repeat in every certificate: encode each once. */
const oidCache = new Map<string, Buffer>();

export function oid(dotted: string): Buffer {
  const hit = oidCache.get(dotted);
  if (hit) return hit;
  const enc = encodeOid(dotted);
  if (oidCache.size < 1024) oidCache.set(dotted, enc);
  return enc;
}

function encodeOid(dotted: string): Buffer {
  const parts = dotted.split('.').map((p) => {
    if (!/^\d+$/.test(p)) throw new DerError(`bad OID ${dotted}`);
    return BigInt(p);
  });
  if (parts.length < 2) throw new DerError(`bad OID ${dotted}`);
  const out: number[] = [Number(parts[0]! * 40n + parts[1]!)];
  for (const p of parts.slice(2)) {
    const chunk: number[] = [];
    let n = p;
    do {
      chunk.unshift(Number(n & 0x7fn));
      n >>= 7n;
    } while (n > 0n);
    for (let i = 0; i < chunk.length - 1; i++) chunk[i]! |= 0x80;
    out.push(...chunk);
  }
  return tlv(TAG.OID, Buffer.from(out));
}

const pad2 = (n: number) => String(n).padStart(2, '0');

/** X.509 time: UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280 §4.1.2.5). Second precision. */
export function time(d: Date): Buffer {
  const y = d.getUTCFullYear();
  const rest = `${pad2(d.getUTCMonth() + 1)}${pad2(d.getUTCDate())}${pad2(d.getUTCHours())}${pad2(d.getUTCMinutes())}${pad2(d.getUTCSeconds())}Z`;
  if (y >= 1950 && y < 2050) return tlv(TAG.UTC_TIME, Buffer.from(`${pad2(y % 100)}${rest}`, 'ascii'));
  return tlv(TAG.GENERALIZED_TIME, Buffer.from(`${String(y).padStart(4, '0')}${rest}`, 'ascii'));
}

// ---------- decoding ----------

export interface Node {
  readonly tag: number;
  /** Offset of the tag byte in the source buffer. */
  readonly start: number;
  /** Offset of the first content byte. */
  readonly contentStart: number;
  /** Offset just past the element. */
  readonly end: number;
}

export function readNode(buf: Buffer, offset: number, limit = buf.length): Node {
  if (offset + 2 > limit) throw new DerError(`truncated element at offset ${offset}`);
  const tag = buf[offset]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError(`multi-byte tags not supported (offset ${offset})`);
  let pos = offset + 1;
  const first = buf[pos++]!;
  let len: number;
  if (first < 0x80) {
    len = first;
  } else {
    const n = first & 0x7f;
    if (n === 0) throw new DerError(`indefinite length not allowed in DER (offset ${offset})`);
    if (n > 4) throw new DerError(`length of ${n} bytes too large (offset ${offset})`);
    if (pos + n > limit) throw new DerError(`truncated length at offset ${offset}`);
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + buf[pos++]!;
  }
  if (len > MAX_DER_LENGTH) throw new DerError(`element of ${len} bytes exceeds ${MAX_DER_LENGTH}`);
  if (pos + len > limit) throw new DerError(`element at offset ${offset} overruns its container`);
  return { tag, start: offset, contentStart: pos, end: pos + len };
}

/** The children of a constructed element, each checked to lie inside it. */
export function children(buf: Buffer, node: Node, depth = 0): Node[] {
  if (depth > MAX_DEPTH) throw new DerError('nesting too deep');
  if ((node.tag & 0x20) === 0) throw new DerError(`tag 0x${node.tag.toString(16)} is not constructed`);
  const out: Node[] = [];
  let pos = node.contentStart;
  while (pos < node.end) {
    const child = readNode(buf, pos, node.end);
    out.push(child);
    pos = child.end;
  }
  return out;
}

export function root(buf: Buffer): Node {
  const n = readNode(buf, 0);
  if (n.end !== buf.length) throw new DerError(`${buf.length - n.end} trailing bytes after the top element`);
  return n;
}

export function expectTag(node: Node | undefined, tag: number, what: string): Node {
  if (!node) throw new DerError(`missing ${what}`);
  if (node.tag !== tag)
    throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, got 0x${node.tag.toString(16)}`);
  return node;
}

export const content = (buf: Buffer, n: Node): Buffer => buf.subarray(n.contentStart, n.end);
export const raw = (buf: Buffer, n: Node): Buffer => buf.subarray(n.start, n.end);

export function readOid(buf: Buffer, n: Node): string {
  const b = content(buf, n);
  if (b.length === 0) throw new DerError('empty OID');
  const first = b[0]!;
  const parts: bigint[] = [BigInt(Math.min(2, Math.floor(first / 40))), 0n];
  parts[1] = BigInt(first) - parts[0]! * 40n;
  let acc = 0n;
  for (let i = 1; i < b.length; i++) {
    acc = (acc << 7n) | BigInt(b[i]! & 0x7f);
    if ((b[i]! & 0x80) === 0) {
      parts.push(acc);
      acc = 0n;
    } else if (i === b.length - 1) {
      throw new DerError('truncated OID');
    }
  }
  return parts.join('.');
}

/** BIT STRING content without the unused-bits byte. */
export function readBitString(buf: Buffer, n: Node): Buffer {
  const b = content(buf, n);
  if (b.length === 0) throw new DerError('empty BIT STRING');
  return b.subarray(1);
}

// ---------- PEM ----------

export function toPem(label: string, der: Buffer): string {
  const b64 = der.toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 64) lines.push(b64.slice(i, i + 64));
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** All PEM blocks with the given label, decoded, in order. */
export function fromPemAll(text: string, label: string): Buffer[] {
  const re = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]*?)-----END ${label}-----`, 'g');
  const out: Buffer[] = [];
  for (const m of text.matchAll(re)) out.push(Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'));
  return out;
}
