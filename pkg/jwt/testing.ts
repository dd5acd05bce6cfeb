/**
 * Test helpers for pkg/jwt (imported by tests only): keys generated with jose, and a local HTTP server that
 * serves a JWKS with controllable behaviour.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type CryptoKey, exportJWK, generateKeyPair, type JWK, SignJWT } from 'jose';

export interface TestKey {
  readonly alg: string;
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly jwk: JWK;
}

export async function testKey(alg: string, kid: string): Promise<TestKey> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { alg, kid, privateKey, jwk };
}

export function jwksOf(...keys: Array<TestKey | JWK>): string {
  return JSON.stringify({ keys: keys.map((k) => ('jwk' in k ? k.jwk : k)) });
}

export interface SignOptions {
  readonly header?: Record<string, unknown>;
  /** Seconds from now; omitted = no exp. */
  readonly expIn?: number;
  readonly nbfIn?: number;
}

export async function sign(
  key: TestKey,
  payload: Record<string, unknown>,
  opts: SignOptions = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const body: Record<string, unknown> = { iat: now, ...payload };
  if (opts.expIn !== undefined) body.exp = now + opts.expIn;
  if (opts.nbfIn !== undefined) body.nbf = now + opts.nbfIn;
  return new SignJWT(body)
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT', ...opts.header })
    .sign(key.privateKey);
}

export type Handler = (req: IncomingMessage, res: ServerResponse) => void;

export interface TestJwksServer {
  readonly url: string;
  /** Requests served so far. */
  readonly hits: () => number;
  /** Replaces the behaviour for the next requests. */
  handle(h: Handler): void;
  /** Serves `body` as JSON with 200. */
  serve(body: string): void;
  close(): Promise<void>;
}

export async function jwksServer(initial: string): Promise<TestJwksServer> {
  let count = 0;
  let handler: Handler = () => {};
  const json =
    (body: string): Handler =>
    (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
  handler = json(initial);
  const server: Server = createServer((req, res) => {
    count++;
    handler(req, res);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/.well-known/jwks.json`,
    hits: () => count,
    handle: (h) => {
      handler = h;
    },
    serve: (body) => {
      handler = json(body);
    },
    close: async () => {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}
