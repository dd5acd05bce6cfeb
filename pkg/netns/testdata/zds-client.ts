/**
 * Child process for netns.root.test.ts, playing ztunnel's side of ZDS: connects to the SEQPACKET server at
 * argv[2], waits for one message `listen <port>` carrying a netns fd, opens a TCP listener in that namespace
 * (from its own root namespace), serves `hello <payload> from <pid>` on it, and replies `ready <inode>`.
 * It exits when the server hangs up, or after 20 s whatever happens.
 */
import net from 'node:net';
import { closeFd, listenInNetns, netnsInode, SeqpacketSocket } from '../index.ts';

const path = process.argv[2];
if (!path) throw new Error('usage: zds-client.ts <socket path>');
const hardStop = setTimeout(() => {
  console.error('zds-client: timeout');
  process.exit(3);
}, 20_000);
hardStop.unref();

const server = net.createServer((conn) => conn.end(`hello ${payload} from ${process.pid}\n`));
let payload = '';
const sock = SeqpacketSocket.connect(path);
sock.on('error', (err) => {
  console.error(`zds-client: ${err}`);
  process.exit(2);
});
sock.on('close', () => {
  server.close();
  process.exit(0);
});
sock.on('message', (data, fds) => {
  const [cmd, port] = data.toString('utf8').split(' ');
  const [nsfd] = fds;
  if (cmd !== 'listen' || nsfd === undefined || fds.length !== 1) {
    console.error(`zds-client: unexpected message ${JSON.stringify(data.toString())} with ${fds.length} fds`);
    process.exit(4);
  }
  payload = data.toString('utf8');
  const inode = netnsInode(nsfd);
  listenInNetns(server, { netns: nsfd, host: '0.0.0.0', port: Number(port) })
    .then(() => {
      closeFd(nsfd); // the received fd is ours; the listener keeps the namespace alive
      sock.send(Buffer.from(`ready ${inode} ${netnsInode('/proc/thread-self/ns/net')}`));
    })
    .catch((err: unknown) => {
      console.error(`zds-client: ${String(err)}`);
      process.exit(5);
    });
});
