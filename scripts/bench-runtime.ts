/**
 * Runtime benchmark on random-weight targets of a few sizes (cost only: random weights say
 * nothing about acceptance). Prints, per size: AR tokens/s, ms per target pass at T = 1, 4, 16,
 * 64 new tokens over a 64-token prefix, the share of an AR decode step spent outside
 * `session.run`, and a speculative run with a random head beside AR in the same process.
 *
 * Then a context sweep (`--sweep`, default the 29M config): ms of T = 1 and T = 16 passes
 * against the cached context length, for the attention renderings (in-place 'split' over values
 * transposed per head, its default layout; 'split-one', the same with one-token passes in a
 * one-token graph (StepSessionOptions.oneToken); 'split-rows', the same over values in rows; and ORT's
 * one-kernel 'fused', which copies the past every pass; with `--native`, 'split-native': split-one
 * with eaglet's own kernel for attention over the past, StepSessionOptions.nativeAttention), each over a cache in its own value
 * layout, interleaved in one process, beside
 * the bytes-read floor: (weight bytes a pass reads + past K/V bytes) / the bandwidth measured here with a
 * one-row MatMul streaming a 256 MB weight, probed every round (the host's bandwidth drifts).
 * Also printed: the rate at which the split pass reads the extra past K/V (if it exceeded the
 * probe's, the floor would not be one) and a plain read's rate (ReduceSum over the same 256 MB).
 *
 *   npm run bench:runtime [-- --sizes 1M,10M,100M --tokens 64 --repeats 3 --json out.json]
 *   npm run bench:runtime -- --sizes none --sweep 29M --contexts 64,1000,2000,4000 --repeats 7
 */
import { writeFileAtomic } from '../src/io/atomic.ts';
import { loadGenerator } from '../src/api.ts';
import { parameterCount } from '../src/model/config.ts';
import { headConfigFor, randomHeadWeights } from '../src/model/draft-head.ts';
import { randomWeights } from '../src/model/random.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { TargetSession } from '../src/runtime/target.ts';
import { valueLayoutFor, type AttentionMode, type ValueLayout } from '../src/onnx/ops.ts';
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { THREADS_FLAG } from '../src/cli/common-flags.ts';
import { prefilledCache, sizeNamed, SIZES, SWEEP } from './runtime-sizes.ts';
import { bandwidthProbes, passWeightBytes, type ProbeWeight } from './bandwidth.ts';
import { median } from '../src/util/stats.ts';
import { UsageError } from '../src/errors.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'sizes', type: 'string', default: '1M,10M,100M', help: 'model sizes to run (none: skip)' },
  { flag: 'sweep', type: 'string', default: '29M', help: `context-sweep config (${Object.keys(SWEEP)}; none: skip)` },
  { flag: 'contexts', type: 'string', default: '64,500,1000,2000,4000', help: 'context lengths of the sweep' },
  { flag: 'tokens', type: 'int', min: 8, default: 64, help: 'tokens generated per run' },
  { flag: 'repeats', type: 'int', min: 1, default: 3, help: 'timed repeats (after one warm-up)' },
  THREADS_FLAG,
  { flag: 'probe-weight', type: 'string', default: 'dense', choices: ['dense', 'sparse'], help: "the bandwidth probe's weight: dense random values (default), or sessions 1-9's mostly-zero one (see scripts/bandwidth.ts)" },
  { flag: 'native', type: 'bool', default: false, help: "also time 'split-native': split-one with eaglet's own attention kernel over the past (StepSessionOptions.nativeAttention; builds the native addon with g++ on first use)" },
  { flag: 'json', type: 'string', help: 'also write results here' },
];

const f = scriptFlags(import.meta.url, FLAGS);
const probeWeight = f.probeWeight as ProbeWeight;
const fmt = (x: number, d = 2) => x.toFixed(d);
const results: Record<string, unknown>[] = [];

for (const name of String(f.sizes).split(',').filter((n) => n !== 'none')) {
  const cfg = sizeNamed(SIZES, name, '--sizes');
  const weights = randomWeights(cfg, 1, 3);
  const params = parameterCount(cfg);

  // ms per target pass at T new tokens over a 64-token prefix.
  const target = await TargetSession.create(cfg, weights, { threads: f.threads as number });
  const { cache, prefix } = await prefilledCache(target);
  const passMs: Record<number, number> = {};
  for (const T of [1, 4, 16, 64]) {
    const toks = Array.from({ length: T }, (_, i) => i % cfg.vocabSize), pos = toks.map((_, i) => 64 + i);
    await target.forward(cache, toks, pos);
    const times: number[] = [];
    for (let r = 0; r < Math.max(5, (f.repeats as number) * 3); r++) {
      const t0 = performance.now();
      await target.forward(cache, toks, pos);
      times.push(performance.now() - t0);
    }
    passMs[T] = median(times);
  }
  await target.dispose();

  // AR vs speculative (random head) in one process, interleaved: warm-up, then repeats.
  const model = { config: cfg, weights, source: 'hf' as const };
  const ar = await loadGenerator({ model, threads: f.threads as number });
  const spec = await loadGenerator({ model, threads: f.threads as number, draft: { config: headConfigFor(cfg), weights: randomHeadWeights(cfg, 2) } });
  const prompt = prefix.slice(0, 16), opts = { maxNewTokens: f.tokens as number, stopAtEos: false };
  await ar.generate(prompt, opts);
  await spec.generate(prompt, opts);
  const arRuns = [], specRuns = [];
  for (let r = 0; r < (f.repeats as number); r++) {
    const s0 = ar.generator.parts.target.stats.msInRun;
    const a = await ar.generate(prompt, opts);
    arRuns.push({ tps: a.stats.tokensPerSecond, outside: 1 - (ar.generator.parts.target.stats.msInRun - s0) / a.stats.ms.total, json: a.stats.toJSON() });
    const s = await spec.generate(prompt, opts);
    specRuns.push({ tps: s.stats.tokensPerSecond, json: s.stats.toJSON() });
  }
  await ar.dispose();
  await spec.dispose();
  const arTps = median(arRuns.map((r) => r.tps)), specTps = median(specRuns.map((r) => r.tps));
  const outside = median(arRuns.map((r) => r.outside));
  const sj = specRuns[specRuns.length - 1].json;
  const split = sj.timeMs, roundMs = sj.wallMs - split.prefill;
  const row = {
    size: name, params, arTokensPerSec: arTps, passMs, outsideOrtShare: outside,
    spec: { tokensPerSec: specTps, speedup: specTps / arTps, tau: sj.tau, draftShare: split.draft / roundMs, verifyShare: split.verify / roundMs, bookkeepingShare: (split.bookkeeping + split.policy) / roundMs },
  };
  results.push(row);
  console.log(
    `${name.padEnd(5)} ${(params / 1e6).toFixed(2)}M params | AR ${fmt(arTps, 1)} tok/s, outside ORT ${fmt(100 * outside, 1)}% of a step | ` +
      `pass ms T=1 ${fmt(passMs[1])}, T=4 ${fmt(passMs[4])}, T=16 ${fmt(passMs[16])} (${fmt(passMs[16] / passMs[1])}x), T=64 ${fmt(passMs[64])} (${fmt(passMs[64] / passMs[1])}x)\n` +
      `      random-head speculative: ${fmt(specTps, 1)} tok/s = ${fmt(specTps / arTps)}x AR, tau ${fmt(sj.tau)}, round split draft ${fmt(100 * row.spec.draftShare, 1)}% / verify ${fmt(100 * row.spec.verifyShare, 1)}% / bookkeeping ${fmt(100 * row.spec.bookkeepingShare, 1)}%`,
  );
}
const spread = (xs: number[]) => `${fmt(Math.min(...xs))}-${fmt(Math.max(...xs))}`;

const sweepName = String(f.sweep);
if (sweepName !== 'none') {
  const cfg = sizeNamed(SWEEP, sweepName, '--sweep');
  const contexts = String(f.contexts).split(',').map(Number);
  const bad = contexts.find((p) => !Number.isInteger(p) || p < 1 || p + 16 > cfg.maxSeqLen);
  if (bad !== undefined) throw new UsageError('--contexts', `${bad} is not a context length in [1, ${cfg.maxSeqLen - 16}]`);
  const threads = f.threads as number, reps = Math.max(5, f.repeats as number);
  const weights = randomWeights(cfg, 1, 1), params = parameterCount(cfg);
  const probes = await bandwidthProbes(threads, probeWeight);
  const variants: { name: string; attention: AttentionMode; valueLayout: ValueLayout; oneToken?: boolean; nativeAttention?: boolean }[] = [
    { name: 'split', attention: 'split', valueLayout: valueLayoutFor('split') },
    // The same, with one-token passes in a one-token graph (StepSessionOptions.oneToken; its T=16 passes are split's graph).
    { name: 'split-one', attention: 'split', valueLayout: valueLayoutFor('split'), oneToken: true },
    { name: 'split-rows', attention: 'split', valueLayout: 'rows' },
    { name: 'fused', attention: 'fused', valueLayout: valueLayoutFor('fused') },
    // split-one with each layer's attention over the past in eaglet's own kernel (its T=16 passes are split's graph).
    ...(f.native ? [{ name: 'split-native', attention: 'split' as const, valueLayout: valueLayoutFor('split'), oneToken: true, nativeAttention: true }] : []),
  ];
  const modes = variants.map((v) => v.name);
  const sessions = await Promise.all(variants.map(({ attention, valueLayout, oneToken, nativeAttention }) => TargetSession.create(cfg, weights, { threads, attention, valueLayout, oneToken, nativeAttention, maxTokens: 16 })));
  // One cache per value layout, each read by the variants of that layout.
  const caches = new Map(variants.map((v) => [v.valueLayout, new KVCache(cfg.nLayers, cfg.nKvHeads, cfg.headDim, cfg.maxSeqLen).useValueLayout(v.valueLayout)]));
  const rowSize = cfg.nKvHeads * cfg.headDim;
  // Past rows are random numbers written straight into the caches: cost does not depend on them.
  const chunk = Float32Array.from({ length: 64 * rowSize }, (_, i) => Math.sin(i));
  const rowsK = Array(cfg.nLayers).fill(chunk);
  const kvBytesPerRow = 2 * cfg.nLayers * rowSize * 4;
  // What a pass reads of the weights: not the untied embedding table, of which it reads a row.
  const weightBytes = passWeightBytes(cfg, weights);
  console.log(`\ncontext sweep: ${sweepName} (${fmt(params / 1e6)}M params, ${cfg.nLayers} layers, ${cfg.nKvHeads} K/V heads x ${cfg.headDim}), ${threads} thread(s); ` +
    `median ms of ${reps} rounds (min-max); each round probes the bandwidth (one-row MatMul over 256 MB, ${probeWeight} weight), re-warms with an untimed pass, then times the ${2 * modes.length} passes back to back; ` +
    `floor = (${fmt(weightBytes / 1e6, 1)} MB of weights a pass reads + past K/V bytes) / that round's bandwidth, x floor = median of the rounds' ratios; K/V GB/s = extra past bytes over extra split T=1 time against the first context`);
  console.log(`context | GB/s | floor T=1 | ${modes.map((m) => `${m} T=1 | x floor`).join(' | ')} | ${modes.map((m) => `${m} T=16`).join(' | ')} | K/V GB/s | read GB/s`);
  const sweep: Record<string, unknown>[] = [];
  let first: { P: number; ms: number } | undefined;
  for (const P of contexts) {
    for (const cache of caches.values()) {
      cache.truncate(0);
      while (cache.length < P) cache.append(rowsK, rowsK, Math.min(64, P - cache.length));
    }
    const bytes = weightBytes + P * kvBytesPerRow;
    const times: Record<string, number[]> = {}, ratios: Record<string, number[]> = {}, rates: number[] = [], reads: number[] = [];
    const pass = (m: number, T: number) => {
      const toks = Array.from({ length: T }, (_, i) => (i * 31) % cfg.vocabSize), pos = toks.map((_, i) => P + i);
      return sessions[m].forward(caches.get(variants[m].valueLayout)!, toks, pos, undefined, { logits: false });
    };
    for (let r = -2; r < reps; r++) { // two warm-up rounds, then timed, modes and T interleaved
      // The probe moves 256 MB through the caches; the untimed pass puts a pass's data back, so
      // timed passes follow a pass, as in decoding. Bandwidth drifts on a shared host: hence per round.
      const gbps = await probes.gemv();
      const read = await probes.read();
      await pass(0, 1);
      if (r >= 0) rates.push(gbps), reads.push(read);
      for (const T of [1, 16])
        for (let m = 0; m < modes.length; m++) {
          const t0 = performance.now();
          await pass(m, T);
          const ms = performance.now() - t0, key = `${modes[m]}${T}`;
          if (r >= 0) (times[key] ??= []).push(ms), (ratios[key] ??= []).push(ms / ((bytes / 1e9 / gbps) * 1e3));
        }
    }
    const med = (k: string) => median(times[k]), gbps = median(rates), floor = (bytes / 1e9 / gbps) * 1e3;
    first ??= { P, ms: med('split1') };
    const kvRate = P > first.P ? ((P - first.P) * kvBytesPerRow) / 1e9 / ((med('split1') - first.ms) / 1e3) : NaN;
    sweep.push({
      context: P, bandwidthGBps: gbps, readGBps: median(reads), floorMs: floor, kvGBps: kvRate,
      ...Object.fromEntries(Object.entries(times).map(([k, v]) => [k, { medianMs: median(v), minMs: Math.min(...v), maxMs: Math.max(...v), xFloor: median(ratios[k]) }])),
    });
    const cell = (k: string) => `${fmt(med(k))} (${spread(times[k])})`;
    console.log(`${String(P).padStart(7)} | ${fmt(gbps, 1)} | ${fmt(floor).padStart(9)} | ${modes.map((m) => `${cell(`${m}1`)} | ${fmt(median(ratios[`${m}1`]))}`).join(' | ')} | ` +
      `${modes.map((m) => cell(`${m}16`)).join(' | ')} | ${Number.isNaN(kvRate) ? '-' : fmt(kvRate, 1)} | ${fmt(median(reads), 1)}`);
  }
  for (const s of sessions) await s.dispose();
  await probes.dispose();
  results.push({ sweep: sweepName, params, threads, probeWeight, rows: sweep });
}

if (f.json) writeFileAtomic(String(f.json), JSON.stringify(results, null, 2) + '\n');
