/**
 * Every message in pkg/xds/proto: a fully populated sample survives encode -> decode unchanged, its
 * bytes are stable, and protoc (reading the same .proto files) agrees with our encoding field by
 * field. The message list comes from protoc's descriptors, so a new message or field without a
 * sample fails here.
 */
import type { BinaryWriter } from '@bufbuild/protobuf/wire';
import { describe, expect, it } from 'vitest';
import * as waypointGen from './gen/ambient/waypoint/v1/waypoint.ts';
import * as coreGen from './gen/envoy/config/core/v3/base.ts';
import * as discoveryGen from './gen/envoy/service/discovery/v3/discovery.ts';
import * as semverGen from './gen/envoy/type/v3/semantic_version.ts';
import * as rpcGen from './gen/google/rpc/status.ts';
import * as securityGen from './gen/istio/security/authorization.ts';
import * as caGen from './gen/istio/v1/auth/ca.ts';
import * as workloadGen from './gen/istio/workload/workload.ts';
import * as zdsGen from './gen/istio/workload/zds/zds.ts';
import {
  Address,
  Authorization,
  DeltaDiscoveryResponse,
  DelWorkload,
  encodeMessage,
  TunnelProtocol,
  WorkloadRequest,
} from './index.ts';
import {
  all,
  camel,
  describeMessages,
  type FieldInfo,
  get,
  type MessageInfo,
  parseText,
  protocDecode,
  protocEncode,
  type TextMessage,
  textBytes,
  textString,
  unknownFieldLines,
} from './test/protoc.ts';
import { authorization, SAMPLES, service, workload } from './test/samples.ts';

interface Codec {
  encode(message: unknown, writer?: BinaryWriter): BinaryWriter;
  decode(input: Uint8Array): unknown;
  fromPartial(object: unknown): unknown;
}

const GEN_MODULES: Readonly<Record<string, Readonly<Record<string, unknown>>>> = {
  'gen/ambient/waypoint/v1/waypoint.ts': waypointGen,
  'gen/envoy/config/core/v3/base.ts': coreGen,
  'gen/envoy/service/discovery/v3/ads.ts': {},
  'gen/envoy/service/discovery/v3/discovery.ts': discoveryGen,
  'gen/envoy/type/v3/semantic_version.ts': semverGen,
  'gen/google/rpc/status.ts': rpcGen,
  'gen/istio/security/authorization.ts': securityGen,
  'gen/istio/v1/auth/ca.ts': caGen,
  'gen/istio/workload/workload.ts': workloadGen,
  'gen/istio/workload/zds/zds.ts': zdsGen,
};

const MESSAGES = describeMessages();
const BY_NAME = new Map(MESSAGES.map((m) => [m.fullName, m]));

function codecOf(m: MessageInfo): Codec {
  const mod = GEN_MODULES[m.module];
  if (!mod) throw new Error(`no generated module registered for ${m.module}`);
  const codec = mod[m.tsName] as Partial<Codec> | undefined;
  if (typeof codec?.encode !== 'function' || typeof codec.decode !== 'function') {
    throw new Error(`${m.module} does not export a codec named ${m.tsName}`);
  }
  return codec as Codec;
}

function encode(codec: Codec, message: unknown): Uint8Array {
  return codec.encode(message).finish();
}

/** Whether a field holds something other than its proto3 default ("set", for coverage). */
function isSet(field: FieldInfo, value: unknown): boolean {
  const entry = field.typeName ? BY_NAME.get(field.typeName.slice(1)) : undefined;
  if (entry?.isMapEntry) return Object.keys(value as object).length >= 2;
  if (field.repeated) return (value as unknown[]).length >= 2;
  if (field.type === 'TYPE_MESSAGE') return value !== undefined;
  if (value instanceof Uint8Array) return value.length > 0;
  return value !== undefined && value !== '' && value !== 0 && value !== 0n && value !== false;
}

const CASES = MESSAGES.flatMap((m) =>
  (SAMPLES[m.fullName] ?? []).map((sample, i) => ({ name: `${m.fullName} #${i + 1}`, m, sample })),
);

describe('schema coverage', () => {
  it('finds the messages of every .proto file', () => {
    expect(MESSAGES.length).toBeGreaterThan(50);
    expect(BY_NAME.has('istio.workload.Address')).toBe(true);
  });

  it('has a codec and at least one sample for every message, and no stray samples', () => {
    for (const m of MESSAGES) {
      codecOf(m);
      expect(SAMPLES[m.fullName]?.length ?? 0, `samples for ${m.fullName}`).toBeGreaterThan(0);
    }
    expect(Object.keys(SAMPLES).filter((k) => !BY_NAME.has(k))).toEqual([]);
  });

  it.each(MESSAGES.map((m) => [m.fullName, m] as const))(
    '%s: samples set every field and oneof branch',
    (_, m) => {
      const samples = (SAMPLES[m.fullName] ?? []) as Record<string, unknown>[];
      for (const field of m.fields.filter((f) => f.oneof === null)) {
        const set = samples.some((s) => isSet(field, s[field.jsonName]));
        expect(set, `${m.fullName}.${field.name} is never set (repeated/maps need 2+ entries)`).toBe(true);
      }
      for (const oneof of m.oneofs) {
        const branches = m.fields.filter((f) => f.oneof === oneof).map((f) => f.jsonName);
        const seen = new Set(samples.map((s) => (s[camel(oneof)] as { $case?: string } | undefined)?.$case));
        expect(
          [...branches].filter((b) => !seen.has(b)),
          `${m.fullName}.${oneof} branches without a sample`,
        ).toEqual([]);
      }
    },
  );
});

describe('round trip', () => {
  it.each(CASES)('$name: decode(encode(x)) equals x and re-encodes to the same bytes', ({ m, sample }) => {
    const codec = codecOf(m);
    const message = codec.fromPartial(sample);
    const bytes = encode(codec, message);
    const decoded = codec.decode(bytes);
    expect(decoded).toEqual(message);
    expect(encode(codec, decoded)).toEqual(bytes);
  });
});

describe('agreement with protoc', () => {
  it.each(CASES)(
    '$name: protoc decodes our bytes with no unknown fields and re-encodes them losslessly',
    ({ m, sample }) => {
      const codec = codecOf(m);
      const message = codec.fromPartial(sample);
      const text = protocDecode(m.fullName, encode(codec, message));
      expect(unknownFieldLines(text)).toEqual([]);
      expect(codec.decode(protocEncode(m.fullName, text))).toEqual(message);
    },
  );

  it('names Address(workload) fields as the .proto does', () => {
    const t = parseText(
      protocDecode('istio.workload.Address', encodeMessage(Address, addressOf('workload'))),
    );
    expect(textString(get(t, 'workload', 'uid'))).toBe(workload.uid);
    expect(all(t, 'workload', 'addresses').map((a) => [...textBytes(a)])).toEqual([
      [10, 244, 1, 7],
      [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
    ]);
    expect(get(t, 'workload', 'tunnel_protocol')).toBe('HBONE');
    expect(get(t, 'workload', 'workload_type')).toBe('POD');
    expect(get(t, 'workload', 'status')).toBe('UNHEALTHY');
    expect(get(t, 'workload', 'network_mode')).toBe('HOST_NETWORK');
    expect(get(t, 'workload', 'native_tunnel')).toBe('true');
    expect(get(t, 'workload', 'capacity', 'value')).toBe('3');
    expect(textString(get(t, 'workload', 'waypoint', 'hostname', 'hostname'))).toBe(
      'waypoint.istio-system.svc.cluster.local',
    );
    expect(get(t, 'workload', 'waypoint', 'hbone_mtls_port')).toBe('15008');
    expect(textString(get(t, 'workload', 'network_gateway', 'address', 'network'))).toBe('net-west');
    expect(get(t, 'workload', 'application_tunnel', 'protocol')).toBe('PROXY');
    const services = all(t, 'workload', 'services') as TextMessage[];
    // protoc prints map entries sorted by key.
    expect(services.map((s) => textString(get(s, 'key')))).toEqual(Object.keys(workload.services).sort());
    const main = services.find(
      (s) => textString(get(s, 'key')) === 'default/reviews.default.svc.cluster.local',
    );
    const firstPort = get(main!, 'value', 'ports') as TextMessage;
    expect([
      get(firstPort, 'service_port'),
      get(firstPort, 'target_port'),
      get(firstPort, 'app_protocol'),
    ]).toEqual(['9080', '19080', 'HTTP2']);
    expect(all(t, 'workload', 'authorization_policies').map(textString)).toEqual(
      workload.authorizationPolicies,
    );
  });

  it('names Address(service) fields as the .proto does', () => {
    const t = parseText(protocDecode('istio.workload.Address', encodeMessage(Address, addressOf('service'))));
    expect(textString(get(t, 'service', 'hostname'))).toBe(service.hostname);
    expect(get(t, 'service', 'ip_families')).toBe('DUAL');
    expect(get(t, 'service', 'canonical')).toBe('true');
    expect(get(t, 'service', 'ingress_use_waypoint')).toBe('true');
    expect(all(t, 'service', 'load_balancing', 'routing_preference')).toEqual(['NETWORK', 'REGION', 'NODE']);
    expect(get(t, 'service', 'load_balancing', 'mode')).toBe('FAILOVER');
  });

  it('names Authorization fields as the .proto does', () => {
    const t = parseText(
      protocDecode('istio.security.Authorization', encodeMessage(Authorization, authorization)),
    );
    expect(get(t, 'scope')).toBe('WORKLOAD_SELECTOR');
    expect(get(t, 'action')).toBe('DENY');
    expect(get(t, 'dry_run')).toBe('true');
    const m = get(t, 'rules', 'clauses', 'matches') as TextMessage;
    expect(all(m, 'destination_ports')).toEqual(['9080', '15021', '70000']);
    expect(textString(get(m, 'namespaces', 'exact'))).toBe('default');
    expect(textString(get(m, 'principals', 'prefix'))).toBe('cluster.local/ns/');
    expect(get(m, 'not_namespaces')).toBeDefined();
    expect(textString(get(m, 'service_accounts', 'serviceAccount'))).toBe('productpage');
    expect([...textBytes(get(m, 'source_ips', 'address'))]).toEqual([10, 0, 0, 0]);
    expect(get(m, 'source_ips', 'length')).toBe('8');
  });

  it('puts ZDS del in field 2 with uid in field 2', () => {
    const bytes = encodeMessage(
      WorkloadRequest,
      WorkloadRequest.fromPartial({ payload: { $case: 'del', value: { uid: 'x' } } }),
    );
    // WorkloadRequest.del (2, LEN) { DelWorkload.uid (2, LEN) "x" }
    expect([...bytes]).toEqual([0x12, 3, 0x12, 1, 0x78]);
    expect(get(parseText(protocDecode('istio.workload.zds.WorkloadRequest', bytes)), 'del', 'uid')).toBe(
      '"x"',
    );
  });
});

describe('decoding what protoc encodes', () => {
  it('reads a hand-written Address', () => {
    const bytes = protocEncode(
      'istio.workload.Address',
      `workload {
         uid: "c1//Pod/ns/p"
         addresses: "\\n\\000\\000\\001"
         tunnel_protocol: HBONE
         services { key: "ns/svc.ns.svc.cluster.local" value { ports { service_port: 80 target_port: 8080 } } }
         capacity { value: 2 }
         waypoint { address { network: "n1" address: "\\n\\000\\000\\002" } hbone_mtls_port: 15008 }
       }`,
    );
    const a = Address.decode(bytes);
    expect(a.type?.$case).toBe('workload');
    if (a.type?.$case !== 'workload') return;
    const w = a.type.value;
    expect(w.uid).toBe('c1//Pod/ns/p');
    expect([...(w.addresses[0] ?? [])]).toEqual([10, 0, 0, 1]);
    expect(w.tunnelProtocol).toBe(TunnelProtocol.HBONE);
    expect(w.services['ns/svc.ns.svc.cluster.local']?.ports).toEqual([
      { servicePort: 80, targetPort: 8080, appProtocol: 0 },
    ]);
    expect(w.capacity).toBe(2);
    expect(w.waypoint?.destination?.$case).toBe('address');
    expect(w.waypoint?.hboneMtlsPort).toBe(15008);
  });

  it('reads a hand-written Authorization, including unpacked repeated ports', () => {
    const bytes = protocEncode(
      'istio.security.Authorization',
      `name: "p" namespace: "ns" scope: NAMESPACE action: DENY dry_run: true
       rules { clauses { matches {
         not_principals { suffix: "/sa/bad" }
         destination_ports: 80 destination_ports: 443
         not_service_accounts { namespace: "ns" serviceAccount: "sa" }
       } } }`,
    );
    const p = Authorization.decode(bytes);
    expect(p).toMatchObject({ name: 'p', namespace: 'ns', scope: 1, action: 1, dryRun: true });
    const match = p.rules[0]?.clauses[0]?.matches[0];
    expect(match?.destinationPorts).toEqual([80, 443]);
    expect(match?.notPrincipals).toEqual([{ matchType: { $case: 'suffix', value: '/sa/bad' } }]);
    expect(match?.notServiceAccounts).toEqual([{ namespace: 'ns', serviceAccount: 'sa' }]);
  });

  it('reads a hand-written ZDS del and delta response', () => {
    expect(
      WorkloadRequest.decode(protocEncode('istio.workload.zds.WorkloadRequest', 'del { uid: "u1" }')),
    ).toEqual({
      payload: { $case: 'del', value: DelWorkload.fromPartial({ uid: 'u1' }) },
    });
    const r = DeltaDiscoveryResponse.decode(
      protocEncode(
        'envoy.service.discovery.v3.DeltaDiscoveryResponse',
        `type_url: "type.googleapis.com/istio.workload.Address" nonce: "n1" removed_resources: "gone"
         resources { name: "a" version: "1" resource { type_url: "t" value: "\\001" } ttl { seconds: 5 } }`,
      ),
    );
    expect(r.nonce).toBe('n1');
    expect(r.removedResources).toEqual(['gone']);
    expect(r.resources[0]).toMatchObject({ name: 'a', version: '1', ttl: { seconds: 5n, nanos: 0 } });
    expect([...(r.resources[0]?.resource?.value ?? [])]).toEqual([1]);
  });
});

function addressOf(kind: 'workload' | 'service'): Address {
  return kind === 'workload'
    ? Address.fromPartial({ type: { $case: 'workload', value: workload } })
    : Address.fromPartial({ type: { $case: 'service', value: service } });
}
