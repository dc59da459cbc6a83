/**
 * Flags for the scripts under scripts/, as the CLI treats its own: `--help` prints the script's
 * summary (the first paragraph of its header comment) and its flag table; a bad flag (or a
 * positional argument: no script takes one), or any
 * other error meant for people (EagletError: a missing model directory, a bad file), ends the
 * process with one `error: ...` line and exit code 2 (flags) or 1 (others), the stack trace only
 * under `--debug`. Other errors keep Node's report: they are bugs.
 *
 *   const f = scriptFlags(import.meta.url, FLAGS);
 */
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { inspect } from 'node:util';
import { fileURLToPath } from 'node:url';
import { EagletError } from '../src/errors.ts';
import { noPositionals, parseFlags, type FlagSpec, type Parsed } from '../src/option-schema.ts';
import { helpText } from '../src/cli/flags.ts';

/** The repository's root: a script's usage line gives its path from there (scripts/peer/bench.ts). */
const REPO = fileURLToPath(new URL('..', import.meta.url));

/** Parses this process's argv against `specs` for the script at `scriptUrl` (its import.meta.url). */
export function scriptFlags(scriptUrl: string, specs: FlagSpec[], argv: string[] = process.argv.slice(2)): Parsed {
  const file = fileURLToPath(scriptUrl);
  const debug = argv.includes('--debug');
  reportPeopleErrors(debug);
  const args = argv.filter((a) => a !== '--debug');
  if (args.includes('--help')) {
    process.stdout.write(helpText(`Usage: node --import tsx ${relative(REPO, file)} [flags]`, summary(file), specs));
    process.exit(0);
  }
  const f = parseFlags(args, specs);
  // No script takes positional arguments: one given is an old calling form or a typo, and
  // running on the defaults instead would measure something else without a word.
  noPositionals(f);
  return f;
}

/** The first paragraph of the file's leading block comment, unwrapped. */
export function summary(file: string): string {
  const m = /^(?:#!.*\n)?\s*\/\*\*?([\s\S]*?)\*\//.exec(readFileSync(file, 'utf8'));
  if (!m) return '';
  const lines = m[1].split('\n').map((l) => l.replace(/^\s*\* ?/, ''));
  const para: string[] = [];
  for (const l of lines) {
    if (l.trim() === '') {
      if (para.length) break;
      continue;
    }
    para.push(l.trim());
  }
  return para.join(' ');
}

let installed = false;
/** One line for errors meant for people, thrown anywhere in the script (top-level await included). */
function reportPeopleErrors(debug: boolean): void {
  if (installed) return;
  installed = true;
  process.on('uncaughtException', (e) => {
    if (e instanceof EagletError) {
      process.stderr.write(`error: ${e.message}\n${debug ? `${e.stack}\n` : ''}`);
      process.exit(e.exitCode);
    }
    // What Node itself prints for an uncaught error: the stack plus code, cause, errors...
    process.stderr.write(`${inspect(e)}\n`);
    process.exit(1);
  });
}
