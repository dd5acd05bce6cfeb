import { Writable } from 'node:stream';
import { UnsecuredJWT } from 'jose';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseIp } from '../rbac/ip.ts';
import { compileL7Policies, evaluateL7, RBAC_DENIED_BODY, RBAC_DENIED_STATUS } from '../rbac/l7.ts';
import { AuthzPolicy_Action, type JwtRule } from '../xds/gen/ambient/waypoint/v1/waypoint.ts';
import { applyJwtHeaderEdits, JwtAuthenticator, stripQueryParams } from './authenticator.ts';
import type { JwtOk, JwtResult } from './index.ts';
import { JwksCache } from './jwks.ts';
import { JWT_STATUS, jwtRealmUri, wwwAuthenticate } from './status.ts';
import { jwksOf, jwksServer, sign, type TestJwksServer, type TestKey, testKey } from './testing.ts';

const ISS = 'https://issuer.example.com';
const ISS_B = 'https://b.example.com';

let rsa: TestKey;
let ec: TestKey;
let ps: TestKey;
let ed: TestKey;
let other: TestKey;
let rsaB: TestKey;

beforeAll(async () => {
  [rsa, ec, ps, ed, other, rsaB] = await Promise.all([
    testKey('RS256', 'rsa-1'),
    testKey('ES256', 'ec-1'),
    testKey('PS256', 'ps-1'),
    testKey('EdDSA', 'ed-1'),
    testKey('RS256', 'rsa-1'), // same kid, different key: a forged token
    testKey('RS256', 'b-1'),
  ]);
}, 60_000);

function rule(r: Partial<JwtRule> = {}): JwtRule {
  return {
    issuer: ISS,
    audiences: [],
    jwksUri: '',
    jwks: jwksOf(rsa, ec, ps, ed),
    fromHeaders: [],
    fromParams: [],
    fromCookies: [],
    outputPayloadToHeader: '',
    forwardOriginalToken: false,
    outputClaimToHeaders: [],
    source: 'default/jwt-example',
    jwksFetchTimeoutMs: 0,
    ...r,
  };
}

const open: JwtAuthenticator[] = [];
function authn(
  rules: JwtRule[],
  opts: ConstructorParameters<typeof JwtAuthenticator>[1] = {},
): JwtAuthenticator {
  const a = new JwtAuthenticator(rules, opts);
  open.push(a);
  return a;
}
afterEach(() => {
  for (const a of open.splice(0)) a.close();
});

const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

function expectOk(r: JwtResult): JwtOk {
  if (r.kind !== 'ok') throw new Error(`expected ok, got ${JSON.stringify(r)}`);
  return r;
}

function expectInvalid(r: JwtResult, message: string, status = 401): void {
  expect(r).toMatchObject({ kind: 'invalid', status, message });
}

describe('valid tokens', () => {
  it.each(['RS256', 'ES256', 'PS256', 'EdDSA'])('%s', async (alg) => {
    const key = { RS256: rsa, ES256: ec, PS256: ps, EdDSA: ed }[alg]!;
    const token = await sign(
      key,
      { iss: ISS, sub: 'alice', aud: ['bookinfo', 'web'], azp: 'client-1' },
      { expIn: 300 },
    );
    const r = expectOk(await authn([rule()]).authenticate(bearer(token), ''));
    expect(r).toMatchObject({
      rule: 'default/jwt-example',
      principal: `${ISS}/alice`,
      issuer: ISS,
      subject: 'alice',
      audiences: ['bookinfo', 'web'],
      presenter: 'client-1',
    });
    expect(r.claims).toMatchObject({ iss: ISS, sub: 'alice' });
  });

  it('no token → none (authorization decides)', async () => {
    expect(await authn([rule()]).authenticate({}, '')).toEqual({ kind: 'none', removeHeaders: [] });
    expect(await authn([]).authenticate(bearer('x.y.z'), '')).toMatchObject({ kind: 'none' });
  });

  it('normalizes space-delimited scope and permission claims for authorization', async () => {
    const token = await sign(rsa, {
      iss: ISS,
      sub: 's',
      scope: 'read  write',
      permission: 'a b',
      other: 'x y',
    });
    const r = expectOk(await authn([rule()]).authenticate(bearer(token), ''));
    expect(r.claims).toMatchObject({ scope: ['read', 'write'], permission: ['a', 'b'], other: 'x y' });
  });

  it('a kid-less token tries every key of the right type', async () => {
    const token = await sign(ec, { iss: ISS, sub: 's' }, { header: { kid: undefined } });
    expectOk(await authn([rule()]).authenticate(bearer(token), ''));
  });
});

describe('rejected tokens (Envoy status text)', () => {
  it('expired → 401 Jwt is expired; within the 60 s skew still valid', async () => {
    const a = authn([rule()]);
    expectInvalid(
      await a.authenticate(bearer(await sign(rsa, { iss: ISS, sub: 's' }, { expIn: -120 })), ''),
      JWT_STATUS.expired,
    );
    expectOk(await a.authenticate(bearer(await sign(rsa, { iss: ISS, sub: 's' }, { expIn: -30 })), ''));
  });

  it('not yet valid (nbf) beyond the skew', async () => {
    const a = authn([rule()]);
    expectInvalid(
      await a.authenticate(bearer(await sign(rsa, { iss: ISS, sub: 's' }, { nbfIn: 300 })), ''),
      JWT_STATUS.notYetValid,
    );
    expectOk(await a.authenticate(bearer(await sign(rsa, { iss: ISS, sub: 's' }, { nbfIn: 30 })), ''));
  });

  it('honours an injected clock', async () => {
    const token = await sign(rsa, { iss: ISS, sub: 's' }, { expIn: 600 });
    const a = authn([rule()], { now: () => Date.now() + 3_600_000 });
    expectInvalid(await a.authenticate(bearer(token), ''), JWT_STATUS.expired);
  });

  it('wrong issuer → 401 Jwt issuer is not configured', async () => {
    const r = await authn([rule()]).authenticate(
      bearer(await sign(rsa, { iss: 'https://evil', sub: 's' })),
      '',
    );
    expect(r).toEqual({ kind: 'invalid', status: 401, message: JWT_STATUS.unknownIssuer, rule: null });
  });

  it('a token without iss is from no configured issuer', async () => {
    expectInvalid(
      await authn([rule()]).authenticate(bearer(await sign(rsa, { sub: 's' })), ''),
      JWT_STATUS.unknownIssuer,
    );
  });

  it('wrong audience → 403 Audiences in Jwt are not allowed (Envoy)', async () => {
    const a = authn([rule({ audiences: ['bookinfo'] })]);
    const r = await a.authenticate(bearer(await sign(rsa, { iss: ISS, sub: 's', aud: 'other' })), '');
    expect(r).toEqual({
      kind: 'invalid',
      status: 403,
      message: JWT_STATUS.audienceNotAllowed,
      rule: 'default/jwt-example',
    });
    expectInvalid(
      await a.authenticate(bearer(await sign(rsa, { iss: ISS, sub: 's' })), ''),
      JWT_STATUS.audienceNotAllowed,
      403,
    );
    expectOk(
      await a.authenticate(bearer(await sign(rsa, { iss: ISS, sub: 's', aud: ['x', 'bookinfo'] })), ''),
    );
  });

  it('audiences compare without http(s):// and a trailing slash', async () => {
    const a = authn([rule({ audiences: ['https://api.example.com/'] })]);
    expectOk(
      await a.authenticate(
        bearer(await sign(rsa, { iss: ISS, sub: 's', aud: 'http://api.example.com' })),
        '',
      ),
    );
    expectOk(
      await a.authenticate(bearer(await sign(rsa, { iss: ISS, sub: 's', aud: 'api.example.com' })), ''),
    );
  });

  it('bad signature (same kid, other key) → Jwt verification fails', async () => {
    expectInvalid(
      await authn([rule()]).authenticate(bearer(await sign(other, { iss: ISS, sub: 's' })), ''),
      JWT_STATUS.verificationFail,
    );
  });

  it('corrupted signature → Jwt verification fails', async () => {
    const token = await sign(rsa, { iss: ISS, sub: 's' });
    const sig = token.slice(token.lastIndexOf('.') + 1);
    const flipped = `${token.slice(0, token.lastIndexOf('.') + 1)}${sig[0] === 'A' ? 'B' : 'A'}${sig.slice(1)}`;
    expectInvalid(await authn([rule()]).authenticate(bearer(flipped), ''), JWT_STATUS.verificationFail);
  });

  it('tampered payload → Jwt verification fails', async () => {
    const token = await sign(rsa, { iss: ISS, sub: 'alice' });
    const [h, , s] = token.split('.');
    const forged = Buffer.from(JSON.stringify({ iss: ISS, sub: 'admin' })).toString('base64url');
    expectInvalid(
      await authn([rule()]).authenticate(bearer(`${h}.${forged}.${s}`), ''),
      JWT_STATUS.verificationFail,
    );
  });

  it('alg none is rejected', async () => {
    const token = new UnsecuredJWT({ iss: ISS, sub: 's' }).encode();
    expectInvalid(await authn([rule()]).authenticate(bearer(token), ''), JWT_STATUS.headerNotImplementedAlg);
  });

  it('HMAC algorithms are rejected', async () => {
    const h = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })).toString('base64url');
    const p = Buffer.from(JSON.stringify({ iss: ISS, sub: 's' })).toString('base64url');
    expectInvalid(
      await authn([rule()]).authenticate(bearer(`${h}.${p}.c2ln`), ''),
      JWT_STATUS.headerNotImplementedAlg,
    );
  });

  it('no key with the token kid/alg → Jwks doesn\u2019t have key to match kid or alg', async () => {
    const a = authn([rule({ jwks: jwksOf(ec) })]);
    expectInvalid(
      await a.authenticate(bearer(await sign(rsa, { iss: ISS, sub: 's' })), ''),
      JWT_STATUS.jwksKidAlgMismatch,
    );
    const b = authn([rule()]);
    const wrongKid = await sign(rsa, { iss: ISS, sub: 's' }, { header: { kid: 'nope' } });
    expectInvalid(await b.authenticate(bearer(wrongKid), ''), JWT_STATUS.jwksKidAlgMismatch);
  });

  const b64 = (v: unknown) =>
    Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
  const RS = b64({ alg: 'RS256' });
  const P = b64({ iss: ISS, sub: 's' });
  it.each([
    ['one part', 'abc', JWT_STATUS.badFormat],
    ['four parts', 'a.b.c.d', JWT_STATUS.badFormat],
    ['empty bearer', '', JWT_STATUS.badFormat],
    ['header not base64url', `ab!c.${P}.c2ln`, JWT_STATUS.headerBadBase64],
    ['header not JSON', `${b64('nope')}.${P}.c2ln`, JWT_STATUS.headerBadJson],
    ['header an array', `${b64([1])}.${P}.c2ln`, JWT_STATUS.headerBadJson],
    ['header without alg', `${b64({ typ: 'JWT' })}.${P}.c2ln`, JWT_STATUS.headerBadAlg],
    ['numeric kid', `${b64({ alg: 'RS256', kid: 7 })}.${P}.c2ln`, JWT_STATUS.headerBadKid],
    ['payload not base64url', `${RS}.%%.c2ln`, JWT_STATUS.payloadBadBase64],
    ['payload not JSON', `${RS}.${b64('{')}.c2ln`, JWT_STATUS.payloadBadJson],
    ['numeric iss', `${RS}.${b64({ iss: 1 })}.c2ln`, JWT_STATUS.issNotString],
    ['numeric sub', `${RS}.${b64({ iss: ISS, sub: 1 })}.c2ln`, JWT_STATUS.subNotString],
    ['string exp', `${RS}.${b64({ iss: ISS, exp: 'soon' })}.c2ln`, JWT_STATUS.expNotInteger],
    ['negative nbf', `${RS}.${b64({ iss: ISS, nbf: -1 })}.c2ln`, JWT_STATUS.nbfOutOfRange],
    ['string iat', `${RS}.${b64({ iss: ISS, iat: 'x' })}.c2ln`, JWT_STATUS.iatNotInteger],
    ['numeric aud', `${RS}.${b64({ iss: ISS, aud: 5 })}.c2ln`, JWT_STATUS.audNotString],
    ['signature not base64url', `${RS}.${P}.a+b`, JWT_STATUS.signatureBadBase64],
  ])('malformed: %s', async (_n, token, message) => {
    expectInvalid(await authn([rule()]).authenticate(bearer(token), ''), message);
  });

  it('an oversized token is rejected unparsed', async () => {
    const a = authn([rule()], { maxTokenBytes: 1024 });
    expectInvalid(await a.authenticate(bearer(`${'a'.repeat(2000)}.b.c`), ''), JWT_STATUS.verificationFail);
  });

  it('too many tokens are rejected without verifying any', async () => {
    const token = await sign(rsa, { iss: ISS, sub: 's' });
    const a = authn([rule()]);
    const r = await a.authenticate({ authorization: Array.from({ length: 9 }, () => `Bearer ${token}`) }, '');
    expect(r).toEqual({ kind: 'invalid', status: 401, message: JWT_STATUS.multipleTokens, rule: null });
  });
});

describe('JWKS sources', () => {
  it('garbage inline JWKS: reported once, tokens rejected', async () => {
    const a = authn([rule({ jwks: '{"keys":[{"kty":"RSA","kid":"x"}]}' })]);
    expect(a.errors).toEqual([
      {
        source: 'default/jwt-example',
        issuer: ISS,
        message: 'jwks: keys[0] (kid "x"): RSA key needs string "n" and "e"',
      },
    ]);
    expectInvalid(
      await a.authenticate(bearer(await sign(rsa, { iss: ISS, sub: 's' })), ''),
      JWT_STATUS.jwksNoValidKeys,
    );
    const b = authn([rule({ jwks: 'not json' })]);
    expect(b.errors[0]?.message).toBe('jwks: Jwks is an invalid JSON');
  });

  it('a rule with neither jwks nor jwksUri rejects its tokens', async () => {
    const a = authn([rule({ jwks: '' })]);
    expect(a.errors[0]?.message).toMatch(/neither jwks nor jwksUri/);
    expectInvalid(
      await a.authenticate(bearer(await sign(rsa, { iss: ISS, sub: 's' })), ''),
      JWT_STATUS.jwksFetchFail,
    );
  });

  it('a rule without issuer is reported and matches no token', async () => {
    const a = authn([rule({ issuer: '' })]);
    expect(a.errors[0]?.message).toMatch(/issuer is required/);
    expectInvalid(await a.authenticate(bearer(await sign(rsa, { sub: 's' })), ''), JWT_STATUS.unknownIssuer);
  });

  it('jwksUri must be http(s)', () => {
    expect(authn([rule({ jwks: '', jwksUri: 'file:///etc/passwd' })]).errors[0]?.message).toBe(
      'jwksUri "file:///etc/passwd" must be http or https',
    );
  });

  describe('jwksUri', () => {
    let server: TestJwksServer;
    beforeAll(async () => {
      server = await jwksServer(jwksOf(rsa));
    });
    afterAll(async () => {
      await server.close();
    });

    it('validates with keys fetched from jwksUri, shared through one cache', async () => {
      const cache = new JwksCache();
      const before = server.hits();
      const a = authn([rule({ jwks: '', jwksUri: server.url })], { jwksCache: cache });
      const b = authn([rule({ jwks: '', jwksUri: server.url, source: 'other/ra' })], { jwksCache: cache });
      const token = await sign(rsa, { iss: ISS, sub: 's' });
      expectOk(await a.authenticate(bearer(token), ''));
      expectOk(await b.authenticate(bearer(token), ''));
      expect(server.hits() - before).toBe(1);
      a.close();
      expect(cache.status()).toHaveLength(1);
      b.close();
      expect(cache.status()).toEqual([]);
      cache.close();
    });

    it('an unreachable jwksUri → 401 Jwks remote fetch is failed', async () => {
      const dead = await jwksServer('');
      const url = dead.url;
      await dead.close();
      const a = authn([rule({ jwks: '', jwksUri: url, jwksFetchTimeoutMs: 500 })]);
      expectInvalid(
        await a.authenticate(bearer(await sign(rsa, { iss: ISS, sub: 's' })), ''),
        JWT_STATUS.jwksFetchFail,
      );
    });
  });
});

describe('token locations', () => {
  it('default: Authorization: Bearer, and access_token in the query', async () => {
    const token = await sign(rsa, { iss: ISS, sub: 's' });
    const a = authn([rule()]);
    expectOk(await a.authenticate(bearer(token), ''));
    const q = expectOk(await a.authenticate({}, `x=1&access_token=${token}`));
    expect(q.removeParams).toEqual(['access_token']);
  });

  it('like Envoy, the token starts at the first JWT character after the prefix', async () => {
    const token = await sign(rsa, { iss: ISS, sub: 's' });
    expectOk(await authn([rule()]).authenticate({ authorization: `Bearer   ${token}` }, ''));
  });

  it('the Bearer prefix is case-sensitive, like Envoy (a lowercase scheme is no token)', async () => {
    const token = await sign(rsa, { iss: ISS, sub: 's' });
    expect(await authn([rule()]).authenticate({ authorization: `bearer ${token}` }, '')).toMatchObject({
      kind: 'none',
    });
  });

  it('other Authorization schemes are no token', async () => {
    expect(await authn([rule()]).authenticate({ authorization: 'Basic dXNlcjpwYXNz' }, '')).toMatchObject({
      kind: 'none',
    });
  });

  it('fromHeaders replaces the defaults', async () => {
    const token = await sign(rsa, { iss: ISS, sub: 's' });
    const a = authn([rule({ fromHeaders: [{ name: 'X-Jwt-Assertion', prefix: '' }] })]);
    const r = expectOk(await a.authenticate({ 'x-jwt-assertion': token }, ''));
    expect(r.removeHeaders).toEqual(['x-jwt-assertion']);
    expect(await a.authenticate(bearer(token), `access_token=${token}`)).toMatchObject({ kind: 'none' });
  });

  it('fromHeaders with a custom prefix', async () => {
    const token = await sign(rsa, { iss: ISS, sub: 's' });
    const a = authn([rule({ fromHeaders: [{ name: 'x-auth', prefix: 'Token ' }] })]);
    expectOk(await a.authenticate({ 'x-auth': `Token ${token}` }, ''));
    expect(await a.authenticate({ 'x-auth': token }, '')).toMatchObject({ kind: 'none' });
  });

  it('fromParams and fromCookies', async () => {
    const token = await sign(rsa, { iss: ISS, sub: 's' });
    const a = authn([rule({ fromParams: ['jwt'], fromCookies: ['session'] })]);
    const p = expectOk(await a.authenticate({}, `jwt=${encodeURIComponent(token)}`));
    expect(p.removeParams).toEqual(['jwt']);
    const c = expectOk(await a.authenticate({ cookie: `theme=dark; session="${token}"` }, ''));
    // Envoy leaves cookies in place.
    expect(c.removeHeaders).toEqual([]);
    expectOk(await a.authenticate({ cookie: ['a=b', `session=${token}`] }, ''));
    expect(await a.authenticate(bearer(token), '')).toMatchObject({ kind: 'none' });
  });

  it('a token is only considered by rules that list where it was found', async () => {
    const a = authn([
      rule({ fromHeaders: [{ name: 'x-a', prefix: '' }] }),
      rule({ issuer: ISS_B, jwks: jwksOf(rsaB), source: 'default/b' }),
    ]);
    const tokenA = await sign(rsa, { iss: ISS, sub: 'a' });
    const tokenB = await sign(rsaB, { iss: ISS_B, sub: 'b' });
    expect(expectOk(await a.authenticate({ 'x-a': tokenA }, '')).principal).toBe(`${ISS}/a`);
    expect(expectOk(await a.authenticate(bearer(tokenB), '')).rule).toBe('default/b');
    // Issuer B's token in issuer A's header: no rule for that issuer lists x-a.
    expectInvalid(await a.authenticate({ 'x-a': tokenB }, ''), JWT_STATUS.unknownIssuer);
    // Issuer A's token in the default header: rule A does not use it.
    expectInvalid(await a.authenticate(bearer(tokenA), ''), JWT_STATUS.unknownIssuer);
  });

  it('rules sharing a location: a token matching ANY rule issuer is accepted', async () => {
    const a = authn([rule(), rule({ issuer: ISS_B, jwks: jwksOf(rsaB), source: 'default/b' })]);
    expect(
      expectOk(await a.authenticate(bearer(await sign(rsaB, { iss: ISS_B, sub: 'b' })), '')).principal,
    ).toBe(`${ISS_B}/b`);
    expect(
      expectOk(await a.authenticate(bearer(await sign(rsa, { iss: ISS, sub: 'a' })), '')).principal,
    ).toBe(`${ISS}/a`);
    // The failure reported is the one from the token's own issuer, not "issuer is not configured".
    const expired = await sign(rsaB, { iss: ISS_B, sub: 'b' }, { expIn: -600 });
    expect(await a.authenticate(bearer(expired), '')).toMatchObject({
      message: JWT_STATUS.expired,
      rule: 'default/b',
    });
  });
});

describe('several tokens', () => {
  it('every token at a rule’s locations must be valid', async () => {
    const good = await sign(rsa, { iss: ISS, sub: 'a' });
    const bad = await sign(other, { iss: ISS, sub: 'a' });
    const a = authn([rule()]);
    expectInvalid(await a.authenticate(bearer(good), `access_token=${bad}`), JWT_STATUS.verificationFail);
    expectInvalid(
      await a.authenticate({ authorization: [`Bearer ${good}`, `Bearer ${bad}`] }, ''),
      JWT_STATUS.verificationFail,
    );
  });

  it('several valid tokens: the first (headers before params) gives the identity', async () => {
    const a = authn([rule()]);
    const r = expectOk(
      await a.authenticate(
        bearer(await sign(rsa, { iss: ISS, sub: 'hdr' })),
        `access_token=${await sign(ec, { iss: ISS, sub: 'param' })}`,
      ),
    );
    expect(r.subject).toBe('hdr');
    expect(r.removeHeaders).toEqual(['authorization']);
    expect(r.removeParams).toEqual(['access_token']);
  });

  it('Istio accepts the request when one rule validates all of its tokens, even with junk at another rule’s location', async () => {
    const a = authn([
      rule({ fromHeaders: [{ name: 'x-a', prefix: '' }] }),
      rule({
        issuer: ISS_B,
        jwks: jwksOf(rsaB),
        fromHeaders: [{ name: 'x-b', prefix: '' }],
        source: 'default/b',
      }),
    ]);
    const r = expectOk(
      await a.authenticate({ 'x-a': await sign(rsa, { iss: ISS, sub: 'a' }), 'x-b': 'junk' }, ''),
    );
    expect(r.principal).toBe(`${ISS}/a`);
    expectInvalid(await a.authenticate({ 'x-a': 'junk', 'x-b': 'junk' }, ''), JWT_STATUS.badFormat);
  });
});

describe('forwarding edits', () => {
  it('forwardOriginalToken=false removes the token header; true keeps it', async () => {
    const token = await sign(rsa, { iss: ISS, sub: 's' });
    expect(expectOk(await authn([rule()]).authenticate(bearer(token), '')).removeHeaders).toEqual([
      'authorization',
    ]);
    const kept = expectOk(
      await authn([rule({ forwardOriginalToken: true })]).authenticate(
        bearer(token),
        `access_token=${token}`,
      ),
    );
    expect(kept.removeHeaders).toEqual([]);
    expect(kept.removeParams).toEqual([]);
  });

  it('outputPayloadToHeader carries the base64url payload; clients cannot forge it', async () => {
    const token = await sign(rsa, { iss: ISS, sub: 's', role: 'admin' });
    const a = authn([rule({ outputPayloadToHeader: 'X-Jwt-Payload', forwardOriginalToken: true })]);
    const r = expectOk(await a.authenticate({ ...bearer(token), 'x-jwt-payload': 'forged' }, ''));
    expect(r.removeHeaders).toEqual(['x-jwt-payload']);
    expect(r.setHeaders).toEqual([['x-jwt-payload', token.split('.')[1]]]);
    expect(JSON.parse(Buffer.from(r.setHeaders[0]![1], 'base64url').toString())).toMatchObject({
      role: 'admin',
    });
    // Sanitized even when the request has no token.
    expect(await a.authenticate({ 'x-jwt-payload': 'forged' }, '')).toEqual({
      kind: 'none',
      removeHeaders: ['x-jwt-payload'],
    });
  });

  it('outputClaimToHeaders copies primitive claims, nested with "."', async () => {
    const token = await sign(rsa, {
      iss: ISS,
      sub: 'alice',
      org: { team: 'mesh' },
      level: 3,
      ratio: 0.5,
      admin: true,
      groups: ['a'],
      evil: 'x\r\ninjected: 1',
      empty: '',
    });
    const a = authn([
      rule({
        outputClaimToHeaders: [
          { header: 'x-sub', claim: 'sub' },
          { header: 'x-team', claim: 'org.team' },
          { header: 'x-level', claim: 'level' },
          { header: 'x-ratio', claim: 'ratio' },
          { header: 'x-admin', claim: 'admin' },
          { header: 'x-groups', claim: 'groups' },
          { header: 'x-evil', claim: 'evil' },
          { header: 'x-empty', claim: 'empty' },
          { header: 'x-missing', claim: 'nope' },
          { header: 'bad header', claim: 'sub' },
        ],
      }),
    ]);
    expect(a.errors.map((e) => e.message)).toEqual([
      'outputClaimToHeaders: invalid header name "bad header"',
    ]);
    const r = expectOk(await a.authenticate(bearer(token), ''));
    expect(r.setHeaders).toEqual([
      ['x-sub', 'alice'],
      ['x-team', 'mesh'],
      ['x-level', '3'],
      ['x-ratio', '0.500000'],
      ['x-admin', 'true'],
    ]);
    expect(r.removeHeaders).toEqual(
      expect.arrayContaining(['x-sub', 'x-team', 'x-evil', 'x-missing', 'authorization']),
    );
  });

  it('applyJwtHeaderEdits and stripQueryParams', () => {
    const headers: Record<string, string | string[] | undefined> = {
      authorization: 'Bearer t',
      'x-a': 'forged',
      keep: '1',
    };
    applyJwtHeaderEdits(headers, {
      kind: 'ok',
      rule: 'r',
      principal: 'i/s',
      issuer: 'i',
      subject: 's',
      audiences: [],
      presenter: null,
      claims: {},
      removeHeaders: ['authorization', 'x-a'],
      removeParams: [],
      setHeaders: [['x-a', 'real']],
    });
    expect(headers).toEqual({ keep: '1', 'x-a': 'real' });
    expect(stripQueryParams('/p?access_token=t&x=1&access_token=u#f', ['access_token'])).toBe('/p?x=1#f');
    expect(stripQueryParams('/p?access%5Ftoken=t', ['access_token'])).toBe('/p');
    expect(stripQueryParams('/p?x=1', [])).toBe('/p?x=1');
    expect(stripQueryParams('/p', ['a'])).toBe('/p');
  });
});

describe('www-authenticate (Envoy format)', () => {
  it('builds the realm from the original request URL', () => {
    const url = jwtRealmUri('http', 'productpage:9080', '/productpage?u=1');
    expect(url).toBe('http://productpage:9080/productpage?u=1');
    expect(wwwAuthenticate(url)).toBe(
      'Bearer realm="http://productpage:9080/productpage?u=1", error="invalid_token"',
    );
    expect(wwwAuthenticate(url, { missing: true })).toBe(
      'Bearer realm="http://productpage:9080/productpage?u=1"',
    );
  });

  it('truncates the path to 256 characters and cannot be broken by quotes', () => {
    expect(jwtRealmUri('https', 'h', `/${'a'.repeat(400)}`)).toBe(`https://h/${'a'.repeat(255)}`);
    expect(wwwAuthenticate('http://h/a"b\\c')).toBe(
      'Bearer realm="http://h/a%22b%5Cc", error="invalid_token"',
    );
  });
});

describe('never logs tokens', () => {
  it('no token or signature reaches the log, whatever fails', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, cb) {
        lines.push(String(chunk));
        cb();
      },
    });
    const logger = pino({ level: 'trace' }, sink);
    const dead = await jwksServer('');
    const url = dead.url;
    await dead.close();
    const a = authn([rule(), rule({ issuer: ISS_B, jwks: '', jwksUri: url, jwksFetchTimeoutMs: 300 })], {
      logger,
    });
    const tokens = [
      await sign(rsa, { iss: ISS, sub: 's' }),
      await sign(other, { iss: ISS, sub: 's' }),
      await sign(rsaB, { iss: ISS_B, sub: 's' }),
    ];
    for (const t of tokens) await a.authenticate(bearer(t), `access_token=${t}`);
    expect(lines.length).toBeGreaterThan(0);
    const all = lines.join('\n');
    for (const t of tokens) {
      expect(all).not.toContain(t);
      expect(all).not.toContain(t.slice(t.lastIndexOf('.') + 1));
    }
  });
});

describe('C11: RequestAuthentication + ALLOW when request.auth.claims[iss]', () => {
  // The Istio task's shape: issuer + inline JWKS (RS256), policy requiring the issuer claim.
  const ISSUER = 'testing@secure.istio.io';
  const policies = () =>
    compileL7Policies(
      [
        {
          name: 'require-jwt',
          namespace: 'default',
          action: AuthzPolicy_Action.ALLOW,
          dryRun: false,
          rules: [
            {
              from: [],
              to: [],
              when: [{ key: 'request.auth.claims[iss]', values: [ISSUER], notValues: [] }],
            },
          ],
        },
      ],
      { trustDomain: 'cluster.local' },
    ).policies;

  /** What the waypoint does per request: authenticate, then authorize, then answer. */
  async function handle(a: JwtAuthenticator, headers: Record<string, string>, path: string) {
    const q = path.indexOf('?');
    const result = await a.authenticate(headers, q === -1 ? '' : path.slice(q + 1));
    if (result.kind === 'invalid')
      return {
        status: result.status,
        body: result.message,
        wwwAuthenticate: wwwAuthenticate(jwtRealmUri('http', 'productpage:9080', path)),
      };
    const decision = evaluateL7(policies(), {
      sourcePrincipal: 'cluster.local/ns/default/sa/sleep',
      sourceIp: parseIp('10.1.1.9'),
      remoteIp: null,
      destinationIp: parseIp('10.96.0.5'),
      destinationPort: 9080,
      host: 'productpage:9080',
      method: 'GET',
      path,
      headers,
      requestAuth: result.kind === 'ok' ? result : null,
      sni: null,
    });
    return decision.allowed
      ? { status: 200, body: 'ok', wwwAuthenticate: null }
      : { status: RBAC_DENIED_STATUS, body: RBAC_DENIED_BODY, wwwAuthenticate: null };
  }

  it('no token → 403, valid token → 200, corrupted token → 401 with www-authenticate', async () => {
    const key = await testKey('RS256', 'istio-demo');
    const a = authn([rule({ issuer: ISSUER, jwks: jwksOf(key), source: 'default/jwt-example' })]);
    const token = await sign(key, { iss: ISSUER, sub: ISSUER, groups: ['group1'] }, { expIn: 3600 });

    expect(await handle(a, {}, '/productpage')).toEqual({
      status: 403,
      body: 'RBAC: access denied',
      wwwAuthenticate: null,
    });
    expect(await handle(a, bearer(token), '/productpage')).toEqual({
      status: 200,
      body: 'ok',
      wwwAuthenticate: null,
    });
    expect(await handle(a, bearer(`${token.slice(0, -4)}AAAA`), '/productpage')).toEqual({
      status: 401,
      body: 'Jwt verification fails',
      wwwAuthenticate: 'Bearer realm="http://productpage:9080/productpage", error="invalid_token"',
    });
    // A token from an issuer the policy does not name but the RequestAuthentication does not know either.
    const stranger = await testKey('RS256', 'x');
    expect(
      await handle(a, bearer(await sign(stranger, { iss: 'someone-else', sub: 'x' })), '/productpage'),
    ).toMatchObject({
      status: 401,
      body: 'Jwt issuer is not configured',
    });
  });
});
