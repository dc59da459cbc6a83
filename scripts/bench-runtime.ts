/**
 * Runtime benchmark on random-weight targets of a few sizes (cost only: random weights say
 * nothing about acceptance). Prints, per size: AR tokens/s, ms per target pass at T = 1, 4, 16,
 * 64 new tokens over a 64-token prefix, the share of an AR decode step spent outside
 * `session.run`, and a speculative run with a random head beside AR in the same process.
 *
 *   npm run bench:runtime [-- --sizes 1M,10M,100M --tokens 64 --repeats 3 --json out.json]
 */
import { writeFileAtomic } from '../src/io/atomic.ts';
import { loadGenerator } from '../src/api.ts';
import { parameterCount } from '../src/model/config.ts';
import { headConfigFor, randomHeadWeights } from '../src/model/draft-head.ts';
import { randomWeights } from '../src/model/random.ts';
import { KVCache } from '../src/runtime/kv-cache.ts';
import { TargetSession } from '../src/runtime/target.ts';
import { parseFlags, type FlagSpec } from '../src/option-schema.ts';
import { THREADS_FLAG } from '../src/cli/common-flags.ts';
import { SIZES } from './runtime-sizes.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'sizes', type: 'string', default: '1M,10M,100M', help: 'model sizes to run' },
  { flag: 'tokens', type: 'int', min: 8, default: 64, help: 'tokens generated per run' },
  { flag: 'repeats', type: 'int', min: 1, default: 3, help: 'timed repeats (after one warm-up)' },
  THREADS_FLAG,
  { flag: 'json', type: 'string', help: 'also write results here' },
];

const f = parseFlags(process.argv.slice(2), FLAGS);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (x: number, d = 2) => x.toFixed(d);
const results: Record<string, unknown>[] = [];

for (const name of String(f.sizes).split(',')) {
  const cfg = SIZES[name];
  if (!cfg) throw new Error(`--sizes: unknown size ${name} (have ${Object.keys(SIZES)})`);
  const weights = randomWeights(cfg, 1, 3);
  const params = parameterCount(cfg);

  // ms per target pass at T new tokens over a 64-token prefix.
  const target = await TargetSession.create(cfg, weights, { threads: f.threads as number });
  const cache = new KVCache(cfg.nLayers, cfg.nKvHeads, cfg.headDim, cfg.maxSeqLen);
  const prefix = Array.from({ length: 64 }, (_, i) => (i * 7) % cfg.vocabSize);
  const pre = await target.forward(cache, prefix, prefix.map((_, i) => i));
  cache.append(pre.newKeys, pre.newValues, prefix.length);
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
if (f.json) writeFileAtomic(String(f.json), JSON.stringify(results, null, 2) + '\n');
