/**
 * Corpus files for logging, read into token-id documents. The format follows the extension:
 *   `.jsonl`          one JSON object per line with a string `text` field (one document each)
 *   `.ids`            one document per line: token ids separated by commas and/or spaces
 *   anything else     plain text; the whole file is one document
 * Text is tokenized with the caller's `encode`.
 */
import { FormatError, UsageError } from '../src/errors.ts';
import { readFileOrFail } from '../src/io/read.ts';

/** Text -> token ids (the model's tokenizer). */
export type Encode = (text: string) => number[];

/** Reads every corpus file into documents of token ids, in file order. */
export function readCorpus(paths: string[], vocabSize: number, encode?: Encode): number[][] {
  const docs: number[][] = [];
  for (const path of paths) {
    // A file that cannot be read is a bad file (exit 1, naming it), like a missing --model.
    const raw = new TextDecoder().decode(readFileOrFail(path));
    if (path.endsWith('.ids')) docs.push(...parseIds(path, raw, vocabSize));
    else {
      if (!encode) throw new UsageError('--corpus', `${path} is text but the model has no tokenizer; give a .ids file`);
      const texts = path.endsWith('.jsonl') ? parseJsonl(path, raw) : [raw];
      for (const t of texts) docs.push(encode(t));
    }
  }
  return docs.filter((d) => d.length > 0);
}

function parseIds(path: string, raw: string, vocabSize: number): number[][] {
  const out: number[][] = [];
  raw.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    const ids = line.trim().split(/[\s,]+/).map(Number);
    const bad = ids.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= vocabSize);
    if (bad >= 0) throw new FormatError(path, `line ${i + 1}: "${line.trim().split(/[\s,]+/)[bad]}" is not a token id in [0, ${vocabSize})`);
    out.push(ids);
  });
  return out;
}

function parseJsonl(path: string, raw: string): string[] {
  const out: string[] = [];
  raw.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch {
      throw new FormatError(path, `line ${i + 1} is not JSON`);
    }
    const text = (obj as { text?: unknown })?.text;
    if (typeof text !== 'string') throw new FormatError(path, `line ${i + 1} has no string "text" field`);
    out.push(text);
  });
  return out;
}

/** Splits documents into consecutive chunks of at most `seqLen` tokens (chunks shorter than 2 are dropped). */
export function chunkDocuments(docs: number[][], seqLen: number): number[][] {
  const out: number[][] = [];
  for (const d of docs) for (let s = 0; s < d.length; s += seqLen) if (d.length - s >= 2) out.push(d.slice(s, s + seqLen));
  return out;
}
