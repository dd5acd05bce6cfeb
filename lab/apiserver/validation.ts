/**
 * Field validation helpers in the style of apimachinery `validation/field`: each check appends a `FieldError`
 * with the JSON path of the offending field, so a malformed object becomes one 422 with every cause listed.
 */
import { isIP } from 'node:net';
import { isInteger, isObject, type JsonObject } from './json.ts';
import type { NameRule } from './resources.ts';
import type { FieldError } from './status.ts';

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const QUALIFIED_NAME_PART = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const CONFIG_KEY = /^[-._a-zA-Z0-9]+$/;
const IANA_SVC_NAME = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;
/** Annotations of one object may not exceed 256 KiB in total (apimachinery TotalAnnotationSizeLimitB). */
const TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024;

export const SUBDOMAIN_MSG =
  "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
export const LABEL_MSG =
  "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_MSG =
  "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

export class Errors {
  readonly list: FieldError[] = [];

  required(field: string, detail?: string): void {
    this.list.push(detail ? { field, type: 'Required', detail } : { field, type: 'Required' });
  }

  invalid(field: string, value: unknown, detail: string): void {
    this.list.push({ field, type: 'Invalid', value, detail });
  }

  notSupported(field: string, value: unknown, supported: readonly string[]): void {
    this.list.push({
      field,
      type: 'NotSupported',
      value,
      detail: `supported values: ${supported.map((s) => `"${s}"`).join(', ')}`,
    });
  }

  duplicate(field: string, value: unknown): void {
    this.list.push({ field, type: 'Duplicate', value });
  }

  forbidden(field: string, detail: string): void {
    this.list.push({ field, type: 'Forbidden', detail });
  }

  immutable(field: string, value: unknown): void {
    this.invalid(field, value, 'field is immutable');
  }

  get empty(): boolean {
    return this.list.length === 0;
  }
}

export function isDns1123Label(s: string): boolean {
  return s.length <= 63 && DNS1123_LABEL.test(s);
}

export function isDns1123Subdomain(s: string): boolean {
  return s.length <= 253 && DNS1123_SUBDOMAIN.test(s);
}

export function isQualifiedName(s: string): boolean {
  const parts = s.split('/');
  if (parts.length > 2) return false;
  const name = parts[parts.length - 1] as string;
  if (name.length === 0 || name.length > 63 || !QUALIFIED_NAME_PART.test(name)) return false;
  if (parts.length === 2) {
    const prefix = parts[0] as string;
    if (prefix.length === 0 || !isDns1123Subdomain(prefix)) return false;
  }
  return true;
}

export function isLabelValue(s: string): boolean {
  return s.length <= 63 && LABEL_VALUE.test(s);
}

export function isConfigKey(s: string): boolean {
  return s.length > 0 && s.length <= 253 && CONFIG_KEY.test(s) && s !== '.' && s !== '..';
}

export function isIanaSvcName(s: string): boolean {
  return s.length <= 15 && IANA_SVC_NAME.test(s) && /[a-z]/.test(s) && !s.includes('--');
}

export function validateName(errs: Errors, field: string, name: string, rule: NameRule): void {
  switch (rule) {
    case 'label':
      if (!isDns1123Label(name)) errs.invalid(field, name, LABEL_MSG);
      return;
    case 'dns1035':
      if (name.length > 63 || !DNS1035_LABEL.test(name)) errs.invalid(field, name, DNS1035_MSG);
      return;
    case 'subdomain':
      if (!isDns1123Subdomain(name)) errs.invalid(field, name, SUBDOMAIN_MSG);
      return;
    case 'path':
      if (name === '.' || name === '..' || name.includes('/') || name.includes('%'))
        errs.invalid(field, name, `may not be '.' or '..' and may not contain '/' or '%'`);
      return;
  }
}

/** Expects a string map; reports non-strings at their key path. */
export function validateStringMap(errs: Errors, field: string, v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (v === undefined || v === null) return out;
  if (!isObject(v)) {
    errs.invalid(field, v, 'must be a map of strings');
    return out;
  }
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== 'string') errs.invalid(`${field}.${k}`, val, 'must be a string');
    else out[k] = val;
  }
  return out;
}

export function validateLabels(errs: Errors, field: string, v: unknown): void {
  const labels = validateStringMap(errs, field, v);
  for (const [k, val] of Object.entries(labels)) {
    if (!isQualifiedName(k))
      errs.invalid(
        field,
        k,
        "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
      );
    if (!isLabelValue(val))
      errs.invalid(
        `${field}.${k}`,
        val,
        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
      );
  }
}

export function validateAnnotations(errs: Errors, field: string, v: unknown): void {
  const ann = validateStringMap(errs, field, v);
  let total = 0;
  for (const [k, val] of Object.entries(ann)) {
    if (!isQualifiedName(k.toLowerCase()))
      errs.invalid(field, k, 'name part must consist of alphanumeric characters');
    total += k.length + val.length;
  }
  if (total > TOTAL_ANNOTATION_SIZE_LIMIT)
    errs.list.push({
      field,
      type: 'TooLong',
      detail: `must have at most ${TOTAL_ANNOTATION_SIZE_LIMIT} bytes`,
    });
}

/** Generic ObjectMeta checks shared by every kind (names are checked by the caller with the kind's rule). */
export function validateObjectMeta(errs: Errors, md: JsonObject): void {
  for (const f of ['name', 'generateName', 'namespace', 'uid', 'resourceVersion'] as const) {
    if (md[f] !== undefined && typeof md[f] !== 'string')
      errs.invalid(`metadata.${f}`, md[f], 'must be a string');
  }
  validateLabels(errs, 'metadata.labels', md.labels);
  validateAnnotations(errs, 'metadata.annotations', md.annotations);
  if (md.finalizers !== undefined) {
    if (!Array.isArray(md.finalizers))
      errs.invalid('metadata.finalizers', md.finalizers, 'must be a list of strings');
    else
      md.finalizers.forEach((f, i) => {
        if (typeof f !== 'string' || !isQualifiedName(f))
          errs.invalid(`metadata.finalizers[${i}]`, f, 'must be a qualified name');
      });
  }
  if (md.ownerReferences !== undefined) {
    if (!Array.isArray(md.ownerReferences))
      errs.invalid('metadata.ownerReferences', md.ownerReferences, 'must be a list');
    else {
      let controllers = 0;
      md.ownerReferences.forEach((r, i) => {
        const f = `metadata.ownerReferences[${i}]`;
        if (!isObject(r)) {
          errs.invalid(f, r, 'must be an object');
          return;
        }
        for (const k of ['apiVersion', 'kind', 'name', 'uid'] as const)
          if (typeof r[k] !== 'string' || r[k] === '') errs.required(`${f}.${k}`);
        if (r.controller === true) controllers++;
      });
      if (controllers > 1)
        errs.invalid(
          'metadata.ownerReferences',
          md.ownerReferences,
          'Only one reference can have Controller set to true',
        );
    }
  }
}

// ---- typed field readers that report problems -------------------------------------------------------------------

export function optString(errs: Errors, obj: JsonObject, key: string, field: string): string | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') {
    errs.invalid(field, v, 'must be a string');
    return undefined;
  }
  return v;
}

export function optInt(
  errs: Errors,
  obj: JsonObject,
  key: string,
  field: string,
  min?: number,
  max?: number,
): number | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (!isInteger(v)) {
    errs.invalid(field, v, 'must be an integer');
    return undefined;
  }
  if (min !== undefined && v < min) errs.invalid(field, v, `must be greater than or equal to ${min}`);
  if (max !== undefined && v > max) errs.invalid(field, v, `must be less than or equal to ${max}`);
  return v;
}

export function optBool(errs: Errors, obj: JsonObject, key: string, field: string): boolean | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') {
    errs.invalid(field, v, 'must be a boolean');
    return undefined;
  }
  return v;
}

export function optObject(errs: Errors, obj: JsonObject, key: string, field: string): JsonObject | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) {
    errs.invalid(field, v, 'must be an object');
    return undefined;
  }
  return v;
}

export function optArray(errs: Errors, obj: JsonObject, key: string, field: string): unknown[] | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) {
    errs.invalid(field, v, 'must be a list');
    return undefined;
  }
  return v;
}

export function oneOf(errs: Errors, field: string, v: string | undefined, allowed: readonly string[]): void {
  if (v !== undefined && !allowed.includes(v)) errs.notSupported(field, v, allowed);
}

export function isValidIp(s: string): boolean {
  return isIP(s) !== 0;
}

/** int-or-string: an integer in range, or (if allowed) a name or a percentage. */
export function validateIntOrString(
  errs: Errors,
  field: string,
  v: unknown,
  opts: { min: number; max: number; names?: boolean; percent?: boolean },
): void {
  if (v === undefined || v === null) return;
  if (isInteger(v)) {
    if (v < opts.min || v > opts.max)
      errs.invalid(field, v, `must be between ${opts.min} and ${opts.max}, inclusive`);
    return;
  }
  if (typeof v === 'string') {
    if (opts.percent && /^\d+%$/.test(v)) return;
    if (opts.names && isIanaSvcName(v)) return;
    errs.invalid(
      field,
      v,
      opts.percent
        ? "a valid percent string must be a numeric string followed by an ending '%'"
        : "must contain at least one letter (a-z), and only lowercase alphanumerics or '-' (at most 15 characters)",
    );
    return;
  }
  errs.invalid(field, v, 'must be an integer or a string');
}
