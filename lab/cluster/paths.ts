/**
 * Where a lab lives on disk, and its configuration.
 *
 *   <root>/lab.json            the lab's configuration (prefix, address block, nodes), written by `up`
 *   <root>/supervisor.pid      pid and start time of the supervisor process
 *   <root>/supervisor.json     the supervisor's progress and state (steps, phase, API URL), rewritten atomically
 *   <root>/control.sock        the supervisor's control socket (HTTP over a unix socket, root only)
 *   <root>/kubeconfig          admin kubeconfig for the host (kubectl, ambientctl)
 *   <root>/api/                the API server's durable state (write-ahead log, snapshots, PKI): kept by
 *                              `down`, removed by `down --purge` or `up --fresh`
 *   <root>/logs/supervisor.log the supervisor's log (API server, controllers, kubelets, runtimes), JSON lines
 *   <root>/nodes/, run/, state/  lab/node's node directories (pod logs under nodes/<n>/var/log/pods), sockets
 *                              and cleanup records: created by `up`, removed by `down`
 *   <root>/node-disks/         while the lab is down: each node's /etc/cni/net.d and /opt/cni/bin (what a
 *                              real node keeps across a reboot), put back by the next `up`
 *
 * The default root is /var/lib/ambient-lab/<prefix without the dash> (`amb` for the default prefix `amb-`).
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { MeshError } from '../../pkg/errors/index.ts';
import { validatePrefix } from '../node/plan.ts';
import { readRegistry } from '../node/state.ts';

export const DEFAULT_PREFIX = 'amb-';
export const DEFAULT_ROOT_BASE = '/var/lib/ambient-lab';
export const DEFAULT_NODES = 2;

export interface LabPaths {
  readonly root: string;
  readonly config: string;
  readonly pidFile: string;
  readonly statusFile: string;
  readonly controlSocket: string;
  readonly kubeconfig: string;
  readonly apiDir: string;
  readonly logsDir: string;
  readonly supervisorLog: string;
  readonly nodesDir: string;
  /** The nodes' CNI config and plugins while the lab is down (see node-disk.ts). */
  readonly nodeDisks: string;
}

export function labPaths(root: string): LabPaths {
  const r = resolve(root);
  return {
    root: r,
    config: join(r, 'lab.json'),
    pidFile: join(r, 'supervisor.pid'),
    statusFile: join(r, 'supervisor.json'),
    controlSocket: join(r, 'control.sock'),
    kubeconfig: join(r, 'kubeconfig'),
    apiDir: join(r, 'api'),
    logsDir: join(r, 'logs'),
    supervisorLog: join(r, 'logs', 'supervisor.log'),
    nodesDir: join(r, 'nodes'),
    nodeDisks: join(r, 'node-disks'),
  };
}

export function defaultRoot(prefix: string): string {
  return join(DEFAULT_ROOT_BASE, prefix.replace(/-$/, ''));
}

/**
 * The root of the lab with this prefix: the explicit one, else the one the running lab registered
 * (/run/ambient-lab), else an existing lab.json in the default location, else the default.
 */
export function resolveRoot(prefix: string, root?: string): string {
  validatePrefix(prefix);
  if (root) return resolve(root);
  const reg = readRegistry(prefix);
  if (reg) return resolve(reg.root);
  return defaultRoot(prefix);
}

/**
 * The address block (10.B.0.0/16) of a prefix when none is given: a stable hash into 20..219, so the default
 * lab is always in the same range and test labs (which pass their own) rarely share it. Labs are isolated
 * whatever their blocks; distinct blocks only keep addresses in logs unambiguous.
 */
export function defaultBlock(prefix: string): number {
  const h = createHash('sha256').update(prefix).digest();
  return 20 + ((h[0] ?? 0) % 200);
}

export interface LabConfig {
  readonly version: 1;
  readonly prefix: string;
  readonly block: number;
  readonly nodes: number;
  /** Supervisor log level (`info`; `debug` with --verbose). */
  readonly logLevel: 'debug' | 'info' | 'warn';
  /** Container restart back-off (kubelet's 10 s … 300 s unless set). */
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
}

export function readConfig(paths: LabPaths): LabConfig | null {
  try {
    const c = JSON.parse(readFileSync(paths.config, 'utf8')) as LabConfig;
    if (c.version !== 1 || typeof c.prefix !== 'string' || typeof c.block !== 'number') return null;
    return c;
  } catch {
    return null;
  }
}

export function writeJsonAtomic(file: string, value: unknown): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, file);
}

export function writeConfig(paths: LabPaths, config: LabConfig): void {
  mkdirSync(paths.root, { recursive: true, mode: 0o700 });
  writeJsonAtomic(paths.config, config);
}

export function requireConfig(paths: LabPaths): LabConfig {
  const c = readConfig(paths);
  if (!c)
    throw new MeshError('MESH_ERR_LAB_NOT_RUNNING', `no lab configuration at ${paths.config}`, {
      hint: 'start a lab with `ambientctl lab up` (pass the same --root/--prefix)',
    });
  return c;
}
