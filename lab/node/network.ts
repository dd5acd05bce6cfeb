/**
 * LabNetwork: the lab's nodes as network namespaces joined by a bridge that lives in a lab-owned "fabric"
 * namespace. Nothing is created in the machine's own network namespace: every veth is created with
 * `ip -n <fabric> link add … peer … netns <node>`, i.e. directly inside lab namespaces.
 *
 * ```
 *   netns <prefix>fabric: bridge lab0 10.B.0.1/24 (+ 10.B.0.2 DNS), routes 10.B.(i+1).0/24 via node i
 *      │ n0            │ n1 …   (bridge ports)
 *      │ eth0          │ eth0   (in the node namespaces)
 *   netns <prefix>node-0: 10.B.0.10/24          netns <prefix>node-1: 10.B.0.11/24
 *     default via 10.B.0.1                       default via 10.B.0.1
 *     10.B.2.0/24 via 10.B.0.11 (host-gw)        10.B.1.0/24 via 10.B.0.10
 *     unreachable 10.B.1.0/24 (own pods:         unreachable 10.B.2.0/24
 *       ptp adds a /32 per pod)
 * ```
 * The default route towards the fabric gives node-originated traffic to ClusterIPs a route (DNAT in OUTPUT
 * happens after routing) and makes unknown destinations fail fast (the fabric has no default route). The
 * `unreachable` route for a node's own pod CIDR stops packets to a pod that no longer exists from bouncing
 * between node and fabric until their TTL runs out.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { MeshError } from '../../pkg/errors/index.ts';
import type { Logger } from '../../pkg/telemetry/index.ts';
import { type CleanupReport, listNetns, NETNS_DIR, netnsPath, removeLab } from './cleanup.ts';
import { CONFLIST_NAME, linkSystemPlugins, nodeConflist } from './cni-config.ts';
import { type AddressPlan, addressPlan, MAX_NODES, names, validatePrefix } from './plan.ts';
import { readRegistry, readStates, StateRecorder, writeRegistry } from './state.ts';
import { ip, ipBatch, run, sysctl } from './sys.ts';

/** Host paths that stay the machine's own when a pod mounts them as hostPath (see LabNode.hostPath). */
export const PASSTHROUGH_HOST_PATHS: readonly string[] = [
  '/proc',
  '/sys',
  '/dev',
  '/var/run/netns',
  '/run/netns',
  '/lib/modules',
];

export const FABRIC_BRIDGE = 'lab0';
export const NODE_IFNAME = 'eth0';
export const CLUSTER_DOMAIN = 'cluster.local';

export interface LabNetworkOptions {
  /** Name prefix: one lowercase word + `-` (e.g. `amb-`). Every namespace the lab creates starts with it. */
  readonly prefix: string;
  /** Lab root directory (created if missing). Node directories go to `<root>/nodes/<node>/`. */
  readonly root: string;
  /** Number of nodes, 1..200. */
  readonly nodes: number;
  /** The lab owns 10.<block>.0.0/16. */
  readonly block: number;
  /** Kubernetes node names; default `node-<i>`. */
  readonly nodeNames?: readonly string[];
  /** Chain the `portmap` plugin in each node's conflist (hostPort support); default true. */
  readonly portmap?: boolean;
  /** Remove leftovers of an earlier lab with this prefix first instead of failing. */
  readonly replace?: boolean;
  readonly logger?: Logger;
}

/** Directories of one node, all under its root `<labRoot>/nodes/<name>/`. */
export interface NodeDirs {
  readonly root: string;
  readonly cniConf: string;
  readonly cniBin: string;
  /** host-local leases (`dataDir`). */
  readonly cniIpam: string;
  /** Cached CNI results, as libcni keeps them in /var/lib/cni/results. */
  readonly cniCache: string;
  readonly varRun: string;
  /** `/var/log/pods` of the node: `<ns>_<pod>_<uid>/<container>/<restart>.log`. */
  readonly podLogs: string;
  /** Per-pod volumes and runtime files, like /var/lib/kubelet/pods. */
  readonly kubeletPods: string;
  /** Per-container scratch (rootfs mount points). */
  readonly containers: string;
}

/** A bind mount of a node's filesystem view: a node directory shown at its standard host path. */
export interface NodeViewMount {
  readonly source: string;
  readonly target: string;
  readonly kind: 'dir' | 'file';
  readonly readOnly: boolean;
}

export interface LabNode {
  /** Kubernetes node name. */
  readonly name: string;
  readonly index: number;
  /** Network namespace name and path (`/var/run/netns/<prefix>node-<i>`). */
  readonly netns: string;
  readonly netnsPath: string;
  /** InternalIP. */
  readonly ip: string;
  readonly podCidr: string;
  /** Address of the host end of every ptp veth on this node (pods' default gateway). */
  readonly podGateway: string;
  readonly dirs: NodeDirs;
  readonly conflistFile: string;
  /** The node's own resolv.conf (for dnsPolicy Default and hostNetwork pods): the cluster DNS, no search. */
  readonly resolvConf: string;
  /** Where a pod's hostPath lives for this node (`/var/run/ztunnel` → `<node root>/var/run/ztunnel`). */
  hostPath(path: string): string;
  /**
   * The node's filesystem view, in which its CNI plugins run: the machine's root with the node's directories at
   * their standard paths (/etc/cni, /opt/cni, /var/lib/cni, /var/lib/kubelet, /var/log/pods, /var/run, and the
   * machine's /var/run/netns inside), consistent with hostPath mapping.
   */
  readonly viewMounts: readonly NodeViewMount[];
}

/** The mounts of a node's filesystem view (see LabNode.viewMounts). */
export function nodeViewMounts(root: string): NodeViewMount[] {
  const dir = (p: string): NodeViewMount => ({
    source: join(root, p),
    target: p,
    kind: 'dir',
    readOnly: false,
  });
  return [
    dir('/etc/cni'),
    dir('/opt/cni'),
    dir('/var/lib/cni'),
    dir('/var/lib/kubelet'),
    dir('/var/log/pods'),
    dir('/var/run'),
    { source: NETNS_DIR, target: '/var/run/netns', kind: 'dir', readOnly: false },
    { source: join(root, 'etc/resolv.conf'), target: '/etc/resolv.conf', kind: 'file', readOnly: true },
    { source: join(root, 'etc/hosts'), target: '/etc/hosts', kind: 'file', readOnly: true },
  ];
}

export interface FabricInfo {
  readonly netns: string;
  readonly netnsPath: string;
  readonly bridge: string;
  readonly gateway: string;
  readonly clusterDnsIp: string;
  readonly apiServerIp: string;
}

/** Maps a pod's hostPath onto a node root, except the few machine paths that are shared on purpose. */
export function mapHostPath(nodeRoot: string, path: string): string {
  const p = resolve('/', path);
  for (const keep of PASSTHROUGH_HOST_PATHS) if (p === keep || p.startsWith(`${keep}/`)) return p;
  return join(nodeRoot, p);
}

function nodeDirs(root: string): NodeDirs {
  return {
    root,
    cniConf: join(root, 'etc/cni/net.d'),
    cniBin: join(root, 'opt/cni/bin'),
    cniIpam: join(root, 'var/lib/cni/networks'),
    cniCache: join(root, 'var/lib/cni/results'),
    varRun: join(root, 'var/run'),
    podLogs: join(root, 'var/log/pods'),
    kubeletPods: join(root, 'var/lib/kubelet/pods'),
    containers: join(root, 'var/lib/lab/containers'),
  };
}

export class LabNetwork {
  readonly prefix: string;
  readonly root: string;
  readonly plan: AddressPlan;
  readonly fabric: FabricInfo;
  readonly nodes: readonly LabNode[];
  readonly clusterDomain = CLUSTER_DOMAIN;
  /** This network's state file; other lab components (runtime, DNS) keep their own next to it. */
  readonly state: StateRecorder;
  private readonly logger: Logger | null;
  private destroyed = false;

  private constructor(
    opts: LabNetworkOptions,
    root: string,
    plan: AddressPlan,
    nodes: LabNode[],
    state: StateRecorder,
  ) {
    this.prefix = opts.prefix;
    this.root = root;
    this.plan = plan;
    this.nodes = nodes;
    this.state = state;
    this.logger = opts.logger ?? null;
    this.fabric = {
      netns: names.fabric(opts.prefix),
      netnsPath: netnsPath(names.fabric(opts.prefix)),
      bridge: FABRIC_BRIDGE,
      gateway: plan.fabricGateway,
      clusterDnsIp: plan.clusterDnsIp,
      apiServerIp: plan.apiServerIp,
    };
  }

  /** Builds the fabric, the nodes and their directories; on any failure removes what it made and throws. */
  static async create(opts: LabNetworkOptions): Promise<LabNetwork> {
    validatePrefix(opts.prefix);
    const plan = addressPlan(opts.block);
    if (!Number.isInteger(opts.nodes) || opts.nodes < 1 || opts.nodes > MAX_NODES) {
      throw new MeshError('MESH_ERR_LAB_NET_INVALID', `node count ${opts.nodes} is not in 1..${MAX_NODES}`);
    }
    if (opts.nodeNames && opts.nodeNames.length !== opts.nodes) {
      throw new MeshError(
        'MESH_ERR_LAB_NET_INVALID',
        `${opts.nodeNames.length} node names given for ${opts.nodes} nodes`,
      );
    }
    const root = resolve(opts.root);
    const matcher = names.matcher(opts.prefix);
    const existing = listNetns().filter((n) => matcher.test(n));
    const registered = readRegistry(opts.prefix);
    if (existing.length > 0 || registered) {
      if (!opts.replace) {
        throw new MeshError(
          'MESH_ERR_LAB_NET_EXISTS',
          `a lab with prefix ${opts.prefix} exists (${existing.length} namespaces${registered ? `, root ${registered.root}` : ''})`,
        );
      }
      const roots = [root, ...(registered ? [resolve(registered.root)] : [])];
      const states = roots.flatMap((r) => readStates(r)).filter((s) => s.prefix === opts.prefix);
      await removeLab(opts.prefix, roots, states, opts.logger ? { logger: opts.logger } : {});
    }

    mkdirSync(root, { recursive: true });
    writeRegistry({ prefix: opts.prefix, root, createdAt: new Date().toISOString(), ownerPid: process.pid });
    const state = new StateRecorder(root, opts.prefix, 'network');
    const nodes: LabNode[] = [];
    for (let i = 0; i < opts.nodes; i++) {
      const name = opts.nodeNames?.[i] ?? `node-${i}`;
      const dirs = nodeDirs(join(root, 'nodes', name));
      nodes.push({
        name,
        index: i,
        netns: names.node(opts.prefix, i),
        netnsPath: netnsPath(names.node(opts.prefix, i)),
        ip: plan.nodeIp(i),
        podCidr: plan.podCidr(i),
        podGateway: plan.podGateway(i),
        dirs,
        conflistFile: join(dirs.cniConf, CONFLIST_NAME),
        resolvConf: join(dirs.root, 'etc/resolv.conf'),
        hostPath: (p) => mapHostPath(dirs.root, p),
        viewMounts: nodeViewMounts(dirs.root),
      });
    }
    const net = new LabNetwork(opts, root, plan, nodes, state);
    try {
      await net.build(opts);
    } catch (err) {
      await net.destroy().catch(() => undefined);
      throw err;
    }
    return net;
  }

  /** The node with this name or index. */
  node(which: string | number): LabNode {
    const n = typeof which === 'number' ? this.nodes[which] : this.nodes.find((x) => x.name === which);
    if (!n) throw new MeshError('MESH_ERR_LAB_NET_INVALID', `no node ${JSON.stringify(which)} in this lab`);
    return n;
  }

  /** Removes every process, namespace, mount and directory of this lab (pods included). Idempotent. */
  async destroy(opts: { graceMs?: number } = {}): Promise<CleanupReport> {
    const states = readStates(this.root).filter((s) => s.prefix === this.prefix);
    const report = await removeLab(this.prefix, [this.root], states, {
      ...(opts.graceMs === undefined ? {} : { graceMs: opts.graceMs }),
      ...(this.logger ? { logger: this.logger } : {}),
    });
    if (!this.destroyed)
      this.logger?.info({ prefix: this.prefix, ...summary(report) }, 'lab network destroyed');
    this.destroyed = true;
    return report;
  }

  private async addNetns(name: string): Promise<void> {
    this.state.addNetns(name);
    await ip(null, 'netns', 'add', name);
  }

  private async build(opts: LabNetworkOptions): Promise<void> {
    const fabric = this.fabric;
    const plan = this.plan;
    const fabricLen = plan.fabricCidr.split('/')[1];
    this.state.addDir(join(this.root, 'nodes'));
    this.state.addDir(join(this.root, 'run'));

    await this.addNetns(fabric.netns);
    await ipBatch(fabric.netns, [
      'link set lo up',
      `link add ${fabric.bridge} type bridge`,
      `addr add ${fabric.gateway}/${fabricLen} dev ${fabric.bridge}`,
      `addr add ${fabric.clusterDnsIp}/${fabricLen} dev ${fabric.bridge}`,
      `addr add ${fabric.apiServerIp}/${fabricLen} dev ${fabric.bridge}`,
      `link set ${fabric.bridge} up`,
    ]);
    await sysctl(fabric.netnsPath, forwardingSysctls());

    for (const node of this.nodes) {
      await this.addNetns(node.netns);
      const port = `n${node.index}`;
      // Created inside the fabric namespace with its peer moved straight into the node namespace.
      await ipBatch(fabric.netns, [
        `link add ${port} type veth peer name ${NODE_IFNAME} netns ${node.netns}`,
        `link set ${port} master ${fabric.bridge}`,
        `link set ${port} up`,
        `route add ${node.podCidr} via ${node.ip}`,
      ]);
      const routes = this.nodes
        .filter((o) => o !== node)
        .map((o) => `route add ${o.podCidr} via ${o.ip} dev ${NODE_IFNAME}`);
      await ipBatch(node.netns, [
        'link set lo up',
        `addr add ${node.ip}/${fabricLen} dev ${NODE_IFNAME}`,
        `link set ${NODE_IFNAME} up`,
        `route add default via ${fabric.gateway} dev ${NODE_IFNAME}`,
        `route add unreachable ${node.podCidr}`,
        ...routes,
      ]);
      await sysctl(node.netnsPath, { ...forwardingSysctls(), [`net.ipv4.conf.${NODE_IFNAME}.rp_filter`]: 0 });
      this.writeNodeFiles(node, opts);
    }
    this.logger?.info(
      { prefix: this.prefix, nodes: this.nodes.map((n) => `${n.name}=${n.ip} pods ${n.podCidr}`) },
      'lab network created',
    );
  }

  private writeNodeFiles(node: LabNode, opts: LabNetworkOptions): void {
    const d = node.dirs;
    for (const dir of [
      d.cniConf,
      d.cniBin,
      d.cniIpam,
      d.cniCache,
      d.varRun,
      d.podLogs,
      d.kubeletPods,
      d.containers,
    ]) {
      mkdirSync(dir, { recursive: true });
    }
    if (!existsSync(join(d.cniBin, 'ptp'))) linkSystemPlugins(d.cniBin);
    // host-local keeps its default dataDir, /var/lib/cni/networks: plugins run in the node's filesystem view,
    // where that is this node's d.cniIpam.
    const conflist = nodeConflist({
      podCidr: node.podCidr,
      podGateway: node.podGateway,
      ...(opts.portmap === undefined ? {} : { portmap: opts.portmap }),
    });
    writeFileSync(node.conflistFile, `${JSON.stringify(conflist, null, 2)}\n`);
    writeFileSync(node.resolvConf, `nameserver ${this.plan.clusterDnsIp}\noptions ndots:1\n`);
    writeFileSync(
      join(d.root, 'etc/hosts'),
      `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n${node.ip}\t${node.name}\n`,
    );
  }
}

/** Forwarding on and reverse-path filtering off: pods' packets are routed asymmetrically through nodes. */
function forwardingSysctls(): Record<string, number> {
  return {
    'net.ipv4.ip_forward': 1,
    'net.ipv4.conf.all.forwarding': 1,
    'net.ipv4.conf.all.rp_filter': 0,
    'net.ipv4.conf.default.rp_filter': 0,
  };
}

function summary(r: CleanupReport): Record<string, number> {
  return {
    netns: r.netns.length,
    killed: r.killed.length,
    unmounted: r.unmounted.length,
    errors: r.errors.length,
  };
}

/** Runs a command in a node's (or any lab) network namespace; a small convenience for glue and tests. */
export function runInNetns(
  netnsPathOrName: string,
  cmd: string,
  args: readonly string[],
  timeoutMs?: number,
) {
  const path = netnsPathOrName.startsWith('/') ? netnsPathOrName : netnsPath(netnsPathOrName);
  return run(cmd, args, { netns: path, ...(timeoutMs === undefined ? {} : { timeoutMs }) });
}
