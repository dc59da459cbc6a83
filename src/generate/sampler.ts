/**
 * Turns one row of target logits into the next token: greedy argmax, or a seeded sample after
 * temperature, top-k and top-p. Speculative and plain decoding share this object, and each
 * emitted token consumes exactly one uniform draw, so with the same seed both produce the same
 * tokens (the lossless sampling rule in trees/accept.ts relies on this).
 */
import { Rng } from '../util/rng.ts';

export interface SamplingOptions {
  /** 0 = greedy. Default 0. */
  temperature: number;
  /** Keep the k most likely tokens; 0 = all. Default 0. */
  topK: number;
  /** Keep the smallest set with cumulative probability >= topP; 1 = all. Default 1. */
  topP: number;
  seed: number;
}

export class Sampler {
  private rng: Rng;
  private probs: Float64Array; // [V] scratch
  private order: Int32Array; // [V] scratch: candidate ids sorted by probability

  constructor(readonly opts: SamplingOptions, vocabSize: number) {
    this.rng = new Rng(opts.seed);
    this.probs = new Float64Array(vocabSize);
    this.order = new Int32Array(vocabSize);
  }

  get greedy(): boolean {
    return this.opts.temperature === 0;
  }

  /** Next token from logits[offset .. offset+V). */
  pick(logits: Float32Array, offset = 0): number {
    if (this.greedy) return argmax(logits, offset, this.probs.length);
    const n = this.distribution(logits, offset);
    let u = this.rng.next(), last = this.order[0];
    for (let i = 0; i < n; i++) {
      const id = this.order[i];
      u -= this.probs[id];
      last = id;
      if (u < 0) return id;
    }
    return last; // rounding: u landed past the last bucket
  }

  /**
   * Writes the processed distribution into `probs` (support listed in `order[0..n)`, sorted by
   * decreasing probability when top-k/top-p cut it) and returns n. Exposed for tests.
   */
  distribution(logits: Float32Array, offset = 0): number {
    const V = this.probs.length, p = this.probs, order = this.order, t = this.opts.temperature;
    let max = -Infinity;
    for (let i = 0; i < V; i++) if (logits[offset + i] > max) max = logits[offset + i];
    let sum = 0;
    for (let i = 0; i < V; i++) {
      const e = Math.exp((logits[offset + i] - max) / t);
      p[i] = e;
      sum += e;
      order[i] = i;
    }
    let n = V;
    const { topK, topP } = this.opts;
    if ((topK > 0 && topK < V) || topP < 1) {
      // Sorting all V ids is O(V log V); fine for the vocabularies here and far below a target pass.
      const sorted = Array.from(order).sort((a, b) => p[b] - p[a] || a - b);
      for (let i = 0; i < V; i++) order[i] = sorted[i];
      if (topK > 0 && topK < V) n = topK;
      if (topP < 1) {
        let acc = 0, k = 0;
        while (k < n) {
          acc += p[order[k++]] / sum;
          if (acc >= topP) break;
        }
        n = k;
      }
      sum = 0;
      for (let i = 0; i < n; i++) sum += p[order[i]];
      for (let i = n; i < V; i++) p[order[i]] = 0;
    }
    for (let i = 0; i < V; i++) p[i] /= sum;
    return n;
  }

  /** Probability of `id` under the last `distribution` call. */
  prob(id: number): number {
    return this.probs[id];
  }
}

/** Index of the largest of x[offset .. offset+n); the first on ties. */
export function argmax(x: ArrayLike<number>, offset: number, n: number): number {
  let best = 0, bv = x[offset];
  for (let i = 1; i < n; i++) {
    const v = x[offset + i];
    if (v > bv) {
      bv = v;
      best = i;
    }
  }
  return best;
}
