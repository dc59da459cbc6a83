/**
 * Confidence threshold (EAGLE-2 / HF `assistant_confidence_threshold` style): draft as deep as
 * allowed, but stop expanding once the best path's draft probability, exp(frontier.values[0]),
 * the draft's own estimate that the target accepts that whole path, falls below `minConfidence`.
 */
import type { Frontier } from '../../trees/index.ts';
import { resolveOptions, type FlagSpec } from '../option-schema.ts';
import type { LengthPolicy, RoundPlan, RoundState } from './policy.ts';

export interface ThresholdOptions {
  /** Stop drafting deeper when the best path's probability is below this. Default 0.3. */
  minConfidence: number;
}

export const THRESHOLD_FLAGS: FlagSpec[] = [
  { flag: 'min-confidence', type: 'number', min: 0, max: 1, default: 0.3, meta: 'P', help: "stop drafting deeper once the best path's draft probability falls below P" },
];

export class ThresholdPolicy implements LengthPolicy {
  readonly name = 'threshold';
  readonly options: ThresholdOptions;
  private readonly logMin: number; // values are log-probabilities: compare in that domain

  /** @param totalTokens drafted tokens verified per round (the tree size). */
  constructor(readonly totalTokens: number, options: Partial<ThresholdOptions> = {}) {
    this.options = resolveOptions<ThresholdOptions>(THRESHOLD_FLAGS, options);
    this.logMin = Math.log(this.options.minConfidence);
  }

  plan(s: RoundState): RoundPlan {
    return { depth: s.maxDepth, totalTokens: this.totalTokens };
  }

  continueDrafting(f: Frontier): boolean {
    return f.values[0] >= this.logMin;
  }
}
