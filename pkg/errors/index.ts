/**
 * One registry of stable error codes (CONVENTIONS.md habit 3). Every error a component reports to an operator
 * carries a `MESH_ERR_<AREA>_<WHAT>` code listed in `codes.ts`, a message with the concrete values, and a
 * `hint` where an operator mistake is likely. `docs/ERRORS.md` is checked against the registry by a test.
 */
import { CODES, type ErrorCode } from './codes.ts';

export { CODES, type ErrorCode } from './codes.ts';

export interface MeshErrorOptions {
  /** The lower-level error this one wraps (kept for logs; never shown to remote peers). */
  readonly cause?: unknown;
  /** Structured values for logs and metrics labels, e.g. `{ errno: 'EPERM', op: 'setns' }`. */
  readonly details?: Readonly<Record<string, string | number | boolean | undefined>>;
  /** Overrides the registry hint when the caller knows better. */
  readonly hint?: string;
}

export class MeshError extends Error {
  override readonly name = 'MeshError';
  readonly code: ErrorCode;
  readonly hint: string | null;
  readonly details: Readonly<Record<string, string | number | boolean | undefined>>;

  constructor(code: ErrorCode, message: string, options: MeshErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.hint = options.hint ?? CODES[code].hint ?? null;
    this.details = options.details ?? {};
  }

  /** `CODE: message (hint: …)`: the one-line form used in logs and CLI output. */
  override toString(): string {
    return `${this.code}: ${this.message}${this.hint ? ` (hint: ${this.hint})` : ''}`;
  }
}

export function isMeshError(err: unknown, code?: ErrorCode): err is MeshError {
  return err instanceof MeshError && (code === undefined || err.code === code);
}

/** Raise for a broken internal invariant: the message starts with `BUG:` so it is never mistaken for input. */
export function bug(message: string, details?: MeshErrorOptions['details']): MeshError {
  return new MeshError('MESH_ERR_INTERNAL_BUG', `BUG: ${message}`, details ? { details } : {});
}

/** A short string for any thrown value, for log fields; never includes secrets because callers pass errors. */
export function describeError(err: unknown): string {
  if (err instanceof MeshError) return err.toString();
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}
