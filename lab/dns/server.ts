/**
 * The cluster DNS server: UDP and TCP on one address and port, answering from a ClusterZone. Never throws on
 * input: a message that is not even a header is dropped, a malformed query gets FORMERR, an unsupported opcode
 * NOTIMP, anything unexpected SERVFAIL; responses (QR set) are ignored so two servers cannot loop.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import type { Logger } from '../../pkg/telemetry/index.ts';
import {
  CLASS_ANY,
  CLASS_IN,
  CLASSIC_UDP_SIZE,
  DnsFormatError,
  EDNS_UDP_SIZE,
  encodeResponse,
  OPCODE_QUERY,
  parseHeader,
  parseQuery,
  RCODE,
  TYPE,
} from './wire.ts';
import { ClusterZone, type DnsRecordSet } from './zone.ts';

/** A TCP client idle this long is disconnected (RFC 7766 suggests seconds). */
const TCP_IDLE_MS = 10_000;
/** Concurrent TCP connections served; more are closed at once. */
const MAX_TCP_CONNECTIONS = 256;

export interface DnsServerOptions {
  readonly domain?: string;
  /** Address the server answers for `ns.dns.<domain>`. */
  readonly nsIp?: string;
  readonly logger?: Logger;
}

export interface DnsServerStats {
  queries: number;
  malformed: number;
  dropped: number;
  errors: number;
}

export class DnsServer {
  readonly zone: ClusterZone;
  readonly stats: DnsServerStats = { queries: 0, malformed: 0, dropped: 0, errors: 0 };
  private readonly logger: Logger | null;
  private udp: dgram.Socket | null = null;
  private tcp: net.Server | null = null;
  private readonly conns = new Set<net.Socket>();

  constructor(opts: DnsServerOptions = {}) {
    this.zone = new ClusterZone(opts.domain ?? 'cluster.local', opts.nsIp ?? null);
    this.logger = opts.logger ?? null;
  }

  setRecords(records: DnsRecordSet): void {
    this.zone.setRecords(records);
  }

  /** Binds UDP and TCP on host:port (port 0: one free port for both). Returns the port. */
  async listen(host: string, port: number): Promise<number> {
    for (let attempt = 0; attempt < 10; attempt++) {
      const udp = dgram.createSocket({ type: net.isIPv6(host) ? 'udp6' : 'udp4' });
      const bound = await new Promise<number>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind(port, host, () => {
          udp.off('error', reject);
          resolve(udp.address().port);
        });
      });
      const tcp = net.createServer((s) => this.onTcp(s));
      try {
        await new Promise<void>((resolve, reject) => {
          tcp.once('error', reject);
          tcp.listen(bound, host, () => {
            tcp.off('error', reject);
            resolve();
          });
        });
      } catch (err) {
        udp.close();
        if (port === 0 && (err as NodeJS.ErrnoException).code === 'EADDRINUSE') continue;
        throw err;
      }
      udp.on('message', (msg, rinfo) => this.onUdp(udp, msg, rinfo));
      udp.on('error', (err) => this.logger?.warn({ err: err.message }, 'dns udp socket error'));
      tcp.on('error', (err) => this.logger?.warn({ err: err.message }, 'dns tcp server error'));
      this.udp = udp;
      this.tcp = tcp;
      return bound;
    }
    throw new Error(`no port free for both UDP and TCP on ${host}`);
  }

  async close(): Promise<void> {
    for (const s of this.conns) s.destroy();
    this.udp?.close();
    await new Promise<void>((r) => (this.tcp ? this.tcp.close(() => r()) : r()));
    this.udp = null;
    this.tcp = null;
  }

  /** The response to one message (null: send nothing). `maxUdp` is null for TCP. */
  handle(msg: Uint8Array, udp: boolean): Uint8Array | null {
    const header = parseHeader(msg);
    if (!header || header.qr) {
      this.stats.dropped++;
      return null;
    }
    this.stats.queries++;
    const fail = (rcode: number): Uint8Array =>
      encodeResponse({
        id: header.id,
        opcode: header.opcode,
        rd: header.rd,
        aa: false,
        rcode,
        question: null,
        answers: [],
        authority: [],
        additional: [],
        ednsUdpSize: null,
      });
    if (header.opcode !== OPCODE_QUERY) return fail(RCODE.NOTIMP);
    try {
      const q = parseQuery(msg);
      const question = q.questions[0];
      if (q.questions.length !== 1 || !question) {
        this.stats.malformed++;
        return fail(RCODE.FORMERR);
      }
      const maxSize = udp
        ? Math.min(q.edns ? q.edns.udpSize : CLASSIC_UDP_SIZE, q.edns ? EDNS_UDP_SIZE : CLASSIC_UDP_SIZE)
        : 65535;
      const ednsUdpSize = q.edns ? EDNS_UDP_SIZE : null;
      if ((question.class !== CLASS_IN && question.class !== CLASS_ANY) || question.type === TYPE.OPT) {
        return encodeResponse({
          id: header.id,
          opcode: header.opcode,
          rd: header.rd,
          aa: false,
          rcode: RCODE.REFUSED,
          question,
          answers: [],
          authority: [],
          additional: [],
          ednsUdpSize,
        });
      }
      const a = this.zone.answer(question);
      return encodeResponse(
        {
          id: header.id,
          opcode: header.opcode,
          rd: header.rd,
          aa: a.aa,
          rcode: a.rcode,
          question,
          answers: a.answers,
          authority: a.authority,
          additional: a.additional,
          ednsUdpSize,
        },
        maxSize,
      );
    } catch (err) {
      if (err instanceof DnsFormatError) {
        this.stats.malformed++;
        return fail(RCODE.FORMERR);
      }
      this.stats.errors++;
      this.logger?.warn({ err: (err as Error).message }, 'dns: unexpected error answering a query');
      return fail(RCODE.SERVFAIL);
    }
  }

  private onUdp(sock: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const out = this.handle(msg, true);
    if (out) sock.send(out, rinfo.port, rinfo.address);
  }

  private onTcp(s: net.Socket): void {
    if (this.conns.size >= MAX_TCP_CONNECTIONS) {
      s.destroy();
      return;
    }
    this.conns.add(s);
    s.setTimeout(TCP_IDLE_MS, () => s.destroy());
    s.on('close', () => this.conns.delete(s));
    s.on('error', () => undefined);
    let buf: Buffer = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < 2 + len) break;
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        const out = this.handle(msg, false);
        if (!out) continue;
        const frame = Buffer.alloc(2 + out.length);
        frame.writeUInt16BE(out.length, 0);
        frame.set(out, 2);
        s.write(frame);
      }
    });
  }
}
