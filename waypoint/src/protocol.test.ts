import { describe, expect, it } from 'vitest';
import { chooseProtocol, detectProtocol, H2_PREFACE, MAX_REQUEST_LINE, upstreamIsH2 } from './protocol.ts';

const b = (s: string) => Buffer.from(s, 'latin1');

describe('detectProtocol', () => {
  const cases: Array<[string, Buffer, ReturnType<typeof detectProtocol>]> = [
    ['empty: need more', b(''), null],
    ['full h2 preface', H2_PREFACE, 'h2'],
    [
      'h2 preface and a SETTINGS frame',
      Buffer.concat([H2_PREFACE, Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]),
      'h2',
    ],
    ['h2 preface prefix: need more', H2_PREFACE.subarray(0, 10), null],
    ['PRI but not the preface', b('PRI * HTTP/1.1\r\n'), 'http1'],
    ['GET request line', b('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), 'http1'],
    ['HTTP/1.0', b('GET /x HTTP/1.0\r\n'), 'http1'],
    ['bare LF line end', b('POST /a?b=c HTTP/1.1\n'), 'http1'],
    ['custom method token', b('PURGE /cache HTTP/1.1\r\n'), 'http1'],
    ['method only so far: need more', b('GE'), null],
    ['request line without end yet: need more', b('GET /some/long/path'), null],
    ['HTTP/2 version in a request line is not HTTP/1', b('GET / HTTP/2.0\r\n'), 'tcp'],
    ['no version', b('GET /\r\n'), 'tcp'],
    ['TLS ClientHello', Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]), 'tcp'],
    ['binary with a space', Buffer.from([0x41, 0x20, 0x00, 0x01]), 'tcp'],
    ['leading space', b(' GET / HTTP/1.1\r\n'), 'tcp'],
    ['SSH banner-like', b('SSH-2.0-OpenSSH_9.6\r\n'), 'tcp'],
    ['redis inline command', b('PING\r\n'), 'tcp'],
    ['method longer than any real one', b(`${'A'.repeat(40)} / HTTP/1.1\r\n`), 'tcp'],
    ['very long request line is left to the parser', b(`GET /${'a'.repeat(MAX_REQUEST_LINE)}`), 'http1'],
  ];
  for (const [name, input, want] of cases) {
    it(name, () => expect(detectProtocol(input)).toBe(want));
  }
});

describe('chooseProtocol', () => {
  it('uses the detected protocol on undeclared ports', () => {
    expect(chooseProtocol('', 'tcp')).toBe('tcp');
    expect(chooseProtocol('', 'h2')).toBe('h2');
  });
  it('rejects non-HTTP bytes on a port declared HTTP', () => {
    expect(chooseProtocol('http', 'tcp')).toBe('reject');
    expect(chooseProtocol('grpc', 'tcp')).toBe('reject');
    expect(chooseProtocol('http', 'h2')).toBe('h2');
  });
});

describe('upstreamIsH2', () => {
  it('follows the declared protocol, else the downstream one', () => {
    expect(upstreamIsH2('grpc', 'http1')).toBe(true);
    expect(upstreamIsH2('http2', 'http1')).toBe(true);
    expect(upstreamIsH2('http', 'h2')).toBe(false);
    expect(upstreamIsH2('', 'h2')).toBe(true);
    expect(upstreamIsH2('', 'http1')).toBe(false);
  });
});
