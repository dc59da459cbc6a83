/**
 * Cost-aware depth choice (SmartSpec-style goodput, for one request): pick the depth d, 0 = a
 * plain autoregressive step, that maximises expected tokens per millisecond,
 *
 *   goodput(d) = E[tokens | d] / cost(d),   E[tokens | d] = 1 + sum_{j=1..d} P(accepted >= j)
 *
 * where P(accepted >= j) is the recent fraction of rounds drafting at least j levels that had
 * j or more drafted tokens accepted, counting one extra successful round so that rarely tried
 * levels look promising (optimism under uncertainty), made non-increasing in j; and cost(d) the recent wall ms
 * of a round planned at depth d (draft, catch-up included, plus verification). All estimates
 * are exponential averages, so the choice follows the text. Every depth is tried once first
 * (deepest first); after that every `exploreEvery`-th round tries a neighbour of the best depth,
 * so a depth that became worthwhile is noticed. With drafting useless this costs at most one
 * slightly dearer round in `exploreEvery` over plain decoding.
 *
 * Approximation: P(accepted >= j) is pooled over planned depths, though with a fixed tree size
 * a shallower tree is wider at each level and so accepts a little more often.
 */
import { resolveOptions, type FlagSpec } from '../option-schema.ts';
import type { LengthPolicy, RoundOutcome, RoundPlan, RoundState } from './policy.ts';

export interface GoodputOptions {
  /** Every N-th round tries a neighbour of the best depth; 0 = never. Default 50. */
  exploreEvery: number;
  /** Weight of the past in the cost and acceptance averages. Default 0.9. */
  decay: number;
}

export const GOODPUT_FLAGS: FlagSpec[] = [
  { flag: 'explore-every', type: 'int', min: 0, default: 50, meta: 'N', help: 'every N-th round tries a depth next to the best one (0 = never)' },
  { flag: 'decay', type: 'number', min: 0, max: 1, default: 0.9, meta: 'B', help: 'weight of the past in the cost and acceptance averages' },
];

/**
 * P(accepted >= j) per drafted level j, as decayed counts of rounds: shared by the single-request
 * goodput policy and serving's SmartSpec planner (src/policies/smartspec.ts).
 */
export class AcceptanceEstimate {
  private readonly hits: Float64Array; // [D + 1] decayed rounds with accepted >= j (index j >= 1)
  private readonly trials: Float64Array; // [D + 1] decayed rounds that drafted >= j levels

  /**
   * @param prior the pseudo-round's outcome at each level j (index j >= 1; read live), in [0, 1];
   *   default: an accepted draft at every level (the optimistic prior).
   */
  constructor(readonly maxDepth: number, readonly decay: number, private readonly prior?: { rate(j: number): number }) {
    this.hits = new Float64Array(maxDepth + 1);
    this.trials = new Float64Array(maxDepth + 1);
  }

  /** Expected tokens emitted by a round planned at depth d (bonus included). */
  expectedTokens(d: number): number {
    let e = 1, p = 1;
    for (let j = 1; j <= d; j++) {
      // One pseudo-round per level: a level seen rarely is not written off on one rejection.
      p = Math.min(p, this.rate(j, this.prior ? this.prior.rate(j) : 1));
      e += p;
    }
    return e;
  }

  /**
   * P(accepted >= j), the pseudo-round counted as `pseudo` accepted (default: accepted, so 1 with
   * no evidence; as such a prior for other estimates).
   */
  rate(j: number, pseudo = 1): number {
    if (this.faded) this.applyFades();
    return (this.hits[j] + pseudo) / (this.trials[j] + 1);
  }

  /** Rounds without speculation not yet applied to the counts (`fade`). */
  private faded = 0;

  /**
   * A round without speculation: the evidence fades as after a trial, back toward the prior.
   * Counted here, applied when the estimate is next read or observed (the same multiplications
   * in the same order, so the same values): a serving request planned at 0 every step (SmartSpec
   * at c=16) then touches no count between its rounds, as a plain request's policy does not.
   */
  fade(): void {
    this.faded++;
  }

  /** The counted fades, one decay per round as `fade` did them eagerly; stops early once every count is 0. */
  private applyFades(): void {
    const k = this.decay, n = this.faded;
    this.faded = 0;
    for (let j = 1; j <= this.maxDepth; j++) {
      let t = this.trials[j], h = this.hits[j];
      for (let i = 0; i < n && (t !== 0 || h !== 0); i++) (t *= k), (h *= k);
      this.trials[j] = t;
      this.hits[j] = h;
    }
  }

  /** A round that drafted `depth` levels and had `accepted` of its tokens accepted. */
  observe(depth: number, accepted: number): void {
    if (this.faded) this.applyFades();
    const k = this.decay;
    for (let j = 1; j <= Math.min(depth, this.maxDepth); j++) {
      this.trials[j] = k * this.trials[j] + 1;
      this.hits[j] = k * this.hits[j] + (accepted >= j ? 1 : 0);
    }
  }
}

export class GoodputPolicy implements LengthPolicy {
  readonly name = 'goodput';
  readonly options: GoodputOptions;
  private readonly acceptance: AcceptanceEstimate;
  private readonly cost: Float64Array; // [D + 1] average ms of a round planned at depth d; NaN = untried
  private planned = 0;
  private rounds = 0;
  private up = false; // which neighbour the next exploration tries

  /** @param maxDepth the drafter's deepest tree (rounds may allow less). */
  constructor(readonly totalTokens: number, readonly maxDepth: number, options: Partial<GoodputOptions> = {}) {
    this.options = resolveOptions<GoodputOptions>(GOODPUT_FLAGS, options);
    this.acceptance = new AcceptanceEstimate(maxDepth, this.options.decay);
    this.cost = new Float64Array(maxDepth + 1).fill(NaN);
  }

  /** Expected tokens emitted by a round planned at depth d (bonus included). */
  expectedTokens(d: number): number {
    return this.acceptance.expectedTokens(d);
  }

  /** Average ms of a round planned at depth d (NaN until tried). */
  costMs(d: number): number {
    return this.cost[d];
  }

  plan(s: RoundState): RoundPlan {
    const D = Math.min(s.maxDepth, this.maxDepth);
    let d = D;
    while (d >= 0 && !Number.isNaN(this.cost[d])) d--; // warm-up: deepest untried depth
    if (d < 0) {
      d = this.best(D);
      const every = this.options.exploreEvery;
      if (every > 0 && ++this.rounds % every === 0 && D > 0) {
        this.up = !this.up;
        const n = d + (this.up ? 1 : -1);
        d = n < 0 || n > D ? d - (n - d) : n;
      }
    }
    this.planned = d;
    return { depth: d, totalTokens: this.totalTokens };
  }

  observe(o: RoundOutcome): void {
    // A round the generator could not speculate (context end) cost an AR step.
    const d = o.depth === 0 ? 0 : this.planned, k = this.options.decay;
    const ms = o.draftMs + o.verifyMs, c = this.cost[d];
    // A one-off stall (GC, a busy core) counts at most 4x the average: rarely tried depths would
    // otherwise carry it for many explorations. A real cost rise still gets through in a few rounds.
    this.cost[d] = Number.isNaN(c) ? ms : k * c + (1 - k) * Math.min(ms, 4 * c);
    this.acceptance.observe(d, o.accepted);
  }

  /** The depth in [0, D] with the highest goodput; ties go to the shallower depth. */
  private best(D: number): number {
    let bestD = 0, bestG = -Infinity;
    for (let d = 0; d <= D; d++) {
      const g = this.expectedTokens(d) / this.cost[d];
      if (g > bestG) (bestG = g), (bestD = d);
    }
    return bestD;
  }
}
