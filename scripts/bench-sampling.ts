/**
 * Per-token cost of the sampler (src/generate/sampler.ts) at three vocabulary sizes, for
 * top-k 50, top-p 0.9, both, and plain temperature sampling, beside a sort-the-vocabulary
 * baseline (the previous implementation's method) in the same process. Logit rows are
 * synthetic: "broad" = N(0, 2^2) per token (top-p 0.9 keeps a large share of the vocabulary,
 * the quickselect path), "peaked" = the same plus +12 on 5 random tokens (top-p stops inside
 * the first 64, the heap path). Per cell: median and min-max over repeats of microseconds per
 * token, each repeat timing `tokens` picks over distinct rows.
 *
 *   npm run bench:sampling [-- --vocab 1536,32000,128256 --repeats 7 --tokens 200 --json out.json]
 */
import { writeFileAtomic } from '../src/io/atomic.ts';
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { Sampler, type SamplingOptions } from '../src/generate/sampler.ts';
import { Rng } from '../src/util/rng.ts';
import { median } from '../src/util/stats.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'vocab', type: 'string', default: '1536,32000,128256', help: 'vocabulary sizes' },
  { flag: 'repeats', type: 'int', min: 1, default: 7, help: 'timed repeats per cell (interleaved across modes)' },
  { flag: 'tokens', type: 'int', min: 1, default: 200, help: 'picks per repeat' },
  { flag: 'baseline-tokens', type: 'int', min: 0, default: 3, help: 'picks per repeat for the full-sort baseline (0 = skip it)' },
  { flag: 'json', type: 'string', help: 'also write results here' },
];
const f = scriptFlags(import.meta.url, FLAGS);
const ROWS = 16;

const MODES: Record<string, Omit<SamplingOptions, 'seed'>> = {
  'temperature 1': { temperature: 1, topK: 0, topP: 1 },
  'top-k 50': { temperature: 1, topK: 50, topP: 1 },
  'top-p 0.9': { temperature: 1, topK: 0, topP: 0.9 },
  'top-k 50 + top-p 0.9': { temperature: 1, topK: 50, topP: 0.9 },
};

/** The old method: softmax, sort all ids by probability, cut, walk in sorted order. */
function sortPick(z: Float32Array, o: Omit<SamplingOptions, 'seed'>, u: number, p: Float64Array): number {
  const V = z.length;
  let max = -Infinity, sum = 0;
  for (let i = 0; i < V; i++) if (z[i] > max) max = z[i];
  for (let i = 0; i < V; i++) sum += p[i] = Math.exp((z[i] - max) / o.temperature);
  const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => p[b] - p[a] || a - b);
  let n = o.topK > 0 ? Math.min(o.topK, V) : V;
  if (o.topP < 1) {
    let acc = 0, k = 0;
    while (k < n && (acc += p[order[k++]] / sum) < o.topP);
    n = k;
  }
  let s = 0;
  for (let i = 0; i < n; i++) s += p[order[i]];
  u *= s;
  for (let i = 0; i < n; i++) if ((u -= p[order[i]]) < 0) return order[i];
  return order[n - 1];
}

function rows(V: number, peaked: boolean, seed: number): Float32Array[] {
  const rng = new Rng(seed);
  return Array.from({ length: ROWS }, () => {
    const z = new Float32Array(V);
    for (let i = 0; i < V; i++) z[i] = 2 * rng.normal();
    if (peaked) for (let j = 0; j < 5; j++) z[rng.nextU32() % V] += 12;
    return z;
  });
}

const results: { vocab: number; logits: string; mode: string; method: string; usPerToken: { median: number; min: number; max: number }; keptMean: number }[] = [];
let sink = 0;

for (const V of String(f.vocab).split(',').map(Number)) {
  for (const family of ['broad', 'peaked']) {
    const zs = rows(V, family === 'peaked', V);
    const cells = Object.entries(MODES).flatMap(([mode, o]) => {
      const s = new Sampler({ ...o, seed: 1 }, V);
      const cell = [{ mode, method: 'eaglet', times: [] as number[], kept: 0, run: (n: number) => {
        for (let t = 0; t < n; t++) sink += s.pick(zs[t % ROWS]);
      } }];
      if ((o.topK > 0 || o.topP < 1) && (f.baselineTokens as number) > 0) {
        const p = new Float64Array(V), rng = new Rng(2);
        cell.push({ mode, method: 'full sort', times: [], kept: 0, run: (n: number) => {
          for (let t = 0; t < n; t++) sink += sortPick(zs[t % ROWS], o, rng.next(), p);
        } });
      }
      cell[0].kept = zs.reduce((a, z) => a + s.distribution(z), 0) / ROWS;
      return cell;
    });
    for (const c of cells) c.run(c.method === 'eaglet' ? f.tokens as number : 1); // warm-up (JIT)
    for (let r = 0; r < (f.repeats as number); r++) {
      for (let i = 0; i < cells.length; i++) {
        const c = cells[(i + r) % cells.length], n = c.method === 'eaglet' ? (f.tokens as number) : (f.baselineTokens as number);
        const t0 = performance.now();
        c.run(n);
        c.times.push(((performance.now() - t0) * 1000) / n);
      }
    }
    for (const c of cells) {
      const usPerToken = { median: median(c.times), min: Math.min(...c.times), max: Math.max(...c.times) };
      results.push({ vocab: V, logits: family, mode: c.mode, method: c.method, usPerToken, keptMean: c.kept });
      const fmt = (x: number) => (x >= 1000 ? `${(x / 1000).toFixed(1)} ms` : `${x.toFixed(1)} us`);
      console.log(`V=${String(V).padEnd(6)} ${family.padEnd(6)} ${c.mode.padEnd(20)} ${c.method.padEnd(9)} ${fmt(usPerToken.median).padStart(9)} per token (${fmt(usPerToken.min)} - ${fmt(usPerToken.max)})${c.method === 'eaglet' ? `, kept ${c.kept.toFixed(0)}` : ''}`);
    }
  }
}
if (sink === 0.5) console.log(''); // keeps the picks observable
if (f.json) writeFileAtomic(f.json as string, JSON.stringify({ repeats: f.repeats, tokens: f.tokens, results }, null, 2) + '\n');
