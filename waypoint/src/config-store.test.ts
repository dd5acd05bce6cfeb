import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { eventually } from '../../pkg/testing/index.ts';
import { ServiceConfig } from '../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import { ConfigStore } from './config-store.ts';

const SELF = 'default/waypoint';

function svc(name: string, vip: string): ServiceConfig {
  return ServiceConfig.fromPartial({
    name: `default/${name}.default.svc.cluster.local`,
    namespace: 'default',
    hostname: `${name}.default.svc.cluster.local`,
    serviceName: name,
    addresses: [vip],
    ports: [{ port: 9080, targetPort: 9080, name: 'http', protocol: 'http' }],
    waypoints: [SELF],
  });
}

describe('ConfigStore', () => {
  it('keeps serving a removed service for the retirement window, then drops it', async () => {
    const store = new ConfigStore(SELF, pino({ level: 'silent' }), { retireMs: 200 });
    const reviews = svc('reviews', '10.96.0.10');
    const ratings = svc('ratings', '10.96.0.11');
    store.apply(
      new Map([
        [reviews.name, reviews],
        [ratings.name, ratings],
      ]),
      [],
    );
    expect(store.table.lookup('10.96.0.10', 9080)).toBeDefined();
    store.apply(new Map(), [reviews.name]);
    // Removed from the config (dump, size) at once, still routable while ztunnels catch up.
    expect(store.size).toBe(1);
    expect(store.table.lookup('10.96.0.10', 9080)).toBeDefined();
    expect(store.table.lookup('10.96.0.11', 9080)).toBeDefined();
    await eventually(() => expect(store.table.lookup('10.96.0.10', 9080)).toBeUndefined(), {
      timeoutMs: 2_000,
      intervalMs: 20,
      what: 'reviews retired',
    });
    expect(store.table.lookup('10.96.0.11', 9080)).toBeDefined();
    store.close();
  });

  it('a service re-added during its retirement is live again and not retired later', async () => {
    const store = new ConfigStore(SELF, pino({ level: 'silent' }), { retireMs: 100 });
    const reviews = svc('reviews', '10.96.0.10');
    store.apply(new Map([[reviews.name, reviews]]), []);
    store.apply(new Map(), [reviews.name]);
    store.apply(new Map([[reviews.name, reviews]]), []);
    await new Promise((r) => setTimeout(r, 250));
    expect(store.table.lookup('10.96.0.10', 9080)).toBeDefined();
    expect(store.size).toBe(1);
    store.close();
  });

  it('retireMs 0 removes at once', () => {
    const store = new ConfigStore(SELF, pino({ level: 'silent' }), { retireMs: 0 });
    const reviews = svc('reviews', '10.96.0.10');
    store.apply(new Map([[reviews.name, reviews]]), []);
    store.apply(new Map(), [reviews.name]);
    expect(store.table.lookup('10.96.0.10', 9080)).toBeUndefined();
  });
});
