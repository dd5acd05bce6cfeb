import { describe, expect, it } from 'vitest';
import { gatewayNameFromPod } from './app.ts';
import { serviceAccountFromToken } from './ca-client.ts';
import { loadConfig } from './config.ts';
import { shadowAuthority } from './http.ts';

describe('waypoint config', () => {
  it('has Istio defaults', () => {
    const c = loadConfig({});
    expect(c.hbonePort).toBe(15008);
    expect(c.adminPort).toBe(15000);
    expect(c.statsPort).toBe(15020);
    expect(c.readinessPort).toBe(15021);
    expect(c.xdsAddress).toBe('istiod.istio-system.svc:15012');
    expect(c.caAddress).toBe(c.xdsAddress);
    expect(c.maxRequestHeadersBytes).toBe(60 * 1024);
    expect(c.otlpTracesEndpoint).toBeNull();
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('reads the env istiod sets on the waypoint Deployment', () => {
    const c = loadConfig({
      POD_NAME: 'waypoint-7c9d8f6b4-abcde',
      POD_NAMESPACE: 'bookinfo',
      SERVICE_ACCOUNT: 'waypoint',
      GATEWAY_NAME: 'waypoint',
      INSTANCE_IP: '10.244.1.9',
      XDS_ADDRESS: 'istiod.istio-system.svc:15012',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/',
      TRACE_SAMPLING: '1',
    });
    expect(c.podNamespace).toBe('bookinfo');
    expect(c.serviceAccount).toBe('waypoint');
    expect(c.gatewayName).toBe('waypoint');
    expect(c.otlpTracesEndpoint).toBe('http://collector:4318/v1/traces');
    expect(c.traceSampling).toBe(1);
  });

  it('reports bad values with the variable name', () => {
    expect(() => loadConfig({ TRACE_SAMPLING: '150' })).toThrow(/TRACE_SAMPLING="150"/);
    expect(() => loadConfig({ MAX_REQUEST_HEADERS_KB: 'lots' })).toThrow(/MAX_REQUEST_HEADERS_KB/);
  });
});

describe('helpers', () => {
  it('derives the gateway name from a Deployment pod name', () => {
    expect(gatewayNameFromPod('waypoint-6d9f7c8b5d-x2x7q')).toBe('waypoint');
    expect(gatewayNameFromPod('my-waypoint-6d9f7c8b5d-x2x7q')).toBe('my-waypoint');
    expect(gatewayNameFromPod('standalone')).toBe('standalone');
  });

  it('reads the service account from a projected token', () => {
    const payload = Buffer.from(JSON.stringify({ sub: 'system:serviceaccount:bookinfo:waypoint' })).toString(
      'base64url',
    );
    expect(serviceAccountFromToken(`e30.${payload}.sig`)).toEqual({
      namespace: 'bookinfo',
      serviceAccount: 'waypoint',
    });
    expect(serviceAccountFromToken('garbage')).toBeNull();
  });

  it('appends -shadow to a mirrored authority host', () => {
    expect(shadowAuthority('reviews:9080')).toBe('reviews-shadow:9080');
    expect(shadowAuthority('reviews.default.svc.cluster.local')).toBe(
      'reviews.default.svc.cluster.local-shadow',
    );
    expect(shadowAuthority('[fd00::1]:80')).toBe('[fd00::1]-shadow:80');
  });
});
