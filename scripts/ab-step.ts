/**
 * A/B of target-pass renderings, interleaved pass by pass: on this shared machine the speed of
 * memory moves by 10-30% over seconds, so variants timed in turns of whole generations differ by
 * more than the few percent a rendering change makes. Here every variant runs one pass in turn
 * (T new rows over a cache of --past rows), thousands of times, and the report is each variant's
 * median pass time and the median of its per-round difference to the first variant (paired;
 * the order within a round alternates).
 *
 * Sessions are built in variant order, and a later-built session ran faster here: an A/A/A run
 * (`--variants default,default,default`, 100M q4, 1 thread) gave -50 and -101 us against the
 * first, and four sessions of two graphs (A B B A) -180, -240, -350 us. So run each comparison in
 * both orders (A,B and B,A, or A,B,B,A and B,A,A,B) and take what survives both.
 *
 *   node --import tsx scripts/ab-step.ts -- --model DIR --variants default,unfused --threads 1 --rows 1 --past 72
 *
 * Variants: default (what TargetSession builds), tree (the graph a quantized TargetSession verifies
 * token trees with: each row's scores in position order, OnnxOpsOptions.treeOrder; give the tree
 * with --parents), sliced (a quantized target's weights x values product cut into GEMMs that
 * MLAS never splits across threads whatever the thread count, OnnxOpsOptions.gemmThreads unset:
 * what the cut costs where the target needs none), unfused (no Linear fusion), unpadded (no even-row
 * padding: what the exactness padding of a quantized target costs; not row-exact), split / fused
 * (attention rendering, each over a cache in its own value layout), split-rows (split attention
 * over values in rows, the layout fused attention reads). Without --model: a random target of bench:runtime (--size: one of
 * its sizes or context-sweep configs, default 100M).
 *
 *   node --import tsx scripts/ab-step.ts -- --size 29M --quantize none --variants split,split-rows --past 4000
 *   node --import tsx scripts/ab-step.ts -- --model DIR --variants default,tree --parents -1,0,0,1,3 --threads 2 --past 150
 */
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { quantizedModel } from '../src/model/quantize.ts';
import { loadModel, type LoadedModel } from '../src/load-model.ts';
import { randomWeights } from '../src/model/random.ts';
import { buildTargetModel, names, targetAttention } from '../src/onnx/model-graphs.ts';
import { valueLayoutFor, type AttentionMode, type ValueLayout } from '../src/onnx/ops.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { createSession, releaseSession, type Session } from '../src/runtime/ort.ts';
import { StepFeeds } from '../src/runtime/step-feeds.ts';
import { sizeNamed, SIZES, SWEEP } from './runtime-sizes.ts';
import { median, quantile } from '../src/util/stats.ts';
import { UsageError } from '../src/errors.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'model', type: 'string', help: 'an HF checkpoint directory (default: a random target of --size)' },
  { flag: 'size', type: 'string', default: '100M', help: `random target without --model (${Object.keys({ ...SIZES, ...SWEEP })})` },
  { flag: 'quantize', type: 'string', default: 'q4', help: 'q4, q8 or none (a quantized checkpoint stays as it is)' },
  { flag: 'variants', type: 'string', default: 'default,unfused', help: 'default, tree, sliced, unfused, unpadded, split, split-rows, fused' },
  { flag: 'threads', type: 'int', min: 1, default: 1, help: 'ORT intra-op threads' },
  { flag: 'rows', type: 'int', min: 1, default: 1, help: 'new rows per pass (1 = a decoding step)' },
  { flag: 'past', type: 'int', min: 1, default: 72, help: 'cached rows before the pass' },
  { flag: 'passes', type: 'int', min: 10, default: 2000, help: 'passes per variant' },
  { flag: 'parents', type: 'string', default: '', help: 'a token tree to pass instead of --rows causal rows: each node\'s parent, -1 for the root (e.g. -1,0,0,1,3)' },
];
const f = scriptFlags(import.meta.url, FLAGS);
const q = String(f.quantize);
if (!['q4', 'q8', 'none'].includes(q)) throw new UsageError('--quantize', `${q} is not q4, q8 or none`);
const sized = sizeNamed({ ...SIZES, ...SWEEP }, String(f.size), '--size');
const base: LoadedModel = f.model ? await loadModel(String(f.model)) : { config: sized, weights: randomWeights(sized, 1, 3), source: 'hf' };
const { config: cfg, weights } = quantizedModel(base, q === 'none' ? undefined : (q as 'q4' | 'q8'));
const parents = String(f.parents) ? String(f.parents).split(',').map(Number) : undefined;
if (parents?.some((p, i) => !(Number.isInteger(p) && p < i && (p >= 0 || i === 0) && (i === 0) === (p === -1)))) throw new UsageError('--parents', `${f.parents} is not a tree in topological order (-1 first, then each node's earlier parent)`);
const threads = f.threads as number, T = parents?.length ?? (f.rows as number), P = f.past as number, passes = f.passes as number;
// The tree's ancestor-or-self mask [T, T] (undefined: causal rows).
const tree = parents && new Uint8Array(T * T);
if (parents) for (let i = 0; i < T; i++) for (let a = i; a >= 0; a = parents[a]) tree![i * T + a] = 1;
// What TargetSession renders: 'split' for a quantized target, whatever its size.
const attention = targetAttention(cfg, weights);

const VARIANTS: Record<string, { attention: AttentionMode; valueLayout?: ValueLayout; fuseLinears?: boolean; evenRows?: boolean; treeOrder?: boolean; sliced?: boolean; fetch: string[] }> = {
  default: { attention, fetch: [names.present] },
  sliced: { attention, sliced: true, fetch: [names.present] },
  tree: { attention, treeOrder: true, fetch: [names.present] },
  unpadded: { attention, evenRows: false, fetch: [names.present] },
  unfused: { attention, fuseLinears: false, fetch: [names.present] },
  split: { attention: 'split', fetch: [names.present] },
  'split-rows': { attention: 'split', valueLayout: 'rows', fetch: [names.present] },
  fused: { attention: 'fused', fetch: [names.present] },
};
// One cache of P rows per value layout (each variant reads the one of its graph), with its feeds.
const layouts = new Map<ValueLayout, { cache: KVCache; feeds: StepFeeds }>();
const variants: { v: string; s: Session; fetch: string[]; ms: number[]; cache: KVCache; feeds: StepFeeds }[] = [];
for (const v of String(f.variants).split(',')) {
  const o = VARIANTS[v];
  if (!o) throw new UsageError('--variants', `${v} is not one of ${Object.keys(VARIANTS)}`);
  const valueLayout = o.valueLayout ?? valueLayoutFor(o.attention);
  const s = await createSession(buildTargetModel(cfg, weights, o.attention, { fuseLinears: o.fuseLinears, valueLayout, treeOrder: o.treeOrder, gemmThreads: o.sliced ? undefined : threads, ...(o.evenRows === false ? { evenRows: false } : {}) }), { threads });
  if (!layouts.has(valueLayout)) layouts.set(valueLayout, { cache: new KVCache(cfg.nLayers, cfg.nKvHeads, cfg.headDim, cfg.maxSeqLen).useValueLayout(valueLayout), feeds: new StepFeeds(cfg.nLayers, cfg.nKvHeads, cfg.headDim, Math.max(P, T), { valueLayout }) });
  variants.push({ v, s, fetch: [names.argmax, names.features, ...o.fetch], ms: [], ...layouts.get(valueLayout)! });
}

// The caches' P rows: a prefill pass of the first variant, appended to each (passes do not change them).
const prefix = Array.from({ length: P }, (_, i) => (i * 7919 + 13) % cfg.vocabSize);
const first = variants[0].feeds;
const pre = first.present(await variants[0].s.inner.run(first.build(variants[0].cache, prefix, prefix.map((_, i) => i)), first.presentNames()));
for (const { cache } of layouts.values()) cache.append(pre.newKeys, pre.newValues, P);
const depth = (i: number): number => (parents && i > 0 ? 1 + depth(parents[i]) : parents ? 0 : i);
const ids = Array.from({ length: T }, (_, i) => (i * 31 + 5) % cfg.vocabSize), pos = ids.map((_, i) => P + depth(i));
for (let r = -20; r < passes; r++) {
  for (const x of r % 2 ? [...variants].reverse() : variants) {
    const t0 = performance.now();
    await x.s.inner.run(x.feeds.build(x.cache, ids, pos, tree), x.fetch);
    if (r >= 0) x.ms.push(performance.now() - t0);
  }
}
for (const x of variants) await releaseSession(x.s);
console.log(`${f.model ?? `random ${f.size}`} ${q}, ${threads} thread(s), ${parents ? `a tree of ${T} nodes (parents ${parents.join(',')})` : `${T} row(s)`} after ${P}, ${passes} passes each, interleaved pass by pass`);
const ref = variants[0];
for (const x of variants) {
  const diff = x.ms.map((m, i) => m - ref.ms[i]);
  const q1 = quantile(diff, 0.25), q3 = quantile(diff, 0.75);
  console.log(`  ${x.v.padEnd(9)} pass ${median(x.ms).toFixed(3)} ms (quartiles ${quantile(x.ms, 0.25).toFixed(3)}-${quantile(x.ms, 0.75).toFixed(3)}); minus ${ref.v}: median ${(1000 * median(diff)).toFixed(1)} us (quartiles ${(1000 * q1).toFixed(1)} to ${(1000 * q3).toFixed(1)})`);
}
