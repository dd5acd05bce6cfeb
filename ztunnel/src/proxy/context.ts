/**
 * What every per-pod proxy shares: the mesh state, certificates, metrics, the TLS context cache, the registry
 * of live inbound connections (re-checked when policy changes), and logging.
 */
import type { Logger } from 'pino';
import type { CertManager } from '../../../pkg/identity/index.ts';
import type { ProxyState } from '../../../pkg/state/index.ts';
import type { SecureContextCache } from '../../../pkg/tls/index.ts';
import type { ZtunnelConfig } from '../config.ts';
import type { TcpMetrics } from '../metrics.ts';
import type { ConnectionRegistry } from './connections.ts';

export interface ProxyContext {
  readonly config: ZtunnelConfig;
  readonly state: ProxyState;
  readonly certs: CertManager;
  readonly metrics: TcpMetrics;
  readonly contexts: SecureContextCache;
  readonly connections: ConnectionRegistry;
  readonly logger: Logger;
  /** One JSON line per connection (CONVENTIONS habit 7); a child of `logger` named `access`. */
  readonly accessLog: Logger;
}
