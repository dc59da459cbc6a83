/**
 * Length data for the trained length policies (`eaglet collect-lengths`): speculative decoding
 * with a static tree at the collection depth D, one Arrow row per round (stream format):
 *
 *   seq_id, position, root_token, max_depth, depth, tree_size    int32
 *   accepted        int32    drafted tokens the target accepted: the LDLP label (oracle depth)
 *   draft_ms, verify_ms      float32
 *   feature         FixedSizeList<float32>[d]     target feature of the last committed token
 *   root_embedding  FixedSizeList<float32>[d]     embedding of the root token
 *   path_token      FixedSizeList<int32>[D]       best frontier node's token at depth t (index t-1)
 *   path_flag       FixedSizeList<int32>[D]       its verdict given its prefix: 1 accepted, 0 rejected,
 *                                                 -1 not judged (prefix rejected) or not seen
 *   path_hidden     FixedSizeList<float32>[D*d]   draft hidden row that proposed it (SpecDec++ input)
 *   path_embedding  FixedSizeList<float32>[D*d]   its token embedding
 *
 * Recording is a policy decorator (`RoundRecorder`): it wraps the static policy, copies the
 * round state at `plan`, follows the best frontier node in `continueDrafting`, and is labelled
 * with the tokens each round emitted, so the decoding loop runs unchanged. The policy sees the
 * frontier at depths 1..D-1 only (the last level is never asked about), so path columns cover
 * those depths. A best node pruned from the verified tree counts as rejected: a little label
 * noise when totalTokens is small.
 *
 * Files are written to `<out>.tmp-<pid>` and renamed by `finish`, with a JSON sidecar
 * `<out>.json` (source, tree, counts).
 */
import { closeSync, readFileSync } from 'node:fs';
import { DataType, Field, Float32, Int32, Precision, Schema } from 'apache-arrow';
import { ArrowLogWriter, columnData, listField } from './arrow-log-writer.ts';
import type { Frontier } from '../trees/index.ts';
import { loadGenerator } from '../src/api.ts';
import { IpcBatchFile } from './arrow-ipc.ts';
import { openForRead } from '../src/io/read.ts';
import { FormatError, UsageError } from '../src/errors.ts';
import type { TreeShape } from '../trees/index.ts';
import type { GenerationChunk } from '../src/generate/generator.ts';
import type { DraftHead } from '../src/io/draft-head-io.ts';
import type { LoadedModel } from '../src/load-model.ts';
import { EMBEDDING, type Tensor } from '../src/model/weights.ts';
import { dense, quantizedModel, type QuantName } from '../src/model/quantize.ts';
import { StaticPolicy, type LengthPolicy, type RoundOutcome, type RoundPlan, type RoundState } from '../src/policies/policy.ts';
import { listView, primitiveView } from './feature-log.ts';
import type { OnProgress } from './progress.ts';

/** One labelled round (buffers owned by the recorder: copy to keep). */
export interface RoundRecord {
  position: number;
  rootToken: number;
  maxDepth: number;
  depth: number;
  treeSize: number;
  accepted: number;
  draftMs: number;
  verifyMs: number;
  feature: Float32Array; // [d]
  rootEmbedding: Float32Array; // [d]
  pathToken: Int32Array; // [D]
  pathFlag: Int32Array; // [D]
  pathHidden: Float32Array; // [D, d]
  pathEmbedding: Float32Array; // [D, d]
}

/** Wraps a policy and records each round; see the module comment. */
export class RoundRecorder implements LengthPolicy {
  readonly name: string;
  private readonly rec: RoundRecord;
  private readonly paths: Int32Array[]; // 2 x [k, D]: tokens of each frontier node's path, double-buffered
  private readonly bestPaths: Int32Array; // [D, D]: path of the best node at depth t (row t-1)
  private seen = 0; // depths recorded this round
  private outcome: RoundOutcome | null = null;

  /**
   * @param embeddings the target's token embedding table [V, d]
   * @param maxDepth D, the deepest round recorded
   */
  constructor(readonly inner: LengthPolicy, private readonly embeddings: Tensor, readonly maxDepth: number, topK: number) {
    this.name = `record(${inner.name})`;
    const d = embeddings.shape[1], D = maxDepth;
    this.rec = {
      position: 0, rootToken: 0, maxDepth: 0, depth: 0, treeSize: 0, accepted: 0, draftMs: 0, verifyMs: 0,
      feature: new Float32Array(d), rootEmbedding: new Float32Array(d),
      pathToken: new Int32Array(D), pathFlag: new Int32Array(D), pathHidden: new Float32Array(D * d), pathEmbedding: new Float32Array(D * d),
    };
    this.paths = [new Int32Array(topK * D), new Int32Array(topK * D)];
    this.bestPaths = new Int32Array(D * D);
  }

  plan(s: RoundState): RoundPlan {
    const r = this.rec;
    r.position = s.position;
    r.rootToken = s.rootToken;
    r.maxDepth = s.maxDepth;
    r.feature.set(s.lastFeature);
    this.embed(s.rootToken, r.rootEmbedding, 0);
    r.pathHidden.fill(0);
    r.pathEmbedding.fill(0);
    r.pathToken.fill(-1);
    this.seen = 0;
    this.outcome = null;
    return this.inner.plan(s);
  }

  continueDrafting(f: Frontier, hidden?: Float32Array): boolean {
    const t = f.depth, D = this.maxDepth, d = this.rec.feature.length, r = this.rec;
    if (hidden && t >= 1 && t <= D && t === this.seen + 1) {
      // Extend every frontier node's path from its parent's, then keep the best node's.
      const [prev, next] = this.paths;
      for (let i = 0; i < f.count; i++) {
        next.set(prev.subarray(f.parentSlots[i] * D, f.parentSlots[i] * D + t - 1), i * D);
        next[i * D + t - 1] = f.tokens[i];
      }
      this.paths.reverse();
      this.bestPaths.set(next.subarray(0, t), (t - 1) * D);
      r.pathToken[t - 1] = f.tokens[0];
      r.pathHidden.set(hidden.subarray(f.parentSlots[0] * d, (f.parentSlots[0] + 1) * d), (t - 1) * d);
      this.embed(f.tokens[0], r.pathEmbedding, (t - 1) * d);
      this.seen = t;
    }
    return this.inner.continueDrafting?.(f, hidden) ?? true;
  }

  observe(o: RoundOutcome): void {
    this.outcome = o;
    this.inner.observe?.(o);
  }

  /**
   * Labels the round just verified with the chunk it emitted. Returns null when no drafted
   * round is pending or the chunk was cut short (EOS or token budget) before its drafted tokens.
   */
  take(chunk: GenerationChunk): RoundRecord | null {
    const o = this.outcome;
    this.outcome = null;
    if (!o) return null;
    const drafted = chunk.fromDraft.filter(Boolean).length;
    if (drafted < o.accepted) return null;
    const r = this.rec, D = this.maxDepth, A = chunk.ids;
    Object.assign(r, { depth: o.depth, treeSize: o.treeSize, accepted: o.accepted, draftMs: o.draftMs, verifyMs: o.verifyMs });
    for (let t = 1; t <= D; t++) {
      let flag = -1;
      if (t <= this.seen && t - 1 <= o.accepted) {
        const path = this.bestPaths.subarray((t - 1) * D, (t - 1) * D + t);
        let prefix = true;
        for (let j = 0; j < t - 1 && prefix; j++) prefix = path[j] === A[j];
        if (prefix) flag = t <= o.accepted && path[t - 1] === A[t - 1] ? 1 : 0;
      }
      r.pathFlag[t - 1] = flag;
    }
    return r;
  }

  private embed(token: number, out: Float32Array, at: number): void {
    const d = this.rec.feature.length;
    out.set(this.embeddings.data.subarray(token * d, (token + 1) * d), at);
  }
}

// ---------------------------------------------------------------- the Arrow round log

/** The JSON sidecar of a round log. */
export interface RoundLogSidecar {
  format: 'eaglet-round-log';
  version: 1;
  dim: number;
  maxDepth: number;
  tree: TreeShape;
  source: { model: string; draft: string; temperature: number; seed: number; maxNewTokens: number };
  counts: { rounds: number; sequences: number };
}

export const roundSidecarPath = (log: string): string => `${log}.json`;

const INT_COLUMNS = ['seq_id', 'position', 'root_token', 'max_depth', 'depth', 'tree_size', 'accepted'] as const;
const FLOAT_COLUMNS = ['draft_ms', 'verify_ms'] as const;
/** List columns: name, element type, width as a multiple of (d, D). */
const LIST_COLUMNS = [
  ['feature', 'f32', 1, 0], ['root_embedding', 'f32', 1, 0], ['path_token', 'i32', 0, 1], ['path_flag', 'i32', 0, 1],
  ['path_hidden', 'f32', 0, 2], ['path_embedding', 'f32', 0, 2],
] as const;

function listWidth(spec: (typeof LIST_COLUMNS)[number], d: number, D: number): number {
  const [, , byD, byDepth] = spec;
  return byD ? d : byDepth === 1 ? D : D * d;
}

/** Streams round records to an Arrow IPC file (see the module comment). */
export class RoundLogWriter {
  private readonly schema: Schema;
  private readonly file: ArrowLogWriter;
  private cols!: { ints: Int32Array[]; floats: Float32Array[]; lists: (Int32Array | Float32Array)[] };
  private n = 0;
  private lastSeq = -1;
  readonly counts = { rounds: 0, sequences: 0 };

  /** @param batchRows rounds per record batch. */
  constructor(readonly path: string, readonly dim: number, readonly maxDepth: number, readonly batchRows = 1024) {
    this.schema = new Schema([
      ...INT_COLUMNS.map((c) => new Field(c, new Int32(), false)),
      ...FLOAT_COLUMNS.map((c) => new Field(c, new Float32(), false)),
      ...LIST_COLUMNS.map((s) => listField(s[0], s[1] === 'f32' ? new Float32() : new Int32(), listWidth(s, dim, maxDepth))),
    ]);
    this.file = new ArrowLogWriter(path);
    this.fresh();
  }

  /** Fresh column buffers per batch: the IPC writer queues views of them, not copies. */
  private fresh(): void {
    const B = this.batchRows;
    this.cols = {
      ints: INT_COLUMNS.map(() => new Int32Array(B)), // [B] each
      floats: FLOAT_COLUMNS.map(() => new Float32Array(B)),
      lists: LIST_COLUMNS.map((s) => new (s[1] === 'f32' ? Float32Array : Int32Array)(B * listWidth(s, this.dim, this.maxDepth))), // [B, width]
    };
    this.n = 0;
  }

  async append(seqId: number, r: RoundRecord): Promise<void> {
    const i = this.n++, c = this.cols;
    [seqId, r.position, r.rootToken, r.maxDepth, r.depth, r.treeSize, r.accepted].forEach((v, k) => (c.ints[k][i] = v));
    c.floats[0][i] = r.draftMs;
    c.floats[1][i] = r.verifyMs;
    [r.feature, r.rootEmbedding, r.pathToken, r.pathFlag, r.pathHidden, r.pathEmbedding].forEach((v, k) => c.lists[k].set(v, i * v.length));
    if (seqId !== this.lastSeq) this.counts.sequences++;
    this.lastSeq = seqId;
    this.counts.rounds++;
    if (this.n >= this.batchRows) await this.flush();
  }

  private async flush(): Promise<void> {
    if (this.n === 0 && this.counts.rounds > 0) return;
    const n = this.n, c = this.cols, columns = [...c.ints, ...c.floats, ...c.lists];
    const batch = columns.map((values, k) => columnData(this.schema.fields[k], n, values));
    this.fresh();
    await this.file.write(this.schema, n, batch);
  }

  /** Writes the last batch and the sidecar, then renames the log into place. */
  async finish(meta: Pick<RoundLogSidecar, 'tree' | 'source'>): Promise<RoundLogSidecar> {
    await this.flush();
    const sidecar: RoundLogSidecar = { format: 'eaglet-round-log', version: 1, dim: this.dim, maxDepth: this.maxDepth, ...meta, counts: { ...this.counts } };
    await this.file.finish(roundSidecarPath(this.path), sidecar);
    return sidecar;
  }

  /** Drops the partial file. */
  async abort(): Promise<void> {
    await this.file.abort();
  }
}

/** Rounds read back (one record batch, or whole logs concatenated): one entry per round, list columns flat. */
export interface RoundBatch {
  rows: number;
  seqId: Int32Array; // [n]
  position: Int32Array;
  rootToken: Int32Array;
  maxDepthRound: Int32Array;
  depth: Int32Array;
  treeSize: Int32Array;
  accepted: Int32Array;
  draftMs: Float32Array;
  verifyMs: Float32Array;
  feature: Float32Array; // [n, d]
  rootEmbedding: Float32Array; // [n, d]
  pathToken: Int32Array; // [n, D]
  pathFlag: Int32Array; // [n, D]
  pathHidden: Float32Array; // [n, D, d]
  pathEmbedding: Float32Array; // [n, D, d]
}

/** Round logs read back whole and concatenated (`readRoundLogs`). */
export interface RoundData extends RoundBatch {
  dim: number;
  maxDepth: number;
}

/** Reads and checks a round log's sidecar. */
export function readRoundSidecar(log: string): RoundLogSidecar {
  closeSync(openForRead(log)); // a log that is not there is named as given, not as its sidecar
  const p = roundSidecarPath(log);
  let s: RoundLogSidecar;
  try {
    s = JSON.parse(readFileSync(p, 'utf8'));
  } catch (e) {
    throw new FormatError(p, `cannot read the round-log sidecar (${(e as Error).message})`);
  }
  if (s?.format !== 'eaglet-round-log' || !(s.dim > 0) || !(s.maxDepth > 0)) throw new FormatError(p, 'not an eaglet round-log sidecar');
  return s;
}

/** RoundBatch field of each column. */
const FIELD_OF: Record<string, keyof RoundBatch> = {
  seq_id: 'seqId', position: 'position', root_token: 'rootToken', max_depth: 'maxDepthRound', depth: 'depth', tree_size: 'treeSize', accepted: 'accepted',
  draft_ms: 'draftMs', verify_ms: 'verifyMs', feature: 'feature', root_embedding: 'rootEmbedding', path_token: 'pathToken', path_flag: 'pathFlag',
  path_hidden: 'pathHidden', path_embedding: 'pathEmbedding',
};

/**
 * A round log opened for reading by record batch (training/arrow-ipc.ts IpcBatchFile): its
 * columns checked against the sidecar's d and D up front, then one batch in memory at a time.
 */
export class RoundLogFile {
  readonly batches: { offset: number; bytes: number }[];
  private readonly file: IpcBatchFile;
  private readonly columns: number[]; // schema index of each of COLUMN_NAMES

  constructor(readonly path: string, readonly dim: number, readonly maxDepth: number) {
    this.file = new IpcBatchFile(path);
    const fields = this.file.schema.fields, names = fields.map((f) => f.name);
    try {
      this.columns = COLUMN_NAMES.map((name) => {
        const i = names.indexOf(name);
        if (i < 0) throw new FormatError(path, `missing column ${name}`);
        const spec = LIST_COLUMNS.find((s) => s[0] === name), type = fields[i].type;
        const float = spec ? spec[1] === 'f32' : (FLOAT_COLUMNS as readonly string[]).includes(name);
        const item = spec ? (DataType.isFixedSizeList(type) ? type.children[0]?.type : undefined) : type;
        const widthOk = !spec || (DataType.isFixedSizeList(type) && type.listSize === listWidth(spec, dim, maxDepth));
        const itemOk = float ? DataType.isFloat(item) && item.precision === Precision.SINGLE : DataType.isInt(item) && item.bitWidth === 32;
        if (!widthOk || !itemOk) throw new FormatError(path, `column ${name} has type ${String(type)}, expected ${spec ? `FixedSizeList<${float ? 'Float32' : 'Int32'}>[${listWidth(spec, dim, maxDepth)}]` : float ? 'Float32' : 'Int32'}`);
        return i;
      });
    } catch (e) {
      this.file.close();
      throw e;
    }
    this.batches = this.file.batches;
  }

  /** Record batch `index`, every column a zero-copy view checked to hold rows * width values. */
  read(index: number): RoundBatch {
    const batch = this.file.read(index), rows = batch.numRows;
    const out: Partial<Record<keyof RoundBatch, unknown>> = { rows };
    COLUMN_NAMES.forEach((name, k) => {
      const col = batch.data.children[this.columns[k]], spec = LIST_COLUMNS.find((s) => s[0] === name);
      const v = spec ? listView(col) : primitiveView(col), width = spec ? listWidth(spec, this.dim, this.maxDepth) : 1;
      if (v.length !== rows * width) throw new FormatError(this.path, `record batch ${index}: column ${name} holds ${v.length} values, ${rows} rows need ${rows * width}`);
      out[FIELD_OF[name]] = v;
    });
    return out as RoundBatch;
  }

  close(): void {
    this.file.close();
  }
}

const COLUMN_NAMES = [...INT_COLUMNS, ...FLOAT_COLUMNS, ...LIST_COLUMNS.map((s) => s[0])];

/** Opens round logs of one d and D (checked against the first one's sidecar) for reading by record batch. */
export function openRoundLogs(paths: string[]): { dim: number; maxDepth: number; files: RoundLogFile[] } {
  if (paths.length === 0) throw new UsageError('--logs', 'needs at least one round log');
  const first = readRoundSidecar(paths[0]);
  const d = first.dim, D = first.maxDepth, files: RoundLogFile[] = [];
  try {
    for (const path of paths) {
      const s = readRoundSidecar(path);
      if (s.dim !== d || s.maxDepth !== D) throw new FormatError(path, `has d=${s.dim}, depth ${s.maxDepth}; ${paths[0]} has d=${d}, depth ${D}: logs of one target and depth only`);
      files.push(new RoundLogFile(path, d, D));
    }
  } catch (e) {
    for (const f of files) f.close();
    throw e;
  }
  return { dim: d, maxDepth: D, files };
}

/**
 * Reads round logs (same d and D) whole into one RoundData: memory grows with the logs, so
 * training streams them instead (training/round-store.ts); this is for inspection and tests.
 */
export function readRoundLogs(paths: string[]): RoundData {
  const { dim, maxDepth, files } = openRoundLogs(paths);
  const parts = new Map<keyof RoundBatch, (Int32Array | Float32Array)[]>(COLUMN_NAMES.map((n) => [FIELD_OF[n], []]));
  let rows = 0;
  try {
    for (const file of files) {
      for (let i = 0; i < file.batches.length; i++) {
        const b = file.read(i);
        rows += b.rows;
        for (const [k, list] of parts) list.push(b[k] as Int32Array | Float32Array);
      }
    }
  } finally {
    for (const f of files) f.close();
  }
  const cat = (k: keyof RoundBatch) => {
    const xs = parts.get(k)!, float = FLOAT_FIELDS.has(k), out = float ? new Float32Array(xs.reduce((a, x) => a + x.length, 0)) : new Int32Array(xs.reduce((a, x) => a + x.length, 0));
    let o = 0;
    for (const x of xs) (out.set(x, o), (o += x.length));
    return out;
  };
  return Object.fromEntries([['rows', rows], ['dim', dim], ['maxDepth', maxDepth], ...[...parts.keys()].map((k) => [k, cat(k)])]) as unknown as RoundData;
}

const FLOAT_FIELDS = new Set<keyof RoundBatch>(['draftMs', 'verifyMs', 'feature', 'rootEmbedding', 'pathHidden', 'pathEmbedding']);

// ---------------------------------------------------------------- collection

export interface CollectOptions {
  model: LoadedModel;
  /** Draft head directory, 'random', or a loaded head. */
  draft: string | DraftHead;
  /** Tree of every round; its maxDepth is the collection depth D (the deepest LDLP label). */
  tree: TreeShape;
  /** Prompts as token ids. */
  prompts: number[][];
  maxNewTokens: number;
  /** Arrow log path; the sidecar goes to `<out>.json`. */
  out: string;
  /** Sampling temperature; 0 = greedy. Default 0. */
  temperature?: number;
  /** Sampling seed (per prompt: seed + prompt index). Default 0. */
  seed?: number;
  threads?: number;
  /** Run the target quantized (`--quantize`): the rounds, features and embeddings of the pair as it will run. Default: as given. */
  quantize?: QuantName;
  /** Recorded in the sidecar. */
  modelSource?: string;
  onProgress?: OnProgress;
}

export interface CollectResult {
  sidecar: RoundLogSidecar;
  /** acceptedHistogram[a] = rounds that accepted a drafted tokens. */
  acceptedHistogram: number[];
  roundsPerSecond: number;
}

/** Runs speculative generation over the prompts and logs every round; see the module comment. */
export async function collectLengths(o: CollectOptions): Promise<CollectResult> {
  const cfg = o.model.config, temperature = o.temperature ?? 0, seed = o.seed ?? 0;
  if (o.prompts.length === 0) throw new UsageError('--prompts', 'holds no prompts');
  const model = quantizedModel(o.model, o.quantize);
  // A quantized target's table dequantized, as LdlpPolicy reads it.
  const emb = dense(model.weights.get(EMBEDDING)!);
  const recorder = new RoundRecorder(new StaticPolicy(o.tree.maxDepth, o.tree.totalTokens), emb, o.tree.maxDepth, o.tree.topK);
  const g = await loadGenerator({ model, draft: o.draft, tree: o.tree, policy: recorder, threads: o.threads });
  const writer = new RoundLogWriter(o.out, cfg.dim, o.tree.maxDepth);
  const hist: number[] = [];
  const t0 = performance.now();
  try {
    for (let p = 0; p < o.prompts.length; p++) {
      for await (const chunk of g.generator.stream(o.prompts[p], { maxNewTokens: o.maxNewTokens, temperature, seed: seed + p, stopAtEos: true })) {
        const r = recorder.take(chunk);
        if (!r) continue;
        await writer.append(p, r);
        hist[r.accepted] = (hist[r.accepted] ?? 0) + 1;
      }
      const rounds = writer.counts.rounds;
      o.onProgress?.({ phase: 'collect', done: p + 1, total: o.prompts.length, metrics: { rounds, 'mean-accepted': hist.reduce((a, c, i) => a + (c ?? 0) * i, 0) / Math.max(1, rounds) } });
    }
    const sidecar = await writer.finish({
      tree: o.tree,
      source: { model: o.modelSource ?? 'in-memory', draft: typeof o.draft === 'string' ? o.draft : 'in-memory', temperature, seed, maxNewTokens: o.maxNewTokens },
    });
    return { sidecar, acceptedHistogram: Array.from(hist, (c) => c ?? 0), roundsPerSecond: (writer.counts.rounds * 1000) / (performance.now() - t0) };
  } catch (e) {
    await writer.abort();
    throw e;
  } finally {
    await g.dispose();
  }
}
