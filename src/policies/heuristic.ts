/**
 * HF transformers' `heuristic` schedule for the number of draft tokens: +2 after a round whose
 * drafted depth was fully accepted, -1 otherwise, never below 1. The counter is also kept at or
 * below the largest depth the round allows, so a run of successes cannot bank depth that many
 * failures would then have to spend.
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
  /** The schedule's current depth, in [1, max(1, last maxDepth)]. */
  depth: number;
  private cap = Infinity;

  constructor(readonly totalTokens: number, options: Partial<HeuristicOptions> = {}) {
    this.options = resolveOptions<HeuristicOptions>(HEURISTIC_FLAGS, options);
    this.depth = this.options.start;
  }

  plan(s: RoundState): RoundPlan {
    this.cap = Math.max(1, s.maxDepth);
    this.depth = Math.min(this.depth, this.cap);
    return { depth: Math.min(this.depth, s.maxDepth), totalTokens: this.totalTokens };
  }

  observe(o: RoundOutcome): void {
    if (o.depth === 0) return; // a round that did not speculate says nothing about drafts
    const { up, down } = this.options;
    this.depth = o.accepted >= o.depth ? Math.min(this.depth + up, this.cap) : Math.max(1, this.depth - down);
  }
}
