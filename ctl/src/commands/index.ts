import type { Command } from '../cli.ts';
import { installCommands } from './install.ts';
import { labCommands } from './lab.ts';
import { waypointCommands } from './waypoint.ts';

export const commands: readonly Command[] = [...installCommands, ...waypointCommands, ...labCommands];
