/** The CLI's command table. */
import type { Command } from './main.ts';
import { generate } from './commands/generate.ts';

export const COMMANDS: Record<string, Command> = {
  generate,
};
