/**
 * SmartSpec for serving (Optimizing Speculative Decoding for Serving LLMs Using Goodput): at each
 * batched step, choose every active request's speculation length k_i (0 = no speculation) to
 * maximise the batch's goodput, expected tokens emitted per ms of step time:
 *
 *   goodput(k) = sum_i E_i[tokens | k_i] / (draftMs(k) + verifyMs(sum_i (k_i + 1), n))
 *
 * E_i from the request's own acceptance history (AcceptanceEstimate, shared with the
 * single-request `goodput` policy: decayed P(accepted >= j) with one optimistic pseudo-round);
 * verifyMs(tokens, n) and the draft passes' ms(rows) from a cost model measured at server start
 * (StepCost: one pass of T tokens by one request, and spread over as many requests as it fills).
 *
 * Ours, not the paper's exact rule: the paper scores a proposed length with a moving acceptance
 * average per request and picks lengths for the batch; we pick per-request lengths by greedy
 * ascent (raise the k_i whose raise, to any deeper level, most increases the batch goodput, until
 * none does), draft time = one batched draft pass per level with the requests still drafting at
 * that level, and the first request to plan in a step plans the whole batch (the step is the
 * target pass count: every request plans between the same two passes).
 */
import { AcceptanceEstimate } from './goodput.ts';
import type { LengthPolicy, RoundOutcome, RoundPlan, RoundState } from './policy.ts';

/** Measured ms of one batched pass: piecewise-linear in the pass's tokens, linear in the requests it serves. */
export class StepCost {
  /**
   * @param tokens the measured token counts, ascending.
   * @param one ms at each token count for one request.
   * @param full ms with the tokens spread over min(slots, t) requests (same token counts).
   */
  constructor(readonly tokens: number[], readonly one: number[], readonly full: number[], readonly slots: number) {}

  /** Estimated ms of a pass of `t` tokens from `n` requests. */
  ms(t: number, n: number): number {
    const a = interpolate(this.tokens, this.one, t), b = interpolate(this.tokens, this.full, t);
    const most = Math.min(this.slots, Math.max(1, Math.round(t)));
    const f = most > 1 ? Math.min(1, Math.max(0, (n - 1) / (most - 1))) : 0;
    return a + f * (b - a);
  }

  toJSON() {
    return { tokens: this.tokens, msOneRequest: this.one, msFullBatch: this.full, slots: this.slots };
  }
}

function interpolate(xs: number[], ys: number[], x: number): number {
  if (x <= xs[0]) return ys[0];
  for (let i = 1; i < xs.length; i++) {
    if (x <= xs[i]) return ys[i - 1] + ((x - xs[i - 1]) / (xs[i] - xs[i - 1])) * (ys[i] - ys[i - 1]);
  }
  // Past the last point: extend the last segment's slope.
  const n = xs.length - 1;
  return ys[n] + ((x - xs[n]) / (xs[n] - xs[n - 1] || 1)) * (ys[n] - ys[n - 1]);
}

/** The shared planner: one per server; `policy()` gives each request its LengthPolicy. */
export class SmartSpecPlanner {
  private members = new Set<SmartSpecPolicy>();
  private plannedStep = -1;
  private chosen = new Map<SmartSpecPolicy, number>();

  /**
   * @param verify target pass cost; @param draft draft pass cost (per drafted level).
   * @param step the current step's id (the batched target pass count): plans are per step.
   */
  /**
   * @param alone ms of a whole step at each length k = 0..maxDepth for a request alone in the
   *   batch, when it runs differently from a batch of one (serving's fused round); default: the
   *   draft and verify costs as for any batch.
   */
  constructor(readonly verify: StepCost, readonly draft: StepCost, readonly maxDepth: number, readonly totalTokens: number, private step: () => number, readonly alone?: number[], readonly decay = 0.9) {}

  /** A request's policy; it takes part in the planning until `leave()`. */
  policy(): SmartSpecPolicy {
    const p = new SmartSpecPolicy(this);
    this.members.add(p);
    return p;
  }

  /** @internal */
  leave(p: SmartSpecPolicy): void {
    this.members.delete(p);
    this.chosen.delete(p);
  }

  /** @internal the depth of `p` this step, planning the whole batch when `p` has none yet. */
  depthFor(p: SmartSpecPolicy, maxDepth: number): number {
    const step = this.step();
    if (step !== this.plannedStep) {
      this.plannedStep = step;
      this.chosen.clear();
    }
    if (!this.chosen.has(p)) this.planBatch();
    return Math.min(this.chosen.get(p) ?? 0, maxDepth);
  }

  /** Expected goodput (tokens per ms) of lengths `k` for `members`. */
  goodput(members: SmartSpecPolicy[], k: number[]): number {
    const n = members.length;
    let tokens = 0, verifyTokens = 0, deepest = 0;
    for (let i = 0; i < n; i++) {
      tokens += members[i].acceptance.expectedTokens(k[i]);
      verifyTokens += k[i] + 1;
      deepest = Math.max(deepest, k[i]);
    }
    if (n === 1 && this.alone) return tokens / this.alone[Math.min(k[0], this.alone.length - 1)];
    let ms = this.verify.ms(verifyTokens, n);
    for (let j = 1; j <= deepest; j++) {
      let rows = 0;
      for (let i = 0; i < n; i++) if (k[i] >= j) rows++;
      ms += this.draft.ms(rows, rows); // one row per request drafting at this level
    }
    return tokens / ms;
  }

  /** Greedy ascent over every member's length; lengths already chosen this step stay. */
  private planBatch(): void {
    const members = [...this.members], n = members.length, D = this.maxDepth;
    const fixed = members.map((m) => this.chosen.has(m));
    const k = members.map((m) => this.chosen.get(m) ?? 0);
    let best = this.goodput(members, k);
    for (;;) {
      let bi = -1, bk = 0, bg = best;
      for (let i = 0; i < n; i++) {
        if (fixed[i]) continue;
        const was = k[i];
        for (let d = was + 1; d <= D; d++) {
          k[i] = d;
          const g = this.goodput(members, k);
          if (g > bg * (1 + 1e-9)) (bi = i), (bk = d), (bg = g);
        }
        k[i] = was;
      }
      if (bi < 0) break;
      k[bi] = bk;
      best = bg;
    }
    members.forEach((m, i) => this.chosen.set(m, k[i]));
  }
}

/** A request's view of the planner. */
export class SmartSpecPolicy implements LengthPolicy {
  readonly name = 'smartspec';
  readonly acceptance: AcceptanceEstimate;

  constructor(private planner: SmartSpecPlanner) {
    this.acceptance = new AcceptanceEstimate(planner.maxDepth, planner.decay);
  }

  plan(s: RoundState): RoundPlan {
    const depth = this.planner.depthFor(this, s.maxDepth);
    return { depth, totalTokens: Math.min(this.planner.totalTokens, Math.max(depth, 1)) };
  }

  observe(o: RoundOutcome): void {
    this.acceptance.observe(o.depth, o.accepted);
  }

  /** The request ended: stop planning for it. */
  leave(): void {
    this.planner.leave(this);
  }
}
