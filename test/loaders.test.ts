/** Round trips of every checkpoint format, and the RoPE convention of the llama2.c conversion. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../src/io/dtype.ts';
import { readSafetensors, writeSafetensors, type FloatDtype } from '../src/io/safetensors.ts';
import { loadHfCheckpoint, parseHfConfig, saveHfCheckpoint, toHfConfig } from '../src/io/hf.ts';
import { readLlama2c, writeLlama2c } from '../src/io/llama2c.ts';
import { halvesToInterleaved, interleavedToHalves } from '../src/io/rope-permute.ts';
import { loadModel } from '../src/load-model.ts';
import { writeLlama2cTokenizer } from '../src/tokenizer/llama2c.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import type { ModelConfig } from '../src/model/config.ts';
import { layerKey, type Tensor, type Weights } from '../src/model/weights.ts';
import { Rng } from '../src/util/rng.ts';

const tmp = mkdtempSync(join(tmpdir(), 'eaglet-loaders-'));
test.after(() => rmSync(tmp, { recursive: true, force: true }));
let fileNo = 0;
const tmpPath = (name: string) => join(tmp, `${fileNo++}-${name}`);

function assertWeightsEqual(a: Weights, b: Weights, tol = 0): void {
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
  for (const [k, t] of a) {
    const u = b.get(k)!;
    assert.deepEqual(u.shape, t.shape, k);
    for (let i = 0; i < t.data.length; i++) {
      if (Math.abs(t.data[i] - u.data[i]) > tol * Math.max(1, Math.abs(t.data[i]))) assert.fail(`${k}[${i}]: ${t.data[i]} vs ${u.data[i]}`);
    }
  }
}

/** Small Llama configs: GQA or not, tied or not, biases or not. */
const configArb = fc
  .record({
    nKvHeads: fc.constantFrom(1, 2),
    group: fc.constantFrom(1, 2),
    headDim: fc.constantFrom(2, 4, 6),
    nLayers: fc.integer({ min: 1, max: 2 }),
    vocabSize: fc.integer({ min: 3, max: 11 }),
    hiddenDim: fc.integer({ min: 1, max: 9 }),
    maxSeqLen: fc.integer({ min: 1, max: 8 }),
    tieEmbeddings: fc.boolean(),
    attentionBias: fc.boolean(),
  })
  .map(({ nKvHeads, group, headDim, ...r }) => makeConfig({ ...r, nHeads: nKvHeads * group, nKvHeads, headDim, dim: nKvHeads * group * headDim, eosTokenIds: [2], bosTokenId: 1 }));

// --- properties ---------------------------------------------------------------------------

test('F16 and BF16: every finite bit pattern survives half -> f32 -> half', () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  for (const [toF32, toHalf, isNaN] of [
    [f16ToF32, f32ToF16, (h: number) => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0],
    [bf16ToF32, f32ToBf16, (h: number) => (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0],
  ] as const) {
    const f = new Float32Array(65536), back = new Uint16Array(65536);
    toF32(all, f);
    toHalf(f, back);
    for (let h = 0; h < 65536; h++) {
      if (isNaN(h)) assert.ok(Number.isNaN(f[h]) && isNaN(back[h]), `NaN pattern ${h}`);
      else assert.equal(back[h], h, `pattern ${h.toString(16)} -> ${f[h]} -> ${back[h].toString(16)}`);
    }
  }
});

test('F16 and BF16 rounding: relative error within half an ulp of the format', () => {
  const f32 = (x: number) => Math.fround(x);
  fc.assert(
    fc.property(fc.float32Array({ noNaN: true, noDefaultInfinity: true, min: f32(-60000), max: f32(60000), minLength: 1 }), (x) => {
      const h = new Uint16Array(x.length), back = new Float32Array(x.length);
      for (const [toHalf, toF32, rel, abs] of [
        [f32ToF16, f16ToF32, 2 ** -11, 2 ** -25],
        [f32ToBf16, bf16ToF32, 2 ** -8, 2 ** -133],
      ] as const) {
        toHalf(x, h);
        toF32(h, back);
        for (let i = 0; i < x.length; i++) assert.ok(Math.abs(back[i] - x[i]) <= rel * Math.abs(x[i]) + abs, `${x[i]} -> ${back[i]}`);
      }
    }),
    { numRuns: 200 },
  );
});

test('safetensors write/read round trip (F32 exact, F16/BF16 within their precision)', () => {
  const tensorArb = fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }).chain((shape) => {
    const n = shape.reduce((a, b) => a * b, 1);
    return fc.float32Array({ noNaN: true, noDefaultInfinity: true, min: -1000, max: 1000, minLength: n, maxLength: n }).map((data): Tensor => ({ shape, data }));
  });
  fc.assert(
    fc.property(
      fc.uniqueArray(fc.tuple(fc.string({ minLength: 1, maxLength: 12, unit: 'grapheme' }), tensorArb), { selector: ([k]) => k, maxLength: 5 }),
      fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 8 }), { noNullPrototype: true }),
      fc.constantFrom<FloatDtype>('F32', 'F16', 'BF16'),
      (entries, metadata, dtype) => {
        const tensors = new Map(entries.filter(([k]) => k !== '__metadata__'));
        const path = tmpPath('t.safetensors');
        writeSafetensors(path, tensors, metadata, { dtype });
        const back = readSafetensors(path);
        assert.deepEqual(back.metadata, Object.keys(metadata).length ? metadata : {});
        assertWeightsEqual(tensors, back.tensors, { F32: 0, F16: 2 ** -11, BF16: 2 ** -8 }[dtype]);
        rmSync(path);
      },
    ),
    { numRuns: 60 },
  );
});

test('RoPE row permutation: unpermute . permute = identity, both ways', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 5 }), fc.integer(), (nHeads, halfHd, cols, seed) => {
      const rng = new Rng(seed);
      const w = new Float32Array(nHeads * 2 * halfHd * cols).map(() => rng.normal());
      assert.deepEqual(halvesToInterleaved(interleavedToHalves(w, nHeads, cols), nHeads, cols), w);
      assert.deepEqual(interleavedToHalves(halvesToInterleaved(w, nHeads, cols), nHeads, cols), w);
    }),
  );
});

/** llama2.c's RoPE: rotate pairs (2i, 2i+1) of each head by pos * theta^(-2i/hd). */
function ropeInterleaved(v: Float64Array, hd: number, pos: number): Float64Array {
  const out = v.slice();
  for (let h = 0; h < v.length; h += hd) {
    for (let i = 0; i < hd / 2; i++) {
      const a = pos * 10000 ** (-(2 * i) / hd), c = Math.cos(a), s = Math.sin(a);
      const x = v[h + 2 * i], y = v[h + 2 * i + 1];
      out[h + 2 * i] = x * c - y * s;
      out[h + 2 * i + 1] = x * s + y * c;
    }
  }
  return out;
}

/** HF Llama's RoPE: rotate halves (i, i + hd/2) of each head by pos * theta^(-2i/hd). */
function ropeHalves(v: Float64Array, hd: number, pos: number): Float64Array {
  const out = v.slice(), half = hd / 2;
  for (let h = 0; h < v.length; h += hd) {
    for (let i = 0; i < half; i++) {
      const a = pos * 10000 ** (-(2 * i) / hd), c = Math.cos(a), s = Math.sin(a);
      const x = v[h + i], y = v[h + i + half];
      out[h + i] = x * c - y * s;
      out[h + i + half] = x * s + y * c;
    }
  }
  return out;
}

function matVec(w: Float32Array, x: Float64Array): Float64Array {
  const out = new Float64Array(w.length / x.length);
  for (let r = 0; r < out.length; r++) for (let c = 0; c < x.length; c++) out[r] += w[r * x.length + c] * x[c];
  return out;
}

/** Per-head attention scores q_h . k_h after RoPE at positions (m, n). */
function scores(q: Float64Array, k: Float64Array, hd: number): number[] {
  const s: number[] = [];
  for (let h = 0; h < q.length; h += hd) s.push(q.subarray(h, h + hd).reduce((a, x, i) => a + x * k[h + i], 0));
  return s;
}

test('llama2.c file read as HF: halves RoPE on loaded q/k == interleaved RoPE on the raw file rows', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 3 }), fc.constantFrom(2, 4, 8), fc.integer({ min: 0, max: 7 }), fc.integer({ min: 0, max: 7 }), fc.integer(), (nHeads, hd, m, n, seed) => {
      // Build the file by hand (header + raw floats), independent of writeLlama2c.
      const dim = nHeads * hd, hidden = 3, vocab = 5, seqLen = 8, rng = new Rng(seed);
      const floats = vocab * dim + dim + 4 * dim * dim + dim + 3 * dim * hidden + dim + seqLen * hd;
      const body = new Float32Array(floats).map(() => rng.normal());
      const path = tmpPath('hand.bin');
      writeFileSync(path, Buffer.concat([Buffer.from(Int32Array.of(dim, hidden, 1, nHeads, nHeads, vocab, seqLen).buffer), Buffer.from(body.buffer)]));
      const rawWq = body.subarray(vocab * dim + dim, vocab * dim + dim + dim * dim);
      const rawWk = body.subarray(vocab * dim + dim + dim * dim, vocab * dim + dim + 2 * dim * dim);
      const { weights } = readLlama2c(path);
      const x = new Float64Array(dim).map(() => rng.normal()), y = new Float64Array(dim).map(() => rng.normal());
      const ref = scores(ropeInterleaved(matVec(rawWq, x), hd, m), ropeInterleaved(matVec(rawWk, y), hd, n), hd);
      const got = scores(
        ropeHalves(matVec(weights.get(layerKey(0, 'self_attn.q_proj.weight'))!.data, x), hd, m),
        ropeHalves(matVec(weights.get(layerKey(0, 'self_attn.k_proj.weight'))!.data, y), hd, n),
        hd,
      );
      got.forEach((g, i) => assert.ok(Math.abs(g - ref[i]) < 1e-9 * (1 + Math.abs(ref[i])), `head ${i}: ${g} vs ${ref[i]}`));
    }),
    { numRuns: 40 },
  );
});

test('HF checkpoint save/load round trip (tied, untied, GQA, biases)', () => {
  fc.assert(
    fc.property(configArb, fc.integer(), (cfg, seed) => {
      const dir = tmpPath('hf');
      const w = randomWeights(cfg, seed);
      saveHfCheckpoint(dir, cfg, w);
      const back = loadHfCheckpoint(dir);
      assert.deepEqual(back.config, cfg);
      assertWeightsEqual(w, back.weights);
      rmSync(dir, { recursive: true });
    }),
    { numRuns: 25 },
  );
});

test('llama2.c write/read round trip (shared and separate classifier, GQA)', () => {
  fc.assert(
    fc.property(
      configArb.map((c) => ({ ...c, attentionBias: false })),
      fc.integer(),
      (cfg, seed) => {
        const path = tmpPath('model.bin');
        const w = randomWeights(cfg, seed);
        writeLlama2c(path, cfg, w);
        const back = readLlama2c(path);
        // BOS ends a sequence too, as in llama2.c's run.c.
        assert.deepEqual(back.config, { ...cfg, normEps: 1e-5, ropeTheta: 10000, bosTokenId: 1, eosTokenIds: [2, 1] });
        assertWeightsEqual(w, back.weights);
        rmSync(path);
      },
    ),
    { numRuns: 25 },
  );
});

// --- examples -----------------------------------------------------------------------------

const tiny = (p: Partial<ModelConfig> = {}) => makeConfig({ vocabSize: 7, dim: 8, nLayers: 2, nHeads: 2, hiddenDim: 6, eosTokenIds: [2], bosTokenId: 1, ...p });

test('HF checkpoint stored as F16 / BF16 loads within precision', () => {
  for (const [dtype, tol] of [['F16', 2 ** -11], ['BF16', 2 ** -8]] as const) {
    const dir = tmpPath(`hf-${dtype}`), cfg = tiny(), w = randomWeights(cfg, 3);
    saveHfCheckpoint(dir, cfg, w, { dtype });
    assertWeightsEqual(w, loadHfCheckpoint(dir).weights, tol);
  }
});

test('sharded checkpoint via model.safetensors.index.json; extra tensors are ignored', () => {
  const cfg = tiny({ tieEmbeddings: true }), w = randomWeights(cfg, 5), dir = tmpPath('sharded');
  saveHfCheckpoint(dir, cfg, w);
  rmSync(join(dir, 'model.safetensors'));
  const names = [...w.keys()], half = Math.ceil(names.length / 2);
  const shards = [names.slice(0, half), names.slice(half)];
  const weightMap: Record<string, string> = {};
  shards.forEach((list, i) => {
    const file = `model-0000${i + 1}-of-00002.safetensors`;
    const tensors = new Map(list.map((k) => [k, w.get(k)!]));
    // A tied checkpoint may still carry lm_head (and rotary buffers): not needed, not loaded.
    if (i === 1) tensors.set('lm_head.weight', w.get('model.embed_tokens.weight')!);
    writeSafetensors(join(dir, file), tensors);
    for (const k of tensors.keys()) weightMap[k] = file;
  });
  writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  const back = loadHfCheckpoint(dir);
  assert.equal(back.weights.has('lm_head.weight'), false);
  assertWeightsEqual(w, back.weights);
});

test('config.json of Llama 3, Mistral and Qwen2', () => {
  const base = { hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, max_position_embeddings: 512, rms_norm_eps: 1e-6, vocab_size: 100 };
  const llama3 = parseHfConfig({ ...base, model_type: 'llama', architectures: ['LlamaForCausalLM'], num_key_value_heads: 2, rope_theta: 500000, bos_token_id: 98, eos_token_id: [97, 99], rope_scaling: null }, 'config.json');
  assert.deepEqual([llama3.nKvHeads, llama3.headDim, llama3.ropeTheta, llama3.bosTokenId, llama3.eosTokenIds, llama3.attentionBias], [2, 16, 500000, 98, [97, 99], false]);
  const mistral = parseHfConfig({ ...base, model_type: 'mistral', head_dim: null, sliding_window: 256 }, 'config.json');
  assert.deepEqual([mistral.nKvHeads, mistral.headDim, mistral.maxSeqLen, mistral.ropeTheta, mistral.eosTokenIds], [4, 16, 256, 10000, []]);
  const qwen2 = parseHfConfig({ ...base, model_type: 'qwen2', tie_word_embeddings: true, use_sliding_window: false, sliding_window: 128, eos_token_id: 5 }, 'config.json');
  assert.deepEqual([qwen2.attentionBias, qwen2.tieEmbeddings, qwen2.maxSeqLen, qwen2.eosTokenIds], [true, true, 512, [5]]);
  assert.deepEqual(parseHfConfig(toHfConfig(qwen2), 'x'), qwen2);
});

test('config.json of Llama 3.1 (rope_scaling llama3) and Qwen3 (q/k norms) round-trip', () => {
  const base = { hidden_size: 64, intermediate_size: 128, num_hidden_layers: 2, num_attention_heads: 4, max_position_embeddings: 512, rms_norm_eps: 1e-6, vocab_size: 100 };
  const scaling = { rope_type: 'llama3', factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 };
  const llama31 = parseHfConfig({ ...base, model_type: 'llama', architectures: ['LlamaForCausalLM'], rope_theta: 500000, rope_scaling: scaling, tie_word_embeddings: true }, 'config.json');
  assert.deepEqual(llama31.ropeScaling, { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 });
  assert.equal(llama31.qkNorm, undefined);
  assert.deepEqual(parseHfConfig(toHfConfig(llama31), 'x'), llama31);
  const qwen3 = parseHfConfig({ ...base, model_type: 'qwen3', architectures: ['Qwen3ForCausalLM'], head_dim: 32, attention_bias: false, tie_word_embeddings: true, use_sliding_window: false, sliding_window: null }, 'config.json');
  assert.deepEqual([qwen3.qkNorm, qwen3.attentionBias, qwen3.headDim, qwen3.tieEmbeddings], [true, false, 32, true]);
  assert.deepEqual(parseHfConfig(toHfConfig(qwen3), 'x'), qwen3);
  assert.deepEqual(parseHfConfig({ ...base, model_type: 'llama', rope_scaling: { rope_type: 'default' } }, 'x').ropeScaling, undefined);
});

test('a Qwen3 directory loads its q/k norms; a missing one is named', () => {
  const cfg = tiny({ qkNorm: true, tieEmbeddings: true }), w = randomWeights(cfg, 5), dir = tmpPath('qwen3');
  saveHfCheckpoint(dir, cfg, w);
  assert.equal(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')).model_type, 'qwen3');
  const back = loadHfCheckpoint(dir);
  assert.equal(back.config.qkNorm, true);
  assert.ok(back.weights.has('model.layers.0.self_attn.k_norm.weight'));
  assertWeightsEqual(w, back.weights);
  w.delete('model.layers.0.self_attn.q_norm.weight');
  writeSafetensors(join(dir, 'model.safetensors'), w);
  assert.throws(() => loadHfCheckpoint(dir), /missing tensor model.layers.0.self_attn.q_norm.weight/);
});

test('a Qwen2 directory loads its q/k/v biases', () => {
  const cfg = tiny({ attentionBias: true, tieEmbeddings: true }), w = randomWeights(cfg, 4), dir = tmpPath('qwen2');
  saveHfCheckpoint(dir, cfg, w);
  const { attention_bias: _, ...rest } = toHfConfig(cfg);
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...rest, model_type: 'qwen2', architectures: ['Qwen2ForCausalLM'] }));
  const back = loadHfCheckpoint(dir);
  assert.equal(back.config.attentionBias, true);
  assertWeightsEqual(w, back.weights);
});

test('generation_config.json adds its eos ids', () => {
  const cfg = tiny(), dir = tmpPath('gen');
  saveHfCheckpoint(dir, cfg, randomWeights(cfg, 1));
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [2, 6] }));
  assert.deepEqual(loadHfCheckpoint(dir).config.eosTokenIds, [2, 6]);
});

test('loadModel: HF directory and llama2.c .bin with tokenizer.bin beside it', async () => {
  const cfg = tiny(), w = randomWeights(cfg, 9), dir = tmpPath('lm');
  saveHfCheckpoint(dir, cfg, w);
  const hf = await loadModel(dir);
  assert.equal(hf.source, 'hf');
  assert.equal(hf.tokenizer, undefined);
  assertWeightsEqual(w, hf.weights);

  const bin = join(dir, 'stories.bin');
  writeLlama2c(bin, cfg, w);
  const pieces = ['<unk>', '\n<s>\n', '\n</s>\n', ' ', 'a', 'b', ' a'].map((s, i) => ({ bytes: new TextEncoder().encode(s), score: -i }));
  writeLlama2cTokenizer(join(dir, 'tokenizer.bin'), pieces);
  const l2 = await loadModel(bin);
  assert.equal(l2.source, 'llama2c');
  assertWeightsEqual(w, l2.weights);
  assert.equal(l2.tokenizer?.decode(l2.tokenizer.encode('ab a')), 'ab a');
  assert.deepEqual(readFileSync(bin).subarray(0, 28), Buffer.from(Int32Array.of(8, 6, 2, 2, 2, -7, 256).buffer));
});
