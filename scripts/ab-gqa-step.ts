/**
 * The 29M sweep config's one-token step (random weights, cost only) against the same step with
 * each layer's attention one com.microsoft GroupQueryAttention kernel that reads the cache in
 * place and writes the new row into it itself: past and present K/V bound to the same buffers
 * (ORT's CPU kernel detects that by pointer: past_present_share_buffer), keys and values in
 * rows [1, nKv, S, hd], seqlens_k = [P] (total - 1) and total_sequence_length = P + 1, so it
 * attends over the P live rows and the new one, and the step's mask is not built. Variants,
 * timed interleaved pass by pass (order alternating; a name may repeat, e.g. full,gqa,gqa,full):
 *
 *   full       the step graph TargetSession builds ('split' attention, values transposed)
 *   gqa        GroupQueryAttention with past = present (shared buffers, preallocated fetches)
 *   gqa-copy   the same graph with the presents fetched but not preallocated (not shared: the
 *              kernel zeroes a present of the buffer's size and copies the past into it)
 *   gqa-unfetched  the same graph with the presents not fetched at all (not shared, as gqa-copy,
 *              but nothing copied back to JS)
 *
 * First it checks that the gqa step's outputs (features, argmax) match the full step's over the
 * same cache contents, and that the kernel wrote the new row into the shared buffer.
 *
 *   node --import tsx scripts/ab-gqa-step.ts -- --context 4000 --threads 2 --variants full,gqa,gqa,full
 */
import * as ort from 'onnxruntime-node';
import { randomWeights } from '../src/model/random.ts';
import { buildTargetModel, names } from '../src/onnx/model-graphs.ts';
import { OnnxOps } from '../src/onnx/ops.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { createSession, f32, f32Data, releaseSession, type Session } from '../src/runtime/ort.ts';
import { StepFeeds } from '../src/runtime/step-feeds.ts';
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { SWEEP } from './runtime-sizes.ts';
import { median, quantile } from '../src/util/stats.ts';
import { UsageError } from '../src/errors.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'context', type: 'int', min: 1, default: 4000, help: 'cached rows before the pass' },
  { flag: 'threads', type: 'int', min: 1, default: 2, help: 'intra-op threads' },
  { flag: 'passes', type: 'int', min: 10, default: 300, help: 'timed passes per variant (after 20 warm-ups)' },
  { flag: 'variants', type: 'string', default: 'full,gqa,gqa,full', help: 'full, gqa, gqa-copy, gqa-unfetched; a name may repeat' },
];
const f = scriptFlags(import.meta.url, FLAGS);
const cfg = SWEEP['29M'], weights = randomWeights(cfg, 1, 1);
const P = f.context as number, threads = f.threads as number, passes = f.passes as number;
const { nLayers: L, nHeads, nKvHeads: H, headDim: D } = cfg;

// The cache today's step reads (keys and values transposed), filled with P rows.
const cache = new KVCache(L, H, D, cfg.maxSeqLen).useValueLayout('transposed');
const chunk = Float32Array.from({ length: 64 * H * D }, (_, i) => 0.5 * Math.sin(i * 0.37)), rows = Array(L).fill(chunk);
while (cache.length < P) cache.append(rows, rows, Math.min(64, P - cache.length));
const feeds = new StepFeeds(L, H, D, 1, { valueLayout: 'transposed' });
const stepFeeds = () => feeds.build(cache, [5], [P]);
const C = cache.stride, S = Math.max(C, P + 1); // the GQA buffers: the cache's rows per head, at least one free

// The same contents in rows [1, nKv, S, hd] for GroupQueryAttention.
const toRows = (t: Float32Array): Float32Array => {
  const r = new Float32Array(H * S * D);
  for (let h = 0; h < H; h++) for (let d = 0; d < D; d++) for (let s = 0; s < P; s++) r[(h * S + s) * D + d] = t[(h * D + d) * C + s];
  return r;
};
const kRows = Array.from({ length: L }, (_, l) => toRows(cache.keyView(l))), vRows = Array.from({ length: L }, (_, l) => toRows(cache.valueView(l)));

const gqaNames = { seqlens: 'gqa_seqlens_k', total: 'gqa_total', key: (l: number) => `gqa_key_${l}`, value: (l: number) => `gqa_value_${l}`, presentKey: (l: number) => `gqa_present_key_${l}`, presentValue: (l: number) => `gqa_present_value_${l}` };
/** The step graph with each layer's attention one GroupQueryAttention over rows-layout buffers (the step's mask not built). */
function gqaModel(): ReturnType<typeof buildTargetModel> {
  const realAttention = OnnxOps.prototype.attention, realMask = OnnxOps.prototype.treeMask;
  let layer = 0, lens: [string, string] | undefined;
  OnnxOps.prototype.treeMask = (tree) => tree; // GQA masks by seqlens_k itself
  OnnxOps.prototype.attention = function (q, k, v) {
    const g = this.g, l = layer++;
    lens ??= [g.input(gqaNames.seqlens, 'int32', [1]), g.input(gqaNames.total, 'int32', [])];
    const past = [g.input(gqaNames.key(l), 'float32', [1, H, 'S', D]), g.input(gqaNames.value(l), 'float32', [1, H, 'S', D])];
    const outs = [g.freshValue('gqa_y'), gqaNames.presentKey(l), gqaNames.presentValue(l)];
    g.node('GroupQueryAttention', [this.batch(q, nHeads * D), this.batch(k, H * D), this.batch(v, H * D), ...past, ...lens], { num_heads: nHeads, kv_num_heads: H }, { domain: 'com.microsoft', outputs: outs });
    g.output(outs[1], outs[1], 'float32', [1, H, 'S', D]);
    g.output(outs[2], outs[2], 'float32', [1, H, 'S', D]);
    return g.op('Reshape', [outs[0], g.ints([-1, nHeads * D])]);
  };
  try {
    return buildTargetModel(cfg, weights, 'split', {});
  } finally {
    OnnxOps.prototype.attention = realAttention;
    OnnxOps.prototype.treeMask = realMask;
  }
}

const base = [names.argmax, names.features, names.present];
const gqaFeeds = (): Record<string, ort.Tensor> => {
  const x: Record<string, ort.Tensor> = { ...stepFeeds(), [gqaNames.seqlens]: new ort.Tensor('int32', Int32Array.from([P]), [1]), [gqaNames.total]: new ort.Tensor('int32', Int32Array.from([P + 1]), []) };
  for (let l = 0; l < L; l++) (x[gqaNames.key(l)] = f32(kRows[l], [1, H, S, D])), (x[gqaNames.value(l)] = f32(vRows[l], [1, H, S, D]));
  return x;
};
const shared: Record<string, ort.Tensor | null> = Object.fromEntries(base.map((n) => [n, null]));
for (let l = 0; l < L; l++) (shared[gqaNames.presentKey(l)] = f32(kRows[l], [1, H, S, D])), (shared[gqaNames.presentValue(l)] = f32(vRows[l], [1, H, S, D]));
const notShared = Object.fromEntries(Object.keys(shared).map((n) => [n, null]));

const fullModel = buildTargetModel(cfg, weights, 'split', {}), gqa = gqaModel();
type Variant = { name: string; s: Session; run: () => Promise<ort.InferenceSession.ReturnType>; ms: number[] };
const variants: Variant[] = [];
for (const name of String(f.variants).split(',')) {
  if (name === 'full') {
    const s = await createSession(fullModel, { threads });
    variants.push({ name, s, ms: [], run: () => s.inner.run(stepFeeds(), base) });
  } else if (name === 'gqa' || name === 'gqa-copy' || name === 'gqa-unfetched') {
    const s = await createSession(gqa, { threads });
    const fetch = name === 'gqa' ? shared : name === 'gqa-copy' ? notShared : base;
    variants.push({ name, s, ms: [], run: () => s.inner.run(gqaFeeds(), fetch as never) });
  } else throw new UsageError('--variants', `${name} is not full, gqa, gqa-copy or gqa-unfetched`);
}

// Same numbers? (features of the one new row; argmax) and the new row written in place.
const ref = variants.find((v) => v.name === 'full');
if (ref) {
  const a = await ref.run();
  for (const v of variants.filter((x) => x.name !== 'full')) {
    kRows[0].fill(123, P * D, (P + 1) * D); // head 0's row P: GQA's in-place write replaces it
    const b = await v.run();
    const fa = f32Data(a[names.features]), fb = f32Data(b[names.features]);
    let diff = 0, scale = 0;
    for (let i = 0; i < fa.length; i++) (diff = Math.max(diff, Math.abs(fa[i] - fb[i]))), (scale = Math.max(scale, Math.abs(fa[i])));
    const newKey = f32Data(a[names.present]).subarray(0, D); // layer 0's new key, head 0
    const written = kRows[0].subarray(P * D, (P + 1) * D).every((x, i) => Math.abs(x - newKey[i]) <= 1e-5 * (1 + Math.abs(x)));
    console.log(`${v.name}: features max |diff| ${diff.toExponential(2)} (max |x| ${scale.toFixed(2)}), argmax ${a[names.argmax].data[0]} / ${b[names.argmax].data[0]}, new row written into the shared buffer: ${written}`);
  }
}

for (let r = -20; r < passes; r++) {
  for (const v of r % 2 ? [...variants].reverse() : variants) {
    const t0 = performance.now();
    await v.run();
    if (r >= 0) v.ms.push(performance.now() - t0);
  }
}
const fmt = (x: number) => x.toFixed(3);
console.log(`29M one-token pass after ${P} rows (cache stride ${C}, GQA buffers ${S} rows), ${threads} thread(s), ${passes} passes per variant, interleaved; ms: median (quartiles), paired difference to ${variants[0].name}`);
for (const v of variants) {
  const d = v.ms.map((x, j) => x - variants[0].ms[j]);
  console.log(`  ${v.name.padEnd(9)} ${fmt(median(v.ms))} (${fmt(quantile(v.ms, 0.25))}-${fmt(quantile(v.ms, 0.75))})  ${fmt(median(d))} (${fmt(quantile(d, 0.25))}-${fmt(quantile(d, 0.75))})`);
}
for (const v of variants) await releaseSession(v.s);
