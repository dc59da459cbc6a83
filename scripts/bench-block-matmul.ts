// Chain of L Linear nodes [K->K] (or given shape) as BlockMatMul vs MatMulNBits, M rows, ms per node.
import * as ort from 'onnxruntime-node';
import { GraphBuilder } from '../src/onnx/graph.ts';
import { quantizeWeight } from '../src/model/quantize.ts';
import { createSession } from '../src/runtime/ort.ts';
const [bits, k, n, M, threads] = process.argv.slice(2).map(Number);
const L = 24;
function model(kind: string): Uint8Array {
  const g = new GraphBuilder('c');
  let x = g.input('x', 'float32', ['T', k]);
  for (let l = 0; l < L; l++) {
    const w = { shape: [n, k], data: Float32Array.from({ length: n * k }, (_, i) => Math.sin(i * 0.37 + l)) };
    const { packed, scales } = quantizeWeight(w as never, { bits: bits as 4 | 8, blockSize: 128 });
    const B = g.initializer(`B${l}`, { dtype: 'uint8', dims: [n, k / 128, bits * 16], data: packed });
    const S = g.initializer(`S${l}`, { dtype: 'float32', dims: [(n * k) / 128], data: scales });
    let y = kind === 'native' ? g.node('BlockMatMul', [x, B, S], {}, { domain: 'eaglet' })[0] : g.node('MatMulNBits', [x, B, S], { K: k, N: n, bits, block_size: 128, accuracy_level: 4 }, { domain: 'com.microsoft' })[0];
    if (n !== k) y = g.op('Slice', [y, g.ints([0]), g.ints([k]), g.ints([1])]);
    x = y;
  }
  g.output(x, 'y', 'float32', ['T', k]);
  return g.toModel({ opset: 23, irVersion: 11 });
}
const sessions = { native: await createSession(model('native'), { threads, native: true }), nbits: await createSession(model('nbits'), { threads, native: true }) };
const x = new ort.Tensor('float32', Float32Array.from({ length: M * k }, (_, i) => Math.cos(i)), [M, k]);
const res: Record<string, number[]> = { native: [], nbits: [] };
for (let r = 0; r < 15; r++) for (const [name, s] of Object.entries(sessions)) {
  const t0 = performance.now();
  for (let i = 0; i < 20; i++) await s.inner.run({ x });
  res[name].push((performance.now() - t0) / 20 / L * 1000);
}
for (const [name, v] of Object.entries(res)) { v.sort((a, b) => a - b); console.log(`${name} bits=${bits} k=${k} n=${n} M=${M} thr=${threads}: ${v[7].toFixed(1)} us/node (min ${v[0].toFixed(1)}) ; ${(n * k * bits / 8 / (v[7] * 1e-6) / 1e9).toFixed(1)} GB/s`); }
