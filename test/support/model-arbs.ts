/**
 * fast-check generators and comparisons shared by the forward tests: tiny random Llama configs
 * (GQA on/off, tied/untied, Qwen2 biases on/off, Qwen3 q/k norms on/off, varied theta, Llama 3
 * rope scaling on/off), token sequences, draft trees.
 */
import fc from 'fast-check';
import type { ModelConfig } from '../../src/model/config.ts';
import { makeConfig } from '../../src/model/random.ts';

export const MAX_SEQ = 64;

const divisors = (n: number): number[] => Array.from({ length: n }, (_, i) => i + 1).filter((k) => n % k === 0);

/** vocab 17-64, d 8-32, 1-3 layers, 1-4 heads, head width independent of d (as in Qwen). */
export const arbConfig: fc.Arbitrary<ModelConfig> = fc
  .integer({ min: 1, max: 4 })
  .chain((nHeads) =>
    fc.record({
      vocabSize: fc.integer({ min: 17, max: 64 }),
      dim: fc.integer({ min: 8, max: 32 }),
      hiddenDim: fc.integer({ min: 8, max: 48 }),
      nLayers: fc.integer({ min: 1, max: 3 }),
      nHeads: fc.constant(nHeads),
      nKvHeads: fc.constantFrom(...divisors(nHeads)),
      headDim: fc.constantFrom(2, 4, 6, 8),
      ropeTheta: fc.constantFrom(100, 10000, 1e6),
      normEps: fc.constantFrom(1e-5, 1e-6),
      tieEmbeddings: fc.boolean(),
      attentionBias: fc.boolean(),
      qkNorm: fc.boolean(),
      // Llama 3 scaling with an original context of 16-64 positions, so that at hd <= 8 some
      // pairs are kept, some blended and some slowed.
      ropeScaling: fc.option(
        fc.record({
          type: fc.constant('llama3' as const),
          factor: fc.constantFrom(2, 8, 32),
          lowFreqFactor: fc.constantFrom(0.5, 1),
          highFreqFactor: fc.constantFrom(2, 4),
          originalMaxPositions: fc.constantFrom(16, 64),
        }),
        { nil: undefined },
      ),
    }),
  )
  .map(({ ropeScaling, ...p }) => makeConfig({ ...p, ...(ropeScaling ? { ropeScaling } : {}), maxSeqLen: MAX_SEQ }));

/** `n` token ids below `vocab`. */
export const arbTokens = (vocab: number, min: number, max: number): fc.Arbitrary<number[]> =>
  fc.array(fc.integer({ min: 0, max: vocab - 1 }), { minLength: min, maxLength: max });

/** A draft forest as a parent array: parents[i] in [-1, i) (-1 = child of the committed prefix). */
export const arbParents = (min: number, max: number): fc.Arbitrary<number[]> =>
  fc.integer({ min, max }).chain((n) => fc.tuple(...Array.from({ length: n }, (_, i) => fc.integer({ min: -1, max: i - 1 }))));

/** Depth of each node (roots 0) */
export function depths(parents: ArrayLike<number>): number[] {
  const d: number[] = [];
  for (let i = 0; i < parents.length; i++) d.push(parents[i] < 0 ? 0 : d[parents[i]] + 1);
  return d;
}

/** Ancestor-or-self matrix [n, n] among the tree nodes (what TargetSession.forward takes). */
export function treeMask(parents: ArrayLike<number>): Uint8Array {
  const n = parents.length, m = new Uint8Array(n * n);
  for (let i = 0; i < n; i++) for (let a = i; a >= 0; a = parents[a]) m[i * n + a] = 1;
  return m;
}

/** Root-to-node path of `node`, ascending node indices. */
export function pathTo(parents: ArrayLike<number>, node: number): number[] {
  const p: number[] = [];
  for (let a = node; a >= 0; a = parents[a]) p.unshift(a);
  return p;
}

/**
 * Tolerance of float32 ORT against the float64 reference:
 * |a - b| <= atol + rtol * |b| + 1e-5 * max|want|.
 * The last term is there because float32 rounding in a sum grows with the terms summed, not with
 * the result: an element near 0 among large ones (a logit of -0.25 in a row reaching 24) carries
 * their rounding error (seen: 2.3e-4 there, 1e-5 of the row's scale). A wrong mask, position or
 * weight moves elements by a large fraction of the scale, far beyond this.
 * Returns the first violation as a message, or null.
 */
export function mismatch(what: string, got: ArrayLike<number>, want: ArrayLike<number>, atol = 1e-4, rtol = 1e-4): string | null {
  if (got.length !== want.length) return `${what}: length ${got.length} != ${want.length}`;
  let scale = 0;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]));
  for (let i = 0; i < got.length; i++) {
    if (!(Math.abs(got[i] - want[i]) <= atol + rtol * Math.abs(want[i]) + 1e-5 * scale)) return `${what}[${i}]: ${got[i]} != ${want[i]} (scale ${scale.toPrecision(3)})`;
  }
  return null;
}

/** Asserts no mismatch among the given comparisons (fast-check reports the message). */
export function expectClose(...checks: (string | null)[]): void {
  const bad = checks.find((c) => c !== null);
  if (bad) throw new Error(bad);
}

/** A decoding case for comparing two renderings of one target step by step (test/one-token, test/native-attention). */
export interface DecodeCase {
  heads: [number, number];
  headDim: number;
  qkNorm: boolean;
  attentionBias: boolean;
  tieEmbeddings: boolean;
  threads: number;
  seed: number;
  prompt: number;
}

/** Grouped and ungrouped heads, q/k norms, biases, tied embeddings, 1 or 2 threads, a 1-40 token prompt. */
export const arbDecodeCase = (headDims: number[]): fc.Arbitrary<DecodeCase> =>
  fc.record({
    heads: fc.constantFrom<[number, number]>([2, 2], [4, 2], [4, 1]),
    headDim: fc.constantFrom(...headDims),
    qkNorm: fc.boolean(),
    attentionBias: fc.boolean(),
    tieEmbeddings: fc.boolean(),
    threads: fc.constantFrom(1, 2),
    seed: fc.nat(1000),
    prompt: fc.integer({ min: 1, max: 40 }),
  });

/** The case's 2-layer config: vocabulary 37, context 160 (decoding runs past the cache's first 64-row stride). */
export const decodeConfig = ({ heads: [nHeads, nKvHeads], headDim, qkNorm, attentionBias, tieEmbeddings }: DecodeCase): ModelConfig =>
  makeConfig({ vocabSize: 37, dim: nHeads * headDim, nLayers: 2, nHeads, nKvHeads, headDim, qkNorm, attentionBias, tieEmbeddings, maxSeqLen: 160 });
