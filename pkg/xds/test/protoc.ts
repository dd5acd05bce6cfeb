/**
 * Test support: protoc as an independent oracle for our generated code. protoc reads the same
 * .proto files, so agreement between protoc's encoder/decoder and ours proves the generated code
 * matches the schema (field numbers, types, packing); the schema itself was checked against
 * upstream by hand.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

export const XDS_DIR = join(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_ROOT = join(XDS_DIR, '..', '..');
export const PROTO_DIR = join(XDS_DIR, 'proto');
const WELL_KNOWN_INCLUDE = '/usr/include';

/** Our .proto files, relative to PROTO_DIR, sorted. */
export function protoFiles(): string[] {
  const walk = (dir: string): string[] =>
    readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? walk(join(dir, e.name)) : e.name.endsWith('.proto') ? [join(dir, e.name)] : [],
    );
  return walk(PROTO_DIR)
    .map((p) => relative(PROTO_DIR, p))
    .sort();
}

function protoc(args: readonly string[], input?: Uint8Array | string): Buffer {
  const run = spawnSync(
    'protoc',
    [`--proto_path=${PROTO_DIR}`, `--proto_path=${WELL_KNOWN_INCLUDE}`, ...args],
    {
      cwd: PROTO_DIR,
      input,
      maxBuffer: 64 * 1024 * 1024,
    },
  );
  if (run.error) throw run.error;
  if (run.status !== 0) throw new Error(`protoc ${args.join(' ')} failed: ${run.stderr.toString()}`);
  return run.stdout;
}

/** `protoc --decode`: our bytes -> protoc's text format. */
export function protocDecode(typeName: string, bytes: Uint8Array): string {
  return protoc([`--decode=${typeName}`, ...protoFiles()], bytes).toString('utf8');
}

/** `protoc --encode`: text format -> protoc's bytes. */
export function protocEncode(typeName: string, text: string): Uint8Array {
  return new Uint8Array(protoc([`--encode=${typeName}`, ...protoFiles()], text));
}

/** A text-format message: every key maps to the list of its occurrences, in order. */
export interface TextMessage {
  readonly [key: string]: readonly TextValue[];
}
export type TextValue = string | TextMessage;

/**
 * Parses protoc's text-format output (one `key: value` or `key {` per line, as protoc prints it).
 * Scalars stay as their source text (strings keep their quotes) so callers decide how to read them.
 */
export function parseText(text: string): TextMessage {
  const stack: Record<string, TextValue[]>[] = [{}];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    const top = stack[stack.length - 1]!;
    if (line === '}') {
      stack.pop();
      continue;
    }
    const open = /^([\w.[\]/]+) \{$/.exec(line);
    if (open) {
      const child: Record<string, TextValue[]> = {};
      push(top, open[1]!, child);
      stack.push(child);
      continue;
    }
    const field = /^([\w.[\]/]+): (.*)$/.exec(line);
    if (!field) throw new Error(`unparsed text-format line: ${line}`);
    push(top, field[1]!, field[2]!);
  }
  if (stack.length !== 1) throw new Error('unbalanced braces in text format');
  return stack[0]!;
}

function push(target: Record<string, TextValue[]>, key: string, value: TextValue): void {
  const list = target[key];
  if (list) list.push(value);
  else target[key] = [value];
}

/** Reads a quoted text-format string (C-style escapes, octal for non-printable bytes) as bytes. */
export function textBytes(quoted: TextValue | undefined): Uint8Array {
  if (typeof quoted !== 'string' || !quoted.startsWith('"') || !quoted.endsWith('"')) {
    throw new Error(`not a quoted string: ${String(quoted)}`);
  }
  const s = quoted.slice(1, -1);
  const out: number[] = [];
  const simple: Record<string, number> = { n: 10, r: 13, t: 9, '"': 34, "'": 39, '\\': 92 };
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c !== '\\') {
      out.push(...Buffer.from(c, 'utf8'));
      continue;
    }
    const next = s[++i]!;
    if (next in simple) out.push(simple[next]!);
    else if (/[0-7]/.test(next)) {
      const oct = /^[0-7]{1,3}/.exec(s.slice(i))![0];
      out.push(Number.parseInt(oct, 8));
      i += oct.length - 1;
    } else if (next === 'x') {
      const hex = /^[0-9a-fA-F]{1,2}/.exec(s.slice(i + 1))![0];
      out.push(Number.parseInt(hex, 16));
      i += hex.length;
    } else throw new Error(`unknown escape \\${next}`);
  }
  return new Uint8Array(out);
}

/** Reads a quoted text-format string as UTF-8 text. */
export function textString(quoted: TextValue | undefined): string {
  return Buffer.from(textBytes(quoted)).toString('utf8');
}

/** First occurrence of a nested path, e.g. get(msg, 'workload', 'uid'). */
export function get(message: TextMessage, ...path: string[]): TextValue | undefined {
  let cur: TextValue | undefined = message;
  for (const key of path) {
    if (cur === undefined || typeof cur === 'string') return undefined;
    cur = cur[key]?.[0];
  }
  return cur;
}

/** All occurrences of the last key under a nested path. */
export function all(message: TextMessage, ...path: string[]): readonly TextValue[] {
  const parent = get(message, ...path.slice(0, -1));
  if (parent === undefined || typeof parent === 'string') return [];
  return parent[path[path.length - 1]!] ?? [];
}

/** Unknown fields show up in text format as bare numbers ("15: 3" or "15 {"). */
export function unknownFieldLines(text: string): string[] {
  return text.split('\n').filter((l) => /^\s*\d+(:| \{)/.test(l));
}

// ---- schema, from protoc's own descriptors ----

export interface FieldInfo {
  readonly name: string;
  readonly jsonName: string;
  readonly number: number;
  readonly type: string;
  readonly repeated: boolean;
  readonly typeName: string | null;
  /** Name of the real (non-synthetic) oneof the field belongs to, if any. */
  readonly oneof: string | null;
}

export interface MessageInfo {
  /** Fully qualified, e.g. "istio.workload.Workload.ServicesEntry". */
  readonly fullName: string;
  /** ts-proto's export name, e.g. "Workload_ServicesEntry". */
  readonly tsName: string;
  /** Generated module path relative to pkg/xds, e.g. "gen/istio/workload/workload.ts". */
  readonly module: string;
  readonly isMapEntry: boolean;
  readonly fields: readonly FieldInfo[];
  readonly oneofs: readonly string[];
}

/** Every message (nested ones and map entries included) declared in our .proto files. */
export function describeMessages(): MessageInfo[] {
  const dir = mkdtempSync(join(tmpdir(), 'xds-desc-'));
  try {
    const set = join(dir, 'set.pb');
    protoc([`--descriptor_set_out=${set}`, ...protoFiles()]);
    const text = spawnSync(
      'protoc',
      [
        `--proto_path=${WELL_KNOWN_INCLUDE}`,
        '--decode=google.protobuf.FileDescriptorSet',
        'google/protobuf/descriptor.proto',
      ],
      { input: readFileSync(set), maxBuffer: 64 * 1024 * 1024 },
    ).stdout.toString('utf8');
    const out: MessageInfo[] = [];
    for (const file of all(parseText(text), 'file') as TextMessage[]) {
      const fileName = textString(get(file, 'name'));
      const pkg = textString(get(file, 'package'));
      const module = `gen/${fileName.replace(/\.proto$/, '.ts')}`;
      const visit = (msg: TextMessage, scope: string[]): void => {
        const name = textString(get(msg, 'name'));
        const path = [...scope, name];
        const oneofDecls = (msg.oneof_decl ?? []).map((d) => textString(get(d as TextMessage, 'name')));
        const fields = ((msg.field ?? []) as TextMessage[]).map((f): FieldInfo => {
          const oneofIndex = get(f, 'oneof_index');
          const synthetic = get(f, 'proto3_optional') === 'true';
          return {
            name: textString(get(f, 'name')),
            jsonName: textString(get(f, 'json_name')),
            number: Number(get(f, 'number')),
            type: String(get(f, 'type')),
            repeated: get(f, 'label') === 'LABEL_REPEATED',
            typeName: get(f, 'type_name') === undefined ? null : textString(get(f, 'type_name')),
            oneof: oneofIndex === undefined || synthetic ? null : oneofDecls[Number(oneofIndex)]!,
          };
        });
        out.push({
          fullName: `${pkg}.${path.join('.')}`,
          tsName: path.join('_'),
          module,
          isMapEntry: get(msg, 'options', 'map_entry') === 'true',
          fields,
          oneofs: [...new Set(fields.flatMap((f) => (f.oneof ? [f.oneof] : [])))],
        });
        for (const nested of (msg.nested_type ?? []) as TextMessage[]) visit(nested, path);
      };
      for (const msg of (file.message_type ?? []) as TextMessage[]) visit(msg, []);
    }
    return out;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** snake_case -> lowerCamelCase, as ts-proto names oneof keys. */
export function camel(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}
