/**
 * Container image → program, for the lab's kubelets: the mesh's own images (deploy/) run their entry point
 * from this repository, the samples run theirs (samples/images.ts), `curlimages/curl` runs host programs, and
 * anything else is unknown, which the runtime reports as `ErrImagePull` (never run silently as something else).
 *
 * An image whose entry file does not exist (a broken checkout) is treated exactly like an unknown image, with the missing file named in the pull failure message.
 */
import { existsSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { imageRepository, isHostCommandImage, lookupSampleImage } from '../samples/images.ts';
import type { ResolvedImage } from './runtime/types.ts';

/** The mesh's images (repository without registry or tag) → repository-relative entry point. */
export const MESH_IMAGES: Readonly<Record<string, string>> = {
  'ambient-ts/istiod': 'istiod/src/main.ts',
  'ambient-ts/ztunnel': 'ztunnel/src/main.ts',
  'ambient-ts/install-cni': 'cni-plugin/src/main.ts',
  'ambient-ts/waypoint': 'waypoint/src/main.ts',
};

/** Registries a mesh image may be written with (`docker.io/ambient-ts/istiod:0.1.0`). */
const MESH_REGISTRIES = ['docker.io/', 'index.docker.io/', 'localhost/'];

/** Host programs the curl image stands for: its ENTRYPOINT is curl; the sample overrides it with a command. */
const CURL_ENTRYPOINT = ['/usr/bin/curl'];

export type ImageLookup =
  | { readonly ok: true; readonly image: ResolvedImage; readonly what: string }
  | { readonly ok: false; readonly reason: string };

function meshEntry(image: string): string | null {
  let repo = imageRepository(image.trim());
  for (const r of MESH_REGISTRIES) if (repo.startsWith(r)) repo = repo.slice(r.length);
  return MESH_IMAGES[repo] ?? null;
}

/** What an image runs in the lab, or why it cannot run (unknown image, entry point not in this tree). */
export function lookupLabImage(image: string, repoRoot: string): ImageLookup {
  const mesh = meshEntry(image);
  const sample = mesh ? null : lookupSampleImage(image);
  const entry = mesh ?? sample?.entry ?? null;
  if (entry) {
    const file = isAbsolute(entry) ? entry : join(repoRoot, entry);
    if (!existsSync(file))
      return { ok: false, reason: `its program ${entry} does not exist in this tree (not written yet?)` };
    return {
      ok: true,
      image: { entry, ...(sample ? { env: sample.env } : {}) },
      what: entry,
    };
  }
  if (isHostCommandImage(image)) {
    return { ok: true, image: { hostCommand: CURL_ENTRYPOINT }, what: 'host curl' };
  }
  return { ok: false, reason: 'not a lab image (no program is registered for it; see lab/images.ts)' };
}
