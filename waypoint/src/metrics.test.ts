import { describe, expect, it } from 'vitest';
import { EMPTY_BAGGAGE, parseBaggage } from '../../pkg/hbone/index.ts';
import { createRegistry } from '../../pkg/metrics/index.ts';
import { HTTP_LABELS, httpLabels, PEER_LABELS, peerLabels, WaypointMetrics } from './metrics.ts';

/** Istio's standard label set for request metrics (istio.io "Istio Standard Metrics"). */
const ISTIO_REQUEST_LABELS = [
  'reporter',
  'source_workload',
  'source_canonical_service',
  'source_canonical_revision',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_version',
  'source_cluster',
  'destination_workload',
  'destination_workload_namespace',
  'destination_canonical_service',
  'destination_canonical_revision',
  'destination_principal',
  'destination_app',
  'destination_version',
  'destination_service',
  'destination_service_name',
  'destination_service_namespace',
  'destination_cluster',
  'request_protocol',
  'response_code',
  'grpc_response_status',
  'response_flags',
  'connection_security_policy',
];

describe('waypoint metric labels', () => {
  it('carries exactly Istio label names', () => {
    expect([...HTTP_LABELS].sort()).toEqual([...ISTIO_REQUEST_LABELS].sort());
    expect([...PEER_LABELS].sort()).toEqual(
      ISTIO_REQUEST_LABELS.filter((l) => !['response_code', 'grpc_response_status'].includes(l)).sort(),
    );
  });

  it('fills source labels from the HBONE peer and its baggage, destination from the endpoint', () => {
    const baggage = parseBaggage(
      'k8s.cluster.name=Kubernetes,k8s.namespace.name=bookinfo,k8s.deployment.name=productpage-v1,service.name=productpage,service.version=v1',
    );
    const l = httpLabels(
      peerLabels(
        { principal: 'spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage', baggage },
        {
          workloadName: 'reviews-v2',
          workloadNamespace: 'bookinfo',
          canonicalService: 'reviews',
          canonicalRevision: 'v2',
          principal: 'spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews',
          cluster: 'Kubernetes',
        },
        { hostname: 'reviews.bookinfo.svc.cluster.local', namespace: 'bookinfo', name: 'reviews' },
        'http',
        '',
      ),
      200,
      null,
    );
    expect(l).toEqual({
      reporter: 'waypoint',
      source_workload: 'productpage-v1',
      source_canonical_service: 'productpage',
      source_canonical_revision: 'v1',
      source_workload_namespace: 'bookinfo',
      source_principal: 'spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage',
      source_app: 'productpage',
      source_version: 'v1',
      source_cluster: 'Kubernetes',
      destination_service: 'reviews.bookinfo.svc.cluster.local',
      destination_service_namespace: 'bookinfo',
      destination_service_name: 'reviews',
      destination_workload: 'reviews-v2',
      destination_canonical_service: 'reviews',
      destination_canonical_revision: 'v2',
      destination_workload_namespace: 'bookinfo',
      destination_principal: 'spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews',
      destination_app: 'reviews',
      destination_version: 'v2',
      destination_cluster: 'Kubernetes',
      request_protocol: 'http',
      response_flags: '-',
      connection_security_policy: 'mutual_tls',
      response_code: '200',
      grpc_response_status: '',
    });
  });

  it('reports unknown for what is not known (denied before an endpoint was picked)', () => {
    const l = peerLabels(
      { principal: 'spiffe://cluster.local/ns/a/sa/b', baggage: EMPTY_BAGGAGE },
      null,
      null,
      'grpc',
      'UO',
    );
    expect(l.source_workload).toBe('unknown');
    expect(l.source_canonical_revision).toBe('unknown');
    expect(l.destination_workload).toBe('unknown');
    expect(l.destination_service).toBe('unknown');
    expect(l.request_protocol).toBe('grpc');
    expect(l.response_flags).toBe('UO');
  });

  it('exposes Istio metric names and buckets', async () => {
    const registry = createRegistry();
    const m = new WaypointMetrics(registry);
    const labels = httpLabels(
      peerLabels({ principal: 'p', baggage: EMPTY_BAGGAGE }, null, null, 'http', '-'),
      404,
      null,
    );
    m.request(labels, 3.2, 10, 0);
    const text = await registry.metrics();
    expect(text).toContain('# TYPE istio_requests_total counter');
    expect(text).toContain('# TYPE istio_request_duration_milliseconds histogram');
    expect(text).toMatch(
      /istio_request_duration_milliseconds_bucket\{le="5",[^}]*response_code="404"[^}]*\} 1/,
    );
    expect(text).toContain('# TYPE istio_request_bytes histogram');
    expect(text).toContain('# TYPE istio_response_bytes histogram');
    expect(text).toContain('istio_tcp_connections_opened_total');
  });
});
