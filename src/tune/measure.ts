/**
 * What `eaglet tune` measures on this machine, for one target + draft head:
 *
 *   verify cost    ms of one target pass over n tokens (n = 1: a plain decoding step), after a
 *                  real context, every n up to the largest tree + 1, median of interleaved repeats
 *                  (each timed pass right after an untimed one of its size; made non-decreasing in n)
 *   draft cost     ms from the start of a round's drafting until depth D is drafted, per top-k,
 *                  timed inside the real drafter (catch-up pass included) during the acceptance runs
 *   fused round    ms of a whole chain round of depth D in one ORT call (RoundDrafter: catch-up,
 *                  D drafts and the verify of D + 1 rows), from the start of its draft to the end
 *                  of its verify, timed while it generates the prompts (what `generate` runs on a
 *                  chain when the fused round is on), against plain steps timed the same way
 *   acceptance     mean drafted tokens accepted by every shape (top-k, depth D, size N), greedy,
 *                  from fully kept trees (trees/subtree-acceptance.ts) drafted along the target's
 *                  own greedy continuation of each prompt, advancing as a full-tree round would
 */
import { addSubtreeAcceptance } from '../../trees/index.ts';
import { EagleDrafter } from '../generate/eagle-drafter.ts';
import { Generator } from '../generate/generator.ts';
import { History } from '../generate/history.ts';
import { RoundDrafter } from '../generate/round-drafter.ts';
import { StaticPolicy, type LengthPolicy } from '../policies/policy.ts';
import type { DraftSession } from '../runtime/draft.ts';
import { KVCache } from '../runtime/kv-cache.ts';
import type { RoundSession } from '../runtime/round.ts';
import type { TargetSession } from '../runtime/target.ts';
import { median } from '../util/stats.ts';

/** Candidates a top-k tree of depth D scores: k at depth 1, k^2 at each deeper one. */
export const candidates = (k: number, D: number): number => k + (D - 1) * k * k;

export interface AcceptanceTable {
  topK: number;
  /** Rounds measured. */
  rounds: number;
  /** meanAccepted[D][N]: mean drafted tokens accepted by shape (topK, D, N); index 0 unused. */
  meanAccepted: number[][];
  /** draftMs[D]: median ms to draft D levels over the rounds (D = 0: 0). */
  draftMs: number[];
}

export interface Measurements {
  /** verifyMs[n]: median ms of a target pass over n tokens (index 0 unused). */
  verifyMs: number[];
  /** Context length the verify passes ran after. */
  verifyContext: number;
  acceptance: AcceptanceTable[];
  /**
   * Fused chain rounds and the plain steps timed beside them (measureFusedRounds); present when
   * chains were priced as `generate` runs them with the fused round on. Absent: pass by pass.
   */
  fused?: FusedRoundCosts;
  /** Greedy continuation tokens the acceptance ran along. */
  tokens: number;
}

/** Median ms of target passes over 1..maxTokens tokens after `context` committed rows, sizes interleaved. */
export async function measureVerify(target: TargetSession, context: number[], maxTokens: number, repeats: number): Promise<number[]> {
  const cfg = target.cfg;
  const cache = new KVCache(cfg.nLayers, cfg.nKvHeads, cfg.headDim, cfg.maxSeqLen);
  const P = Math.min(context.length, cfg.maxSeqLen - maxTokens);
  const pre = await target.forward(cache, context.slice(0, P), context.slice(0, P).map((_, i) => i));
  cache.append(pre.newKeys, pre.newValues, P);
  const times: number[][] = Array.from({ length: maxTokens + 1 }, () => []);
  const tokens = Array.from({ length: maxTokens }, (_, i) => context[i % context.length]);
  const positions = tokens.map((_, i) => P + i);
  for (let r = 0; r < repeats + 1; r++) {
    for (let n = 1; n <= maxTokens; n++) {
      const ids = tokens.slice(0, n), pos = positions.slice(0, n);
      // An untimed pass of the same size first: right after the largest size a one-token pass of
      // the default pair timed 0.70-1.10 ms, against 0.48-0.53 when repeated (3 runs, machine loaded).
      await target.forward(cache, ids, pos);
      const t0 = performance.now();
      await target.forward(cache, ids, pos);
      if (r > 0) times[n].push(performance.now() - t0); // repeat 0 warms every size up
    }
  }
  // A pass over more tokens never costs less: the suffix minimum of the medians removes noise
  // that would otherwise make some odd size look cheap to verify.
  const med = times.map((t) => (t.length ? median(t) : 0));
  for (let n = maxTokens - 1; n >= 1; n--) med[n] = Math.min(med[n], med[n + 1]);
  return med;
}

/** The target's greedy continuation of each prompt (plain decoding): prompt ++ continuation. */
export async function greedySequences(target: TargetSession, prompts: number[][], maxNewTokens: number): Promise<number[][]> {
  const plain = new Generator({ target });
  const out: number[][] = [];
  for (const p of prompts) {
    const room = Math.min(maxNewTokens, target.cfg.maxSeqLen - p.length);
    const { ids } = await plain.generate(p, { maxNewTokens: room, stopAtEos: false });
    out.push([...p, ...ids]);
  }
  return out;
}

/** A policy that drafts to the planned depth and timestamps each drafted level. */
class DepthClock implements LengthPolicy {
  readonly name = 'tune-clock';
  stamps: number[] = [];
  plan() {
    return { depth: 0, totalTokens: 0 };
  }
  continueDrafting(f: { depth: number }): boolean {
    this.stamps[f.depth] = performance.now();
    return true;
  }
}

/**
 * Acceptance of every (depth, size) shape of top-k `topK` up to (maxDepth, maxTokens), and the
 * drafter's cost per depth, along `sequences` (prompt ++ greedy continuation; `promptLengths`).
 */
export async function measureAcceptance(
  target: TargetSession, session: DraftSession, sequences: number[][], promptLengths: number[], topK: number, maxDepth: number, maxTokens: number,
): Promise<AcceptanceTable> {
  const cfg = target.cfg, C = candidates(topK, maxDepth);
  const drafter = new EagleDrafter(session, { topK, maxDepth, totalTokens: C }, cfg.maxSeqLen);
  const history = new History(cfg.maxSeqLen, cfg.dim);
  const sums = new Float64Array((maxDepth + 1) * (maxTokens + 1));
  const draftTimes: number[][] = Array.from({ length: maxDepth + 1 }, () => []);
  const clock = new DepthClock();
  let rounds = 0;
  for (let s = 0; s < sequences.length; s++) {
    const seq = sequences[s];
    // Features of every position from one causal pass: what the committed history holds.
    const cache = new KVCache(cfg.nLayers, cfg.nKvHeads, cfg.headDim, cfg.maxSeqLen);
    const out = await target.forward(cache, seq, seq.map((_, i) => i));
    history.reset();
    history.commit(seq, out.features, seq.map((_, i) => i), seq.length);
    drafter.reset();
    for (let P = promptLengths[s]; P < seq.length - 1; ) {
      history.length = P;
      const t0 = performance.now();
      const tree = await drafter.draft(history, seq[P], { depth: maxDepth, totalTokens: C }, clock);
      const t1 = performance.now();
      for (let D = 1; D < maxDepth; D++) draftTimes[D].push(clock.stamps[D] - t0);
      draftTimes[maxDepth].push(t1 - t0);
      const path = addSubtreeAcceptance(tree, drafter.candidateValues, seq.slice(P + 1), maxDepth, maxTokens, sums);
      rounds++;
      P += 1 + path.length;
    }
  }
  history.length = 0;
  const meanAccepted = Array.from({ length: maxDepth + 1 }, (_, D) =>
    Array.from({ length: maxTokens + 1 }, (_, N) => (D > 0 && N > 0 && rounds ? sums[D * (maxTokens + 1) + N] / rounds : 0)));
  return { topK, rounds, meanAccepted, draftMs: draftTimes.map((t) => (t.length ? median(t) : 0)) };
}

/**
 * A RoundDrafter that times each full-depth round from the start of its draft to the end of its
 * verify, and each plain step (a root-only verify: a plan of depth 0) over its verify.
 */
class TimedRoundDrafter extends RoundDrafter {
  rounds: number[] = [];
  plain: number[] = [];
  private t0 = 0;

  override draft(...a: Parameters<RoundDrafter['draft']>): ReturnType<RoundDrafter['draft']> {
    this.t0 = performance.now();
    return super.draft(...a);
  }

  override async verify(...a: Parameters<RoundDrafter['verify']>): ReturnType<RoundDrafter['verify']> {
    const n = a[2].n, t0 = n === 1 ? performance.now() : this.t0;
    const out = await super.verify(...a);
    // Rounds cut short (the generation's last tokens) verify fewer rows: not this depth's cost.
    if (n === 1) this.plain.push(performance.now() - t0);
    else if (n === this.session.depth + 1) this.rounds.push(performance.now() - t0);
    return out;
  }
}

/** Fused chain rounds against plain steps, timed the same way in the same loop (measureFusedRounds). */
export interface FusedRoundCosts {
  /** roundMs[D]: median ms of a fused round of depth D (index 0 unused). */
  roundMs: number[];
  /** plainMs[D]: median ms of a plain step, measured beside depth D's rounds. */
  plainMs: number[];
}

/**
 * Per depth 1..maxDepth (the arrays end before a depth no prompt had room for a full round of):
 * a RoundSession from `sessionOf` (disposed after) generates every prompt greedily with a static
 * chain of that depth, as `generate` would (the catch-up rows and both caches grow as there), and,
 * prompt by prompt in turn, plain decoding of the same prompt through the same drafter; the first
 * prompt runs both once untimed first (a session's first runs are slow). So a round's cost in
 * plain steps is measured on one basis, interleaved. Depths run one after another: each session
 * holds its own copy of the target's weights.
 */
export async function measureFusedRounds(target: TargetSession, sessionOf: (depth: number) => Promise<RoundSession>, prompts: number[][], maxDepth: number, maxNewTokens: number): Promise<FusedRoundCosts> {
  const out: FusedRoundCosts = { roundMs: [0], plainMs: [0] };
  for (let D = 1; D <= maxDepth; D++) {
    const session = await sessionOf(D);
    try {
      const drafter = new TimedRoundDrafter(session, target.cfg.maxSeqLen);
      const chain = new Generator({ target, drafter, policy: new StaticPolicy(D, D) }), plain = new Generator({ target, drafter, policy: new StaticPolicy(0, 0) });
      const run = async (p: number[]) => {
        const opts = { maxNewTokens: Math.min(maxNewTokens, target.cfg.maxSeqLen - p.length), stopAtEos: false };
        await chain.generate(p, opts);
        await plain.generate(p, opts);
      };
      await run(prompts[0]);
      drafter.rounds = [];
      drafter.plain = [];
      for (const p of prompts) await run(p);
      if (!drafter.rounds.length) break; // no room for a round this deep
      out.roundMs.push(median(drafter.rounds));
      out.plainMs.push(median(drafter.plain));
    } finally {
      await session.dispose();
    }
  }
  return out;
}
