/**
 * SpecDec++ (Huang, Guo, Wang; arXiv 2405.19715): stopping drafting is an optimal-stopping
 * problem whose solution is a threshold rule: stop once P(at least one drafted token on the path
 * is rejected) exceeds h. A trained acceptance head estimates, for each drafted token, P(the
 * target accepts it | its prefix is accepted) from the draft's hidden row that proposed it
 * (plus the token's embedding); along a path these multiply:
 *
 *   P(reject so far, node at depth t) = 1 - prod_{j <= t} p_accept(ancestor at depth j)
 *
 * For EAGLE-2 trees the rule is applied to the best frontier node (the path the tree bets on),
 * with the products carried frontier to frontier through `parentSlots`.
 */
import type { Frontier } from '../../trees/index.ts';
import type { TreeShape } from '../../trees/index.ts';
import { resolveOptions, type FlagSpec } from '../option-schema.ts';
import type { Predictor } from '../io/predictor-io.ts';
import { PredictorRunner, type PredictorTarget } from './ldlp.ts';
import type { LengthPolicy, RoundPlan, RoundState } from './policy.ts';

export interface SpecDecOptions {
  /** Trained acceptance-head directory (required when building from options). */
  path?: string;
  /** Stop when P(some token on the best path is rejected) exceeds this. Default 0.3. */
  threshold: number;
}

export const SPECDEC_FLAGS: FlagSpec[] = [
  { flag: 'path', type: 'string', meta: 'DIR', help: 'trained acceptance head from `eaglet train-ldlp --head specdec++` (required)' },
  { flag: 'threshold', type: 'number', min: 0, max: 1, default: 0.3, meta: 'H', help: 'stop drafting once P(a token on the best path is rejected) exceeds H' },
];

export class SpecDecPolicy implements LengthPolicy {
  readonly name = 'specdec++';
  readonly options: SpecDecOptions;
  readonly runner: PredictorRunner;
  /** P(some token on the best path is rejected) at the last depth checked. */
  lastRejectProb = NaN;
  private pathAccept: Float64Array; // [topK] P(whole path accepted) per frontier slot
  private nextAccept: Float64Array; // [topK] scratch

  constructor(predictor: Predictor, target: PredictorTarget, readonly tree: TreeShape, options: Partial<SpecDecOptions> = {}) {
    this.options = resolveOptions<SpecDecOptions>(SPECDEC_FLAGS, options);
    this.runner = new PredictorRunner(predictor, target, tree.topK);
    this.pathAccept = new Float64Array(tree.topK);
    this.nextAccept = new Float64Array(tree.topK);
  }

  plan(s: RoundState): RoundPlan {
    return { depth: s.maxDepth, totalTokens: this.tree.totalTokens };
  }

  continueDrafting(f: Frontier, hidden?: Float32Array): boolean {
    if (!hidden) throw new Error('specdec++ needs the drafter to pass the draft hidden rows to continueDrafting');
    const d = this.runner.d, F = f.count;
    for (let i = 0; i < F; i++) {
      const s = f.parentSlots[i];
      this.runner.setRow(i, hidden.subarray(s * d, (s + 1) * d), f.tokens[i]);
    }
    const logits = this.runner.run(F); // [F, 1]
    for (let i = 0; i < F; i++) {
      const prefix = f.depth === 1 ? 1 : this.pathAccept[f.parentSlots[i]];
      this.nextAccept[i] = prefix / (1 + Math.exp(-logits[i]));
    }
    [this.pathAccept, this.nextAccept] = [this.nextAccept, this.pathAccept];
    this.lastRejectProb = 1 - this.pathAccept[0];
    return this.lastRejectProb <= this.options.threshold;
  }
}
