/**
 * Per-request security at the waypoint, in Istio's order: RequestAuthentication (JWT) first — a token that is
 * present but invalid is refused with 401 (403 for an audience mismatch) and
 * `www-authenticate: Bearer realm="…", error="invalid_token"`; an absent one leaves the request without a request
 * principal — then AuthorizationPolicy (DENY, then ALLOW) over the request's attributes: 403
 * `RBAC: access denied` when denied.
 *
 * The evaluation lives in pkg/jwt (JwtAuthenticator) and pkg/rbac (compileL7Policies / evaluateL7); this file
 * adapts the waypoint's request to them and caches what they compile: policies per policy list (the list object
 * of a ServiceConfig survives table rebuilds while the resource is unchanged), one authenticator per service
 * whose rules are replaced (and its key sets released) when the rules change or the service goes away.
 */
import type { Logger } from 'pino';
import { JwksCache, JwtAuthenticator, jwtRealmUri, wwwAuthenticate } from '../../pkg/jwt/index.ts';
import {
  type CompiledL7Policies,
  compileL7Policies,
  evaluateL7,
  type L7Headers,
  parseIp,
  type RequestAuthInfo,
} from '../../pkg/rbac/index.ts';
import type { AuthzPolicy, JwtRule } from '../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import type { CompiledService } from './engine/index.ts';

/** What JWT authentication established for the request, and the header edits it asks for. */
export interface RequestAuth {
  /** Null when the request carried no token (or no rule applies). */
  readonly info: RequestAuthInfo | null;
  readonly setHeaders: ReadonlyArray<readonly [string, string]>;
  readonly removeHeaders: readonly string[];
  /** Query parameters to strip (the token's, unless forwardOriginalToken). */
  readonly removeParams: readonly string[];
}

export const NO_AUTH: RequestAuth = Object.freeze({
  info: null,
  setHeaders: Object.freeze([]) as ReadonlyArray<readonly [string, string]>,
  removeHeaders: Object.freeze([]) as readonly string[],
  removeParams: Object.freeze([]) as readonly string[],
});

export type AuthnResult =
  | { readonly ok: true; readonly auth: RequestAuth }
  | { readonly ok: false; readonly status: number; readonly body: string; readonly wwwAuthenticate: string };

/** The request attributes authorization reads. */
export interface AuthzRequest {
  readonly method: string;
  /** As received (the query string is ignored by the evaluator). */
  readonly path: string;
  /** Host / :authority as received. */
  readonly host: string;
  /** Destination (service) port. */
  readonly port: number;
  readonly headers: L7Headers;
  /** HBONE peer principal without `spiffe://` (`cluster.local/ns/x/sa/y`). */
  readonly principal: string;
  /** The original client address (HBONE `forwarded`), for ipBlocks / source.ip. */
  readonly sourceIp: string;
  /** remoteIpBlocks / remote.ip; the source address (no trusted proxies in front of a waypoint). */
  readonly remoteIp: string;
  /** The address the client dialled (VIP or pod IP). */
  readonly destinationIp: string;
  readonly auth: RequestAuth;
}

export interface AuthzResult {
  readonly allowed: boolean;
  /** `<ns>/<name>` of the deciding policy (for logs), null when none applied. */
  readonly policy: string | null;
}

export interface Security {
  /** Validates JWTs against `svc`'s RequestAuthentication rules. */
  authenticate(
    svc: CompiledService,
    headers: L7Headers,
    path: string,
    authority: string,
  ): AuthnResult | Promise<AuthnResult>;
  /** Evaluates `svc`'s AuthorizationPolicies. */
  authorize(svc: CompiledService, req: AuthzRequest): AuthzResult;
}

export interface MeshSecurityOptions {
  readonly trustDomain: string;
  readonly logger: Logger;
  /** For tests: a cache with a fake fetch. */
  readonly jwksCache?: JwksCache;
}

interface AuthnEntry {
  readonly rules: readonly JwtRule[];
  readonly auth: JwtAuthenticator;
}

export class MeshSecurity implements Security {
  private readonly opts: MeshSecurityOptions;
  private readonly compiled = new WeakMap<readonly AuthzPolicy[], CompiledL7Policies>();
  private readonly authenticators = new Map<string, AuthnEntry>();
  private readonly jwks: JwksCache;

  constructor(opts: MeshSecurityOptions) {
    this.opts = opts;
    this.jwks = opts.jwksCache ?? new JwksCache({ logger: opts.logger });
  }

  private authenticatorFor(svc: CompiledService): JwtAuthenticator {
    const e = this.authenticators.get(svc.name);
    if (e !== undefined && e.rules === svc.jwtRules) return e.auth;
    e?.auth.close();
    const auth = new JwtAuthenticator(svc.jwtRules, { jwksCache: this.jwks, logger: this.opts.logger });
    for (const err of auth.errors) {
      this.opts.logger.warn(
        { code: 'MESH_ERR_XDS_NACK', service: svc.name, source: err.source, issuer: err.issuer },
        `RequestAuthentication rule unusable: ${err.message}`,
      );
    }
    this.authenticators.set(svc.name, { rules: svc.jwtRules, auth });
    return auth;
  }

  async authenticate(
    svc: CompiledService,
    headers: L7Headers,
    path: string,
    authority: string,
  ): Promise<AuthnResult> {
    const q = path.indexOf('?');
    const r = await this.authenticatorFor(svc).authenticate(headers, q === -1 ? '' : path.slice(q + 1));
    if (r.kind === 'invalid') {
      return {
        ok: false,
        status: r.status,
        body: r.message,
        wwwAuthenticate: wwwAuthenticate(jwtRealmUri('http', authority, path)),
      };
    }
    if (r.kind === 'none') {
      if (r.removeHeaders.length === 0) return { ok: true, auth: NO_AUTH };
      return { ok: true, auth: { ...NO_AUTH, removeHeaders: r.removeHeaders } };
    }
    return {
      ok: true,
      auth: {
        info: {
          principal: r.principal,
          issuer: r.issuer,
          subject: r.subject,
          audiences: r.audiences,
          presenter: r.presenter,
          claims: r.claims,
        },
        setHeaders: r.setHeaders,
        removeHeaders: r.removeHeaders,
        removeParams: r.removeParams,
      },
    };
  }

  private policiesFor(svc: CompiledService): CompiledL7Policies {
    let c = this.compiled.get(svc.authorization);
    if (c === undefined) {
      const r = compileL7Policies(svc.authorization, { trustDomain: this.opts.trustDomain });
      for (const e of r.errors) {
        this.opts.logger.warn(
          { service: svc.name, policy: e.policy, rule: e.rule, effect: e.effect },
          `AuthorizationPolicy partly ignored: ${e.message}`,
        );
      }
      c = r.policies;
      this.compiled.set(svc.authorization, c);
    }
    return c;
  }

  authorize(svc: CompiledService, req: AuthzRequest): AuthzResult {
    const src = parseIp(req.sourceIp);
    const d = evaluateL7(this.policiesFor(svc), {
      sourcePrincipal: req.principal,
      sourceIp: src,
      remoteIp: req.remoteIp === req.sourceIp ? src : parseIp(req.remoteIp),
      destinationIp: parseIp(req.destinationIp),
      destinationPort: req.port,
      host: req.host,
      method: req.method,
      path: req.path,
      headers: req.headers,
      requestAuth: req.auth.info,
      sni: null,
    });
    return { allowed: d.allowed, policy: d.policy };
  }

  /** Drops authenticators of services no longer configured (their key sets are released). */
  prune(live: (name: string) => boolean): void {
    for (const [name, e] of this.authenticators) {
      if (!live(name)) {
        e.auth.close();
        this.authenticators.delete(name);
      }
    }
  }

  close(): void {
    for (const e of this.authenticators.values()) e.auth.close();
    this.authenticators.clear();
    this.jwks.close();
  }
}
