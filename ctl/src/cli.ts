/**
 * A tiny command router for ambientctl: `ambientctl <group> [<sub>] [args…]`. Each command declares its
 * options for util.parseArgs and gets parsed values; errors print one line with the error code and exit 1.
 */
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { describeError, MeshError } from '../../pkg/errors/index.ts';

export interface CommandContext {
  readonly values: Readonly<Record<string, string | boolean | Array<string | boolean> | undefined>>;
  readonly positionals: string[];
  readonly out: (line: string) => void;
  readonly err: (line: string) => void;
}

export interface Command {
  /** Words before the options, e.g. ['profile', 'dump']. */
  readonly path: readonly string[];
  readonly summary: string;
  readonly usage?: string;
  readonly options?: ParseArgsConfig['options'];
  /** Allows free arguments (and everything after `--`). */
  readonly positionals?: boolean;
  run(ctx: CommandContext): Promise<number | undefined> | number | undefined;
}

export const GLOBAL_OPTIONS: NonNullable<ParseArgsConfig['options']> = {
  kubeconfig: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
};

function matches(cmd: Command, argv: readonly string[]): boolean {
  return cmd.path.every((w, i) => argv[i] === w);
}

export function helpText(commands: readonly Command[], prefix: readonly string[] = []): string {
  const rows = commands
    .filter((c) => prefix.every((w, i) => c.path[i] === w))
    .map((c) => [`ambientctl ${c.path.join(' ')}${c.usage ? ` ${c.usage}` : ''}`, c.summary] as const);
  const width = Math.max(...rows.map(([a]) => a.length));
  return [
    'ambientctl — install, inspect and operate the ambient-ts mesh (and its local lab).',
    '',
    ...rows.map(([a, b]) => `  ${a.padEnd(width)}  ${b}`),
    '',
    'Global options: --kubeconfig <file>, -h/--help.',
  ].join('\n');
}

export interface Io {
  readonly out: (line: string) => void;
  readonly err: (line: string) => void;
}

export async function runCli(
  commands: readonly Command[],
  argv: readonly string[],
  io: Io = defaultIo(),
): Promise<number> {
  if (argv.length === 0 || argv[0] === 'help' || argv[0] === '--help' || argv[0] === '-h') {
    io.out(helpText(commands, argv[0] === 'help' ? argv.slice(1) : []));
    return 0;
  }
  const candidates = commands.filter((c) => matches(c, argv)).sort((a, b) => b.path.length - a.path.length);
  const cmd = candidates[0];
  if (!cmd) {
    const group = commands.filter((c) => c.path[0] === argv[0]);
    if (group.length > 0) {
      io.err(`unknown command: ambientctl ${argv.slice(0, 2).join(' ')}\n`);
      io.err(helpText(commands, [argv[0]!]));
    } else {
      io.err(`unknown command: ${argv[0]} (see ambientctl --help)`);
    }
    return 2;
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: argv.slice(cmd.path.length) as string[],
      options: { ...GLOBAL_OPTIONS, ...cmd.options },
      allowPositionals: cmd.positionals ?? false,
      // `--no-<flag>` turns off a boolean that defaults to on (e.g. `waypoint status --no-wait`).
      allowNegative: true,
      strict: true,
    });
  } catch (err) {
    io.err(`ambientctl ${cmd.path.join(' ')}: ${(err as Error).message}`);
    if (cmd.usage) io.err(`usage: ambientctl ${cmd.path.join(' ')} ${cmd.usage}`);
    return 2;
  }
  if (parsed.values.help) {
    io.out(`usage: ambientctl ${cmd.path.join(' ')}${cmd.usage ? ` ${cmd.usage}` : ''}\n\n${cmd.summary}`);
    return 0;
  }
  try {
    const code = await cmd.run({
      values: parsed.values,
      positionals: parsed.positionals,
      out: io.out,
      err: io.err,
    });
    return code ?? 0;
  } catch (err) {
    io.err(err instanceof MeshError ? err.toString() : `error: ${describeError(err)}`);
    return 1;
  }
}

export function defaultIo(): Io {
  return {
    out: (line: string) => {
      process.stdout.write(`${line}\n`);
    },
    err: (line: string) => {
      process.stderr.write(`${line}\n`);
    },
  };
}
