/**
 * The Gateway API conformance echo backend (the contract in shared/conformance/gateway-api/README.md, the same
 * behaviour as the suite's `echo-basic` image):
 *   - HTTP/1.1 on HTTP_PORT (3000); any path → 200 JSON `{path, host, method, proto, headers, namespace,
 *     ingress, service, pod, sni}` with Go-canonical header names, values as arrays, no Host;
 *   - h2c on H2C_PORT (3001): HTTP/2 with prior knowledge; an HTTP/1.1 request there must ask for `Upgrade: h2c`
 *     (it is then answered over HTTP/1.1: the upgrade itself is not performed) or gets 400;
 *   - HTTPS on HTTPS_PORT (8443, HTTP/2 or HTTP/1.1 by ALPN) when TLS_SERVER_CERT and TLS_SERVER_PRIVKEY
 *     name PEM files (TLS_CLIENT_CACERTS optional: client certificates are then requested and echoed);
 *   - `X-Echo-Set-Header: Name:value,Name2:value2` → response headers (repeats joined with `,`);
 *   - `?delay=1s` (Go duration) delays the answer; `/status/NNN` answers NNN; `/health` → `OK`;
 *   - `/retry/...?uuid=U&succeedAfter=N[&responseCode=C]`: the first N attempts of U answer C, or reset the
 *     connection when there is no C (HTTP/2: reset the stream); later attempts echo;
 *   - `/ws`: WebSocket echo;
 *   - one log line per echoed request: `Echoing back request made to <URI> to client (<addr>)`.
 *
 * Env: HTTP_PORT, H2C_PORT, HTTPS_PORT, POD_NAME, NAMESPACE, INGRESS_NAME, SERVICE_NAME, TLS_SERVER_CERT,
 * TLS_SERVER_PRIVKEY, TLS_CLIENT_CACERTS, BIND_ADDRESS.
 */
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import {
  createServer as createH2Server,
  createSecureServer,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type Http2Session,
  constants as h2constants,
} from 'node:http2';
import { createServer as createNetServer, type Server, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { optionalStr, str } from '../../pkg/config/index.ts';
import type { Drainable } from '../../pkg/drain/index.ts';
import { describeError } from '../../pkg/errors/index.ts';
import type { Logger } from '../../pkg/telemetry/index.ts';
import { bindAddress, listen, portFromEnv, remoteAddr, runMain, startRuntime } from '../lib/runtime.ts';
import { canonicalHeaderKey, goJson, parseGoDuration } from './go-compat.ts';
import { acceptWebSocket } from './websocket.ts';

/** uuids remembered for `/retry`; the oldest are forgotten beyond this (a conformance run uses dozens). */
const MAX_RETRY_KEYS = 10_000;
/** Longest `?delay` honoured, so a typo cannot pin a request (and the drain) for hours. */
const MAX_DELAY_MS = 5 * 60_000;
/** The HTTP/2 connection preface starts with these bytes; nothing HTTP/1 does. */
const H2_PREFACE_START = Buffer.from('PRI ');

interface Context {
  readonly namespace: string;
  readonly ingress: string;
  readonly service: string;
  readonly pod: string;
}

/** The request as the echo sees it, whatever the transport. */
interface EchoRequest {
  readonly method: string;
  /** The request target as sent (`RequestURI`). */
  readonly uri: string;
  readonly host: string;
  readonly proto: string;
  readonly headers: Record<string, string[]>;
  readonly remote: string;
  readonly tls: TlsInfo | null;
  /** Abort the exchange without an HTTP answer: TCP RST for HTTP/1, RST_STREAM for HTTP/2. */
  reset(): void;
}

interface TlsInfo {
  readonly version: string;
  readonly peerCertificates?: string[];
  readonly serverName: string;
  readonly negotiatedProtocol?: string;
  readonly cipherSuite: string;
}

/** What the echo needs of an HTTP/1 or HTTP/2 response. */
interface AnyResponse {
  setHeader(name: string, value: string): unknown;
  writeHead(status: number): unknown;
  end(body: string): unknown;
  readonly writableEnded: boolean;
  readonly destroyed: boolean;
}

/** Header map from raw name/value pairs: canonical names, repeated headers as more values, no Host. */
export function echoHeaders(rawHeaders: readonly string[], http2: boolean): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const raw = rawHeaders[i] ?? '';
    if (raw.startsWith(':')) continue;
    const name = canonicalHeaderKey(raw);
    // Go moves Host to Request.Host and Transfer-Encoding/Trailer to their own fields.
    if (name === 'Host' || name === 'Transfer-Encoding' || name === 'Trailer') continue;
    const list = out[name] ?? [];
    list.push(rawHeaders[i + 1] ?? '');
    out[name] = list;
  }
  // HTTP/2 may split Cookie into several fields; Go's server joins them back with "; ".
  const cookie = out.Cookie;
  if (http2 && cookie && cookie.length > 1) out.Cookie = [cookie.join('; ')];
  return out;
}

function pem(der: Buffer): string {
  const b64 = der.toString('base64').replace(/.{64}/g, '$&\n');
  return `-----BEGIN CERTIFICATE-----\n${b64}${b64.endsWith('\n') ? '' : '\n'}-----END CERTIFICATE-----\n`;
}

function tlsInfo(socket: Socket | TLSSocket): TlsInfo | null {
  if (!('encrypted' in socket) || !socket.encrypted) return null;
  const tls = socket as TLSSocket;
  const peer = tls.getPeerCertificate(true);
  const chain: string[] = [];
  let cert = peer && 'raw' in peer ? peer : null;
  const seen = new Set<unknown>();
  while (cert?.raw && !seen.has(cert)) {
    seen.add(cert);
    chain.push(pem(cert.raw));
    cert = cert.issuerCertificate && cert.issuerCertificate !== cert ? cert.issuerCertificate : null;
  }
  const servername = (tls as TLSSocket & { servername?: string | false }).servername;
  const info: TlsInfo = {
    version: tls.getProtocol() ?? '',
    serverName: typeof servername === 'string' ? servername : '',
    cipherSuite: tls.getCipher()?.standardName ?? '',
    ...(chain.length > 0 ? { peerCertificates: chain } : {}),
    ...(tls.alpnProtocol ? { negotiatedProtocol: tls.alpnProtocol } : {}),
  };
  return info;
}

function fromHttp1(req: IncomingMessage): EchoRequest {
  return {
    method: req.method ?? 'GET',
    uri: req.url ?? '/',
    host: req.headers.host ?? '',
    proto: `HTTP/${req.httpVersion}`,
    headers: echoHeaders(req.rawHeaders, false),
    remote: remoteAddr(req.socket),
    tls: tlsInfo(req.socket),
    reset: () => req.socket.resetAndDestroy(),
  };
}

function fromHttp2(req: Http2ServerRequest): EchoRequest {
  const authority = req.headers[':authority'];
  const host = typeof authority === 'string' ? authority : (req.headers.host ?? '');
  return {
    method: req.method,
    uri: req.url,
    host: typeof host === 'string' ? host : '',
    proto: 'HTTP/2.0',
    headers: echoHeaders(req.rawHeaders, true),
    remote: remoteAddr(req.socket),
    tls: tlsInfo(req.socket),
    reset: () => req.stream.close(h2constants.NGHTTP2_INTERNAL_ERROR),
  };
}

function sendText(res: AnyResponse, status: number, type: string | null, body: string): void {
  if (type !== null) res.setHeader('Content-Type', type);
  res.setHeader('Content-Length', String(Buffer.byteLength(body)));
  res.writeHead(status);
  res.end(body);
}

/** Route path as Go's mux sees it: decoded path with doubled slashes collapsed (echo-basic's preserveSlashes). */
function routePath(uri: string): string {
  const path = uri.startsWith('/') ? (uri.split('?')[0] ?? '/') : new URL(uri, 'http://x').pathname;
  let decoded = path;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    // keep the raw path
  }
  return decoded.replaceAll('//', '/');
}

function query(uri: string): URLSearchParams {
  const q = uri.indexOf('?');
  return new URLSearchParams(q === -1 ? '' : uri.slice(q + 1));
}

class Echo {
  private readonly ctx: Context;
  private readonly log: Logger;
  private readonly retries = new Map<string, number>();

  constructor(ctx: Context, log: Logger) {
    this.ctx = ctx;
    this.log = log;
  }

  /** Port HTTP_PORT / HTTPS_PORT. */
  readonly http1 = (req: IncomingMessage, res: ServerResponse): void => {
    req.resume();
    this.serve(fromHttp1(req), res);
  };

  /** HTTP/2 streams on any port. */
  readonly http2 = (req: Http2ServerRequest, res: Http2ServerResponse): void => {
    req.resume();
    this.serve(fromHttp2(req), res);
  };

  /** HTTPS: HTTP/2 or HTTP/1.1, whichever ALPN chose. */
  readonly either = (
    req: IncomingMessage | Http2ServerRequest,
    res: ServerResponse | Http2ServerResponse,
  ): void => {
    if (req.httpVersionMajor === 2) this.http2(req as Http2ServerRequest, res as Http2ServerResponse);
    else this.http1(req as IncomingMessage, res as ServerResponse);
  };

  /** HTTP/1 on the h2c port: only an `Upgrade: h2c` request is served (over HTTP/1.1). */
  readonly h2cFallback = (req: IncomingMessage, res: ServerResponse): void => {
    req.resume();
    if ((req.headers.upgrade ?? '').toLowerCase() === 'h2c') this.echo(fromHttp1(req), res);
    else sendText(res, 400, 'text/plain; charset=utf-8', 'Expected h2c request');
  };

  /** WebSocket upgrades of `/ws` (the only ones `shouldUpgradeCallback` lets through). */
  readonly upgrade = (req: IncomingMessage, socket: Socket, head: Buffer): void => {
    const remote = remoteAddr(socket);
    this.log.info({ remote }, 'established websocket connection');
    acceptWebSocket(req, socket, head, () => this.log.info({ remote }, 'websocket connection closed'));
  };

  private serve(req: EchoRequest, res: AnyResponse): void {
    const path = routePath(req.uri);
    if (path === '/health') sendText(res, 200, 'text/plain; charset=utf-8', 'OK');
    else if (path.startsWith('/status/')) this.status(req, res);
    else if (!((path === '/retry' || path.startsWith('/retry/')) && this.failRetry(req, res)))
      this.echo(req, res);
  }

  /** `/status/NNN` (exactly, no query) answers NNN; anything else under `/status/` is a 400. */
  private status(req: EchoRequest, res: AnyResponse): void {
    const m = /^\/status\/(\d\d\d)$/.exec(req.uri);
    const code = m ? Number(m[1]) : 400;
    // Go sends an informational 1xx and then 200; answer the final 200 directly.
    sendText(res, Math.max(code, 200), null, '');
  }

  /** Fails this `/retry` attempt on purpose when its uuid has not yet failed `succeedAfter` times. */
  private failRetry(req: EchoRequest, res: AnyResponse): boolean {
    const q = query(req.uri);
    const uuid = q.get('uuid');
    const succeedAfter = Number(q.get('succeedAfter') ?? '0');
    if (!uuid || !Number.isInteger(succeedAfter) || succeedAfter <= 0) return false;
    const attempt = (this.retries.get(uuid) ?? 0) + 1;
    this.remember(uuid, attempt);
    if (attempt > succeedAfter) return false;
    const code = Number(q.get('responseCode') ?? '');
    this.log.info(
      { uri: req.uri, uuid, attempt, succeedAfter, responseCode: code || null },
      'retry: failing',
    );
    if (Number.isInteger(code) && code >= 200 && code <= 999) sendText(res, code, null, '');
    else req.reset();
    return true;
  }

  private remember(uuid: string, attempt: number): void {
    this.retries.delete(uuid);
    if (this.retries.size >= MAX_RETRY_KEYS) {
      const oldest = this.retries.keys().next();
      if (!oldest.done) this.retries.delete(oldest.value);
    }
    this.retries.set(uuid, attempt);
  }

  private echo(req: EchoRequest, res: AnyResponse): void {
    this.log.info(
      { uri: req.uri, method: req.method, proto: req.proto, remote: req.remote },
      `Echoing back request made to ${req.uri} to client (${req.remote})`,
    );
    const delay = query(req.uri).get('delay');
    if (delay !== null && delay !== '') {
      const ms = parseGoDuration(delay);
      if (ms === null) {
        const message = `time: invalid duration ${JSON.stringify(delay)}`;
        sendText(res, 500, 'application/json', JSON.stringify({ message }));
        return;
      }
      if (ms > 0) {
        setTimeout(() => this.answer(req, res), Math.min(ms, MAX_DELAY_MS));
        return;
      }
    }
    this.answer(req, res);
  }

  private answer(req: EchoRequest, res: AnyResponse): void {
    if (res.writableEnded || res.destroyed) return;
    const body = goJson({
      path: req.uri,
      host: req.host,
      method: req.method,
      proto: req.proto,
      headers: Object.fromEntries(
        Object.entries(req.headers).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
      ),
      namespace: this.ctx.namespace,
      ingress: this.ctx.ingress,
      service: this.ctx.service,
      pod: this.ctx.pod,
      ...(req.tls ? { tls: req.tls } : {}),
      sni: req.tls && req.uri.includes('backendTLS') ? req.tls.serverName : '',
    });
    this.setEchoHeaders(res, req.headers['X-Echo-Set-Header'] ?? []);
    res.setHeader('X-Content-Type-Options', 'nosniff');
    sendText(res, 200, 'application/json', body);
  }

  /** `Name:value` pairs, comma separated; a repeated name appends `,value` to the first. */
  private setEchoHeaders(res: AnyResponse, values: readonly string[]): void {
    const set = new Map<string, string>();
    for (const list of values) {
      for (const pair of list.split(',')) {
        const trimmed = pair.trim();
        const colon = trimmed.indexOf(':');
        const name = colon === -1 ? trimmed : trimmed.slice(0, colon);
        const value = colon === -1 ? '' : trimmed.slice(colon + 1).trim();
        if (name === '') continue;
        const prev = set.get(name);
        set.set(name, prev === undefined ? value : `${prev},${value}`);
      }
    }
    for (const [name, value] of set) {
      try {
        res.setHeader(name, value);
      } catch (err) {
        this.log.warn({ header: name, err: describeError(err) }, 'X-Echo-Set-Header: header not settable');
      }
    }
  }
}

/**
 * The h2c port: one TCP listener that hands a connection to the HTTP/2 server when it opens with the HTTP/2
 * preface, else to an HTTP/1 server. Drained as one: stop accepting, GOAWAY the HTTP/2 sessions, close idle
 * HTTP/1 connections, wait for the rest.
 */
function h2cListener(echo: Echo): { server: Server; drainable: Drainable } {
  const h2 = createH2Server();
  h2.on('request', echo.http2);
  const h1 = createHttpServer({ shouldUpgradeCallback: () => false }, echo.h2cFallback);
  const sockets = new Set<Socket>();
  const sessions = new Set<Http2Session>();
  h2.on('session', (s: Http2Session) => {
    sessions.add(s);
    s.once('close', () => sessions.delete(s));
  });
  const server = createNetServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.once('data', (chunk: Buffer) => {
      socket.pause();
      socket.unshift(chunk);
      const n = Math.min(chunk.length, H2_PREFACE_START.length);
      const isH2 = chunk.subarray(0, n).equals(H2_PREFACE_START.subarray(0, n));
      if (isH2) {
        // Http2Session reads what is buffered on the socket when it takes the handle over.
        h2.emit('connection', socket);
      } else {
        h1.emit('connection', socket);
        socket.resume();
      }
    });
    socket.on('error', () => socket.destroy());
  });
  const drainable: Drainable = {
    name: 'h2c',
    drain: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sessions) s.close();
        h1.closeIdleConnections();
        // Connections that never sent a byte belong to neither server yet.
        for (const s of sockets) if (s.bytesRead === 0) s.destroy();
      }),
    forceClose: () => {
      for (const s of sockets) s.destroy();
      if (server.listening) server.close();
    },
  };
  return { server, drainable };
}

function readPem(path: string): Buffer {
  return readFileSync(path);
}

async function main(): Promise<void> {
  const env = process.env;
  const ctx: Context = {
    namespace: str(env, 'NAMESPACE', ''),
    ingress: str(env, 'INGRESS_NAME', ''),
    service: str(env, 'SERVICE_NAME', ''),
    pod: str(env, 'POD_NAME', ''),
  };
  const httpPort = portFromEnv(env, 'HTTP_PORT', 3000);
  const h2cPort = portFromEnv(env, 'H2C_PORT', 3001);
  const httpsPort = portFromEnv(env, 'HTTPS_PORT', 8443);
  const host = bindAddress(env);
  const runtime = startRuntime('echo', { pod: ctx.pod, namespace: ctx.namespace });
  const echo = new Echo(ctx, runtime.logger);

  const http = createHttpServer(
    {
      // Only /ws speaks WebSocket; any other upgrade request is echoed like a plain request, as Go's mux does.
      shouldUpgradeCallback: (req) =>
        (req.headers.upgrade ?? '').toLowerCase() === 'websocket' && routePath(req.url ?? '/') === '/ws',
    },
    echo.http1,
  );
  http.on('upgrade', echo.upgrade);
  await listen(http, { name: 'http', port: httpPort, host, runtime });

  const h2c = h2cListener(echo);
  await listen(h2c.server, { name: 'h2c', port: h2cPort, host, runtime, drainable: h2c.drainable });

  const certFile = optionalStr(env, 'TLS_SERVER_CERT');
  const keyFile = optionalStr(env, 'TLS_SERVER_PRIVKEY');
  if (certFile !== null && keyFile !== null) {
    // echo-basic panics on unreadable files; we keep serving plain HTTP (a crash-looping backend would block
    // every conformance case waiting for Ready pods) and say why HTTPS is missing.
    try {
      const caFile = optionalStr(env, 'TLS_CLIENT_CACERTS');
      const tls = createSecureServer(
        {
          cert: readPem(certFile),
          key: readPem(keyFile),
          allowHTTP1: true,
          ...(caFile !== null ? { ca: readPem(caFile), requestCert: true, rejectUnauthorized: false } : {}),
        },
        echo.either,
      );
      await listen(tls, { name: 'https', port: httpsPort, host, runtime });
    } catch (err) {
      runtime.logger.error(
        { code: 'MESH_ERR_CONFIG_INVALID', err: describeError(err), certFile, keyFile },
        'HTTPS listener not started',
      );
    }
  }
}

runMain('echo', main);
