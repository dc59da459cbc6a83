/**
 * Which MatMulNBits renderings compute a row the same in every pass shape: the probe behind
 * QUANT's blocks and OnnxOpsOptions.evenRows (src/model/quantize.ts). For each bits / block /
 * thread count, one quantized Linear [N, K] runs every row alone (a plain decoding step), paired
 * with an unrelated row, and inside T-row passes (T = 2..12), and the report says, bit for bit:
 *
 *   lone = paired   does a one-row pass compute a row as a two-row pass does?
 *   partner-free    is a paired row's result the same whatever row it is paired with?
 *   T-row = paired  rows of T-row passes vs the same row paired (odd T: the last row is lone)
 *   evenRows        rendered as a target renders it: T-row passes vs one-row passes
 *
 *   node --import tsx scripts/row-kernels.ts [--threads 1,2] [--blocks 32,64,128] [--k 768] [--n 2048]
 *
 * On ORT 1.30's x64 AVX512-VNNI kernels: lone != paired for 4-bit blocks of 64 / 128 and 8-bit
 * blocks of 128; paired rows are partner-free everywhere; so evenRows makes every block exact.
 */
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { GraphBuilder } from '../src/onnx/graph.ts';
import { OnnxOps } from '../src/onnx/ops.ts';
import { createSession, f32, f32Data, releaseSession, runTimed } from '../src/runtime/ort.ts';
import { Rng } from '../src/util/rng.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'threads', type: 'ints', default: [1, 2], help: 'ORT intra-op thread counts' },
  { flag: 'blocks', type: 'ints', default: [32, 64, 128], help: 'block sizes' },
  { flag: 'k', type: 'int', min: 128, default: 768, help: 'input width (a multiple of every block)' },
  { flag: 'n', type: 'int', min: 1, default: 2048, help: 'output width' },
];
const f = scriptFlags(import.meta.url, FLAGS);
const K = f.k as number, N = f.n as number, maxT = 12;

async function linear(bits: 4 | 8, blockSize: number, threads: number, evenRows: boolean) {
  const rng = new Rng(7), w = { shape: [N, K], data: Float32Array.from({ length: N * K }, () => rng.normal() * 0.05) };
  const g = new GraphBuilder('linear'), ops = new OnnxOps(g, (name) => (name === 'w' ? w : undefined), 1, 'split', { quantize: { bits, blockSize }, evenRows });
  g.output(ops.linear(g.input('x', 'float32', ['T', K]), ops.weight('w')), 'y', 'float32', ['T', N]);
  const s = await createSession(g.toModel({ opset: 23, irVersion: 10 }), { threads });
  return { run: async (x: Float32Array) => f32Data((await runTimed(s, { x: f32(x, [x.length / K, K]) })).y), dispose: () => releaseSession(s) };
}
const same = (a: Float32Array, b: Float32Array) => a.length === b.length && a.every((v, i) => Object.is(v, b[i]));
const rows = (x: Float32Array, from: number, to: number) => x.slice(from * K, to * K);
const yes = (b: boolean) => (b ? 'yes' : 'NO');

const rng = new Rng(3), x = Float32Array.from({ length: maxT * K }, () => rng.normal()), other = Float32Array.from({ length: 2 * K }, () => 3 * rng.normal());
console.log(`MatMulNBits [${N}, ${K}], int8 activations; rows 0..${maxT - 1} of random inputs, bit for bit`);
console.log('bits  block  threads  lone = paired  partner-free  T-row = paired  evenRows: T-row = one-row');
for (const bits of [4, 8] as const)
  for (const block of f.blocks as number[])
    for (const threads of f.threads as number[]) {
      const plain = await linear(bits, block, threads, false), even = await linear(bits, block, threads, true);
      const lone: Float32Array[] = [], paired: Float32Array[] = [];
      let partnerFree = true, tRow = true, evenExact = true;
      for (let r = 0; r < maxT; r++) {
        lone.push(await plain.run(rows(x, r, r + 1)));
        const pair = (o: number) => { const p = new Float32Array(2 * K); p.set(rows(x, r, r + 1)); p.set(other.subarray(o * K, (o + 1) * K), K); return p; };
        const [a, b] = [await plain.run(pair(0)), await plain.run(pair(1))];
        paired.push(a.slice(0, N));
        partnerFree &&= same(a.slice(0, N), b.slice(0, N));
      }
      const evenLone: Float32Array[] = [];
      for (let r = 0; r < maxT; r++) evenLone.push(await even.run(rows(x, r, r + 1)));
      for (let t = 2; t <= maxT; t++) {
        const [y, z] = [await plain.run(rows(x, 0, t)), await even.run(rows(x, 0, t))];
        for (let r = 0; r < t; r++) {
          const want = t % 2 && r === t - 1 ? lone[r] : paired[r];
          tRow &&= same(y.slice(r * N, (r + 1) * N), want);
          evenExact &&= same(z.slice(r * N, (r + 1) * N), evenLone[r]);
        }
      }
      const loneIsPaired = lone.every((l, r) => same(l, paired[r]));
      console.log(`${String(bits).padStart(4)}  ${String(block).padStart(5)}  ${String(threads).padStart(7)}  ${yes(loneIsPaired).padStart(13)}  ${yes(partnerFree).padStart(12)}  ${yes(tRow).padStart(14)}  ${yes(evenExact).padStart(26)}`);
      await plain.dispose();
      await even.dispose();
    }
