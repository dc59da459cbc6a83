/**
 * Where a one-token pass of the 29M sweep config goes, by ablation (cost only, random weights):
 * the real step graph ('split' attention, values transposed) beside the same graph with parts
 * taken out, all timed in one process, interleaved pass by pass (order alternating), at each
 * thread count, with the bandwidth probe of the bytes-read floor (scripts/bandwidth.ts) every 30
 * rounds. ORT's profiler adds several microseconds a node (more with 2 threads), which is about
 * what the small nodes cost, so this measures by taking nodes out instead. Variants:
 *
 *   full     the step graph TargetSession builds
 *   bare     attention = the two past products only (q x K^T, then FusedMatMul with V^T): no
 *            scaling of its input, no new rows, no mask, no softmax (wrong numbers, same bytes)
 *   noattn   attention = a pass-through of q: no K/V read at all
 *   linear   the pass's one-row Linear products alone (57 Gemms over [out, in] weights)
 *   kv       the 16 past products of `bare` alone, over the same cache views
 *
 *   nonew    attention without the new rows: the past scores masked and softmaxed, times the
 *            past values (no regrouping of the new k and v, no new-row products, Concat, Split
 *            or Add: wrong numbers, same past bytes)
 *   onetoken the same numbers as full, rendered for one row only (see below): what a one-token
 *            graph could save
 *   V@KEY=VALUE  variant V (one of the above graphs) in a session with that ORT session config
 *            entry, e.g. full@session.intra_op.spin_duration_us=1000
 *
 * The one-token graph (OnnxOpsOptions.oneToken, fed its [1, S + 1] mask) and ways to score the
 * new row without joining it to the past's scores (session 17; all but `one` cost only):
 *   one        the one-token graph as TargetSession opens it
 *   one-nomask the same without the mask Add (wrong where masked: what a mask carried by the keys could save)
 *   one-nojoin the past alone: masked, softmaxed, times V^T (no new row, Concat or Split)
 *   one-online the same numbers without a join: per block max, exp and sum over the past, the new
 *              key's exp beside them, the two products added and divided by the total
 *   one-lse    the past's own Softmax and ReduceLogSumExp, the two blocks weighted by sigmoids
 *   one-where  the new key's score put into the past's first free column (Where over a bool [S]),
 *              its weight gathered from there (exact only over a cache whose free columns hold zeros)
 *
 * full - bare = attention's small nodes (new-row products, Concat, mask Add, Softmax, Split);
 * bare - noattn = the past K/V products in the pass; noattn - linear = everything else (norms,
 * RoPE, SiLU, regrouping, embedding, argmax, the call); full - nonew = the new rows' part.
 * Sessions built later ran up to ~0.3 ms faster than the first in A/A runs here, so compare
 * variants in both orders (--variants full,nonew,nonew,full and nonew,full,full,nonew).
 *
 *   node --import tsx scripts/ablate-step.ts -- --context 4000 --threads 1,2 --passes 300
 *   node --import tsx scripts/ablate-step.ts -- --threads 2 --variants full,nonew,nonew,full
 *   node --import tsx scripts/ablate-step.ts -- --threads 2 --variants one,one-nomask,one-nojoin,one-online,one-lse,one-where
 */
import { randomWeights } from '../src/model/random.ts';
import { buildTargetModel, names } from '../src/onnx/model-graphs.ts';
import { OnnxOps } from '../src/onnx/ops.ts';
import { GraphBuilder } from '../src/onnx/graph.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { createSession, f32, releaseSession, type Session } from '../src/runtime/ort.ts';
import { StepFeeds } from '../src/runtime/step-feeds.ts';
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { bandwidthProbes, passWeightBytes } from './bandwidth.ts';
import { SWEEP } from './runtime-sizes.ts';
import { median, quantile } from '../src/util/stats.ts';
import { UsageError } from '../src/errors.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'context', type: 'int', min: 1, default: 4000, help: 'cached rows before the pass' },
  { flag: 'threads', type: 'string', default: '1,2', help: 'thread counts (each its own sessions)' },
  { flag: 'passes', type: 'int', min: 10, default: 300, help: 'timed passes per variant (after 20 warm-ups)' },
  { flag: 'variants', type: 'string', default: 'full,bare,noattn,linear,kv', help: 'full, bare, noattn, nonew, onetoken, linear, kv, one, one-nomask, one-nojoin, one-online, one-lse, one-where; a graph variant may add @KEY=VALUE (an ORT session config entry); a name may repeat' },
];
const f = scriptFlags(import.meta.url, FLAGS);
type PastIn = { keys: string; values: string };
const cfg = SWEEP['29M'], weights = randomWeights(cfg, 1, 1);
const P = f.context as number, passes = f.passes as number, threadCounts = String(f.threads).split(',').map(Number);
if (P + 1 > cfg.maxSeqLen) throw new UsageError('--context', `${P} leaves no room for a new row in ${cfg.maxSeqLen}`);
const { nLayers, nKvHeads: H, headDim: D } = cfg;

type G = GraphBuilder;
const timesVT = (g: G, w: string, vt: string) => g.node('FusedMatMul', [w, vt], { transB: 1, alpha: { float: 1 } }, { domain: 'com.microsoft' })[0];

/** The step graph with OnnxOps.attention replaced by `body` (q [T, nH*hd] -> [T, nH*hd]) while it renders. */
function withAttention(body: (g: G, q: string, past: { keys: string; values: string }, mask: string, kv: { k: string; v: string }) => string): ReturnType<typeof buildTargetModel> {
  const real = OnnxOps.prototype.attention;
  OnnxOps.prototype.attention = function (q, k, v, past, mask) {
    return body(this.g, q, past!, mask, { k, v });
  };
  try {
    return buildTargetModel(cfg, weights, 'split', {});
  } finally {
    OnnxOps.prototype.attention = real;
  }
}
const width = cfg.nHeads * D, splitSizes = new Map<string, string>();
const models = {
  full: buildTargetModel(cfg, weights, 'split', {}),
  bare: withAttention((g, q, past) => {
    const q4 = g.op('Reshape', [q, g.ints([1, H, -1, D])]); // one row: [1, H, 1, hd] (nH = nKv here)
    return g.op('Reshape', [timesVT(g, g.op('MatMul', [q4, past.keys]), past.values), g.ints([-1, width])]);
  }),
  noattn: withAttention((g, q) => g.op('Reshape', [q, g.ints([-1, width])])),
  nonew: withAttention((g, q, past, mask) => {
    // splitAttention with the new rows left out (one query head per K/V head, one row: no regrouping needed).
    const q4 = g.op('Reshape', [g.op('Mul', [q, g.scalar(1 / Math.sqrt(D))]), g.ints([1, H, -1, D])]);
    const pastMask = g.op('Slice', [mask, g.ints([0]), g.ints([-1]), g.ints([-1])]); // [T, S]: the past's columns
    const w = g.op('Softmax', [g.op('Add', [g.op('MatMul', [q4, past.keys]), pastMask])], { axis: -1 });
    return g.op('Reshape', [timesVT(g, w, past.values), g.ints([-1, width])]);
  }),
  onetoken: withAttention((g, q, past, mask, { k, v }) => {
    // splitAttention's numbers for one row: every regrouping a Reshape (at T = 1 the Transposes
    // move only axes of size 1), the new row's two products elementwise (Mul, ReduceSum: small
    // enough for ORT to run them on the calling thread). Valid at T = 1 only.
    const heads = (x: string) => g.op('Reshape', [x, g.ints([1, H, 1, D])]);
    const q4 = heads(g.op('Mul', [q, g.scalar(1 / Math.sqrt(D))]));
    const scores = g.op('Concat', [g.op('MatMul', [q4, past.keys]), g.op('ReduceSum', [g.op('Mul', [q4, heads(k)]), g.ints([-1])], { keepdims: 1 })], { axis: -1 });
    const w = g.op('Softmax', [g.op('Add', [scores, mask])], { axis: -1 });
    let sizes = splitSizes.get(mask); // [S, 1], once a graph as in the step graph
    if (!sizes) splitSizes.set(mask, (sizes = g.op('Concat', [g.op('Shape', [past.values], { start: 3, end: 4 }), g.ints([1])], { axis: 0 })));
    const [wPast, wNew] = g.node('Split', [w, sizes], { axis: -1 }, { outputs: 2 });
    return g.op('Reshape', [g.op('Add', [timesVT(g, wPast, past.values), g.op('Mul', [wNew, heads(v)])]), g.ints([-1, width])]);
  }),
};
if (cfg.nHeads !== H) throw new Error('bare assumes one query head per K/V head');

// One-token graphs with OnnxOps' private oneTokenAttention(scaled [1, nH, 1, hd], k, v, past, mask [1, S + 1]) replaced while they render.
// Values a graph builds once (value names repeat across builders, so per builder).
const memos = new WeakMap<G, Map<string, string>>();
const memo = (g: G, key: string, make: () => string): string => {
  const m = memos.get(g) ?? memos.set(g, new Map()).get(g)!;
  return m.get(key) ?? m.set(key, make()).get(key)!;
};
type OneBody = (this: { g: G }, g: G, parts: { q4: string; kNewT: string; vNew: string; past: PastIn; pastMask: string; mask: string }) => string;
const opsProto = OnnxOps.prototype as unknown as { oneTokenAttention: (this: { g: G }, scaled: string, k: string, v: string, past: PastIn, mask: string) => string };
function oneToken(body?: OneBody): ReturnType<typeof buildTargetModel> {
  const real = opsProto.oneTokenAttention;
  if (body) {
    opsProto.oneTokenAttention = function (this: { g: G }, scaled: string, k: string, v: string, past: PastIn, mask: string) {
      const g = this.g, pastMask = memo(g, 'pastMask', () => g.op('Slice', [mask, g.ints([0]), g.ints([-1]), g.ints([-1])])); // [1, S], once a graph
      const parts = { q4: g.op('Reshape', [scaled, g.ints([1, H, 1, D])]), kNewT: g.op('Reshape', [k, g.ints([H, D, 1])]), vNew: g.op('Reshape', [v, g.ints([H, 1, D])]), past, pastMask, mask };
      return g.op('Reshape', [body.call(this, g, parts), g.ints([1, width])]);
    };
  }
  try {
    return buildTargetModel(cfg, weights, 'split', { oneToken: true });
  } finally {
    opsProto.oneTokenAttention = real;
  }
}
const oneModels = {
  one: () => oneToken(),
  'one-nomask': () => oneToken((g, { q4, kNewT, vNew, past }) => {
    const w = g.op('Softmax', [g.op('Concat', [g.op('MatMul', [q4, past.keys]), g.op('MatMul', [q4, kNewT])], { axis: -1 })], { axis: -1 });
    const [wPast, wNew] = g.node('Split', [w, g.op('Concat', [g.op('Shape', [past.values], { start: 3, end: 4 }), g.ints([1])], { axis: 0 })], { axis: -1 }, { outputs: 2 });
    return g.op('Add', [timesVT(g, wPast, past.values), g.op('Mul', [wNew, vNew])]);
  }),
  'one-nojoin': () => oneToken((g, { q4, past, pastMask }) => timesVT(g, g.op('Softmax', [g.op('Add', [g.op('MatMul', [q4, past.keys]), pastMask])], { axis: -1 }), past.values)),
  'one-online': () => oneToken((g, { q4, kNewT, vNew, past, pastMask }) => {
    const sp = g.op('Add', [g.op('MatMul', [q4, past.keys]), pastMask]), sn = g.op('MatMul', [q4, kNewT]);
    const m = g.op('Max', [g.op('ReduceMax', [sp, g.ints([-1])], { keepdims: 1 }), sn]);
    const ep = g.op('Exp', [g.op('Sub', [sp, m])]), en = g.op('Exp', [g.op('Sub', [sn, m])]);
    const total = g.op('Add', [g.op('ReduceSum', [ep, g.ints([-1])], { keepdims: 1 }), en]);
    return g.op('Div', [g.op('Add', [timesVT(g, ep, past.values), g.op('Mul', [en, vNew])]), total]);
  }),
  'one-lse': () => oneToken((g, { q4, kNewT, vNew, past, pastMask }) => {
    const sp = g.op('Add', [g.op('MatMul', [q4, past.keys]), pastMask]), sn = g.op('MatMul', [q4, kNewT]);
    const d = g.op('Sub', [g.op('ReduceLogSumExp', [sp, g.ints([-1])], { keepdims: 1 }), sn]); // the past's weight is sigmoid(d), the new key's sigmoid(-d)
    return g.op('Add', [g.op('Mul', [timesVT(g, g.op('Softmax', [sp], { axis: -1 }), past.values), g.op('Sigmoid', [d])]), g.op('Mul', [g.op('Sigmoid', [g.op('Neg', [d])]), vNew])]);
  }),
  'one-where': () => oneToken((g, { q4, kNewT, vNew, past, pastMask }) => {
    const scalar = (x: string) => g.op('Squeeze', [x, g.ints([0])]);
    const free = memo(g, 'free', () => g.op('Equal', [g.op('Range', [scalar(g.ints([0])), scalar(g.op('Shape', [pastMask], { start: 1, end: 2 })), scalar(g.ints([1]))]), g.ints([P])])); // [S]: column P
    const w = g.op('Softmax', [g.op('Add', [g.op('MatMul', [q4, past.keys]), g.op('Where', [free, g.op('MatMul', [q4, kNewT]), pastMask])])], { axis: -1 });
    return g.op('Add', [timesVT(g, w, past.values), g.op('Mul', [g.op('Gather', [w, g.ints([P])], { axis: 3 }), vNew])]);
  }),
};

// The Linear products alone, each over its own dense random weight, as bench-linears.ts.
const { dim: d, hiddenDim: I, vocabSize: V } = cfg;
const lin = new GraphBuilder('linears');
{
  const x = lin.input('x', 'float32', [1, d]), x2 = lin.input('x2', 'float32', [1, I]);
  const layer: [number, number][] = [[d, d], [d, d], [d, d], [d, d], [I, d], [I, d], [d, I]];
  let last = '';
  [...Array.from({ length: nLayers }, () => layer).flat(), [V, d] as [number, number]].forEach(([n, k], i) => {
    const w = lin.initializer(`w${i}`, { dtype: 'float32', dims: [n, k], data: Float32Array.from({ length: n * k }, () => Math.random() - 0.5) });
    last = lin.op('Gemm', [k === d ? x : x2, w], { transB: 1 });
  });
  lin.output(last, 'y', 'float32', [1, V]); // ORT runs every node, read or not
}
// The past products alone over the cache's views.
const kv = new GraphBuilder('kv');
{
  const q = kv.input('q', 'float32', [1, H, 1, D]);
  const outs = Array.from({ length: nLayers }, (_, l) =>
    timesVT(kv, kv.op('MatMul', [q, kv.input(names.pastKey(l), 'float32', [1, H, D, 'S'])]), kv.input(names.pastValue(l), 'float32', [1, H, D, 'S'])));
  kv.output(kv.op('Concat', outs, { axis: 0 }), 'y', 'float32', [nLayers, H, 1, D]);
}

const cache = new KVCache(nLayers, H, D, cfg.maxSeqLen).useValueLayout('transposed');
const chunk = Float32Array.from({ length: 64 * H * D }, (_, i) => Math.sin(i)), rows = Array(nLayers).fill(chunk);
while (cache.length < P) cache.append(rows, rows, Math.min(64, P - cache.length));
const feeds = new StepFeeds(nLayers, H, D, 1, { valueLayout: 'transposed' }), oneFeeds = new StepFeeds(nLayers, H, D, 1, { valueLayout: 'transposed', oneToken: true });
const linFeeds = { x: f32(new Float32Array(d).fill(1), [1, d]), x2: f32(new Float32Array(I).fill(1), [1, I]) };
const q = f32(Float32Array.from({ length: H * D }, (_, i) => 0.01 * Math.sin(i)), [1, H, 1, D]);
const kvFeeds = () => {
  const all = feeds.build(cache, [5], [P]), x: Record<string, (typeof all)[string]> = { q };
  for (let l = 0; l < nLayers; l++) (x[names.pastKey(l)] = all[names.pastKey(l)]), (x[names.pastValue(l)] = all[names.pastValue(l)]);
  return x;
};
const fetch = [names.argmax, names.features, names.present];

const variants: { name: string; threads: number; s: Session; run: () => Promise<unknown>; ms: number[] }[] = [];
const graphs: Record<string, () => Uint8Array | ReturnType<typeof buildTargetModel>> = {
  ...Object.fromEntries(Object.entries(models).map(([k, m]) => [k, () => m])),
  ...oneModels,
  linear: () => lin.toModel({ opset: 23, irVersion: 11 }),
  kv: () => kv.toModel({ opset: 23, irVersion: 11 }),
};
for (const threads of threadCounts) {
  for (const spec of String(f.variants).split(',')) {
    const [base, entry] = spec.split('@'), [key, value] = entry ? entry.split('=') : [];
    if (!graphs[base] || (entry && (!key || value === undefined))) throw new UsageError('--variants', `${spec} is not one of ${Object.keys(graphs)}, optionally with @KEY=VALUE`);
    const s = await createSession(graphs[base](), { threads, ...(entry ? { config: { [key]: value } } : {}) });
    const stepFeeds = base.startsWith('one') ? oneFeeds : feeds;
    const run = base === 'linear' ? () => s.inner.run(linFeeds) : base === 'kv' ? () => s.inner.run(kvFeeds()) : () => s.inner.run(stepFeeds.build(cache, [5], [P]), fetch);
    variants.push({ name: spec, threads, s, ms: [], run });
  }
}
const probes = await Promise.all(threadCounts.map((t) => bandwidthProbes(t)));
const rates: number[][] = threadCounts.map(() => []);
for (let r = -20; r < passes; r++) {
  for (const v of r % 2 ? [...variants].reverse() : variants) {
    const t0 = performance.now();
    await v.run();
    if (r >= 0) v.ms.push(performance.now() - t0);
  }
  if (r >= 0 && r % 30 === 0) for (let i = 0; i < probes.length; i++) rates[i].push(await probes[i].gemv());
}

const weightMB = passWeightBytes(cfg, weights) / 1e6, kvMB = (2 * nLayers * H * D * P * 4) / 1e6;
const fmt = (x: number) => x.toFixed(3);
console.log(`29M one-token pass after ${P} rows (stride ${cache.stride}), ${passes} passes per variant, interleaved; ms: median (quartiles)`);
threadCounts.forEach((threads, i) => {
  const mine = variants.filter((v) => v.threads === threads), gbps = median(rates[i]);
  const at = (name: string) => median(mine.find((v) => v.name === name)!.ms), has = (...ns: string[]) => ns.every((n) => mine.some((v) => v.name === n));
  console.log(`${threads} thread(s): probe ${gbps.toFixed(1)} GB/s; floor ${fmt((weightMB + kvMB) / gbps)} ms (weights ${weightMB.toFixed(1)} MB, past K/V ${kvMB.toFixed(1)} MB); paired difference to ${mine[0].name}: median (quartiles)`);
  for (const v of mine) {
    const d = v.ms.map((x, j) => x - mine[0].ms[j]);
    console.log(`  ${v.name.padEnd(7)} ${fmt(median(v.ms))} (${fmt(quantile(v.ms, 0.25))}-${fmt(quantile(v.ms, 0.75))})  ${fmt(median(d))} (${fmt(quantile(d, 0.25))}-${fmt(quantile(d, 0.75))})`);
  }
  const parts: string[] = [];
  if (has('full')) parts.push(`full / floor ${(at('full') / ((weightMB + kvMB) / gbps)).toFixed(2)}x`);
  if (has('full', 'bare')) parts.push(`attention's small nodes (full - bare) ${fmt(at('full') - at('bare'))}`);
  if (has('full', 'nonew')) parts.push(`the new rows' part (full - nonew) ${fmt(at('full') - at('nonew'))}`);
  if (has('full', 'onetoken')) parts.push(`one-token rendering (full - onetoken) ${fmt(at('full') - at('onetoken'))}`);
  if (has('bare', 'noattn')) parts.push(`past products in the pass (bare - noattn) ${fmt(at('bare') - at('noattn'))} = ${(kvMB / (at('bare') - at('noattn'))).toFixed(1)} GB/s`);
  if (has('noattn', 'linear')) parts.push(`the rest (noattn - linear) ${fmt(at('noattn') - at('linear'))}`);
  if (has('linear')) parts.push(`Linear products ${(weightMB / at('linear')).toFixed(1)} GB/s`);
  if (has('kv')) parts.push(`past products alone ${(kvMB / at('kv')).toFixed(1)} GB/s`);
  console.log(`  ${parts.join('; ')}`);
});
for (const v of variants) await releaseSession(v.s);
for (const p of probes) await p.dispose();
