/** `eaglet collect-lengths`: speculative generation at a fixed depth, logging every round (Arrow) for LDLP / SpecDec++ training. */
import { DEFAULT_TREE } from '../../api.ts';
import { TREE_LIMITS } from '../../../trees/index.ts';
import { UsageError } from '../../errors.ts';
import { loadModel } from '../../load-model.ts';
import { loadTokenizer } from '../../tokenizer/load.ts';
import { chunkDocuments, readCorpus } from '../../../training/corpus.ts';
import { collectLengths } from '../../../training/lengths.ts';
import { progressReporter, withEta } from '../../../training/progress.ts';
import { checkTree, type FlagSpec } from '../../option-schema.ts';
import { defineCommand } from '../command.ts';
import { fileList, QUANTIZE_FLAG, requireFlags, THREADS_FLAG, TREE_FLAG_NAMES } from '../common-flags.ts';
import type { QuantName } from '../../model/quantize.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'model', type: 'string', meta: 'PATH', help: 'target: HF checkpoint directory or llama2.c .bin (required)' },
  { flag: 'tokenizer', type: 'string', meta: 'PATH', help: 'tokenizer for text prompts (default: found with the model)' },
  { flag: 'draft', type: 'string', meta: 'DIR|random', help: 'EAGLE draft head the policies will drive (required)' },
  { flag: 'prompts', type: 'string', meta: 'FILE...', help: 'prompt set or corpus (.txt, .jsonl with "text", .ids lines), cut into --prompt-len token prompts (required)' },
  { flag: 'out', type: 'string', meta: 'ROUNDS.arrow', help: 'round log to write; its sidecar goes to ROUNDS.arrow.json (required)' },
  { flag: 'prompt-len', type: 'int', min: 1, default: 32, meta: 'N', help: 'tokens per prompt: documents are cut into consecutive N-token prompts' },
  { flag: 'max-prompts', type: 'int', min: 1, default: 200, meta: 'N', help: 'use at most N prompts' },
  { flag: 'max-new-tokens', type: 'int', min: 1, default: 128, meta: 'N', help: 'tokens generated per prompt' },
  { flag: 'depth', type: 'int', min: 1, max: TREE_LIMITS.maxDepth, default: DEFAULT_TREE.maxDepth, meta: 'D', help: 'draft depth of every round: the deepest length the LDLP learns (use >= the inference --depth)' },
  { flag: 'total-tokens', type: 'int', min: 1, max: TREE_LIMITS.totalTokens, default: DEFAULT_TREE.totalTokens, meta: 'N', help: 'drafted tokens verified per round' },
  { flag: 'tree-top-k', type: 'int', min: 1, max: TREE_LIMITS.topK, default: DEFAULT_TREE.topK, meta: 'K', help: 'children per expanded node and nodes expanded per depth' },
  { flag: 'temperature', type: 'number', min: 0, default: 0, meta: 'T', help: 'sampling temperature (0 = greedy; collect at the temperature you will serve)' },
  { flag: 'seed', type: 'int', min: 0, default: 0, meta: 'S', help: 'sampling seed (prompt i uses S + i)' },
  { ...QUANTIZE_FLAG, help: 'run the target quantized to 8- or 4-bit blockwise weights, as `--quantize` does at generation: log the rounds of the pair as it will run' },
  THREADS_FLAG,
];

export const collectLengthsCommand = defineCommand({
  summary: 'log per-round accepted lengths (Arrow), for LDLP / SpecDec++ training',
  usage: 'Usage: eaglet collect-lengths --model PATH --draft DIR --prompts FILE... --out ROUNDS.arrow [flags]',
  description: 'Runs speculative generation with a static tree of --depth levels over the prompts and logs, per\nround, the LDLP inputs (last target feature, root embedding), the accepted length (its label)\nand the best draft path with the draft hidden states (SpecDec++ inputs and labels). Train on it\nwith `eaglet train-ldlp`.',
  flags: FLAGS,
  positional: true,
  async run(f) {
    requireFlags(f, ['model', 'draft', 'out']);
    const files = fileList(f, 'prompts', '--prompts');
    const model = await loadModel(f.model as string);
    const tokenizer = f.tokenizer ? loadTokenizer(f.tokenizer as string, { vocabSize: model.config.vocabSize }) : model.tokenizer;
    const encode = tokenizer && ((t: string) => tokenizer.encode(t, { addBos: tokenizer.bosId !== undefined }));
    const promptLen = f.promptLen as number, maxNew = f.maxNewTokens as number;
    if (promptLen + maxNew > model.config.maxSeqLen) throw new UsageError('--max-new-tokens', `prompt ${promptLen} + ${maxNew} new tokens exceed the model's context of ${model.config.maxSeqLen}`);
    const prompts = chunkDocuments(readCorpus(files, model.config.vocabSize, encode), promptLen).slice(0, f.maxPrompts as number);
    const tree = { maxDepth: f.depth as number, totalTokens: f.totalTokens as number, topK: f.treeTopK as number };
    checkTree(tree, TREE_FLAG_NAMES, true);
    const r = await collectLengths({
      model, draft: f.draft as string, tree, prompts, maxNewTokens: maxNew, out: f.out as string,
      temperature: f.temperature as number, seed: f.seed as number, threads: f.threads as number, quantize: f.quantize as QuantName | undefined, modelSource: f.model as string,
      onProgress: withEta(progressReporter()),
    });
    const c = r.sidecar.counts, h = r.acceptedHistogram;
    const mean = h.reduce((a, n, i) => a + n * i, 0) / Math.max(1, c.rounds);
    process.stdout.write(`logged ${c.rounds} rounds over ${c.sequences} prompts to ${f.out} (${r.roundsPerSecond.toFixed(1)} rounds/s); mean accepted ${mean.toFixed(2)} of depth ${tree.maxDepth}, histogram ${h.join(',')}\n`);
  },
});
