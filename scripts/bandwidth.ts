/** The memory bandwidth the benchmarks' bytes-read floors divide by. */
import { GraphBuilder } from '../src/onnx/graph.ts';
import { createSession, f32, i64, releaseSession, type Feeds } from '../src/runtime/ort.ts';
import { median } from '../src/util/stats.ts';
import { Rng } from '../src/util/rng.ts';
import type { ModelConfig } from '../src/model/config.ts';
import { blockFor, quantOf } from '../src/model/quantize.ts';
import { EMBEDDING, type Weights } from '../src/model/weights.ts';

/**
 * Bytes of weights one decoding pass reads, the weight part of every bytes-read floor: each
 * tensor whole (packed + scales when held quantized), except an untied embedding table, of which
 * a pass reads one row a token (a Gather), not the table. A tied table is also the LM head and is
 * read whole: packed as held, or, fp32 under a quantized target, as the graph quantizes it for
 * the head (bits / 8 a weight plus one fp32 scale a block).
 */
export function passWeightBytes(cfg: ModelConfig, weights: Weights): number {
  const held = quantOf(cfg, weights);
  const bytesOf = (t: { shape: number[]; quant?: { packed: Uint8Array; scales: Float32Array } }) =>
    t.quant ? t.quant.packed.byteLength + t.quant.scales.byteLength : t.shape.reduce((a, b) => a * b, 1) * 4;
  let bytes = 0;
  for (const [name, t] of weights) {
    if (name !== EMBEDDING) bytes += bytesOf(t);
    else if (!cfg.tieEmbeddings) bytes += bytesOf(t) / t.shape[0]; // one row
    else if (t.quant || !held) bytes += bytesOf(t);
    else bytes += (t.shape[0] * t.shape[1] * held.bits) / 8 + (t.shape[0] * t.shape[1] * 4) / blockFor(t.shape[1], held.blockSize);
  }
  return bytes;
}

/**
 * What the probe's weight holds. 'dense': seeded random values, every page different, as a
 * model's weights and K/V are (the default since session 10). 'sparse': one value in 1024 set,
 * the rest zeros (sessions 1-9's probe). On this VM a one-row product over pages that repeat
 * read 3-11% faster than over dense ones, and drifted between runs (the host appears to merge
 * identical pages behind the guest: docs/performance.md, "What the floor's probe reads"), so a
 * floor divided by the sparse probe's rate assumed a speed the model's own bytes do not get.
 */
export type ProbeWeight = 'dense' | 'sparse';

/** `n` floats in [-0.5, 0.5) from a fixed seed: the same dense weight every run. */
function denseValues(n: number): Float32Array {
  const rng = new Rng(1), w = new Float32Array(n);
  for (let i = 0; i < n; i++) w[i] = rng.next() - 0.5;
  return w;
}

/**
 * Bandwidth probes over one 256 MB weight: `gemv` streams it into one row with ORT (MatMul over
 * w [k, n] or Gemm with transB over w [n, k], the layout the models use: whichever was faster
 * in 10 runs after 2 warm-ups; `gbps` is that median), the rate the floor assumes; `read` sums it (ReduceSum), a plain
 * read with no matrix kernel, to show how far below the memory system that rate is. Each
 * `run()` returns GB/s of one run. `weight`: see ProbeWeight.
 */
export async function bandwidthProbes(threads: number, weight: ProbeWeight = 'dense'): Promise<{ gbps: number; gemv: () => Promise<number>; read: () => Promise<number>; dispose(): Promise<void> }> {
  const k = 4096, n = 16384;
  let w: Float32Array;
  if (weight === 'dense') w = denseValues(k * n);
  else {
    w = new Float32Array(k * n);
    for (let i = 0; i < w.length; i += 1024) w[i] = 1e-3 * (i % 7);
  }
  const feeds = { x: f32(new Float32Array(k).fill(1), [1, k]) };
  const probe = async (build: (g: GraphBuilder) => void, probeFeeds: Feeds = feeds) => {
    const g = new GraphBuilder('bandwidth');
    build(g);
    const s = await createSession(g.toModel({ opset: 23, irVersion: 11 }), { threads });
    const run = async () => {
      const t0 = performance.now();
      await s.inner.run(probeFeeds);
      return w.byteLength / 1e9 / ((performance.now() - t0) / 1e3);
    };
    return { run, dispose: () => releaseSession(s) };
  };
  const gemv = async (transB: boolean) => probe((g) => {
    const x = g.input('x', 'float32', [1, k]), wt = g.initializer('w', { dtype: 'float32', dims: transB ? [n, k] : [k, n], data: w });
    g.output(transB ? g.op('Gemm', [x, wt], { transB: 1 }) : g.op('MatMul', [x, wt]), 'y', 'float32', [1, n]);
  });
  const candidates = [await gemv(false), await gemv(true)];
  const rates: number[] = [];
  for (const c of candidates) {
    const xs: number[] = [];
    for (let r = 0; r < 12; r++) xs.push(await c.run());
    rates.push(median(xs.slice(2)));
  }
  const best = rates[0] >= rates[1] ? 0 : 1;
  await candidates[1 - best].dispose();
  // The axes are fed, so ORT cannot fold the sum into a constant when it loads the graph.
  const axes = { axes: i64(new BigInt64Array([0n, 1n]), [2]) };
  const read = await probe((g) => g.output(g.op('ReduceSum', [g.initializer('w', { dtype: 'float32', dims: [k, n], data: w }), g.input('axes', 'int64', [2])], { keepdims: 0 }), 'y', 'float32', []), axes);
  return { gbps: rates[best], gemv: candidates[best].run, read: read.run, dispose: async () => { await candidates[best].dispose(); await read.dispose(); } };
}

/** GB/s of ORT streaming a 256 MB weight into one row (bandwidthProbes' `gbps`). */
export async function measureBandwidth(threads: number, weight: ProbeWeight = 'dense'): Promise<number> {
  const probes = await bandwidthProbes(threads, weight);
  await probes.dispose();
  return probes.gbps;
}
