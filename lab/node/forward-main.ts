/**
 * Forwarder process started inside a lab network namespace by NetnsPortForward:
 * `node forward-main.ts --listen <ip>:<port> --unix <socket path>`. Accepts TCP on the lab address and pipes
 * each connection to the unix socket (unix sockets are file system objects, so they cross network
 * namespaces). Prints `{"ready":true}` once listening; exits when stdin closes.
 */
import net from 'node:net';
import { parseArgs } from 'node:util';

function main(): void {
  const { values } = parseArgs({ options: { listen: { type: 'string' }, unix: { type: 'string' } } });
  const listen = values.listen ?? '';
  const sep = listen.lastIndexOf(':');
  const host = listen.slice(0, sep);
  const port = Number(listen.slice(sep + 1));
  const unix = values.unix ?? '';
  const server = net.createServer((client) => {
    const upstream = net.connect(unix);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
  });
  server.on('error', (err) => {
    process.stdout.write(`${JSON.stringify({ ready: false, error: err.message })}\n`);
    process.exit(1);
  });
  server.listen(port, host, () => process.stdout.write(`${JSON.stringify({ ready: true })}\n`));
  process.stdin.resume();
  process.stdin.on('end', () => process.exit(0));
}

if (import.meta.main) main();
