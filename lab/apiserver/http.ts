/**
 * HTTP front end of the lab API server: authentication, URL routing to resources and subresources, body
 * limits and decoding (JSON, YAML, the patch media types), content negotiation (JSON, YAML, Table,
 * PartialObjectMetadata), watch streaming, discovery, OpenAPI, version and health endpoints.
 * Every failure is a Kubernetes `Status`; no client input can make it answer 500 or crash.
 */
import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { Logger } from 'pino';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { type ApiCore, type DeleteOptions, PATCH_CONTENT_TYPES, type UserInfo } from './api.ts';
import { type Authorizer, accessReview } from './authz.ts';
import {
  AGGREGATED_V2,
  AGGREGATED_V2BETA1,
  aggregatedDiscovery,
  apiGroup,
  apiGroupList,
  apiResourceList,
  apiVersions,
} from './discovery.ts';
import { isObject, type JsonObject } from './json.ts';
import type { OpenApi } from './openapi.ts';
import { decodeProtobufBody, PROTOBUF } from './protobuf.ts';
import type { Registry, ResourceType } from './resources.ts';
import {
  ApiError,
  badRequest,
  entityTooLarge,
  gone,
  internalError,
  methodNotAllowed,
  notAcceptable,
  resourceNotFound,
  type StatusObject,
  unauthorized,
  unsupportedMediaType,
} from './status.ts';
import type { EventType, StoreWatch } from './store.ts';
import { type IncludeObject, partialMetadata, toTable } from './table.ts';

export interface HttpOptions {
  readonly api: ApiCore;
  readonly registry: Registry;
  readonly openapi: OpenApi;
  readonly logger: Logger;
  readonly adminToken: string;
  readonly authorizer: Authorizer;
  readonly maxBodyBytes: number;
  readonly bookmarkIntervalMs: number;
  readonly watchKeepaliveMs: number;
  readonly maxWatchSeconds: number;
  /** Returns false while the server is starting or stopping (`/readyz`). */
  readonly ready: () => boolean;
}

/** Objects nested deeper than this are rejected before any recursive processing touches them. */
const MAX_NESTING_DEPTH = 100;
/** A watch whose client stops reading is closed once this much output is queued (the client re-watches). */
const MAX_WATCH_BUFFER_BYTES = 16 * 1024 * 1024;
/** Body media types accepted for create/update. */
const BODY_TYPES = ['application/json', 'application/yaml'];

export const VERSION_INFO = {
  major: '1',
  minor: '32',
  gitVersion: 'v1.32.0',
  gitCommit: '0000000000000000000000000000000000000000',
  gitTreeState: 'clean',
  buildDate: '2025-01-01T00:00:00Z',
  goVersion: 'go1.23.4',
  compiler: 'gc',
  platform: 'linux/amd64',
};

interface MediaRange {
  readonly type: string;
  readonly params: Readonly<Record<string, string>>;
}

function parseAccept(h: string | undefined): MediaRange[] {
  if (!h) return [];
  return h.split(',').map((part) => {
    const [type = '', ...ps] = part.split(';').map((s) => s.trim());
    const params: Record<string, string> = {};
    for (const p of ps) {
      const i = p.indexOf('=');
      if (i > 0) params[p.slice(0, i).trim()] = p.slice(i + 1).trim();
    }
    return { type: type.toLowerCase(), params };
  });
}

function mediaType(h: string | undefined): string {
  return (h ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
}

type Format = { kind: 'json' | 'yaml' } | { kind: 'table'; include: IncludeObject } | { kind: 'partial' };

/** Picks the response format from Accept, like kube-apiserver's negotiation (first acceptable wins). */
function negotiate(accept: string | undefined, query: URLSearchParams, allowConversions: boolean): Format {
  const ranges = parseAccept(accept);
  if (ranges.length === 0) return { kind: 'json' };
  for (const r of ranges) {
    const isJson = r.type === 'application/json' || r.type === 'application/*' || r.type === '*/*';
    if (r.params.as) {
      if (
        !allowConversions ||
        r.params.g !== 'meta.k8s.io' ||
        (r.params.v !== 'v1' && r.params.v !== 'v1beta1')
      )
        continue;
      if (r.type !== 'application/json' && r.type !== 'application/yaml') continue;
      if (r.params.as === 'Table') {
        const inc = query.get('includeObject');
        return { kind: 'table', include: inc === 'None' || inc === 'Object' ? inc : 'Metadata' };
      }
      if (r.params.as === 'PartialObjectMetadata' || r.params.as === 'PartialObjectMetadataList')
        return { kind: 'partial' };
      continue;
    }
    if (isJson) return { kind: 'json' };
    if (r.type === 'application/yaml') return { kind: 'yaml' };
  }
  throw notAcceptable('application/json, application/yaml');
}

function depth(v: unknown, d = 0): number {
  if (d > MAX_NESTING_DEPTH) return d;
  let max = d;
  if (Array.isArray(v)) for (const x of v) max = Math.max(max, depth(x, d + 1));
  else if (isObject(v)) for (const x of Object.values(v)) max = Math.max(max, depth(x, d + 1));
  return max;
}

function parseBody(raw: Buffer, type: 'json' | 'yaml'): unknown {
  const text = raw.toString('utf8');
  let v: unknown;
  if (type === 'json') {
    try {
      v = JSON.parse(text);
    } catch (err) {
      throw badRequest(`couldn't get version/kind; json parse error: ${(err as Error).message}`);
    }
  } else {
    try {
      v = parseYaml(text, { maxAliasCount: 50, prettyErrors: false, uniqueKeys: false });
    } catch (err) {
      throw badRequest(`error converting YAML to JSON: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  if (depth(v) > MAX_NESTING_DEPTH)
    throw badRequest(`the request body is nested deeper than ${MAX_NESTING_DEPTH} levels`);
  return v;
}

interface Route {
  readonly group: string;
  readonly version: string;
  readonly namespace: string | null;
  readonly resource: string;
  readonly name: string | null;
  readonly subresource: string | null;
  readonly watchPath: boolean;
}

/** Parses `/api/v1/...` and `/apis/<g>/<v>/...` resource paths; null when it is not one. */
function parseResourcePath(segs: readonly string[]): Route | null {
  let group: string;
  let version: string;
  let rest: string[];
  if (segs[0] === 'api' && segs.length >= 3) {
    group = '';
    version = segs[1] as string;
    rest = segs.slice(2);
  } else if (segs[0] === 'apis' && segs.length >= 4) {
    group = segs[1] as string;
    version = segs[2] as string;
    rest = segs.slice(3);
  } else return null;
  let watchPath = false;
  if (rest[0] === 'watch') {
    watchPath = true;
    rest = rest.slice(1);
  }
  if (rest.length === 0) return null;
  if (
    rest[0] === 'namespaces' &&
    rest.length >= 3 &&
    !(rest.length === 3 && (rest[2] === 'status' || rest[2] === 'finalize'))
  ) {
    if (rest.length > 5) return null;
    return {
      group,
      version,
      namespace: rest[1] as string,
      resource: rest[2] as string,
      name: rest[3] ?? null,
      subresource: rest[4] ?? null,
      watchPath,
    };
  }
  if (rest.length > 3) return null;
  return {
    group,
    version,
    namespace: null,
    resource: rest[0] as string,
    name: rest[1] ?? null,
    subresource: rest[2] ?? null,
    watchPath,
  };
}

class Responder {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  status = 0;

  constructor(req: IncomingMessage, res: ServerResponse) {
    this.req = req;
    this.res = res;
  }

  send(code: number, body: unknown, yaml = false, contentType?: string): void {
    if (this.res.headersSent || this.res.destroyed) return;
    this.status = code;
    const text = yaml ? stringifyYaml(body) : `${JSON.stringify(body)}\n`;
    this.res.writeHead(code, {
      'Content-Type': contentType ?? (yaml ? 'application/yaml' : 'application/json'),
      'Content-Length': Buffer.byteLength(text),
      'Cache-Control': 'no-cache, private',
    });
    this.res.end(text);
  }

  error(err: ApiError, close = false): void {
    if (close) this.res.setHeader('Connection', 'close');
    this.send(err.status.code, err.status);
  }

  text(code: number, body: string): void {
    if (this.res.headersSent) return;
    this.status = code;
    this.res.writeHead(code, {
      'Content-Type': 'text/plain; charset=utf-8',
      'Cache-Control': 'no-cache, private',
      'X-Content-Type-Options': 'nosniff',
    });
    this.res.end(body);
  }
}

export class HttpHandler {
  private readonly o: HttpOptions;
  private readonly adminToken: Buffer;
  private readonly watches = new Set<{ close(): void }>();
  /** `host:port` advertised in `/api` (serverAddressByClientCIDRs); known once the port is bound. */
  private serverAddress = '';
  private url = '';

  constructor(opts: HttpOptions) {
    this.o = opts;
    this.adminToken = Buffer.from(opts.adminToken);
  }

  setAddress(serverAddress: string, url: string): void {
    this.serverAddress = serverAddress;
    this.url = url;
  }

  /** Ends every open watch stream (shutdown). */
  closeWatches(): void {
    for (const w of [...this.watches]) w.close();
  }

  readonly handle = (req: IncomingMessage, res: ServerResponse): void => {
    const started = process.hrtime.bigint();
    const r = new Responder(req, res);
    const log = this.o.logger;
    res.on('close', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      log.debug(
        {
          method: req.method,
          url: req.url,
          status: r.status || res.statusCode,
          ms: Math.round(ms * 10) / 10,
        },
        'request',
      );
    });
    this.dispatch(r).catch((err: unknown) => {
      if (err instanceof ApiError) return r.error(err, err.code === 413);
      log.error({ err, method: req.method, url: req.url }, 'request failed');
      r.error(internalError((err as Error)?.message ?? String(err)));
    });
  };

  private async authenticate(req: IncomingMessage): Promise<UserInfo | null> {
    const h = req.headers.authorization;
    if (typeof h === 'string' && /^bearer\s+/i.test(h)) {
      const token = h.replace(/^bearer\s+/i, '').trim();
      const tb = Buffer.from(token);
      if (tb.length === this.adminToken.length && timingSafeEqual(tb, this.adminToken)) {
        return { username: 'lab-admin', groups: ['system:masters', 'system:authenticated'] };
      }
      const r = await this.o.api.authenticateToken(token, []);
      return 'user' in r ? r.user : null;
    }
    const sock = req.socket as TLSSocket;
    if (sock.encrypted && sock.authorized) {
      const cert = sock.getPeerCertificate();
      const cn = cert?.subject?.CN;
      if (typeof cn === 'string' && cn) {
        const o = cert.subject.O;
        const groups = Array.isArray(o) ? o : typeof o === 'string' ? [o] : [];
        return { username: cn, groups: [...groups, 'system:authenticated'] };
      }
    }
    return null;
  }

  /**
   * `Impersonate-User` / `Impersonate-Group` / `Impersonate-Uid` (kubectl --as/--as-group): allowed when the
   * caller may `impersonate` the user (or service account) and each group, like kube-apiserver.
   */
  private impersonate(req: IncomingMessage, user: UserInfo): UserInfo {
    const asUser = req.headers['impersonate-user'];
    const rawGroups = req.headers['impersonate-group'];
    const asGroups = Array.isArray(rawGroups)
      ? rawGroups
      : typeof rawGroups === 'string'
        ? rawGroups.split(',').map((g) => g.trim())
        : [];
    if (typeof asUser !== 'string' || asUser === '') {
      if (asGroups.length > 0)
        throw badRequest('requested impersonation of groups without impersonating a user');
      return user;
    }
    const sa = /^system:serviceaccount:([^:]+):([^:]+)$/.exec(asUser);
    const target = sa
      ? {
          verb: 'impersonate',
          group: '',
          resource: 'serviceaccounts',
          namespace: sa[1] as string,
          name: sa[2] as string,
        }
      : { verb: 'impersonate', group: '', resource: 'users', name: asUser };
    const az = this.o.authorizer;
    const denied = (what: string): ApiError =>
      new ApiError(
        403,
        'Forbidden',
        `${what} is forbidden: User "${user.username}" cannot impersonate resource "${target.resource}" in API group "" at the cluster scope`,
      );
    if (!az.allowed(user, target)) throw denied(`${target.resource} "${asUser}"`);
    for (const g of asGroups)
      if (!az.allowed(user, { verb: 'impersonate', group: '', resource: 'groups', name: g }))
        throw denied(`groups "${g}"`);
    const groups = [...asGroups];
    if (sa) groups.push('system:serviceaccounts', `system:serviceaccounts:${sa[1]}`);
    if (asUser !== 'system:anonymous' && !groups.includes('system:authenticated'))
      groups.push('system:authenticated');
    const uid = req.headers['impersonate-uid'];
    return { username: asUser, groups, ...(typeof uid === 'string' ? { uid } : {}) };
  }

  private async dispatch(r: Responder): Promise<void> {
    const { req } = r;
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://lab');
    } catch {
      throw badRequest('malformed request URL');
    }
    let segs: string[];
    try {
      segs = url.pathname
        .split('/')
        .filter((s) => s !== '')
        .map(decodeURIComponent);
    } catch {
      throw badRequest('malformed percent-encoding in the request path');
    }
    const method = req.method ?? 'GET';
    const first = segs[0] ?? '';
    if (first === 'healthz' || first === 'livez' || first === 'readyz') {
      if (method !== 'GET' && method !== 'HEAD') throw methodNotAllowed(method);
      const ok = first !== 'readyz' || this.o.ready();
      return r.text(ok ? 200 : 500, ok ? 'ok' : '[-]lab-apiserver not ready\nreadyz check failed');
    }
    const authenticated = await this.authenticate(req);
    if (!authenticated) {
      drain(req);
      throw unauthorized();
    }
    const user = this.impersonate(req, authenticated);
    const q = url.searchParams;
    const yaml = negotiateSimple(req.headers.accept);
    if (
      segs.length === 0 ||
      first === 'version' ||
      first === 'openapi' ||
      first === '.well-known' ||
      first === 'openid' ||
      ((first === 'api' || first === 'apis') && segs.length <= (first === 'api' ? 2 : 3))
    ) {
      if (method !== 'GET') throw methodNotAllowed(method);
      await this.o.authorizer.authorize(user, { nonResourcePath: url.pathname, verb: 'get' });
      return this.nonResource(r, segs, yaml);
    }
    const route = parseResourcePath(segs);
    if (!route) throw resourceNotFound();
    const t = this.o.registry.find(route.group, route.version, route.resource);
    if (!t) throw resourceNotFound();
    if (route.namespace !== null && !t.namespaced) throw resourceNotFound();
    await this.resource(r, t, route, method, q, user);
  }

  private nonResource(r: Responder, segs: string[], yaml: boolean) {
    const reg = this.o.registry;
    const [first, second, third] = segs;
    if (segs.length === 0) {
      return r.send(200, {
        paths: [
          '/api',
          '/api/v1',
          '/apis',
          ...reg
            .groups()
            .flatMap((g) => [`/apis/${g.name}`, ...g.versions.map((v) => `/apis/${g.name}/${v.version}`)]),
          '/healthz',
          '/livez',
          '/openapi/v3',
          '/readyz',
          '/version',
        ],
      });
    }
    if (first === 'version' && segs.length === 1) return r.send(200, VERSION_INFO);
    if (first === '.well-known' && second === 'openid-configuration' && segs.length === 2) {
      return r.send(200, {
        issuer: this.o.api.tokens.issuer,
        jwks_uri: `${this.url}/openid/v1/jwks`,
        response_types_supported: ['id_token'],
        subject_types_supported: ['public'],
        id_token_signing_alg_values_supported: ['ES256'],
      });
    }
    if (first === 'openid' && second === 'v1' && third === 'jwks' && segs.length === 3)
      return r.send(200, this.o.api.tokens.jwks(), false, 'application/jwk-set+json');
    if (first === 'openapi') {
      if (second === 'v3' && segs.length === 2) return r.send(200, this.o.openapi.root());
      if (second === 'v3') {
        const doc = this.o.openapi.groupVersion(segs.slice(2).join('/'));
        if (!doc) throw resourceNotFound();
        r.status = 200;
        r.res.writeHead(200, {
          'Content-Type': 'application/json',
          'Content-Length': Buffer.byteLength(doc.body),
          ETag: `"${doc.hash}"`,
          'Cache-Control': 'public, immutable',
        });
        r.res.end(doc.body);
        return;
      }
      throw resourceNotFound();
    }
    const accept = parseAccept(r.req.headers.accept);
    const aggregated = accept.find(
      (m) =>
        m.params.as === 'APIGroupDiscoveryList' &&
        m.params.g === 'apidiscovery.k8s.io' &&
        (m.params.v === 'v2' || m.params.v === 'v2beta1'),
    );
    if (first === 'api' && segs.length === 1) {
      if (aggregated)
        return r.send(
          200,
          aggregatedDiscovery(reg, true, aggregated.params.v === 'v2' ? 'v2' : 'v2beta1'),
          false,
          aggregated.params.v === 'v2' ? AGGREGATED_V2 : AGGREGATED_V2BETA1,
        );
      return r.send(200, apiVersions(this.serverAddress), yaml);
    }
    if (first === 'apis' && segs.length === 1) {
      if (aggregated)
        return r.send(
          200,
          aggregatedDiscovery(reg, false, aggregated.params.v === 'v2' ? 'v2' : 'v2beta1'),
          false,
          aggregated.params.v === 'v2' ? AGGREGATED_V2 : AGGREGATED_V2BETA1,
        );
      return r.send(200, apiGroupList(reg), yaml);
    }
    if (first === 'api' && segs.length === 2) {
      const doc = apiResourceList(reg, '', second as string);
      if (!doc) throw resourceNotFound();
      return r.send(200, doc, yaml);
    }
    if (first === 'apis' && segs.length === 2) {
      const doc = apiGroup(reg, second as string);
      if (!doc) throw resourceNotFound();
      return r.send(200, doc, yaml);
    }
    if (first === 'apis' && segs.length === 3) {
      const doc = apiResourceList(reg, second as string, third as string);
      if (!doc) throw resourceNotFound();
      return r.send(200, doc, yaml);
    }
    throw resourceNotFound();
  }

  private async readBody(req: IncomingMessage): Promise<Buffer> {
    const limit = this.o.maxBodyBytes;
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > limit) {
      req.resume();
      throw entityTooLarge(limit);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      const b = chunk as Buffer;
      size += b.length;
      if (size > limit) {
        req.resume();
        throw entityTooLarge(limit);
      }
      chunks.push(b);
    }
    return Buffer.concat(chunks);
  }

  private async decodedBody(req: IncomingMessage): Promise<unknown> {
    const type = mediaType(req.headers['content-type']);
    if (
      type !== '' &&
      type !== 'application/json' &&
      type !== 'application/yaml' &&
      type !== '*/*' &&
      type !== PROTOBUF
    ) {
      drain(req);
      throw unsupportedMediaType(type, [...BODY_TYPES, PROTOBUF]);
    }
    const raw = await this.readBody(req);
    if (raw.length === 0) throw badRequest('the request body is empty');
    if (type === PROTOBUF) return decodeProtobufBody(raw);
    return parseBody(raw, type === 'application/yaml' ? 'yaml' : 'json');
  }

  private async resource(
    r: Responder,
    t: ResourceType,
    route: Route,
    method: string,
    q: URLSearchParams,
    user: UserInfo,
  ): Promise<void> {
    const api = this.o.api;
    const ns = route.namespace ?? '';
    const v = route.version;
    const yaml = negotiateSimple(r.req.headers.accept);
    const dryRun = q.getAll('dryRun').includes('All');
    if (q.getAll('dryRun').some((d) => d !== 'All'))
      throw badRequest(`dryRun: Unsupported value: only "All" is supported`);
    const write = {
      dryRun,
      fieldManager: q.get('fieldManager') ?? undefined,
      force: q.get('force') === 'true',
    };
    const name = route.name;
    const nsForType = t.namespaced ? ns : '';
    const watching = route.watchPath || q.get('watch') === 'true' || q.get('watch') === '1';
    const verb = watching ? 'watch' : verbFor(method, name !== null, route.subresource);
    await this.o.authorizer.authorize(user, {
      verb,
      group: t.group,
      resource: t.resource,
      subresource: route.subresource ?? '',
      namespace: nsForType,
      name: name ?? '',
    });
    const effectiveSub = route.subresource;
    const effectiveName = name;

    if (effectiveName === null) {
      if (effectiveSub !== null) throw resourceNotFound();
      if (method === 'GET' && watching) return this.watch(r, t, v, t.namespaced ? route.namespace : null, q);
      if (method === 'GET') {
        if (!t.verbs.includes('list')) throw methodNotAllowed(method);
        const fmt = negotiate(r.req.headers.accept, q, true);
        const limit = q.get('limit');
        const list = api.list(t, v, t.namespaced ? route.namespace : null, {
          labelSelector: q.get('labelSelector') ?? undefined,
          fieldSelector: q.get('fieldSelector') ?? undefined,
          limit: limit && /^\d+$/.test(limit) ? Number(limit) : undefined,
          continue: q.get('continue') ?? undefined,
        });
        const listMeta: JsonObject = { resourceVersion: list.resourceVersion };
        if (list.continue) listMeta.continue = list.continue;
        if (list.remainingItemCount !== undefined) listMeta.remainingItemCount = list.remainingItemCount;
        if (fmt.kind === 'table') return r.send(200, toTable(t, v, list.items, listMeta, fmt.include));
        if (fmt.kind === 'partial')
          return r.send(200, {
            kind: 'PartialObjectMetadataList',
            apiVersion: 'meta.k8s.io/v1',
            metadata: listMeta,
            items: list.items.map(partialMetadata),
          });
        return r.send(
          200,
          {
            kind: t.listKind,
            apiVersion: t.group ? `${t.group}/${v}` : v,
            metadata: listMeta,
            items: list.items,
          },
          fmt.kind === 'yaml',
        );
      }
      if (method === 'POST') {
        if (!t.verbs.includes('create')) throw methodNotAllowed(method);
        if (t.namespaced && route.namespace === null) throw methodNotAllowed(method);
        const body = await this.decodedBody(r.req);
        if (t.key === 'authentication.k8s.io/tokenreviews')
          return r.send(201, await api.tokenReview(body), yaml);
        if (t.key === 'authentication.k8s.io/selfsubjectreviews') {
          api.decodeBody(t, v, body);
          const userInfo = {
            username: user.username,
            ...(user.uid ? { uid: user.uid } : {}),
            groups: [...user.groups],
            ...(user.extra ? { extra: user.extra } : {}),
          };
          return r.send(
            201,
            {
              kind: 'SelfSubjectReview',
              apiVersion: 'authentication.k8s.io/v1',
              metadata: { creationTimestamp: null },
              status: { userInfo },
            },
            yaml,
          );
        }
        if (t.group === 'authorization.k8s.io') {
          const review = api.decodeBody(t, v, body);
          return r.send(
            201,
            accessReview(this.o.authorizer, user, review, t.resource === 'selfsubjectaccessreviews'),
            yaml,
          );
        }
        return r.send(201, await api.create(t, v, ns, body, write), yaml);
      }
      if (method === 'DELETE') {
        if (!t.verbs.includes('deletecollection')) throw methodNotAllowed(method);
        const opts = await this.deleteOptions(r.req, q, write);
        const items = await api.deleteCollection(
          t,
          v,
          t.namespaced ? route.namespace : null,
          {
            labelSelector: q.get('labelSelector') ?? undefined,
            fieldSelector: q.get('fieldSelector') ?? undefined,
          },
          opts,
        );
        return r.send(
          200,
          {
            kind: t.listKind,
            apiVersion: t.group ? `${t.group}/${v}` : v,
            metadata: { resourceVersion: String(api.store.rv) },
            items,
          },
          yaml,
        );
      }
      throw methodNotAllowed(method);
    }
    if (t.namespaced && route.namespace === null) throw resourceNotFound();
    if (effectiveSub === null) {
      if (method === 'GET' && watching) {
        const fs = q.get('fieldSelector');
        q.set(
          'fieldSelector',
          fs ? `${fs},metadata.name=${effectiveName}` : `metadata.name=${effectiveName}`,
        );
        return this.watch(r, t, v, t.namespaced ? route.namespace : null, q);
      }
      switch (method) {
        case 'GET': {
          if (!t.verbs.includes('get')) throw methodNotAllowed(method);
          const fmt = negotiate(r.req.headers.accept, q, true);
          const obj = api.get(t, v, ns, effectiveName);
          if (fmt.kind === 'table')
            return r.send(
              200,
              toTable(t, v, [obj], { resourceVersion: String(objResourceVersion(obj)) }, fmt.include),
            );
          if (fmt.kind === 'partial') return r.send(200, partialMetadata(obj));
          return r.send(200, obj, fmt.kind === 'yaml');
        }
        case 'PUT': {
          if (!t.verbs.includes('update')) throw methodNotAllowed(method);
          const body = await this.decodedBody(r.req);
          const existed = api.store.get(t.key, nsForType, effectiveName) !== undefined;
          return r.send(existed ? 200 : 201, await api.update(t, v, ns, effectiveName, body, write), yaml);
        }
        case 'PATCH': {
          if (!t.verbs.includes('patch')) throw methodNotAllowed(method);
          const { type, body } = await this.patchBody(r.req);
          const existed = api.store.get(t.key, nsForType, effectiveName) !== undefined;
          return r.send(
            existed ? 200 : 201,
            await api.patch(t, v, ns, effectiveName, type, body, write),
            yaml,
          );
        }
        case 'DELETE': {
          if (!t.verbs.includes('delete')) throw methodNotAllowed(method);
          const opts = await this.deleteOptions(r.req, q, write);
          const out = await api.delete(t, v, ns, effectiveName, opts);
          const pending = isObject(out.metadata) && out.metadata.deletionTimestamp !== undefined;
          return r.send(pending ? 202 : 200, out, yaml);
        }
        default:
          throw methodNotAllowed(method);
      }
    }
    return this.subresource(r, t, v, ns, effectiveName, effectiveSub, method, write, yaml);
  }

  private async subresource(
    r: Responder,
    t: ResourceType,
    v: string,
    ns: string,
    name: string,
    sub: string,
    method: string,
    write: { dryRun: boolean; fieldManager?: string; force: boolean },
    yaml: boolean,
  ): Promise<void> {
    const api = this.o.api;
    const info = t.subresources.find((s) => s.name === sub);
    if (!info) throw resourceNotFound();
    if (sub === 'status') {
      if (method === 'GET') return r.send(200, api.get(t, v, ns, name), yaml);
      if (method === 'PUT')
        return r.send(
          200,
          await api.update(t, v, ns, name, await this.decodedBody(r.req), write, 'status'),
          yaml,
        );
      if (method === 'PATCH') {
        const { type, body } = await this.patchBody(r.req);
        return r.send(200, await api.patch(t, v, ns, name, type, body, write, 'status'), yaml);
      }
      throw methodNotAllowed(method);
    }
    if (sub === 'scale') {
      if (method === 'GET') return r.send(200, api.getScale(t, ns, name), yaml);
      if (method === 'PUT')
        return r.send(200, await api.updateScale(t, v, ns, name, await this.decodedBody(r.req), write), yaml);
      if (method === 'PATCH') {
        const { type, body } = await this.patchBody(r.req);
        return r.send(200, await api.patchScale(t, v, ns, name, type, body, write), yaml);
      }
      throw methodNotAllowed(method);
    }
    if (sub === 'finalize' && method === 'PUT')
      return r.send(
        200,
        await api.update(t, v, ns, name, await this.decodedBody(r.req), write, 'finalize'),
        yaml,
      );
    if (sub === 'binding' && method === 'POST')
      return r.send(201, await api.bind(ns, name, await this.decodedBody(r.req)), yaml);
    if (sub === 'token' && method === 'POST')
      return r.send(201, await api.createToken(ns, name, await this.decodedBody(r.req)), yaml);
    throw methodNotAllowed(method);
  }

  private async patchBody(
    req: IncomingMessage,
  ): Promise<{ type: NonNullable<(typeof PATCH_CONTENT_TYPES)[string]>; body: unknown }> {
    const ct = mediaType(req.headers['content-type']);
    const type = PATCH_CONTENT_TYPES[ct];
    if (!type || ct === 'application/apply-patch+cbor') {
      drain(req);
      throw unsupportedMediaType(
        ct,
        Object.keys(PATCH_CONTENT_TYPES).filter((k) => !k.endsWith('cbor')),
      );
    }
    const raw = await this.readBody(req);
    if (raw.length === 0) throw badRequest('the patch body is empty');
    return { type, body: parseBody(raw, type === 'apply' ? 'yaml' : 'json') };
  }

  private async deleteOptions(
    req: IncomingMessage,
    q: URLSearchParams,
    write: { dryRun: boolean },
  ): Promise<DeleteOptions> {
    let body: unknown = null;
    const len = Number(req.headers['content-length'] ?? 0);
    if (len > 0 || req.headers['transfer-encoding']) {
      const raw = await this.readBody(req);
      if (raw.length > 0)
        body = parseBody(
          raw,
          mediaType(req.headers['content-type']) === 'application/yaml' ? 'yaml' : 'json',
        );
    }
    const b = isObject(body) ? body : {};
    if (body !== null && !isObject(body)) throw badRequest('DeleteOptions must be an object');
    let policy = b.propagationPolicy ?? q.get('propagationPolicy') ?? undefined;
    const orphan =
      b.orphanDependents ?? (q.has('orphanDependents') ? q.get('orphanDependents') === 'true' : undefined);
    if (policy === undefined && orphan !== undefined) policy = orphan === true ? 'Orphan' : 'Background';
    if (policy !== undefined && policy !== 'Background' && policy !== 'Foreground' && policy !== 'Orphan') {
      throw new ApiError(
        422,
        'Invalid',
        `DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: "${String(policy)}"`,
      );
    }
    const graceRaw =
      b.gracePeriodSeconds ?? (q.has('gracePeriodSeconds') ? Number(q.get('gracePeriodSeconds')) : undefined);
    if (
      graceRaw !== undefined &&
      (typeof graceRaw !== 'number' || !Number.isInteger(graceRaw) || graceRaw < 0)
    )
      throw badRequest('gracePeriodSeconds must be a non-negative integer');
    const pre = isObject(b.preconditions) ? b.preconditions : undefined;
    const dryRun = write.dryRun || (Array.isArray(b.dryRun) && b.dryRun.includes('All'));
    return {
      dryRun,
      propagationPolicy: policy,
      gracePeriodSeconds: graceRaw,
      preconditions: pre
        ? {
            uid: typeof pre.uid === 'string' ? pre.uid : undefined,
            resourceVersion: typeof pre.resourceVersion === 'string' ? pre.resourceVersion : undefined,
          }
        : undefined,
    };
  }

  private watch(
    r: Responder,
    t: ResourceType,
    version: string,
    namespace: string | null,
    q: URLSearchParams,
  ): void {
    if (!t.verbs.includes('watch')) throw methodNotAllowed('GET');
    const fmt = negotiate(r.req.headers.accept, q, true);
    // YAML is not a streaming format; kube-apiserver refuses it for watches too.
    if (fmt.kind === 'yaml') throw notAcceptable('application/json');
    const { res } = r;
    const bookmarks = q.get('allowWatchBookmarks') === 'true';
    const sendInitial = q.get('sendInitialEvents') === 'true';
    const timeoutParam = q.get('timeoutSeconds');
    const requested = timeoutParam && /^\d+$/.test(timeoutParam) ? Number(timeoutParam) : 0;
    // Like kube-apiserver: without a timeout, a random one in [max/2, max] spreads reconnects out.
    const timeoutS =
      requested > 0
        ? Math.min(requested, this.o.maxWatchSeconds)
        : this.o.maxWatchSeconds * (0.5 + Math.random() / 2);
    const store = this.o.api.store;
    const encode = (type: EventType | 'BOOKMARK' | 'ERROR', obj: JsonObject): string => {
      let object: unknown = obj;
      if (type !== 'BOOKMARK' && type !== 'ERROR') {
        if (fmt.kind === 'table')
          object = toTable(
            t,
            version,
            [obj],
            { resourceVersion: String(objResourceVersion(obj)) },
            fmt.include,
            true,
          );
        else if (fmt.kind === 'partial') object = partialMetadata(obj);
      }
      return `${JSON.stringify({ type, object })}\n`;
    };
    let buffered: string[] | null = [];
    let closed = false;
    const write = (line: string): void => {
      if (closed) return;
      if (buffered) {
        buffered.push(line);
        return;
      }
      res.write(line);
      if (res.writableLength > MAX_WATCH_BUFFER_BYTES) close();
    };
    let w: StoreWatch | null = null;
    let timeoutTimer: NodeJS.Timeout | null = null;
    let tickTimer: NodeJS.Timeout | null = null;
    const entry = { close: (): void => close() };
    const close = (): void => {
      if (closed) return;
      closed = true;
      if (timeoutTimer) clearTimeout(timeoutTimer);
      if (tickTimer) clearTimeout(tickTimer);
      if (w) store.unwatch(w);
      this.watches.delete(entry);
      if (!res.writableEnded) res.end();
    };
    const bookmarkObject = (rv: number, annotations?: Record<string, string>): JsonObject => ({
      kind: t.kind,
      apiVersion: t.group ? `${t.group}/${version}` : version,
      metadata: { resourceVersion: String(rv), ...(annotations ? { annotations } : {}) },
    });
    try {
      w = this.o.api.watch(
        t,
        version,
        namespace,
        {
          labelSelector: q.get('labelSelector') ?? undefined,
          fieldSelector: q.get('fieldSelector') ?? undefined,
          resourceVersion: q.get('resourceVersion') ?? undefined,
          sendInitialEvents: sendInitial,
        },
        {
          send: (type, obj) => write(encode(type, obj)),
        },
      );
    } catch (err) {
      if (err instanceof ApiError && err.code === 410) {
        // Like the watch cache: a 200 stream carrying one ERROR event; clients relist on it.
        const status: StatusObject = gone(err.message).status;
        res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
        r.status = 200;
        res.end(encode('ERROR', status as unknown as JsonObject));
        return;
      }
      throw err;
    }
    const lines = buffered;
    buffered = null;
    r.status = 200;
    res.writeHead(200, {
      'Content-Type': 'application/json',
      'Cache-Control': 'no-cache, private',
      'Transfer-Encoding': 'chunked',
    });
    res.flushHeaders();
    for (const l of lines) write(l);
    const watchRef = w;
    if (sendInitial && bookmarks)
      write(encode('BOOKMARK', bookmarkObject(watchRef.lastRv, { 'k8s.io/initial-events-end': 'true' })));
    this.watches.add(entry);
    timeoutTimer = setTimeout(close, timeoutS * 1000);
    const interval = bookmarks ? this.o.bookmarkIntervalMs : this.o.watchKeepaliveMs;
    const tick = (): void => {
      if (closed) return;
      // Every published event of this resource reached this watch, so the published version is safe to resume
      // from; without bookmarks a bare newline keeps idle-timeout clients (client-node: 30 s) connected.
      if (bookmarks) write(encode('BOOKMARK', bookmarkObject(Math.max(watchRef.lastRv, store.publishedRv))));
      else write('\n');
      tickTimer = setTimeout(tick, interval);
    };
    tickTimer = setTimeout(tick, interval);
    res.on('close', close);
    res.on('error', close);
  }
}

function objResourceVersion(obj: JsonObject): string {
  return isObject(obj.metadata) && typeof obj.metadata.resourceVersion === 'string'
    ? obj.metadata.resourceVersion
    : '';
}

function negotiateSimple(accept: string | undefined): boolean {
  const ranges = parseAccept(accept);
  for (const r of ranges) {
    if (r.params.as) continue;
    if (r.type === 'application/yaml') return true;
    if (r.type === 'application/json' || r.type === '*/*' || r.type === 'application/*') return false;
  }
  return false;
}

function verbFor(method: string, hasName: boolean, sub: string | null): string {
  switch (method) {
    case 'GET':
      return hasName || sub ? 'get' : 'list';
    case 'POST':
      return 'create';
    case 'PUT':
      return 'update';
    case 'PATCH':
      return 'patch';
    case 'DELETE':
      return hasName ? 'delete' : 'deletecollection';
    default:
      return method.toLowerCase();
  }
}

/** Discards an unread request body so the connection can be reused after an early error. */
function drain(req: IncomingMessage): void {
  if (!req.complete) req.resume();
}
