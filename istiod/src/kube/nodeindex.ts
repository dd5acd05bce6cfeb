/**
 * The CA's NodeIndex (which node a pod runs on, which service accounts run on a node) answered from the ambient
 * index's informer-fed pods, so a CSR costs no API call beyond its TokenReview.
 */
import type { NodeIndex } from '../ca/service.ts';
import type { AmbientIndex } from '../index/index.ts';
import type { Pod } from './types.ts';

function running(p: Pod): boolean {
  const phase = p.status?.phase;
  return phase !== 'Succeeded' && phase !== 'Failed' && !p.metadata?.deletionTimestamp;
}

export class InformerNodeIndex implements NodeIndex {
  private readonly index: AmbientIndex;

  constructor(index: AmbientIndex) {
    this.index = index;
  }

  async nodeOfPod(namespace: string, name: string, uid: string | null): Promise<string | null> {
    const p = this.index.get('Pod', `${namespace}/${name}`);
    if (!p || !running(p)) return null;
    if (uid && p.metadata?.uid !== uid) return null;
    return p.spec?.nodeName || null;
  }

  async serviceAccountOnNode(namespace: string, serviceAccount: string, node: string): Promise<boolean> {
    for (const p of this.index.list('Pod')) {
      if (
        p.metadata?.namespace === namespace &&
        p.spec?.nodeName === node &&
        (p.spec?.serviceAccountName || 'default') === serviceAccount &&
        running(p)
      )
        return true;
    }
    return false;
  }
}
