/**
 * Feasibility probe: does the draft head predict better from a fusion of several layers'
 * features (EAGLE-3: low, middle and high residual streams concatenated and mapped to width d
 * by one more Linear, `fc3`) than from the target's top-layer feature alone (EAGLE-1/2, what
 * eaglet's heads read)? Measured on the first draft only, the one the head makes from the
 * target's own features; nothing here is wired into the inference graphs.
 *
 *   node --import tsx scripts/probe-feature-fusion.ts --work DIR [--quantize q4] [--threads 1]
 *        [--train-rows 500000] [--gen-prompts 1000] [--steps 6000] [--seeds 0,1]
 *        [--variants top,2+4+top,2+4+5]
 *
 * 1. Logs the target over the corpus split (node_modules/typescript/lib, 10% of files held
 *    out, as train-target and scripts/corpus-split.ts cut it): teacher-forced chunks of 256
 *    tokens spread evenly over the training split up to --train-rows, and the target's greedy
 *    continuations (96 tokens) of --gen-prompts 32-token prompts; the same from the held-out
 *    split for validation. Each pass runs the target as two graphs of the one definition (layer
 *    0, then layers 1..7: src/runtime/exit-sessions.ts), which output the residual stream
 *    after every layer besides the final-norm feature. Cached in DIR (a few hundred MB).
 * 2. Trains one head per variant and seed on the same rows, same steps, same loss as
 *    `train-draft --backend ort` (SmoothL1 to the next top feature + 0.1 soft CE to the
 *    target's distribution, AdamW, warmup 100, lr 3e-3, 16 x 64 rows, noise 0.2, clip 0.5).
 *    A variant names its input layers: `top` = the final-norm feature (today's head);
 *    `2+4+5` = the residual after layers 2, 4 and 5 (of 8); `top` inside a list = the
 *    final-norm feature. A fused variant's input is fc3(concat) [d, k d], no bias; each
 *    residual is scaled by one constant (its RMS over the training rows), which fc3 absorbs.
 * 3. Reports the first draft's top-1 against the target's greedy next token on held-out rows:
 *    teacher-forced rows, greedy-continuation rows, and `walk`: the first draft's acceptance
 *    at the rounds a depth-1 chain would start along each greedy continuation (a hit commits
 *    two tokens, a miss one; what static-1 accepts, since a round's first draft reads only the
 *    target's features). Each head's result goes to DIR/run-VARIANT-seedS.json (a head whose
 *    file exists with the same settings is not trained again); stdout gets the table of every
 *    result in DIR made with this run's settings (Markdown).
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadModel } from '../src/load-model.ts';
import { scriptFlags } from './script-flags.ts';
import { UsageError } from '../src/errors.ts';
import type { ModelConfig } from '../src/model/config.ts';
import { draftLogits, eagleHeadForward, lmHead } from '../src/model/definition.ts';
import { headConfigFor, randomHeadWeights, trainableHeadShapes, type HeadConfig } from '../src/model/draft-head.ts';
import { quantizedModel, type QuantName } from '../src/model/quantize.ts';
import { EMBEDDING, outputHead, outputHeadName, type Weights } from '../src/model/weights.ts';
import { GraphBuilder } from '../src/onnx/graph.ts';
import { MASK_NEG } from '../src/onnx/ops.ts';
import { ExitSession, RestSession } from '../src/runtime/exit-sessions.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { f32, i64 } from '../src/runtime/ort.ts';
import { TargetSession } from '../src/runtime/target.ts';
import { Rng } from '../src/util/rng.ts';
import { AdamWArrays, warmupLr } from '../training/adamw.ts';
import { chunkDocuments } from '../training/corpus.ts';
import { GradSession, type TrainGraph } from '../training/ort/graphs.ts';
import { featureLoss, softCrossEntropy, teacherProbs, weighted } from '../training/ort/losses.ts';
import { Tape, type Val } from '../training/ort/tape.ts';
import { frozen, TapeOps } from '../training/ort/tape-ops.ts';
import { readTargetCorpus } from '../training/target-corpus.ts';
import { frozenTarget } from '../training/train-draft.ts';

const f = scriptFlags(import.meta.url, [
  { flag: 'work', type: 'string', help: 'directory for the logged rows and results' },
  { flag: 'model', type: 'string', default: 'data/default/target', help: 'target directory' },
  { flag: 'corpus-dir', type: 'string', default: 'node_modules/typescript/lib', help: 'the target corpus (split as train-target splits it)' },
  { flag: 'quantize', type: 'string', choices: ['none', 'q4', 'q8'], default: 'q4', help: 'run the target quantized' },
  { flag: 'threads', type: 'int', min: 1, default: 1, help: 'onnxruntime threads' },
  { flag: 'train-rows', type: 'int', min: 1000, default: 500000, help: 'teacher-forced training rows' },
  { flag: 'val-rows', type: 'int', min: 1000, default: 60000, help: 'teacher-forced held-out rows' },
  { flag: 'gen-prompts', type: 'int', min: 0, default: 1000, help: 'greedy continuations of training-split prompts' },
  { flag: 'val-prompts', type: 'int', min: 1, default: 200, help: 'greedy continuations of held-out prompts' },
  { flag: 'steps', type: 'int', min: 1, default: 6000, help: 'training updates per head' },
  { flag: 'seeds', type: 'string', default: '0,1', help: 'comma-separated seeds' },
  { flag: 'variants', type: 'string', default: 'top,2+4+top,2+4+5', help: 'comma-separated input-layer lists (see the module comment)' },
]);
if (!f.work) throw new UsageError('--work', 'is required');

const WORK = f.work as string, SEQ = 256, PROMPT = 32, GEN_LEN = 128, B = 16, W = 64, LR = 3e-3, WARMUP = 100, NOISE = 0.2, CLIP = 0.5;
/** Slot names a variant may read: 'top' (final-norm feature) or a layer count 1..L (residual after that many layers). */
type Slot = string;

const model = await loadModel(f.model as string);
const cfg = model.config, d = cfg.dim;
const quant = f.quantize === 'none' ? undefined : (f.quantize as QuantName);
const variants = (f.variants as string).split(',').map((v) => v.split('+'));
// 'top' is always logged: the feature targets of every variant's loss are top features.
const slots: Slot[] = [...new Set(['top', ...variants.flat()])];
for (const s of slots) if (s !== 'top' && !(Number.isInteger(+s) && +s >= 1 && +s <= cfg.nLayers)) throw new UsageError('--variants', `${s} is neither top nor a layer count 1..${cfg.nLayers}`);

/** Logged rows: sequences back to back; `slot[s]` [rows, d] per slot, `label` the target's argmax at each row. */
interface Rows {
  rows: number;
  seqStart: number[]; // row where each sequence starts, then `rows`
  token: Int32Array;
  label: Int32Array;
  /** First row whose next token is generated (greedy continuations), per sequence; 0 for teacher-forced ones. */
  genFrom: number[];
  slot: Map<Slot, Float32Array>;
}

const metaPath = join(WORK, 'meta.json');
const parts = ['train', 'val'] as const;
mkdirSync(WORK, { recursive: true });
const wanted = { model: f.model, corpusDir: f.corpusDir, quantize: f.quantize, trainRows: f.trainRows, valRows: f.valRows, genPrompts: f.genPrompts, valPrompts: f.valPrompts, slots: [...slots].sort() };
/** Whether the cached rows were logged with these settings and hold every slot wanted (a run may read fewer). */
const cached = (): boolean => {
  if (!existsSync(metaPath)) return false;
  const had = JSON.parse(readFileSync(metaPath, 'utf8')).wanted;
  return JSON.stringify({ ...had, slots: [] }) === JSON.stringify({ ...wanted, slots: [] }) && slots.every((s) => had.slots.includes(s));
};
const data = cached() ? loadRows() : await logRows();

/** Runs the target over both splits (see the module comment) and caches the rows in WORK. */
async function logRows(): Promise<Record<(typeof parts)[number], Rows>> {
  const qm = quantizedModel(model, quant), tok = model.tokenizer!;
  const corpus = readTargetCorpus(f.corpusDir as string, 0.1);
  const opts = { threads: f.threads as number, maxTokens: SEQ };
  const exit = await ExitSession.create(cfg, qm.weights, 1, 1, opts), rest = await RestSession.create(cfg, qm.weights, 1, opts);
  const step = await TargetSession.create(cfg, qm.weights, { threads: f.threads as number, maxTokens: SEQ });
  const cache = new KVCache(cfg.nLayers, cfg.nKvHeads, cfg.headDim, SEQ);
  const out: Partial<Record<(typeof parts)[number], Rows>> = {};
  const t0 = performance.now();
  for (const part of parts) {
    const docs = (part === 'train' ? corpus.train : corpus.heldOut).map((c) => tok.encode(c.text));
    const budget = (part === 'train' ? f.trainRows : f.valRows) as number, nPrompts = (part === 'train' ? f.genPrompts : f.valPrompts) as number;
    // Teacher chunks spread evenly over the split (every k-th chunk), not its first files.
    const chunks = chunkDocuments(docs, SEQ).filter((c) => c.length >= 2);
    const total = chunks.reduce((a, c) => a + c.length, 0), stride = Math.max(1, Math.floor(total / budget));
    const picked: number[][] = [];
    for (let i = 0, rows = 0; i < chunks.length && rows < budget; i += stride) (picked.push(chunks[i]), (rows += chunks[i].length));
    // Prompts spread evenly over the split's concatenated ids (as corpus-split.ts cuts them).
    const ids = docs.flat(), pstep = Math.floor((ids.length - PROMPT) / Math.max(1, nPrompts));
    const prompts = Array.from({ length: nPrompts }, (_, i) => ids.slice(i * pstep, i * pstep + PROMPT));
    const cap = picked.reduce((a, c) => a + c.length, 0) + nPrompts * GEN_LEN;
    const r: Rows = { rows: 0, seqStart: [], token: new Int32Array(cap), label: new Int32Array(cap), genFrom: [], slot: new Map(slots.map((s) => [s, new Float32Array(cap * d)])) };
    const add = async (tokens: number[], genFrom: number) => {
      cache.truncate(0);
      const pos = tokens.map((_, i) => i);
      const e = await exit.forward(cache, tokens, pos), z = await rest.forward(cache, e.hidden, pos);
      const n = tokens.length, o = r.rows;
      r.seqStart.push(o), r.genFrom.push(genFrom);
      r.token.set(tokens, o);
      for (let t = 0; t < n; t++) r.label[o + t] = argmax(z.logits.subarray(t * cfg.vocabSize, (t + 1) * cfg.vocabSize));
      for (const s of slots) {
        const dst = r.slot.get(s)!;
        if (s === 'top') dst.set(z.features, o * d);
        else for (let t = 0; t < n; t++) dst.set(+s === 1 ? e.layerHidden.subarray(t * d, (t + 1) * d) : z.layerHidden.subarray((t * (cfg.nLayers - 1) + (+s - 2)) * d, (t * (cfg.nLayers - 1) + (+s - 1)) * d), (o + t) * d);
      }
      r.rows += n;
    };
    for (const c of picked) await add(c, 0);
    for (const p of prompts) {
      // Greedy continuation by the target's own steps (what plain decoding emits), then one pass over the whole sequence for its layers.
      const seq = p.slice();
      cache.truncate(0);
      let o = await step.forward(cache, seq, seq.map((_, i) => i), undefined, { logits: false });
      cache.append(o.newKeys, o.newValues, seq.length);
      while (seq.length < GEN_LEN) {
        const next = o.argmax[o.argmax.length - 1];
        if (cfg.eosTokenIds.includes(next)) break;
        seq.push(next);
        if (seq.length === GEN_LEN) break;
        o = await step.forward(cache, [next], [seq.length - 1], undefined, { logits: false });
        cache.append(o.newKeys, o.newValues, 1);
      }
      await add(seq, PROMPT - 1);
    }
    r.seqStart.push(r.rows);
    out[part] = r;
    process.stderr.write(`${part}: ${r.rows} rows (${picked.length} teacher chunks, ${prompts.length} continuations), ${((performance.now() - t0) / 1000).toFixed(0)} s\n`);
  }
  await exit.dispose(), await rest.dispose(), await step.dispose();
  for (const part of parts) {
    const r = out[part]!;
    writeFileSync(join(WORK, `${part}.tokens.bin`), new Uint8Array(r.token.buffer, 0, r.rows * 4));
    writeFileSync(join(WORK, `${part}.labels.bin`), new Uint8Array(r.label.buffer, 0, r.rows * 4));
    for (const s of slots) writeFileSync(join(WORK, `${part}.slot-${s}.bin`), new Uint8Array(r.slot.get(s)!.buffer, 0, r.rows * d * 4));
  }
  writeFileSync(metaPath, JSON.stringify({ wanted, parts: Object.fromEntries(parts.map((p) => [p, { rows: out[p]!.rows, seqStart: out[p]!.seqStart, genFrom: out[p]!.genFrom }])) }));
  return out as Record<(typeof parts)[number], Rows>;
}

function loadRows(): Record<(typeof parts)[number], Rows> {
  const meta = JSON.parse(readFileSync(metaPath, 'utf8'));
  const read = (name: string) => readFileSync(join(WORK, name));
  const i32 = (b: Buffer) => new Int32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
  const fl = (b: Buffer) => new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
  return Object.fromEntries(parts.map((p) => [p, { ...meta.parts[p], token: i32(read(`${p}.tokens.bin`)), label: i32(read(`${p}.labels.bin`)), slot: new Map(slots.map((s) => [s, fl(read(`${p}.slot-${s}.bin`))])) }])) as Record<(typeof parts)[number], Rows>;
}

// ---- training ----

/** Windows of up to W examples; example t of a sequence reads row t and predicts row t+1 (so t+1 must be in it). */
function windows(r: Rows): { start: number; len: number }[] {
  const w: { start: number; len: number }[] = [];
  for (let s = 0; s + 1 < r.seqStart.length; s++) for (let a = r.seqStart[s], end = r.seqStart[s + 1] - 1; a < end; a += W) w.push({ start: a, len: Math.min(W, end - a) });
  return w;
}

/** One scalar per residual slot: its RMS over the training rows (the top feature is normed already). */
function slotScales(r: Rows): Map<Slot, number> {
  return new Map(slots.map((s) => {
    if (s === 'top') return [s, 1];
    const x = r.slot.get(s)!;
    let sq = 0;
    for (let i = 0; i < r.rows * d; i++) sq += x[i] * x[i];
    return [s, Math.sqrt(sq / (r.rows * d))];
  }));
}

const FC3 = 'fc3.weight';

/** The training graph (withGrads) or its validation twin (argmax draft ids) of a head reading `k` slots. */
function graph(target: { config: ModelConfig; weights: Weights }, head: HeadConfig, k: number, withGrads: boolean): TrainGraph {
  const N = B * W, g = new GraphBuilder('probe_fusion'), t = new Tape(g);
  const shapes = trainableHeadShapes(head);
  if (k > 1) shapes.set(FC3, [d, k * d]);
  const byName = new Map<string, Val>([...shapes].map(([n, s]) => [n, t.param(n, s)]));
  byName.set(EMBEDDING, frozen(t, EMBEDDING, target.weights.get(EMBEDDING)!));
  if (!cfg.tieEmbeddings) byName.set(outputHeadName(cfg), frozen(t, outputHeadName(cfg), outputHead(cfg, target.weights)));
  const ops = new TapeOps(t, (n) => byName.get(n)!, B, Math.max(W, cfg.maxSeqLen));
  const input = t.input('features', 'float32', [N, k * d]), tgt = t.input('targetFeatures', 'float32', [N, d]);
  const ids = t.input('ids', 'int64', [N]), positions = t.input('positions', 'int64', [N]);
  const mask = t.input('mask', 'float32', [W, W]), rowWeight = t.input('rowWeight', 'float32', [N]);
  const features = k > 1 ? ops.linear(input, byName.get(FC3)!) : input; // [N, d]
  const hidden = eagleHeadForward(ops, head, features, { ids, positions, mask, past: null }).hidden;
  const logits = draftLogits(ops, head, cfg, hidden);
  const loss = weighted(t, [[1, featureLoss(t, hidden, tgt, rowWeight)], [0.1, softCrossEntropy(t, logits, teacherProbs(t, lmHead(ops, cfg, tgt)), rowWeight)]]);
  g.output(loss.name, 'loss', 'float32', []);
  if (withGrads) for (const [n, gname] of t.backward(loss)) g.output(gname, `grad.${n}`, 'float32', shapes.get(n)!);
  else g.output(g.op('ArgMax', [logits.name], { axis: -1, keepdims: 0 }), 'draft', 'int64', [N]);
  return { model: g.toModel({ opset: 23, irVersion: 10 }), params: shapes };
}

/** fc3's start: the highest slot passed through (EAGLE-1's "repeat the feature" prior of randomHeadWeights), small noise elsewhere. */
function fc3Init(k: number, seed: number): Float32Array {
  const w = new Float32Array(d * k * d), rng = new Rng(seed ^ 0x3fc3);
  for (let r = 0; r < d; r++) {
    for (let c = 0; c < k * d; c++) w[r * k * d + c] = (0.1 / Math.sqrt(k * d)) * rng.normal();
    w[r * k * d + (k - 1) * d + r] += 1;
  }
  return w;
}

/** Batch buffers of B windows of W rows (padding rows weigh 0). */
class Feeder {
  readonly feat: Float32Array;
  readonly tgt = new Float32Array(B * W * d);
  readonly ids = new BigInt64Array(B * W);
  readonly pos = new BigInt64Array(B * W);
  readonly rw = new Float32Array(B * W);
  readonly mask = new Float32Array(W * W);
  constructor(readonly r: Rows, readonly vs: Slot[], readonly scale: Map<Slot, number>) {
    this.feat = new Float32Array(B * W * vs.length * d);
    for (let i = 0; i < W; i++) for (let j = i + 1; j < W; j++) this.mask[i * W + j] = MASK_NEG;
  }
  /** Lays out windows `ws`; `rng` adds the input noise (training). Returns the feeds and each window's first slot row. */
  fill(ws: { start: number; len: number }[], rng: Rng | null) {
    const k = this.vs.length, n = ws.reduce((a, w) => a + w.len, 0);
    this.feat.fill(0), this.tgt.fill(0), this.ids.fill(0n), this.pos.fill(0n), this.rw.fill(0);
    ws.forEach((w, b) => {
      const seq = seqOf(this.r, w.start), first = this.r.seqStart[seq];
      for (let i = 0; i < w.len; i++) {
        const row = w.start + i, s = b * W + i;
        this.vs.forEach((v, j) => {
          const src = this.r.slot.get(v)!, c = 1 / this.scale.get(v)!;
          for (let x = 0; x < d; x++) this.feat[(s * k + j) * d + x] = src[row * d + x] * c + (rng ? (rng.next() - 0.5) * NOISE : 0);
        });
        this.tgt.set(this.r.slot.get('top')!.subarray((row + 1) * d, (row + 2) * d), s * d);
        this.ids[s] = BigInt(this.r.token[row + 1]);
        this.pos[s] = BigInt(row - first);
        this.rw[s] = 1 / n;
      }
    });
    const N = B * W;
    return { features: f32(this.feat, [N, k * d]), targetFeatures: f32(this.tgt, [N, d]), ids: i64(this.ids, [N]), positions: i64(this.pos, [N]), mask: f32(this.mask, [W, W]), rowWeight: f32(this.rw, [N]) };
  }
}

function seqOf(r: Rows, row: number): number {
  let lo = 0, hi = r.seqStart.length - 2;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (r.seqStart[mid] <= row) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

interface Result { variant: string; seed: number; teacherTop1: number; genTop1: number; walkAccept: number; walkTau: number; rounds: number; seconds: number }

/** Trains one head and measures it on the held-out rows. */
async function run(vs: Slot[], seed: number, target: { config: ModelConfig; weights: Weights }, scale: Map<Slot, number>): Promise<Result> {
  const head = headConfigFor(cfg), k = vs.length;
  const init = randomHeadWeights(cfg, seed);
  if (k > 1) init.set(FC3, { shape: [d, k * d], data: fc3Init(k, seed) });
  const names = [...trainableHeadShapes(head).keys(), ...(k > 1 ? [FC3] : [])];
  const params: Weights = new Map(names.map((n) => [n, { shape: init.get(n)!.shape.slice(), data: init.get(n)!.data.slice() }]));
  const opt = new AdamWArrays(names.map((n) => params.get(n)!.data), { clip: CLIP });
  const train = await GradSession.create(graph(target, head, k, true), f.threads as number);
  const val = await GradSession.create(graph(target, head, k, false), f.threads as number);
  const tw = windows(data.train), feeder = new Feeder(data.train, vs, scale), t0 = performance.now();
  const order = new Rng(seed ^ 0x0e0c);
  let perm = permutation(tw.length, order), at = 0;
  for (let s = 0; s < (f.steps as number); s++) {
    if (at + B > perm.length) (perm = permutation(tw.length, order)), (at = 0);
    const ws = Array.from(perm.subarray(at, at + B), (i) => tw[i]);
    at += B;
    const { grads } = await train.run(params, feeder.fill(ws, new Rng(seed * 1000003 + s)));
    opt.apply(names.map((n) => grads.get(n)!), warmupLr(LR, WARMUP, s + 1));
    if ((s + 1) % 1000 === 0) process.stderr.write(`  ${vs.join('+')} seed ${seed}: step ${s + 1}, ${((performance.now() - t0) / 1000).toFixed(0)} s\n`);
  }
  const seconds = (performance.now() - t0) / 1000;
  // Draft id of every held-out example (row t predicts the target's argmax at row t+1).
  const r = data.val, vw = windows(r), vf = new Feeder(r, vs, scale), draft = new Int32Array(r.rows).fill(-1);
  for (let i = 0; i < vw.length; i += B) {
    const ws = vw.slice(i, i + B);
    const { out } = await val.run(params, vf.fill(ws, null));
    const ids = out.draft.data as BigInt64Array;
    ws.forEach((w, b) => { for (let j = 0; j < w.len; j++) draft[w.start + j] = Number(ids[b * W + j]); });
  }
  await train.dispose(), await val.dispose();
  let th = 0, tn = 0, gh = 0, gn = 0, hits = 0, rounds = 0, tokens = 0;
  for (let s = 0; s + 1 < r.seqStart.length; s++) {
    const a = r.seqStart[s], end = r.seqStart[s + 1], gen = r.genFrom[s];
    for (let t = a; t + 1 < end; t++) {
      const hit = draft[t] === r.label[t + 1] ? 1 : 0;
      if (gen === 0) (th += hit), tn++;
      else if (t + 1 - a >= gen) (gh += hit), gn++;
    }
    if (gen === 0) continue;
    // Depth-1 rounds: committed tokens x_0..x_{c-1}; the first draft (row c-2) guesses x_c.
    for (let c = a + gen + 2; c < end; ) {
      const hit = draft[c - 2] === r.token[c] ? 1 : 0, step = c + 1 < end ? 1 + hit : 1;
      (hits += hit), rounds++, (tokens += step), (c += step);
    }
  }
  return { variant: vs.join('+'), seed, teacherTop1: th / tn, genTop1: gh / gn, walkAccept: hits / rounds, walkTau: tokens / rounds, rounds, seconds };
}

function permutation(n: number, rng: Rng): Int32Array {
  const p = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

const target = frozenTarget(model, quant);
const scale = slotScales(data.train);
process.stderr.write(`rows: train ${data.train.rows}, val ${data.val.rows}; residual RMS ${[...scale].map(([s, v]) => `${s}=${v.toFixed(3)}`).join(' ')}\n`);
// One results file per head, so variants and seeds can run as separate processes over the same logged rows.
const resultOf = (variant: string, seed: number) => join(WORK, `run-${variant}-seed${seed}.json`);
/** What a result depends on besides its variant and seed; a result made with other settings is neither reused nor printed. */
const settings = JSON.stringify({ ...wanted, slots: [], steps: f.steps });
const readResult = (path: string): (Result & { settings?: string }) | undefined => {
  const r = JSON.parse(readFileSync(path, 'utf8')) as Result & { settings?: string };
  return r.settings === settings ? r : undefined;
};
for (const seed of (f.seeds as string).split(',').filter((s) => s !== '').map(Number)) {
  for (const vs of variants) {
    if (existsSync(resultOf(vs.join('+'), seed)) && readResult(resultOf(vs.join('+'), seed))) continue;
    const r = await run(vs, seed, target, scale);
    writeFileSync(resultOf(r.variant, seed), JSON.stringify({ ...r, settings }, null, 2));
    process.stderr.write(`${JSON.stringify(r)}\n`);
  }
}
const results = readdirSync(WORK)
  .filter((n) => /^run-.*\.json$/.test(n))
  .map((n) => readResult(join(WORK, n)))
  .filter((r): r is Result => r !== undefined);
results.sort((a, b) => a.variant.localeCompare(b.variant) || a.seed - b.seed);
const extra = (vs: string[]) => (vs.length > 1 ? `+${vs.length} x d x d` : '');
console.log(`| input | seed | teacher-forced top-1 | greedy-continuation top-1 | depth-1 rounds: first draft accepted (tau) | fc3 |`);
console.log(`| --- | ---: | ---: | ---: | ---: | --- |`);
for (const x of results) console.log(`| ${x.variant} | ${x.seed} | ${x.teacherTop1.toFixed(4)} | ${x.genTop1.toFixed(4)} | ${x.walkAccept.toFixed(4)} (${x.walkTau.toFixed(3)}) | ${extra(x.variant.split('+'))} |`);
