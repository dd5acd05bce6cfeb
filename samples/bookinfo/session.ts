/**
 * productpage's login session: a signed `session` cookie holding the user name, like upstream's Flask session
 * (which is also a client-side signed cookie named `session`). The key is fixed by default so every
 * productpage replica accepts every other replica's cookie, as upstream's hard-coded key does; it is a demo
 * login, not an authentication system.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const SESSION_COOKIE = 'session';
const DEFAULT_KEY = 'bookinfo-sample-session-key';
/** Longest user name kept; longer ones are cut (the name goes into a header on every backend call). */
const MAX_USER_LENGTH = 256;

export class SessionCodec {
  private readonly key: string;

  constructor(key: string | null) {
    this.key = key ?? DEFAULT_KEY;
  }

  encode(user: string): string {
    const payload = Buffer.from(JSON.stringify({ user: user.slice(0, MAX_USER_LENGTH) })).toString(
      'base64url',
    );
    return `${payload}.${this.sign(payload)}`;
  }

  /** The user of a valid cookie value; null for anything tampered, malformed or empty. */
  decode(value: string): string | null {
    const dot = value.lastIndexOf('.');
    if (dot <= 0) return null;
    const payload = value.slice(0, dot);
    const given = Buffer.from(value.slice(dot + 1));
    const want = Buffer.from(this.sign(payload));
    if (given.length !== want.length || !timingSafeEqual(given, want)) return null;
    try {
      const parsed = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as unknown;
      if (typeof parsed === 'object' && parsed !== null && 'user' in parsed) {
        const user = (parsed as { user: unknown }).user;
        return typeof user === 'string' && user.length > 0 ? user : null;
      }
    } catch {
      // fall through: not our cookie
    }
    return null;
  }

  private sign(payload: string): string {
    return createHmac('sha256', this.key).update(payload).digest('base64url');
  }
}

/** The value of one cookie from a `Cookie` header, or null. */
export function readCookie(header: string | undefined, name: string): string | null {
  if (!header) return null;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq === -1) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return null;
}

export function setSessionCookie(value: string): string {
  return `${SESSION_COOKIE}=${value}; HttpOnly; Path=/`;
}

export function clearSessionCookie(): string {
  return `${SESSION_COOKIE}=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; HttpOnly; Path=/`;
}
