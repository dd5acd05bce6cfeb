/**
 * istiod's xDS debug endpoints for the :8080 debug server (Istio serves the same paths there):
 * - `GET /debug/syncz`: per connected proxy and type, what was sent, ACKed, NACKed and what is pending.
 * - `GET /debug/ambientz`: the resources ztunnels are sent, as proto JSON (`?type=wds|wads`, default both).
 * The handler returns false for other paths so the caller can route them elsewhere.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Address, Authorization } from '../../../pkg/xds/index.ts';
import type { AmbientIndex } from '../index/index.ts';
import type { XdsServer } from './server.ts';

export interface DebugSources {
  readonly xds: XdsServer;
  readonly index?: AmbientIndex;
}

export function handleDebugRequest(src: DebugSources, req: IncomingMessage, res: ServerResponse): boolean {
  const url = new URL(req.url ?? '/', 'http://localhost');
  if (url.pathname !== '/debug/syncz' && url.pathname !== '/debug/ambientz') return false;
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD' }).end();
    return true;
  }
  let body: unknown;
  if (url.pathname === '/debug/syncz') {
    body = src.xds.syncz();
  } else if (!src.index) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('no ambient index in this process\n');
    return true;
  } else {
    const type = url.searchParams.get('type');
    const index = src.index;
    const out: Record<string, unknown> = {};
    if (type === null || type === 'wds') {
      out.wds = Object.fromEntries(index.addressNames().map((n) => [n, Address.toJSON(index.address(n)!)]));
    }
    if (type === null || type === 'wads') {
      out.wads = Object.fromEntries(
        index.authorizationNames().map((n) => [n, Authorization.toJSON(index.authorization(n)!)]),
      );
    }
    body = out;
  }
  const text = `${JSON.stringify(body, null, 2)}\n`;
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(req.method === 'HEAD' ? undefined : text);
  return true;
}
