/**
 * Pod status as kubelet computes it (pkg/kubelet/kubelet_pods.go getPhase, status manager conditions), from
 * the runtime's view of one pod. Pure: the runtime keeps the records, this turns them into core/v1 PodStatus.
 */
import type {
  ConditionType,
  ContainerState,
  ContainerStateTerminated,
  ContainerStateWaiting,
  ContainerStatus,
  PodCondition,
  PodPhase,
  PodStatus,
  RestartPolicy,
} from './types.ts';

/** Kubernetes serialises times with second precision. */
export function kubeTime(d: Date): string {
  return `${d.toISOString().slice(0, 19)}Z`;
}

/** The runtime's record of one container (regular or init). */
export interface ContainerRecord {
  readonly name: string;
  readonly image: string;
  readonly init: boolean;
  readonly hasReadinessProbe: boolean;
  readonly hasStartupProbe: boolean;
  state: 'waiting' | 'running' | 'terminated';
  waiting: ContainerStateWaiting;
  runningSince: Date | null;
  terminated: ContainerStateTerminated | null;
  lastTerminated: ContainerStateTerminated | null;
  restartCount: number;
  ready: boolean;
  started: boolean;
  containerID: string | null;
}

export function newContainerRecord(
  name: string,
  image: string,
  init: boolean,
  probes: { readiness: boolean; startup: boolean },
): ContainerRecord {
  return {
    name,
    image,
    init,
    hasReadinessProbe: probes.readiness,
    hasStartupProbe: probes.startup,
    state: 'waiting',
    waiting: { reason: init ? 'PodInitializing' : 'ContainerCreating' },
    runningSince: null,
    terminated: null,
    lastTerminated: null,
    restartCount: 0,
    ready: false,
    started: false,
    containerID: null,
  };
}

export interface PodRecordView {
  readonly restartPolicy: RestartPolicy;
  readonly createdAt: Date;
  readonly hostIP: string;
  readonly podIP: string | null;
  /** All init containers completed successfully. */
  readonly initialized: boolean;
  /** An init container failed for good (restartPolicy Never). */
  readonly initFailed: boolean;
  readonly initContainers: readonly ContainerRecord[];
  readonly containers: readonly ContainerRecord[];
  /** Condition transition times, updated by buildPodStatus. */
  readonly transitions: Map<ConditionType, { status: 'True' | 'False'; at: string }>;
}

function containerState(c: ContainerRecord): ContainerState {
  if (c.state === 'running' && c.runningSince) return { running: { startedAt: kubeTime(c.runningSince) } };
  if (c.state === 'terminated' && c.terminated) return { terminated: c.terminated };
  return { waiting: c.waiting };
}

export function containerStatus(c: ContainerRecord): ContainerStatus {
  return {
    name: c.name,
    image: c.image,
    imageID: '',
    ...(c.containerID ? { containerID: c.containerID } : {}),
    ready: c.ready,
    started: c.started,
    restartCount: c.restartCount,
    state: containerState(c),
    lastState: c.lastTerminated ? { terminated: c.lastTerminated } : {},
  };
}

/** kubelet's getPhase. */
export function podPhase(view: PodRecordView): PodPhase {
  if (view.initFailed) return 'Failed';
  if (!view.initialized) return 'Pending';
  let waiting = 0;
  let running = 0;
  let stopped = 0;
  let succeeded = 0;
  for (const c of view.containers) {
    if (c.state === 'running') running++;
    else if (c.state === 'terminated') {
      stopped++;
      if (c.terminated?.exitCode === 0) succeeded++;
    } else if (c.lastTerminated) stopped++;
    else waiting++;
  }
  if (waiting > 0) return 'Pending';
  if (running > 0) return 'Running';
  if (stopped > 0) {
    if (view.restartPolicy === 'Always') return 'Running';
    if (stopped === succeeded) return 'Succeeded';
    if (view.restartPolicy === 'Never') return 'Failed';
    return 'Running';
  }
  return 'Pending';
}

function condition(
  view: PodRecordView,
  type: ConditionType,
  ok: boolean,
  reason?: string,
  message?: string,
): PodCondition {
  const status = ok ? 'True' : 'False';
  const prev = view.transitions.get(type);
  let at = prev?.at ?? kubeTime(view.createdAt);
  if (prev && prev.status !== status) at = kubeTime(new Date());
  view.transitions.set(type, { status, at });
  return {
    type,
    status,
    lastProbeTime: null,
    lastTransitionTime: at,
    ...(reason ? { reason } : {}),
    ...(message ? { message } : {}),
  };
}

export function buildPodStatus(view: PodRecordView): PodStatus {
  const phase = podPhase(view);
  const terminal = phase === 'Succeeded' || phase === 'Failed';
  const unready = view.containers.filter((c) => !c.ready).map((c) => c.name);
  const incompleteInit = view.initContainers
    .filter((c) => !(c.state === 'terminated' && c.terminated?.exitCode === 0))
    .map((c) => c.name);
  const ready = unready.length === 0 && view.initialized && !terminal;
  const notReadyReason = terminal ? 'PodCompleted' : 'ContainersNotReady';
  const notReadyMessage = terminal ? undefined : `containers with unready status: [${unready.join(' ')}]`;
  const conditions: PodCondition[] = [
    condition(
      view,
      'Initialized',
      view.initialized,
      view.initialized ? undefined : 'ContainersNotInitialized',
      view.initialized ? undefined : `containers with incomplete status: [${incompleteInit.join(' ')}]`,
    ),
    condition(view, 'Ready', ready, ready ? undefined : notReadyReason, ready ? undefined : notReadyMessage),
    condition(
      view,
      'ContainersReady',
      ready,
      ready ? undefined : notReadyReason,
      ready ? undefined : notReadyMessage,
    ),
    condition(view, 'PodScheduled', true),
  ];
  const status: PodStatus = {
    phase,
    conditions,
    hostIP: view.hostIP,
    hostIPs: [{ ip: view.hostIP }],
    ...(view.podIP ? { podIP: view.podIP, podIPs: [{ ip: view.podIP }] } : {}),
    startTime: kubeTime(view.createdAt),
    ...(view.initContainers.length
      ? { initContainerStatuses: view.initContainers.map(containerStatus) }
      : {}),
    containerStatuses: view.containers.map(containerStatus),
  };
  return status;
}
