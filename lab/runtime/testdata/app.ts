/**
 * Test program run as a container by the root-tier lab tests. An HTTP server on $PORT (default 8080):
 *   GET /            → "<NAME> from <client address> args=<argv joined by ,>"
 *   GET /ready       → 200 until /fail was called, then 500 (for readiness/liveness probes)
 *   GET /fail        → make /ready fail
 *   GET /sources     → JSON list of client addresses that called /ready (who probes us)
 * Environment knobs: IGNORE_TERM=1 ignores SIGTERM (to test the SIGKILL after the grace period);
 * SPAWN_CHILD=1 starts a `sleep` grandchild and prints its pid (to test that the whole tree dies);
 * EXIT_AFTER_MS / EXIT_CODE exit after a delay (crash loops).
 */
import { spawn } from 'node:child_process';
import http from 'node:http';

const port = Number(process.env.PORT ?? 8080);
const name = process.env.NAME ?? 'app';
let healthy = true;
const sources: string[] = [];

if (process.env.IGNORE_TERM === '1') {
  process.on('SIGTERM', () => {
    console.log('SIGTERM ignored');
  });
}
if (process.env.SPAWN_CHILD === '1') {
  const child = spawn('/bin/sleep', ['1000'], { stdio: 'ignore', detached: true });
  child.unref();
  console.log(`child ${child.pid}`);
}
if (process.env.EXIT_AFTER_MS) {
  setTimeout(() => process.exit(Number(process.env.EXIT_CODE ?? 1)), Number(process.env.EXIT_AFTER_MS));
}

const server = http.createServer((req, res) => {
  const peer = (req.socket.remoteAddress ?? '').replace(/^::ffff:/, '');
  const url = req.url ?? '/';
  if (url === '/ready') {
    if (sources.length < 1000) sources.push(peer);
    res.statusCode = healthy ? 200 : 500;
    res.end(healthy ? 'ok\n' : 'failing\n');
    return;
  }
  if (url === '/fail') {
    healthy = false;
    res.end('now failing\n');
    return;
  }
  if (url === '/sources') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify([...new Set(sources)]));
    return;
  }
  res.end(`${name} from ${peer} args=${process.argv.slice(2).join(',')}\n`);
});
server.listen(port, () => {
  console.log(`listening on ${port}`);
  console.error(`stderr line from ${name}`);
});
