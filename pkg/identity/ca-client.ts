/**
 * The CA client of the data-plane proxies: sends CSRs to istiod's IstioCertificateService over TLS (verifying
 * istiod with the mesh root), authenticated by the proxy's projected service-account token. ztunnel asks for a
 * local pod's identity through the `ImpersonatedIdentity` metadata (istiod allows it only for pods on this
 * node); a waypoint asks for its own identity (no metadata: istiod signs the identity the token proves).
 */
import { readFileSync } from 'node:fs';
import { credentials, Metadata } from '@grpc/grpc-js';
import { MeshError } from '../errors/index.ts';
import { IstioCertificateServiceClient } from '../xds/gen/istio/v1/auth/ca.ts';
import type { CaClient } from './manager.ts';
import { formatSpiffeId, type Identity } from './spiffe.ts';

/** A CSR round trip is milliseconds; a stuck istiod must not pin a fetch slot forever. */
const CSR_TIMEOUT_MS = 15_000;

export interface GrpcCaClientOptions {
  /** `host:port` of istiod's TLS gRPC port (15012). */
  readonly address: string;
  /** Reads the PEM root bundle that verifies istiod (re-read on each new channel). */
  readonly rootCaPem: () => string;
  /** Reads the bearer token (re-read per call: projected tokens rotate). */
  readonly token: () => string;
  readonly ttlSeconds: number;
  /** Expected TLS name of istiod; the address host is used when it is an IP. */
  readonly serverName?: string;
  /** Whether to send ImpersonatedIdentity (ztunnel: true; a waypoint asks for its own identity). */
  readonly impersonate: boolean;
}

export class GrpcCaClient implements CaClient {
  private readonly opts: GrpcCaClientOptions;
  private client: IstioCertificateServiceClient | null = null;

  constructor(opts: GrpcCaClientOptions) {
    this.opts = opts;
  }

  private channel(): IstioCertificateServiceClient {
    if (!this.client) {
      const creds = credentials.createSsl(Buffer.from(this.opts.rootCaPem()));
      const options: Record<string, string> = {};
      if (this.opts.serverName) options['grpc.ssl_target_name_override'] = this.opts.serverName;
      this.client = new IstioCertificateServiceClient(this.opts.address, creds, options);
    }
    return this.client;
  }

  fetchCertificate(identity: Identity, csrPem: string): Promise<string[]> {
    const md = new Metadata();
    md.set('authorization', `Bearer ${this.opts.token().trim()}`);
    const metadata = this.opts.impersonate ? { ImpersonatedIdentity: formatSpiffeId(identity) } : undefined;
    return new Promise((resolve, reject) => {
      this.channel().createCertificate(
        { csr: csrPem, validityDuration: BigInt(this.opts.ttlSeconds), metadata },
        md,
        { deadline: Date.now() + CSR_TIMEOUT_MS },
        (err, res) => {
          if (err) {
            // A TLS/trust failure may be fixed by a new root: rebuild the channel next time.
            this.client?.close();
            this.client = null;
            reject(
              new MeshError(
                'MESH_ERR_IDENTITY_FETCH',
                `CA ${this.opts.address}: ${err.details || err.message}`,
                { cause: err },
              ),
            );
            return;
          }
          resolve(res.certChain);
        },
      );
    });
  }

  close(): void {
    this.client?.close();
    this.client = null;
  }
}

export function fileReader(path: string): () => string {
  return () => readFileSync(path, 'utf8');
}
