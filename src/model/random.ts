/** Random-weight models: for correctness properties and for cost benchmarks. */
import type { ModelConfig } from './config.ts';
import { EMBEDDING, expectedShapes, tensor, type Weights } from './weights.ts';
import { Rng } from '../util/rng.ts';

/** A Llama config with sensible defaults for the fields not given. */
export function makeConfig(p: Partial<ModelConfig> & Pick<ModelConfig, 'vocabSize' | 'dim' | 'nLayers' | 'nHeads'>): ModelConfig {
  const nHeads = p.nHeads;
  return {
    hiddenDim: p.hiddenDim ?? Math.ceil((p.dim * 8) / 3 / 8) * 8,
    nKvHeads: p.nKvHeads ?? nHeads,
    headDim: p.headDim ?? p.dim / nHeads,
    maxSeqLen: p.maxSeqLen ?? 256,
    ropeTheta: p.ropeTheta ?? 10000,
    normEps: p.normEps ?? 1e-5,
    tieEmbeddings: p.tieEmbeddings ?? false,
    attentionBias: p.attentionBias ?? false,
    eosTokenIds: p.eosTokenIds ?? [],
    ...p,
  } as ModelConfig;
}

/**
 * Random weights for `c`: linear weights ~ N(0, scale/sqrt(fan_in)), norm weights around 1.
 * `scale` > 1 gives peakier (more confident) next-token distributions.
 */
export function randomWeights(c: ModelConfig, seed: number, scale = 1): Weights {
  const rng = new Rng(seed);
  const w: Weights = new Map();
  for (const [name, shape] of expectedShapes(c)) {
    const t = tensor(shape);
    if (name.endsWith('norm.weight')) {
      for (let i = 0; i < t.data.length; i++) t.data[i] = 1 + 0.1 * rng.normal();
    } else if (name.endsWith('.bias')) {
      for (let i = 0; i < t.data.length; i++) t.data[i] = 0.1 * rng.normal();
    } else {
      const fanIn = shape[shape.length - 1];
      const std = name === EMBEDDING ? scale : scale / Math.sqrt(fanIn);
      for (let i = 0; i < t.data.length; i++) t.data[i] = std * rng.normal();
    }
    w.set(name, t);
  }
  return w;
}
