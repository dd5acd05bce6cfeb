/**
 * Starting one container instance: a process tree inside the pod's network namespace, with its own mount,
 * PID and UTS namespaces and a root filesystem that is the machine's own, made private.
 *
 *   setpriv --pdeathsig KILL            dies with the runtime (no orphan containers after a crash)
 *    └ nsenter --net=<pod netns>        joins the pod (or node, for hostNetwork) network namespace
 *       └ unshare --mount --propagation slave --uts --pid --fork --kill-child
 *          └ sh setup.sh   (PID 1 of a new PID namespace)
 *             1. a tmpfs for scratch; overlayfs lower=/ upper=tmpfs → <ctr>/rootfs: writes (mount points
 *                included) never touch the machine's filesystem and vanish with the namespace
 *             2. fresh /proc (this PID namespace) and /sys (this network namespace), the machine's /dev,
 *                fresh tmpfs /run and /tmp, and the machine mounts holding the repository and Node
 *             3. volumes rbind-mounted at their container paths (symlinks resolved inside the rootfs); slave
 *                propagation: mounts the machine adds later (a new pod's /var/run/netns/<x>) show up in a
 *                hostPath of /var/run/netns, as with `mountPropagation: HostToContainer`, and a deleted
 *                namespace is not kept alive by a container's copy of its mount
 *             4. hostname, then `chroot rootfs setpriv --bounding-set … sh -c <init shim> <argv>`
 *
 * The first three steps (setpriv, nsenter, unshare) exec one another, so the runtime's child pid is unshare's.
 * The init shim is PID 1 of the container: it runs the program as its child, forwards SIGTERM (and HUP, USR1,
 * USR2) to it and exits with its status, like `docker run --init`; so a program without a SIGTERM handler still
 * stops on SIGTERM, which a bare PID 1 would ignore. When PID 1 exits, the kernel kills everything left in the
 * PID namespace: no process of a container can survive it. SIGKILL goes to the shim's host pid directly.
 *
 * Capabilities: the bounding set is the runtime default (containerd's 14) + add − drop, or everything for
 * privileged containers; as root with an empty inheritable set, the program's permitted and effective sets
 * are then exactly that bounding set.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { MeshError } from '../../pkg/errors/index.ts';
import { shq, signalExitCode, tool } from '../node/sys.ts';
import type { SecurityContext } from './types.ts';

/** containerd's default capability set (what a non-privileged container has before add/drop). */
export const DEFAULT_CAPABILITIES: readonly string[] = [
  'chown',
  'dac_override',
  'fsetid',
  'fowner',
  'mknod',
  'net_raw',
  'setgid',
  'setuid',
  'setfcap',
  'setpcap',
  'net_bind_service',
  'sys_chroot',
  'kill',
  'audit_write',
];

/** Every capability Linux defines (capability.h, up to CAP_CHECKPOINT_RESTORE = 40). */
export const ALL_CAPABILITIES: readonly string[] = [
  'chown',
  'dac_override',
  'dac_read_search',
  'fowner',
  'fsetid',
  'kill',
  'setgid',
  'setuid',
  'setpcap',
  'linux_immutable',
  'net_bind_service',
  'net_broadcast',
  'net_admin',
  'net_raw',
  'ipc_lock',
  'ipc_owner',
  'sys_module',
  'sys_rawio',
  'sys_chroot',
  'sys_ptrace',
  'sys_pacct',
  'sys_admin',
  'sys_boot',
  'sys_nice',
  'sys_resource',
  'sys_time',
  'sys_tty_config',
  'mknod',
  'lease',
  'audit_write',
  'audit_control',
  'setfcap',
  'mac_override',
  'mac_admin',
  'syslog',
  'wake_alarm',
  'block_suspend',
  'audit_read',
  'perfmon',
  'bpf',
  'checkpoint_restore',
];

/** How long the setup script may take before the start counts as failed. */
const SETUP_TIMEOUT_MS = 20_000;
/** Waiting for a killed container's processes to be reaped. */
const KILL_REAP_MS = 5_000;

function capName(raw: string): string {
  return raw.toLowerCase().replace(/^cap_/, '');
}

/**
 * The capability bounding set of a container (names without `cap_`, lowercase), or null for "all"
 * (privileged, or `add: [ALL]`). Throws MESH_ERR_LAB_RUNTIME_INVALID for an unknown capability name.
 */
export function capabilitySet(sc: SecurityContext | undefined): string[] | null {
  if (sc?.privileged) return null;
  const add = (sc?.capabilities?.add ?? []).map(capName);
  const drop = (sc?.capabilities?.drop ?? []).map(capName);
  for (const c of [...add, ...drop]) {
    if (c !== 'all' && !ALL_CAPABILITIES.includes(c)) {
      throw new MeshError(
        'MESH_ERR_LAB_RUNTIME_INVALID',
        `unknown capability ${JSON.stringify(c.toUpperCase())}`,
      );
    }
  }
  if (add.includes('all') && !drop.length) return null;
  let caps = add.includes('all') ? [...ALL_CAPABILITIES] : [...new Set([...DEFAULT_CAPABILITIES, ...add])];
  if (drop.includes('all'))
    caps = add.includes('all') ? [...ALL_CAPABILITIES] : add.filter((c) => c !== 'all');
  else caps = caps.filter((c) => !drop.includes(c));
  return [...new Set(caps)];
}

export interface MountSpec {
  /** Host path (a file or a directory). */
  readonly source: string;
  /** Path inside the container. */
  readonly target: string;
  readonly kind: 'dir' | 'file';
  readonly readOnly: boolean;
}

export interface LaunchSpec extends RootfsSpec {
  /** Network namespace to join (pod or node). */
  readonly netnsPath: string;
  readonly workingDir: string;
  /** null = all capabilities. */
  readonly capabilities: readonly string[] | null;
  readonly argv: readonly string[];
  readonly env: Readonly<Record<string, string>>;
}

export interface ExitInfo {
  readonly exitCode: number;
  readonly signal: NodeJS.Signals | null;
}

/** Paths under which a volume must not create mount points (they are the machine's, shared). */
const SHARED_TREES = ['/proc', '/sys', '/dev'];

const INIT_SHIM = [
  'd=$1; shift',
  'cd "$d" 2>/dev/null || { mkdir -p "$d" && cd "$d"; } || { echo "lab-init: cannot chdir to $d" >&2; exit 128; }',
  'c=',
  'trap \'[ -n "$c" ] && kill -TERM "$c" 2>/dev/null\' TERM',
  'trap \'[ -n "$c" ] && kill -HUP "$c" 2>/dev/null\' HUP',
  'trap \'[ -n "$c" ] && kill -USR1 "$c" 2>/dev/null\' USR1',
  'trap \'[ -n "$c" ] && kill -USR2 "$c" 2>/dev/null\' USR2',
  '"$@" &',
  'c=$!',
  'while :; do wait "$c"; s=$?; kill -0 "$c" 2>/dev/null || exit "$s"; done',
].join('\n');

/** What a private root filesystem is built from (containers and node views). */
export interface RootfsSpec {
  /** Scratch directory (holds rootfs/, scratch/ and the setup script). */
  readonly dir: string;
  readonly hostname: string;
  /** Machine mount points to bind into the root besides the root filesystem (repo, node, lab root). */
  readonly hostMounts: readonly string[];
  readonly mounts: readonly MountSpec[];
}

/** Depth of a path (mounts are applied parents first, like runc). */
function depth(p: string): number {
  return p.split('/').filter(Boolean).length;
}

/**
 * Shell lines that build `<dir>/rootfs`: overlay of the machine root with a tmpfs upper layer, fresh /proc and
 * /sys (of this process's PID and network namespaces), the machine's /dev, fresh /run and /tmp, the extra host
 * mounts, then every mount of the spec (rbind: submounts such as the netns files under /var/run/netns come
 * along, and with slave propagation new ones keep arriving), then the hostname.
 */
function rootfsLines(spec: RootfsSpec): string[] {
  const t = {
    mount: tool('mount'),
    mkdir: tool('mkdir'),
    chroot: tool('chroot'),
    realpath: tool('realpath'),
    dirname: tool('dirname'),
    hostname: tool('hostname'),
  };
  const mounts = [...spec.mounts].sort((a, b) => depth(a.target) - depth(b.target));
  return [
    'set -eu',
    `R=${shq(join(spec.dir, 'rootfs'))}`,
    `S=${shq(join(spec.dir, 'scratch'))}`,
    `${t.mount} -t tmpfs -o mode=0755 lab-scratch "$S"`,
    `${t.mkdir} "$S/upper" "$S/work"`,
    `${t.mount} -t overlay lab-rootfs -o "lowerdir=/,upperdir=$S/upper,workdir=$S/work" "$R"`,
    `${t.mount} -t proc proc "$R/proc"`,
    `${t.mount} -t sysfs sysfs "$R/sys"`,
    `${t.mount} --rbind /dev "$R/dev"`,
    `${t.mount} -t tmpfs -o mode=0755 lab-run "$R/run"`,
    `${t.mount} -t tmpfs -o mode=1777 lab-tmp "$R/tmp"`,
    'lab_mount() {',
    `  t=$(${t.chroot} "$R" ${t.realpath} -m -- "$2")`,
    '  case "$t" in /proc/*|/sys/*|/dev/*) [ -e "$R$t" ] || { echo "lab-setup: cannot create mount point $2 inside a shared tree" >&2; exit 1; } ;; esac',
    '  if [ "$3" = dir ]; then',
    `    ${t.mkdir} -p "$R$t"`,
    '  else',
    `    ${t.mkdir} -p "$(${t.dirname} "$R$t")"`,
    '    [ -e "$R$t" ] || : > "$R$t"',
    '  fi',
    `  ${t.mount} --rbind "$1" "$R$t"`,
    `  if [ "$4" = ro ]; then ${t.mount} -o remount,bind,ro "$R$t"; fi`,
    '}',
    ...mounts.map((m) => `lab_mount ${shq(m.source)} ${shq(m.target)} ${m.kind} ${m.readOnly ? 'ro' : 'rw'}`),
    // The programs (repo, Node binary) are bound last, so a pod volume at a parent path (an emptyDir at /tmp,
    // as Bookinfo and the mesh DaemonSets have) cannot hide them when the checkout lives under that path.
    ...spec.hostMounts.flatMap((m) => [
      `${t.mkdir} -p "$R"${shq(m)}`,
      `${t.mount} --rbind ${shq(m)} "$R"${shq(m)}`,
    ]),
    `${t.hostname} ${shq(spec.hostname)}`,
  ];
}

/** The setup script run as PID 1 of the container's namespaces before exec'ing the init shim. */
export function setupScript(spec: LaunchSpec): string {
  const lines = [...rootfsLines(spec), "printf 'ok\\n' >&3", 'exec 3>&-'];
  const chroot = tool('chroot');
  const caps =
    spec.capabilities === null ? null : ['-all', ...spec.capabilities.map((c) => `+${c}`)].join(',');
  const init = [
    shq(tool('sh')),
    '-c',
    shq(INIT_SHIM),
    'lab-init',
    shq(spec.workingDir),
    ...spec.argv.map(shq),
  ];
  lines.push(
    caps === null
      ? `exec ${chroot} "$R" ${init.join(' ')}`
      : `exec ${chroot} "$R" ${tool('setpriv')} --bounding-set=${caps} -- ${init.join(' ')}`,
  );
  return `${lines.join('\n')}\n`;
}

/** A script that builds a root filesystem and execs `argv` chrooted into it (a node's filesystem view). */
export function chrootScript(spec: RootfsSpec, argv: readonly string[]): string {
  const lines = [...rootfsLines(spec), `exec ${tool('chroot')} "$R" ${argv.map(shq).join(' ')}`];
  return `${lines.join('\n')}\n`;
}

/** Rejects mount targets a container must not create (inside /proc, /sys, /dev). */
export function checkMountTarget(target: string): string | null {
  if (!target.startsWith('/')) return `mountPath ${JSON.stringify(target)} is not absolute`;
  for (const tree of SHARED_TREES) {
    if (target === tree) return `mountPath ${target} would hide the machine's ${tree}`;
  }
  return null;
}

/** A started container instance. */
export class ContainerProcess {
  /** Pid of the unshare process (the runtime's child). */
  readonly pid: number;
  /** Host pid of the container's PID 1 (the init shim). */
  readonly initPid: number;
  readonly startedAt: Date;
  readonly stdout: Readable;
  readonly stderr: Readable;
  readonly exited: Promise<ExitInfo>;
  private readonly child: ChildProcess;
  private exitInfo: ExitInfo | null = null;
  /** SIGKILL was sent to PID 1: the kernel killed every process of the container (reported as 137). */
  private forced = false;

  private constructor(child: ChildProcess, initPid: number, exited: Promise<ExitInfo>) {
    this.child = child;
    this.pid = child.pid ?? -1;
    this.initPid = initPid;
    this.startedAt = new Date();
    this.stdout = child.stdout as Readable;
    this.stderr = child.stderr as Readable;
    // unshare reports a child killed by a signal as a plain failure; a container killed by us reads 137 in
    // Kubernetes (128 + SIGKILL), so say so.
    this.exited = exited.then((e) =>
      this.forced ? { exitCode: signalExitCode('SIGKILL'), signal: 'SIGKILL' } : e,
    );
    void this.exited.then((e) => {
      this.exitInfo = e;
    });
  }

  get running(): boolean {
    return this.exitInfo === null;
  }

  /**
   * Starts the instance and resolves once its setup finished and the program is being exec'd; a setup
   * failure rejects with MESH_ERR_LAB_RUNTIME_CONTAINER carrying the setup's stderr.
   * `onOutput` receives everything the container writes (setup diagnostics included), from the first byte.
   */
  static async start(
    spec: LaunchSpec,
    onOutput: (stream: 'stdout' | 'stderr', chunk: Buffer) => void,
  ): Promise<ContainerProcess> {
    mkdirSync(join(spec.dir, 'rootfs'), { recursive: true });
    mkdirSync(join(spec.dir, 'scratch'), { recursive: true });
    const script = join(spec.dir, 'setup.sh');
    writeFileSync(script, setupScript(spec), { mode: 0o700 });
    const child = spawn(
      tool('setpriv'),
      [
        '--pdeathsig',
        'KILL',
        '--',
        tool('nsenter'),
        `--net=${spec.netnsPath}`,
        '--',
        tool('unshare'),
        '--mount',
        '--propagation',
        'slave',
        '--uts',
        '--pid',
        '--fork',
        '--kill-child',
        '--',
        tool('sh'),
        script,
      ],
      { env: { ...spec.env }, stdio: ['ignore', 'pipe', 'pipe', 'pipe'] },
    );
    let setupErr = '';
    child.stdout?.on('data', (d: Buffer) => onOutput('stdout', d));
    child.stderr?.on('data', (d: Buffer) => {
      if (setupErr.length < 4096) setupErr += d.toString('utf8');
      onOutput('stderr', d);
    });
    const exited = new Promise<ExitInfo>((resolve) => {
      child.on('close', (code, signal) => {
        resolve({ exitCode: code ?? (signal ? signalExitCode(signal) : 255), signal });
      });
      child.on('error', () => resolve({ exitCode: 255, signal: null }));
    });
    const ready = await new Promise<boolean>((resolve) => {
      const ctl = child.stdio[3] as Readable | null;
      const timer = setTimeout(() => resolve(false), SETUP_TIMEOUT_MS);
      let buf = '';
      ctl?.on('data', (d: Buffer) => {
        buf += d.toString('utf8');
        if (buf.includes('ok\n')) {
          clearTimeout(timer);
          resolve(true);
        }
      });
      ctl?.on('error', () => undefined);
      void exited.then(() => {
        clearTimeout(timer);
        resolve(buf.includes('ok\n'));
      });
    });
    const initPid = ready ? readChildPid(child.pid ?? -1) : null;
    if (ready && initPid === null) {
      // Setup finished but the program already exited (e.g. `exit 3` at once): a normal, short-lived run
      // whose exit status the caller reports, not a setup failure. There is no PID 1 left to signal.
      await exited;
      return new ContainerProcess(child, 0, exited);
    }
    if (!ready || initPid === null) {
      child.kill('SIGKILL');
      const exit = await exited;
      throw new MeshError(
        'MESH_ERR_LAB_RUNTIME_CONTAINER',
        `container setup failed (exit ${exit.exitCode}): ${setupErr.trim().slice(-600) || 'no output'}`,
        { details: { exitCode: exit.exitCode } },
      );
    }
    return new ContainerProcess(child, initPid, exited);
  }

  /** Sends a signal to the container's PID 1 (SIGKILL there ends the whole PID namespace). */
  signal(sig: NodeJS.Signals): void {
    if (!this.running || this.initPid <= 0) return;
    try {
      process.kill(this.initPid, sig);
    } catch {
      // already gone
    }
  }

  /** SIGTERM, then SIGKILL after graceMs; resolves with the exit once every process is gone. */
  async stop(graceMs: number): Promise<ExitInfo> {
    if (!this.running) return this.exited;
    this.signal('SIGTERM');
    const graceful = await Promise.race([
      this.exited.then(() => true),
      new Promise<false>((r) => setTimeout(() => r(false), Math.max(0, graceMs)).unref()),
    ]);
    if (!graceful) this.kill();
    return this.exited;
  }

  /** SIGKILL now (init and, as a fallback, the unshare parent). */
  kill(): void {
    if (this.running) this.forced = true;
    this.signal('SIGKILL');
    setTimeout(() => {
      if (this.running) this.child.kill('SIGKILL');
    }, KILL_REAP_MS).unref();
  }
}

/** The first child of `pid` (unshare's forked PID 1). */
function readChildPid(pid: number): number | null {
  try {
    const text = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim();
    const first = text.split(/\s+/)[0];
    return first ? Number(first) : null;
  } catch {
    return null;
  }
}
