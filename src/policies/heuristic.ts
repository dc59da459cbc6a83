/**
 * HF transformers' `heuristic` schedule for the number of draft tokens: +2 after a round whose
 * drafted depth was fully accepted, -1 otherwise, never below 1. The counter is also kept at or
 * below the deepest any round has allowed (the drafter's depth), so a run of successes cannot bank
 * depth that many failures would then have to spend. A round allowed less than the counter (the
 * context's end, or the last tokens of max-new-tokens) drafts what it can and leaves the counter
 * as it was: the counter outlives a generation, and a budget-clipped last round would otherwise
 * start the next generation at depth 1.
 */
import { TREE_LIMITS } from '../../trees/index.ts';
import { resolveOptions, type FlagSpec } from '../option-schema.ts';
import type { LengthPolicy, RoundOutcome, RoundPlan, RoundState } from './policy.ts';

export interface HeuristicOptions {
  /** Depth of the first round (HF's num_assistant_tokens default). Default 5. */
  start: number;
  /** Added after a fully accepted round. Default 2. */
  up: number;
  /** Subtracted after any other drafted round. Default 1. */
  down: number;
}

export const HEURISTIC_FLAGS: FlagSpec[] = [
  { flag: 'start', type: 'int', min: 1, max: TREE_LIMITS.maxDepth, default: 5, meta: 'D', help: 'depth of the first round' },
  { flag: 'up', type: 'int', min: 0, max: TREE_LIMITS.maxDepth, default: 2, meta: 'N', help: 'depth added after a fully accepted round' },
  { flag: 'down', type: 'int', min: 0, max: TREE_LIMITS.maxDepth, default: 1, meta: 'N', help: 'depth removed after a round with a rejection' },
];

export class HeuristicPolicy implements LengthPolicy {
  readonly name = 'heuristic';
  readonly options: HeuristicOptions;
  /** The schedule's current depth, in [1, max(1, deepest maxDepth seen)]. */
  depth: number;
  private cap = 1;
  private planned = 0; // the last round's depth: below `depth` when the round allowed less

  constructor(readonly totalTokens: number, options: Partial<HeuristicOptions> = {}) {
    this.options = resolveOptions<HeuristicOptions>(HEURISTIC_FLAGS, options);
    this.depth = this.options.start;
  }

  plan(s: RoundState): RoundPlan {
    this.cap = Math.max(this.cap, s.maxDepth);
    this.depth = Math.min(this.depth, this.cap);
    this.planned = Math.min(this.depth, s.maxDepth);
    return { depth: this.planned, totalTokens: this.totalTokens };
  }

  observe(o: RoundOutcome): void {
    // A round that did not speculate says nothing about drafts; a clipped one nothing about the counter's depth.
    if (o.depth === 0 || this.planned < this.depth) return;
    const { up, down } = this.options;
    this.depth = o.accepted >= o.depth ? Math.min(this.depth + up, this.cap) : Math.max(1, this.depth - down);
  }
}
