#!/usr/bin/env node
/** waypoint entry point: config, create, run; SIGTERM drains then exits. */
import { exitOnTermination } from '../../pkg/drain/index.ts';
import { describeError } from '../../pkg/errors/index.ts';
import { createLogger } from '../../pkg/telemetry/index.ts';
import { Waypoint } from './app.ts';
import { loadConfig } from './config.ts';
import { StaticConfigSource } from './config-source.ts';

const boot = createLogger({ component: 'waypoint' });
try {
  const config = loadConfig();
  const logger = createLogger({
    component: 'waypoint',
    level: config.logLevel,
    base: { pod: config.podName, namespace: config.podNamespace },
  });
  if ((process.env.PROXY_TYPE ?? 'waypoint') !== 'waypoint') {
    logger.warn(
      { proxyType: process.env.PROXY_TYPE },
      'PROXY_TYPE is not "waypoint": ingress gateway listeners are not implemented here; serving HBONE only',
    );
  }
  const staticConfig = process.env.STATIC_CONFIG;
  const w = await Waypoint.create({
    config,
    logger,
    ...(staticConfig ? { configSource: StaticConfigSource.fromFile(staticConfig) } : {}),
  });
  exitOnTermination(w.drain, { graceMs: config.drainGraceMs, logger });
  await w.run();
} catch (err) {
  boot.fatal({ err: describeError(err) }, 'waypoint failed to start');
  process.exit(1);
}
