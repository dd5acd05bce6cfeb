/**
 * The lab's control plane front door: the Kubernetes-compatible API server and the controllers beside it.
 *
 *   const cp = await startControlPlane({ dataDir: '/var/lib/amb-lab/api', host: '10.250.0.1' });
 *   cp.api.url; cp.api.kubeconfigPath; cp.api.caPem; await cp.close();
 *
 * Nodes, kubelets, the service proxy and DNS build on this (see docs/lab-apiserver.md for the API contract).
 */
import type { Logger } from 'pino';
import { ApiServer, type ApiServerOptions } from './apiserver/index.ts';
import { Controllers } from './controllers/index.ts';

export { ApiError, ApiServer, type ApiServerOptions, isApiError, LocalClient } from './apiserver/index.ts';
export { Controllers, NODE_LEASE_NAMESPACE } from './controllers/index.ts';

export interface ControlPlaneOptions extends ApiServerOptions {
  /** Run the in-process controllers (default true). */
  readonly controllers?: boolean;
  /** A node Lease renewed within this window means a live kubelet finishes pod deletions (default 40 s). */
  readonly nodeLeaseFreshMs?: number;
  readonly logger?: Logger;
}

export interface ControlPlane {
  readonly api: ApiServer;
  readonly controllers: Controllers | null;
  close(): Promise<void>;
}

/** Starts the API server, then (unless disabled) the controllers; stops both in reverse order. */
export async function startControlPlane(o: ControlPlaneOptions): Promise<ControlPlane> {
  const api = await ApiServer.create(o);
  let controllers: Controllers | null = null;
  if (o.controllers !== false) {
    try {
      controllers = await Controllers.create({
        api,
        ...(o.logger ? { logger: o.logger.child({ component: 'controllers' }) } : {}),
        ...(o.nodeLeaseFreshMs ? { nodeLeaseFreshMs: o.nodeLeaseFreshMs } : {}),
      });
      controllers.run();
    } catch (err) {
      await api.close();
      throw err;
    }
  }
  return {
    api,
    controllers,
    async close() {
      await controllers?.close();
      await api.close();
    },
  };
}
