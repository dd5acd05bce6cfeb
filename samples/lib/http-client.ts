/**
 * The outbound HTTP call Bookinfo services make to each other: one GET, a deadline for the whole exchange, and
 * a NEW connection per request (`agent: false`). Upstream's clients (Python `requests.get` without a session,
 * a fresh JAX-RS client per call) do the same, and it matters in the mesh: ztunnel balances per connection, so
 * a pooled keep-alive connection would pin every request to one reviews pod and stop v1/v2/v3 rotating.
 */
import { request } from 'node:http';

/** Largest response body a service reads from another (the real ones are < 1 KiB). */
export const MAX_RESPONSE_BYTES = 1 << 20;

export type GetOutcome =
  | { readonly ok: true; readonly status: number; readonly body: string }
  | { readonly ok: false; readonly error: string };

/** `http://host:port` with IPv6 literals bracketed. */
export function serviceBase(host: string, port: number | string): string {
  const h = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  return `http://${h}:${port}`;
}

/** GET `url`; never rejects: transport errors, timeouts and oversized bodies come back as `ok: false`. */
export function httpGet(
  url: string,
  headers: Readonly<Record<string, string>>,
  timeoutMs: number,
): Promise<GetOutcome> {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (outcome: GetOutcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(outcome);
    };
    const req = request(url, { method: 'GET', headers, agent: false });
    const timer = setTimeout(() => {
      finish({ ok: false, error: `timeout after ${timeoutMs}ms` });
      req.destroy();
    }, timeoutMs);
    req.once('error', (err) => finish({ ok: false, error: err.message }));
    req.once('response', (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_RESPONSE_BYTES) {
          finish({ ok: false, error: `response larger than ${MAX_RESPONSE_BYTES} bytes` });
          req.destroy();
          return;
        }
        chunks.push(chunk);
      });
      res.once('end', () =>
        finish({ ok: true, status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
      );
      res.once('error', (err) => finish({ ok: false, error: err.message }));
      res.once('aborted', () => finish({ ok: false, error: 'response aborted' }));
    });
    req.end();
  });
}

/** Parses JSON, or null when the body is not JSON. */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return null;
  }
}
