/**
 * The plugin ↔ node agent protocol: HTTP/1.1 over the unix socket `pluginevent.sock` (Istio's socket name
 * and `/cmdadd` path; the body is our own JSON). The socket lives NEXT TO THE PLUGIN, in
 * `<CNI bin dir>/istio-cni.d/`: the bin dir is the one directory the runtime (which execs the plugin) and the
 * agent (which installs it) are guaranteed to share, whatever paths their mount namespaces give it, so the
 * plugin finds the agent relative to its own file with no path configuration. Imported by the plugin entry,
 * so it must stay free of imports: it runs on every pod start.
 *
 * - `POST /cmdadd` with a CniAddEvent for EVERY pod sandbox the plugin sees (ambient or not: the agent
 *   remembers each sandbox's netns, see docs/cni.md "Finding a pod's netns"). Answers:
 *   200 `{captured: true}` once rules are in place, ztunnel acked and the annotation is written;
 *   200 `{captured: false, reason}` for a pod that is not ambient; 503 `{error, retryable: true}` when the
 *   pod should be captured but cannot be yet (no ztunnel, pod not in the informer cache yet);
 *   400/500 `{error, retryable: false}` otherwise.
 * - `POST /cmddel` with a CniDelEvent: the agent forgets the sandbox's netns. Always 200 unless malformed.
 */

export const PLUGIN_SOCKET_NAME = 'pluginevent.sock';
export const CMD_ADD_PATH = '/cmdadd';
export const CMD_DEL_PATH = '/cmddel';
/** Request bodies are tiny (a few hundred bytes); anything larger is refused unread. */
export const MAX_EVENT_BYTES = 64 * 1024;

export interface CniAddEvent {
  readonly containerId: string;
  /** CNI_NETNS as the plugin saw it, e.g. `/var/run/netns/cni-…` or `/proc/<pid>/ns/net`. */
  readonly netns: string;
  readonly ifName: string;
  readonly podName: string;
  readonly podNamespace: string;
  /** K8S_POD_UID from CNI_ARGS when the runtime passes it (containerd and CRI-O do). */
  readonly podUid: string | null;
  /** Addresses from prevResult.ips (CIDR form); the pod object may not carry its IP yet. */
  readonly ips: readonly string[];
  readonly cniVersion: string;
}

export interface CniDelEvent {
  readonly containerId: string;
  readonly netns: string | null;
  readonly podName: string;
  readonly podNamespace: string;
  readonly podUid: string | null;
}

export interface CniAddReply {
  readonly captured: boolean;
  readonly reason: string;
}

export interface CniErrorReply {
  readonly error: string;
  readonly retryable: boolean;
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function str(o: Record<string, unknown>, k: string, required: boolean): string | null | undefined {
  const v = o[k];
  if (v === undefined || v === null) return required ? undefined : null;
  return typeof v === 'string' && (v.length > 0 || !required) ? v : undefined;
}

/** Validates an untrusted /cmdadd body; returns the event or a message naming the bad field. */
export function parseAddEvent(body: unknown): CniAddEvent | string {
  if (!isObj(body)) return 'body is not a JSON object';
  const out: Record<string, unknown> = {};
  for (const k of ['containerId', 'netns', 'ifName', 'podName', 'podNamespace', 'cniVersion']) {
    const v = str(body, k, true);
    if (typeof v !== 'string') return `field ${k} must be a non-empty string`;
    out[k] = v;
  }
  const uid = str(body, 'podUid', false);
  if (uid === undefined) return 'field podUid must be a string or null';
  const ips = body.ips ?? [];
  if (!Array.isArray(ips) || !ips.every((x) => typeof x === 'string'))
    return 'field ips must be a string array';
  return { ...(out as Omit<CniAddEvent, 'podUid' | 'ips'>), podUid: uid || null, ips: ips as string[] };
}

/** Validates an untrusted /cmddel body. */
export function parseDelEvent(body: unknown): CniDelEvent | string {
  if (!isObj(body)) return 'body is not a JSON object';
  const containerId = str(body, 'containerId', true);
  if (typeof containerId !== 'string') return 'field containerId must be a non-empty string';
  const fields: Record<string, string | null> = {};
  for (const k of ['netns', 'podName', 'podNamespace', 'podUid']) {
    const v = str(body, k, false);
    if (v === undefined) return `field ${k} must be a string or null`;
    fields[k] = v || null;
  }
  return {
    containerId,
    netns: fields.netns ?? null,
    podName: fields.podName ?? '',
    podNamespace: fields.podNamespace ?? '',
    podUid: fields.podUid ?? null,
  };
}
