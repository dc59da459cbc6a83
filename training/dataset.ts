/**
 * Training data for the draft head, built from feature logs.
 *
 * Every logged sequence becomes training examples: input row t = (feature_t, token_{t+1}); the
 * head predicts feature_{t+1}; the accuracy label is token_{t+2} (the target's next token after
 * t+1). Examples are grouped into windows of up to `window` consecutive rows of one sequence;
 * a training step packs several windows into one sequence with a block-diagonal causal mask.
 */
import { FormatError } from '../src/errors.ts';
import { Rng } from '../src/util/rng.ts';
import { readFeatureLog, readSidecar, type FeatureLogSidecar } from './feature-log.ts';

/** All logged rows in memory, concatenated in log order. */
export interface FeatureData {
  dim: number;
  rows: number;
  position: Int32Array; // [rows]
  tokenId: Int32Array; // [rows]
  nextTokenId: Int32Array; // [rows]
  features: Float32Array; // [rows, d]
  /** Row index where each window starts, and its length (rows t with t+1 in the same sequence). */
  windowStart: Int32Array; // [W]
  windowLength: Int32Array; // [W]
  sidecars: FeatureLogSidecar[];
}

/** Reads logs fully (each batch copied once into growing buffers) and cuts windows. */
export async function loadFeatureData(paths: string[], window: number): Promise<FeatureData> {
  if (paths.length === 0) throw new FormatError('--logs', 'no feature logs given');
  const sidecars = paths.map(readSidecar);
  const dim = sidecars[0].dim;
  let cap = sidecars.reduce((a, s) => a + s.counts.rows, 0);
  const position = new Int32Array(cap), tokenId = new Int32Array(cap), nextTokenId = new Int32Array(cap); // [rows]
  const features = new Float32Array(cap * dim); // [rows, d]
  const seqOf = new Int32Array(cap); // [rows] global sequence number
  let rows = 0, seqBase = 0;
  for (let i = 0; i < paths.length; i++) {
    if (sidecars[i].dim !== dim) throw new FormatError(paths[i], `feature width ${sidecars[i].dim} differs from ${paths[0]} (${dim})`);
    let maxSeq = -1;
    for await (const b of readFeatureLog(paths[i], { dim, topK: sidecars[i].topK })) {
      if (rows + b.rows > cap) throw new FormatError(paths[i], 'holds more rows than its sidecar says');
      position.set(b.position, rows);
      tokenId.set(b.tokenId, rows);
      nextTokenId.set(b.nextTokenId, rows);
      features.set(b.features, rows * dim);
      for (let r = 0; r < b.rows; r++) (seqOf[rows + r] = seqBase + b.seqId[r]), (maxSeq = Math.max(maxSeq, b.seqId[r]));
      rows += b.rows;
    }
    seqBase += maxSeq + 1;
  }
  cap = rows;
  // Input row t is usable when row t+1 continues the same sequence.
  const starts: number[] = [], lengths: number[] = [];
  for (let r = 0; r < rows; ) {
    let end = r; // rows [r, end) are usable inputs of one run
    while (end + 1 < rows && seqOf[end + 1] === seqOf[r] && position[end + 1] === position[end] + 1 && nextTokenId[end] >= 0) end++;
    for (let s = r; s < end; s += window) (starts.push(s), lengths.push(Math.min(window, end - s)));
    r = end + 1;
  }
  return {
    dim, rows, position: position.subarray(0, rows), tokenId: tokenId.subarray(0, rows), nextTokenId: nextTokenId.subarray(0, rows),
    features: features.subarray(0, rows * dim), windowStart: Int32Array.from(starts), windowLength: Int32Array.from(lengths), sidecars,
  };
}

/** Seeded split of window indices into train and validation (at least one of each when possible). */
export function splitWindows(count: number, valFraction: number, seed: number): { train: Int32Array; val: Int32Array } {
  const order = permutation(count, new Rng(seed ^ 0x5eed));
  const nVal = count < 2 ? 0 : Math.min(count - 1, Math.max(valFraction > 0 ? 1 : 0, Math.round(count * valFraction)));
  return { val: order.slice(0, nVal).sort(), train: order.slice(nVal).sort() };
}

/** Fisher-Yates permutation of [0, n). */
export function permutation(n: number, rng: Rng): Int32Array {
  const p = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

/** A packed step: windows laid end to end as one sequence. */
export interface PackedBatch {
  n: number;
  positions: Int32Array; // [n]
  /** token_{t+1} of every input row. */
  tokens: Int32Array; // [n]
  inputFeatures: Float32Array; // [n, d]
  targetFeatures: Float32Array; // [n, d]
  /** token_{t+2}, -1 where unknown (excluded from accuracy). */
  labels: Int32Array; // [n]
  /** Window index of every row: row i sees row j iff same window and j <= i. */
  segment: Int32Array; // [n]
}

/** Packs the given windows into one sequence (copies their rows). */
export function packWindows(data: FeatureData, windows: ArrayLike<number>): PackedBatch {
  const d = data.dim;
  let n = 0;
  for (let i = 0; i < windows.length; i++) n += data.windowLength[windows[i]];
  const b: PackedBatch = {
    n, positions: new Int32Array(n), tokens: new Int32Array(n), inputFeatures: new Float32Array(n * d),
    targetFeatures: new Float32Array(n * d), labels: new Int32Array(n), segment: new Int32Array(n),
  };
  let o = 0;
  for (let i = 0; i < windows.length; i++) {
    const s = data.windowStart[windows[i]], len = data.windowLength[windows[i]];
    for (let k = 0; k < len; k++, o++) {
      const t = s + k;
      b.positions[o] = data.position[t];
      b.tokens[o] = data.nextTokenId[t];
      b.labels[o] = data.nextTokenId[t + 1];
      b.segment[o] = i;
    }
    b.inputFeatures.set(data.features.subarray(s * d, (s + len) * d), (o - len) * d);
    b.targetFeatures.set(data.features.subarray((s + 1) * d, (s + 1 + len) * d), (o - len) * d);
  }
  return b;
}
