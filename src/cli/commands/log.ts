/** `eaglet log`: runs the target over a corpus and writes its features to an Arrow feature log. */
import { loadModel } from '../../load-model.ts';
import { loadTokenizer } from '../../tokenizer/load.ts';
import { LOG_DEFAULTS, runLog } from '../../../training/log.ts';
import { progressReporter, withEta } from '../../../training/progress.ts';
import { fileList, MODEL_FLAGS, QUANTIZE_FLAG, requireFlags, THREADS_FLAG } from '../common-flags.ts';
import type { QuantName } from '../../model/quantize.ts';
import type { FlagSpec } from '../../option-schema.ts';
import { defineCommand } from '../command.ts';

const FLAGS: FlagSpec[] = [
  { ...MODEL_FLAGS[0], help: `${MODEL_FLAGS[0].help} (required)` },
  ...MODEL_FLAGS.slice(1),
  { flag: 'corpus', type: 'string', meta: 'FILE...', help: 'corpus files (.txt, .jsonl with "text", .ids token-id lines), comma- or space-separated (required)' },
  { flag: 'out', type: 'string', meta: 'LOG.arrow', help: 'feature log to write; its sidecar goes to LOG.arrow.json (required)' },
  { flag: 'mode', type: 'string', choices: ['teacher', 'generate'], meta: 'MODE', help: 'teacher: log the corpus as is; generate: the target continues each document\'s first --prompt-len tokens (required)' },
  { flag: 'seq-len', type: 'int', min: 2, meta: 'N', help: 'tokens per logged sequence, at most the model\'s context (required)' },
  { flag: 'max-tokens', type: 'int', min: 1, meta: 'N', help: 'stop after logging this many rows (required)' },
  { flag: 'top-k', type: 'int', min: 0, default: LOG_DEFAULTS.topK, meta: 'K', help: 'also log the target\'s top-k next-token probabilities (0 = off)' },
  { flag: 'prompt-len', type: 'int', min: 1, default: LOG_DEFAULTS.promptLen, meta: 'N', help: 'generate: prompt tokens taken from each document' },
  { flag: 'temperature', type: 'number', min: 0, default: LOG_DEFAULTS.temperature, meta: 'T', help: 'generate: sampling temperature (0 = greedy)' },
  { flag: 'seed', type: 'int', min: 0, default: LOG_DEFAULTS.seed, meta: 'S', help: 'generate: sampling seed' },
  { ...QUANTIZE_FLAG, help: 'run the target quantized to 8- or 4-bit blockwise weights, as `--quantize` does at generation: log the features a head drafting for that target sees (train it with `train-draft --quantize` too)' },
  // Not THREADS_FLAG's default (1 below a size): runLog's session takes every core unless told.
  { ...THREADS_FLAG, help: 'onnxruntime intra-op threads (default: every core, at most 8)' },
];

export const log = defineCommand({
  summary: 'log the target\'s features over a corpus (Arrow), for draft training',
  usage: 'Usage: eaglet log --model PATH --corpus FILE... --out LOG.arrow --mode teacher|generate --seq-len N --max-tokens N [flags]',
  description: 'Runs the target over a corpus and logs, per token, its final hidden state (and optionally its\ntop-k next tokens) to an Arrow file: the training data of `eaglet train-draft`.',
  flags: FLAGS,
  positional: true,
  async run(f) {
    requireFlags(f, ['model', 'out', 'mode', 'seq-len', 'max-tokens']);
    const corpus = fileList(f, 'corpus', '--corpus');
    const model = await loadModel(f.model as string);
    const tokenizer = f.tokenizer ? loadTokenizer(f.tokenizer as string, { vocabSize: model.config.vocabSize }) : model.tokenizer;
    const r = await runLog({
      model: { ...model, tokenizer },
      modelSource: f.model as string,
      corpus,
      out: f.out as string,
      mode: f.mode as 'teacher' | 'generate',
      seqLen: f.seqLen as number,
      maxTokens: f.maxTokens as number,
      topK: f.topK as number,
      promptLen: f.promptLen as number,
      temperature: f.temperature as number,
      seed: f.seed as number,
      quantize: f.quantize as QuantName | undefined,
      threads: f.threads as number | undefined,
      onProgress: withEta(progressReporter(), 'tok/s'),
    });
    const c = r.counts;
    process.stdout.write(`logged ${c.rows} rows in ${c.sequences} sequences (${f.mode}) to ${r.out}, sidecar ${r.sidecar}; ${r.tokensPerSecond.toFixed(0)} tok/s\n`);
  },
});
