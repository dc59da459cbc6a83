/** What every CLI command shares: `--help` from its flag table, parsing, and the positional-argument rule. */
import { UsageError } from '../errors.ts';
import { camel, noPositionals, parseFlags, type FlagSpec, type Parsed } from '../option-schema.ts';
import { helpText } from './flags.ts';

export interface Command {
  summary: string;
  /** Runs the command; `argv` excludes the command name. */
  run(argv: string[]): Promise<void>;
}

export interface CommandSpec {
  summary: string;
  /** First help line, e.g. `Usage: eaglet generate --model PATH [flags]`. */
  usage: string;
  /** What the command does, for --help. */
  description: string;
  flags: FlagSpec[];
  /** Accept arguments that are not flags (file lists); otherwise they are a usage error. */
  positional?: boolean;
  /** The flag that takes policy specs (`--policy`, `--policies`): the registry's errors about a spec are reported under it. */
  policyFlag?: string;
  run(f: Parsed): Promise<void>;
}

export function defineCommand(spec: CommandSpec): Command {
  return {
    summary: spec.summary,
    async run(argv) {
      if (argv.includes('--help')) return void process.stdout.write(helpText(spec.usage, spec.description, spec.flags));
      const f = parseFlags(argv, spec.flags);
      if (!spec.positional) noPositionals(f);
      try {
        await spec.run(f);
      } catch (e) {
        throw optionAsFlag(spec.policyFlag ? policyFlagError(e, spec.policyFlag) : e, spec.flags);
      }
    },
  };
}

/**
 * The policy registry names its errors `policy` or `policy 'SPEC'` (library option names); on the
 * command line the same error names the flag the spec came from: `--policy 'static-40': depth: ...`.
 */
export function policyFlagError(e: unknown, flag: string): unknown {
  if (!(e instanceof UsageError) || !/^policy( |$)/.test(e.flag)) return e;
  return renamed(e, `${flag}${e.flag.slice('policy'.length)}`);
}

/** `e` under another flag name, keeping the frames of where it was thrown (for --debug). */
function renamed(e: UsageError, flag: string): UsageError {
  const out = new UsageError(flag, e.problem);
  out.stack = [`${out.name}: ${out.message}`, ...(e.stack ?? '').split('\n').filter((l) => /^\s+at /.test(l))].join('\n');
  return out;
}

/**
 * A library error names an option by its key (`roundDepths`), which is the camelCase of the flag
 * that set it: on the command line the error names the flag (`--round-depths`).
 */
function optionAsFlag(e: unknown, flags: FlagSpec[]): unknown {
  if (!(e instanceof UsageError)) return e;
  const spec = flags.find((s) => camel(s.flag) === e.flag);
  return spec ? renamed(e, `--${spec.flag}`) : e;
}
