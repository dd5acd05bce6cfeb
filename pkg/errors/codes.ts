/**
 * The registry of error codes. Add an entry here (alphabetical within its area) and a matching row in
 * docs/ERRORS.md; `errors.test.ts` fails when the two disagree.
 */
export interface ErrorCodeSpec {
  /** What went wrong, in one line, for docs/ERRORS.md. */
  readonly summary: string;
  /** What an operator should check, when a mistake on their side is the likely cause. */
  readonly hint?: string;
}

const REGISTRY = {
  MESH_ERR_CA_MATERIAL: {
    summary: 'The CA key material (Secret cacerts or istio-ca-secret) is unreadable or inconsistent.',
    hint: 'ca-key.pem must match ca-cert.pem, which must be a CA chaining through cert-chain.pem to root-cert.pem',
  },
  MESH_ERR_CONFIG_INVALID: {
    summary: 'An environment variable or flag has a value that cannot be parsed or is out of range.',
    hint: 'the message names the variable, the value and the accepted form',
  },
  MESH_ERR_INTERNAL_BUG: {
    summary: 'An internal invariant was broken; the message starts with BUG:. Please report it.',
  },
  MESH_ERR_CTL_CLUSTER: {
    summary: 'ambientctl could not talk to the Kubernetes API.',
    hint: 'check --kubeconfig / KUBECONFIG and that the cluster (or `ambientctl lab up`) is running',
  },
  MESH_ERR_CTL_KUBECTL: {
    summary: 'A kubectl invocation made by ambientctl failed or kubectl is missing.',
  },
  MESH_ERR_CTL_PROFILE: {
    summary: 'The named installation profile does not exist.',
    hint: 'run `ambientctl profile list`',
  },
  MESH_ERR_CTL_TIMEOUT: {
    summary: 'A component did not become ready in time.',
  },
  MESH_ERR_CTL_USAGE: {
    summary: 'The command was called with missing or conflicting arguments.',
  },
  MESH_ERR_DRAIN_TIMEOUT: {
    summary: 'Graceful drain did not finish before its deadline; remaining connections were closed.',
  },
  MESH_ERR_IDENTITY_FETCH: {
    summary: 'A workload certificate could not be obtained from the CA (or the manager was closed).',
    hint: 'check istiod reachability on :15012 and the CA logs; a valid certificate keeps serving meanwhile',
  },
  MESH_ERR_IDENTITY_INVALID: {
    summary: 'A SPIFFE identity, CSR or certificate is malformed or does not match what was expected.',
  },
  MESH_ERR_NETNS_OPEN: {
    summary: 'A network namespace could not be opened (path missing or not a netns).',
    hint: 'check that the pod sandbox still exists and that the process runs with CAP_SYS_ADMIN',
  },
  MESH_ERR_NETNS_SETNS: {
    summary: 'Entering or leaving a network namespace failed.',
    hint: 'setns needs CAP_SYS_ADMIN (and CAP_NET_ADMIN for marks); check the manifest capabilities',
  },
  MESH_ERR_NETNS_SOCKET: {
    summary: 'A socket operation in the native addon failed (socket, setsockopt, bind, listen, connect).',
  },
  MESH_ERR_NETNS_ORIGINAL_DST: {
    summary:
      'SO_ORIGINAL_DST could not be read for an accepted connection (not redirected, or conntrack gone).',
  },
  MESH_ERR_NETNS_SEQPACKET: {
    summary: 'A unix SOCK_SEQPACKET operation (ZDS transport) failed or received a malformed message.',
  },
  MESH_ERR_NETNS_ADDON_MISSING: {
    summary: 'The native addon pkg/netns was not built.',
    hint: 'run `npm ci` (it builds the addon with node-gyp); a C++ compiler and python3 are required',
  },
  MESH_ERR_PROTO_DECODE: {
    summary: 'A protobuf message could not be decoded (truncated, wrong wire type, or oversize).',
  },
} as const satisfies Record<string, ErrorCodeSpec>;

export type ErrorCode = keyof typeof REGISTRY;
export const CODES: Readonly<Record<ErrorCode, ErrorCodeSpec>> = REGISTRY;
