/**
 * Trained predictor heads on disk: a directory with `config.json` + `model.safetensors`
 * (MLP weights `layers.{i}.weight|bias`, see src/model/mlp.ts).
 *
 *   kind 'ldlp'       AdaEAGLE's draft-length predictor: input [last target feature, embedding
 *                     of the root token] (2d); output the accepted length of the round, as
 *                     maxDepth + 1 class logits ('classification') or one number ('regression')
 *   kind 'specdec++'  SpecDec++'s acceptance head: input [draft hidden row that proposed a
 *                     token, that token's embedding] (2d); output one logit of P(accepted)
 *
 * Input standardisation is folded into the first layer at save time, so inference feeds raw
 * features.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, FormatError } from '../errors.ts';
import type { ModelConfig } from '../model/config.ts';
import { mlpShapes, mlpWeightsProblem, type MlpConfig } from '../model/mlp.ts';
import type { Weights } from '../model/weights.ts';
import { writeFileAtomic } from './atomic.ts';
import { readModelDir } from './read.ts';
import { readSafetensors, writeSafetensors } from './safetensors.ts';

export type PredictorKind = 'ldlp' | 'specdec++';
export type Objective = 'classification' | 'regression' | 'bce';

export interface PredictorConfig {
  format: 'eaglet-predictor';
  version: 1;
  kind: PredictorKind;
  objective: Objective;
  /** Width d of the target model it reads features of. */
  dim: number;
  /** Deepest draft of the round logs it was trained on (LDLP predicts 0..maxDepth). */
  maxDepth: number;
  /**
   * LDLP label: 'accepted' (AdaEAGLE: the round's accepted length; the policy drafts it + offset)
   * or 'cost-aware' (the depth with the most tokens per ms under measured costs; drafted as is).
   * Absent = 'accepted'.
   */
  label?: 'accepted' | 'cost-aware';
  mlp: MlpConfig;
}

export interface Predictor {
  config: PredictorConfig;
  weights: Weights;
}

const OBJECTIVES: Record<PredictorKind, Objective[]> = { ldlp: ['classification', 'regression'], 'specdec++': ['bce'] };

/** Output width an objective needs. */
export const outputDim = (objective: Objective, maxDepth: number): number => (objective === 'classification' ? maxDepth + 1 : 1);

/** What is wrong with a parsed config.json, or null. */
function configProblem(c: PredictorConfig): string | null {
  if (c.format !== 'eaglet-predictor' || c.version !== 1) return 'not an eaglet predictor config (format "eaglet-predictor", version 1)';
  if (!Object.hasOwn(OBJECTIVES, c.kind)) return `unknown kind ${JSON.stringify(c.kind)} (expected ${Object.keys(OBJECTIVES).join(' or ')})`;
  if (!OBJECTIVES[c.kind].includes(c.objective)) return `objective ${JSON.stringify(c.objective)} is not one of ${OBJECTIVES[c.kind].join(', ')} for ${c.kind}`;
  const count = (v: unknown) => Number.isInteger(v) && (v as number) > 0;
  if (!count(c.dim) || !count(c.maxDepth)) return 'dim and maxDepth must be positive integers';
  const m = c.mlp;
  if (!m || !count(m.inputDim) || !Array.isArray(m.hidden) || !m.hidden.every(count) || !count(m.outputDim)) return 'mlp needs positive integer inputDim, hidden[], outputDim';
  if (m.inputDim !== 2 * c.dim) return `mlp.inputDim ${m.inputDim} must be 2 * dim = ${2 * c.dim}`;
  if (m.outputDim !== outputDim(c.objective, c.maxDepth)) return `mlp.outputDim ${m.outputDim} does not fit objective ${c.objective} with maxDepth ${c.maxDepth}`;
  return null;
}

/**
 * Loads the predictor in `dir` for `target`, drafting trees at most `maxDepth` deep. Errors name
 * the file: FormatError for unreadable files, ConfigError for a predictor of another kind, width
 * or (for LDLP) a shallower depth range than the trees it must size.
 */
export function loadPredictor(dir: string, kind: PredictorKind, target: Pick<ModelConfig, 'dim'>, maxDepth: number): Predictor {
  const { cfgFile, json, weightsFile: file } = readModelDir(dir, 'predictor');
  const config = json as unknown as PredictorConfig;
  const bad = configProblem(config);
  if (bad) throw new FormatError(cfgFile, bad);
  if (config.kind !== kind) throw new ConfigError(cfgFile, `is a ${config.kind} predictor, not ${kind}`);
  if (config.dim !== target.dim) throw new ConfigError(cfgFile, `predictor dim ${config.dim} does not match the target's ${target.dim}: it was trained for another model`);
  if (kind === 'ldlp' && config.maxDepth < maxDepth)
    throw new ConfigError(cfgFile, `predicts depths up to ${config.maxDepth} but the tree drafts up to ${maxDepth}: collect lengths at depth ${maxDepth} and retrain, or lower --depth`);
  const shapes = mlpShapes(config.mlp);
  const { tensors } = readSafetensors(file, (name) => shapes.has(name));
  const wrong = mlpWeightsProblem(config.mlp, tensors);
  if (wrong) throw new FormatError(file, wrong);
  return { config, weights: tensors };
}

/** Writes `p` to `dir` (created if needed); each file atomically. */
export function savePredictor(dir: string, p: Predictor, metadata: Record<string, string> = {}): void {
  mkdirSync(dir, { recursive: true });
  writeSafetensors(join(dir, 'model.safetensors'), p.weights, { format: 'pt', ...metadata });
  writeFileAtomic(join(dir, 'config.json'), JSON.stringify(p.config, null, 2) + '\n');
}
