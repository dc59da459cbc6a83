/**
 * SmartSpec for serving (Optimizing Speculative Decoding for Serving LLMs Using Goodput): at each
 * batched step, choose every active request's speculation length k_i (0 = no speculation) to
 * maximise the batch's goodput, expected tokens emitted per ms of step time:
 *
 *   goodput(k) = sum_i E_i[tokens | k_i] / (draftMs(k) + verifyMs(sum_i (k_i + 1), n))
 *
 * E_i from the request's own acceptance history (AcceptanceEstimate, shared with the
 * single-request `goodput` policy: decayed P(accepted >= j) with one optimistic pseudo-round;
 * rounds without speculation fade the evidence too, so a request planned at 0 is re-tried);
 * verifyMs(tokens, n) and the draft passes' ms(rows) from a cost model measured at server start
 * (StepCost: one pass of T tokens by one request, and spread over as many requests as it fills),
 * each pass kind (the verify pass, a step's first draft level, its later levels) scaled by what
 * such passes took in serving (passScale; ours: the paper fits its batch-time model offline and
 * prices draft levels alike).
 * A request's first draft level carries its catch-up rows (the head reads every row committed
 * since its last draft: the whole prompt at first, accepted + 1 after a drafted round, more
 * after plain rounds). What the passes do not cost, the steps' own JS (each request's loop,
 * feeds, the HTTP side) is learned online (StepOverhead): observed step times less the modelled
 * passes, as ms per pass plus ms per request-pass; for a request alone, its plain steps' and its
 * fused rounds' excess over the start-up model, as observed (ours: the start-up round costs
 * alone misled it for the server's life). The pass scales and the batch overhead start from a
 * calibration on real batch steps at start-up (`calibrate`), not from the bare model; a lone
 * request's excess is learned in serving only (the calibration runs no lone steps it learns from).
 *
 * Ours, not the paper's exact rule: the paper scores a proposed length with a moving acceptance
 * average per request and picks lengths for the batch; we pick per-request lengths, for a batch
 * of at most `jointMax` (2) requests by scoring every plan (joint plans included: [2, 2] where no
 * single raise from [0, 0] pays), for a larger one by greedy ascent (raise the k_i whose raise,
 * to any deeper level, most increases the batch goodput, until none does; the model overprices
 * joint drafting there, see jointMax), draft time = one batched draft pass per level with the
 * requests still drafting at that level, and the first request to plan in a step plans the whole
 * batch (the step is the target pass count: every request plans between the same two passes).
 * Also ours: a plan that speculates is kept only when its modelled goodput beats no speculation
 * by a margin (10%, or the host's step-to-step spread as the start-up calibration measured it,
 * within 3-10%).
 */
import { AcceptanceEstimate } from './goodput.ts';
import { median, spread } from '../util/stats.ts';
import type { LengthPolicy, RoundOutcome, RoundPlan, RoundState } from './policy.ts';

/**
 * The least-squares non-decreasing fit of `xs` (pool adjacent violators, equal weights). A pass
 * or round doing more work costs at least as much; start-up medians say otherwise by noise
 * (measured: a fused round verifying 2 drafts 0.52 ms, 3 drafts 0.61, 1 draft 0.65), and a
 * planner reading them raw chose 2 drafts where 3 cost the same.
 */
export function nondecreasing(xs: readonly number[]): number[] {
  const blocks: { sum: number; n: number }[] = [];
  for (const x of xs) {
    blocks.push({ sum: x, n: 1 });
    while (blocks.length > 1) {
      const b = blocks[blocks.length - 1], a = blocks[blocks.length - 2];
      if (a.sum / a.n <= b.sum / b.n) break;
      a.sum += b.sum;
      a.n += b.n;
      blocks.pop();
    }
  }
  return blocks.flatMap((b) => new Array<number>(b.n).fill(b.sum / b.n));
}

/**
 * Measured ms of one batched pass: piecewise-linear in the pass's tokens, linear in the requests
 * it serves, and (with `perToken`) priced for its padding when its calls differ in length.
 *
 * Padding (ours): the per-slot graph scores every call's rows in attention regrouped as [B, M],
 * M = the longest call's tokens, while the row-wise ops (the linears) run on the packed tokens.
 * So a pass of t tokens from n calls whose longest has m tokens costs about what n * m tokens
 * spread evenly cost, less the packed-token work of the n * m - t padding rows (`perToken`, ms a
 * packed token at a fixed padded size, measured at start-up from a full batch of M-token calls
 * against one M-token call among one-token calls: Engine.measure). Without it the model read one
 * request verifying 4 tokens among 15 verifying 1 (19 tokens) as 2.18 ms where it took 2.59
 * (16 x 1: 2.08, 16 x 4: 3.67; 16 slots, context 80), so plans where a few requests of a batch
 * speculate looked cheaper than they were.
 */
export class StepCost {
  /** ms at each token count for one request (the measurements' non-decreasing fit). */
  readonly one: number[];
  /** ms with the tokens spread over min(slots, t) requests (likewise). */
  readonly full: number[];

  /**
   * @param tokens the measured token counts, ascending.
   * @param one ms at each token count for one request.
   * @param full ms with the tokens spread over min(slots, t) requests (same token counts).
   * @param perToken ms of one packed token at a fixed padded size (see the class comment);
   *   NaN: calls of unequal length are priced as if spread evenly.
   */
  constructor(readonly tokens: number[], one: number[], full: number[], readonly slots: number, readonly perToken = NaN) {
    this.one = nondecreasing(one);
    this.full = nondecreasing(full);
  }

  /**
   * Estimated ms of a pass of `t` tokens from `n` requests, the longest call `m` tokens (omitted:
   * spread evenly). Never below the even spread's: padding adds work.
   */
  ms(t: number, n: number, m = 0): number {
    const even = this.even(t, n), padded = n * m;
    if (!(this.perToken >= 0) || padded <= t) return even;
    return Math.max(even, this.even(padded, n) - this.perToken * (padded - t));
  }

  private even(t: number, n: number): number {
    const a = interpolate(this.tokens, this.one, t), b = interpolate(this.tokens, this.full, t);
    const most = Math.min(this.slots, Math.max(1, Math.round(t)));
    const f = most > 1 ? Math.min(1, Math.max(0, (n - 1) / (most - 1))) : 0;
    return a + f * (b - a);
  }

  toJSON() {
    return { tokens: this.tokens, msOneRequest: this.one, msFullBatch: this.full, slots: this.slots, msPerPackedToken: this.perToken };
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

/**
 * What a step costs beyond its modelled passes, learned from observed step times: for a batch,
 * residual ms = a * passes + b * request-passes (each request takes part in 1 + k_i passes),
 * fitted by least squares with forgetting (weight `forget` per step) and a weak pull toward 0
 * (`prior`, in steps); for a request alone (one round per step, whatever its depth), a moving
 * average of the residual over its steps of both kinds, which the planner falls back on until it
 * has seen a lone step of the kind it prices (SmartSpecPlanner's aloneBeyond).
 */
export class StepOverhead {
  private s = new Float64Array(5); // decayed sums: pp, pq, qq, pr, qr (p = passes, q = request-passes, r = residual)
  a = 0;
  b = 0;
  /** ms per step of a request alone beyond its modelled round. */
  alone = 0;
  private aloneSeen = false;

  constructor(readonly forget = 0.99, readonly prior = 1) {}

  /** ms beyond the passes of a batch step of `passes` passes and `requestPasses` request-passes. */
  batchMs(passes: number, requestPasses: number): number {
    return this.a * passes + this.b * requestPasses;
  }

  /** One observed batch step: `residualMs` = its wall time less its modelled passes. */
  observeBatch(passes: number, requestPasses: number, residualMs: number): void {
    const s = this.s, f = this.forget, p = passes, q = requestPasses, r = residualMs;
    for (let i = 0; i < 5; i++) s[i] *= f;
    s[0] += p * p, s[1] += p * q, s[2] += q * q, s[3] += p * r, s[4] += q * r;
    // Ridge-regularised 2 x 2 normal equations (the prior keeps them solvable while every step
    // had the same shape), clamped at 0: a step never costs less than its passes.
    const A = s[0] + this.prior, B = s[1], C = s[2] + this.prior, det = A * C - B * B;
    this.a = Math.max(0, (C * s[3] - B * s[4]) / det);
    this.b = Math.max(0, (A * s[4] - B * s[3]) / det);
  }

  /** One observed step of a request alone. */
  observeAlone(residualMs: number): void {
    this.alone = this.aloneSeen ? this.forget * this.alone + (1 - this.forget) * residualMs : residualMs;
    this.aloneSeen = true;
  }
}

/** The shared planner: one per server; `policy()` gives each request its LengthPolicy. */
export class SmartSpecPlanner {
  private members = new Set<SmartSpecPolicy>();
  private plannedStep = -1;
  /**
   * Members with a length this step (their planStep is plannedStep). The lengths live on the
   * policies (planStep, planDepth), not in a Map: the planning runs right after an ORT call, when
   * every structure it reads is a cache miss, so fewer objects touched is less time.
   */
  private chosenCount = 0;
  /** The steps' cost beyond the modelled passes (learned online). */
  readonly overhead: StepOverhead;
  /**
   * A plan that speculates must beat the same step without speculation by this fraction of
   * modelled goodput (0.1: 10%), else nobody still to plan speculates this step (ours, see
   * planBatch). A calibration sets it from what it measured (`calibrate`, `marginRange`).
   */
  margin = 0.1;
  /**
   * The margin a calibration sets (`calibrate`): the draft lane's step-to-step spread in its
   * steps (half the interquartile range of its passes' actual / modelled ms, each over its step
   * shape's median), within these bounds. Ours: the margin is there for plans whose modelled gain is inside the
   * model's error, and on a host whose passes vary more from step to step the start-up medians
   * and learned scales are off by more. (A fixed 10% was thought to keep c=2 from the ~7-11%
   * that static-3 gains there; with the calibrated margin c=2 still trails plain, so that gap
   * has another cause: the ascent's plans, see jointMax.) The bounds
   * are not measured: 10% is the fixed margin this replaces, 3% a floor so that a steady host
   * still asks a plan for a visible gain.
   */
  marginRange: [number, number] = [0.03, 0.1];
  /**
   * Batches of at most this many started members are planned by scoring every plan of the
   * members still to plan (`planJoint`: (maxDepth + 1)^n plans, 16 for two at depth 3), larger
   * ones by the greedy ascent (ours). The ascent raises one request at a time from 0, and at two
   * requests no single raise may pay where both drafting does: a mixed plan ([3, 0]) costs most
   * of the joint one ([3, 3]) for one request's tokens, so the ascent left both plain where
   * [2, 2] modelled 1.05-1.24x (scripts/replay-plans.ts on 48 recorded servers' cost models).
   * Not above 2: there the model prices a drafted batch step under what it takes (in the same
   * recorded load tests, its goodput ratio for every request at 3 against all at 0 read 1.10-1.55x
   * what static-3 / plain measured at c=4, 1.21-1.29x at c=8 and 1.27-1.34x at c=16; 0.99-1.23x
   * at c=2), and static-3 loses to plain there, so joint plans above 2 would follow the model's
   * error. 0: the greedy ascent at every size (the planner before session 16).
   */
  jointMax = 2;
  /** Joins and leaves so far: a step is timed only when none happened during it. */
  private changes = 0;
  /** The step being timed: when it was planned, its modelled pass ms and shape. */
  private timing = { valid: false, step: 0, t: 0, changes: 0, passMs: 0, verifyMs: 0, draftMs: 0, firstMs: 0, lane0: 0, lane1: 0, cold1: 0, n: 0, passes: 0, requestPasses: 0, depth: 0, catchUp: 0, allZero: false }; // one record, reused
  /**
   * Batch steps planned all-zero by `planAllZero` are learned from `deferSteps` at a time (ours):
   * their samples (the verify pass's ms against its model, the residual) wait here and are then
   * learned from in order, as each step would have (so the learned state is the same), and the
   * bound is priced again only then. A step that plans 0 for every request then does what a
   * plain step does between passes, plus recording its sample: at c = 16 on the embedded pair,
   * every step. Any other plan, a lone request's, a calibration's or a change in the batch learns
   * the waiting samples first; the bound reads estimates at most `deferSteps` steps old.
   */
  deferSteps = 8;
  private deferred = new Float64Array(4 * 8); // per sample: verify ms, its model's ms, request-passes, residual (grown to deferSteps)
  private deferredCount = 0;
  /** The all-zero bound's last answer that held (`planAllZero`) and what it was priced with: reused while none of it changed. */
  private zeroBound = { n: 0, s0: NaN, s1: NaN, s2: NaN, a: NaN, b: NaN, verifyMs: NaN };
  /**
   * A lone request's step beyond its start-up model, as observed: [0] plain steps, [1] fused
   * rounds (one graph at every length, so their lengths share it, as they share one start-up
   * cost: Engine.measureRound; rounds with a long head catch-up are not samples, see learn). The
   * first step, then a moving average; NaN until seen (then
   * the shared learned overhead): a lone request runs one round at full length first (see
   * planBatch). Ours: the start-up round costs are a few medians taken once, and a busy moment
   * then (measured: 1.10 ms for a fused round that runs in 0.6) had SmartSpec plan 0 in 60% of
   * its c=1 rounds for the server's life.
   */
  private aloneBeyond = new Float64Array([NaN, NaN]);
  /** Weight of the old estimate per observed lone step (`aloneBeyond`). */
  readonly aloneForget = 0.7;
  /**
   * A lone step's sample moves `aloneBeyond` as if it lay at most this fraction of the step's
   * start-up model from the estimate (ours: a clipped moving average). One slow step of a busy
   * host (3 ms for a 0.6 ms round) otherwise moved the round's estimate enough to plan plain
   * steps until `explore` re-measured it: 16 plain steps, about a whole request at c=1 (load
   * test, loaded host: 22 of a block's 134 rounds); a lasting change still moves it, by up to
   * (1 - aloneForget) * aloneClip of the model a step.
   */
  aloneClip = 0.25;
  /**
   * After this many lone plain steps in a row, the fused round's estimate is dropped and a round
   * at full length is run again to re-measure it (ours). Otherwise a slow moment during fused
   * rounds leaves their estimate high for good: plain steps never refresh it (measured, load
   * test at c=1: after one such moment SmartSpec's engine ran 104 of a block's 189 lone rounds
   * plain, at 0.62x that block's `generate --policy static-3`). A retried round also refreshes
   * the acceptance estimate; one per this many plain steps costs little where they are better.
   */
  explore = 16;
  private plainRun = 0;
  /**
   * Draft calls of more rows than this (a long catch-up) run in a pass of their own beside the
   * step's (the draft lane's shortTokens, Lane.flush); the engine sets it. Default: never split.
   */
  splitRows = Infinity;
  private levelOne = new LevelOne();
  /**
   * Every request's drafted rounds pooled (decay `pooledDecay` a round): a request's own estimate
   * counts its pseudo-round as what the pool accepts at each level, not as a sure acceptance
   * (ours). With the sure one every new request looked like 1 + d tokens at depth d until its
   * own rounds said otherwise, and at mid-size batches that alone made plans pay: a server
   * started fresh (load test, renewed sessions, c=4) drafted new requests at 3 where they
   * realised ~3.0 tokens of the 4 planned, and ran 0.71x plain's throughput. With no pooled
   * evidence the prior is the sure acceptance, as before.
   */
  readonly pooled: AcceptanceEstimate;
  /**
   * The target and draft lanes' cumulative ms in passes (LaneStats.ms; the engine sets it). With
   * them a batch step's passes are timed apart from the rest of the step: each lane's start-up
   * model is scaled by what its passes took (`passScale`), and the learned overhead is the step
   * beyond its passes as they ran. Without them: the model as measured, the overhead as before.
   * The draft lane's `coldMs` (LaneStats.coldMs: its steps right after a target pass, a step's
   * first draft level) times the first level apart from the later ones; without it one scale
   * prices every level.
   */
  laneTimes?: readonly [{ readonly ms: number }, { readonly ms: number; readonly coldMs?: number }];
  /**
   * What a batch step's verify [0] and draft [1] passes took over the start-up model's price for
   * them, as a moving average of log ratios (weight `scaleForget` a step, each sample within a
   * factor `scaleClip` of the estimate). Ours, not the paper's (its batch-time model is fitted
   * offline): the model is measured once, on half-full caches, while the served requests' shared
   * stride is what their own lengths make it, and the host's speed drifts. Measured (c=2, the
   * embedded pair, 48-token requests): the model priced a plain step at 1.5x its wall time but a
   * drafted one (both at 3) at 1.2x, so speculation looked cheaper than it was against plain
   * steps; with the lanes' times 1.03x and 1.07x.
   *
   * [0] the verify pass, [1] the draft levels after a step's first, [2] a step's first draft
   * level (ours, not the paper's: its draft cost is per level, uniform). The first level runs
   * right after the target pass, whose weights have evicted the head's, and costs more over its
   * start-up price (measured back to back, warm) than the later levels do: on the embedded pair
   * at c=2 and 4, 1.18-1.35x its model against 0.98-1.18x for the later levels
   * (scripts/step-costs.ts). With one draft scale, learned from whatever depths a server ran,
   * a server drafting mostly 1 deep priced the later levels at the first's scale (deeper plans
   * too dear), and one drafting 3 deep priced the first below it (1-deep plans too cheap).
   */
  readonly passScale = new Float64Array([1, 1, 1]);

  /**
   * Sets `passScale` from a recorded one (a load test's `costModels`): [verify, draft levels
   * after the first, first draft level], or [verify, draft] from servers with one draft scale
   * (before the first level was priced apart), which then prices every level. Samples still
   * waiting (deferSteps) are learned from first: set after them, as step by step.
   */
  setPassScale(recorded: readonly number[]): void {
    this.learnDeferred();
    this.passScale.set(recorded.length === 2 ? [recorded[0], recorded[1], recorded[1]] : recorded.slice(0, 3));
  }
  scaleForget = 0.9;
  scaleClip = 2;
  /**
   * While set, every started member's length is this (the engine's start-up calibration:
   * Engine.start runs real batch steps through the lanes at forced lengths, `calibrate`).
   */
  forced?: number;
  /**
   * During a calibration (`calibrate`), by step shape ("passes,request-passes"): each timed
   * batch step's actual / modelled pass ms per `passScale`, its draft lane's as a whole, and
   * its residual (ms beyond its passes).
   */
  private calibration?: Map<string, { lanes: [number[], number[], number[]]; draft: number[]; residuals: number[] }>;

  /**
   * @param verify target pass cost; @param draft draft pass cost (per drafted level).
   * @param step the current step's id (the batched target pass count): plans are per step.
   * @param alone ms of a whole step at each length k = 0..maxDepth for a request alone in the
   *   batch, when it runs differently from a batch of one (serving's fused round); default: the
   *   draft and verify costs as for any batch.
   * @param now the clock steps are timed with (ms); tests pass their own so the learned overhead
   *   does not depend on how busy the machine is.
   * @param pooledDecay weight of the past per drafted round in the pooled acceptance (`pooled`).
   */
  constructor(readonly verify: StepCost, readonly draft: StepCost, readonly maxDepth: number, readonly totalTokens: number, private step: () => number, readonly alone?: number[], readonly decay = 0.9, private now: () => number = () => performance.now(), readonly pooledDecay = 0.99) {
    this.overhead = new StepOverhead();
    this.pooled = new AcceptanceEstimate(maxDepth, pooledDecay);
  }

  /**
   * Runs `steps` (the engine's real batch steps, planned at the lengths it sets in `forced`) as
   * a calibration, then prices every step from what they cost: each `passScale` set to the
   * median of its passes' actual / modelled ms over those steps, within a factor `scaleClip` of
   * 1 (a draft scale none of them sampled takes the other's; unchanged for a lane none of them
   * ran), the overhead fit from each step shape's median residual, and `margin` from the
   * draft lane's spread (`marginRange`). Meanwhile a lone request's steps
   * teach nothing and no round enters the pooled acceptance (the calibration's prompts are no
   * client's). Ours: the start-up model times each lane's passes back to back, and a draft pass
   * in serving, after the target's pass and the requests' work, costs more (measured, loaded:
   * 1.45-1.8x right after a target pass, and drafted steps of a new server ~20% above its
   * model); a new server learned that only from its drafted batch steps, so it over-speculated
   * at mid-size batches until then. Returns each lane's sample count.
   */
  async calibrate(steps: () => Promise<void>): Promise<[number, number]> {
    this.learnDeferred();
    const shapes: NonNullable<SmartSpecPlanner['calibration']> = new Map();
    this.calibration = shapes;
    try {
      await steps();
    } finally {
      this.calibration = undefined;
      this.forced = undefined;
      this.timing.valid = false;
      this.plainRun = 0;
    }
    const lanes: [number[], number[], number[]] = [[], [], []], drafts: number[] = [];
    let draftSamples = 0;
    for (const [shape, c] of shapes) {
      c.lanes.forEach((xs, i) => lanes[i].push(...xs));
      draftSamples += c.draft.length;
      // The draft passes' spread step to step: each against its shape's median (shapes differ by design).
      if (c.draft.length > 1) {
        const m = median(c.draft);
        for (const x of c.draft) drafts.push(x / m);
      }
      // The overhead fit sees each step shape's median residual once per step of that shape: the
      // fit the steps would give, without the few a busy host (or code not yet compiled) slowed.
      const [p, q] = shape.split(',').map(Number), r = median(c.residuals);
      for (let i = 0; i < c.residuals.length; i++) this.overhead.observeBatch(p, q, r);
    }
    // Within a factor scaleClip of the model: a calibration in a busy moment of a shared host
    // can read a lane several times slower (measured, loaded: the draft lane 6.5x in one of
    // three), and a draft scale that high would stop all batch drafting, so no drafted step
    // would ever correct it.
    const clip = Math.log(this.scaleClip);
    // Draft levels the steps did not time apart (no coldMs, or no step deeper than 1): the other draft scale's samples.
    if (!lanes[1].length) lanes[1] = lanes[2];
    if (!lanes[2].length) lanes[2] = lanes[1];
    lanes.forEach((xs, i) => {
      if (xs.length) this.passScale[i] = Math.exp(Math.min(clip, Math.max(-clip, median(xs.map(Math.log)))));
    });
    if (drafts.length) {
      const q = spread(drafts), [lo, hi] = this.marginRange;
      this.margin = Math.min(hi, Math.max(lo, (q.q3 - q.q1) / 2));
    }
    return [lanes[0].length, draftSamples];
  }

  /** Whether a calibration is running (`calibrate`): its rounds stay out of the pooled acceptance. */
  get calibrating(): boolean {
    return this.calibration !== undefined;
  }

  /** A request's policy; it takes part in the planning until `leave()`. */
  policy(): SmartSpecPolicy {
    const p = new SmartSpecPolicy(this);
    this.members.add(p);
    this.changes++;
    return p;
  }

  /** @internal */
  leave(p: SmartSpecPolicy): void {
    this.members.delete(p);
    if (p.planStep >= 0 && p.planStep === this.plannedStep) this.chosenCount--; // before the first step both are -1
    p.planStep = -1;
    this.changes++;
  }

  /** Gives `m` length `d` this step. */
  private choose(m: SmartSpecPolicy, d: number): void {
    if (m.planStep !== this.plannedStep) {
      m.planStep = this.plannedStep;
      this.chosenCount++;
    }
    m.planDepth = d;
  }

  /** @internal the depth of `p` this step, planning the whole batch when `p` has none yet. */
  depthFor(p: SmartSpecPolicy, maxDepth: number): number {
    const step = this.step();
    if (step !== this.plannedStep) {
      this.learn(step);
      this.plannedStep = step;
      this.chosenCount = 0;
    }
    // A request alone plans every round: planLone builds no arrays (planBatch's are per step).
    if (p.planStep !== step) {
      if (this.forced !== undefined) this.planForced();
      else if (this.alone && this.members.size === 1) this.planLone(p);
      else this.planBatch();
    }
    return Math.min(p.planStep === step ? p.planDepth : 0, maxDepth);
  }

  /**
   * At the start of step `step`: when the previous step was planned whole and ran with the same
   * requests (nothing joined or left: no prefill or reply in it), its wall time less its
   * modelled passes is an overhead sample.
   */
  private learn(step: number): void {
    const last = this.timing;
    if (!last.valid) return;
    last.valid = false;
    if (last.step !== step - 1 || last.changes !== this.changes) return;
    const t = this.now();
    let residual = t - last.t - last.passMs;
    const lanes = this.laneTimes;
    const lone = last.n === 1 && this.alone !== undefined;
    // The passes as they ran (each lane's ms in this step), where the engine gives lane times.
    const v = lanes ? lanes[0].ms - last.lane0 : 0, d = lanes ? lanes[1].ms - last.lane1 : 0;
    // The first draft level's ms (NaN: not timed apart).
    const d1 = lanes && lanes[1].coldMs !== undefined ? lanes[1].coldMs - last.cold1 : NaN;
    // A calibration times batch steps; lone rounds keep their own first round (planLone).
    if (this.calibration) return lone ? undefined : this.sample(this.calibration, t, v, d, d1);
    if (lanes && !lone) {
      residual = t - last.t - v - d;
      // An all-zero step (no draft pass modelled): its sample waits (deferSteps).
      if (last.allZero) return this.defer(v, last.verifyMs, last.requestPasses, residual);
      this.learnDeferred();
      // Each pass kind's time against its unscaled model, and the rest of the step.
      this.rescale(0, v, last.verifyMs);
      if (Number.isNaN(d1)) this.rescale(1, d, last.draftMs), this.rescale(2, d, last.draftMs);
      else this.rescale(2, d1, last.firstMs), this.rescale(1, d - d1, last.draftMs - last.firstMs);
    } else this.learnDeferred();
    if (lone) {
      // A fused round whose head caught up on more rows than a drafted round leaves (the prompt in
      // a request's first round, rows of plain steps since) cost more than the rounds it would
      // price: learning from it once priced every round above a plain step for the server's life.
      if (last.depth > 0 && last.catchUp > last.depth + 1) return;
      const b = this.aloneBeyond, g = last.depth > 0 ? 1 : 0, f = this.aloneForget;
      const c = this.aloneClip * this.alone[Math.min(last.depth, this.alone.length - 1)];
      b[g] = Number.isNaN(b[g]) ? residual : f * b[g] + (1 - f) * Math.min(b[g] + c, Math.max(b[g] - c, residual));
      this.overhead.observeAlone(residual);
    } else this.overhead.observeBatch(last.passes, last.requestPasses, residual);
  }

  /** An all-zero step's sample for later (deferSteps); the waiting ones are learned from once `deferSteps` wait. */
  private defer(v: number, verifyMs: number, requestPasses: number, residual: number): void {
    if (this.deferred.length < 4 * (this.deferredCount + 1)) {
      const grown = new Float64Array(4 * Math.max(this.deferSteps, this.deferredCount + 1));
      grown.set(this.deferred);
      this.deferred = grown;
    }
    const o = 4 * this.deferredCount++, q = this.deferred;
    (q[o] = v), (q[o + 1] = verifyMs), (q[o + 2] = requestPasses), (q[o + 3] = residual);
    if (this.deferredCount >= this.deferSteps) this.learnDeferred();
  }

  /**
   * Learns from the waiting all-zero steps' samples (deferSteps), in order, as `learn` would have
   * at each: the verify scale, and the overhead fit at one pass. Planning other than
   * planAllZero's calls it first; so may a reader of the learned state (`passScale`, `overhead`).
   */
  learnDeferred(): void {
    const q = this.deferred, n = this.deferredCount;
    this.deferredCount = 0;
    for (let i = 0; i < n; i++) {
      const o = 4 * i;
      this.rescale(0, q[o], q[o + 1]);
      this.overhead.observeBatch(1, q[o + 2], q[o + 3]);
    }
  }

  /**
   * A calibration's timed batch step, ended at `t` (learn), its lanes' ms `v` and `d` (`d1` of
   * it the first draft level, NaN when not timed apart): each pass kind's ratio to the model
   * and its residual, by its shape.
   */
  private sample(shapes: NonNullable<SmartSpecPlanner['calibration']>, t: number, v: number, d: number, d1: number): void {
    const last = this.timing, key = `${last.passes},${last.requestPasses}`;
    let c = shapes.get(key);
    if (!c) shapes.set(key, (c = { lanes: [[], [], []], draft: [], residuals: [] }));
    const lanes = this.laneTimes;
    if (lanes) {
      if (last.verifyMs > 0 && v > 0) c.lanes[0].push(v / last.verifyMs);
      if (last.draftMs > 0 && d > 0) {
        c.draft.push(d / last.draftMs);
        const later = last.draftMs - last.firstMs;
        if (Number.isNaN(d1)) c.lanes[1].push(d / last.draftMs), c.lanes[2].push(d / last.draftMs);
        else {
          if (last.firstMs > 0 && d1 > 0) c.lanes[2].push(d1 / last.firstMs);
          if (later > 0 && d - d1 > 0) c.lanes[1].push((d - d1) / later);
        }
      }
    }
    c.residuals.push(t - last.t - (lanes ? v + d : last.passMs));
  }

  /** One step's sample of lane `i`'s scale: its passes took `actual` ms where the start-up model said `model`. */
  private rescale(i: number, actual: number, model: number): void {
    if (!(model > 0 && actual > 0)) return;
    const s = this.passScale[i], c = Math.log(this.scaleClip), r = Math.min(c, Math.max(-c, Math.log(actual / model / s)));
    this.passScale[i] = s * Math.exp((1 - this.scaleForget) * r);
  }

  /**
   * A batch step's passes as priced: the start-up model's verify ms, first draft level's and
   * later draft levels' ms, each scaled by its `passScale`.
   */
  private scaled(verifyMs: number, firstMs: number, laterMs: number): number {
    const s = this.passScale;
    return s[0] * verifyMs + s[2] * firstMs + s[1] * laterMs;
  }

  /**
   * Times this step as planned: `learn` reads it when the next step begins. `verifyMs`,
   * `draftMs`: its passes' unscaled model, `firstMs` of the latter its first draft level.
   */
  private startTiming(passMs: number, passes: number, requestPasses: number, n: number, depth: number, catchUp: number, verifyMs = 0, draftMs = 0, firstMs = 0, allZero = false): void {
    const r = this.timing;
    r.valid = true;
    r.allZero = allZero;
    r.step = this.plannedStep;
    r.t = this.now();
    r.changes = this.changes;
    r.passMs = passMs;
    r.verifyMs = verifyMs;
    r.draftMs = draftMs;
    r.firstMs = firstMs;
    r.lane0 = this.laneTimes?.[0].ms ?? 0;
    r.lane1 = this.laneTimes?.[1].ms ?? 0;
    r.cold1 = this.laneTimes?.[1].coldMs ?? 0;
    r.n = n;
    r.passes = passes;
    r.requestPasses = requestPasses;
    r.depth = depth;
    r.catchUp = catchUp;
  }

  /** Expected goodput (tokens per ms) of lengths `k` for `members`. */
  goodput(members: SmartSpecPolicy[], k: number[]): number {
    const c = this.stepCost(members, k);
    let tokens = 0;
    for (let i = 0; i < members.length; i++) tokens += members[i].acceptance.expectedTokens(k[i]);
    return tokens / (c.passMs + c.overheadMs);
  }

  /**
   * The learned ms beyond the start-up measurement of a lone request's step at (clamped) length
   * d: what such steps were seen to take beyond it, else the shared learned overhead (it mixes
   * both kinds of step, so only its positive part stands in); a step never costs under a tenth
   * of its model.
   */
  private aloneOverheadMs(d: number): number {
    const beyond = this.aloneBeyond[d > 0 ? 1 : 0];
    return Number.isNaN(beyond) ? Math.max(0, this.overhead.alone) : Math.max(beyond, -0.9 * this.alone![d]);
  }

  /**
   * Modelled ms of a step at lengths `k`: its passes (start-up measurements, scaled per pass
   * kind by `passScale`; `verifyMs`, `draftMs` and its first level's `firstMs` unscaled), and
   * the learned overhead beyond them.
   */
  stepCost(members: SmartSpecPolicy[], k: number[]): { passMs: number; verifyMs: number; draftMs: number; firstMs: number; overheadMs: number; passes: number; requestPasses: number } {
    const n = members.length;
    let verifyTokens = 0, deepest = 0;
    for (let i = 0; i < n; i++) {
      verifyTokens += k[i] + 1;
      deepest = Math.max(deepest, k[i]);
    }
    if (this.lone(n) && this.alone) {
      const d = Math.min(k[0], this.alone.length - 1);
      return { passMs: this.alone[d], verifyMs: 0, draftMs: 0, firstMs: 0, overheadMs: this.aloneOverheadMs(d), passes: 1, requestPasses: 1 };
    }
    // The verify pass pads every request's call to the deepest plan's 1 + deepest tokens (StepCost).
    const verifyMs = this.verify.ms(verifyTokens, n, deepest + 1);
    const first = this.levelOne; // reused: two plans a step price it
    first.clear();
    for (let i = 0; i < n; i++) if (k[i] >= 1) first.add(members[i].catchUpRows, this.splitRows);
    // Level 1: each drafting request's catch-up rows; deeper levels: one row each (a chain).
    const firstMs = deepest > 0 ? first.ms(this.draft) : 0;
    let later = 0;
    for (let j = 2; j <= deepest; j++) {
      let calls = 0;
      for (let i = 0; i < n; i++) if (k[i] >= j) calls++;
      later += this.draft.ms(calls, calls, 1);
    }
    return { passMs: this.scaled(verifyMs, firstMs, later), verifyMs, draftMs: firstMs + later, firstMs, overheadMs: this.overhead.batchMs(1 + deepest, verifyTokens), passes: 1 + deepest, requestPasses: verifyTokens };
  }

  /**
   * goodput(members, k with k[i] raised to d) for the ascent's candidates, from sums over `k`
   * (tokens, verified tokens, the first draft level's rows, each level's requests): O(depth) per
   * candidate instead of goodput's O(requests x depth), the same value up to rounding. `sync()`
   * after k changes. (At 16 requests and depth 3 a step's first ascent scores 48 candidates;
   * rebuilding each from scratch was most of the planner's 16-21 µs a step.)
   * @internal
   */
  raiser(members: SmartSpecPolicy[], k: number[]): { score(i: number, d: number): number; sync(): void } {
    const n = members.length, D = this.maxDepth;
    const E = members.map((m) => Array.from({ length: D + 1 }, (_, d) => m.acceptance.expectedTokens(d)));
    const calls = new Float64Array(D + 1), first = new LevelOne(), joined = new LevelOne(), split = this.splitRows;
    let tokens = 0, verify = 0, deepest = 0;
    const sync = () => {
      calls.fill(0);
      first.clear();
      tokens = verify = deepest = 0;
      for (let i = 0; i < n; i++) {
        tokens += E[i][k[i]];
        verify += k[i] + 1;
        deepest = Math.max(deepest, k[i]);
        for (let j = 1; j <= k[i]; j++) calls[j]++;
        if (k[i] >= 1) first.add(members[i].catchUpRows, split);
      }
    };
    sync();
    const score = (i: number, d: number) => {
      const from = k[i], deep = Math.max(deepest, d), verifyTokens = verify + d - from;
      let firstMs = 0, later = 0;
      for (let j = 1; j <= deep; j++) {
        const joins = j > from && j <= d;
        if (j === 1) {
          joined.copy(first);
          if (joins) joined.add(members[i].catchUpRows, split);
          firstMs = joined.ms(this.draft);
        } else {
          const c = joins ? calls[j] + 1 : calls[j];
          later += this.draft.ms(c, c, 1);
        }
      }
      return (tokens - E[i][from] + E[i][d]) / (this.scaled(this.verify.ms(verifyTokens, n, deep + 1), firstMs, later) + this.overhead.batchMs(1 + deep, verifyTokens));
    };
    return { score, sync };
  }

  /**
   * The plan of a request alone in the batch (with a lone step model): one round at full length
   * before any fused round has been seen, and again after `explore` plain steps in a row (see
   * aloneBeyond), else planAlone.
   */
  private planLone(m: SmartSpecPolicy): void {
    this.learnDeferred();
    if (this.plainRun >= this.explore) this.aloneBeyond[1] = NaN;
    const unseen = Number.isNaN(this.aloneBeyond[1]) ? Math.min(this.maxDepth, this.alone!.length - 1) : 0;
    if (unseen > 0) {
      this.plainRun = 0;
      this.choose(m, unseen);
      this.startTiming(this.alone![unseen], 1, 1, 1, unseen, m.catchUpRows);
      return;
    }
    this.planAlone(m);
  }

  /**
   * planBatch for a request alone, without building arrays or closures: the greedy ascent over
   * one request's length is the first depth of highest goodput, then the margin rule. A lone
   * request plans every round, so its planning is on every round's path (measured: the general
   * path's allocations and closures, ~7 us a round, also slowed the fused round's ORT call that
   * follows by ~2-5%; see docs/performance.md, "Serving under load").
   */
  private planAlone(m: SmartSpecPolicy): void {
    const alone = this.alone!, last = alone.length - 1;
    let best = 0, bestG = 0, plainG = 0;
    for (let d = 0; d <= this.maxDepth; d++) {
      const a = Math.min(d, last);
      const g = m.acceptance.expectedTokens(d) / (alone[a] + this.aloneOverheadMs(a));
      if (d === 0) (plainG = g), (bestG = g);
      else if (g > bestG * (1 + 1e-9)) (best = d), (bestG = g);
    }
    if (bestG < plainG * (1 + this.margin)) best = 0;
    this.plainRun = best === 0 ? this.plainRun + 1 : 0;
    this.choose(m, best);
    const a = Math.min(best, last);
    this.startTiming(alone[a], 1, 1, 1, a, m.catchUpRows);
  }

  /**
   * Whether a plan of `n` requests is a lone request's fused round: only when it is the batch's
   * only member. One started request beside others still prefilling runs batched (the fused
   * round runs at batch size 1 only), so it is priced by the batch model.
   */
  private lone(n: number): boolean {
    return n === 1 && this.members.size <= 1 && this.alone !== undefined;
  }

  /** Every started member not yet planned this step at the `forced` length, timed as a planned step (calibrate). */
  private planForced(): void {
    this.learnDeferred();
    const members: SmartSpecPolicy[] = [];
    for (const m of this.members) if (m.started) members.push(m);
    const fixed = members.map((m) => m.planStep === this.plannedStep);
    this.settlePlan(members, fixed, members.map((m, i) => (fixed[i] ? m.planDepth : Math.min(this.forced!, this.maxDepth))));
  }

  /**
   * Every member's length, by the joint search (at most `jointMax` members) or the greedy ascent;
   * lengths already chosen this step stay (a request alone: planLone).
   */
  private planBatch(): void {
    if (this.chosenCount === 0 && this.planAllZero()) return;
    this.learnDeferred();
    // A request that has not planned yet is still prefilling: it verifies nothing this step.
    const { members, fixed, k } = this.buf;
    members.length = 0; // a plan that threw left its members
    for (const m of this.members) if (m.started) members.push(m);
    const n = members.length;
    fixed.length = k.length = n;
    for (let i = 0; i < n; i++) {
      fixed[i] = members[i].planStep === this.plannedStep;
      k[i] = fixed[i] ? members[i].planDepth : 0;
    }
    if (n <= this.jointMax) this.planJoint(members, fixed, k);
    else this.ascend(members, fixed, k);
    members.length = 0; // holds no request past its step
  }

  /** planBatch's and planJoint's arrays, reused: a batch plans every step. */
  private readonly buf = { members: [] as SmartSpecPolicy[], fixed: [] as boolean[], k: [] as number[], free: [] as number[], none: [] as number[], best: [] as number[] };

  /**
   * The plan of highest modelled goodput among every length 0..maxDepth for each member not
   * `fixed` (the first found of equals, all-zero first), then the margin rule (ascend). Exact,
   * where the ascent stops at the best single raise; (maxDepth + 1)^free plans, so only for
   * small batches (`jointMax`).
   */
  private planJoint(members: SmartSpecPolicy[], fixed: boolean[], k: number[]): void {
    const { free, none, best } = this.buf, D = this.maxDepth;
    free.length = 0;
    for (let i = 0; i < members.length; i++) if (!fixed[i]) free.push(i);
    copyInto(none, k);
    copyInto(best, k);
    const noneG = this.goodput(members, k);
    let bestG = noneG;
    for (;;) {
      // The next plan, counting the free members' lengths in base D + 1 (back at all-zero: done).
      let j = 0;
      while (j < free.length && k[free[j]] === D) k[free[j++]] = 0;
      if (j === free.length) break;
      k[free[j]]++;
      const g = this.goodput(members, k);
      if (g > bestG * (1 + 1e-9)) (bestG = g), copyInto(best, k);
    }
    // The margin rule, as the ascent applies it.
    this.settlePlan(members, fixed, bestG < noneG * (1 + this.margin) ? none : best);
  }

  /**
   * Whether a batch of `n` requests could plan any drafting: false only where
   * planAllZero's bound holds (more than `jointMax` requests, and no single raise pays even with
   * every draft accepted), O(depth).
   */
  mayDraft(n: number): boolean {
    this.learnDeferred();
    return this.allZeroVerifyMs(n) === undefined;
  }

  /**
   * The unscaled verify ms of a step of `n` requests all at 0 where mayDraft says no (planAllZero's
   * bound holds), else undefined: the all-zero plan priced once, for the bound and its timing.
   */
  private allZeroVerifyMs(n: number): number | undefined {
    if (n < 2 || n <= this.jointMax) return undefined;
    // goodput of every member at 0, as stepCost prices it: n tokens by one pass of n tokens.
    const verifyMs = this.verify.ms(n, n, 1);
    return this.perfectRaisePays(n, n / (this.scaled(verifyMs, 0, 0) + this.overhead.batchMs(1, n))) ? undefined : verifyMs;
  }

  /**
   * mayDraft for the batch `p` is in: every member, those still prefilling included (requests
   * arriving together each see the others; counting only started ones, each of a burst saw itself
   * alone). Asked by the engine for a joining request's prompt read (Engine's readsPrompt).
   */
  mayDraftWith(p: SmartSpecPolicy): boolean {
    if (this.forced === 0) return false; // a plain calibration wave: no round will draft
    return this.mayDraft(this.members.size + (this.members.has(p) ? 0 : 1));
  }

  /**
   * A step's first plan when no raise could pay even if every draft were accepted, in a batch of
   * every member: every started member at 0, as the ascent plans it then where all have started
   * (anyRaisePays false for the same members), without
   * building its arrays or reading any member's acceptance: O(members + depth). False (nothing
   * planned) when such a raise could pay, for fewer than 2 members (a lone request is priced
   * by its own step model), or for a batch the joint search plans (at most `jointMax`: it scores
   * every plan, joint ones included, which this bound on single raises does not cover). At c = 16
   * on the embedded pair even perfect acceptance does not pay for a draft pass and the longer
   * verify, so this is every step's plan there.
   */
  private planAllZero(): boolean {
    // The bound over every member, those still prefilling included (ours): they are in this
    // step's target pass and wait for every draft pass before it, as decoding members do. Over
    // the started ones only, a burst's first request to start saw a batch of one (c = 16: 15
    // others prefilling, or about to plan) and drafted, with its head's first call over the
    // prompt, while they all waited: the load test's c = 16 blocks began so.
    const verifyMs = this.zeroBoundMs(this.members.size);
    if (verifyMs === undefined) return false;
    let n = 0; // one pass over the members: counted and planned together
    for (const m of this.members) if (m.started) n++, this.choose(m, 0);
    // settlePlan's timing of a plan made whole (the first plan of the step: nothing chosen before).
    this.timing.valid = false;
    // Timed only with every member started: then n is the batch the bound priced.
    if (n === this.members.size) this.startTiming(this.scaled(verifyMs, 0, 0), 1, n, n, 0, 0, verifyMs, 0, 0, true);
    return true;
  }

  /**
   * allZeroVerifyMs(n) for planAllZero: its last answer that held while n, `jointMax`, the pass
   * scales and the overhead fit are what it was priced with (they change when deferred samples
   * are learned from, every `deferSteps` all-zero steps, or when set from outside); else the
   * waiting samples are learned from and the bound priced again.
   */
  private zeroBoundMs(n: number): number | undefined {
    const z = this.zeroBound, s = this.passScale, o = this.overhead;
    if (z.n === n && n > this.jointMax && z.s0 === s[0] && z.s1 === s[1] && z.s2 === s[2] && z.a === o.a && z.b === o.b) return z.verifyMs;
    this.learnDeferred();
    const ms = this.allZeroVerifyMs(n);
    if (ms === undefined) z.n = 0;
    else (z.n = n), (z.s0 = s[0]), (z.s1 = s[1]), (z.s2 = s[2]), (z.a = o.a), (z.b = o.b), (z.verifyMs = ms);
    return ms;
  }

  /**
   * anyRaisePays's bound with every draft accepted (a raise to d adds d tokens) and one catch-up
   * row (the cheapest first draft level; a pass costs no less for more rows): never below
   * anyRaisePays's candidates, so when this says no, so would it, and the ascent would plan 0.
   * O(depth): no member is read.
   */
  private perfectRaisePays(n: number, best: number): boolean {
    const firstMs = this.draft.ms(1, 1);
    for (let d = 1; d <= this.maxDepth; d++) {
      const ms = this.scaled(this.verify.ms(n + d, n), firstMs, (d - 1) * firstMs) + this.overhead.batchMs(1 + d, n + d);
      if ((n + d) / ms > best * (1 + 1e-9)) return true;
    }
    return false;
  }

  /** The greedy ascent from lengths `k` over the members not `fixed` this step, then the margin rule (planBatch). */
  private ascend(members: SmartSpecPolicy[], fixed: boolean[], k: number[]): void {
    const n = members.length, D = this.maxDepth;
    let best = this.goodput(members, k);
    if (!fixed.includes(true) && !this.anyRaisePays(members, best)) return this.settlePlan(members, fixed, k);
    // A request alone is priced by its own step model (stepCost); a batch by the sums (raiser).
    const r = this.lone(n) ? undefined : this.raiser(members, k);
    const score = (i: number, d: number) => {
      if (r) return r.score(i, d);
      const was = k[i];
      k[i] = d;
      const g = this.goodput(members, k);
      k[i] = was;
      return g;
    };
    for (;;) {
      let bi = -1, bk = 0, bg = best;
      for (let i = 0; i < n; i++) {
        if (fixed[i]) continue;
        for (let d = k[i] + 1; d <= D; d++) {
          const g = score(i, d);
          if (g > bg * (1 + 1e-9)) (bi = i), (bk = d), (bg = g);
        }
      }
      if (bi < 0) break;
      k[bi] = bk;
      r?.sync();
      best = bg;
    }
    // Ours: speculate only when the plan's modelled goodput beats no speculation (for the
    // members still to plan) by `margin`. The model's passes are start-up medians and its
    // overhead a fit, off by several per cent run to run; a plan that gains less than that is
    // as likely a loss, and a drafted round also adds passes whose cost the fit lags behind.
    const none = k.map((d, i) => (fixed[i] ? d : 0));
    if (best < this.goodput(members, none) * (1 + this.margin)) k.splice(0, n, ...none);
    this.settlePlan(members, fixed, k);
  }

  /**
   * Whether any one request's raise from length 0 to some d could beat `best`, the goodput of
   * the whole batch at 0 (no member fixed this step), by an upper bound on the ascent's first
   * candidates: the largest gain in expected tokens over the members against the cheapest
   * such step (the fewest catch-up rows; a pass costs no less for more rows). When none can,
   * the ascent would stop at once and plan 0 for all, so this is exact; it costs O(members x
   * depth) instead of the ascent's first round (measured at c=16 with every request at 0:
   * 25-38 us a step to plan, against a step of ~1.7 ms).
   */
  private anyRaisePays(members: SmartSpecPolicy[], best: number): boolean {
    const n = members.length;
    let minCatchUp = Infinity;
    for (const m of members) minCatchUp = Math.min(minCatchUp, m.catchUpRows);
    const firstMs = this.draft.ms(minCatchUp, 1), laterMs = this.draft.ms(1, 1);
    for (let d = 1; d <= this.maxDepth; d++) {
      let gain = 0;
      for (const m of members) gain = Math.max(gain, m.acceptance.expectedTokens(d) - 1);
      const ms = this.scaled(this.verify.ms(n + d, n), firstMs, (d - 1) * laterMs) + this.overhead.batchMs(1 + d, n + d);
      if ((n + gain) / ms > best * (1 + 1e-9)) return true;
    }
    return false;
  }

  /** Records the step's lengths `k` and starts timing the step when it was planned whole. */
  private settlePlan(members: SmartSpecPolicy[], fixed: boolean[], k: number[]): void {
    const n = members.length;
    if (this.lone(n) && !fixed[0]) this.plainRun = k[0] === 0 ? this.plainRun + 1 : 0;
    // Time the step as planned; one completed later in the step (a request joined), or one with
    // a request prefilling beside it (its prompt's pass is in the step's time, in no plan), is not.
    const whole = this.chosenCount === 0 && members.length === this.members.size;
    members.forEach((m, i) => this.choose(m, k[i]));
    this.timing.valid = false;
    if (whole) {
      const c = this.stepCost(members, k);
      this.startTiming(c.passMs, c.passes, c.requestPasses, n, Math.min(k[0] ?? 0, (this.alone?.length ?? 1) - 1), n === 1 ? members[0].catchUpRows : 0, c.verifyMs, c.draftMs, c.firstMs);
    }
  }
}

/** Copies `from` into `to` (same length), allocating nothing once `to` has grown. */
function copyInto(to: number[], from: number[]): void {
  to.length = from.length;
  for (let i = 0; i < from.length; i++) to[i] = from[i];
}

/**
 * The first draft level's calls (each drafting request's catch-up rows) as the draft lane runs
 * them: calls of at most `split` rows in one pass, longer ones in a second (Lane.flush), each
 * pass padded to its longest call (StepCost).
 */
class LevelOne {
  private s = new Float64Array(6); // short: rows, calls, longest; long: rows, calls, longest

  clear(): void {
    this.s.fill(0);
  }

  copy(o: LevelOne): void {
    this.s.set(o.s);
  }

  /** A call of `rows` rows; calls of more than `split` run in the second pass. */
  add(rows: number, split: number): void {
    const o = rows > split ? 3 : 0, s = this.s;
    s[o] += rows;
    s[o + 1]++;
    s[o + 2] = Math.max(s[o + 2], rows);
  }

  /** ms of the level's passes. */
  ms(draft: StepCost): number {
    const s = this.s;
    return (s[1] ? draft.ms(s[0], s[1], s[2]) : 0) + (s[4] ? draft.ms(s[3], s[4], s[5]) : 0);
  }
}

/** A request's view of the planner. */
export class SmartSpecPolicy implements LengthPolicy {
  readonly name = 'smartspec';
  readonly acceptance: AcceptanceEstimate;

  constructor(private planner: SmartSpecPlanner) {
    this.acceptance = new AcceptanceEstimate(planner.maxDepth, planner.decay, planner.pooled);
  }

  /** Committed context length: at the last plan, plus the rounds observed since. */
  private position = 0;
  /** Rows the head has read: the position at this request's last draft, or what it read at the prefill (`prefilled`). */
  private headRows = 0;

  /** Rows the request's next first draft level carries: every row committed since its last draft (at least 1). */
  get catchUpRows(): number {
    return Math.max(1, this.position - this.headRows);
  }

  /** Whether the request has planned a round (before that, it is prefilling). */
  started = false;
  /** @internal the planner's step when this request was given planDepth (SmartSpecPlanner.choose). */
  planStep = -1;
  /** @internal its length that step. */
  planDepth = 0;

  plan(s: RoundState): RoundPlan {
    this.position = s.position;
    this.started = true;
    const depth = this.planner.depthFor(this, s.maxDepth);
    if (depth > 0) this.headRows = s.position;
    return { depth, totalTokens: Math.min(this.planner.totalTokens, Math.max(depth, 1)) };
  }

  /** The head read the prompt's first `rows` rows at the prefill: the first draft catches up on the rest. */
  prefilled(rows: number): void {
    this.headRows = rows;
  }

  observe(o: RoundOutcome): void {
    this.position += o.accepted + 1;
    if (o.depth > 0) {
      this.acceptance.observe(o.depth, o.accepted);
      if (!this.planner.calibrating) this.planner.pooled.observe(o.depth, o.accepted);
    } else this.acceptance.fade();
  }

  /** The request ended: stop planning for it. */
  leave(): void {
    this.planner.leave(this);
  }
}
