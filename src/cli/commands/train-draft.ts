/** `eaglet train-draft`: trains an EAGLE draft head on feature logs (onnxruntime or TensorFlow.js). */
import { join } from 'node:path';
import { loadModel } from '../../load-model.ts';
import { progressReporter, withEta } from '../../../training/progress.ts';
import { pickTrainBackend, TRAIN_BACKEND_CHOICES, TRAIN_BACKEND_HELP, type TrainBackendChoice } from '../../../training/backend.ts';
import { trainDraft, TRAIN_DRAFT_DEFAULTS as D, type ValMetrics } from '../../../training/train-draft.ts';
import type { FlagSpec } from '../../option-schema.ts';
import { defineCommand } from '../command.ts';
import { fileList, QUANTIZE_FLAG, requireFlags, THREADS_FLAG } from '../common-flags.ts';
import type { QuantName } from '../../model/quantize.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'model', type: 'string', meta: 'PATH', help: 'the target the logs came from: HF checkpoint directory or llama2.c .bin (required)' },
  { flag: 'logs', type: 'string', meta: 'LOG.arrow,...', help: 'feature logs written by `eaglet log` for this target (required)' },
  { flag: 'out', type: 'string', meta: 'DIR', help: 'head directory: config.json, model.safetensors, checkpoint, training-curve.svg (required)' },
  { flag: 'lr', type: 'number', above: 0, default: D.lr, meta: 'LR', help: 'peak learning rate (AdamW)' },
  { flag: 'batch', type: 'int', min: 1, default: D.batch, meta: 'N', help: 'windows per step' },
  { flag: 'window', type: 'int', min: 1, default: D.window, meta: 'N', help: 'rows per training window' },
  { flag: 'epochs', type: 'int', min: 1, default: D.epochs, meta: 'N', help: 'epochs over the training windows (unless --steps)' },
  { flag: 'steps', type: 'int', min: 1, meta: 'N', help: 'total updates; overrides --epochs' },
  { flag: 'warmup', type: 'int', min: 0, default: D.warmup, meta: 'N', help: 'linear warmup updates' },
  { flag: 'clip', type: 'number', min: 0, default: D.clip, meta: 'X', help: 'global gradient-norm clip (0 = off)' },
  { flag: 'noise', type: 'number', min: 0, default: D.noise, meta: 'X', help: 'uniform noise U(-x/2, x/2) on input features' },
  { flag: 'feature-weight', type: 'number', min: 0, default: D.featureWeight, meta: 'W', help: 'weight of the SmoothL1 feature loss' },
  { flag: 'token-weight', type: 'number', min: 0, default: D.tokenWeight, meta: 'W', help: 'weight of the soft cross-entropy token loss' },
  { flag: 'weight-decay', type: 'number', min: 0, default: D.weightDecay, meta: 'X', help: 'AdamW decoupled weight decay' },
  { flag: 'val-fraction', type: 'number', min: 0, default: D.valFraction, meta: 'F', help: 'fraction of windows held out for validation, in [0, 1)' },
  { flag: 'val-every', type: 'int', min: 1, meta: 'N', help: 'validate every N steps (default: a tenth of the run)' },
  { flag: 'checkpoint-every', type: 'int', min: 1, default: D.checkpointEvery, meta: 'N', help: 'write a checkpoint every N steps' },
  { flag: 'seed', type: 'int', min: 0, default: D.seed, meta: 'S', help: 'seed of initial weights, data order, split and noise' },
  { flag: 'shuffle-rows', type: 'int', min: 1, default: D.shuffleRows, meta: 'N', help: 'rows of the shuffle buffer: logs are streamed, memory holds about 2N rows' },
  { flag: 'draft-vocab', type: 'int', min: 0, default: D.draftVocab, meta: 'N', help: 'draft vocabulary: the N next-tokens most frequent in the logs (EAGLE-3 d2t/t2d layout); 0 = the full vocabulary' },
  { flag: 'intermediate', type: 'int', min: 1, meta: 'N', help: 'the head\'s SwiGLU width (config.json intermediate_size); default: the target\'s, as EAGLE trains it. A narrower MLP drafts for less' },
  { flag: 'ttt', type: 'int', min: 1, default: 1, meta: 'K', help: 'training-time test: unroll the draft chain K steps, deeper steps reading the head\'s own predicted features (EAGLE-3); 1 = the EAGLE-1 objective alone' },
  { flag: 'resume', type: 'bool', help: 'continue from DIR/checkpoint.safetensors (same options and logs required)' },
  { flag: 'overwrite', type: 'bool', help: 'replace a head or checkpoint already in --out (without it, that is an error)' },
  { flag: 'backend', type: 'string', choices: [...TRAIN_BACKEND_CHOICES], default: D.backend, meta: 'B', help: TRAIN_BACKEND_HELP },
  { ...QUANTIZE_FLAG, help: 'train for the target quantized to 8- or 4-bit weights (its quantized embeddings and LM head); the logs must come from `eaglet log` with the same --quantize' },
  { ...THREADS_FLAG, help: 'onnxruntime intra-op threads of the ort backend (default: every core)' },
];

export const trainDraftCommand = defineCommand({
  summary: 'train an EAGLE draft head on feature logs',
  usage: 'Usage: eaglet train-draft --model PATH --logs LOG.arrow[,LOG2...] --out DIR [flags]',
  description: 'Trains an EAGLE draft head for the target on its feature logs (EAGLE-1 objective: predict the\nnext feature, match the next-token distribution). DIR is then usable as `eaglet generate --draft DIR`.',
  flags: FLAGS,
  positional: true,
  async run(f) {
    requireFlags(f, ['model', 'out']);
    const logs = fileList(f, 'logs', '--logs');
    const target = await loadModel(f.model as string);
    // Load the backend up front so the user sees which one runs before the first step.
    const backend = (await pickTrainBackend(f.backend as TrainBackendChoice)).name;
    process.stderr.write(`training backend: ${backend}\n`);
    const out = f.out as string;
    const r = await trainDraft({
      target, logs, out,
      lr: f.lr as number, batch: f.batch as number, window: f.window as number, epochs: f.epochs as number,
      steps: f.steps as number | undefined, warmup: f.warmup as number, clip: f.clip as number, noise: f.noise as number,
      featureWeight: f.featureWeight as number, tokenWeight: f.tokenWeight as number, weightDecay: f.weightDecay as number,
      valFraction: f.valFraction as number, valEvery: f.valEvery as number | undefined, checkpointEvery: f.checkpointEvery as number,
      seed: f.seed as number, shuffleRows: f.shuffleRows as number, draftVocab: f.draftVocab as number, intermediate: f.intermediate as number | undefined, ttt: f.ttt as number, resume: Boolean(f.resume), overwrite: Boolean(f.overwrite), backend: f.backend as TrainBackendChoice,
      quantize: f.quantize as QuantName | undefined, threads: f.threads as number | undefined,
      onProgress: withEta(progressReporter()),
    });
    const m = (v: ValMetrics): string => `top-1 ${v.top1.toFixed(3)}, top-3 ${v.top3.toFixed(3)}, feature loss ${v.featureLoss.toFixed(4)}`;
    const resumed = r.startStep > 0 ? ` (resumed at step ${r.startStep})` : '';
    // A resumed run starts from the checkpoint's head, not a random one.
    const start = r.startStep > 0 ? `at step ${r.startStep}` : 'untrained';
    process.stdout.write(
      `trained ${r.steps} steps${resumed} on ${backend}, ${r.tokensPerSecond.toFixed(0)} tok/s\n` +
        `  validation: ${start.padEnd(9)} ${m(r.initial)}\n` +
        `              trained   ${m(r.final)} (${r.final.rows} rows)\n` +
        `  head: ${out} (eaglet generate --draft ${out}); curve: ${join(out, 'training-curve.svg')}\n`,
    );
  },
});
