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
  /**
   * The model's vocabulary size: a llama2.c tokenizer.bin must hold exactly this many tokens, an
   * HF tokenizer at most this many ids (models may pad their vocabulary). Default: not checked.
   */
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
    return fits(loadHfTokenizer(file), file, opts.vocabSize);
  }
  const ext = extname(path).toLowerCase();
  if (ext === '.json') return fits(loadHfTokenizer(path), path, opts.vocabSize);
  if (ext === '.bin') return readLlama2cTokenizer(path, opts.vocabSize);
  throw new FormatError(path, `unknown tokenizer format "${basename(path)}" (expected tokenizer.json, a llama2.c .bin, or an HF directory)`);
}

function fits(t: Tokenizer, file: string, vocabSize: number | undefined): Tokenizer {
  if (vocabSize !== undefined && t.vocabSize > vocabSize) throw new FormatError(file, `has ${t.vocabSize} token ids but the model has ${vocabSize}: a tokenizer of another model`);
  return t;
}

function loadHfTokenizer(file: string): HfTokenizer {
  const json = readJsonFile(file);
  const configFile = join(dirname(file), 'tokenizer_config.json');
  const config = existsSync(configFile) ? readJsonFile(configFile) : {};
  if (typeof config !== 'object' || config === null || Array.isArray(config)) throw new FormatError(configFile, 'not a JSON object');
  return new HfTokenizer(json, config as Record<string, unknown>, file);
}
