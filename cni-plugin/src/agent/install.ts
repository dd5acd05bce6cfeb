/**
 * Installs the istio-cni plugin on the node and chains it into the node's CNI config, like Istio's
 * install-cni (istio/istio cni/pkg/install, facts only):
 * - `<bin dir>/istio-cni`: a small shell wrapper (`exec <node> <its dir>/istio-cni.d/plugin.mjs "$@"`),
 *   because the runtime execs the plugin directly. The plugin's TypeScript is type-stripped ONCE here into
 *   plain JavaScript under `istio-cni.d/`: Node's type stripping costs ~90 ms per start, and the plugin
 *   starts once per pod.
 * - the first CNI config file by name in the net dir (the one the runtime uses) gets
 *   `{"type": "istio-cni", …}` appended as the LAST plugin; other plugins are kept as they are. A single
 *   plugin `.conf`/`.json` is turned into a `.conflist` (as Istio does). Writes are atomic renames and only
 *   happen when something differs, so a re-install is idempotent.
 * - drift (the file replaced by the primary CNI, our entry removed, the wrapper deleted) is detected with
 *   fs.watch plus a periodic check and repaired.
 * - uninstall removes our entry and files; the rest of the conflist stays as it is.
 */
import { type FSWatcher, watch } from 'node:fs';
import {
  chmod,
  copyFile,
  mkdir,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  unlink,
  writeFile,
} from 'node:fs/promises';
import { stripTypeScriptTypes } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { describeError, MeshError } from '../../../pkg/errors/index.ts';

export const PLUGIN_TYPE = 'istio-cni';
/** Directory next to the wrapper holding the plugin's JavaScript (and optionally a Node binary). */
export const PLUGIN_DIR_NAME = 'istio-cni.d';
/** The plugin's modules, relative to cni-plugin/src; every relative import among them must be listed. */
export const PLUGIN_SOURCES: readonly string[] = [
  'plugin.ts',
  'plugin/cni.ts',
  'plugin/io.ts',
  'protocol.ts',
];
const SRC_DIR = fileURLToPath(new URL('../', import.meta.url));
/** Config file extensions a runtime loads (libcni): the first by name wins. */
const CONF_EXTENSIONS = ['.conflist', '.conf', '.json'];

export interface PluginEntryOptions {
  readonly runDirOnHost: string;
  readonly excludeNamespaces: readonly string[];
  readonly podNamespace: string;
  readonly logLevel: string;
}

export interface InstallerOptions extends PluginEntryOptions {
  readonly binDir: string;
  /** The agent's plugin socket; when set, check() reports it missing as drift. */
  readonly socketPath?: string;
  readonly netDir: string;
  readonly confName: string | null;
  readonly nodePath: string;
  readonly installNodeBinary: boolean;
  readonly logger: Logger;
}

/** The entry appended to the node's conflist (Istio's field names). */
export function pluginEntry(o: PluginEntryOptions): Record<string, unknown> {
  return {
    type: PLUGIN_TYPE,
    plugin_log_level: o.logLevel,
    cni_agent_run_dir: o.runDirOnHost,
    ambient_enabled: true,
    exclude_namespaces: [...o.excludeNamespaces],
    pod_namespace: o.podNamespace,
  };
}

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", "'\\''")}'`;
}

/**
 * The wrapper script the runtime executes as `istio-cni`. It finds the plugin next to itself (`$0` is the
 * absolute path the runtime resolved in CNI_PATH), so it works whatever path the node's bin dir has in the
 * agent's container. `nodePath` null = the Node binary copied into `istio-cni.d/`.
 */
export function wrapperScript(nodePath: string | null): string {
  const node = nodePath === null ? `"$dir/${PLUGIN_DIR_NAME}/node"` : shellQuote(nodePath);
  return [
    '#!/bin/sh',
    '# istio-cni chained CNI plugin, installed by the ambient-ts istio-cni node agent (reinstalled on drift).',
    'dir=$(dirname "$0")',
    `exec ${node} "$dir/${PLUGIN_DIR_NAME}/plugin.mjs" "$@"`,
    '',
  ].join('\n');
}

/** Type-strips the plugin's modules into `{relative .mjs path → JavaScript}`. */
export async function buildPluginJs(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const rel of PLUGIN_SOURCES) {
    const source = await readFile(join(SRC_DIR, rel), 'utf8');
    const js = stripTypes(source).replace(/(from\s+['"])(\.{1,2}\/[^'"]+)\.ts(['"])/g, '$1$2.mjs$3');
    out.set(rel.replace(/\.ts$/, '.mjs'), js);
  }
  return out;
}

function stripTypes(source: string): string {
  // stripTypeScriptTypes is marked experimental in Node 24 and warns once; the warning carries no news.
  const emit = process.emitWarning;
  process.emitWarning = (() => {}) as typeof process.emitWarning;
  try {
    return stripTypeScriptTypes(source, { mode: 'strip' });
  } finally {
    process.emitWarning = emit;
  }
}

async function readIfExists(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** Writes via a temporary file and rename, so a concurrently executing runtime never sees half a file. */
async function atomicWrite(path: string, content: string, mode: number): Promise<void> {
  const tmp = join(dirname(path), `.${PLUGIN_TYPE}.tmp-${process.pid}`);
  await writeFile(tmp, content, { mode });
  await chmod(tmp, mode);
  await rename(tmp, path);
}

/** The config file the runtime uses: `confName`, or the first `.conflist/.conf/.json` by name. */
export async function findConfigFile(netDir: string, confName: string | null): Promise<string | null> {
  if (confName) return (await readIfExists(join(netDir, confName))) === null ? null : join(netDir, confName);
  let names: string[];
  try {
    names = await readdir(netDir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const candidates = names
    .filter((n) => CONF_EXTENSIONS.some((e) => n.endsWith(e)) && !n.startsWith('.'))
    .sort();
  return candidates.length > 0 ? join(netDir, candidates[0]!) : null;
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * The conflist with our entry as the last plugin (and nowhere else), converted from a single-plugin
 * config when needed. Throws MESH_ERR_CNI_INSTALL on a file that is not a CNI config.
 */
export function insertPlugin(
  path: string,
  text: string,
  entry: Record<string, unknown>,
): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new MeshError('MESH_ERR_CNI_INSTALL', `${path}: not JSON (${(err as Error).message})`);
  }
  if (!isObj(doc)) throw new MeshError('MESH_ERR_CNI_INSTALL', `${path}: not a JSON object`);
  let list: Record<string, unknown>;
  if (Array.isArray(doc.plugins)) {
    list = { ...doc };
  } else if (typeof doc.type === 'string') {
    // A single-plugin config: wrap it (cniVersion and name move to the list, as libcni expects).
    const { cniVersion, name, ...plugin } = doc;
    list = { cniVersion, name, plugins: [plugin] };
  } else {
    throw new MeshError(
      'MESH_ERR_CNI_INSTALL',
      `${path}: neither a conflist (plugins) nor a plugin config (type)`,
    );
  }
  const plugins = (list.plugins as unknown[]).filter((p) => !(isObj(p) && p.type === PLUGIN_TYPE));
  plugins.push(entry);
  list.plugins = plugins;
  return list;
}

/** The conflist without our entries; null when there were none. */
export function removePlugin(text: string): Record<string, unknown> | null {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return null;
  }
  if (!isObj(doc) || !Array.isArray(doc.plugins)) return null;
  const plugins = doc.plugins.filter((p) => !(isObj(p) && p.type === PLUGIN_TYPE));
  if (plugins.length === doc.plugins.length) return null;
  return { ...doc, plugins };
}

export interface InstallResult {
  /** The conflist we are chained into. */
  readonly confPath: string;
  /** Files written (empty on an idempotent re-install). */
  readonly written: readonly string[];
}

export class Installer {
  readonly #o: InstallerOptions;
  #js: Map<string, string> | null = null;
  #confPath: string | null = null;
  #watchers: FSWatcher[] = [];
  #timer: NodeJS.Timeout | null = null;
  #debounce: NodeJS.Timeout | null = null;

  constructor(o: InstallerOptions) {
    this.#o = o;
  }

  get confPath(): string | null {
    return this.#confPath;
  }

  get #pluginDir(): string {
    return join(this.#o.binDir, PLUGIN_DIR_NAME);
  }

  #desiredFiles(js: Map<string, string>): Map<string, { content: string; mode: number }> {
    const files = new Map<string, { content: string; mode: number }>();
    for (const [rel, content] of js) files.set(join(this.#pluginDir, rel), { content, mode: 0o644 });
    files.set(join(this.#o.binDir, PLUGIN_TYPE), {
      content: wrapperScript(this.#o.installNodeBinary ? null : this.#o.nodePath),
      mode: 0o755,
    });
    return files;
  }

  async #entryJson(): Promise<Record<string, unknown>> {
    return pluginEntry(this.#o);
  }

  /** Installs or repairs everything; idempotent. Throws MESH_ERR_CNI_INSTALL. */
  async install(): Promise<InstallResult> {
    try {
      return await this.#install();
    } catch (err) {
      if (err instanceof MeshError) throw err;
      throw new MeshError(
        'MESH_ERR_CNI_INSTALL',
        `installing the istio-cni plugin failed: ${describeError(err)}`,
        {
          cause: err,
        },
      );
    }
  }

  async #install(): Promise<InstallResult> {
    this.#js ??= await buildPluginJs();
    const written: string[] = [];
    await mkdir(join(this.#pluginDir, 'plugin'), { recursive: true });
    if (this.#o.installNodeBinary) {
      const target = join(this.#pluginDir, 'node');
      const [src, dst] = await Promise.all([stat(this.#o.nodePath), stat(target).catch(() => null)]);
      if (!dst || dst.size !== src.size || dst.mtimeMs < src.mtimeMs) {
        await copyFile(this.#o.nodePath, `${target}.tmp`);
        await chmod(`${target}.tmp`, 0o755);
        await rename(`${target}.tmp`, target);
        written.push(target);
      }
    }
    // Plugin code first, wrapper last: a runtime that finds the wrapper always finds its modules.
    const files = [...this.#desiredFiles(this.#js)].sort(([a], [b]) =>
      a.endsWith(PLUGIN_TYPE) ? 1 : b.endsWith(PLUGIN_TYPE) ? -1 : 0,
    );
    for (const [path, f] of files) {
      if ((await readIfExists(path)) === f.content) continue;
      await atomicWrite(path, f.content, f.mode);
      written.push(path);
    }
    const confPath = await findConfigFile(this.#o.netDir, this.#o.confName);
    if (!confPath) {
      throw new MeshError(
        'MESH_ERR_CNI_INSTALL',
        `no CNI config file in ${this.#o.netDir} (the primary CNI has not written one yet)`,
        { hint: 'the agent waits and retries; check the primary CNI plugin on this node' },
      );
    }
    const text = (await readIfExists(confPath)) ?? '';
    const entry = await this.#entryJson();
    const next = insertPlugin(confPath, text, entry);
    const target = confPath.endsWith('.conflist')
      ? confPath
      : `${confPath.replace(/\.(conf|json)$/, '')}.conflist`;
    let current: unknown = null;
    try {
      current = JSON.parse(text);
    } catch {
      // rewritten below
    }
    if (target !== confPath || !sameJson(current, next)) {
      await atomicWrite(target, `${JSON.stringify(next, null, 2)}\n`, 0o644);
      written.push(target);
      if (target !== confPath) await unlink(confPath);
    }
    this.#confPath = target;
    if (written.length > 0) this.#o.logger.info({ confPath: target, written }, 'istio-cni plugin installed');
    return { confPath: target, written };
  }

  /** Null when the install is intact, else what drifted. */
  async check(): Promise<string | null> {
    this.#js ??= await buildPluginJs();
    for (const [path, f] of this.#desiredFiles(this.#js)) {
      if ((await readIfExists(path)) !== f.content) return `${path} missing or changed`;
    }
    if (this.#o.socketPath && !(await stat(this.#o.socketPath).catch(() => null))?.isSocket()) {
      return `plugin socket ${this.#o.socketPath} missing`;
    }
    const confPath = await findConfigFile(this.#o.netDir, this.#o.confName);
    if (!confPath) return `no CNI config file in ${this.#o.netDir}`;
    if (this.#confPath && confPath !== this.#confPath)
      return `CNI config ${this.#confPath} preempted by ${confPath}`;
    const text = await readIfExists(confPath);
    let doc: unknown;
    try {
      doc = JSON.parse(text ?? '');
    } catch {
      return `${confPath} is not valid JSON`;
    }
    const plugins = isObj(doc) && Array.isArray(doc.plugins) ? doc.plugins : null;
    if (!plugins) return `${confPath} is not a conflist`;
    const ours = plugins.filter((p) => isObj(p) && p.type === PLUGIN_TYPE);
    if (ours.length !== 1 || !sameJson(plugins[plugins.length - 1], await this.#entryJson())) {
      return `istio-cni entry missing, duplicated, changed or not last in ${confPath}`;
    }
    return null;
  }

  /**
   * Watches the bin and net dirs (and checks every `intervalMs`): on drift calls `onDrift(reason)`, which
   * is expected to re-install. Events are debounced; a missing dir is retried by the periodic check.
   */
  watch(intervalMs: number, onDrift: (reason: string) => void): void {
    const recheck = (): void => {
      if (this.#debounce) return;
      this.#debounce = setTimeout(() => {
        this.#debounce = null;
        this.check().then(
          (reason) => {
            if (reason) onDrift(reason);
          },
          (err: unknown) => onDrift(`check failed: ${describeError(err)}`),
        );
      }, 100);
    };
    for (const dir of [this.#o.binDir, this.#o.netDir]) {
      try {
        const w = watch(dir, { persistent: false }, recheck);
        w.on('error', () => {
          // The dir went away; the periodic check notices and the re-install re-creates what it can.
        });
        this.#watchers.push(w);
      } catch (err) {
        this.#o.logger.warn(
          { dir, err: describeError(err) },
          'cannot watch dir; relying on the periodic check',
        );
      }
    }
    this.#timer = setInterval(recheck, intervalMs);
    this.#timer.unref();
  }

  stopWatching(): void {
    for (const w of this.#watchers) w.close();
    this.#watchers = [];
    if (this.#timer) clearInterval(this.#timer);
    if (this.#debounce) clearTimeout(this.#debounce);
    this.#timer = null;
    this.#debounce = null;
  }

  /** Removes our conflist entry and our files; the rest of the config is left as it is. */
  async uninstall(): Promise<void> {
    this.stopWatching();
    const confPath = this.#confPath ?? (await findConfigFile(this.#o.netDir, this.#o.confName));
    if (confPath) {
      const text = await readIfExists(confPath);
      const next = text === null ? null : removePlugin(text);
      if (next) await atomicWrite(confPath, `${JSON.stringify(next, null, 2)}\n`, 0o644);
    }
    await rm(join(this.#o.binDir, PLUGIN_TYPE), { force: true });
    await rm(this.#pluginDir, { recursive: true, force: true });
    this.#o.logger.info({ confPath }, 'istio-cni plugin uninstalled');
  }
}
