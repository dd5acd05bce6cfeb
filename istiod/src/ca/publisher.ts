/**
 * Keeps ConfigMap `istio-ca-root-cert` (key `root-cert.pem`) current in every namespace, as Istio's namespace
 * controller does: on namespace add, on ConfigMap drift or deletion, and on root change.
 */
import {
  CoreV1Api,
  type KubeConfig,
  type ListWatch,
  type V1ConfigMap,
  type V1Namespace,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { describeError } from '../../../pkg/errors/index.ts';
import { informer } from '../../../pkg/kube/index.ts';
import { publishRootCert, ROOT_CONFIGMAP } from './kube.ts';

/** Failed namespaces are retried on this period (the API may be briefly unavailable). */
const RETRY_MS = 5_000;

export class RootCertPublisher {
  private readonly core: CoreV1Api;
  private readonly logger: Logger;
  private readonly namespaces: ListWatch<V1Namespace>;
  private readonly configMaps: ListWatch<V1ConfigMap>;
  private root: string;
  private readonly pending = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  private readonly synced: Promise<void>;

  constructor(kc: KubeConfig, rootPem: string, logger: Logger) {
    this.core = kc.makeApiClient(CoreV1Api);
    this.logger = logger;
    this.root = rootPem;
    this.namespaces = informer(kc, '/api/v1/namespaces', () => this.core.listNamespace());
    const fieldSelector = `metadata.name=${ROOT_CONFIGMAP}`;
    this.configMaps = informer(
      kc,
      '/api/v1/configmaps',
      () => this.core.listConfigMapForAllNamespaces({ fieldSelector }),
      {
        fieldSelector,
      },
    );
    const nsName = (o: V1Namespace) => o.metadata?.name;
    this.namespaces.on('add', (o) => this.enqueue(nsName(o)));
    this.namespaces.on('update', (o) => this.enqueue(nsName(o)));
    const cmNs = (o: V1ConfigMap) => o.metadata?.namespace;
    this.configMaps.on('update', (o) => {
      if (o.data?.['root-cert.pem'] !== this.root) this.enqueue(cmNs(o));
    });
    this.configMaps.on('delete', (o) => this.enqueue(cmNs(o)));
    for (const inf of [this.namespaces, this.configMaps]) {
      inf.on('error', (err: unknown) => {
        this.logger.warn({ err: describeError(err) }, 'root cert informer error; restarting');
        setTimeout(() => {
          if (this.running) inf.start().catch(() => {});
        }, RETRY_MS).unref();
      });
    }
    this.synced = Promise.resolve();
  }

  async start(): Promise<void> {
    this.running = true;
    await Promise.all([this.namespaces.start(), this.configMaps.start()]);
    await this.synced;
  }

  stop(): void {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    void this.namespaces.stop();
    void this.configMaps.stop();
  }

  /** New root bundle (plug-in CA rotated): republish everywhere. */
  setRoot(rootPem: string): void {
    if (rootPem === this.root) return;
    this.root = rootPem;
    for (const ns of this.namespaces.list()) this.enqueue(ns.metadata?.name);
  }

  private enqueue(ns: string | undefined): void {
    if (!ns || !this.running) return;
    const phase = this.namespaces.get(ns)?.status?.phase;
    if (phase === 'Terminating') return;
    this.pending.add(ns);
    if (!this.timer) this.timer = setTimeout(() => this.flush(), 0);
  }

  private async flush(): Promise<void> {
    this.timer = null;
    const batch = [...this.pending];
    this.pending.clear();
    let failed = false;
    for (const ns of batch) {
      try {
        if (await publishRootCert(this.core, ns, this.root, this.logger)) {
          this.logger.debug({ namespace: ns }, 'root cert ConfigMap written');
        }
      } catch (err) {
        failed = true;
        this.pending.add(ns);
        this.logger.warn(
          { namespace: ns, err: describeError(err) },
          'root cert ConfigMap write failed; will retry',
        );
      }
    }
    if (failed && this.running && !this.timer) {
      this.timer = setTimeout(() => this.flush(), RETRY_MS);
      this.timer.unref();
    }
  }
}
