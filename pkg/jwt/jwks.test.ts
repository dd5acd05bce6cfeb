import { generateKeyPairSync } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '../testing/index.ts';
import { JwksCache, parseJwks } from './jwks.ts';
import { jwksOf, jwksServer, type TestJwksServer, testKey } from './testing.ts';

describe('parseJwks', () => {
  it('accepts RSA, EC and Ed25519 public keys', async () => {
    const rsa = await testKey('RS256', 'r1');
    const ec = await testKey('ES256', 'e1');
    const ec384 = await testKey('ES384', 'e2');
    const ed = await testKey('EdDSA', 'd1');
    const { keys, errors } = parseJwks(jwksOf(rsa, ec, ec384, ed));
    expect(errors).toEqual([]);
    expect(keys.map((k) => [k.kid, k.kty, k.crv, k.alg])).toEqual([
      ['r1', 'RSA', null, 'RS256'],
      ['e1', 'EC', 'P-256', 'ES256'],
      ['e2', 'EC', 'P-384', 'ES384'],
      ['d1', 'OKP', 'Ed25519', 'EdDSA'],
    ]);
  });

  it.each([
    ['not JSON', 'nope', 'Jwks is an invalid JSON'],
    ['not an object', '[1]', 'Jwks is not a JSON object'],
    ['no keys', '{}', 'Jwks does not have [keys] field'],
    ['keys not an array', '{"keys":{}}', '[keys] in Jwks is not an array'],
    ['empty keys', '{"keys":[]}', "Jwks doesn't have any valid public key"],
  ])('rejects a document that is %s', (_n, text, error) => {
    expect(parseJwks(text)).toEqual({ keys: [], errors: [error] });
  });

  it('skips bad keys with a reason and keeps the good ones', async () => {
    const good = await testKey('RS256', 'good');
    const priv = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ format: 'jwk' });
    const p521 = generateKeyPairSync('ec', { namedCurve: 'P-521' }).publicKey.export({ format: 'jwk' });
    const ecPub = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' });
    const { keys, errors } = parseJwks(
      JSON.stringify({
        keys: [
          good.jwk,
          { ...priv, kid: 'private' },
          { kty: 'oct', k: 'c2VjcmV0', kid: 'hmac' },
          { ...small, kid: 'small' },
          { ...p521, kid: 'p521' },
          { ...ecPub, kid: 'wrong-alg', alg: 'ES384' },
          { ...ecPub, kid: 'enc', use: 'enc' },
          { kty: 'RSA', n: 'AAAA', e: 'AQAB', kid: 'garbage' },
          { kty: 'RSA', kid: 'no-n' },
          'not-a-key',
        ],
      }),
    );
    expect(keys.map((k) => k.kid)).toEqual(['good']);
    expect(errors).toHaveLength(9);
    expect(errors[0]).toMatch(
      /keys\[1\] \(kid "private"\): contains private or symmetric key material \("d"\)/,
    );
    expect(errors[1]).toMatch(/kid "hmac".*private or symmetric key material \("k"\)/);
    expect(errors[2]).toMatch(/kid "small".*RSA key is 1024 bits, shorter than 2048/);
    expect(errors[3]).toMatch(/kid "p521".*EC curve "P-521" is not supported/);
    expect(errors[4]).toMatch(/kid "wrong-alg".*"alg" ES384 does not fit curve P-256/);
    expect(errors[5]).toMatch(/kid "enc".*"use" is "enc", not "sig"/);
    expect(errors[6]).toMatch(/kid "garbage".*(invalid key material|RSA key is \d+ bits)/);
    expect(errors[7]).toMatch(/kid "no-n".*RSA key needs string "n" and "e"/);
    expect(errors[8]).toBe('keys[9]: not a JSON object');
  });
});

describe('JwksCache (jwksUri)', () => {
  let server: TestJwksServer | null = null;
  let cache: JwksCache | null = null;
  afterEach(async () => {
    cache?.close();
    cache = null;
    await server?.close();
    server = null;
  });

  it('fetches once on acquire and serves the cached set', async () => {
    const key = await testKey('RS256', 'k1');
    server = await jwksServer(jwksOf(key));
    cache = new JwksCache();
    cache.acquire(server.url, 2000);
    const keys = await cache.get(server.url);
    expect(keys?.map((k) => k.kid)).toEqual(['k1']);
    await cache.get(server.url);
    expect(server.hits()).toBe(1);
    expect(cache.status()).toEqual([
      { uri: server.url, keys: 1, fetchedAt: expect.any(Number), consecutiveFailures: 0, lastError: null },
    ]);
  });

  it('single-flight: concurrent requests share one fetch', async () => {
    const key = await testKey('ES256', 'k1');
    server = await jwksServer('');
    const body = jwksOf(key);
    server.handle((_req, res) => {
      setTimeout(() => res.end(body), 100);
    });
    cache = new JwksCache();
    cache.acquire(server.url, 2000);
    const all = await Promise.all(Array.from({ length: 20 }, () => cache!.get(server!.url)));
    expect(all.every((k) => k?.length === 1)).toBe(true);
    expect(server.hits()).toBe(1);
  });

  it('refreshes periodically and picks up rotated keys', async () => {
    const k1 = await testKey('RS256', 'k1');
    const k2 = await testKey('RS256', 'k2');
    server = await jwksServer(jwksOf(k1));
    cache = new JwksCache({ refreshIntervalMs: 50 });
    cache.acquire(server.url, 2000);
    expect((await cache.get(server.url))?.map((k) => k.kid)).toEqual(['k1']);
    server.serve(jwksOf(k1, k2));
    await eventually(() => expect(cache!.peek(server!.url)?.map((k) => k.kid)).toEqual(['k1', 'k2']), {
      timeoutMs: 3000,
    });
    expect(server.hits()).toBeGreaterThanOrEqual(2);
  });

  it('keeps the last good set when a refresh fails, and retries', async () => {
    const k1 = await testKey('RS256', 'k1');
    server = await jwksServer(jwksOf(k1));
    cache = new JwksCache({ refreshIntervalMs: 50, retryMinMs: 20 });
    cache.acquire(server.url, 2000);
    await cache.get(server.url);
    server.handle((_req, res) => {
      res.writeHead(503);
      res.end('down');
    });
    await eventually(() => expect(cache!.status()[0]?.consecutiveFailures).toBeGreaterThanOrEqual(2), {
      timeoutMs: 3000,
    });
    expect(cache.status()[0]?.lastError).toBe('HTTP status 503');
    expect((await cache.get(server.url))?.map((k) => k.kid)).toEqual(['k1']);
    server.serve(jwksOf(k1));
    await eventually(() => expect(cache!.status()[0]?.consecutiveFailures).toBe(0), { timeoutMs: 3000 });
  });

  it('a document without usable keys counts as a failure', async () => {
    const k1 = await testKey('RS256', 'k1');
    server = await jwksServer(jwksOf(k1));
    cache = new JwksCache({ refreshIntervalMs: 30 });
    cache.acquire(server.url, 2000);
    await cache.get(server.url);
    server.serve('{"keys":[{"kty":"oct","k":"AAAA"}]}');
    await eventually(() => expect(cache!.status()[0]?.lastError).toMatch(/private or symmetric/), {
      timeoutMs: 3000,
    });
    expect(cache.peek(server.url)?.map((k) => k.kid)).toEqual(['k1']);
  });

  it('returns null when no set could ever be fetched, and refetches on demand at most once per retryMinMs', async () => {
    server = await jwksServer('');
    server.handle((_req, res) => {
      res.writeHead(500);
      res.end();
    });
    let now = 1_000_000;
    cache = new JwksCache({ retryMinMs: 1000, now: () => now });
    cache.acquire(server.url, 2000);
    expect(await cache.get(server.url)).toBeNull();
    const hits = server.hits();
    expect(await cache.get(server.url)).toBeNull();
    expect(server.hits()).toBe(hits);
    now += 1000;
    expect(await cache.get(server.url)).toBeNull();
    expect(server.hits()).toBe(hits + 1);
  });

  it('bounds the response size', async () => {
    server = await jwksServer('');
    server.handle((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      // Chunked, no content-length: the cap applies while reading.
      res.write(`{"keys":[],"pad":"${'x'.repeat(4096)}`);
      res.end('"}');
    });
    cache = new JwksCache({ maxBytes: 1024 });
    cache.acquire(server.url, 2000);
    expect(await cache.get(server.url)).toBeNull();
    expect(cache.status()[0]?.lastError).toBe('response is more than the 1024 bytes allowed');
  });

  it('rejects an announced oversize body without reading it', async () => {
    server = await jwksServer(`{"keys":[],"pad":"${'x'.repeat(4096)}"}`);
    cache = new JwksCache({ maxBytes: 1024 });
    cache.acquire(server.url, 2000);
    expect(await cache.get(server.url)).toBeNull();
    expect(cache.status()[0]?.lastError).toMatch(/^response is \d+ bytes, more than the 1024 allowed$/);
  });

  it('times out a server that never answers', async () => {
    server = await jwksServer('');
    server.handle(() => {});
    cache = new JwksCache();
    cache.acquire(server.url, 200);
    const t0 = performance.now();
    expect(await cache.get(server.url)).toBeNull();
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(cache.status()[0]?.lastError).toBe('timed out after 200 ms');
  });

  it('release drops the entry when the last user goes', async () => {
    const k1 = await testKey('RS256', 'k1');
    server = await jwksServer(jwksOf(k1));
    cache = new JwksCache();
    cache.acquire(server.url, 2000);
    cache.acquire(server.url, 2000);
    await cache.get(server.url);
    cache.release(server.url);
    expect(cache.status()).toHaveLength(1);
    cache.release(server.url);
    expect(cache.status()).toEqual([]);
    expect(await cache.get(server.url)).toBeNull();
  });
});
