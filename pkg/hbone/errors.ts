import { type ErrorCode, MeshError, type MeshErrorOptions } from '../errors/index.ts';

/**
 * A failed HBONE connect: `status` is the CONNECT response status when the peer answered (400, 401, 503, …)
 * and null when the tunnel never got an answer (TCP/TLS/HTTP/2 failure, reset, timeout).
 */
export class HboneError extends MeshError {
  readonly status: number | null;

  constructor(
    code: ErrorCode,
    message: string,
    status: number | null = null,
    options: MeshErrorOptions = {},
  ) {
    super(code, message, options);
    this.status = status;
  }
}
