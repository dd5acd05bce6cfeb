/**
 * The node prober: one long-lived process per node, started inside the node's network namespace, that runs
 * HTTP GET and TCP probes the way kubelet does (so the application sees the node side of its veth as the
 * source, never loopback). Protocol: one JSON request per stdin line, one JSON answer per stdout line:
 *
 *   → {"id":1,"kind":"http","scheme":"HTTP","host":"10.1.1.5","port":8080,"path":"/ready","headers":[…],"timeoutMs":1000}
 *   → {"id":2,"kind":"tcp","host":"10.1.1.5","port":9000,"timeoutMs":1000}
 *   ← {"id":1,"ok":true,"message":"HTTP probe succeeded with statuscode: 200"}
 *
 * The process exits when stdin closes (its runtime is gone).
 */
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { createInterface } from 'node:readline';

/** kubelet reads at most this much of a probe response body. */
const MAX_BODY = 10 * 1024;
/** kubelet follows at most 10 redirects (Go's http.Client default). */
const MAX_REDIRECTS = 10;
const USER_AGENT = 'kube-probe/1.31';

export interface HttpProbeRequest {
  readonly id: number;
  readonly kind: 'http';
  readonly scheme: 'HTTP' | 'HTTPS';
  readonly host: string;
  readonly port: number;
  readonly path: string;
  readonly headers: readonly { readonly name: string; readonly value: string }[];
  readonly timeoutMs: number;
}

export interface TcpProbeRequest {
  readonly id: number;
  readonly kind: 'tcp';
  readonly host: string;
  readonly port: number;
  readonly timeoutMs: number;
}

export type ProbeRequest = HttpProbeRequest | TcpProbeRequest;

export interface ProbeAnswer {
  readonly id: number;
  readonly ok: boolean;
  readonly message: string;
}

function hostHeader(host: string, port: number): string {
  return net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}

function httpOnce(
  scheme: 'HTTP' | 'HTTPS',
  host: string,
  port: number,
  path: string,
  headers: Record<string, string>,
  deadline: number,
): Promise<{ status: number; location: string | null; body: string }> {
  return new Promise((resolve, reject) => {
    const mod = scheme === 'HTTPS' ? https : http;
    const req = mod.request(
      {
        host,
        port,
        path,
        method: 'GET',
        headers,
        agent: false,
        timeout: Math.max(1, deadline - Date.now()),
        ...(scheme === 'HTTPS' ? { rejectUnauthorized: false } : {}),
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          if (body.length < MAX_BODY) body += d;
        });
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            location: res.headers.location ?? null,
            body: body.slice(0, MAX_BODY),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('context deadline exceeded (Client.Timeout exceeded)')));
    req.on('error', reject);
    req.end();
  });
}

export async function httpProbe(r: HttpProbeRequest): Promise<ProbeAnswer> {
  const deadline = Date.now() + r.timeoutMs;
  const headers: Record<string, string> = { 'User-Agent': USER_AGENT, Accept: '*/*', Connection: 'close' };
  for (const h of r.headers) headers[h.name] = h.value;
  if (!Object.keys(headers).some((k) => k.toLowerCase() === 'host'))
    headers.Host = hostHeader(r.host, r.port);
  let path = r.path || '/';
  try {
    for (let hop = 0; ; hop++) {
      const res = await httpOnce(r.scheme, r.host, r.port, path, headers, deadline);
      if (res.status >= 300 && res.status < 400 && res.location && hop < MAX_REDIRECTS) {
        const base = `${r.scheme.toLowerCase()}://${hostHeader(r.host, r.port)}`;
        const next = new URL(res.location, `${base}${path}`);
        // kubelet follows redirects only to the same host; elsewhere counts as success (with a warning).
        if (next.host !== new URL(base).host) {
          return { id: r.id, ok: true, message: `Probe terminated redirects, Response body: ${res.body}` };
        }
        path = `${next.pathname}${next.search}`;
        continue;
      }
      if (res.status >= 200 && res.status < 400) {
        return { id: r.id, ok: true, message: `HTTP probe succeeded with statuscode: ${res.status}` };
      }
      return { id: r.id, ok: false, message: `HTTP probe failed with statuscode: ${res.status}` };
    }
  } catch (err) {
    return {
      id: r.id,
      ok: false,
      message: `Get "${r.scheme.toLowerCase()}://${hostHeader(r.host, r.port)}${path}": ${(err as Error).message}`,
    };
  }
}

export function tcpProbe(r: TcpProbeRequest): Promise<ProbeAnswer> {
  return new Promise((resolve) => {
    const s = net.connect({ host: r.host, port: r.port });
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ id: r.id, ok: false, message: `dial tcp ${hostHeader(r.host, r.port)}: i/o timeout` });
    }, r.timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.destroy();
      resolve({ id: r.id, ok: true, message: '' });
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      resolve({ id: r.id, ok: false, message: `dial tcp ${hostHeader(r.host, r.port)}: ${err.message}` });
    });
  });
}

function main(): void {
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    let req: ProbeRequest;
    try {
      req = JSON.parse(line) as ProbeRequest;
    } catch {
      return;
    }
    const p = req.kind === 'http' ? httpProbe(req) : tcpProbe(req);
    void p.then((a) => process.stdout.write(`${JSON.stringify(a)}\n`));
  });
  rl.on('close', () => process.exit(0));
  process.stdout.write(`${JSON.stringify({ id: 0, ok: true, message: 'ready' })}\n`);
}

if (import.meta.main) main();
