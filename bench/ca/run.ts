/**
 * CA benchmark (issue #5): how fast istiod signs workload certificates.
 *
 * Rows, each the median of REPS repetitions on one core:
 * - openssl speed ecdsap256 (sign/s): the raw ECDSA P-256 signing ceiling of OpenSSL on this machine — the
 *   reference; everything else is compared with it.
 * - sign leaf: CaMaterial.signWorkload (build TBSCertificate, sign) in certs/s.
 * - CSR → leaf: parse + verify the CSR signature + sign, what one CreateCertificate costs istiod in CPU.
 * - end-to-end CreateCertificate over gRPC/TLS on loopback (authentication stubbed: TokenReview is an API
 *   call whose cost depends on the cluster): p50/p99 latency sequentially, and throughput with 8 in flight.
 */
import { execFileSync } from 'node:child_process';
import { cpus } from 'node:os';
import { credentials, Metadata, Server, ServerCredentials } from '@grpc/grpc-js';
import { CaMaterial } from '../../istiod/src/ca/authority.ts';
import { CaService } from '../../istiod/src/ca/service.ts';
import { x509 } from '../../pkg/identity/index.ts';
import { createRegistry } from '../../pkg/metrics/index.ts';
import { createLogger } from '../../pkg/telemetry/index.ts';
import {
  IstioCertificateRequest,
  IstioCertificateServiceClient,
  IstioCertificateServiceService,
} from '../../pkg/xds/gen/istio/v1/auth/ca.ts';
import { percentile, printRows, type Row, row, writeResult } from '../lib.ts';

const REPS = Number(process.env.REPS ?? 3);
const SECONDS = Number(process.env.SECONDS_PER_REP ?? 2);
const identity = { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'bench' };

function opensslSignsPerSecond(): number {
  const out = execFileSync('openssl', ['speed', '-seconds', String(SECONDS), 'ecdsap256'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  // Table line: " 256 bits ecdsa (nistp256)   0.0000s   0.0001s  40000.0  12000.0"
  const line = out.split('\n').find((l) => /ecdsa \(nistp256\)/.test(l) && /\d+\.\d+\s+\d+\.\d+\s*$/.test(l));
  const m = line ? /([\d.]+)\s+([\d.]+)\s*$/.exec(line) : null;
  if (!m) throw new Error(`cannot parse openssl speed output:\n${out}`);
  return Number(m[1]);
}

function rate(fn: () => void): number {
  const end = performance.now() + SECONDS * 1000;
  let n = 0;
  const start = performance.now();
  while (performance.now() < end) {
    fn();
    n++;
  }
  return n / ((performance.now() - start) / 1000);
}

async function grpcBench(material: CaMaterial): Promise<{ p50: number; p99: number; rps: number }> {
  const registry = createRegistry();
  const ca = new CaService({
    material: () => material,
    authenticator: {
      authenticate: async () => ({
        namespace: 'default',
        serviceAccount: 'bench',
        podName: null,
        podUid: null,
      }),
    },
    nodes: { nodeOfPod: async () => null, serviceAccountOnNode: async () => false },
    trustDomain: 'cluster.local',
    trustedNodeAccounts: new Set(),
    registry,
    logger: createLogger({ component: 'bench', level: 'silent' }),
  });
  const { privateKey } = x509.generateP256();
  const chain = material.signServing(
    (await import('node:crypto')).createPublicKey(privateKey),
    ['istiod.istio-system.svc'],
    3600_000,
  );
  const server = new Server();
  server.addService(IstioCertificateServiceService, ca.handlers());
  const creds = ServerCredentials.createSsl(null, [
    {
      private_key: Buffer.from(privateKey.export({ type: 'pkcs8', format: 'pem' }) as string),
      cert_chain: Buffer.from(chain.slice(0, -1).join('')),
    },
  ]);
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync('127.0.0.1:0', creds, (e, p) => (e ? rej(e) : res(p))),
  );
  const client = new IstioCertificateServiceClient(
    `127.0.0.1:${port}`,
    credentials.createSsl(Buffer.from(material.rootBundlePem())),
    {
      'grpc.ssl_target_name_override': 'istiod.istio-system.svc',
    },
  );
  const csrs = Array.from({ length: 64 }, () =>
    x509.csrToPem(x509.buildCsr(x509.generateP256().privateKey, { uris: ['spiffe://x/ns/a/sa/b'] })),
  );
  const call = (i: number) =>
    new Promise<void>((resolve, reject) => {
      const md = new Metadata();
      md.set('authorization', 'Bearer bench');
      client.createCertificate(
        IstioCertificateRequest.fromPartial({ csr: csrs[i % csrs.length]! }),
        md,
        (err) => (err ? reject(err) : resolve()),
      );
    });
  for (let i = 0; i < 50; i++) await call(i); // warm-up: TLS session, JIT
  const lat: number[] = [];
  const endSeq = performance.now() + SECONDS * 1000;
  for (let i = 0; performance.now() < endSeq; i++) {
    const t = performance.now();
    await call(i);
    lat.push(performance.now() - t);
  }
  let done = 0;
  const t0 = performance.now();
  const endPar = t0 + SECONDS * 1000;
  await Promise.all(
    Array.from({ length: 8 }, async (_, w) => {
      for (let i = w; performance.now() < endPar; i += 8) {
        await call(i);
        done++;
      }
    }),
  );
  const rps = done / ((performance.now() - t0) / 1000);
  client.close();
  server.forceShutdown();
  return { p50: percentile(lat, 50), p99: percentile(lat, 99), rps };
}

const material = CaMaterial.selfSigned('cluster.local').material;
const leafKey = x509.generateP256().publicKey;
const leafSpki = leafKey.export({ type: 'spki', format: 'der' });
const csrDer = x509.buildCsr(x509.generateP256().privateKey, {
  uris: ['spiffe://cluster.local/ns/default/sa/bench'],
});
const samples = {
  openssl: [] as number[],
  sign: [] as number[],
  csr: [] as number[],
  p50: [] as number[],
  p99: [] as number[],
  rps: [] as number[],
};
for (let r = 0; r < REPS; r++) {
  samples.openssl.push(opensslSignsPerSecond());
  samples.sign.push(rate(() => material.signWorkload(leafKey, identity, 86_400_000, Date.now(), leafSpki)));
  samples.csr.push(
    rate(() => {
      const parsed = x509.parseCsr(csrDer);
      material.signWorkload(parsed.publicKey, identity, 86_400_000, Date.now(), parsed.spkiDer);
    }),
  );
  const g = await grpcBench(material);
  samples.p50.push(g.p50);
  samples.p99.push(g.p99);
  samples.rps.push(g.rps);
  process.stderr.write(`rep ${r + 1}/${REPS} done\n`);
}
const ref = row('openssl speed ecdsap256 (raw signatures)', samples.openssl, 'sign/s');
const rows: Row[] = [
  ref,
  row('sign leaf (TBS + ECDSA P-256), one core', samples.sign, 'certs/s', ref),
  row('CSR parse + verify + sign, one core', samples.csr, 'certs/s', ref),
  row('CreateCertificate gRPC/TLS, sequential p50', samples.p50, 'ms'),
  row('CreateCertificate gRPC/TLS, sequential p99', samples.p99, 'ms'),
  row('CreateCertificate gRPC/TLS, 8 in flight', samples.rps, 'certs/s', ref),
];
printRows(rows);
const file = writeResult({
  benchmark: 'ca',
  description: 'istiod CA signing throughput and CreateCertificate latency (issue #5)',
  date: new Date().toISOString(),
  machine: { cpus: cpus().length, node: process.version },
  rows,
  notes: [
    'One process on one core; the gRPC rows include the client in the same process (both share the core).',
    'Authentication is stubbed in the gRPC rows: TokenReview is one API round trip per CSR in production.',
  ],
});
process.stderr.write(`wrote ${file}\n`);
