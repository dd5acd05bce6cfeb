/**
 * Workload certificate manager (ztunnel's SecretManager): one certificate per identity, fetched from the CA
 * with a fresh P-256 key, cached, refreshed at half-life, with at most `maxConcurrent` CSRs in flight and
 * on-demand requests served before refreshes and refreshes before prefetches. A failed fetch backs off
 * exponentially with jitter (capped at 150 s, as ztunnel does) while a still-valid certificate keeps serving.
 */
import { generateKeyPair, type KeyObject, X509Certificate } from 'node:crypto';
import { promisify } from 'node:util';
import type { Logger } from 'pino';
import { describeError, MeshError } from '../errors/index.ts';
import { formatSpiffeId, type Identity, identityKey } from './spiffe.ts';
import { buildCsr, csrToPem, pemCertificates } from './x509.ts';

const generateKeyPairAsync = promisify(generateKeyPair);

async function generateP256Async(): Promise<KeyObject> {
  return (await generateKeyPairAsync('ec', { namedCurve: 'prime256v1' })).privateKey;
}

/** ztunnel caps CA retry back-off at 150 s. */
export const MAX_BACKOFF_MS = 150_000;
export const INITIAL_BACKOFF_MS = 1_000;
/** CSRs in flight at once; a node with hundreds of new pods must not stampede the CA. */
export const DEFAULT_MAX_CONCURRENT = 8;

/** Served first: a connection is waiting. Then refreshes of certificates in use, then warm-up prefetches. */
export const PRIORITY = { onDemand: 0, refresh: 1, prefetch: 2 } as const;
export type Priority = (typeof PRIORITY)[keyof typeof PRIORITY];

/** Talks to the CA: sends a CSR for an identity, returns the PEM chain, leaf first and root(s) last. */
export interface CaClient {
  fetchCertificate(identity: Identity, csrPem: string): Promise<string[]>;
}

export class WorkloadCertificate {
  readonly identity: Identity;
  /** Leaf first, then intermediates (no roots). */
  readonly chainPem: readonly string[];
  /** Trust anchors as sent by the CA (last element(s) of its response). */
  readonly rootsPem: readonly string[];
  readonly notBefore: number;
  readonly notAfter: number;
  readonly serial: string;
  /** When this process received it (ms since epoch). */
  readonly receivedAt: number;
  /** Non-enumerable so that logging or JSON-serialising a certificate never leaks the key. */
  declare readonly privateKeyPem: string;

  constructor(identity: Identity, privateKey: KeyObject, chainPem: string[], rootsPem: string[]) {
    this.identity = identity;
    this.chainPem = chainPem;
    this.rootsPem = rootsPem;
    const leaf = new X509Certificate(chainPem[0]!);
    this.notBefore = Date.parse(leaf.validFrom);
    this.notAfter = Date.parse(leaf.validTo);
    this.serial = leaf.serialNumber;
    this.receivedAt = Date.now();
    Object.defineProperty(this, 'privateKeyPem', {
      value: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
      enumerable: false,
    });
  }

  /**
   * When to refresh: half-way through the validity, like Istio. The CA back-dates NotBefore by minutes to
   * absorb clock skew, so the half-life counts from when we received it if that is later: otherwise a
   * short-lived certificate could be "due" the moment it arrives.
   */
  refreshAt(): number {
    const start = Math.max(this.notBefore, this.receivedAt);
    return start + (this.notAfter - start) / 2;
  }

  toJSON() {
    return {
      identity: formatSpiffeId(this.identity),
      serial: this.serial,
      notBefore: new Date(this.notBefore).toISOString(),
      notAfter: new Date(this.notAfter).toISOString(),
      chainLength: this.chainPem.length,
    };
  }
}

type Phase = 'idle' | 'queued' | 'fetching' | 'backoff';

interface Waiter {
  resolve(c: WorkloadCertificate): void;
  reject(e: unknown): void;
}

interface Entry {
  readonly id: Identity;
  readonly key: string;
  cert: WorkloadCertificate | null;
  phase: Phase;
  priority: Priority;
  waiters: Waiter[];
  timer: NodeJS.Timeout | null;
  failures: number;
  lastError: string | null;
  /** Bumped on forget(): a fetch that finishes for an old generation is discarded. */
  generation: number;
}

export interface CertManagerOptions {
  readonly ca: CaClient;
  readonly maxConcurrent?: number;
  readonly logger?: Logger;
  /** For tests: uniform [0,1). */
  readonly random?: () => number;
  /** Makes the key for each CSR; defaults to a fresh P-256 key from the libuv thread pool. */
  readonly generateKey?: () => Promise<KeyObject>;
  /** Called after every successful fetch (first issue and rotations). */
  readonly onCertificate?: (cert: WorkloadCertificate) => void;
}

export interface CertStatus {
  readonly identity: string;
  readonly state: 'available' | 'initializing' | 'unavailable';
  readonly phase: Phase;
  readonly certificate: ReturnType<WorkloadCertificate['toJSON']> | null;
  readonly failures: number;
  readonly lastError: string | null;
}

export class CertManager {
  private readonly ca: CaClient;
  private readonly maxConcurrent: number;
  private readonly logger: Logger | undefined;
  private readonly random: () => number;
  private readonly onCertificate: ((cert: WorkloadCertificate) => void) | undefined;
  private readonly generateKey: () => Promise<KeyObject>;
  private readonly entries = new Map<string, Entry>();
  private readonly queues: [Entry[], Entry[], Entry[]] = [[], [], []];
  private inFlight = 0;
  private closed = false;

  constructor(opts: CertManagerOptions) {
    this.ca = opts.ca;
    this.maxConcurrent = opts.maxConcurrent ?? DEFAULT_MAX_CONCURRENT;
    this.logger = opts.logger;
    this.random = opts.random ?? Math.random;
    this.onCertificate = opts.onCertificate;
    this.generateKey = opts.generateKey ?? generateP256Async;
  }

  /** A valid certificate for the identity, fetching one on demand (highest priority) if needed. */
  get(id: Identity): Promise<WorkloadCertificate> {
    if (this.closed)
      return Promise.reject(new MeshError('MESH_ERR_IDENTITY_FETCH', 'certificate manager is closed'));
    const e = this.entry(id);
    const valid = this.valid(e);
    if (valid) return Promise.resolve(valid);
    if (e.phase === 'backoff') {
      return Promise.reject(
        new MeshError(
          'MESH_ERR_IDENTITY_FETCH',
          `no certificate for ${e.key}: CA failing (${e.lastError ?? 'unknown'})`,
        ),
      );
    }
    const p = new Promise<WorkloadCertificate>((resolve, reject) => e.waiters.push({ resolve, reject }));
    this.enqueue(e, PRIORITY.onDemand);
    return p;
  }

  /** Starts fetching in the background (lowest priority) so the first connection finds a certificate ready. */
  prefetch(id: Identity): void {
    if (this.closed) return;
    const e = this.entry(id);
    if (e.cert === null && e.phase === 'idle') this.enqueue(e, PRIORITY.prefetch);
  }

  /** The cached valid certificate, without fetching. */
  peek(id: Identity): WorkloadCertificate | null {
    const e = this.entries.get(identityKey(id));
    return e ? this.valid(e) : null;
  }

  /** Drops an identity no longer needed (its last pod left the node). Pending waiters are rejected. */
  forget(id: Identity): void {
    const e = this.entries.get(identityKey(id));
    if (!e) return;
    this.drop(e, 'identity no longer needed');
  }

  identities(): Identity[] {
    return [...this.entries.values()].map((e) => e.id);
  }

  status(): CertStatus[] {
    return [...this.entries.values()].map((e) => {
      const valid = this.valid(e);
      return {
        identity: e.key,
        state: valid ? 'available' : e.phase === 'backoff' ? 'unavailable' : 'initializing',
        phase: e.phase,
        certificate: valid ? valid.toJSON() : null,
        failures: e.failures,
        lastError: e.lastError,
      };
    });
  }

  close(): void {
    this.closed = true;
    for (const e of [...this.entries.values()]) this.drop(e, 'certificate manager closed');
  }

  private entry(id: Identity): Entry {
    const key = identityKey(id);
    let e = this.entries.get(key);
    if (!e) {
      e = {
        id,
        key,
        cert: null,
        phase: 'idle',
        priority: PRIORITY.prefetch,
        waiters: [],
        timer: null,
        failures: 0,
        lastError: null,
        generation: 0,
      };
      this.entries.set(key, e);
    }
    return e;
  }

  private valid(e: Entry): WorkloadCertificate | null {
    return e.cert && Date.now() < e.cert.notAfter ? e.cert : null;
  }

  private drop(e: Entry, reason: string): void {
    e.generation++;
    if (e.timer) clearTimeout(e.timer);
    e.timer = null;
    if (e.phase === 'queued') this.unqueue(e);
    const err = new MeshError('MESH_ERR_IDENTITY_FETCH', `${reason}: ${e.key}`);
    for (const w of e.waiters.splice(0)) w.reject(err);
    this.entries.delete(e.key);
  }

  private enqueue(e: Entry, priority: Priority): void {
    if (e.phase === 'fetching') return; // the result serves the new waiter too
    if (e.phase === 'queued') {
      if (priority < e.priority) {
        this.unqueue(e);
        e.priority = priority;
        this.queues[priority].push(e);
      }
      return;
    }
    if (e.timer) {
      clearTimeout(e.timer);
      e.timer = null;
    }
    e.phase = 'queued';
    e.priority = priority;
    this.queues[priority].push(e);
    this.pump();
  }

  private unqueue(e: Entry): void {
    const q = this.queues[e.priority];
    const i = q.indexOf(e);
    if (i !== -1) q.splice(i, 1);
  }

  private pump(): void {
    while (this.inFlight < this.maxConcurrent) {
      const next = this.queues[0].shift() ?? this.queues[1].shift() ?? this.queues[2].shift();
      if (!next) return;
      this.inFlight++;
      next.phase = 'fetching';
      this.fetch(next).finally(() => {
        this.inFlight--;
        this.pump();
      });
    }
  }

  private async fetch(e: Entry): Promise<void> {
    const generation = e.generation;
    try {
      const privateKey = await this.generateKey();
      const csr = csrToPem(buildCsr(privateKey, { uris: [formatSpiffeId(e.id)] }));
      const pems = await this.ca.fetchCertificate(e.id, csr);
      if (generation !== e.generation || this.closed) return;
      const cert = this.toCertificate(e.id, privateKey, pems);
      e.cert = cert;
      e.failures = 0;
      e.lastError = null;
      e.phase = 'idle';
      for (const w of e.waiters.splice(0)) w.resolve(cert);
      this.logger?.info(
        { identity: e.key, serial: cert.serial, expires: new Date(cert.notAfter).toISOString() },
        'certificate issued',
      );
      this.onCertificate?.(cert);
      this.schedule(e, Math.max(0, cert.refreshAt() - Date.now()), PRIORITY.refresh);
    } catch (err) {
      if (generation !== e.generation || this.closed) return;
      e.failures++;
      e.lastError = describeError(err);
      const cap = Math.min(MAX_BACKOFF_MS, INITIAL_BACKOFF_MS * 2 ** (e.failures - 1));
      // Jitter in [cap/2, cap) so a fleet of ztunnels does not retry in lock-step.
      const delay = Math.floor(cap / 2 + (this.random() * cap) / 2);
      const failure = new MeshError(
        'MESH_ERR_IDENTITY_FETCH',
        `fetching certificate for ${e.key} failed: ${e.lastError}`,
        {
          cause: err,
        },
      );
      for (const w of e.waiters.splice(0)) w.reject(failure);
      this.logger?.warn(
        {
          identity: e.key,
          failures: e.failures,
          retryInMs: delay,
          keptValidCert: this.valid(e) !== null,
          err: e.lastError,
        },
        'certificate fetch failed',
      );
      e.phase = 'backoff';
      this.schedule(e, delay, this.valid(e) ? PRIORITY.refresh : PRIORITY.onDemand);
    }
  }

  private schedule(e: Entry, delayMs: number, priority: Priority): void {
    if (e.timer) clearTimeout(e.timer);
    // setTimeout's limit is 2^31-1 ms (~24.8 days); longer-lived certs re-arm on wake-up.
    const capped = Math.min(delayMs, 2 ** 31 - 1);
    e.timer = setTimeout(() => {
      e.timer = null;
      if (e.phase === 'backoff') e.phase = 'idle';
      if (delayMs > capped) this.schedule(e, delayMs - capped, priority);
      else this.enqueue(e, priority);
    }, capped);
    e.timer.unref();
  }

  private toCertificate(id: Identity, privateKey: KeyObject, pems: string[]): WorkloadCertificate {
    // Istio's response: leaf, intermediates…, and the root bundle (all trust anchors) as the last element.
    const pemOf = (d: Buffer) => new X509Certificate(d).toString();
    let chain: Buffer[];
    let roots: Buffer[];
    if (pems.length > 1) {
      chain = pems.slice(0, -1).flatMap((p) => pemCertificates(p));
      roots = pemCertificates(pems[pems.length - 1]!);
    } else {
      const all = pemCertificates(pems[0] ?? '');
      chain = all.slice(0, 1);
      roots = all.length > 1 ? all.slice(1) : all;
    }
    if (chain.length === 0 || roots.length === 0) {
      throw new MeshError('MESH_ERR_IDENTITY_FETCH', 'CA returned no certificate or no root');
    }
    const leaf = new X509Certificate(chain[0]!);
    if (!leaf.checkPrivateKey(privateKey)) {
      throw new MeshError('MESH_ERR_IDENTITY_FETCH', 'CA returned a certificate for a different key');
    }
    const want = `URI:${formatSpiffeId(id)}`;
    if (!(leaf.subjectAltName ?? '').split(', ').includes(want)) {
      throw new MeshError(
        'MESH_ERR_IDENTITY_FETCH',
        `CA returned a certificate without ${want} (${leaf.subjectAltName})`,
      );
    }
    return new WorkloadCertificate(id, privateKey, chain.map(pemOf), roots.map(pemOf));
  }
}
