/**
 * istiod's own serving certificate for :15012 (DNS SANs `istiod.<ns>.svc` and friends), signed by the mesh CA
 * so proxies verify it with the same root they trust for workloads. It is a grpc-js certificate provider, so a
 * rotation (half-life, or a new CA) reaches new TLS handshakes without rebinding the port.
 */

import { createPublicKey } from 'node:crypto';
import type { experimental } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { x509 } from '../../../pkg/identity/index.ts';
import type { CaMaterial } from './authority.ts';

type Provider = experimental.CertificateProvider;
type IdentityListener = experimental.IdentityCertificateUpdateListener;
type CaListener = experimental.CaCertificateUpdateListener;

export function servingDnsNames(namespace: string): string[] {
  return [
    `istiod.${namespace}.svc`,
    `istiod.${namespace}.svc.cluster.local`,
    `istiod.${namespace}`,
    'istiod',
  ];
}

export class ServingCertificate implements Provider {
  private readonly identityListeners = new Set<IdentityListener>();
  private readonly caListeners = new Set<CaListener>();
  private current: { certificate: Buffer; privateKey: Buffer; ca: Buffer; notAfter: number } | null = null;
  private timer: NodeJS.Timeout | null = null;
  private readonly dnsNames: readonly string[];
  private readonly ttlMs: number;
  private readonly logger: Logger;
  private material: CaMaterial;

  constructor(material: CaMaterial, dnsNames: readonly string[], ttlMs: number, logger: Logger) {
    this.material = material;
    this.dnsNames = dnsNames;
    this.ttlMs = ttlMs;
    this.logger = logger;
    this.issue();
  }

  /** Re-issues with a new CA (plug-in CA rotated). */
  setMaterial(material: CaMaterial): void {
    this.material = material;
    this.issue();
  }

  /** PEM chain and root currently served (for clients in tests and for debug). */
  get pem(): { chain: string; root: string } {
    return { chain: this.current!.certificate.toString(), root: this.current!.ca.toString() };
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private issue(): void {
    const { privateKey } = x509.generateP256();
    const now = Date.now();
    const chain = this.material.signServing(createPublicKey(privateKey), this.dnsNames, this.ttlMs, now);
    const rootBundle = chain[chain.length - 1]!;
    this.current = {
      certificate: Buffer.from(chain.slice(0, -1).join('')),
      privateKey: Buffer.from(privateKey.export({ type: 'pkcs8', format: 'pem' }) as string),
      ca: Buffer.from(rootBundle),
      notAfter: now + this.ttlMs,
    };
    for (const l of this.identityListeners)
      l({ certificate: this.current.certificate, privateKey: this.current.privateKey });
    for (const l of this.caListeners) l({ caCertificate: this.current.ca });
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.issue(), Math.min(this.ttlMs / 2, 2 ** 31 - 1));
    this.timer.unref();
    this.logger.info(
      { dnsNames: this.dnsNames, notAfter: new Date(this.current.notAfter).toISOString() },
      'serving certificate issued',
    );
  }

  // grpc-js registers its watcher only after adding the listener, so the current value is delivered on the next
  // tick; delivered synchronously it would reach no watcher and the port would serve no certificate.
  addIdentityCertificateListener(l: IdentityListener): void {
    this.identityListeners.add(l);
    queueMicrotask(() => {
      if (this.current && this.identityListeners.has(l)) {
        l({ certificate: this.current.certificate, privateKey: this.current.privateKey });
      }
    });
  }
  removeIdentityCertificateListener(l: IdentityListener): void {
    this.identityListeners.delete(l);
  }
  addCaCertificateListener(l: CaListener): void {
    this.caListeners.add(l);
    queueMicrotask(() => {
      if (this.current && this.caListeners.has(l)) l({ caCertificate: this.current.ca });
    });
  }
  removeCaCertificateListener(l: CaListener): void {
    this.caListeners.delete(l);
  }
}
