#!/usr/bin/env node
/**
 * istiod entry point: read config, connect to Kubernetes, create, run, drain on SIGTERM.
 */
import { exitOnTermination } from '../../pkg/drain/index.ts';
import { describeError } from '../../pkg/errors/index.ts';
import { loadKubeConfig } from '../../pkg/kube/index.ts';
import { createLogger } from '../../pkg/telemetry/index.ts';
import { Istiod } from './app.ts';
import { loadConfig } from './config.ts';

const bootLogger = createLogger({ component: 'istiod' });
try {
  const config = loadConfig();
  const logger = createLogger({ component: 'istiod', level: config.logLevel, base: { pod: config.podName } });
  const istiod = await Istiod.create({
    config,
    kubeConfig: loadKubeConfig(config.kubeconfig ?? undefined),
    logger,
  });
  exitOnTermination(istiod.drain, { graceMs: config.drainGraceMs, logger });
  await istiod.run();
} catch (err) {
  bootLogger.fatal({ err: describeError(err) }, 'istiod failed to start');
  process.exit(1);
}
