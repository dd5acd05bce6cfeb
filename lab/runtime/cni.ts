/**
 * Invoking a node's CNI network the way a container runtime does (libcni semantics, CNI spec 1.0.0):
 *
 * - The network is the first file of the conf dir, by name, ending in `.conflist`, `.conf` or `.json` that
 *   parses (a single-plugin `.conf` becomes a one-plugin list). It is read at every call, so a plugin that an
 *   installer (istio-cni) chains in later takes part in the next pod's ADD.
 * - ADD runs the plugins in order; each gets its own config object plus the list's `name` and `cniVersion`,
 *   the previous plugin's result as `prevResult`, and `runtimeConfig` for the capabilities it declares.
 *   The final result is cached (like /var/lib/cni/results) and given as `prevResult` to every plugin on
 *   CHECK and DEL.
 * - DEL runs in reverse order. Unlike libcni (which stops at the first failure) every plugin is called and the
 *   failures are returned: a teardown must go on.
 * - Environment: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS`, `CNI_PATH` and a
 *   fixed `PATH`; nothing else of the caller's environment leaks into plugins.
 * - Plugins run inside the node: its network namespace and its filesystem view (`nsenter --target <node
 *   process> --net --mount --root`, see prober.ts), so /opt/cni/bin, /etc/cni/net.d, /var/lib/cni and /var/run
 *   are the node's, as on a real node; nsenter execs the plugin, so a timeout kill reaches it.
 * - A failing plugin's stdout is parsed as a CNI error (`code`, `msg`, `details`) and surfaced as CniError.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MeshError } from '../../pkg/errors/index.ts';
import { DEFAULT_PATH, tool } from '../node/sys.ts';

/** Per plugin call; the reference plugins take milliseconds, a chained plugin waiting for its agent longer. */
export const DEFAULT_PLUGIN_TIMEOUT_MS = 60_000;
const CONF_EXTENSIONS = ['.conflist', '.conf', '.json'];
const MAX_PLUGIN_OUTPUT = 4 * 1024 * 1024;

export type CniCommand = 'ADD' | 'DEL' | 'CHECK';
export type JsonMap = Record<string, unknown>;

export interface CniNetworkList {
  /** The file it was read from. */
  readonly file: string;
  readonly name: string;
  readonly cniVersion: string;
  readonly disableCheck: boolean;
  readonly plugins: readonly JsonMap[];
}

/** What the runtime knows about the sandbox (libcni RuntimeConf). */
export interface CniRuntimeConf {
  readonly containerId: string;
  /** Path of the sandbox network namespace. */
  readonly netns: string;
  readonly ifName: string;
  /** Key/value pairs for CNI_ARGS, in order. */
  readonly args: readonly (readonly [string, string])[];
  /** Values for `runtimeConfig`, given to plugins whose `capabilities` name them (e.g. portMappings). */
  readonly capabilityArgs?: Readonly<JsonMap>;
}

/** A plugin directory: where this process finds the binaries, and the same directory as plugins see it. */
export interface CniBinDir {
  readonly host: string;
  readonly seen: string;
}

export interface CniInvokeOptions {
  /** Directories searched for plugin binaries, in order (CNI_PATH is their `seen` paths). */
  readonly binDirs: readonly (string | CniBinDir)[];
  /**
   * Where plugins run: inside the namespaces (net, mount, root) of a process (the node's view holder), or in a
   * network namespace only; default here.
   */
  readonly enter?: { readonly pid: number } | { readonly netns: string };
  /** Where ADD results are cached for DEL/CHECK. */
  readonly cacheDir: string;
  readonly timeoutMs?: number;
}

/** A CNI plugin failure: the CNI error fields when the plugin printed them, else what we saw. */
export class CniError extends MeshError {
  /** CNI error code (spec: 1-99 well-known, 100+ plugin-specific); 0 when the plugin printed no error. */
  readonly cniCode: number;
  readonly cniMsg: string;
  readonly cniDetails: string;
  readonly plugin: string;
  readonly command: CniCommand;

  constructor(
    plugin: string,
    command: CniCommand,
    cniCode: number,
    cniMsg: string,
    cniDetails: string,
    extra: { stderr?: string; exitCode?: number; timedOut?: boolean } = {},
  ) {
    const detail = cniDetails ? `; ${cniDetails}` : '';
    const stderr = extra.stderr?.trim() ? ` (stderr: ${extra.stderr.trim().slice(-400)})` : '';
    super(
      'MESH_ERR_LAB_CNI_PLUGIN',
      `CNI ${command} ${plugin}: code ${cniCode}: ${cniMsg}${detail}${stderr}`,
      {
        details: {
          plugin,
          command,
          cniCode,
          ...(extra.exitCode === undefined ? {} : { exitCode: extra.exitCode }),
          ...(extra.timedOut ? { timedOut: true } : {}),
        },
      },
    );
    this.cniCode = cniCode;
    this.cniMsg = cniMsg;
    this.cniDetails = cniDetails;
    this.plugin = plugin;
    this.command = command;
  }
}

function configError(message: string): MeshError {
  return new MeshError('MESH_ERR_LAB_CNI_CONFIG', message);
}

function isMap(v: unknown): v is JsonMap {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseNetworkFile(file: string): CniNetworkList {
  const parsed: unknown = JSON.parse(readFileSync(file, 'utf8'));
  if (!isMap(parsed)) throw configError(`${file}: not a JSON object`);
  if (Array.isArray(parsed.plugins)) {
    const plugins = parsed.plugins.filter(isMap);
    if (typeof parsed.name !== 'string' || plugins.length === 0 || plugins.length !== parsed.plugins.length) {
      throw configError(`${file}: a conflist needs a name and a non-empty list of plugin objects`);
    }
    for (const p of plugins)
      if (typeof p.type !== 'string') throw configError(`${file}: a plugin has no type`);
    return {
      file,
      name: parsed.name,
      cniVersion: typeof parsed.cniVersion === 'string' ? parsed.cniVersion : '1.0.0',
      disableCheck: parsed.disableCheck === true,
      plugins,
    };
  }
  if (typeof parsed.type !== 'string' || typeof parsed.name !== 'string') {
    throw configError(`${file}: a network config needs a name and a type`);
  }
  return {
    file,
    name: parsed.name,
    cniVersion: typeof parsed.cniVersion === 'string' ? parsed.cniVersion : '1.0.0',
    disableCheck: false,
    plugins: [parsed],
  };
}

/** The node's network: the first parseable config file by name (as containerd's CNI loader picks it). */
export function loadNetworkList(confDir: string): CniNetworkList {
  let files: string[];
  try {
    files = readdirSync(confDir)
      .filter((f) => CONF_EXTENSIONS.some((e) => f.endsWith(e)))
      .sort();
  } catch (err) {
    throw new MeshError('MESH_ERR_LAB_CNI_CONFIG', `CNI conf dir ${confDir} is unreadable`, { cause: err });
  }
  const problems: string[] = [];
  for (const f of files) {
    try {
      return parseNetworkFile(join(confDir, f));
    } catch (err) {
      problems.push(`${f}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  throw configError(
    `no valid CNI network config in ${confDir}${problems.length ? ` (${problems.join('; ')})` : ''}`,
  );
}

function binDir(d: string | CniBinDir): CniBinDir {
  return typeof d === 'string' ? { host: d, seen: d } : d;
}

/** The plugin's path as the plugin's environment sees it. */
function findPlugin(type: string, binDirs: readonly (string | CniBinDir)[]): string {
  if (type.includes('/')) throw configError(`CNI plugin type ${JSON.stringify(type)} is not a plain name`);
  for (const raw of binDirs) {
    const d = binDir(raw);
    try {
      accessSync(join(d.host, type), constants.X_OK);
      return join(d.seen, type);
    } catch {
      // next dir
    }
  }
  throw configError(
    `failed to find plugin ${JSON.stringify(type)} in path [${binDirs.map((d) => binDir(d).seen).join(' ')}]`,
  );
}

/** The config one plugin reads on stdin (libcni buildOneConfig + runtimeConfig injection). */
export function pluginConfig(
  list: CniNetworkList,
  plugin: JsonMap,
  prevResult: JsonMap | null,
  rt: CniRuntimeConf,
): JsonMap {
  const conf: JsonMap = { ...plugin, name: list.name, cniVersion: list.cniVersion };
  if (prevResult) conf.prevResult = prevResult;
  else delete conf.prevResult;
  const caps = plugin.capabilities;
  if (isMap(caps) && rt.capabilityArgs) {
    const runtimeConfig: JsonMap = {};
    for (const [cap, enabled] of Object.entries(caps)) {
      if (enabled === true && cap in rt.capabilityArgs) runtimeConfig[cap] = rt.capabilityArgs[cap];
    }
    if (Object.keys(runtimeConfig).length > 0) conf.runtimeConfig = runtimeConfig;
  }
  return conf;
}

/** `CNI_ARGS`: `K=V;K=V` (values must not contain `;` or `=`, as the spec's parser splits on them). */
export function cniArgs(args: readonly (readonly [string, string])[]): string {
  return args.map(([k, v]) => `${k}=${v}`).join(';');
}

interface ExecOutcome {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
}

function execPlugin(
  path: string,
  env: NodeJS.ProcessEnv,
  stdin: string,
  opts: CniInvokeOptions,
): Promise<ExecOutcome> {
  const enter = opts.enter;
  const file = enter ? tool('nsenter') : path;
  const args = !enter
    ? []
    : 'pid' in enter
      ? ['--target', String(enter.pid), '--net', '--mount', '--root', '--wd=/', '--', path]
      : [`--net=${enter.netns}`, '--', path];
  const timeoutMs = opts.timeoutMs ?? DEFAULT_PLUGIN_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      if (stdout.length < MAX_PLUGIN_OUTPUT) stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (stderr.length < MAX_PLUGIN_OUTPUT) stderr += d;
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(stdin);
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr, timedOut });
    });
  });
}

async function invoke(
  command: CniCommand,
  list: CniNetworkList,
  plugin: JsonMap,
  prevResult: JsonMap | null,
  rt: CniRuntimeConf,
  opts: CniInvokeOptions,
): Promise<JsonMap | null> {
  const type = String(plugin.type);
  const path = findPlugin(type, opts.binDirs);
  const env: NodeJS.ProcessEnv = {
    PATH: DEFAULT_PATH,
    CNI_COMMAND: command,
    CNI_CONTAINERID: rt.containerId,
    CNI_NETNS: rt.netns,
    CNI_IFNAME: rt.ifName,
    CNI_ARGS: cniArgs(rt.args),
    CNI_PATH: opts.binDirs.map((d) => binDir(d).seen).join(':'),
  };
  const conf = JSON.stringify(pluginConfig(list, plugin, prevResult, rt));
  let out: ExecOutcome;
  try {
    out = await execPlugin(path, env, conf, opts);
  } catch (err) {
    throw new CniError(type, command, 0, `could not run ${path}: ${(err as Error).message}`, '');
  }
  if (out.timedOut) {
    throw new CniError(
      type,
      command,
      0,
      `timed out after ${opts.timeoutMs ?? DEFAULT_PLUGIN_TIMEOUT_MS} ms`,
      '',
      {
        stderr: out.stderr,
        timedOut: true,
      },
    );
  }
  if (out.code !== 0) {
    let parsed: unknown = null;
    try {
      parsed = JSON.parse(out.stdout);
    } catch {
      // not a CNI error object
    }
    if (isMap(parsed) && (typeof parsed.code === 'number' || typeof parsed.msg === 'string')) {
      throw new CniError(
        type,
        command,
        typeof parsed.code === 'number' ? parsed.code : 0,
        typeof parsed.msg === 'string' ? parsed.msg : '',
        typeof parsed.details === 'string' ? parsed.details : '',
        { stderr: out.stderr, exitCode: out.code },
      );
    }
    throw new CniError(type, command, 0, `exit status ${out.code}`, out.stdout.trim().slice(0, 400), {
      stderr: out.stderr,
      exitCode: out.code,
    });
  }
  if (command !== 'ADD') return null;
  let result: unknown;
  try {
    result = JSON.parse(out.stdout);
  } catch {
    throw new CniError(type, command, 0, 'printed no JSON result', out.stdout.trim().slice(0, 400), {
      stderr: out.stderr,
    });
  }
  if (!isMap(result)) throw new CniError(type, command, 0, 'result is not a JSON object', '');
  return result;
}

function cacheFile(opts: CniInvokeOptions, list: CniNetworkList, rt: CniRuntimeConf): string {
  return join(opts.cacheDir, `${list.name}-${rt.containerId}-${rt.ifName}`);
}

/** The cached ADD result of a sandbox (null when none: DEL then runs without prevResult, as libcni does). */
export function cachedResult(
  opts: CniInvokeOptions,
  list: CniNetworkList,
  rt: CniRuntimeConf,
): JsonMap | null {
  try {
    const parsed = JSON.parse(readFileSync(cacheFile(opts, list, rt), 'utf8')) as { result?: unknown };
    return isMap(parsed.result) ? parsed.result : null;
  } catch {
    return null;
  }
}

/** ADD through every plugin of the list; returns the final result (and caches it). */
export async function addNetworkList(
  list: CniNetworkList,
  rt: CniRuntimeConf,
  opts: CniInvokeOptions,
): Promise<JsonMap> {
  let prev: JsonMap | null = null;
  for (const plugin of list.plugins) {
    const result = await invoke('ADD', list, plugin, prev, rt, opts);
    if (!result) throw new CniError(String(plugin.type), 'ADD', 0, 'no result', '');
    prev = result;
  }
  const final = prev ?? {};
  mkdirSync(opts.cacheDir, { recursive: true });
  writeFileSync(
    cacheFile(opts, list, rt),
    JSON.stringify({
      kind: 'cniCacheV1',
      containerId: rt.containerId,
      ifName: rt.ifName,
      networkName: list.name,
      cniArgs: rt.args,
      capabilityArgs: rt.capabilityArgs ?? {},
      result: final,
    }),
  );
  return final;
}

/** CHECK through every plugin (skipped when the list disables it or predates CNI 0.4.0). */
export async function checkNetworkList(
  list: CniNetworkList,
  rt: CniRuntimeConf,
  opts: CniInvokeOptions,
): Promise<void> {
  if (list.disableCheck || /^0\.[0-3]\./.test(list.cniVersion)) return;
  const prev = cachedResult(opts, list, rt);
  for (const plugin of list.plugins) await invoke('CHECK', list, plugin, prev, rt, opts);
}

/** DEL through every plugin in reverse order; every plugin runs, failures are returned, the cache is removed. */
export async function delNetworkList(
  list: CniNetworkList,
  rt: CniRuntimeConf,
  opts: CniInvokeOptions,
): Promise<CniError[]> {
  const prev = cachedResult(opts, list, rt);
  const errors: CniError[] = [];
  for (const plugin of [...list.plugins].reverse()) {
    try {
      await invoke('DEL', list, plugin, prev, rt, opts);
    } catch (err) {
      if (err instanceof CniError) errors.push(err);
      else errors.push(new CniError(String(plugin.type), 'DEL', 0, (err as Error).message, ''));
    }
  }
  rmSync(cacheFile(opts, list, rt), { force: true });
  return errors;
}

/** The first IPv4 address (without prefix length) of a CNI result, or null. */
export function resultIpv4(result: JsonMap): string | null {
  const ips = result.ips;
  if (!Array.isArray(ips)) return null;
  for (const entry of ips) {
    if (!isMap(entry) || typeof entry.address !== 'string') continue;
    const addr = entry.address.split('/')[0] ?? '';
    if (/^\d+\.\d+\.\d+\.\d+$/.test(addr)) return addr;
  }
  return null;
}
