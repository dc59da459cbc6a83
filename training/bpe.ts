/**
 * A byte-level BPE trainer (GPT-2 style): text is split by the GPT-2 pre-tokenizer regex, each
 * piece becomes its UTF-8 bytes, and the most frequent adjacent symbol pair is merged until the
 * vocabulary is full. Byte-level means every string is representable, so decode(encode(x)) == x
 * for any x without an unknown token.
 *
 * Deterministic: ties between equally frequent pairs go to the pair whose (left, right) ids are
 * smallest, and nothing depends on Map iteration order; the same texts give the same merges.
 *
 * Symbols are ids: 0..255 are the raw bytes, 256.. the merged tokens in merge order.
 */

/** The pre-tokenizer regex of GPT-2 (the one @huggingface/tokenizers' ByteLevel uses). */
export const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** GPT-2's reversible byte -> printable character map (bytes that print as themselves keep their character). */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const keep: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) keep.push(b);
  for (let b = 0xa1; b <= 0xac; b++) keep.push(b);
  for (let b = 0xae; b <= 0xff; b++) keep.push(b);
  const chars: string[] = new Array(256);
  for (const b of keep) chars[b] = String.fromCharCode(b);
  let n = 0;
  for (let b = 0; b < 256; b++) if (chars[b] === undefined) chars[b] = String.fromCharCode(256 + n++);
  return chars;
})();

/** A trained BPE model: token strings (byte-level characters) by id, and the merges in rank order. */
export interface BpeModel {
  /** tokens[id]: the token's byte-level string; ids 0..255 are the single bytes. */
  tokens: string[];
  /** merges[r] = [left, right] token ids of the rank-r merge. */
  merges: [number, number][];
}

export interface BpeTrainOptions {
  /** Target size of the BPE vocabulary (bytes + merges; special tokens not included). At least 256. */
  vocabSize: number;
  /** Pairs seen fewer times than this are never merged. Default 2. */
  minFrequency?: number;
}

/** Counts pre-tokenized pieces (as byte strings) over `texts`. */
export function countPieces(texts: Iterable<string>): Map<string, number> {
  const counts = new Map<string, number>();
  for (const t of texts) for (const m of t.matchAll(GPT2_SPLIT)) counts.set(m[0], (counts.get(m[0]) ?? 0) + 1);
  return counts;
}

const pairKey = (a: number, b: number): number => a * 65536 + b;

/** Trains byte-level BPE merges on `texts`. */
export function trainBpe(texts: Iterable<string>, opts: BpeTrainOptions): BpeModel {
  const { vocabSize, minFrequency = 2 } = opts;
  if (!(Number.isInteger(vocabSize) && vocabSize >= 256 && vocabSize < 65536)) throw new RangeError(`vocabSize must be an integer in [256, 65536), got ${vocabSize}`);
  // Unique pieces sorted, so word indices (and everything after) do not depend on text order.
  const pieces = [...countPieces(texts)].sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
  const enc = new TextEncoder();
  const words: number[][] = pieces.map(([p]) => Array.from(enc.encode(p)));
  const freq = pieces.map(([, c]) => c);

  const tokens = BYTE_TO_CHAR.slice();
  const idOf = new Map(tokens.map((t, i) => [t, i]));
  const merges: [number, number][] = [];
  const pairCount = new Map<number, number>();
  const pairWords = new Map<number, Set<number>>(); // pair -> words that may contain it (checked on use)
  const addPairs = (w: number, sign: number): void => {
    const s = words[w];
    for (let i = 0; i + 1 < s.length; i++) {
      const k = pairKey(s[i], s[i + 1]);
      pairCount.set(k, (pairCount.get(k) ?? 0) + sign * freq[w]);
      if (sign > 0) {
        let set = pairWords.get(k);
        if (!set) pairWords.set(k, (set = new Set()));
        set.add(w);
      }
    }
  };
  for (let w = 0; w < words.length; w++) addPairs(w, 1);

  while (tokens.length < vocabSize) {
    let best = -1, bestCount = minFrequency - 1;
    for (const [k, c] of pairCount) if (c > bestCount || (c === bestCount && c >= minFrequency && k < best)) (best = k), (bestCount = c);
    if (best < 0) break;
    const a = Math.floor(best / 65536), b = best % 65536;
    const str = tokens[a] + tokens[b];
    // Two merge paths can spell the same string (ab+c, a+bc): they share one id, as in HF's trainer.
    let id = idOf.get(str);
    if (id === undefined) idOf.set(str, (id = tokens.push(str) - 1));
    merges.push([a, b]);
    const touched = [...pairWords.get(best)!].sort((x, y) => x - y);
    pairWords.delete(best);
    for (const w of touched) {
      addPairs(w, -1);
      const s = words[w], out: number[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) (out.push(id), i++);
        else out.push(s[i]);
      }
      words[w] = out;
      addPairs(w, 1);
    }
    for (const [k, c] of pairCount) if (c === 0) pairCount.delete(k);
  }
  return { tokens, merges };
}
