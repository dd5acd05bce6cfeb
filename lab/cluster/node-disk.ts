/**
 * What survives a node's reboot on a real machine, kept across `lab down` / `lab up`: the node's CNI
 * configuration and plugins (`/etc/cni/net.d`, `/opt/cni/bin`). Everything else of a node (its /var/run, pod
 * directories, IPAM leases) is gone after a reboot, as in the lab.
 *
 * This matters for the mesh: istio-cni inserts its plugin into the node's conflist. With the conflist kept,
 * pods that start again after `lab up` go through the istio-cni plugin, which holds their sandboxes until the
 * agent is back (CNI error 11, retried by the runtime), so ambient pods come back captured — instead of
 * racing the agent and starting uncaptured.
 */
import { cpSync, existsSync, lstatSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LabNetwork } from '../node/network.ts';

const KEPT = ['etc/cni/net.d', 'opt/cni/bin'];

/** Copies every node's kept directories to `<dir>/<node>/` (sockets are skipped: they die with the node). */
export function saveNodeDisks(network: LabNetwork, dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  for (const n of network.nodes) {
    for (const rel of KEPT) {
      const src = join(n.dirs.root, rel);
      if (!existsSync(src)) continue;
      cpSync(src, join(dir, n.name, rel), {
        recursive: true,
        verbatimSymlinks: true,
        filter: (p) => !lstatSync(p).isSocket(),
      });
    }
  }
  writeFileSync(join(dir, 'block'), `${network.plan.block}\n`);
}

/**
 * Puts the saved directories back over freshly created nodes (same address block only: the conflist holds the
 * node's pod CIDR). Returns the nodes restored.
 */
export function restoreNodeDisks(network: LabNetwork, dir: string): string[] {
  let block = '';
  try {
    block = readFileSync(join(dir, 'block'), 'utf8').trim();
  } catch {
    return [];
  }
  const restored: string[] = [];
  if (block === String(network.plan.block)) {
    for (const n of network.nodes) {
      let any = false;
      for (const rel of KEPT) {
        const src = join(dir, n.name, rel);
        if (!existsSync(src)) continue;
        const dst = join(n.dirs.root, rel);
        rmSync(dst, { recursive: true, force: true });
        cpSync(src, dst, { recursive: true, verbatimSymlinks: true });
        any = true;
      }
      if (any) restored.push(n.name);
    }
  }
  rmSync(dir, { recursive: true, force: true });
  return restored;
}
