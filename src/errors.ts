/**
 * Errors meant for people. Each carries a one-line message that names the file or flag at
 * fault; the CLI prints `error: <message>` and exits non-zero without a stack trace
 * (unless `--debug`).
 */

/** Base class: anything eaglet reports to a user. `exitCode` is what the CLI exits with. */
export class EagletError extends Error {
  readonly exitCode: number = 1;
  constructor(message: string) {
    // One line whatever the cause quoted (JSON.parse quotes the bad text, newlines included).
    super(message.replace(/\s*[\r\n]+\s*/g, ' '));
    this.name = new.target.name;
  }
}

/** A file exists but its contents are wrong: truncated, bad header, unknown dtype, NaN weights... */
export class FormatError extends EagletError {
  constructor(readonly file: string, problem: string) {
    super(`${file}: ${problem}`);
  }
}

/** A model/config does not fit what it is used with (head vs target sizes, unsupported arch). */
export class ConfigError extends EagletError {
  constructor(readonly file: string, problem: string) {
    super(`${file}: ${problem}`);
  }
}

/** A bad command-line flag or API option. Exit code 2, like other CLIs' usage errors. */
export class UsageError extends EagletError {
  override readonly exitCode: number = 2;
  /** `problem` is the message without its flag, so a caller can name another flag for it. */
  constructor(readonly flag: string, readonly problem: string) {
    super(`${flag}: ${problem}`);
  }
}

/** A generator used wrongly in time: a second generation while one runs, or any use after dispose(). */
export class StateError extends EagletError {}

/** An optional package a feature needs is not installed (training needs TensorFlow.js). */
export class MissingPackageError extends EagletError {
  constructor(readonly pkg: string, feature: string, install = pkg) {
    super(`${feature} needs ${pkg}, which is not installed: npm install ${install}`);
  }
}

/** True when `e` says the package `pkg` itself (not something inside it) could not be found. */
export function isMissingPackage(e: unknown, pkg: string): boolean {
  const err = e as { code?: string; message?: string } | null;
  return (err?.code === 'ERR_MODULE_NOT_FOUND' || err?.code === 'MODULE_NOT_FOUND') && (err.message ?? '').includes(`'${pkg}'`);
}
