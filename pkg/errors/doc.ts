/**
 * Renders the error-code table of docs/ERRORS.md from the registry. The table sits between two markers so the
 * page keeps hand-written prose around it; `npm run gen:errors` rewrites it and `errors.test.ts` fails when the
 * committed page is stale.
 */
import { CODES } from './codes.ts';

export const BEGIN_MARKER = '<!-- BEGIN GENERATED: error codes (npm run gen:errors) -->';
export const END_MARKER = '<!-- END GENERATED -->';

function cell(s: string): string {
  return s.replaceAll('|', '\\|').replaceAll('\n', ' ');
}

export function renderErrorTable(): string {
  const rows = Object.entries(CODES)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([code, spec]) => `| \`${code}\` | ${cell(spec.summary)} | ${spec.hint ? cell(spec.hint) : ''} |`);
  return ['| code | meaning | hint |', '|---|---|---|', ...rows].join('\n');
}

/** Returns the page with its generated section replaced, or null when the markers are missing. */
export function updateErrorsPage(page: string): string | null {
  const begin = page.indexOf(BEGIN_MARKER);
  const end = page.indexOf(END_MARKER);
  if (begin === -1 || end === -1 || end < begin) return null;
  return `${page.slice(0, begin + BEGIN_MARKER.length)}\n${renderErrorTable()}\n${page.slice(end)}`;
}
