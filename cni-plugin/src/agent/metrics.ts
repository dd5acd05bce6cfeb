/**
 * The agent's metrics, served on :15014/metrics. Istio's istio-cni names where they exist
 * (`istio_cni_installs_total`, `istio_cni_install_ready`, `ztunnel_connected` → `istio_cni_ztunnel_connected`,
 * `nodeagent_reconcile_events_total` → `istio_cni_nodeagent_reconcile_events_total`); our own for the rest.
 */
import { Counter, Gauge, type Registry } from '../../../pkg/metrics/index.ts';

export interface AgentMetrics {
  readonly installs: Counter<'result'>;
  readonly installReady: Gauge;
  readonly ztunnelConnected: Gauge;
  readonly reconcileEvents: Counter<'type'>;
  readonly podsCaptured: Gauge;
  readonly captures: Counter<'result'>;
  readonly releases: Counter<'result'>;
  readonly pluginRequests: Counter<'command' | 'result'>;
  /** Malformed input from the plugin socket, ztunnel or the state dir: rejected, logged once, counted. */
  readonly rejected: Counter<'source' | 'reason'>;
  readonly zdsMessages: Counter<'type' | 'result'>;
}

export function createAgentMetrics(registry: Registry): AgentMetrics {
  const registers = [registry];
  return {
    installs: new Counter({
      name: 'istio_cni_installs_total',
      help: 'Total number of CNI plugin installs (and repairs after drift), by result.',
      labelNames: ['result'],
      registers,
    }),
    installReady: new Gauge({
      name: 'istio_cni_install_ready',
      help: 'Whether the CNI plugin is installed and chained into the node conflist (1) or not (0).',
      registers,
    }),
    ztunnelConnected: new Gauge({
      name: 'istio_cni_ztunnel_connected',
      help: 'Number of ztunnel ZDS connections.',
      registers,
    }),
    reconcileEvents: new Counter({
      name: 'istio_cni_nodeagent_reconcile_events_total',
      help: 'The total number of node agent reconcile events, by type (add, update, delete).',
      labelNames: ['type'],
      registers,
    }),
    podsCaptured: new Gauge({
      name: 'istio_cni_pods_captured',
      help: 'Pods on this node whose traffic is currently redirected to ztunnel.',
      registers,
    }),
    captures: new Counter({
      name: 'istio_cni_pod_captures_total',
      help: 'Attempts to add a pod to the mesh, by result (ok, pending, failed, retry).',
      labelNames: ['result'],
      registers,
    }),
    releases: new Counter({
      name: 'istio_cni_pod_releases_total',
      help: 'Attempts to remove a pod from the mesh, by result.',
      labelNames: ['result'],
      registers,
    }),
    pluginRequests: new Counter({
      name: 'istio_cni_plugin_requests_total',
      help: 'Requests from the CNI plugin, by command (add, del) and result (captured, skipped, retry, error).',
      labelNames: ['command', 'result'],
      registers,
    }),
    rejected: new Counter({
      name: 'istio_cni_rejected_input_total',
      help: 'Malformed input rejected, by source (plugin, ztunnel, state) and reason.',
      labelNames: ['source', 'reason'],
      registers,
    }),
    zdsMessages: new Counter({
      name: 'istio_cni_zds_messages_total',
      help: 'ZDS requests sent to ztunnel, by type (add, keep, del, snapshot_sent) and result (ack, error, timeout).',
      labelNames: ['type', 'result'],
      registers,
    }),
  };
}
