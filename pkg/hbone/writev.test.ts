import { Duplex } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { buffersOnlyWritev } from './writev.ts';

describe('buffersOnlyWritev', () => {
  it('hands the native writev Buffers only, with the bytes of every string chunk intact', async () => {
    const seen: { kinds: string[]; bytes: Buffer[] } = { kinds: [], bytes: [] };
    const d = new Duplex({
      read() {},
      writev(chunks, cb) {
        for (const c of chunks) {
          seen.kinds.push(typeof c.chunk === 'string' ? 'string' : 'buffer');
          seen.bytes.push(Buffer.isBuffer(c.chunk) ? c.chunk : Buffer.from(c.chunk, c.encoding));
        }
        cb();
      },
      decodeStrings: false,
    });
    buffersOnlyWritev(d);
    buffersOnlyWritev(d); // idempotent
    d.cork();
    d.write('POST /x HTTP/1.1\r\nHost: h\r\n\r\n', 'latin1');
    d.write(Buffer.from('body'));
    d.write('é', 'utf8');
    d.uncork();
    await new Promise((r) => setImmediate(r));
    expect(seen.kinds).toEqual(['buffer', 'buffer', 'buffer']);
    expect(Buffer.concat(seen.bytes).toString('utf8')).toBe('POST /x HTTP/1.1\r\nHost: h\r\n\r\nbodyé');
  });
});
