/** Random tiny models for properties: fast-check arbitraries and a one-call generator factory. */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { loadGenerator, type LoadedGenerator } from '../../src/api.ts';
import type { ModelConfig } from '../../src/model/config.ts';
import { headConfigFor, randomHeadWeights } from '../../src/model/draft-head.ts';
import { makeConfig, randomWeights } from '../../src/model/random.ts';
import type { TreeShape } from '../../trees/index.ts';
import type { LengthPolicy } from '../../src/policies/policy.ts';
import { Rng } from '../../src/util/rng.ts';

/** Tiny Llama configs: GQA on/off, tied/untied, q/k/v biases, two RoPE thetas. */
export const tinyConfig = (maxSeqLen = 96): fc.Arbitrary<ModelConfig> =>
  fc
    .record({
      vocabSize: fc.integer({ min: 16, max: 64 }),
      nHeads: fc.constantFrom(1, 2, 4),
      kvDiv: fc.constantFrom(1, 2),
      headDim: fc.constantFrom(4, 8),
      nLayers: fc.integer({ min: 1, max: 2 }),
      tieEmbeddings: fc.boolean(),
      attentionBias: fc.boolean(),
      ropeTheta: fc.constantFrom(10000, 500),
    })
    .map(({ kvDiv, headDim, nHeads, ...r }) =>
      makeConfig({ ...r, nHeads, nKvHeads: Math.max(1, nHeads / kvDiv), headDim, dim: nHeads * headDim, maxSeqLen }),
    );

/**
 * A context at which every tinyConfig shape renders 'split' attention (defaultAttention: past
 * K/V of a layer >= 1 MiB at 4 floats a row), so its caches hold values transposed; the short
 * default renders 'fused' over values in rows.
 */
export const SPLIT_CONTEXT = 1 << 15;

/** tinyConfig at a short context or at SPLIT_CONTEXT: both attention renderings and both value layouts. */
export const tinyConfigEitherLayout = (short = 96): fc.Arbitrary<ModelConfig> => fc.oneof(tinyConfig(short), tinyConfig(SPLIT_CONTEXT));

export const treeShape: fc.Arbitrary<TreeShape> = fc.record({
  topK: fc.integer({ min: 1, max: 4 }),
  maxDepth: fc.integer({ min: 1, max: 6 }),
  totalTokens: fc.integer({ min: 1, max: 24 }),
});

export interface TinyPair {
  cfg: ModelConfig;
  ar: LoadedGenerator;
  spec: LoadedGenerator;
  dispose(): Promise<void>;
}

/**
 * A random target (weights scaled so next-token distributions are peaked, which makes drafts
 * sometimes right) with a plain generator and a speculative one over a random head
 * (`keepWeights`: the speculative one keeps its weights, as serving needs).
 */
export async function tinyPair(cfg: ModelConfig, seed: number, tree: TreeShape, policy?: LengthPolicy, scale = 3, keepWeights = false): Promise<TinyPair> {
  const model = { config: cfg, weights: randomWeights(cfg, seed, scale), source: 'hf' as const };
  const draft = { config: headConfigFor(cfg), weights: randomHeadWeights(cfg, seed + 1) };
  const ar = await loadGenerator({ model, threads: 1 });
  const spec = await loadGenerator({ model, draft, tree, policy, threads: 1, keepWeights });
  return { cfg, ar, spec, dispose: async () => (await ar.dispose(), await spec.dispose()) };
}

/**
 * Random weights where every odd token's embedding and output rows are its even neighbour's
 * times (1 + eps * noise): the near-duplicate rows real vocabularies have ("Hello"/" Hello"),
 * which random models never produce. Their logits sit within rounding of each other, so the
 * pass shape (one token vs a tree) can decide between them.
 */
export function nearDuplicateWeights(cfg: ModelConfig, seed: number, scale = 3, eps = 1e-6) {
  const w = randomWeights(cfg, seed, scale), rng = new Rng(seed + 7);
  for (const name of ['model.embed_tokens.weight', 'lm_head.weight']) {
    const t = w.get(name);
    if (!t) continue; // tied embeddings: one table serves both
    const d = t.shape[1];
    for (let v = 1; v < cfg.vocabSize; v += 2)
      for (let i = 0; i < d; i++) t.data[v * d + i] = t.data[(v - 1) * d + i] * (1 + eps * rng.normal());
  }
  return w;
}

/** tinyPair over nearDuplicateWeights. */
export async function nearDuplicatePair(cfg: ModelConfig, seed: number, tree: TreeShape, policy?: LengthPolicy): Promise<TinyPair> {
  const model = { config: cfg, weights: nearDuplicateWeights(cfg, seed), source: 'hf' as const };
  const draft = { config: headConfigFor(cfg), weights: randomHeadWeights(cfg, seed + 1) };
  const ar = await loadGenerator({ model, threads: 1 });
  const spec = await loadGenerator({ model, draft, tree, policy, threads: 1 });
  return { cfg, ar, spec, dispose: async () => (await ar.dispose(), await spec.dispose()) };
}

/** Drafted tokens accepted over rounds, summed across runs (a property's "speculation was exercised" check). */
export class AcceptanceTally {
  accepted = 0;
  rounds = 0;
  add(stats: { roundTokens: number; rounds: number }): void {
    this.accepted += stats.roundTokens - stats.rounds;
    this.rounds += stats.rounds;
  }
  toString(): string {
    return `accepted ${this.accepted} drafted tokens over ${this.rounds} rounds`;
  }
}

type Generate = LoadedGenerator['generate'];

/** Runs plain and speculative generation on the same prompt and options, asserts equal ids, and returns the speculative result. */
export async function sameAsPlain(ar: { generate: Generate }, spec: { generate: Generate }, prompt: number[], opts: Parameters<Generate>[1]): ReturnType<Generate> {
  const a = await ar.generate(prompt, opts);
  const s = await spec.generate(prompt, opts);
  assert.deepEqual(s.ids, a.ids);
  return s;
}

/** A random prompt of 1-10 ids below `vocab`. */
export const prompt = (vocab: number): fc.Arbitrary<number[]> => fc.array(fc.integer({ min: 0, max: vocab - 1 }), { minLength: 1, maxLength: 10 });
