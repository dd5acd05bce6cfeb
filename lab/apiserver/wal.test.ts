import { appendFile, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isMeshError } from '../../pkg/errors/index.ts';
import { Wal } from './wal.ts';

describe('write-ahead log', () => {
  const dirs: string[] = [];
  afterEach(async () => {
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  });
  const fresh = async () => {
    const d = await mkdtemp(join(tmpdir(), 'wal-'));
    dirs.push(d);
    return d;
  };

  it('replays records after the snapshot and drops a torn final line', async () => {
    const dir = await fresh();
    const { wal } = await Wal.open(dir);
    await wal.append({ rv: 1, k: '/configmaps', n: 'default/a', o: { metadata: { name: 'a' } } });
    await wal.append({ rv: 2, k: '/configmaps', n: 'default/b', o: { metadata: { name: 'b' } } });
    await wal.snapshot(2, { '/configmaps': [{ metadata: { name: 'a' } }, { metadata: { name: 'b' } }] });
    await wal.append({ rv: 3, k: '/configmaps', n: 'default/a', o: null });
    await wal.close();
    const seg = (await readdir(dir))
      .filter((f) => f.startsWith('wal-'))
      .sort()
      .pop() as string;
    await appendFile(join(dir, seg), '{"rv":4,"k":"/configmaps","n":"default/c","o":{"meta');
    const { wal: again, recovered } = await Wal.open(dir);
    expect(recovered.snapshot?.rv).toBe(2);
    expect(recovered.records.map((r) => r.rv)).toEqual([3]);
    await again.close();
  });

  it('reports damage in the middle of the log', async () => {
    const dir = await fresh();
    await writeFile(
      join(dir, 'wal-000000000001.log'),
      '{"rv":1,"k":"x","n":"/a","o":null}\nnot json\n{"rv":2,"k":"x","n":"/b","o":null}\n',
    );
    await expect(Wal.open(dir)).rejects.toSatisfy((err: unknown) =>
      isMeshError(err, 'MESH_ERR_LAB_STATE_CORRUPT'),
    );
    await writeFile(join(dir, 'wal-000000000001.log'), '');
    await writeFile(join(dir, 'snapshot.json'), '{"format":99}');
    await expect(Wal.open(dir)).rejects.toSatisfy((err: unknown) =>
      isMeshError(err, 'MESH_ERR_LAB_STATE_CORRUPT'),
    );
  });
});
