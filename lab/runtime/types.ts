/**
 * The pod runtime's input and output types. Field names and shapes follow the Kubernetes core/v1 JSON, so
 * the kubelet glue copies a Pod's spec across and PATCHes the produced status back with little translation.
 * Differences: env values, configMap/secret/downwardAPI/projected contents arrive resolved (the glue reads
 * the API), and probe timings may be fractional seconds (so tests can run probes every 100 ms).
 */

export type RestartPolicy = 'Always' | 'OnFailure' | 'Never';
export type DnsPolicy = 'ClusterFirst' | 'ClusterFirstWithHostNet' | 'Default' | 'None';
export type Protocol = 'TCP' | 'UDP' | 'SCTP';
export type HostPathType =
  | ''
  | 'DirectoryOrCreate'
  | 'Directory'
  | 'FileOrCreate'
  | 'File'
  | 'Socket'
  | 'CharDevice'
  | 'BlockDevice';

export interface PodInput {
  readonly uid: string;
  readonly namespace: string;
  readonly name: string;
  readonly hostNetwork?: boolean;
  /** Default Always. */
  readonly restartPolicy?: RestartPolicy;
  /** Default 30. */
  readonly terminationGracePeriodSeconds?: number;
  /** Default ClusterFirst. */
  readonly dnsPolicy?: DnsPolicy;
  readonly dnsConfig?: {
    readonly nameservers?: readonly string[];
    readonly searches?: readonly string[];
    readonly options?: readonly { readonly name: string; readonly value?: string }[];
  };
  readonly hostname?: string;
  readonly subdomain?: string;
  readonly hostAliases?: readonly { readonly ip: string; readonly hostnames: readonly string[] }[];
  readonly initContainers?: readonly ContainerInput[];
  readonly containers: readonly ContainerInput[];
  readonly volumes?: readonly VolumeInput[];
}

export interface EnvVar {
  readonly name: string;
  /** Already resolved by the caller (valueFrom fieldRef/secretKeyRef/configMapKeyRef). */
  readonly value: string;
  /**
   * A field only known once the sandbox exists (`valueFrom.fieldRef` of the pod IP): the runtime sets the
   * variable to the sandbox's pod IP at each container start, ignoring `value`.
   */
  readonly fieldPath?: 'status.podIP' | 'status.podIPs';
}

export interface ContainerPort {
  readonly name?: string;
  readonly containerPort: number;
  readonly protocol?: Protocol;
  readonly hostPort?: number;
  readonly hostIP?: string;
}

export interface VolumeMount {
  readonly name: string;
  readonly mountPath: string;
  readonly readOnly?: boolean;
  readonly subPath?: string;
}

export interface Capabilities {
  readonly add?: readonly string[];
  readonly drop?: readonly string[];
}

/**
 * What the runtime honours: `privileged` (all capabilities) and `capabilities` (the container runtime's default
 * set plus add minus drop, applied as the capability bounding set before exec). runAsUser, runAsGroup,
 * runAsNonRoot, readOnlyRootFilesystem, allowPrivilegeEscalation and seccomp/AppArmor are NOT applied
 * (processes run as root); the runtime logs a warning once per container that sets them.
 */
export interface SecurityContext {
  readonly privileged?: boolean;
  readonly capabilities?: Capabilities;
  readonly runAsUser?: number;
  readonly runAsGroup?: number;
  readonly runAsNonRoot?: boolean;
  readonly readOnlyRootFilesystem?: boolean;
  readonly allowPrivilegeEscalation?: boolean;
}

export interface HttpHeader {
  readonly name: string;
  readonly value: string;
}

export interface ProbeInput {
  readonly httpGet?: {
    readonly path?: string;
    readonly port: number | string;
    readonly host?: string;
    readonly scheme?: 'HTTP' | 'HTTPS';
    readonly httpHeaders?: readonly HttpHeader[];
  };
  readonly tcpSocket?: { readonly port: number | string; readonly host?: string };
  /** Runs in the container's namespaces (one process per probe, as a kubelet does). */
  readonly exec?: { readonly command: readonly string[] };
  /** Seconds (fractions allowed). Defaults as Kubernetes: 0, 10, 1, 1, 3. */
  readonly initialDelaySeconds?: number;
  readonly periodSeconds?: number;
  readonly timeoutSeconds?: number;
  readonly successThreshold?: number;
  readonly failureThreshold?: number;
  /** Grace period for a kill caused by this (liveness/startup) probe; default the pod's. */
  readonly terminationGracePeriodSeconds?: number;
}

export interface ContainerInput {
  readonly name: string;
  readonly image: string;
  readonly command?: readonly string[];
  readonly args?: readonly string[];
  readonly workingDir?: string;
  readonly env?: readonly EnvVar[];
  readonly ports?: readonly ContainerPort[];
  readonly volumeMounts?: readonly VolumeMount[];
  readonly readinessProbe?: ProbeInput;
  readonly livenessProbe?: ProbeInput;
  readonly startupProbe?: ProbeInput;
  readonly securityContext?: SecurityContext;
}

/** Contents of a configMap / secret / downwardAPI / projected volume: relative path → bytes. */
export interface FilesVolumeSource {
  readonly kind?: 'configMap' | 'secret' | 'downwardAPI' | 'projected';
  readonly items: Readonly<Record<string, string | Uint8Array>>;
  /** File mode; default 0o644 (Kubernetes' defaultMode). */
  readonly defaultMode?: number;
}

export type VolumeInput =
  | { readonly name: string; readonly hostPath: { readonly path: string; readonly type?: HostPathType } }
  | { readonly name: string; readonly emptyDir: { readonly medium?: string; readonly sizeLimit?: string } }
  | { readonly name: string; readonly files: FilesVolumeSource };

/**
 * What an image stands for: a TypeScript entry of this repository run with Node 24, or a host program.
 * Kubernetes semantics apply: `command` replaces the entrypoint, `args` replace `cmd`.
 */
export type ResolvedImage =
  | {
      /** Repository-relative (or absolute) `.ts` path, run as `<node 24> <entry>`. */
      readonly entry: string;
      readonly cmd?: readonly string[];
      readonly env?: Readonly<Record<string, string>>;
      readonly workingDir?: string;
    }
  | {
      /** Absolute host program and its arguments (the image's ENTRYPOINT); may be empty (command required). */
      readonly hostCommand: readonly string[];
      readonly cmd?: readonly string[];
      readonly env?: Readonly<Record<string, string>>;
      readonly workingDir?: string;
    };

/** Image name → program, or null for an unknown image (the container then waits with ErrImagePull). */
export type ImageResolver = (image: string) => ResolvedImage | null;

// ---- status (core/v1 PodStatus shape) ----

export type PodPhase = 'Pending' | 'Running' | 'Succeeded' | 'Failed' | 'Unknown';
export type ConditionType = 'PodScheduled' | 'Initialized' | 'ContainersReady' | 'Ready';

export interface PodCondition {
  readonly type: ConditionType;
  readonly status: 'True' | 'False';
  readonly lastProbeTime: null;
  readonly lastTransitionTime: string;
  readonly reason?: string;
  readonly message?: string;
}

export interface ContainerStateRunning {
  readonly startedAt: string;
}
export interface ContainerStateWaiting {
  readonly reason:
    | 'ContainerCreating'
    | 'PodInitializing'
    | 'CrashLoopBackOff'
    | 'ErrImagePull'
    | 'CreateContainerError'
    | 'CreateContainerConfigError'
    | 'RunContainerError';
  readonly message?: string;
}
export interface ContainerStateTerminated {
  readonly exitCode: number;
  readonly signal?: number;
  readonly reason: 'Completed' | 'Error' | 'ContainerCannotRun';
  readonly message?: string;
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly containerID: string;
}
/** Exactly one key set, or none (`{}`) for "no previous state". */
export interface ContainerState {
  readonly running?: ContainerStateRunning;
  readonly waiting?: ContainerStateWaiting;
  readonly terminated?: ContainerStateTerminated;
}

export interface ContainerStatus {
  readonly name: string;
  readonly image: string;
  readonly imageID: string;
  /** `lab://<id>` of the current (or last) instance; absent before the first start. */
  readonly containerID?: string;
  readonly ready: boolean;
  readonly started: boolean;
  readonly restartCount: number;
  readonly state: ContainerState;
  readonly lastState: ContainerState;
}

export interface PodStatus {
  readonly phase: PodPhase;
  readonly conditions: readonly PodCondition[];
  readonly hostIP: string;
  readonly hostIPs: readonly { readonly ip: string }[];
  readonly podIP?: string;
  readonly podIPs?: readonly { readonly ip: string }[];
  readonly startTime: string;
  readonly initContainerStatuses?: readonly ContainerStatus[];
  readonly containerStatuses: readonly ContainerStatus[];
  readonly message?: string;
  readonly reason?: string;
}

export interface PodRef {
  readonly uid: string;
  readonly namespace: string;
  readonly name: string;
}

/** A Kubernetes-style event the glue may record (reason and message as kubelet words them). */
export interface RuntimeEvent {
  readonly pod: PodRef;
  readonly type: 'Normal' | 'Warning';
  readonly reason: string;
  readonly message: string;
  readonly container?: string;
}

export interface ExecResult {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
}
