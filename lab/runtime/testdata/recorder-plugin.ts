/**
 * A chained CNI plugin for tests: records its CNI_* environment and stdin config to
 * `<recordDir>/<CNI_COMMAND>-<CNI_CONTAINERID>.json` (recordDir from its config) and, on ADD, prints its
 * prevResult unchanged, as a chained plugin must. `failAdd: true` in its config makes ADD fail with a CNI
 * error (code 11, msg, details). Installed by the test as an executable wrapper in a node's CNI bin dir.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d: string) => {
  input += d;
});
process.stdin.on('end', () => {
  const conf = JSON.parse(input) as {
    recordDir: string;
    failAdd?: boolean;
    prevResult?: unknown;
    cniVersion: string;
  };
  const cmd = process.env.CNI_COMMAND ?? '';
  if (cmd === 'VERSION') {
    process.stdout.write(JSON.stringify({ cniVersion: '1.0.0', supportedVersions: ['0.4.0', '1.0.0'] }));
    return;
  }
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (k.startsWith('CNI_') && v !== undefined) env[k] = v;
  writeFileSync(
    join(conf.recordDir, `${cmd}-${env.CNI_CONTAINERID ?? 'none'}.json`),
    JSON.stringify({ env, stdin: conf }),
  );
  if (cmd === 'ADD' && conf.failAdd) {
    process.stdout.write(
      JSON.stringify({
        cniVersion: conf.cniVersion,
        code: 11,
        msg: 'recorder refuses',
        details: 'failAdd set',
      }),
    );
    process.exit(1);
  }
  if (cmd === 'ADD') process.stdout.write(JSON.stringify(conf.prevResult ?? {}));
});
