/** The CLI's command table. */
import type { Command } from './command.ts';
import { bench } from './commands/bench.ts';
import { costScale } from './commands/cost-scale.ts';
import { tune } from './commands/tune.ts';
import { quantize } from './commands/quantize.ts';
import { collectLengthsCommand } from './commands/collect-lengths.ts';
import { generate } from './commands/generate.ts';
import { serve } from './commands/serve.ts';
import { log } from './commands/log.ts';
import { trainDraftCommand } from './commands/train-draft.ts';
import { trainTargetCommand } from './commands/train-target.ts';
import { trainLdlpCommand } from './commands/train-ldlp.ts';

export const COMMANDS: Record<string, Command> = {
  generate,
  bench,
  log,
  'train-draft': trainDraftCommand,
  'train-target': trainTargetCommand,
  'collect-lengths': collectLengthsCommand,
  'train-ldlp': trainLdlpCommand,
  tune,
  'cost-scale': costScale,
  quantize,
  serve,
};
