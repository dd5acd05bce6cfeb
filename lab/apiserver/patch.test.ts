import { describe, expect, it } from 'vitest';
import { applyJsonPatch, applyMergePatch, applyStrategicMergePatch, type ListMeta } from './patch.ts';
import { ApiError } from './status.ts';

const META = new Map<string, ListMeta>([
  ['spec.containers', { merge: true, mergeKey: 'name' }],
  ['spec.containers.env', { merge: true, mergeKey: 'name' }],
  ['spec.containers.ports', { merge: true, mergeKey: 'containerPort' }],
  ['metadata.finalizers', { merge: true }],
]);

const BASE = {
  metadata: { name: 'p', labels: { a: '1', b: '2' }, finalizers: ['x'] },
  spec: {
    containers: [
      {
        name: 'app',
        image: 'app:1',
        env: [
          { name: 'A', value: '1' },
          { name: 'B', value: '2' },
        ],
        ports: [{ containerPort: 80 }],
      },
      { name: 'side', image: 'side:1' },
    ],
    tolerations: [{ key: 't1' }],
  },
};

describe('strategic merge patch', () => {
  const cases: Array<{ name: string; patch: Record<string, unknown>; check: (r: typeof BASE) => void }> = [
    {
      name: 'merges maps and deletes with null',
      patch: { metadata: { labels: { a: null, c: '3' } } },
      check: (r) => expect(r.metadata.labels).toEqual({ b: '2', c: '3' }),
    },
    {
      name: 'merges containers by name',
      patch: { spec: { containers: [{ name: 'side', image: 'side:2' }] } },
      check: (r) => expect(r.spec.containers.map((c) => c.image)).toEqual(['app:1', 'side:2']),
    },
    {
      name: 'appends new list items',
      patch: { spec: { containers: [{ name: 'new', image: 'n' }] } },
      check: (r) => expect(r.spec.containers.map((c) => c.name)).toEqual(['app', 'side', 'new']),
    },
    {
      name: 'deletes an item with $patch: delete',
      patch: { spec: { containers: [{ name: 'side', $patch: 'delete' }] } },
      check: (r) => expect(r.spec.containers.map((c) => c.name)).toEqual(['app']),
    },
    {
      name: 'replaces a list with $patch: replace',
      patch: { spec: { containers: [{ $patch: 'replace' }, { name: 'only', image: 'o' }] } },
      check: (r) => expect(r.spec.containers).toEqual([{ name: 'only', image: 'o' }]),
    },
    {
      name: 'merges nested lists (env by name, ports by containerPort)',
      patch: {
        spec: {
          containers: [{ name: 'app', env: [{ name: 'B', value: '3' }], ports: [{ containerPort: 81 }] }],
        },
      },
      check: (r) => {
        expect(r.spec.containers[0]?.env).toEqual([
          { name: 'A', value: '1' },
          { name: 'B', value: '3' },
        ]);
        expect(r.spec.containers[0]?.ports).toEqual([{ containerPort: 80 }, { containerPort: 81 }]);
      },
    },
    {
      name: 'replaces atomic lists',
      patch: { spec: { tolerations: [{ key: 't2' }] } },
      check: (r) => expect(r.spec.tolerations).toEqual([{ key: 't2' }]),
    },
    {
      name: 'unions primitive merge lists',
      patch: { metadata: { finalizers: ['y', 'x'] } },
      check: (r) => expect(r.metadata.finalizers).toEqual(['x', 'y']),
    },
    {
      name: 'deletes from primitive lists',
      patch: { metadata: { '$deleteFromPrimitiveList/finalizers': ['x'] } },
      check: (r) => expect(r.metadata.finalizers).toEqual([]),
    },
    {
      name: 'orders with $setElementOrder',
      patch: {
        spec: {
          '$setElementOrder/containers': [{ name: 'side' }, { name: 'app' }],
          containers: [{ name: 'app', image: 'app:3' }],
        },
      },
      check: (r) =>
        expect(r.spec.containers.map((c) => `${c.name}:${c.image}`)).toEqual(['side:side:1', 'app:app:3']),
    },
    {
      name: 'keeps only $retainKeys',
      patch: { spec: { $retainKeys: ['containers'], containers: [] } },
      check: (r) => expect(Object.keys(r.spec)).toEqual(['containers']),
    },
    {
      name: 'replaces a map with $patch: replace',
      patch: { metadata: { labels: { $patch: 'replace', z: '9' } } },
      check: (r) => expect(r.metadata.labels).toEqual({ z: '9' }),
    },
  ];
  it.each(cases)('$name', ({ patch, check }) => {
    check(applyStrategicMergePatch(BASE, patch, META) as unknown as typeof BASE);
  });

  it('does not modify its input and rejects malformed patches', () => {
    const before = JSON.stringify(BASE);
    applyStrategicMergePatch(BASE, { spec: { containers: [{ name: 'app', image: 'z' }] } }, META);
    expect(JSON.stringify(BASE)).toBe(before);
    expect(() =>
      applyStrategicMergePatch(BASE, { spec: { containers: [{ image: 'no-name' }] } }, META),
    ).toThrow(ApiError);
    expect(() => applyStrategicMergePatch(BASE, [] as unknown as Record<string, unknown>, META)).toThrow(
      ApiError,
    );
    expect(() => applyStrategicMergePatch(BASE, { $patch: 'explode' }, META)).toThrow(ApiError);
  });
});

describe('JSON merge patch (RFC 7386)', () => {
  it.each([
    [{ a: 'b' }, { a: 'c' }, { a: 'c' }],
    [{ a: 'b' }, { b: 'c' }, { a: 'b', b: 'c' }],
    [{ a: 'b' }, { a: null }, {}],
    [{ a: ['b'] }, { a: ['c', 'd'] }, { a: ['c', 'd'] }],
    [{ a: { b: 'c' } }, { a: { b: 'd', c: null } }, { a: { b: 'd' } }],
    [{ a: 'foo' }, 'bar', 'bar'],
  ])('%j + %j = %j', (target, patch, want) => {
    expect(applyMergePatch(target, patch)).toEqual(want);
  });
});

describe('JSON patch (RFC 6902)', () => {
  const doc = { a: { b: [1, 2, 3] }, 'x/y': 1 };
  it.each([
    [[{ op: 'add', path: '/a/b/1', value: 9 }], { a: { b: [1, 9, 2, 3] }, 'x/y': 1 }],
    [[{ op: 'add', path: '/a/b/-', value: 4 }], { a: { b: [1, 2, 3, 4] }, 'x/y': 1 }],
    [[{ op: 'remove', path: '/a/b/0' }], { a: { b: [2, 3] }, 'x/y': 1 }],
    [[{ op: 'replace', path: '/x~1y', value: 2 }], { a: { b: [1, 2, 3] }, 'x/y': 2 }],
    [[{ op: 'move', from: '/a/b', path: '/c' }], { a: {}, c: [1, 2, 3], 'x/y': 1 }],
    [[{ op: 'copy', from: '/a/b/2', path: '/d' }], { a: { b: [1, 2, 3] }, d: 3, 'x/y': 1 }],
    [[{ op: 'test', path: '/a/b/0', value: 1 }], doc],
  ])('%j', (patch, want) => {
    expect(applyJsonPatch(doc, patch)).toEqual(want);
  });
  it.each([
    [{ op: 'test', path: '/a/b/0', value: 2 }, 422],
    [{ op: 'remove', path: '/nope' }, 422],
    [{ op: 'add', path: '/a/b/7', value: 1 }, 422],
    [{ op: 'frobnicate', path: '/a' }, 400],
    [{ op: 'add', path: 'no-slash', value: 1 }, 400],
  ])('%j fails with %i', (op, code) => {
    try {
      applyJsonPatch(doc, [op]);
      expect.unreachable();
    } catch (err) {
      expect((err as ApiError).code).toBe(code);
    }
  });
});
