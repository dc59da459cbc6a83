/**
 * Where the time of one plain decoding step goes (greedy, no draft head): the generator's
 * wall time per token split into ORT's run (per node type, from ORT's own profiler), the
 * executor's time between kernels, the feeds/outputs around `session.run`, and the generator
 * loop; against the bytes-read floor of the step at the bandwidth measured here.
 *
 *   node --import tsx scripts/profile-step.ts -- --model DIR [--quantize q4] --threads 1 --tokens 128 --repeats 5
 *
 * Without --model: the random 100M target of bench:runtime, quantized to q4. Two sessions on
 * the same weights: a plain one for the timed generations (median [min, max] over repeats of
 * the per-token time, first to last token), and a profiling one (ORT's profiler slows a run
 * down a little) for the per-node split of its decode passes (the prefill pass is left out).
 */
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { quantizedModel } from '../src/model/quantize.ts';
import { loadModel, type LoadedModel } from '../src/load-model.ts';
import { Generator } from '../src/generate/generator.ts';
import { randomWeights } from '../src/model/random.ts';
import { TargetSession, type StepSessionOptions, type TargetPass } from '../src/runtime/target.ts';
import { createSession, f32, i64, releaseSession, type Feeds, type Session } from '../src/runtime/ort.ts';
import { GraphBuilder } from '../src/onnx/graph.ts';
import { OnnxOps, type AttentionMode } from '../src/onnx/ops.ts';
import { llamaForward, type Ops } from '../src/model/definition.ts';
import { quantOf } from '../src/model/quantize.ts';
import { measureBandwidth, passWeightBytes } from './bandwidth.ts';
import { SIZES } from './runtime-sizes.ts';
import { median } from '../src/util/stats.ts';
import { UsageError } from '../src/errors.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'model', type: 'string', help: 'an HF checkpoint directory (default: the random 100M target)' },
  { flag: 'quantize', type: 'string', default: 'q4', help: 'q4, q8 or none (a quantized checkpoint stays as it is)' },
  { flag: 'threads', type: 'int', min: 1, default: 1, help: 'ORT intra-op threads' },
  { flag: 'tokens', type: 'int', min: 2, default: 128, help: 'tokens generated per repeat' },
  { flag: 'prompt', type: 'int', min: 1, default: 8, help: 'prompt length in tokens' },
  { flag: 'repeats', type: 'int', min: 1, default: 5, help: 'timed generations' },
  { flag: 'attention', type: 'string', help: 'split or fused (default: the model\'s default)' },
  { flag: 'against', type: 'string', default: '', help: 'variants timed interleaved with it: unfused (no Linear fusion), split, fused (attention)' },
];
const f = scriptFlags(import.meta.url, FLAGS);
const threads = f.threads as number, tokens = f.tokens as number, repeats = f.repeats as number;
const q = String(f.quantize);
if (!['q4', 'q8', 'none'].includes(q)) throw new UsageError('--quantize', `${q} is not q4, q8 or none`);

const base: LoadedModel = f.model ? await loadModel(String(f.model)) : { config: SIZES['100M'], weights: randomWeights(SIZES['100M'], 1, 3), source: 'hf' };
const model = quantizedModel(base, q === 'none' ? undefined : (q as 'q4' | 'q8'));
const cfg = model.config;
const prompt = Array.from({ length: f.prompt as number }, (_, i) => (i * 7919 + 13) % cfg.vocabSize);
const fmt = (x: number, d = 3) => x.toFixed(d);
const spread = (xs: number[], d = 3) => `${fmt(median(xs), d)} [${fmt(Math.min(...xs), d)}, ${fmt(Math.max(...xs), d)}]`;

/** A TargetPass that records each forward's wall time and the part of it inside `session.run`. */
class Recorded implements TargetPass {
  calls: { forward: number; run: number }[] = [];
  constructor(readonly inner: TargetSession) {}
  get cfg() {
    return this.inner.cfg;
  }
  get stats() {
    return this.inner.stats;
  }
  async forward(...args: Parameters<TargetPass['forward']>) {
    const run0 = this.inner.stats.msInRun, t0 = performance.now();
    const out = await this.inner.forward(...args);
    this.calls.push({ forward: performance.now() - t0, run: this.inner.stats.msInRun - run0 });
    return out;
  }
}

/** Greedy generation of `tokens` after `prompt`: ms per token (first to last) and the mean split of a decode pass (the prefill pass left out). */
async function generateOnce(g: Generator<Recorded>, target: Recorded) {
  target.calls = [];
  const times: number[] = [];
  for await (const chunk of g.stream(prompt, { maxNewTokens: tokens, stopAtEos: false })) for (const _ of chunk.ids) times.push(performance.now());
  const decode = target.calls.slice(1), mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const perToken = (times[times.length - 1] - times[0]) / (times.length - 1);
  const inRun = mean(decode.map((c) => c.run)), inForward = mean(decode.map((c) => c.forward));
  return { perToken, inRun, aroundRun: inForward - inRun, outsideForward: perToken - inForward };
}

/** The parts of a layer an ablation graph renders as identities, cumulatively (see ablationModel). */
const ABLATIONS = ['attention', 'rope', 'norms', 'silu'] as const;

/**
 * Ablation graphs: the one definition rendered with the first `drop` of ABLATIONS as identities
 * (attention returns q; RoPE, RMSNorm and SiLU return their input). With all four dropped, only
 * the projections (MatMulNBits when quantized), the residual adds, the gate product, the
 * embedding row and the LM head's argmax remain. Each ablation's time minus the next one's is
 * what that part costs in a step (its kernels and its nodes' dispatch).
 */
function ablationModel(drop: number): ReturnType<GraphBuilder['toExternalModel']> {
  const g = new GraphBuilder(`ablation_${drop}`);
  const o = new OnnxOps(g, (n) => model.weights.get(n), cfg.maxSeqLen, 'fused', { quantize: quantOf(cfg, model.weights) });
  const off = new Set(ABLATIONS.slice(0, drop));
  const ids = g.op('Reshape', [g.input('input_ids', 'int64', [1, 'T']), g.ints([-1])]);
  const positions = g.op('Reshape', [g.input('position_ids', 'int64', [1, 'T']), g.ints([-1])]);
  const ops: Ops<string> = {
    weight: (n) => o.weight(n), embed: (t, i) => o.embed(t, i), linear: (x, w, b) => o.linear(x, w, b), add: (a, b) => o.add(a, b), mul: (a, b) => o.mul(a, b), concat: (a, b) => o.concat(a, b),
    silu: (x) => (off.has('silu') ? x : o.silu(x)),
    rmsNorm: (x, w, eps) => (off.has('norms') ? x : o.rmsNorm(x, w, eps)),
    headRmsNorm: (x, w, h, eps) => (off.has('norms') ? x : o.headRmsNorm(x, w, h, eps)),
    // RoPE's output is [1, T, w]; back to [T, w] for the identity attention's o_proj.
    rope: (x, p, h, hd, spec) => (off.has('rope') ? x : g.op('Reshape', [o.rope(x, p, h, hd, spec), g.ints([-1, h * hd])])),
    attention: (q) => q,
  };
  const r = llamaForward(ops, cfg, { ids, positions, mask: '', past: null });
  g.output(g.op('ArgMax', [r.logits], { axis: -1, keepdims: 0 }), 'argmax', 'int64', ['T']);
  const kv = cfg.nKvHeads * cfg.headDim;
  r.keys.forEach((k, l) => g.output(g.op('Reshape', [k, g.ints([-1, kv])]), `key_${l}`, 'float32', ['T', kv]));
  r.values.forEach((v, l) => g.output(v, `value_${l}`, 'float32', ['T', kv]));
  return g.toExternalModel({ opset: 23, irVersion: 11 });
}

/** A chain of `n` Adds on one [1, d] row: what ORT's executor costs per (near-empty) node. */
function addChainModel(n: number): Uint8Array {
  const g = new GraphBuilder('add_chain');
  let x = g.input('x', 'float32', [1, cfg.dim]);
  const one = g.initializer('one', { dtype: 'float32', dims: [1, cfg.dim], data: new Float32Array(cfg.dim).fill(1e-3) });
  for (let i = 0; i < n; i++) x = g.op('Add', [x, one]);
  g.output(x, 'y', 'float32', [1, cfg.dim]);
  return g.toModel({ opset: 23, irVersion: 11 });
}

/** ms per `session.run` over `passes` runs with fixed feeds. */
async function timeRuns(s: Session, feeds: Feeds, passes: number): Promise<number> {
  const t0 = performance.now();
  for (let p = 0; p < passes; p++) await s.inner.run(feeds);
  return (performance.now() - t0) / passes;
}

// 1. Timed generations on a plain session, interleaved with the ablations.
const attention = f.attention as AttentionMode | undefined;
const timedSession = await TargetSession.create(cfg, model.weights, { threads, attention });
const timed = new Recorded(timedSession);
const gen = new Generator({ target: timed });
const VARIANTS: Record<string, StepSessionOptions> = { unfused: { attention, fuseLinears: false }, split: { attention: 'split' }, fused: { attention: 'fused' } };
const others = [];
for (const v of String(f.against).split(',').filter((x) => x)) {
  if (!VARIANTS[v]) throw new UsageError('--against', `${v} is not one of ${Object.keys(VARIANTS)}`);
  const target = new Recorded(await TargetSession.create(cfg, model.weights, { threads, ...VARIANTS[v] }));
  const g = new Generator({ target });
  await g.generate(prompt, { maxNewTokens: 8, stopAtEos: false }); // warm-up
  others.push({ v, target, g, runs: [] as Awaited<ReturnType<typeof generateOnce>>[] });
}
const ablations: Session[] = [];
for (let d = 1; d <= ABLATIONS.length; d++) ablations.push(await createSession(ablationModel(d), { threads }));
const CHAIN = 300;
const chain = await createSession(addChainModel(CHAIN), { threads });
const linearFeeds = { input_ids: i64(new BigInt64Array([17n]), [1, 1]), position_ids: i64(new BigInt64Array([40n]), [1, 1]) }, chainFeeds = { x: f32(new Float32Array(cfg.dim), [1, cfg.dim]) };
await gen.generate(prompt, { maxNewTokens: 8, stopAtEos: false }); // warm-up
for (const a of ablations) await timeRuns(a, linearFeeds, 8);
await timeRuns(chain, chainFeeds, 8);
const runs: Awaited<ReturnType<typeof generateOnce>>[] = [], ablationMs: number[][] = ablations.map(() => []), perNodeUs: number[] = [];
for (let r = 0; r < repeats; r++) {
  runs.push(await generateOnce(gen, timed));
  for (const o of others) o.runs.push(await generateOnce(o.g, o.target));
  for (let i = 0; i < ablations.length; i++) ablationMs[i].push(await timeRuns(ablations[i], linearFeeds, tokens));
  perNodeUs.push((1000 * (await timeRuns(chain, chainFeeds, tokens))) / CHAIN);
}
await timedSession.dispose();
for (const o of others) await o.target.inner.dispose();
for (const a of ablations) await releaseSession(a);
await releaseSession(chain);

// 2. One generation on a profiling session: per-node kernel times of its decode passes.
const prefix = join(tmpdir(), `eaglet-profile-${process.pid}`);
const profiled = await TargetSession.create(cfg, model.weights, { threads, attention, profile: prefix });
const pgen = new Generator({ target: profiled });
await pgen.generate(prompt, { maxNewTokens: tokens, stopAtEos: false });
profiled.endProfiling();
await profiled.dispose();
const dir = tmpdir(), file = readdirSync(dir).filter((n) => join(dir, n).startsWith(prefix) && n.endsWith('.json')).map((n) => join(dir, n))[0];
if (!file) throw new Error(`ORT wrote no profile starting with ${prefix}`);
interface Ev { cat: string; name: string; ts: number; dur: number; args?: { op_name?: string } }
const events = JSON.parse(readFileSync(file, 'utf8')) as Ev[];
rmSync(file);
const modelRuns = events.filter((e) => e.cat === 'Session' && e.name === 'model_run').sort((a, b) => a.ts - b.ts).slice(1); // drop the prefill
const kernels = events.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time'));
const first = modelRuns[0].ts;
const byOp = new Map<string, { us: number; nodes: number }>();
let kernelUs = 0, nodes = 0;
for (const e of kernels) {
  if (e.ts < first) continue;
  const op = e.args?.op_name ?? '?', o = byOp.get(op) ?? { us: 0, nodes: 0 };
  o.us += e.dur;
  o.nodes++;
  byOp.set(op, o);
  kernelUs += e.dur;
  nodes++;
}
const n = modelRuns.length, runUs = modelRuns.reduce((a, e) => a + e.dur, 0);

// 3. The bytes a step must read: the weights a decode pass touches (passWeightBytes), plus the
// live K/V rows (mean over the generation).
const weightBytes = passWeightBytes(cfg, model.weights);
const meanPast = prompt.length + tokens / 2, kvBytes = 2 * cfg.nLayers * meanPast * cfg.nKvHeads * cfg.headDim * 4;
const gbps = await measureBandwidth(threads);
const floorMs = (weightBytes + kvBytes) / 1e6 / gbps;

const step = median(runs.map((r) => r.perToken));
console.log(`${f.model ?? 'random 100M'} ${q}, ${threads} thread(s), ${tokens} tokens after ${prompt.length}, ${repeats} repeats (median [min, max])`);
console.log(`  per token          ${spread(runs.map((r) => r.perToken))} ms = ${fmt(1000 / step, 1)} tok/s`);
console.log(`  in session.run     ${spread(runs.map((r) => r.inRun))} ms`);
console.log(`  feeds + outputs    ${spread(runs.map((r) => r.aroundRun))} ms (in forward, outside run)`);
console.log(`  generator loop     ${spread(runs.map((r) => r.outsideForward))} ms (outside forward)`);
for (const o of others) {
  const ratio = o.runs.map((r, i) => r.perToken / runs[i].perToken); // paired: the same repeat
  console.log(`  ${o.v.padEnd(8)} per token ${spread(o.runs.map((r) => r.perToken))} ms, in run ${spread(o.runs.map((r) => r.inRun))} ms; per-repeat ratio to the first ${spread(ratio)}`);
}
// What each part costs: the full run minus the graph without it, then ablation minus ablation.
const inRun = median(runs.map((r) => r.inRun)), levels = [inRun, ...ablationMs.map(median)];
console.log(`  of the run (ablations, interleaved; each part = the graph with it minus the graph without):`);
ABLATIONS.forEach((part, i) => console.log(`    ${part.padEnd(10)} ${fmt(levels[i] - levels[i + 1])} ms   (without it and the parts above: ${spread(ablationMs[i])} ms)`));
console.log(`    Linear layers and the rest ${fmt(levels[ABLATIONS.length])} ms`);
console.log(`  executor cost of a near-empty node (chain of ${CHAIN} Adds): ${spread(perNodeUs, 2)} us`);
console.log(`profiled session, ${n} decode passes: ${fmt(runUs / n / 1000)} ms a pass (model_run), ${nodes / n} nodes, kernels ${fmt(kernelUs / n / 1000)} ms, between kernels ${fmt((runUs - kernelUs) / n / 1000)} ms`);
for (const [op, o] of [...byOp].sort((a, b) => b[1].us - a[1].us)) {
  console.log(`  ${op.padEnd(24)} ${String(o.nodes / n).padStart(4)} nodes ${fmt(o.us / n / 1000).padStart(7)} ms ${fmt((100 * o.us) / runUs, 1).padStart(5)}%`);
}
console.log(`bytes read a step: ${fmt(weightBytes / 1e6, 1)} MB weights + ${fmt(kvBytes / 1e6, 2)} MB K/V; bandwidth ${fmt(gbps, 1)} GB/s -> floor ${fmt(floorMs)} ms; step = ${fmt(step / floorMs, 2)}x floor`);
