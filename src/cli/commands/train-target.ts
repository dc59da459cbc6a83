/** `eaglet train-target`: trains a small Llama-family target from scratch on a text corpus (onnxruntime or TensorFlow.js). */
import { join } from 'node:path';
import { progressReporter, withEta } from '../../../training/progress.ts';
import { pickTrainBackend, type TrainBackendChoice } from '../../../training/backend.ts';
import { trainTarget, TRAIN_TARGET_FLAGS, type HeldOutMetrics, type TargetTunables } from '../../../training/train-target.ts';
import type { FlagSpec } from '../../option-schema.ts';
import { defineCommand } from '../command.ts';
import { requireFlags } from '../common-flags.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'corpus-dir', type: 'string', meta: 'DIR', help: 'directory of *.d.ts corpus files, e.g. node_modules/typescript/lib (required)' },
  { flag: 'out', type: 'string', meta: 'DIR', help: 'model directory: config.json, model.safetensors, tokenizer.json, training.json, curve (required)' },
  { flag: 'checkpoint-dir', type: 'string', meta: 'DIR', help: 'training checkpoints (default: OUT/checkpoint)' },
  ...TRAIN_TARGET_FLAGS,
  { flag: 'resume', type: 'bool', help: 'continue from the checkpoint (same options and corpus required)' },
];

export const trainTargetCommand = defineCommand({
  summary: 'train a small Llama target + BPE tokenizer from scratch on a corpus',
  usage: 'Usage: eaglet train-target --corpus-dir DIR --out DIR [flags]',
  description: 'Trains a byte-level BPE tokenizer and a Llama-family target from scratch on the corpus (whole\nfiles held out for evaluation). OUT is then usable as `eaglet generate --model OUT`.',
  flags: FLAGS,
  async run(f) {
    requireFlags(f, ['corpus-dir', 'out']);
    // Load the backend up front so the user sees which one runs before tokenizer training.
    process.stderr.write(`training backend: ${(await pickTrainBackend(f.backend as TrainBackendChoice)).name}\n`);
    const out = f.out as string;
    const { _: _rest, corpusDir, checkpointDir, resume, ...tunables } = f;
    const r = await trainTarget({
      ...(tunables as unknown as Partial<TargetTunables>),
      corpusDir: corpusDir as string, out, checkpointDir: checkpointDir as string | undefined, resume: Boolean(resume),
      onProgress: withEta(progressReporter()),
    });
    const m = (v: HeldOutMetrics): string => `loss ${v.loss.toFixed(4)}, ppl ${v.perplexity.toFixed(2)}, ${v.bitsPerByte.toFixed(3)} bits/byte`;
    const how = r.stoppedEarly ? ` (stopped by --time-budget at step ${r.steps})` : r.startStep > 0 ? ` (resumed at step ${r.startStep})` : '';
    process.stdout.write(
      `trained ${r.steps} steps${how} on ${r.backend}: ${r.parameters} parameters, ${r.tokensPerSecond.toFixed(0)} tok/s, ${(r.trainMs / 60000).toFixed(1)} min\n` +
        `  held-out (${r.final.tokens} tokens): ${r.startStep > 0 ? `at step ${r.startStep}` : 'untrained'} ${m(r.initial)}\n` +
        `                                 trained   ${m(r.final)}\n` +
        `  model: ${out} (eaglet generate --model ${out}); curve: ${join(out, 'training-curve.svg')}\n`,
    );
  },
});
