/**
 * istiod's xDS debug endpoints for the :8080 debug server (Istio serves the same paths there):
 * - `GET /debug/syncz`: per connected proxy and type, what was sent, ACKed, NACKed and what is pending.
 * - `GET /debug/ambientz`: the resources ztunnels are sent, as proto JSON (`?type=wds|wads`, default both).
 * - `GET /debug/waypointz`: per waypoint, the ServiceConfigs it is sent and its connected clients
 *   (`?waypoint=<ns>/<name>` for one, `&configs=1` to include the configs as proto JSON).
 * The handler returns false for other paths so the caller can route them elsewhere.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Address, Authorization } from '../../../pkg/xds/index.ts';
import type { AmbientIndex } from '../index/index.ts';
import type { XdsServer } from './server.ts';

export interface DebugSources {
  readonly xds: XdsServer;
  readonly index?: AmbientIndex;
  /** The waypoint L7 compiler (istiod/src/l7), for /debug/waypointz. */
  readonly waypoints?: { waypointz(opts: { waypoint: string | null; configs: boolean }): unknown };
}

const PATHS = new Set(['/debug/syncz', '/debug/ambientz', '/debug/waypointz']);

export function handleDebugRequest(src: DebugSources, req: IncomingMessage, res: ServerResponse): boolean {
  const url = new URL(req.url ?? '/', 'http://localhost');
  if (!PATHS.has(url.pathname)) return false;
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD' }).end();
    return true;
  }
  let body: unknown;
  if (url.pathname === '/debug/syncz') {
    body = src.xds.syncz();
  } else if (url.pathname === '/debug/waypointz') {
    if (!src.waypoints) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('no waypoint compiler in this process\n');
      return true;
    }
    body = src.waypoints.waypointz({
      waypoint: url.searchParams.get('waypoint'),
      configs: url.searchParams.get('configs') === '1',
    });
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
