/**
 * One captured pod's proxy (ztunnel in-pod mode): three listeners opened inside the pod's network namespace
 * with SO_MARK 0x539 and SO_REUSEPORT — 15001 outbound (iptables-redirected), 15006 inbound plaintext, 15008
 * inbound HBONE — plus the pod's HBONE client pool, whose sockets are also made inside the pod netns, so all
 * mesh traffic leaves with the pod's own IP and is never captured again.
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { describeError } from '../../../pkg/errors/index.ts';
import {
  type ConnectRequest,
  canonicalIp,
  formatBaggage,
  formatForwardedFor,
  HbonePool,
  HboneServer,
  type HboneServerStats,
  type PipeStats,
  pipeBidirectional,
} from '../../../pkg/hbone/index.ts';
import { formatSpiffeId, type Identity } from '../../../pkg/identity/index.ts';
import { closeFd, connectInNetns, listenTcpInNetns, originalDst } from '../../../pkg/netns/index.ts';
import { type ConnectionInfo, evaluate, parseIp } from '../../../pkg/rbac/index.ts';
import type { WorkloadInfo } from '../../../pkg/state/index.ts';
import { type ServiceRef, type TcpLabels, tcpLabels } from '../metrics.ts';
import type { TrackedConnection } from './connections.ts';
import type { ProxyContext } from './context.ts';
import { type Route, routeOutbound } from './route.ts';

export interface PodInfo {
  /** Kubernetes pod uid (ZDS key). */
  readonly uid: string;
  readonly name: string;
  readonly namespace: string;
  readonly serviceAccount: string;
}

/** Upstream connects (to the app, or plain TCP out) give up after this. */
const CONNECT_TIMEOUT_MS = 10_000;
/** Ports of ztunnel's own in-pod listeners: a connection aimed at them would loop. */
const OWN_PORTS = new Set([15001, 15006, 15008, 15053]);

interface ConnRecord {
  readonly direction: 'outbound' | 'inbound';
  readonly started: number;
  readonly src: string;
  readonly dst: string;
  readonly labels: TcpLabels;
  readonly srcIdentity: string | null;
  readonly dstIdentity: string | null;
  readonly srcWorkload: WorkloadInfo | null;
  readonly dstWorkload: WorkloadInfo | null;
  readonly pod: PodProxy;
  tracked: TrackedConnection | null;
  /** The two piped streams, released from the pod's set when the pipe finishes. */
  a: Duplex | null;
  b: Duplex | null;
}

export class PodProxy {
  readonly info: PodInfo;
  readonly workloadUid: string;
  readonly identity: Identity;
  private readonly ctx: ProxyContext;
  private readonly netnsFd: number;
  private readonly outbound: Server;
  private readonly inboundPlain: Server;
  private readonly hbone: HboneServer;
  private readonly pool: HbonePool;
  private readonly sockets = new Set<Socket | Duplex>();
  /** Accepted client sockets whose upstream is still being connected (not in `sockets` yet). */
  private readonly settingUp = new Set<Socket>();
  /** No longer accepting (draining). */
  private closed = false;
  /** The drain deadline passed: whatever is still open is cut. */
  private forced = false;

  private constructor(
    ctx: ProxyContext,
    info: PodInfo,
    netnsFd: number,
    parts: { outbound: Server; inboundPlain: Server; hbone: HboneServer; pool: HbonePool },
  ) {
    this.ctx = ctx;
    this.info = info;
    this.netnsFd = netnsFd;
    this.workloadUid = `${ctx.config.clusterId}//Pod/${info.namespace}/${info.name}`;
    this.identity = {
      trustDomain: ctx.config.trustDomain,
      namespace: info.namespace,
      serviceAccount: info.serviceAccount || 'default',
    };
    this.outbound = parts.outbound;
    this.inboundPlain = parts.inboundPlain;
    this.hbone = parts.hbone;
    this.pool = parts.pool;
  }

  /** Opens the pod's listeners in its netns; on any failure nothing stays open. Takes ownership of the fd. */
  static async create(ctx: ProxyContext, info: PodInfo, netnsFd: number): Promise<PodProxy> {
    const { config } = ctx;
    const opened: number[] = [];
    const mk = (port: number) => {
      const fd = listenTcpInNetns({
        netns: netnsFd,
        host: '0.0.0.0',
        port,
        mark: config.inpodMark,
        reusePort: true,
      });
      opened.push(fd);
      return fd;
    };
    let outboundFd: number;
    let inboundFd: number;
    let hboneFd: number;
    try {
      outboundFd = mk(config.outboundPort);
      inboundFd = mk(config.inboundPlaintextPort);
      hboneFd = mk(config.inboundPort);
    } catch (err) {
      for (const fd of opened) closeFd(fd);
      closeFd(netnsFd);
      throw err;
    }
    const identity: Identity = {
      trustDomain: config.trustDomain,
      namespace: info.namespace,
      serviceAccount: info.serviceAccount || 'default',
    };
    let self: PodProxy | null = null;
    const pool = new HbonePool({
      name: `pod ${info.namespace}/${info.name}`,
      certificateFor: (source) => ctx.certs.get(source),
      contexts: ctx.contexts,
      logger: ctx.logger,
      // Every HBONE connection leaves from inside the pod netns, marked so the pod's rules let it out as-is.
      createSocket: (target) =>
        connectInNetns({
          netns: netnsFd,
          host: target.host,
          port: target.port,
          mark: config.inpodMark,
          timeoutMs: CONNECT_TIMEOUT_MS,
          // The TLS/HTTP/2 session owns this socket; half-close is meaningless there but harmless.
          allowHalfOpen: true,
        }),
    });
    const hbone = await HboneServer.create({
      listen: { fd: hboneFd },
      name: `pod ${info.namespace}/${info.name} :15008`,
      trustDomain: config.trustDomain,
      certificateFor: () => ctx.certs.get(identity),
      onStream: (req) => self!.onHboneStream(req),
      logger: ctx.logger,
    });
    const outbound = createServer({ pauseOnConnect: true, noDelay: true, allowHalfOpen: true }, (s) =>
      self!.onOutbound(s),
    );
    const inboundPlain = createServer({ pauseOnConnect: true, noDelay: true, allowHalfOpen: true }, (s) =>
      self!.onInboundPlain(s),
    );
    await Promise.all([
      new Promise<void>((r) => outbound.listen({ fd: outboundFd }, r)),
      new Promise<void>((r) => inboundPlain.listen({ fd: inboundFd }, r)),
    ]);
    self = new PodProxy(ctx, info, netnsFd, { outbound, inboundPlain, hbone, pool });
    ctx.certs.prefetch(identity);
    return self;
  }

  /** The pod's workload from xDS (null until istiod has sent it). */
  workload(): WorkloadInfo | null {
    return this.ctx.state.workload(this.workloadUid);
  }

  // ---------- outbound (15001) ----------

  private onOutbound(client: Socket): void {
    const started = performance.now();
    client.on('error', noop);
    let dst: { address: string; port: number };
    try {
      dst = originalDst(client);
    } catch (err) {
      this.ctx.logger.warn(
        { pod: this.info.name, err: describeError(err) },
        'outbound connection without original destination',
      );
      client.destroy();
      return;
    }
    const srcIp = canonicalIp(client.remoteAddress ?? '');
    const source = this.workload();
    const dstIp = canonicalIp(dst.address);
    if (OWN_PORTS.has(dst.port) && (source?.ips.includes(dstIp) || dstIp.startsWith('127.'))) {
      this.ctx.logger.warn(
        { pod: this.info.name, dst: `${dstIp}:${dst.port}` },
        'refusing a connection to ztunnel itself',
      );
      client.destroy();
      return;
    }
    const route = routeOutbound(
      this.ctx.state,
      source,
      this.info.namespace,
      this.ctx.config.network,
      dstIp,
      dst.port,
    );
    void this.forwardOutbound(
      client,
      started,
      srcIp,
      client.remotePort ?? 0,
      `${dstIp}:${dst.port}`,
      source,
      route,
    );
  }

  private async forwardOutbound(
    client: Socket,
    started: number,
    srcIp: string,
    srcPort: number,
    origDst: string,
    source: WorkloadInfo | null,
    route: Route,
  ): Promise<void> {
    const service: ServiceRef | null = route.service
      ? { hostname: route.service.hostname, namespace: route.service.namespace, name: route.service.name }
      : null;
    const dstWorkload = route.kind === 'deny' ? null : route.workload;
    const mtls = route.kind === 'hbone';
    const dstIdentity =
      route.kind === 'hbone' && !route.viaWaypoint && route.identities[0]
        ? formatSpiffeId(route.identities[0])
        : null;
    const labels = tcpLabels(
      'source',
      { workload: source, principal: formatSpiffeId(this.identity) },
      { workload: dstWorkload, principal: dstIdentity },
      service,
      mtls,
    );
    const rec: ConnRecord = {
      direction: 'outbound',
      started,
      src: `${srcIp}:${srcPort}`,
      dst: origDst,
      labels,
      srcIdentity: formatSpiffeId(this.identity),
      dstIdentity,
      srcWorkload: source,
      dstWorkload,
      pod: this,
      tracked: null,
      a: null,
      b: null,
    };
    if (route.kind === 'deny') {
      this.ctx.metrics.open(rec.labels);
      this.finish(rec, { bytesAtoB: 0, bytesBtoA: 0, error: new Error(route.reason) }, 'UF');
      client.destroy();
      return;
    }
    // Accepted before a drain began: it is seen through like any other until the drain deadline.
    this.settingUp.add(client);
    let upstream: Duplex;
    try {
      if (route.kind === 'hbone') {
        upstream = await this.pool.connect({
          source: this.identity,
          destinationIdentities: route.identities,
          destination: { ip: route.peerIp, port: route.peerPort },
          sourceIp: srcIp,
          authority: route.authority,
          baggage: formatBaggage({
            clusterId: this.ctx.config.clusterId,
            namespace: this.info.namespace,
            workloadName: source?.workloadName || this.info.name,
            serviceName: source?.canonicalName || null,
            revision: source?.canonicalRevision || null,
          }),
          forwarded: formatForwardedFor(srcIp, srcPort),
        });
      } else {
        const plain = await connectInNetns({
          netns: this.netnsFd,
          host: route.ip,
          port: route.port,
          mark: this.ctx.config.inpodMark,
          timeoutMs: CONNECT_TIMEOUT_MS,
          allowHalfOpen: true,
        });
        // Like the HBONE sockets and the listeners: small writes are relayed at once (upstream ztunnel does too).
        plain.setNoDelay(true);
        upstream = plain;
      }
    } catch (err) {
      this.settingUp.delete(client);
      this.ctx.metrics.open(rec.labels);
      this.finish(rec, { bytesAtoB: 0, bytesBtoA: 0, error: err as Error }, 'UF');
      client.destroy();
      return;
    }
    this.settingUp.delete(client);
    if (client.destroyed || this.forced) {
      upstream.destroy();
      return;
    }
    this.ctx.metrics.open(rec.labels);
    this.track(rec, client, upstream);
    client.resume();
    pipeBidirectional(client, upstream, onPipeDone, rec);
  }

  // ---------- inbound HBONE (15008) ----------

  private async onHboneStream(req: ConnectRequest): Promise<void> {
    const started = performance.now();
    const me = this.workload();
    if (!me) {
      req.reject(503);
      return;
    }
    const target = req.authority;
    if (!me.ips.includes(target.ip)) {
      req.reject(400);
      return;
    }
    const srcIp = req.source.ip;
    const peer = req.peerIdentity;
    const principal = `${peer.trustDomain}/ns/${peer.namespace}/sa/${peer.serviceAccount}`;
    const srcParsed = parseIp(srcIp);
    const dstParsed = parseIp(target.ip);
    if (!srcParsed || !dstParsed) {
      req.reject(400);
      return;
    }
    const info: ConnectionInfo = {
      srcIp: srcParsed,
      dstIp: dstParsed,
      dstPort: target.port,
      identity: { namespace: peer.namespace, serviceAccount: peer.serviceAccount, principal },
    };
    const rec = this.inboundRecord(
      started,
      srcIp,
      req.source.port,
      target.ip,
      target.port,
      me,
      formatSpiffeId(peer),
    );
    if (!this.authorize(rec, me, info)) {
      req.reject(401);
      return;
    }
    let app: Socket;
    try {
      app = await this.connectApp(srcIp, target.ip, target.port, me);
    } catch (err) {
      this.ctx.metrics.open(rec.labels);
      this.finish(rec, { bytesAtoB: 0, bytesBtoA: 0, error: err as Error }, 'UF');
      req.reject(503);
      return;
    }
    const tunnel = req.accept();
    if (!tunnel) {
      app.destroy();
      return;
    }
    this.ctx.metrics.open(rec.labels);
    this.track(rec, tunnel, app);
    rec.tracked = this.trackPolicy(info, tunnel, app);
    pipeBidirectional(tunnel, app, onPipeDone, rec);
  }

  // ---------- inbound plaintext (15006) ----------

  private onInboundPlain(client: Socket): void {
    const started = performance.now();
    client.on('error', noop);
    let dst: { address: string; port: number };
    try {
      dst = originalDst(client);
    } catch {
      client.destroy();
      return;
    }
    const me = this.workload();
    const srcIp = canonicalIp(client.remoteAddress ?? '');
    const dstIp = canonicalIp(dst.address);
    const srcParsed = parseIp(srcIp);
    const dstParsed = parseIp(dstIp);
    if (!me || !srcParsed || !dstParsed) {
      client.destroy();
      return;
    }
    const info: ConnectionInfo = { srcIp: srcParsed, dstIp: dstParsed, dstPort: dst.port, identity: null };
    const rec = this.inboundRecord(started, srcIp, client.remotePort ?? 0, dstIp, dst.port, me, null);
    if (!this.authorize(rec, me, info)) {
      client.resetAndDestroy();
      return;
    }
    this.settingUp.add(client);
    this.connectApp(srcIp, dstIp, dst.port, me).then(
      (app) => {
        this.settingUp.delete(client);
        if (client.destroyed || this.forced) {
          app.destroy();
          return;
        }
        this.ctx.metrics.open(rec.labels);
        this.track(rec, client, app);
        rec.tracked = this.trackPolicy(info, client, app);
        client.resume();
        pipeBidirectional(client, app, onPipeDone, rec);
      },
      (err: unknown) => {
        this.settingUp.delete(client);
        this.ctx.metrics.open(rec.labels);
        this.finish(rec, { bytesAtoB: 0, bytesBtoA: 0, error: err as Error }, 'UF');
        client.destroy();
      },
    );
  }

  /** The record (metrics labels, access-log fields) of an inbound connection to this pod. */
  private inboundRecord(
    started: number,
    srcIp: string,
    srcPort: number,
    dstIp: string,
    dstPort: number,
    me: WorkloadInfo,
    peerIdentity: string | null,
  ): ConnRecord {
    const srcWorkload = this.ctx.state.workloadByIp(this.ctx.config.network, srcIp);
    const labels = tcpLabels(
      'destination',
      { workload: srcWorkload, principal: peerIdentity },
      { workload: me, principal: formatSpiffeId(this.identity) },
      serviceFor(this.ctx, me, dstPort),
      peerIdentity !== null,
    );
    return {
      direction: 'inbound',
      started,
      src: `${srcIp}:${srcPort}`,
      dst: `${dstIp}:${dstPort}`,
      labels,
      srcIdentity: peerIdentity,
      dstIdentity: formatSpiffeId(this.identity),
      srcWorkload,
      dstWorkload: me,
      pod: this,
      tracked: null,
      a: null,
      b: null,
    };
  }

  /** L4 authorization of an inbound connection; a denial is counted and logged here. */
  private authorize(rec: ConnRecord, me: WorkloadInfo, info: ConnectionInfo): boolean {
    const decision = evaluate(this.ctx.state.policiesFor(me), info);
    if (decision.allowed) return true;
    this.ctx.metrics.open(rec.labels);
    const error = new Error(`denied by ${decision.policy ?? 'default deny'}`);
    this.finish(rec, { bytesAtoB: 0, bytesBtoA: 0, error }, 'DENY');
    return false;
  }

  /** Connects to the app inside the pod netns with the original client IP as source (unless it is ours). */
  private async connectApp(srcIp: string, ip: string, port: number, me: WorkloadInfo): Promise<Socket> {
    const spoof = !me.ips.includes(srcIp) && !srcIp.startsWith('127.');
    const socket = await connectInNetns({
      netns: this.netnsFd,
      host: ip,
      port,
      mark: this.ctx.config.inpodMark,
      timeoutMs: CONNECT_TIMEOUT_MS,
      allowHalfOpen: true,
      ...(spoof ? { transparent: true, bind: { host: srcIp } } : {}),
    });
    socket.setNoDelay(true);
    return socket;
  }

  private trackPolicy(info: ConnectionInfo, a: Duplex, b: Duplex): TrackedConnection {
    const t: TrackedConnection = {
      workloadUid: this.workloadUid,
      info,
      close: () => {
        a.destroy();
        b.destroy();
      },
    };
    this.ctx.connections.add(t);
    return t;
  }

  private track(rec: ConnRecord, a: Duplex, b: Duplex): void {
    rec.a = a;
    rec.b = b;
    this.sockets.add(a);
    this.sockets.add(b);
  }

  /** @internal pipe completion */
  finish(rec: ConnRecord, stats: PipeStats, flags = '-'): void {
    if (rec.tracked) this.ctx.connections.delete(rec.tracked);
    if (rec.a) this.sockets.delete(rec.a);
    if (rec.b) this.sockets.delete(rec.b);
    const fromClient = stats.bytesAtoB;
    const toClient = stats.bytesBtoA;
    const labels = flags === '-' ? rec.labels : { ...rec.labels, response_flags: flags };
    const failed = flags !== '-';
    this.ctx.metrics.close(labels, fromClient, toClient, failed);
    const line = {
      direction: rec.direction,
      'src.addr': rec.src,
      'dst.addr': rec.dst,
      'src.workload': rec.srcWorkload?.name ?? null,
      'src.namespace': rec.srcWorkload?.namespace ?? null,
      'src.identity': rec.srcIdentity,
      'dst.workload': rec.dstWorkload?.name ?? null,
      'dst.namespace': rec.dstWorkload?.namespace ?? null,
      'dst.identity': rec.dstIdentity,
      bytes_sent: toClient,
      bytes_recv: fromClient,
      duration_ms: Math.round(performance.now() - rec.started),
      ...(stats.error ? { error: describeError(stats.error) } : {}),
    };
    if (failed) this.ctx.accessLog.warn(line, 'connection failed');
    else this.ctx.accessLog.info(line, 'connection complete');
  }

  /**
   * Stops accepting; lets open connections finish for up to graceMs, then closes them.
   *
   * Handover (a new ztunnel replacing this one, ARCHITECTURE.md "Lifecycle"): the successor binds its own
   * listeners beside ours with SO_REUSEPORT as soon as the CNI agent hands it the pod, and the DaemonSet's
   * maxSurge rollout only stops us once the successor is Ready, i.e. has every pod's listeners open. So when
   * we get here the pod is already served by both, and the right move is to stop accepting at once: new
   * connections then all go to the successor and never have to be cut at our drain deadline. Keeping our
   * listeners open longer would not help either way: the kernel keeps hashing new connections to every socket
   * of the port until it is closed, and closing a socket resets the connections still queued on it (it has
   * its own accept queue; only net.ipv4.tcp_migrate_req, a sysctl of the pod's netns, would move them to a
   * sibling). What we can do is make that queue as empty as possible when we close: we close from a check-phase
   * callback, right after the event loop's poll phase has accepted everything that was pending (closing from
   * the SIGTERM callback itself would drop what the same poll round had yet to accept). A connection that
   * still loses that race is reset before any byte was exchanged; HBONE clients retry those on a new connection
   * (pkg/hbone pool, droppedBeforeTls), which lands on the successor. TLS handshakes already under way finish
   * and are answered with GOAWAY (pkg/hbone server), which clients retry the same way.
   */
  async close(graceMs: number): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await new Promise<void>((r) => setImmediate(r));
    this.outbound.close();
    this.inboundPlain.close();
    const drained = this.hbone.drain();
    const deadline = new Promise<void>((r) => setTimeout(r, graceMs).unref());
    const idle = new Promise<void>((resolve) => {
      const check = () =>
        this.sockets.size === 0 && this.settingUp.size === 0 ? resolve() : setTimeout(check, 50).unref();
      check();
    });
    await Promise.race([Promise.all([drained, idle]), deadline]);
    this.forced = true;
    this.hbone.forceClose();
    this.pool.close();
    for (const s of this.sockets) s.destroy();
    for (const s of this.settingUp) s.destroy();
    this.sockets.clear();
    this.settingUp.clear();
    closeFd(this.netnsFd);
  }

  /** The HBONE server's counters (metrics). */
  get hboneStats(): HboneServerStats {
    return this.hbone.stats;
  }

  dump() {
    return {
      uid: this.info.uid,
      name: this.info.name,
      namespace: this.info.namespace,
      identity: formatSpiffeId(this.identity),
      workload: this.workloadUid,
      connections: this.sockets.size / 2,
      hbone: { ...this.hbone.stats },
      pool: { ...this.pool.stats },
    };
  }
}

function noop(): void {}

function onPipeDone(stats: PipeStats, rec: ConnRecord): void {
  rec.pod.finish(rec, stats, stats.error ? 'UC' : '-');
}

function serviceFor(ctx: ProxyContext, w: WorkloadInfo, targetPort: number): ServiceRef | null {
  for (const [key, list] of Object.entries(w.raw.services)) {
    if (list.ports.some((p) => p.targetPort === targetPort || p.servicePort === targetPort)) {
      const s = ctx.state.service(key);
      if (s) return { hostname: s.hostname, namespace: s.namespace, name: s.name };
    }
  }
  return null;
}
