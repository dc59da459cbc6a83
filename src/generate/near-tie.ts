/**
 * What "speculative equals plain" can promise in float32, and the check that holds it.
 *
 * Every emitted token is a draw from the target's distribution at its prefix: lossless in
 * distribution, always. With the same seed the ids also equal plain decoding's, except where
 * float32 rounding decides a near-tie: plain decoding scores a position in a one-token pass,
 * speculation in a tree pass of another shape, and the two logit rows differ in the last bits
 * (~1e-6 on the models here). That can flip a greedy argmax between two logits that close, a
 * sampled draw that lands that close to a CDF boundary, or a token sitting exactly at the
 * top-k/top-p cut. Nothing else can change an id.
 *
 * So a mismatch is classified at the FIRST differing position j (the prefixes agree before it):
 * the target's logits at j are recomputed, in a one-token pass as plain decoding ran it and in
 * one wide pass over the whole prefix (a different matmul shape, reported as `shapeDiff`), and
 * the mismatch counts as a near-tie only if moving every logit by at most `tolerance`
 * (NEAR_TIE_TOLERANCE, 50x the ~2e-6 observed between shapes) in a direction that favours the
 * speculative token makes the same sampler, with the same uniform draw, pick it. The directions
 * tried are the extremal ones: the speculative token up and the plain one down; every token on
 * the speculative token's side of the CDF up and the rest down; the speculative token up and all
 * others down; the plain token down and all others up. Any other mismatch is a real one.
 */
import type { ModelConfig } from '../model/config.ts';
import { KVCache } from '../runtime/kv-cache.ts';
import type { TargetSession } from '../runtime/target.ts';
import { Rng } from '../util/rng.ts';
import { Sampler, type SamplingOptions } from './sampler.ts';

/** Largest logit perturbation (before temperature) a near-tie may need. */
export const NEAR_TIE_TOLERANCE = 1e-4;

export interface MismatchVerdict {
  /** Index into the generated ids of the first difference. */
  position: number;
  plainToken: number;
  specToken: number;
  /** A near-tie (explained by rounding within the tolerance) rather than a real mismatch. */
  nearTie: boolean;
  /** Recomputed logit of the plain token minus the speculative token's. */
  logitGap: number;
  /** max |one-token pass logits - wide pass logits| at the position: the rounding actually seen. */
  shapeDiff: number;
  /** The uniform draw the position consumed (undefined when greedy). */
  draw?: number;
}

/**
 * Whether some perturbation of `logits` (row at `offset`, V wide) by at most `tolerance` per
 * logit makes the sampler pick `specToken` with draw `u` (see the module comment).
 */
export function isNearTie(logits: Float32Array, offset: number, V: number, opts: SamplingOptions, u: number, plainToken: number, specToken: number, tolerance = NEAR_TIE_TOLERANCE): boolean {
  const z = logits.slice(offset, offset + V), s = new Sampler(opts, V), moved = new Float32Array(V);
  const a = plainToken, b = specToken;
  const tries: ((i: number) => number)[] = [
    (i) => (i === b ? 1 : i === a ? -1 : 0),
    (i) => (b < a ? (i <= b ? 1 : -1) : i <= a ? -1 : 1),
    (i) => (i === b ? 1 : -1),
    (i) => (i === a ? -1 : 1),
  ];
  for (const dir of tries) {
    for (let i = 0; i < V; i++) moved[i] = z[i] + dir(i) * tolerance;
    if (s.pickWith(u, moved) === b) return true;
  }
  return false;
}

/** The i-th uniform draw (0-based) of a sampler seeded with `seed`: emitted token i consumed it. */
export function drawAt(seed: number, i: number): number {
  const rng = new Rng(seed);
  let u = 0;
  for (let k = 0; k <= i; k++) u = rng.next();
  return u;
}

/**
 * Classifies the first difference between plain decoding's ids and speculative decoding's for
 * the same prompt and options; null when they are equal. A run that is a strict prefix of the
 * other (one stopped early) is a real mismatch with specToken or plainToken -1.
 */
export async function classifyMismatch(target: TargetSession, prompt: ArrayLike<number>, plain: readonly number[], spec: readonly number[], opts: SamplingOptions, tolerance = NEAR_TIE_TOLERANCE): Promise<MismatchVerdict | null> {
  let j = 0;
  while (j < plain.length && j < spec.length && plain[j] === spec[j]) j++;
  if (j === plain.length && j === spec.length) return null;
  const plainToken = plain[j] ?? -1, specToken = spec[j] ?? -1;
  if (plainToken < 0 || specToken < 0) return { position: j, plainToken, specToken, nearTie: false, logitGap: NaN, shapeDiff: NaN };
  const context = [...Array.from(prompt), ...plain.slice(0, j)];
  const { one, wide } = await logitsAtEnd(target, context);
  const V = target.cfg.vocabSize;
  let shapeDiff = 0;
  for (let i = 0; i < V; i++) shapeDiff = Math.max(shapeDiff, Math.abs(one[i] - wide[i]));
  const greedy = opts.temperature === 0, u = greedy ? 0 : drawAt(opts.seed, j);
  return {
    position: j, plainToken, specToken, shapeDiff,
    nearTie: isNearTie(one, 0, V, opts, u, plainToken, specToken, tolerance),
    logitGap: one[plainToken] - one[specToken],
    ...(greedy ? {} : { draw: u }),
  };
}

/** The last position's logits of `context`, from a one-token pass after a prefill and from one wide pass. */
async function logitsAtEnd(target: TargetSession, context: number[]): Promise<{ one: Float32Array; wide: Float32Array }> {
  const c: ModelConfig = target.cfg, L = context.length, V = c.vocabSize;
  const positions = Int32Array.from(context, (_, i) => i);
  const cache = new KVCache(c.nLayers, c.nKvHeads, c.headDim, c.maxSeqLen);
  const full = await target.forward(cache, context, positions);
  const wide = full.logits.slice((L - 1) * V, L * V);
  if (L === 1) return { one: wide, wide };
  const pre = await target.forward(cache, context.slice(0, L - 1), positions.subarray(0, L - 1));
  cache.append(pre.newKeys, pre.newValues, L - 1);
  const step = await target.forward(cache, [context[L - 1]], [L - 1]);
  return { one: step.logits.slice(0, V), wide };
}
