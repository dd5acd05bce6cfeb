/**
 * Wire-level interop: our HBONE server against an HTTP/2 client that is NOT Node's http2 module (nghttp2).
 * Debian's tools cannot drive a CONNECT tunnel (curl refuses CONNECT over h2 prior knowledge; nghttp/h2load
 * are request tools, and nghttp2-client is not installed here), so the client is test-raw-h2.ts: TLS from
 * node:tls, frames and HPACK by hand. It proves what a foreign HBONE client (e.g. Rust ztunnel's h2 crate)
 * relies on: ALPN h2, our SETTINGS and connection WINDOW_UPDATE, a CONNECT with only `:method` and
 * `:authority` answered 200, DATA both ways, END_STREAM as a half-close, 400 for a bad authority, and a
 * protocol-violating CONNECT (with `:path`) reset without disturbing the connection.
 */
import type { AddressInfo, Server } from 'node:net';
import { type TLSSocket, connect as tlsConnect } from 'node:tls';
import { afterEach, describe, expect, it } from 'vitest';
import { mtlsContextOptions, spiffeServerCheck } from '../tls/index.ts';
import type { HboneServer } from './server.ts';
import {
  CONNECTION_WINDOW_SIZE,
  MAX_FRAME_SIZE,
  SERVER_MAX_CONCURRENT_STREAMS,
  STREAM_WINDOW_SIZE,
} from './settings.ts';
import { CLIENT_ID, certFor, FakeCa, SERVER_ID, startServer, tcpServer } from './test-fixtures.ts';
import {
  encodeFrame,
  encodeHeaders,
  FLAG,
  FRAME,
  FrameReader,
  HpackDecoder,
  PREFACE,
  parseSettings,
  SETTING,
} from './test-raw-h2.ts';

const ca = new FakeCa();
const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

describe('HBONE interop with a hand-written HTTP/2 client', () => {
  it('follows the wire rules for CONNECT tunnels', async () => {
    // Backend: waits for the client's FIN, then answers and closes (checks the half-close end to end).
    const backend = await tcpServer((s) => {
      const parts: Buffer[] = [];
      s.on('data', (d: Buffer) => parts.push(d));
      s.on('end', () => s.end(`echo:${Buffer.concat(parts).toString()}`));
    });
    const { server, port } = await startServer(ca);
    cleanups.push(
      () => (server as HboneServer).forceClose(),
      () => (backend.server as Server).close(),
    );

    const client = certFor(ca, CLIENT_ID);
    const socket: TLSSocket = tlsConnect({
      host: '127.0.0.1',
      port,
      ...mtlsContextOptions(client),
      ALPNProtocols: ['h2'],
      checkServerIdentity: spiffeServerCheck([SERVER_ID]),
    });
    cleanups.push(() => socket.destroy());
    await new Promise((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
    expect(socket.alpnProtocol).toBe('h2');
    expect(socket.getProtocol()).toBe('TLSv1.3');
    const frames = new FrameReader(socket);
    const hpack = new HpackDecoder();

    socket.write(Buffer.concat([PREFACE, encodeFrame(FRAME.SETTINGS, 0, 0)]));
    const settings = await frames.until((f) => f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) === 0);
    const values = parseSettings(settings.payload);
    expect(values.get(SETTING.INITIAL_WINDOW_SIZE)).toBe(STREAM_WINDOW_SIZE);
    expect(values.get(SETTING.MAX_FRAME_SIZE)).toBe(MAX_FRAME_SIZE);
    expect(values.get(SETTING.MAX_CONCURRENT_STREAMS)).toBe(SERVER_MAX_CONCURRENT_STREAMS);
    socket.write(encodeFrame(FRAME.SETTINGS, FLAG.ACK, 0));
    // The connection window is raised beyond the 65535 default with a WINDOW_UPDATE on stream 0.
    const wu = await frames.until((f) => f.type === FRAME.WINDOW_UPDATE && f.stream === 0);
    expect(65_535 + (wu.payload.readUInt32BE(0) & 0x7fffffff)).toBe(CONNECTION_WINDOW_SIZE);

    // Stream 1: CONNECT with exactly :method and :authority (RFC 9113 §8.5).
    const authority = `127.0.0.1:${(backend.server.address() as AddressInfo).port}`;
    socket.write(
      encodeFrame(
        FRAME.HEADERS,
        FLAG.END_HEADERS,
        1,
        encodeHeaders([
          [':method', 'CONNECT'],
          [':authority', authority],
        ]),
      ),
    );
    const resp = await frames.until((f) => f.type === FRAME.HEADERS && f.stream === 1);
    expect(hpack.decode(resp.payload)).toContainEqual([':status', '200']);
    expect(resp.flags & FLAG.END_STREAM).toBe(0);

    // DATA out, then END_STREAM (our half-close); the backend answers only after seeing the FIN.
    socket.write(encodeFrame(FRAME.DATA, 0, 1, Buffer.from('hello over raw h2')));
    socket.write(encodeFrame(FRAME.DATA, FLAG.END_STREAM, 1));
    const received: Buffer[] = [];
    for (;;) {
      const f = await frames.until(
        (x) => x.stream === 1 && (x.type === FRAME.DATA || x.type === FRAME.RST_STREAM),
      );
      expect(f.type).toBe(FRAME.DATA);
      received.push(f.payload);
      if (f.flags & FLAG.END_STREAM) break;
    }
    expect(Buffer.concat(received).toString()).toBe('echo:hello over raw h2');

    // Stream 3: an authority that is not IP:port → 400 with END_STREAM.
    socket.write(
      encodeFrame(
        FRAME.HEADERS,
        FLAG.END_HEADERS,
        3,
        encodeHeaders([
          [':method', 'CONNECT'],
          [':authority', 'not-an-ip:80'],
        ]),
      ),
    );
    const bad = await frames.until((f) => f.type === FRAME.HEADERS && f.stream === 3);
    expect(hpack.decode(bad.payload)).toContainEqual([':status', '400']);
    expect(bad.flags & FLAG.END_STREAM).toBe(FLAG.END_STREAM);

    // Stream 5: CONNECT carrying :path/:scheme is malformed (no extended CONNECT here) → RST_STREAM.
    socket.write(
      encodeFrame(
        FRAME.HEADERS,
        FLAG.END_HEADERS | FLAG.END_STREAM,
        5,
        encodeHeaders([
          [':method', 'CONNECT'],
          [':scheme', 'https'],
          [':path', '/'],
          [':authority', authority],
        ]),
      ),
    );
    const rst = await frames.until((f) => f.stream === 5);
    expect(rst.type).toBe(FRAME.RST_STREAM);
    expect(rst.payload.readUInt32BE(0)).toBe(0x1); // PROTOCOL_ERROR

    // The connection is still healthy: PING is answered.
    const opaque = Buffer.from('raw-ping');
    socket.write(encodeFrame(FRAME.PING, 0, 0, opaque));
    const pong = await frames.until((f) => f.type === FRAME.PING && (f.flags & FLAG.ACK) !== 0);
    expect(pong.payload.equals(opaque)).toBe(true);
    expect(server.stats.accepted).toBe(1);
    expect(server.stats.rejected[400]).toBe(1);

    socket.write(encodeFrame(FRAME.GOAWAY, 0, 0, Buffer.alloc(8)));
    socket.end();
  });
});
