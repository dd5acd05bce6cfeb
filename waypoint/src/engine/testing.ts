/**
 * Test fixtures for the engine (imported by *.test.ts only): Bookinfo-shaped ServiceConfigs, a seeded RNG,
 * a manual clock and request builders.
 */
import pino from 'pino';
import {
  type DeepPartial,
  ServiceConfig,
  type Route as XdsRoute,
} from '../../../pkg/xds/gen/ambient/waypoint/v1/waypoint.ts';
import type { BuildError, RequestView, Rng } from './index.ts';
import { ServiceTable } from './table.ts';

export const SELF = 'default/waypoint';
export const silentLogger = pino({ level: 'silent' });

/** Mulberry32: small, fast, deterministic. */
export function seededRng(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An RNG returning the given values in turn (then repeating the last). */
export function fixedRng(...values: number[]): Rng {
  let i = 0;
  return () => values[Math.min(i++, values.length - 1)] as number;
}

export class ManualClock {
  now = 1_000_000;
  readonly fn = (): number => this.now;
  advance(ms: number): void {
    this.now += ms;
  }
}

export function svc(partial: DeepPartial<ServiceConfig>): ServiceConfig {
  // biome-ignore lint/suspicious/noExplicitAny: fromPartial's Exact<> constraint does not accept a DeepPartial variable
  return ServiceConfig.fromPartial(partial as any);
}

export function ep(
  address: string,
  opts: { subsets?: string[]; healthy?: boolean; ports?: Record<number, number>; name?: string } = {},
): DeepPartial<ServiceConfig>['endpoints'] extends (infer E)[] | undefined ? E : never {
  return {
    workloadUid: `Kubernetes//Pod/default/${opts.name ?? address}`,
    address,
    ports: opts.ports ?? { 9080: 9080 },
    identity: 'spiffe://cluster.local/ns/default/sa/bookinfo',
    healthy: opts.healthy ?? true,
    hbone: true,
    subsets: opts.subsets ?? [],
    workloadName: opts.name ?? address,
    workloadNamespace: 'default',
  };
}

/** Bookinfo: productpage, details, reviews (v1/v2/v3 subsets), ratings — all on 9080, served by SELF. */
export function bookinfo(overrides: { [name: string]: DeepPartial<ServiceConfig> } = {}): ServiceConfig[] {
  const base = (name: string, vip: string, endpoints: ReturnType<typeof ep>[], extra = {}): ServiceConfig =>
    svc({
      name: `default/${name}.default.svc.cluster.local`,
      namespace: 'default',
      hostname: `${name}.default.svc.cluster.local`,
      serviceName: name,
      addresses: [vip],
      ports: [{ port: 9080, targetPort: 9080, name: 'http', protocol: 'http' }],
      waypoints: [SELF],
      endpoints,
      ...extra,
      ...(overrides[name] ?? {}),
    });
  return [
    base('productpage', '10.96.0.10', [ep('10.0.0.10', { name: 'productpage-v1' })]),
    base('details', '10.96.0.11', [ep('10.0.0.20', { name: 'details-v1' })]),
    base(
      'reviews',
      '10.96.0.12',
      [
        ep('10.0.0.31', { subsets: ['v1'], name: 'reviews-v1' }),
        ep('10.0.0.32', { subsets: ['v2'], name: 'reviews-v2' }),
        ep('10.0.0.33', { subsets: ['v3'], name: 'reviews-v3' }),
      ],
      {
        subsets: [
          { name: 'v1', labels: { version: 'v1' } },
          { name: 'v2', labels: { version: 'v2' } },
          { name: 'v3', labels: { version: 'v3' } },
        ],
      },
    ),
    base('ratings', '10.96.0.13', [ep('10.0.0.40', { name: 'ratings-v1' })]),
  ];
}

export const REVIEWS = 'default/reviews.default.svc.cluster.local';
export const RATINGS = 'default/ratings.default.svc.cluster.local';
export const DETAILS = 'default/details.default.svc.cluster.local';
export const PRODUCTPAGE = 'default/productpage.default.svc.cluster.local';

export function build(
  configs: ServiceConfig[],
  opts: { rng?: Rng; clock?: () => number; previous?: ServiceTable } = {},
): { table: ServiceTable; errors: BuildError[] } {
  return ServiceTable.build(configs, {
    self: SELF,
    logger: silentLogger,
    rng: opts.rng,
    clock: opts.clock,
    previous: opts.previous ?? null,
  });
}

export function req(
  path: string,
  opts: {
    method?: string;
    authority?: string;
    port?: number;
    headers?: Record<string, string | string[]>;
    sourceIp?: string;
    scheme?: string;
  } = {},
): RequestView {
  return {
    method: opts.method ?? 'GET',
    path,
    authority: opts.authority ?? 'reviews:9080',
    port: opts.port ?? 9080,
    headers: opts.headers ?? {},
    sourceIp: opts.sourceIp ?? '10.0.0.99',
    scheme: opts.scheme,
  };
}

export type RouteInit = DeepPartial<XdsRoute>;
