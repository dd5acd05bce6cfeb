/**
 * Kubernetes `Status` errors (apimachinery `pkg/api/errors`): every failure a client sees is one of these, with
 * the same HTTP code, `reason` and message shape as kube-apiserver so client-go/client-node/kubectl react the
 * same way (e.g. `IsNotFound`, `IsConflict`, 410 → relist).
 */
import type { JsonObject } from './json.ts';

export interface StatusCause {
  readonly reason: string;
  readonly message: string;
  readonly field: string;
}

export interface StatusDetails {
  name?: string;
  group?: string;
  kind?: string;
  uid?: string;
  causes?: StatusCause[];
  retryAfterSeconds?: number;
}

export interface StatusObject {
  kind: 'Status';
  apiVersion: 'v1';
  metadata: JsonObject;
  status: 'Failure' | 'Success';
  message: string;
  reason: string;
  details?: StatusDetails;
  code: number;
}

/** An API-level failure carrying the Status object to return. */
export class ApiError extends Error {
  override readonly name = 'ApiError';
  readonly status: StatusObject;

  constructor(code: number, reason: string, message: string, details?: StatusDetails) {
    super(message);
    const status: StatusObject = {
      kind: 'Status',
      apiVersion: 'v1',
      metadata: {},
      status: 'Failure',
      message,
      reason,
      code,
    };
    if (details) status.details = details;
    this.status = status;
  }

  get code(): number {
    return this.status.code;
  }

  get reason(): string {
    return this.status.reason;
  }
}

/** What a resource is called in messages: `pods`, `deployments.apps`. */
export interface QualifiedResource {
  readonly group: string;
  readonly resource: string;
}

function qualified(r: QualifiedResource): string {
  return r.group ? `${r.resource}.${r.group}` : r.resource;
}

function resourceDetails(r: QualifiedResource, name: string): StatusDetails {
  const d: StatusDetails = { name, kind: r.resource };
  if (r.group) d.group = r.group;
  return d;
}

export function notFound(r: QualifiedResource, name: string): ApiError {
  return new ApiError(404, 'NotFound', `${qualified(r)} "${name}" not found`, resourceDetails(r, name));
}

export function alreadyExists(r: QualifiedResource, name: string): ApiError {
  return new ApiError(
    409,
    'AlreadyExists',
    `${qualified(r)} "${name}" already exists`,
    resourceDetails(r, name),
  );
}

export function conflict(r: QualifiedResource, name: string, why: string): ApiError {
  return new ApiError(
    409,
    'Conflict',
    `Operation cannot be fulfilled on ${qualified(r)} "${name}": ${why}`,
    resourceDetails(r, name),
  );
}

export const STALE_OBJECT_MESSAGE =
  'the object has been modified; please apply your changes to the latest version and try again';

export function badRequest(message: string): ApiError {
  return new ApiError(400, 'BadRequest', message);
}

export function forbidden(message: string, details?: StatusDetails): ApiError {
  return new ApiError(403, 'Forbidden', message, details);
}

export function unauthorized(): ApiError {
  return new ApiError(401, 'Unauthorized', 'Unauthorized');
}

export function methodNotAllowed(method: string): ApiError {
  return new ApiError(
    405,
    'MethodNotAllowed',
    `the server does not allow this method on the requested resource`,
    {
      causes: [{ reason: 'MethodNotAllowed', message: method, field: '' }],
    },
  );
}

export function notAcceptable(accept: string): ApiError {
  return new ApiError(406, 'NotAcceptable', `only the following media types are accepted: ${accept}`);
}

export function unsupportedMediaType(contentType: string, supported: readonly string[]): ApiError {
  return new ApiError(
    415,
    'UnsupportedMediaType',
    `the body of the request was in an unknown format - accepted media types include: ${supported.join(', ')}`,
    { causes: [{ reason: 'UnsupportedMediaType', message: contentType, field: '' }] },
  );
}

export function entityTooLarge(limit: number): ApiError {
  return new ApiError(413, 'RequestEntityTooLarge', `Request entity too large: limit is ${limit}`);
}

/** 410 for a resourceVersion older than the retained history (client-go and client-node relist on it). */
export function gone(message: string): ApiError {
  return new ApiError(410, 'Expired', message);
}

export function resourceNotFound(): ApiError {
  return new ApiError(404, 'NotFound', 'the server could not find the requested resource', {});
}

export function internalError(message: string): ApiError {
  return new ApiError(500, 'InternalError', `Internal error occurred: ${message}`, {
    causes: [{ reason: '', message, field: '' }],
  });
}

export function tooManyRequests(message: string): ApiError {
  return new ApiError(429, 'TooManyRequests', message, { retryAfterSeconds: 1 });
}

/** One field problem, in the shape of apimachinery's `field.Error`. */
export interface FieldError {
  readonly field: string;
  readonly type: FieldErrorType;
  /** The bad value (rendered in the message like `Invalid value: "x"`), or undefined. */
  readonly value?: unknown;
  readonly detail?: string;
}

export type FieldErrorType =
  | 'Required'
  | 'Invalid'
  | 'NotSupported'
  | 'Duplicate'
  | 'Forbidden'
  | 'TooLong'
  | 'TooMany';

const REASONS: Readonly<Record<FieldErrorType, string>> = {
  Required: 'FieldValueRequired',
  Invalid: 'FieldValueInvalid',
  NotSupported: 'FieldValueNotSupported',
  Duplicate: 'FieldValueDuplicate',
  Forbidden: 'FieldValueForbidden',
  TooLong: 'FieldValueTooLong',
  TooMany: 'FieldValueTooMany',
};

const LABELS: Readonly<Record<FieldErrorType, string>> = {
  Required: 'Required value',
  Invalid: 'Invalid value',
  NotSupported: 'Unsupported value',
  Duplicate: 'Duplicate value',
  Forbidden: 'Forbidden',
  TooLong: 'Too long',
  TooMany: 'Too many',
};

function renderValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (v === null) return 'null';
  const s = JSON.stringify(v) ?? 'undefined';
  return s.length > 100 ? `${s.slice(0, 97)}...` : s;
}

function fieldErrorMessage(e: FieldError): string {
  let msg = LABELS[e.type];
  const hasValue = e.type === 'Invalid' || e.type === 'NotSupported' || e.type === 'Duplicate';
  if (hasValue && e.value !== undefined) msg += `: ${renderValue(e.value)}`;
  if (e.detail) msg += `: ${e.detail}`;
  return msg;
}

/** 422 Invalid with one cause per field error: `Pod "x" is invalid: spec.containers: Required value`. */
export function invalid(kind: string, group: string, name: string, errors: readonly FieldError[]): ApiError {
  const causes = errors.map((e) => ({
    reason: REASONS[e.type],
    message: fieldErrorMessage(e),
    field: e.field,
  }));
  const parts = errors.map((e) => `${e.field}: ${fieldErrorMessage(e)}`);
  const summary = parts.length === 1 ? parts[0] : `[${parts.join(', ')}]`;
  const qualifiedKind = group ? `${kind}.${group}` : kind;
  const details: StatusDetails = { name, kind, causes };
  if (group) details.group = group;
  return new ApiError(422, 'Invalid', `${qualifiedKind} "${name}" is invalid: ${summary}`, details);
}

export function successStatus(details?: StatusDetails): JsonObject {
  const s: JsonObject = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success' };
  if (details) s.details = details;
  return s;
}
