/**
 * One eaglet measurement in a fresh process (started by scripts/peer/bench.ts), the counterpart
 * of llama-child.mjs with the same protocol:
 *
 *   node --import tsx scripts/peer/eaglet-child.ts '{"model": "DIR", "threads": 1, "prompts": [[...]], "tokens": 64}'
 *
 * Prints one JSON line: importMs (loading eaglet's API module, onnxruntime-node included),
 * loadMs (import start -> generator ready: checkpoint read, graph, ORT sessions and the warm-up
 * loadGenerator runs; `parts` splits it), readyMs (process start -> ready), rssReadyMB, peakRssMB (VmHWM after
 * decoding), and per prompt the greedy ids (plain decoding) and decode tok/s between the first
 * and the last generated token.
 */
import { readFileSync } from 'node:fs';

const args = JSON.parse(process.argv[2]) as { model: string; threads: number; prompts: number[][]; tokens: number; quantize?: 'q4' | 'q8' };
const rssMB = (field: 'VmRSS' | 'VmHWM'): number => {
  const m = readFileSync('/proc/self/status', 'utf8').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
  return m ? Number(m[1]) / 1024 : field === 'VmHWM' ? process.resourceUsage().maxRSS / 1024 : process.memoryUsage().rss / 2 ** 20;
};

const t0 = performance.now();
const { loadGenerator } = await import('../../src/api.ts');
const t1 = performance.now();
const g = await loadGenerator({ model: args.model, threads: args.threads, draft: null, quantize: args.quantize });
const t2 = performance.now();
const rssReadyMB = rssMB('VmRSS');

const runs: { ids: number[]; decodeTokPerS: number }[] = [];
for (const prompt of args.prompts) {
  const ids: number[] = [], times: number[] = [];
  for await (const chunk of g.stream(prompt, { maxNewTokens: args.tokens, stopAtEos: false })) {
    for (const id of chunk.ids) (ids.push(id), times.push(performance.now()));
  }
  runs.push({ ids, decodeTokPerS: (ids.length - 1) / ((times[times.length - 1] - times[0]) / 1000) });
}
const peakRssMB = rssMB('VmHWM');
const parts = { import: t1 - t0, loadGenerator: t2 - t1 };
console.log(JSON.stringify({ parts, importMs: t1 - t0, loadMs: t2 - t0, readyMs: t2, rssReadyMB, peakRssMB, runs }));
await g.dispose();
