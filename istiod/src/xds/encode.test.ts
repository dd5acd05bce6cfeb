import { describe, expect, it } from 'vitest';
import { DeltaDiscoveryResponse, Resource } from '../../../pkg/xds/index.ts';
import { encodeDeltaResponse } from './server.ts';

describe('encodeDeltaResponse', () => {
  it('decodes to the same message as encoding it whole', () => {
    const resources = [
      { name: 'a', version: 'v1', resource: { typeUrl: 't/x', value: Uint8Array.of(1, 2, 3) }, aliases: [] },
      {
        name: 'b',
        version: 'v2',
        resource: { typeUrl: 't/x', value: new Uint8Array(300).fill(7) },
        aliases: [],
      },
    ];
    const fast = encodeDeltaResponse(
      '42',
      resources.map((r) => Resource.encode(r).finish()),
      't/x',
      ['gone', 'also-gone'],
      'nonce-1',
      'istiod-0',
    );
    const whole = DeltaDiscoveryResponse.encode(
      DeltaDiscoveryResponse.fromPartial({
        systemVersionInfo: '42',
        resources,
        typeUrl: 't/x',
        removedResources: ['gone', 'also-gone'],
        nonce: 'nonce-1',
        controlPlane: { identifier: 'istiod-0' },
      }),
    ).finish();
    expect(DeltaDiscoveryResponse.decode(fast)).toEqual(DeltaDiscoveryResponse.decode(whole));
    expect(fast.byteLength).toBe(whole.byteLength);
  });

  it('omits empty fields like the generated encoder', () => {
    const fast = encodeDeltaResponse('', [], '', [], '', '');
    expect(fast.byteLength).toBe(0);
  });
});
