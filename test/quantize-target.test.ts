/**
 * Quantized targets (`--quantize`, `eaglet quantize`): the ORT target with blockwise 8/4-bit
 * Linear weights and embedding table equals the float64 reference run on the dequantized weights (fp32 compute,
 * accuracy_level 0: the target-forward bound; int8 activations, the default: within 5% relative
 * RMS of the logits); speculation stays lossless with respect to the quantized target; a quantized
 * checkpoint loads back to the same weights and the same generations as quantizing at load.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { loadGenerator } from '../src/api.ts';
import { toHfConfig, saveHfCheckpoint } from '../src/io/hf.ts';
import { loadModel } from '../src/load-model.ts';
import { saveQuantizedCheckpoint } from '../src/io/quantized-checkpoint.ts';
import type { ModelConfig } from '../src/model/config.ts';
import { headConfigFor, randomHeadWeights } from '../src/model/draft-head.ts';
import { dense, linearNames, QUANT, quantizedNames, quantizeLinears, quantizeTarget, type WeightQuant } from '../src/model/quantize.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import { EMBEDDING, type Weights } from '../src/model/weights.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { TargetSession } from '../src/runtime/target.ts';
import { referenceForward, visibility } from './support/reference.ts';
import { expectClose, mismatch } from './support/model-arbs.ts';
import { AcceptanceTally, sameAsPlain, treeShape } from './support/models.ts';
import { spawnSync } from 'node:child_process';

/** Runs the CLI in a child process. */
async function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { encoding: 'utf8' });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Small configs whose widths blocks of 16 divide (so every Linear is quantized). */
const arbQuantConfig: fc.Arbitrary<ModelConfig> = fc
  .record({
    vocabSize: fc.integer({ min: 16, max: 48 }),
    nHeads: fc.constantFrom(2, 4),
    kvDiv: fc.constantFrom(1, 2),
    hiddenDim: fc.constantFrom(32, 48, 64),
    nLayers: fc.integer({ min: 1, max: 2 }),
    tieEmbeddings: fc.boolean(),
    attentionBias: fc.boolean(),
    qkNorm: fc.boolean(),
  })
  .map(({ kvDiv, nHeads, ...r }) => makeConfig({ ...r, nHeads, nKvHeads: nHeads / kvDiv, headDim: 8, dim: nHeads * 8, maxSeqLen: 64 }));
const arbQuant: fc.Arbitrary<WeightQuant> = fc.record({ bits: fc.constantFrom<4 | 8>(4, 8), blockSize: fc.constantFrom(16, 32) });

/**
 * The function a quantized target computes, as fp32 weights for the reference: every quantized
 * tensor dequantized; a tied head becomes an untied one holding the dequantized embedding (the
 * table quantized, or an fp32 table as the graph quantizes it for the head).
 */
function asComputed(c: ModelConfig, w: Weights, q: WeightQuant): { cfg: ModelConfig; weights: Weights } {
  const out = new Map([...w].map(([n, t]) => [n, dense(t)]));
  if (!c.tieEmbeddings) return { cfg: c, weights: out };
  const head = dense(quantizeLinears({ ...c, tieEmbeddings: false }, new Map([['lm_head.weight', w.get('model.embed_tokens.weight')!]]), q).get('lm_head.weight')!);
  out.set('lm_head.weight', head);
  return { cfg: { ...c, tieEmbeddings: false }, weights: out };
}

test('property: quantized ORT target == float64 reference on the dequantized weights (fp32 compute)', async () => {
  await fc.assert(
    fc.asyncProperty(arbQuantConfig, arbQuant, fc.nat(), fc.integer({ min: 1, max: 8 }), async (c, q, seed, n) => {
      const w = quantizeTarget(c, randomWeights(c, seed, 2), q);
      for (const name of quantizedNames(c)) assert.ok(w.get(name)!.quant, `${name} is held quantized`);
      const ids = Array.from({ length: n }, (_, i) => (i * 7 + seed) % c.vocabSize), pos = ids.map((_, i) => i);
      const s = await TargetSession.create(c, w, { threads: 1, quantize: { ...q, accuracyLevel: 0 } });
      try {
        const o = await s.forward(new KVCache(c.nLayers, c.nKvHeads, c.headDim, 64), ids, pos);
        const r = asComputed(c, w, q);
        const ref = referenceForward(r.cfg, r.weights, ids, pos, visibility(0, n));
        expectClose(mismatch('logits', o.logits, ref.logits, 1e-3, 1e-4), mismatch('features', o.features, ref.features));
      } finally {
        await s.dispose();
      }
    }),
    { numRuns: 25 },
  );
});

test('example: the default (int8 activations) stays within 5% relative RMS of the reference logits, and differs from fp32 compute', async () => {
  const c = makeConfig({ vocabSize: 64, dim: 64, nLayers: 2, nHeads: 4, hiddenDim: 128, maxSeqLen: 64 });
  const q = { bits: 4 as const, blockSize: 32 };
  const w = quantizeLinears(c, randomWeights(c, 5, 2), q), ids = [3, 8, 13, 21, 34, 55], pos = ids.map((_, i) => i);
  const s = await TargetSession.create(c, w, { threads: 1 }); // quantization as held, default accuracy level
  const o = await s.forward(new KVCache(c.nLayers, c.nKvHeads, c.headDim, 64), ids, pos).finally(() => s.dispose());
  const r = asComputed(c, w, q), ref = referenceForward(r.cfg, r.weights, ids, pos, visibility(0, ids.length)).logits;
  let diff = 0, norm = 0, maxAbs = 0;
  for (let i = 0; i < ref.length; i++) (diff += (o.logits[i] - ref[i]) ** 2), (norm += ref[i] ** 2), (maxAbs = Math.max(maxAbs, Math.abs(o.logits[i] - ref[i])));
  assert.ok(Math.sqrt(diff / norm) < 0.05, `relative RMS ${Math.sqrt(diff / norm)}`);
  assert.ok(maxAbs > 1e-4, 'int8 activations should differ from fp32 compute (else the accuracy level is not applied)');
});

test('property: greedy speculative == greedy plain with a quantized target (q4 / q8 at load; head q8 by default, q4, or fp32)', async () => {
  const tally = new AcceptanceTally();
  await fc.assert(
    // The head: the default for a quantized target (q8), 4 bits, or kept fp32 ('none').
    fc.asyncProperty(arbQuantConfig, fc.constantFrom<'q4' | 'q8'>('q4', 'q8'), fc.constantFrom<'q4' | 'none' | undefined>(undefined, 'q4', 'none'), treeShape, fc.nat(), fc.integer({ min: 1, max: 30 }), async (c, quantize, draftQuant, tree, seed, maxNewTokens) => {
      const model = { config: c, weights: randomWeights(c, seed, 3), source: 'hf' as const };
      const draft = { config: headConfigFor(c), weights: randomHeadWeights(c, seed + 1) };
      const ar = await loadGenerator({ model, threads: 1, quantize });
      const spec = await loadGenerator({ model, draft, tree, threads: 1, quantize, draftQuant });
      try {
        assert.ok(linearNames(c).every((n) => !ar.model.weights.has(n)), 'the Linear weights are released once the sessions exist');
        assert.equal(spec.weightFormats.draft, draftQuant === 'none' ? 'fp32' : (draftQuant ?? 'q8'), 'the head runs in the format asked for');
        const prompt = [seed % c.vocabSize, (seed * 3 + 1) % c.vocabSize];
        tally.add((await sameAsPlain(ar, spec, prompt, { maxNewTokens, stopAtEos: false })).stats);
      } finally {
        await ar.dispose();
        await spec.dispose();
      }
    }),
    { numRuns: 20, seed: 3 },
  );
  assert.ok(tally.accepted > 0 && tally.accepted < tally.rounds * 3, `${tally}`);
});

test('eaglet quantize writes a checkpoint that loads back to the same packed weights and generates as --quantize at load', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'eaglet-quant-'));
  try {
    const c = makeConfig({ vocabSize: 48, dim: 32, nLayers: 2, nHeads: 4, nKvHeads: 2, hiddenDim: 64, maxSeqLen: 64, tieEmbeddings: false });
    saveHfCheckpoint(join(dir, 'fp32'), c, randomWeights(c, 11, 3));
    const r = await runCli(['quantize', '--model', join(dir, 'fp32'), '--bits', '4', '--out', join(dir, 'q4')]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /4-bit weights/);
    const back = await loadModel(join(dir, 'q4'));
    const atLoad = quantizeTarget(c, (await loadModel(join(dir, 'fp32'))).weights, QUANT.q4);
    for (const name of quantizedNames(c)) {
      const a = back.weights.get(name)!.quant!, b = atLoad.get(name)!.quant!;
      assert.deepEqual([a.bits, a.blockSize, a.n, a.k], [b.bits, b.blockSize, b.n, b.k]);
      assert.deepEqual(Buffer.from(a.packed), Buffer.from(b.packed), name);
      assert.deepEqual(a.scales, b.scales, name);
    }
    const prompt = [1, 2, 3];
    const g1 = await loadGenerator({ model: join(dir, 'q4'), threads: 1 }), g2 = await loadGenerator({ model: join(dir, 'fp32'), quantize: 'q4', threads: 1 });
    const g3 = await loadGenerator({ model: join(dir, 'fp32'), threads: 1 });
    try {
      const [a, b, f] = [await g1.generate(prompt, { maxNewTokens: 12, stopAtEos: false }), await g2.generate(prompt, { maxNewTokens: 12, stopAtEos: false }), await g3.generate(prompt, { maxNewTokens: 12, stopAtEos: false })];
      assert.deepEqual(a.ids, b.ids);
      assert.equal(f.ids.length, 12); // the fp32 model runs too (its ids may or may not differ)
    } finally {
      await g1.dispose(), await g2.dispose(), await g3.dispose();
    }
    // Bad input: quantizing again, a q8 load of a q4 checkpoint, a foreign quantization method.
    const again = await runCli(['quantize', '--model', join(dir, 'q4'), '--bits', '8', '--out', join(dir, 'x')]);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /quantized already \(4 bits\)/);
    const mixed = await runCli(['generate', '--model', join(dir, 'q4'), '--prompt-ids', '1,2', '--max-new-tokens', '2', '--quantize', 'q8']);
    assert.notEqual(mixed.code, 0);
    assert.match(mixed.stderr, /--quantize.*already quantized to 4 bits/);
    const cfgFile = join(dir, 'q4', 'config.json'), j = JSON.parse(readFileSync(cfgFile, 'utf8'));
    writeFileSync(cfgFile, JSON.stringify({ ...j, quantization_config: { quant_method: 'gptq', bits: 4 } }));
    const foreign = await runCli(['generate', '--model', join(dir, 'q4'), '--prompt-ids', '1,2', '--max-new-tokens', '2']);
    assert.notEqual(foreign.code, 0);
    assert.match(foreign.stderr, /config\.json.*quant_method "gptq" is not supported/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a quantized checkpoint whose packed weight has the wrong shape is refused naming the file', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'eaglet-quant-'));
  try {
    const c = makeConfig({ vocabSize: 32, dim: 32, nLayers: 1, nHeads: 2, hiddenDim: 32, maxSeqLen: 64 });
    saveQuantizedCheckpoint(dir, c, quantizeLinears(c, randomWeights(c, 1), { bits: 8, blockSize: 16 }), toHfConfig(c));
    // The config claims 4 bits: every 8-bit block holds twice the bytes a 4-bit one would.
    const cfgFile = join(dir, 'config.json'), j = JSON.parse(readFileSync(cfgFile, 'utf8'));
    writeFileSync(cfgFile, JSON.stringify({ ...j, quantization_config: { ...j.quantization_config, bits: 4 } }));
    await assert.rejects(loadModel(dir), /model\.safetensors.*q_proj: qweight shape \[32,2,16\] does not fit a \[32, 32\] weight at 4 bits/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a quantized checkpoint written before the embedding was quantized (table F32) still loads and generates as those weights in memory', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'eaglet-quant-'));
  try {
    for (const tieEmbeddings of [false, true]) {
      const c = makeConfig({ vocabSize: 48, dim: 32, nLayers: 1, nHeads: 4, nKvHeads: 2, hiddenDim: 64, maxSeqLen: 64, tieEmbeddings });
      const old = quantizeLinears(c, randomWeights(c, 7, 3), { bits: 4, blockSize: 32 });
      const out = join(dir, `old-${tieEmbeddings}`);
      saveQuantizedCheckpoint(out, c, old, toHfConfig(c));
      const back = await loadModel(out);
      assert.ok(!back.weights.get(EMBEDDING)!.quant, 'the table stays F32');
      const g1 = await loadGenerator({ model: out, threads: 1 }), g2 = await loadGenerator({ model: { config: c, weights: old, source: 'hf' }, threads: 1 });
      try {
        const [a, b] = [await g1.generate([1, 2, 3], { maxNewTokens: 10, stopAtEos: false }), await g2.generate([1, 2, 3], { maxNewTokens: 10, stopAtEos: false })];
        assert.deepEqual(a.ids, b.ids);
      } finally {
        await g1.dispose(), await g2.dispose();
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the fused round over a quantized target (table quantized, tied or untied head): greedy speculative == greedy plain', async () => {
  for (const tieEmbeddings of [false, true]) {
    const c = makeConfig({ vocabSize: 40, dim: 32, nLayers: 2, nHeads: 4, nKvHeads: 2, hiddenDim: 64, maxSeqLen: 64, tieEmbeddings });
    const model = { config: c, weights: randomWeights(c, 21, 3), source: 'hf' as const };
    const draft = { config: headConfigFor(c), weights: randomHeadWeights(c, 22) };
    const ar = await loadGenerator({ model, threads: 1, quantize: 'q4' });
    const spec = await loadGenerator({ model, draft, tree: { topK: 1, maxDepth: 3, totalTokens: 3 }, fusedRound: true, threads: 1, quantize: 'q4' });
    try {
      assert.ok(ar.model.weights.get(EMBEDDING)!.quant, 'the table is held quantized');
      for (const prompt of [[1, 2], [5, 9, 33]]) await sameAsPlain(ar, spec, prompt, { maxNewTokens: 16, stopAtEos: false });
    } finally {
      await ar.dispose();
      await spec.dispose();
    }
  }
});

test('a target quantized in blocks larger than the row-exact ones (4-bit and 8-bit blocks of 128, rendered with even row counts) speculates exactly as it decodes plainly', async () => {
  // Widths of 128 and 256, so every Linear really gets blocks of 128 (the small configs above only get 16 or 32).
  const cfg = makeConfig({ vocabSize: 256, dim: 128, nLayers: 2, nHeads: 4, nKvHeads: 2, hiddenDim: 256, maxSeqLen: 96, eosTokenIds: [] });
  const w = randomWeights(cfg, 11, 3), draft = { config: headConfigFor(cfg), weights: randomHeadWeights(cfg, 12) };
  for (const q of [{ bits: 4, blockSize: 128 }, { bits: 8, blockSize: 128 }] as WeightQuant[]) {
    const model = { config: cfg, weights: quantizeTarget(cfg, w, q), source: 'hf' as const };
    for (const threads of [1, 2]) {
      const ar = await loadGenerator({ model, threads });
      const spec = await loadGenerator({ model, draft, tree: { topK: 2, maxDepth: 3, totalTokens: 5 }, threads });
      try {
        for (const prompt of [[1, 2, 3], [7, 40, 99, 200, 31]]) await sameAsPlain(ar, spec, prompt, { maxNewTokens: 48, stopAtEos: false });
      } finally {
        await ar.dispose();
        await spec.dispose();
      }
    }
  }
});
