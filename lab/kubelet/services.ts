/**
 * Services + EndpointSlices → every node's service proxy (kube-proxy) and the cluster DNS. Watches both
 * resources in-process, coalesces bursts (a Deployment rollout changes many slices at once) and re-renders the
 * complete desired state each time: the proxy and DNS both take full sets, so a sync is never partial.
 */
import { describeError } from '../../pkg/errors/index.ts';
import type { Logger } from '../../pkg/telemetry/index.ts';
import type { LocalClient } from '../apiserver/client.ts';
import type { JsonObject } from '../apiserver/json.ts';
import type { ClusterDns } from '../dns/cluster-dns.ts';
import type { DnsEndpoint, DnsService } from '../dns/zone.ts';
import type { ServiceProxy } from '../proxy/proxy.ts';
import type { ProxyEndpoint, ProxyProtocol, ProxyService } from '../proxy/rules.ts';

const DEBOUNCE_MS = 25;
const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

type Obj = JsonObject;
function obj(v: unknown): Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {};
}
function arr(v: unknown): Obj[] {
  return Array.isArray(v) ? v.filter((x) => x !== null && typeof x === 'object').map((x) => x as Obj) : [];
}
function str(v: unknown): string {
  return typeof v === 'string' ? v : '';
}

export interface ServiceView {
  readonly proxy: ProxyService[];
  readonly dns: DnsService[];
}

/** The proxy's and DNS's view of the cluster's Services from Services and EndpointSlices (pure). */
export function serviceView(services: readonly Obj[], slices: readonly Obj[]): ServiceView {
  const byService = new Map<string, Obj[]>();
  for (const s of slices) {
    const m = obj(s.metadata);
    const svc = str(obj(m.labels)[SERVICE_NAME_LABEL]);
    if (!svc || str(s.addressType || 'IPv4') !== 'IPv4') continue;
    const key = `${str(m.namespace)}/${svc}`;
    const list = byService.get(key) ?? [];
    list.push(s);
    byService.set(key, list);
  }
  const proxy: ProxyService[] = [];
  const dns: DnsService[] = [];
  for (const svc of services) {
    const m = obj(svc.metadata);
    const spec = obj(svc.spec);
    const namespace = str(m.namespace);
    const name = str(m.name);
    const svcSlices = byService.get(`${namespace}/${name}`) ?? [];
    const ports = arr(spec.ports).map((p) => ({
      name: str(p.name),
      protocol: (str(p.protocol) || 'TCP') as ProxyProtocol,
      port: typeof p.port === 'number' ? p.port : 0,
      ...(typeof p.nodePort === 'number' ? { nodePort: p.nodePort } : {}),
    }));
    if (str(spec.type) === 'ExternalName') {
      dns.push({
        namespace,
        name,
        clusterIPs: [],
        ports: ports.map(({ name: n, port, protocol }) => ({ name: n, port, protocol })),
        externalName: str(spec.externalName),
      });
      continue;
    }
    const ips = (Array.isArray(spec.clusterIPs) ? spec.clusterIPs.map(String) : [str(spec.clusterIP)]).filter(
      (ip) => IPV4.test(ip),
    );
    const readyEndpoints: DnsEndpoint[] = [];
    const seenEp = new Set<string>();
    for (const sl of svcSlices) {
      for (const e of arr(sl.endpoints)) {
        if (obj(e.conditions).ready === false) continue;
        for (const ip of Array.isArray(e.addresses) ? e.addresses.map(String) : []) {
          if (seenEp.has(ip)) continue;
          seenEp.add(ip);
          readyEndpoints.push({ ip, ...(str(e.hostname) ? { hostname: str(e.hostname) } : {}) });
        }
      }
    }
    proxy.push({
      namespace,
      name,
      clusterIPs: ips,
      ports: ports.map((p) => {
        const eps: ProxyEndpoint[] = [];
        const seen = new Set<string>();
        for (const sl of svcSlices) {
          const sp = arr(sl.ports).find(
            (x) => str(x.name) === p.name && (str(x.protocol) || 'TCP') === p.protocol,
          );
          if (!sp || typeof sp.port !== 'number') continue;
          for (const e of arr(sl.endpoints)) {
            if (obj(e.conditions).ready === false) continue;
            for (const ip of Array.isArray(e.addresses) ? e.addresses.map(String) : []) {
              const k = `${ip}:${sp.port}`;
              if (seen.has(k) || !IPV4.test(ip)) continue;
              seen.add(k);
              eps.push({ ip, port: sp.port });
            }
          }
        }
        return { ...p, endpoints: eps };
      }),
    });
    dns.push({
      namespace,
      name,
      clusterIPs: ips,
      ports: ports.map(({ name: n, port, protocol }) => ({ name: n, port, protocol })),
      ...(ips.length === 0 ? { endpoints: readyEndpoints } : {}),
    });
  }
  return { proxy, dns };
}

export interface ServiceSyncOptions {
  readonly client: LocalClient;
  readonly proxies: readonly ServiceProxy[];
  readonly dns: ClusterDns | null;
  readonly logger?: Logger;
}

export class ServiceSync {
  private readonly opts: ServiceSyncOptions;
  private readonly unwatch: (() => void)[] = [];
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private dirty = false;
  private stopped = false;
  /** Completed syncs (tests). */
  syncs = 0;

  private constructor(opts: ServiceSyncOptions) {
    this.opts = opts;
  }

  /** Starts watching and performs the first sync before resolving. */
  static async start(opts: ServiceSyncOptions): Promise<ServiceSync> {
    const s = new ServiceSync(opts);
    const poke = (): void => s.schedule();
    s.unwatch.push(
      opts.client.watch('v1/services', {}, poke),
      opts.client.watch('discovery.k8s.io/v1/endpointslices', {}, poke),
    );
    if (s.timer) clearTimeout(s.timer);
    s.timer = null;
    await s.syncNow();
    return s;
  }

  /** Resolves once everything seen so far is programmed. */
  async flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
      this.dirty = true;
    }
    while (this.running || this.dirty) {
      if (!this.running) this.kick();
      await this.running;
    }
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    for (const u of this.unwatch) u();
  }

  private schedule(): void {
    if (this.stopped || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.dirty = true;
      if (!this.running) this.kick();
    }, DEBOUNCE_MS);
  }

  private kick(): void {
    this.running = this.drain().finally(() => {
      this.running = null;
    });
  }

  private async drain(): Promise<void> {
    while (this.dirty && !this.stopped) {
      this.dirty = false;
      await this.syncOnce().catch((err: unknown) => {
        this.opts.logger?.warn(
          { err: describeError(err) },
          'service sync failed; retrying on the next change',
        );
      });
    }
  }

  private async syncNow(): Promise<void> {
    this.dirty = true;
    this.kick();
    await this.running;
  }

  private async syncOnce(): Promise<void> {
    const c = this.opts.client;
    const view = serviceView(c.list('v1/services'), c.list('discovery.k8s.io/v1/endpointslices'));
    await Promise.all([
      ...this.opts.proxies.map((p) => p.sync(view.proxy)),
      this.opts.dns ? this.opts.dns.update({ services: view.dns }) : Promise.resolve(),
    ]);
    this.syncs++;
  }
}
