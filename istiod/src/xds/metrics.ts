/**
 * istiod's xDS metrics under Istio's names and labels (pilot/pkg/xds/monitoring.go): `type` is the short
 * metric type (`wds` for Address, `wads` for Authorization, `wpds` for waypoint ServiceConfig), as Istio's
 * GetMetricType reports it.
 */
import { Counter, Gauge, Histogram, type Registry } from '../../../pkg/metrics/index.ts';
import {
  ADDRESS_TYPE_URL,
  AUTHORIZATION_TYPE_URL,
  WAYPOINT_SERVICE_TYPE_URL,
} from '../../../pkg/xds/index.ts';

/**
 * Istio's GetMetricType for the types we serve (`wpds` for our waypoint L7 config, which Istio does not have);
 * anything else is reported by its URL.
 */
export function metricType(typeUrl: string): string {
  if (typeUrl === ADDRESS_TYPE_URL) return 'wds';
  if (typeUrl === AUTHORIZATION_TYPE_URL) return 'wads';
  if (typeUrl === WAYPOINT_SERVICE_TYPE_URL) return 'wpds';
  return typeUrl;
}

export interface XdsMetrics {
  /** pilot_xds{version}: connected clients. */
  readonly connected: Gauge<'version'>;
  /** pilot_xds_pushes{type}: responses sent (`<type>_senderr` when the write failed). */
  readonly pushes: Counter<'type'>;
  /** pilot_proxy_convergence_time: seconds from a config change to the push that carries it. */
  readonly convergence: Histogram;
  /** pilot_total_xds_rejects{type}: NACKs. */
  readonly rejects: Counter<'type'>;
  /** pilot_xds_expired_nonce{type}: ACK/NACKs of a response that is no longer the one in flight. */
  readonly expiredNonce: Counter<'type'>;
  /** pilot_total_xds_internal_errors: failures on our side (encoding, writes). */
  readonly internalErrors: Counter;
  /** pilot_xds_config_size_bytes{type}: size of each response. */
  readonly configSize: Histogram<'type'>;
}

export function createXdsMetrics(registry: Registry): XdsMetrics {
  const registers = [registry];
  return {
    connected: new Gauge({
      name: 'pilot_xds',
      help: 'Number of endpoints connected to this pilot using XDS.',
      labelNames: ['version'],
      registers,
    }),
    pushes: new Counter({
      name: 'pilot_xds_pushes',
      help: 'Pilot build and send errors for lds, rds, cds and eds.',
      labelNames: ['type'],
      registers,
    }),
    convergence: new Histogram({
      name: 'pilot_proxy_convergence_time',
      help: 'Delay in seconds between config change and a proxy receiving all required configuration.',
      buckets: [0.1, 0.5, 1, 3, 5, 10, 20, 30],
      registers,
    }),
    rejects: new Counter({
      name: 'pilot_total_xds_rejects',
      help: 'Total number of XDS responses from pilot rejected by proxy.',
      labelNames: ['type'],
      registers,
    }),
    expiredNonce: new Counter({
      name: 'pilot_xds_expired_nonce',
      help: 'Total number of XDS requests with an expired nonce.',
      labelNames: ['type'],
      registers,
    }),
    internalErrors: new Counter({
      name: 'pilot_total_xds_internal_errors',
      help: 'Total number of internal XDS errors in pilot.',
      registers,
    }),
    configSize: new Histogram({
      name: 'pilot_xds_config_size_bytes',
      help: 'Distribution of configuration sizes pushed to clients',
      labelNames: ['type'],
      buckets: [1, 10_000, 1_000_000, 4_000_000, 10_000_000, 40_000_000],
      registers,
    }),
  };
}
