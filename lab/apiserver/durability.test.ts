/**
 * Durability: writes acknowledged by a server process survive `kill -9` of that process, and the restarted
 * server continues resourceVersions above everything it handed out before.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, describe, expect, it } from 'vitest';

const MAIN = new URL('./main.ts', import.meta.url).pathname;
/** Concurrent writers, so several records share a group commit when the kill lands. */
const CONCURRENCY = 16;

interface Child {
  readonly proc: ChildProcess;
  readonly url: string;
  readonly port: number;
}

async function startChild(dir: string, port = 0): Promise<Child> {
  const proc = spawn(
    process.execPath,
    [MAIN, '--data-dir', dir, '--port', String(port), '--no-controllers', '--snapshot-every', '40'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LOG_LEVEL: 'warn' },
    },
  );
  let stderr = '';
  proc.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const line = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: proc.stdout as NodeJS.ReadableStream });
    const timer = setTimeout(() => reject(new Error(`child did not start: ${stderr}`)), 15_000);
    rl.once('line', (l) => {
      clearTimeout(timer);
      resolve(l);
    });
    proc.once('exit', (code) => reject(new Error(`child exited ${code}: ${stderr}`)));
  });
  const info = JSON.parse(line) as { url: string; port: number };
  return { proc, url: info.url, port: info.port };
}

function call(
  c: Child,
  ca: string,
  token: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; json: unknown }> {
  return new Promise((resolve, reject) => {
    const req = request(
      new URL(path, c.url),
      {
        method,
        ca,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', () => {
          try {
            resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString()) });
          } catch (err) {
            reject(err);
          }
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

describe('durability across kill -9', () => {
  const dirs: string[] = [];
  const procs: ChildProcess[] = [];
  afterEach(async () => {
    for (const p of procs.splice(0)) if (p.exitCode === null) p.kill('SIGKILL');
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  });

  it('keeps every acknowledged write and continues resourceVersions', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'lab-durable-'));
    dirs.push(dir);
    const first = await startChild(dir);
    procs.push(first.proc);
    const ca = await readFile(join(dir, 'pki', 'ca.crt'), 'utf8');
    const token = (await readFile(join(dir, 'pki', 'admin.token'), 'utf8')).trim();
    const acked = new Map<string, number>();
    let next = 0;
    let killed = false;
    const KILL_AFTER = 150;
    const writer = async (): Promise<void> => {
      while (!killed) {
        const name = `cm-${next++}`;
        try {
          const r = await call(first, ca, token, 'POST', '/api/v1/namespaces/default/configmaps', {
            metadata: { name },
            data: { n: name },
          });
          if (r.status === 201)
            acked.set(
              name,
              Number((r.json as { metadata: { resourceVersion: string } }).metadata.resourceVersion),
            );
          if (acked.size >= KILL_AFTER && !killed) {
            killed = true;
            first.proc.kill('SIGKILL');
          }
        } catch {
          // The connection died with the server: this write was not acknowledged.
        }
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, writer));
    await new Promise<void>((r) =>
      first.proc.exitCode !== null || first.proc.signalCode !== null
        ? r()
        : first.proc.once('exit', () => r()),
    );
    expect(first.proc.signalCode).toBe('SIGKILL');
    expect(acked.size).toBeGreaterThanOrEqual(KILL_AFTER);
    // Snapshots were taken along the way and old log segments removed.
    const files = await readdir(join(dir, 'state'));
    expect(files).toContain('snapshot.json');
    expect(files.filter((f) => f.startsWith('wal-')).length).toBeLessThanOrEqual(3);

    const second = await startChild(dir, first.port);
    procs.push(second.proc);
    const list = await call(second, ca, token, 'GET', '/api/v1/namespaces/default/configmaps');
    const items = (list.json as { items: Array<{ metadata: { name: string; resourceVersion: string } }> })
      .items;
    const present = new Map(items.map((i) => [i.metadata.name, Number(i.metadata.resourceVersion)]));
    for (const [name, rv] of acked) {
      expect(present.has(name), `${name} was acknowledged but is missing`).toBe(true);
      expect(present.get(name)).toBe(rv);
    }
    const maxRv = Math.max(...acked.values(), ...present.values());
    const after = await call(second, ca, token, 'POST', '/api/v1/namespaces/default/configmaps', {
      metadata: { name: 'after-restart' },
    });
    expect(after.status).toBe(201);
    expect(
      Number((after.json as { metadata: { resourceVersion: string } }).metadata.resourceVersion),
    ).toBeGreaterThan(maxRv);
    second.proc.kill('SIGTERM');
    await new Promise<void>((r) => second.proc.once('exit', () => r()));
    expect(second.proc.exitCode).toBe(0);
  });
});
