#!/usr/bin/env node
/** ztunnel entry point: config, create, run; SIGTERM drains then exits. */
import { exitOnTermination } from '../../pkg/drain/index.ts';
import { describeError } from '../../pkg/errors/index.ts';
import { createLogger } from '../../pkg/telemetry/index.ts';
import { Ztunnel } from './app.ts';
import { loadConfig } from './config.ts';

const boot = createLogger({ component: 'ztunnel' });
try {
  const config = loadConfig();
  const logger = createLogger({
    component: 'ztunnel',
    level: config.logLevel,
    base: { node: config.nodeName, pod: config.podName },
  });
  const z = await Ztunnel.create({ config, logger });
  exitOnTermination(z.drain, { graceMs: config.drainGraceMs, logger });
  await z.run();
} catch (err) {
  boot.fatal({ err: describeError(err) }, 'ztunnel failed to start');
  process.exit(1);
}
