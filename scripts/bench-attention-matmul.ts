/**
 * The past-K/V MatMuls of one-token attention in isolation: one graph per layout holding 8
 * layers' worth (8 heads x hd 64 x S rows each, fed as inputs, as the cache is), run in turn,
 * median ms and GB/s of the K or V bytes read. Layouts: scores q x K^T over K^T [hd, S]
 * (MatMul, the cache's keys), over K [S, hd] (FusedMatMul transB), over K^T in tiles of
 * 32 / 512 columns; weights x V over V [S, hd] (MatMul, values in rows) and over V^T [hd, S]
 * (FusedMatMul transB, values transposed). What bounds the split pass's K/V read rate.
 * Each layer's product is reduced to its row maxima in-graph (a ReduceMax over N, as cheap as
 * the softmax's own), so every layout returns the same small output: returning the scores
 * themselves ([8, 8, 1, S] through a Concat, copied back to JS) made the q x K^T layouts look
 * 2.5x slower than their MatMuls are (session 8, 2 threads: 5.15 ms against 1.98 ms).
 *
 *   node --import tsx scripts/bench-attention-matmul.ts -- --rows 4096 --threads 1
 */
import { GraphBuilder } from '../src/onnx/graph.ts';
import { createSession, f32, releaseSession } from '../src/runtime/ort.ts';
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { THREADS_FLAG } from '../src/cli/common-flags.ts';
import { median } from '../src/util/stats.ts';
import { UsageError } from '../src/errors.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'rows', type: 'int', min: 512, default: 4096, help: 'past rows S (a multiple of 512)' },
  { flag: 'runs', type: 'int', min: 10, default: 300, help: 'timed runs per layout (after 20 warm-ups)' },
  THREADS_FLAG,
];
const f = scriptFlags(import.meta.url, FLAGS);
const S = f.rows as number, H = 8, D = 64, L = 8, threads = f.threads as number;
if (S % 512) throw new UsageError('--rows', `${S} is not a multiple of 512`);

type G = GraphBuilder;
const fusedT = (g: G, a: string, b: string) => g.node('FusedMatMul', [a, b], { transB: 1, alpha: { float: 1 } }, { domain: 'com.microsoft' })[0];
const tiled = (w: number) => ({ name: `q x K^T, tiles of ${w} (MatMul)`, aDims: [1, H, 1, 1, D], bDims: [1, H, S / w, D, w], op: (g: G, a: string, b: string) => g.op('Reshape', [g.op('MatMul', [a, b]), g.ints([1, H, 1, -1])]) });
const LAYOUTS: { name: string; aDims: number[]; bDims: number[]; op: (g: G, a: string, b: string) => string }[] = [
  { name: 'q x K^T, K^T [hd, S] (MatMul)', aDims: [1, H, 1, D], bDims: [1, H, D, S], op: (g, a, b) => g.op('MatMul', [a, b]) },
  { name: 'q x K^T, K [S, hd] (transB)', aDims: [1, H, 1, D], bDims: [1, H, S, D], op: fusedT },
  tiled(32),
  tiled(512),
  { name: 'w x V, V [S, hd] (MatMul)', aDims: [1, H, 1, S], bDims: [1, H, S, D], op: (g, a, b) => g.op('MatMul', [a, b]) },
  { name: 'w x V, V^T [hd, S] (transB)', aDims: [1, H, 1, S], bDims: [1, H, D, S], op: fusedT },
];

const runs = [];
for (const v of LAYOUTS) {
  const g = new GraphBuilder('past_matmuls');
  const a = g.input('a', 'float32', v.aDims);
  const outs = Array.from({ length: L }, (_, l) => g.op('ReduceMax', [g.op('Reshape', [v.op(g, a, g.input(`b${l}`, 'float32', v.bDims)), g.ints([1, H, 1, -1])]), g.ints([-1])]));
  g.output(g.op('Concat', outs, { axis: 0 }), 'y', 'float32', [L, H, 1, 1]);
  const s = await createSession(g.toModel({ opset: 23, irVersion: 11 }), { threads });
  const feeds: Record<string, ReturnType<typeof f32>> = { a: f32(Float32Array.from({ length: v.aDims.reduce((x, y) => x * y) }, (_, i) => Math.sin(i)), v.aDims) };
  for (let l = 0; l < L; l++) feeds[`b${l}`] = f32(Float32Array.from({ length: H * S * D }, (_, i) => Math.cos(i + l)), v.bDims);
  runs.push({ v, s, feeds, ms: [] as number[] });
}
for (let r = -20; r < (f.runs as number); r++)
  for (const x of r % 2 ? [...runs].reverse() : runs) {
    const t0 = performance.now();
    await x.s.inner.run(x.feeds);
    if (r >= 0) x.ms.push(performance.now() - t0);
  }
const bytes = L * H * S * D * 4;
console.log(`8 layers x 8 heads x hd ${D} x ${S} rows (${(bytes / 1e6).toFixed(1)} MB per graph), ${threads} thread(s), median of ${f.runs} runs, layouts in turn`);
for (const x of runs) {
  console.log(`  ${x.v.name.padEnd(34)} ${median(x.ms).toFixed(3)} ms  ${(bytes / 1e6 / median(x.ms)).toFixed(1)} GB/s`);
  await releaseSession(x.s);
}
