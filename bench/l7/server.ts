/**
 * The L7 benchmark's HTTP backend, run by bench/l7/run.ts inside a server pod's network namespace (nsenter):
 * Node's http server answering every request with `200`, a 1 KiB body and `x-served-by: <version>`, where the
 * version is per port (`{"ports":{"8080":"v1","8081":"v2"}}`), so a client can tell which backend a proxy's
 * routing chose. Keep-alive connections stay open (no idle timeout shorter than a run, no request limit).
 * Prints READY once every port listens.
 *
 *   node bench/l7/server.ts '{"ports":{"8080":"v1","8081":"v2"},"bodyBytes":1024}'
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';

interface ServerConfig {
  readonly ports: Readonly<Record<string, string>>;
  readonly bodyBytes: number;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as ServerConfig;
const body = Buffer.alloc(cfg.bodyBytes, 0x62);

function handler(version: string): (req: IncomingMessage, res: ServerResponse) => void {
  const headers = {
    'content-type': 'application/octet-stream',
    'content-length': String(body.length),
    'x-served-by': version,
  };
  return (req, res) => {
    // GET without a body: the request is complete; drain anything else.
    req.resume();
    res.writeHead(200, headers);
    res.end(body);
  };
}

await Promise.all(
  Object.entries(cfg.ports).map(
    ([port, version]) =>
      new Promise<void>((resolve) => {
        const s = createServer(
          { keepAliveTimeout: 600_000, headersTimeout: 600_000, requestTimeout: 0, noDelay: true },
          handler(version),
        );
        s.maxRequestsPerSocket = 0;
        s.listen({ port: Number(port), host: '0.0.0.0', backlog: 1024 }, resolve);
      }),
  ),
);
process.stdout.write('READY\n');
process.on('SIGTERM', () => process.exit(0));
