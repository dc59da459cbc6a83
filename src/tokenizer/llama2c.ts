/**
 * llama2.c's `tokenizer.bin` and its tokenizer (run.c's encode/decode):
 *
 *   int32 max_token_length, then per token: float32 score, int32 length, `length` bytes
 *
 * Encoding adds a dummy-prefix space, splits into UTF-8 characters (bytes not in the vocabulary
 * fall back to `<0xXX>` tokens), then repeatedly merges the adjacent pair whose concatenation is
 * in the vocabulary with the best score. Decoding strips the leading space after BOS and turns
 * `<0xXX>` pieces into raw bytes.
 */
import { FormatError } from '../errors.ts';
import { writeFileAtomic } from '../io/atomic.ts';
import { isLlama2cCheckpoint } from '../io/llama2c.ts';
import { readFileOrFail } from '../io/read.ts';
import type { EncodeOptions, Tokenizer } from './tokenizer.ts';

/** llama2.c's sentencepiece ids. */
const BOS = 1, EOS = 2, UNK = 0;

/** One vocabulary entry: the piece's raw bytes and its merge score. */
export interface Llama2cPiece {
  bytes: Uint8Array;
  score: number;
}

// Non-fatal (invalid bytes -> U+FFFD); ignoreBOM keeps a leading U+FEFF that is part of the text.
const utf8 = new TextDecoder('utf-8', { ignoreBOM: true });
const latin1 = new TextDecoder('latin1');

export class Llama2cTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId = BOS;
  readonly eosIds = [EOS];
  /** Piece (as a latin1 string, one char per byte) -> id; the first of duplicates wins, as bsearch would find some one. */
  private readonly ids = new Map<string, number>();
  /** Byte b -> id of `<0xXX>` or, failing that, UNK. */
  private readonly byteIds = new Int32Array(256);
  /** Id -> the bytes it decodes to (byte tokens already resolved). */
  private readonly pieceBytes: Uint8Array[];
  /** Id -> its bytes as text when they are whole UTF-8 on their own, else undefined (a byte token, part of a character). */
  private readonly pieceText: (string | undefined)[];

  constructor(readonly pieces: Llama2cPiece[]) {
    this.vocabSize = pieces.length;
    pieces.forEach((p, id) => {
      const key = latin1.decode(p.bytes);
      if (!this.ids.has(key)) this.ids.set(key, id);
    });
    for (let b = 0; b < 256; b++) this.byteIds[b] = this.ids.get(byteToken(b)) ?? UNK;
    this.pieceBytes = pieces.map((p) => {
      const m = /^<0x([0-9A-F]{2})>$/.exec(latin1.decode(p.bytes));
      return m ? Uint8Array.of(parseInt(m[1], 16)) : p.bytes;
    });
    const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
    this.pieceText = this.pieceBytes.map((b) => {
      try {
        return strict.decode(b);
      } catch {
        return undefined;
      }
    });
  }

  /** Encodes like run.c's `encode` (BOS by default, never EOS). */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    const out: number[] = opts.addBos ?? true ? [BOS] : [];
    if (text.length === 0) return out;
    const tokens: number[] = [];
    // The dummy prefix: sentencepiece treats the text as starting after a space.
    const space = this.ids.get(' ');
    if (space !== undefined) tokens.push(space);
    const enc = new TextEncoder();
    for (const ch of text) {
      const bytes = enc.encode(ch);
      const id = this.ids.get(latin1.decode(bytes));
      if (id !== undefined) tokens.push(id);
      else for (const b of bytes) tokens.push(this.byteIds[b]);
    }
    const keys = tokens.map((id) => latin1.decode(this.pieces[id].bytes));
    // Greedy merges by best score, as run.c does; O(n^2) is fine for prompts.
    for (;;) {
      let best = -Infinity, bestAt = -1, bestId = -1;
      for (let i = 0; i + 1 < tokens.length; i++) {
        const id = this.ids.get(keys[i] + keys[i + 1]);
        if (id !== undefined && this.pieces[id].score > best) [best, bestAt, bestId] = [this.pieces[id].score, i, id];
      }
      if (bestAt < 0) break;
      tokens.splice(bestAt, 2, bestId);
      keys.splice(bestAt, 2, keys[bestAt] + keys[bestAt + 1]);
    }
    return out.concat(tokens);
  }

  /** Decodes like run.c's `decode` over a sequence, skipping BOS/EOS; ids outside the vocabulary decode to nothing. */
  decode(ids: readonly number[]): string {
    // Whole-character pieces only: their texts joined are the bytes' decoding (UTF-8 decodes
    // each character on its own). Measured: the bytes' path took ~0.12 ms of a served reply.
    let text = '';
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (id === BOS || id === EOS || !(id >= 0 && id < this.vocabSize)) continue;
      let t = this.pieceText[id];
      if (t === undefined) return this.decodeBytes(ids);
      if (i > 0 && ids[i - 1] === BOS && t.charCodeAt(0) === 0x20) t = t.slice(1);
      text += t;
    }
    return text;
  }

  /** decode over the pieces' bytes (any pieces: byte tokens may split a character across ids). */
  private decodeBytes(ids: readonly number[]): string {
    const parts: Uint8Array[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (id === BOS || id === EOS || !(id >= 0 && id < this.vocabSize)) continue;
      let bytes = this.pieceBytes[id];
      if (i > 0 && ids[i - 1] === BOS && bytes[0] === 0x20) bytes = bytes.subarray(1);
      parts.push(bytes);
    }
    return utf8.decode(Buffer.concat(parts));
  }
}

const byteToken = (b: number) => `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;

/**
 * Reads `tokenizer.bin`. With `vocabSize` (the model's), exactly that many entries must be
 * present; without it, entries are read to the end of the file.
 */
export function readLlama2cTokenizer(path: string, vocabSize?: number): Llama2cTokenizer {
  const buf = readFileOrFail(path);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const bad = (problem: string) => new FormatError(path, problem);
  if (buf.byteLength < 4) throw bad(`${buf.byteLength} bytes is too short for a llama2.c tokenizer`);
  if (isLlama2cCheckpoint(buf)) throw bad('this is a llama2.c model checkpoint, not a tokenizer: pass its tokenizer.bin');
  const maxLen = view.getInt32(0, true);
  if (maxLen <= 0) throw bad(`max_token_length ${maxLen} must be positive`);
  const pieces: Llama2cPiece[] = [];
  let pos = 4;
  while (vocabSize === undefined ? pos < buf.byteLength : pieces.length < vocabSize) {
    const id = pieces.length;
    if (pos + 8 > buf.byteLength) throw bad(`truncated at token ${id}${vocabSize ? ` of ${vocabSize}` : ''} (offset ${pos})`);
    const score = view.getFloat32(pos, true), len = view.getInt32(pos + 4, true);
    if (Number.isNaN(score)) throw bad(`token ${id} has a NaN score`);
    if (len < 0 || len > maxLen) throw bad(`token ${id} has length ${len}, outside [0, max_token_length ${maxLen}]`);
    if (pos + 8 + len > buf.byteLength) throw bad(`truncated inside token ${id} (offset ${pos})`);
    pieces.push({ score, bytes: buf.slice(pos + 8, pos + 8 + len) });
    pos += 8 + len;
  }
  if (pos !== buf.byteLength) throw bad(`${buf.byteLength - pos} trailing bytes after ${pieces.length} tokens (does the model's vocab size ${vocabSize} match?)`);
  if (pieces.length <= EOS) throw bad(`only ${pieces.length} tokens; llama2.c tokenizers need at least unk, bos, eos`);
  return new Llama2cTokenizer(pieces);
}

/** Writes `tokenizer.bin` for `pieces` (for fixtures and conversions), atomically. */
export function writeLlama2cTokenizer(path: string, pieces: readonly Llama2cPiece[]): void {
  const maxLen = pieces.reduce((m, p) => Math.max(m, p.bytes.length), 1);
  const chunks: Uint8Array[] = [new Uint8Array(Int32Array.of(maxLen).buffer)];
  for (const p of pieces) {
    const head = new DataView(new ArrayBuffer(8));
    head.setFloat32(0, p.score, true);
    head.setInt32(4, p.bytes.length, true);
    chunks.push(new Uint8Array(head.buffer), p.bytes);
  }
  writeFileAtomic(path, chunks);
}
