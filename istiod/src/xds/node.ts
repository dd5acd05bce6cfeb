/**
 * xDS node ids, Istio's format `<type>~<ip>~<pod>.<namespace>~<namespace>.svc.<domain>`
 * (e.g. `ztunnel~10.244.1.7~ztunnel-x2f9q.istio-system~istio-system.svc.cluster.local`).
 */

/** The proxy types Istio accepts in a node id. */
export const NODE_TYPES: ReadonlySet<string> = new Set(['sidecar', 'router', 'ztunnel', 'waypoint']);

export interface ParsedNode {
  readonly id: string;
  readonly type: string;
  /** One or more addresses (Istio allows a comma-separated list for dual-stack). */
  readonly ips: readonly string[];
  readonly podName: string;
  readonly podNamespace: string;
  readonly domain: string;
}

export type NodeParseResult =
  | { readonly ok: true; readonly node: ParsedNode }
  | { readonly ok: false; readonly error: string };

export function parseNodeId(id: string): NodeParseResult {
  const parts = id.split('~');
  if (parts.length !== 4) return { ok: false, error: `node id "${id}" must have 4 parts separated by "~"` };
  const [type = '', ip = '', podId = '', domain = ''] = parts;
  if (!NODE_TYPES.has(type)) {
    return {
      ok: false,
      error: `node id "${id}": unknown proxy type "${type}" (want ${[...NODE_TYPES].join(', ')})`,
    };
  }
  const ips = ip.split(',').filter((s) => s.length > 0);
  if (ips.length === 0) return { ok: false, error: `node id "${id}": missing IP address` };
  const dot = podId.lastIndexOf('.');
  if (dot <= 0 || dot === podId.length - 1) {
    return { ok: false, error: `node id "${id}": "${podId}" is not <pod>.<namespace>` };
  }
  return {
    ok: true,
    node: { id, type, ips, podName: podId.slice(0, dot), podNamespace: podId.slice(dot + 1), domain },
  };
}

/** Builds a node id (clients and tests). */
export function formatNodeId(
  type: string,
  ip: string,
  podName: string,
  podNamespace: string,
  domainSuffix = 'cluster.local',
): string {
  return `${type}~${ip}~${podName}.${podNamespace}~${podNamespace}.svc.${domainSuffix}`;
}
