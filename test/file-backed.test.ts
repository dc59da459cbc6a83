/**
 * File-backed weights: an HF checkpoint's F32 weights stay in model.safetensors and ORT reads
 * them from there as external data (location = the file, offset = the tensor's bytes). Pinned
 * here: the same outputs as the in-memory path (target, draft head and fused round sessions, on
 * random configs), no JS copy of a file-backed weight is made by building sessions, the mixed
 * case (a head in memory next to a file-backed target) and the fallback past the embedding
 * limit, and a checkpoint replaced after loading is refused, not read at stale offsets.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { loadGenerator } from '../src/api.ts';
import { FormatError } from '../src/errors.ts';
import { loadHfCheckpoint, saveHfCheckpoint, toHfConfig } from '../src/io/hf.ts';
import { saveQuantizedCheckpoint } from '../src/io/quantized-checkpoint.ts';
import { loadModel } from '../src/load-model.ts';
import { readSafetensors } from '../src/io/safetensors.ts';
import { writeLlama2c } from '../src/io/llama2c.ts';
import type { ModelConfig } from '../src/model/config.ts';
import { headConfigFor, randomHeadWeights } from '../src/model/draft-head.ts';
import { linearNames, quantizedNames, quantizeLinears, quantizeTarget } from '../src/model/quantize.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import { forEachRowChunk, inMemory, type Weights } from '../src/model/weights.ts';
import { GraphBuilder } from '../src/onnx/graph.ts';
import { buildTargetModel } from '../src/onnx/model-graphs.ts';
import { defaultAttention } from '../src/onnx/ops.ts';
import { DraftSession } from '../src/runtime/draft.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { createSession, f32, f32Data, releaseSession } from '../src/runtime/ort.ts';
import { RoundSession } from '../src/runtime/round.ts';
import { TargetSession } from '../src/runtime/target.ts';

const T = { timeout: 120_000 };

/** Configs whose larger tensors pass the 4 KiB file-backed threshold and whose norms do not. */
const arbConfig: fc.Arbitrary<ModelConfig> = fc
  .record({
    vocabSize: fc.integer({ min: 64, max: 100 }), // dim >= 16: the embedding table is at least 4 KiB
    nHeads: fc.constantFrom(2, 4),
    kvDiv: fc.constantFrom(1, 2),
    headDim: fc.constantFrom(8, 16),
    hiddenDim: fc.integer({ min: 40, max: 96 }),
    nLayers: fc.integer({ min: 1, max: 2 }),
    tie: fc.boolean(),
    bias: fc.boolean(),
  })
  .map((r) => makeConfig({ vocabSize: r.vocabSize, dim: r.nHeads * r.headDim, nHeads: r.nHeads, nKvHeads: r.nHeads / r.kvDiv, headDim: r.headDim, hiddenDim: r.hiddenDim, nLayers: r.nLayers, maxSeqLen: 32, tieEmbeddings: r.tie, attentionBias: r.bias }));

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'eaglet-file-backed-'));
}

/** The same checkpoint read fully into memory (the old path). */
function inMemoryWeights(dir: string): Weights {
  return readSafetensors(join(dir, 'model.safetensors')).tensors;
}

/** Logits and argmax of a prefill of `ids` then one step, fetched from a target session. */
async function targetRun(cfg: ModelConfig, w: Weights, ids: number[]): Promise<Float32Array[]> {
  const s = await TargetSession.create(cfg, w, { threads: 1 });
  try {
    const cache = new KVCache(cfg.nLayers, cfg.nKvHeads, cfg.headDim, cfg.maxSeqLen);
    const a = await s.forward(cache, ids, ids.map((_, i) => i));
    cache.append(a.newKeys, a.newValues, ids.length);
    const b = await s.forward(cache, [ids[0]], [ids.length]);
    return [a.logits, b.logits, a.features];
  } finally {
    await s.dispose();
  }
}

test('file-backed target == in-memory target, bit for bit; building the session reads no file-backed weight into JS', T, async () => {
  await fc.assert(
    fc.asyncProperty(arbConfig, fc.integer({ min: 0, max: 1000 }), async (cfg, seed) => {
      const dir = tmp();
      try {
        saveHfCheckpoint(dir, cfg, randomWeights(cfg, seed, 3));
        const { weights } = loadHfCheckpoint(dir);
        const fileBacked = [...weights].filter(([, t]) => t.file);
        // Every tensor of 4 KiB or more is file-backed, nothing smaller is.
        for (const [name, t] of weights) assert.equal(!!t.file, t.shape.reduce((a, b) => a * b, 4) >= 4096, name);
        assert.ok(fileBacked.length > 0);
        const model = buildTargetModel(cfg, weights, defaultAttention(cfg.maxSeqLen, cfg.nKvHeads, cfg.headDim));
        assert.deepEqual(model.external, [], 'no in-memory external data next to the file');
        assert.equal(model.folder, dir);
        const ids = [1, 2, 3].map((i) => (i * 7 + seed) % cfg.vocabSize);
        const got = await targetRun(cfg, weights, ids);
        for (const [name, t] of fileBacked) assert.ok(!inMemory(t), `${name} was read into JS`);
        const want = await targetRun(cfg, inMemoryWeights(dir), ids);
        got.forEach((g, i) => assert.deepEqual(g, want[i]));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }),
    { numRuns: Number(process.env.RUNS ?? 6) },
  );
});

test('a head in memory beside a file-backed target: draft and fused-round sessions equal the in-memory ones', T, async () => {
  await fc.assert(
    fc.asyncProperty(arbConfig, fc.integer({ min: 0, max: 1000 }), async (cfg, seed) => {
      const dir = tmp();
      try {
        saveHfCheckpoint(dir, cfg, randomWeights(cfg, seed, 3));
        const fileW = loadHfCheckpoint(dir).weights, memW = inMemoryWeights(dir);
        const head = headConfigFor(cfg), headW = randomHeadWeights(cfg, seed + 1);
        const ids = [3, 1, 4].map((i) => (i + seed) % cfg.vocabSize);
        const feat = new Float32Array(ids.length * cfg.dim).map((_, i) => Math.sin(i + seed));
        const draftOut = async (w: Weights) => {
          const d = await DraftSession.create(head, headW, cfg, w, { threads: 1, topK: 3 });
          try {
            const cache = new KVCache(1, head.nKvHeads, head.headDim, cfg.maxSeqLen);
            const r = await d.forward(cache, ids, feat, ids.map((_, i) => i));
            return [r.topkLogProbs, Float32Array.from(r.topkIds), r.hidden];
          } finally {
            await d.dispose();
          }
        };
        const a = await draftOut(fileW), b = await draftOut(memW);
        a.forEach((x, i) => assert.deepEqual(x, b[i]));
        // The fused round: target and head in one graph, the head's weights embedded.
        const rounds = async (w: Weights) => {
          const r = await RoundSession.create(cfg, w, head, headW, 3, { threads: 1 });
          await r.dispose();
        };
        await rounds(fileW);
        for (const n of linearNames(cfg)) if (fileW.get(n)!.file) assert.ok(!inMemory(fileW.get(n)!), `${n} was read into JS`);
        // Whole generations (fused round, greedy) from both: the same ids.
        const gen = async (model: Weights) => {
          const g = await loadGenerator({ model: { config: cfg, weights: model, source: 'hf' }, draft: { config: head, weights: headW }, tree: { topK: 1, maxDepth: 3, totalTokens: 3 }, fusedRound: true, threads: 1, keepWeights: true });
          try {
            return (await g.generate(ids, { maxNewTokens: 12, stopAtEos: false })).ids;
          } finally {
            await g.dispose();
          }
        };
        assert.deepEqual(await gen(loadHfCheckpoint(dir).weights), await gen(memW));
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }),
    { numRuns: 4 },
  );
});

test('toExternalModel: file regions and in-memory weights in one graph; past the embedding limit, all in memory; same outputs', T, async () => {
  const dir = tmp();
  try {
    const n = 2048; // 8 KiB of float32 each
    const a = new Float32Array(n).map((_, i) => i / 7), b = new Float32Array(n).map((_, i) => -i / 3);
    const file = join(dir, 'w.bin');
    writeFileSync(file, Buffer.concat([Buffer.alloc(12), Buffer.from(a.buffer)])); // at offset 12: not page-aligned
    const st = statSync(file);
    const region = { path: file, offset: 12, length: a.byteLength, fileSize: st.size, mtimeMs: st.mtimeMs };
    const build = () => {
      const g = new GraphBuilder('t');
      const x = g.input('x', 'float32', [n]);
      const A = g.initializer('A', { dtype: 'float32', dims: [n], data: a, file: region });
      const B = g.initializer('B', { dtype: 'float32', dims: [n], data: b });
      g.output(g.op('Add', [g.op('Mul', [x, A]), B]), 'y', 'float32', [n]);
      return g;
    };
    const mixed = build().toExternalModel({ opset: 23, irVersion: 11 });
    assert.equal(mixed.external.length, 0);
    assert.equal(mixed.files.length, 1);
    const fallback = build().toExternalModel({ opset: 23, irVersion: 11 }, 4096, 0);
    assert.equal(fallback.files.length, 0);
    assert.equal(fallback.external.length, 2);
    const x = new Float32Array(n).map((_, i) => (i % 5) - 2);
    const run = async (m: typeof mixed) => {
      const s = await createSession(m, { threads: 1 });
      try {
        return f32Data((await s.inner.run({ x: f32(x, [n]) })).y);
      } finally {
        await releaseSession(s);
      }
    };
    const want = x.map((v, i) => Math.fround(Math.fround(v * a[i]) + b[i]));
    assert.deepEqual(await run(mixed), want);
    assert.deepEqual(await run(fallback), want);
    // The file replaced after the graph was built: refused with the file named.
    utimesSync(file, new Date(), new Date(st.mtimeMs + 5000));
    await assert.rejects(() => run(mixed), (e: Error) => e instanceof FormatError && e.message.startsWith(file) && /changed since/.test(e.message));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a checkpoint rewritten after loading: reading a file-backed weight or building a session is refused, naming the file', T, async () => {
  const cfg = makeConfig({ vocabSize: 64, dim: 32, nHeads: 2, hiddenDim: 64, nLayers: 1, maxSeqLen: 16 });
  const dir = tmp();
  try {
    saveHfCheckpoint(dir, cfg, randomWeights(cfg, 1));
    const m = await loadModel(dir);
    saveHfCheckpoint(dir, cfg, randomWeights(cfg, 2)); // atomic replace: same size, new file
    const t = m.weights.get('model.layers.0.mlp.up_proj.weight')!;
    assert.ok(t.file);
    const file = join(dir, 'model.safetensors');
    assert.throws(() => t.data, (e: Error) => e instanceof FormatError && e.message.startsWith(file));
    await assert.rejects(() => TargetSession.create(cfg, m.weights, { threads: 1 }), (e: Error) => e instanceof FormatError && e.message.startsWith(file));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('F16 checkpoints and llama2.c files (Q/K permuted on load) are converted in memory, not file-backed', T, async () => {
  const cfg = makeConfig({ vocabSize: 64, dim: 32, nHeads: 2, hiddenDim: 64, nLayers: 1, maxSeqLen: 16 });
  const dir = tmp();
  try {
    saveHfCheckpoint(dir, cfg, randomWeights(cfg, 1), { dtype: 'F16' });
    const { weights } = loadHfCheckpoint(dir);
    for (const [name, t] of weights) assert.ok(!t.file && inMemory(t), name);
    const bin = join(dir, 'model.bin');
    writeLlama2c(bin, cfg, randomWeights(cfg, 1));
    for (const [name, t] of (await loadModel(bin)).weights) assert.ok(!t.file && inMemory(t), name);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an `eaglet quantize` checkpoint is file-backed too: packed weights and scales (Linear and embedding table) stay in model.safetensors, outputs bit-equal to the in-memory quantized target', T, async () => {
  await fc.assert(
    fc.asyncProperty(fc.constantFrom<4 | 8>(4, 8), fc.constantFrom(48, 96), fc.boolean(), fc.boolean(), fc.integer({ min: 0, max: 1000 }), async (bits, hiddenDim, tie, bias, seed) => {
      // dim 128: q_proj's packed bytes reach 4 KiB at either width; k/v and the MLP's stay below
      // at 4 bits (held in memory, embedded next to the file-backed ones).
      const cfg = makeConfig({ vocabSize: 40, dim: 128, nHeads: 4, nKvHeads: 1, hiddenDim, nLayers: 1, maxSeqLen: 32, tieEmbeddings: tie, attentionBias: bias });
      const dir = tmp();
      try {
        const mem = quantizeTarget(cfg, randomWeights(cfg, seed, 3), { bits, blockSize: 128 });
        saveQuantizedCheckpoint(dir, cfg, mem, toHfConfig(cfg));
        const { weights } = await loadModel(dir);
        const backed = quantizedNames(cfg).filter((n) => weights.get(n)!.quant?.packedFile);
        for (const n of quantizedNames(cfg)) {
          const q = weights.get(n)!.quant!;
          assert.equal(!!q.packedFile, q.n * (q.k / q.blockSize) * ((q.blockSize * q.bits) / 8) >= 4096, n);
        }
        assert.ok(backed.length > 0);
        const model = buildTargetModel(cfg, weights, defaultAttention(cfg.maxSeqLen, cfg.nKvHeads, cfg.headDim));
        assert.deepEqual(model.external, [], 'no in-memory external data next to the file');
        const ids = [5, 1, 7].map((i) => (i * 3 + seed) % cfg.vocabSize);
        const got = await targetRun(cfg, weights, ids);
        for (const n of backed) assert.ok(!inMemory(weights.get(n)!), `${n}: packed bytes were read into JS`);
        const want = await targetRun(cfg, mem, ids);
        got.forEach((g, i) => assert.deepEqual(g, want[i]));
        // Read when asked for: the same bytes as written.
        for (const n of backed) assert.deepEqual(Buffer.from(weights.get(n)!.quant!.packed), Buffer.from(mem.get(n)!.quant!.packed), n);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }),
    { numRuns: 4 },
  );
});

test('quantizing a file-backed checkpoint at load reads each weight in row chunks and keeps no fp32 copy; same bytes as quantizing values in memory', T, async () => {
  const cfg = makeConfig({ vocabSize: 80, dim: 64, nHeads: 4, hiddenDim: 96, nLayers: 1, maxSeqLen: 16 });
  const dir = tmp();
  try {
    saveHfCheckpoint(dir, cfg, randomWeights(cfg, 4, 3));
    const fileW = loadHfCheckpoint(dir).weights, memW = inMemoryWeights(dir);
    // Chunks of 3 rows (and a short last chunk): the rows arrive in order, equal to the values.
    const t = fileW.get('lm_head.weight')!, seen: number[] = [];
    forEachRowChunk(t, (rows, r0) => {
      seen.push(r0);
      assert.deepEqual(rows, memW.get('lm_head.weight')!.data.subarray(r0 * 64, r0 * 64 + rows.length));
    }, 3 * 64 * 4);
    assert.deepEqual(seen, Array.from({ length: Math.ceil(80 / 3) }, (_, i) => i * 3));
    for (const bits of [4, 8] as const) {
      const a = quantizeLinears(cfg, fileW, { bits, blockSize: 128 }), b = quantizeLinears(cfg, memW, { bits, blockSize: 128 });
      for (const n of linearNames(cfg)) {
        assert.ok(!inMemory(fileW.get(n)!), `${n}: its fp32 values were kept`);
        assert.deepEqual(Buffer.from(a.get(n)!.quant!.packed), Buffer.from(b.get(n)!.quant!.packed), n);
        assert.deepEqual(a.get(n)!.quant!.scales, b.get(n)!.quant!.scales, n);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
