/** Rewrites the generated table in docs/ERRORS.md from pkg/errors/codes.ts. */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { updateErrorsPage } from '../pkg/errors/doc.ts';

const file = join(dirname(fileURLToPath(import.meta.url)), '..', 'docs', 'ERRORS.md');
const next = updateErrorsPage(readFileSync(file, 'utf8'));
if (next === null) {
  console.error(`${file}: generated-section markers not found`);
  process.exit(1);
}
writeFileSync(file, next);
