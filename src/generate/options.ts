/**
 * Generation options: defaults, ranges and docs in one table, shared by the CLI flags and
 * the library API (`resolveGenerationOptions`).
 */
import { pickOptions, resolveOptions, type FlagSpec, type Parsed } from '../option-schema.ts';
import type { SamplingOptions } from './sampler.ts';

/** Every generation option, resolved (resolveGenerationOptions fills the defaults). */
export interface GenerationOptions extends SamplingOptions {
  /** Tokens to generate at most. Default 128. */
  maxNewTokens: number;
  /** Stop at the model's EOS ids. Default true. */
  stopAtEos: boolean;
}

/** The generation options' table: flag names, defaults, ranges and help, for the CLI and the library. */
export const GENERATION_FLAGS: FlagSpec[] = [
  { flag: 'max-new-tokens', type: 'int', min: 1, default: 128, meta: 'N', help: 'tokens to generate at most' },
  { flag: 'temperature', type: 'number', min: 0, default: 0, meta: 'T', help: 'sampling temperature; 0 = greedy' },
  { flag: 'top-k', type: 'int', min: 0, default: 0, meta: 'K', help: 'sample from the K most likely tokens; 0 = all' },
  { flag: 'top-p', type: 'number', above: 0, max: 1, default: 1, meta: 'P', help: 'nucleus sampling mass in (0, 1]' },
  { flag: 'seed', type: 'int', min: 0, default: 0, meta: 'S', help: 'random seed: same seed, same output' },
  { flag: 'stop-at-eos', type: 'bool', default: true, help: 'stop at the end-of-sequence ids (llama2.c models: BOS too, as run.c; --no-stop-at-eos to disable)' },
];

/** `given` with defaults filled in and every value range-checked (a UsageError names the option). */
export function resolveGenerationOptions(given: Partial<GenerationOptions> = {}): GenerationOptions {
  return resolveOptions<GenerationOptions>(GENERATION_FLAGS, given);
}

/** The generation options among parsed CLI flags (GENERATION_FLAGS), resolved and validated. */
export function generationOptionsFromFlags(f: Parsed): GenerationOptions {
  return resolveGenerationOptions(pickOptions(GENERATION_FLAGS, f));
}
