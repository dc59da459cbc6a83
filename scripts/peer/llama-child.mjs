/**
 * One node-llama-cpp measurement in a fresh process (started by scripts/peer/bench.ts).
 * Plain JavaScript beside its own node_modules, so eaglet's typecheck never needs
 * node-llama-cpp's types and module resolution finds the peer's install.
 *
 *   node scripts/peer/llama-child.mjs '{"model": "F32.gguf", "threads": 1, "prompts": [[...]], "tokens": 64, "exact": false}'
 *
 * Prints one JSON line: importMs (loading the package), loadMs (import start -> a context
 * sequence ready to decode: getLlama, loadModel, createContext; `parts` splits it), readyMs (process start ->
 * ready), rssReadyMB, peakRssMB (VmHWM after decoding), and per prompt the greedy ids and
 * decode tok/s between the first and the last generated token.
 */
import { readFileSync } from 'node:fs';

const args = JSON.parse(process.argv[2]);
const rssMB = (field) => {
  const m = readFileSync('/proc/self/status', 'utf8').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
  return m ? Number(m[1]) / 1024 : field === 'VmHWM' ? process.resourceUsage().maxRSS / 1024 : process.memoryUsage().rss / 2 ** 20;
};

const t0 = performance.now();
const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
const t1 = performance.now();
// maxThreads 0: the context's thread count is used exactly, not as a hint.
const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error, maxThreads: 0 });
const t1b = performance.now();
const model = await llama.loadModel({ modelPath: args.model });
const t1c = performance.now();
// exact: f32 K/V cache and no flash attention (whose CPU kernel rounds through f16), for the
// output check; otherwise node-llama-cpp's defaults (F16 K/V, flash attention "auto").
const exact = args.exact ? { experimentalKvCacheKeyType: 'F32', experimentalKvCacheValueType: 'F32', flashAttention: false } : {};
const context = await model.createContext({ contextSize: args.contextSize, threads: args.threads, ...exact });
const sequence = context.getSequence();
const t2 = performance.now();
const rssReadyMB = rssMB('VmRSS');

const runs = [];
for (const prompt of args.prompts) {
  await sequence.clearHistory();
  const ids = [], times = [];
  // temperature 0 = greedy; EOS is an ordinary token here (eaglet's side does not stop either).
  for await (const id of sequence.evaluate(prompt, { temperature: 0, yieldEogToken: true })) {
    times.push(performance.now());
    ids.push(id);
    if (ids.length >= args.tokens) break;
  }
  runs.push({ ids, decodeTokPerS: (ids.length - 1) / ((times[times.length - 1] - times[0]) / 1000) });
}
const peakRssMB = rssMB('VmHWM');
const parts = { import: t1 - t0, getLlama: t1b - t1, loadModel: t1c - t1b, createContext: t2 - t1c };
console.log(JSON.stringify({ parts, importMs: t1 - t0, loadMs: t2 - t0, readyMs: t2, rssReadyMB, peakRssMB, runs, exact: !!args.exact }));
await context.dispose();
await model.dispose();
