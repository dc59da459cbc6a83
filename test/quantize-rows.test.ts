/**
 * A quantized target's Linear layers compute each row of a T-row pass (a verification) bit for
 * bit as a one-token pass (a plain decoding step) computes it. With int8 activations a last-bit
 * difference is not harmless: it can move an activation across an int8 rounding boundary in the
 * next layer and grow to a logit gap far beyond float32 rounding (on the 100M cost-scaled fixture
 * at q4 with blocks of 128 rendered as plain MatMulNBits, 9 of 72 generations differed from plain
 * decoding beyond bench's near-tie bound). So this pins bit-equality, not a float bound.
 *
 * The layers are rendered as a target renders them (OnnxOps.linear with evenRows), on input
 * widths of 128 and more, in blocks of 32, 64 and 128: ORT's int8 kernels sum a lone row and a
 * paired row differently for 4-bit blocks of 64/128 and 8-bit blocks of 128 (src/model/quantize.ts,
 * QUANT; scripts/row-kernels.ts shows it), and a target feeds those layers even row counts so
 * every row is a paired one. Without evenRows this property fails on its first run for those
 * blocks. The small random configs of the other quantization tests only ever get blocks of 16
 * or 32, which is why they did not see it.
 *
 * The rest of a target pass is not bit-equal across pass shapes yet: attention sums a row's keys
 * in another order when they are split differently between the cache and the pass (README,
 * "Quantized targets").
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { WeightQuant } from '../src/model/quantize.ts';
import { GraphBuilder } from '../src/onnx/graph.ts';
import { OnnxOps } from '../src/onnx/ops.ts';
import { createSession, f32, f32Data, releaseSession, runTimed } from '../src/runtime/ort.ts';
import { Rng } from '../src/util/rng.ts';

/** One Linear layer [N, K] rendered as a target renders it under `q`, as an ORT session over x [T, K]. */
async function linearSession(q: WeightQuant, k: number, n: number, seed: number, threads: number) {
  const rng = new Rng(seed), w = { shape: [n, k], data: Float32Array.from({ length: n * k }, () => rng.normal() * 0.05) };
  const g = new GraphBuilder('linear'), ops = new OnnxOps(g, (name) => (name === 'w' ? w : undefined), 1, 'split', { quantize: q, evenRows: true });
  g.output(ops.linear(g.input('x', 'float32', ['T', k]), ops.weight('w')), 'y', 'float32', ['T', n]);
  const s = await createSession(g.toModel({ opset: 23, irVersion: 10 }), { threads });
  return { run: async (x: Float32Array, t: number) => f32Data((await runTimed(s, { x: f32(x, [t, k]) })).y), dispose: () => releaseSession(s) };
}

test('property: a quantized Linear as a target renders it (4 and 8 bits, blocks of 32-128, widths 128-2816, 1 and 2 threads) computes every row of a T-row pass bit-equal to a one-row pass', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.record({ bits: fc.constantFrom<4 | 8>(4, 8), blockSize: fc.constantFrom(32, 64, 128) }),
      fc.constantFrom(128, 256, 384, 768, 2816),
      fc.constantFrom(36, 64, 256, 768),
      fc.integer({ min: 1, max: 2 }),
      fc.nat(),
      async (q, k, n, threads, seed) => {
        const layer = await linearSession(q, k, n, seed, threads);
        try {
          const rng = new Rng(seed + 1), maxT = 12, x = Float32Array.from({ length: maxT * k }, () => rng.normal());
          const single: Float32Array[] = [];
          for (let r = 0; r < maxT; r++) single.push(await layer.run(x.slice(r * k, (r + 1) * k), 1));
          for (const t of [2, 3, 4, 5, 6, 7, 9, 12]) {
            const y = await layer.run(x.slice(0, t * k), t);
            for (let r = 0; r < t; r++)
              for (let i = 0; i < n; i++)
                if (!Object.is(y[r * n + i], single[r][i]))
                  assert.fail(`${q.bits} bits, blocks of ${q.blockSize}, [${n}, ${k}], ${threads} thread(s): row ${r} of a ${t}-row pass, output ${i}: ${y[r * n + i]} vs ${single[r][i]} in a one-row pass`);
          }
        } finally {
          await layer.dispose();
        }
      },
    ),
    { numRuns: 24 },
  );
});
