/**
 * Child process for netns.root.test.ts: makes socket(2) fail *while the thread is inside* the target namespace
 * and checks that the thread came back anyway. It fills every free fd slot, leaves exactly one (taken by the
 * addon's handle on the original namespace), and lowers RLIMIT_NOFILE so that the socket() that follows
 * setns fails with EMFILE. Prints one JSON line with what it saw.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { isMeshError } from '../../errors/index.ts';
import { currentNetnsInode, listenTcpInNetns, netnsInode, openNetns, tcpSocketInNetns } from '../index.ts';

const nsPath = process.argv[2];
if (!nsPath) throw new Error('usage: emfile-child.ts <netns path>');
const home = currentNetnsInode();
const nsfd = openNetns(nsPath); // also loads the addon before the fd table is squeezed

function setSoftNofile(n: number): void {
  execFileSync('prlimit', ['--pid', String(process.pid), `--nofile=${n}:`], {
    timeout: 5_000,
    stdio: 'ignore',
  });
}

function attempt(fn: () => unknown): { code?: string; op?: unknown; errno?: unknown; home: boolean } {
  // Fill all holes: open() always returns the lowest free fd, so afterwards every fd <= top is in use.
  const filler: number[] = [];
  for (let i = 0; i < 64; i++) filler.push(openSync('/dev/null', 'r'));
  const top = filler.pop()!;
  setSoftNofile(top + 1);
  closeSync(top); // exactly one free slot below the limit
  let result: { code?: string; op?: unknown; errno?: unknown; home: boolean };
  try {
    fn();
    result = { home: currentNetnsInode() === home };
  } catch (err) {
    result = isMeshError(err)
      ? { code: err.code, op: err.details.op, errno: err.details.errno, home: currentNetnsInode() === home }
      : { code: String(err), home: currentNetnsInode() === home };
  } finally {
    for (const fd of filler.splice(0, 32)) closeSync(fd);
    setSoftNofile(4096);
    for (const fd of filler) closeSync(fd);
  }
  return result;
}

const listen = attempt(() => listenTcpInNetns({ netns: nsfd, host: '127.0.0.1', port: 0 }));
const outbound = attempt(() => tcpSocketInNetns({ netns: nsfd, family: 4 }));
console.log(
  JSON.stringify({
    listen,
    outbound,
    differentNs: netnsInode(nsfd) !== home,
    homeAtEnd: currentNetnsInode() === home,
  }),
);
