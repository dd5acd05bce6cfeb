/**
 * IP addresses and CIDRs in a form that is cheap to compare on every connection: IPv4 as one uint32, IPv6 as
 * four. Node reports IPv4 peers on dual-stack sockets as `::ffff:a.b.c.d`; those are treated as IPv4.
 */
import { isIPv4, isIPv6 } from 'node:net';

export interface ParsedIp {
  readonly v4: boolean;
  /** One word for IPv4, four for IPv6, most significant first. */
  readonly words: Uint32Array;
}

export interface Cidr {
  readonly ip: ParsedIp;
  readonly prefix: number;
}

function parseV4(s: string): Uint32Array | null {
  const parts = s.split('.');
  if (parts.length !== 4) return null;
  let n = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return null;
    const v = Number(p);
    if (v > 255) return null;
    n = n * 256 + v;
  }
  return Uint32Array.of(n >>> 0);
}

function parseV6(s: string): Uint32Array | null {
  if (!isIPv6(s)) return null;
  let text = s;
  let tailV4: Uint32Array | null = null;
  const lastColon = text.lastIndexOf(':');
  if (text.slice(lastColon + 1).includes('.')) {
    tailV4 = parseV4(text.slice(lastColon + 1));
    if (!tailV4) return null;
    const w = tailV4[0]!;
    text = `${text.slice(0, lastColon + 1)}${(w >>> 16).toString(16)}:${(w & 0xffff).toString(16)}`;
  }
  const [head = '', tail = ''] = text.split('::');
  const h = head ? head.split(':') : [];
  const t = text.includes('::') ? (tail ? tail.split(':') : []) : [];
  const groups = text.includes('::')
    ? [...h, ...new Array<string>(8 - h.length - t.length).fill('0'), ...t]
    : h;
  if (groups.length !== 8) return null;
  const words = new Uint32Array(4);
  for (let i = 0; i < 4; i++) {
    words[i] = ((Number.parseInt(groups[i * 2]!, 16) << 16) | Number.parseInt(groups[i * 2 + 1]!, 16)) >>> 0;
  }
  return words;
}

export function parseIp(s: string): ParsedIp | null {
  if (isIPv4(s)) {
    const w = parseV4(s);
    return w ? { v4: true, words: w } : null;
  }
  const words = parseV6(s);
  if (!words) return null;
  // IPv4-mapped (::ffff:a.b.c.d) compares as IPv4.
  if (words[0] === 0 && words[1] === 0 && words[2] === 0xffff)
    return { v4: true, words: Uint32Array.of(words[3]!) };
  return { v4: false, words };
}

/** From the raw bytes used on the wire (4 or 16 bytes), as in istio.workload and istio.security. */
export function ipFromBytes(b: Uint8Array): ParsedIp | null {
  if (b.length === 4)
    return { v4: true, words: Uint32Array.of(((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0) };
  if (b.length !== 16) return null;
  const words = new Uint32Array(4);
  for (let i = 0; i < 4; i++) {
    words[i] = ((b[i * 4]! << 24) | (b[i * 4 + 1]! << 16) | (b[i * 4 + 2]! << 8) | b[i * 4 + 3]!) >>> 0;
  }
  if (words[0] === 0 && words[1] === 0 && words[2] === 0xffff)
    return { v4: true, words: Uint32Array.of(words[3]!) };
  return { v4: false, words };
}

export function ipToString(ip: ParsedIp): string {
  if (ip.v4) {
    const w = ip.words[0]!;
    return `${w >>> 24}.${(w >>> 16) & 255}.${(w >>> 8) & 255}.${w & 255}`;
  }
  const groups: string[] = [];
  for (const w of ip.words) groups.push((w >>> 16).toString(16), (w & 0xffff).toString(16));
  return groups.join(':').replace(/\b(?:0:){2,}/, ':');
}

export function ipToBytes(ip: ParsedIp): Uint8Array {
  const out = new Uint8Array(ip.words.length * 4);
  const view = new DataView(out.buffer);
  ip.words.forEach((w, i) => {
    view.setUint32(i * 4, w);
  });
  return out;
}

export function cidrContains(c: Cidr, ip: ParsedIp): boolean {
  if (c.ip.v4 !== ip.v4) return false;
  let bits = c.prefix;
  for (let i = 0; i < c.ip.words.length; i++) {
    if (bits <= 0) return true;
    const mask = bits >= 32 ? 0xffffffff : (0xffffffff << (32 - bits)) >>> 0;
    if ((c.ip.words[i]! & mask) >>> 0 !== (ip.words[i]! & mask) >>> 0) return false;
    bits -= 32;
  }
  return true;
}

/** `10.0.0.0/8`, `2001:db8::/32`, or a bare address (full-length prefix). */
export function parseCidr(s: string): Cidr | null {
  const slash = s.indexOf('/');
  const ip = parseIp(slash === -1 ? s : s.slice(0, slash));
  if (!ip) return null;
  const max = ip.v4 ? 32 : 128;
  if (slash === -1) return { ip, prefix: max };
  const p = s.slice(slash + 1);
  if (!/^\d{1,3}$/.test(p) || Number(p) > max) return null;
  return { ip, prefix: Number(p) };
}
