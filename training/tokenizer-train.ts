/**
 * Trains a byte-level BPE tokenizer (training/bpe.ts) and writes it as a Hugging Face
 * `tokenizer.json` + `tokenizer_config.json`, the files `src/tokenizer/load.ts` reads.
 *
 * Layout of the vocabulary: ids 0..255 single bytes, then merged tokens, then the special
 * `<|endoftext|>` (EOS between documents; also the BOS that starts every prompt, as in GPT-2).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../src/io/atomic.ts';
import { trainBpe, type BpeModel } from './bpe.ts';

/** The document separator (and prompt start) token. */
export const EOS_TOKEN = '<|endoftext|>';

/** A trained tokenizer: the HF JSON documents and the EOS id. */
export interface TrainedTokenizer {
  /** tokenizer.json content. */
  json: object;
  /** tokenizer_config.json content. */
  config: Record<string, unknown>;
  /** Total vocabulary size including the special token (the model's vocabSize). */
  vocabSize: number;
  eosId: number;
}

/**
 * Trains on `texts` so that the vocabulary, special token included, has `vocabSize` entries
 * (fewer when the texts run out of repeated pairs).
 */
export function trainTokenizer(texts: Iterable<string>, vocabSize: number): TrainedTokenizer {
  return toHfTokenizer(trainBpe(texts, { vocabSize: vocabSize - 1 }));
}

/** The HF documents of a BPE model with `<|endoftext|>` appended as the last id. */
export function toHfTokenizer(bpe: BpeModel): TrainedTokenizer {
  const eosId = bpe.tokens.length;
  const vocab: Record<string, number> = {};
  bpe.tokens.forEach((t, i) => (vocab[t] = i));
  vocab[EOS_TOKEN] = eosId;
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [{ id: eosId, content: EOS_TOKEN, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: null,
    decoder: byteLevel,
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: false,
      vocab,
      merges: bpe.merges.map(([a, b]) => `${bpe.tokens[a]} ${bpe.tokens[b]}`),
    },
  };
  // clean_up_tokenization_spaces would turn ' ?' into '?' on decode, breaking the exact round trip.
  const config = { bos_token: EOS_TOKEN, eos_token: EOS_TOKEN, add_bos_token: true, clean_up_tokenization_spaces: false, model_max_length: 1 << 20, tokenizer_class: 'GPT2Tokenizer' };
  return { json, config, vocabSize: eosId + 1, eosId };
}

/** Writes tokenizer.json and tokenizer_config.json into `dir` (atomically, creating `dir`). */
export function writeTokenizer(dir: string, t: TrainedTokenizer): void {
  mkdirSync(dir, { recursive: true });
  writeFileAtomic(join(dir, 'tokenizer.json'), JSON.stringify(t.json) + '\n');
  writeFileAtomic(join(dir, 'tokenizer_config.json'), JSON.stringify(t.config, null, 2) + '\n');
}
