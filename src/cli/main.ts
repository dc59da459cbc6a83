/**
 * `eaglet <command> [flags]`. Each command module exports a `Command`; errors for people end
 * in one line and a non-zero exit (2 for bad flags), with a stack trace only under --debug.
 */
import { EagletError, UsageError } from '../errors.ts';
import { COMMANDS } from './commands.ts';

export type { Command } from './command.ts';

function usage(): string {
  const rows = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(16)} ${c.summary}`);
  return `eaglet: speculative decoding (EAGLE-2 trees, adaptive draft lengths) on onnxruntime-node\n\nUsage: eaglet <command> [flags]   (eaglet <command> --help for its flags)\n\nCommands:\n${rows.join('\n')}\n`;
}

async function main(argv: string[]): Promise<number> {
  const debug = argv.includes('--debug');
  const args = argv.filter((a) => a !== '--debug');
  const name = args[0];
  try {
    if (!name || name === '--help' || name === '-h' || name === 'help') {
      process.stdout.write(usage());
      return name ? 0 : 2;
    }
    const cmd = COMMANDS[name];
    if (!cmd) throw new UsageError(name, `unknown command (commands: ${Object.keys(COMMANDS).join(', ')})`);
    await cmd.run(args.slice(1));
    return 0;
  } catch (e) {
    if (e instanceof EagletError) {
      process.stderr.write(`error: ${e.message}\n`);
      if (debug) process.stderr.write(`${e.stack}\n`);
      return e.exitCode;
    }
    const err = e as Error;
    process.stderr.write(`error: ${err?.message ?? String(e)}${debug ? `\n${err?.stack}` : ' (unexpected; run with --debug for a stack trace)'}\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
