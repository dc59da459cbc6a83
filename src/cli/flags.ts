/** The CLI's rendering of the option schema (src/option-schema.ts): `--help` text. */
import type { FlagSpec } from '../option-schema.ts';

/** `--help` text for a command. */
export function helpText(usage: string, summary: string, specs: FlagSpec[]): string {
  const rows = specs.map((s) => {
    const left = `  --${s.flag}${s.type === 'bool' ? '' : ` ${s.meta ?? s.type.toUpperCase()}`}`;
    const def = s.default !== undefined && s.type !== 'bool' ? ` (default ${Array.isArray(s.default) ? s.default.join(',') : s.default})` : '';
    // A name wider than the column (--policy smartspec|static-D|plain) puts its help on the next line, in the column.
    return `${left.length <= 30 ? left.padEnd(30) : `${left}\n${''.padEnd(30)}`} ${s.help}${def}`;
  });
  return `${usage}\n\n${summary}\n\nOptions:\n${rows.join('\n')}\n  --debug                      print stack traces on errors\n  --help                       this text\n`;
}
