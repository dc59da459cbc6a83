/**
 * The one-token graph (OnnxOpsOptions.oneToken, TargetSession's `oneToken`) computes a plain
 * decoding step bit for bit as the step graph computes a one-token pass: the same kernels over
 * the same numbers in the same shapes, only the regroupings are Reshapes and the mask a graph
 * input. A last-bit difference would make plain decoding and a speculative run (whose
 * verification runs in the step graph) disagree at near-ties, so this pins bit-equality, at 1
 * and 2 threads, over contexts that grow the cache's stride, with grouped heads, q/k norms,
 * biases and tied embeddings drawn.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { randomWeights } from '../src/model/random.ts';
import { arbDecodeCase, decodeConfig } from './support/model-arbs.ts';
import { decodeSideBySide } from './support/side-by-side.ts';
import { TargetSession, type TargetOutput } from '../src/runtime/target.ts';

const bits = (x: Float32Array | Int32Array) => new Uint32Array(x.buffer, x.byteOffset, x.length);

function assertSameBits(a: TargetOutput, b: TargetOutput, what: string): void {
  for (const k of ['logits', 'argmax', 'features'] as const) assert.deepEqual(bits(b[k]), bits(a[k]), `${what}: ${k}`);
  a.newKeys.forEach((x, l) => assert.deepEqual(bits(b.newKeys[l]), bits(x), `${what}: layer ${l} keys`));
  a.newValues.forEach((x, l) => assert.deepEqual(bits(b.newValues[l]), bits(x), `${what}: layer ${l} values`));
}

test('a one-token graph decodes bit for bit as the step graph', async () => {
  await fc.assert(
    fc.asyncProperty(arbDecodeCase([8, 16]), async (c) => {
      const cfg = decodeConfig(c), weights = randomWeights(cfg, c.seed, 3);
      const step = await TargetSession.create(cfg, weights, { threads: c.threads, attention: 'split' });
      const one = await TargetSession.create(cfg, weights, { threads: c.threads, attention: 'split', oneToken: true });
      try {
        assert.ok(one.oneTokenGraph && !step.oneTokenGraph);
        // Greedy decoding past the cache's first stride (64 rows), one token a step; prompts run the step graph in both.
        await decodeSideBySide(cfg, step, one, c.seed, c.prompt, 90, (a, b, p) => assertSameBits(a, b, `position ${p}`));
        assert.equal(one.stats.passes, step.stats.passes, 'the one-token passes count in the session stats');
      } finally {
        await step.dispose();
        await one.dispose();
      }
    }),
    // Always one layout with as many K/V heads as query heads (G = 1): there ORT would fuse the
    // query's scaling into the score product without the Reshape between them.
    { numRuns: 8, examples: [[{ heads: [2, 2], headDim: 8, qkNorm: false, attentionBias: false, tieEmbeddings: true, threads: 2, seed: 7, prompt: 5 }]] },
  );
});
