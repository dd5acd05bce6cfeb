/**
 * L7 (HTTP) authorization for the waypoint and the ingress gateway: Istio `AuthorizationPolicy` semantics over
 * the `AuthzPolicy` messages istiod sends in `ambient.waypoint.v1.ServiceConfig.authorization`.
 *
 * The L4 evaluator in `index.ts` (ztunnel's) is untouched; this file reuses only its IP/CIDR helpers.
 *
 * Semantics (istio.io AuthorizationPolicy reference; Istio's authz builder/model; Envoy RBAC):
 * - DENY (and CUSTOM, see below) first: any match denies. Then ALLOW: no ALLOW policy → allow; any ALLOW match →
 *   allow; otherwise deny. AUDIT never changes the decision (its match is reported). Dry-run policies never
 *   change the decision; what they would have done is reported (Envoy's shadow rules).
 * - A policy with zero rules matches nothing; a rule with no from/to/when matches everything. A rule matches when
 *   any `from` source matches (none = any), any `to` operation matches (none = any) and every `when` condition
 *   matches. Within a source/operation/condition the fields AND, the values of a field OR, `not_*` negates.
 * - A missing attribute (no peer identity, no JWT, absent header or claim) never matches a value, so its `not_*`
 *   form matches (Envoy: `not_principals: ["*"]` matches plaintext).
 * - Strings keep Istio's syntax: `*` presence, `x*` prefix, `*x` suffix, else exact. `*` is "non-empty" except
 *   for headers and hosts where it is "present" (Envoy present_match).
 * - principals / `source.principal` compare without `spiffe://`, after Istio's trust-domain rewrite (a principal
 *   written with `cluster.local` or any alias stands for the local trust domain and each alias).
 * - namespaces / serviceAccounts are read from the principal (`<td>/ns/<ns>/sa/<sa>`); serviceAccounts take
 *   `ns/sa` or `sa` (policy namespace), like Istio ≥1.23.
 * - requestPrincipals / `request.auth.principal`: the value is split at its last `/` into issuer and subject and
 *   each part is matched on its own (Istio's current generator): `*` = any; `<iss>/*`; `*` + `/<sub>`; `*sfx`; `pfx*`.
 * - hosts: matched against the whole `:authority`, case-insensitively. Istio does not strip the port: write
 *   `["example.com", "example.com:*"]` to cover both (istio.io security best practices).
 * - paths: matched against the path without query string or fragment (Envoy `url_path`), case-sensitively;
 *   `{*}` / `{**}` path templates as Envoy's uri_template (`{*}` one non-empty segment, `{**}` the rest).
 *   The caller passes the path already normalized the way the mesh normalizes it.
 * - methods and `request.headers[...]` are case-sensitive on the value; header names are case-insensitive and
 *   repeated headers are joined with `,` (Envoy).
 * - `request.auth.claims[a][b]` walks nested objects; an array claim matches when any string element does;
 *   only string values match. `request.auth.audiences` reads `aud`, `request.auth.presenter` reads `azp`.
 *
 * Invalid config fails closed, the way Istio's builder does, but never by narrowing a DENY:
 * - ALLOW: a rule with any invalid value (bad CIDR, bad port, unknown or unsupported `when` key, bad path
 *   template) is dropped — the policy may then match nothing, which denies (Istio: "skipped invalid rule").
 * - DENY / CUSTOM / AUDIT: Istio ignores the invalid value, widening the rule. We do the same for `not_*` values
 *   and for conditions with an unknown key (Istio drops the whole rule there, relying on its admission webhook;
 *   dropping a DENY rule would fail open, so we drop only the condition). When a positive list has an invalid
 *   value we drop the whole field (matches anything) instead of keeping the remaining values, since a shorter
 *   OR would narrow the DENY.
 * - CUSTOM: there is no ext-authz provider here, so a CUSTOM policy is enforced like Istio enforces a CUSTOM
 *   policy whose provider is missing: its rules become DENY rules. An unknown action is treated the same way.
 * - `experimental.envoy.filters.*` keys are rejected as unsupported (no Envoy metadata here).
 *
 * Everything is compiled once per config push (strings classified, CIDRs and ports parsed, names lower-cased,
 * path templates turned into one RegExp); `evaluateL7` only compares.
 */
import type {
  AuthzCondition,
  AuthzOperation,
  AuthzPolicy,
  AuthzRule,
  AuthzSource,
} from '../xds/gen/ambient/waypoint/v1/waypoint.ts';
import { AuthzPolicy_Action } from '../xds/gen/ambient/waypoint/v1/waypoint.ts';
import { type Cidr, cidrContains, type ParsedIp, parseCidr } from './ip.ts';

/** HTTP status of an authorization denial at a waypoint or gateway (Envoy RBAC filter). */
export const RBAC_DENIED_STATUS = 403;
/** Body of an authorization denial, byte for byte what Envoy sends. */
export const RBAC_DENIED_BODY = 'RBAC: access denied';

/** Istio's name for the local trust domain in policies, rewritten to the mesh trust domain and its aliases. */
const DEFAULT_TRUST_DOMAIN = 'cluster.local';

// ---------------------------------------------------------------------------------------------------------------
// Request and decision

/** Request headers as Node presents them: lower-case names, repeated headers as arrays. */
export type L7Headers = Readonly<Record<string, string | readonly string[] | undefined>>;

/** What `RequestAuthentication` established for the request (pkg/jwt's `ok` result has this shape). */
export interface RequestAuthInfo {
  /** `<iss>/<sub>`. */
  readonly principal: string;
  readonly issuer: string;
  readonly subject: string;
  /** The `aud` claim as a list. */
  readonly audiences: readonly string[];
  /** The `azp` claim, or null. */
  readonly presenter: string | null;
  /** The JWT payload (with `scope`/`permission` split on spaces, as Istio normalizes them). */
  readonly claims: Readonly<Record<string, unknown>>;
}

/** Everything L7 authorization looks at. Built once per request by the waypoint. */
export interface L7Request {
  /** Peer identity from the HBONE mTLS certificate, without `spiffe://`; null when there is none. */
  readonly sourcePrincipal: string | null;
  /** The client that opened the connection (`source.ip`, `ipBlocks`). */
  readonly sourceIp: ParsedIp | null;
  /** The original client (X-Forwarded-For when trusted) for `remote.ip`/`remoteIpBlocks`; null = sourceIp. */
  readonly remoteIp: ParsedIp | null;
  /** `destination.ip`: the address the client dialed (service VIP or pod IP from the CONNECT authority). */
  readonly destinationIp: ParsedIp | null;
  /** `destination.port` / `ports`: the port the client dialed (the service port). */
  readonly destinationPort: number;
  /** `:authority` (or Host) exactly as received. */
  readonly host: string;
  readonly method: string;
  /** `:path` as received (normalized by the caller); the query string and fragment are ignored here. */
  readonly path: string;
  readonly headers: L7Headers;
  /** Null when the request carried no JWT (or no RequestAuthentication applies). */
  readonly requestAuth: RequestAuthInfo | null;
  /** `connection.sni`; null for plaintext HTTP inside HBONE. */
  readonly sni: string | null;
}

export type L7DecisionReason =
  /** No enforced policy applies. */
  | 'no-policies'
  /** DENY policies only, none matched. */
  | 'no-allow-policies'
  | 'allow-matched'
  | 'deny-matched'
  /** A CUSTOM (or unknown-action) policy matched; enforced as DENY. */
  | 'custom-matched'
  | 'no-allow-matched';

export interface L7DryRunResult {
  /** Key of the first dry-run DENY/CUSTOM policy that matched, or null. */
  readonly denyPolicy: string | null;
  /** What the dry-run ALLOW policies would decide alone; null when there are none. */
  readonly allowResult: 'allowed' | 'denied' | null;
  /** Key of the dry-run ALLOW policy that matched, or null. */
  readonly allowPolicy: string | null;
}

export interface L7Decision {
  readonly allowed: boolean;
  /** `<namespace>/<name>` of the policy that decided, or null. */
  readonly policy: string | null;
  /** Index of the matching rule as written in the policy, or -1. */
  readonly rule: number;
  readonly reason: L7DecisionReason;
  /** Key of the first AUDIT policy that matched (for the access log), or null. */
  readonly audit: string | null;
  /** Null when no dry-run policy applies. */
  readonly dryRun: L7DryRunResult | null;
}

// ---------------------------------------------------------------------------------------------------------------
// Compiled form

/** Evaluation scratch: one per request, lazily derived attributes. */
class EvalContext {
  readonly req: L7Request;
  private pathValue: string | null = null;
  private hostValue: string | null = null;
  private idParsed = false;
  private nsValue: string | null = null;
  private saValue: string | null = null;

  constructor(req: L7Request) {
    this.req = req;
  }

  /** Path without query string or fragment (Envoy url_path). */
  get path(): string {
    if (this.pathValue === null) {
      const p = this.req.path;
      let end = p.indexOf('?');
      const hash = p.indexOf('#');
      if (hash !== -1 && (end === -1 || hash < end)) end = hash;
      this.pathValue = end === -1 ? p : p.slice(0, end);
    }
    return this.pathValue;
  }

  get hostLower(): string {
    if (this.hostValue === null) this.hostValue = this.req.host.toLowerCase();
    return this.hostValue;
  }

  get namespace(): string | null {
    if (!this.idParsed) this.parseIdentity();
    return this.nsValue;
  }

  get serviceAccount(): string | null {
    if (!this.idParsed) this.parseIdentity();
    return this.saValue;
  }

  /** `<td>/ns/<ns>/sa/<sa>` (extra segments allowed, as Istio's `.*\/ns\/<ns>\/(.+\/|)sa\/<sa>(\/.+)?`). */
  private parseIdentity(): void {
    this.idParsed = true;
    const p = this.req.sourcePrincipal;
    if (!p) return;
    const ns = p.indexOf('/ns/');
    if (ns === -1) return;
    const nsEnd = p.indexOf('/', ns + 4);
    if (nsEnd === -1) return;
    this.nsValue = p.slice(ns + 4, nsEnd);
    const sa = p.indexOf('/sa/', nsEnd);
    if (sa === -1) return;
    const saEnd = p.indexOf('/', sa + 4);
    this.saValue = saEnd === -1 ? p.slice(sa + 4) : p.slice(sa + 4, saEnd);
  }
}

type Pred = (ctx: EvalContext) => boolean;

interface CompiledRule {
  /** Index in the policy as written (dropped rules leave gaps). */
  readonly index: number;
  readonly match: Pred;
}

export interface CompiledL7Policy {
  /** `<namespace>/<name>`. */
  readonly key: string;
  readonly action: 'allow' | 'deny' | 'audit' | 'custom';
  readonly dryRun: boolean;
  /** Rules kept after compilation. */
  readonly ruleCount: number;
  /** @internal */
  readonly rules: readonly CompiledRule[];
  /** @internal Per kept rule, the decision to return when nothing else (audit/dry-run) needs reporting. */
  readonly decisions: readonly L7Decision[];
}

/** The compiled table for one destination; immutable, shared by every request to it. */
export interface CompiledL7Policies {
  /** Enforced DENY, then CUSTOM/unknown-action policies (both enforced as DENY), in input order. */
  readonly deny: readonly CompiledL7Policy[];
  readonly allow: readonly CompiledL7Policy[];
  readonly audit: readonly CompiledL7Policy[];
  readonly dryRunDeny: readonly CompiledL7Policy[];
  readonly dryRunAllow: readonly CompiledL7Policy[];
}

export type L7CompileEffect =
  /** ALLOW rule dropped: it matches nothing now. */
  | 'rule-ignored'
  /** DENY/AUDIT positive field dropped: the rule no longer checks that attribute. */
  | 'field-ignored'
  /** DENY/AUDIT `not_*` value dropped. */
  | 'value-ignored'
  /** DENY/AUDIT `when` condition dropped. */
  | 'condition-ignored'
  /** CUSTOM or unknown action: the policy's rules are enforced as DENY. */
  | 'enforced-as-deny';

export interface L7CompileError {
  readonly policy: string;
  /** Rule index, or -1 for the policy itself. */
  readonly rule: number;
  /** Names the field and the offending value. */
  readonly message: string;
  readonly effect: L7CompileEffect;
}

export interface L7CompileOptions {
  /** The mesh trust domain (`cluster.local`). */
  readonly trustDomain: string;
  /** MeshConfig trustDomainAliases. */
  readonly trustDomainAliases?: readonly string[];
}

export interface L7CompileResult {
  readonly policies: CompiledL7Policies;
  readonly errors: readonly L7CompileError[];
}

// ---------------------------------------------------------------------------------------------------------------
// String matchers

const EXACT = 0;
const PREFIX = 1;
const SUFFIX = 2;
/** Non-empty (Istio's `*` → regex `.+`). */
const NON_EMPTY = 3;
/** Present, possibly empty (Envoy present_match, for headers and hosts). */
const PRESENT = 4;

interface StrMatcher {
  readonly kind: 0 | 1 | 2 | 3 | 4;
  readonly value: string;
}

function strMatcher(v: string, star: typeof NON_EMPTY | typeof PRESENT = NON_EMPTY): StrMatcher {
  if (v === '*') return { kind: star, value: '' };
  if (v.startsWith('*')) return { kind: SUFFIX, value: v.slice(1) };
  if (v.endsWith('*')) return { kind: PREFIX, value: v.slice(0, -1) };
  return { kind: EXACT, value: v };
}

function strMatches(m: StrMatcher, s: string): boolean {
  switch (m.kind) {
    case EXACT:
      return s === m.value;
    case PREFIX:
      return s.startsWith(m.value);
    case SUFFIX:
      return s.endsWith(m.value);
    case NON_EMPTY:
      return s.length > 0;
    default:
      return true;
  }
}

function anyStr(list: readonly StrMatcher[], s: string | null): boolean {
  if (s === null) return false;
  for (const m of list) if (strMatches(m, s)) return true;
  return false;
}

function anyCidr(list: readonly Cidr[], ip: ParsedIp | null): boolean {
  if (ip === null) return false;
  for (const c of list) if (cidrContains(c, ip)) return true;
  return false;
}

// ---------------------------------------------------------------------------------------------------------------
// Value parsers (throw InvalidValue) and OR-predicate builders

class InvalidValue extends Error {}

function parseIpBlock(v: string): Cidr {
  const c = parseCidr(v.trim());
  if (!c) throw new InvalidValue(`invalid IP address or CIDR "${v}"`);
  return c;
}

function parsePort(v: string): number {
  if (!/^\d{1,5}$/.test(v) || Number(v) > 65535) throw new InvalidValue(`invalid port "${v}"`);
  return Number(v);
}

/** A `{*}`/`{**}` path template as Envoy's uri_template: RegExp built once here. */
const PATH_TEMPLATE_LITERAL = "a-zA-Z0-9\\-._~%!$&'()+,;:@=";

function hasPathTemplate(v: string): boolean {
  return v.includes('{*}') || v.includes('{**}');
}

function parsePathTemplate(v: string): RegExp {
  if (!v.startsWith('/')) throw new InvalidValue(`path template "${v}" must start with "/"`);
  const segments = v.split('/');
  let sawTextGlob = false;
  const out: string[] = [];
  for (const seg of segments) {
    if (seg === '{*}' || seg === '{**}') {
      if (sawTextGlob) throw new InvalidValue(`path template "${v}": {**} must be the last operator`);
      if (seg === '{**}') sawTextGlob = true;
      out.push(seg === '{*}' ? `[${PATH_TEMPLATE_LITERAL}]+` : `[${PATH_TEMPLATE_LITERAL}/]*`);
      continue;
    }
    if (/[*{}]/.test(seg))
      throw new InvalidValue(
        `path template "${v}": "*", "{" and "}" are only allowed as a whole {*} or {**} segment`,
      );
    out.push(seg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  }
  return new RegExp(`^${out.join('/')}$`);
}

/** A plain Istio string, or a compiled path template. */
interface PathMatcher {
  readonly str: StrMatcher | null;
  readonly template: RegExp | null;
}

function parsePath(v: string): PathMatcher {
  return hasPathTemplate(v)
    ? { str: null, template: parsePathTemplate(v) }
    : { str: strMatcher(v), template: null };
}

function anyPath(list: readonly PathMatcher[], path: string): boolean {
  for (const m of list) {
    if (m.str !== null ? strMatches(m.str, path) : m.template!.test(path)) return true;
  }
  return false;
}

interface IssSub {
  readonly iss: StrMatcher;
  readonly sub: StrMatcher;
}

const ANY_NON_EMPTY: StrMatcher = { kind: NON_EMPTY, value: '' };

/** Istio's request principal generator: split at the last `/` (the issuer may be a URL). */
function parseRequestPrincipal(v: string): IssSub {
  const idx = v.lastIndexOf('/');
  const found = idx >= 0;
  const iss = found ? v.slice(0, idx) : v;
  const sub = found ? v.slice(idx + 1) : '';
  if (v === '*') return { iss: ANY_NON_EMPTY, sub: ANY_NON_EMPTY };
  if (v.startsWith('*')) {
    if (found)
      return {
        iss: iss === '*' ? ANY_NON_EMPTY : { kind: SUFFIX, value: iss.slice(1) },
        sub: { kind: EXACT, value: sub },
      };
    return { iss: ANY_NON_EMPTY, sub: { kind: SUFFIX, value: v.slice(1) } };
  }
  if (v.endsWith('*')) {
    if (found)
      return {
        iss: { kind: EXACT, value: iss },
        sub: sub === '*' ? ANY_NON_EMPTY : { kind: PREFIX, value: sub.slice(0, -1) },
      };
    return { iss: { kind: PREFIX, value: v.slice(0, -1) }, sub: ANY_NON_EMPTY };
  }
  return { iss: { kind: EXACT, value: iss }, sub: { kind: EXACT, value: sub } };
}

function anyRequestPrincipal(list: readonly IssSub[], auth: RequestAuthInfo | null): boolean {
  if (auth === null) return false;
  for (const m of list) if (strMatches(m.iss, auth.issuer) && strMatches(m.sub, auth.subject)) return true;
  return false;
}

interface SaMatcher {
  readonly namespace: string;
  readonly name: string;
}

function parseServiceAccount(v: string, policyNamespace: string): SaMatcher {
  const slash = v.indexOf('/');
  const namespace = slash === -1 ? policyNamespace : v.slice(0, slash);
  const name = slash === -1 ? v : v.slice(slash + 1);
  if (!namespace || !name || name.includes('/') || v.includes('*'))
    throw new InvalidValue(`invalid service account "${v}" (want "<namespace>/<name>" or "<name>")`);
  return { namespace, name };
}

/** `[name]` → name; `[a][b]` → [a, b] (Istio's extractNameInBrackets / extractNameInNestedBrackets). */
function bracketNames(rest: string, key: string, nested: boolean): string[] {
  const names: string[] = [];
  let i = 0;
  while (i < rest.length) {
    if (rest[i] !== '[') throw new InvalidValue(`invalid key "${key}": expected "[name]"`);
    const end = rest.indexOf(']', i);
    if (end === -1) throw new InvalidValue(`invalid key "${key}": missing "]"`);
    const name = rest.slice(i + 1, end);
    if (!name || name.includes('[')) throw new InvalidValue(`invalid key "${key}": empty or malformed name`);
    names.push(name);
    i = end + 1;
  }
  if (names.length === 0 || (!nested && names.length > 1))
    throw new InvalidValue(`invalid key "${key}": expected "${nested ? '[a][b]…' : '[name]'}"`);
  return names;
}

function headerValue(headers: L7Headers, name: string): string | null {
  const v = headers[name];
  if (v === undefined) return null;
  if (typeof v === 'string') return v;
  // Envoy matches repeated headers as one value joined with ",".
  return (v as readonly string[]).length === 1 ? (v as readonly string[])[0]! : v.join(',');
}

function claimAt(claims: Readonly<Record<string, unknown>>, path: readonly string[]): unknown {
  let cur: unknown = claims;
  for (const p of path) {
    if (cur === null || typeof cur !== 'object' || Array.isArray(cur)) return undefined;
    if (!Object.hasOwn(cur, p)) return undefined;
    cur = (cur as Record<string, unknown>)[p];
  }
  return cur;
}

/** A string claim matches directly; a list claim when any string element matches (Envoy list_match one_of). */
function claimMatches(list: readonly StrMatcher[], value: unknown): boolean {
  if (typeof value === 'string') return anyStr(list, value);
  if (Array.isArray(value)) {
    for (const el of value) if (typeof el === 'string' && anyStr(list, el)) return true;
  }
  return false;
}

/** Istio's trust-domain rewrite of principals (pilot/pkg/security/trustdomain). */
function rewriteTrustDomain(values: readonly string[], bundle: readonly string[]): string[] {
  const out: string[] = [];
  for (const v of values) {
    const parts = v.split('/');
    // Only `<td>/ns/<ns>/sa/<sa>` with a concrete trust domain is rewritten.
    if (parts.length !== 5 || parts[0] === '*') {
      out.push(v);
      continue;
    }
    const td = parts[0]!;
    if (td !== DEFAULT_TRUST_DOMAIN && !bundle.includes(td)) {
      out.push(v);
      continue;
    }
    for (const t of bundle) {
      const rewritten = td.startsWith('*') && t.endsWith(td.slice(1)) ? v : [t, ...parts.slice(1)].join('/');
      if (!out.includes(rewritten)) out.push(rewritten);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Predicate combinators

const ALWAYS: Pred = () => true;

function and(preds: readonly Pred[]): Pred {
  if (preds.length === 0) return ALWAYS;
  if (preds.length === 1) return preds[0]!;
  if (preds.length === 2) {
    const [a, b] = preds as [Pred, Pred];
    return (ctx) => a(ctx) && b(ctx);
  }
  return (ctx) => {
    for (const p of preds) if (!p(ctx)) return false;
    return true;
  };
}

/** OR over sources/operations; an empty list means "any". */
function orAny(preds: readonly Pred[]): Pred {
  if (preds.length === 0) return ALWAYS;
  if (preds.length === 1) return preds[0]!;
  return (ctx) => {
    for (const p of preds) if (p(ctx)) return true;
    return false;
  };
}

function not(p: Pred): Pred {
  return (ctx) => !p(ctx);
}

// ---------------------------------------------------------------------------------------------------------------
// Rule compilation

/** Thrown inside an ALLOW rule to drop it. */
class DropRule extends Error {}

class RuleCompiler {
  private readonly policy: string;
  private readonly policyNamespace: string;
  private readonly rule: number;
  /** True for ALLOW: any invalid value drops the rule; false for DENY/CUSTOM/AUDIT: widen instead. */
  private readonly strict: boolean;
  private readonly bundle: readonly string[];
  private readonly errors: L7CompileError[];

  constructor(
    policy: string,
    policyNamespace: string,
    rule: number,
    strict: boolean,
    bundle: readonly string[],
    errors: L7CompileError[],
  ) {
    this.policy = policy;
    this.policyNamespace = policyNamespace;
    this.rule = rule;
    this.strict = strict;
    this.bundle = bundle;
    this.errors = errors;
  }

  private fail(message: string, effect: L7CompileEffect): void {
    if (this.strict) {
      this.errors.push({ policy: this.policy, rule: this.rule, message, effect: 'rule-ignored' });
      throw new DropRule(message);
    }
    this.errors.push({ policy: this.policy, rule: this.rule, message, effect });
  }

  /**
   * One field: `values` OR-ed, `notValues` OR-ed and negated, both AND-ed. Appends the predicates to AND into the
   * enclosing source/operation/condition to `out` (none when the field is empty or was dropped).
   */
  field<T>(
    name: string,
    values: readonly string[],
    notValues: readonly string[],
    parse: (v: string) => T,
    build: (items: readonly T[]) => Pred,
    out: Pred[],
  ): void {
    if (values.length > 0) {
      const items: T[] = [];
      let dropped = false;
      for (const v of values) {
        try {
          items.push(parse(v));
        } catch (err) {
          if (!(err instanceof InvalidValue)) throw err;
          this.fail(`${name}: ${err.message}`, 'field-ignored');
          dropped = true;
        }
      }
      if (!dropped) out.push(build(items));
    }
    if (notValues.length > 0) {
      const items: T[] = [];
      for (const v of notValues) {
        try {
          items.push(parse(v));
        } catch (err) {
          if (!(err instanceof InvalidValue)) throw err;
          this.fail(
            `${name.startsWith('when[') ? `${name}.not_values` : `not_${name}`}: ${err.message}`,
            'value-ignored',
          );
        }
      }
      if (items.length > 0) out.push(not(build(items)));
    }
  }

  // --- attributes shared by fields and `when` keys ---

  principals(name: string, values: readonly string[], notValues: readonly string[], out: Pred[]): void {
    this.field(
      name,
      rewriteTrustDomain(values, this.bundle),
      rewriteTrustDomain(notValues, this.bundle),
      (v) => strMatcher(v),
      (list) => (ctx) => anyStr(list, ctx.req.sourcePrincipal),
      out,
    );
  }

  namespaces(name: string, values: readonly string[], notValues: readonly string[], out: Pred[]): void {
    this.field(
      name,
      values,
      notValues,
      (v) => strMatcher(v),
      (list) => (ctx) => anyStr(list, ctx.namespace),
      out,
    );
  }

  ipBlocks(
    name: string,
    values: readonly string[],
    notValues: readonly string[],
    which: 'source' | 'remote' | 'destination',
    out: Pred[],
  ): void {
    const build =
      which === 'source'
        ? (list: readonly Cidr[]): Pred =>
            (ctx) =>
              anyCidr(list, ctx.req.sourceIp)
        : which === 'remote'
          ? (list: readonly Cidr[]): Pred =>
              (ctx) =>
                anyCidr(list, ctx.req.remoteIp ?? ctx.req.sourceIp)
          : (list: readonly Cidr[]): Pred =>
              (ctx) =>
                anyCidr(list, ctx.req.destinationIp);
    this.field(name, values, notValues, parseIpBlock, build, out);
  }

  requestPrincipals(
    name: string,
    values: readonly string[],
    notValues: readonly string[],
    out: Pred[],
  ): void {
    this.field(
      name,
      values,
      notValues,
      parseRequestPrincipal,
      (list) => (ctx) => anyRequestPrincipal(list, ctx.req.requestAuth),
      out,
    );
  }

  ports(name: string, values: readonly string[], notValues: readonly string[], out: Pred[]): void {
    this.field(
      name,
      values,
      notValues,
      parsePort,
      (list) => (ctx) => list.includes(ctx.req.destinationPort),
      out,
    );
  }

  claim(
    name: string,
    path: readonly string[],
    values: readonly string[],
    notValues: readonly string[],
    out: Pred[],
  ) {
    this.field(
      name,
      values,
      notValues,
      (v) => strMatcher(v),
      (list) => (ctx) => {
        const auth = ctx.req.requestAuth;
        return auth !== null && claimMatches(list, claimAt(auth.claims, path));
      },
      out,
    );
  }

  // --- rule parts ---

  source(s: AuthzSource): Pred {
    const parts: Pred[] = [];
    // Istio's order (cheap L4 attributes first is also the cheap order here).
    this.principals('principals', s.principals, s.notPrincipals, parts);
    this.requestPrincipals('request_principals', s.requestPrincipals, s.notRequestPrincipals, parts);
    this.namespaces('namespaces', s.namespaces, s.notNamespaces, parts);
    this.field(
      'service_accounts',
      s.serviceAccounts,
      s.notServiceAccounts,
      (v) => parseServiceAccount(v, this.policyNamespace),
      (list) => (ctx) => {
        const ns = ctx.namespace;
        const sa = ctx.serviceAccount;
        if (ns === null || sa === null) return false;
        for (const m of list) if (m.namespace === ns && m.name === sa) return true;
        return false;
      },
      parts,
    );
    this.ipBlocks('remote_ip_blocks', s.remoteIpBlocks, s.notRemoteIpBlocks, 'remote', parts);
    this.ipBlocks('ip_blocks', s.ipBlocks, s.notIpBlocks, 'source', parts);
    return and(parts);
  }

  operation(o: AuthzOperation): Pred {
    const parts: Pred[] = [];
    this.field(
      'hosts',
      o.hosts,
      o.notHosts,
      (v) => {
        const m = strMatcher(v, PRESENT);
        return { kind: m.kind, value: m.value.toLowerCase() };
      },
      (list) => (ctx) => anyStr(list, ctx.hostLower),
      parts,
    );
    this.field(
      'methods',
      o.methods,
      o.notMethods,
      (v) => strMatcher(v, PRESENT),
      (list) => (ctx) => anyStr(list, ctx.req.method),
      parts,
    );
    this.field('paths', o.paths, o.notPaths, parsePath, (list) => (ctx) => anyPath(list, ctx.path), parts);
    this.ports('ports', o.ports, o.notPorts, parts);
    return and(parts);
  }

  condition(c: AuthzCondition, out: Pred[]): void {
    const key = c.key;
    const name = `when[${key}]`;
    if (c.values.length === 0 && c.notValues.length === 0) {
      this.fail(`${name}: needs values or not_values`, 'condition-ignored');
      return;
    }
    try {
      if (key.startsWith('request.headers')) {
        const [header] = bracketNames(key.slice('request.headers'.length), key, false);
        const lower = header!.toLowerCase();
        this.field(
          name,
          c.values,
          c.notValues,
          (v) => strMatcher(v, PRESENT),
          (list) => (ctx) => anyStr(list, headerValue(ctx.req.headers, lower)),
          out,
        );
        return;
      }
      if (key.startsWith('request.auth.claims')) {
        const path = bracketNames(key.slice('request.auth.claims'.length), key, true);
        this.claim(name, path, c.values, c.notValues, out);
        return;
      }
      if (key.startsWith('experimental.envoy.filters.'))
        throw new InvalidValue(`unsupported key "${key}" (Envoy filter metadata does not exist here)`);
      switch (key) {
        case 'source.ip':
          this.ipBlocks(name, c.values, c.notValues, 'source', out);
          return;
        case 'remote.ip':
          this.ipBlocks(name, c.values, c.notValues, 'remote', out);
          return;
        case 'destination.ip':
          this.ipBlocks(name, c.values, c.notValues, 'destination', out);
          return;
        case 'destination.port':
          this.ports(name, c.values, c.notValues, out);
          return;
        case 'source.namespace':
          this.namespaces(name, c.values, c.notValues, out);
          return;
        case 'source.principal':
          this.principals(name, c.values, c.notValues, out);
          return;
        case 'request.auth.principal':
          this.requestPrincipals(name, c.values, c.notValues, out);
          return;
        case 'request.auth.audiences':
          this.claim(name, ['aud'], c.values, c.notValues, out);
          return;
        case 'request.auth.presenter':
          this.claim(name, ['azp'], c.values, c.notValues, out);
          return;
        case 'connection.sni':
          this.field(
            name,
            c.values,
            c.notValues,
            (v) => strMatcher(v),
            (list) => (ctx) => anyStr(list, ctx.req.sni),
            out,
          );
          return;
        default:
          throw new InvalidValue(`unknown key "${key}"`);
      }
    } catch (err) {
      if (!(err instanceof InvalidValue)) throw err;
      this.fail(`${name}: ${err.message}`, 'condition-ignored');
    }
  }

  compile(r: AuthzRule): Pred {
    const from = r.from.map((s) => this.source(s));
    const to = r.to.map((o) => this.operation(o));
    const when: Pred[] = [];
    for (const c of r.when) this.condition(c, when);
    const parts: Pred[] = [];
    if (from.length > 0) parts.push(orAny(from));
    if (to.length > 0) parts.push(orAny(to));
    parts.push(...when);
    return and(parts);
  }
}

function actionOf(a: AuthzPolicy['action']): CompiledL7Policy['action'] | null {
  switch (a) {
    case AuthzPolicy_Action.ALLOW:
      return 'allow';
    case AuthzPolicy_Action.DENY:
      return 'deny';
    case AuthzPolicy_Action.AUDIT:
      return 'audit';
    case AuthzPolicy_Action.CUSTOM:
      return 'custom';
    default:
      return null;
  }
}

const REASON_BY_ACTION = {
  allow: 'allow-matched',
  deny: 'deny-matched',
  custom: 'custom-matched',
  audit: 'deny-matched',
} as const satisfies Record<CompiledL7Policy['action'], L7DecisionReason>;

function compileOne(p: AuthzPolicy, bundle: readonly string[], errors: L7CompileError[]): CompiledL7Policy {
  const key = `${p.namespace}/${p.name}`;
  let action = actionOf(p.action);
  if (action === null) {
    errors.push({ policy: key, rule: -1, message: `unknown action ${p.action}`, effect: 'enforced-as-deny' });
    action = 'custom';
  } else if (action === 'custom') {
    errors.push({
      policy: key,
      rule: -1,
      message: 'CUSTOM action needs an ext-authz provider, which this proxy does not support',
      effect: 'enforced-as-deny',
    });
  }
  const strict = action === 'allow';
  const rules: CompiledRule[] = [];
  p.rules.forEach((r, index) => {
    const rc = new RuleCompiler(key, p.namespace, index, strict, bundle, errors);
    try {
      rules.push({ index, match: rc.compile(r) });
    } catch (err) {
      if (!(err instanceof DropRule)) throw err;
    }
  });
  const allowed = action === 'allow';
  const reason = REASON_BY_ACTION[action];
  const decisions = rules.map(
    (r): L7Decision =>
      Object.freeze({ allowed, policy: key, rule: r.index, reason, audit: null, dryRun: null }),
  );
  return { key, action, dryRun: p.dryRun, ruleCount: rules.length, rules, decisions };
}

/**
 * Compiles the policies that apply to one destination. Never throws on bad input: what could not be compiled is
 * listed in `errors` and handled fail-closed as described at the top of this file.
 */
export function compileL7Policies(policies: readonly AuthzPolicy[], opts: L7CompileOptions): L7CompileResult {
  const bundle = [opts.trustDomain, ...(opts.trustDomainAliases ?? [])];
  const errors: L7CompileError[] = [];
  const deny: CompiledL7Policy[] = [];
  const custom: CompiledL7Policy[] = [];
  const allow: CompiledL7Policy[] = [];
  const audit: CompiledL7Policy[] = [];
  const dryRunDeny: CompiledL7Policy[] = [];
  const dryRunAllow: CompiledL7Policy[] = [];
  for (const p of policies) {
    const c = compileOne(p, bundle, errors);
    if (c.action === 'audit') audit.push(c);
    else if (c.dryRun) (c.action === 'allow' ? dryRunAllow : dryRunDeny).push(c);
    else if (c.action === 'allow') allow.push(c);
    else (c.action === 'deny' ? deny : custom).push(c);
  }
  return {
    policies: Object.freeze({ deny: [...deny, ...custom], allow, audit, dryRunDeny, dryRunAllow }),
    errors,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Evaluation

/** Index into `p.rules` of the first matching rule, or -1. */
function firstMatch(p: CompiledL7Policy, ctx: EvalContext): number {
  const rules = p.rules;
  for (let i = 0; i < rules.length; i++) if (rules[i]!.match(ctx)) return i;
  return -1;
}

const NO_POLICIES: L7Decision = Object.freeze({
  allowed: true,
  policy: null,
  rule: -1,
  reason: 'no-policies',
  audit: null,
  dryRun: null,
});
const NO_ALLOW_POLICIES: L7Decision = Object.freeze({ ...NO_POLICIES, reason: 'no-allow-policies' });
const NO_ALLOW_MATCHED: L7Decision = Object.freeze({
  ...NO_POLICIES,
  allowed: false,
  reason: 'no-allow-matched',
});

function dryRunOf(set: CompiledL7Policies, ctx: EvalContext): L7DryRunResult | null {
  if (set.dryRunDeny.length === 0 && set.dryRunAllow.length === 0) return null;
  let denyPolicy: string | null = null;
  for (const p of set.dryRunDeny) {
    if (firstMatch(p, ctx) !== -1) {
      denyPolicy = p.key;
      break;
    }
  }
  let allowPolicy: string | null = null;
  for (const p of set.dryRunAllow) {
    if (firstMatch(p, ctx) !== -1) {
      allowPolicy = p.key;
      break;
    }
  }
  const allowResult = set.dryRunAllow.length === 0 ? null : allowPolicy !== null ? 'allowed' : 'denied';
  return { denyPolicy, allowResult, allowPolicy };
}

function decide(base: L7Decision, audit: string | null, dryRun: L7DryRunResult | null): L7Decision {
  if (audit === null && dryRun === null) return base;
  return { ...base, audit, dryRun };
}

/** Decides one request. Allocates nothing beyond a small scratch object unless AUDIT or dry-run policies apply. */
export function evaluateL7(set: CompiledL7Policies, req: L7Request): L7Decision {
  const ctx = new EvalContext(req);
  const dryRun = dryRunOf(set, ctx);
  let audit: string | null = null;
  for (const p of set.audit) {
    if (firstMatch(p, ctx) !== -1) {
      audit = p.key;
      break;
    }
  }
  for (const p of set.deny) {
    const i = firstMatch(p, ctx);
    if (i !== -1) return decide(p.decisions[i]!, audit, dryRun);
  }
  if (set.allow.length === 0)
    return decide(set.deny.length === 0 ? NO_POLICIES : NO_ALLOW_POLICIES, audit, dryRun);
  for (const p of set.allow) {
    const i = firstMatch(p, ctx);
    if (i !== -1) return decide(p.decisions[i]!, audit, dryRun);
  }
  return decide(NO_ALLOW_MATCHED, audit, dryRun);
}

/** An empty table: every request is allowed. */
export const EMPTY_L7_POLICIES: CompiledL7Policies = compileL7Policies([], {
  trustDomain: DEFAULT_TRUST_DOMAIN,
}).policies;
