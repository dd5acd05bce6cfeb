/**
 * Protocol detection on a tunnelled stream (Envoy's http_inspector, Istio protocol sniffing): the first
 * bytes decide between HTTP/2 with prior knowledge (h2c, gRPC), HTTP/1.x, and opaque TCP.
 *
 * - HTTP/2: the client connection preface `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n` (RFC 9113 §3.4).
 * - HTTP/1.x: a request line `token SP request-target SP HTTP/1.<d> CRLF` (RFC 9112 §3).
 * - Anything else is TCP. A decision needs at most the preface or the first line; a prefix of either answers
 *   "need more" (null), and a first line longer than MAX_REQUEST_LINE that starts like a request is HTTP/1.x,
 *   so the HTTP parser (not the sniffer) answers 414/431/400 for it.
 */

export type Protocol = 'http1' | 'h2' | 'tcp';

/** HTTP/2 client connection preface. */
export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/**
 * Bytes of a first line the sniffer looks at before deciding on the method alone. Envoy's http_inspector
 * reads up to 64 KiB; a request line is rarely above a few hundred bytes, and the parser enforces limits.
 */
export const MAX_REQUEST_LINE = 8 * 1024;

/** Longest method token accepted by the sniffer (real ones are ≤ 17: VERSION-CONTROL, …). */
const MAX_METHOD = 24;

/** RFC 9110 tchar. */
function isTchar(c: number): boolean {
  if ((c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a)) return true;
  switch (c) {
    case 0x21: // !
    case 0x23: // #
    case 0x24: // $
    case 0x25: // %
    case 0x26: // &
    case 0x27: // '
    case 0x2a: // *
    case 0x2b: // +
    case 0x2d: // -
    case 0x2e: // .
    case 0x5e: // ^
    case 0x5f: // _
    case 0x60: // `
    case 0x7c: // |
    case 0x7e: // ~
      return true;
    default:
      return false;
  }
}

const HTTP1_VERSION = Buffer.from(' HTTP/1.', 'latin1');

/** Returns the protocol, or null when more bytes are needed to tell. */
export function detectProtocol(buf: Buffer): Protocol | null {
  if (buf.length === 0) return null;
  // HTTP/2 preface (checked first: `PRI` is also a valid method token).
  const n = Math.min(buf.length, H2_PREFACE.length);
  if (buf.compare(H2_PREFACE, 0, n, 0, n) === 0) return n === H2_PREFACE.length ? 'h2' : null;
  // Method token then a space.
  let i = 0;
  while (i < buf.length && i <= MAX_METHOD && isTchar(buf[i]!)) i++;
  if (i === buf.length) return i <= MAX_METHOD ? null : 'tcp';
  if (i === 0 || buf[i] !== 0x20) return 'tcp';
  // Request target, up to the end of the line.
  const lf = buf.indexOf(0x0a, i);
  if (lf === -1) {
    if (buf.length >= MAX_REQUEST_LINE) return 'http1';
    // A control character before the end of line cannot be part of a request line.
    for (let j = i + 1; j < buf.length; j++) {
      const c = buf[j]!;
      if ((c < 0x20 && c !== 0x0d) || c === 0x7f) return 'tcp';
    }
    return null;
  }
  const end = lf > 0 && buf[lf - 1] === 0x0d ? lf - 1 : lf;
  // `… HTTP/1.x` at the end of the line.
  const v = end - HTTP1_VERSION.length - 1;
  if (v <= i) return 'tcp';
  if (buf.compare(HTTP1_VERSION, 0, HTTP1_VERSION.length, v, v + HTTP1_VERSION.length) !== 0) return 'tcp';
  const d = buf[end - 1]!;
  return d >= 0x30 && d <= 0x39 ? 'http1' : 'tcp';
}

/**
 * What to run on a stream given the service port's declared protocol ("http", "http2", "grpc", "tcp" or ""
 * to detect) and the sniffed one. "tcp" declared means no sniffing at all (the caller checks that first).
 * A port declared HTTP that receives something else is a malformed request ('reject').
 */
export function chooseProtocol(declared: string, detected: Protocol): Protocol | 'reject' {
  if (declared === '' || declared === 'tcp') return detected;
  return detected === 'tcp' ? 'reject' : detected;
}

/** Whether a declared port protocol is forwarded upstream as HTTP/2 whatever the downstream speaks. */
export function upstreamIsH2(declared: string, downstream: 'http1' | 'h2'): boolean {
  if (declared === 'http2' || declared === 'grpc') return true;
  if (declared === 'http' || declared === 'grpc-web') return false;
  // Detected ports use the downstream protocol (Envoy's USE_DOWNSTREAM_PROTOCOL, what Istio configures).
  return downstream === 'h2';
}
