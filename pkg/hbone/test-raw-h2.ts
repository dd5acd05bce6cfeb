/**
 * A deliberately tiny HTTP/2 client for interop tests: RFC 9113 framing and RFC 7541 HPACK written out by
 * hand over node:tls, sharing nothing with Node's nghttp2-based `http2` module. It encodes header fields as
 * "literal without indexing" (never touching the peer's dynamic table) and decodes what a server sends back,
 * except Huffman-coded strings, which it reports as `<huffman>` (nghttp2 sends `:status 200`/`400` as
 * indexed static entries, so status checks never need them).
 */
import type { TLSSocket } from 'node:tls';

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export const FRAME = {
  DATA: 0x0,
  HEADERS: 0x1,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
} as const;
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;
export const SETTING = {
  MAX_CONCURRENT_STREAMS: 0x3,
  INITIAL_WINDOW_SIZE: 0x4,
  MAX_FRAME_SIZE: 0x5,
} as const;

export interface Frame {
  readonly type: number;
  readonly flags: number;
  readonly stream: number;
  readonly payload: Buffer;
}

export function encodeFrame(
  type: number,
  flags: number,
  stream: number,
  payload: Buffer = Buffer.alloc(0),
): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([h, payload]);
}

// ---------- HPACK (RFC 7541) ----------

/** The static table entries a CONNECT exchange can meet (Appendix A). */
const STATIC: Record<number, [string, string]> = {
  1: [':authority', ''],
  2: [':method', 'GET'],
  3: [':method', 'POST'],
  4: [':path', '/'],
  6: [':scheme', 'http'],
  7: [':scheme', 'https'],
  8: [':status', '200'],
  9: [':status', '204'],
  10: [':status', '206'],
  11: [':status', '304'],
  12: [':status', '400'],
  13: [':status', '404'],
  14: [':status', '500'],
  33: ['date', ''],
};
const STATIC_NAMES: Record<string, number> = { ':authority': 1, ':method': 2, ':path': 4, ':scheme': 6 };

function encodeInt(value: number, prefixBits: number, firstByte: number): number[] {
  const max = (1 << prefixBits) - 1;
  if (value < max) return [firstByte | value];
  const out = [firstByte | max];
  let v = value - max;
  while (v >= 128) {
    out.push((v % 128) + 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}

function encodeString(s: string): number[] {
  const bytes = [...Buffer.from(s, 'latin1')];
  return [...encodeInt(bytes.length, 7, 0x00), ...bytes];
}

/** Header block with every field as "literal without indexing" (§6.2.2), static names where they exist. */
export function encodeHeaders(fields: ReadonlyArray<readonly [string, string]>): Buffer {
  const out: number[] = [];
  for (const [name, value] of fields) {
    const idx = STATIC_NAMES[name];
    if (idx !== undefined) out.push(...encodeInt(idx, 4, 0x00));
    else out.push(0x00, ...encodeString(name));
    out.push(...encodeString(value));
  }
  return Buffer.from(out);
}

export class HpackDecoder {
  private readonly dynamic: Array<[string, string]> = [];

  private entry(index: number): [string, string] {
    if (index <= 61) return STATIC[index] ?? [`<static ${index}>`, ''];
    const e = this.dynamic[index - 62];
    if (e === undefined) throw new Error(`HPACK: no dynamic entry ${index}`);
    return e;
  }

  decode(block: Buffer): Array<[string, string]> {
    let i = 0;
    const int = (prefixBits: number): number => {
      const max = (1 << prefixBits) - 1;
      let v = block[i++]! & max;
      if (v < max) return v;
      let m = 0;
      for (;;) {
        const b = block[i++]!;
        v += (b & 0x7f) * 2 ** m;
        m += 7;
        if ((b & 0x80) === 0) return v;
      }
    };
    const str = (): string => {
      const huffman = (block[i]! & 0x80) !== 0;
      const len = int(7);
      const s = huffman ? '<huffman>' : block.subarray(i, i + len).toString('latin1');
      i += len;
      return s;
    };
    const out: Array<[string, string]> = [];
    while (i < block.length) {
      const b = block[i]!;
      if (b & 0x80) {
        out.push(this.entry(int(7)));
      } else if ((b & 0xc0) === 0x40) {
        const idx = int(6);
        const name = idx === 0 ? str() : this.entry(idx)[0];
        const field: [string, string] = [name, str()];
        this.dynamic.unshift(field);
        out.push(field);
      } else if ((b & 0xe0) === 0x20) {
        int(5); // dynamic table size update
      } else {
        const idx = int(4);
        const name = idx === 0 ? str() : this.entry(idx)[0];
        out.push([name, str()]);
      }
    }
    return out;
  }
}

/** Reads frames off a TLS socket, one at a time. */
export class FrameReader {
  private buf = Buffer.alloc(0);
  private readonly queue: Frame[] = [];
  private waiter: ((f: Frame | null) => void) | null = null;
  private ended = false;

  constructor(socket: TLSSocket) {
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      for (;;) {
        if (this.buf.length < 9) break;
        const len = this.buf.readUIntBE(0, 3);
        if (this.buf.length < 9 + len) break;
        const f: Frame = {
          type: this.buf[3]!,
          flags: this.buf[4]!,
          stream: this.buf.readUInt32BE(5) & 0x7fffffff,
          payload: this.buf.subarray(9, 9 + len),
        };
        this.buf = this.buf.subarray(9 + len);
        this.push(f);
      }
    });
    const end = () => {
      this.ended = true;
      this.waiter?.(null);
      this.waiter = null;
    };
    socket.on('end', end);
    socket.on('close', end);
  }

  private push(f: Frame): void {
    if (this.waiter !== null) {
      const w = this.waiter;
      this.waiter = null;
      w(f);
    } else {
      this.queue.push(f);
    }
  }

  /** The next frame, or null once the connection ended. */
  next(): Promise<Frame | null> {
    const f = this.queue.shift();
    if (f !== undefined) return Promise.resolve(f);
    if (this.ended) return Promise.resolve(null);
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }

  /** Skips frames until one matches; fails on end of connection. */
  async until(match: (f: Frame) => boolean): Promise<Frame> {
    for (;;) {
      const f = await this.next();
      if (f === null) throw new Error('connection ended before the expected frame');
      if (match(f)) return f;
    }
  }
}

export function parseSettings(payload: Buffer): Map<number, number> {
  const m = new Map<number, number>();
  for (let i = 0; i + 6 <= payload.length; i += 6)
    m.set(payload.readUInt16BE(i), payload.readUInt32BE(i + 2));
  return m;
}
