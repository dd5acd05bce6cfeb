/**
 * RequestAuthentication for the waypoint and the ingress gateway: JWT validation with Istio's semantics (Envoy's
 * jwt_authn filter as configured by istiod), built on `jose`.
 *
 * - All `JwtRule`s that apply to a destination are merged into one `JwtAuthenticator`. A request without a token
 *   passes with no identity (authorization decides). A request with tokens passes when some rule validates every
 *   token found at that rule's locations (Istio's `requires_any: [rule_1, …, requires_all: [{rule_i or
 *   allow_missing}…]]`); otherwise it is rejected with Envoy's status text (`Jwt verification fails`,
 *   `Jwt is expired`, `Jwt issuer is not configured`, …), 401, or 403 for an audience mismatch, which is what
 *   Envoy sends. A token is only considered by rules that list the location it was found at.
 * - Token locations per rule: `fromHeaders` (name + prefix, found anywhere in the value as Envoy does),
 *   `fromParams`, `fromCookies`; with none of them, `Authorization: Bearer <token>` and the `access_token` query
 *   parameter.
 * - When several tokens validate, the first (rule order, then headers, params, cookies) provides the identity;
 *   Istio documents the principal as nondeterministic in that case.
 * - Keys: inline `jwks` (validated once, bad keys reported and skipped) or `jwksUri` fetched, cached, refreshed
 *   periodically and single-flight by a `JwksCache` that can be shared between authenticators.
 * - Accepted algorithms: RS256/384/512, PS256/384/512, ES256, ES384, EdDSA (Ed25519). `none` and HMAC are
 *   rejected. Clock skew 60 s (Envoy's default).
 * - Tokens never reach logs or results; results carry the claims and the header edits to apply before forwarding.
 */
import type { KeyObject } from 'node:crypto';

export * from './authenticator.ts';
export * from './jwks.ts';
export * from './status.ts';

/** Request headers as Node presents them: lower-case names, repeated headers as arrays. */
export type JwtHeaders = Readonly<Record<string, string | readonly string[] | undefined>>;

/** A verification key from a JWKS, validated and imported once. */
export interface JwksKey {
  readonly kid: string | null;
  /** The JWK's `alg` when it names one; the key then verifies only that algorithm. */
  readonly alg: string | null;
  readonly kty: 'RSA' | 'EC' | 'OKP';
  /** `P-256`, `P-384`, `Ed25519`, or null for RSA. */
  readonly crv: string | null;
  readonly key: KeyObject;
}

export interface ParsedJwks {
  readonly keys: readonly JwksKey[];
  /** One line per problem: the whole document, or a key (by index and kid) that was skipped. */
  readonly errors: readonly string[];
}

/** A problem in the configured rules, reported once when the authenticator is built. */
export interface JwtConfigError {
  /** `<namespace>/<RequestAuthentication name>` of the rule. */
  readonly source: string;
  readonly issuer: string;
  readonly message: string;
}

/** The request carried no token at any configured location. */
export interface JwtNone {
  readonly kind: 'none';
  /** Headers to delete before forwarding: output headers a client must not be able to set. */
  readonly removeHeaders: readonly string[];
}

/** At least one token was found and validated. */
export interface JwtOk {
  readonly kind: 'ok';
  /** `source` of the rule that validated the token. */
  readonly rule: string;
  /** `<iss>/<sub>` (Istio's request principal). */
  readonly principal: string;
  readonly issuer: string;
  readonly subject: string;
  /** The `aud` claim as a list. */
  readonly audiences: readonly string[];
  /** The `azp` claim, or null. */
  readonly presenter: string | null;
  /** The payload with `scope` and `permission` split on spaces (Istio's normalized claims, for authorization). */
  readonly claims: Readonly<Record<string, unknown>>;
  /** Headers to delete before forwarding (sanitized outputs, and the token's header unless forwarded). */
  readonly removeHeaders: readonly string[];
  /** Query parameters to delete before forwarding (the token's parameter unless forwarded). */
  readonly removeParams: readonly string[];
  /** Headers to set before forwarding (`outputPayloadToHeader`, `outputClaimToHeaders`). */
  readonly setHeaders: ReadonlyArray<readonly [name: string, value: string]>;
}

/** A token was found and rejected: answer `status` with `message` as the body and `wwwAuthenticate(…)`. */
export interface JwtInvalid {
  readonly kind: 'invalid';
  /** 401, or 403 for an audience mismatch (Envoy). */
  readonly status: 401 | 403;
  /** Envoy's status text, safe to send to the client; never contains the token. */
  readonly message: string;
  /** `source` of the rule the token was checked against, or null (no rule has that issuer). */
  readonly rule: string | null;
}

export type JwtResult = JwtNone | JwtOk | JwtInvalid;
