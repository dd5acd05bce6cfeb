/**
 * Hostile and broken input: decodeSafe must turn every malformed buffer into MESH_ERR_PROTO_DECODE,
 * never throw past it, never hang, and still accept unknown fields (forward compatibility).
 */
import { describe, expect, it } from 'vitest';
import { isMeshError, MeshError } from '../errors/index.ts';
import * as discoveryGen from './gen/envoy/service/discovery/v3/discovery.ts';
import * as securityGen from './gen/istio/security/authorization.ts';
import {
  ADDRESS_TYPE_URL,
  Address,
  AUTHORIZATION_TYPE_URL,
  Authorization,
  type DecodeResult,
  DeltaDiscoveryResponse,
  decodeOrThrow,
  decodeSafe,
  encodeMessage,
  MAX_PROTO_MESSAGE_BYTES,
  type ProtoDecoder,
  packAddress,
  packAny,
  packAuthorization,
  unpackAddress,
  unpackAny,
  unpackAuthorization,
  WorkloadRequest,
} from './index.ts';
import { authorization, SAMPLES, workload } from './test/samples.ts';

const workloadAddress = Address.fromPartial({ type: { $case: 'workload', value: workload } });
const workloadBytes = encodeMessage(Address, workloadAddress);

function expectDecodeError<T>(result: DecodeResult<T>, pattern?: RegExp): MeshError {
  expect(result.ok).toBe(false);
  if (result.ok) throw new Error('unreachable');
  expect(result.error).toBeInstanceOf(MeshError);
  expect(result.error.code).toBe('MESH_ERR_PROTO_DECODE');
  if (pattern) expect(result.error.message).toMatch(pattern);
  return result.error;
}

/** Deterministic PRNG (xorshift32) so a failing fuzz case reproduces. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x1_0000_0000;
  };
}

/** `depth` DynamicParameterConstraints nested through not_constraints (field 4). */
function nestedConstraints(depth: number): Uint8Array {
  let inner = new Uint8Array(0);
  for (let i = 0; i < depth; i++) {
    const len = [...varint(inner.length)];
    inner = new Uint8Array([0x22, ...len, ...inner]);
  }
  return inner;
}

function varint(n: number): Uint8Array {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return new Uint8Array(out);
}

describe('decodeSafe', () => {
  it('decodes valid bytes', () => {
    const result = decodeSafe(Address, workloadBytes);
    expect(result).toEqual({ ok: true, value: workloadAddress });
  });

  it('rejects every truncation of a message whose only field is length-delimited', () => {
    for (let n = 1; n < workloadBytes.length; n++) {
      expectDecodeError(decodeSafe(Address, workloadBytes.subarray(0, n), { what: `Address[0:${n}]` }));
    }
  });

  it.each([
    { name: 'tag 0', bytes: [0x00], pattern: /invalid tag 0/ },
    { name: 'END_GROUP without a group', bytes: [0x7c], pattern: /invalid tag 124/ },
    { name: 'START_GROUP never closed', bytes: [0x7b] },
    { name: 'wire type 6', bytes: [0x0e, 0x00] },
    { name: 'wire type 7', bytes: [0x0f, 0x00] },
    { name: 'unterminated varint', bytes: [0x78, 0xff, 0xff] },
    {
      name: 'varint longer than 10 bytes in a known field',
      bytes: [0x0a, 0x0d, 0x28, ...Array(11).fill(0xff), 0x01],
    },
    { name: 'length past the end', bytes: [0x0a, 0x05, 0x01] },
    { name: 'length of 4 GiB', bytes: [0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f] },
    {
      name: 'known field with wrong wire type',
      bytes: [0x08, 0x01],
      pattern: /wrong wire type 0 for field 1/,
    },
    {
      name: 'nested known field with wrong wire type (Workload.uid as varint)',
      bytes: [0x0a, 0x03, 0xa0, 0x01, 0x01],
      pattern: /wrong wire type 0 for field 20/,
    },
    {
      name: 'nested message overrunning its declared length',
      bytes: [0x0a, 0x02, 0x0a, 0x05, 0x61, 0x62, 0x63, 0x64, 0x65],
      pattern: /overruns/,
    },
  ])('Address: $name', ({ bytes, pattern }) => {
    expectDecodeError(
      decodeSafe(Address, new Uint8Array(bytes), { what: 'istio.workload.Address' }),
      pattern,
    );
  });

  it('rejects a packed repeated scalar sent with a fixed32 wire type', () => {
    // Match.destination_ports (9) with wire type 5.
    expectDecodeError(
      decodeSafe(securityGen.Match, new Uint8Array([0x4d, 1, 0, 0, 0])),
      /wrong wire type 5 for field 9/,
    );
  });

  it('accepts both packed and unpacked encodings of repeated scalars', () => {
    const packed = new Uint8Array([0x4a, 0x02, 0x50, 0x51]);
    const unpacked = new Uint8Array([0x48, 0x50, 0x48, 0x51]);
    expect(decodeOrThrow(securityGen.Match, packed).destinationPorts).toEqual([80, 81]);
    expect(decodeOrThrow(securityGen.Match, unpacked).destinationPorts).toEqual([80, 81]);
  });

  it('skips unknown fields of every wire type (forward compatibility)', () => {
    // Fields 90-94 do not exist in Address: varint, fixed64, bytes, fixed32, and a closed group.
    const unknown = [0xd0, 0x05, 0x2a, 0xd1, 0x05, 1, 2, 3, 4, 5, 6, 7, 8, 0xda, 0x05, 0x01, 0x00];
    const more = [0xe5, 0x05, 1, 2, 3, 4, 0xeb, 0x05, 0xec, 0x05];
    const bytes = new Uint8Array([...unknown, ...more, ...workloadBytes]);
    expect(decodeOrThrow(Address, bytes)).toEqual(workloadAddress);
  });

  it('stops runaway nesting at the recursion limit instead of overflowing the stack', () => {
    const codec = discoveryGen.DynamicParameterConstraints;
    expect(decodeSafe(codec, nestedConstraints(50)).ok).toBe(true);
    expectDecodeError(decodeSafe(codec, nestedConstraints(300)), /recursion limit/);
  });

  it('enforces the size limit before parsing', () => {
    const error = expectDecodeError(
      decodeSafe(Address, new Uint8Array(101), { what: 'ZDS packet', maxBytes: 100 }),
      /ZDS packet: 101 bytes exceeds the 100-byte limit/,
    );
    expect(error.details).toMatchObject({ size: 101, maxBytes: 100 });
    expect(MAX_PROTO_MESSAGE_BYTES).toBe(64 * 1024 * 1024);
  });

  it('rejects input that is not bytes', () => {
    expectDecodeError(decodeSafe(Address, 'not bytes' as unknown as Uint8Array), /expected bytes/);
  });

  it('keeps the parser error as the cause', () => {
    const result = decodeSafe(Address, new Uint8Array([0x0a, 0x05, 0x01]), { what: 'Address from istiod' });
    const error = expectDecodeError(result, /^cannot decode Address from istiod \(3 bytes\): /);
    expect(error.cause).toBeInstanceOf(Error);
  });

  it('survives random bytes and random corruption of valid messages', () => {
    const codecs: [string, ProtoDecoder<unknown>, Uint8Array][] = [
      ['Address', Address, workloadBytes],
      ['Authorization', Authorization, encodeMessage(Authorization, authorization)],
      [
        'WorkloadRequest',
        WorkloadRequest,
        encodeMessage(WorkloadRequest, SAMPLES['istio.workload.zds.WorkloadRequest']?.[0] as WorkloadRequest),
      ],
      [
        'DeltaDiscoveryResponse',
        DeltaDiscoveryResponse,
        encodeMessage(
          DeltaDiscoveryResponse,
          SAMPLES['envoy.service.discovery.v3.DeltaDiscoveryResponse']?.[0] as DeltaDiscoveryResponse,
        ),
      ],
    ];
    const random = rng(0x5eed);
    const started = performance.now();
    let failures = 0;
    for (const [what, codec, valid] of codecs) {
      for (let i = 0; i < 1500; i++) {
        let bytes: Uint8Array;
        if (i % 2 === 0) {
          bytes = new Uint8Array(Math.floor(random() * 96));
          for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(random() * 256);
        } else {
          bytes = valid.slice(0, 1 + Math.floor(random() * valid.length));
          const flips = 1 + Math.floor(random() * 4);
          for (let f = 0; f < flips; f++)
            bytes[Math.floor(random() * bytes.length)] = Math.floor(random() * 256);
        }
        const result = decodeSafe(codec, bytes, { what });
        if (!result.ok) {
          failures++;
          expect(isMeshError(result.error, 'MESH_ERR_PROTO_DECODE')).toBe(true);
        }
      }
    }
    expect(failures).toBeGreaterThan(1000);
    expect(performance.now() - started).toBeLessThan(15_000);
  });
});

describe('decodeOrThrow', () => {
  it('returns the message or throws the MeshError', () => {
    expect(decodeOrThrow(Address, workloadBytes)).toEqual(workloadAddress);
    expect(() => decodeOrThrow(Address, new Uint8Array([0x00]))).toThrow(MeshError);
    try {
      decodeOrThrow(Address, new Uint8Array([0x00]), { what: 'x' });
    } catch (err) {
      expect(isMeshError(err, 'MESH_ERR_PROTO_DECODE')).toBe(true);
    }
  });
});

describe('Any helpers', () => {
  it('uses the type URLs ztunnel subscribes to', () => {
    expect(ADDRESS_TYPE_URL).toBe('type.googleapis.com/istio.workload.Address');
    expect(AUTHORIZATION_TYPE_URL).toBe('type.googleapis.com/istio.security.Authorization');
  });

  it('packs and unpacks Address and Authorization', () => {
    const a = packAddress(workloadAddress);
    expect(a.typeUrl).toBe(ADDRESS_TYPE_URL);
    expect(a.value).toEqual(workloadBytes);
    expect(unpackAddress(a)).toEqual({ ok: true, value: workloadAddress });

    const p = packAuthorization(authorization);
    expect(p.typeUrl).toBe(AUTHORIZATION_TYPE_URL);
    expect(unpackAuthorization(p)).toEqual({ ok: true, value: authorization });
  });

  it('refuses an Any of another type before decoding it', () => {
    const error = expectDecodeError(unpackAuthorization(packAddress(workloadAddress)), /carries type/);
    expect(error.details).toMatchObject({ typeUrl: ADDRESS_TYPE_URL, expected: AUTHORIZATION_TYPE_URL });
  });

  it('reports corrupt Any contents as a decode error naming the type', () => {
    const bad = { typeUrl: ADDRESS_TYPE_URL, value: new Uint8Array([0x0a, 0x09]) };
    expectDecodeError(unpackAddress(bad), /^cannot decode istio\.workload\.Address/);
  });

  it('packs any codec generically', () => {
    const any = packAny(securityGen.StringMatch, 'type.googleapis.com/istio.security.StringMatch', {
      matchType: { $case: 'exact', value: 'x' },
    });
    expect(unpackAny(any, securityGen.StringMatch, any.typeUrl)).toEqual({
      ok: true,
      value: { matchType: { $case: 'exact', value: 'x' } },
    });
  });
});
