/**
 * pkg/xds front door: the wire types shared with Istio (WDS Address, L4 Authorization, CA, ZDS and
 * the xDS transport), the type URLs they travel under, and safe decode / Any helpers.
 *
 * The types and codecs are generated from pkg/xds/proto by `npm run gen:proto` into ./gen; import
 * them from here, not from ./gen, so a regeneration that renames a file touches one place.
 * Every message value `X` is both a type (the plain object) and a codec (`X.encode`, `X.decode`,
 * `X.create`, `X.fromPartial`). Build messages with `X.create({...})`: `encode` expects every
 * field present, which `create` guarantees.
 *
 * Untrusted bytes (anything from a socket) go through `decodeSafe` / `decodeOrThrow`, which bound
 * the size and turn every parser failure into one MeshError code, MESH_ERR_PROTO_DECODE.
 */
import type { BinaryReader, BinaryWriter } from '@bufbuild/protobuf/wire';
import { MeshError } from '../errors/index.ts';
import type { Any } from './gen/google/protobuf/any.ts';
import { Authorization } from './gen/istio/security/authorization.ts';
import { Address } from './gen/istio/workload/workload.ts';

// Whole modules, for the less common types and for names that exist in several packages
// (workload.Address vs security.Address, workload.Locality vs core.Locality, ...).
export * as waypoint from './gen/ambient/waypoint/v1/waypoint.ts';
export { ServiceConfig as WaypointServiceConfig } from './gen/ambient/waypoint/v1/waypoint.ts';
export * as core from './gen/envoy/config/core/v3/base.ts';
// The names most code needs, unqualified.
export { Node } from './gen/envoy/config/core/v3/base.ts';
export * as ads from './gen/envoy/service/discovery/v3/ads.ts';
export {
  AggregatedDiscoveryServiceClient,
  AggregatedDiscoveryServiceService,
} from './gen/envoy/service/discovery/v3/ads.ts';
export * as discovery from './gen/envoy/service/discovery/v3/discovery.ts';
export {
  DeltaDiscoveryRequest,
  DeltaDiscoveryResponse,
  DiscoveryRequest,
  DiscoveryResponse,
  Resource,
} from './gen/envoy/service/discovery/v3/discovery.ts';
export { Any } from './gen/google/protobuf/any.ts';
export * as rpc from './gen/google/rpc/status.ts';
export { Status } from './gen/google/rpc/status.ts';
export * as security from './gen/istio/security/authorization.ts';
export {
  Action,
  Authorization,
  Clause,
  Match,
  Rule,
  Scope,
  ServiceAccountMatch,
  StringMatch,
} from './gen/istio/security/authorization.ts';
export * as ca from './gen/istio/v1/auth/ca.ts';
export {
  IstioCertificateRequest,
  IstioCertificateResponse,
  IstioCertificateServiceClient,
  IstioCertificateServiceService,
} from './gen/istio/v1/auth/ca.ts';
export * as workload from './gen/istio/workload/workload.ts';
export {
  Address,
  ApplicationTunnel,
  GatewayAddress,
  LoadBalancing,
  NamespacedHostname,
  NetworkAddress,
  Port,
  PortList,
  Service,
  TunnelProtocol,
  Workload,
  WorkloadStatus,
  WorkloadType,
} from './gen/istio/workload/workload.ts';
export * as zds from './gen/istio/workload/zds/zds.ts';
export {
  Ack,
  AddWorkload,
  DelWorkload,
  KeepWorkload,
  SnapshotSent,
  WorkloadInfo,
  WorkloadRequest,
  WorkloadResponse,
  ZdsHello,
} from './gen/istio/workload/zds/zds.ts';

/** Prefix of every type URL carried in `google.protobuf.Any` and xDS `type_url` fields. */
export const TYPE_URL_PREFIX = 'type.googleapis.com/';
/** xDS resource type of WDS: one Address (a Workload or a Service) per resource. */
export const ADDRESS_TYPE_URL = 'type.googleapis.com/istio.workload.Address';
/** xDS resource type of ztunnel's L4 authorization policies. */
export const AUTHORIZATION_TYPE_URL = 'type.googleapis.com/istio.security.Authorization';
/** xDS resource type of the waypoint's L7 table (our own type): one ServiceConfig per destination service. */
export const WAYPOINT_SERVICE_TYPE_URL = 'type.googleapis.com/ambient.waypoint.v1.ServiceConfig';

/**
 * Upper bound on one encoded message we agree to decode. A delta xDS push for a big cluster runs
 * to a few MiB (Envoy and Istio configure gRPC for tens of MiB); 64 MiB leaves room for that and
 * still stops a hostile or broken peer from making us allocate without limit. Callers with
 * smaller messages (ZDS, CA) pass a tighter `maxBytes`.
 */
export const MAX_PROTO_MESSAGE_BYTES = 64 * 1024 * 1024;

/** The encode half of a generated codec. */
export interface ProtoEncoder<T> {
  encode(message: T, writer?: BinaryWriter): BinaryWriter;
}

/** The decode half of a generated codec. */
export interface ProtoDecoder<T> {
  decode(input: BinaryReader | Uint8Array, length?: number): T;
}

export interface DecodeOptions {
  /** Names the message in the error, e.g. "istio.workload.Address from istiod". */
  readonly what?: string;
  /** Refuse inputs larger than this many bytes; defaults to MAX_PROTO_MESSAGE_BYTES. */
  readonly maxBytes?: number;
}

export type DecodeResult<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly error: MeshError };

/** Serialises a message to its wire bytes. */
export function encodeMessage<T>(codec: ProtoEncoder<T>, message: T): Uint8Array {
  return codec.encode(message).finish();
}

/**
 * Decodes untrusted bytes without throwing. Truncated input, bad varints, invalid or mismatched
 * wire types, tag 0, nested length overruns and oversize input all come back as
 * `{ ok: false, error }` with code MESH_ERR_PROTO_DECODE.
 */
export function decodeSafe<T>(
  codec: ProtoDecoder<T>,
  bytes: Uint8Array,
  options: DecodeOptions = {},
): DecodeResult<T> {
  const what = options.what ?? 'protobuf message';
  const maxBytes = options.maxBytes ?? MAX_PROTO_MESSAGE_BYTES;
  if (!(bytes instanceof Uint8Array)) {
    return fail(`cannot decode ${what}: expected bytes, got ${typeof bytes}`, { what });
  }
  if (bytes.byteLength > maxBytes) {
    return fail(`cannot decode ${what}: ${bytes.byteLength} bytes exceeds the ${maxBytes}-byte limit`, {
      what,
      size: bytes.byteLength,
      maxBytes,
    });
  }
  try {
    return { ok: true, value: codec.decode(bytes) };
  } catch (cause) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    return fail(
      `cannot decode ${what} (${bytes.byteLength} bytes): ${reason}`,
      { what, size: bytes.byteLength },
      cause,
    );
  }
}

/** `decodeSafe` for callers that prefer an exception: throws the MeshError. */
export function decodeOrThrow<T>(codec: ProtoDecoder<T>, bytes: Uint8Array, options: DecodeOptions = {}): T {
  const result = decodeSafe(codec, bytes, options);
  if (!result.ok) throw result.error;
  return result.value;
}

/** Wraps a message in `google.protobuf.Any` under `typeUrl`. */
export function packAny<T>(codec: ProtoEncoder<T>, typeUrl: string, message: T): Any {
  return { typeUrl, value: encodeMessage(codec, message) };
}

/** Unwraps an Any, checking that it carries `typeUrl` before decoding its bytes. */
export function unpackAny<T>(
  any: Any,
  codec: ProtoDecoder<T>,
  typeUrl: string,
  options: DecodeOptions = {},
): DecodeResult<T> {
  const what = options.what ?? typeUrl.slice(typeUrl.lastIndexOf('/') + 1);
  if (any.typeUrl !== typeUrl) {
    return fail(`cannot decode ${what}: Any carries type "${any.typeUrl}", expected "${typeUrl}"`, {
      what,
      typeUrl: any.typeUrl,
      expected: typeUrl,
    });
  }
  return decodeSafe(codec, any.value, { ...options, what });
}

export function packAddress(address: Address): Any {
  return packAny(Address, ADDRESS_TYPE_URL, address);
}

export function unpackAddress(any: Any, options: DecodeOptions = {}): DecodeResult<Address> {
  return unpackAny(any, Address, ADDRESS_TYPE_URL, options);
}

export function packAuthorization(policy: Authorization): Any {
  return packAny(Authorization, AUTHORIZATION_TYPE_URL, policy);
}

export function unpackAuthorization(any: Any, options: DecodeOptions = {}): DecodeResult<Authorization> {
  return unpackAny(any, Authorization, AUTHORIZATION_TYPE_URL, options);
}

function fail(
  message: string,
  details: Readonly<Record<string, string | number>>,
  cause?: unknown,
): { readonly ok: false; readonly error: MeshError } {
  const error = new MeshError(
    'MESH_ERR_PROTO_DECODE',
    message,
    cause === undefined ? { details } : { details, cause },
  );
  return { ok: false, error };
}
