/**
 * A minimal RFC 6455 WebSocket echo for the echo backend's `/ws` (Gateway API
 * `HTTPRouteBackendProtocolWebSocket`: a text frame and a binary frame must come back unchanged). Every data
 * frame is sent back with the same opcode and FIN bit, pings get pongs, a close is answered and ends the
 * connection. No extensions (permessage-deflate is not offered back, so clients send plain frames).
 */
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
/** Largest frame payload accepted; the conformance test sends a few bytes. */
export const MAX_FRAME_BYTES = 16 * 1024 * 1024;

const OP_CONTINUATION = 0x0;
const OP_TEXT = 0x1;
const OP_BINARY = 0x2;
const OP_CLOSE = 0x8;
const OP_PING = 0x9;
const OP_PONG = 0xa;

const CLOSE_PROTOCOL_ERROR = 1002;
const CLOSE_TOO_BIG = 1009;

export function acceptKey(key: string): string {
  return createHash('sha1')
    .update(key + GUID)
    .digest('base64');
}

export function encodeFrame(opcode: number, payload: Buffer, fin = true): Buffer {
  const first = (fin ? 0x80 : 0) | opcode;
  let header: Buffer;
  if (payload.length < 126) {
    header = Buffer.from([first, payload.length]);
  } else if (payload.length < 65_536) {
    header = Buffer.alloc(4);
    header[0] = first;
    header[1] = 126;
    header.writeUInt16BE(payload.length, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = first;
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(payload.length), 2);
  }
  return Buffer.concat([header, payload]);
}

function closeFrame(code: number): Buffer {
  const p = Buffer.alloc(2);
  p.writeUInt16BE(code, 0);
  return encodeFrame(OP_CLOSE, p);
}

/** Answers the upgrade (or a 400 for a malformed one) and echoes frames until either side closes. */
export function acceptWebSocket(
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  onClose: () => void,
): void {
  const key = req.headers['sec-websocket-key'];
  const version = req.headers['sec-websocket-version'];
  if (typeof key !== 'string' || key.length === 0 || (version !== undefined && version !== '13')) {
    socket.end(
      'HTTP/1.1 400 Bad Request\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\nConnection: close\r\n\r\n',
    );
    onClose();
    return;
  }
  socket.write(
    'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      `Sec-WebSocket-Accept: ${acceptKey(key)}\r\n\r\n`,
  );
  let buf: Buffer = head.length > 0 ? Buffer.from(head) : Buffer.alloc(0);
  let closed = false;
  const fail = (code: number) => {
    if (closed) return;
    closed = true;
    socket.end(closeFrame(code));
  };
  const consume = () => {
    while (!closed) {
      if (buf.length < 2) return;
      const b0 = buf[0] ?? 0;
      const b1 = buf[1] ?? 0;
      const fin = (b0 & 0x80) !== 0;
      const opcode = b0 & 0x0f;
      const masked = (b1 & 0x80) !== 0;
      let len = b1 & 0x7f;
      let offset = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        offset = 4;
      } else if (len === 127) {
        if (buf.length < 10) return;
        const big = buf.readBigUInt64BE(2);
        if (big > BigInt(MAX_FRAME_BYTES)) return fail(CLOSE_TOO_BIG);
        len = Number(big);
        offset = 10;
      }
      if (len > MAX_FRAME_BYTES) return fail(CLOSE_TOO_BIG);
      // Client frames must be masked (RFC 6455 §5.1).
      if (!masked) return fail(CLOSE_PROTOCOL_ERROR);
      if (buf.length < offset + 4 + len) return;
      const mask = buf.subarray(offset, offset + 4);
      const payload = Buffer.from(buf.subarray(offset + 4, offset + 4 + len));
      for (let i = 0; i < payload.length; i++) payload[i] = (payload[i] ?? 0) ^ (mask[i & 3] ?? 0);
      buf = buf.subarray(offset + 4 + len);
      switch (opcode) {
        case OP_CONTINUATION:
        case OP_TEXT:
        case OP_BINARY:
          socket.write(encodeFrame(opcode, payload, fin));
          break;
        case OP_PING:
          socket.write(encodeFrame(OP_PONG, payload));
          break;
        case OP_PONG:
          break;
        case OP_CLOSE:
          closed = true;
          // Echo the status code back (RFC 6455 §5.5.1), then end our side.
          socket.end(encodeFrame(OP_CLOSE, payload.subarray(0, 2)));
          return;
        default:
          return fail(CLOSE_PROTOCOL_ERROR);
      }
    }
  };
  socket.on('data', (chunk: Buffer) => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    consume();
  });
  socket.once('close', onClose);
  socket.on('error', () => socket.destroy());
  consume();
}
