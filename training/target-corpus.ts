/**
 * The text corpus of target training: the files of one directory (by default the TypeScript
 * declaration files `node_modules/typescript/lib/*.d.ts`), listed in sorted order, split into
 * train / held-out by whole file, and fingerprinted so a model card can name exactly what it
 * was trained on.
 *
 * The split is a pure function of the file names: a file is held out when the FNV-1a hash of
 * its name, mod 1000, falls below `heldOut * 1000`. Adding a file never moves another.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { FormatError, UsageError } from '../src/errors.ts';

/** One corpus file. */
export interface CorpusFile {
  name: string;
  text: string;
}

/** The corpus, split. */
export interface TargetCorpus {
  dir: string;
  train: CorpusFile[];
  heldOut: CorpusFile[];
  /** sha256 over (name, NUL, text, NUL) of every file in name order: changes when any file does. */
  sha256: string;
  bytes: number;
}

/** Files ending in this suffix are the corpus. Default '.d.ts'. */
export const DEFAULT_SUFFIX = '.d.ts';

/** FNV-1a 32-bit of a string's UTF-16 code units. */
export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** Whether `name` is a held-out file for held-out fraction `fraction`. */
export const isHeldOut = (name: string, fraction: number): boolean => fnv1a(name) % 1000 < fraction * 1000;

/**
 * Reads the corpus in `dir`: every file ending in `suffix`, sorted by name, split by `heldOut`
 * (fraction of files, by name hash). Throws a UsageError naming `--corpus-dir` when there is nothing to read.
 */
export function readTargetCorpus(dir: string, heldOut: number, suffix = DEFAULT_SUFFIX): TargetCorpus {
  if (!existsSync(dir)) throw new FormatError(dir, 'no such directory');
  if (!statSync(dir).isDirectory()) throw new FormatError(dir, 'is a file; --corpus-dir takes a directory');
  const names = readdirSync(dir).filter((n) => n.endsWith(suffix)).sort();
  if (names.length === 0) throw new UsageError('--corpus-dir', `${dir} has no *${suffix} files`);
  const hash = createHash('sha256');
  const c: TargetCorpus = { dir, train: [], heldOut: [], sha256: '', bytes: 0 };
  for (const name of names) {
    const text = readFileSync(join(dir, name), 'utf8');
    hash.update(name).update('\0').update(text).update('\0');
    c.bytes += Buffer.byteLength(text);
    (isHeldOut(name, heldOut) ? c.heldOut : c.train).push({ name, text });
  }
  if (c.train.length === 0 || c.heldOut.length === 0)
    throw new UsageError('--held-out', `splitting ${names.length} files by ${heldOut} leaves ${c.train.length} to train on and ${c.heldOut.length} held out; both must be non-empty`);
  c.sha256 = hash.digest('hex');
  return c;
}
