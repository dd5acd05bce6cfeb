import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { imageRepository, isHostCommandImage, lookupSampleImage, SAMPLE_IMAGES } from './images.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

function images(file: string): string[] {
  const out: string[] = [];
  for (const doc of parseAllDocuments(readFileSync(file, 'utf8'))) {
    const obj = doc.toJS() as {
      spec?: { template?: { spec?: { containers?: Array<{ image: string }> } } };
    } | null;
    for (const c of obj?.spec?.template?.spec?.containers ?? []) out.push(c.image);
  }
  return out;
}

describe('sample image map', () => {
  it.each([
    [
      'docker.io/istio/examples-bookinfo-reviews-v2:1.20.3',
      'samples/bookinfo/reviews.ts',
      { STAR_COLOR: 'black' },
    ],
    ['istio/examples-bookinfo-reviews-v3:1.17.0', 'samples/bookinfo/reviews.ts', { STAR_COLOR: 'red' }],
    [
      'docker.io/istio/examples-bookinfo-reviews-v1',
      'samples/bookinfo/reviews.ts',
      { ENABLE_RATINGS: 'false' },
    ],
    ['docker.io/istio/examples-bookinfo-productpage-v1:latest', 'samples/bookinfo/productpage.ts', {}],
    ['index.docker.io/istio/examples-bookinfo-details-v1:1.20.3', 'samples/bookinfo/details.ts', {}],
    [
      'istio/examples-bookinfo-ratings-v-faulty:1.20.3',
      'samples/bookinfo/ratings.ts',
      { SERVICE_VERSION: 'v-faulty' },
    ],
    ['registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0', 'samples/echo/echo.ts', {}],
    ['registry.k8s.io/gateway-api/conformance/echo-basic@sha256:abcd', 'samples/echo/echo.ts', {}],
  ])('%s → %s', (image, entry, env) => {
    const found = lookupSampleImage(image);
    expect(found?.entry).toBe(entry);
    expect(found?.env).toMatchObject(env);
  });

  it('knows nothing else', () => {
    expect(lookupSampleImage('docker.io/library/nginx:1.27')).toBeNull();
    expect(lookupSampleImage('curlimages/curl')).toBeNull();
    expect(isHostCommandImage('curlimages/curl:8.10.1')).toBe(true);
    expect(isHostCommandImage('docker.io/istio/examples-bookinfo-reviews-v2')).toBe(false);
  });

  it('strips tags and digests but keeps a registry port', () => {
    expect(imageRepository('localhost:5000/x/y:1.0')).toBe('localhost:5000/x/y');
    expect(imageRepository('localhost:5000/x/y')).toBe('localhost:5000/x/y');
    expect(imageRepository('a/b@sha256:00')).toBe('a/b');
  });

  it('every entry exists, and every image in the sample and conformance manifests is mapped', () => {
    for (const image of Object.values(SAMPLE_IMAGES)) expect(existsSync(`${ROOT}${image.entry}`)).toBe(true);
    const manifests = [`${ROOT}samples/bookinfo/bookinfo.yaml`];
    const conformance = '/work/shared/conformance/gateway-api/manifests/base/manifests.yaml';
    if (existsSync(conformance)) manifests.push(conformance);
    for (const file of manifests) {
      for (const image of images(file)) {
        // CoreDNS is the conformance suite's UDP backend, not a sample program.
        if (image.startsWith('registry.k8s.io/coredns/')) continue;
        expect(lookupSampleImage(image), image).not.toBeNull();
      }
    }
    expect(images(`${ROOT}samples/curl/curl.yaml`).every(isHostCommandImage)).toBe(true);
  });
});
