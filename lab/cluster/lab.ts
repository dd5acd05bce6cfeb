/**
 * The lab as a library, from the host's side (what `ambientctl lab …` and the end-to-end tests use):
 *
 *   const { lab, problems } = await Lab.up({ nodes: 2, demo: true });   // starts the supervisor, waits
 *   await lab.kubectl(['get', 'pods', '-A']);                           // the real kubectl, lab kubeconfig
 *   await lab.exec('default', 'curl-…', ['curl', '-s', 'productpage:9080/productpage']);
 *   await Lab.down({ prefix: 'amb-' });                                 // everything gone (API state kept)
 *
 * `up` runs the supervisor (lab/main.ts) as a detached background process with its output in
 * <root>/logs/supervisor.log and follows its progress in <root>/supervisor.json; it then installs the mesh from
 * deploy/ with kubectl (unless `mesh: false`) and the demo apps, and waits for them, reporting what did not
 * become Ready instead of waiting forever. See paths.ts for the root layout.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  fstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describeError, MeshError } from '../../pkg/errors/index.ts';
import { type CleanupReport, cleanupLeftovers, mountsUnder } from '../node/cleanup.ts';
import { readRegistry } from '../node/state.ts';
import type { ExecResult } from '../runtime/types.ts';
import { controlRequest, type ExecTarget } from './control.ts';
import {
  DEFAULT_NODES,
  DEFAULT_PREFIX,
  defaultBlock,
  type LabConfig,
  type LabPaths,
  labPaths,
  readConfig,
  resolveRoot,
  writeConfig,
} from './paths.ts';
import { findKubectl, requireRoot, requireTools } from './prereq.ts';
import { progress as makeProgress, type Progress } from './progress.ts';
import { readStatus, removeRunFiles, type SupervisorStatus, supervisorPid } from './state.ts';
import { explainWorkload, LabApi, podTable, type WorkloadRef, waitForWorkloads } from './workloads.ts';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const SUPERVISOR_MAIN = join(REPO_ROOT, 'lab', 'main.ts');
export const MESH_PROFILE_DIR = join(REPO_ROOT, 'deploy', 'profiles', 'ambient');
export const DEMO_MANIFESTS = [
  join(REPO_ROOT, 'samples', 'bookinfo', 'bookinfo.yaml'),
  join(REPO_ROOT, 'samples', 'curl', 'curl.yaml'),
];
const SUPERVISOR_START_TIMEOUT_MS = 120_000;
const SUPERVISOR_STOP_TIMEOUT_MS = 60_000;
const DEFAULT_WAIT_MS = 120_000;
/** The supervisor log is moved to supervisor.log.1 at `up` once it is larger than this. */
const MAX_LOG_BYTES = 20 * 1024 * 1024;

export const MESH_WORKLOADS: readonly WorkloadRef[] = [
  { kind: 'Deployment', namespace: 'istio-system', name: 'istiod', label: 'istiod' },
  { kind: 'DaemonSet', namespace: 'istio-system', name: 'istio-cni-node', label: 'istio-cni' },
  { kind: 'DaemonSet', namespace: 'istio-system', name: 'ztunnel', label: 'ztunnel' },
];

export const DEMO_WORKLOADS: readonly WorkloadRef[] = [
  'details-v1',
  'ratings-v1',
  'reviews-v1',
  'reviews-v2',
  'reviews-v3',
  'productpage-v1',
  'curl',
].map((name) => ({ kind: 'Deployment', namespace: 'default', name }) as const);

export interface LabUpOptions {
  readonly prefix?: string;
  readonly root?: string;
  readonly nodes?: number;
  /** The lab's 10.<block>.0.0/16; default derived from the prefix (or the one it had before). */
  readonly block?: number;
  /** Install the mesh from deploy/profiles/ambient and wait for it (default true). */
  readonly mesh?: boolean;
  /** Deploy Bookinfo and the curl client in `default` and wait for them. */
  readonly demo?: boolean;
  /** Start from an empty API state (removes <root>/api first). */
  readonly fresh?: boolean;
  /** Supervisor logs at debug level; kubectl output shown. */
  readonly verbose?: boolean;
  /** Per wait (mesh, demo); default 120 s. */
  readonly timeoutMs?: number;
  /** Container restart back-off (default kubelet's 10 s … 5 min). */
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
  readonly out?: (line: string) => void;
  readonly tty?: boolean;
}

export interface LabUpResult {
  readonly lab: Lab;
  /** Components that did not become Ready (empty when everything did), with explanations. */
  readonly problems: string[];
  /** Whether this call started the supervisor (false: it was already running). */
  readonly started: boolean;
  /** Wall time of the whole `up`, and until the cluster itself (nodes, API) was ready. */
  readonly timings: {
    readonly totalMs: number;
    readonly clusterMs: number;
    readonly meshMs?: number;
    readonly demoMs?: number;
  };
}

export interface LabDownOptions {
  readonly prefix?: string;
  readonly root?: string;
  /** Also remove the API state, logs and kubeconfig (the whole root). */
  readonly purge?: boolean;
  readonly out?: (line: string) => void;
}

export interface LabDownReport {
  readonly wasRunning: boolean;
  readonly cleanup: CleanupReport;
  readonly purged: boolean;
  readonly root: string;
}

export interface KubectlResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** New bytes of a file from `offset` (whole lines only). */
function readFrom(file: string, offset: number): { text: string; offset: number } {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return { text: '', offset };
  }
  try {
    const size = fstatSync(fd).size;
    if (size <= offset) return { text: '', offset };
    const buf = Buffer.alloc(Math.min(size - offset, 1024 * 1024));
    const n = readSync(fd, buf, 0, buf.length, offset);
    const text = buf.subarray(0, n).toString('utf8');
    const end = text.lastIndexOf('\n') + 1;
    return { text: text.slice(0, end), offset: offset + Buffer.byteLength(text.slice(0, end)) };
  } finally {
    closeSync(fd);
  }
}

function tailFile(file: string, lines: number): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/** Supervisor log lines (pino JSON) made readable: level, message, error. */
function readableLog(text: string): string {
  return text
    .split('\n')
    .map((l) => {
      try {
        const o = JSON.parse(l) as Record<string, unknown>;
        const extra = ['err', 'step', 'pod', 'reason']
          .filter((k) => o[k] !== undefined)
          .map((k) => `${k}=${typeof o[k] === 'string' ? o[k] : JSON.stringify(o[k])}`)
          .join(' ');
        const who = [o.component, o.node].filter((x) => typeof x === 'string').join('/');
        return `${String(o.level ?? '')} ${who ? `${who}: ` : ''}${String(o.msg ?? '')}${extra ? ` ${extra}` : ''}`;
      } catch {
        return l;
      }
    })
    .join('\n');
}

export class Lab {
  readonly paths: LabPaths;
  readonly config: LabConfig;

  private constructor(paths: LabPaths, config: LabConfig) {
    this.paths = paths;
    this.config = config;
  }

  get prefix(): string {
    return this.config.prefix;
  }
  get root(): string {
    return this.paths.root;
  }
  get kubeconfig(): string {
    return this.paths.kubeconfig;
  }

  /** The lab with this prefix/root, running or not (throws MESH_ERR_LAB_NOT_RUNNING when none was ever set up). */
  static open(opts: { prefix?: string; root?: string } = {}): Lab {
    const prefix = opts.prefix ?? DEFAULT_PREFIX;
    const paths = labPaths(resolveRoot(prefix, opts.root));
    const config = readConfig(paths);
    if (!config)
      throw new MeshError('MESH_ERR_LAB_NOT_RUNNING', `no lab with prefix ${prefix} at ${paths.root}`);
    return new Lab(paths, config);
  }

  /** The supervisor's pid when it runs. */
  pid(): number | null {
    return supervisorPid(this.paths);
  }

  status(): SupervisorStatus | null {
    return readStatus(this.paths);
  }

  /** Throws MESH_ERR_LAB_NOT_RUNNING unless the supervisor runs and is ready. */
  requireRunning(): void {
    const st = this.status();
    if (!this.pid() || st?.phase !== 'ready')
      throw new MeshError(
        'MESH_ERR_LAB_NOT_RUNNING',
        `the lab ${this.prefix} (${this.root}) is not running${st ? ` (supervisor: ${st.phase})` : ''}`,
      );
  }

  api(): LabApi {
    return new LabApi(this.paths.kubeconfig);
  }

  /** Runs the real kubectl against the lab (output captured). */
  kubectl(
    args: readonly string[],
    opts: { input?: string; timeoutMs?: number } = {},
  ): Promise<KubectlResult> {
    const kubectl = findKubectl();
    if (!kubectl) return Promise.reject(new MeshError('MESH_ERR_LAB_PREREQ', 'kubectl is not installed'));
    return new Promise((resolvePromise, reject) => {
      const child = spawn(kubectl, ['--kubeconfig', this.paths.kubeconfig, ...args], {
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on('data', (d: Buffer) => out.push(d));
      child.stderr.on('data', (d: Buffer) => err.push(d));
      const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      child.on('close', (code) => {
        clearTimeout(timer);
        resolvePromise({
          code: code ?? 1,
          stdout: Buffer.concat(out).toString('utf8'),
          stderr: Buffer.concat(err).toString('utf8'),
        });
      });
      child.stdin.on('error', () => undefined);
      child.stdin.end(opts.input ?? '');
    });
  }

  /** Runs a command in a pod (buffered output), through the supervisor. */
  exec(
    namespace: string,
    pod: string,
    argv: readonly string[],
    opts: { container?: string; timeoutMs?: number; input?: string } = {},
  ): Promise<ExecResult> {
    return controlRequest<ExecResult>(
      this.paths.controlSocket,
      'POST',
      '/v1/exec',
      { namespace, pod, argv, ...opts },
      (opts.timeoutMs ?? 30_000) + 5_000,
    );
  }

  /** Where a command for this pod must run (container PID 1 to nsenter, or the sandbox netns). */
  execTarget(namespace: string, pod: string, container?: string): Promise<ExecTarget> {
    return controlRequest<ExecTarget>(this.paths.controlSocket, 'POST', '/v1/exec-target', {
      namespace,
      pod,
      ...(container ? { container } : {}),
    });
  }

  /** The supervisor's live view (nodes and the pods each runs). */
  liveStatus(): Promise<unknown> {
    return controlRequest(this.paths.controlSocket, 'GET', '/v1/status', undefined, 10_000);
  }

  // ------------------------------------------------------------------------------------------------ up

  static async up(opts: LabUpOptions = {}): Promise<LabUpResult> {
    const t0 = performance.now();
    const out = opts.out ?? (() => undefined);
    const p = makeProgress(out, { tty: opts.tty ?? false });
    requireRoot();
    const wantKubectl = opts.mesh !== false || opts.demo === true;
    requireTools({ kubectl: wantKubectl });
    const prefix = opts.prefix ?? DEFAULT_PREFIX;
    const root = resolveRoot(prefix, opts.root);
    const paths = labPaths(root);
    const reg = readRegistry(prefix);
    if (reg && resolve(reg.root) !== root && supervisorPid(labPaths(reg.root)))
      throw new MeshError(
        'MESH_ERR_LAB_NET_EXISTS',
        `a lab with prefix ${prefix} is running with root ${reg.root}`,
        {
          hint: `use --root ${reg.root}, another --prefix, or stop it with \`ambientctl lab down --prefix ${prefix}\``,
        },
      );
    const previous = readConfig(paths);
    const config: LabConfig = {
      version: 1,
      prefix,
      block: opts.block ?? previous?.block ?? defaultBlock(prefix),
      nodes: opts.nodes ?? previous?.nodes ?? DEFAULT_NODES,
      logLevel: opts.verbose ? 'debug' : 'info',
      ...(opts.backoff
        ? { backoff: opts.backoff }
        : previous?.backoff && !opts.fresh
          ? { backoff: previous.backoff }
          : {}),
    };
    let started = false;
    let lab: Lab;
    const running = supervisorPid(paths);
    if (running && readStatus(paths)?.phase === 'ready') {
      lab = new Lab(paths, previous ?? config);
      if (previous && (previous.nodes !== config.nodes || previous.block !== config.block))
        out(
          `  ! the lab is already running with ${previous.nodes} nodes in 10.${previous.block}.0.0/16; ` +
            '`lab down` first to change that',
        );
      p.report(`Lab ${prefix} already running (supervisor pid ${running})`, true, undefined);
    } else {
      if (running) {
        // A supervisor that is starting or stopping: let it finish stopping, then start over.
        await Lab.stopSupervisor(paths, running);
      }
      if (opts.fresh) {
        rmSync(paths.apiDir, { recursive: true, force: true });
        rmSync(paths.nodeDisks, { recursive: true, force: true });
      }
      writeConfig(paths, config);
      lab = new Lab(paths, config);
      await lab.startSupervisor(p, opts.verbose ? out : () => undefined);
      started = true;
    }
    const clusterMs = performance.now() - t0;
    const problems: string[] = [];
    const timings: { totalMs: number; clusterMs: number; meshMs?: number; demoMs?: number } = {
      totalMs: 0,
      clusterMs,
    };
    const api = lab.api();
    const timeoutMs = opts.timeoutMs ?? DEFAULT_WAIT_MS;
    try {
      if (opts.mesh !== false) {
        const tm = performance.now();
        p.start(`Install the mesh: kubectl apply -k ${relativeToRepo(MESH_PROFILE_DIR)}`);
        const r = await lab.kubectl(['apply', '--server-side=false', '-k', MESH_PROFILE_DIR]);
        if (r.code !== 0) {
          p.fail();
          problems.push(`kubectl apply -k ${MESH_PROFILE_DIR} failed:\n${r.stderr.trim()}`);
        } else {
          p.done();
          if (opts.verbose) out(indent(r.stdout.trim()));
          problems.push(...(await lab.waitAndExplain(api, p, 'Mesh', MESH_WORKLOADS, timeoutMs)));
        }
        timings.meshMs = performance.now() - tm;
      }
      if (opts.demo) {
        const td = performance.now();
        p.start('Deploy the demo: Bookinfo and curl in namespace default');
        const r = await lab.kubectl(['apply', '-n', 'default', ...DEMO_MANIFESTS.flatMap((f) => ['-f', f])]);
        if (r.code !== 0) {
          p.fail();
          problems.push(`kubectl apply of the demo failed:\n${r.stderr.trim()}`);
        } else {
          p.done();
          if (opts.verbose) out(indent(r.stdout.trim()));
          problems.push(...(await lab.waitAndExplain(api, p, 'Demo', DEMO_WORKLOADS, timeoutMs)));
        }
        timings.demoMs = performance.now() - td;
      }
      if (problems.length > 0) {
        out('');
        out(indent(await podTable(api).catch((e: unknown) => `(cannot list pods: ${describeError(e)})`)));
      }
    } finally {
      api.close();
    }
    timings.totalMs = performance.now() - t0;
    return { lab, problems, started, timings };
  }

  /** Waits for workloads with one progress line each; returns explanations for those not Ready. */
  private async waitAndExplain(
    api: LabApi,
    p: Progress,
    what: string,
    workloads: readonly WorkloadRef[],
    timeoutMs: number,
  ): Promise<string[]> {
    const t0 = performance.now();
    const states = await waitForWorkloads(api, workloads, timeoutMs, (s) =>
      p.report(`${s.ref.label ?? s.ref.name} Ready`, true, performance.now() - t0, s.summary),
    );
    const bad = states.filter((s) => !s.ready);
    const problems: string[] = [];
    for (const s of bad) {
      p.report(`${s.ref.label ?? s.ref.name} not Ready`, false, performance.now() - t0, s.summary);
      problems.push(
        `${what}: ${s.ref.kind.toLowerCase()} ${s.ref.namespace}/${s.ref.name} is not Ready (${s.summary}):\n` +
          (await explainWorkload(api, this.paths, s).catch((e: unknown) => `    (${describeError(e)})`)),
      );
    }
    return problems;
  }

  private async startSupervisor(p: Progress, verbose: (line: string) => void): Promise<void> {
    const paths = this.paths;
    mkdirSync(paths.logsDir, { recursive: true });
    removeRunFiles(paths);
    try {
      if (statSync(paths.supervisorLog).size > MAX_LOG_BYTES)
        renameSync(paths.supervisorLog, `${paths.supervisorLog}.1`);
    } catch {
      // no log yet
    }
    let logOffset = existsSync(paths.supervisorLog) ? statSync(paths.supervisorLog).size : 0;
    const showLog = (): void => {
      const { text, offset } = readFrom(paths.supervisorLog, logOffset);
      logOffset = offset;
      if (text) for (const l of readableLog(text.trimEnd()).split('\n')) verbose(`      │ ${l}`);
    };
    const logFd = openSync(paths.supervisorLog, 'a');
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, [SUPERVISOR_MAIN, 'supervise', '--root', paths.root], {
        cwd: REPO_ROOT,
        detached: true,
        stdio: ['ignore', logFd, logFd],
        env: { ...process.env },
      });
    } finally {
      closeSync(logFd);
    }
    let exited: number | null = null;
    child.on('exit', (code) => {
      exited = code ?? 1;
    });
    child.unref();
    const deadline = performance.now() + SUPERVISOR_START_TIMEOUT_MS;
    let shown = 0;
    for (;;) {
      const st = readStatus(paths);
      if (st && st.pid === child.pid) {
        for (; shown < st.steps.length; shown++) {
          const s = st.steps[shown];
          if (!s || s.state === 'running') break;
          p.report(s.name, s.state === 'done', s.ms, s.detail);
        }
        if (st.phase === 'ready') {
          showLog();
          return;
        }
        if (st.phase === 'failed') break;
      }
      showLog();
      if (exited !== null || performance.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const st = readStatus(paths);
    const unfinished = st?.steps.slice(shown).find((s) => s.state !== 'done');
    if (unfinished) p.report(unfinished.name, false, undefined);
    if (exited === null) await Lab.stopSupervisor(paths, child.pid ?? 0).catch(() => undefined);
    const why =
      st?.error ??
      (exited !== null ? `the supervisor exited with status ${exited}` : 'timed out waiting for it');
    throw new MeshError('MESH_ERR_LAB_SUPERVISOR', `the lab did not start: ${why}`, {
      hint: `last lines of ${paths.supervisorLog}:\n${indent(readableLog(tailFile(paths.supervisorLog, 15)))}`,
    });
  }

  /** SIGTERM, wait for the orderly shutdown, SIGKILL when it takes too long. */
  private static async stopSupervisor(paths: LabPaths, pid: number): Promise<boolean> {
    if (!pid) return false;
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      return false;
    }
    const deadline = performance.now() + SUPERVISOR_STOP_TIMEOUT_MS;
    while (performance.now() < deadline) {
      if (supervisorPid(paths) !== pid) return true;
      await new Promise((r) => setTimeout(r, 100));
    }
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
    return true;
  }

  // ------------------------------------------------------------------------------------------------ down

  /**
   * Stops the supervisor (orderly: pods killed, network destroyed), then removes whatever a crash may have
   * left (cleanupLeftovers) and the run files. The API state stays unless `purge`.
   */
  static async down(opts: LabDownOptions = {}): Promise<LabDownReport> {
    requireRoot();
    const prefix = opts.prefix ?? DEFAULT_PREFIX;
    const root = resolveRoot(prefix, opts.root);
    const paths = labPaths(root);
    const out = opts.out ?? (() => undefined);
    const p = makeProgress(out);
    const pid = supervisorPid(paths);
    if (pid) {
      p.start(`Stop the lab supervisor (pid ${pid}): pods, DNS, API server, network`);
      await Lab.stopSupervisor(paths, pid);
      p.done();
    }
    p.start('Remove leftovers (processes, namespaces, mounts, files)');
    const cleanup = await cleanupLeftovers(prefix, { root });
    p.done(
      cleanup.netns.length || cleanup.killed.length || cleanup.unmounted.length
        ? `${cleanup.netns.length} namespaces, ${cleanup.killed.length} processes, ${cleanup.unmounted.length} mounts`
        : 'none',
    );
    removeRunFiles(paths);
    // Never recurse into a mount (a container root is an overlay of the machine's own root).
    const mounts = mountsUnder(root);
    if (mounts.length > 0) {
      out(`  ! still mounted under ${root}, leaving its files: ${mounts.join(', ')}`);
      return { wasRunning: pid !== null, cleanup, purged: false, root };
    }
    for (const d of ['nodes', 'run', 'state']) rmSync(join(root, d), { recursive: true, force: true });
    let purged = false;
    if (opts.purge && existsSync(root)) {
      rmSync(root, { recursive: true, force: true });
      purged = true;
    }
    return { wasRunning: pid !== null, cleanup, purged, root };
  }
}

function indent(text: string, by = '    '): string {
  return text
    .split('\n')
    .map((l) => `${by}${l}`)
    .join('\n');
}

function relativeToRepo(p: string): string {
  return p.startsWith(`${REPO_ROOT}/`) ? p.slice(REPO_ROOT.length + 1) : p;
}
