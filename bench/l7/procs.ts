/**
 * The L7 benchmark's programs, each run inside a pod's network namespace with `nsenter --net=<netns path>`
 * (nsenter execs the program, so the child's pid is the program's own): the HTTP backend, the load generator,
 * and nginx and haproxy as L7 reverse proxies with the same routing as the waypoint's HTTPRoute. Every
 * long-running child is recorded (bench/netns-procs.ts) so that `stopAll` ends exactly those processes.
 */
import { type ChildProcess, execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NODE, RUN_GRACE_MS, runIn, startServer } from '../netns-procs.ts';
import type { HttpLoadConfig, HttpLoadResult } from './httpload.ts';

const HERE = dirname(fileURLToPath(import.meta.url));

export { killAllNow, stopAll } from '../netns-procs.ts';

/** The backend (bench/l7/server.ts): `ports` maps each port to the version it answers with. */
export function startBackend(
  netns: string,
  ports: Readonly<Record<number, string>>,
  bodyBytes: number,
): Promise<ChildProcess> {
  return startServer(
    netns,
    [NODE, join(HERE, 'server.ts'), JSON.stringify({ ports, bodyBytes })],
    Object.keys(ports).map(Number),
    'HTTP backend',
  );
}

/** One load-generator run (bench/l7/httpload.ts) from a netns. */
export async function httpLoad(netns: string, cfg: HttpLoadConfig): Promise<HttpLoadResult> {
  const out = await runIn(
    netns,
    [NODE, join(HERE, 'httpload.ts'), JSON.stringify(cfg)],
    cfg.warmupMs + cfg.durationMs + RUN_GRACE_MS,
  );
  return JSON.parse(out) as HttpLoadResult;
}

// ------------------------------------------------------------------------------------------------ proxies

/**
 * The routing every proxy implements (the waypoint's HTTPRoute says the same): requests under `prefix`
 * (the path itself or below it) with header `header: value` go to v1, other requests under `prefix` to v2,
 * anything else is answered 404 by the proxy.
 */
export interface Routing {
  readonly prefix: string;
  readonly header: string;
  readonly value: string;
  /** `ip:port` of the v1 and v2 backends. */
  readonly v1: string;
  readonly v2: string;
}

export interface ProxyOptions {
  readonly dir: string;
  readonly netns: string;
  readonly port: number;
  readonly routing: Routing;
  /** One access-log line per request to stdout (a pipe this process drains), like the waypoint's default. */
  readonly accessLog: boolean;
}

/**
 * nginx, one worker (the waypoint is one Node process: one core), as an HTTP/1.1 reverse proxy: `location`
 * prefix + `map` on the header → `upstream` with a keepalive pool, keep-alive on both sides without request
 * limits, no access log unless asked, errors to stderr.
 */
export function startNginx(o: ProxyOptions): Promise<ChildProcess> {
  const dir = join(o.dir, 'nginx');
  mkdirSync(dir, { recursive: true });
  const r = o.routing;
  const upstream = (name: string, addr: string) =>
    `  upstream ${name} {\n    server ${addr};\n    keepalive 64;\n    keepalive_requests 1000000;\n    keepalive_timeout 600s;\n  }\n`;
  const proxy =
    '      proxy_pass http://$backend;\n      proxy_http_version 1.1;\n      proxy_set_header Connection "";\n';
  const conf = [
    'daemon off;',
    'master_process on;',
    'worker_processes 1;',
    'user root;',
    `pid ${join(dir, 'nginx.pid')};`,
    'error_log stderr error;',
    'events { worker_connections 4096; }',
    'http {',
    `  access_log ${o.accessLog ? '/dev/stdout' : 'off'};`,
    `  client_body_temp_path ${join(dir, 'body')};`,
    `  proxy_temp_path ${join(dir, 'proxy')};`,
    `  fastcgi_temp_path ${join(dir, 'fastcgi')};`,
    `  uwsgi_temp_path ${join(dir, 'uwsgi')};`,
    `  scgi_temp_path ${join(dir, 'scgi')};`,
    '  keepalive_requests 1000000;',
    '  keepalive_timeout 600s;',
    `  map $http_${r.header.replaceAll('-', '_')} $backend {`,
    `    ${r.value} v1;`,
    '    default v2;',
    '  }',
    upstream('v1', r.v1) + upstream('v2', r.v2),
    '  server {',
    `    listen ${o.port} backlog=1024;`,
    `    location = ${r.prefix} {`,
    proxy,
    '    }',
    `    location ${r.prefix}/ {`,
    proxy,
    '    }',
    '    location / { return 404; }',
    '  }',
    '}',
    '',
  ].join('\n');
  const file = join(dir, 'nginx.conf');
  writeFileSync(file, conf);
  return startServer(o.netns, ['nginx', '-c', file, '-p', dir], [o.port], 'nginx');
}

/**
 * haproxy, one thread, `mode http`: ACLs on the path (`path` / `path_beg`) and the header select the
 * backend, other paths are denied with 404; keep-alive to the clients and to the server (`http-reuse
 * always`), no logging unless asked.
 */
export function startHaproxy(o: ProxyOptions): Promise<ChildProcess> {
  const dir = join(o.dir, 'haproxy');
  mkdirSync(dir, { recursive: true });
  const r = o.routing;
  const conf = [
    'global',
    '  nbthread 1',
    '  maxconn 4096',
    ...(o.accessLog ? ['  log stdout format raw local0 info'] : []),
    'defaults',
    '  mode http',
    ...(o.accessLog ? ['  log global', '  option httplog'] : []),
    '  timeout connect 5s',
    '  timeout client 600s',
    '  timeout server 600s',
    '  timeout http-keep-alive 600s',
    '  http-reuse always',
    'frontend bench',
    `  bind :${o.port}`,
    `  acl api path ${r.prefix}`,
    `  acl api path_beg ${r.prefix}/`,
    `  acl v1 req.hdr(${r.header}) -m str ${r.value}`,
    '  http-request deny deny_status 404 if !api',
    '  use_backend v1 if v1',
    '  default_backend v2',
    'backend v1',
    `  server s1 ${r.v1}`,
    'backend v2',
    `  server s1 ${r.v2}`,
    '',
  ].join('\n');
  const file = join(dir, 'haproxy.cfg');
  writeFileSync(file, conf);
  return startServer(o.netns, ['haproxy', '-db', '-f', file], [o.port], 'haproxy');
}

export function toolVersions(): string {
  const first = (cmd: string) => {
    try {
      return execFileSync('sh', ['-c', cmd], { encoding: 'utf8' }).split('\n')[0]!.trim();
    } catch {
      return `${cmd}: missing`;
    }
  };
  return `${first('nginx -v 2>&1')}; ${first('haproxy -v')}`;
}
