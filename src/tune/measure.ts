/**
 * What `eaglet tune` measures on this machine, for one target + draft head:
 *
 *   verify cost    ms of one target pass over n tokens (n = 1: a plain decoding step), after a
 *                  real context, every n up to the largest tree + 1, median of interleaved repeats
 *                  (made non-decreasing in n)
 *   draft cost     ms from the start of a round's drafting until depth D is drafted, per top-k,
 *                  timed inside the real drafter (catch-up pass included) during the acceptance runs
 *   acceptance     mean drafted tokens accepted by every shape (top-k, depth D, size N), greedy,
 *                  from fully kept trees (trees/subtree-acceptance.ts) drafted along the target's
 *                  own greedy continuation of each prompt, advancing as a full-tree round would
 */
import { addSubtreeAcceptance } from '../../trees/index.ts';
import { EagleDrafter } from '../generate/eagle-drafter.ts';
import { Generator } from '../generate/generator.ts';
import { History } from '../generate/history.ts';
import type { LengthPolicy } from '../policies/policy.ts';
import type { DraftSession } from '../runtime/draft.ts';
import { KVCache } from '../runtime/kv-cache.ts';
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
      const t0 = performance.now();
      await target.forward(cache, tokens.slice(0, n), positions.slice(0, n));
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
