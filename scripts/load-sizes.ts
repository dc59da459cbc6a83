/**
 * Load time and peak RSS per model size: random-weight Llama checkpoints (100M, 500M, 1B
 * parameters; cost only) written as HF directories, each loaded in a fresh process by
 * `loadGenerator` (fp32, or `--quantize q4|q8` at load, or a checkpoint from `eaglet quantize`),
 * then 32 tokens generated. Reports per run: load ms (checkpoint read + graph + ORT sessions +
 * the warm-up round), RSS once loaded, peak RSS (the process's maxRSS), decode tok/s.
 *
 *   node --import tsx scripts/load-sizes.ts [-- --sizes 100M,500M,1B --variants fp32,q4,q4-file --threads 2 --repeats 1 --dir runs/sizes --json out.json]
 *
 * `q4-file` loads the checkpoint `eaglet quantize --bits 4` wrote (made once, not timed).
 * Checkpoints are written once into --dir and reused.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFileAtomic } from '../src/io/atomic.ts';
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { parameterCount, type ModelConfig } from '../src/model/config.ts';
import { makeConfig } from '../src/model/random.ts';
import { sizeNamed, SIZES } from './runtime-sizes.ts';

/** 500M and 1B: Llama shapes (GQA 4:1, head width 128 / 64, untied 32000-token head). */
export const LOAD_SIZES: Record<string, ModelConfig> = {
  '100M': SIZES['100M'],
  '500M': makeConfig({ vocabSize: 32000, dim: 1536, nLayers: 16, nHeads: 12, nKvHeads: 4, hiddenDim: 4096, maxSeqLen: 512 }),
  '1B': makeConfig({ vocabSize: 32000, dim: 2048, nLayers: 22, nHeads: 32, nKvHeads: 8, hiddenDim: 5632, maxSeqLen: 512 }),
};

const FLAGS: FlagSpec[] = [
  { flag: 'sizes', type: 'string', default: '100M,500M,1B', help: 'sizes to run' },
  { flag: 'variants', type: 'string', default: 'fp32,q4,q4-file', help: 'fp32, q8, q4 (quantized at load), q4-file / q8-file (eaglet quantize output)' },
  { flag: 'threads', type: 'int', min: 1, default: 2, help: 'ORT intra-op threads' },
  { flag: 'repeats', type: 'int', min: 1, default: 1, help: 'fresh processes per (size, variant), interleaved' },
  { flag: 'tokens', type: 'int', min: 2, default: 32, help: 'tokens generated after loading' },
  { flag: 'dir', type: 'string', default: 'runs/sizes', help: 'where the checkpoints are written (once)' },
  { flag: 'prepare-only', type: 'bool', help: 'write the checkpoints and stop' },
  { flag: 'json', type: 'string', help: 'also write results here' },
  { flag: 'child', type: 'string', help: '(internal) measure one load: PATH' },
  { flag: 'quantize', type: 'string', help: '(internal) with --child' },
];
const f = scriptFlags(import.meta.url, FLAGS);

if (f.child) {
  // One measurement in this fresh process.
  const { loadGenerator } = await import('../src/api.ts');
  const t0 = performance.now();
  const g = await loadGenerator({ model: String(f.child), threads: f.threads as number, quantize: f.quantize as 'q4' | 'q8' | undefined });
  const loadMs = performance.now() - t0;
  // Released weights go once a few collections (and ORT's finalizers) have run.
  for (let i = 0; i < 3; i++) (globalThis.gc?.(), await new Promise((r) => setTimeout(r, 50)));
  const rssLoaded = process.memoryUsage().rss;
  const times: number[] = [];
  for await (const _ of g.stream([1, 2, 3, 4], { maxNewTokens: f.tokens as number, stopAtEos: false })) times.push(performance.now());
  const tokPerS = (times.length - 1) / ((times[times.length - 1] - times[0]) / 1000);
  console.log(JSON.stringify({ loadMs, rssLoadedMB: rssLoaded / 1e6, peakRssMB: process.resourceUsage().maxRSS / 1e3, tokPerS, tokens: times.length }));
  await g.dispose();
  process.exit(0);
}

const dir = String(f.dir), sizes = String(f.sizes).split(','), variants = String(f.variants).split(',');
const cli = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
for (const size of sizes) {
  const cfg = sizeNamed(LOAD_SIZES, size, '--sizes');
  const path = join(dir, size);
  if (!existsSync(join(path, 'config.json'))) {
    // In a child, so the writer's memory is gone before anything is measured.
    const r = spawnSync(process.execPath, ['--max-old-space-size=8192', '--import', 'tsx', '-e', `
      const { saveHfCheckpoint } = await import(${JSON.stringify(new URL('../src/io/hf.ts', import.meta.url).href)});
      const { randomWeights } = await import(${JSON.stringify(new URL('../src/model/random.ts', import.meta.url).href)});
      const cfg = ${JSON.stringify(cfg)};
      saveHfCheckpoint(${JSON.stringify(path)}, cfg, randomWeights(cfg, 1, 3));`], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`writing ${path} failed`);
  }
  for (const v of variants.filter((x) => x.endsWith('-file'))) {
    const out = `${path}-${v.slice(0, 2)}`;
    if (existsSync(join(out, 'config.json'))) continue;
    const r = spawnSync(process.execPath, ['--import', 'tsx', cli, 'quantize', '--model', path, '--bits', v.slice(1, 2), '--out', out], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`quantizing ${path} failed`);
  }
}
if (f.prepareOnly) process.exit(0);

const results: Record<string, unknown>[] = [];
for (let r = 0; r < (f.repeats as number); r++) {
  for (const size of sizes) {
    for (const v of variants) {
      const path = v.endsWith('-file') ? `${join(dir, size)}-${v.slice(0, 2)}` : join(dir, size);
      const args = ['--expose-gc', '--import', 'tsx', fileURLToPath(import.meta.url), '--child', path, '--threads', String(f.threads), '--tokens', String(f.tokens)];
      if (v === 'q4' || v === 'q8') args.push('--quantize', v);
      const c = spawnSync(process.execPath, args, { encoding: 'utf8' });
      if (c.status !== 0) throw new Error(`${size} ${v}: ${c.stderr}`);
      const m = JSON.parse(c.stdout.trim().split('\n').pop()!);
      const row = { size, params: parameterCount(LOAD_SIZES[size]), variant: v, threads: f.threads, repeat: r, ...m };
      results.push(row);
      console.log(`${size.padEnd(5)} ${v.padEnd(8)} load ${(m.loadMs / 1000).toFixed(2)} s  rss loaded ${m.rssLoadedMB.toFixed(0)} MB  peak ${m.peakRssMB.toFixed(0)} MB  ${m.tokPerS.toFixed(1)} tok/s`);
    }
  }
}
if (f.json) writeFileAtomic(String(f.json), JSON.stringify({ threads: f.threads, tokens: f.tokens, results }, null, 2) + '\n');
