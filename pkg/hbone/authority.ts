/**
 * The HBONE target: a CONNECT `:authority` of the form `IPv4:port` or `[IPv6]:port` (RFC 9113 §8.5, the
 * authority-form of RFC 9110 §7.2). ztunnel answers 400 to anything else on a workload's 15008 listener.
 */
import { isIPv4, isIPv6 } from 'node:net';
import type { HboneAddress } from './index.ts';

const PORT_RE = /^[0-9]{1,5}$/;
const MAX_PORT = 65_535;

function parsePort(s: string): number {
  if (!PORT_RE.test(s)) return -1;
  const port = Number(s);
  return port >= 1 && port <= MAX_PORT ? port : -1;
}

/** Parses `1.2.3.4:80` or `[::1]:80`; null for anything else (host names, zone ids, missing or bad ports). */
export function parseAuthority(authority: string): HboneAddress | null {
  if (authority.length === 0) return null;
  if (authority.charCodeAt(0) === 0x5b /* [ */) {
    const close = authority.indexOf(']');
    if (close === -1 || authority.charCodeAt(close + 1) !== 0x3a /* : */) return null;
    const ip = authority.slice(1, close);
    // Zone ids (`fe80::1%eth0`) name a local interface; they mean nothing to the peer.
    if (ip.includes('%') || !isIPv6(ip)) return null;
    const port = parsePort(authority.slice(close + 2));
    return port === -1 ? null : { ip, port, family: 6 };
  }
  const colon = authority.indexOf(':');
  if (colon === -1 || authority.indexOf(':', colon + 1) !== -1) return null;
  const ip = authority.slice(0, colon);
  if (!isIPv4(ip)) return null;
  const port = parsePort(authority.slice(colon + 1));
  return port === -1 ? null : { ip, port, family: 4 };
}

/** `ip:port`, bracketing IPv6. */
export function formatAuthority(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** Maps `::ffff:1.2.3.4` (IPv4 on a dual-stack socket) to `1.2.3.4`, as ztunnel's `to_canonical` does. */
export function canonicalIp(ip: string): string {
  return ip.length > 7 && ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip;
}
