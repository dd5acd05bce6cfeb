#!/usr/bin/env node
/**
 * The lab supervisor process: `node lab/main.ts supervise --root <root>` (started detached by
 * `ambientctl lab up`; see lab/cluster/supervisor.ts). Reads <root>/lab.json, builds the lab, reports its
 * progress in <root>/supervisor.json, serves <root>/control.sock, and on SIGTERM/SIGINT takes everything
 * down again. Logs (JSON lines) go to stdout, which `up` points at <root>/logs/supervisor.log.
 */
import { parseArgs } from 'node:util';
import { describeError } from '../pkg/errors/index.ts';
import { createLogger } from '../pkg/telemetry/index.ts';
import { ControlServer } from './cluster/control.ts';
import { labPaths, requireConfig } from './cluster/paths.ts';
import { removeRunFiles, type SupervisorStatus, writePidFile, writeStatus } from './cluster/state.ts';
import { LabSupervisor, type StepReporter } from './cluster/supervisor.ts';

const { values, positionals } = parseArgs({
  args: process.argv.slice(2),
  options: { root: { type: 'string' } },
  allowPositionals: true,
});
if (positionals[0] !== 'supervise' || typeof values.root !== 'string') {
  process.stderr.write('usage: node lab/main.ts supervise --root <lab root>\n');
  process.exit(2);
}

const paths = labPaths(values.root);
const config = requireConfig(paths);
const logger = createLogger({ component: 'lab', level: config.logLevel, base: { prefix: config.prefix } });
writePidFile(paths);

const status: SupervisorStatus = {
  pid: process.pid,
  phase: 'starting',
  prefix: config.prefix,
  block: config.block,
  startedAt: new Date().toISOString(),
  steps: [],
};
writeStatus(paths, status);

let t0 = performance.now();
const steps: StepReporter = {
  start(name) {
    t0 = performance.now();
    status.steps.push({ name, state: 'running' });
    writeStatus(paths, status);
    logger.info({ step: name }, 'step started');
  },
  done(detail) {
    const s = status.steps.at(-1);
    if (!s) return;
    s.state = 'done';
    s.ms = Math.round(performance.now() - t0);
    if (detail) s.detail = detail;
    writeStatus(paths, status);
    logger.info({ step: s.name, ms: s.ms, detail }, 'step done');
  },
};

let supervisor: LabSupervisor | null = null;
let control: ControlServer | null = null;
let shuttingDown = false;

async function shutdown(why: string): Promise<void> {
  if (shuttingDown) return;
  shuttingDown = true;
  logger.info({ why }, 'shutting down the lab');
  status.phase = 'stopping';
  writeStatus(paths, status);
  await control?.close().catch(() => undefined);
  await supervisor?.stop();
  removeRunFiles(paths);
  process.exit(0);
}

process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
process.on('SIGHUP', () => undefined);
process.on('uncaughtException', (err) => {
  logger.fatal({ err: describeError(err) }, 'BUG: uncaught exception in the lab supervisor');
  void shutdown('uncaught exception');
});
process.on('unhandledRejection', (err) => {
  logger.error({ err: describeError(err) }, 'BUG: unhandled rejection in the lab supervisor');
});

try {
  supervisor = new LabSupervisor({ config, paths, logger, steps });
  await supervisor.start();
  if (shuttingDown) await new Promise(() => undefined);
  control = await ControlServer.listen(paths.controlSocket, {
    status: () => ({ ...status, lab: supervisor?.status() }),
    execTarget: (ns, pod, container) => supervisor?.execTarget(ns, pod, container) ?? null,
    exec: (req) =>
      (supervisor as LabSupervisor).exec(req.namespace, req.pod, req.argv, {
        ...(req.container ? { container: req.container } : {}),
        ...(req.timeoutMs ? { timeoutMs: req.timeoutMs } : {}),
        ...(req.input !== undefined ? { input: req.input } : {}),
      }),
    shutdown: () => void shutdown('control socket'),
  });
  const api = supervisor.controlPlane?.api;
  status.phase = 'ready';
  status.readyAt = new Date().toISOString();
  if (api) status.apiUrl = api.url;
  status.kubeconfig = paths.kubeconfig;
  status.nodes = (supervisor.network?.nodes ?? []).map((n) => ({
    name: n.name,
    ip: n.ip,
    podCidr: n.podCidr,
    netns: n.netns,
  }));
  writeStatus(paths, status);
  logger.info({ apiUrl: status.apiUrl, kubeconfig: paths.kubeconfig }, 'lab ready');
} catch (err) {
  // A shutdown requested while starting finishes (and exits) on its own.
  if (shuttingDown) await new Promise(() => undefined);
  const s = status.steps.at(-1);
  if (s && s.state === 'running') s.state = 'failed';
  status.phase = 'failed';
  status.error = describeError(err);
  writeStatus(paths, status);
  logger.fatal({ err: describeError(err) }, 'the lab did not start');
  process.exit(1);
}
