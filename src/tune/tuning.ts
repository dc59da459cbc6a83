/**
 * Tuning files: the tree shape and policy `eaglet tune` found fastest for one draft head on one
 * machine, with what it measured. Written as `tuning.json` beside the head; `generate`, `bench`
 * and `loadGenerator` apply it unless options say otherwise, and only on the machine and thread
 * count it was measured with, and with the same weight formats (fp32 / q8 / q4 target and head,
 * and a quantization's block size, and the Linear kernel); anything else is reported, never applied silently.
 */
import { existsSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { join } from 'node:path';
import { FormatError, UsageError } from '../errors.ts';
import type { TreeShape } from '../../trees/index.ts';
import { checkTree } from '../option-schema.ts';
import { readJsonFile } from '../io/read.ts';
import type { ModelConfig } from '../model/config.ts';
import { DRAFT_QUANT, quantOf, type QuantName } from '../model/quantize.ts';
import type { Weights } from '../model/weights.ts';
import { candidates, type Measurements } from './measure.ts';

export const TUNING_FILE = 'tuning.json';

/** What identifies "this machine" for cost tables: a table measured elsewhere does not apply. */
export interface MachineInfo {
  cpu: string;
  cores: number;
  platform: string;
  arch: string;
}

export function machineInfo(): MachineInfo {
  return { cpu: cpus()[0]?.model.trim() ?? 'unknown', cores: availableParallelism(), platform: process.platform, arch: process.arch };
}

/** A shape's predicted throughput from the measured tables. */
export interface ShapeScore {
  topK: number;
  depth: number;
  totalTokens: number;
  /** Mean drafted tokens accepted per round. */
  accepted: number;
  /** Tokens per round, bonus included: 1 + accepted. */
  tau: number;
  /** Draft + verify ms of one round (a fused chain round: its one call). */
  roundMs: number;
  /** Priced as one fused ORT call per round (Measurements.fused), as `generate` runs this chain. */
  fused?: boolean;
  /** Predicted speedup over plain decoding: tau x plain step / round (no bookkeeping counted). */
  speedup: number;
}

export interface TuningFile {
  format: 'eaglet-tuning';
  version: 1;
  created: string;
  machine: MachineInfo;
  threads: number;
  /**
   * The weights the costs were measured with: 'fp32', 'q8' or 'q4' for the target and for the
   * draft head, with a quantization's block size (absent in older files: fp32 both; older files
   * with quantized weights have no block sizes). A q4 target's verify and a q4 head's draft pass
   * cost differently from fp32 ones, and q4 in blocks of 32 differently from blocks of 128, so a
   * file applies only to runs with the same weights.
   */
  weights?: TunedWeights;
  /** What was tuned: paths as given, the prompt file, tokens of greedy continuation measured. */
  source: { model: string; draft: string; prompts: string; tokens: number };
  /** The choice: tree shape and policy spec (a `--policy` string). */
  tree: TreeShape;
  policy: string;
  /**
   * Whether chain shapes were priced, and the policies at a chain run, as one fused ORT call per
   * round (`eaglet tune --fused-round`; default on for the embedded pair, as `generate`). With
   * fusedRound 'auto' loadGenerator runs a tuned chain this way. Absent in older files: the
   * embedded pair's rule.
   */
  fusedRound?: boolean;
  /** Predicted (from the tables) and measured (short runs on the tune prompts) speedups. */
  predicted: ShapeScore;
  policyRuns: { policy: string; tokensPerSecond: number; speedup: number; tau: number }[];
  plainTokensPerSecond: number;
  /** Best shape per (top-k, depth): the curve behind the choice. */
  byDepth: ShapeScore[];
  measured: Measurements;
}

/**
 * Scores every shape the tables cover; returns all, best first. With `m.fused` a chain (top-k 1,
 * depth D, D tokens) is priced as its fused round, the way `generate` then runs it: its cost in
 * plain steps timed beside it, times the verify table's plain step (so every shape is priced on
 * one basis); a depth without a fused figure is left out.
 */
export function scoreShapes(m: Measurements): ShapeScore[] {
  const plain = m.verifyMs[1], maxTokens = m.verifyMs.length - 2, fused = m.fused;
  const out: ShapeScore[] = [];
  for (const a of m.acceptance) {
    const chain = a.topK === 1 && fused !== undefined;
    for (let D = 1; D < a.meanAccepted.length && !(chain && D >= fused.roundMs.length); D++) {
      for (let N = D; N <= Math.min(maxTokens, candidates(a.topK, D)); N++) {
        const accepted = a.meanAccepted[D][N], roundMs = chain ? (fused.roundMs[D] / fused.plainMs[D]) * plain : a.draftMs[D] + m.verifyMs[N + 1];
        out.push({ topK: a.topK, depth: D, totalTokens: N, accepted, tau: 1 + accepted, roundMs, speedup: ((1 + accepted) * plain) / roundMs, ...(chain ? { fused: true } : {}) });
      }
    }
  }
  return out.sort((x, y) => y.speedup - x.speedup);
}

/** The best shape of each (top-k, depth), for the report. */
export function bestByDepth(scores: ShapeScore[]): ShapeScore[] {
  const seen = new Map<string, ShapeScore>();
  for (const s of scores) if (!seen.has(`${s.topK}x${s.depth}`)) seen.set(`${s.topK}x${s.depth}`, s);
  return [...seen.values()].sort((a, b) => a.topK - b.topK || a.depth - b.depth);
}

/** Weight formats of a tuned pair: what `--quantize` / `--draft-quant` (or a quantized checkpoint) gave. */
export interface TunedWeights {
  target: 'fp32' | 'q8' | 'q4';
  draft: 'fp32' | 'q8' | 'q4';
  /**
   * A quantized target's block size: its Linear weights' largest (quantOf). Absent for fp32, and
   * in files written before block sizes were recorded (unknown: such a file applies to no
   * quantized target).
   */
  targetBlock?: number;
  /** A quantized head's block size, as its `--draft-quant` asks for (DRAFT_QUANT); absent as targetBlock. */
  draftBlock?: number;
  /**
   * 'native': blockwise Linear layers ran on eaglet's own kernel (LoadOptions.nativeMatMul,
   * `--native-matmul`), which prices rounds differently. Absent: ORT's MatMulNBits.
   */
  kernel?: 'native';
}

const FP32_WEIGHTS: TunedWeights = { target: 'fp32', draft: 'fp32' };

/**
 * The weight formats a loaded pair runs with: the target's as held (quantized at load or a
 * quantized checkpoint; read before its Linear weights are released), the head's `draft`
 * (as loadGenerator quantizes it; undefined = fp32).
 */
export function tunedWeights(cfg: ModelConfig, weights: Weights, draft?: QuantName, nativeMatMul = false): TunedWeights {
  const q = quantOf(cfg, weights);
  return {
    target: q?.bits === 4 ? 'q4' : q?.bits === 8 ? 'q8' : 'fp32', draft: draft ?? 'fp32',
    ...(q ? { targetBlock: q.blockSize } : {}), ...(draft ? { draftBlock: DRAFT_QUANT[draft].blockSize } : {}),
    ...(nativeMatMul && (q || draft) ? { kernel: 'native' as const } : {}),
  };
}

/** One side's format for a message: 'fp32', 'q4 (blocks of 128)', 'q4 (block size not recorded)'. */
function formatName(format: TunedWeights['target'], block: number | undefined): string {
  return format === 'fp32' ? format : `${format} (${block === undefined ? 'block size not recorded' : `blocks of ${block}`})`;
}

/** Both sides' formats for a message: 'target q4 (blocks of 128), head fp32'. */
const formatsName = (w: TunedWeights): string => `target ${formatName(w.target, w.targetBlock)}, head ${formatName(w.draft, w.draftBlock)}${w.kernel === 'native' ? ", on eaglet's own kernel (--native-matmul)" : ''}`;

/** A quantized side's format matches only with both block sizes known and equal. */
const sameFormat = (a: TunedWeights['target'], aBlock: number | undefined, b: TunedWeights['target'], bBlock: number | undefined): boolean =>
  a === b && (a === 'fp32' || (aBlock !== undefined && aBlock === bBlock));

/**
 * Why `t` does not apply here with `threads` and `weights` (default fp32 target and head), or
 * null when it does.
 */
export function tuningMismatch(t: TuningFile, threads: number, here: MachineInfo = machineInfo(), weights: TunedWeights = FP32_WEIGHTS): string | null {
  const m = t.machine;
  if (m.cpu !== here.cpu || m.cores !== here.cores || m.platform !== here.platform || m.arch !== here.arch)
    return `measured on another machine (${m.cpu}, ${m.cores} cores; this one: ${here.cpu}, ${here.cores} cores)`;
  if (t.threads !== threads) return `measured with ${t.threads} threads, running with ${threads}`;
  const tw = t.weights ?? FP32_WEIGHTS;
  if (!sameFormat(tw.target, tw.targetBlock, weights.target, weights.targetBlock) || !sameFormat(tw.draft, tw.draftBlock, weights.draft, weights.draftBlock) || tw.kernel !== weights.kernel)
    return `measured with ${formatsName(tw)}; running with ${formatsName(weights)}`;
  return null;
}

/** Reads `dir/tuning.json` if present (undefined if not); a malformed file is a FormatError naming it. */
export function readTuning(dir: string, name = TUNING_FILE): TuningFile | undefined {
  const file = join(dir, name);
  if (!existsSync(file)) return undefined;
  const t = readJsonFile(file) as TuningFile | null;
  const shapeOk = (s: TreeShape | undefined) => !!s && [s.topK, s.maxDepth, s.totalTokens].every((v) => Number.isInteger(v) && v >= 1);
  if (!t || t.format !== 'eaglet-tuning' || t.version !== 1) throw new FormatError(file, 'not an eaglet tuning file (format "eaglet-tuning", version 1)');
  if (!shapeOk(t.tree) || typeof t.policy !== 'string' || !t.machine || !Number.isInteger(t.threads)) throw new FormatError(file, 'needs tree {topK, maxDepth, totalTokens}, policy, machine and threads');
  // In range and reachable, as `eaglet tune` writes it: otherwise a later error would blame --depth or --total-tokens.
  try {
    checkTree(t.tree, undefined, true);
  } catch (e) {
    throw e instanceof UsageError ? new FormatError(file, e.message) : e;
  }
  return t;
}

/**
 * Round ms by depth from a tuning file, for cost-aware labels: what `generate` pays for a plan
 * of depth t under this file. Index 0 = a plain decoding step; index t = the best tree of depth
 * t at the tuned top-k (draft + verify). Depths the file did not measure are left out (the
 * array ends there).
 *
 * A tuned fused chain (top-k 1 priced as one call per round) runs ONE round graph of the tuned
 * depth D, which drafts all D levels whatever the plan and verifies t + 1 rows for a depth-t
 * plan: every t in 1..D is priced at that graph's measured round (depth D, verifying D drafts),
 * and the array ends at D (the graph drafts no deeper). Verifying fewer rows saves only target
 * rows, which tune does not time on that graph, so shallow depths are priced at an upper bound
 * (ours; a memory-bound pass over 2 or D + 1 rows costs about the same).
 */
export function depthCosts(t: TuningFile): number[] {
  const k = t.tree.topK, rows = t.byDepth.filter((s) => s.topK === k).sort((a, b) => a.depth - b.depth);
  const out = [t.measured.verifyMs[1]];
  const D = t.tree.maxDepth, tuned = rows.find((s) => s.depth === D);
  if (tuned?.fused) {
    for (let d = 1; d <= D; d++) out.push(tuned.roundMs);
    return out;
  }
  for (const s of rows) {
    if (s.depth !== out.length) break;
    out.push(s.roundMs);
  }
  return out;
}

/**
 * The cost-aware label of a round whose full-depth draft had `accepted` tokens accepted: the depth
 * t (0 = no speculation) with the most tokens per ms, (1 + min(accepted, t)) / roundMs[t]. A
 * round cannot accept more than it drafts; drafting deeper than it accepts only costs. Assumes a
 * shallower tree accepts min(accepted, t), which holds for the path but ignores a smaller
 * tree's pruning (ours, not AdaEAGLE's, which labels the accepted length itself).
 */
export function costAwareDepth(accepted: number, roundMs: ArrayLike<number>): number {
  let best = 0, bestRate = 1 / roundMs[0];
  for (let t = 1; t < roundMs.length; t++) {
    const rate = (1 + Math.min(accepted, t)) / roundMs[t];
    if (rate > bestRate) (best = t), (bestRate = rate);
  }
  return best;
}
