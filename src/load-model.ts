/** One entry point for checkpoints: a llama2.c `.bin` file or an HF checkpoint directory. */
import { existsSync, statSync } from 'node:fs';
import { dirname, extname, join, resolve } from 'node:path';
import { FormatError } from './errors.ts';
import type { ModelConfig } from './model/config.ts';
import type { Weights } from './model/weights.ts';
import { loadTokenizer } from './tokenizer/load.ts';
import type { Tokenizer } from './tokenizer/tokenizer.ts';
import { loadHfCheckpoint } from './io/hf.ts';
import { readLlama2c } from './io/llama2c.ts';

/** A target as loaded from its checkpoint, with the tokenizer found beside it. */
export interface LoadedModel {
  config: ModelConfig;
  weights: Weights;
  /** The tokenizer found with the checkpoint (tokenizer.bin beside a .bin, tokenizer.json in a directory). */
  tokenizer?: Tokenizer;
  source: 'hf' | 'llama2c';
}

/**
 * Loads a model from `path`: a directory is an HF checkpoint, a `.bin` file a llama2.c one.
 * Anything wrong ends in an EagletError naming the file.
 */
export async function loadModel(path: string): Promise<LoadedModel> {
  if (!existsSync(path)) throw new FormatError(path, 'no such file or directory');
  if (statSync(path).isDirectory()) {
    const { config, weights } = loadHfCheckpoint(path);
    const tokFile = join(path, 'tokenizer.json');
    const tokenizer = existsSync(tokFile) ? loadTokenizer(path) : undefined;
    return { config, weights, tokenizer, source: 'hf' };
  }
  if (extname(path).toLowerCase() === '.bin') {
    const { config, weights } = readLlama2c(path);
    const tokFile = join(dirname(path), 'tokenizer.bin');
    const tokenizer = existsSync(tokFile) && resolve(tokFile) !== resolve(path) ? loadTokenizer(tokFile, { vocabSize: config.vocabSize }) : undefined;
    return { config, weights, tokenizer, source: 'llama2c' };
  }
  throw new FormatError(path, 'not a model: expected an HF checkpoint directory or a llama2.c .bin file');
}
