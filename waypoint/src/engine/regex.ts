/**
 * Linear-time regular expressions with RE2 syntax and full-match semantics (Envoy's `safe_regex`).
 *
 * Why our own matcher: route regexes come from users (VirtualService `regex`, HTTPRoute `RegularExpression`),
 * and V8's backtracking engine runs `(a+)+$` on `"aaaa…!"` in exponential time — a single request could stall
 * the waypoint's event loop. Node has no RE2 binding without a native addon, and V8's linear engine needs
 * process flags. So patterns compile to a Thompson NFA simulated Pike-VM style (every state advanced in
 * lock-step, each state at most once per input character): time is O(input length × program size), with no
 * backtracking whatever the pattern. Program size is capped (MAX_PROGRAM_SIZE) and so is the repeat count
 * (RE2's 1000), so every match is bounded.
 *
 * Fast paths, chosen at compile time, for the shapes route configs use most: a pure literal (`foo`), `.*lit.*`,
 * `lit.*` and `.*lit` become indexOf/startsWith/endsWith checks.
 *
 * Supported (RE2): literals and escapes (\t \n \r \f \v \a \xHH \x{H…} and escaped punctuation), `.`, classes
 * `[a-z]`, `[^…]`, `[[:alpha:]]`-style POSIX classes, \d \D \s \S \w \W, anchors ^ $ \A \z, \b \B, groups
 * ( ), (?: ), (?P<n> ), (?<n> ), flags (?i) (?s) and (?i: …), alternation, * + ? {n} {n,} {n,m} and their
 * lazy forms (the same thing under full-match semantics).
 * Rejected at build time like RE2 rejects them: backreferences, lookaround, possessive quantifiers, \p{…}
 * (Unicode classes: not implemented), (?m) and (?U).
 */

/** RE2's limit on {n,m}. */
const MAX_REPEAT = 1000;
/** Instructions per pattern: bounds the per-character work (Envoy's own default cap is RE2 program size 100). */
const MAX_PROGRAM_SIZE = 2000;
/** Nesting depth of groups, so a hostile pattern cannot exhaust the compiler's stack. */
const MAX_NESTING = 100;
const MAX_CODE_POINT = 0x10ffff;

export class RegexSyntaxError extends Error {
  override readonly name = 'RegexSyntaxError';
}

/** A compiled pattern: `test` is a full match of the whole input. */
export interface SafeRegex {
  readonly source: string;
  test(input: string): boolean;
}

/** Why `pattern` would be rejected, or null when it compiles. */
export function checkRegex(pattern: string): string | null {
  try {
    compileSafeRegex(pattern);
    return null;
  } catch (err) {
    return err instanceof RegexSyntaxError ? err.message : String(err);
  }
}

/** Compiles `pattern` (RE2 syntax) for full matching. Throws RegexSyntaxError. */
export function compileSafeRegex(pattern: string, ignoreCase = false): SafeRegex {
  const parser = new Parser(pattern, ignoreCase);
  const ast = parser.parseAll();
  const stripped = stripOuterAnchors(ast);
  const fast = fastPath(pattern, stripped);
  if (fast !== null) return fast;
  const prog = new Compiler().compile(stripped);
  const nfa = new NfaRegex(pattern, prog);
  return prog.op.includes(OP_ASSERT) ? nfa : new DfaRegex(pattern, prog, nfa);
}

/**
 * Under full-match semantics a leading `^`/`\A` and a trailing `$`/`\z` always hold; dropping them leaves
 * most patterns assertion-free, which the lazy DFA needs.
 */
function stripOuterAnchors(ast: Node): Node {
  if (ast.t !== 'cat') return ast;
  let from = 0;
  let to = ast.items.length;
  const first = ast.items[0] as Node;
  if (first.t === 'assert' && first.kind === A_BEGIN) from = 1;
  const last = ast.items[to - 1] as Node;
  if (to - 1 >= from && last.t === 'assert' && last.kind === A_END) to--;
  if (from === 0 && to === ast.items.length) return ast;
  return { t: 'cat', items: ast.items.slice(from, to) };
}

// ---------------------------------------------------------------------------------------------------------
// Character sets: sorted, merged, inclusive [lo, hi] code-point ranges.

type Ranges = number[];

function normalize(r: Ranges): Ranges {
  const pairs: [number, number][] = [];
  for (let i = 0; i < r.length; i += 2) pairs.push([r[i] as number, r[i + 1] as number]);
  pairs.sort((a, b) => a[0] - b[0]);
  const out: Ranges = [];
  for (const [lo, hi] of pairs) {
    const n = out.length;
    if (n > 0 && lo <= (out[n - 1] as number) + 1) {
      if (hi > (out[n - 1] as number)) out[n - 1] = hi;
    } else {
      out.push(lo, hi);
    }
  }
  return out;
}

function complement(r: Ranges): Ranges {
  const n = normalize(r);
  const out: Ranges = [];
  let next = 0;
  for (let i = 0; i < n.length; i += 2) {
    const lo = n[i] as number;
    if (lo > next) out.push(next, lo - 1);
    next = (n[i + 1] as number) + 1;
  }
  if (next <= MAX_CODE_POINT) out.push(next, MAX_CODE_POINT);
  return out;
}

/** Adds the other case of every letter in `r` (simple case folding via String methods). */
function foldCase(r: Ranges): Ranges {
  const out = r.slice();
  for (let i = 0; i < r.length; i += 2) {
    const lo = r[i] as number;
    const hi = Math.min(r[i + 1] as number, 0x1ffff);
    // Large ranges (e.g. negated classes) already contain most letters; fold only what is cheap to scan.
    if (hi - lo > 0x3000) continue;
    for (let c = lo; c <= hi; c++) {
      const s = String.fromCodePoint(c);
      const l = s.toLowerCase();
      const u = s.toUpperCase();
      if (l.length === s.length) {
        const lc = l.codePointAt(0) as number;
        if (lc !== c) out.push(lc, lc);
      }
      if (u.length === s.length) {
        const uc = u.codePointAt(0) as number;
        if (uc !== c) out.push(uc, uc);
      }
    }
  }
  return normalize(out);
}

const DIGIT: Ranges = [0x30, 0x39];
const WORD: Ranges = normalize([0x30, 0x39, 0x41, 0x5a, 0x5f, 0x5f, 0x61, 0x7a]);
/** RE2 \s: [\t\n\f\r ] (no \v). */
const SPACE: Ranges = normalize([0x09, 0x0a, 0x0c, 0x0d, 0x20, 0x20]);

const POSIX: Readonly<Record<string, Ranges>> = {
  alnum: normalize([0x30, 0x39, 0x41, 0x5a, 0x61, 0x7a]),
  alpha: normalize([0x41, 0x5a, 0x61, 0x7a]),
  ascii: [0, 0x7f],
  blank: normalize([0x09, 0x09, 0x20, 0x20]),
  cntrl: normalize([0, 0x1f, 0x7f, 0x7f]),
  digit: DIGIT,
  graph: [0x21, 0x7e],
  lower: [0x61, 0x7a],
  print: [0x20, 0x7e],
  punct: normalize([0x21, 0x2f, 0x3a, 0x40, 0x5b, 0x60, 0x7b, 0x7e]),
  space: normalize([0x09, 0x0d, 0x20, 0x20]),
  upper: [0x41, 0x5a],
  word: WORD,
  xdigit: normalize([0x30, 0x39, 0x41, 0x46, 0x61, 0x66]),
};

/** Matching form of a set: an ASCII bitmap plus ranges for the rest. */
class CharMatcher {
  readonly ascii = new Uint32Array(4);
  readonly high: Int32Array;
  constructor(r: Ranges) {
    const high: number[] = [];
    for (let i = 0; i < r.length; i += 2) {
      const lo = r[i] as number;
      const hi = r[i + 1] as number;
      for (let c = lo; c <= hi && c < 128; c++)
        this.ascii[c >>> 5] = (this.ascii[c >>> 5] as number) | (1 << (c & 31));
      if (hi >= 128) high.push(Math.max(lo, 128), hi);
    }
    this.high = Int32Array.from(high);
  }
  has(c: number): boolean {
    if (c < 128) return ((this.ascii[c >>> 5] as number) & (1 << (c & 31))) !== 0;
    const h = this.high;
    for (let i = 0; i < h.length; i += 2) {
      if (c < (h[i] as number)) return false;
      if (c <= (h[i + 1] as number)) return true;
    }
    return false;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Parser → AST.

const A_BEGIN = 0; // ^ \A
const A_END = 1; // $ \z
const A_WORD = 2; // \b
const A_NOT_WORD = 3; // \B

type Node =
  | { readonly t: 'set'; readonly r: Ranges }
  | { readonly t: 'cat'; readonly items: Node[] }
  | { readonly t: 'alt'; readonly items: Node[] }
  | { readonly t: 'rep'; readonly node: Node; readonly min: number; readonly max: number }
  | { readonly t: 'assert'; readonly kind: number }
  | { readonly t: 'empty' };

interface Flags {
  i: boolean;
  s: boolean;
}

class Parser {
  private pos = 0;
  private depth = 0;
  private readonly src: string;
  private flags: Flags;

  constructor(src: string, ignoreCase: boolean) {
    this.src = src;
    this.flags = { i: ignoreCase, s: false };
  }

  parseAll(): Node {
    const node = this.parseAlt();
    if (this.pos < this.src.length) this.fail(`unexpected ')' at offset ${this.pos}`);
    return node;
  }

  private fail(msg: string): never {
    throw new RegexSyntaxError(`invalid regex ${JSON.stringify(this.src)}: ${msg}`);
  }

  private parseAlt(): Node {
    const items: Node[] = [this.parseCat()];
    while (this.src[this.pos] === '|') {
      this.pos++;
      items.push(this.parseCat());
    }
    return items.length === 1 ? (items[0] as Node) : { t: 'alt', items };
  }

  private parseCat(): Node {
    const items: Node[] = [];
    const saved = { ...this.flags };
    while (this.pos < this.src.length) {
      const ch = this.src[this.pos];
      if (ch === '|' || ch === ')') break;
      const atom = this.parseAtom();
      if (atom === null) continue; // a flag group like (?i)
      items.push(this.parseQuantifiers(atom));
    }
    // (?i) inside a group lasts until the group's end; restoring per alternative is close enough for
    // route patterns and never widens a match beyond what the flags say.
    if (this.depth > 0) this.flags = saved;
    if (items.length === 0) return { t: 'empty' };
    return items.length === 1 ? (items[0] as Node) : { t: 'cat', items };
  }

  private parseQuantifiers(atom: Node): Node {
    let node = atom;
    let quantified = false;
    for (;;) {
      const ch = this.src[this.pos];
      let min: number;
      let max: number;
      if (ch === '*') {
        min = 0;
        max = -1;
        this.pos++;
      } else if (ch === '+') {
        min = 1;
        max = -1;
        this.pos++;
      } else if (ch === '?') {
        min = 0;
        max = 1;
        this.pos++;
      } else if (ch === '{') {
        const rep = this.tryRepeat();
        if (rep === null) return node;
        [min, max] = rep;
      } else {
        return node;
      }
      if (quantified) this.fail(`bad repetition operator at offset ${this.pos - 1}`);
      quantified = true;
      if (this.src[this.pos] === '?')
        this.pos++; // lazy: same result for a full match
      else if (this.src[this.pos] === '+') this.fail('possessive quantifiers are not RE2 syntax');
      if (atom.t === 'empty') this.fail(`missing argument to repetition operator at offset ${this.pos - 1}`);
      node = { t: 'rep', node, min, max };
    }
  }

  /** `{n}`, `{n,}`, `{n,m}`; anything else is a literal `{` (RE2). */
  private tryRepeat(): [number, number] | null {
    const m = /^\{(\d+)(,(\d*))?\}/.exec(this.src.slice(this.pos, this.pos + 16));
    if (m === null) return null;
    const min = Number(m[1]);
    const max = m[2] === undefined ? min : m[3] === '' ? -1 : Number(m[3]);
    if (min > MAX_REPEAT || max > MAX_REPEAT || (max !== -1 && max < min)) {
      this.fail(`bad repetition count ${m[0]} (at most ${MAX_REPEAT})`);
    }
    this.pos += m[0].length;
    return [min, max];
  }

  private lit(c: number): Node {
    const r: Ranges = [c, c];
    return { t: 'set', r: this.flags.i ? foldCase(r) : r };
  }

  private set(r: Ranges): Node {
    return { t: 'set', r: this.flags.i ? foldCase(r) : r };
  }

  private parseAtom(): Node | null {
    const src = this.src;
    const ch = src[this.pos] as string;
    switch (ch) {
      case '(':
        return this.parseGroup();
      case '[':
        return this.parseClass();
      case '.':
        this.pos++;
        return { t: 'set', r: this.flags.s ? [0, MAX_CODE_POINT] : complement([0x0a, 0x0a]) };
      case '^':
        this.pos++;
        return { t: 'assert', kind: A_BEGIN };
      case '$':
        this.pos++;
        return { t: 'assert', kind: A_END };
      case '\\':
        return this.parseEscape(false) as Node;
      case '*':
      case '+':
      case '?':
        return this.fail(`missing argument to repetition operator at offset ${this.pos}`);
      default: {
        const cp = src.codePointAt(this.pos) as number;
        this.pos += cp > 0xffff ? 2 : 1;
        return this.lit(cp);
      }
    }
  }

  private parseGroup(): Node | null {
    const src = this.src;
    this.pos++; // (
    if (++this.depth > MAX_NESTING) this.fail(`groups nested deeper than ${MAX_NESTING}`);
    const saved = { ...this.flags };
    if (src[this.pos] === '?') {
      const rest = src.slice(this.pos + 1, this.pos + 3);
      if (rest.startsWith('=') || rest.startsWith('!') || rest === '<=' || rest === '<!') {
        this.fail('lookaround assertions are not supported (not RE2 syntax)');
      }
      if (rest.startsWith('P<') || rest.startsWith('<')) {
        const close = src.indexOf('>', this.pos);
        if (close === -1) this.fail('unterminated group name');
        this.pos = close + 1;
      } else {
        // Flags: (?i) (?s) (?is) (?-i) or (?i: … )
        let j = this.pos + 1;
        let negate = false;
        const f: Flags = { ...this.flags };
        for (; j < src.length; j++) {
          const c = src[j];
          if (c === 'i') f.i = !negate;
          else if (c === 's') f.s = !negate;
          else if (c === '-' && !negate) negate = true;
          else if (c === ':' || c === ')') break;
          else this.fail(`unsupported group flag ${JSON.stringify(c ?? '')} (supported: i, s)`);
        }
        if (j >= src.length) this.fail('missing closing )');
        this.pos = j + 1;
        if (src[j] === ')') {
          this.depth--;
          this.flags = f; // applies to the rest of the enclosing group
          return null;
        }
        this.flags = f;
      }
    }
    const node = this.parseAlt();
    if (src[this.pos] !== ')') this.fail('missing closing )');
    this.pos++;
    this.depth--;
    this.flags = saved;
    return node;
  }

  /** After a backslash. In a class, assertions are errors and the result is ranges. */
  private parseEscape(inClass: boolean): Node | Ranges {
    const src = this.src;
    this.pos++; // backslash
    if (this.pos >= src.length) this.fail('trailing backslash');
    const c = src[this.pos] as string;
    this.pos++;
    const asNode = (r: Ranges): Node | Ranges => (inClass ? r : this.set(r));
    switch (c) {
      case 'd':
        return asNode(DIGIT);
      case 'D':
        return asNode(complement(DIGIT));
      case 'w':
        return asNode(WORD);
      case 'W':
        return asNode(complement(WORD));
      case 's':
        return asNode(SPACE);
      case 'S':
        return asNode(complement(SPACE));
      case 't':
        return this.escLit(9, inClass);
      case 'n':
        return this.escLit(10, inClass);
      case 'r':
        return this.escLit(13, inClass);
      case 'f':
        return this.escLit(12, inClass);
      case 'v':
        return this.escLit(11, inClass);
      case 'a':
        return this.escLit(7, inClass);
      case 'x': {
        let hex: string;
        if (src[this.pos] === '{') {
          const close = src.indexOf('}', this.pos);
          if (close === -1) this.fail('unterminated \\x{');
          hex = src.slice(this.pos + 1, close);
          this.pos = close + 1;
        } else {
          hex = src.slice(this.pos, this.pos + 2);
          this.pos += 2;
        }
        if (!/^[0-9a-fA-F]{1,6}$/.test(hex) || Number.parseInt(hex, 16) > MAX_CODE_POINT) {
          this.fail(`bad \\x escape ${JSON.stringify(hex)}`);
        }
        return this.escLit(Number.parseInt(hex, 16), inClass);
      }
      case 'b':
      case 'B':
      case 'A':
      case 'z':
        if (inClass) this.fail(`\\${c} is not allowed in a character class`);
        return {
          t: 'assert',
          kind: c === 'b' ? A_WORD : c === 'B' ? A_NOT_WORD : c === 'A' ? A_BEGIN : A_END,
        };
      case 'p':
      case 'P':
        return this.fail('Unicode classes \\p{…} are not supported');
      case 'Q':
        return this.fail('\\Q…\\E is not supported');
      default:
        if (/[0-9]/.test(c)) this.fail(`backreferences and octal escapes (\\${c}) are not supported`);
        if (/[A-Za-z]/.test(c)) this.fail(`invalid escape \\${c}`);
        return this.escLit(c.codePointAt(0) as number, inClass);
    }
  }

  private escLit(cp: number, inClass: boolean): Node | Ranges {
    return inClass ? [cp, cp] : this.lit(cp);
  }

  private parseClass(): Node {
    const src = this.src;
    this.pos++; // [
    let negate = false;
    if (src[this.pos] === '^') {
      negate = true;
      this.pos++;
    }
    const r: Ranges = [];
    let first = true;
    for (;;) {
      if (this.pos >= src.length) this.fail('missing closing ]');
      const ch = src[this.pos];
      if (ch === ']' && !first) {
        this.pos++;
        break;
      }
      first = false;
      if (ch === '[' && src[this.pos + 1] === ':') {
        const close = src.indexOf(':]', this.pos + 2);
        if (close !== -1) {
          let name = src.slice(this.pos + 2, close);
          const neg = name.startsWith('^');
          if (neg) name = name.slice(1);
          const cls = POSIX[name];
          if (cls === undefined) this.fail(`unknown POSIX class [:${name}:]`);
          for (const v of neg ? complement(cls) : cls) r.push(v);
          this.pos = close + 2;
          continue;
        }
      }
      const lo = this.classChar();
      if (typeof lo !== 'number') {
        for (const v of lo) r.push(v);
        continue;
      }
      if (src[this.pos] === '-' && src[this.pos + 1] !== ']' && this.pos + 1 < src.length) {
        this.pos++;
        const hi = this.classChar();
        if (typeof hi !== 'number') this.fail('bad character class range');
        if (hi < lo)
          this.fail(`bad character class range ${String.fromCodePoint(lo)}-${String.fromCodePoint(hi)}`);
        r.push(lo, hi);
      } else {
        r.push(lo, lo);
      }
    }
    let set = normalize(r);
    if (this.flags.i) set = foldCase(set);
    if (negate) set = complement(set);
    return { t: 'set', r: set };
  }

  /** One class member: a code point or (for \d-style escapes) ranges. */
  private classChar(): number | Ranges {
    const src = this.src;
    if (src[this.pos] === '\\') {
      const r = this.parseEscape(true) as Ranges;
      return r.length === 2 && r[0] === r[1] ? (r[0] as number) : r;
    }
    const cp = src.codePointAt(this.pos) as number;
    this.pos += cp > 0xffff ? 2 : 1;
    return cp;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Fast paths for literal-based shapes.

/** The literal a node spells, or null (case-sensitive single code points only). */
function literalOf(n: Node): string | null {
  if (n.t === 'set')
    return n.r.length === 2 && n.r[0] === n.r[1] ? String.fromCodePoint(n.r[0] as number) : null;
  if (n.t === 'cat') {
    let s = '';
    for (const it of n.items) {
      const l = literalOf(it);
      if (l === null) return null;
      s += l;
    }
    return s;
  }
  return null;
}

/** `.*` without the s flag: any run of characters but newline. */
function isDotStar(n: Node): boolean {
  if (n.t !== 'rep' || n.min !== 0 || n.max !== -1 || n.node.t !== 'set') return false;
  const r = n.node.r;
  return r.length === 4 && r[0] === 0 && r[1] === 9 && r[2] === 11 && r[3] === MAX_CODE_POINT;
}

class FastRegex implements SafeRegex {
  readonly source: string;
  private readonly kind: 0 | 1 | 2 | 3; // exact, contains, prefix, suffix
  private readonly lit: string;
  constructor(source: string, kind: 0 | 1 | 2 | 3, lit: string) {
    this.source = source;
    this.kind = kind;
    this.lit = lit;
  }
  test(input: string): boolean {
    switch (this.kind) {
      case 0:
        return input === this.lit;
      case 1:
        return input.indexOf('\n') === -1 && input.includes(this.lit);
      case 2:
        return input.startsWith(this.lit) && input.indexOf('\n', this.lit.length) === -1;
      default:
        return input.endsWith(this.lit) && input.lastIndexOf('\n', input.length - this.lit.length - 1) === -1;
    }
  }
}

function fastPath(source: string, ast: Node): SafeRegex | null {
  const whole = literalOf(ast);
  if (whole !== null) return new FastRegex(source, 0, whole);
  if (ast.t !== 'cat') return null;
  const items = ast.items;
  const n = items.length;
  if (n < 2) return null;
  const head = isDotStar(items[0] as Node);
  const tail = isDotStar(items[n - 1] as Node);
  const mid = (from: number, to: number): string | null =>
    to - from === 1 ? literalOf(items[from] as Node) : literalOf({ t: 'cat', items: items.slice(from, to) });
  if (head && tail && n >= 3) {
    const lit = mid(1, n - 1);
    if (lit !== null) return new FastRegex(source, 1, lit);
  }
  if (!head && tail) {
    const lit = mid(0, n - 1);
    if (lit !== null) return new FastRegex(source, 2, lit);
  }
  if (head && !tail) {
    const lit = mid(1, n);
    if (lit !== null) return new FastRegex(source, 3, lit);
  }
  return null;
}

// ---------------------------------------------------------------------------------------------------------
// Thompson NFA program and Pike-VM-style simulation.

const OP_CHAR = 0;
const OP_SPLIT = 1;
const OP_JMP = 2;
const OP_ASSERT = 3;
const OP_MATCH = 4;

interface Program {
  readonly op: Uint8Array;
  readonly x: Int32Array;
  readonly y: Int32Array;
  readonly sets: readonly CharMatcher[];
  readonly size: number;
}

class Compiler {
  private op: number[] = [];
  private x: number[] = [];
  private y: number[] = [];
  private sets: CharMatcher[] = [];

  compile(ast: Node): Program {
    this.emit(ast);
    this.push(OP_MATCH, 0, 0);
    const size = this.op.length;
    return {
      op: Uint8Array.from(this.op),
      x: Int32Array.from(this.x),
      y: Int32Array.from(this.y),
      sets: this.sets,
      size,
    };
  }

  private push(op: number, x: number, y: number): number {
    if (this.op.length >= MAX_PROGRAM_SIZE) {
      throw new RegexSyntaxError(
        `regex too large: more than ${MAX_PROGRAM_SIZE} instructions after expansion`,
      );
    }
    this.op.push(op);
    this.x.push(x);
    this.y.push(y);
    return this.op.length - 1;
  }

  private emit(n: Node): void {
    switch (n.t) {
      case 'empty':
        return;
      case 'set': {
        this.sets.push(new CharMatcher(n.r));
        const pc = this.op.length;
        this.push(OP_CHAR, pc + 1, this.sets.length - 1);
        return;
      }
      case 'assert': {
        const pc = this.op.length;
        this.push(OP_ASSERT, pc + 1, n.kind);
        return;
      }
      case 'cat':
        for (const it of n.items) this.emit(it);
        return;
      case 'alt': {
        // SPLIT L1, next; L1: a; JMP end; next: SPLIT L2, … ; last alternative without SPLIT.
        const jumps: number[] = [];
        for (let i = 0; i < n.items.length; i++) {
          const last = i === n.items.length - 1;
          let split = -1;
          if (!last) split = this.push(OP_SPLIT, 0, 0);
          if (split !== -1) this.x[split] = this.op.length;
          this.emit(n.items[i] as Node);
          if (!last) {
            jumps.push(this.push(OP_JMP, 0, 0));
            this.y[split] = this.op.length;
          }
        }
        for (const j of jumps) this.x[j] = this.op.length;
        return;
      }
      case 'rep': {
        for (let i = 0; i < n.min; i++) this.emit(n.node);
        if (n.max === -1) {
          // L: SPLIT body, end; body; JMP L; end:
          const split = this.push(OP_SPLIT, 0, 0);
          this.x[split] = this.op.length;
          this.emit(n.node);
          this.push(OP_JMP, split, 0);
          this.y[split] = this.op.length;
          return;
        }
        const splits: number[] = [];
        for (let i = n.min; i < n.max; i++) {
          const split = this.push(OP_SPLIT, 0, 0);
          this.x[split] = this.op.length;
          splits.push(split);
          this.emit(n.node);
        }
        for (const s of splits) this.y[s] = this.op.length;
        return;
      }
    }
  }
}

function isWordChar(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x5f;
}

class NfaRegex implements SafeRegex {
  readonly source: string;
  private readonly p: Program;
  // Scratch state reused by every call (matching is synchronous, so one set per regex suffices).
  private cur: Int32Array;
  private next: Int32Array;
  private readonly mark: Uint32Array;
  private readonly stack: Int32Array;
  private gen = 0;

  constructor(source: string, p: Program) {
    this.source = source;
    this.p = p;
    this.cur = new Int32Array(p.size);
    this.next = new Int32Array(p.size);
    this.mark = new Uint32Array(p.size);
    this.stack = new Int32Array(p.size);
  }

  /** Follows SPLIT/JMP/ASSERT from `pc` and appends the CHAR/MATCH states reached to `list`. */
  private add(
    list: Int32Array,
    len: number,
    start: number,
    pos: number,
    n: number,
    prev: number,
    cur: number,
  ): number {
    const { op, x, y } = this.p;
    const mark = this.mark;
    const stack = this.stack;
    const gen = this.gen;
    if (mark[start] === gen) return len;
    mark[start] = gen;
    let sp = 0;
    stack[sp++] = start;
    while (sp > 0) {
      const pc = stack[--sp] as number;
      switch (op[pc]) {
        case OP_JMP: {
          const t = x[pc] as number;
          if (mark[t] !== gen) {
            mark[t] = gen;
            stack[sp++] = t;
          }
          break;
        }
        case OP_SPLIT: {
          const b = y[pc] as number;
          if (mark[b] !== gen) {
            mark[b] = gen;
            stack[sp++] = b;
          }
          const a = x[pc] as number;
          if (mark[a] !== gen) {
            mark[a] = gen;
            stack[sp++] = a;
          }
          break;
        }
        case OP_ASSERT: {
          const kind = y[pc] as number;
          let ok: boolean;
          if (kind === A_BEGIN) ok = pos === 0;
          else if (kind === A_END) ok = pos === n;
          else {
            const boundary = (prev >= 0 && isWordChar(prev)) !== (cur >= 0 && isWordChar(cur));
            ok = kind === A_WORD ? boundary : !boundary;
          }
          const t = x[pc] as number;
          if (ok && mark[t] !== gen) {
            mark[t] = gen;
            stack[sp++] = t;
          }
          break;
        }
        default:
          list[len++] = pc;
      }
    }
    return len;
  }

  test(input: string): boolean {
    const { op, x, y, sets } = this.p;
    const n = input.length;
    let cur = this.cur;
    let next = this.next;
    this.bump();
    let c = n > 0 ? (input.codePointAt(0) as number) : -1;
    let curLen = this.add(cur, 0, 0, 0, n, -1, c);
    let i = 0;
    while (i < n) {
      if (curLen === 0) return false;
      const width = c > 0xffff ? 2 : 1;
      const j = i + width;
      const after = j < n ? (input.codePointAt(j) as number) : -1;
      this.bump();
      let nextLen = 0;
      for (let k = 0; k < curLen; k++) {
        const pc = cur[k] as number;
        if (op[pc] === OP_CHAR && (sets[y[pc] as number] as CharMatcher).has(c)) {
          nextLen = this.add(next, nextLen, x[pc] as number, j, n, c, after);
        }
      }
      const t = cur;
      cur = next;
      next = t;
      curLen = nextLen;
      c = after;
      i = j;
    }
    for (let k = 0; k < curLen; k++) if (op[cur[k] as number] === OP_MATCH) return true;
    return false;
  }

  private bump(): void {
    this.gen++;
    if (this.gen === 0xffffffff) {
      this.mark.fill(0);
      this.gen = 1;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Lazy DFA (RE2's approach): DFA states are sets of NFA states, built on first use and cached, so a match
// costs one table lookup per ASCII character once warm. Only for programs without assertions (their closure
// would depend on the position). The cache is bounded; past the bound a match falls back to the NFA
// simulation, so memory stays bounded whatever the pattern and input.

/** DFA states cached per regex (0.5 KB of table each). Typical route patterns need fewer than 20. */
const MAX_DFA_STATES = 128;
const DFA_UNKNOWN = -1;
/** State 0 is the empty set: no match possible any more. */
const DFA_DEAD = 0;

class DfaRegex implements SafeRegex {
  readonly source: string;
  private readonly p: Program;
  private readonly fallback: NfaRegex;
  /** trans[state × 128 + ascii code] = next state, or DFA_UNKNOWN. */
  private trans: Int32Array;
  private matchFlags: Uint8Array;
  private readonly sets: Int32Array[] = [];
  /** Non-ASCII transitions per state, computed on demand. */
  private readonly other: (Map<number, number> | null)[] = [];
  private readonly index = new Map<string, number>();
  private readonly start: number;
  private readonly mark: Uint32Array;
  private readonly stack: Int32Array;
  private readonly scratch: Int32Array;
  private gen = 0;
  private full = false;

  constructor(source: string, p: Program, fallback: NfaRegex) {
    this.source = source;
    this.p = p;
    this.fallback = fallback;
    this.mark = new Uint32Array(p.size);
    this.stack = new Int32Array(p.size);
    this.scratch = new Int32Array(p.size);
    this.trans = new Int32Array(8 * 128).fill(DFA_UNKNOWN);
    this.matchFlags = new Uint8Array(8);
    this.intern(0); // DFA_DEAD
    this.gen++;
    this.start = this.intern(this.closure(0, 0));
  }

  test(input: string): boolean {
    if (this.full) return this.fallback.test(input);
    const trans = this.trans;
    let s = this.start;
    const n = input.length;
    for (let i = 0; i < n; i++) {
      let c = input.charCodeAt(i);
      let next: number;
      if (c < 128) {
        next = trans[(s << 7) | c] as number;
        if (next === DFA_UNKNOWN) return this.slowTest(input);
      } else {
        if (c >= 0xd800 && c <= 0xdbff && i + 1 < n) {
          const lo = input.charCodeAt(i + 1);
          if (lo >= 0xdc00 && lo <= 0xdfff) {
            c = ((c - 0xd800) << 10) + (lo - 0xdc00) + 0x10000;
            i++;
          }
        }
        const cached = this.other[s]?.get(c);
        if (cached === undefined) return this.slowTest(input);
        next = cached;
      }
      if (next === DFA_DEAD) return false;
      s = next;
    }
    return this.matchFlags[s] === 1;
  }

  /** The same walk, filling the cache as it goes (kept apart so test() stays small and monomorphic). */
  private slowTest(input: string): boolean {
    let s = this.start;
    const n = input.length;
    for (let i = 0; i < n; i++) {
      let c = input.charCodeAt(i);
      if (c >= 0xd800 && c <= 0xdbff && i + 1 < n) {
        const lo = input.charCodeAt(i + 1);
        if (lo >= 0xdc00 && lo <= 0xdfff) {
          c = ((c - 0xd800) << 10) + (lo - 0xdc00) + 0x10000;
          i++;
        }
      }
      let next: number;
      if (c < 128) {
        next = this.trans[(s << 7) | c] as number;
        if (next === DFA_UNKNOWN) {
          next = this.step(s, c);
          if (next === DFA_UNKNOWN) return this.fallback.test(input);
          this.trans[(s << 7) | c] = next;
        }
      } else {
        let m = this.other[s] ?? null;
        const cached = m?.get(c);
        if (cached !== undefined) next = cached;
        else {
          next = this.step(s, c);
          if (next === DFA_UNKNOWN) return this.fallback.test(input);
          if (m === null) {
            m = new Map();
            this.other[s] = m;
          }
          if (m.size < 256) m.set(c, next);
        }
      }
      if (next === DFA_DEAD) return false;
      s = next;
    }
    return this.matchFlags[s] === 1;
  }

  /** The state reached from `s` on `c`, or DFA_UNKNOWN when the cache is full. */
  private step(s: number, c: number): number {
    const { op, x, y, sets } = this.p;
    this.gen++;
    if (this.gen === 0xffffffff) {
      this.mark.fill(0);
      this.gen = 1;
    }
    let len = 0;
    const pcs = this.sets[s] as Int32Array;
    for (let k = 0; k < pcs.length; k++) {
      const pc = pcs[k] as number;
      if (op[pc] === OP_CHAR && (sets[y[pc] as number] as CharMatcher).has(c))
        len = this.closure(x[pc] as number, len);
    }
    return this.intern(len);
  }

  /** Adds the epsilon closure of `start` to scratch[len…]; returns the new length. */
  private closure(start: number, len: number): number {
    const { op, x, y } = this.p;
    const mark = this.mark;
    const stack = this.stack;
    const out = this.scratch;
    const gen = this.gen;
    if (mark[start] === gen) return len;
    mark[start] = gen;
    let sp = 0;
    stack[sp++] = start;
    while (sp > 0) {
      const pc = stack[--sp] as number;
      const o = op[pc];
      if (o === OP_JMP || o === OP_SPLIT) {
        const a = x[pc] as number;
        if (o === OP_SPLIT) {
          const b = y[pc] as number;
          if (mark[b] !== gen) {
            mark[b] = gen;
            stack[sp++] = b;
          }
        }
        if (mark[a] !== gen) {
          mark[a] = gen;
          stack[sp++] = a;
        }
      } else {
        out[len++] = pc;
      }
    }
    return len;
  }

  /** The state for scratch[0…len), created if new; DFA_UNKNOWN when the cache is full. */
  private intern(len: number): number {
    const pcs = this.scratch.slice(0, len).sort();
    const key = pcs.join(',');
    const found = this.index.get(key);
    if (found !== undefined) return found;
    const id = this.sets.length;
    if (id >= MAX_DFA_STATES) {
      this.full = true;
      return DFA_UNKNOWN;
    }
    if ((id + 1) * 128 > this.trans.length) {
      const grown = new Int32Array(this.trans.length * 2).fill(DFA_UNKNOWN);
      grown.set(this.trans);
      this.trans = grown;
      const flags = new Uint8Array(this.matchFlags.length * 2);
      flags.set(this.matchFlags);
      this.matchFlags = flags;
    }
    let match = 0;
    for (let k = 0; k < pcs.length; k++) if (this.p.op[pcs[k] as number] === OP_MATCH) match = 1;
    this.matchFlags[id] = match;
    this.sets.push(pcs);
    this.other.push(null);
    this.index.set(key, id);
    return id;
  }
}
