/**
 * An eaglet Llama (HF tensor names, "rotate halves" RoPE) as a GGUF file llama.cpp loads with
 * architecture "llama": the hyperparameter keys its loader reads, tensor names as llama.cpp's
 * convert_hf_to_gguf.py writes them, and q/k rows permuted the way that converter does (llama.cpp's
 * "llama" RoPE rotates interleaved pairs: rope-permute.ts's halvesToInterleaved, per K/V head for k).
 *
 * Tensor types: F32 keeps everything F32; Q8_0 / Q4_0 quantize every 2-D weight, the token
 * embedding and output head included, and keep the 1-D norms F32, as `llama-quantize --pure`
 * does (its default would store the output head as Q6_K).
 *
 * The vocabulary is a placeholder for token-id benchmarks: llama.cpp's SentencePiece ("llama")
 * tokenizer with <unk> <s> </s>, the 256 byte tokens <0x00>..<0xFF> its byte fallback requires,
 * then the space piece and pieces named by their id. Models with biases, q/k norms or RoPE scaling are refused.
 */
import { ConfigError } from '../../src/errors.ts';
import { halvesToInterleaved } from '../../src/io/rope-permute.ts';
import type { ModelConfig } from '../../src/model/config.ts';
import { layerKey, validateWeights, type Weights } from '../../src/model/weights.ts';
import { bool, f32, str, u32, writeGguf, type GgmlTypeName, type GgufTensor, type GgufValue } from './gguf.ts';

/** general.file_type (llama_ftype) of each whole-file type. */
const FILE_TYPE: Record<GgmlTypeName, number> = { F32: 0, Q4_0: 2, Q8_0: 7 };

/** Token ids of the placeholder vocabulary's special tokens. */
export const PLACEHOLDER_SPECIALS = { unk: 0, bos: 1, eos: 2 } as const;
const FIRST_BYTE_TOKEN = 3, FIRST_PIECE = FIRST_BYTE_TOKEN + 256;

/** llama.cpp token types (llama_token_type). */
const TOKEN_TYPE = { normal: 1, unknown: 2, control: 3, byte: 6 } as const;

/** The metadata of `cfg` as a GGUF "llama" model with the placeholder vocabulary. */
export function llamaGgufMeta(cfg: ModelConfig, type: GgmlTypeName, name: string): Record<string, GgufValue> {
  if (cfg.vocabSize < FIRST_PIECE) throw new ConfigError('vocab_size', `the placeholder GGUF vocabulary needs at least ${FIRST_PIECE} tokens (3 special + 256 bytes), got ${cfg.vocabSize}`);
  const tokens: string[] = [], scores = new Float32Array(cfg.vocabSize), types = new Int32Array(cfg.vocabSize);
  for (let id = 0; id < cfg.vocabSize; id++) {
    if (id === PLACEHOLDER_SPECIALS.unk) (tokens.push('<unk>'), (types[id] = TOKEN_TYPE.unknown));
    else if (id === PLACEHOLDER_SPECIALS.bos) (tokens.push('<s>'), (types[id] = TOKEN_TYPE.control));
    else if (id === PLACEHOLDER_SPECIALS.eos) (tokens.push('</s>'), (types[id] = TOKEN_TYPE.control));
    else if (id < FIRST_PIECE) {
      tokens.push(`<0x${(id - FIRST_BYTE_TOKEN).toString(16).toUpperCase().padStart(2, '0')}>`);
      types[id] = TOKEN_TYPE.byte;
    } else {
      // The first piece is the SentencePiece space, so text with spaces round-trips (node-llama-cpp checks).
      tokens.push(id === FIRST_PIECE ? '\u2581' : `\u2581t${id}`);
      types[id] = TOKEN_TYPE.normal;
      scores[id] = -(id - FIRST_PIECE);
    }
  }
  const meta: Record<string, GgufValue> = {
    'general.architecture': str('llama'),
    'general.name': str(name),
    'general.file_type': u32(FILE_TYPE[type]),
    'llama.vocab_size': u32(cfg.vocabSize),
    'llama.context_length': u32(cfg.maxSeqLen),
    'llama.embedding_length': u32(cfg.dim),
    'llama.block_count': u32(cfg.nLayers),
    'llama.feed_forward_length': u32(cfg.hiddenDim),
    'llama.attention.head_count': u32(cfg.nHeads),
    'llama.attention.head_count_kv': u32(cfg.nKvHeads),
    'llama.attention.layer_norm_rms_epsilon': f32(cfg.normEps),
    'llama.rope.freq_base': f32(cfg.ropeTheta),
    'llama.rope.dimension_count': u32(cfg.headDim),
  };
  if (cfg.headDim * cfg.nHeads !== cfg.dim) {
    meta['llama.attention.key_length'] = u32(cfg.headDim);
    meta['llama.attention.value_length'] = u32(cfg.headDim);
  }
  Object.assign(meta, {
    'tokenizer.ggml.model': str('llama'),
    'tokenizer.ggml.tokens': { type: 'string[]', value: tokens },
    'tokenizer.ggml.scores': { type: 'f32[]', value: scores },
    'tokenizer.ggml.token_type': { type: 'i32[]', value: types },
    'tokenizer.ggml.unknown_token_id': u32(PLACEHOLDER_SPECIALS.unk),
    'tokenizer.ggml.bos_token_id': u32(PLACEHOLDER_SPECIALS.bos),
    'tokenizer.ggml.eos_token_id': u32(PLACEHOLDER_SPECIALS.eos),
    'tokenizer.ggml.add_bos_token': bool(false),
    'tokenizer.ggml.add_eos_token': bool(false),
    'tokenizer.ggml.add_space_prefix': bool(false),
  } satisfies Record<string, GgufValue>);
  return meta;
}

/** GGUF tensor name for each HF tensor name of a layer (after `model.layers.N.`). */
const LAYER_NAMES: Record<string, string> = {
  'input_layernorm.weight': 'attn_norm.weight',
  'self_attn.q_proj.weight': 'attn_q.weight',
  'self_attn.k_proj.weight': 'attn_k.weight',
  'self_attn.v_proj.weight': 'attn_v.weight',
  'self_attn.o_proj.weight': 'attn_output.weight',
  'post_attention_layernorm.weight': 'ffn_norm.weight',
  'mlp.gate_proj.weight': 'ffn_gate.weight',
  'mlp.up_proj.weight': 'ffn_up.weight',
  'mlp.down_proj.weight': 'ffn_down.weight',
};

/**
 * The GGUF tensors of `weights` in llama.cpp's order and names; q/k values permuted to
 * interleaved pairs when each tensor is produced. `type` applies to 2-D weights; norms stay F32.
 */
export function llamaGgufTensors(cfg: ModelConfig, weights: Weights, type: GgmlTypeName): GgufTensor[] {
  const out: GgufTensor[] = [];
  const add = (hf: string, name: string, permuteHeads?: number) => {
    const t = weights.get(hf);
    if (!t || t.quant) throw new ConfigError(hf, 'GGUF export needs every weight as F32');
    const data = permuteHeads ? () => halvesToInterleaved(t.data, permuteHeads, t.shape[1]) : () => t.data;
    out.push({ name, shape: t.shape, type: t.shape.length === 1 ? 'F32' : type, data });
  };
  add('model.embed_tokens.weight', 'token_embd.weight');
  for (let i = 0; i < cfg.nLayers; i++) {
    for (const [hf, gg] of Object.entries(LAYER_NAMES)) {
      const heads = hf.startsWith('self_attn.q_') ? cfg.nHeads : hf.startsWith('self_attn.k_') ? cfg.nKvHeads : undefined;
      add(layerKey(i, hf), `blk.${i}.${gg}`, heads);
    }
  }
  add('model.norm.weight', 'output_norm.weight');
  if (!cfg.tieEmbeddings) add('lm_head.weight', 'output.weight'); // tied: llama.cpp reuses token_embd
  return out;
}

/** Writes `cfg` + `weights` (F32, HF layout) to `path` as a GGUF "llama" model of `type`. */
export function saveLlamaGguf(path: string, cfg: ModelConfig, weights: Weights, type: GgmlTypeName, name = 'eaglet-random-llama'): void {
  if (cfg.attentionBias || cfg.qkNorm || cfg.ropeScaling) throw new ConfigError(path, 'GGUF export covers plain Llama only (no q/k/v biases, q/k norms or RoPE scaling)');
  const problem = validateWeights(cfg, weights);
  if (problem) throw new ConfigError(path, `refusing to write: ${problem}`);
  writeGguf(path, llamaGgufMeta(cfg, type, name), llamaGgufTensors(cfg, weights, type));
}
