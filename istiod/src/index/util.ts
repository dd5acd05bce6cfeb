/** Small helpers for the index: addresses as wire bytes, byte equality, boolean labels. */
import { ipToBytes, parseIp } from '../../../pkg/rbac/index.ts';

/** The 4- or 16-byte wire form of an IP address, or null when it does not parse. */
export function ipBytes(s: string): Uint8Array | null {
  const ip = parseIp(s);
  return ip ? ipToBytes(ip) : null;
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Go's strconv.ParseBool, which Istio uses for boolean labels; null when the value is not a boolean. */
export function parseBool(v: string): boolean | null {
  switch (v) {
    case '1':
    case 't':
    case 'T':
    case 'true':
    case 'TRUE':
    case 'True':
      return true;
    case '0':
    case 'f':
    case 'F':
    case 'false':
    case 'FALSE':
    case 'False':
      return false;
    default:
      return null;
  }
}

/** Sorted copy of a string iterable (for deterministic encodings). */
export function sorted(values: Iterable<string>): string[] {
  return [...values].sort();
}
