/** The one tokenizer interface the generation loops and CLI use, whatever the file format. */

/** Options of Tokenizer.encode. */
export interface EncodeOptions {
  /** Prepend the BOS token (when the tokenizer has one). Default: the tokenizer's own default (true for llama2.c). */
  addBos?: boolean;
}

/** Text to ids and back, whatever the file format (tokenizer.json or llama2.c tokenizer.bin). */
export interface Tokenizer {
  /** Number of ids (largest id + 1). */
  readonly vocabSize: number;
  readonly bosId?: number;
  /** Generation stops at any of these. */
  readonly eosIds: number[];
  /** Text -> ids (special-token strings in `text` are not treated specially unless the format does). */
  encode(text: string, opts?: EncodeOptions): number[];
  /** Ids -> text, skipping BOS/EOS. Incomplete UTF-8 at the end decodes to U+FFFD. */
  decode(ids: readonly number[]): string;
}
