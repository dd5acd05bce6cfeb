/**
 * The generated grpc-js service definitions work end to end over loopback: method paths,
 * serializers and client constructors for the CA (unary) and ADS delta (bidi stream).
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ADDRESS_TYPE_URL,
  AggregatedDiscoveryServiceClient,
  AggregatedDiscoveryServiceService,
  DeltaDiscoveryRequest,
  DeltaDiscoveryResponse,
  IstioCertificateRequest,
  IstioCertificateResponse,
  IstioCertificateServiceClient,
  IstioCertificateServiceService,
  packAddress,
  unpackAddress,
} from './index.ts';
import { node, workload } from './test/samples.ts';

describe('grpc-js service definitions', () => {
  const server = new grpc.Server();
  let target = '';
  const seenPaths: string[] = [];

  beforeAll(async () => {
    server.addService(IstioCertificateServiceService, {
      createCertificate(
        call: grpc.ServerUnaryCall<IstioCertificateRequest, IstioCertificateResponse>,
        done: grpc.sendUnaryData<IstioCertificateResponse>,
      ) {
        seenPaths.push(call.getPath());
        done(null, IstioCertificateResponse.fromPartial({ certChain: [`signed:${call.request.csr}`] }));
      },
    });
    server.addService(AggregatedDiscoveryServiceService, {
      streamAggregatedResources(call: grpc.ServerDuplexStream<unknown, unknown>) {
        call.end();
      },
      deltaAggregatedResources(call: grpc.ServerDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>) {
        seenPaths.push(call.getPath());
        call.on('data', (req: DeltaDiscoveryRequest) => {
          if (req.responseNonce !== '') return call.end();
          call.write(
            DeltaDiscoveryResponse.fromPartial({
              typeUrl: req.typeUrl,
              nonce: `n-for-${req.node?.id}`,
              resources: [
                {
                  name: workload.uid,
                  version: '1',
                  resource: packAddress({ type: { $case: 'workload', value: workload } }),
                },
              ],
            }),
          );
        });
      },
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    target = `127.0.0.1:${port}`;
  });

  afterAll(() => server.forceShutdown());

  it('serves IstioCertificateService.CreateCertificate', async () => {
    const client = new IstioCertificateServiceClient(target, grpc.credentials.createInsecure());
    try {
      const res = await new Promise<IstioCertificateResponse>((resolve, reject) =>
        client.createCertificate(
          IstioCertificateRequest.fromPartial({ csr: 'CSR', validityDuration: 3600n }),
          (err, r) => (err ? reject(err) : resolve(r)),
        ),
      );
      expect(res.certChain).toEqual(['signed:CSR']);
      expect(seenPaths).toContain('/istio.v1.auth.IstioCertificateService/CreateCertificate');
    } finally {
      client.close();
    }
  });

  it('streams DeltaAggregatedResources', async () => {
    const client = new AggregatedDiscoveryServiceClient(target, grpc.credentials.createInsecure());
    try {
      const stream = client.deltaAggregatedResources();
      const first = new Promise<DeltaDiscoveryResponse>((resolve, reject) => {
        stream.once('data', resolve);
        stream.once('error', reject);
      });
      stream.write(
        DeltaDiscoveryRequest.fromPartial({ node, typeUrl: ADDRESS_TYPE_URL, resourceNamesSubscribe: ['*'] }),
      );
      const res = await first;
      expect(res.nonce).toBe(`n-for-${node.id}`);
      const unpacked = unpackAddress(res.resources[0]!.resource!);
      expect(unpacked.ok && unpacked.value.type?.$case === 'workload' && unpacked.value.type.value.uid).toBe(
        workload.uid,
      );
      const ended = new Promise<void>((resolve) => stream.once('end', resolve));
      stream.write(
        DeltaDiscoveryRequest.fromPartial({ typeUrl: ADDRESS_TYPE_URL, responseNonce: res.nonce }),
      );
      stream.end();
      stream.resume();
      await ended;
      expect(seenPaths).toContain(
        '/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources',
      );
    } finally {
      client.close();
    }
  });
});
