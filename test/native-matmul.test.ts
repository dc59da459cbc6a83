/**
 * eaglet's own blockwise Linear kernel (eaglet.BlockMatMul, src/native/block-matmul.h;
 * LoadOptions.nativeMatMul): each output equals a float64 reference of the same quantized math
 * (int8 activations per block of 128, 4- or 8-bit weights, exact integer block dots) to float32 rounding; every row is computed bit
 * for bit alike whatever the pass's rows (so plain steps need no padded row); a NaN row stays in
 * its row; and a q4 target (with its q8 head) run on it speculates exactly as it decodes plainly, fused rounds and
 * trees, with q/k/v biases, tied and untied heads, at 1 and 2 threads. The addon is built on
 * first use (src/runtime/native-build.ts); without AVX-512 VNNI these skip.
 */
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { loadGenerator } from '../src/api.ts';
import { headConfigFor, randomHeadWeights } from '../src/model/draft-head.ts';
import { QUANT, quantizeTarget, quantizeWeight } from '../src/model/quantize.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import { GraphBuilder } from '../src/onnx/graph.ts';
import { buildRoundModel, buildTargetModel } from '../src/onnx/model-graphs.ts';
import { createSession, releaseSession } from '../src/runtime/ort.ts';
import * as ort from 'onnxruntime-node';
import { Engine } from '../src/serve/engine.ts';
import { blockMatMulUnsupported } from '../src/runtime/native-build.ts';
import { Rng } from '../src/util/rng.ts';
import { sameAsPlain, AcceptanceTally } from './support/models.ts';

const cpu = process.arch === 'x64' && existsSync('/proc/cpuinfo') ? readFileSync('/proc/cpuinfo', 'utf8') : '';
const skip = /\bavx512_vnni\b/.test(cpu) && /\bavx512bw\b/.test(cpu) ? false : 'needs an x86-64 Linux CPU with AVX-512 VNNI and BW';

/** A graph of one BlockMatMul node: x [T, K] -> y [T, N], over `w` [N, K] quantized to `bits` in blocks of 128, plus `bias`. */
function blockMatMulModel(bits: number, n: number, k: number, packed: Uint8Array, scales: Float32Array, bias?: Float32Array): Uint8Array {
  const g = new GraphBuilder('blockmatmul');
  const x = g.input('x', 'float32', ['T', k]);
  const B = g.initializer('B', { dtype: 'uint8', dims: [n, k / 128, bits * 16], data: packed });
  const S = g.initializer('S', { dtype: 'float32', dims: [(n * k) / 128], data: scales });
  const inputs = [x, B, S, ...(bias ? [g.initializer('bias', { dtype: 'float32', dims: [n], data: bias })] : [])];
  g.output(g.node('BlockMatMul', inputs, {}, { domain: 'eaglet' })[0], 'y', 'float32', ['T', n]);
  return g.toModel({ opset: 23, irVersion: 11 });
}

/** Round half to even, as the kernel's float -> int conversion does. */
const roundEven = (v: number): number => {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
};

/**
 * y [T, N] by the same quantized math in float64 (exact integer block dots), each output's sum of
 * |terms| (the relative tolerance's scale) and `sub`, what float32 subnormals can lose: the kernel
 * multiplies each block's two scales in float32, and where that product is subnormal (a row near
 * 1e-38) it is off by up to half the subnormal spacing, 2^-150, times the block's dot.
 */
function reference(bits: number, x: Float32Array, t: number, k: number, n: number, packed: Uint8Array, scales: Float32Array, bias?: Float32Array): { y: Float64Array; mag: Float64Array; sub: Float64Array } {
  const blob = bits * 16, zero = 2 ** (bits - 1), code = (at: number, j: number) => (bits === 8 ? packed[at + j] : (packed[at + (j >> 1)] >> ((j & 1) * 4)) & 15);
  const blocks = k / 128, y = new Float64Array(t * n), mag = new Float64Array(t * n), sub = new Float64Array(t * n);
  for (let r = 0; r < t; r++) {
    const q = new Int32Array(k), sa = new Float64Array(blocks);
    for (let b = 0; b < blocks; b++) {
      let mx = 0;
      for (let j = 0; j < 128; j++) mx = Math.max(mx, Math.abs(x[r * k + b * 128 + j]));
      // A block below 1e-30 is scaled by 2^100 first (exact), as the kernel does: 127 / max|a| would overflow.
      const pre = mx > 0 && mx < Math.fround(1e-30) ? 2 ** 100 : 1, inv = mx > 0 ? Math.fround(127 / Math.fround(mx * pre)) : 0;
      sa[b] = Math.fround(mx / 127);
      for (let j = 0; j < 128; j++) q[b * 128 + j] = Math.max(-128, Math.min(127, roundEven(Math.fround(Math.fround(x[r * k + b * 128 + j] * pre) * inv))));
    }
    for (let c = 0; c < n; c++) {
      let acc = bias ? bias[c] : 0, m = Math.abs(acc);
      for (let b = 0; b < blocks; b++) {
        let dot = 0;
        for (let j = 0; j < 128; j++) dot += (code((c * blocks + b) * blob, j) - zero) * q[b * 128 + j];
        const term = sa[b] * scales[c * blocks + b] * dot;
        acc += term, (m += Math.abs(term)), (sub[r * n + c] += Math.abs(dot) * 2 ** -149);
      }
      y[r * n + c] = acc, (mag[r * n + c] = m);
    }
  }
  return { y, mag, sub };
}

test('property: BlockMatMul (4 and 8 bits) == the float64 reference of its quantized math, and each row is the same bits in any pass', { skip }, async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.record({ bits: fc.constantFrom(4, 8), n: fc.integer({ min: 1, max: 70 }), blocks: fc.integer({ min: 1, max: 3 }), t: fc.integer({ min: 1, max: 11 }), bias: fc.boolean(), threads: fc.constantFrom(1, 2), seed: fc.nat() }),
      async ({ bits, n, blocks, t, bias, threads, seed }) => {
        const k = blocks * 128;
        const rng = new Rng(seed), rand = () => rng.next() * 2 - 1;
        const w = { shape: [n, k], data: Float32Array.from({ length: n * k }, rand) };
        const { packed, scales } = quantizeWeight(w as never, { bits: bits as 4 | 8, blockSize: 128 });
        const b = bias ? Float32Array.from({ length: n }, rand) : undefined;
        // Rows of different scales: one all zero, one so small that 127 / max|a| overflows (subnormal values too).
        const x = Float32Array.from({ length: t * k }, (_, i) => { const r = Math.floor(i / k); return r === 1 ? 0 : r === 2 ? rand() * 1e-38 : rand() * (1 + r); });
        const session = await createSession(blockMatMulModel(bits, n, k, packed, scales, b), { threads, native: true });
        try {
          const run = async (rows: Float32Array, count: number) => (await session.inner.run({ x: new ort.Tensor('float32', rows, [count, k]) })).y.data as Float32Array;
          const y = await run(x, t);
          const ref = reference(bits, x, t, k, n, packed, scales, b);
          for (let i = 0; i < t * n; i++) assert.ok(Math.abs(y[i] - ref.y[i]) <= 1e-5 * ref.mag[i] + ref.sub[i], `y[${i}] = ${y[i]}, reference ${ref.y[i]}`);
          for (let r = 0; r < t; r++) {
            const alone = await run(x.slice(r * k, (r + 1) * k), 1);
            assert.deepEqual(new Uint32Array(alone.buffer, alone.byteOffset, n), new Uint32Array(y.buffer, y.byteOffset + r * n * 4, n), `row ${r} of ${t} differs from the row alone`);
          }
        } finally {
          await releaseSession(session);
        }
      },
    ),
    { numRuns: 40 },
  );
});

test('BlockMatMul: a row holding NaN gives NaN in its outputs only; K = 0 is an error; a graph with it opens only on the native addon', { skip }, async () => {
  const n = 20, k = 256, w = { shape: [n, k], data: Float32Array.from({ length: n * k }, (_, i) => Math.sin(i)) };
  const { packed, scales } = quantizeWeight(w as never, { bits: 4, blockSize: 128 });
  const model = blockMatMulModel(4, n, k, packed, scales);
  await assert.rejects(createSession(model, { threads: 1 }), /BlockMatMul|eaglet/);
  const session = await createSession(model, { threads: 2, native: true });
  try {
    const x = Float32Array.from({ length: 3 * k }, (_, i) => Math.cos(i));
    x[k + 200] = NaN;
    const y = (await session.inner.run({ x: new ort.Tensor('float32', x, [3, k]) })).y.data as Float32Array;
    assert.ok(y.slice(n, 2 * n).every(Number.isNaN), 'the NaN row is NaN');
    assert.ok([...y.slice(0, n), ...y.slice(2 * n)].every(Number.isFinite), 'the other rows are not');
  } finally {
    await releaseSession(session);
  }
  // No blocks (K = 0): one error, not a crash (a division by K).
  const empty = await createSession(blockMatMulModel(4, 3, 0, new Uint8Array(0), new Float32Array(0)), { threads: 1, native: true });
  try {
    await assert.rejects(empty.inner.run({ x: new ort.Tensor('float32', new Float32Array(0), [2, 0]) }), /K must be positive/);
  } finally {
    await releaseSession(empty);
  }
});

test('property: a q4 target and its q8 head on BlockMatMul (nativeMatMul) speculate exactly as it decodes plainly: fused rounds and trees', { skip }, async () => {
  const tally = new AcceptanceTally();
  await fc.assert(
    fc.asyncProperty(
      fc.record({
        vocabSize: fc.integer({ min: 40, max: 300 }),
        hiddenDim: fc.constantFrom(256, 384),
        nKvHeads: fc.constantFrom(2, 4),
        tieEmbeddings: fc.boolean(),
        attentionBias: fc.boolean(),
        qkNorm: fc.boolean(),
        fused: fc.boolean(),
        threads: fc.constantFrom(1, 2),
        seed: fc.nat(),
      }),
      async ({ fused, threads, seed, ...r }) => {
        // Widths of 128 and more, so every Linear gets blocks of 128 (the kernel's).
        const cfg = makeConfig({ ...r, dim: 128, nLayers: 2, nHeads: 4, headDim: 32, maxSeqLen: 96, eosTokenIds: [] });
        const model = { config: cfg, weights: quantizeTarget(cfg, randomWeights(cfg, seed, 3), QUANT.q4), source: 'hf' as const };
        const draft = { config: headConfigFor(cfg), weights: randomHeadWeights(cfg, seed + 1) };
        const tree = fused ? { topK: 1, maxDepth: 4, totalTokens: 4 } : { topK: 2, maxDepth: 3, totalTokens: 6 };
        const ar = await loadGenerator({ model, threads, nativeMatMul: true });
        const spec = await loadGenerator({ model, draft, tree, fusedRound: fused, threads, nativeMatMul: true });
        try {
          for (const prompt of [[1, 2, 3], [seed % cfg.vocabSize, 7, 30, 11, 5]]) tally.add((await sameAsPlain(ar, spec, prompt, { maxNewTokens: 40, stopAtEos: false })).stats);
        } finally {
          await ar.dispose();
          await spec.dispose();
        }
      },
    ),
    { numRuns: 8, seed: 5 },
  );
  assert.ok(tally.accepted > 0, `${tally}`);
});

test('nativeMatMul renders every q4 Linear as BlockMatMul with no padded rows; serving refuses such a generator', { skip }, async () => {
  const cfg = makeConfig({ vocabSize: 64, dim: 128, nLayers: 1, nHeads: 4, nKvHeads: 2, headDim: 32, hiddenDim: 256, maxSeqLen: 64 });
  const weights = quantizeTarget(cfg, randomWeights(cfg, 3, 3), QUANT.q4), head = { config: headConfigFor(cfg), weights: randomHeadWeights(cfg, 4) };
  // A node's op_type is its field 4 (tag 0x22), then the name's length: value names carry suffixes.
  const ops = (m: { bytes: Uint8Array }, op: string) => Buffer.from(m.bytes).toString('latin1').split(`\x22${String.fromCharCode(op.length)}${op}`).length - 1;
  const plain = buildTargetModel(cfg, weights, 'split', { nativeLinear: true });
  assert.ok(ops(plain, 'BlockMatMul') >= 4, `${ops(plain, 'BlockMatMul')} BlockMatMul nodes`);
  assert.equal(ops(plain, 'MatMulNBits'), 0);
  assert.equal(ops(buildTargetModel(cfg, weights, 'split'), 'MatMulNBits'), ops(plain, 'BlockMatMul'), 'the same Linear layers as MatMulNBits without it');
  const round = buildRoundModel(cfg, weights, head.config, head.weights, 3, 'split', { nativeLinear: true }, { nativeLinear: true });
  assert.equal(round.padsRows, false, 'no padded verification rows');
  assert.equal(buildRoundModel(cfg, weights, head.config, head.weights, 3, 'split').padsRows, true, 'MatMulNBits pads (blocks of 128)');
  const g = await loadGenerator({ model: { config: cfg, weights, source: 'hf' }, draft: head, threads: 1, nativeMatMul: true });
  try {
    assert.equal(g.nativeMatMul, true);
    assert.throws(() => new Engine(g), /nativeMatMul/);
  } finally {
    await g.dispose();
  }
});

test('self-drafting (--exit-layer) from a q4 target on BlockMatMul: its exit and rest graphs score rows as the target does, so speculation == plain', { skip }, async () => {
  const cfg = makeConfig({ vocabSize: 200, dim: 128, nLayers: 3, nHeads: 4, nKvHeads: 2, headDim: 32, hiddenDim: 256, maxSeqLen: 96, eosTokenIds: [] });
  const model = { config: cfg, weights: quantizeTarget(cfg, randomWeights(cfg, 4, 3), QUANT.q4), source: 'hf' as const };
  const ar = await loadGenerator({ model, threads: 2, nativeMatMul: true });
  try {
    for (const tree of [{ topK: 1, maxDepth: 3, totalTokens: 3 }, { topK: 2, maxDepth: 3, totalTokens: 6 }]) {
      const spec = await loadGenerator({ model, exitLayer: 1, tree, threads: 2, nativeMatMul: true });
      try {
        let drafted = 0;
        for (const prompt of [[1, 2, 3], [9, 40, 77, 120]]) drafted += (await sameAsPlain(ar, spec, prompt, { maxNewTokens: 40, stopAtEos: false })).stats.draftPasses;
        assert.ok(drafted > 0, 'the exit layer drafted');
      } finally {
        await spec.dispose();
      }
    }
  } finally {
    await ar.dispose();
  }
});

test('a CPU without AVX-512 VNNI is told at load, in one line naming what it lacks', () => {
  assert.match(blockMatMulUnsupported('flags\t: fpu sse avx2 avx512f avx512bw', 'x64')!, /needs an x86-64 Linux CPU with AVX-512 VNNI .*lacks avx512_vnni\)$/);
  assert.match(blockMatMulUnsupported('flags\t: avx512f avx512bw avx512_vnni', 'arm64')!, /not x86-64/);
  assert.equal(blockMatMulUnsupported('flags\t: avx512f avx512bw avx512_vnni', 'x64'), null);
});
