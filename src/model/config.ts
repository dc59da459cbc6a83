import type { RopeScaling } from './rope.ts';

/**
 * The one model config for Llama-family decoders (Llama 2/3, Mistral, Qwen2, Qwen3, llama2.c).
 * Weights always use the HF layout and the HF "rotate halves" RoPE convention; loaders of
 * other layouts (llama2.c's interleaved pairs) convert on load.
 */
export interface ModelConfig {
  vocabSize: number;
  /** Model width d (HF hidden_size). */
  dim: number;
  /** SwiGLU inner width (HF intermediate_size). */
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  /** Grouped-query attention: nKvHeads divides nHeads. */
  nKvHeads: number;
  /** Per-head width; dim / nHeads unless the checkpoint says otherwise. */
  headDim: number;
  /** Context length: the K/V cache is preallocated to this many rows. */
  maxSeqLen: number;
  ropeTheta: number;
  /** Llama 3 frequency scaling; absent = plain RoPE. */
  ropeScaling?: RopeScaling;
  normEps: number;
  /** Output head shares the embedding table. */
  tieEmbeddings: boolean;
  /** Qwen2-style biases on q/k/v projections. */
  attentionBias: boolean;
  /** Qwen3-style RMSNorm of each q and k head (weights [headDim]) before RoPE. */
  qkNorm?: boolean;
  bosTokenId?: number;
  /** Generation stops at any of these. */
  eosTokenIds: number[];
}

/** Throws a plain Error naming the first inconsistent field; callers wrap it with the file name. */
export function checkConfig(c: ModelConfig): void {
  const ints: (keyof ModelConfig)[] = ['vocabSize', 'dim', 'hiddenDim', 'nLayers', 'nHeads', 'nKvHeads', 'headDim', 'maxSeqLen'];
  for (const k of ints) {
    const v = c[k] as number;
    if (!Number.isInteger(v) || v <= 0) throw new Error(`${k} must be a positive integer, got ${v}`);
  }
  if (c.nHeads % c.nKvHeads !== 0) throw new Error(`nHeads (${c.nHeads}) must be a multiple of nKvHeads (${c.nKvHeads})`);
  if (c.headDim % 2 !== 0) throw new Error(`headDim must be even for RoPE, got ${c.headDim}`);
  if (!(c.ropeTheta > 0)) throw new Error(`ropeTheta must be positive, got ${c.ropeTheta}`);
  if (!(c.normEps > 0)) throw new Error(`normEps must be positive, got ${c.normEps}`);
}

/** Number of parameters the config implies (embeddings counted once when tied). */
export function parameterCount(c: ModelConfig): number {
  const q = c.nHeads * c.headDim, kv = c.nKvHeads * c.headDim;
  const attn = c.dim * q + 2 * c.dim * kv + q * c.dim + (c.attentionBias ? q + 2 * kv : 0) + (c.qkNorm ? 2 * c.headDim : 0);
  const mlp = 3 * c.dim * c.hiddenDim;
  const layer = attn + mlp + 2 * c.dim;
  return c.vocabSize * c.dim * (c.tieEmbeddings ? 1 : 2) + c.nLayers * layer + c.dim;
}
