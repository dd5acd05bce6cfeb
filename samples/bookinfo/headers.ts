/**
 * Which request headers each Bookinfo service copies onto the calls it makes, so the mesh can stitch one trace
 * and route on user identity. The lists follow upstream's services (productpage.py `getForwardHeaders`,
 * reviews' `headers_to_propagate`); `b3` (single-header B3) is added to both so a B3-single tracer also works.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';

/** Trace context and request id headers, forwarded by productpage and reviews alike. */
const TRACE_HEADERS = [
  // Envoy/ztunnel access logs and trace sampling key on it.
  'x-request-id',
  // Lightstep.
  'x-ot-span-context',
  // Datadog.
  'x-datadog-trace-id',
  'x-datadog-parent-id',
  'x-datadog-sampling-priority',
  // W3C Trace Context.
  'traceparent',
  'tracestate',
  // Google Cloud Trace and OpenCensus binary context.
  'x-cloud-trace-context',
  'grpc-trace-bin',
  // Zipkin B3, single header.
  'b3',
  // SkyWalking.
  'sw8',
] as const;

/** Zipkin B3 multi-header context. */
export const B3_HEADERS = [
  'x-b3-traceid',
  'x-b3-spanid',
  'x-b3-parentspanid',
  'x-b3-sampled',
  'x-b3-flags',
] as const;

/** Application headers: who the user is and what client they use (route matches use both). */
const APP_HEADERS = ['user-agent', 'cookie', 'authorization', 'jwt'] as const;

/** productpage → details, reviews, ratings. B3 is handled by `b3Context`; `end-user` comes from the session. */
export const PRODUCTPAGE_FORWARDED: readonly string[] = [...TRACE_HEADERS, ...APP_HEADERS];

/** reviews → ratings: everything reviews received that matters, including `end-user` and B3. */
export const REVIEWS_FORWARDED: readonly string[] = [
  ...TRACE_HEADERS,
  ...B3_HEADERS,
  'end-user',
  ...APP_HEADERS,
];

/** Copies the named headers that are present (repeated ones joined with `, `). */
export function pickHeaders(incoming: IncomingHttpHeaders, names: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of names) {
    const v = incoming[name];
    if (v === undefined) continue;
    out[name] = Array.isArray(v) ? v.join(', ') : v;
  }
  return out;
}

/**
 * The B3 headers productpage sends on. Upstream's productpage runs a Jaeger tracer that continues the incoming
 * B3 context verbatim and starts a fresh sampled root when there is none. A fresh root is only made when the
 * request carries no trace context at all (no B3 of either form, no `traceparent`), so productpage never sends
 * a second, unrelated trace id next to a W3C one a waypoint already started.
 */
export function b3Context(incoming: IncomingHttpHeaders): Record<string, string> {
  const out = pickHeaders(incoming, B3_HEADERS);
  if (Object.keys(out).length > 0) return out;
  if (incoming.b3 !== undefined || incoming.traceparent !== undefined) return out;
  // Jaeger's default: a 64-bit trace id, the root span id equal to it, sampled.
  const id = randomBytes(8).toString('hex');
  return { 'x-b3-traceid': id, 'x-b3-spanid': id, 'x-b3-sampled': '1' };
}
