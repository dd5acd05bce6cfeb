/**
 * The echo backend against each bullet of the conformance echo contract, as a real child process on loopback.
 */
import { type IncomingHttpHeaders as H2Headers, connect as h2connect } from 'node:http2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../../pkg/testing/index.ts';
import { httpRequest, type SampleChild, startSample } from '../testing/child.ts';
import { canonicalHeaderKey, parseGoDuration } from './go-compat.ts';

const ECHO = 'samples/echo/echo.ts';
const POD = 'infra-backend-v1-7b9c8d6f5-x2k4q';
const NAMESPACE = 'gateway-conformance-infra';

interface Echoed {
  path: string;
  host: string;
  method: string;
  proto: string;
  headers: Record<string, string[]>;
  namespace: string;
  pod: string;
}

let echo: SampleChild;

beforeAll(async () => {
  echo = await startSample(ECHO, { HTTP_PORT: '0', H2C_PORT: '0', POD_NAME: POD, NAMESPACE }, [
    'http',
    'h2c',
  ]);
});

afterAll(async () => {
  await echo?.stop();
});

describe('go-compat', () => {
  it.each([
    ['x-forwarded-for', 'X-Forwarded-For'],
    ['X-ECHO-SET-HEADER', 'X-Echo-Set-Header'],
    ['content-type', 'Content-Type'],
    ['www-authenticate', 'Www-Authenticate'],
    ['x_under', 'X_under'],
    ['bad name', 'bad name'],
  ])('canonical %s → %s', (raw, want) => {
    expect(canonicalHeaderKey(raw)).toBe(want);
  });

  it.each([
    ['1s', 1000],
    ['1.5s', 1500],
    ['300ms', 300],
    ['1m30s', 90_000],
    ['.5s', 500],
    ['0', 0],
    ['-2s', -2000],
    ['1500us', 1.5],
    ['1', null],
    ['s', null],
    ['abc', null],
    ['', null],
  ])('duration %s', (text, ms) => {
    expect(parseGoDuration(text)).toBe(ms);
  });
});

describe('HTTP/1.1 echo', () => {
  it('echoes path with query, host, method, proto, canonical headers, namespace and pod as JSON', async () => {
    const res = await httpRequest(echo.port(), '/some/path?x=1&y=two', {
      method: 'PUT',
      headers: {
        'x-forwarded-for': '10.0.0.1',
        'x-custom-header': ['a', 'b'],
        'X-MIXED-case': 'v',
        'x-echo-set-header': '',
      },
      body: 'ignored',
    });
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('application/json');
    const body = JSON.parse(res.body) as Echoed;
    expect(body.path).toBe('/some/path?x=1&y=two');
    expect(body.host).toBe(`127.0.0.1:${echo.port()}`);
    expect(body.method).toBe('PUT');
    expect(body.proto).toBe('HTTP/1.1');
    expect(body.namespace).toBe(NAMESPACE);
    expect(body.pod).toBe(POD);
    expect(body.headers['X-Forwarded-For']).toEqual(['10.0.0.1']);
    expect(body.headers['X-Custom-Header']).toEqual(['a', 'b']);
    expect(body.headers['X-Mixed-Case']).toEqual(['v']);
    expect(body.headers['X-Echo-Set-Header']).toEqual(['']);
    expect(body.headers['Content-Length']).toEqual(['7']);
    expect(body.headers.Host).toBeUndefined();
    expect(Object.keys(body.headers).every((k) => k === canonicalHeaderKey(k))).toBe(true);
  });

  it('X-Echo-Set-Header sets response headers; a repeated name appends with a comma', async () => {
    const res = await httpRequest(echo.port(), '/set', {
      headers: { 'X-Echo-Set-Header': 'X-Header-Set:set-val, X-Dup:one,X-Dup: two,Some-Other-Header:val' },
    });
    expect(res.status).toBe(200);
    expect(res.headers['x-header-set']).toBe('set-val');
    expect(res.headers['x-dup']).toBe('one,two');
    expect(res.headers['some-other-header']).toBe('val');
    expect(res.headers['content-type']).toBe('application/json');
  });

  it('?delay=1s answers after a second; a bad duration is a 500', async () => {
    const res = await httpRequest(echo.port(), '/request-timeout?delay=1s');
    expect(res.status).toBe(200);
    expect(res.elapsedMs).toBeGreaterThan(950);
    expect(res.elapsedMs).toBeLessThan(3_000);
    expect((JSON.parse(res.body) as Echoed).path).toBe('/request-timeout?delay=1s');
    const bad = await httpRequest(echo.port(), '/?delay=soon');
    expect(bad.status).toBe(500);
    expect(JSON.parse(bad.body)).toEqual({ message: 'time: invalid duration "soon"' });
  });

  it('/status/NNN answers NNN; anything else under /status/ is 400', async () => {
    expect((await httpRequest(echo.port(), '/status/418')).status).toBe(418);
    expect((await httpRequest(echo.port(), '/status/503')).status).toBe(503);
    expect((await httpRequest(echo.port(), '/status/abc')).status).toBe(400);
    expect((await httpRequest(echo.port(), '/status/200?x=1')).status).toBe(400);
  });

  it('/health answers OK', async () => {
    const res = await httpRequest(echo.port(), '/health');
    expect(res.status).toBe(200);
    expect(res.body).toBe('OK');
  });

  it('/retry with responseCode: the first N attempts of a uuid get the code, later ones echo', async () => {
    const path = '/retry/with-code?uuid=u-code&succeedAfter=2&responseCode=503';
    expect((await httpRequest(echo.port(), path)).status).toBe(503);
    expect((await httpRequest(echo.port(), path)).status).toBe(503);
    const ok = await httpRequest(echo.port(), path);
    expect(ok.status).toBe(200);
    expect((JSON.parse(ok.body) as Echoed).path).toBe(path);
    // Another uuid starts from zero.
    expect((await httpRequest(echo.port(), path.replace('u-code', 'u-other'))).status).toBe(503);
  });

  it('/retry without responseCode resets the connection for the first N attempts', async () => {
    const path = '/retry/no-status-code-attempts-3?succeedAfter=2&uuid=u-reset';
    for (let i = 0; i < 2; i++) {
      await expect(httpRequest(echo.port(), path)).rejects.toMatchObject({ code: 'ECONNRESET' });
    }
    expect((await httpRequest(echo.port(), path)).status).toBe(200);
  });

  it('logs one line per echoed request containing the request URI', async () => {
    const uri = '/mirror?gateway-api-conformance-request-id=4f1c2b7e';
    await httpRequest(echo.port(), uri);
    await eventually(() => echo.lines.some((l) => typeof l.msg === 'string' && l.msg.includes(uri)), {
      timeoutMs: 3_000,
      what: 'echo log line with the URI',
    });
    const lines = echo.lines.filter((l) => typeof l.msg === 'string' && l.msg.includes(uri));
    expect(lines).toHaveLength(1);
    expect(lines[0]?.msg).toMatch(
      /^Echoing back request made to \/mirror\?gateway-api-conformance-request-id=4f1c2b7e/,
    );
  });

  it('echoes a WebSocket text and binary frame on /ws', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${echo.port()}/ws`);
    ws.binaryType = 'arraybuffer';
    const got: Array<string | number[]> = [];
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('websocket echo timed out')), 5_000);
      ws.onerror = () => reject(new Error('websocket error'));
      ws.onopen = () => {
        ws.send('Websocket Support!');
        ws.send(new Uint8Array([1, 2, 3, 4, 5, 6, 7]));
      };
      ws.onmessage = (m: MessageEvent) => {
        got.push(typeof m.data === 'string' ? m.data : [...new Uint8Array(m.data as ArrayBuffer)]);
        if (got.length === 2) {
          clearTimeout(timer);
          resolve();
        }
      };
    });
    ws.close(1000);
    expect(got).toEqual(['Websocket Support!', [1, 2, 3, 4, 5, 6, 7]]);
  });
});

describe('h2c', () => {
  function h2get(path: string, headers: Record<string, string> = {}) {
    return new Promise<{ status: number; headers: H2Headers; body: string }>((resolve, reject) => {
      const session = h2connect(`http://127.0.0.1:${echo.port('h2c')}`);
      session.on('error', reject);
      const req = session.request({ ':path': path, ...headers });
      let body = '';
      let head: H2Headers = {};
      req.setEncoding('utf8');
      req.on('response', (h) => {
        head = h;
      });
      req.on('data', (c: string) => {
        body += c;
      });
      req.on('end', () => {
        session.close();
        resolve({ status: Number(head[':status']), headers: head, body });
      });
      req.on('error', (err) => {
        session.destroy();
        reject(err);
      });
      req.end();
    });
  }

  it('serves HTTP/2 with prior knowledge: proto HTTP/2.0, host from :authority', async () => {
    const res = await h2get('/h2c?q=1', { 'x-echo-set-header': 'X-H2:yes', 'x-lower': 'v' });
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('application/json');
    expect(res.headers['x-h2']).toBe('yes');
    const body = JSON.parse(res.body) as Echoed;
    expect(body.proto).toBe('HTTP/2.0');
    expect(body.path).toBe('/h2c?q=1');
    expect(body.host).toBe(`127.0.0.1:${echo.port('h2c')}`);
    expect(body.headers['X-Lower']).toEqual(['v']);
    expect(Object.keys(body.headers).some((k) => k.startsWith(':'))).toBe(false);
    expect(body.pod).toBe(POD);
  });

  it('answers plain HTTP/1.1 on the h2c port with 400 "Expected h2c request"', async () => {
    const res = await httpRequest(echo.port('h2c'), '/');
    expect(res.status).toBe(400);
    expect(res.body).toBe('Expected h2c request');
  });

  it('resets the stream for /retry without a code', async () => {
    await expect(h2get('/retry/x?uuid=h2-reset&succeedAfter=1')).rejects.toThrow();
    expect((await h2get('/retry/x?uuid=h2-reset&succeedAfter=1')).status).toBe(200);
  });
});

describe('termination', () => {
  it('exits 0 within a second of SIGTERM when idle', async () => {
    const child = await startSample(ECHO, { HTTP_PORT: '0', H2C_PORT: '0' }, ['http', 'h2c']);
    const started = performance.now();
    const code = await child.stop();
    expect(code).toBe(0);
    expect(performance.now() - started).toBeLessThan(1_000);
  });

  it('finishes an in-flight delayed request before exiting', async () => {
    const child = await startSample(ECHO, { HTTP_PORT: '0', H2C_PORT: '0' }, ['http', 'h2c']);
    try {
      const pending = httpRequest(child.port(), '/slow?delay=500ms');
      await eventually(() => child.lines.some((l) => l.uri === '/slow?delay=500ms'), { timeoutMs: 3_000 });
      const stopped = child.stop();
      const res = await pending;
      expect(res.status).toBe(200);
      expect(await stopped).toBe(0);
    } finally {
      await child.stop();
    }
  });
});
