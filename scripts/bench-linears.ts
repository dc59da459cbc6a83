/**
 * The weights' part of a one-token pass in isolation: the 29M sweep config's Linear layers (8
 * layers of q, k, v, o, gate, up, down, then the LM head; dense random weights, 111 MB) as one
 * graph of one-row products, each reading the same input, beside the bandwidth probe of the
 * bytes-read floor (scripts/bandwidth.ts, a dense random weight) and the same probe over
 * sessions 1-9's mostly-zero weight. Variants, run in turn: Gemm over [out, in] weights with
 * transB (what the models render), MatMul over [in, out], and Gemm with q, k, v and gate, up
 * fused into one weight each. Says what rate the pass's weight reads can reach here.
 *
 * `--sizes N1,N2,..` adds, per N, a chain of one-row Gemms over distinct [N, d] weights (about
 * 100 MB each chain): whether a one-row product's rate depends on its size (a fixed cost a
 * Gemm, which fusing Linears would save, shows as a lower rate for small N).
 *
 *   node --import tsx scripts/bench-linears.ts -- --threads 1
 *   node --import tsx scripts/bench-linears.ts -- --threads 2 --sizes 512,1536,2816,4096,16384
 */
import { GraphBuilder } from '../src/onnx/graph.ts';
import { createSession, f32, releaseSession, type Feeds } from '../src/runtime/ort.ts';
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { THREADS_FLAG } from '../src/cli/common-flags.ts';
import { median } from '../src/util/stats.ts';
import { bandwidthProbes } from './bandwidth.ts';
import { SWEEP } from './runtime-sizes.ts';
import { UsageError } from '../src/errors.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'runs', type: 'int', min: 10, default: 60, help: 'timed runs per variant (after 10 warm-ups)' },
  { flag: 'sizes', type: 'string', default: '', help: 'also chains of one-row Gemms over [N, d] weights, for each N listed' },
  THREADS_FLAG,
];
const f = scriptFlags(import.meta.url, FLAGS);
const threads = f.threads as number, runs = f.runs as number;
const { dim: d, hiddenDim: I, vocabSize: V, nLayers } = SWEEP['29M'];

/** [out, in] of each one-row product, in pass order. */
const shapes = (fused: boolean): [number, number][] => {
  const layer: [number, number][] = fused ? [[3 * d, d], [d, d], [2 * I, d], [d, I]] : [[d, d], [d, d], [d, d], [d, d], [I, d], [I, d], [d, I]];
  return [...Array.from({ length: nLayers }, () => layer).flat(), [V, d]];
};
const dense = (n: number) => Float32Array.from({ length: n }, () => Math.random() - 0.5);
const build = async (name: string, matmul: boolean, fused: boolean) => {
  const g = new GraphBuilder(name);
  const x = g.input('x', 'float32', [1, d]), x2 = g.input('x2', 'float32', [1, I]);
  let bytes = 0, last = '';
  shapes(fused).forEach(([n, k], i) => {
    const w = g.initializer(`w${i}`, { dtype: 'float32', dims: matmul ? [k, n] : [n, k], data: dense(n * k) });
    bytes += n * k * 4;
    last = matmul ? g.op('MatMul', [k === d ? x : x2, w]) : g.op('Gemm', [k === d ? x : x2, w], { transB: 1 });
  });
  g.output(last, 'y', 'float32', [1, V]); // ORT runs every node, read or not
  return { name, s: await createSession(g.toModel({ opset: 23, irVersion: 11 }), { threads }), bytes, ms: [] as number[] };
};
const feeds = { x: f32(new Float32Array(d).fill(1), [1, d]), x2: f32(new Float32Array(I).fill(1), [1, I]) };
const variants = [await build('Gemm transB', false, false), await build('MatMul', true, false), await build('Gemm transB, fused', false, true)].map((v) => ({ ...v, feeds: feeds as Feeds }));
for (const n of String(f.sizes).split(',').filter((x) => x).map(Number)) variants.push(await chain(n));
/** Gemms over distinct [n, d] weights, each reading x, ~100 MB in all. */
async function chain(n: number) {
  if (!Number.isInteger(n) || n < 1) throw new UsageError('--sizes', `${n} is not a row count`);
  const g = new GraphBuilder('chain'), x = g.input('x', 'float32', [1, d]), count = Math.max(1, Math.round(100e6 / (n * d * 4)));
  const outs = Array.from({ length: count }, (_, i) => g.op('Gemm', [x, g.initializer(`w${i}`, { dtype: 'float32', dims: [n, d], data: dense(n * d) })], { transB: 1 }));
  g.output(g.op('Concat', outs, { axis: 0 }), 'y', 'float32', [count, n]);
  return { name: `${count} x Gemm [${n}, ${d}]`, s: await createSession(g.toModel({ opset: 23, irVersion: 11 }), { threads }), bytes: count * n * d * 4, ms: [] as number[], feeds: { x: feeds.x } };
}

// The floor's probe (dense random weight) beside sessions 1-9's mostly-zero one.
const probes = await bandwidthProbes(threads), sparseProbes = await bandwidthProbes(threads, 'sparse');
const probe: number[] = [], probeSparse: number[] = [];
for (let r = -10; r < runs; r++) {
  for (const v of r % 2 ? [...variants].reverse() : variants) {
    const t0 = performance.now();
    await v.s.inner.run(v.feeds);
    if (r >= 0) v.ms.push(performance.now() - t0);
  }
  if (r >= 0 && r % 10 === 0) {
    probe.push(await probes.gemv());
    probeSparse.push(await sparseProbes.gemv());
  }
}
const fmt = (x: number, p = 1) => x.toFixed(p);
console.log(`29M Linear layers, one row, ${threads} thread(s), median of ${runs} runs (min-max); probe ${fmt(median(probe))} GB/s, sparse probe (sessions 1-9) ${fmt(median(probeSparse))} GB/s`);
for (const v of variants) {
  console.log(`  ${v.name.padEnd(20)} ${fmt(median(v.ms), 3)} ms (${fmt(Math.min(...v.ms), 3)}-${fmt(Math.max(...v.ms), 3)}) for ${fmt(v.bytes / 1e6)} MB: ${fmt(v.bytes / 1e6 / median(v.ms))} GB/s`);
  await releaseSession(v.s);
}
await probes.dispose();
await sparseProbes.dispose();
