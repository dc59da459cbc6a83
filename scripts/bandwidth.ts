/** The memory bandwidth the benchmarks' bytes-read floors divide by. */
import { GraphBuilder } from '../src/onnx/graph.ts';
import { createSession, f32, releaseSession } from '../src/runtime/ort.ts';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * GB/s of ORT streaming a 256 MB weight into one row: the faster of MatMul (w [k, n]) and Gemm
 * with transB (w [n, k], the layout the models use), median of 10 runs after 2 warm-ups.
 */
export async function measureBandwidth(threads: number): Promise<number> {
  const k = 4096, n = 16384;
  const w = new Float32Array(k * n);
  for (let i = 0; i < w.length; i += 1024) w[i] = 1e-3 * (i % 7);
  let best = 0;
  for (const transB of [false, true]) {
    const g = new GraphBuilder('bandwidth');
    const x = g.input('x', 'float32', [1, k]), wt = g.initializer('w', { dtype: 'float32', dims: transB ? [n, k] : [k, n], data: w });
    g.output(transB ? g.op('Gemm', [x, wt], { transB: 1 }) : g.op('MatMul', [x, wt]), 'y', 'float32', [1, n]);
    const s = await createSession(g.toModel({ opset: 23, irVersion: 11 }), { threads });
    const feeds = { x: f32(new Float32Array(k).fill(1), [1, k]) };
    const times: number[] = [];
    for (let r = 0; r < 12; r++) {
      const t0 = performance.now();
      await s.inner.run(feeds);
      if (r >= 2) times.push(performance.now() - t0);
    }
    await releaseSession(s);
    best = Math.max(best, w.byteLength / 1e9 / (median(times) / 1e3));
  }
  return best;
}
