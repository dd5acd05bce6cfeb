import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { renderErrorTable, updateErrorsPage } from './doc.ts';
import { bug, CODES, describeError, isMeshError, MeshError } from './index.ts';

describe('error registry', () => {
  it('every code has the MESH_ERR_<AREA>_<WHAT> shape and a summary', () => {
    for (const [code, spec] of Object.entries(CODES)) {
      expect(code).toMatch(/^MESH_ERR_[A-Z0-9]+_[A-Z0-9_]+$/);
      expect(spec.summary.length).toBeGreaterThan(10);
    }
  });

  it('docs/ERRORS.md lists exactly the registry (run `npm run gen:errors` after adding a code)', () => {
    const page = readFileSync(new URL('../../docs/ERRORS.md', import.meta.url), 'utf8');
    expect(updateErrorsPage(page)).toBe(page);
    for (const code of Object.keys(CODES)) expect(renderErrorTable()).toContain(`\`${code}\``);
  });

  it('MeshError carries code, hint, details and cause', () => {
    const cause = Object.assign(new Error('boom'), { code: 'EPERM' });
    const err = new MeshError('MESH_ERR_NETNS_SETNS', 'setns /proc/1/ns/net: EPERM', {
      cause,
      details: { op: 'setns', errno: 'EPERM' },
    });
    expect(err.code).toBe('MESH_ERR_NETNS_SETNS');
    expect(err.hint).toBe(CODES.MESH_ERR_NETNS_SETNS.hint);
    expect(err.cause).toBe(cause);
    expect(String(err)).toBe(
      `MESH_ERR_NETNS_SETNS: setns /proc/1/ns/net: EPERM (hint: ${CODES.MESH_ERR_NETNS_SETNS.hint})`,
    );
    expect(isMeshError(err, 'MESH_ERR_NETNS_SETNS')).toBe(true);
    expect(isMeshError(err, 'MESH_ERR_NETNS_OPEN')).toBe(false);
    expect(describeError(cause)).toBe('EPERM: boom');
    expect(describeError('x')).toBe('x');
  });

  it('bug() marks broken invariants', () => {
    const err = bug('pool key missing', { key: 'a' });
    expect(err.message).toBe('BUG: pool key missing');
    expect(err.code).toBe('MESH_ERR_INTERNAL_BUG');
  });
});
