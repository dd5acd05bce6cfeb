/**
 * A node's CNI configuration, as a node image would ship it: one conflist in `etc/cni/net.d/`, the reference
 * plugins linked into `opt/cni/bin/`.
 *
 * `ptp` rather than `bridge`: with ptp every pod has a veth whose host end is routed (not bridged) in the node
 * netns, so each pod packet passes the node's routing and netfilter hooks; Service DNAT (lab/proxy) and the
 * istio-cni host rules then work without br_netfilter, which would otherwise be a machine-wide setting.
 */
import { readdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';

/** Where the distribution installs the reference CNI plugins (Debian's containernetworking-plugins). */
export const SYSTEM_CNI_DIR = '/usr/lib/cni';
export const CNI_VERSION = '1.0.0';
export const NETWORK_NAME = 'lab';
/** Sorted first by libcni-style lookup; an installer that adds its own file must sort after to be chained. */
export const CONFLIST_NAME = '10-lab.conflist';

export interface NodeCniConfigInput {
  readonly podCidr: string;
  readonly podGateway: string;
  /** host-local's lease directory; default its own (/var/lib/cni/networks, per node in the node view). */
  readonly ipamDataDir?: string;
  /** Chain `portmap` after ptp (hostPort support); default true. */
  readonly portmap?: boolean;
  readonly mtu?: number;
}

export function nodeConflist(input: NodeCniConfigInput): Record<string, unknown> {
  const plugins: Record<string, unknown>[] = [
    {
      type: 'ptp',
      ipMasq: false,
      mtu: input.mtu ?? 1500,
      ipam: {
        type: 'host-local',
        ranges: [[{ subnet: input.podCidr, gateway: input.podGateway }]],
        // No gw: ptp routes via its own gateway address (the host end of the veth).
        routes: [{ dst: '0.0.0.0/0' }],
        ...(input.ipamDataDir ? { dataDir: input.ipamDataDir } : {}),
      },
    },
  ];
  if (input.portmap ?? true)
    plugins.push({ type: 'portmap', capabilities: { portMappings: true }, snat: true });
  return { cniVersion: CNI_VERSION, name: NETWORK_NAME, plugins };
}

/** Links every plugin of the system CNI directory into `binDir` (an installer may add its own next to them). */
export function linkSystemPlugins(binDir: string, systemDir = SYSTEM_CNI_DIR): string[] {
  const linked: string[] = [];
  for (const f of readdirSync(systemDir)) {
    symlinkSync(join(systemDir, f), join(binDir, f));
    linked.push(f);
  }
  return linked;
}
