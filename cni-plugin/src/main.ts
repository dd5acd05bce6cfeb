#!/usr/bin/env node
/**
 * istio-cni node agent entry point (DaemonSet `istio-cni-node`, image `ambient-ts/install-cni:0.1.0`):
 * read config, connect to Kubernetes, create (bind everything), run (sync, re-adopt, install, ready),
 * drain on SIGTERM.
 */
import { exitOnTermination } from '../../pkg/drain/index.ts';
import { describeError } from '../../pkg/errors/index.ts';
import { loadKubeConfig } from '../../pkg/kube/index.ts';
import { createLogger } from '../../pkg/telemetry/index.ts';
import { IstioCniAgent } from './agent/app.ts';
import { loadConfig } from './agent/config.ts';
import { ApiKubeSource } from './agent/kube.ts';

const bootLogger = createLogger({ component: 'istio-cni' });
try {
  const config = loadConfig();
  const logger = createLogger({
    component: 'istio-cni',
    level: config.logLevel,
    base: { pod: config.podName, node: config.nodeName },
  });
  const kube = new ApiKubeSource(loadKubeConfig(config.kubeconfig ?? undefined), config.nodeName);
  const agent = await IstioCniAgent.create({ config, kube, logger });
  exitOnTermination(agent.drain, { graceMs: config.drainGraceMs, logger });
  await agent.run();
} catch (err) {
  bootLogger.fatal({ err: describeError(err) }, 'istio-cni agent failed to start');
  process.exit(1);
}
