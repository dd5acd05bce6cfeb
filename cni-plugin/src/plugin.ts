#!/usr/bin/env node
/**
 * istio-cni CNI plugin executable. The container runtime runs it once per pod sandbox operation with the
 * CNI_* environment and the network config on stdin (the node agent installs a wrapper script named
 * `istio-cni` into the node's CNI bin dir that execs Node 24 on this file). Only the CNI result or error
 * goes to stdout. Imports are kept to the minimum: Node start-up dominates the per-pod cost.
 */
import { readFileSync } from 'node:fs';
import { runPlugin } from './plugin/cni.ts';
import { fileLog, httpAgentClient } from './plugin/io.ts';

function readStdin(): string {
  try {
    return readFileSync(0, 'utf8');
  } catch {
    // No stdin (closed or a TTY): the config checks report it as a decode error.
    return '';
  }
}

const env = process.env;
const outcome = await runPlugin({
  env,
  // Installed: <CNI bin dir>/istio-cni.d/plugin.mjs, next to the agent's socket (see protocol.ts).
  selfDir: decodeURIComponent(new URL('.', import.meta.url).pathname).replace(/\/$/, ''),
  stdin: env.CNI_COMMAND === 'VERSION' && process.stdin.isTTY ? '' : readStdin(),
  agent: httpAgentClient,
  openLog: (config) =>
    fileLog(config, {
      command: env.CNI_COMMAND ?? null,
      containerId: env.CNI_CONTAINERID ?? null,
    }),
});
process.stdout.write(outcome.stdout, () => process.exit(outcome.exitCode));
