/**
 * Memory of self-drafting per exit layer: what the exit session (layers 0..E-1 + norm + LM head)
 * and the rest session (layers E..L-1 + norm + LM head) of one exit layer add to a process that
 * already decodes plainly with the target. ORT sessions do not share initializers, so each pair
 * holds its own copy of its layers, the embedding and the LM head.
 *
 *   node --import tsx scripts/exit-session-rss.ts --model DIR [--exits 1,2,4] [--tokens 32] [--threads 1] [--quantize q4|q8] [--tree-top-k K]
 *
 * Each exit layer is measured in --repeats fresh processes (node --expose-gc): RSS after a plain generation
 * of --tokens tokens, then after a self-drafted one at that exit (sessions built and run once, so
 * ORT's arenas are allocated), both after a full GC. Also printed: the fp32 bytes of the weights
 * the pair embeds, for comparison. On a quantized target (--quantize) with trees wider than a
 * chain (--tree-top-k above 1), the exit and rest sessions also open their tree graphs (a second
 * copy of their weights: src/runtime/tree-passes.ts).
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { loadModel } from '../src/load-model.ts';
import { quantizedModel, type QuantName } from '../src/model/quantize.ts';
import { TargetSession } from '../src/runtime/target.ts';
import { Generator } from '../src/generate/generator.ts';
import { SelfDrafter } from '../src/generate/self-drafter.ts';
import { ExitPolicy } from '../src/policies/del.ts';
import type { ModelConfig } from '../src/model/config.ts';
import type { Weights } from '../src/model/weights.ts';
import { median } from '../src/util/stats.ts';
import { UsageError } from '../src/errors.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'model', type: 'string', meta: 'DIR', help: 'target checkpoint (HF directory or llama2.c .bin)' },
  { flag: 'exits', type: 'string', meta: 'LIST', help: 'exit layers to measure (default: every one)' },
  { flag: 'tokens', type: 'int', min: 1, default: 32, meta: 'N', help: 'tokens generated before each reading' },
  { flag: 'threads', type: 'int', min: 1, default: 1, meta: 'N', help: 'ORT intra-op threads' },
  { flag: 'quantize', type: 'string', meta: 'q4|q8', help: 'quantize the target\'s Linear layers (default: as loaded)' },
  { flag: 'tree-top-k', type: 'int', min: 1, default: 1, meta: 'K', help: 'top-k of the drafted tree (1: a chain of depth 4; else depth 4, 8 tokens)' },
  { flag: 'repeats', type: 'int', min: 1, default: 3, meta: 'N', help: 'fresh processes per exit layer (median and range reported)' },
  { flag: 'child', type: 'int', min: 1, meta: 'E', help: '(internal) measure exit E in this process' },
];
const f = scriptFlags(import.meta.url, FLAGS) as unknown as { model?: string; exits?: string; tokens: number; threads: number; quantize?: QuantName; treeTopK: number; repeats: number; child?: number };
if (!f.model) throw new UsageError('--model', 'is required');
const mb = (b: number) => (b / 2 ** 20).toFixed(1);

/** fp32 bytes of the tensors whose names pass `keep`. */
function bytes(w: Weights, keep: (name: string) => boolean): number {
  let n = 0;
  for (const [name, t] of w) if (keep(name)) n += t.data.length * 4;
  return n;
}
const layerOf = (name: string) => Number(/^model\.layers\.(\d+)\./.exec(name)?.[1] ?? -1);

function rss(): number {
  (globalThis as { gc?: () => void }).gc?.();
  return process.memoryUsage().rss;
}

if (f.child !== undefined) {
  const E = f.child, { config: cfg, weights } = quantizedModel(await loadModel(f.model), f.quantize);
  const target = await TargetSession.create(cfg, weights, { threads: f.threads });
  const prompt = [1, 2, 3, 4].map((t) => t % cfg.vocabSize);
  const opts = { maxNewTokens: f.tokens, stopAtEos: false };
  await new Generator({ target }).generate(prompt, opts);
  const before = rss();
  const tree = f.treeTopK > 1 ? { topK: f.treeTopK, maxDepth: 4, totalTokens: 8 } : { topK: 1, maxDepth: 4, totalTokens: 4 };
  const drafter = new SelfDrafter(target, weights, tree, { exitLayer: E, session: { threads: f.threads } });
  const g = new Generator({ target, drafter, policy: new ExitPolicy(cfg.nLayers, tree.totalTokens, { at: E }) });
  await g.generate(prompt, opts);
  const after = rss();
  console.log(JSON.stringify({ E, before, after }));
  process.exit(0);
}

const { config: cfg, weights } = await loadModel(f.model);
const L = (cfg as ModelConfig).nLayers;
const exits = f.exits ? f.exits.split(',').map(Number) : Array.from({ length: L - 1 }, (_, i) => i + 1);
const shared = bytes(weights, (n) => layerOf(n) < 0); // embedding, final norm, LM head (once if tied)
console.log(`${f.model}: ${L} layers, dim ${cfg.dim}, vocab ${cfg.vocabSize}; fp32 weights ${mb(bytes(weights, () => true))} MB (non-layer ${mb(shared)} MB); ${f.tokens} tokens, ${f.threads} thread(s), ${f.quantize ?? 'as loaded'}, tree top-k ${f.treeTopK}`);
console.log(`| exit E | RSS plain (median) | added by the exit & rest sessions of E: median (min-max of ${f.repeats}) | fp32 weights in the pair |`);
console.log('| ---: | ---: | ---: | ---: |');
// The pair: layers 0..E-1 and E..L-1 (all L layers once) plus the non-layer tensors twice.
const pair = bytes(weights, (n) => layerOf(n) >= 0) + 2 * shared;
for (const E of exits) {
  const before: number[] = [], added: number[] = [];
  for (let i = 0; i < f.repeats; i++) {
    const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', fileURLToPath(import.meta.url), '--model', f.model, '--child', String(E), '--tokens', String(f.tokens), '--threads', String(f.threads), '--tree-top-k', String(f.treeTopK), ...(f.quantize ? ['--quantize', f.quantize] : [])], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`exit ${E}: ${r.stderr.trim().split('\n').pop()}`);
    const m = JSON.parse(r.stdout.trim().split('\n').pop()!) as { before: number; after: number };
    before.push(m.before);
    added.push(m.after - m.before);
  }
  console.log(`| ${E} | ${mb(median(before))} MB | ${mb(median(added))} MB (${mb(Math.min(...added))}-${mb(Math.max(...added))}) | ${mb(pair)} MB |`);
}
