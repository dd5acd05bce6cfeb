/**
 * Builds a lab and leaves it running so that a test can SIGKILL this process and check that
 * cleanupLeftovers(prefix) removes what it left: `node orphan.ts <prefix> <root> <block>`.
 * Creates a 2-node network, a pod runtime with one running pod, the cluster DNS, and one process in a node
 * namespace that does NOT die with us (as a crashed component might leave). Prints one JSON line with the
 * pids once everything runs, then waits to be killed.
 */
import { spawn } from 'node:child_process';
import { ClusterDns } from '../../dns/index.ts';
import { PodRuntime } from '../../runtime/index.ts';
import { LabNetwork } from '../index.ts';
import { tool } from '../sys.ts';

const [prefix = '', root = '', block = '0'] = process.argv.slice(2);
const net = await LabNetwork.create({ prefix, root, nodes: 2, block: Number(block) });
const dns = await ClusterDns.forLab(net);
const rt = await PodRuntime.forNode(net, 0, {
  resolveImage: (image) => (image === 'sleeper' ? { hostCommand: ['/bin/sleep', 'infinity'] } : null),
});
rt.runPod({
  uid: 'orphan-pod',
  namespace: 'default',
  name: 'orphan',
  containers: [{ name: 'c', image: 'sleeper' }],
});
const deadline = Date.now() + 15_000;
while (rt.status('orphan-pod')?.phase !== 'Running' && Date.now() < deadline)
  await new Promise((r) => setTimeout(r, 50));
const stray = spawn(tool('nsenter'), [`--net=${net.node(1).netnsPath}`, '--', '/bin/sleep', '1000'], {
  detached: true,
  stdio: 'ignore',
});
stray.unref();
process.stdout.write(
  `${JSON.stringify({
    ready: rt.status('orphan-pod')?.phase === 'Running',
    container: rt.containerPid('orphan-pod', 'c'),
    dns: dns.pid,
    stray: stray.pid,
  })}\n`,
);
setInterval(() => undefined, 60_000);
