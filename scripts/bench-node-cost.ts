/**
 * What one node of each small op type in a 29M one-token step costs at 1 and at 2 threads: per
 * type, a graph of 100 such nodes chained (each reads the one before, so ORT can neither merge
 * nor drop them), shapes as in the step at context 4160 (scores [1, 8, 1, 4161], rows of 512 or
 * 1408), one session per thread count, all interleaved; microseconds a node, median of the runs.
 * A node ORT runs on the thread pool pays for the hand-off; one it runs on the calling thread
 * costs the same at either count. (A Transpose chain is left out: ORT cancels transpose pairs.)
 *
 *   node --import tsx scripts/bench-node-cost.ts [--ops softmax,mmpair] [--runs 200]
 */
import { GraphBuilder } from '../src/onnx/graph.ts';
import { createSession, f32, releaseSession } from '../src/runtime/ort.ts';
import { median } from '../src/util/stats.ts';
import * as ort from 'onnxruntime-node';
import { UsageError } from '../src/errors.ts';
import { scriptFlags } from './script-flags.ts';
const N = 100, S = 4160, H = 8, D = 64;
type G = GraphBuilder;
const rnd = (n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37));
const mk: Record<string, { inputs: Record<string, number[]>; op: (g: G, i: Record<string, string>, x: string) => string; x: string }> = {
  softmax: { inputs: { x: [1, H, 1, S + 1] }, x: 'x', op: (g, i, x) => g.op('Softmax', [x], { axis: -1 }) },
  addmask: { inputs: { x: [1, H, 1, S + 1], m: [1, S + 1] }, x: 'x', op: (g, i, x) => g.op('Add', [x, i.m]) },
  splitconcat: { inputs: { x: [1, H, 1, S + 1] }, x: 'x', op: (g, i, x) => g.op('Concat', g.node('Split', [x, g.ints([S, 1])], { axis: -1 }, { outputs: 2 }), { axis: -1 }) },
  mmpair: { inputs: { x: [1, H, 1, D], b: [H, D, 1], c: [H, 1, D] }, x: 'x', op: (g, i, x) => g.op('MatMul', [g.op('MatMul', [x, i.b]), i.c]) },
  addsmall: { inputs: { x: [1, H, 1, D], b: [1, H, 1, D] }, x: 'x', op: (g, i, x) => g.op('Add', [x, i.b]) },
  mulscale: { inputs: { x: [1, 1, H * D] }, x: 'x', op: (g, i, x) => g.op('Mul', [x, i.b]) },
  mul1408: { inputs: { x: [1, 1408], b: [1, 1408] }, x: 'x', op: (g, i, x) => g.op('Mul', [x, i.b]) },
  quickgelu: { inputs: { x: [1, 1408] }, x: 'x', op: (g, i, x) => g.node('QuickGelu', [x], { alpha: { float: 1 } }, { domain: 'com.microsoft' })[0] },
  skipsln: { inputs: { x: [1, 512], b: [1, 512] }, x: 'x', op: (g, i, x) => g.node('SkipSimplifiedLayerNormalization', [x, i.b, i.w], { epsilon: { float: 1e-5 } }, { domain: 'com.microsoft', outputs: 1 })[0] },
  rope: { inputs: { x: [1, 1, H * D], p: [1, 1] }, x: 'x', op: (g, i, x) => g.op('RotaryEmbedding', [x, i.cos, i.sin, i.p], { interleaved: 0, num_heads: H }) },
  gemm512: { inputs: { x: [1, 512] }, x: 'x', op: (g, i, x) => g.op('Gemm', [x, i.w], { transB: 1 }) },
};
const f = scriptFlags(import.meta.url, [
  { flag: 'ops', type: 'string', default: Object.keys(mk).join(','), meta: 'LIST', help: 'op types to time' },
  { flag: 'runs', type: 'int', min: 1, default: 200, meta: 'N', help: 'runs of each chain' },
]);
const which = (f.ops as string).split(','), runs = f.runs as number;
for (const w of which) if (!mk[w]) throw new UsageError('--ops', `${w} is not one of ${Object.keys(mk).join(', ')}`);
const sessions: { name: string; t: number; s: Awaited<ReturnType<typeof createSession>>; feeds: Record<string, ort.Tensor>; ms: number[] }[] = [];
for (const name of which) for (const t of [1, 2]) {
  const v = mk[name], g = new GraphBuilder(name);
  const ins: Record<string, string> = {};
  const feeds: Record<string, ort.Tensor> = {};
  for (const [k, dims] of Object.entries(v.inputs)) {
    if (k === 'p') { ins[k] = g.input(k, 'int64', dims); feeds[k] = new ort.Tensor('int64', new BigInt64Array([5n]), dims); continue; }
    ins[k] = g.input(k, 'float32', dims); feeds[k] = f32(rnd(dims.reduce((a, b) => a * b)), dims);
  }
  if (name === 'rope') { ins.cos = g.constant('float32', [4096, D / 2], rnd(4096 * D / 2)); ins.sin = g.constant('float32', [4096, D / 2], rnd(4096 * D / 2)); }
  if (name === 'gemm512') ins.w = g.constant('float32', [512, 512], rnd(512 * 512).map((v) => v * 0.04));
  if (name === 'skipsln') ins.w = g.constant('float32', [512], rnd(512));
  if (name === 'mulscale') ins.b = g.scalar(1.0001);
  let x = ins[v.x];
  for (let k = 0; k < N; k++) x = v.op(g, ins, x);
  g.output(x, 'y', 'float32', v.inputs[v.x]);
  const s = await createSession(g.toModel({ opset: 23, irVersion: 11 }), { threads: t });
  sessions.push({ name, t, s, feeds, ms: [] });
}
for (let r = -20; r < runs; r++)
  for (const x of r % 2 ? [...sessions].reverse() : sessions) {
    const t0 = performance.now();
    await x.s.inner.run(x.feeds, ['y']);
    if (r >= 0) x.ms.push(performance.now() - t0);
  }
console.log(`us a node (graphs of ${N} chained nodes), median of ${runs} runs: 1 thread, 2 threads, difference`);
for (let i = 0; i < sessions.length; i += 2) {
  const a = median(sessions[i].ms) * 1000 / N, b = median(sessions[i + 1].ms) * 1000 / N;
  console.log(`  ${sessions[i].name.padEnd(10)} ${a.toFixed(2).padStart(7)} ${b.toFixed(2).padStart(7)} ${(b - a).toFixed(2).padStart(7)}`);
}
for (const x of sessions) await releaseSession(x.s);
