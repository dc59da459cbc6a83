/**
 * The one-token step graph (OnnxOpsOptions.oneToken) beside the general step graph on the 29M
 * sweep config (random weights, cost only): first whether both give the same bits at T = 1
 * (logits, argmax, features, new K/V) over a few contexts, then passes interleaved pass by pass
 * (order alternating), with the bandwidth probe of the bytes-read floor every 30 rounds, or with
 * `--bench-round` each round as bench:runtime's (probe, plain read, an untimed pass, then the
 * timed passes). Sessions built later can run faster than the first, so compare both orders.
 *
 *   node --import tsx scripts/ab-one-token.ts -- --context 4000 --threads 2 --passes 300
 *   node --import tsx scripts/ab-one-token.ts -- --context 4000 --variants one,step,step,one
 *   node --import tsx scripts/ab-one-token.ts -- --context 4000 --variants one,one-np,one-np,one
 */
import { randomWeights } from '../src/model/random.ts';
import { buildTargetModel, names } from '../src/onnx/model-graphs.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { createSession, f32Data, i32Data, releaseSession } from '../src/runtime/ort.ts';
import { StepFeeds } from '../src/runtime/step-feeds.ts';
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { bandwidthProbes, passWeightBytes } from './bandwidth.ts';
import { sizeNamed, SWEEP } from './runtime-sizes.ts';
import { median, quantile } from '../src/util/stats.ts';
import { UsageError } from '../src/errors.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'sweep', type: 'string', default: '29M', help: `config (${Object.keys(SWEEP)})` },
  { flag: 'context', type: 'int', min: 1, default: 4000, help: 'cached rows before the timed pass' },
  { flag: 'threads', type: 'int', min: 1, default: 2, help: 'intra-op threads' },
  { flag: 'passes', type: 'int', min: 10, default: 300, help: 'timed passes per variant (after 20 warm-ups)' },
  { flag: 'bench-round', type: 'bool', default: false, help: "each round as bench:runtime's: probe, plain read, an untimed pass of the first variant, then the timed passes" },
  { flag: 'variants', type: 'string', default: 'step,one,one,step', help: 'step (general graph) or one (one-token graph), each its own session, optionally -np (ORT does not prepack the weights: a one-row Gemm then runs MLAS\'s one-row kernel); a name may repeat' },
];
const f = scriptFlags(import.meta.url, FLAGS);
const cfg = sizeNamed(SWEEP, String(f.sweep), '--sweep'), weights = randomWeights(cfg, 1, 1);
const P = f.context as number, threads = f.threads as number, passes = f.passes as number;
const { nLayers, nKvHeads: H, headDim: D } = cfg;
const graphs = { step: buildTargetModel(cfg, weights, 'split', {}), one: buildTargetModel(cfg, weights, 'split', { oneToken: true }) };
const feedsOf = { step: new StepFeeds(nLayers, H, D, 1, { valueLayout: 'transposed' }), one: new StepFeeds(nLayers, H, D, 1, { valueLayout: 'transposed', oneToken: true }) };
const variants: { name: string; s: Awaited<ReturnType<typeof createSession>>; feeds: StepFeeds; ms: number[] }[] = [];
for (const name of String(f.variants).split(',')) {
  const [graph, np] = name.split('-');
  if ((graph !== 'step' && graph !== 'one') || (np !== undefined && np !== 'np')) throw new UsageError('--variants', `${name} is not step or one, optionally with -np`);
  variants.push({ name, s: await createSession(graphs[graph], { threads, prepack: np === undefined }), feeds: feedsOf[graph], ms: [] as number[] });
}
const cache = new KVCache(nLayers, H, D, cfg.maxSeqLen).useValueLayout('transposed');
const fill = (n: number) => {
  const rows = Array.from({ length: nLayers }, (_, l) => Float32Array.from({ length: 64 * H * D }, (_, i) => Math.sin(i * 0.37 + l + cache.length)));
  while (cache.length < n) cache.append(rows, rows, Math.min(64, n - cache.length));
};
// Same bits? Every output of a one-token pass, at a few contexts and tokens.
const all = [names.logits, names.argmax, names.features, names.present];
const bits = (x: Float32Array | Int32Array) => new Uint32Array(x.buffer, x.byteOffset, x.length);
let checked = 0, differ = 0, maxDiff = 0;
for (const n of [1, 63, 64, 65, 700, P].filter((n) => n <= P)) {
  fill(n);
  for (const tok of [5, 1234]) {
    if (variants.length < 2) throw new UsageError('--variants', 'at least two (the first two are compared bit for bit)');
    const out = [];
    for (const v of variants.slice(0, 2)) out.push(await v.s.inner.run(v.feeds.build(cache, [tok], [cache.length]), all));
    for (const k of all) {
      const a = k === names.argmax ? i32Data(out[0][k]) : f32Data(out[0][k]), b = k === names.argmax ? i32Data(out[1][k]) : f32Data(out[1][k]);
      const ba = bits(a), bb = bits(b);
      checked++;
      if (ba.length !== bb.length) throw new Error(`${k}: ${ba.length} against ${bb.length} values`);
      let same = true, firstAt = -1;
      for (let i = 0; i < ba.length; i++) if (ba[i] !== bb[i]) (same = false), firstAt < 0 && (firstAt = i), (maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i])));
      if (!same) (differ++, console.log(`  differs: ${k} at context ${n} token ${tok}, first at value ${firstAt} of ${ba.length}`));
    }
  }
}
console.log(`bit-equality: ${checked - differ} of ${checked} outputs identical (contexts up to ${P}); max |diff| ${maxDiff}`);
fill(P);
const probe = await bandwidthProbes(threads);
const rates: number[] = [];
const benchRound = f.benchRound as boolean;
for (let r = -20; r < passes; r++) {
  if (benchRound) {
    const g = await probe.gemv();
    await probe.read();
    await variants[0].s.inner.run(variants[0].feeds.build(cache, [5], [P]), [names.argmax, names.features, names.present]);
    if (r >= 0) rates.push(g);
  }
  for (const v of r % 2 ? [...variants].reverse() : variants) {
    const t0 = performance.now();
    await v.s.inner.run(v.feeds.build(cache, [5], [P]), [names.argmax, names.features, names.present]);
    if (r >= 0) v.ms.push(performance.now() - t0);
  }
  if (!benchRound && r >= 0 && r % 30 === 0) rates.push(await probe.gemv());
}
const gbps = median(rates), floor = ((passWeightBytes(cfg, weights) + 2 * nLayers * H * D * P * 4) / 1e9 / gbps) * 1e3;
const fmt = (x: number) => x.toFixed(3);
console.log(`${String(f.sweep)} one-token pass after ${P} rows, ${threads} thread(s), ${passes} passes a variant, interleaved; probe ${gbps.toFixed(1)} GB/s, floor ${fmt(floor)} ms; ms: median (quartiles), paired difference to ${variants[0].name}`);
for (const v of variants) {
  const d = v.ms.map((x, j) => x - variants[0].ms[j]);
  console.log(`  ${v.name.padEnd(5)} ${fmt(median(v.ms))} (${fmt(quantile(v.ms, 0.25))}-${fmt(quantile(v.ms, 0.75))}) = ${(median(v.ms) / floor).toFixed(2)}x floor  ${fmt(median(d))} (${fmt(quantile(d, 0.25))}-${fmt(quantile(d, 0.75))})`);
}
for (const v of variants) await releaseSession(v.s);
await probe.dispose();
