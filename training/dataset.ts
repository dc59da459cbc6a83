/**
 * Training data for the draft head, streamed from feature logs.
 *
 * Every logged sequence becomes training examples: input row t = (feature_t, token_{t+1}); the
 * head predicts feature_{t+1}; the accuracy label is token_{t+2} (the target's next token after
 * t+1). Examples are grouped into windows of up to `window` consecutive rows of one sequence;
 * a training step packs several windows into one sequence with a block-diagonal causal mask.
 *
 * Streaming (memory bounded whatever the logs' size): `FeatureStore.open` reads the logs once,
 * one record batch at a time, and keeps only an index: where each window starts, its length,
 * and the row range of each record batch (about 12 bytes per window and per batch, not the
 * rows). Windows are grouped into blocks of consecutive windows spanning at most `blockRows`
 * rows; `pack` loads the blocks a batch needs (decoding only the record batches that cover
 * them) into a small LRU cache. Training order (`epochOrder`) is a bounded-buffer shuffle: the
 * epoch's blocks in a seeded random order, taken `SHUFFLE_BLOCKS` at a time, with the windows of
 * those blocks shuffled together; so the rows in memory stay under
 * (2 * SHUFFLE_BLOCKS + 2) * blockRows, and a log far larger than memory trains in one pass
 * per epoch. The order is a function of (seed, epoch) alone, so a resumed run finds its place
 * in the stream from the step number: no reader state needs saving.
 */
import { FormatError } from '../src/errors.ts';
import { Rng } from '../src/util/rng.ts';
import { FeatureLogFile, readSidecar, type FeatureLogSidecar } from './feature-log.ts';

/** Blocks whose windows are shuffled together (the shuffle buffer holds this many blocks). */
export const SHUFFLE_BLOCKS = 16;

/** Rows of one block as loaded: enough of each row to pack its windows. */
interface Block {
  /** Global row of the first row held. */
  rowBase: number;
  rows: number;
  position: Int32Array; // [rows]
  nextTokenId: Int32Array; // [rows]
  features: Float32Array; // [rows, d]
}

/** A record batch's place: its file, its index in that file, its first global row. */
interface BatchRef {
  file: number;
  index: number;
  firstRow: number;
  rows: number;
}

export interface FeatureStoreOptions {
  /** Rows per block: a block holds consecutive windows spanning at most this many rows (at least window + 1). Default 4096. */
  blockRows?: number;
  /** Blocks kept loaded. Default 2 * SHUFFLE_BLOCKS + 2: the blocks of two shuffle groups (a batch can straddle them) and a validation block. */
  cacheBlocks?: number;
}

/** The index of the logs' windows, and the rows of those windows on demand (see the module comment). */
export class FeatureStore {
  /** Rows loaded from the logs at most at once (in cached blocks), for memory reports. */
  peakLoadedRows = 0;
  /** Blocks loaded so far (a block evicted and needed again counts again). */
  blockLoads = 0;
  private readonly cache = new Map<number, Block>();
  private loadedRows = 0;
  private lastBatch: { ref: BatchRef; b: ReturnType<FeatureLogFile['read']> } | null = null;

  private constructor(
    readonly dim: number,
    /** Rows in the logs. */
    readonly rows: number,
    /** Global row where each window starts, and its length (rows t with t+1 in the same sequence). */
    readonly windowStart: Float64Array, // [W]
    readonly windowLength: Int32Array, // [W]
    /** Block of each window (windows in log order; blocks are runs of consecutive windows). */
    readonly windowBlock: Int32Array, // [W]
    /** First window of each block, and W at the end. */
    private readonly blockFirst: Int32Array, // [blocks + 1]
    /** How often each token id is a row's next token (ids outside [0, V) not counted). */
    readonly nextTokenCounts: Float64Array, // [V]
    readonly sidecars: FeatureLogSidecar[],
    readonly blockRows: number,
    private readonly files: FeatureLogFile[],
    private readonly batches: BatchRef[],
    private readonly cacheBlocks: number,
  ) {}

  /**
   * Indexes the logs in one streamed pass (one record batch in memory at a time) and cuts
   * windows of up to `window` rows. `vocabSize` bounds the next-token counts.
   */
  static async open(paths: string[], window: number, vocabSize: number, opts: FeatureStoreOptions = {}): Promise<FeatureStore> {
    if (paths.length === 0) throw new FormatError('--logs', 'no feature logs given');
    const sidecars = paths.map(readSidecar);
    const dim = sidecars[0].dim;
    const blockRows = Math.max(window + 1, opts.blockRows ?? 4096);
    const files: FeatureLogFile[] = [], batches: BatchRef[] = [];
    const starts: number[] = [], lengths: number[] = [];
    const counts = new Float64Array(vocabSize);
    let rows = 0;
    // The chain of rows being followed: each continues the one before in one sequence.
    let chainStart = 0, prevSeq = 0, prevPos = 0, prevNext = -1;
    const closeChain = (end: number) => {
      // rows [chainStart, end] form the chain; inputs are [chainStart, end): their t+1 is in it
      for (let s = chainStart; s < end; s += window) (starts.push(s), lengths.push(Math.min(window, end - s)));
    };
    try {
      for (let f = 0; f < paths.length; f++) {
        if (sidecars[f].dim !== dim) throw new FormatError(paths[f], `feature width ${sidecars[f].dim} differs from ${paths[0]} (${dim})`);
        const file = new FeatureLogFile(paths[f], { dim, topK: sidecars[f].topK });
        files.push(file);
        const fileStart = rows;
        for (let i = 0; i < file.batches.length; i++) {
          const b = file.read(i);
          if (rows - fileStart + b.rows > sidecars[f].counts.rows) throw new FormatError(paths[f], 'holds more rows than its sidecar says');
          batches.push({ file: f, index: i, firstRow: rows, rows: b.rows });
          for (let r = 0; r < b.rows; r++, rows++) {
            const seq = b.seqId[r], pos = b.position[r], next = b.nextTokenId[r];
            if (next >= 0 && next < vocabSize) counts[next]++;
            // A new file, another sequence, a gap in positions or an unknown next token ends the chain.
            const continues = rows > fileStart && seq === prevSeq && pos === prevPos + 1 && prevNext >= 0;
            if (!continues) {
              if (rows > 0) closeChain(rows - 1);
              chainStart = rows;
            }
            (prevSeq = seq), (prevPos = pos), (prevNext = next);
          }
          // Let other work run between batches of a long index pass.
          if (i % 64 === 63) await new Promise((resolve) => setImmediate(resolve));
        }
      }
      if (rows > 0) closeChain(rows - 1);
    } catch (e) {
      for (const file of files) file.close();
      throw e;
    }
    const W = starts.length, windowBlock = new Int32Array(W), blockFirst: number[] = [];
    for (let w = 0, block = -1, first = 0; w < W; w++) {
      if (block < 0 || starts[w] + lengths[w] + 1 - first > blockRows) (block++, (first = starts[w]), blockFirst.push(w));
      windowBlock[w] = block;
    }
    blockFirst.push(W);
    return new FeatureStore(dim, rows, Float64Array.from(starts), Int32Array.from(lengths), windowBlock, Int32Array.from(blockFirst), counts, sidecars, blockRows, files, batches, opts.cacheBlocks ?? 2 * SHUFFLE_BLOCKS + 2);
  }

  /** Packs the given windows into one sequence (copies their rows), loading the blocks they lie in. */
  pack(windows: ArrayLike<number>): PackedBatch {
    const d = this.dim;
    let n = 0;
    for (let i = 0; i < windows.length; i++) n += this.windowLength[windows[i]];
    const b: PackedBatch = {
      n, positions: new Int32Array(n), tokens: new Int32Array(n), inputFeatures: new Float32Array(n * d),
      targetFeatures: new Float32Array(n * d), labels: new Int32Array(n), segment: new Int32Array(n),
    };
    let o = 0;
    for (let i = 0; i < windows.length; i++) {
      const w = windows[i], blk = this.block(this.windowBlock[w]);
      const s = this.windowStart[w] - blk.rowBase, len = this.windowLength[w];
      for (let k = 0; k < len; k++, o++) {
        const t = s + k;
        b.positions[o] = blk.position[t];
        b.tokens[o] = blk.nextTokenId[t];
        b.labels[o] = blk.nextTokenId[t + 1];
        b.segment[o] = i;
      }
      b.inputFeatures.set(blk.features.subarray(s * d, (s + len) * d), (o - len) * d);
      b.targetFeatures.set(blk.features.subarray((s + 1) * d, (s + 1 + len) * d), (o - len) * d);
    }
    return b;
  }

  /** Block `id` from the cache, or loaded from its record batches (evicting the least recently used). */
  private block(id: number): Block {
    const hit = this.cache.get(id);
    if (hit) {
      this.cache.delete(id);
      this.cache.set(id, hit);
      return hit;
    }
    // Windows of a block are consecutive: rows from the first window's start to one past the last window's end.
    const first = this.blockFirst[id], last = this.blockFirst[id + 1] - 1;
    const rowBase = this.windowStart[first], end = this.windowStart[last] + this.windowLength[last] + 1, rows = end - rowBase, d = this.dim;
    const blk: Block = { rowBase, rows, position: new Int32Array(rows), nextTokenId: new Int32Array(rows), features: new Float32Array(rows * d) };
    for (let k = this.batchAt(rowBase); k < this.batches.length && this.batches[k].firstRow < end; k++) {
      const ref = this.batches[k];
      if (this.lastBatch?.ref !== ref) this.lastBatch = { ref, b: this.files[ref.file].read(ref.index) };
      const src = this.lastBatch.b;
      const from = Math.max(rowBase, ref.firstRow), to = Math.min(end, ref.firstRow + ref.rows); // global rows copied
      const a = from - ref.firstRow, z = to - ref.firstRow, at = from - rowBase;
      blk.position.set(src.position.subarray(a, z), at);
      blk.nextTokenId.set(src.nextTokenId.subarray(a, z), at);
      blk.features.set(src.features.subarray(a * d, z * d), at * d);
    }
    this.cache.set(id, blk);
    this.loadedRows += rows;
    this.blockLoads++;
    while (this.cache.size > this.cacheBlocks) {
      const [oldest, old] = this.cache.entries().next().value!;
      this.cache.delete(oldest);
      this.loadedRows -= old.rows;
    }
    this.peakLoadedRows = Math.max(this.peakLoadedRows, this.loadedRows);
    return blk;
  }

  /** Index of the record batch holding global row `row`. */
  private batchAt(row: number): number {
    let lo = 0, hi = this.batches.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.batches[mid].firstRow <= row) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  /** Closes the log files; the store cannot load blocks afterwards. */
  close(): void {
    for (const f of this.files) f.close();
    this.cache.clear();
    this.lastBatch = null;
  }
}

/**
 * The training order of one epoch: positions in `train` (training window ids, ascending), as a
 * bounded-buffer shuffle (see the module comment): the blocks holding training windows in a
 * random order, then, SHUFFLE_BLOCKS blocks at a time, their windows in a random order. With
 * SHUFFLE_BLOCKS blocks or fewer this is a uniform permutation of all training windows.
 */
export function epochOrder(train: Int32Array, windowBlock: Int32Array, rng: Rng): Int32Array {
  const runStart: number[] = []; // position in `train` where each block's windows begin
  for (let i = 0; i < train.length; i++) if (i === 0 || windowBlock[train[i]] !== windowBlock[train[i - 1]]) runStart.push(i);
  runStart.push(train.length);
  const blocks = permutation(runStart.length - 1, rng), order = new Int32Array(train.length);
  let o = 0;
  for (let g = 0; g < blocks.length; g += SHUFFLE_BLOCKS) {
    const from = o;
    for (const blk of blocks.subarray(g, g + SHUFFLE_BLOCKS)) for (let i = runStart[blk]; i < runStart[blk + 1]; i++) order[o++] = i;
    // Fisher-Yates over this group's windows.
    for (let i = o - 1; i > from; i--) {
      const j = from + rng.int(i - from + 1);
      [order[i], order[j]] = [order[j], order[i]];
    }
  }
  return order;
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

/** Indexes the logs (one streamed pass, as training does) and closes them: the checks and counts without training. */
export async function indexFeatureLogs(paths: string[], window: number, vocabSize = 0): Promise<FeatureStore> {
  const store = await FeatureStore.open(paths, window, vocabSize);
  store.close();
  return store;
}
