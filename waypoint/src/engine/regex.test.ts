import { describe, expect, it } from 'vitest';
import { checkRegex, compileSafeRegex } from './regex.ts';

describe('compileSafeRegex: RE2 syntax, full match', () => {
  it.each([
    // [pattern, input, full match?]
    ['.*Mobile.*', 'Mozilla/5.0 (iPhone) Mobile/15E148 Safari', true],
    ['.*Mobile.*', 'curl/8.5', false],
    ['.*Mobile.*', 'a\nMobile', false], // `.` excludes newline
    ['(?s).*Mobile.*', 'a\nMobile', true],
    ['foo', 'foo', true],
    ['foo', 'foobar', false], // full match, not search
    ['foo.*', 'foobar', true],
    ['.*bar', 'foobar', true],
    ['/api/v[0-9]+/.*', '/api/v12/users', true],
    ['/api/v[0-9]+/.*', '/api/vx/users', false],
    ['/reviews/\\d+', '/reviews/123', true],
    ['/reviews/\\d+', '/reviews/12a', false],
    ['^/static/.*$', '/static/app.js', true],
    ['(?i)hello', 'HeLLo', true],
    ['(?i:he)llo', 'HEllo', true],
    ['(?i:he)llo', 'HELLO', false],
    ['a{2,3}', 'aaa', true],
    ['a{2,3}', 'aaaa', false],
    ['a{2}', 'aa', true],
    ['a{2,}', 'aaaaaaa', true],
    ['a{,2}', 'a{,2}', true], // not a repeat: literal braces (RE2)
    ['x|y|zz', 'zz', true],
    ['(a|ab)(c|bcd)(d*)', 'abcd', true],
    ['[^/]+', 'abc', true],
    ['[^/]+', 'a/c', false],
    ['[]a]+', ']a]', true],
    ['[a-]+', 'a-a', true],
    ['[[:digit:]]{3}-[[:alpha:]]+', '123-abc', true],
    ['[[:^digit:]]+', 'abc', true],
    ['[\\d.]+', '1.2.3', true],
    ['\\w+@\\w+\\.com', 'me@example.com', true],
    ['\\S+\\s\\S+', 'a b', true],
    ['\\bfoo\\b.*', 'foo bar', true],
    ['.*\\bfoo\\b.*', 'xfoo bar', false],
    ['a\\.b', 'a.b', true],
    ['a\\.b', 'axb', false],
    ['\\x41\\x{42}', 'AB', true],
    ['😀+', '😀😀😀', true],
    ['.', '😀', true], // one code point
    ['..', '😀', false],
    ['[α-ω]+', 'αβγ', true],
    ['(?P<id>[0-9]+)-(?<rest>.*)', '42-x', true],
    ['a*?b+?', 'aab', true], // lazy quantifiers: same full-match result
    ['', '', true],
    ['', 'x', false],
    ['a|', '', true],
  ])('%s on %j → %s', (pattern, input, want) => {
    expect(compileSafeRegex(pattern).test(input)).toBe(want);
  });

  it('ignoreCase argument folds literals and classes', () => {
    const r = compileSafeRegex('abc[x-z]', true);
    expect(r.test('ABCY')).toBe(true);
    expect(r.test('abcw')).toBe(false);
  });

  it('is reusable and gives the same answers warm and cold (lazy DFA cache)', () => {
    const r = compileSafeRegex('(foo|bar)+[0-9]{2,4}');
    const inputs = ['foo12', 'barfoo1234', 'foo1', 'bazz12', 'foobarfoo99999', 'bar00'];
    const first = inputs.map((i) => r.test(i));
    for (let k = 0; k < 5; k++) expect(inputs.map((i) => r.test(i))).toEqual(first);
    expect(first).toEqual([true, true, false, false, false, true]);
  });

  it('a pattern with more DFA states than the cache still matches correctly (NFA fallback)', () => {
    // (a|b)*a(a|b){12}: the classic exponential-DFA pattern (2^13 states).
    const r = compileSafeRegex('(a|b)*a(a|b){12}');
    let s = '';
    for (let i = 0; i < 400; i++) s += i % 3 === 0 ? 'a' : 'b';
    const want = s.length >= 13 && s[s.length - 13] === 'a';
    expect(r.test(s)).toBe(want);
    expect(r.test(`${s}a${'b'.repeat(12)}`)).toBe(true);
    expect(r.test(`${s}b${'b'.repeat(12)}`)).toBe(false);
  });
});

describe('regex bombs run in linear time', () => {
  const bombs: [string, string][] = [
    ['(a+)+$', `${'a'.repeat(50_000)}!`],
    ['(a*)*b', 'a'.repeat(50_000)],
    ['(a|aa)+c', 'a'.repeat(50_000)],
    ['(.*a){12}', `${'a'.repeat(5_000)}b`],
    ['(x+x+)+y', 'x'.repeat(50_000)],
    ['^(([a-z])+.)+[A-Z]([a-z])+$', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!'.repeat(500)],
  ];
  it.each(bombs.map(([pattern, input]) => ({ pattern, input, n: input.length })))(
    '$pattern on $n chars',
    ({ pattern, input }) => {
      const r = compileSafeRegex(pattern);
      const t0 = performance.now();
      const got = r.test(input);
      const ms = performance.now() - t0;
      expect(got).toBe(false);
      // A backtracking engine needs ~forever here; linear time is a few ms even on a loaded CI box.
      expect(ms).toBeLessThan(1500);
    },
  );

  it('the same bomb that fails quickly also matches quickly when the input is valid', () => {
    // V8's backtracking RegExp takes 2^n steps for (a+)+$ on "a…a!"; it is never run here.
    const r = compileSafeRegex('(a+)+$');
    expect(r.test('a'.repeat(50_000))).toBe(true);
  });
});

describe('checkRegex: rejected at build time', () => {
  it.each([
    ['(a)\\1', 'backreferences'],
    ['(?=x)y', 'lookaround'],
    ['(?!x)y', 'lookaround'],
    ['(?<=x)y', 'lookaround'],
    ['(?<!x)y', 'lookaround'],
    ['a**', 'bad repetition operator'],
    ['a++', 'possessive'],
    ['*a', 'missing argument'],
    ['a{1001}', 'bad repetition count'],
    ['a{3,2}', 'bad repetition count'],
    ['\\p{L}', 'Unicode classes'],
    ['(?m)^a', 'unsupported group flag'],
    ['[z-a]', 'bad character class range'],
    ['[abc', 'missing closing ]'],
    ['(abc', 'missing closing )'],
    ['abc)', "unexpected ')'"],
    ['\\', 'trailing backslash'],
    ['\\q', 'invalid escape'],
    ['[[:nope:]]', 'unknown POSIX class'],
    [
      '(((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((a)))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))',
      'nested deeper',
    ],
    ['(a{1000}){1000}', 'too large'],
  ])('%s: %s', (pattern, why) => {
    expect(checkRegex(pattern)).toContain(why);
  });

  it('accepts what it supports', () => {
    expect(checkRegex('/api/v[0-9]+/(users|groups)/[^/]+')).toBeNull();
  });
});

describe('outer anchors', () => {
  it.each([
    ['^/static/.*$', '/static/a', true],
    ['^/static/.*$', '/x/static/a', false],
    ['^abc$', 'abc', true],
    ['\\Aabc\\z', 'abc', true],
    ['a^b', 'ab', false], // an inner anchor can never hold
    ['^', '', true],
    ['$', 'x', false],
  ])('%s on %j → %s', (pattern, input, want) => {
    expect(compileSafeRegex(pattern).test(input)).toBe(want);
  });
});
