import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../pkg/telemetry/index.ts';
import { eventually } from '../../pkg/testing/index.ts';
import { injectTrace, MAX_QUEUE, SpanExporter, startTrace, type TraceContext } from './tracing.ts';

const TRACE = '0af7651916cd43dd8448eb211c80319c';
const PARENT = 'b7ad6b7169203331';

describe('startTrace / injectTrace', () => {
  it('continues a W3C traceparent with a new span and its sampling flag', () => {
    const t = startTrace({ traceparent: `00-${TRACE}-${PARENT}-01` }, 0);
    expect(t.traceId).toBe(TRACE);
    expect(t.parentSpanId).toBe(PARENT);
    expect(t.spanId).toMatch(/^[0-9a-f]{16}$/);
    expect(t.spanId).not.toBe(PARENT);
    expect(t.sampled).toBe(true);
    const out: Record<string, string | string[] | undefined> = {};
    injectTrace(out, t);
    expect(out.traceparent).toBe(`00-${TRACE}-${t.spanId}-01`);
    expect(out['x-b3-traceid']).toBe(TRACE);
    expect(out['x-b3-spanid']).toBe(t.spanId);
    expect(out['x-b3-parentspanid']).toBe(PARENT);
    expect(out['x-b3-sampled']).toBe('1');
  });

  it('continues B3 multi-header context, keeping a 64-bit trace id', () => {
    const t = startTrace(
      { 'x-b3-traceid': '463ac35c9f6413ad', 'x-b3-spanid': 'a2fb4a1d1a96d312', 'x-b3-sampled': '0' },
      100,
    );
    expect(t.traceId).toBe('0000000000000000463ac35c9f6413ad');
    expect(t.parentSpanId).toBe('a2fb4a1d1a96d312');
    expect(t.sampled).toBe(false);
    const out: Record<string, string | string[] | undefined> = {};
    injectTrace(out, t);
    expect(out['x-b3-traceid']).toBe('463ac35c9f6413ad');
    expect(out.traceparent).toBe(`00-0000000000000000463ac35c9f6413ad-${t.spanId}-00`);
  });

  it('continues single-header b3 and answers in kind', () => {
    const t = startTrace({ b3: `${TRACE}-${PARENT}-1` }, 0);
    expect(t.traceId).toBe(TRACE);
    expect(t.sampled).toBe(true);
    const out: Record<string, string | string[] | undefined> = {};
    injectTrace(out, t);
    expect(out.b3).toBe(`${TRACE}-${t.spanId}-1-${PARENT}`);
  });

  it('starts a new trace when none is present, sampled at the configured rate', () => {
    const never = startTrace({}, 0, () => 0.5);
    expect(never.parentSpanId).toBeNull();
    expect(never.sampled).toBe(false);
    expect(never.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(startTrace({}, 60, () => 0.5).sampled).toBe(true);
    expect(startTrace({}, 40, () => 0.5).sampled).toBe(false);
    const a = startTrace({}, 100);
    const b = startTrace({}, 100);
    expect(a.traceId).not.toBe(b.traceId);
    expect(a.spanId).not.toBe(b.spanId);
  });

  it('ignores a malformed traceparent', () => {
    const t = startTrace({ traceparent: `00-${'0'.repeat(32)}-${PARENT}-01` }, 100);
    expect(t.traceId).not.toBe('0'.repeat(32));
    expect(t.parentSpanId).toBeNull();
  });
});

describe('SpanExporter', () => {
  const logger = createLogger({ component: 'test', level: 'silent' });
  const trace = (): TraceContext => startTrace({ traceparent: `00-${TRACE}-${PARENT}-01` }, 100);

  it('posts OTLP/HTTP JSON batches and never blocks', async () => {
    const bodies: unknown[] = [];
    const server = createServer((req, res) => {
      let s = '';
      req.on('data', (c) => {
        s += c;
      });
      req.on('end', () => {
        expect(req.headers['content-type']).toBe('application/json');
        expect(req.url).toBe('/v1/traces');
        bodies.push(JSON.parse(s));
        res.end('{}');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    const ex = new SpanExporter(`http://127.0.0.1:${port}/v1/traces`, 'waypoint.default', logger);
    const t = trace();
    ex.record({
      trace: t,
      name: 'echo.default.svc.cluster.local:80/*',
      startMs: 1_700_000_000_000.5,
      endMs: 1_700_000_000_010,
      error: false,
      attributes: { 'http.status_code': 200, 'http.method': 'GET', ratio: 0.5, ok: true },
    });
    await ex.flush();
    await eventually(() => bodies.length === 1);
    const body = bodies[0] as {
      resourceSpans: Array<{
        resource: { attributes: Array<{ key: string; value: { stringValue: string } }> };
        scopeSpans: Array<{ spans: Array<Record<string, unknown>> }>;
      }>;
    };
    const rs = body.resourceSpans[0]!;
    expect(rs.resource.attributes).toContainEqual({
      key: 'service.name',
      value: { stringValue: 'waypoint.default' },
    });
    const span = rs.scopeSpans[0]!.spans[0]!;
    expect(span).toMatchObject({
      traceId: TRACE,
      spanId: t.spanId,
      parentSpanId: PARENT,
      name: 'echo.default.svc.cluster.local:80/*',
      startTimeUnixNano: '1700000000000500000',
      endTimeUnixNano: '1700000000010000000',
    });
    expect(span.attributes).toContainEqual({ key: 'http.status_code', value: { intValue: '200' } });
    expect(span.attributes).toContainEqual({ key: 'ratio', value: { doubleValue: 0.5 } });
    expect(ex.stats.exported).toBe(1);
    await ex.close();
    server.close();
  });

  it('drops spans beyond its queue and when the collector is down, without throwing', async () => {
    const ex = new SpanExporter('http://127.0.0.1:1/v1/traces', 'x', logger);
    for (let i = 0; i < MAX_QUEUE + 10; i++) {
      ex.record({ trace: trace(), name: 'n', startMs: 0, endMs: 1, error: true, attributes: {} });
    }
    await ex.close();
    expect(ex.stats.dropped).toBe(MAX_QUEUE + 10);
    expect(ex.stats.exported).toBe(0);
  });
});
