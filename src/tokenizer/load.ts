/** Picks and loads a tokenizer by file name: tokenizer.json (HF), *.bin (llama2.c), or an HF directory. */
import { existsSync, statSync } from 'node:fs';
import { basename, dirname, extname, join } from 'node:path';
import { FormatError } from '../errors.ts';
import { readJsonFile } from '../io/read.ts';
import { HfTokenizer } from './hf.ts';
import { readLlama2cTokenizer } from './llama2c.ts';
import type { Tokenizer } from './tokenizer.ts';

/** Options of loadTokenizer. */
export interface LoadTokenizerOptions {
  /** The model's vocabulary size: a llama2.c tokenizer.bin must hold exactly this many tokens. Default: read to the end. */
  vocabSize?: number;
}

/**
 * Loads the tokenizer at `path`: a directory (its tokenizer.json + tokenizer_config.json), a
 * `.json` file (tokenizer_config.json beside it is used when present) or a llama2.c `.bin`.
 */
export function loadTokenizer(path: string, opts: LoadTokenizerOptions = {}): Tokenizer {
  if (!existsSync(path)) throw new FormatError(path, 'no such file or directory');
  if (statSync(path).isDirectory()) {
    const file = join(path, 'tokenizer.json');
    if (!existsSync(file)) throw new FormatError(path, 'no tokenizer.json in this directory');
    return loadHfTokenizer(file);
  }
  const ext = extname(path).toLowerCase();
  if (ext === '.json') return loadHfTokenizer(path);
  if (ext === '.bin') return readLlama2cTokenizer(path, opts.vocabSize);
  throw new FormatError(path, `unknown tokenizer format "${basename(path)}" (expected tokenizer.json, a llama2.c .bin, or an HF directory)`);
}

function loadHfTokenizer(file: string): HfTokenizer {
  const json = readJsonFile(file);
  const configFile = join(dirname(file), 'tokenizer_config.json');
  const config = existsSync(configFile) ? readJsonFile(configFile) : {};
  if (typeof config !== 'object' || config === null || Array.isArray(config)) throw new FormatError(configFile, 'not a JSON object');
  return new HfTokenizer(json, config as Record<string, unknown>, file);
}
