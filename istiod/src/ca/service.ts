/**
 * `istio.v1.auth.IstioCertificateService/CreateCertificate`: authenticate the caller's Kubernetes token,
 * decide which identity it may have (its own, or — for trusted node agents such as ztunnel — one of the pods
 * on its node), and sign the CSR's public key with Istio's leaf profile.
 */
import { status as grpcStatus, type handleUnaryCall, type Metadata } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { describeError } from '../../../pkg/errors/index.ts';
import { formatSpiffeId, type Identity, parseSpiffeId, x509 } from '../../../pkg/identity/index.ts';
import { Counter, type Registry } from '../../../pkg/metrics/index.ts';
import type {
  IstioCertificateRequest,
  IstioCertificateResponse,
  IstioCertificateServiceServer,
} from '../../../pkg/xds/gen/istio/v1/auth/ca.ts';
import { type CaMaterial, DEFAULT_LEAF_TTL_MS, MAX_LEAF_TTL_MS } from './authority.ts';

/** A CSR is ~500 bytes; anything past this is not a CSR. */
export const MAX_CSR_BYTES = 64 * 1024;
/** The metadata key ztunnel uses to ask for another workload's certificate. */
export const IMPERSONATED_IDENTITY_KEY = 'ImpersonatedIdentity';

/** Who is calling, as established by authentication. */
export interface Caller {
  readonly namespace: string;
  readonly serviceAccount: string;
  /** The pod the token is bound to, when the token says (bound service account tokens do). */
  readonly podName: string | null;
  readonly podUid: string | null;
}

export interface Authenticator {
  /** Resolves the caller or throws CaError(UNAUTHENTICATED). */
  authenticate(token: string): Promise<Caller>;
}

/** The slice of cluster state impersonation checks need. */
export interface NodeIndex {
  /** The node a pod is scheduled on, or null when the pod does not exist (or is not scheduled). */
  nodeOfPod(namespace: string, name: string, uid: string | null): Promise<string | null>;
  /** True when some pod on `node` runs as `namespace/serviceAccount`. */
  serviceAccountOnNode(namespace: string, serviceAccount: string, node: string): Promise<boolean>;
}

export class CaError extends Error {
  override readonly name = 'CaError';
  readonly grpcCode: grpcStatus;
  constructor(grpcCode: grpcStatus, message: string) {
    super(message);
    this.grpcCode = grpcCode;
  }
}

export interface CaServiceOptions {
  readonly material: () => CaMaterial;
  readonly authenticator: Authenticator;
  readonly nodes: NodeIndex;
  readonly trustDomain: string;
  /** `namespace/serviceAccount` entries allowed to impersonate (CA_TRUSTED_NODE_ACCOUNTS). */
  readonly trustedNodeAccounts: ReadonlySet<string>;
  readonly defaultTtlMs?: number;
  readonly maxTtlMs?: number;
  readonly registry: Registry;
  readonly logger: Logger;
}

export class CaService {
  private readonly opts: CaServiceOptions;
  private readonly defaultTtlMs: number;
  private readonly maxTtlMs: number;
  private readonly metrics: {
    csr: Counter;
    authFailure: Counter;
    csrParseError: Counter;
    idExtractionError: Counter;
    signError: Counter;
    success: Counter;
  };

  constructor(opts: CaServiceOptions) {
    this.opts = opts;
    this.defaultTtlMs = opts.defaultTtlMs ?? DEFAULT_LEAF_TTL_MS;
    this.maxTtlMs = opts.maxTtlMs ?? MAX_LEAF_TTL_MS;
    const counter = (name: string, help: string) => new Counter({ name, help, registers: [opts.registry] });
    // Istio's CA metric names.
    this.metrics = {
      csr: counter('citadel_server_csr_count', 'The number of CSRs received by the CA server.'),
      authFailure: counter(
        'citadel_server_authentication_failure_count',
        'The number of authentication failures.',
      ),
      csrParseError: counter(
        'citadel_server_csr_parsing_err_count',
        'The number of errors when parsing CSRs.',
      ),
      idExtractionError: counter(
        'citadel_server_id_extraction_err_count',
        'The number of identity extraction errors.',
      ),
      signError: counter('citadel_server_csr_sign_err_count', 'The number of errors while signing CSRs.'),
      success: counter('citadel_server_success_cert_issuance_count', 'The number of certificates issued.'),
    };
  }

  /** The grpc-js handler map for `IstioCertificateServiceService`. */
  handlers(): IstioCertificateServiceServer {
    const createCertificate: handleUnaryCall<IstioCertificateRequest, IstioCertificateResponse> = (
      call,
      callback,
    ) => {
      const peer = call.getPeer();
      this.createCertificate(bearerToken(call.metadata), call.request).then(
        (certChain) => callback(null, { certChain }),
        (err: unknown) => {
          const e =
            err instanceof CaError
              ? err
              : new CaError(grpcStatus.INTERNAL, `internal error: ${describeError(err)}`);
          if (e.grpcCode === grpcStatus.INTERNAL)
            this.opts.logger.error({ peer, err: describeError(err) }, 'CSR failed');
          else this.opts.logger.warn({ peer, code: grpcStatus[e.grpcCode], err: e.message }, 'CSR rejected');
          callback({ code: e.grpcCode, details: e.message });
        },
      );
    };
    return { createCertificate };
  }

  async createCertificate(token: string | null, req: IstioCertificateRequest): Promise<string[]> {
    this.metrics.csr.inc();
    if (!token) {
      this.metrics.authFailure.inc();
      throw new CaError(
        grpcStatus.UNAUTHENTICATED,
        'request authenticate failure: no bearer token in "authorization" metadata',
      );
    }
    let caller: Caller;
    try {
      caller = await this.opts.authenticator.authenticate(token);
    } catch (err) {
      this.metrics.authFailure.inc();
      if (err instanceof CaError) throw err;
      throw new CaError(grpcStatus.UNAVAILABLE, `cannot authenticate caller: ${describeError(err)}`);
    }
    const identity = await this.identityFor(caller, req);
    const ttlMs = this.ttl(req);
    const csrDer = csrBytes(req.csr);
    if (!csrDer) {
      this.metrics.csrParseError.inc();
      throw new CaError(grpcStatus.INVALID_ARGUMENT, 'CSR is not a PEM "CERTIFICATE REQUEST"');
    }
    let parsed: x509.ParsedCsr;
    try {
      parsed = x509.parseCsr(csrDer);
    } catch (err) {
      this.metrics.csrParseError.inc();
      throw new CaError(grpcStatus.INVALID_ARGUMENT, `CSR rejected: ${(err as Error).message}`);
    }
    checkKey(parsed);
    try {
      const chain = this.opts
        .material()
        .signWorkload(parsed.publicKey, identity, ttlMs, Date.now(), parsed.spkiDer);
      this.metrics.success.inc();
      this.opts.logger.debug(
        { identity: formatSpiffeId(identity), caller: `${caller.namespace}/${caller.serviceAccount}`, ttlMs },
        'certificate issued',
      );
      return chain;
    } catch (err) {
      this.metrics.signError.inc();
      throw new CaError(grpcStatus.INTERNAL, `signing failed: ${describeError(err)}`);
    }
  }

  private ttl(req: IstioCertificateRequest): number {
    const secs = Number(req.validityDuration);
    if (!Number.isFinite(secs) || secs < 0) {
      throw new CaError(grpcStatus.INVALID_ARGUMENT, `invalid validity_duration ${req.validityDuration}`);
    }
    if (secs === 0) return this.defaultTtlMs;
    const ms = secs * 1000;
    if (ms > this.maxTtlMs) {
      throw new CaError(
        grpcStatus.INVALID_ARGUMENT,
        `requested TTL ${secs}s is greater than the max allowed TTL ${this.maxTtlMs / 1000}s`,
      );
    }
    return ms;
  }

  private async identityFor(caller: Caller, req: IstioCertificateRequest): Promise<Identity> {
    const own: Identity = {
      trustDomain: this.opts.trustDomain,
      namespace: caller.namespace,
      serviceAccount: caller.serviceAccount,
    };
    const requested = req.metadata?.[IMPERSONATED_IDENTITY_KEY];
    if (requested === undefined || requested === null || requested === '') return own;
    if (typeof requested !== 'string') {
      this.metrics.idExtractionError.inc();
      throw new CaError(grpcStatus.INVALID_ARGUMENT, `${IMPERSONATED_IDENTITY_KEY} must be a string`);
    }
    const parsed = parseSpiffeId(requested);
    if (!parsed.ok) {
      this.metrics.idExtractionError.inc();
      throw new CaError(grpcStatus.INVALID_ARGUMENT, `${IMPERSONATED_IDENTITY_KEY}: ${parsed.error}`);
    }
    const want = parsed.identity;
    if (want.trustDomain !== this.opts.trustDomain) {
      throw new CaError(
        grpcStatus.PERMISSION_DENIED,
        `trust domain ${want.trustDomain} is not ${this.opts.trustDomain}`,
      );
    }
    if (want.namespace === own.namespace && want.serviceAccount === own.serviceAccount) return own;
    const callerKey = `${caller.namespace}/${caller.serviceAccount}`;
    if (!this.opts.trustedNodeAccounts.has(callerKey)) {
      throw new CaError(
        grpcStatus.PERMISSION_DENIED,
        `${callerKey} is not allowed to impersonate ${requested}`,
      );
    }
    if (!caller.podName) {
      throw new CaError(
        grpcStatus.PERMISSION_DENIED,
        `impersonation by ${callerKey} needs a pod-bound token (no pod name in the token)`,
      );
    }
    const node = await this.opts.nodes.nodeOfPod(caller.namespace, caller.podName, caller.podUid);
    if (!node) {
      throw new CaError(
        grpcStatus.PERMISSION_DENIED,
        `caller pod ${caller.namespace}/${caller.podName} is not running on a node`,
      );
    }
    if (!(await this.opts.nodes.serviceAccountOnNode(want.namespace, want.serviceAccount, node))) {
      throw new CaError(
        grpcStatus.PERMISSION_DENIED,
        `no pod with service account ${want.namespace}/${want.serviceAccount} runs on node ${node} of ${callerKey}`,
      );
    }
    return want;
  }
}

export function bearerToken(md: Metadata): string | null {
  const v = md.get('authorization')[0];
  if (typeof v !== 'string') return null;
  const m = /^Bearer\s+(\S+)$/i.exec(v.trim());
  return m ? m[1]! : null;
}

function csrBytes(pem: string): Buffer | null {
  if (typeof pem !== 'string' || pem.length === 0) return null;
  if (pem.length > MAX_CSR_BYTES)
    throw new CaError(grpcStatus.INVALID_ARGUMENT, `CSR larger than ${MAX_CSR_BYTES} bytes`);
  return x509.pemCsr(pem);
}

/** Workload keys: ECDSA P-256/P-384 or RSA 2048–4096, as Istio's clients make. */
function checkKey(csr: x509.ParsedCsr): void {
  const k = csr.publicKey;
  if (k.asymmetricKeyType === 'ec') {
    const curve = k.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1' || curve === 'secp384r1') return;
    throw new CaError(grpcStatus.INVALID_ARGUMENT, `unsupported EC curve ${curve}; use P-256 or P-384`);
  }
  if (k.asymmetricKeyType === 'rsa') {
    const bits = k.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits >= 2048 && bits <= 4096) return;
    throw new CaError(grpcStatus.INVALID_ARGUMENT, `RSA key of ${bits} bits; use 2048 to 4096`);
  }
  throw new CaError(
    grpcStatus.INVALID_ARGUMENT,
    `unsupported key type ${k.asymmetricKeyType}; use ECDSA P-256 or RSA`,
  );
}
