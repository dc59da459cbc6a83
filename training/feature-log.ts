/**
 * The feature log: what the target model computed over a corpus, in Apache Arrow IPC (stream
 * format), one row per token position:
 *
 *   seq_id         int32
 *   position       int32    position of the token in its sequence
 *   token_id       int32    the token at `position`
 *   next_token_id  int32    the token at `position + 1`, or -1 when the sequence ends here
 *   feature        FixedSizeList<float32>[d]   target's final-norm output at `position`
 *   top_ids        FixedSizeList<int32>[k]     (k > 0 only) target's top-k next tokens
 *   top_probs      FixedSizeList<float32>[k]   (k > 0 only) their probabilities
 *
 * Rows of one sequence are consecutive and in position order, so a training window is a run of
 * rows. A JSON sidecar (`<log>.json`) records where the log came from (model hash, config,
 * corpus) and its counts.
 *
 * Writing is batch by batch with bounded memory into `<log>.tmp-<pid>`, renamed on `finish`, so
 * an interrupted run never leaves a file at the final path. Reading is by record batch, in any
 * order (`FeatureLogFile`), one batch in memory at a time; columns come back as typed-array views.
 */
import { closeSync, fstatSync, readFileSync } from 'node:fs';
import { DataType, Field, FixedSizeList, Float32, Int32, Precision, RecordBatch, Schema, type Data } from 'apache-arrow';
import { FormatError } from '../src/errors.ts';
import { IpcBatchFile } from './arrow-ipc.ts';
import { ArrowLogWriter, columnData, listField } from './arrow-log-writer.ts';
import { openForRead } from '../src/io/read.ts';
import type { ModelConfig } from '../src/model/config.ts';
import type { WeightQuant } from '../src/model/weights.ts';

/** Rows buffered before a record batch is written. */
export const DEFAULT_BATCH_ROWS = 2048;

/** The JSON sidecar of a feature log. */
export interface FeatureLogSidecar {
  format: 'eaglet-feature-log';
  version: 1;
  /** `quant`: the target's weight format when it ran quantized (`eaglet log --quantize`, or a quantized checkpoint). */
  model: { source: string; sha256: string; config: ModelConfig; quant?: WeightQuant };
  corpus: { paths: string[]; mode: 'teacher' | 'generate'; seqLen: number; maxTokens: number; seed?: number };
  dim: number;
  topK: number;
  counts: LogCounts;
}

export interface LogCounts {
  sequences: number;
  rows: number;
  batches: number;
}

/** Consecutive rows of one sequence, handed to `FeatureLogWriter.append`. */
export interface FeatureRows {
  seqId: number;
  /** Position of the first row. */
  startPosition: number;
  tokens: ArrayLike<number>; // [n]
  /** -1 where the next token is unknown (end of sequence). */
  nextTokens: ArrayLike<number>; // [n]
  features: Float32Array; // [n, d]
  topIds?: Int32Array; // [n, k]
  topProbs?: Float32Array; // [n, k]
}

/** One record batch read back: views, valid until the next batch is requested. */
export interface FeatureBatch {
  rows: number;
  seqId: Int32Array; // [rows]
  position: Int32Array; // [rows]
  tokenId: Int32Array; // [rows]
  nextTokenId: Int32Array; // [rows]
  features: Float32Array; // [rows, d]
  topIds: Int32Array | null; // [rows, k]
  topProbs: Float32Array | null; // [rows, k]
}

/** Where the sidecar of `logPath` lives. */
export const sidecarPath = (logPath: string): string => `${logPath}.json`;

function logSchema(dim: number, topK: number): Schema {
  const fields = [
    new Field('seq_id', new Int32(), false),
    new Field('position', new Int32(), false),
    new Field('token_id', new Int32(), false),
    new Field('next_token_id', new Int32(), false),
    listField('feature', new Float32(), dim),
  ];
  if (topK > 0) fields.push(listField('top_ids', new Int32(), topK), listField('top_probs', new Float32(), topK));
  return new Schema(fields);
}

/** Streams feature rows to an Arrow IPC file; see the module comment for the layout. */
export class FeatureLogWriter {
  private readonly schema: Schema;
  private readonly file: ArrowLogWriter;
  private pending: FeatureRows[] = [];
  private pendingRows = 0;
  private lastSeq = -1;
  private readonly counts: LogCounts = { sequences: 0, rows: 0, batches: 0 };

  /**
   * @param path final path of the log (written only by `finish`)
   * @param dim feature width d
   * @param topK width of the top-k columns; 0 = no top-k columns
   * @param batchRows rows per record batch (default DEFAULT_BATCH_ROWS)
   */
  constructor(readonly path: string, readonly dim: number, readonly topK = 0, readonly batchRows = DEFAULT_BATCH_ROWS) {
    this.schema = logSchema(dim, topK);
    this.file = new ArrowLogWriter(path);
  }

  /** Adds rows; writes a record batch whenever `batchRows` rows are buffered. */
  async append(r: FeatureRows): Promise<void> {
    const n = r.tokens.length;
    if (r.nextTokens.length !== n || r.features.length !== n * this.dim)
      throw new Error(`append: ${n} tokens need ${n} next tokens and ${n * this.dim} feature values`);
    if (this.topK > 0 && (r.topIds?.length !== n * this.topK || r.topProbs?.length !== n * this.topK))
      throw new Error(`append: top-k columns need ${n * this.topK} values`);
    if (r.seqId !== this.lastSeq) this.counts.sequences++;
    this.lastSeq = r.seqId;
    this.pending.push(r);
    this.pendingRows += n;
    if (this.pendingRows >= this.batchRows) await this.flush();
  }

  /** Writes what is buffered, waits for the file stream to drain (keeps memory bounded). */
  private async flush(): Promise<void> {
    if (this.pendingRows === 0) return;
    await this.writeBatch();
  }

  /** Writes the buffered rows as one record batch (none: an empty batch, which still carries the schema). */
  private async writeBatch(): Promise<void> {
    const n = this.pendingRows, d = this.dim, k = this.topK;
    // Fresh buffers per batch: the IPC writer queues views of them, not copies.
    const seq = new Int32Array(n), pos = new Int32Array(n), tok = new Int32Array(n), next = new Int32Array(n); // [n]
    const feat = new Float32Array(n * d); // [n, d]
    const topIds = new Int32Array(n * k), topProbs = new Float32Array(n * k); // [n, k]
    let row = 0;
    for (const r of this.pending) {
      for (let i = 0; i < r.tokens.length; i++, row++) {
        seq[row] = r.seqId;
        pos[row] = r.startPosition + i;
        tok[row] = r.tokens[i];
        next[row] = r.nextTokens[i];
      }
      const first = row - r.tokens.length;
      feat.set(r.features, first * d);
      if (k > 0) {
        topIds.set(r.topIds!, first * k);
        topProbs.set(r.topProbs!, first * k);
      }
    }
    const columns = [seq, pos, tok, next, feat, ...(k > 0 ? [topIds, topProbs] : [])];
    this.counts.rows += n;
    this.counts.batches++;
    this.pending = [];
    this.pendingRows = 0;
    await this.file.write(this.schema, n, columns.map((values, i) => columnData(this.schema.fields[i], n, values)));
  }

  /**
   * Writes the last batch and the sidecar, then renames the log into place.
   * The sidecar's counts are filled in here.
   */
  async finish(meta: Omit<FeatureLogSidecar, 'counts' | 'format' | 'version' | 'dim' | 'topK'>): Promise<LogCounts> {
    await this.flush();
    if (this.counts.batches === 0) await this.writeBatch(); // an empty log still has a schema
    const sidecar: FeatureLogSidecar = { format: 'eaglet-feature-log', version: 1, ...meta, dim: this.dim, topK: this.topK, counts: { ...this.counts } };
    await this.file.finish(sidecarPath(this.path), sidecar);
    return sidecar.counts;
  }

  /** Drops the partial file. */
  async abort(): Promise<void> {
    await this.file.abort();
  }
}

/** Reads and checks the sidecar of a log, including that its counts fit the log's size. */
export function readSidecar(logPath: string): FeatureLogSidecar {
  // The log itself first: a path that is not there is named as given, not as its sidecar.
  const logBytes = fileSize(logPath);
  const p = sidecarPath(logPath);
  let s: FeatureLogSidecar;
  try {
    s = JSON.parse(readFileSync(p, 'utf8'));
  } catch (e) {
    throw new FormatError(p, `cannot read the feature-log sidecar (${(e as Error).message})`);
  }
  const count = (v: unknown): boolean => Number.isSafeInteger(v) && (v as number) >= 0;
  if (typeof s !== 'object' || s === null || s.format !== 'eaglet-feature-log' || !(count(s.dim) && s.dim > 0) || !count(s.topK))
    throw new FormatError(p, 'not an eaglet feature-log sidecar');
  if (typeof s.counts !== 'object' || s.counts === null || !count(s.counts.rows) || !count(s.counts.sequences) || !count(s.counts.batches))
    throw new FormatError(p, 'counts must hold non-negative integers rows, sequences, batches');
  // Readers size buffers from counts.rows: a row takes at least 16 + 4 (d + 2k) bytes in the log.
  if (s.counts.rows * (16 + 4 * (s.dim + 2 * s.topK)) > logBytes)
    throw new FormatError(p, `claims ${s.counts.rows} rows of width ${s.dim}, more than the ${logBytes}-byte log can hold`);
  return s;
}

function fileSize(path: string): number {
  const fd = openForRead(path);
  try {
    return fstatSync(fd).size;
  } finally {
    closeSync(fd);
  }
}

/** Columns of the log and the Arrow types they must have. */
const COLUMNS: [string, (t: DataType) => boolean][] = [
  ...['seq_id', 'position', 'token_id', 'next_token_id'].map((n): [string, (t: DataType) => boolean] => [n, isInt32]),
  ['feature', (t) => isListOf(t, Float32)],
];

/** Which widths a reader expects; a log of other widths is refused before any batch is read. */
export interface FeatureLogShape {
  dim: number;
  topK?: number;
}

/** Where each column sits in a log's schema, and its widths. */
interface LogLayout {
  names: string[];
  dim: number;
  topK: number;
  hasTop: boolean;
}

/** Checks a log's schema (columns, types, widths against `expect`) and returns its layout. */
function logLayout(path: string, schema: Schema | null | undefined, expect?: FeatureLogShape): LogLayout {
  if (!schema) throw new FormatError(path, 'not an Arrow IPC stream: no schema message');
  const fields = schema.fields, names = fields.map((f) => f.name);
  const typeOf = (name: string) => fields[names.indexOf(name)]?.type;
  for (const [col, ok] of COLUMNS) {
    if (!names.includes(col)) throw new FormatError(path, `missing column ${col}`);
    if (!ok(typeOf(col))) throw new FormatError(path, `column ${col} has type ${describe(typeOf(col))}, expected ${col === 'feature' ? 'FixedSizeList<Float32>' : 'Int32'}`);
  }
  const hasTop = names.includes('top_ids') || names.includes('top_probs');
  if (hasTop && !(isListOf(typeOf('top_ids'), Int32) && isListOf(typeOf('top_probs'), Float32) && (typeOf('top_ids') as FixedSizeList).listSize === (typeOf('top_probs') as FixedSizeList).listSize))
    throw new FormatError(path, 'top_ids and top_probs must be FixedSizeList<Int32> and FixedSizeList<Float32> of one width');
  const dim = (typeOf('feature') as FixedSizeList).listSize, topK = hasTop ? (typeOf('top_ids') as FixedSizeList).listSize : 0;
  if (expect && (dim !== expect.dim || (expect.topK !== undefined && topK !== expect.topK)))
    throw new FormatError(path, `holds features of width ${dim} and top-k ${topK}, expected width ${expect.dim}${expect.topK !== undefined ? ` and top-k ${expect.topK}` : ''}`);
  return { names, dim, topK, hasTop };
}

/** The columns of decoded record batch `index` as views, each checked to hold rows * width values. */
function batchColumns(path: string, index: number, batch: RecordBatch, l: LogLayout): FeatureBatch {
  const rows = batch.numRows;
  const col = (name: string, view: (d: Data) => Int32Array | Float32Array, width: number) => {
    const v = view(batch.data.children[l.names.indexOf(name)]);
    // A lying batch length makes views shorter than rows * width: refuse rather than misalign rows.
    if (v.length !== rows * width) throw new FormatError(path, `record batch ${index}: column ${name} holds ${v.length} values, ${rows} rows need ${rows * width}`);
    return v;
  };
  return {
    rows,
    seqId: col('seq_id', primitiveView, 1) as Int32Array,
    position: col('position', primitiveView, 1) as Int32Array,
    tokenId: col('token_id', primitiveView, 1) as Int32Array,
    nextTokenId: col('next_token_id', primitiveView, 1) as Int32Array,
    features: col('feature', listView, l.dim) as Float32Array,
    topIds: l.hasTop ? (col('top_ids', listView, l.topK) as Int32Array) : null,
    topProbs: l.hasTop ? (col('top_probs', listView, l.topK) as Float32Array) : null,
  };
}

/**
 * A feature log opened for random access by record batch: the headers are walked (and checked)
 * once, then `read(i)` decodes batch i alone from its byte range. Only the batch being read is
 * in memory, so training can visit a log of any size in any order (training/dataset.ts).
 */
export class FeatureLogFile {
  readonly dim: number;
  readonly topK: number;
  /** Byte ranges of the record-batch messages, in file order. */
  readonly batches: { offset: number; bytes: number }[];
  private readonly file: IpcBatchFile;
  private readonly layout: LogLayout;

  /** Opens `path`; with `expect`, a log of other widths is refused before any batch is read. */
  constructor(readonly path: string, expect?: FeatureLogShape) {
    this.file = new IpcBatchFile(path);
    try {
      this.layout = logLayout(path, this.file.schema, expect);
    } catch (e) {
      this.file.close();
      throw e;
    }
    this.dim = this.layout.dim;
    this.topK = this.layout.topK;
    this.batches = this.file.batches;
  }

  /** Decodes record batch `index`: views into a buffer of its own (valid until dropped). */
  read(index: number): FeatureBatch {
    return batchColumns(this.path, index, this.file.read(index), this.layout);
  }

  close(): void {
    this.file.close();
  }
}

/**
 * Reads a feature log record batch by record batch; every column is a zero-copy typed-array view.
 * With `expect`, a log whose feature (or top-k) width differs is refused up front.
 */
export async function* readFeatureLog(path: string, expect?: FeatureLogShape): AsyncGenerator<FeatureBatch> {
  const file = new FeatureLogFile(path, expect);
  try {
    for (let i = 0; i < file.batches.length; i++) yield file.read(i);
  } finally {
    file.close();
  }
}

/** An Arrow type for a message; a malformed type (a list without its child) cannot print itself. */
function describe(t: DataType | undefined): string {
  try {
    return String(t);
  } catch {
    return 'a malformed type';
  }
}

function isInt32(t: DataType | undefined): boolean {
  return t instanceof Int32 || (DataType.isInt(t) && t.bitWidth === 32 && t.isSigned);
}

function isListOf(t: DataType | undefined, item: typeof Int32 | typeof Float32): boolean {
  if (!DataType.isFixedSizeList(t) || !(t.listSize > 0)) return false;
  const child = t.children[0]?.type;
  return item === Float32 ? DataType.isFloat(child) && child.precision === Precision.SINGLE : isInt32(child);
}

/** A primitive column of one record batch as a zero-copy typed-array view. */
export function primitiveView(d: Data): Int32Array | Float32Array {
  return (d.values as Int32Array | Float32Array).subarray(d.offset, d.offset + d.length);
}

/** A FixedSizeList column of one record batch as one zero-copy typed-array view [rows, width]. */
export function listView(d: Data): Int32Array | Float32Array {
  const width = (d.type as FixedSizeList).listSize, child = d.children[0];
  const start = child.offset + d.offset * width;
  return (child.values as Int32Array | Float32Array).subarray(start, start + d.length * width);
}
