/** The random-weight target sizes the runtime benchmarks measure (cost only), and the context they time passes after. */
import type { ModelConfig } from '../src/model/config.ts';
import { makeConfig } from '../src/model/random.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import type { TargetSession } from '../src/runtime/target.ts';
import { UsageError } from '../src/errors.ts';

export const SIZES: Record<string, ModelConfig> = {
  '1M': makeConfig({ vocabSize: 512, dim: 128, nLayers: 4, nHeads: 4, hiddenDim: 384, maxSeqLen: 512 }),
  '10M': makeConfig({ vocabSize: 4096, dim: 256, nLayers: 8, nHeads: 8, nKvHeads: 4, hiddenDim: 704, maxSeqLen: 512 }),
  '100M': makeConfig({ vocabSize: 32000, dim: 768, nLayers: 8, nHeads: 12, nKvHeads: 4, hiddenDim: 2048, maxSeqLen: 512 }),
};

/** Context-sweep configs (bench:runtime --sweep): long context, K/V about as many bytes as the weights at 4000 rows. */
export const SWEEP: Record<string, ModelConfig> = {
  '29M': makeConfig({ vocabSize: 4096, dim: 512, nLayers: 8, nHeads: 8, hiddenDim: 1408, maxSeqLen: 4160 }),
  // The embedded default target's shape (random weights).
  'default-shape': makeConfig({ vocabSize: 1536, dim: 128, nLayers: 8, nHeads: 4, nKvHeads: 2, headDim: 32, hiddenDim: 344, maxSeqLen: 4160 }),
  '100M-long': makeConfig({ vocabSize: 32000, dim: 768, nLayers: 8, nHeads: 12, nKvHeads: 4, hiddenDim: 2048, maxSeqLen: 4160 }),
};

/** The config `table` holds under `name` (a flag's value); another name is an error naming `flag` and the names it takes. */
export function sizeNamed(table: Record<string, ModelConfig>, name: string, flag: string): ModelConfig {
  const cfg = table[name];
  if (!cfg) throw new UsageError(flag, `unknown size ${name} (have ${Object.keys(table).join(', ')})`);
  return cfg;
}

/**
 * A cache for `target` holding a committed prefix of `n` tokens (ids 7i mod V at positions
 * 0..n-1), the context a benchmark times passes after; `prefix` are those ids.
 */
export async function prefilledCache(target: TargetSession, n = 64): Promise<{ cache: KVCache; prefix: number[] }> {
  const cfg = target.cfg;
  const cache = new KVCache(cfg.nLayers, cfg.nKvHeads, cfg.headDim, cfg.maxSeqLen);
  const prefix = Array.from({ length: n }, (_, i) => (i * 7) % cfg.vocabSize);
  const pre = await target.forward(cache, prefix, prefix.map((_, i) => i));
  cache.append(pre.newKeys, pre.newValues, n);
  return { cache, prefix };
}
