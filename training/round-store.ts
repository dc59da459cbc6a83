/**
 * The predictor heads' training rows (training/train-ldlp.ts), streamed from round logs.
 *
 * `RoundStore.open` reads the logs once, one record batch at a time, and keeps only what is
 * small per row: the label, the sequence, and where the row's inputs sit (its round and depth
 * index), about 16 bytes per row; the inputs themselves (2d floats a row: feature and root
 * embedding for the LDLP, a draft hidden row and its embedding for SpecDec++) stay in the logs.
 * Rows are grouped into blocks of `blockRows` consecutive rows, cut by row number alone (so
 * the blocks, and any order drawn over them, do not depend on how the logs were batched);
 * `row(i)` loads the block holding row i from the record batches that cover it into a small LRU
 * cache (training/dataset.ts BlockCache), so at most cacheBlocks * blockRows rows are held.
 */
import { FormatError } from '../src/errors.ts';
import { costAwareDepth } from '../src/tune/tuning.ts';
import type { PredictorKind } from '../src/io/predictor-io.ts';
import { BlockCache, batchAt, SHUFFLE_BLOCKS, type BatchRef } from './dataset.ts';
import { openRoundLogs, type RoundBatch, type RoundLogFile } from './lengths.ts';

export interface RoundStoreOptions {
  /** Rows per block. Default 4096. */
  blockRows?: number;
  /** Blocks kept loaded. Default 2 * SHUFFLE_BLOCKS + 2, as the feature store (training/dataset.ts). */
  cacheBlocks?: number;
}

interface Block {
  rows: number;
  x: Float32Array; // [rows, 2d]
}

/** A predictor dataset over round logs; see the module comment. Satisfies train-ldlp's PredictorDataset. */
export class RoundStore {
  readonly width: number;
  /** Block of each row (rows in log order; block b holds rows [b * blockRows, (b + 1) * blockRows)). */
  readonly rowBlock: Int32Array; // [n]
  private readonly cache: BlockCache<Block>;
  private lastBatch: { ref: BatchRef; b: RoundBatch } | null = null;

  private constructor(
    readonly dim: number,
    readonly maxDepth: number,
    readonly n: number,
    readonly y: Float32Array, // [n]
    readonly seq: Int32Array, // [n]
    /** Global round of each row, and its depth index t (-1: the round's own feature and root embedding). */
    private readonly round: Float64Array, // [n]
    private readonly depthIndex: Int8Array, // [n]
    readonly blockRows: number,
    private readonly files: RoundLogFile[],
    private readonly batches: BatchRef[],
    cacheBlocks: number,
  ) {
    this.width = 2 * dim;
    this.rowBlock = Int32Array.from({ length: n }, (_, i) => Math.floor(i / blockRows));
    this.cache = new BlockCache(cacheBlocks);
  }

  /**
   * Indexes the rows `head` trains on in one streamed pass (one record batch in memory at a
   * time). ldlp: one row per round, label its accepted length (or with `depthCosts` the
   * cost-aware depth); a round drafted shallower than D that accepted everything is censored and
   * skipped. specdec++: one row per judged best-path node, label accepted (1) or not (0).
   */
  static async open(paths: string[], head: PredictorKind, depthCosts?: number[], opts: RoundStoreOptions = {}): Promise<RoundStore> {
    const { dim, maxDepth: D, files } = openRoundLogs(paths);
    const y: number[] = [], seq: number[] = [], round: number[] = [], depthIndex: number[] = [], batches: BatchRef[] = [];
    const costs = depthCosts?.slice(0, D + 1);
    let rounds = 0;
    try {
      for (let f = 0; f < files.length; f++) {
        for (let i = 0; i < files[f].batches.length; i++) {
          const b = files[f].read(i);
          batches.push({ file: f, index: i, firstRow: rounds, rows: b.rows });
          for (let r = 0; r < b.rows; r++, rounds++) {
            if (!(b.accepted[r] >= 0 && b.accepted[r] <= b.depth[r] && b.depth[r] <= D))
              throw new FormatError(paths[f], `round ${rounds - batches.at(-1)!.firstRow} of record batch ${i}: accepted ${b.accepted[r]} of depth ${b.depth[r]} is outside 0..depth..${D}`);
            const add = (t: number, label: number) => (y.push(label), seq.push(b.seqId[r]), round.push(rounds), depthIndex.push(t));
            if (head === 'ldlp') {
              if (b.depth[r] === D || b.accepted[r] < b.depth[r]) add(-1, costs ? costAwareDepth(b.accepted[r], costs) : b.accepted[r]);
            } else for (let t = 0; t < D; t++) if (b.pathFlag[r * D + t] >= 0) add(t, b.pathFlag[r * D + t]);
          }
          if (i % 64 === 63) await new Promise((resolve) => setImmediate(resolve)); // let other work run in a long pass
        }
      }
    } catch (e) {
      for (const file of files) file.close();
      throw e;
    }
    return new RoundStore(dim, D, y.length, Float32Array.from(y), Int32Array.from(seq), Float64Array.from(round), Int8Array.from(depthIndex),
      Math.max(1, opts.blockRows ?? 4096), files, batches, opts.cacheBlocks ?? 2 * SHUFFLE_BLOCKS + 2);
  }

  /** Rows held at most at once (in cached blocks). */
  get peakLoadedRows(): number {
    return this.cache.peakLoadedRows;
  }

  /** Blocks loaded so far. */
  get blockLoads(): number {
    return this.cache.loads;
  }

  /** Copies row i's inputs [2d] into `out` at `at`. */
  row(i: number, out: Float32Array, at: number): void {
    const b = this.rowBlock[i], w = this.width;
    const blk = this.cache.get(b, (id) => this.load(id));
    const k = i - b * this.blockRows;
    out.set(blk.x.subarray(k * w, (k + 1) * w), at);
  }

  private load(id: number): Block {
    const d = this.dim, D = this.maxDepth, w = this.width;
    const first = id * this.blockRows, rows = Math.min(this.n, first + this.blockRows) - first;
    const x = new Float32Array(rows * w);
    for (let k = 0, ref = batchAt(this.batches, this.round[first]); k < rows; k++) {
      const r = this.round[first + k], t = this.depthIndex[first + k];
      while (this.batches[ref].firstRow + this.batches[ref].rows <= r) ref++; // rows ascend: walk forward
      const src = this.batchOf(this.batches[ref]), a = r - this.batches[ref].firstRow;
      if (t < 0) {
        x.set(src.feature.subarray(a * d, (a + 1) * d), k * w);
        x.set(src.rootEmbedding.subarray(a * d, (a + 1) * d), k * w + d);
      } else {
        const o = (a * D + t) * d;
        x.set(src.pathHidden.subarray(o, o + d), k * w);
        x.set(src.pathEmbedding.subarray(o, o + d), k * w + d);
      }
    }
    return { rows, x };
  }

  /** The decoded record batch `ref` (the last one decoded is kept: consecutive blocks share batches). */
  private batchOf(ref: BatchRef): RoundBatch {
    if (this.lastBatch?.ref !== ref) this.lastBatch = { ref, b: this.files[ref.file].read(ref.index) };
    return this.lastBatch.b;
  }

  close(): void {
    for (const f of this.files) f.close();
    this.cache.clear();
    this.lastBatch = null;
  }
}
