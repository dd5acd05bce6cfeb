/**
 * The cluster DNS process: `node lab/dns/main.ts --address <ip> --port 53 --domain cluster.local`, started in
 * the lab's fabric namespace by ClusterDns. Record sets arrive as JSON lines on stdin
 * (`{"records":{"services":[…]}}`); it prints `{"ready":true,"port":N}` once bound, `{"applied":N}` after each
 * record set, and exits when stdin closes (its owner is gone).
 */
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { DnsServer } from './server.ts';
import type { DnsRecordSet } from './zone.ts';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      address: { type: 'string' },
      port: { type: 'string', default: '53' },
      domain: { type: 'string', default: 'cluster.local' },
    },
  });
  const address = values.address ?? '0.0.0.0';
  const server = new DnsServer({ domain: values.domain, nsIp: address });
  let port: number;
  try {
    port = await server.listen(address, Number(values.port));
  } catch (err) {
    process.stdout.write(`${JSON.stringify({ ready: false, error: (err as Error).message })}\n`);
    process.exit(1);
  }
  let applied = 0;
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    try {
      const msg = JSON.parse(line) as { records?: DnsRecordSet };
      if (msg.records && Array.isArray(msg.records.services)) {
        server.setRecords(msg.records);
        process.stdout.write(`${JSON.stringify({ applied: ++applied })}\n`);
      }
    } catch (err) {
      process.stderr.write(`dns: bad control line: ${(err as Error).message}\n`);
    }
  });
  rl.on('close', () => {
    void server.close().then(() => process.exit(0));
  });
  process.stdout.write(`${JSON.stringify({ ready: true, port })}\n`);
}

if (import.meta.main) void main();
