/**
 * Distributed tracing at the waypoint: every request gets a span of its own, propagated upstream in both W3C
 * Trace Context (`traceparent`, `tracestate` kept) and Zipkin B3 (`x-b3-*` multi-header, and the single `b3`
 * header when the client used it), so applications that forward either (Bookinfo forwards both) stitch one
 * trace. Incoming context precedence: `traceparent`, then `x-b3-traceid`, then `b3`; none → a new trace,
 * sampled at `samplingPercent` (Istio's meshConfig tracing sampling).
 *
 * Sampled spans are exported as OTLP/HTTP JSON (opentelemetry-proto `ExportTraceServiceRequest`, ids in hex)
 * by a batching exporter that never blocks a request: a bounded queue (spans beyond it are dropped and
 * counted), flushed by size or every FLUSH_INTERVAL_MS, one POST in flight at a time.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { describeError } from '../../pkg/errors/index.ts';
import { parseTraceparent } from '../../pkg/hbone/index.ts';

export interface TraceContext {
  /** 32 lowercase hex digits. */
  readonly traceId: string;
  /** This hop's span, 16 hex digits. */
  readonly spanId: string;
  /** The caller's span, or null for a new root. */
  readonly parentSpanId: string | null;
  readonly sampled: boolean;
  /** Incoming B3 trace ids may be 64-bit: echo them in the length received. */
  readonly b3TraceId: string;
  /** The caller used single-header `b3`: answer in kind. */
  readonly b3Single: boolean;
}

type HeaderValue = string | string[] | undefined;
type Headers = Readonly<Record<string, HeaderValue>>;

const HEX16 = /^[0-9a-f]{16}$/;
const HEX32 = /^[0-9a-f]{32}$/;
const ZERO16 = '0000000000000000';
const ZERO32 = `${ZERO16}${ZERO16}`;

/** Random ids come from a pooled buffer: one randomBytes call per POOL_IDS spans instead of per span. */
const POOL_IDS = 512;
let pool = Buffer.alloc(0);
let poolOffset = 0;

function randomHex(bytes: number): string {
  if (poolOffset + bytes > pool.length) {
    pool = randomBytes(POOL_IDS * 8);
    poolOffset = 0;
  }
  const s = pool.toString('hex', poolOffset, poolOffset + bytes);
  poolOffset += bytes;
  return s;
}

export function newSpanId(): string {
  const id = randomHex(8);
  return id === ZERO16 ? '0000000000000001' : id;
}

export function newTraceId(): string {
  const id = randomHex(16);
  return id === ZERO32 ? `${ZERO32.slice(1)}1` : id;
}

function first(v: HeaderValue): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

function b3Sampled(v: string | undefined): boolean | null {
  if (v === undefined) return null;
  if (v === '1' || v === 'd' || v === 'true') return true;
  if (v === '0' || v === 'false') return false;
  return null;
}

/** Continues the incoming trace (or starts one) with a fresh span id for this hop. */
export function startTrace(
  headers: Headers,
  samplingPercent: number,
  rng: () => number = Math.random,
): TraceContext {
  const tp = parseTraceparent(first(headers.traceparent));
  const roll = () => samplingPercent >= 100 || (samplingPercent > 0 && rng() * 100 < samplingPercent);
  if (tp !== null) {
    const b3 = first(headers['x-b3-traceid'])?.toLowerCase();
    return {
      traceId: tp.traceId,
      spanId: newSpanId(),
      parentSpanId: tp.parentId,
      sampled: (tp.flags & 1) === 1,
      // A B3 id already forwarded for the same trace keeps its length.
      b3TraceId: b3 !== undefined && tp.traceId.endsWith(b3) ? b3 : tp.traceId,
      b3Single: headers.b3 !== undefined,
    };
  }
  const b3TraceId = first(headers['x-b3-traceid'])?.toLowerCase();
  if (b3TraceId !== undefined && (HEX16.test(b3TraceId) || HEX32.test(b3TraceId))) {
    const parent = first(headers['x-b3-spanid'])?.toLowerCase();
    const sampled = first(headers['x-b3-flags']) === '1' ? true : b3Sampled(first(headers['x-b3-sampled']));
    return {
      traceId: b3TraceId.padStart(32, '0'),
      spanId: newSpanId(),
      parentSpanId: parent !== undefined && HEX16.test(parent) ? parent : null,
      sampled: sampled ?? roll(),
      b3TraceId,
      b3Single: false,
    };
  }
  const single = first(headers.b3)?.toLowerCase();
  if (single !== undefined) {
    // b3: {TraceId}-{SpanId}-{SamplingState}-{ParentSpanId}, or just the sampling state.
    const parts = single.split('-');
    const [traceId, spanId, state] = parts;
    if (traceId !== undefined && spanId !== undefined && (HEX16.test(traceId) || HEX32.test(traceId))) {
      return {
        traceId: traceId.padStart(32, '0'),
        spanId: newSpanId(),
        parentSpanId: HEX16.test(spanId) ? spanId : null,
        sampled: b3Sampled(state) ?? roll(),
        b3TraceId: traceId,
        b3Single: true,
      };
    }
  }
  const traceId = newTraceId();
  return {
    traceId,
    spanId: newSpanId(),
    parentSpanId: null,
    sampled: roll(),
    b3TraceId: traceId,
    b3Single: single !== undefined,
  };
}

/** Writes this hop's context into the upstream request headers (replacing the caller's). */
export function injectTrace(out: Record<string, string | string[] | undefined>, t: TraceContext): void {
  const flag = t.sampled ? '1' : '0';
  out.traceparent = `00-${t.traceId}-${t.spanId}-0${flag}`;
  out['x-b3-traceid'] = t.b3TraceId;
  out['x-b3-spanid'] = t.spanId;
  if (t.parentSpanId !== null) out['x-b3-parentspanid'] = t.parentSpanId;
  else delete out['x-b3-parentspanid'];
  out['x-b3-sampled'] = flag;
  delete out['x-b3-flags'];
  if (t.b3Single) {
    out.b3 = `${t.b3TraceId}-${t.spanId}-${flag}${t.parentSpanId !== null ? `-${t.parentSpanId}` : ''}`;
  }
}

// ---------- span export ----------

/** A finished span as the waypoint records it. */
export interface SpanRecord {
  readonly trace: TraceContext;
  readonly name: string;
  /** Epoch milliseconds (fractional). */
  readonly startMs: number;
  readonly endMs: number;
  /** Error status (5xx, local failures). */
  readonly error: boolean;
  readonly attributes: Readonly<Record<string, string | number | boolean>>;
}

/** Spans per POST (OTLP exporters default to 512). */
export const MAX_BATCH = 512;
/** Spans kept waiting for export; beyond this new spans are dropped (a down collector must not grow memory). */
export const MAX_QUEUE = 4096;
/** A partial batch leaves after this long (OTel BatchSpanProcessor default: 5 s). */
export const FLUSH_INTERVAL_MS = 5_000;
/** One export may take this long before it is abandoned. */
export const EXPORT_TIMEOUT_MS = 10_000;

const SPAN_KIND_CLIENT = 3;
const STATUS_ERROR = 2;

export class SpanExporter {
  readonly endpoint: string;
  /** Counters for /config_dump and tests. */
  readonly stats = { exported: 0, dropped: 0, failedBatches: 0 };
  private readonly serviceName: string;
  private readonly logger: Logger;
  private queue: SpanRecord[] = [];
  private timer: NodeJS.Timeout | null = null;
  private inFlight: Promise<void> | null = null;
  private closed = false;

  constructor(endpoint: string, serviceName: string, logger: Logger) {
    this.endpoint = endpoint;
    this.serviceName = serviceName;
    this.logger = logger;
  }

  /** Queues a finished span; never blocks, never throws. */
  record(span: SpanRecord): void {
    if (this.closed || this.queue.length >= MAX_QUEUE) {
      this.stats.dropped++;
      return;
    }
    this.queue.push(span);
    if (this.queue.length >= MAX_BATCH) this.kick();
    else if (this.timer === null) {
      this.timer = setTimeout(flushTimer, FLUSH_INTERVAL_MS, this);
      this.timer.unref();
    }
  }

  /** Starts an export if none is running. */
  kick(): void {
    if (this.inFlight !== null || this.queue.length === 0) return;
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const batch = this.queue.splice(0, MAX_BATCH);
    this.inFlight = this.send(batch).finally(() => {
      this.inFlight = null;
      if (this.queue.length >= MAX_BATCH || (this.closed && this.queue.length > 0)) this.kick();
      else if (this.queue.length > 0 && this.timer === null) {
        this.timer = setTimeout(flushTimer, FLUSH_INTERVAL_MS, this);
        this.timer.unref();
      }
    });
  }

  /** @internal the flush interval fired. */
  onTimer(): void {
    this.timer = null;
    this.kick();
  }

  /** Exports what is queued (drain); resolves when done or after the export timeout. */
  async flush(): Promise<void> {
    this.kick();
    while (this.inFlight !== null) await this.inFlight;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.flush();
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private async send(batch: SpanRecord[]): Promise<void> {
    const body = JSON.stringify(this.encode(batch));
    try {
      const res = await fetch(this.endpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
        signal: AbortSignal.timeout(EXPORT_TIMEOUT_MS),
      });
      await res.arrayBuffer().catch(() => undefined);
      if (!res.ok) throw new Error(`collector answered ${res.status}`);
      this.stats.exported += batch.length;
    } catch (err) {
      this.stats.failedBatches++;
      this.stats.dropped += batch.length;
      this.logger.debug(
        { endpoint: this.endpoint, spans: batch.length, err: describeError(err) },
        'span export failed',
      );
    }
  }

  /** @internal OTLP JSON encoding (exported for tests). */
  encode(batch: readonly SpanRecord[]) {
    return {
      resourceSpans: [
        {
          resource: {
            attributes: [
              { key: 'service.name', value: { stringValue: this.serviceName } },
              { key: 'telemetry.sdk.name', value: { stringValue: 'ambient-ts-waypoint' } },
            ],
          },
          scopeSpans: [
            {
              scope: { name: 'ambient-ts/waypoint' },
              spans: batch.map((s) => ({
                traceId: s.trace.traceId,
                spanId: s.trace.spanId,
                ...(s.trace.parentSpanId !== null ? { parentSpanId: s.trace.parentSpanId } : {}),
                name: s.name,
                kind: SPAN_KIND_CLIENT,
                startTimeUnixNano: msToNanos(s.startMs),
                endTimeUnixNano: msToNanos(s.endMs),
                attributes: Object.entries(s.attributes).map(([key, value]) => ({
                  key,
                  value: anyValue(value),
                })),
                status: s.error ? { code: STATUS_ERROR } : {},
              })),
            },
          ],
        },
      ],
    };
  }
}

function flushTimer(exporter: SpanExporter): void {
  exporter.onTimer();
}

function msToNanos(ms: number): string {
  const whole = Math.floor(ms);
  const frac = Math.round((ms - whole) * 1e6);
  return (BigInt(whole) * 1_000_000n + BigInt(frac)).toString();
}

function anyValue(v: string | number | boolean) {
  if (typeof v === 'string') return { stringValue: v };
  if (typeof v === 'boolean') return { boolValue: v };
  return Number.isInteger(v) ? { intValue: String(v) } : { doubleValue: v };
}
