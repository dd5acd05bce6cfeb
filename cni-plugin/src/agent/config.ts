/**
 * istio-cni node agent configuration, read once from the environment (Istio's names where Istio has one),
 * then frozen. Paths come in two views: where the agent sees a directory (its container mounts) and where
 * the container runtime that executes the plugin sees it (the node's own paths); they are equal on a normal
 * node and in the lab unless the lab maps hostPaths elsewhere.
 */
import { hostname } from 'node:os';
import * as env from '../../../pkg/config/index.ts';
import { LEVELS, type Level } from '../../../pkg/telemetry/index.ts';

export type CleanupMode = 'auto' | 'always' | 'never';

export interface AgentConfig {
  /** The node this agent serves (NODE_NAME, from the downward API). */
  readonly nodeName: string;
  readonly podName: string;
  /** Namespace of the agent's own DaemonSet (POD_NAMESPACE). */
  readonly podNamespace: string;
  /** Path to a kubeconfig; in-cluster service account when unset (KUBECONFIG). */
  readonly kubeconfig: string | null;

  /** The node's CNI binary dir as mounted in the agent (CNI_BIN_DIR). */
  readonly cniBinDir: string;
  /** The node's CNI config dir (CNI_NET_DIR). */
  readonly cniNetDir: string;
  /** A specific config file to chain into; empty = the first config file by name (Istio's default). */
  readonly cniConfName: string | null;
  /** Run dir: pod state files, plugin log (CNI_AGENT_RUN_DIR), and its path as the runtime sees it. */
  readonly runDir: string;
  readonly runDirOnHost: string;
  /**
   * The plugin socket (PLUGIN_SOCKET): by default next to the plugin in `<bin dir>/istio-cni.d/`, where the
   * plugin looks for it relative to its own file (see protocol.ts).
   */
  readonly pluginSocket: string;
  /** Node binary the plugin wrapper execs (a node path); defaults to the agent's own Node 24. */
  readonly pluginNodePath: string;
  /** Copy the Node binary into `<bin dir>/istio-cni.d/` (clusters where the agent's image is not the host). */
  readonly installNodeBinary: boolean;
  /** Skip the plugin install (the plugin is managed elsewhere); the agent still serves it. */
  readonly skipInstall: boolean;
  /** Re-check the install this often besides fs.watch (drift from tools that replace the conflist). */
  readonly installCheckIntervalMs: number;
  /** What SIGTERM removes: `auto` keeps the plugin while the DaemonSet still exists (an upgrade). */
  readonly cleanupOnShutdown: CleanupMode;

  /** ZDS socket shared with ztunnel (ZTUNNEL_SOCKET; Istio's default path). */
  readonly ztunnelSocket: string;
  /** How long one ZDS request waits for ztunnel's ack (Istio: 5 s read/write deadline). */
  readonly ztunnelAckTimeoutMs: number;
  /** How long a plugin ADD waits for a ztunnel to connect before failing (0 = Istio: fail at once). */
  readonly ztunnelWaitOnAddMs: number;
  /** How long a plugin ADD waits for the informer to learn about the pod and its namespace. */
  readonly addPodWaitMs: number;

  readonly excludedNamespaces: readonly string[];
  /** Redirect DNS to ztunnel 15053 (AMBIENT_DNS_CAPTURE); off until ztunnel serves DNS. */
  readonly dnsCapture: boolean;
  /** Program IPv6 rules for pods that have IPv6 addresses (AMBIENT_ENABLE_IPV6). */
  readonly enableIpv6: boolean;
  /** Use native nftables instead of iptables-restore (NATIVE_NFTABLES). */
  readonly nativeNftables: boolean;
  /** SNAT node-local probe traffic to captured pods (HOST_PROBE_SNAT). */
  readonly hostProbeSnat: boolean;
  /** Netns for host rules: empty = the agent's own (hostNetwork: the node's). Tests point it elsewhere. */
  readonly hostNetns: string | null;
  /** CNI_NETNS paths under `netnsHostDir` are opened under `netnsMountDir` (the agent's mount of it). */
  readonly netnsHostDir: string;
  readonly netnsMountDir: string;

  /** Readiness `:8000/readyz` (Istio's istio-cni port) and metrics `:15014/metrics`. */
  readonly readinessPort: number;
  readonly monitoringPort: number;
  readonly bindAddress: string;
  readonly logLevel: Level;
  readonly drainGraceMs: number;
}

export function loadConfig(e: env.Env = process.env): AgentConfig {
  const binDir = env.str(e, 'CNI_BIN_DIR', '/opt/cni/bin');
  const runDir = env.str(e, 'CNI_AGENT_RUN_DIR', '/var/run/istio-cni');
  const netnsHostDir = env.str(e, 'NETNS_HOST_DIR', '/var/run/netns');
  return env.freeze({
    nodeName: env.str(e, 'NODE_NAME', hostname()),
    podName: env.str(e, 'POD_NAME', 'istio-cni-node'),
    podNamespace: env.str(e, 'POD_NAMESPACE', 'istio-system'),
    kubeconfig: env.optionalStr(e, 'KUBECONFIG'),
    cniBinDir: binDir,
    cniNetDir: env.str(e, 'CNI_NET_DIR', '/etc/cni/net.d'),
    cniConfName: env.optionalStr(e, 'CNI_CONF_NAME'),
    runDir,
    runDirOnHost: env.str(e, 'CNI_AGENT_RUN_DIR_ON_HOST', runDir),
    pluginSocket: env.str(e, 'PLUGIN_SOCKET', `${binDir}/istio-cni.d/pluginevent.sock`),
    pluginNodePath: env.str(e, 'PLUGIN_NODE_PATH', process.execPath),
    installNodeBinary: env.bool(e, 'INSTALL_NODE_BINARY', false),
    skipInstall: env.bool(e, 'SKIP_CNI_INSTALL', false),
    installCheckIntervalMs: env.duration(e, 'INSTALL_CHECK_INTERVAL', 10_000, { minMs: 100 }),
    cleanupOnShutdown: env.oneOf(e, 'CLEANUP_ON_SHUTDOWN', 'auto', ['auto', 'always', 'never'] as const),
    ztunnelSocket: env.str(e, 'ZTUNNEL_SOCKET', '/var/run/ztunnel/ztunnel.sock'),
    ztunnelAckTimeoutMs: env.duration(e, 'ZTUNNEL_ACK_TIMEOUT', 5_000, { minMs: 10 }),
    ztunnelWaitOnAddMs: env.duration(e, 'ZTUNNEL_WAIT_ON_ADD', 0),
    addPodWaitMs: env.duration(e, 'ADD_POD_WAIT', 5_000),
    excludedNamespaces: env.list(e, 'EXCLUDED_NAMESPACES', ['kube-system', 'istio-system']),
    dnsCapture: env.bool(e, 'AMBIENT_DNS_CAPTURE', false),
    enableIpv6: env.bool(e, 'AMBIENT_ENABLE_IPV6', true),
    nativeNftables: env.bool(e, 'NATIVE_NFTABLES', false),
    hostProbeSnat: env.bool(e, 'HOST_PROBE_SNAT', true),
    hostNetns: env.optionalStr(e, 'HOST_NETNS'),
    netnsHostDir,
    netnsMountDir: env.str(e, 'NETNS_MOUNT_DIR', netnsHostDir),
    readinessPort: env.int(e, 'READINESS_PORT', 8000, { min: 0, max: 65535 }),
    monitoringPort: env.int(e, 'MONITORING_PORT', 15014, { min: 0, max: 65535 }),
    bindAddress: env.str(e, 'BIND_ADDRESS', '0.0.0.0'),
    logLevel: env.oneOf(e, 'LOG_LEVEL', 'info', LEVELS),
    drainGraceMs: env.duration(e, 'TERMINATION_DRAIN_DURATION', 5_000),
  });
}
