/**
 * AdaEDL (Agrawal, Jeon, Lee; arXiv 2410.18351): training-free early draft stopping. The
 * acceptance probability of a draft token is bounded below by 1 - sqrt(gamma * H(q)), with H(q)
 * the entropy of the draft distribution that proposed it; drafting stops once that bound for
 * the best frontier node falls below a threshold lambda.
 *
 * Two choices of ours, since we could not check the paper's exact text:
 * - H(q) comes from the draft's top-k only (`Frontier.entropies`: the mass outside the top-k
 *   counts as one outcome, a lower bound on the true entropy, so the bound is optimistic).
 * - lambda adapts to the observed acceptance rate with this update, after every drafted round:
 *
 *     S <- beta * S + accepted                      (accepted drafted tokens)
 *     T <- beta * T + accepted + [accepted < depth] (drafted tokens the target judged)
 *     alpha = S / T                                 (per-token acceptance rate, recent rounds)
 *     lambda <- clamp(lambda + rate * (target - alpha), 0, 1)
 *
 *   Acceptance below `target` raises lambda (stop earlier), above it lowers lambda (go deeper).
 *   A chain judges the tokens up to and including the first rejection, hence T's indicator.
 */
import type { Frontier } from '../../trees/index.ts';
import { resolveOptions, type FlagSpec } from '../option-schema.ts';
import type { LengthPolicy, RoundOutcome, RoundPlan, RoundState } from './policy.ts';

export interface AdaEdlOptions {
  /** Entropy scale in the bound 1 - sqrt(gamma * H). Default 0.2. */
  gamma: number;
  /** Initial stopping threshold lambda on the bound. Default 0.4. */
  lambda: number;
  /** Acceptance rate lambda steers towards. Default 0.6. */
  target: number;
  /** Step of the lambda update; 0 keeps lambda fixed. Default 0.05. */
  rate: number;
  /** Weight of the past in the acceptance-rate average. Default 0.9. */
  beta: number;
}

export const ADAEDL_FLAGS: FlagSpec[] = [
  { flag: 'gamma', type: 'number', above: 0, default: 0.2, meta: 'G', help: 'entropy scale in the acceptance bound 1 - sqrt(G * H)' },
  { flag: 'lambda', type: 'number', min: 0, max: 1, default: 0.4, meta: 'L', help: 'initial threshold: stop drafting when the bound falls below L' },
  { flag: 'target', type: 'number', min: 0, max: 1, default: 0.6, meta: 'A', help: 'acceptance rate the threshold steers towards' },
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

  continueDrafting(f: Frontier): boolean {
    return acceptanceBound(this.options.gamma, f.entropies[0]) >= this.lambda;
  }

  observe(o: RoundOutcome): void {
    if (o.depth === 0) return;
    const { beta, rate, target } = this.options;
    this.accepted = beta * this.accepted + o.accepted;
    this.judged = beta * this.judged + o.accepted + (o.accepted < o.depth ? 1 : 0);
    this.lambda = Math.min(1, Math.max(0, this.lambda + rate * (target - this.acceptanceRate)));
  }
}
