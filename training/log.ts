/**
 * `runLog`: runs the target (ORT) over a corpus and writes its features to a feature log
 * (see feature-log.ts), the training data of the draft head.
 *
 *   teacher   the corpus as is, chunked to `seqLen` tokens, one forward pass per chunk
 *   generate  the first `promptLen` tokens of each document are a prompt that the target
 *             continues (greedy, or sampled with `temperature` and `seed`) up to `seqLen`
 *             tokens; its own output is logged (self-distillation: the head learns the
 *             distribution it will draft for)
 */
import { createHash } from 'node:crypto';
import { UsageError } from '../src/errors.ts';
import type { ModelConfig } from '../src/model/config.ts';
import { quantizedModel, quantOf, type QuantName } from '../src/model/quantize.ts';
import type { Weights } from '../src/model/weights.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { TargetSession } from '../src/runtime/target.ts';
import { Rng } from '../src/util/rng.ts';
import { chunkDocuments, readCorpus, type Encode } from './corpus.ts';
import { FeatureLogWriter, sidecarPath, type LogCounts } from './feature-log.ts';
import type { OnProgress } from './progress.ts';

export interface LogOptions {
  /** The target (e.g. from `loadModel`); `encode` is needed for text corpora. */
  model: { config: ModelConfig; weights: Weights; tokenizer?: { encode: Encode } };
  /** Where the model came from, recorded in the sidecar. Default 'in-memory'. */
  modelSource?: string;
  /** Corpus files (.txt, .jsonl, .ids; see corpus.ts). */
  corpus: string[];
  /** Path of the Arrow log; the sidecar goes to `<out>.json`. */
  out: string;
  mode: 'teacher' | 'generate';
  /** Tokens per logged sequence (<= the model's maxSeqLen). */
  seqLen: number;
  /** Stop after this many rows. */
  maxTokens: number;
  /** Also log the target's top-k next-token probabilities. Default 0 (off). */
  topK?: number;
  /** generate: prompt tokens taken from each document. Default 4. */
  promptLen?: number;
  /** generate: sampling temperature; 0 = greedy. Default 0. */
  temperature?: number;
  /** generate: sampling seed. Default 0. */
  seed?: number;
  /**
   * Run the target quantized (`--quantize`, as `loadGenerator` does): the features and
   * continuations are then the quantized target's, what a head drafting for it will see. Default: as given.
   */
  quantize?: QuantName;
  /** onnxruntime intra-op threads. Default: sessionThreads' default. */
  threads?: number;
  onProgress?: OnProgress;
}

export interface LogResult {
  out: string;
  sidecar: string;
  counts: LogCounts;
  /** Target tokens processed per second. */
  tokensPerSecond: number;
}

/** Defaults of the optional settings (the CLI's flag table reads them from here). */
export const LOG_DEFAULTS = { topK: 0, promptLen: 4, temperature: 0, seed: 0 } as const;

/** Logs the target's features over the corpus; see the module comment. */
export async function runLog(opts: LogOptions): Promise<LogResult> {
  const cfg = opts.model.config, d = LOG_DEFAULTS, weights = quantizedModel(opts.model, opts.quantize).weights;
  const topK = opts.topK ?? d.topK, promptLen = opts.promptLen ?? d.promptLen, temperature = opts.temperature ?? d.temperature, seed = opts.seed ?? d.seed;
  if (!(Number.isInteger(opts.seqLen) && opts.seqLen >= 2 && opts.seqLen <= cfg.maxSeqLen))
    throw new UsageError('--seq-len', `must be an integer in [2, ${cfg.maxSeqLen}] (the model's context), got ${opts.seqLen}`);
  if (!(Number.isInteger(opts.maxTokens) && opts.maxTokens > 0)) throw new UsageError('--max-tokens', `must be a positive integer, got ${opts.maxTokens}`);
  if (!(Number.isInteger(topK) && topK >= 0 && topK <= cfg.vocabSize)) throw new UsageError('--top-k', `must be an integer in [0, ${cfg.vocabSize}], got ${topK}`);
  if (!(Number.isInteger(promptLen) && promptLen >= 1 && promptLen < opts.seqLen)) throw new UsageError('--prompt-len', `must be an integer in [1, seq-len), got ${promptLen}`);
  if (!(temperature >= 0)) throw new UsageError('--temperature', `must be >= 0, got ${temperature}`);
  const docs = readCorpus(opts.corpus, cfg.vocabSize, opts.model.tokenizer?.encode.bind(opts.model.tokenizer));
  if (docs.length === 0) throw new UsageError('--corpus', 'the corpus holds no tokens');

  const session = await TargetSession.create(cfg, weights, { maxTokens: opts.seqLen, threads: opts.threads });
  const cache = new KVCache(cfg.nLayers, cfg.nKvHeads, cfg.headDim, opts.seqLen);
  const writer = new FeatureLogWriter(opts.out, cfg.dim, topK);
  const rng = new Rng(seed);
  const pick = (logits: Float32Array): number => (temperature > 0 ? sample(logits, temperature, rng) : argmax(logits));
  let rows = 0, seqId = 0;
  const t0 = performance.now();
  try {
    const sequences = opts.mode === 'teacher' ? chunkDocuments(docs, opts.seqLen) : docs.map((d) => d.slice(0, promptLen));
    for (const seq of sequences) {
      if (rows >= opts.maxTokens) break;
      const n = Math.min(opts.mode === 'teacher' ? seq.length : opts.seqLen, opts.maxTokens - rows);
      const tokens = seq.slice(0, Math.min(seq.length, n));
      const features = new Float32Array(n * cfg.dim); // [n, d]
      const logits = new Float32Array(n * cfg.vocabSize); // [n, V]
      cache.truncate(0);
      // Prefill what is given (the chunk, or the prompt), then let the target continue.
      let out = await session.forward(cache, tokens, range(0, tokens.length));
      cache.append(out.newKeys, out.newValues, tokens.length);
      features.set(out.features);
      logits.set(out.logits);
      // Generate mode: the target picks each next token; `last` is its pick after the final row.
      let last = -1;
      while (opts.mode === 'generate') {
        last = pick(logits.subarray((tokens.length - 1) * cfg.vocabSize, tokens.length * cfg.vocabSize));
        if (tokens.length >= n || cfg.eosTokenIds.includes(last)) break;
        tokens.push(last);
        out = await session.forward(cache, [last], [tokens.length - 1]);
        cache.append(out.newKeys, out.newValues, 1);
        features.set(out.features, (tokens.length - 1) * cfg.dim);
        logits.set(out.logits, (tokens.length - 1) * cfg.vocabSize);
      }
      const m = tokens.length; // rows with a feature (an EOS ends generation early)
      // A teacher chunk cut by the budget still knows its next token; at a chunk's end it is unknown.
      const nextTokens = Array.from({ length: m }, (_, t) => (t + 1 < m ? tokens[t + 1] : opts.mode === 'generate' ? last : t + 1 < seq.length ? seq[t + 1] : -1));
      const top = topK > 0 ? topKProbs(logits.subarray(0, m * cfg.vocabSize), cfg.vocabSize, topK) : undefined;
      await writer.append({ seqId: seqId++, startPosition: 0, tokens, nextTokens, features: features.subarray(0, m * cfg.dim), topIds: top?.ids, topProbs: top?.probs });
      rows += m;
      opts.onProgress?.({ phase: 'log', done: Math.min(rows, opts.maxTokens), total: opts.maxTokens, metrics: { sequences: seqId } });
    }
    const held = quantOf(cfg, weights);
    const counts = await writer.finish({
      model: { source: opts.modelSource ?? 'in-memory', sha256: weightsHash(weights), config: cfg, ...(held ? { quant: held } : {}) },
      corpus: { paths: opts.corpus, mode: opts.mode, seqLen: opts.seqLen, maxTokens: opts.maxTokens, ...(opts.mode === 'generate' ? { seed } : {}) },
    });
    return { out: opts.out, sidecar: sidecarPath(opts.out), counts, tokensPerSecond: (rows / (performance.now() - t0)) * 1000 };
  } catch (e) {
    await writer.abort();
    throw e;
  } finally {
    await session.dispose();
  }
}

/**
 * sha256 over the weights (names in sorted order, shapes, float32 bytes; a quantized tensor's
 * format, packed bytes and scales): the model's identity, whatever file it came from.
 */
export function weightsHash(w: Weights): string {
  const h = createHash('sha256');
  const bytes = (a: ArrayBufferView) => h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  for (const name of [...w.keys()].sort()) {
    const t = w.get(name)!;
    h.update(`${name}[${t.shape}]`);
    bytes(t.data);
    if (t.quant) {
      h.update(`q${t.quant.bits}/${t.quant.blockSize}`);
      bytes(t.quant.packed), bytes(t.quant.scales);
    }
  }
  return h.digest('hex');
}

/** Top-k probabilities of every row of `logits` [n, V] -> ids, probs [n, k] (descending). */
export function topKProbs(logits: Float32Array, V: number, k: number): { ids: Int32Array; probs: Float32Array } {
  const n = logits.length / V, ids = new Int32Array(n * k), probs = new Float32Array(n * k); // [n, k]
  const order = new Int32Array(V); // [V] scratch, reused per row
  for (let r = 0; r < n; r++) {
    const row = logits.subarray(r * V, (r + 1) * V);
    let max = -Infinity, z = 0;
    for (let i = 0; i < V; i++) max = Math.max(max, row[i]);
    for (let i = 0; i < V; i++) z += Math.exp(row[i] - max);
    for (let i = 0; i < V; i++) order[i] = i;
    // Partial selection sort: k is small.
    for (let j = 0; j < k; j++) {
      let best = j;
      for (let i = j + 1; i < V; i++) if (row[order[i]] > row[order[best]]) best = i;
      [order[j], order[best]] = [order[best], order[j]];
      ids[r * k + j] = order[j];
      probs[r * k + j] = Math.exp(row[order[j]] - max) / z;
    }
  }
  return { ids, probs };
}

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

function sample(logits: Float32Array, temperature: number, rng: Rng): number {
  let max = -Infinity, z = 0;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  for (let i = 0; i < logits.length; i++) z += Math.exp((logits[i] - max) / temperature);
  let u = rng.next() * z;
  for (let i = 0; i < logits.length; i++) if ((u -= Math.exp((logits[i] - max) / temperature)) <= 0) return i;
  return logits.length - 1;
}

const range = (a: number, b: number): number[] => Array.from({ length: b - a }, (_, i) => a + i);
