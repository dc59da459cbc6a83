/**
 * AdaEDL (Agrawal, Jeon, Lee; arXiv 2410.18351): training-free early draft stopping. From the
 * paper: the probability that a drafted token is accepted is bounded below, approximately, by
 * 1 - sqrt(gamma * H(q)), with H(q) the entropy of the draft distribution q that proposes it;
 * drafting stops as soon as that bound falls below a threshold lambda, and lambda adapts to the
 * acceptance rate observed so far.
 *
 * As published here: H is the FULL-vocabulary entropy, computed in the draft graph for every
 * drafted row (a top-k estimate is capped at ln(k+1) and never stops); and the check is made on
 * the distribution that proposes the next level, after its draft pass and before the level
 * joins the tree (`keepLevel`), as the paper checks each token's own distribution before
 * sampling it. In a tree the proposer is the best frontier node's row.
 *
 * Ours: the tree adaptation above, and lambda's update. We could not read the paper's exact
 * update rule, only that lambda follows the observed acceptance rate, so this is a
 * Robbins-Monro step towards a target rate, after every drafted round:
 *
 *     S <- beta * S + accepted                      (accepted drafted tokens)
 *     T <- beta * T + accepted + [accepted < depth] (drafted tokens the target judged)
 *     alpha = S / T                                 (per-token acceptance rate, recent rounds)
 *     lambda <- clamp(lambda + rate * (target - alpha), 0, 1)
 *
 *   Acceptance below `target` raises lambda (stop earlier), above it lowers lambda (go deeper).
 *   A chain judges the tokens up to and including the first rejection, hence T's indicator.
 *
 * Defaults (ours, chosen on the default pair so the check does stop there; the paper's gamma is
 * about 0.2, which there stopped at depth ~1.5 of 8 and lost to static drafting): gamma 0.1,
 * lambda 0.5, target 0.7. Drafting continues while H <= (1 - lambda)^2 / gamma: 2.5 nats at
 * lambda 0.5.
 */
import type { Frontier } from '../../trees/index.ts';
import { resolveOptions, type FlagSpec } from '../option-schema.ts';
import type { LengthPolicy, RoundOutcome, RoundPlan, RoundState } from './policy.ts';

export interface AdaEdlOptions {
  /** Entropy scale in the bound 1 - sqrt(gamma * H). Default 0.1. */
  gamma: number;
  /** Initial stopping threshold lambda on the bound. Default 0.5. */
  lambda: number;
  /** Acceptance rate lambda steers towards. Default 0.7. */
  target: number;
  /** Step of the lambda update; 0 keeps lambda fixed. Default 0.05. */
  rate: number;
  /** Weight of the past in the acceptance-rate average. Default 0.9. */
  beta: number;
}

export const ADAEDL_FLAGS: FlagSpec[] = [
  { flag: 'gamma', type: 'number', above: 0, default: 0.1, meta: 'G', help: 'entropy scale in the acceptance bound 1 - sqrt(G * H)' },
  { flag: 'lambda', type: 'number', min: 0, max: 1, default: 0.5, meta: 'L', help: 'initial threshold: stop drafting when the bound falls below L' },
  { flag: 'target', type: 'number', min: 0, max: 1, default: 0.7, meta: 'A', help: 'acceptance rate the threshold steers towards' },
  { flag: 'rate', type: 'number', min: 0, max: 1, default: 0.05, meta: 'R', help: 'threshold step per round (0 = fixed threshold)' },
  { flag: 'beta', type: 'number', min: 0, max: 1, default: 0.9, meta: 'B', help: 'weight of the past in the acceptance-rate average' },
];

/** AdaEDL's lower bound on the acceptance probability of a token drawn with entropy `h` (nats). */
export const acceptanceBound = (gamma: number, h: number): number => 1 - Math.sqrt(gamma * Math.max(0, h));

export class AdaEdlPolicy implements LengthPolicy {
  readonly name = 'adaedl';
  readonly options: AdaEdlOptions;
  /** Current threshold on the bound. */
  lambda: number;
  private accepted = 0; // S, decayed
  private judged = 0; // T, decayed

  constructor(readonly totalTokens: number, options: Partial<AdaEdlOptions> = {}) {
    this.options = resolveOptions<AdaEdlOptions>(ADAEDL_FLAGS, options);
    this.lambda = this.options.lambda;
  }

  /** Recent per-token acceptance rate (NaN before any drafted round). */
  get acceptanceRate(): number {
    return this.accepted / this.judged;
  }

  plan(s: RoundState): RoundPlan {
    return { depth: s.maxDepth, totalTokens: this.totalTokens };
  }

  /** Keeps the next level while the bound for the best frontier node's own distribution holds. */
  keepLevel(_f: Frontier, rowEntropies: ArrayLike<number>): boolean {
    return acceptanceBound(this.options.gamma, rowEntropies[0]) >= this.lambda;
  }

  observe(o: RoundOutcome): void {
    if (o.depth === 0) return;
    const { beta, rate, target } = this.options;
    this.accepted = beta * this.accepted + o.accepted;
    this.judged = beta * this.judged + o.accepted + (o.accepted < o.depth ? 1 : 0);
    this.lambda = Math.min(1, Math.max(0, this.lambda + rate * (target - this.acceptanceRate)));
  }
}
