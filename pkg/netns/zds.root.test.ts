/**
 * Root tier: a network namespace fd travels over SOCK_SEQPACKET (SCM_RIGHTS) to another process, as in ZDS
 * (this test plays the CNI agent = server; a child node process plays ztunnel = client), and the child opens
 * a working listener inside that namespace from its own root namespace.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  closeFd,
  connectInNetns,
  currentNetnsInode,
  netnsInode,
  openNetns,
  SeqpacketServer,
  type SeqpacketSocket,
} from './index.ts';
import { randomSubnet, TestNetns, vethPair } from './testdata/topology.ts';

const CHILD = fileURLToPath(new URL('./testdata/zds-client.ts', import.meta.url));
const N = randomSubnet();
const A_IP = `10.202.${N}.1`;
const B_IP = `10.202.${N}.2`;

let A: TestNetns;
let B: TestNetns;
let dir: string;
let child: ChildProcess | undefined;

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

beforeAll(() => {
  A = TestNetns.create();
  B = TestNetns.create();
  vethPair(A, 'a0', B, 'b0');
  A.ip('addr', 'add', `${A_IP}/24`, 'dev', 'a0');
  B.ip('addr', 'add', `${B_IP}/24`, 'dev', 'b0');
  dir = mkdtempSync(join(tmpdir(), 'amb-t-zds-'));
});

afterAll(() => {
  if (child && child.exitCode === null) child.kill('SIGKILL');
  A?.delete();
  B?.delete();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('netns fd over SEQPACKET to another process', () => {
  it('the child receives the fd with the payload and serves TCP inside that namespace', async () => {
    const home = currentNetnsInode();
    const path = join(dir, 'ztunnel.sock');
    const server = SeqpacketServer.listen(path, { mode: 0o600 });
    const port = 20_000 + N;
    let stderr = '';
    let conn: SeqpacketSocket | undefined;
    try {
      const connected = new Promise<SeqpacketSocket>((resolve) => server.once('connection', resolve));
      child = spawn(process.execPath, [CHILD, path], { stdio: ['ignore', 'pipe', 'pipe'] });
      child.stderr?.on('data', (d: Buffer) => {
        stderr += d.toString();
      });
      const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)));
      conn = await withTimeout(connected, 15_000, `the child to connect (stderr: ${stderr})`);

      const reply = new Promise<string>((resolve, reject) => {
        conn!.once('message', (data, fds) => {
          if (fds.length > 0) reject(new Error(`unexpected fds ${fds.join(',')}`));
          resolve(data.toString());
        });
        conn!.once('close', () => reject(new Error(`child hung up early; stderr: ${stderr}`)));
      });
      const nsfd = openNetns(A.path);
      try {
        expect(conn.send(Buffer.from(`listen ${port}`), [nsfd])).toBe(true);
      } finally {
        // send() never takes ownership: the message carries the kernel's own duplicate.
        closeFd(nsfd);
      }
      const [word, childNsInode, childOwnInode] = (await withTimeout(reply, 15_000, 'ready')).split(' ');
      expect(word).toBe('ready');
      expect(Number(childNsInode)).toBe(netnsInode(A.path));
      expect(Number(childOwnInode)).toBe(home); // the child itself stayed in the root namespace

      // Inside A, over loopback, and from B across the veth: the listener lives in A.
      for (const [ns, host] of [
        [A.path, '127.0.0.1'],
        [B.path, A_IP],
      ] as const) {
        const sock = await connectInNetns({ netns: ns, host, port, timeoutMs: 5_000 });
        const text = await withTimeout(
          new Promise<string>((resolve, reject) => {
            let buf = '';
            sock.on('data', (d: Buffer) => {
              buf += d.toString();
            });
            sock.on('end', () => resolve(buf));
            sock.on('error', reject);
          }),
          5_000,
          'hello',
        );
        expect(text).toBe(`hello listen ${port} from ${child.pid}\n`);
      }
      // Hanging up ends the child's ZDS session; it exits cleanly.
      conn.close();
      expect(await withTimeout(exited, 10_000, 'child exit')).toBe(0);
      expect(currentNetnsInode()).toBe(home);
    } finally {
      conn?.close();
      server.close();
      if (child && child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
