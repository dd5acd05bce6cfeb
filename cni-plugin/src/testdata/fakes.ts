/**
 * In-memory stand-ins for unit tests of the agent: a Kubernetes source fed with plain Pod/Namespace objects
 * (patches update the stored pod and emit an update, as the API server's watch would), a recording rules
 * engine, and an HTTP client for the plugin socket.
 */
import { request } from 'node:http';
import type { NamespaceLike, PodLike } from '../agent/ambient.ts';
import type { PodRules } from '../agent/dataplane.ts';
import type { KubeHandlers, KubeSource } from '../agent/kube.ts';
import type { CaptureRecord, Family, HostProbes, PodRuleOptions } from '../rules/index.ts';

function clone<T>(v: T): T {
  return structuredClone(v);
}

export class FakeKube implements KubeSource {
  readonly pods = new Map<string, PodLike>();
  readonly namespaces = new Map<string, NamespaceLike>();
  readonly patches: Array<{ namespace: string; name: string; value: string | null }> = [];
  daemonSet: boolean | null = null;
  /** Make patches fail (API down). */
  failPatches = false;
  #h: KubeHandlers | null = null;

  async start(h: KubeHandlers): Promise<void> {
    this.#h = h;
    for (const ns of this.namespaces.values()) h.namespace('add', clone(ns));
    for (const pod of this.pods.values()) h.pod('add', clone(pod));
  }

  async stop(): Promise<void> {
    this.#h = null;
  }

  namespace(name: string, labels: Record<string, string> = {}): void {
    const existed = this.namespaces.has(name);
    const ns: NamespaceLike = { metadata: { name, labels } };
    this.namespaces.set(name, ns);
    this.#h?.namespace(existed ? 'update' : 'add', clone(ns));
  }

  addPod(pod: PodLike): void {
    this.pods.set(pod.metadata!.uid!, pod);
    this.#h?.pod('add', clone(pod));
  }

  updatePod(uid: string, fn: (p: PodLike) => void): void {
    const pod = clone(this.pods.get(uid)!);
    fn(pod);
    this.pods.set(uid, pod);
    this.#h?.pod('update', clone(pod));
  }

  deletePod(uid: string): void {
    const pod = this.pods.get(uid);
    if (!pod) return;
    this.pods.delete(uid);
    this.#h?.pod('delete', clone(pod));
  }

  annotation(uid: string): string | null {
    return this.pods.get(uid)?.metadata?.annotations?.['ambient.istio.io/redirection'] ?? null;
  }

  async patchRedirection(namespace: string, name: string, value: string | null): Promise<void> {
    if (this.failPatches) throw Object.assign(new Error('API unavailable'), { code: 503 });
    this.patches.push({ namespace, name, value });
    const pod = [...this.pods.values()].find(
      (p) => p.metadata?.namespace === namespace && p.metadata?.name === name,
    );
    if (!pod) throw Object.assign(new Error(`pods "${name}" not found`), { code: 404 });
    this.updatePod(pod.metadata!.uid!, (p) => {
      const annotations = { ...(p.metadata!.annotations ?? {}) };
      if (value === null) delete annotations['ambient.istio.io/redirection'];
      else annotations['ambient.istio.io/redirection'] = value;
      p.metadata!.annotations = annotations;
    });
  }

  async daemonSetActive(): Promise<boolean | null> {
    return this.daemonSet;
  }
}

export function makePod(
  uid: string,
  namespace: string,
  name: string,
  opts: {
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    ip?: string | null;
    hostNetwork?: boolean;
    phase?: string;
    serviceAccount?: string;
  } = {},
): PodLike {
  const ip = opts.ip === undefined ? '10.244.1.5' : opts.ip;
  return {
    metadata: {
      uid,
      namespace,
      name,
      labels: opts.labels ?? {},
      annotations: opts.annotations ?? {},
    },
    spec: {
      nodeName: 'node-a',
      hostNetwork: opts.hostNetwork ?? false,
      serviceAccountName: opts.serviceAccount ?? 'default',
    },
    status: { phase: opts.phase ?? 'Running', ...(ip ? { podIP: ip, podIPs: [{ ip }] } : {}) },
  };
}

export interface RulesCall {
  readonly op: 'apply' | 'remove';
  readonly netns: string;
  readonly opts?: PodRuleOptions;
  readonly prior?: CaptureRecord | null;
}

/** Records what would be programmed; `failApply` makes applyPod throw. */
export class FakeRules implements PodRules {
  readonly calls: RulesCall[] = [];
  readonly hostSyncs: HostProbes[] = [];
  hostRemoved = 0;
  failApply = false;

  async applyPod(netns: string, opts: PodRuleOptions, prior: CaptureRecord | null): Promise<CaptureRecord> {
    this.calls.push({ op: 'apply', netns, opts, prior });
    if (this.failApply) throw new Error('iptables-restore: line 3 failed');
    return (
      prior ?? { backend: 'iptables', families: opts.families, preexisting: null, preexistingRouting: [] }
    );
  }

  async removePod(netns: string, prior: CaptureRecord | null): Promise<void> {
    this.calls.push({ op: 'remove', netns, prior });
  }

  async syncHost(_netns: string | null, _families: readonly Family[], probes: HostProbes): Promise<void> {
    this.hostSyncs.push({ v4: [...probes.v4], v6: [...probes.v6] });
  }

  async removeHost(): Promise<void> {
    this.hostRemoved++;
  }

  applies(): RulesCall[] {
    return this.calls.filter((c) => c.op === 'apply');
  }

  removes(): RulesCall[] {
    return this.calls.filter((c) => c.op === 'remove');
  }
}

/** POSTs JSON to the agent's plugin socket (what the plugin does, via node:http for brevity). */
export function postPlugin(
  socket: string,
  path: string,
  body: unknown,
): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    const req = request(
      { socketPath: socket, path, method: 'POST', headers: { 'content-type': 'application/json' } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', () => {
          const raw = Buffer.concat(chunks).toString();
          resolve({ status: res.statusCode ?? 0, body: raw ? (JSON.parse(raw) as unknown) : null });
        });
      },
    );
    req.on('error', reject);
    req.end(text);
  });
}
