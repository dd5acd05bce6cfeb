/**
 * A pod's volumes and managed files on the node, laid out like kubelet's /var/lib/kubelet/pods/<uid>/:
 *
 *   <node>/var/lib/kubelet/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>/
 *                                     volumes/kubernetes.io~configmap/<name>/…   (secret, downward-api, projected)
 *                                     etc-hosts, resolv.conf, hostname
 *
 * hostPath volumes map onto the node's root (`/var/run/ztunnel` → `<node root>/var/run/ztunnel`) except the
 * few machine trees shared on purpose (/proc, /sys, /dev, /var/run/netns; see lab/node PASSTHROUGH_HOST_PATHS).
 * File volumes are written by the runtime from the contents the caller supplies and mounted read-only; a
 * rewrite (e.g. a refreshed projected token) replaces each file atomically by rename, which a directory
 * bind mount shows at once.
 */
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { MeshError } from '../../pkg/errors/index.ts';
import type { LabNode } from '../node/network.ts';
import type { MountSpec } from './launch.ts';
import type { ContainerInput, FilesVolumeSource, PodInput, VolumeInput } from './types.ts';

const KIND_DIR: Readonly<Record<NonNullable<FilesVolumeSource['kind']>, string>> = {
  configMap: 'kubernetes.io~configmap',
  secret: 'kubernetes.io~secret',
  downwardAPI: 'kubernetes.io~downward-api',
  projected: 'kubernetes.io~projected',
};

export interface PreparedVolume {
  readonly name: string;
  /** Host path of the volume's root. */
  readonly path: string;
  readonly kind: 'hostPath' | 'emptyDir' | 'files';
  readonly forceReadOnly: boolean;
}

function invalid(message: string): MeshError {
  return new MeshError('MESH_ERR_LAB_RUNTIME_INVALID', message);
}

/** A relative path that stays inside its base (no absolute paths, no `..` escapes). */
function safeJoin(base: string, rel: string, what: string): string {
  const p = resolve(base, rel);
  const r = relative(base, p);
  if (rel.startsWith('/') || r.startsWith('..'))
    throw invalid(`${what} ${JSON.stringify(rel)} escapes its volume`);
  return p;
}

export function podDir(node: LabNode, uid: string): string {
  return join(node.dirs.kubeletPods, uid);
}

/** Writes a files volume's contents; files no longer listed are removed. */
export function writeFilesVolume(dir: string, source: FilesVolumeSource): void {
  mkdirSync(dir, { recursive: true });
  const mode = source.defaultMode ?? 0o644;
  const wanted = new Set<string>();
  for (const [rel, content] of Object.entries(source.items)) {
    const file = safeJoin(dir, rel, 'file');
    wanted.add(file);
    mkdirSync(dirname(file), { recursive: true });
    const tmp = join(dirname(file), `.lab-tmp-${process.pid}-${Math.random().toString(36).slice(2)}`);
    writeFileSync(tmp, content, { mode });
    chmodSync(tmp, mode);
    renameSync(tmp, file);
  }
  const prune = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) prune(p);
      else if (!wanted.has(p)) rmSync(p, { force: true });
    }
  };
  prune(dir);
}

/** Creates the pod's volume directories (hostPath checks happen per container start: see hostPathReady). */
export function preparePodVolumes(node: LabNode, pod: PodInput): Map<string, PreparedVolume> {
  const base = join(podDir(node, pod.uid), 'volumes');
  const out = new Map<string, PreparedVolume>();
  for (const v of pod.volumes ?? []) {
    if (out.has(v.name)) throw invalid(`volume ${JSON.stringify(v.name)} is defined twice`);
    out.set(v.name, prepareVolume(node, base, v));
  }
  return out;
}

function prepareVolume(node: LabNode, base: string, v: VolumeInput): PreparedVolume {
  if ('hostPath' in v) {
    if (!v.hostPath.path.startsWith('/'))
      throw invalid(`hostPath ${JSON.stringify(v.hostPath.path)} is not absolute`);
    return { name: v.name, path: node.hostPath(v.hostPath.path), kind: 'hostPath', forceReadOnly: false };
  }
  if ('emptyDir' in v) {
    const dir = join(base, 'kubernetes.io~empty-dir', v.name);
    mkdirSync(dir, { recursive: true });
    chmodSync(dir, 0o777);
    return { name: v.name, path: dir, kind: 'emptyDir', forceReadOnly: false };
  }
  if ('files' in v) {
    const dir = join(base, KIND_DIR[v.files.kind ?? 'configMap'], v.name);
    writeFilesVolume(dir, v.files);
    return { name: v.name, path: dir, kind: 'files', forceReadOnly: true };
  }
  throw invalid(`volume ${JSON.stringify((v as { name?: string }).name)} has no supported source`);
}

/**
 * Applies a hostPath volume's `type` before a container start (DirectoryOrCreate/FileOrCreate create,
 * the others check). Returns an error message, or null when the path is usable. An unset type creates a
 * missing directory, as containerd does for a missing bind source.
 */
export function hostPathReady(path: string, type: string | undefined): string | null {
  let st: ReturnType<typeof statSync> | null = null;
  try {
    st = statSync(path);
  } catch {
    st = null;
  }
  switch (type ?? '') {
    case '':
    case 'DirectoryOrCreate':
      if (!st) mkdirSync(path, { recursive: true, mode: 0o755 });
      return null;
    case 'FileOrCreate':
      if (!st) {
        mkdirSync(dirname(path), { recursive: true });
        writeFileSync(path, '', { mode: 0o644 });
      }
      return null;
    case 'Directory':
      return st?.isDirectory() ? null : `hostPath type check failed: ${path} is not a directory`;
    case 'File':
      return st?.isFile() ? null : `hostPath type check failed: ${path} is not a file`;
    case 'Socket':
      return st?.isSocket() ? null : `hostPath type check failed: ${path} is not a socket file`;
    case 'CharDevice':
      return st?.isCharacterDevice() ? null : `hostPath type check failed: ${path} is not a character device`;
    case 'BlockDevice':
      return st?.isBlockDevice() ? null : `hostPath type check failed: ${path} is not a block device`;
    default:
      return `hostPath type ${JSON.stringify(type)} is not supported`;
  }
}

/** The bind mounts of one container: its volumeMounts plus the pod's /etc/hosts, resolv.conf and hostname. */
export function containerMounts(
  container: ContainerInput,
  volumes: ReadonlyMap<string, PreparedVolume>,
  podFiles: { hosts: string; resolvConf: string; hostname: string },
): MountSpec[] {
  const mounts: MountSpec[] = [];
  for (const m of container.volumeMounts ?? []) {
    const v = volumes.get(m.name);
    if (!v)
      throw invalid(`container ${container.name}: volumeMount ${JSON.stringify(m.name)} names no volume`);
    let source = v.path;
    if (m.subPath) {
      source = safeJoin(v.path, m.subPath, 'subPath');
      if (!existsSync(source) && v.kind !== 'files') mkdirSync(source, { recursive: true });
    }
    let kind: 'dir' | 'file' = 'dir';
    try {
      kind = statSync(source).isDirectory() ? 'dir' : 'file';
    } catch {
      kind = 'dir';
    }
    mounts.push({ source, target: m.mountPath, kind, readOnly: v.forceReadOnly || m.readOnly === true });
  }
  const targets = new Set(mounts.map((m) => m.target));
  const managed: [string, string][] = [
    [podFiles.hosts, '/etc/hosts'],
    [podFiles.resolvConf, '/etc/resolv.conf'],
    [podFiles.hostname, '/etc/hostname'],
  ];
  for (const [source, target] of managed) {
    if (!targets.has(target)) mounts.push({ source, target, kind: 'file', readOnly: false });
  }
  return mounts;
}

export interface DnsSettings {
  readonly clusterDnsIp: string;
  readonly clusterDomain: string;
}

/** resolv.conf as kubelet writes it for the pod's dnsPolicy (and dnsConfig). */
export function resolvConf(pod: PodInput, nodeResolvConf: string, dns: DnsSettings): string {
  let policy = pod.dnsPolicy ?? 'ClusterFirst';
  // Kubernetes: hostNetwork pods with ClusterFirst fall back to the node's resolver configuration.
  if (policy === 'ClusterFirst' && pod.hostNetwork) policy = 'Default';
  let nameservers: string[] = [];
  let searches: string[] = [];
  const options = new Map<string, string | undefined>();
  if (policy === 'ClusterFirst' || policy === 'ClusterFirstWithHostNet') {
    nameservers = [dns.clusterDnsIp];
    const d = dns.clusterDomain;
    searches = [`${pod.namespace}.svc.${d}`, `svc.${d}`, d];
    options.set('ndots', '5');
  } else if (policy === 'Default') {
    for (const line of nodeResolvConf.split('\n')) {
      const [key, ...rest] = line.trim().split(/\s+/);
      if (key === 'nameserver' && rest[0]) nameservers.push(rest[0]);
      else if (key === 'search' || key === 'domain') searches = rest;
      else if (key === 'options') {
        for (const o of rest) {
          const [n, val] = o.split(':');
          if (n) options.set(n, val);
        }
      }
    }
  }
  const cfg = pod.dnsConfig;
  if (cfg) {
    for (const ns of cfg.nameservers ?? []) if (!nameservers.includes(ns)) nameservers.push(ns);
    for (const s of cfg.searches ?? []) if (!searches.includes(s)) searches.push(s);
    for (const o of cfg.options ?? []) options.set(o.name, o.value);
  }
  const lines: string[] = [];
  if (searches.length) lines.push(`search ${searches.slice(0, 32).join(' ')}`);
  for (const ns of nameservers.slice(0, 3)) lines.push(`nameserver ${ns}`);
  if (options.size)
    lines.push(`options ${[...options].map(([n, v]) => (v === undefined ? n : `${n}:${v}`)).join(' ')}`);
  return `${lines.join('\n')}\n`;
}

/** /etc/hosts as kubelet writes it (pod IP → hostname, then hostAliases). */
export function etcHosts(pod: PodInput, podIp: string, nodeHosts: string, clusterDomain: string): string {
  const lines: string[] = [];
  if (pod.hostNetwork) {
    lines.push(nodeHosts.trimEnd());
  } else {
    lines.push(
      '# Kubernetes-managed hosts file.',
      '127.0.0.1\tlocalhost',
      '::1\tlocalhost ip6-localhost ip6-loopback',
      'fe00::0\tip6-localnet',
      'fe00::0\tip6-mcastprefix',
      'fe00::1\tip6-allnodes',
      'fe00::2\tip6-allrouters',
    );
    const host = pod.hostname ?? pod.name;
    const fqdn = pod.subdomain
      ? `${host}.${pod.subdomain}.${pod.namespace}.svc.${clusterDomain}\t${host}`
      : host;
    lines.push(`${podIp}\t${fqdn}`);
  }
  if (pod.hostAliases?.length) {
    lines.push('', '# Entries added by HostAliases.');
    for (const a of pod.hostAliases) lines.push(`${a.ip}\t${a.hostnames.join('\t')}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Writes the pod's managed files; returns their host paths. */
export function writePodFiles(
  node: LabNode,
  pod: PodInput,
  podIp: string,
  dns: DnsSettings,
): { hosts: string; resolvConf: string; hostname: string } {
  const dir = podDir(node, pod.uid);
  mkdirSync(dir, { recursive: true });
  const readOr = (p: string): string => {
    try {
      return readFileSync(p, 'utf8');
    } catch {
      return '';
    }
  };
  const files = {
    hosts: join(dir, 'etc-hosts'),
    resolvConf: join(dir, 'resolv.conf'),
    hostname: join(dir, 'hostname'),
  };
  writeFileSync(
    files.hosts,
    etcHosts(pod, podIp, readOr(join(node.dirs.root, 'etc/hosts')), dns.clusterDomain),
  );
  writeFileSync(files.resolvConf, resolvConf(pod, readOr(node.resolvConf), dns));
  writeFileSync(files.hostname, `${pod.hostNetwork ? node.name : (pod.hostname ?? pod.name)}\n`);
  return files;
}
