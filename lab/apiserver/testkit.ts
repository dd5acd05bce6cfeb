/**
 * Test helpers for the lab API server: a server per test in a temp dir, the real kubectl against it (its own
 * cache dir and HOME, never ~/.kube), raw HTTPS requests with the admin token, and polling.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Controllers } from '../controllers/index.ts';
import { ApiServer, type ApiServerOptions } from './index.ts';

export const KUBECTL = '/usr/bin/kubectl';
/** Generous for a loaded 2-core machine; a hanging kubectl fails the test instead of the whole run. */
const KUBECTL_TIMEOUT_MS = 20_000;

export interface Lab {
  readonly api: ApiServer;
  readonly controllers: Controllers | null;
  readonly dir: string;
  kubectl(args: readonly string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }>;
  /** Runs kubectl and fails with its stderr unless it exits 0. */
  k(args: readonly string[], input?: string): Promise<string>;
  req(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<HttpResult>;
  close(): Promise<void>;
}

export interface HttpResult {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly text: string;
  /** Parsed JSON body (or undefined). */
  readonly json: unknown;
}

export interface LabOptions extends Partial<ApiServerOptions> {
  readonly controllers?: boolean;
  readonly nodeLeaseFreshMs?: number;
}

export async function startLab(o: LabOptions = {}): Promise<Lab> {
  const dir = await mkdtemp(join(tmpdir(), 'lab-apiserver-'));
  const api = await ApiServer.create({ ...o, dataDir: o.dataDir ?? join(dir, 'data') });
  const controllers = o.controllers
    ? await Controllers.create({
        api,
        ...(o.nodeLeaseFreshMs ? { nodeLeaseFreshMs: o.nodeLeaseFreshMs } : {}),
      })
    : null;
  controllers?.run();
  const kubectl = (args: readonly string[], input?: string) =>
    runKubectl(api.kubeconfigPath, dir, args, input);
  return {
    api,
    controllers,
    dir,
    kubectl,
    async k(args, input) {
      const r = await kubectl(args, input);
      if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
      return r.stdout;
    },
    req: (method, path, body, headers) => httpRequest(api, method, path, body, headers),
    async close() {
      await controllers?.close();
      await api.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export function runKubectl(
  kubeconfig: string,
  dir: string,
  args: readonly string[],
  input?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(
      KUBECTL,
      ['--kubeconfig', kubeconfig, '--cache-dir', join(dir, 'kube-cache'), ...args],
      {
        timeout: KUBECTL_TIMEOUT_MS,
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir },
        maxBuffer: 32 * 1024 * 1024,
      },
      (err, stdout, stderr) => {
        const code = err
          ? typeof (err as { code?: unknown }).code === 'number'
            ? ((err as { code: number }).code as number)
            : 1
          : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) });
      },
    );
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** Spawns a long-running kubectl (e.g. `get --watch`); returns the child and a line reader. */
export function spawnKubectl(lab: Lab, args: readonly string[]) {
  const child = spawn(
    KUBECTL,
    ['--kubeconfig', lab.api.kubeconfigPath, '--cache-dir', join(lab.dir, 'kube-cache'), ...args],
    {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: lab.dir },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    out += d.toString();
  });
  return { child, output: () => out };
}

export function httpRequest(
  api: ApiServer,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<HttpResult> {
  const url = new URL(path, api.url);
  const data =
    body === undefined
      ? undefined
      : typeof body === 'string' || Buffer.isBuffer(body)
        ? body
        : JSON.stringify(body);
  const h: Record<string, string> = { authorization: `Bearer ${api.adminToken}`, ...headers };
  if (data !== undefined && !Object.keys(h).some((k) => k.toLowerCase() === 'content-type'))
    h['content-type'] = 'application/json';
  for (const k of Object.keys(h)) if (h[k] === '') delete h[k];
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { method, headers: h, ca: api.caPem, timeout: 10_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path} timed out`)));
    req.on('error', reject);
    if (data !== undefined) req.end(data);
    else req.end();
  });
}

/** Polls `fn` until it returns a truthy value (or stops throwing) or the deadline passes. */
export async function eventually<T>(
  fn: () => T | Promise<T>,
  timeoutMs = 10_000,
  intervalMs = 25,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
      last = new Error(`condition not met: ${String(v)}`);
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw last instanceof Error ? last : new Error(String(last));
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** A Ready node object (what a kubelet would register). */
export function readyNode(name: string, labels: Record<string, string> = {}): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels: { 'kubernetes.io/hostname': name, 'kubernetes.io/os': 'linux', ...labels } },
    status: {
      conditions: [
        {
          type: 'Ready',
          status: 'True',
          reason: 'KubeletReady',
          message: 'kubelet is posting ready status',
          lastHeartbeatTime: new Date().toISOString(),
          lastTransitionTime: new Date().toISOString(),
        },
      ],
    },
  };
}
