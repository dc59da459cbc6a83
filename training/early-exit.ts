/**
 * The early-exit loss (LayerSkip-style): next-token cross-entropy at every layer's normed hidden
 * state through the shared final norm and LM head, so the target's early layers can draft for
 * it (self-speculative decoding, src/generate/self-drafter.ts).
 *
 *   loss = CE(final) + W * sum_{l=1}^{L-1} w_l * CE(lmHead(norm(h_l)))     w_l = l / sum_{i<L} i
 *
 * h_l is the residual stream after l layers. Ours, not LayerSkip's exact recipe (which scales
 * per-layer weights with an exponential curriculum and rotates which layers get a loss): weights
 * rise linearly with depth and sum to 1, so W is the weight of all early exits together against
 * the final layer's 1; every step trains every exit.
 *
 * Written over the model definition's `Ops` plus a cross-entropy callback, so any training
 * backend that renders the definition (tfjs today) composes it the same way.
 */
import { finalNorm, lmHead, type Ops } from '../src/model/definition.ts';
import type { ModelConfig } from '../src/model/config.ts';

/** Weights of the early exits after layers 1..L-1 (index l-1), rising linearly, summing to W. Empty for L = 1 or W = 0. */
export function earlyExitWeights(nLayers: number, W: number): number[] {
  if (nLayers < 2 || W === 0) return [];
  const total = (nLayers * (nLayers - 1)) / 2;
  return Array.from({ length: nLayers - 1 }, (_, i) => (W * (i + 1)) / total);
}

/**
 * The weighted early-exit terms: sum over l of weight_l * crossEntropy(logits of exit l), where
 * `hiddens` are llamaForward's per-layer residuals (the last one, the final layer's, is not an
 * early exit and is skipped). `add`/`scale` combine the backend's scalars.
 */
export function earlyExitLoss<T>(
  ops: Ops<T>, cfg: ModelConfig, hiddens: T[], W: number,
  crossEntropy: (logits: T) => T, scale: (x: T, w: number) => T,
): T | null {
  const weights = earlyExitWeights(cfg.nLayers, W);
  let sum: T | null = null;
  weights.forEach((w, i) => {
    const term = scale(crossEntropy(lmHead(ops, cfg, finalNorm(ops, cfg, hiddens[i]))), w);
    sum = sum === null ? term : ops.add(sum, term);
  });
  return sum;
}
