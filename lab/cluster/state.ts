/**
 * The supervisor's pid file and status file: how `up`, `status` and `down` (other processes) find and follow
 * the supervisor. The pid file holds the pid and its start time, so a reused pid is never taken for it.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { processStartTime } from '../node/state.ts';
import { type LabPaths, writeJsonAtomic } from './paths.ts';

export type SupervisorPhase = 'starting' | 'ready' | 'failed' | 'stopping';

export interface StepRecord {
  readonly name: string;
  state: 'running' | 'done' | 'failed';
  ms?: number;
  detail?: string;
}

export interface SupervisorStatus {
  readonly pid: number;
  phase: SupervisorPhase;
  readonly prefix: string;
  readonly block: number;
  readonly startedAt: string;
  readyAt?: string;
  steps: StepRecord[];
  error?: string;
  apiUrl?: string;
  kubeconfig?: string;
  nodes?: { name: string; ip: string; podCidr: string; netns: string }[];
}

export function writeStatus(paths: LabPaths, status: SupervisorStatus): void {
  writeJsonAtomic(paths.statusFile, status);
}

export function readStatus(paths: LabPaths): SupervisorStatus | null {
  try {
    return JSON.parse(readFileSync(paths.statusFile, 'utf8')) as SupervisorStatus;
  } catch {
    return null;
  }
}

export function writePidFile(paths: LabPaths): void {
  writeFileSync(paths.pidFile, `${process.pid} ${processStartTime(process.pid) ?? ''}\n`, { mode: 0o600 });
}

/** The supervisor's pid when it is alive (pid file present, same process, running lab/main.ts), else null. */
export function supervisorPid(paths: LabPaths): number | null {
  let text: string;
  try {
    text = readFileSync(paths.pidFile, 'utf8');
  } catch {
    return null;
  }
  const [pidText, start] = text.trim().split(' ');
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 0) return null;
  const now = processStartTime(pid);
  if (now === null || (start && now !== start)) return null;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
    if (state === 'Z' || state === 'X') return null;
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (!cmdline.includes('lab/main.ts')) return null;
  } catch {
    return null;
  }
  return pid;
}

/** Removes the files that say a supervisor runs (after it stopped). */
export function removeRunFiles(paths: LabPaths): void {
  for (const f of [paths.pidFile, paths.statusFile, paths.controlSocket]) rmSync(f, { force: true });
}
