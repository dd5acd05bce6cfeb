/**
 * What the lab needs from the machine, checked before anything is created, with the Debian package to install
 * for each missing piece.
 */
import { accessSync, constants } from 'node:fs';
import { join } from 'node:path';
import { MeshError } from '../../pkg/errors/index.ts';
import { SYSTEM_CNI_DIR } from '../node/cni-config.ts';

const SYSTEM_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/** Tool → Debian package. */
export const REQUIRED_TOOLS: Readonly<Record<string, string>> = {
  ip: 'iproute2',
  iptables: 'iptables',
  'iptables-save': 'iptables',
  'iptables-restore': 'iptables',
  nsenter: 'util-linux',
  unshare: 'util-linux',
  setpriv: 'util-linux',
  mount: 'mount',
  umount: 'mount',
  sysctl: 'procps',
  chroot: 'coreutils',
  realpath: 'coreutils',
  hostname: 'hostname',
  sh: 'dash',
};

/** Reference CNI plugins the nodes' conflist uses. */
export const REQUIRED_CNI_PLUGINS = ['ptp', 'host-local', 'portmap', 'loopback'];

function findTool(name: string, dirs: readonly string[]): string | null {
  for (const dir of dirs) {
    const p = join(dir, name);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return null;
}

/** kubectl on PATH (or a system directory), or null. */
export function findKubectl(): string | null {
  const path = (process.env.PATH ?? '').split(':').filter(Boolean);
  return findTool('kubectl', [...path, ...SYSTEM_DIRS]);
}

export function requireRoot(): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new MeshError(
      'MESH_ERR_LAB_NOT_ROOT',
      'the lab needs root: network namespaces and iptables (and mounts for the pods)',
    );
  }
}

/** Throws MESH_ERR_LAB_PREREQ naming every missing tool and the packages that provide them. */
export function requireTools(opts: { kubectl?: boolean } = {}): void {
  const missing: string[] = [];
  const packages = new Set<string>();
  for (const [tool, pkg] of Object.entries(REQUIRED_TOOLS)) {
    if (!findTool(tool, SYSTEM_DIRS)) {
      missing.push(tool);
      packages.add(pkg);
    }
  }
  for (const p of REQUIRED_CNI_PLUGINS) {
    if (!findTool(p, [SYSTEM_CNI_DIR])) {
      missing.push(`${SYSTEM_CNI_DIR}/${p}`);
      packages.add('containernetworking-plugins');
    }
  }
  if (opts.kubectl && !findKubectl()) {
    missing.push('kubectl');
    packages.add('kubectl (https://kubernetes.io/docs/tasks/tools/)');
  }
  if (missing.length > 0) {
    throw new MeshError('MESH_ERR_LAB_PREREQ', `the lab needs ${missing.join(', ')}`, {
      hint: `install ${[...packages].join(', ')} (e.g. apt-get install -y ${[...packages]
        .filter((p) => !p.includes(' '))
        .join(' ')})`,
    });
  }
}
