import { describe, expect, it } from 'vitest';
import { isMeshError } from '../errors/index.ts';
import { bool, duration, freeze, hostPort, int, list, oneOf, parseDuration, str } from './index.ts';

describe('config readers', () => {
  it.each([
    ['500ms', 500],
    ['10s', 10_000],
    ['1m30s', 90_000],
    ['24h', 86_400_000],
    ['1.5s', 1500],
    ['', null],
    ['10', null],
    ['5d', null],
    ['s', null],
  ])('parseDuration(%j) = %j', (text, want) => {
    expect(parseDuration(text)).toBe(want);
  });

  it('returns defaults for unset and blank values', () => {
    const env = { BLANK: '  ' };
    expect(str(env, 'NOPE', 'd')).toBe('d');
    expect(int(env, 'BLANK', 7)).toBe(7);
    expect(bool(env, 'NOPE', true)).toBe(true);
    expect(duration(env, 'NOPE', 100)).toBe(100);
    expect(list(env, 'NOPE', ['a'])).toEqual(['a']);
  });

  it.each([
    [() => int({ X: 'abc' }, 'X', 1), 'X="abc" (expected an integer)'],
    [() => int({ X: '70000' }, 'X', 1, { max: 65535 }), 'X="70000" (must be <= 65535)'],
    [() => bool({ X: 'maybe' }, 'X', true), 'X="maybe" (expected true or false)'],
    [() => duration({ X: '10' }, 'X', 1), 'X="10" (expected a duration such as 500ms, 10s, 5m, 24h)'],
    [() => oneOf({ X: 'b' }, 'X', 'a', ['a', 'c']), 'X="b" (expected one of a, c)'],
    [() => hostPort({ X: 'nope' }, 'X', ':1'), 'X="nope" (expected host:port)'],
  ])('reports NAME=value (reason) for bad input %#', (fn, message) => {
    try {
      fn();
      expect.unreachable('should have thrown');
    } catch (err) {
      expect(isMeshError(err, 'MESH_ERR_CONFIG_INVALID')).toBe(true);
      expect((err as Error).message).toBe(message);
    }
  });

  it('parses values and lists', () => {
    const env = { N: '42', B: 'off', L: 'a, b,,c', HP: '[::1]:15000', HP2: ':8080' };
    expect(int(env, 'N', 0)).toBe(42);
    expect(bool(env, 'B', true)).toBe(false);
    expect(list(env, 'L', [])).toEqual(['a', 'b', 'c']);
    expect(hostPort(env, 'HP', ':1')).toEqual({ host: '::1', port: 15000 });
    expect(hostPort(env, 'HP2', ':1')).toEqual({ host: '0.0.0.0', port: 8080 });
  });

  it('freezes deeply', () => {
    const cfg = freeze({ a: { b: [1] } });
    expect(Object.isFrozen(cfg.a.b)).toBe(true);
  });
});
