/**
 * The waypoint's CA client: sends CSRs for the waypoint's *own* identity to istiod's IstioCertificateService
 * over TLS (verified with the mesh root), authenticated by the pod's projected service-account token. Unlike
 * ztunnel it never asks for another identity (no ImpersonatedIdentity metadata): istiod signs the identity
 * the token proves.
 */
import { readFileSync } from 'node:fs';
import { credentials, Metadata } from '@grpc/grpc-js';
import { MeshError } from '../../pkg/errors/index.ts';
import type { CaClient, Identity } from '../../pkg/identity/index.ts';
import { IstioCertificateServiceClient } from '../../pkg/xds/gen/istio/v1/auth/ca.ts';

/** A CSR round trip is milliseconds; a stuck istiod must not pin the fetch forever. */
const CSR_TIMEOUT_MS = 15_000;

export interface GrpcCaClientOptions {
  /** `host:port` of istiod's TLS gRPC port (15012). */
  readonly address: string;
  /** Reads the PEM root bundle that verifies istiod (re-read on each new channel). */
  readonly rootCaPem: () => string;
  /** Reads the bearer token (re-read per call: projected tokens rotate). */
  readonly token: () => string;
  readonly ttlSeconds: number;
  /** Expected TLS name of istiod. */
  readonly serverName?: string;
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

  fetchCertificate(_identity: Identity, csrPem: string): Promise<string[]> {
    const md = new Metadata();
    md.set('authorization', `Bearer ${this.opts.token().trim()}`);
    return new Promise((resolve, reject) => {
      this.channel().createCertificate(
        { csr: csrPem, validityDuration: BigInt(this.opts.ttlSeconds), metadata: undefined },
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
                {
                  cause: err,
                },
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

/**
 * `namespace`/`serviceAccount` from a Kubernetes service-account token's `sub` claim
 * (`system:serviceaccount:<ns>:<sa>`), without verifying it (istiod does); null when it is not one.
 */
export function serviceAccountFromToken(token: string): { namespace: string; serviceAccount: string } | null {
  const parts = token.trim().split('.');
  if (parts.length !== 3) return null;
  try {
    const claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as { sub?: unknown };
    const m =
      typeof claims.sub === 'string' ? /^system:serviceaccount:([^:]+):([^:]+)$/.exec(claims.sub) : null;
    return m ? { namespace: m[1]!, serviceAccount: m[2]! } : null;
  } catch {
    return null;
  }
}
