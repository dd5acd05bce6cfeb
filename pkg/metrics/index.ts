/**
 * Prometheus metrics with prom-client. Each component owns one Registry (never the global one, so tests and
 * several components in one process never collide) and serves it on its metrics port under `/metrics` and
 * `/stats/prometheus` (the path Istio's ztunnel and Envoy use).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { collectDefaultMetrics, Registry } from 'prom-client';

export { Counter, Gauge, Histogram, Registry, Summary } from 'prom-client';

export const METRICS_PATHS: ReadonlySet<string> = new Set(['/metrics', '/stats/prometheus']);

export function createRegistry(defaultLabels: Readonly<Record<string, string>> = {}): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ ...defaultLabels });
  collectDefaultMetrics({ register: registry });
  return registry;
}

/**
 * Answers a metrics scrape; returns false when the request is not for a metrics path so the caller can route
 * it elsewhere.
 */
export function serveMetrics(registry: Registry, req: IncomingMessage, res: ServerResponse): boolean {
  const path = (req.url ?? '/').split('?', 1)[0] ?? '/';
  if (!METRICS_PATHS.has(path)) return false;
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD' }).end();
    return true;
  }
  registry.metrics().then(
    (body) => {
      res.writeHead(200, { 'content-type': registry.contentType });
      res.end(req.method === 'HEAD' ? undefined : body);
    },
    (err: unknown) => {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics collection failed: ${String(err)}\n`);
    },
  );
  return true;
}
