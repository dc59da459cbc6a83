/**
 * The peer benchmark: eaglet against node-llama-cpp (llama.cpp) on ONE random-weight Llama,
 * written as an HF directory for eaglet and as GGUF F32 / Q8_0 / Q4_0 for llama.cpp (cost only:
 * random weights, token ids, no text).
 *
 *   sh scripts/peer/install.sh                       # node-llama-cpp 3.21.1, into scripts/peer only
 *   node --import tsx scripts/peer/bench.ts --out runs/peer [--size 100M] [--threads 1,2] [--repeats 5]
 *   node --import tsx scripts/peer/bench.ts --out runs/peer-quick --quick
 *
 * Pairs: eaglet fp32 vs GGUF F32, eaglet q8 vs Q8_0, eaglet q4 vs Q4_0. eaglet's q8/q4 load the
 * directory `eaglet quantize` wrote (--eaglet-quant file, the default: it loads faster than
 * quantizing at load) or quantize at load (--eaglet-quant load).
 *
 * 1. Check (unless --no-check): greedy ids of eaglet fp32 and llama.cpp F32 for a few prompts must
 *    be equal with llama.cpp computing in f32 (f32 K/V cache, flash attention off: its CPU kernel
 *    rounds through f16); a divergence is reported and fails the run. The same check with
 *    llama.cpp's defaults is reported for information (near-ties may flip there).
 * 2. Measure: each load in a fresh child process, runtimes alternating inside every (repeat,
 *    threads, pair) with the order swapped each repeat. Per child: load time (runtime import ->
 *    ready to decode), time from process start, RSS once ready, peak RSS (VmHWM), and decode tok/s
 *    (greedy, --tokens tokens after a --prompt-tokens prompt, first to last token). llama.cpp runs
 *    with node-llama-cpp's defaults here (F16 K/V cache, flash attention auto), as a user would.
 * Writes results.json (every run), results.md (min / median / max) and results.svg into --out.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFileAtomic } from '../../src/io/atomic.ts';
import { parameterCount, type ModelConfig } from '../../src/model/config.ts';
import { makeConfig } from '../../src/model/random.ts';
import { QUANT } from '../../src/model/quantize.ts';
import { EagletError, UsageError } from '../../src/errors.ts';
import type { FlagSpec } from '../../src/option-schema.ts';
import { linePlot, type Series } from '../../src/util/svg-plot.ts';
import { spread } from '../../src/util/stats.ts';
import { SIZES } from '../runtime-sizes.ts';
import { scriptFlags } from '../script-flags.ts';

const here = (p: string) => fileURLToPath(new URL(p, import.meta.url));

/** The model sizes: 100M is bench:runtime's and load-sizes' 100M; small is for a quick check. */
const MODEL_SIZES: Record<string, ModelConfig> = {
  '100M': SIZES['100M'],
  small: makeConfig({ vocabSize: 4096, dim: 256, nLayers: 4, nHeads: 8, nKvHeads: 4, hiddenDim: 704, maxSeqLen: 512 }),
};
const PAIRS = {
  fp32: { gguf: 'F32' },
  q8: { gguf: 'Q8_0' },
  q4: { gguf: 'Q4_0' },
} as const;
type Pair = keyof typeof PAIRS;

const FLAGS: FlagSpec[] = [
  { flag: 'out', type: 'string', meta: 'DIR', help: 'where results.json, results.md and results.svg go (required)' },
  { flag: 'models', type: 'string', default: 'runs/peer-models', meta: 'DIR', help: 'where the models are written (once per size, then reused)' },
  { flag: 'size', type: 'string', choices: Object.keys(MODEL_SIZES), meta: Object.keys(MODEL_SIZES).join('|'), help: 'model size (default 100M; --quick small)' },
  { flag: 'quick', type: 'bool', help: 'a fast sanity run: --size small, 2 repeats, 16 tokens (unless given)' },
  { flag: 'threads', type: 'ints', help: 'thread counts, comma-separated (default 1 and every core)' },
  { flag: 'pairs', type: 'string', default: 'fp32,q8,q4', help: 'pairs to measure: fp32, q8, q4' },
  { flag: 'repeats', type: 'int', min: 1, help: 'fresh processes per (runtime, pair, threads) (default 5; --quick 2)' },
  { flag: 'tokens', type: 'int', min: 2, help: 'tokens generated per measurement (default 64; --quick 16)' },
  { flag: 'prompt-tokens', type: 'int', min: 1, default: 8, help: 'prompt length before decoding' },
  { flag: 'eaglet-quant', type: 'string', default: 'file', choices: ['file', 'load'], help: "eaglet q8/q4: the `eaglet quantize` directory, or --quantize at load" },
  { flag: 'check', type: 'bool', default: true, help: 'check greedy outputs of eaglet fp32 and llama.cpp F32 are equal first (--no-check skips)' },
  { flag: 'check-only', type: 'bool', help: 'run the output check and stop' },
  { flag: 'check-prompts', type: 'int', min: 1, default: 4, help: 'prompts in the output check' },
  { flag: 'check-tokens', type: 'int', min: 2, default: 32, help: 'tokens per prompt in the output check' },
  { flag: 'write-models', type: 'string', help: '(internal) write the models of --size into this directory' },
];

/** A failure after the flags (a child or a writer failed): one `error:` line, exit 1 (scriptFlags). */
function fail(message: string): never {
  throw new EagletError(message);
}

// --help and bad flags end here, before anything needs node-llama-cpp (checked below).
const f = scriptFlags(import.meta.url, FLAGS);

// Unset, not defaulted, so --quick also sees --size=100M (argv held no bare --size then).
const size = (f.size as string | undefined) ?? (f.quick ? 'small' : '100M');
const cfg = MODEL_SIZES[size];

if (f.writeModels) {
  // In its own process, so the writer's memory is gone before anything is measured.
  const { saveHfCheckpoint } = await import('../../src/io/hf.ts');
  const { randomWeights } = await import('../../src/model/random.ts');
  const { saveLlamaGguf } = await import('./llama-gguf.ts');
  const dir = String(f.writeModels);
  const w = randomWeights(cfg, 1, 3);
  saveHfCheckpoint(join(dir, 'hf'), cfg, w);
  for (const type of ['F32', 'Q8_0', 'Q4_0'] as const) saveLlamaGguf(join(dir, `${type}.gguf`), cfg, w, type, `eaglet-random-${size}`);
  process.exit(0);
}

if (!f.out) throw new UsageError('--out', 'is required (where the results go)');
const out = resolve(String(f.out));
const threadList = f.threads === undefined ? [...new Set([1, availableParallelism()])] : (f.threads as number[]);
if (threadList.some((t) => !Number.isInteger(t) || t < 1)) throw new UsageError('--threads', `expected positive integers separated by commas, got ${JSON.stringify(f.threads)}`);
const pairs = String(f.pairs).split(',').map((s) => s.trim()) as Pair[];
for (const p of pairs) if (!(p in PAIRS)) throw new UsageError('--pairs', `unknown pair ${JSON.stringify(p)} (fp32, q8, q4)`);
const repeats = (f.repeats as number | undefined) ?? (f.quick ? 2 : 5);
const tokens = (f.tokens as number | undefined) ?? (f.quick ? 16 : 64);
const promptTokens = f.promptTokens as number;
if (promptTokens + Math.max(tokens, f.checkTokens as number) > cfg.maxSeqLen) throw new UsageError('--prompt-tokens', `plus --tokens (or --check-tokens) must fit the model's context (${cfg.maxSeqLen})`);
const eagletQuant = String(f.eagletQuant) as 'file' | 'load';

const peerDir = here('.');
if (!existsSync(join(peerDir, 'node_modules', 'node-llama-cpp', 'package.json'))) fail('node-llama-cpp is not installed: run `sh scripts/peer/install.sh` first');
const peerVersion = JSON.parse(readFileSync(join(peerDir, 'node_modules', 'node-llama-cpp', 'package.json'), 'utf8')).version as string;

// ---- models: written once per size ----
const modelDir = resolve(String(f.models), size);
const marker = join(modelDir, 'models.json');
// writer 2: `eaglet quantize` directories hold the quantized embedding table (rewritten once);
// `quant`: the blocks `eaglet quantize` writes (rewritten when they change).
const wanted = JSON.stringify({ cfg, seed: 1, scale: 3, writer: 2, quant: QUANT });
if (!existsSync(marker) || readFileSync(marker, 'utf8') !== wanted) {
  mkdirSync(modelDir, { recursive: true });
  console.log(`writing the ${size} model to ${modelDir} (HF directory, GGUF F32 / Q8_0 / Q4_0, eaglet quantize q8 / q4)`);
  const w = spawnSync(process.execPath, ['--max-old-space-size=8192', '--import', 'tsx', fileURLToPath(import.meta.url), '--write-models', modelDir, '--size', size], { stdio: 'inherit' });
  if (w.status !== 0) fail(`writing the models into ${modelDir} failed`);
  for (const bits of ['8', '4']) {
    const q = spawnSync(process.execPath, ['--import', 'tsx', here('../../src/cli/main.ts'), 'quantize', '--model', join(modelDir, 'hf'), '--bits', bits, '--out', join(modelDir, `hf-q${bits}`)], { stdio: 'inherit' });
    if (q.status !== 0) fail(`eaglet quantize --bits ${bits} failed`);
  }
  writeFileAtomic(marker, wanted);
}

const eagletModel = (p: Pair) => (p === 'fp32' || eagletQuant === 'load' ? join(modelDir, 'hf') : join(modelDir, `hf-${p}`));
const eagletQuantize = (p: Pair) => (p !== 'fp32' && eagletQuant === 'load' ? p : undefined);
const ggufModel = (p: Pair) => join(modelDir, `${PAIRS[p].gguf}.gguf`);
const dirBytes = (d: string) => ['model.safetensors', 'config.json'].reduce((s, n) => s + (existsSync(join(d, n)) ? statSync(join(d, n)).size : 0), 0);

// ---- children ----
interface ChildResult {
  /** Named parts of loadMs (import, then the runtime's load calls). */
  parts: Record<string, number>;
  importMs: number;
  loadMs: number;
  readyMs: number;
  rssReadyMB: number;
  peakRssMB: number;
  runs: { ids: number[]; decodeTokPerS: number }[];
}
type Runtime = 'eaglet' | 'llama.cpp';

function runChild(runtime: Runtime, pair: Pair, threads: number, prompts: number[][], n: number, exact = false): ChildResult {
  const args = runtime === 'eaglet'
    ? ['--import', 'tsx', here('eaglet-child.ts'), JSON.stringify({ model: eagletModel(pair), quantize: eagletQuantize(pair), threads, prompts, tokens: n })]
    : [here('llama-child.mjs'), JSON.stringify({ model: ggufModel(pair), threads, prompts, tokens: n, exact, contextSize: cfg.maxSeqLen })];
  const c = spawnSync(process.execPath, args, { encoding: 'utf8', cwd: runtime === 'eaglet' ? process.cwd() : peerDir, maxBuffer: 64 << 20 });
  const last = c.stdout?.trim().split('\n').pop();
  if (c.status !== 0 || !last?.startsWith('{')) fail(`${runtime} ${pair} (${threads} threads) failed: ${(c.stderr || c.stdout || String(c.error)).trim().split('\n').slice(-5).join(' | ')}`);
  return JSON.parse(last) as ChildResult;
}

/** Deterministic prompts of ordinary token ids (above the GGUF's special and byte tokens). */
function prompts(count: number, length: number, seed: number): number[][] {
  let s = seed >>> 0;
  const next = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0), s / 2 ** 32);
  return Array.from({ length: count }, (_, i) => Array.from({ length: length + i }, () => 260 + Math.floor(next() * (cfg.vocabSize - 260))));
}

// ---- 1. outputs: eaglet fp32 == llama.cpp F32, greedy ----
interface Divergence { prompt: number; position: number; eaglet: number; llama: number }
/** The first position where two runs' greedy ids differ, or undefined. */
function firstDivergence(a: ChildResult, b: ChildResult): Divergence | undefined {
  for (let p = 0; p < a.runs.length; p++) {
    const x = a.runs[p].ids, y = b.runs[p].ids, n = Math.max(x.length, y.length);
    for (let i = 0; i < n; i++) if (x[i] !== y[i]) return { prompt: p, position: i, eaglet: x[i], llama: y[i] };
  }
  return undefined;
}
let check: { prompts: number; tokens: number; exact: Divergence | 'equal'; defaults: Divergence | 'equal' } | undefined;
if (f.check || f.checkOnly) {
  const ps = prompts(f.checkPrompts as number, 4, 7), n = f.checkTokens as number, t = threadList[0];
  const e = runChild('eaglet', 'fp32', t, ps, n);
  const exact = firstDivergence(e, runChild('llama.cpp', 'fp32', t, ps, n, true));
  const defaults = firstDivergence(e, runChild('llama.cpp', 'fp32', t, ps, n, false));
  check = { prompts: ps.length, tokens: n, exact: exact ?? 'equal', defaults: defaults ?? 'equal' };
  const say = (d: Divergence | undefined) => (d ? `DIVERGE at prompt ${d.prompt}, token ${d.position} (eaglet ${d.eaglet}, llama.cpp ${d.llama})` : 'equal');
  console.log(`check (${ps.length} prompts x ${n} tokens, greedy): eaglet fp32 vs llama.cpp F32 with f32 K/V, no flash attention: ${say(exact)}; with its defaults (F16 K/V, flash attention auto): ${say(defaults)}`);
  if (f.checkOnly || exact) {
    mkdirSync(out, { recursive: true });
    writeFileAtomic(join(out, 'check.json'), JSON.stringify({ size, config: cfg, nodeLlamaCpp: peerVersion, check }, null, 2) + '\n');
    process.exit(exact ? 1 : 0);
  }
}

// ---- 2. measurements, interleaved ----
interface Row extends Omit<ChildResult, 'runs'> { runtime: Runtime; pair: Pair; threads: number; repeat: number; decodeTokPerS: number }
const rows: Row[] = [];
const prompt = prompts(1, promptTokens, 11);
for (let r = 0; r < repeats; r++) {
  for (const threads of threadList) {
    for (const [k, pair] of pairs.entries()) {
      const order: Runtime[] = (r + k) % 2 === 0 ? ['eaglet', 'llama.cpp'] : ['llama.cpp', 'eaglet'];
      for (const runtime of order) {
        const { runs, ...m } = runChild(runtime, pair, threads, prompt, tokens);
        const row: Row = { runtime, pair, threads, repeat: r, ...m, decodeTokPerS: runs[0].decodeTokPerS };
        rows.push(row);
        console.log(`r${r} ${String(threads).padStart(2)}t ${pair.padEnd(4)} ${runtime.padEnd(9)} load ${(m.loadMs / 1000).toFixed(2)} s  peak ${m.peakRssMB.toFixed(0)} MB  ${row.decodeTokPerS.toFixed(1)} tok/s`);
      }
    }
  }
}

// ---- 3. summary ----
const stats = (xs: number[]) => {
  const { min, median, max } = spread(xs);
  return { min, median, max };
};
type Stat = ReturnType<typeof stats>;
const METRICS = ['decodeTokPerS', 'loadMs', 'readyMs', 'peakRssMB', 'rssReadyMB'] as const;
const summary = pairs.flatMap((pair) => threadList.map((threads) => {
  const of = (runtime: Runtime) => {
    const rs = rows.filter((x) => x.pair === pair && x.threads === threads && x.runtime === runtime);
    return Object.fromEntries(METRICS.map((m) => [m, stats(rs.map((x) => x[m]))])) as Record<(typeof METRICS)[number], Stat>;
  };
  return { pair, threads, eaglet: of('eaglet'), llama: of('llama.cpp') };
}));
/** 'win' / 'lose' when the ranges do not overlap, 'tie' when they do. */
const verdict = (a: Stat, b: Stat, higherBetter: boolean) => (a.min > b.max ? (higherBetter ? 'win' : 'lose') : a.max < b.min ? (higherBetter ? 'lose' : 'win') : 'tie');
const doneMeans = summary.filter((s) => s.pair === 'q4').map((s) => ({
  threads: s.threads,
  decode: { eaglet: s.eaglet.decodeTokPerS.median, llama: s.llama.decodeTokPerS.median, met: s.eaglet.decodeTokPerS.median >= s.llama.decodeTokPerS.median, ranges: verdict(s.eaglet.decodeTokPerS, s.llama.decodeTokPerS, true) },
  load: { ratio: s.eaglet.loadMs.median / s.llama.loadMs.median, met: s.eaglet.loadMs.median <= 1.5 * s.llama.loadMs.median },
  peakRss: { ratio: s.eaglet.peakRssMB.median / s.llama.peakRssMB.median, met: s.eaglet.peakRssMB.median <= 1.3 * s.llama.peakRssMB.median },
}));
const files = Object.fromEntries(pairs.map((p) => [p, { eaglet: eagletModel(p), eagletBytes: dirBytes(eagletModel(p)), gguf: ggufModel(p), ggufBytes: statSync(ggufModel(p)).size }]));
const meta = {
  command: `node --import tsx scripts/peer/bench.ts ${process.argv.slice(2).join(' ')}`,
  size, params: parameterCount(cfg), config: cfg, nodeLlamaCpp: peerVersion, node: process.version,
  threads: threadList, repeats, tokens, promptTokens, eagletQuant, check, files,
};
mkdirSync(out, { recursive: true });
writeFileAtomic(join(out, 'results.json'), JSON.stringify({ ...meta, summary, doneMeans, rows }, null, 2) + '\n');

const r = (s: Stat, digits: number, scale = 1) => `${(s.median * scale).toFixed(digits)} [${(s.min * scale).toFixed(digits)}, ${(s.max * scale).toFixed(digits)}]`;
const label = (p: Pair) => ({ fp32: 'fp32 / F32', q8: 'q8 / Q8_0', q4: 'q4 / Q4_0' })[p];
const md = [
  `Random ${size} Llama (${(meta.params / 1e6).toFixed(1)}M parameters: d=${cfg.dim}, ${cfg.nLayers} layers, ${cfg.nHeads} heads / ${cfg.nKvHeads} K/V, vocab ${cfg.vocabSize}), node-llama-cpp ${peerVersion}, ${repeats} repeats, ${tokens} tokens after ${promptTokens}; median [min, max]. eaglet q8/q4: ${eagletQuant === 'file' ? '`eaglet quantize` directory' : 'quantized at load'}.`,
  check ? `Greedy ids, eaglet fp32 vs llama.cpp F32, ${check.prompts} prompts x ${check.tokens} tokens: with f32 K/V and no flash attention ${typeof check.exact === 'string' ? 'equal' : `diverge at ${JSON.stringify(check.exact)}`}; with llama.cpp's defaults (F16 K/V, flash attention auto) ${typeof check.defaults === 'string' ? 'equal' : `first divergence ${JSON.stringify(check.defaults)}`}.` : 'Output check skipped (--no-check).',
  '',
  '| pair | threads | decode tok/s eaglet | llama.cpp | load s eaglet | llama.cpp | peak RSS MB eaglet | llama.cpp |',
  '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ...summary.map((s) => `| ${label(s.pair)} | ${s.threads} | ${r(s.eaglet.decodeTokPerS, 1)} | ${r(s.llama.decodeTokPerS, 1)} | ${r(s.eaglet.loadMs, 2, 1e-3)} | ${r(s.llama.loadMs, 2, 1e-3)} | ${r(s.eaglet.peakRssMB, 0)} | ${r(s.llama.peakRssMB, 0)} |`),
  '',
  'Done means (q4 pair, medians): ' + doneMeans.map((d) => `${d.threads} thread(s): decode ${d.decode.eaglet.toFixed(1)} vs ${d.decode.llama.toFixed(1)} tok/s ${d.decode.met ? 'met' : 'NOT met'} (ranges: ${d.decode.ranges}), load ${d.load.ratio.toFixed(2)}x ${d.load.met ? 'met' : 'NOT met'}, peak RSS ${d.peakRss.ratio.toFixed(2)}x ${d.peakRss.met ? 'met' : 'NOT met'}`).join('; ') + '.',
  '',
  'Where load time goes (median ms of each part, first thread count):',
  '',
  ...pairs.flatMap((p) => (['eaglet', 'llama.cpp'] as const).map((rt) => {
    const rs = rows.filter((x) => x.pair === p && x.runtime === rt && x.threads === threadList[0]);
    const names = Object.keys(rs[0]?.parts ?? {});
    return `- ${label(p)}, ${rt}: ` + names.map((n) => `${n} ${stats(rs.map((x) => x.parts[n])).median.toFixed(0)}`).join(', ');
  })),
  '',
  `Files: ${pairs.map((p) => `${p} eaglet ${(files[p].eagletBytes / 1e6).toFixed(0)} MB, GGUF ${(files[p].ggufBytes / 1e6).toFixed(0)} MB`).join('; ')}.`,
];
writeFileAtomic(join(out, 'results.md'), md.join('\n') + '\n');

const series: Series[] = pairs.flatMap((p, k) => (['eaglet', 'llama'] as const).map((rt) => ({
  label: `${rt === 'eaglet' ? 'eaglet' : 'llama.cpp'} ${label(p).split(' / ')[rt === 'eaglet' ? 0 : 1]}`,
  x: threadList,
  y: threadList.map((t) => summary.find((s) => s.pair === p && s.threads === t)![rt].decodeTokPerS.median),
  color: ['#1f77b4', '#2ca02c', '#d62728'][k] + (rt === 'eaglet' ? '' : '88'),
})));
writeFileAtomic(join(out, 'results.svg'), linePlot(series, { title: `decode tok/s, random ${size} Llama (median of ${repeats})`, xLabel: 'threads', yLabel: 'tok/s' }));
console.log('\n' + md.join('\n'));
console.log(`\nwrote ${join(out, 'results.json')}, results.md, results.svg`);
