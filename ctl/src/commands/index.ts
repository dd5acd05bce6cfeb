import type { Command } from '../cli.ts';
import { installCommands } from './install.ts';
import { labCommands } from './lab.ts';

export const commands: readonly Command[] = [...installCommands, ...labCommands];
