/**
 * One blockwise Linear node at a time: eaglet's own kernel (eaglet.BlockMatMul, the native
 * addon) against ORT's MatMulNBits on the same quantized weights, in sessions on the same addon.
 * Each kernel runs one graph: a chain of `--layers` distinct K x N weights (each output sliced back
 * to K columns for the next), so every node reads weights the previous one did not. The two
 * sessions alternate, `--repeats` times `--runs` runs each; prints the median (and min) time per
 * node and the weight bytes it read per second.
 *
 *   node --import tsx scripts/bench-block-matmul.ts --bits 8 --k 768 --n 5632 --rows 1 --threads 2
 */
import * as ort from 'onnxruntime-node';
import { GraphBuilder } from '../src/onnx/graph.ts';
import { quantizeWeight } from '../src/model/quantize.ts';
import { createSession, releaseSession } from '../src/runtime/ort.ts';
import type { FlagSpec } from '../src/option-schema.ts';
import { median } from '../src/util/stats.ts';
import { UsageError } from '../src/errors.ts';
import { scriptFlags } from './script-flags.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'bits', type: 'int', min: 4, max: 8, default: 8, help: 'weight bits: 4 or 8' },
  { flag: 'k', type: 'int', min: 128, default: 768, help: 'input width (a multiple of 128)' },
  { flag: 'n', type: 'int', min: 1, default: 768, help: 'output width (at least K)' },
  { flag: 'rows', type: 'int', min: 1, default: 1, help: 'rows per pass' },
  { flag: 'threads', type: 'int', min: 1, default: 2, help: 'ORT intra-op threads' },
  { flag: 'layers', type: 'int', min: 1, default: 24, help: 'weights in the chain' },
  { flag: 'repeats', type: 'int', min: 1, default: 15, help: 'timed repeats (the spread is over these)' },
  { flag: 'runs', type: 'int', min: 1, default: 20, help: 'session runs per repeat' },
];
const f = scriptFlags(import.meta.url, FLAGS);
const bits = f.bits as number, k = f.k as number, n = f.n as number, M = f.rows as number, L = f.layers as number;
if (bits !== 4 && bits !== 8) throw new UsageError('--bits', `must be 4 or 8, got ${bits}`);
if (k % 128 !== 0) throw new UsageError('--k', `must be a multiple of 128 (the block), got ${k}`);
if (n < k) throw new UsageError('--n', `must be at least --k (${k}): each output is sliced back to K columns for the next node, got ${n}`);

function chain(kind: 'native' | 'nbits'): Uint8Array {
  const g = new GraphBuilder('chain');
  let x = g.input('x', 'float32', ['T', k]);
  for (let l = 0; l < L; l++) {
    const w = { shape: [n, k], data: Float32Array.from({ length: n * k }, (_, i) => Math.sin(i * 0.37 + l)) };
    const { packed, scales } = quantizeWeight(w as never, { bits: bits as 4 | 8, blockSize: 128 });
    const B = g.initializer(`B${l}`, { dtype: 'uint8', dims: [n, k / 128, bits * 16], data: packed });
    const S = g.initializer(`S${l}`, { dtype: 'float32', dims: [(n * k) / 128], data: scales });
    let y = kind === 'native'
      ? g.node('BlockMatMul', [x, B, S], {}, { domain: 'eaglet' })[0]
      : g.node('MatMulNBits', [x, B, S], { K: k, N: n, bits, block_size: 128, accuracy_level: 4 }, { domain: 'com.microsoft' })[0];
    if (n !== k) y = g.op('Slice', [y, g.ints([0]), g.ints([k]), g.ints([1])]);
    x = y;
  }
  g.output(x, 'y', 'float32', ['T', k]);
  return g.toModel({ opset: 23, irVersion: 11 });
}

const kinds = ['native', 'nbits'] as const;
const sessions = await Promise.all(kinds.map(async (kind) => createSession(chain(kind), { threads: f.threads as number, native: true })));
const x = new ort.Tensor('float32', Float32Array.from({ length: M * k }, (_, i) => Math.cos(i)), [M, k]);
const perNode: number[][] = kinds.map(() => []);
for (const s of sessions) await s.inner.run({ x }); // first runs reorder / prepack
for (let r = 0; r < (f.repeats as number); r++)
  for (let i = 0; i < sessions.length; i++) {
    const t0 = performance.now();
    for (let j = 0; j < (f.runs as number); j++) await sessions[i].inner.run({ x });
    perNode[i].push(((performance.now() - t0) / (f.runs as number) / L) * 1000);
  }
const label = { native: 'BlockMatMul', nbits: 'MatMulNBits' };
for (let i = 0; i < kinds.length; i++) {
  const med = median(perNode[i]);
  console.log(`${label[kinds[i]]}: bits ${bits}, ${k} x ${n}, ${M} rows, ${f.threads} threads: ${med.toFixed(1)} us a node (min ${Math.min(...perNode[i]).toFixed(1)}), ${((n * k * bits) / 8 / (med * 1e-6) / 1e9).toFixed(1)} GB/s of weights`);
}
for (const s of sessions) await releaseSession(s);
