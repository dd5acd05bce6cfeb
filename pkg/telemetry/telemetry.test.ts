import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger, currentLevels, LogOnce, moduleLogger, setLogLevel } from './index.ts';

function capture() {
  const lines: Array<Record<string, unknown>> = [];
  const destination = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l));
      cb();
    },
  });
  return { lines, destination };
}

describe('logger', () => {
  it('writes JSON with component, module, level label and redacts secrets', () => {
    const { lines, destination } = capture();
    const root = createLogger({ component: 'ztunnel', destination });
    moduleLogger(root, 'hbone').info({ token: 'secret-token', peer: '10.0.0.1' }, 'hello');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      component: 'ztunnel',
      module: 'hbone',
      level: 'info',
      msg: 'hello',
      token: '[redacted]',
      peer: '10.0.0.1',
    });
    expect(JSON.stringify(lines)).not.toContain('secret-token');
  });

  it('changes levels at runtime, globally and per module', () => {
    const { lines, destination } = capture();
    const root = createLogger({ component: 'ztunnel', destination });
    const hbone = moduleLogger(root, 'hbone');
    const xds = moduleLogger(root, 'xds');
    hbone.debug('dropped');
    expect(setLogLevel(root, 'hbone:debug')).toMatchObject({ ok: true });
    hbone.debug('kept');
    xds.debug('dropped');
    expect(currentLevels(root)).toEqual({ default: 'info', hbone: 'debug', xds: 'info' });
    expect(setLogLevel(root, 'warn')).toMatchObject({ ok: true });
    hbone.info('dropped');
    // A module created after an override takes it.
    setLogLevel(root, 'later:trace');
    expect(moduleLogger(root, 'later').level).toBe('trace');
    expect(lines.map((l) => l.msg)).toEqual(['kept']);
  });

  it.each([['loud'], ['hbone:'], [':debug'], ['']])(
    'rejects bad level spec %j without changing anything',
    (spec) => {
      const root = createLogger({ component: 't', destination: capture().destination });
      const res = setLogLevel(root, spec);
      expect(res.ok).toBe(false);
      expect(root.level).toBe('info');
    },
  );

  it('LogOnce lets one line through per key and interval, with bounded memory', () => {
    const once = new LogOnce(1000, 2);
    expect(once.should('a', 0)).toBe(true);
    expect(once.should('a', 500)).toBe(false);
    expect(once.should('a', 1500)).toBe(true);
    expect(once.should('b', 1500)).toBe(true);
    expect(once.should('c', 1500)).toBe(true); // evicts the oldest
    expect(once.should('a', 1600)).toBe(true);
  });
});
