#!/usr/bin/env node
/** ambientctl: the command-line tool for ambient-ts (install, inspect, operate, and run the local lab). */
import { runCli } from './src/cli.ts';
import { commands } from './src/commands/index.ts';

process.exitCode = await runCli(commands, process.argv.slice(2));
