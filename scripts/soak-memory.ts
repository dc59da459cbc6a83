/**
 * Memory soak: long speculative generations (thousands of tokens, many rounds) and many
 * repeated generations on one generator. Prints RSS and heap over time; caches are
 * preallocated to the context length, so both should stay flat after warm-up.
 *
 *   node --import tsx scripts/soak-memory.ts [--tokens 4000] [--repeats 20]
 */
import { loadGenerator } from '../src/api.ts';
import { scriptFlags } from './script-flags.ts';
import { headConfigFor, randomHeadWeights } from '../src/model/draft-head.ts';
import { makeConfig, randomWeights } from '../src/model/random.ts';

const f = scriptFlags(import.meta.url, [
  { flag: 'tokens', type: 'int', min: 100, default: 4000, help: 'tokens per long generation' },
  { flag: 'repeats', type: 'int', min: 1, default: 20, help: 'short generations after the long one' },
]);
const tokens = f.tokens as number;
const cfg = makeConfig({ vocabSize: 512, dim: 128, nLayers: 4, nHeads: 4, nKvHeads: 2, maxSeqLen: tokens + 64 });
const model = { config: cfg, weights: randomWeights(cfg, 1, 3), source: 'hf' as const };
const g = await loadGenerator({ model, draft: { config: headConfigFor(cfg), weights: randomHeadWeights(cfg, 2) } });
const mb = (x: number) => (x / 2 ** 20).toFixed(1);
const snap = (label: string) => {
  global.gc?.();
  const m = process.memoryUsage();
  console.log(`${label.padEnd(28)} rss ${mb(m.rss)} MB  heap ${mb(m.heapUsed)} MB  external+arrays ${mb(m.external + m.arrayBuffers)} MB`);
  return m.rss;
};
snap('after load');
let n = 0, next = 0, rounds = 0;
const rss: number[] = [];
for await (const chunk of g.stream([1, 2, 3, 4], { maxNewTokens: tokens, stopAtEos: false, temperature: 1, seed: 1 })) {
  n += chunk.ids.length;
  rounds++;
  if (n >= next) {
    rss.push(snap(`long run: ${n} tokens, ${rounds} rounds`));
    next += tokens / 8;
  }
}
for (let r = 0; r < (f.repeats as number); r++) {
  await g.generate([5, 6, 7], { maxNewTokens: 200, stopAtEos: false });
  if ((r + 1) % 5 === 0) rss.push(snap(`repeat ${r + 1}`));
}
const warm = rss[1] ?? rss[0];
console.log(`RSS growth after warm-up: ${mb(Math.max(...rss) - warm)} MB over ${tokens} tokens + ${f.repeats} repeats`);
await g.dispose();
