/** Running the CLI's commands inside the test process (no child start-up per call). */
import { COMMANDS } from '../../src/cli/commands.ts';

/** The --help text of a command (captured from stdout). */
export async function helpOf(name: string): Promise<string> {
  const write = process.stdout.write;
  let text = '';
  process.stdout.write = ((chunk: string) => ((text += chunk), true)) as typeof process.stdout.write;
  try {
    await COMMANDS[name].run(['--help']);
  } finally {
    process.stdout.write = write;
  }
  return text;
}
