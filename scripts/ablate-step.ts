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
 * full - bare = attention's small nodes (new-row products, Concat, mask Add, Softmax, Split);
 * bare - noattn = the past K/V products in the pass; noattn - linear = everything else (norms,
 * RoPE, SiLU, regrouping, embedding, argmax, the call); full - nonew = the new rows' part.
 * Sessions built later ran up to ~0.3 ms faster than the first in A/A runs here, so compare
 * variants in both orders (--variants full,nonew,nonew,full and nonew,full,full,nonew).
 *
 *   node --import tsx scripts/ablate-step.ts -- --context 4000 --threads 1,2 --passes 300
 *   node --import tsx scripts/ablate-step.ts -- --threads 2 --variants full,nonew,nonew,full
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
  { flag: 'variants', type: 'string', default: 'full,bare,noattn,linear,kv', help: 'full, bare, noattn, nonew, onetoken, linear, kv; a graph variant may add @KEY=VALUE (an ORT session config entry); a name may repeat' },
];
const f = scriptFlags(import.meta.url, FLAGS);
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
const feeds = new StepFeeds(nLayers, H, D, 1, { valueLayout: 'transposed' });
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
  linear: () => lin.toModel({ opset: 23, irVersion: 11 }),
  kv: () => kv.toModel({ opset: 23, irVersion: 11 }),
};
for (const threads of threadCounts) {
  for (const spec of String(f.variants).split(',')) {
    const [base, entry] = spec.split('@'), [key, value] = entry ? entry.split('=') : [];
    if (!graphs[base] || (entry && (!key || value === undefined))) throw new UsageError('--variants', `${spec} is not one of ${Object.keys(graphs)}, optionally with @KEY=VALUE`);
    const s = await createSession(graphs[base](), { threads, ...(entry ? { config: { [key]: value } } : {}) });
    const run = base === 'linear' ? () => s.inner.run(linFeeds) : base === 'kv' ? () => s.inner.run(kvFeeds()) : () => s.inner.run(feeds.build(cache, [5], [P]), fetch);
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
