/**
 * Tau and speed against the draft vocabulary size N, on a trained pair (default: the embedded
 * default, data/default). FR-Spec's recipe on an already-trained head: keep its layer, give it
 * the N target tokens most frequent in the TRAINING split of the corpus (never the prompts) as
 * its draft vocabulary (EAGLE-3 layout, src/model/draft-head.ts), and generate held-out prompts
 * with each variant and with plain decoding, interleaved prompt by prompt, same tree shape and
 * static policy, greedy. Output is identical for every variant (checked); tau and time are not.
 *
 *   node --import tsx scripts/corpus-split.ts --corpus-dir node_modules/typescript/lib --split held-out \
 *        --prompts /tmp/heldout.jsonl --model data/default/target --prompt-len 32 --count 24
 *   node --import tsx scripts/bench-draft-vocab.ts --prompts /tmp/heldout.jsonl [--vocab full,1024,512,256,128 --quant q8 ...]
 */
import { loadGenerator, DEFAULT_TREE } from '../src/api.ts';
import { readPrompts } from '../src/bench/prompts.ts';
import { scriptFlags } from './script-flags.ts';
import { UsageError } from '../src/errors.ts';
import { loadDraftHead } from '../src/io/draft-head-io.ts';
import { loadModel } from '../src/load-model.ts';
import { draftVocabWeights, frequentTokens } from '../src/model/draft-head.ts';
import { GenerationStats } from '../src/generate/stats.ts';
import { readTargetCorpus } from '../training/target-corpus.ts';

const f = scriptFlags(import.meta.url, [
  { flag: 'model', type: 'string', default: 'data/default/target', help: 'target directory (with tokenizer.json)' },
  { flag: 'draft', type: 'string', default: 'data/default/head', help: 'trained head directory' },
  { flag: 'corpus-dir', type: 'string', default: 'node_modules/typescript/lib', help: 'corpus the target was trained on: its train split ranks the tokens' },
  { flag: 'freq-tokens', type: 'int', min: 1000, default: 400000, help: 'training-split tokens counted' },
  { flag: 'prompts', type: 'string', help: 'held-out prompts (.jsonl id arrays) (required)' },
  { flag: 'vocab', type: 'string', default: 'full,1024,512,256,128', help: 'draft vocabulary sizes' },
  { flag: 'quant', type: 'string', choices: ['none', 'q8', 'q4'], default: 'none', help: 'draft weight quantization of every variant' },
  { flag: 'max-new-tokens', type: 'int', min: 1, default: 96, help: 'tokens per prompt' },
  { flag: 'threads', type: 'int', min: 1, default: 1, help: 'ORT threads' },
]);
if (!f.prompts) throw new UsageError('--prompts', 'is required');
const model = await loadModel(f.model as string);
const head = loadDraftHead(f.draft as string, model.config);
if (!model.tokenizer) throw new UsageError('--model', 'needs a tokenizer to rank the corpus tokens');
const corpus = readTargetCorpus(f.corpusDir as string, 0.1);
const train: number[] = [];
for (const c of corpus.train) {
  if (train.length >= (f.freqTokens as number)) break;
  for (const id of model.tokenizer.encode(c.text)) train.push(id);
}
const V = model.config.vocabSize;
const draftQuant = f.quant === 'none' ? undefined : (f.quant as 'q8' | 'q4');
const variants = await Promise.all(String(f.vocab).split(',').map(async (spec) => {
  const n = spec === 'full' ? V : Number(spec);
  if (!(Number.isInteger(n) && n >= 1 && n <= V)) throw new UsageError('--vocab', `${spec} is not full or an integer in [1, ${V}]`);
  const draft = n === V ? head : {
    config: { ...head.config, draftVocabSize: n },
    weights: new Map([...head.weights, ...draftVocabWeights(model.config, model.weights, frequentTokens(train.slice(0, f.freqTokens as number), V, n))]),
  };
  return { label: spec, g: await loadGenerator({ model, draft, threads: f.threads as number, draftQuant }), stats: new GenerationStats() };
}));
const plain = { label: 'plain', g: await loadGenerator({ model, draft: null, threads: f.threads as number }), stats: new GenerationStats() };
const prompts = readPrompts(f.prompts as string, plain.g.encode);
const opts = { maxNewTokens: f.maxNewTokens as number, stopAtEos: false };
let coverage = 0;
for (const p of prompts) {
  const want = await plain.g.generate(p, opts);
  plain.stats.add(want.stats);
  for (const v of variants) {
    const r = await v.g.generate(p, opts);
    if (r.ids.join() !== want.ids.join()) throw new Error(`${v.label}: output differs from plain decoding (lossless broken)`);
    v.stats.add(r.stats);
  }
}
for (const v of variants) {
  const n = v.label === 'full' ? V : Number(v.label);
  if (n < V) {
    const ids = new Set(frequentTokens(train.slice(0, f.freqTokens as number), V, n));
    let hit = 0, all = 0;
    for (const p of prompts) {
      const r = await plain.g.generate(p, opts);
      for (const id of r.ids) (hit += ids.has(id) ? 1 : 0), all++;
    }
    coverage = hit / all;
  } else coverage = 1;
  const j = v.stats.toJSON();
  console.log(
    `N=${v.label.padEnd(5)} tau ${j.tau.toFixed(2)}, ${j.tokensPerSecond.toFixed(0)} tok/s = ${(j.tokensPerSecond / plain.stats.tokensPerSecond).toFixed(2)}x plain, ` +
      `draft ${(j.timeMs.draft / j.draftPasses).toFixed(3)} ms/pass, verify ${j.timeMs.verify.toFixed(0)} ms; held-out output tokens inside the draft vocabulary ${(100 * coverage).toFixed(1)}%`,
  );
}
console.log(`plain ${plain.stats.tokensPerSecond.toFixed(0)} tok/s; ${prompts.length} prompts x ${f.maxNewTokens} tokens, tree ${JSON.stringify(DEFAULT_TREE)}, static policy, ${f.threads} thread(s), quant ${f.quant}`);
for (const v of [...variants, plain]) await v.g.dispose();
