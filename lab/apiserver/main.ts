/**
 * Standalone lab API server (debugging, and the child process of the durability test):
 *
 *   node lab/apiserver/main.ts --data-dir /tmp/lab [--port 6443] [--host 127.0.0.1] [--no-controllers]
 *     [--authorization RBAC|AlwaysAllow] [--history-window N] [--snapshot-every N]
 *
 * Prints one JSON line `{"url","port","kubeconfig","pid"}` on stdout once ready; SIGTERM/SIGINT stop it
 * cleanly (flush + snapshot). Logs go to stderr (LOG_LEVEL, default info).
 */
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { MeshError } from '../../pkg/errors/index.ts';
import { Controllers } from '../controllers/index.ts';
import { ApiServer } from './index.ts';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'data-dir': { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '0' },
      'history-window': { type: 'string' },
      'snapshot-every': { type: 'string' },
      'no-controllers': { type: 'boolean', default: false },
      authorization: { type: 'string', default: 'RBAC' },
    },
  });
  const dataDir = values['data-dir'];
  if (!dataDir) throw new MeshError('MESH_ERR_LAB_APISERVER_OPTIONS', '--data-dir is required');
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new MeshError('MESH_ERR_LAB_APISERVER_OPTIONS', `--port=${values.port} (expected 0-65535)`);
  const authorization = values.authorization === 'AlwaysAllow' ? 'AlwaysAllow' : 'RBAC';
  const logger = pino({ level: process.env.LOG_LEVEL ?? 'info' }, pino.destination(2));
  const api = await ApiServer.create({
    dataDir,
    host: values.host,
    port,
    authorization,
    logger,
    ...(values['history-window'] ? { historyWindow: Number(values['history-window']) } : {}),
    ...(values['snapshot-every'] ? { snapshotEvery: Number(values['snapshot-every']) } : {}),
  });
  const controllers = values['no-controllers'] ? null : await Controllers.create({ api, logger });
  controllers?.run();
  process.stdout.write(
    `${JSON.stringify({ url: api.url, port: api.port, kubeconfig: api.kubeconfigPath, pid: process.pid })}\n`,
  );
  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    await controllers?.close();
    await api.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
}

main().catch((err: unknown) => {
  process.stderr.write(
    `${err instanceof MeshError ? err.toString() : String((err as Error)?.stack ?? err)}\n`,
  );
  process.exit(1);
});
