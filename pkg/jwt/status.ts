/**
 * Envoy's jwt_authn wire facts: status texts (the 401/403 body), limits, and the `www-authenticate` header.
 */

/** Response bodies, byte for byte Envoy's `getStatusString` for the statuses this module produces. */
export const JWT_STATUS = {
  expired: 'Jwt is expired',
  notYetValid: 'Jwt not yet valid',
  badFormat: 'Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections',
  headerBadBase64: 'Jwt header is an invalid Base64url encoded',
  headerBadJson: 'Jwt header is an invalid JSON',
  headerBadAlg: 'Jwt header [alg] field is required and must be a string',
  headerNotImplementedAlg: 'Jwt header [alg] is not supported',
  headerBadKid: 'Jwt header [kid] field is not a string',
  payloadBadBase64: 'Jwt payload is an invalid Base64url encoded',
  payloadBadJson: 'Jwt payload is an invalid JSON',
  issNotString: 'Jwt payload [iss] field is not a string',
  subNotString: 'Jwt payload [sub] field is not a string',
  iatNotInteger: 'Jwt payload [iat] field is not an integer',
  iatOutOfRange: 'Jwt payload [iat] field is not a positive 64 bit integer',
  nbfNotInteger: 'Jwt payload [nbf] field is not an integer',
  nbfOutOfRange: 'Jwt payload [nbf] field is not a positive 64 bit integer',
  expNotInteger: 'Jwt payload [exp] field is not an integer',
  expOutOfRange: 'Jwt payload [exp] field is not a positive 64 bit integer',
  audNotString: 'Jwt payload [aud] field is not a string or string list',
  signatureBadBase64: 'Jwt signature is an invalid Base64url encoded',
  unknownIssuer: 'Jwt issuer is not configured',
  audienceNotAllowed: 'Audiences in Jwt are not allowed',
  verificationFail: 'Jwt verification fails',
  multipleTokens: 'Found multiple Jwt tokens',
  jwksNoValidKeys: "Jwks doesn't have any valid public key",
  jwksKidAlgMismatch: "Jwks doesn't have key to match kid or alg from Jwt",
  jwksFetchFail: 'Jwks remote fetch is failed',
} as const;

export type JwtStatusMessage = (typeof JWT_STATUS)[keyof typeof JWT_STATUS];

/** Envoy's default `clock_skew_seconds` for exp/nbf. */
export const JWT_CLOCK_SKEW_SEC = 60;
/** Larger tokens are rejected unparsed; real tokens are a few KiB, and Node caps all headers at 16 KiB anyway. */
export const JWT_MAX_TOKEN_BYTES = 64 * 1024;
/** More tokens than this in one request are rejected without verifying any (bounds the work per request). */
export const JWT_MAX_TOKENS = 8;
/** istiod's `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL` default: how often a jwksUri is fetched again. */
export const JWKS_REFRESH_INTERVAL_MS = 20 * 60_000;
/** Istio's default JWT rule `timeout` for fetching a jwksUri. */
export const JWKS_FETCH_TIMEOUT_MS = 5_000;
/** Cap on a jwksUri response; real key sets are a few KiB. */
export const JWKS_MAX_BYTES = 512 * 1024;
/** First retry after a failed fetch (doubling up to the refresh interval); also the minimum gap between on-demand
 * fetches when no key set was ever obtained, so a dead issuer is not hammered by every request. */
export const JWKS_RETRY_MIN_MS = 1_000;
/** Envoy's `MaximumUriLength` for the realm: the path part is truncated to this many characters. */
export const JWT_REALM_MAX_PATH = 256;

/** Envoy's original URI for the realm: `<scheme>://<authority><path>`, path truncated to 256 characters. */
export function jwtRealmUri(scheme: string, authority: string, path: string): string {
  const p = path.length > JWT_REALM_MAX_PATH ? path.slice(0, JWT_REALM_MAX_PATH) : path;
  return `${scheme}://${authority}${p}`;
}

/**
 * The `www-authenticate` value Envoy sends with a JWT rejection, given the request URL (see `jwtRealmUri`):
 * `Bearer realm="<url>", error="invalid_token"`; without the error part when the token was missing (our
 * authenticator never rejects a missing token, authorization does, but the helper matches Envoy both ways).
 * `"` and `\` are percent-encoded so a hostile path cannot break the quoted string.
 */
export function wwwAuthenticate(requestUrl: string, opts: { readonly missing?: boolean } = {}): string {
  const realm = requestUrl.replace(/["\\]/g, (c) => (c === '"' ? '%22' : '%5C'));
  return opts.missing ? `Bearer realm="${realm}"` : `Bearer realm="${realm}", error="invalid_token"`;
}
