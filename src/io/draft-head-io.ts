/**
 * EAGLE head checkpoints: `config.json` + `model.safetensors` with EAGLE's tensor names, so
 * heads trained elsewhere load here and heads trained here load into EAGLE-compatible engines.
 * A reduced draft vocabulary is stored as EAGLE-3 heads store it (`lm_head.weight`, `d2t` I64,
 * `t2d` BOOL, `draft_vocab_size`); see src/model/draft-head.ts.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, FormatError } from '../errors.ts';
import type { ModelConfig } from '../model/config.ts';
import { DRAFT_VOCAB_DTYPES, headConfigFromJson, headConfigToJson, headMismatch, headShapes, validateHeadWeights, type HeadConfig } from '../model/draft-head.ts';
import type { Weights } from '../model/weights.ts';
import { writeFileAtomic } from './atomic.ts';
import { readModelDir } from './read.ts';
import { readSafetensors, writeSafetensors } from './safetensors.ts';

/** An EAGLE draft head: its shapes and its tensors (EAGLE's names). */
export interface DraftHead {
  config: HeadConfig;
  weights: Weights;
}

/** Loads the head in directory `dir` and checks that it fits `target`. */
export function loadDraftHead(dir: string, target: ModelConfig): DraftHead {
  const { cfgFile, json, weightsFile: file } = readModelDir(dir, 'draft-head');
  let config: HeadConfig;
  try {
    config = headConfigFromJson(json);
  } catch (e) {
    throw new ConfigError(cfgFile, (e as Error).message);
  }
  const mismatch = headMismatch(config, target);
  if (mismatch) throw new ConfigError(cfgFile, `${mismatch}: this head was trained for another model`);
  const shapes = headShapes(config);
  const { tensors } = readSafetensors(file, (name) => shapes.has(name));
  const bad = validateHeadWeights(config, tensors);
  if (bad) throw new FormatError(file, bad);
  return { config, weights: tensors };
}

/** Writes `head` to `dir` (created if needed); each file atomically. */
export function saveDraftHead(dir: string, head: DraftHead, metadata: Record<string, string> = {}): void {
  mkdirSync(dir, { recursive: true });
  writeSafetensors(join(dir, 'model.safetensors'), head.weights, { format: 'pt', ...metadata }, { dtypes: DRAFT_VOCAB_DTYPES });
  writeFileAtomic(join(dir, 'config.json'), JSON.stringify(headConfigToJson(head.config), null, 2) + '\n');
}
