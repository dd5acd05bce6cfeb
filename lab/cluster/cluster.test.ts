/**
 * lab/cluster pieces that need no root: paths and defaults, the supervisor's pid file check, progress output,
 * and the control socket (server and client over a unix socket).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ControlServer, controlRequest } from './control.ts';
import { DEFAULT_ROOT_BASE, defaultBlock, defaultRoot, labPaths, readConfig, writeConfig } from './paths.ts';
import { progress } from './progress.ts';
import { supervisorPid } from './state.ts';

const dir = mkdtempSync(join(tmpdir(), 'lab-cluster-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('paths', () => {
  it('derives a stable root and address block from the prefix', () => {
    expect(defaultRoot('amb-')).toBe(join(DEFAULT_ROOT_BASE, 'amb'));
    expect(defaultBlock('amb-')).toBe(defaultBlock('amb-'));
    for (const p of ['amb-', 'a-', 'test1-', 'zz9-']) {
      expect(defaultBlock(p)).toBeGreaterThanOrEqual(20);
      expect(defaultBlock(p)).toBeLessThan(220);
    }
  });

  it('writes and reads the lab configuration', () => {
    const paths = labPaths(join(dir, 'lab1'));
    expect(readConfig(paths)).toBeNull();
    writeConfig(paths, { version: 1, prefix: 'x-', block: 42, nodes: 3, logLevel: 'info' });
    expect(readConfig(paths)).toMatchObject({ prefix: 'x-', block: 42, nodes: 3 });
    expect(paths.kubeconfig).toBe(join(dir, 'lab1', 'kubeconfig'));
  });

  it('does not take a live process that is not the supervisor for it', () => {
    const paths = labPaths(join(dir, 'lab1'));
    expect(supervisorPid(paths)).toBeNull();
    // This test process is alive but runs no lab/main.ts: not a supervisor.
    writeFileSync(paths.pidFile, `${process.pid}\n`);
    expect(supervisorPid(paths)).toBeNull();
    writeFileSync(paths.pidFile, '999999999 1\n');
    expect(supervisorPid(paths)).toBeNull();
  });
});

describe('progress', () => {
  it('prints one line per finished step with a mark and the duration', () => {
    const lines: string[] = [];
    const p = progress((l) => lines.push(l));
    p.start('Network');
    p.done('2 nodes');
    p.start('Kubelets');
    p.fail();
    p.report('istiod Ready', true, 12_345, '1/1 ready');
    expect(lines[0]).toMatch(/^ {2}✔ Network {2}2 nodes {2}\d+\.\ds$/);
    expect(lines[1]).toMatch(/^ {2}✘ Kubelets {2}\d+\.\ds$/);
    expect(lines[2]).toBe('  ✔ istiod Ready  1/1 ready  12s');
  });
});

describe('control socket', () => {
  it('answers status, exec-target and exec; 404 with a message for unknown pods', async () => {
    const path = join(dir, 'control.sock');
    let shutdowns = 0;
    const server = await ControlServer.listen(path, {
      status: () => ({ phase: 'ready' }),
      execTarget: (ns, pod, container) =>
        pod === 'web'
          ? {
              node: 'node-0',
              container: container ?? 'app',
              pid: 42,
              env: { PATH: '/bin' },
              netnsPath: `/x/${ns}`,
            }
          : null,
      exec: async (req) => ({ exitCode: 0, stdout: req.argv.join(' '), stderr: '', timedOut: false }),
      shutdown: () => {
        shutdowns++;
      },
    });
    try {
      expect(await controlRequest(path, 'GET', '/v1/status')).toEqual({ phase: 'ready' });
      expect(
        await controlRequest(path, 'POST', '/v1/exec-target', { namespace: 'default', pod: 'web' }),
      ).toEqual({
        node: 'node-0',
        container: 'app',
        pid: 42,
        env: { PATH: '/bin' },
        netnsPath: '/x/default',
      });
      await expect(
        controlRequest(path, 'POST', '/v1/exec-target', { namespace: 'default', pod: 'nope' }),
      ).rejects.toMatchObject({ code: 'MESH_ERR_LAB_RUNTIME_NOT_FOUND' });
      await expect(
        controlRequest(path, 'POST', '/v1/exec', { namespace: 'd', pod: 'web', argv: [] }),
      ).rejects.toThrow(/argv/);
      expect(
        await controlRequest(path, 'POST', '/v1/exec', { namespace: 'd', pod: 'web', argv: ['echo', 'hi'] }),
      ).toMatchObject({ exitCode: 0, stdout: 'echo hi' });
      await controlRequest(path, 'POST', '/v1/shutdown', {});
      await new Promise((r) => setImmediate(r));
      expect(shutdowns).toBe(1);
    } finally {
      await server.close();
    }
    await expect(controlRequest(path, 'GET', '/v1/status')).rejects.toMatchObject({
      code: 'MESH_ERR_LAB_NOT_RUNNING',
    });
  });
});
