/**
 * Robustness report: every reader's fuzz campaign at scale, lying headers under a memory
 * meter, `eaglet log` killed with SIGKILL at random moments, and the memory soak. Prints
 * Markdown tables (docs/robustness.md is a run of this).
 *
 *   node --import tsx scripts/robustness-report.ts [--runs 2000] [--kills 5] [--soak-tokens 4000]
 *
 * test/robustness.test.ts runs the same campaigns with fewer cases; a case passes when the
 * reader accepts the input or refuses it with a one-line EagletError naming the file.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Field, FixedSizeList, Float32, Float64, Int32, Int64, makeData, RecordBatch, RecordBatchStreamWriter, Schema, Struct, Table, type DataType } from 'apache-arrow';
import { Message as FbMessage } from 'apache-arrow/fb/message';
import fc from 'fast-check';
import { ByteBuffer } from 'flatbuffers';
import { EagletError } from '../src/errors.ts';
import { loadDraftHead, saveDraftHead } from '../src/io/draft-head-io.ts';
import { parseHfConfig, saveHfCheckpoint, toHfConfig } from '../src/io/hf.ts';
import { readLlama2c, writeLlama2c } from '../src/io/llama2c.ts';
import { loadPredictor, outputDim, savePredictor, type PredictorConfig } from '../src/io/predictor-io.ts';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.ts';
import { headConfigFor, headConfigToJson, headShapes, randomHeadWeights } from '../src/model/draft-head.ts';
import { randomMlpWeights } from '../src/model/mlp.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';
import { tensor } from '../src/model/weights.ts';
import { loadTokenizer } from '../src/tokenizer/load.ts';
import { readLlama2cTokenizer, writeLlama2cTokenizer } from '../src/tokenizer/llama2c.ts';
import { checkpointPath, loadCheckpoint, saveCheckpoint, type CheckpointState } from '../training/checkpoint.ts';
import { indexFeatureLogs } from '../training/dataset.ts';
import { FeatureLogWriter, readFeatureLog, sidecarPath } from '../training/feature-log.ts';

/** One input kind: inputs, the file they are written to, and the reader that must cope. */
export interface Campaign<T = unknown> {
  kind: string;
  arb: fc.Arbitrary<T>;
  /** The path an error message must name (a file, or the directory holding the files read). */
  names: string;
  /** Writes the input to disk and runs the reader. */
  run(input: T): Promise<unknown>;
}

/** How one case ended: 'accepted', 'refused' (clean EagletError), or a failure description. */
export type CaseResult = 'accepted' | 'refused' | string;

/** Runs a reader on one input and classifies the ending. Slow cases (> `slowMs`) count as failures (a hang). */
export async function checkCase<T>(c: Campaign<T>, input: T, slowMs = 5_000): Promise<CaseResult> {
  const t0 = performance.now();
  let result: CaseResult;
  try {
    await c.run(input);
    result = 'accepted';
  } catch (e) {
    if (!(e instanceof EagletError)) return `${(e as Error)?.constructor?.name}: ${String((e as Error)?.message ?? e).split('\n')[0].slice(0, 160)}`;
    if (e.message.includes('\n')) return `multi-line message: ${e.message.slice(0, 160)}`;
    if (!e.message.includes(c.names)) return `message does not name ${c.names}: ${e.message.slice(0, 160)}`;
    result = 'refused';
    lastRefusal = e.message;
  }
  const ms = performance.now() - t0;
  return ms > slowMs ? `took ${ms.toFixed(0)} ms` : result;
}
/** The last clean refusal message (for the report's examples). */
export let lastRefusal = '';

const bytesArb = (max: number) => fc.uint8Array({ maxLength: max });
/** Byte edits: [position as a fraction of the file, new byte]. */
const editsArb = fc.array(fc.tuple(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 });
const applyEdits = (buf: Uint8Array, edits: [number, number][]): Uint8Array => {
  const out = buf.slice();
  for (const [at, b] of edits) out[Math.floor(at * out.length)] = b;
  return out;
};
/** Random bytes, truncations and byte edits of a valid file. */
const damaged = (valid: Uint8Array, randomMax = 200): fc.Arbitrary<Uint8Array> =>
  fc.oneof(bytesArb(randomMax), fc.nat(valid.length - 1).map((n) => valid.subarray(0, n)), editsArb.map((e) => applyEdits(valid, e)));
/** Any JSON, or a valid object with a few fields replaced by any JSON. */
const jsonEdits = (valid: Record<string, unknown>, extra: string[] = []): fc.Arbitrary<unknown> =>
  fc.oneof(
    fc.jsonValue(),
    fc.array(fc.tuple(fc.constantFrom(...Object.keys(valid), ...extra, 'toString', '__proto__'), fc.jsonValue({ maxDepth: 2 })), { minLength: 1, maxLength: 4 })
      .map((edits) => ({ ...valid, ...Object.fromEntries(edits) })),
  );
/** Reads a whole feature log (what every consumer does). */
async function drain(path: string, expect?: { dim: number }): Promise<number> {
  let rows = 0;
  for await (const b of readFeatureLog(path, expect)) rows += b.rows;
  return rows;
}

/** The tiny target everything here is built for. */
export const TARGET = makeConfig({ vocabSize: 32, dim: 8, nLayers: 1, nHeads: 2, hiddenDim: 12, maxSeqLen: 32, eosTokenIds: [] });
const META = { model: { source: 'random', sha256: 'ab'.repeat(32), config: TARGET }, corpus: { paths: ['c.ids'], mode: 'teacher' as const, seqLen: 8, maxTokens: 64 } };

/** Writes a small valid feature log (d = TARGET.dim, top-k 2, several batches) at `path`. */
export async function writeSmallLog(path: string): Promise<void> {
  const w = new FeatureLogWriter(path, TARGET.dim, 2, 6);
  for (let s = 0; s < 4; s++)
    await w.append({ seqId: s, startPosition: 0, tokens: [1, 2, 3, 4], nextTokens: [2, 3, 4, -1], features: new Float32Array(4 * TARGET.dim).fill(s), topIds: new Int32Array(8), topProbs: new Float32Array(8) });
  await w.finish(META);
}

/** An Arrow stream with the given columns, for wrong-schema logs. */
function arrowBytes(columns: { name: string; type: 'i32' | 'i64' | 'f32' | 'f64'; width: number }[], rows: number): Uint8Array {
  const types: Record<string, () => DataType> = { i32: () => new Int32(), i64: () => new Int64(), f32: () => new Float32(), f64: () => new Float64() };
  const arrays: Record<string, (n: number) => Int32Array | BigInt64Array | Float32Array | Float64Array> = {
    i32: (n) => new Int32Array(n), i64: (n) => new BigInt64Array(n), f32: (n) => new Float32Array(n), f64: (n) => new Float64Array(n),
  };
  const fields = columns.map((c) => new Field(c.name, c.width > 0 ? new FixedSizeList(c.width, new Field('item', types[c.type](), false)) : types[c.type](), false));
  const children = columns.map((c, i) => {
    const values = arrays[c.type](rows * Math.max(1, c.width));
    if (c.width === 0) return makeData({ type: fields[i].type as Int32, length: rows, data: values as Int32Array });
    const child = makeData({ type: (fields[i].type as FixedSizeList).children[0].type, length: values.length, data: values });
    return makeData({ type: fields[i].type as FixedSizeList, length: rows, child });
  });
  const schema = new Schema(fields);
  const batch = new RecordBatch(schema, makeData({ type: new Struct(fields), length: rows, children }));
  return RecordBatchStreamWriter.writeAll(new Table(schema, [batch])).toUint8Array(true);
}

/** Builds valid files of every format under `dir` and returns the campaigns over them. */
export async function campaigns(dir: string): Promise<Campaign<any>[]> {
  mkdirSync(dir, { recursive: true });
  const out: Campaign<any>[] = [];
  const bytesCampaign = (kind: string, file: string, valid: Uint8Array, read: (path: string) => unknown, randomMax?: number) =>
    out.push({
      kind, arb: damaged(valid, randomMax), names: file,
      async run(bytes: Uint8Array) {
        writeFileSync(file, bytes);
        return read(file);
      },
    });
  const jsonCampaign = (kind: string, file: string, arb: fc.Arbitrary<unknown>, read: () => unknown) =>
    out.push({
      kind, arb, names: file,
      async run(json: unknown) {
        writeFileSync(file, JSON.stringify(json));
        return read();
      },
    });

  // safetensors, HF config, llama2.c, tokenizers: the readers test/malformed.test.ts covers, at scale.
  const st = join(dir, 'model.safetensors');
  writeSafetensors(st, new Map([['a', tensor([2, 3], Float32Array.of(1, 2, 3, 4, 5, 6))], ['b', tensor([4])]]), { format: 'pt' });
  bytesCampaign('safetensors bytes', st, readFileSync(st), readSafetensors, 64);
  jsonCampaign('HF config.json (any JSON)', join(dir, 'config.json'), jsonEdits(toHfConfig(TARGET), ['rope_scaling', 'sliding_window']), () => parseHfConfig(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')), join(dir, 'config.json')));
  const bin = join(dir, 'model.bin'), l2c = { ...TARGET, hiddenDim: 4, maxSeqLen: 4 };
  writeLlama2c(bin, l2c, randomWeights(l2c, 4));
  bytesCampaign('llama2.c .bin', bin, readFileSync(bin), readLlama2c);
  const tokBin = join(dir, 'tokenizer.bin');
  writeLlama2cTokenizer(tokBin, ['<unk>', '<s>', '</s>', 'a', 'b', 'ab'].map((s, i) => ({ bytes: new TextEncoder().encode(s), score: i })));
  bytesCampaign('tokenizer.bin', tokBin, readFileSync(tokBin), (p) => readLlama2cTokenizer(p, 6), 100);
  const tokDir = join(dir, 'tok');
  mkdirSync(tokDir, { recursive: true });
  const tokJson = { added_tokens: [], normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, model: { type: 'WordLevel', vocab: { a: 0, b: 1 }, unk_token: 'a' } };
  jsonCampaign('tokenizer.json (any JSON)', join(tokDir, 'tokenizer.json'), jsonEdits(tokJson), () => loadTokenizer(join(tokDir, 'tokenizer.json')));

  // Feature logs: damaged Arrow bytes, wrong schemas, damaged sidecars.
  const log = join(dir, 'valid.arrow');
  await writeSmallLog(log);
  const validLog = readFileSync(log), validSidecar = JSON.parse(readFileSync(sidecarPath(log), 'utf8'));
  bytesCampaign('feature log (Arrow bytes)', join(dir, 'damaged.arrow'), validLog, (p) => drain(p, { dim: TARGET.dim }), 300);
  const colArb = fc.record({ name: fc.constantFrom('seq_id', 'position', 'token_id', 'next_token_id', 'feature', 'top_ids', 'top_probs', 'extra'), type: fc.constantFrom('i32', 'i64', 'f32', 'f64'), width: fc.constantFrom(0, 0, 1, 2, 8, 9) }) as fc.Arbitrary<{ name: string; type: 'i32' | 'i64' | 'f32' | 'f64'; width: number }>;
  const schemaLog = join(dir, 'schema.arrow');
  out.push({
    kind: 'feature log (valid Arrow, wrong schema)',
    arb: fc.tuple(fc.uniqueArray(colArb, { selector: (c) => c.name, maxLength: 8 }), fc.integer({ min: 0, max: 5 })),
    names: schemaLog,
    async run([cols, rows]: [{ name: string; type: 'i32' | 'i64' | 'f32' | 'f64'; width: number }[], number]) {
      writeFileSync(schemaLog, arrowBytes(cols, rows));
      writeFileSync(sidecarPath(schemaLog), JSON.stringify({ ...validSidecar, counts: { rows, sequences: 1, batches: 1 } }));
      return indexFeatureLogs([schemaLog], 4);
    },
  });
  const sideLog = join(dir, 'side.arrow');
  writeFileSync(sideLog, validLog);
  jsonCampaign('feature-log sidecar (any JSON)', sidecarPath(sideLog), jsonEdits(validSidecar), () => indexFeatureLogs([sideLog], 4));
  bytesCampaign('feature-log sidecar (bytes)', sidecarPath(sideLog), readFileSync(sidecarPath(log)), () => indexFeatureLogs([sideLog], 4));
  for (const c of out.slice(-2)) c.names = sideLog; // a sidecar problem may be reported against the log it describes

  // Training checkpoints: damaged bytes, and any state JSON.
  const head = headConfigFor(TARGET), shapes = headShapes(head), hw = randomHeadWeights(TARGET, 1);
  const state: CheckpointState = { step: 3, rng: { seed: 1, step: 3 }, order: { epoch: 0, permutation: [1, 0, 2] }, fingerprint: '{}', curve: { step: [1, 2, 3], loss: [1, 1, 1], valStep: [], valTop1: [], valTop3: [], valFeatureLoss: [] } };
  const ckDir = join(dir, 'ckpt');
  mkdirSync(ckDir, { recursive: true });
  saveCheckpoint(ckDir, { state, params: hw, m: hw, v: hw });
  const validCk = readFileSync(checkpointPath(ckDir));
  bytesCampaign('training checkpoint (bytes)', checkpointPath(ckDir), validCk, () => loadCheckpoint(ckDir, shapes), 100);
  out.push({
    kind: 'training checkpoint (any state JSON)', arb: jsonEdits(state as unknown as Record<string, unknown>), names: checkpointPath(ckDir),
    async run(json: unknown) {
      const tensors = new Map(['param', 'adam_m', 'adam_v'].flatMap((g) => [...hw].map(([n, t]) => [`${g}.${n}`, t] as const)));
      writeSafetensors(checkpointPath(ckDir), tensors, { eaglet_checkpoint: JSON.stringify(json) });
      return loadCheckpoint(ckDir, shapes);
    },
  });

  // Draft-head directories: any config.json, damaged weights.
  const headDir = join(dir, 'head');
  saveDraftHead(headDir, { config: head, weights: hw });
  jsonCampaign('draft head config.json (any JSON)', join(headDir, 'config.json'), jsonEdits(headConfigToJson(head)), () => loadDraftHead(headDir, TARGET));
  out[out.length - 1].names = headDir; // a config that parses can still disagree with the weights file beside it
  const headDir2 = join(dir, 'head2');
  saveDraftHead(headDir2, { config: head, weights: hw });
  bytesCampaign('draft head model.safetensors (bytes)', join(headDir2, 'model.safetensors'), readFileSync(join(headDir2, 'model.safetensors')), () => loadDraftHead(headDir2, TARGET));

  // Length-predictor directories (LDLP / SpecDec++ heads).
  const pcfg: PredictorConfig = { format: 'eaglet-predictor', version: 1, kind: 'ldlp', objective: 'classification', dim: TARGET.dim, maxDepth: 4, mlp: { inputDim: 2 * TARGET.dim, hidden: [6], outputDim: outputDim('classification', 4) } };
  const pDir = join(dir, 'ldlp'), pDir2 = join(dir, 'ldlp2');
  for (const d of [pDir, pDir2]) savePredictor(d, { config: pcfg, weights: randomMlpWeights(pcfg.mlp, 1) });
  jsonCampaign('predictor config.json (any JSON)', join(pDir, 'config.json'), jsonEdits(pcfg as unknown as Record<string, unknown>), () => loadPredictor(pDir, 'ldlp', TARGET, 4));
  out[out.length - 1].names = pDir;
  bytesCampaign('predictor model.safetensors (bytes)', join(pDir2, 'model.safetensors'), readFileSync(join(pDir2, 'model.safetensors')), () => loadPredictor(pDir2, 'ldlp', TARGET, 4));
  return out;
}

/** Tally of one campaign run. */
export interface CampaignTally {
  kind: string;
  tried: number;
  accepted: number;
  refused: number;
  failures: { input: string; result: string }[];
  example: string;
}

/** Runs `numRuns` generated inputs through a campaign without stopping at the first failure. */
export async function runCampaign(c: Campaign<any>, numRuns: number, seed: number): Promise<CampaignTally> {
  const t: CampaignTally = { kind: c.kind, tried: 0, accepted: 0, refused: 0, failures: [], example: '' };
  for (const input of fc.sample(c.arb, { numRuns, seed })) {
    const r = await checkCase(c, input);
    t.tried++;
    if (r === 'accepted') t.accepted++;
    else if (r === 'refused') (t.refused++, (t.example ||= lastRefusal));
    else if (t.failures.length < 3) t.failures.push({ input: fc.stringify(input).slice(0, 120), result: r });
    else t.failures.push({ input: '', result: r });
  }
  return t;
}

/** A file whose header lies about a huge size, and the reader that must refuse it cheaply. */
export interface LyingHeader {
  what: string;
  run(): unknown;
}

/** Lying headers of every format (each claims gigabytes or billions of rows in a tiny file). */
export async function lyingHeaders(dir: string): Promise<LyingHeader[]> {
  mkdirSync(dir, { recursive: true });
  const st = join(dir, 'huge.safetensors');
  const header = Buffer.from(JSON.stringify({ w: { dtype: 'F32', shape: [25_000_000_000], data_offsets: [0, 100_000_000_000] } }));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(header.length));
  writeFileSync(st, Buffer.concat([len, header, Buffer.alloc(16)]));
  const bin = join(dir, 'huge.bin');
  writeFileSync(bin, Buffer.from(Int32Array.of(1 << 16, 1 << 16, 1 << 10, 8, 8, 1 << 20, 1 << 16).buffer));
  const tok = join(dir, 'huge-tokenizer.bin');
  writeFileSync(tok, Buffer.from(Int32Array.of(16, 0, 1 << 30, 0).buffer));
  // Arrow: a schema whose first field claims ~10 million children (one flipped byte in a real log),
  // and a record batch claiming 2^31 - 1 rows over a body of a few bytes.
  const log = join(dir, 'valid.arrow');
  await writeSmallLog(log);
  const valid = readFileSync(log);
  const children = join(dir, 'children.arrow'), rowsLie = join(dir, 'rows.arrow'), sideLie = join(dir, 'side.arrow');
  writeFileSync(children, patchFirstChildrenCount(valid));
  writeFileSync(rowsLie, patchBatchLength(valid, 2 ** 31 - 1));
  writeFileSync(sidecarPath(children), readFileSync(sidecarPath(log)));
  writeFileSync(sideLie, valid);
  writeFileSync(sidecarPath(sideLie), JSON.stringify({ ...JSON.parse(readFileSync(sidecarPath(log), 'utf8')), counts: { rows: 1e12, sequences: 1, batches: 1 } }));
  return [
    { what: 'safetensors header: one 100 GB tensor', run: () => readSafetensors(st) },
    { what: 'llama2.c header: 65536-wide, 1024 layers', run: () => readLlama2c(bin) },
    { what: 'tokenizer.bin: a 1 GiB token', run: () => readLlama2cTokenizer(tok) },
    { what: 'Arrow schema: a field with ~10M children', run: () => drain(children) },
    { what: 'Arrow record batch: 2^31-1 rows', run: () => drain(rowsLie) },
    { what: 'feature-log sidecar: 10^12 rows', run: () => indexFeatureLogs([sideLie], 4) },
  ];
}

/** The byte offset of the first empty children vector in a schema message, set to claim ~10.7M children. */
function patchFirstChildrenCount(valid: Uint8Array): Uint8Array {
  const b = Buffer.from(valid);
  // "seq_id" is the first field; its empty children vector (u32 0) follows the padded name.
  const at = b.indexOf(Buffer.from('seq_id')) + 8;
  b[at + 2] = 0xa4;
  return b;
}

/** Rewrites the `length` (rows) of every record batch of a writeSmallLog file (8 rows each) to `rows`. */
function patchBatchLength(valid: Uint8Array, rows: number): Uint8Array {
  const b = Buffer.from(valid), eight = Buffer.alloc(8);
  eight.writeBigInt64LE(8n);
  // Messages: [0xFFFFFFFF][int32 metadata length][metadata][body]; the schema comes first.
  for (let pos = 0, i = 0; pos + 8 <= b.length && b.readInt32LE(pos + 4) > 0; i++) {
    const len = b.readInt32LE(pos + 4), meta = pos + 8;
    const at = b.indexOf(eight, meta);
    if (i > 0 && at >= 0 && at < meta + len) b.writeBigInt64LE(BigInt(rows), at);
    pos = meta + len + bodyLengthOf(valid, meta, len);
  }
  return b;
}

/** Body length of the message whose metadata is at [meta, meta + len) (read with apache-arrow's flatbuffer classes). */
function bodyLengthOf(bytes: Uint8Array, meta: number, len: number): number {
  return Number(FbMessage.getRootAsMessage(new ByteBuffer(bytes.subarray(meta, meta + len))).bodyLength());
}

/** Memory taken by one call: growth of RSS and of ArrayBuffers, in MB. */
export async function measure(run: () => unknown): Promise<{ result: CaseResult; rssMb: number; buffersMb: number }> {
  global.gc?.();
  const before = process.memoryUsage();
  let peakRss = before.rss, peakBuf = before.arrayBuffers;
  const timer = setInterval(() => {
    const m = process.memoryUsage();
    (peakRss = Math.max(peakRss, m.rss)), (peakBuf = Math.max(peakBuf, m.arrayBuffers));
  }, 5);
  const result = await checkCase({ kind: '', arb: fc.constant(0), names: '', run: async () => run() }, 0);
  clearInterval(timer);
  const after = process.memoryUsage();
  const mb = (x: number) => x / 2 ** 20;
  return { result, rssMb: mb(Math.max(peakRss, after.rss) - before.rss), buffersMb: mb(Math.max(peakBuf, after.arrayBuffers) - before.arrayBuffers) };
}

// --- eaglet log under SIGKILL -------------------------------------------------------------

const CLI = ['--import', 'tsx', join(import.meta.dirname, '..', 'src', 'cli', 'main.ts')];

/** A model and corpus for `eaglet log`, and the arguments of a deterministic run writing `out`. */
export function logFixture(dir: string): (out: string) => string[] {
  mkdirSync(dir, { recursive: true });
  const cfg = makeConfig({ vocabSize: 48, dim: 32, nLayers: 2, nHeads: 2, maxSeqLen: 64, eosTokenIds: [] });
  saveHfCheckpoint(join(dir, 'model'), cfg, randomWeights(cfg, 1, 3));
  const lines = Array.from({ length: 80 }, (_, i) => Array.from({ length: 40 }, (_, j) => (i * 7 + j * 3) % 48).join(' '));
  writeFileSync(join(dir, 'corpus.ids'), lines.join('\n') + '\n');
  return (out) => ['log', '--model', join(dir, 'model'), '--corpus', join(dir, 'corpus.ids'), '--out', out, '--mode', 'generate', '--seq-len', '48', '--max-tokens', '3000', '--prompt-len', '4'];
}

/** Runs `eaglet log` to completion; returns its wall time in ms. */
export function runLogToEnd(args: string[]): number {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [...CLI, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`eaglet log failed: ${r.stderr}`);
  return performance.now() - t0;
}

/** What a SIGKILL left at the final paths: nothing, or files byte-identical to the reference run's. */
export interface KillTrial {
  delayMs: number;
  killed: boolean;
  logLeft: 'none' | 'complete' | 'PARTIAL';
  sidecarLeft: 'none' | 'complete' | 'PARTIAL';
  rerunIdentical: boolean;
}

/** Starts `eaglet log`, kills it after `delayMs`, inspects the final paths, re-runs, compares with `ref`. */
export async function killTrial(args: string[], out: string, ref: string, delayMs: number): Promise<KillTrial> {
  rmSync(out, { force: true });
  rmSync(sidecarPath(out), { force: true });
  const child = spawn(process.execPath, [...CLI, ...args], { stdio: 'ignore' });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_, signal) => resolve(signal)));
  await new Promise((r) => setTimeout(r, delayMs));
  child.kill('SIGKILL');
  const killed = (await exited) === 'SIGKILL';
  const left = (p: string, want: string): KillTrial['logLeft'] => (!existsSync(p) ? 'none' : readFileSync(p).equals(readFileSync(want)) ? 'complete' : 'PARTIAL');
  const logLeft = left(out, ref), sidecarLeft = left(sidecarPath(out), sidecarPath(ref));
  runLogToEnd(args);
  const rerunIdentical = readFileSync(out).equals(readFileSync(ref)) && readFileSync(sidecarPath(out)).equals(readFileSync(sidecarPath(ref)));
  return { delayMs, killed, logLeft, sidecarLeft, rerunIdentical };
}

// --- the report ---------------------------------------------------------------------------

async function main(): Promise<void> {
  const { scriptFlags } = await import('./script-flags.ts');
  const f = scriptFlags(import.meta.url, [
    { flag: 'runs', type: 'int', min: 1, default: 2000, help: 'cases per input kind' },
    { flag: 'kills', type: 'int', min: 0, default: 5, help: 'SIGKILL trials of eaglet log' },
    { flag: 'soak-tokens', type: 'int', min: 100, default: 4000, help: 'tokens of the memory soak' },
    { flag: 'seed', type: 'int', min: 0, default: 1, help: 'fast-check seed' },
  ]);
  const dir = mkdtempSync(join(tmpdir(), 'eaglet-robust-'));
  const t0 = performance.now();
  try {
    console.log(`# Robustness report\n\n${new Date().toISOString().slice(0, 10)}, node ${process.version}, ${f.runs} cases per kind, seed ${f.seed}\n`);
    console.log('## Fuzzed readers\n\n| input kind | cases tried | accepted | refused cleanly | outcome |\n|---|---:|---:|---:|---|');
    let tried = 0;
    for (const c of await campaigns(join(dir, 'fuzz'))) {
      const t = await runCampaign(c, f.runs as number, f.seed as number);
      tried += t.tried;
      const outcome = t.failures.length === 0 ? `all clean; e.g. \`${basename(t.example.split(':')[0])}:${t.example.split(':').slice(1).join(':').slice(0, 90)}\`` : `**${t.failures.length} failures**, e.g. ${t.failures.slice(0, 2).map((x) => `${x.result} on ${x.input}`).join('; ')}`;
      console.log(`| ${t.kind} | ${t.tried} | ${t.accepted} | ${t.refused} | ${outcome.replaceAll('|', '\\|')} |`);
    }
    console.log(`\n${tried} cases in ${((performance.now() - t0) / 1000).toFixed(0)} s.\n`);

    console.log('## Lying headers (memory taken before the error)\n\n| header | outcome | peak RSS growth | peak ArrayBuffer growth |\n|---|---|---:|---:|');
    for (const h of await lyingHeaders(join(dir, 'lies'))) {
      const m = await measure(h.run);
      const outcome = m.result === 'refused' ? `refused: \`${lastRefusal.replace(/^.*\//, '').slice(0, 100)}\`` : `**${m.result}**`;
      console.log(`| ${h.what} | ${outcome} | ${m.rssMb.toFixed(1)} MB | ${m.buffersMb.toFixed(1)} MB |`);
    }

    console.log('\n## Faults\n\n| fault | trials | what survived |\n|---|---:|---|');
    const args = logFixture(join(dir, 'kill'));
    const ref = join(dir, 'kill', 'ref.arrow'), out = join(dir, 'kill', 'out.arrow');
    const fullMs = runLogToEnd(args(ref));
    const rng = fc.sample(fc.double({ min: 0.05, max: 1.1, noNaN: true }), { numRuns: f.kills as number, seed: f.seed as number });
    const trials: KillTrial[] = [];
    for (const u of rng) trials.push(await killTrial(args(out), out, ref, Math.round(u * fullMs)));
    const count = (p: (t: KillTrial) => boolean) => trials.filter(p).length;
    console.log(`| \`eaglet log\` SIGKILLed at a random moment in [5%, 110%] of its ${(fullMs / 1000).toFixed(1)} s run | ${trials.length} | ` +
      `killed mid-run ${count((t) => t.killed)}; final log: absent ${count((t) => t.logLeft === 'none')}, complete ${count((t) => t.logLeft === 'complete')}, partial ${count((t) => t.logLeft === 'PARTIAL')}; ` +
      `sidecar partial ${count((t) => t.sidecarLeft === 'PARTIAL')}; re-run byte-identical to an uninterrupted run ${count((t) => t.rerunIdentical)}/${trials.length} (delays ${trials.map((t) => t.delayMs).join(', ')} ms) |`);
    console.log('| `eaglet train-draft` SIGKILLed mid-run, then `--resume` | 1 per test run | test/pipeline.test.ts: nothing at the final paths, resumed weights equal an uninterrupted run\'s |');

    console.log('\n## Memory soak (scripts/soak-memory.ts)\n\n```');
    const soak = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', join(import.meta.dirname, 'soak-memory.ts'), '--tokens', String(f.soakTokens)], { encoding: 'utf8' });
    console.log((soak.stdout + soak.stderr).trim());
    console.log('```');
    console.log(`\nTotal ${((performance.now() - t0) / 1000).toFixed(0)} s.`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
