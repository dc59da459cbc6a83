/**
 * Which onnxruntime thread count to default to: per model size, one target session per thread
 * count over the same random weights, timed interleaved (round-robin, repeats) on a decode step
 * (T = 1 new token) and a tree verification (T = 16) after a 64-token prefix. Run it on an idle
 * machine: another process on the cores changes the answer.
 *
 *   node --import tsx scripts/bench-threads.ts [--sizes 1M,10M,100M --threads 1,2 --repeats 40]
 */
import { availableParallelism } from 'node:os';
import { parameterCount } from '../src/model/config.ts';
import { randomWeights } from '../src/model/random.ts';
import { TargetSession } from '../src/runtime/target.ts';
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { DEFAULT_THREADS } from '../src/runtime/ort.ts';
import { prefilledCache, sizeNamed, SIZES } from './runtime-sizes.ts';
import { quantile } from '../src/util/stats.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'sizes', type: 'string', default: '1M,10M,100M', help: 'model sizes to run' },
  { flag: 'threads', type: 'ints', default: [...new Set([1, 2, availableParallelism()])], help: 'thread counts to compare' },
  { flag: 'repeats', type: 'int', min: 3, default: 40, help: 'timed passes per thread count and T (interleaved)' },
];

const f = scriptFlags(import.meta.url, FLAGS);
const threadCounts = f.threads as number[];
console.log(`cores ${availableParallelism()}, DEFAULT_THREADS ${DEFAULT_THREADS}; ms per pass, median [p10-p90] of ${f.repeats} interleaved passes`);

for (const name of String(f.sizes).split(',')) {
  const cfg = sizeNamed(SIZES, name, '--sizes');
  const weights = randomWeights(cfg, 1, 3);
  const runs = await Promise.all(threadCounts.map(async (threads) => {
    const target = await TargetSession.create(cfg, weights, { threads });
    const { cache } = await prefilledCache(target);
    return { threads, target, cache, ms: { 1: [] as number[], 16: [] as number[] } };
  }));
  for (const T of [1, 16] as const) {
    const toks = Array.from({ length: T }, (_, i) => i % cfg.vocabSize), pos = toks.map((_, i) => 64 + i);
    for (const r of runs) await r.target.forward(r.cache, toks, pos); // warm-up
    for (let i = 0; i < (f.repeats as number); i++) {
      for (const r of i % 2 ? [...runs].reverse() : runs) {
        const t0 = performance.now();
        await r.target.forward(r.cache, toks, pos);
        r.ms[T].push(performance.now() - t0);
      }
    }
  }
  const cell = (xs: number[]) => `${quantile(xs, 0.5).toFixed(2)} [${quantile(xs, 0.1).toFixed(2)}-${quantile(xs, 0.9).toFixed(2)}]`;
  console.log(`${name} (${(parameterCount(cfg) / 1e6).toFixed(2)}M params)`);
  for (const r of runs) console.log(`  threads ${r.threads}: T=1 ${cell(r.ms[1])}  T=16 ${cell(r.ms[16])}`);
  for (const r of runs) await r.target.dispose();
}
