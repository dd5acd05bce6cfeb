import type { Command } from '../cli.ts';
import { installCommands } from './install.ts';

export const commands: readonly Command[] = [...installCommands];
