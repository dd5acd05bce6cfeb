/**
 * Works around a Node 24 HTTP/2 defect for every HBONE tunnel (pool and server): `_writev` on an Http2Stream with
 * a mix of string and Buffer chunks — what node:http does when it corks the header string with the first body
 * Buffer — puts garbage on the wire in place of the string's first bytes (reproduced: a POST's request line
 * arrived as `D\xfd\0…a&fail=2 HTTP/1.1`). Converting the strings to Buffers before the native writev avoids it;
 * single writes are not affected, and a tunnel that only ever carries Buffers (ztunnel's pipes) pays one type
 * check per chunk.
 */
import type { Duplex } from 'node:stream';

interface WritevChunk {
  chunk: Buffer | string;
  encoding: BufferEncoding;
}
type Writev = (chunks: WritevChunk[], cb: (err?: Error | null) => void) => void;

const kBuffersOnly = Symbol('hbone.buffersOnly');

export function buffersOnlyWritev(d: Duplex): void {
  const s = d as Duplex & { _writev?: Writev | null; [kBuffersOnly]?: boolean };
  const orig = s._writev;
  if (typeof orig !== 'function' || s[kBuffersOnly] === true) return;
  s[kBuffersOnly] = true;
  s._writev = function writevBuffers(this: Duplex, chunks: WritevChunk[], cb: (err?: Error | null) => void) {
    for (let i = 0; i < chunks.length; i++) {
      const c = chunks[i] as WritevChunk;
      if (typeof c.chunk === 'string') {
        c.chunk = Buffer.from(c.chunk, c.encoding);
        c.encoding = 'buffer' as BufferEncoding;
      }
    }
    orig.call(this, chunks, cb);
  };
}
