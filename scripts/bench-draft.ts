/**
 * Draft-pass cost benchmark on a random-weight target (cost only: random weights say nothing
 * about acceptance). For each thread count, in one process and interleaved repeat by repeat:
 *
 *   step      the plain decoding step: one target pass of T = 1 over a 64-token prefix
 *   verify T  one target pass of a T-token tree (T = 4, 8, 16, 32)
 *   depth     one draft depth: a draft pass of k frontier rows after k * (depth - 1) staged
 *             rows, as EagleDrafter runs it, per draft head variant: draft vocabulary size N
 *             (full = the target's) and weight quantization (fp32, or q8 / q4: MatMulNBits)
 *
 * Prints medians with [min, max] over the repeats, each as a share of the plain step, the
 * bytes each pass must read (weights; the draft's embedding gather and K/V are negligible) and
 * the floor those bytes imply at the bandwidth the plain step itself reaches. Then the round
 * split for a tree of depth D: D draft depths + one verify, in plain steps.
 *
 * With the fused round (`--fused-heads`, runtime/round.ts: the head's chain and the verify in
 * one ORT call), interleaved with the above:
 *
 *   fused depth   one in-graph draft depth (one row): (round of depth D - round of depth 1) /
 *                 (D - 1), both rounds verifying only the root after one catch-up row
 *   fused round   the whole round of depth D verifying all D drafts, in plain steps
 *
 *   node --import tsx scripts/bench-draft.ts [-- --threads 1,2 --heads full,8192,8192:q8 --fused-heads 8192:q4 --repeats 7 --top-k 8 --depth 5 --json out.json]
 */
import { writeFileAtomic } from '../src/io/atomic.ts';
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { parameterCount } from '../src/model/config.ts';
import { headConfigFor, headShapes, randomHeadWeights, type HeadConfig } from '../src/model/draft-head.ts';
import { randomWeights } from '../src/model/random.ts';
import { prefilledCache, SIZES } from './runtime-sizes.ts';
import type { Weights } from '../src/model/weights.ts';
import { DRAFT_QUANT, type WeightQuant } from '../src/model/quantize.ts';
import { DraftSession } from '../src/runtime/draft.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { TargetSession } from '../src/runtime/target.ts';
import { RoundSession } from '../src/runtime/round.ts';
import { median } from '../src/util/stats.ts';
import { UsageError } from '../src/errors.ts';

/** The 100M configuration of `npm run bench:runtime` (8 layers, GQA 12/4, untied 32000-token head). */
const CONFIG = SIZES['100M'];
const PREFIX = 64;

const FLAGS: FlagSpec[] = [
  { flag: 'threads', type: 'string', default: '1,2', help: 'ORT intra-op thread counts to run' },
  { flag: 'heads', type: 'string', default: 'full,8192,full:q8,8192:q8,8192:q4', help: 'draft heads: N[:qB] = draft vocabulary N (full = all) with B-bit weights' },
  { flag: 'top-k', type: 'int', min: 1, default: 8, help: 'frontier rows per draft depth' },
  { flag: 'depth', type: 'int', min: 2, default: 5, help: 'depth D of the round split (and of the staged rows measured)' },
  { flag: 'verify', type: 'string', default: '4,8,16,32', help: 'tree sizes whose verify pass is timed' },
  { flag: 'fused-heads', type: 'string', default: '8192:q4', help: 'heads (as --heads) also timed in the fused round; "none" for none (each holds two more copies of the target)' },
  { flag: 'repeats', type: 'int', min: 3, default: 7, help: 'interleaved timed repeats (after one warm-up)' },
  { flag: 'json', type: 'string', help: 'also write results here' },
];
const f = scriptFlags(import.meta.url, FLAGS);
const list = (s: unknown): number[] => String(s).split(',').map(Number);
const threadsList = list(f.threads), verifySizes = list(f.verify);
const k = f.topK as number, D = f.depth as number, repeats = f.repeats as number;

const cfg = CONFIG, weights = randomWeights(cfg, 1, 3);
const BLOCK = DRAFT_QUANT.q8.blockSize; // what --draft-quant uses
const fusedSpecs = f.fusedHeads === 'none' ? [] : String(f.fusedHeads).split(',');
const heads: { label: string; n: number; bits: number; quantize?: WeightQuant; config: HeadConfig; weights: Weights }[] = [...new Set([...String(f.heads).split(','), ...fusedSpecs])].map((spec) => {
  const m = /^(full|\d+)(?::q(4|8))?$/.exec(spec);
  if (!m) throw new UsageError('--heads', `${spec} is not N[:q4|:q8]`);
  const n = m[1] === 'full' ? 0 : Number(m[1]), bits = m[2] ? Number(m[2]) : 32;
  return {
    label: spec, n: n || cfg.vocabSize, bits,
    quantize: bits < 32 ? DRAFT_QUANT[`q${bits}` as 'q8' | 'q4'] : undefined,
    config: headConfigFor(cfg, n || undefined),
    weights: randomHeadWeights(cfg, 2, n ? { size: n, targetWeights: weights } : undefined),
  };
});
const MB = (params: number) => (4 * params) / 1e6;
const targetBytes = MB(parameterCount(cfg) - cfg.vocabSize * cfg.dim); // all but the embedding table (one row is gathered)
/** MB a draft pass reads: every matrix (the target's LM head for a full-vocabulary head) at `bits` per weight plus one fp32 scale per block. */
const headBytes = (h: HeadConfig, bits: number) => {
  const params = [...headShapes(h)].filter(([n]) => n !== 'd2t' && n !== 't2d').reduce((a, [, s]) => a + s.reduce((x, y) => x * y, 1), 0) + (h.draftVocabSize ? 0 : cfg.vocabSize * cfg.dim);
  return (MB(params) * (bits + (bits < 32 ? 32 / BLOCK : 0))) / 32;
};

const timed = async (fn: () => Promise<unknown>, into: number[]) => {
  const t0 = performance.now();
  await fn();
  into.push(performance.now() - t0);
};
const results: Record<string, unknown>[] = [];

for (const threads of threadsList) {
  const target = await TargetSession.create(cfg, weights, { threads });
  const { cache, prefix } = await prefilledCache(target, PREFIX);

  // A verify tree of T tokens: a chain is enough for cost (the mask's content does not change the work).
  const verifyArgs = verifySizes.map((T) => ({ T, toks: Array.from({ length: T }, (_, i) => i), pos: Array.from({ length: T }, (_, i) => PREFIX + i) }));
  // One draft depth as EagleDrafter runs it at depth D: k rows after k * (D - 2) staged rows, each
  // seeing its own ancestors (here: the same slot of every earlier frontier) and itself.
  const R = k * (D - 2), W = R + k;
  const draftMask = new Uint8Array(k * W);
  for (let i = 0; i < k; i++) for (let j = i; j < W; j += k) draftMask[i * W + j] = 1;
  const drafts = [];
  for (const h of heads) {
    const session = await DraftSession.create(h.config, h.weights, cfg, weights, { threads, topK: k, quantize: h.quantize });
    const dc = new KVCache(1, h.config.nKvHeads, h.config.headDim, cfg.maxSeqLen + W);
    const feats = Float32Array.from({ length: (PREFIX + W) * cfg.dim }, (_, i) => Math.sin(i));
    const o = await session.forward(dc, prefix.slice(1), feats, prefix.slice(1).map((_, i) => i));
    dc.append(o.newKeys, o.newValues, PREFIX - 1);
    const staged = await session.forward(dc, Array.from({ length: R }, (_, i) => i), feats, Array.from({ length: R }, (_, i) => PREFIX + Math.floor(i / k)));
    dc.append(staged.newKeys, staged.newValues, R);
    const toks = Array.from({ length: k }, (_, i) => 100 + i), pos = toks.map(() => PREFIX + D - 2);
    drafts.push({ h, session, run: () => session.forward(dc, toks, feats, pos, draftMask), ms: [] as number[] });
  }

  // Fused rounds of depth D and 1 over the same state: one catch-up row after PREFIX - 1 cached rows.
  const chainMask = (n: number) => Uint8Array.from({ length: n * n }, (_, i) => (i % n <= Math.floor(i / n) ? 1 : 0));
  const fused = [];
  for (const h of heads.filter((x) => fusedSpecs.includes(x.label))) {
    const make = (depth: number) => RoundSession.create(cfg, weights, h.config, h.weights, depth, { threads, quantize: h.quantize });
    const deep = await make(D), shallow = await make(1);
    const hc = new KVCache(1, h.config.nKvHeads, h.config.headDim, cfg.maxSeqLen);
    const warm = await deep.run(cache, 5, [PREFIX], chainMask(1), hc, { tokens: prefix.slice(1), features: Float32Array.from({ length: (PREFIX - 1) * cfg.dim }, (_, i) => Math.sin(i)), positions: prefix.slice(1).map((_, i) => i) }, { logits: false });
    hc.append(warm.headKeys, warm.headValues, PREFIX - 1);
    const catchUp = { tokens: [7], features: Float32Array.from({ length: cfg.dim }, (_, i) => Math.cos(i)), positions: [PREFIX - 1] };
    const root = (s: RoundSession, m: number) => () => s.run(cache, 5, Array.from({ length: m + 1 }, (_, i) => PREFIX + i), chainMask(m + 1), hc, catchUp, { logits: false });
    fused.push({ h, sessions: [deep, shallow], deep: root(deep, 0), shallow: root(shallow, 0), full: root(deep, D), deepMs: [] as number[], shallowMs: [] as number[], fullMs: [] as number[] });
  }

  const stepMs: number[] = [], verifyMs = verifySizes.map(() => [] as number[]);
  const step = () => target.forward(cache, [5], [PREFIX]);
  for (let r = -1; r < repeats; r++) {
    const keep = r >= 0; // repeat -1 is the warm-up
    await timed(step, keep ? stepMs : []);
    for (const d of drafts) await timed(d.run, keep ? d.ms : []);
    for (const [i, v] of verifyArgs.entries()) await timed(() => target.forward(cache, v.toks, v.pos), keep ? verifyMs[i] : []);
    for (const u of fused) {
      await timed(u.deep, keep ? u.deepMs : []);
      await timed(u.shallow, keep ? u.shallowMs : []);
      await timed(u.full, keep ? u.fullMs : []);
    }
  }
  await target.dispose();
  for (const d of drafts) await d.session.dispose();
  for (const u of fused) for (const s of u.sessions) await s.dispose();

  const step1 = median(stepMs), gbps = targetBytes / step1; // MB/ms = GB/s
  const spread = (xs: number[]) => `[${(Math.min(...xs) / step1).toFixed(3)}, ${(Math.max(...xs) / step1).toFixed(3)}]`;
  console.log(`\n${threads} thread(s): plain step ${step1.toFixed(2)} ms [${Math.min(...stepMs).toFixed(2)}, ${Math.max(...stepMs).toFixed(2)}], reads ${targetBytes.toFixed(0)} MB = ${gbps.toFixed(1)} GB/s`);
  const row: Record<string, unknown> = { threads, stepMs: step1, stepRange: [Math.min(...stepMs), Math.max(...stepMs)], gbps, draft: [], verify: [] };
  for (const [i, v] of verifyArgs.entries()) {
    const m = median(verifyMs[i]);
    console.log(`  verify T=${String(v.T).padEnd(3)} ${m.toFixed(2).padStart(7)} ms = ${(m / step1).toFixed(3)} steps ${spread(verifyMs[i])}`);
    (row.verify as unknown[]).push({ T: v.T, ms: m, steps: m / step1, range: [Math.min(...verifyMs[i]), Math.max(...verifyMs[i])] });
  }
  for (const d of drafts) {
    const m = median(d.ms), bytes = headBytes(d.h.config, d.h.bits), floor = bytes / gbps;
    console.log(`  draft depth ${d.h.label.padEnd(11)} ${m.toFixed(2).padStart(7)} ms = ${(m / step1).toFixed(3)} steps ${spread(d.ms)}; reads ${bytes.toFixed(0)} MB, floor at the step's bandwidth ${floor.toFixed(2)} ms = ${(floor / step1).toFixed(3)} steps`);
    (row.draft as unknown[]).push({ head: d.h.label, draftVocab: d.h.n, bits: d.h.bits, ms: m, steps: m / step1, range: [Math.min(...d.ms), Math.max(...d.ms)], mb: bytes, floorMs: floor });
  }
  for (const d of drafts) {
    const parts = verifyArgs.map((v, i) => `T=${v.T} ${((D * median(d.ms) + median(verifyMs[i])) / step1).toFixed(2)}`).join(', ');
    console.log(`  round of depth ${D} (${d.h.label}): ${D} draft depths + verify, in plain steps: ${parts} (speculation pays when tau exceeds it)`);
  }
  for (const u of fused) {
    // Per-repeat differences: both rounds ran back to back in each repeat.
    const perDepth = u.deepMs.map((x, i) => (x - u.shallowMs[i]) / (D - 1)), m = median(perDepth), full = median(u.fullMs);
    const floor = headBytes(u.h.config, u.h.bits) / gbps;
    console.log(`  fused draft depth ${u.h.label.padEnd(5)} ${m.toFixed(2).padStart(7)} ms = ${(m / step1).toFixed(3)} steps ${spread(perDepth)} (one row, in the round's graph; floor ${(floor / step1).toFixed(3)} steps); fused round of depth ${D} verifying all: ${full.toFixed(2)} ms = ${(full / step1).toFixed(2)} steps ${spread(u.fullMs)}`);
    (row.fused ??= [] as unknown[]) as unknown[];
    (row.fused as unknown[]).push({ head: u.h.label, depthMs: m, depthSteps: m / step1, depthRange: [Math.min(...perDepth), Math.max(...perDepth)], roundMs: full, roundSteps: full / step1, floorMs: floor });
  }
  results.push(row);
}
if (f.json) writeFileAtomic(String(f.json), JSON.stringify({ config: cfg, topK: k, depth: D, results }, null, 2) + '\n');
