/** The random-weight target sizes the runtime benchmarks measure (cost only). */
import type { ModelConfig } from '../src/model/config.ts';
import { makeConfig } from '../src/model/random.ts';

export const SIZES: Record<string, ModelConfig> = {
  '1M': makeConfig({ vocabSize: 512, dim: 128, nLayers: 4, nHeads: 4, hiddenDim: 384, maxSeqLen: 512 }),
  '10M': makeConfig({ vocabSize: 4096, dim: 256, nLayers: 8, nHeads: 8, nKvHeads: 4, hiddenDim: 704, maxSeqLen: 512 }),
  '100M': makeConfig({ vocabSize: 32000, dim: 768, nLayers: 8, nHeads: 12, nKvHeads: 4, hiddenDim: 2048, maxSeqLen: 512 }),
};
