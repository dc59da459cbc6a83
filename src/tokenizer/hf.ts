/**
 * HF `tokenizer.json` (+ `tokenizer_config.json`) through @huggingface/tokenizers (pure JS).
 * BOS is added here rather than by the file's post-processor, so `addBos` means the same for
 * every format; BOS/EOS come from tokenizer_config.json's bos_token / eos_token.
 */
import { Tokenizer as HfLibTokenizer } from '@huggingface/tokenizers';
import { FormatError } from '../errors.ts';
import type { EncodeOptions, Tokenizer } from './tokenizer.ts';

export class HfTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId?: number;
  readonly eosIds: number[];
  private readonly tok: HfLibTokenizer;
  /** tokenizer_config.json's add_bos_token (default true when there is a BOS token). */
  private readonly addBosDefault: boolean;

  /** `json` is tokenizer.json, `config` tokenizer_config.json ({} if absent); `file` names the source in errors. */
  constructor(json: unknown, config: Record<string, unknown>, file: string) {
    try {
      this.tok = new HfLibTokenizer(json as object, config);
    } catch (e) {
      throw new FormatError(file, `not a usable tokenizer.json (${(e as Error).message})`);
    }
    const vocab = this.tok.get_vocab(true);
    let maxId = -1; // a loop, not Math.max(...): vocabularies of 150k ids overflow the argument limit
    for (const id of vocab.values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    if (this.vocabSize === 0) throw new FormatError(file, 'tokenizer has an empty vocabulary');
    const idOf = (field: string): number | undefined => {
      const v = config[field];
      const content = typeof v === 'string' ? v : typeof v === 'object' && v !== null ? (v as { content?: unknown }).content : undefined;
      return typeof content === 'string' ? this.tok.token_to_id(content) : undefined;
    };
    this.bosId = idOf('bos_token');
    const eos = idOf('eos_token');
    this.eosIds = eos === undefined ? [] : [eos];
    this.addBosDefault = config.add_bos_token !== false;
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const ids = this.tok.encode(text, { add_special_tokens: false }).ids;
    return (opts.addBos ?? this.addBosDefault) && this.bosId !== undefined ? [this.bosId, ...ids] : ids;
  }

  decode(ids: readonly number[]): string {
    const keep = ids.filter((id) => id !== this.bosId && !this.eosIds.includes(id));
    // The library throws on an empty list; an empty sequence is simply ''.
    return keep.length === 0 ? '' : this.tok.decode(keep, { skip_special_tokens: true });
  }
}
