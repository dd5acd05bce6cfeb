import { describe, expect, it } from 'vitest';
import {
  formatLabelSelector,
  labelSelectorFromObject,
  matchesFields,
  matchesLabels,
  parseFieldSelector,
  parseLabelSelector,
} from './selectors.ts';

const LABELS = { app: 'web', tier: 'front', version: '3' };

describe('label selectors', () => {
  it.each([
    ['', true],
    ['app=web', true],
    ['app==web', true],
    ['app!=web', false],
    ['app!=db', true],
    ['missing!=x', true],
    ['app in (web,db)', true],
    ['app in (db)', false],
    ['app notin (db, cache)', true],
    ['tier', true],
    ['!tier', false],
    ['!missing', true],
    ['app=web,tier in (front),!missing', true],
    ['version>2', true],
    ['version<3', false],
  ])('%j → %s', (sel, want) => {
    expect(matchesLabels(parseLabelSelector(sel), LABELS)).toBe(want);
  });
  it.each(['a in (', 'a b', '=x', 'app=we b', 'x>y', 'Bad Key=1', 'a,,b'])('rejects %j', (sel) => {
    expect(() => parseLabelSelector(sel)).toThrow(/unable to parse requirement/);
  });
  it('converts metav1.LabelSelector objects and formats them', () => {
    const sel = labelSelectorFromObject({
      matchLabels: { app: 'web' },
      matchExpressions: [
        { key: 'tier', operator: 'In', values: ['front', 'back'] },
        { key: 'x', operator: 'DoesNotExist' },
      ],
    });
    expect(matchesLabels(sel, LABELS)).toBe(true);
    expect(formatLabelSelector(sel)).toBe('app=web,tier in (front,back),!x');
    expect(labelSelectorFromObject(undefined)).toBeNull();
    expect(matchesLabels(null, LABELS)).toBe(false);
    expect(() => labelSelectorFromObject({ matchExpressions: [{ key: 'a', operator: 'Near' }] })).toThrow();
  });
});

describe('field selectors', () => {
  const fields = { 'metadata.name': 'a,b', 'spec.nodeName': 'n1', 'status.phase': 'Running' };
  it.each([
    ['spec.nodeName=n1', true],
    ['spec.nodeName==n1', true],
    ['spec.nodeName!=n1', false],
    ['status.phase=Running,spec.nodeName=n1', true],
    ['metadata.name=a\\,b', true],
    ['spec.nodeName=', false],
  ])('%j → %s', (sel, want) => {
    expect(matchesFields(parseFieldSelector(sel), fields)).toBe(want);
  });
  it('rejects malformed selectors', () => {
    expect(() => parseFieldSelector('nonsense')).toThrow();
  });
});
