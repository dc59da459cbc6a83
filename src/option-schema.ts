/**
 * The option schema: one table per option set gives each option its flag, type, default, range
 * and help text. The same table validates library options (`resolveOptions`), parses argv and
 * inline policy specs (`parseFlags`) and prints the CLI's `--help`, so a default or a range is
 * written down once. The library and the CLI both build on this module; it depends on neither.
 */
import { treeShapeProblem, type TreeShape, type TreeShapeNames } from '../trees/index.ts';
import { UsageError } from './errors.ts';

export type FlagType = 'int' | 'number' | 'string' | 'bool' | 'ints';

export interface FlagSpec {
  /** Flag name without dashes, e.g. 'max-new-tokens'. The option key is its camelCase. */
  flag: string;
  type: FlagType;
  help: string;
  default?: number | string | boolean | number[];
  /** Inclusive lower bound (numbers). */
  min?: number;
  /** Exclusive lower bound (numbers), e.g. top-p > 0. */
  above?: number;
  max?: number;
  choices?: string[];
  /** Short placeholder for help, e.g. PATH. */
  meta?: string;
}

export type Parsed = Record<string, unknown> & { _: string[] };

/** The longest delay setTimeout honours (ms): Node fires a longer one at once (its TIMEOUT_MAX). */
export const TIMER_MAX_MS = 2 ** 31 - 1;

export const camel = (flag: string): string => flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/** Refuses positional arguments, a bare `--` separator aside: for commands and scripts that take none. */
export function noPositionals(f: Parsed): void {
  const stray = f._.filter((a) => a !== '--');
  if (stray.length) throw new UsageError(stray[0], 'unexpected argument (flags start with --)');
}

/** Parses `argv` against `specs`; unknown flags and bad values are UsageErrors naming the flag. */
export function parseFlags(argv: string[], specs: FlagSpec[]): Parsed {
  const byFlag = new Map(specs.map((s) => [s.flag, s]));
  const out: Parsed = { _: [] };
  for (const s of specs) if (s.default !== undefined) out[camel(s.flag)] = s.default;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--') || a === '--') {
      out._.push(a);
      continue;
    }
    let [name, value] = a.slice(2).split(/=(.*)/s, 2) as [string, string | undefined];
    let negated = false;
    if (!byFlag.has(name) && name.startsWith('no-') && byFlag.get(name.slice(3))?.type === 'bool') {
      name = name.slice(3);
      negated = true;
    }
    const spec = byFlag.get(name);
    if (!spec) throw new UsageError(`--${name}`, `unknown flag (see --help)`);
    if (spec.type === 'bool') {
      if (value !== undefined) throw new UsageError(`--${name}`, `takes no value`);
      out[camel(name)] = !negated;
      continue;
    }
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new UsageError(`--${name}`, `needs a value`);
      // `--model-name --port 0` would make "--port" the name and 0 a stray argument: a value that
      // looks like a flag is one. A value that starts with -- is given as --name=VALUE.
      if (/^--[a-z]/.test(argv[i + 1])) throw new UsageError(`--${name}`, `needs a value, got the flag ${argv[i + 1]} (write --${name}=VALUE for a value that starts with --)`);
      value = argv[++i];
    }
    out[camel(name)] = convert(spec, value);
  }
  return out;
}

function convert(spec: FlagSpec, raw: string): unknown {
  const flag = `--${spec.flag}`;
  if (spec.type === 'string') {
    if (spec.choices && !spec.choices.includes(raw)) throw new UsageError(flag, `must be one of ${spec.choices.join(', ')}, got '${raw}'`);
    return raw;
  }
  if (spec.type === 'ints') {
    // Commas separate items (spaces around them allowed); an empty item is a typo, not nothing.
    const parts = raw.trim().split(/\s*,\s*|\s+/);
    if (raw.trim() === '') throw new UsageError(flag, `needs a comma-separated list of integers`);
    const empty = parts.indexOf('');
    if (empty >= 0) throw new UsageError(flag, `item ${empty + 1} of '${raw}' is empty`);
    return parts.map((p) => {
      const v = Number(p);
      if (!Number.isInteger(v)) throw new UsageError(flag, `'${p}' is not an integer`);
      return v;
    });
  }
  const v = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(v)) throw new UsageError(flag, `expected a number, got '${raw}'`);
  checkNumber(spec, v, flag);
  return v;
}

function checkNumber(spec: FlagSpec, v: number, name: string): void {
  if (spec.type === 'int' && !Number.isInteger(v)) throw new UsageError(name, `must be an integer, got ${v}`);
  if (spec.min !== undefined && v < spec.min) throw new UsageError(name, `must be >= ${spec.min}, got ${v}`);
  if (spec.above !== undefined && v <= spec.above) throw new UsageError(name, `must be > ${spec.above}, got ${v}`);
  if (spec.max !== undefined && v > spec.max) throw new UsageError(name, `must be <= ${spec.max}, got ${v}`);
}

/** A value of the wrong type, for an error line: its type, and the value where it is short to show. */
function shown(v: unknown): string {
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'function') return 'a function';
  return typeof v === 'string' ? `the string '${v}'` : `the ${typeof v} ${String(v)}`;
}

/**
 * Library side of the same table: fills defaults and validates `given` (camelCase keys), each
 * value's type (a number, a string, true or false, an array of integers) and range; errors name
 * the option key. Unknown keys are rejected too, since a typo would silently fall back to a default.
 */
export function resolveOptions<T>(specs: FlagSpec[], given: Record<string, unknown> = {}): T {
  const out: Record<string, unknown> = {};
  const known = new Set(specs.map((s) => camel(s.flag)));
  for (const k of Object.keys(given)) if (!known.has(k) && given[k] !== undefined) throw new UsageError(k, `unknown option`);
  for (const s of specs) {
    const k = camel(s.flag);
    const v = given[k] ?? s.default;
    if (v === undefined) continue;
    if (s.type === 'int' || s.type === 'number') {
      if (typeof v !== 'number' || !Number.isFinite(v)) throw new UsageError(k, `expected a number, got ${typeof v === 'number' ? v : shown(v)}`);
      checkNumber(s, v, k);
    } else if (s.type === 'string') {
      if (typeof v !== 'string') throw new UsageError(k, `expected a string, got ${shown(v)}`);
      if (s.choices && !s.choices.includes(v)) throw new UsageError(k, `must be one of ${s.choices.join(', ')}, got '${v}'`);
    } else if (s.type === 'bool') {
      if (typeof v !== 'boolean') throw new UsageError(k, `expected true or false, got ${shown(v)}`);
    } else if (!(Array.isArray(v) && v.every((x) => Number.isInteger(x)))) {
      throw new UsageError(k, `expected an array of integers, got ${shown(v)}`);
    }
    out[k] = v;
  }
  return out as T;
}

/** The entries of `given` that `specs` name (camelCase keys): one option set's share of a larger one. */
export function pickOptions(specs: FlagSpec[], given: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(specs.map((s) => [camel(s.flag), given[camel(s.flag)]]));
}

/**
 * Throws a UsageError for a tree shape out of range (trees/ treeShapeProblem: with `reachable`,
 * also one whose token budget cannot reach its depth). `names` are the option names errors use.
 */
export function checkTree(t: TreeShape, names: TreeShapeNames = { topK: 'tree.topK', maxDepth: 'tree.maxDepth', totalTokens: 'tree.totalTokens' }, reachable = false): void {
  const bad = treeShapeProblem(t, names, reachable);
  if (bad) throw new UsageError(bad.name, bad.problem);
}
