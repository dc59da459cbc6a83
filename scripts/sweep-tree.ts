/**
 * Tree-shape sweep: plain decoding and static EAGLE-2 trees of several (top-k, depth, size)
 * shapes on the same prompts, in one process, interleaved (src/bench/compare.ts). This is how
 * the CPU default tree (src/api.ts DEFAULT_TREE) was chosen.
 *
 *   node --import tsx scripts/sweep-tree.ts --model DIR --draft DIR --prompts FILE
 *        [--shapes 4x5x16,2x4x8,...] [--max-new-tokens 96] [--repeats 2] [--out runs/bench/sweep]
 */
import { comparePolicies, comparisonMarkdown, writeComparison } from '../src/bench/compare.ts';
import { MODEL_FLAGS, THREADS_FLAG } from '../src/cli/common-flags.ts';
import { scriptFlags } from './script-flags.ts';
import { UsageError } from '../src/errors.ts';
import { EagleDrafter } from '../src/generate/eagle-drafter.ts';
import { loadDraftHead } from '../src/io/draft-head-io.ts';
import { loadModel } from '../src/load-model.ts';
import { StaticPolicy } from '../src/policies/policy.ts';
import { DraftSession } from '../src/runtime/draft.ts';
import { TargetSession } from '../src/runtime/target.ts';
import { readPrompts } from '../src/bench/prompts.ts';
import { textEncoder } from '../src/api.ts';

const f = scriptFlags(import.meta.url, [
  ...MODEL_FLAGS,
  THREADS_FLAG,
  { flag: 'draft', type: 'string', help: 'draft head directory' },
  { flag: 'prompts', type: 'string', help: 'prompt file (.jsonl or text, one per line)' },
  { flag: 'max-prompts', type: 'int', min: 1, default: 12, help: 'prompts used' },
  { flag: 'shapes', type: 'string', default: '1x3x3,1x5x5,2x4x8,4x4x12,4x5x16,4x6x24,8x6x32,8x8x48', help: 'KxDxN list: top-k x depth x tree size' },
  { flag: 'max-new-tokens', type: 'int', min: 1, default: 96, help: 'tokens per prompt' },
  { flag: 'repeats', type: 'int', min: 1, default: 2, help: 'timed passes' },
  { flag: 'out', type: 'string', default: 'runs/bench/sweep', help: 'output prefix (.json/.md/.svg)' },
]);
if (!f.model || !f.draft || !f.prompts) throw new UsageError('--model/--draft/--prompts', 'are required');
const shapes = String(f.shapes).split(',').map((s) => {
  const [topK, maxDepth, totalTokens] = s.split('x').map(Number);
  if (![topK, maxDepth, totalTokens].every((x) => Number.isInteger(x) && x > 0)) throw new UsageError('--shapes', `bad shape ${s} (want KxDxN)`);
  return { topK, maxDepth, totalTokens };
});
const model = await loadModel(f.model as string);
const head = loadDraftHead(f.draft as string, model.config);
const threads = f.threads as number;
const target = await TargetSession.create(model.config, model.weights, { threads });
const draft = await DraftSession.create(head.config, head.weights, model.config, model.weights, { threads, topK: Math.max(...shapes.map((s) => s.topK)) });
const prompts = readPrompts(f.prompts as string, textEncoder(model.tokenizer)).slice(0, f.maxPrompts as number);
const policies = shapes.map((s) => ({
  label: `k${s.topK} d${s.maxDepth} n${s.totalTokens}`,
  create: () => new StaticPolicy(s.maxDepth, s.totalTokens),
  drafter: new EagleDrafter(draft, s, model.config.maxSeqLen),
}));
const c = await comparePolicies({
  target, drafter: policies[0].drafter, policies, prompts,
  generation: { maxNewTokens: f.maxNewTokens as number, stopAtEos: false }, repeats: f.repeats as number,
  onProgress: (l) => process.stderr.write(l + '\n'),
});
c.meta = { model: f.model, draft: f.draft, shapes: f.shapes };
writeComparison(c, f.out as string);
process.stdout.write(comparisonMarkdown(c));
await target.dispose();
await draft.dispose();
