/**
 * The lab's names and IPv4 address plan (IPv4 only: the mesh's lab tests do not need dual stack).
 *
 * One lab owns one /16, `10.<block>.0.0/16`, and one name prefix (`<word>-`):
 *
 * | what                        | address                         | where                                  |
 * |-----------------------------|---------------------------------|----------------------------------------|
 * | fabric gateway (bridge)     | 10.B.0.1/24                     | bridge `lab0` in netns `<prefix>fabric` |
 * | cluster DNS                 | 10.B.0.2/24                     | same bridge (second address)           |
 * | API server (forwarded)      | 10.B.0.3/24                     | same bridge; NetnsPortForward listens  |
 * | node i                      | 10.B.0.(10+i)/24                | `eth0` in netns `<prefix>node-<i>`      |
 * | pod CIDR of node i          | 10.B.(i+1).0/24                 | ptp veths in node i's netns             |
 * | pod gateway of node i       | 10.B.(i+1).1/32                 | host side of every ptp veth on node i   |
 * | Service ClusterIPs          | 10.B.240.0/20                   | virtual: DNAT in each node's netns      |
 *
 * The whole range lives only inside the lab's namespaces, which have no link to the machine's own network,
 * so it cannot collide with the machine's addresses; two labs still use different blocks so that addresses in
 * logs and tests say which lab they belong to.
 */
import { MeshError } from '../../pkg/errors/index.ts';

/** Prefixes are one lowercase word and a dash, so `<prefix>fabric` can never belong to a longer prefix. */
const PREFIX_RE = /^[a-z][a-z0-9]{0,7}-$/;
/** Pod CIDRs use the third octet 1..MAX_NODES; the service range starts at 240. */
export const MAX_NODES = 200;
export const NODE_IP_OFFSET = 10;

export function validatePrefix(prefix: string): void {
  if (!PREFIX_RE.test(prefix)) {
    throw new MeshError('MESH_ERR_LAB_NET_INVALID', `lab prefix ${JSON.stringify(prefix)} is not valid`, {
      hint: 'a prefix is a lowercase word of 1-8 letters/digits followed by "-", e.g. "amb-"',
    });
  }
}

/** Names of the lab's network namespaces. */
export const names = {
  fabric: (prefix: string): string => `${prefix}fabric`,
  node: (prefix: string, index: number): string => `${prefix}node-${index}`,
  pod: (prefix: string, id: string): string => `${prefix}pod-${id}`,
  /** Matches exactly the namespaces a lab with this prefix creates, nothing of another prefix. */
  matcher: (prefix: string): RegExp =>
    new RegExp(`^${prefix.replaceAll('-', '\\-')}(fabric|node-\\d+|pod-[0-9a-z]+)$`),
};

export interface AddressPlan {
  /** The second octet: the lab owns 10.<block>.0.0/16. */
  readonly block: number;
  readonly fabricCidr: string;
  readonly fabricGateway: string;
  readonly clusterDnsIp: string;
  readonly apiServerIp: string;
  readonly serviceCidr: string;
  nodeIp(index: number): string;
  podCidr(index: number): string;
  podGateway(index: number): string;
}

export function addressPlan(block: number): AddressPlan {
  if (!Number.isInteger(block) || block < 1 || block > 254) {
    throw new MeshError('MESH_ERR_LAB_NET_INVALID', `address block ${block} is not in 1..254`, {
      hint: 'the lab uses 10.<block>.0.0/16',
    });
  }
  const b = `10.${block}`;
  const checkIndex = (i: number): void => {
    if (!Number.isInteger(i) || i < 0 || i >= MAX_NODES) {
      throw new MeshError('MESH_ERR_LAB_NET_INVALID', `node index ${i} is not in 0..${MAX_NODES - 1}`);
    }
  };
  return {
    block,
    fabricCidr: `${b}.0.0/24`,
    fabricGateway: `${b}.0.1`,
    clusterDnsIp: `${b}.0.2`,
    apiServerIp: `${b}.0.3`,
    serviceCidr: `${b}.240.0/20`,
    nodeIp: (i) => {
      checkIndex(i);
      return `${b}.0.${NODE_IP_OFFSET + i}`;
    },
    podCidr: (i) => {
      checkIndex(i);
      return `${b}.${i + 1}.0/24`;
    },
    podGateway: (i) => {
      checkIndex(i);
      return `${b}.${i + 1}.1`;
    },
  };
}

/** IPv4 dotted quad → 32-bit unsigned, or null. */
export function ipv4ToInt(ip: string): number | null {
  const parts = ip.split('.');
  if (parts.length !== 4) return null;
  let n = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return null;
    const v = Number(p);
    if (v > 255) return null;
    n = n * 256 + v;
  }
  return n;
}

/** Whether `ip` lies in `cidr` (IPv4). */
export function inCidr(ip: string, cidr: string): boolean {
  const [base, lenText] = cidr.split('/');
  const a = ipv4ToInt(ip);
  const b = ipv4ToInt(base ?? '');
  const len = Number(lenText);
  if (a === null || b === null || !Number.isInteger(len) || len < 0 || len > 32) return false;
  if (len === 0) return true;
  const shift = 32 - len;
  return Math.floor(a / 2 ** shift) === Math.floor(b / 2 ** shift);
}
