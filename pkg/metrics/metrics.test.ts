import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { Counter, createRegistry, serveMetrics } from './index.ts';

describe('metrics', () => {
  const registry = createRegistry({ component: 'test' });
  const c = new Counter({
    name: 'istio_test_total',
    help: 'test',
    labelNames: ['reporter'],
    registers: [registry],
  });
  const server = createServer((req, res) => {
    if (!serveMetrics(registry, req, res)) res.writeHead(404).end();
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('serves the registry on /metrics and /stats/prometheus only', async () => {
    c.inc({ reporter: 'source' });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as AddressInfo).port;
    for (const path of ['/metrics', '/stats/prometheus']) {
      const res = await fetch(`http://127.0.0.1:${port}${path}`);
      expect(res.status).toBe(200);
      const body = await res.text();
      expect(body).toContain('istio_test_total{reporter="source",component="test"} 1');
      expect(body).toContain('process_cpu_seconds_total');
    }
    expect((await fetch(`http://127.0.0.1:${port}/other`)).status).toBe(404);
    expect((await fetch(`http://127.0.0.1:${port}/metrics`, { method: 'POST' })).status).toBe(405);
  });
});
