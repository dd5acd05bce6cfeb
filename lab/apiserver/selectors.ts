/**
 * Label and field selectors, with the grammar of apimachinery `pkg/labels` and `pkg/fields`:
 * `a=b,c!=d,e in (f,g),h notin (i),j,!k` and `metadata.name=x,spec.nodeName!=y`.
 */
import { isObject, type JsonObject, stringMap } from './json.ts';
import { type ApiError, badRequest } from './status.ts';

export type LabelOp = 'in' | 'notin' | 'exists' | '!exists' | 'gt' | 'lt';

export interface LabelRequirement {
  readonly key: string;
  readonly op: LabelOp;
  readonly values: readonly string[];
}

/** A parsed selector; an empty list matches everything. `null` (not a list) means "matches nothing". */
export type LabelSelector = readonly LabelRequirement[] | null;

const QUALIFIED_NAME =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

function parseError(sel: string, why: string): ApiError {
  return badRequest(`unable to parse requirement: ${why} (selector "${sel}")`);
}

function checkKey(sel: string, key: string): void {
  if (!key || key.length > 316 || !QUALIFIED_NAME.test(key))
    throw parseError(sel, `invalid label key "${key}"`);
}

function checkValue(sel: string, v: string): void {
  if (v.length > 63 || !LABEL_VALUE.test(v)) throw parseError(sel, `invalid label value "${v}"`);
}

/** Splits on commas that are not inside parentheses. */
function splitTop(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === ',' && depth === 0) {
      out.push(s.slice(start, i));
      start = i + 1;
    }
  }
  out.push(s.slice(start));
  return out;
}

/** Parses the string form used in `?labelSelector=`. Throws 400 on bad syntax. */
export function parseLabelSelector(sel: string): LabelRequirement[] {
  const out: LabelRequirement[] = [];
  if (sel.trim() === '') return out;
  for (const raw of splitTop(sel)) {
    const part = raw.trim();
    if (part === '') throw parseError(sel, 'empty requirement');
    let m = /^!\s*([^\s!=<>()]+)$/.exec(part);
    if (m?.[1]) {
      checkKey(sel, m[1]);
      out.push({ key: m[1], op: '!exists', values: [] });
      continue;
    }
    m = /^([^\s!=<>()]+)\s+(in|notin)\s*\(([^()]*)\)$/.exec(part);
    if (m?.[1] && m[2] && m[3] !== undefined) {
      checkKey(sel, m[1]);
      const values = m[3].split(',').map((v) => v.trim());
      for (const v of values) checkValue(sel, v);
      out.push({ key: m[1], op: m[2] === 'in' ? 'in' : 'notin', values });
      continue;
    }
    m = /^([^\s!=<>()]+)\s*(==|=|!=|>|<)\s*([^\s!=<>(),]*)$/.exec(part);
    if (m?.[1] && m[2] && m[3] !== undefined) {
      checkKey(sel, m[1]);
      const v = m[3];
      if (m[2] === '>' || m[2] === '<') {
        if (!/^-?\d+$/.test(v))
          throw parseError(sel, `for 'gt', 'lt' operators, the value must be an integer`);
        out.push({ key: m[1], op: m[2] === '>' ? 'gt' : 'lt', values: [v] });
        continue;
      }
      checkValue(sel, v);
      out.push({ key: m[1], op: m[2] === '!=' ? 'notin' : 'in', values: [v] });
      continue;
    }
    m = /^([^\s!=<>()]+)$/.exec(part);
    if (m?.[1]) {
      checkKey(sel, m[1]);
      out.push({ key: m[1], op: 'exists', values: [] });
      continue;
    }
    throw parseError(
      sel,
      `found '${part}', expected: key, !key, key=value, key!=value, key in (..), key notin (..)`,
    );
  }
  return out;
}

export function matchesLabels(sel: LabelSelector, labels: Readonly<Record<string, string>>): boolean {
  if (sel === null) return false;
  for (const r of sel) {
    const has = Object.hasOwn(labels, r.key);
    const v = labels[r.key];
    switch (r.op) {
      case 'in':
        if (!has || v === undefined || !r.values.includes(v)) return false;
        break;
      case 'notin':
        if (has && v !== undefined && r.values.includes(v)) return false;
        break;
      case 'exists':
        if (!has) return false;
        break;
      case '!exists':
        if (has) return false;
        break;
      case 'gt':
      case 'lt': {
        if (!has || v === undefined || !/^-?\d+$/.test(v)) return false;
        const n = Number(v);
        const bound = Number(r.values[0]);
        if (r.op === 'gt' ? !(n > bound) : !(n < bound)) return false;
        break;
      }
    }
  }
  return true;
}

/**
 * Converts a `metav1.LabelSelector` object (matchLabels/matchExpressions) to requirements. Returns `null` for
 * a missing selector (matches nothing, as workload controllers treat it) and throws on malformed operators.
 */
export function labelSelectorFromObject(v: unknown): LabelSelector {
  if (!isObject(v)) return null;
  const out: LabelRequirement[] = [];
  for (const [k, val] of Object.entries(stringMap(v.matchLabels)))
    out.push({ key: k, op: 'in', values: [val] });
  const exprs = Array.isArray(v.matchExpressions) ? v.matchExpressions : [];
  for (const e of exprs) {
    if (!isObject(e) || typeof e.key !== 'string') throw badRequest('invalid label selector expression');
    const values = Array.isArray(e.values) ? e.values.filter((x): x is string => typeof x === 'string') : [];
    switch (e.operator) {
      case 'In':
        out.push({ key: e.key, op: 'in', values });
        break;
      case 'NotIn':
        out.push({ key: e.key, op: 'notin', values });
        break;
      case 'Exists':
        out.push({ key: e.key, op: 'exists', values: [] });
        break;
      case 'DoesNotExist':
        out.push({ key: e.key, op: '!exists', values: [] });
        break;
      default:
        throw badRequest(`"${String(e.operator)}" is not a valid label selector operator`);
    }
  }
  return out;
}

/** Renders requirements back to the string form (for Scale.status.selector and kubectl describe). */
export function formatLabelSelector(sel: LabelSelector): string {
  if (sel === null) return '';
  return sel
    .map((r) => {
      switch (r.op) {
        case 'in':
          return r.values.length === 1 ? `${r.key}=${r.values[0]}` : `${r.key} in (${r.values.join(',')})`;
        case 'notin':
          return r.values.length === 1
            ? `${r.key}!=${r.values[0]}`
            : `${r.key} notin (${r.values.join(',')})`;
        case 'exists':
          return r.key;
        case '!exists':
          return `!${r.key}`;
        case 'gt':
          return `${r.key}>${r.values[0]}`;
        case 'lt':
          return `${r.key}<${r.values[0]}`;
      }
      return '';
    })
    .join(',');
}

export interface FieldRequirement {
  readonly field: string;
  readonly op: '=' | '!=';
  readonly value: string;
}

/** Splits on `sep` not preceded by a backslash and unescapes `\,` `\=` `\\` (apimachinery fields.EscapeValue). */
function splitEscaped(s: string, sep: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '\\' && i + 1 < s.length) {
      cur += c + s[i + 1];
      i++;
    } else if (c === sep) {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  out.push(cur);
  return out;
}

function unescapeField(s: string): string {
  return s.replace(/\\(.)/g, '$1');
}

export function parseFieldSelector(sel: string): FieldRequirement[] {
  const out: FieldRequirement[] = [];
  if (sel.trim() === '') return out;
  for (const part of splitEscaped(sel, ',')) {
    const m = /^([^=!\s]+)\s*(==|=|!=)(.*)$/s.exec(part.trim());
    if (!m?.[1] || !m[2] || m[3] === undefined)
      throw badRequest(`invalid selector: '${sel}'; can't understand '${part}'`);
    out.push({ field: m[1], op: m[2] === '!=' ? '!=' : '=', value: unescapeField(m[3]) });
  }
  return out;
}

/** Field values an object exposes to field selectors. */
export type FieldSet = Readonly<Record<string, string>>;

export function matchesFields(sel: readonly FieldRequirement[], fields: FieldSet): boolean {
  for (const r of sel) {
    const v = fields[r.field] ?? '';
    if (r.op === '=' ? v !== r.value : v === r.value) return false;
  }
  return true;
}

/** Labels of any object, tolerating malformed metadata. */
export function labelsOf(obj: JsonObject): Record<string, string> {
  return isObject(obj.metadata) ? stringMap(obj.metadata.labels) : {};
}
