/**
 * Container image → sample program, for the lab's kubelet: a pod whose container image is one of these runs
 * `node <entry>` with `env` (what the real image bakes in) under the pod's own env, which wins on conflicts.
 * Keys are image repositories without tag or digest, as upstream manifests name them; `lookupSampleImage`
 * also accepts the short Docker Hub forms (`istio/examples-…`, no `docker.io/`) and tags/digests.
 *
 * `curlimages/curl` is deliberately absent: its pods only exist to `exec` a `curl` into, so the lab runs their
 * command (`/bin/sleep infinity`) and exec'd commands from the host's binaries inside the pod's namespaces; see
 * `HOST_COMMAND_IMAGES`.
 */

export interface SampleImage {
  /** Repository-relative path of the TypeScript program to run. */
  readonly entry: string;
  /** Environment the image bakes in (Dockerfile ENV); the pod spec's env overrides it. */
  readonly env: Readonly<Record<string, string>>;
}

const PRODUCTPAGE = 'samples/bookinfo/productpage.ts';
const DETAILS = 'samples/bookinfo/details.ts';
const REVIEWS = 'samples/bookinfo/reviews.ts';
const RATINGS = 'samples/bookinfo/ratings.ts';
const ECHO = 'samples/echo/echo.ts';

const BOOKINFO = 'docker.io/istio/examples-bookinfo';

/** Canonical repository names (fully qualified, as in upstream's `bookinfo.yaml` and the conformance manifests). */
const CANONICAL: Readonly<Record<string, SampleImage>> = {
  [`${BOOKINFO}-productpage-v1`]: { entry: PRODUCTPAGE, env: {} },
  [`${BOOKINFO}-productpage-v-flooding`]: { entry: PRODUCTPAGE, env: { FLOOD_FACTOR: '100' } },
  [`${BOOKINFO}-details-v1`]: { entry: DETAILS, env: { SERVICE_VERSION: 'v1' } },
  [`${BOOKINFO}-reviews-v1`]: {
    entry: REVIEWS,
    env: { SERVICE_VERSION: 'v1', ENABLE_RATINGS: 'false', STAR_COLOR: 'black' },
  },
  [`${BOOKINFO}-reviews-v2`]: {
    entry: REVIEWS,
    env: { SERVICE_VERSION: 'v2', ENABLE_RATINGS: 'true', STAR_COLOR: 'black' },
  },
  [`${BOOKINFO}-reviews-v3`]: {
    entry: REVIEWS,
    env: { SERVICE_VERSION: 'v3', ENABLE_RATINGS: 'true', STAR_COLOR: 'red' },
  },
  [`${BOOKINFO}-ratings-v1`]: { entry: RATINGS, env: { SERVICE_VERSION: 'v1' } },
  [`${BOOKINFO}-ratings-v-faulty`]: { entry: RATINGS, env: { SERVICE_VERSION: 'v-faulty' } },
  [`${BOOKINFO}-ratings-v-delayed`]: { entry: RATINGS, env: { SERVICE_VERSION: 'v-delayed' } },
  [`${BOOKINFO}-ratings-v-unavailable`]: { entry: RATINGS, env: { SERVICE_VERSION: 'v-unavailable' } },
  [`${BOOKINFO}-ratings-v-unhealthy`]: { entry: RATINGS, env: { SERVICE_VERSION: 'v-unhealthy' } },
  // Gateway API conformance backends (manifests/base/manifests.yaml), and the staging name older suites use.
  'registry.k8s.io/gateway-api/conformance/echo-basic': { entry: ECHO, env: {} },
  'gcr.io/k8s-staging-gateway-api/echo-basic': { entry: ECHO, env: {} },
};

const DOCKER_HUB = 'docker.io/';

/**
 * Every accepted repository name → program: the canonical names plus, for Docker Hub images, the forms
 * without `docker.io/` and with the `index.docker.io/` registry alias.
 */
export const SAMPLE_IMAGES: Readonly<Record<string, SampleImage>> = Object.freeze(
  Object.fromEntries(
    Object.entries(CANONICAL).flatMap(([repo, image]) =>
      repo.startsWith(DOCKER_HUB)
        ? [
            [repo, image],
            [repo.slice(DOCKER_HUB.length), image],
            [`index.${repo}`, image],
          ]
        : [[repo, image]],
    ),
  ),
);

/**
 * Images whose pods run their command from the host rather than a sample program (the lab decides how): the
 * client pods of `samples/curl/curl.yaml`.
 */
export const HOST_COMMAND_IMAGES: readonly string[] = ['curlimages/curl', 'docker.io/curlimages/curl'];

/** `repo[:tag][@digest]` → `repo` (a `:` inside the registry host, e.g. `localhost:5000/x`, is kept). */
export function imageRepository(image: string): string {
  const noDigest = image.split('@')[0] ?? image;
  const slash = noDigest.lastIndexOf('/');
  const colon = noDigest.lastIndexOf(':');
  return colon > slash ? noDigest.slice(0, colon) : noDigest;
}

/** The program for a container image (any tag or digest), or null when it is not a sample. */
export function lookupSampleImage(image: string): SampleImage | null {
  let repo = imageRepository(image.trim());
  // Docker Hub official images may be written `library/x`; none of ours are, but accept the spelling.
  if (repo.startsWith(`${DOCKER_HUB}library/`))
    repo = DOCKER_HUB + repo.slice(`${DOCKER_HUB}library/`.length);
  return SAMPLE_IMAGES[repo] ?? null;
}

/** True for images the lab runs from the host (see `HOST_COMMAND_IMAGES`). */
export function isHostCommandImage(image: string): boolean {
  return HOST_COMMAND_IMAGES.includes(imageRepository(image.trim()));
}
