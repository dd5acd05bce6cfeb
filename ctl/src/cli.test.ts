import { describe, expect, it } from 'vitest';
import { type Command, runCli } from './cli.ts';
import { commands } from './commands/index.ts';

function io() {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, io: { out: (l: string) => out.push(l), err: (l: string) => err.push(l) } };
}

describe('ambientctl router', () => {
  const echo: Command = {
    path: ['say', 'hi'],
    summary: 'says hi',
    options: { name: { type: 'string' } },
    positionals: true,
    run: (ctx) => {
      ctx.out(`hi ${ctx.values.name ?? 'you'} ${ctx.positionals.join(',')}`);
      return 0;
    },
  };

  it('routes to the longest matching path with parsed options', async () => {
    const t = io();
    expect(await runCli([echo], ['say', 'hi', '--name', 'bob', 'x', 'y'], t.io)).toBe(0);
    expect(t.out).toEqual(['hi bob x,y']);
  });

  it('rejects unknown commands and options with exit 2 and a hint', async () => {
    const t = io();
    expect(await runCli([echo], ['nope'], t.io)).toBe(2);
    expect(t.err[0]).toMatch(/unknown command: nope/);
    expect(await runCli([echo], ['say', 'hi', '--bogus'], t.io)).toBe(2);
    expect(t.err.join('\n')).toMatch(/Unknown option '--bogus'/);
  });

  it('turns thrown errors into one line and exit 1', async () => {
    const t = io();
    const boom: Command = {
      path: ['boom'],
      summary: 'fails',
      run: () => {
        throw new Error('kaput');
      },
    };
    expect(await runCli([boom], ['boom'], t.io)).toBe(1);
    expect(t.err).toEqual(['error: kaput']);
  });

  it('lists profiles and renders one (A2)', async () => {
    const t = io();
    expect(await runCli(commands, ['profile', 'list'], t.io)).toBe(0);
    expect(t.out.join('\n')).toMatch(/minimal/);
    const d = io();
    expect(await runCli(commands, ['profile', 'dump', 'minimal'], d.io)).toBe(0);
    expect(d.out.join('\n')).toMatch(/kind: Deployment[\s\S]*name: istiod/);
    const bad = io();
    expect(await runCli(commands, ['profile', 'dump', 'nope'], bad.io)).toBe(1);
    expect(bad.err[0]).toMatch(/MESH_ERR_CTL_PROFILE: unknown profile "nope"/);
  });

  it('prints help', async () => {
    const t = io();
    expect(await runCli(commands, ['--help'], t.io)).toBe(0);
    expect(t.out[0]).toMatch(/ambientctl version/);
  });
});
