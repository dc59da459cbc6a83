/**
 * llama2.c legacy checkpoints (`.bin`, export version 0):
 *
 *   7 x int32: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
 *              (vocab_size < 0 means the classifier is stored separately, not tied)
 *   float32:   token_embedding [V, d]
 *              rms_att [L, d], wq [L, nH*hs, d], wk [L, nKv*hs, d], wv [L, nKv*hs, d], wo [L, d, nH*hs]
 *              rms_ffn [L, d], w1 [L, hidden, d], w2 [L, d, hidden], w3 [L, hidden, d]
 *              rms_final [d], freq_cis_real [seq_len, hs/2], freq_cis_imag [seq_len, hs/2]
 *              wcls [V, d] (only when vocab_size < 0)
 *
 * Stacked per-layer tensors are split into HF names, and wq/wk rows are permuted from
 * llama2.c's interleaved RoPE pairs to HF's halves (see rope-permute.ts). The RoPE tables are
 * skipped on read and recomputed on write.
 */
import { closeSync, fstatSync } from 'node:fs';
import { ConfigError, FormatError } from '../errors.ts';
import { checkConfig, type ModelConfig } from '../model/config.ts';
import { ropeCosSin, ropeInvFreq } from '../model/rope.ts';
import { EMBEDDING, layerKey, LM_HEAD, tensor, validateWeights, type Weights } from '../model/weights.ts';
import { writeFileAtomic } from './atomic.ts';
import { openForRead, readExact } from './read.ts';
import { halvesToInterleaved, interleavedToHalves } from './rope-permute.ts';

const HEADER_BYTES = 28;
/** Magic of llama2.c's versioned exports (`export.py --version 1/2`), which this reader does not take. */
const VERSIONED_MAGIC = 0x616b3432;
/**
 * llama2.c's fixed conventions: sentencepiece ids and run.c's constants. Its models are trained
 * on stories each opened by BOS, so a story ends where the model emits BOS again; run.c stops
 * there ("the BOS (=1) token delimits sequences"), and so do we: BOS is an end-of-sequence id
 * for these checkpoints, beside EOS (`--no-stop-at-eos` / `stopAtEos: false` turns both off).
 */
const BOS = 1, EOS = 2, NORM_EPS = 1e-5, ROPE_THETA = 10000;

/** One float32 section of the file, in file order. `layers` > 0 means stacked per layer. */
interface Section {
  name: string;
  layers: number;
  shape: number[];
}

/** The file's sections for `c`, in order; null names are skipped on read. */
function sections(c: ModelConfig): Section[] {
  const { dim: d, hiddenDim: h, nLayers: L, vocabSize: V } = c;
  const q = c.nHeads * c.headDim, kv = c.nKvHeads * c.headDim, rope = [c.maxSeqLen, c.headDim / 2];
  const s: Section[] = [
    { name: EMBEDDING, layers: 0, shape: [V, d] },
    { name: 'input_layernorm.weight', layers: L, shape: [d] },
    { name: 'self_attn.q_proj.weight', layers: L, shape: [q, d] },
    { name: 'self_attn.k_proj.weight', layers: L, shape: [kv, d] },
    { name: 'self_attn.v_proj.weight', layers: L, shape: [kv, d] },
    { name: 'self_attn.o_proj.weight', layers: L, shape: [d, q] },
    { name: 'post_attention_layernorm.weight', layers: L, shape: [d] },
    { name: 'mlp.gate_proj.weight', layers: L, shape: [h, d] },
    { name: 'mlp.down_proj.weight', layers: L, shape: [d, h] },
    { name: 'mlp.up_proj.weight', layers: L, shape: [h, d] },
    { name: 'model.norm.weight', layers: 0, shape: [d] },
    { name: 'rope.cos', layers: 0, shape: rope },
    { name: 'rope.sin', layers: 0, shape: rope },
  ];
  if (!c.tieEmbeddings) s.push({ name: LM_HEAD, layers: 0, shape: [V, d] });
  return s;
}

const isRope = (s: Section) => s.name.startsWith('rope.');
const count = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
/** Floats in a section, as an exact integer: a lying header can imply far more than 2^53. */
const sectionFloats = (s: Section) => BigInt(Math.max(s.layers, 1)) * s.shape.reduce((a, d) => a * BigInt(d), 1n);

/** The ModelConfig a llama2.c header describes (throws a plain Error on impossible values). */
function configFromHeader(h: Int32Array): ModelConfig {
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocab, seqLen] = h;
  if (nHeads <= 0 || dim % nHeads !== 0) throw new Error(`dim ${dim} is not divisible by n_heads ${nHeads}`);
  const c: ModelConfig = {
    vocabSize: Math.abs(vocab), dim, hiddenDim, nLayers, nHeads, nKvHeads,
    headDim: dim / nHeads, maxSeqLen: seqLen, ropeTheta: ROPE_THETA, normEps: NORM_EPS,
    tieEmbeddings: vocab > 0, attentionBias: false, bosTokenId: BOS, eosTokenIds: [EOS, BOS],
  };
  checkConfig(c);
  return c;
}

/** True when `file` (its first 28 bytes and size) is a llama2.c checkpoint: a sane header that implies exactly its size. */
export function isLlama2cCheckpoint(file: Uint8Array): boolean {
  if (file.byteLength < HEADER_BYTES) return false;
  const header = new Int32Array(Uint8Array.from(file.subarray(0, HEADER_BYTES)).buffer); // a copy: Buffers share a pool
  try {
    const secs = sections(configFromHeader(header));
    return BigInt(file.byteLength) === BigInt(HEADER_BYTES) + 4n * secs.reduce((a, s) => a + sectionFloats(s), 0n);
  } catch {
    return false;
  }
}

/**
 * Reads a llama2.c legacy checkpoint into HF-layout weights. The file size must be exactly what
 * the header implies (checked before any weight is allocated).
 */
export function readLlama2c(path: string): { config: ModelConfig; weights: Weights } {
  const fd = openForRead(path);
  try {
    const size = fstatSync(fd).size;
    if (size < HEADER_BYTES) throw new FormatError(path, `${size} bytes is too short for the 28-byte llama2.c header`);
    const header = new Int32Array(7);
    readExact(fd, new Uint8Array(header.buffer), 0);
    if (header[0] === VERSIONED_MAGIC) throw new FormatError(path, 'llama2.c versioned export (magic "ak42") is not supported; export with --version 0 (legacy)');
    let config: ModelConfig;
    try {
      config = configFromHeader(header);
    } catch (e) {
      throw new FormatError(path, `bad llama2.c header [${header.join(', ')}]: ${(e as Error).message}`);
    }
    const secs = sections(config);
    const expected = BigInt(HEADER_BYTES) + 4n * secs.reduce((a, s) => a + sectionFloats(s), 0n);
    if (BigInt(size) !== expected) {
      throw new FormatError(path, `file is ${size} bytes but its header [${header.join(', ')}] implies ${expected} (${BigInt(size) < expected ? 'truncated' : 'trailing bytes'})`);
    }
    const weights: Weights = new Map();
    let pos = HEADER_BYTES;
    for (const s of secs) {
      const n = Number(sectionFloats(s)); // small now: the size check passed
      if (!isRope(s)) {
        const all = new Float32Array(n); // [layers, ...shape] or [...shape]
        readExact(fd, new Uint8Array(all.buffer), pos);
        if (s.layers === 0) weights.set(s.name, tensor(s.shape, all));
        const per = count(s.shape);
        for (let l = 0; l < s.layers; l++) weights.set(layerKey(l, s.name), tensor(s.shape, toHf(config, s.name, all.subarray(l * per, (l + 1) * per))));
      }
      pos += 4 * n;
    }
    const problem = validateWeights(config, weights);
    if (problem) throw new FormatError(path, problem);
    return { config, weights };
  } finally {
    closeSync(fd);
  }
}

/** One layer's slice in HF layout: q/k rows re-ordered for halves RoPE, others copied. */
function toHf(c: ModelConfig, name: string, w: Float32Array): Float32Array {
  if (name === 'self_attn.q_proj.weight') return interleavedToHalves(w, c.nHeads, c.dim);
  if (name === 'self_attn.k_proj.weight') return interleavedToHalves(w, c.nKvHeads, c.dim);
  return w.slice();
}

function fromHf(c: ModelConfig, name: string, w: Float32Array): Float32Array {
  if (name === 'self_attn.q_proj.weight') return halvesToInterleaved(w, c.nHeads, c.dim);
  if (name === 'self_attn.k_proj.weight') return halvesToInterleaved(w, c.nKvHeads, c.dim);
  return w;
}

/**
 * Writes `weights` (HF layout) as a llama2.c legacy checkpoint, atomically. Throws ConfigError
 * for configs the format cannot represent (biases, q/k norms, headDim != dim/nHeads, non-default or scaled RoPE).
 */
export function writeLlama2c(path: string, cfg: ModelConfig, weights: Weights): void {
  const refuse = (problem: string) => new ConfigError(path, `llama2.c format cannot store this model: ${problem}`);
  if (cfg.attentionBias) throw refuse('attention biases');
  if (cfg.headDim * cfg.nHeads !== cfg.dim) throw refuse(`headDim ${cfg.headDim} != dim / nHeads`);
  if (cfg.ropeTheta !== ROPE_THETA) throw refuse(`ropeTheta ${cfg.ropeTheta} (the format fixes ${ROPE_THETA})`);
  if (cfg.ropeScaling) throw refuse('rope scaling');
  if (cfg.qkNorm) throw refuse('q/k norms');
  const problem = validateWeights(cfg, weights);
  if (problem) throw refuse(problem);
  const header = Int32Array.of(cfg.dim, cfg.hiddenDim, cfg.nLayers, cfg.nHeads, cfg.nKvHeads, cfg.tieEmbeddings ? cfg.vocabSize : -cfg.vocabSize, cfg.maxSeqLen);
  const chunks: Uint8Array[] = [bytes(header)];
  // The RoPE tables llama2.c's exporter stores (old run.c versions read them): [seq_len, hs/2] each.
  const { cos, sin } = ropeCosSin(ropeInvFreq(cfg.headDim, cfg), cfg.maxSeqLen);
  for (const s of sections(cfg)) {
    if (s.name === 'rope.cos') chunks.push(bytes(cos));
    else if (s.name === 'rope.sin') chunks.push(bytes(sin));
    else if (s.layers === 0) chunks.push(bytes(weights.get(s.name)!.data));
    else for (let l = 0; l < s.layers; l++) chunks.push(bytes(fromHf(cfg, s.name, weights.get(layerKey(l, s.name))!.data)));
  }
  writeFileAtomic(path, chunks);
}

const bytes = (a: Float32Array | Int32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
