/**
 * The peer benchmark's GGUF writer (scripts/peer/gguf.ts, llama-gguf.ts), checked without
 * llama.cpp: hand-computed Q8_0 / Q4_0 block bytes; every block dequantizes within its bound;
 * a written file parses back with the small reader below (written from the format description,
 * sharing no code with the writer): header, metadata, tensor infos, alignment, and the tensor
 * values; and the q/k row permutation gives interleaved-pair RoPE the same attention scores that
 * rotate-halves RoPE gives the HF weights (what llama.cpp's converter permutes for).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { halvesToInterleaved, interleavedToHalves } from '../src/io/rope-permute.ts';
import type { ModelConfig } from '../src/model/config.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import { Rng } from '../src/util/rng.ts';
import { encodeTensor, quantizeBlockQ4_0, quantizeBlockQ8_0 } from '../scripts/peer/gguf.ts';
import { saveLlamaGguf } from '../scripts/peer/llama-gguf.ts';

// ---- an independent reader: GGUF v3 as the format describes it ----

/** fp16 bits -> number, from the IEEE 754 definition. */
function half(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
  return e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
}

/** ggml block types: id -> [values per block, bytes per block, dequantize one block]. */
const BLOCKS: Record<number, { name: string; values: number; bytes: number; dequant: (b: Uint8Array) => number[] }> = {
  0: { name: 'F32', values: 1, bytes: 4, dequant: (b) => [new DataView(b.buffer, b.byteOffset, 4).getFloat32(0, true)] },
  8: {
    name: 'Q8_0', values: 32, bytes: 34,
    dequant: (b) => Array.from({ length: 32 }, (_, j) => half(b[0] | (b[1] << 8)) * ((b[2 + j] << 24) >> 24)),
  },
  2: {
    name: 'Q4_0', values: 32, bytes: 18,
    dequant: (b) => Array.from({ length: 32 }, (_, j) => half(b[0] | (b[1] << 8)) * ((j < 16 ? b[2 + j] & 15 : b[2 + j - 16] >> 4) - 8)),
  },
};

interface ReadTensor { name: string; ne: number[]; type: number; offset: number }
interface ReadGguf { version: number; meta: Map<string, unknown>; tensors: ReadTensor[]; dataStart: number; bytes: Uint8Array }

function readGguf(bytes: Uint8Array): ReadGguf {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let p = 0;
  const u32 = () => ((p += 4), v.getUint32(p - 4, true));
  const u64 = () => ((p += 8), Number(v.getBigUint64(p - 8, true)));
  const string = () => { const n = u64(); p += n; return new TextDecoder().decode(bytes.subarray(p - n, p)); };
  const scalar = (type: number): unknown => {
    switch (type) {
      case 0: return bytes[p++];
      case 4: return u32();
      case 5: return ((p += 4), v.getInt32(p - 4, true));
      case 6: return ((p += 4), v.getFloat32(p - 4, true));
      case 7: return bytes[p++] !== 0;
      case 8: return string();
      case 10: return u64();
      case 9: { const t = u32(), n = u64(); return Array.from({ length: n }, () => scalar(t)); }
      default: throw new Error(`unexpected value type ${type}`);
    }
  };
  assert.equal(new TextDecoder().decode(bytes.subarray(0, 4)), 'GGUF');
  p = 4;
  const version = u32(), nTensors = u64(), nKv = u64();
  const meta = new Map<string, unknown>();
  for (let i = 0; i < nKv; i++) { const k = string(); meta.set(k, scalar(u32())); }
  const tensors: ReadTensor[] = [];
  for (let i = 0; i < nTensors; i++) {
    const name = string(), nd = u32();
    const ne = Array.from({ length: nd }, () => u64());
    tensors.push({ name, ne, type: u32(), offset: u64() });
  }
  const align = (meta.get('general.alignment') as number | undefined) ?? 32;
  return { version, meta, tensors, dataStart: Math.ceil(p / align) * align, bytes };
}

/** A tensor's values, dequantized, in file order (rows of ne[0]). */
function tensorValues(g: ReadGguf, t: ReadTensor): Float32Array {
  const b = BLOCKS[t.type], count = t.ne.reduce((a, c) => a * c, 1);
  const out = new Float32Array(count), start = g.dataStart + t.offset;
  for (let i = 0; i < count / b.values; i++) out.set(b.dequant(g.bytes.subarray(start + i * b.bytes, start + (i + 1) * b.bytes)), i * b.values);
  return out;
}

// ---- block formats ----

test('Q8_0 and Q4_0 blocks match hand-computed bytes', () => {
  // Q8_0: amax 127 -> d = 1 (fp16 0x3C00), q = round(x), halves away from zero.
  const x8 = Float32Array.from({ length: 32 }, (_, j) => j - 16);
  x8[0] = 127; x8[1] = -2.5; x8[2] = 2.5; x8[3] = -0.4;
  const b8 = new Uint8Array(34);
  quantizeBlockQ8_0(x8, b8);
  assert.deepEqual([...b8.subarray(0, 6)], [0x00, 0x3c, 127, 0xfd /* -3 */, 3, 0]);
  assert.deepEqual([...b8.subarray(6)], Array.from({ length: 28 }, (_, i) => (i + 4 - 16) & 0xff));
  // Q4_0: the largest magnitude is -8 -> d = -8 / -8 = 1; q = min(15, trunc(x + 8.5)).
  // Values 0..15 are -8..7 (q = 0..15), values 16..31 are 7.4, 6, ..., with the last one +8
  // (the clamped side: q would be 16, stored 15).
  const x4 = new Float32Array(32);
  for (let j = 0; j < 16; j++) x4[j] = j - 8;
  for (let j = 0; j < 16; j++) x4[16 + j] = 7 - j;
  x4[16] = 7.4; x4[31] = 8;
  const b4 = new Uint8Array(18);
  quantizeBlockQ4_0(x4, b4);
  assert.deepEqual([b4[0], b4[1]], [0x00, 0x3c]);
  const hi = [15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 15];
  assert.deepEqual([...b4.subarray(2)], hi.map((h, j) => j | (h << 4)));
  // A positive largest value gives a negative d: 16 -> d = -2 (fp16 0xC000); 16 / -2 + 8.5 = 0.5 -> q 0,
  // -16 -> 16.5 -> 15 (clamped), 3 -> 7, and the zeros of the high half -> 8.
  const y = new Float32Array(32); y[0] = 16; y[1] = -16; y[2] = 3;
  quantizeBlockQ4_0(y, b4);
  assert.deepEqual([...b4.subarray(0, 5)], [0x00, 0xc0, 0 | (8 << 4), 15 | (8 << 4), 7 | (8 << 4)]);
});

test('property: every Q8_0 / Q4_0 block dequantizes within its bound', () => {
  fc.assert(
    fc.property(fc.nat(), fc.constantFrom(1e-3, 1, 50), fc.double({ min: 0, max: 0.5, noNaN: true }), (seed, scale, zeros) => {
      const rng = new Rng(seed), n = 32 * 8;
      const x = Float32Array.from({ length: n }, () => (rng.next() < zeros ? 0 : scale * rng.normal()));
      for (const [type, id] of [['Q8_0', 8], ['Q4_0', 2]] as const) {
        const bytes = encodeTensor(x, type), b = BLOCKS[id];
        assert.equal(bytes.length, (n / 32) * b.bytes);
        for (let k = 0; k < n / 32; k++) {
          const block = bytes.subarray(k * b.bytes, (k + 1) * b.bytes), back = b.dequant(block);
          const xs = x.subarray(k * 32, k * 32 + 32);
          const amax = Math.max(...xs.map(Math.abs));
          // One step is d = amax/127 (Q8_0) or amax/8 (Q4_0); round-to-nearest is within half a
          // step, plus d's fp16 rounding (2^-11 relative) times the largest |q|. Q4_0's range is
          // [-8, 7] steps: the side opposite the largest value clamps at +7 (error up to one step).
          const [step, qmax] = type === 'Q8_0' ? [amax / 127, 127] : [amax / 8, 8];
          // fp16 keeps 11 significant bits; below 2^-14 (subnormal) its spacing is 2^-24.
          const d16 = Math.abs(half(block[0] | (block[1] << 8))), dErr = Math.abs(d16 - step);
          assert.ok(dErr <= Math.max(step * 2 ** -11, 2 ** -25) * (1 + 1e-6), `${type} block ${k}: scale ${d16} for step ${step}`);
          for (let j = 0; j < 32; j++) {
            const clamped = type === 'Q4_0' && Math.abs(xs[j]) > 7.5 * step && Math.sign(xs[j]) !== Math.sign(xs[xs.findIndex((v) => Math.abs(v) === amax)]);
            const bound = (step * (clamped ? 1 : 0.5) + qmax * dErr) * (1 + 1e-6) + 1e-30;
            assert.ok(Math.abs(back[j] - xs[j]) <= bound, `${type} block ${k} value ${j}: ${xs[j]} -> ${back[j]} (bound ${bound})`);
          }
        }
      }
    }),
    { numRuns: 40 },
  );
});

// ---- a Llama written as GGUF ----

const LAYER = ['attn_norm', 'attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_norm', 'ffn_gate', 'ffn_up', 'ffn_down'];

function checkFile(cfg: ModelConfig, type: 'F32' | 'Q8_0' | 'Q4_0', typeId: number): void {
  const dir = mkdtempSync(join(tmpdir(), 'eaglet-gguf-'));
  try {
    const w = randomWeights(cfg, 3);
    const path = join(dir, 'm.gguf');
    saveLlamaGguf(path, cfg, w, type);
    const g = readGguf(new Uint8Array(readFileSync(path)));
    assert.equal(g.version, 3);
    const m = g.meta;
    assert.equal(m.get('general.architecture'), 'llama');
    assert.equal(m.get('general.file_type'), { F32: 0, Q8_0: 7, Q4_0: 2 }[type]);
    const hp: Record<string, number> = {
      context_length: cfg.maxSeqLen, embedding_length: cfg.dim, block_count: cfg.nLayers, feed_forward_length: cfg.hiddenDim,
      'attention.head_count': cfg.nHeads, 'attention.head_count_kv': cfg.nKvHeads, 'rope.dimension_count': cfg.headDim, vocab_size: cfg.vocabSize,
    };
    for (const [k, v] of Object.entries(hp)) assert.equal(m.get(`llama.${k}`), v, `llama.${k}`);
    assert.equal(m.get('llama.attention.layer_norm_rms_epsilon'), Math.fround(cfg.normEps));
    assert.equal(m.get('llama.rope.freq_base'), Math.fround(cfg.ropeTheta));
    assert.equal(m.get('llama.attention.key_length'), cfg.headDim * cfg.nHeads === cfg.dim ? undefined : cfg.headDim);
    assert.equal(m.get('tokenizer.ggml.model'), 'llama');
    const tokens = m.get('tokenizer.ggml.tokens') as string[];
    assert.equal(tokens.length, cfg.vocabSize);
    assert.equal(new Set(tokens).size, cfg.vocabSize, 'token strings are unique');
    assert.deepEqual([tokens[0], tokens[1], tokens[2], tokens[3], tokens[258]], ['<unk>', '<s>', '</s>', '<0x00>', '<0xFF>']);
    assert.equal((m.get('tokenizer.ggml.scores') as number[]).length, cfg.vocabSize);
    assert.equal((m.get('tokenizer.ggml.token_type') as number[]).length, cfg.vocabSize);

    const names = ['token_embd.weight', ...Array.from({ length: cfg.nLayers }, (_, i) => LAYER.map((n) => `blk.${i}.${n}.weight`)).flat(), 'output_norm.weight', 'output.weight'];
    assert.deepEqual(g.tensors.map((t) => t.name), names);
    let end = 0;
    for (const t of g.tensors) {
      assert.equal(t.offset % 32, 0, `${t.name} offset ${t.offset} is aligned`);
      assert.ok(t.offset >= end, `${t.name} does not overlap the previous tensor`);
      const b = BLOCKS[t.type], count = t.ne.reduce((a, c) => a * c, 1);
      assert.equal(t.type, t.ne.length === 1 ? 0 : typeId, `${t.name} type`);
      end = t.offset + (count / b.values) * b.bytes;
    }
    assert.equal(g.bytes.length, g.dataStart + Math.ceil(end / 32) * 32, 'file ends after the last tensor, padded');

    const hfOf = (name: string) => {
      if (name === 'token_embd.weight') return 'model.embed_tokens.weight';
      if (name === 'output_norm.weight') return 'model.norm.weight';
      if (name === 'output.weight') return 'lm_head.weight';
      const [, i, n] = name.match(/^blk\.(\d+)\.(\w+)\.weight$/)!;
      const hf = ['input_layernorm', 'self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'post_attention_layernorm', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'][LAYER.indexOf(n)];
      return `model.layers.${i}.${hf}.weight`;
    };
    for (const t of g.tensors) {
      const src = w.get(hfOf(t.name))!;
      assert.deepEqual(t.ne, [...src.shape].reverse(), `${t.name} ne`);
      let got = tensorValues(g, t);
      // q/k rows go back to the HF layout with the inverse of the converter's permutation.
      const heads = t.name.endsWith('attn_q.weight') ? cfg.nHeads : t.name.endsWith('attn_k.weight') ? cfg.nKvHeads : 0;
      if (heads) got = interleavedToHalves(got, heads, src.shape[1]);
      if (t.type === 0) {
        assert.deepEqual(got, src.data, `${t.name} values`);
        continue;
      }
      // Blocks run along rows and the permutation moves whole rows, so blocks compare one to one.
      const stepOf = typeId === 8 ? 1 / 127 : 1 / 8;
      let worst = 0;
      for (let r = 0; r < got.length / 32; r++) {
        const xs = src.data.subarray(r * 32, r * 32 + 32), ys = got.subarray(r * 32, r * 32 + 32);
        const amax = Math.max(...xs.map(Math.abs));
        for (let j = 0; j < 32; j++) worst = Math.max(worst, Math.abs(xs[j] - ys[j]) / (amax * stepOf));
      }
      assert.ok(worst <= 1.01, `${t.name}: worst error ${worst} steps`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('a Llama written as GGUF F32 / Q8_0 / Q4_0 parses back: metadata, names, layout, values', () => {
  const gqa = makeConfig({ vocabSize: 300, dim: 64, nLayers: 2, nHeads: 4, nKvHeads: 2, hiddenDim: 96, maxSeqLen: 64 });
  checkFile(gqa, 'F32', 0);
  checkFile(gqa, 'Q8_0', 8);
  checkFile(gqa, 'Q4_0', 2);
  // Head width not dim / heads: key_length and value_length are written.
  checkFile(makeConfig({ vocabSize: 260, dim: 64, nLayers: 1, nHeads: 2, nKvHeads: 1, headDim: 16, hiddenDim: 64, maxSeqLen: 32 }), 'Q8_0', 8);
});

test('property: the q/k permutation gives interleaved-pair RoPE the attention scores of rotate-halves RoPE', () => {
  // llama.cpp's "llama" RoPE rotates pairs (2i, 2i+1) of each head; HF rotates (i, i + hd/2); pair
  // i turns by pos * theta^(-2i/hd) in both. Scores q.k per head must agree for every position pair.
  const rope = (v: Float64Array, hd: number, pos: number, interleaved: boolean) => {
    const out = Float64Array.from(v);
    for (let i = 0; i < hd / 2; i++) {
      const a = pos * 10000 ** (-2 * i / hd), c = Math.cos(a), s = Math.sin(a);
      const [x, y] = interleaved ? [2 * i, 2 * i + 1] : [i, i + hd / 2];
      out[x] = v[x] * c - v[y] * s;
      out[y] = v[x] * s + v[y] * c;
    }
    return out;
  };
  const project = (w: Float32Array, x: Float64Array, rows: number) => Float64Array.from({ length: rows }, (_, r) => x.reduce((acc, xv, c) => acc + xv * w[r * x.length + c], 0));
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 3 }), fc.constantFrom(2, 4, 8), fc.constantFrom(4, 8), fc.nat(40), fc.nat(40), fc.nat(), (nHeads, hd, cols, p1, p2, seed) => {
      const rng = new Rng(seed), rows = nHeads * hd;
      const wq = Float32Array.from({ length: rows * cols }, () => rng.normal());
      const wk = Float32Array.from({ length: rows * cols }, () => rng.normal());
      const x1 = Float64Array.from({ length: cols }, () => rng.normal()), x2 = Float64Array.from({ length: cols }, () => rng.normal());
      const written = (w: Float32Array) => encodeTensor(w, 'F32'); // the F32 bytes the writer stores
      const asF32 = (b: Uint8Array) => new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
      const wqI = asF32(written(halvesToInterleaved(wq, nHeads, cols))), wkI = asF32(written(halvesToInterleaved(wk, nHeads, cols)));
      const qH = project(wq, x1, rows), kH = project(wk, x2, rows), qI = project(wqI, x1, rows), kI = project(wkI, x2, rows);
      let unpermutedDiffers = false;
      for (let h = 0; h < nHeads; h++) {
        const head = (v: Float64Array) => v.subarray(h * hd, (h + 1) * hd);
        const dot = (a: Float64Array, b: Float64Array) => a.reduce((s, av, i) => s + av * b[i], 0);
        const sH = dot(rope(head(qH), hd, p1, false), rope(head(kH), hd, p2, false));
        const sI = dot(rope(head(qI), hd, p1, true), rope(head(kI), hd, p2, true));
        assert.ok(Math.abs(sH - sI) <= 1e-9 * (1 + Math.abs(sH)), `head ${h}: ${sH} vs ${sI}`);
        const sWrong = dot(rope(head(qH), hd, p1, true), rope(head(kH), hd, p2, true));
        if (Math.abs(sH - sWrong) > 1e-6 * (1 + Math.abs(sH))) unpermutedDiffers = true;
      }
      // The check can fail: without the permutation the scores move (unless RoPE is a no-op:
      // equal positions, or one pair per head, where both conventions coincide).
      if (p1 !== p2 && hd > 2) assert.ok(unpermutedDiffers, 'an unpermuted layout should change the scores');
    }),
    { numRuns: 60 },
  );
});

test('the GGUF writer refuses what llama.cpp could not load as written', () => {
  const dir = mkdtempSync(join(tmpdir(), 'eaglet-gguf-'));
  try {
    const small = makeConfig({ vocabSize: 100, dim: 32, nLayers: 1, nHeads: 2, hiddenDim: 64 });
    assert.throws(() => saveLlamaGguf(join(dir, 'a.gguf'), small, randomWeights(small, 1), 'F32'), /at least 259 tokens/);
    const odd = makeConfig({ vocabSize: 300, dim: 48, nLayers: 1, nHeads: 2, hiddenDim: 64 });
    assert.throws(() => saveLlamaGguf(join(dir, 'b.gguf'), odd, randomWeights(odd, 1), 'Q4_0'), /token_embd\.weight: rows of 48 values do not split into Q4_0 blocks of 32/);
    const qwen3 = makeConfig({ vocabSize: 300, dim: 32, nLayers: 1, nHeads: 2, hiddenDim: 64, qkNorm: true });
    assert.throws(() => saveLlamaGguf(join(dir, 'c.gguf'), qwen3, randomWeights(qwen3, 1), 'F32'), /plain Llama only/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
