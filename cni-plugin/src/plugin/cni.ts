/**
 * The istio-cni chained plugin's logic, CNI spec 1.0.0 (containernetworking/cni SPEC.md): ADD, DEL, CHECK,
 * VERSION; config on stdin; CNI_* environment; `prevResult` passed through unchanged; nothing but the
 * result on stdout; errors as `{cniVersion, code, msg, details}` with a non-zero exit.
 *
 * Policy (ARCHITECTURE.md, istio/istio cni/pkg/plugin/plugin.go for the facts):
 * - ADD reports every Kubernetes pod sandbox to the node agent, which decides whether the pod is ambient
 *   (it watches pods and namespaces). A pod the agent says to capture only starts once the agent confirms
 *   capture; if the agent is unreachable the ADD fails with code 11 ("try again later"), so no ambient pod
 *   ever runs uncaptured. The only cheap decisions taken here come from the config: ambient disabled, the
 *   excluded namespaces, and the agent's own pod (`istio-cni-node-*` in `pod_namespace`), which must start
 *   while no agent runs.
 * - DEL and CHECK never fail because the agent is away.
 *
 * Kept free of heavy imports: this runs once per pod start (see plugin.ts).
 */
import {
  type CniAddEvent,
  type CniAddReply,
  type CniDelEvent,
  type CniErrorReply,
  PLUGIN_SOCKET_NAME,
} from '../protocol.ts';

/** Spec versions this plugin speaks (the brief and Istio's plugin: 0.3.0 up to 1.0.0). */
export const SUPPORTED_VERSIONS: readonly string[] = ['0.3.0', '0.3.1', '0.4.0', '1.0.0'];
export const PLUGIN_VERSION = '1.0.0';

/** Well-known error codes of the CNI spec, and our plugin-specific one (>= 100). */
export const CNI_ERR = {
  INCOMPATIBLE_VERSION: 1,
  UNSUPPORTED_FIELD: 2,
  UNKNOWN_CONTAINER: 3,
  INVALID_ENVIRONMENT: 4,
  IO_FAILURE: 5,
  DECODE: 6,
  INVALID_CONFIG: 7,
  TRY_AGAIN_LATER: 11,
  /** The agent refused to capture an ambient pod for a non-transient reason. */
  CAPTURE_FAILED: 999,
} as const;

export class CniError extends Error {
  readonly code: number;
  readonly details: string;
  constructor(code: number, msg: string, details = '') {
    super(msg);
    this.code = code;
    this.details = details;
  }
}

/** Defaults of the plugin config fields (Istio's field names; ours: agent_timeout_ms, agent_socket). */
export const DEFAULT_AGENT_RUN_DIR = '/var/run/istio-cni';
export const DEFAULT_EXCLUDED_NAMESPACES: readonly string[] = ['kube-system', 'istio-system'];
/** ADD waits this long for the agent: rules + ztunnel ack (5 s deadline) + the pod annotation. */
export const DEFAULT_AGENT_TIMEOUT_MS = 30_000;
/** DEL only informs the agent; it must not hold up sandbox teardown. */
export const DEL_AGENT_TIMEOUT_MS = 2_000;

export interface PluginConfig {
  readonly cniVersion: string;
  readonly name: string;
  readonly type: string;
  readonly logLevel: 'debug' | 'info' | 'warn' | 'error';
  readonly agentRunDir: string;
  readonly agentSocket: string;
  readonly ambientEnabled: boolean;
  readonly excludeNamespaces: readonly string[];
  readonly podNamespace: string;
  readonly agentTimeoutMs: number;
  /** The chain's previous result, verbatim; undefined when absent. */
  readonly prevResult: unknown;
}

export interface AgentResponse {
  readonly status: number;
  readonly body: unknown;
}

/** Talks to the node agent; rejects on transport failures (no socket, refused, timeout). */
export interface AgentClient {
  post(socket: string, path: string, body: unknown, timeoutMs: number): Promise<AgentResponse>;
}

export interface PluginLog {
  log(level: 'debug' | 'info' | 'warn' | 'error', fields: Record<string, unknown>, msg: string): void;
}

export interface PluginIo {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly stdin: string;
  readonly agent: AgentClient;
  /** The directory of the plugin's own file: the agent's socket is there unless `agent_socket` says otherwise. */
  readonly selfDir: string;
  /** Configured once the config is parsed (it names the log file); null until then. */
  readonly openLog: (config: PluginConfig | null) => PluginLog;
}

export interface PluginOutcome {
  /** Exactly what goes to stdout (a JSON document plus newline, or empty). */
  readonly stdout: string;
  readonly exitCode: number;
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function requireEnv(env: PluginIo['env'], name: string): string {
  const v = env[name];
  if (v === undefined || v === '') {
    throw new CniError(CNI_ERR.INVALID_ENVIRONMENT, `required env variable ${name} missing`);
  }
  return v;
}

/** `CNI_ARGS` = `K=V;K2=V2` (spec: alphanumeric key-value pairs separated by semicolons). */
export function parseCniArgs(text: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (!text) return out;
  for (const pair of text.split(';')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    if (eq <= 0) {
      throw new CniError(CNI_ERR.INVALID_ENVIRONMENT, `CNI_ARGS: invalid pair ${JSON.stringify(pair)}`);
    }
    out.set(pair.slice(0, eq), pair.slice(eq + 1));
  }
  return out;
}

function stringList(v: unknown, field: string): string[] {
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) {
    throw new CniError(CNI_ERR.INVALID_CONFIG, `network config field ${field} must be a list of strings`);
  }
  return v as string[];
}

/**
 * Parses stdin. `requireVersion` is false for VERSION, where stdin may be empty. Malformed JSON is code 6,
 * an unsupported cniVersion code 1, bad plugin fields code 7.
 */
export function parseConfig(stdin: string, socketDir: string): PluginConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(stdin);
  } catch (err) {
    throw new CniError(CNI_ERR.DECODE, 'failed to decode content', (err as Error).message);
  }
  if (!isObj(doc)) throw new CniError(CNI_ERR.DECODE, 'failed to decode content', 'not a JSON object');
  const cniVersion = typeof doc.cniVersion === 'string' ? doc.cniVersion : '';
  if (!SUPPORTED_VERSIONS.includes(cniVersion)) {
    throw new CniError(
      CNI_ERR.INCOMPATIBLE_VERSION,
      'incompatible CNI versions',
      `config is ${JSON.stringify(cniVersion || '(none)')}, plugin supports [${SUPPORTED_VERSIONS.join(' ')}]`,
    );
  }
  if (
    'prevResult' in doc &&
    doc.prevResult !== undefined &&
    doc.prevResult !== null &&
    !isObj(doc.prevResult)
  ) {
    throw new CniError(CNI_ERR.DECODE, 'failed to decode content', 'prevResult is not a JSON object');
  }
  const runDir =
    typeof doc.cni_agent_run_dir === 'string' && doc.cni_agent_run_dir
      ? doc.cni_agent_run_dir
      : DEFAULT_AGENT_RUN_DIR;
  const level = doc.plugin_log_level;
  const timeout = doc.agent_timeout_ms;
  if (timeout !== undefined && (typeof timeout !== 'number' || !Number.isInteger(timeout) || timeout <= 0)) {
    throw new CniError(
      CNI_ERR.INVALID_CONFIG,
      'network config field agent_timeout_ms must be a positive integer',
    );
  }
  return {
    cniVersion,
    name: typeof doc.name === 'string' ? doc.name : '',
    type: typeof doc.type === 'string' ? doc.type : '',
    logLevel: level === 'debug' || level === 'warn' || level === 'error' ? level : 'info',
    agentRunDir: runDir,
    agentSocket:
      typeof doc.agent_socket === 'string' && doc.agent_socket
        ? doc.agent_socket
        : `${socketDir}/${PLUGIN_SOCKET_NAME}`,
    ambientEnabled: doc.ambient_enabled === undefined ? true : doc.ambient_enabled === true,
    excludeNamespaces:
      doc.exclude_namespaces === undefined
        ? DEFAULT_EXCLUDED_NAMESPACES
        : stringList(doc.exclude_namespaces, 'exclude_namespaces'),
    podNamespace:
      typeof doc.pod_namespace === 'string' && doc.pod_namespace ? doc.pod_namespace : 'istio-system',
    agentTimeoutMs: typeof timeout === 'number' ? timeout : DEFAULT_AGENT_TIMEOUT_MS,
    prevResult: doc.prevResult ?? undefined,
  };
}

/** The ADD result: prevResult unchanged, or a minimal result of the config's version when there is none. */
export function passThrough(config: PluginConfig): string {
  if (isObj(config.prevResult)) {
    const prev = config.prevResult;
    // A result must name its version; runtimes always set it, add it only if a caller left it out.
    const out = 'cniVersion' in prev ? prev : { cniVersion: config.cniVersion, ...prev };
    return `${JSON.stringify(out)}\n`;
  }
  return `${JSON.stringify({ cniVersion: config.cniVersion })}\n`;
}

/** IP addresses (CIDR) of prevResult.ips. */
export function prevResultIps(config: PluginConfig): string[] {
  const prev = config.prevResult;
  if (!isObj(prev) || !Array.isArray(prev.ips)) return [];
  const out: string[] = [];
  for (const ip of prev.ips) if (isObj(ip) && typeof ip.address === 'string') out.push(ip.address);
  return out;
}

function errorOutput(err: CniError, version: string): PluginOutcome {
  const body: Record<string, unknown> = { cniVersion: version, code: err.code, msg: err.message };
  if (err.details) body.details = err.details;
  return { stdout: `${JSON.stringify(body)}\n`, exitCode: 1 };
}

function versionOutput(stdin: string): string {
  let version = PLUGIN_VERSION;
  try {
    const doc = JSON.parse(stdin) as unknown;
    if (isObj(doc) && typeof doc.cniVersion === 'string' && SUPPORTED_VERSIONS.includes(doc.cniVersion)) {
      version = doc.cniVersion;
    }
  } catch {
    // VERSION may come with an empty or partial stdin: answer in our own version.
  }
  return `${JSON.stringify({ cniVersion: version, supportedVersions: SUPPORTED_VERSIONS })}\n`;
}

interface Invocation {
  readonly command: 'ADD' | 'DEL' | 'CHECK';
  readonly containerId: string;
  readonly netns: string | null;
  readonly ifName: string;
  readonly args: Map<string, string>;
}

function readInvocation(env: PluginIo['env'], command: 'ADD' | 'DEL' | 'CHECK'): Invocation {
  const containerId = requireEnv(env, 'CNI_CONTAINERID');
  // Spec: DEL without CNI_NETNS must still clean up as much as possible and succeed.
  const netns = command === 'DEL' ? env.CNI_NETNS || null : requireEnv(env, 'CNI_NETNS');
  const ifName = requireEnv(env, 'CNI_IFNAME');
  requireEnv(env, 'CNI_PATH');
  return { command, containerId, netns, ifName, args: parseCniArgs(env.CNI_ARGS) };
}

/** Runs one plugin invocation; never throws (every failure becomes a CNI error result). */
export async function runPlugin(io: PluginIo): Promise<PluginOutcome> {
  const command = io.env.CNI_COMMAND;
  if (command === 'VERSION') return { stdout: versionOutput(io.stdin), exitCode: 0 };
  let version = PLUGIN_VERSION;
  let log: PluginLog | null = null;
  try {
    if (!command)
      throw new CniError(CNI_ERR.INVALID_ENVIRONMENT, 'required env variable CNI_COMMAND missing');
    if (command !== 'ADD' && command !== 'DEL' && command !== 'CHECK') {
      throw new CniError(CNI_ERR.INVALID_ENVIRONMENT, `unknown CNI_COMMAND: ${command}`);
    }
    const inv = readInvocation(io.env, command);
    const config = parseConfig(io.stdin, io.selfDir);
    version = config.cniVersion;
    log = io.openLog(config);
    if (command === 'ADD') return await cmdAdd(io, config, inv, log);
    if (command === 'DEL') await cmdDel(io, config, inv, log);
    // CHECK: the spec says "return either nothing or an error"; capture is verified by the agent itself.
    return { stdout: '', exitCode: 0 };
  } catch (err) {
    const cniErr =
      err instanceof CniError
        ? err
        : new CniError(
            CNI_ERR.CAPTURE_FAILED,
            'istio-cni internal error',
            (err as Error)?.message ?? String(err),
          );
    (log ?? io.openLog(null)).log(
      'error',
      { code: cniErr.code, details: cniErr.details, command },
      cniErr.message,
    );
    return errorOutput(cniErr, version);
  }
}

function podOf(inv: Invocation): { name: string; namespace: string; uid: string | null } | null {
  const name = inv.args.get('K8S_POD_NAME') ?? '';
  const namespace = inv.args.get('K8S_POD_NAMESPACE') ?? '';
  if (!name || !namespace) return null;
  return { name, namespace, uid: inv.args.get('K8S_POD_UID') || null };
}

/** The agent's own DaemonSet pod: must start while no agent runs (Istio's isCNIPod). */
function isAgentPod(config: PluginConfig, pod: { name: string; namespace: string }): boolean {
  return pod.name.startsWith('istio-cni-node-') && pod.namespace === config.podNamespace;
}

async function cmdAdd(
  io: PluginIo,
  config: PluginConfig,
  inv: Invocation,
  log: PluginLog,
): Promise<PluginOutcome> {
  const pod = podOf(inv);
  const fields = { containerId: inv.containerId, pod: pod ? `${pod.namespace}/${pod.name}` : null };
  if (!pod) {
    log.log('debug', fields, 'not a kubernetes pod; passing through');
    return { stdout: passThrough(config), exitCode: 0 };
  }
  if (!config.ambientEnabled) return { stdout: passThrough(config), exitCode: 0 };
  if (config.excludeNamespaces.includes(pod.namespace)) {
    log.log('debug', fields, 'namespace excluded; passing through');
    return { stdout: passThrough(config), exitCode: 0 };
  }
  const event: CniAddEvent = {
    containerId: inv.containerId,
    netns: inv.netns ?? '',
    ifName: inv.ifName,
    podName: pod.name,
    podNamespace: pod.namespace,
    podUid: pod.uid,
    ips: prevResultIps(config),
    cniVersion: config.cniVersion,
  };
  let res: AgentResponse;
  try {
    res = await io.agent.post(config.agentSocket, '/cmdadd', event, config.agentTimeoutMs);
  } catch (err) {
    if (isAgentPod(config, pod)) {
      log.log('warn', fields, 'node agent unreachable, but this is the agent pod itself; passing through');
      return { stdout: passThrough(config), exitCode: 0 };
    }
    throw new CniError(
      CNI_ERR.TRY_AGAIN_LATER,
      `istio-cni: node agent unreachable at ${config.agentSocket}; pod ${pod.namespace}/${pod.name} is held back so it never runs uncaptured`,
      (err as Error).message,
    );
  }
  if (res.status === 200 && isObj(res.body) && typeof res.body.captured === 'boolean') {
    const reply = res.body as unknown as CniAddReply;
    log.log('info', { ...fields, captured: reply.captured, reason: reply.reason }, 'pod reported to agent');
    return { stdout: passThrough(config), exitCode: 0 };
  }
  const reply = isObj(res.body) ? (res.body as Partial<CniErrorReply>) : {};
  const why = typeof reply.error === 'string' ? reply.error : `agent answered HTTP ${res.status}`;
  const retryable = reply.retryable === true || res.status === 503;
  throw new CniError(
    retryable ? CNI_ERR.TRY_AGAIN_LATER : CNI_ERR.CAPTURE_FAILED,
    `istio-cni: capture of pod ${pod.namespace}/${pod.name} failed: ${why}`,
    `agent HTTP ${res.status}`,
  );
}

async function cmdDel(io: PluginIo, config: PluginConfig, inv: Invocation, log: PluginLog): Promise<void> {
  const pod = podOf(inv);
  if (!pod || !config.ambientEnabled || config.excludeNamespaces.includes(pod.namespace)) return;
  const event: CniDelEvent = {
    containerId: inv.containerId,
    netns: inv.netns,
    podName: pod.name,
    podNamespace: pod.namespace,
    podUid: pod.uid,
  };
  try {
    const res = await io.agent.post(
      config.agentSocket,
      '/cmddel',
      event,
      Math.min(config.agentTimeoutMs, DEL_AGENT_TIMEOUT_MS),
    );
    log.log(
      'debug',
      { containerId: inv.containerId, status: res.status },
      'sandbox deletion reported to agent',
    );
  } catch (err) {
    // The agent learns about deleted pods from its informer too; DEL must succeed regardless.
    log.log(
      'info',
      { containerId: inv.containerId, err: (err as Error).message },
      'agent unreachable on DEL; ignored',
    );
  }
}
