/**
 * Training benchmark: tokens/s of a training step (forward + backward + AdamW update in JS) per
 * backend, same shapes, one process, backends interleaved within every repeat. Cases:
 *
 *   draft   EAGLE head on the default target (data/default/target), train-draft's defaults:
 *           8 windows x 32 rows per step
 *   target  the default target's config (scripts/train-default.sh): 4 windows x 256 tokens
 *   d512    a d=512, 8-layer target, 4 x 256 (ort only: wasm would take minutes per step)
 *
 * Backends: ort with 1 and with all threads, and tfjs wasm. Weights and data are random (cost
 * only). For targets it also prints the achieved GFLOP/s (3 x the forward matmul FLOPs per step,
 * the usual forward + 2x backward estimate) beside ORT's forward-only GFLOP/s on the same shapes,
 * and where a step's milliseconds go (inside onnxruntime vs the JS AdamW update).
 *
 *   npm run bench:train [-- --cases draft,target,d512 --steps 8 --wasm-steps 2 --d512-steps 3 --repeats 3 --json out.json]
 */
import { availableParallelism } from 'node:os';
import { writeFileAtomic } from '../src/io/atomic.ts';
import { loadModel } from '../src/load-model.ts';
import type { ModelConfig } from '../src/model/config.ts';
import { headConfigFor, randomHeadWeights } from '../src/model/draft-head.ts';
import { makeConfig } from '../src/model/random.ts';
import type { Weights } from '../src/model/weights.ts';
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { Rng } from '../src/util/rng.ts';
import { AdamWArrays } from '../training/adamw.ts';
import type { PackedBatch } from '../training/dataset.ts';
import { OrtDraftSteps } from '../training/ort/draft-backend.ts';
import { OrtTargetSteps } from '../training/ort/target-backend.ts';
import { loadTf } from '../training/tf-backend.ts';
import { TfDraftSteps } from '../training/train-draft.ts';
import { initTargetWeights, TfTargetSteps } from '../training/train-target.ts';
import { median } from '../src/util/stats.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'cases', type: 'string', default: 'draft,target,d512', help: 'cases to run' },
  { flag: 'steps', type: 'int', min: 1, default: 8, help: 'timed ort steps per repeat' },
  { flag: 'wasm-steps', type: 'int', min: 1, default: 2, help: 'timed wasm steps per repeat (wasm is slow)' },
  { flag: 'd512-steps', type: 'int', min: 1, default: 3, help: 'timed ort steps per repeat of the d512 case' },
  { flag: 'warmup', type: 'int', min: 1, default: 3, help: 'untimed ort steps before each timing (ORT grows its memory arena over the first runs)' },
  { flag: 'repeats', type: 'int', min: 1, default: 3, help: 'repeats (backends interleaved within each)' },
  { flag: 'json', type: 'string', help: 'also write results here' },
];
const f = scriptFlags(import.meta.url, FLAGS);
const cores = availableParallelism();

/** A stepper: loss + gradients of one batch at the given parameters. */
type Step = (params: Weights) => Promise<{ grads: Map<string, Float32Array> }>;

interface Timing {
  tokPerS: number;
  msPerStep: number;
  msAdam: number;
}

/** Runs `steps` training steps (after `warmup` untimed ones, AdamW included) and returns tokens/s and ms split. */
async function timeSteps(step: Step, params: Weights, tokens: number, steps: number, warmup = f.warmup as number): Promise<Timing> {
  const names = [...params.keys()];
  const opt = new AdamWArrays(names.map((n) => params.get(n)!.data));
  for (let s = 0; s < warmup; s++) {
    const r = await step(params);
    opt.apply(names.map((n) => grads(r, n)), 1e-4);
  }
  let adam = 0;
  const t0 = performance.now();
  for (let s = 0; s < steps; s++) {
    const { grads } = await step(params);
    const ta = performance.now();
    opt.apply(names.map((n) => grads.get(n)!), 1e-4);
    adam += performance.now() - ta;
  }
  const ms = (performance.now() - t0) / steps;
  return { tokPerS: (tokens * 1000) / ms, msPerStep: ms, msAdam: adam / steps };
}

const grads = (r: { grads: Map<string, Float32Array> }, n: string): Float32Array => r.grads.get(n)!;
const clone = (w: Weights): Weights => new Map([...w].map(([n, t]) => [n, { shape: t.shape, data: t.data.slice() }]));

/** Forward matmul FLOPs of a target pass over B windows of T tokens (linears, lm head, attention scores and values). */
function forwardFlops(c: ModelConfig, B: number, T: number): number {
  const q = c.nHeads * c.headDim, kv = c.nKvHeads * c.headDim;
  const perToken = 2 * (c.nLayers * (c.dim * q + 2 * c.dim * kv + q * c.dim + 3 * c.dim * c.hiddenDim) + c.dim * c.vocabSize);
  return B * T * perToken + c.nLayers * B * 4 * c.nHeads * T * T * c.headDim;
}

interface Row {
  case: string;
  backend: string;
  tokPerS: number[];
  msPerStep: number[];
  msAdam: number[];
  gflops?: number[];
  forwardGflops?: number[];
}
const rows: Row[] = [];
const record = (r: Row, t: Timing, flops?: number) => {
  r.tokPerS.push(t.tokPerS), r.msPerStep.push(t.msPerStep), r.msAdam.push(t.msAdam);
  if (flops) (r.gflops ??= []).push((3 * flops) / (t.msPerStep * 1e6));
};
const row = (c: string, backend: string): Row => {
  const r = { case: c, backend, tokPerS: [], msPerStep: [], msAdam: [] };
  rows.push(r);
  return r;
};

const { tf } = await loadTf('wasm');
const cases = String(f.cases).split(',');
const threadsList = [...new Set([1, cores])];

if (cases.includes('draft')) {
  const target = await loadModel('data/default/target');
  const cfg = target.config, head = headConfigFor(cfg), B = 8, W = 32, d = cfg.dim, n = B * W;
  const rng = new Rng(1);
  const b: PackedBatch = {
    n, positions: Int32Array.from({ length: n }, (_, i) => i % W), tokens: Int32Array.from({ length: n }, () => rng.int(cfg.vocabSize)),
    inputFeatures: Float32Array.from({ length: n * d }, () => rng.normal()), targetFeatures: Float32Array.from({ length: n * d }, () => rng.normal()),
    labels: new Int32Array(n), segment: Int32Array.from({ length: n }, (_, i) => Math.floor(i / W)),
  };
  const w = { featureWeight: 1, tokenWeight: 0.1 };
  const orts = await Promise.all(threadsList.map((t) => OrtDraftSteps.create(target, head, B, W, w, t)));
  const tfs = new TfDraftSteps(tf, target, head, w);
  const ortRows = threadsList.map((t) => row('draft', `ort (${t} thread${t > 1 ? 's' : ''})`)), wasmRow = row('draft', 'tfjs wasm');
  for (let r = 0; r < (f.repeats as number); r++) {
    for (const [i, s] of orts.entries()) record(ortRows[i], await timeSteps((p) => s.step(p, b, b.inputFeatures), clone(randomHeadWeights(cfg, 1)), n, f.steps as number));
    record(wasmRow, await timeSteps((p) => tfs.step(p, b, b.inputFeatures), clone(randomHeadWeights(cfg, 1)), n, f.wasmSteps as number, 1));
  }
  for (const s of orts) await s.dispose();
  await tfs.dispose();
}

async function targetCase(name: string, cfg: ModelConfig, B: number, T: number, withWasm: boolean, steps: number): Promise<void> {
  const rng = new Rng(2), N = B * T, flops = forwardFlops(cfg, B, T);
  const ids = Int32Array.from({ length: N }, () => rng.int(cfg.vocabSize)), labels = Int32Array.from({ length: N }, () => rng.int(cfg.vocabSize));
  const orts = await Promise.all(threadsList.map((t) => OrtTargetSteps.create(cfg, B, T, t)));
  const tfs = withWasm ? new TfTargetSteps(tf, cfg, T, true) : null;
  const ortRows = threadsList.map((t) => row(name, `ort (${t} thread${t > 1 ? 's' : ''})`)), wasmRow = withWasm ? row(name, 'tfjs wasm') : null;
  const init = initTargetWeights(cfg, 0);
  for (let r = 0; r < (f.repeats as number); r++) {
    for (const [i, s] of orts.entries()) {
      record(ortRows[i], await timeSteps((p) => s.step(p, ids, labels), clone(init), N, steps), flops);
      // ORT's forward alone on the same shapes (the loss-only graph).
      for (let k = 0; k < (f.warmup as number); k++) await s.loss(init, ids, labels);
      const t0 = performance.now();
      for (let k = 0; k < steps; k++) await s.loss(init, ids, labels);
      (ortRows[i].forwardGflops ??= []).push((flops * steps) / ((performance.now() - t0) * 1e6));
    }
    if (tfs && wasmRow) record(wasmRow, await timeSteps((p) => tfs.step(p, ids, labels), clone(init), N, f.wasmSteps as number, 1), flops);
  }
  for (const s of orts) await s.dispose();
  await tfs?.dispose();
}

if (cases.includes('target')) await targetCase('target', (await loadModel('data/default/target')).config, 4, 256, true, f.steps as number);
if (cases.includes('d512')) await targetCase('d512', makeConfig({ vocabSize: 1536, dim: 512, nLayers: 8, nHeads: 8, nKvHeads: 4, maxSeqLen: 256, tieEmbeddings: true }), 4, 256, false, f.d512Steps as number);

const spread = (xs: number[], d = 0) => `${median(xs).toFixed(d)} [${Math.min(...xs).toFixed(d)}-${Math.max(...xs).toFixed(d)}]`;
console.log(`training step benchmark: ${f.repeats} repeats, ${f.steps} ort (${f.d512Steps} for d512) / ${f.wasmSteps} wasm steps each after warm-up; median [min-max]; ${cores} cores`);
const cols = ['case', 'backend', 'tok/s', 'ms/step', 'of which AdamW ms', 'GFLOP/s train', 'GFLOP/s ORT forward', 'vs wasm'];
const table = rows.map((r) => {
  const base = rows.find((x) => x.case === r.case && x.backend === 'tfjs wasm');
  return [
    r.case, r.backend, spread(r.tokPerS), spread(r.msPerStep, 1), spread(r.msAdam, 1), r.gflops ? spread(r.gflops, 1) : '', r.forwardGflops ? spread(r.forwardGflops, 1) : '',
    base && r !== base ? `${(median(r.tokPerS) / median(base.tokPerS)).toFixed(1)}x` : '',
  ];
});
console.log(`| ${cols.join(' | ')} |\n|${cols.map(() => ' --- ').join('|')}|`);
for (const t of table) console.log(`| ${t.join(' | ')} |`);
if (f.json) writeFileAtomic(f.json as string, JSON.stringify({ cores, repeats: f.repeats, steps: f.steps, wasmSteps: f.wasmSteps, rows }, null, 2) + '\n');
