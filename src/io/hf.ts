/**
 * Hugging Face checkpoint directories of Llama-family decoders (LlamaForCausalLM incl. Llama 3's
 * rope scaling, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM):
 *
 *   config.json                        architecture and sizes -> ModelConfig
 *   generation_config.json (optional)  extra eos ids (Llama 3 lists several there)
 *   model.safetensors                  or model.safetensors.index.json + shards (weight_map)
 *
 * A config.json with an eaglet quantization_config is a quantized checkpoint (see
 * quantized-checkpoint.ts).
 *
 * Only the tensors the config needs are read; names and layout are already eaglet's (HF) ones.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { ConfigError, FormatError } from '../errors.ts';
import { checkConfig, type ModelConfig } from '../model/config.ts';
import { parseRopeScaling, ropeScalingToJson } from '../model/rope.ts';
import { expectedShapes, validateWeights, type Tensor, type Weights } from '../model/weights.ts';
import { writeFileAtomic } from './atomic.ts';
import { readJsonFile } from './read.ts';
import { loadQuantizedWeights, parseQuantization } from './quantized-checkpoint.ts';
import { FILE_BACKED, readSafetensors, writeSafetensors, type FloatDtype } from './safetensors.ts';

const MODEL_TYPES: Record<string, string> = { llama: 'LlamaForCausalLM', mistral: 'MistralForCausalLM', qwen2: 'Qwen2ForCausalLM', qwen3: 'Qwen3ForCausalLM' };

/**
 * Converts a parsed config.json into a ModelConfig. `file` names the source in errors.
 * Throws ConfigError naming the field for unknown architectures, unsupported rope scaling,
 * missing or ill-typed fields.
 */
export function parseHfConfig(json: unknown, file: string): ModelConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ConfigError(file, 'not a JSON object');
  const j = json as Record<string, unknown>;
  const fail = (problem: string) => new ConfigError(file, problem);
  const modelType = j.model_type;
  if (typeof modelType !== 'string' || !(modelType in MODEL_TYPES)) {
    throw fail(`model_type ${JSON.stringify(modelType)} is not supported (eaglet reads ${Object.keys(MODEL_TYPES).join(', ')})`);
  }
  const archs = j.architectures;
  if (archs != null && !(Array.isArray(archs) && archs.length === 1 && archs[0] === MODEL_TYPES[modelType])) {
    throw fail(`architectures ${JSON.stringify(archs)} is not supported for model_type ${modelType} (expected ["${MODEL_TYPES[modelType]}"])`);
  }
  const int = (k: string, dflt?: number): number => {
    const v = j[k] ?? dflt;
    if (v === undefined) throw fail(`missing field ${k}`);
    if (!Number.isSafeInteger(v) || (v as number) <= 0) throw fail(`field ${k} must be a positive integer, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const num = (k: string, dflt?: number): number => {
    const v = j[k] ?? dflt;
    if (v === undefined) throw fail(`missing field ${k}`);
    if (typeof v !== 'number' || !(v > 0)) throw fail(`field ${k} must be a positive number, got ${JSON.stringify(v)}`);
    return v;
  };
  const bool = (k: string, dflt: boolean): boolean => {
    const v = j[k] ?? dflt;
    if (typeof v !== 'boolean') throw fail(`field ${k} must be true or false, got ${JSON.stringify(v)}`);
    return v;
  };
  const tokenIds = (k: string): number[] => {
    const v = j[k] ?? [];
    const ids = Array.isArray(v) ? v : [v];
    if (!ids.every((x) => Number.isSafeInteger(x) && x >= 0)) throw fail(`field ${k} must be a token id or a list of them, got ${JSON.stringify(v)}`);
    return ids as number[];
  };

  const act = j.hidden_act ?? 'silu';
  if (act !== 'silu') throw fail(`hidden_act ${JSON.stringify(act)} is not supported (eaglet implements silu)`);
  if (bool('mlp_bias', false)) throw fail('mlp_bias true is not supported (eaglet has no MLP biases)');
  let ropeScaling;
  try {
    ropeScaling = parseRopeScaling(j.rope_scaling);
  } catch (e) {
    throw fail((e as Error).message);
  }

  const dim = int('hidden_size'), nHeads = int('num_attention_heads');
  if (j.head_dim == null && dim % nHeads !== 0) throw fail(`hidden_size ${dim} is not divisible by num_attention_heads ${nHeads}; head_dim is needed`);
  let maxSeqLen = int('max_position_embeddings');
  // Sliding-window attention equals full attention within the window, so cap the context there.
  const sliding = modelType === 'mistral' || (modelType.startsWith('qwen') && j.use_sliding_window === true) ? j.sliding_window : null;
  if (sliding != null) maxSeqLen = Math.min(maxSeqLen, int('sliding_window'));
  const bos = tokenIds('bos_token_id');
  if (bos.length > 1) throw fail(`field bos_token_id must be a single token id, got ${JSON.stringify(j.bos_token_id)}`);

  const c: ModelConfig = {
    vocabSize: int('vocab_size'),
    dim,
    hiddenDim: int('intermediate_size'),
    nLayers: int('num_hidden_layers'),
    nHeads,
    nKvHeads: int('num_key_value_heads', nHeads),
    headDim: int('head_dim', dim / nHeads),
    maxSeqLen,
    ropeTheta: num('rope_theta', 10000),
    ...(ropeScaling ? { ropeScaling } : {}),
    normEps: num('rms_norm_eps'),
    tieEmbeddings: bool('tie_word_embeddings', false),
    // Qwen2 always has q/k/v biases; Llama may declare them.
    attentionBias: modelType === 'qwen2' ? true : bool('attention_bias', false),
    // Qwen3 norms each q and k head before RoPE.
    ...(modelType === 'qwen3' ? { qkNorm: true } : {}),
    ...(bos.length > 0 ? { bosTokenId: bos[0] } : {}),
    eosTokenIds: tokenIds('eos_token_id'),
  };
  try {
    checkConfig(c);
  } catch (e) {
    throw fail((e as Error).message);
  }
  return c;
}

/** The config.json a ModelConfig round-trips through (Qwen3ForCausalLM with q/k norms, else LlamaForCausalLM). */
export function toHfConfig(c: ModelConfig): Record<string, unknown> {
  const modelType = c.qkNorm ? 'qwen3' : 'llama';
  return {
    architectures: [MODEL_TYPES[modelType]],
    model_type: modelType,
    vocab_size: c.vocabSize,
    hidden_size: c.dim,
    intermediate_size: c.hiddenDim,
    num_hidden_layers: c.nLayers,
    num_attention_heads: c.nHeads,
    num_key_value_heads: c.nKvHeads,
    head_dim: c.headDim,
    max_position_embeddings: c.maxSeqLen,
    rope_theta: c.ropeTheta,
    rope_scaling: ropeScalingToJson(c.ropeScaling),
    rms_norm_eps: c.normEps,
    tie_word_embeddings: c.tieEmbeddings,
    attention_bias: c.attentionBias,
    hidden_act: 'silu',
    bos_token_id: c.bosTokenId ?? null,
    eos_token_id: c.eosTokenIds.length === 1 ? c.eosTokenIds[0] : c.eosTokenIds,
    torch_dtype: 'float32',
  };
}

/** Reads `dir/config.json` (plus eos ids from generation_config.json when present). */
export function loadHfConfig(dir: string): ModelConfig {
  const file = join(dir, 'config.json');
  const c = parseHfConfig(readJsonFile(file), file);
  const genFile = join(dir, 'generation_config.json');
  if (existsSync(genFile)) {
    const gen = readJsonFile(genFile) as Record<string, unknown> | null;
    const eos = gen?.eos_token_id;
    const extra = (Array.isArray(eos) ? eos : eos == null ? [] : [eos]).filter((x) => Number.isSafeInteger(x) && x >= 0) as number[];
    c.eosTokenIds = [...new Set([...c.eosTokenIds, ...extra])];
  }
  return c;
}

/**
 * Loads a checkpoint directory: config and exactly the weights it needs, validated (shapes;
 * finiteness of the tensors read into memory). F32 weights are file-backed (FILE_BACKED).
 */
export function loadHfCheckpoint(dir: string): { config: ModelConfig; weights: Weights } {
  const config = loadHfConfig(dir);
  const configFile = join(dir, 'config.json');
  const quant = parseQuantization(readJsonFile(configFile) as Record<string, unknown>, configFile);
  if (quant) return { config, weights: loadQuantizedWeights(dir, config, quant) };
  const needed = expectedShapes(config);
  const want = (name: string) => needed.has(name);
  const weights: Weights = new Map();
  const single = join(dir, 'model.safetensors'), index = join(dir, 'model.safetensors.index.json');
  let source: string;
  if (existsSync(single)) {
    source = single;
    for (const [k, t] of readSafetensors(single, want, FILE_BACKED).tensors) weights.set(k, t);
  } else if (existsSync(index)) {
    source = index;
    for (const [shard, names] of shardsOf(index)) {
      const keep = new Set(names.filter(want));
      if (keep.size === 0) continue;
      const path = join(dir, shard);
      for (const [k, t] of readSafetensors(path, (n) => keep.has(n), FILE_BACKED).tensors) weights.set(k, t);
      for (const k of keep) if (!weights.has(k)) throw new FormatError(path, `tensor ${k} listed in ${basename(index)} is not in this shard`);
    }
  } else {
    throw new FormatError(dir, 'no model.safetensors or model.safetensors.index.json in the checkpoint directory');
  }
  const problem = validateWeights(config, weights);
  if (problem) throw new FormatError(source, problem);
  return { config, weights };
}

/** Groups an index's weight_map by shard file, refusing paths that leave the directory. */
function shardsOf(index: string): Map<string, string[]> {
  const j = readJsonFile(index) as Record<string, unknown> | null;
  const map = j?.weight_map;
  if (typeof map !== 'object' || map === null || Array.isArray(map)) throw new FormatError(index, 'missing weight_map object');
  const shards = new Map<string, string[]>();
  for (const [name, shard] of Object.entries(map)) {
    if (typeof shard !== 'string' || shard !== basename(shard) || shard === '' || shard === '..') {
      throw new FormatError(index, `weight_map entry for ${name} must be a file name in the same directory, got ${JSON.stringify(shard)}`);
    }
    const list = shards.get(shard) ?? [];
    list.push(name);
    shards.set(shard, list);
  }
  return shards;
}

/** Options of saveHfCheckpoint. */
export interface SaveHfOptions {
  /** Storage dtype of the weights. Default 'F32'. */
  dtype?: FloatDtype;
}

/**
 * Writes `dir/config.json` and `dir/model.safetensors` (each atomically), creating `dir`.
 * Writes the config's tensors only, in expectedShapes order; throws if the weights do not fit it.
 */
export function saveHfCheckpoint(dir: string, cfg: ModelConfig, weights: Weights, opts: SaveHfOptions = {}): void {
  const problem = validateWeights(cfg, weights);
  if (problem) throw new ConfigError(dir, `refusing to save: ${problem}`);
  mkdirSync(dir, { recursive: true });
  const tensors = new Map<string, Tensor>();
  for (const name of expectedShapes(cfg).keys()) tensors.set(name, weights.get(name)!);
  writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' }, { dtype: opts.dtype });
  writeFileAtomic(join(dir, 'config.json'), JSON.stringify(toHfConfig(cfg), null, 2) + '\n');
}
