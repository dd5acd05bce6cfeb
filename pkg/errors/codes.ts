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
  MESH_ERR_CNI_INSTALL: {
    summary:
      'The istio-cni agent could not install its plugin binary or insert itself into the node CNI conflist.',
    hint: 'check that CNI_BIN_DIR and CNI_NET_DIR are writable hostPath mounts and that a *.conflist exists there',
  },
  MESH_ERR_CNI_NETNS_UNKNOWN: {
    summary: 'The istio-cni agent knows no network namespace for a pod (no CNI ADD seen and no state file).',
    hint: 'pods started before the istio-cni plugin was installed must be restarted once to be captured',
  },
  MESH_ERR_CNI_PLUGIN_REQUEST: {
    summary: 'A request from the istio-cni plugin to the node agent was malformed or refused.',
  },
  MESH_ERR_CNI_RULES: {
    summary: 'Applying or removing traffic redirection rules (iptables, nftables, ip rule/route) failed.',
    hint: 'the message names the command and its stderr; the agent needs NET_ADMIN and SYS_ADMIN',
  },
  MESH_ERR_CNI_STATE: {
    summary: 'A pod state file of the istio-cni agent could not be read or written.',
  },
  MESH_ERR_CNI_ZDS: {
    summary:
      'A ztunnel ZDS exchange failed: no ztunnel connected, no ack in time, an ack error or a malformed message.',
    hint: 'check that ztunnel runs on this node and shares /var/run/ztunnel with the istio-cni agent',
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
  MESH_ERR_HBONE_CONNECT: {
    summary: 'An HBONE connection (TCP, mTLS or HTTP/2 handshake) to a peer proxy could not be established.',
    hint: 'check that the destination listens on :15008 and trusts the same root; the message names the address',
  },
  MESH_ERR_HBONE_LISTEN: {
    summary: 'The HBONE listener (:15008) could not be bound or adopted.',
    hint: 'another process (or an old proxy without SO_REUSEPORT) may hold the port',
  },
  MESH_ERR_HBONE_PROTOCOL: {
    summary:
      'An HBONE peer broke the protocol: not HTTP/2 over ALPN h2, a non-CONNECT request, or a bad authority.',
  },
  MESH_ERR_HBONE_STATUS: {
    summary:
      'An HBONE CONNECT was answered with a non-200 status (400 bad request, 401 denied, 503 unavailable).',
  },
  MESH_ERR_HBONE_STREAM: {
    summary: 'An HBONE tunnel stream or its HTTP/2 connection closed before the CONNECT was answered.',
  },
  MESH_ERR_HBONE_TIMEOUT: {
    summary: 'An HBONE handshake or keepalive PING was not answered in time; the connection was dropped.',
  },
  MESH_ERR_IDENTITY_FETCH: {
    summary: 'A workload certificate could not be obtained from the CA (or the manager was closed).',
    hint: 'check istiod reachability on :15012 and the CA logs; a valid certificate keeps serving meanwhile',
  },
  MESH_ERR_IDENTITY_INVALID: {
    summary: 'A SPIFFE identity, CSR or certificate is malformed or does not match what was expected.',
  },
  MESH_ERR_ISTIOD_GATEWAY: {
    summary:
      "The Gateway controller could not write a Gateway's ServiceAccount, Service or Deployment, its status, or a GatewayClass; it retries with back-off.",
    hint: 'check istiod RBAC (apps/deployments, services, serviceaccounts, gateways/status, gatewayclasses) and the API server message in the log',
  },
  MESH_ERR_ISTIOD_INFORMER: {
    summary:
      'A Kubernetes list/watch of istiod failed; the informer restarts with back-off and keeps its last view.',
    hint: 'check istiod RBAC (get/list/watch on the kind named in the log) and the API server; CRDs not installed are skipped',
  },
  MESH_ERR_ISTIOD_L7_CONFIG: {
    summary:
      'Part of an L7 config object (route, VirtualService, DestinationRule, waypoint policy) could not be translated for waypoints and was skipped; the rest applies.',
    hint: 'the log and the object status (ResolvedRefs on routes, WaypointAccepted on Istio kinds) name the field; see docs/waypoint-l7.md',
  },
  MESH_ERR_ISTIOD_STATUS_WRITE: {
    summary: 'istiod could not write a status condition (WaypointBound, ZtunnelAccepted) after retries.',
    hint: 'check RBAC for patch on <kind>/status; the next change of the object retries',
  },
  MESH_ERR_LAB_APISERVER_LISTEN: {
    summary: 'The lab API server could not bind its listen address.',
    hint: 'another process may hold the port (a previous lab still running?), or the host is not a local address',
  },
  MESH_ERR_LAB_APISERVER_OPTIONS: {
    summary:
      'The lab API server was given an invalid option (service CIDR, NodePort range, address, size limit).',
    hint: 'the message names the option, the value and the accepted form',
  },
  MESH_ERR_LAB_CNI_CONFIG: {
    summary:
      'A node has no usable CNI network configuration, or a plugin named in it is not in the CNI bin dir.',
    hint: 'check <node root>/etc/cni/net.d (first *.conflist by name) and <node root>/opt/cni/bin',
  },
  MESH_ERR_LAB_CNI_PLUGIN: {
    summary:
      'A CNI plugin failed (CNI error code, msg and details in the message), timed out or printed no result.',
    hint: 'the message names the plugin and command; a chained plugin that refuses ADD keeps the pod in ContainerCreating',
  },
  MESH_ERR_LAB_CONTROLLER_SYNC: {
    summary: 'A lab controller failed to reconcile an object; it retries with backoff.',
  },
  MESH_ERR_LAB_DNS_START: {
    summary: 'The lab cluster DNS server could not start or bind its address.',
    hint: 'the DNS address must be assigned in the namespace the server runs in (the fabric bridge)',
  },
  MESH_ERR_LAB_KUBELET: {
    summary:
      'A lab kubelet could not register its node, renew its lease, resolve a pod (env, volumes, token) or write its status.',
    hint: 'the message names the pod or node; missing ConfigMaps/Secrets/ServiceAccounts are retried until they exist',
  },
  MESH_ERR_LAB_NET_COMMAND: {
    summary:
      'A system command the lab runs (ip, nsenter, unshare, iptables-restore, mount…) failed or timed out.',
    hint: 'the message names the command, its exit status and stderr; the lab needs root',
  },
  MESH_ERR_LAB_NET_EXISTS: {
    summary: 'A lab with this name prefix already exists (network namespaces or a registry entry).',
    hint: 'run `ambientctl lab down` (cleanupLeftovers) or choose another prefix',
  },
  MESH_ERR_LAB_NET_INVALID: {
    summary: 'A lab network option is invalid (prefix, address block, node count, node name).',
    hint: 'the message names the option and the accepted form',
  },
  MESH_ERR_LAB_NOT_READY: {
    summary: 'Lab components (mesh or demo workloads) did not become Ready within the timeout.',
    hint: 'the message lists the pods that are not Ready with their container state and last log lines',
  },
  MESH_ERR_LAB_NOT_ROOT: {
    summary: 'The lab needs root: network namespaces, mounts and iptables.',
    hint: 'run it as root (e.g. `sudo npm start`)',
  },
  MESH_ERR_LAB_NOT_RUNNING: {
    summary: 'No running lab was found for this prefix (or root directory).',
    hint: 'start one with `ambientctl lab up`; `ambientctl lab status` shows what exists',
  },
  MESH_ERR_LAB_PKI: {
    summary: 'The lab CA, serving certificate or service-account signing key could not be created or read.',
    hint: 'check permissions of <dataDir>/pki; delete the directory to start a new cluster identity',
  },
  MESH_ERR_LAB_PREREQ: {
    summary: 'A system tool or package the lab needs is missing.',
    hint: 'the message names the tool and the Debian package that provides it',
  },
  MESH_ERR_LAB_PROXY_SYNC: {
    summary: 'The lab service proxy could not program its iptables chains in a node namespace.',
  },
  MESH_ERR_LAB_RUNTIME_CONTAINER: {
    summary: 'A container process could not be set up (mounts, namespaces, capabilities) or started.',
  },
  MESH_ERR_LAB_RUNTIME_EXEC: {
    summary: 'A command could not be run inside a pod (no sandbox, timed out, or failed to start).',
  },
  MESH_ERR_LAB_RUNTIME_INVALID: {
    summary:
      'A pod given to the lab runtime is invalid (missing fields, bad volume or probe, unknown port name).',
  },
  MESH_ERR_LAB_RUNTIME_NOT_FOUND: {
    summary: 'The lab runtime knows no pod (or container) with this uid or name.',
  },
  MESH_ERR_LAB_STATE_CORRUPT: {
    summary: 'The lab API server state (snapshot or write-ahead log) is damaged beyond a torn final record.',
    hint: 'the message names the file and offset; remove <dataDir>/state to start an empty cluster',
  },
  MESH_ERR_LAB_STATE_IO: {
    summary: 'Reading or writing the lab API server state directory failed; the write was not acknowledged.',
    hint: 'check free space and permissions of the data directory',
  },
  MESH_ERR_LAB_SUPERVISOR: {
    summary: 'The lab supervisor process failed to start, exited, or did not stop when asked.',
    hint: 'see <root>/logs/supervisor.log; `ambientctl lab down` removes whatever it left behind',
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
  MESH_ERR_TLS_CONTEXT: {
    summary: 'A TLS context could not be built from a workload certificate (key, chain or roots unusable).',
  },
  MESH_ERR_TLS_PEER_IDENTITY: {
    summary: 'A TLS peer presented no usable SPIFFE identity, or not one of the identities expected.',
    hint: 'compare the peer certificate URI SAN with the expected service accounts and the trust domain',
  },
  MESH_ERR_WAYPOINT_CONFIG: {
    summary:
      'The waypoint could not compile part of its L7 config (a route regex, a backend, a policy); that piece is skipped and the rest serves.',
    hint: 'the log names the service and route; fix the source object (HTTPRoute, VirtualService, DestinationRule, AuthorizationPolicy)',
  },
  MESH_ERR_XDS_AUTH: {
    summary:
      'An xDS client was refused: no or invalid bearer token, its node id names another namespace, or its identity may not read a type it asked for (waypoint config).',
    hint: 'the client must send its service-account token (audience istio-ca) as "authorization: Bearer"; the node id namespace must be the token\'s',
  },
  MESH_ERR_XDS_NACK: {
    summary: 'An xDS client rejected (NACKed) a response; it keeps the last state it accepted.',
    hint: 'the error detail is in the client log and in istiod /debug/syncz (lastNack); the named resource failed validation',
  },
  MESH_ERR_XDS_REQUEST: {
    summary:
      "An xDS request was malformed (undecodable, no node, or a node id not in Istio's format); the stream was closed.",
  },
  MESH_ERR_XDS_STREAM: {
    summary:
      'The xDS stream to istiod ended or could not be opened; the client reconnects with back-off and keeps its last state.',
    hint: 'check istiod reachability (:15010 plaintext, :15012 TLS) and the bearer token',
  },
} as const satisfies Record<string, ErrorCodeSpec>;

export type ErrorCode = keyof typeof REGISTRY;
export const CODES: Readonly<Record<ErrorCode, ErrorCodeSpec>> = REGISTRY;
