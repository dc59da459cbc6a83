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
  /** The byte-level decode's table (see byteLevelTable), or undefined: the library decodes. */
  private readonly bytesOf?: (Uint8Array | undefined)[];
  private decodeBuf = new Uint8Array(256);
  private readonly utf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true }); // as the library's ByteLevel decoder

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
    this.bytesOf = byteLevelTable(this.tok, json, this.vocabSize, this.bosId, this.eosIds);
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const ids = this.tok.encode(text, { add_special_tokens: false }).ids;
    return (opts.addBos ?? this.addBosDefault) && this.bosId !== undefined ? [this.bosId, ...ids] : ids;
  }

  decode(ids: readonly number[]): string {
    const table = this.bytesOf;
    if (table) {
      let n = 0, buf = this.decodeBuf;
      for (const id of ids) {
        const b = table[id];
        if (b === undefined) return this.decodeWithLibrary(ids);
        if (n + b.length > buf.length) {
          const grown = new Uint8Array(2 * (n + b.length));
          grown.set(buf.subarray(0, n));
          buf = this.decodeBuf = grown;
        }
        buf.set(b, n);
        n += b.length;
      }
      return this.utf8.decode(buf.subarray(0, n));
    }
    return this.decodeWithLibrary(ids);
  }

  private decodeWithLibrary(ids: readonly number[]): string {
    const keep = ids.filter((id) => id !== this.bosId && !this.eosIds.includes(id));
    // The library throws on an empty list; an empty sequence is simply ''.
    return keep.length === 0 ? '' : this.tok.decode(keep, { skip_special_tokens: true });
  }
}

/**
 * For a tokenizer whose whole decoder is ByteLevel (GPT-2 style byte-level BPE) with no
 * tokenization-space clean-up: each id's bytes, so `decode` is the ids' bytes concatenated and
 * read as UTF-8, what the library computes (tokens joined, each character mapped back to its
 * byte, one UTF-8 decode) without building the token strings (measured at concurrency 1: the
 * library's decode of 48 ids took ~0.08 ms of a served request). Empty for BOS/EOS and special
 * tokens (decode skips them); undefined for ids the table does not cover (added non-special
 * tokens, which the library emits verbatim, and ids outside the vocabulary): those sequences go
 * to the library. Ours; property-tested equal to the library's decode.
 */
function byteLevelTable(tok: HfLibTokenizer, json: unknown, vocabSize: number, bos: number | undefined, eos: number[]): (Uint8Array | undefined)[] | undefined {
  const j = json as { decoder?: { type?: string } | null; model?: { end_of_word_suffix?: unknown } };
  const lib = tok as unknown as { decoder?: { byte_decoder?: Record<string, number> }; special_tokens?: string[]; added_tokens?: { content: string }[]; clean_up_tokenization_spaces?: boolean; model?: { vocab?: (string | undefined)[]; end_of_word_suffix?: unknown } };
  const byteOf = lib.decoder?.byte_decoder, vocab = lib.model?.vocab;
  if (j.decoder?.type !== 'ByteLevel' || !byteOf || !vocab || !Array.isArray(lib.special_tokens) || !Array.isArray(lib.added_tokens)) return undefined;
  if (lib.clean_up_tokenization_spaces !== false || lib.model?.end_of_word_suffix) return undefined;
  const special = new Set(lib.special_tokens), added = new Set(lib.added_tokens.map((a) => a.content)), empty = new Uint8Array(0);
  return Array.from({ length: vocabSize }, (_, id) => {
    const t = vocab[id];
    if (id === bos || eos.includes(id)) return empty;
    if (t === undefined) return undefined;
    if (special.has(t)) return empty;
    if (added.has(t)) return undefined;
    return new Uint8Array(Array.from(t, (c) => byteOf[c])); // as the library: a character outside the table reads 0
  });
}
