import { generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { FakeCa } from '../testing/fake-ca.ts';
import { verifyChain } from './chain.ts';
import { generateP256 } from './x509.ts';

const id = { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'a' };

describe('verifyChain', () => {
  const ca = new FakeCa();
  const other = new FakeCa();
  const leaf = ca.sign(id, generateP256().publicKey);

  it('accepts a leaf issued by the root', () => {
    expect(verifyChain([leaf], [ca.rootPem])).toEqual({ ok: true });
    expect(verifyChain([leaf, ca.rootPem], [ca.rootPem])).toEqual({ ok: true });
    expect(verifyChain([leaf], [other.rootPem, ca.rootPem])).toEqual({ ok: true });
  });

  it('rejects foreign, expired and not-yet-valid chains', () => {
    expect(verifyChain([leaf], [other.rootPem])).toMatchObject({ ok: false, error: /trusted root/ });
    expect(verifyChain([leaf], [ca.rootPem], Date.now() + 2 * 86_400_000)).toMatchObject({
      ok: false,
      error: /expired/,
    });
    expect(verifyChain([leaf], [ca.rootPem], Date.now() - 3_600_000)).toMatchObject({
      ok: false,
      error: /not yet valid/,
    });
    expect(verifyChain([leaf, other.rootPem], [other.rootPem])).toMatchObject({
      ok: false,
      error: /not signed/,
    });
    expect(verifyChain([], [ca.rootPem])).toMatchObject({ ok: false, error: 'empty chain' });
    expect(verifyChain(['garbage'], [ca.rootPem])).toMatchObject({ ok: false, error: /unparseable/ });
  });

  it('rejects a chain whose middle certificate is not a CA', () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const leaf2 = ca.sign(id, publicKey);
    expect(verifyChain([leaf2, leaf], [ca.rootPem])).toMatchObject({ ok: false, error: /not a CA/ });
  });
});
