/** `eaglet train-ldlp`: trains the LDLP (or, with --head specdec++, the SpecDec++ acceptance head) on round logs (tfjs). */
import { join } from 'node:path';
import { progressReporter, withEta } from '../../../training/progress.ts';
import { BACKEND_CHOICES, loadTf, type BackendChoice } from '../../../training/tf-backend.ts';
import { DEFAULT_LDLP_OBJECTIVE, trainPredictor, TRAIN_PREDICTOR_DEFAULTS as D, type PredictorMetrics } from '../../../training/train-ldlp.ts';
import type { Objective, PredictorKind } from '../../io/predictor-io.ts';
import type { FlagSpec } from '../../option-schema.ts';
import { defineCommand } from '../command.ts';
import { fileList, requireFlags } from '../common-flags.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'logs', type: 'string', meta: 'ROUNDS.arrow,...', help: 'round logs written by `eaglet collect-lengths` (required)' },
  { flag: 'out', type: 'string', meta: 'DIR', help: 'predictor directory: config.json, model.safetensors, training.json, SVG plots (required)' },
  { flag: 'head', type: 'string', choices: ['ldlp', 'specdec++'], default: 'ldlp', meta: 'H', help: 'ldlp: draft-length predictor; specdec++: acceptance head' },
  { flag: 'objective', type: 'string', choices: ['classification', 'regression'], default: DEFAULT_LDLP_OBJECTIVE, meta: 'O', help: 'ldlp: predict the accepted length as a class or a number' },
  { flag: 'hidden', type: 'int', min: 1, default: D.hidden, meta: 'N', help: 'width of the two hidden layers (3 linear layers)' },
  { flag: 'steps', type: 'int', min: 1, default: D.steps, meta: 'N', help: 'updates' },
  { flag: 'batch', type: 'int', min: 1, default: D.batch, meta: 'N', help: 'rows per update' },
  { flag: 'lr', type: 'number', above: 0, default: D.lr, meta: 'LR', help: 'peak learning rate (AdamW)' },
  { flag: 'weight-decay', type: 'number', min: 0, default: D.weightDecay, meta: 'X', help: 'AdamW decoupled weight decay' },
  { flag: 'mismatch-weight', type: 'number', above: 0, default: D.mismatchWeight, meta: 'W', help: 'specdec++: loss weight of rejected tokens' },
  { flag: 'val-fraction', type: 'number', above: 0, max: 0.9, default: D.valFraction, meta: 'F', help: 'fraction of sequences held out for validation' },
  { flag: 'seed', type: 'int', min: 0, default: D.seed, meta: 'S', help: 'seed of init, split and batches' },
  { flag: 'backend', type: 'string', choices: [...BACKEND_CHOICES], default: 'auto', meta: 'B', help: 'tfjs backend: auto, node, wasm, cpu' },
];

export const trainLdlpCommand = defineCommand({
  summary: 'train the LDLP draft-length predictor or the SpecDec++ acceptance head (tfjs)',
  usage: 'Usage: eaglet train-ldlp --logs ROUNDS.arrow[,...] --out DIR [--head ldlp|specdec++] [flags]',
  description: 'Trains a small MLP on round logs: the LDLP predicts each round\'s accepted length from the last\ntarget feature and the root embedding; the SpecDec++ head predicts whether a drafted token is\naccepted from the draft hidden state. Use DIR with the policies `ldlp:path=DIR`,\n`ldlp+threshold:path=DIR` or `specdec++:path=DIR`.',
  flags: FLAGS,
  positional: true,
  async run(f) {
    requireFlags(f, ['out']);
    const logs = fileList(f, 'logs', '--logs');
    const backend = (await loadTf(f.backend as BackendChoice)).name;
    process.stderr.write(`tfjs backend: ${backend}\n`);
    const head = f.head as PredictorKind, out = f.out as string;
    const r = await trainPredictor({
      head, logs, out, objective: head === 'ldlp' ? (f.objective as Objective) : undefined,
      hidden: f.hidden as number, steps: f.steps as number, batch: f.batch as number, lr: f.lr as number,
      weightDecay: f.weightDecay as number, mismatchWeight: f.mismatchWeight as number, valFraction: f.valFraction as number,
      seed: f.seed as number, backend: f.backend as BackendChoice, onProgress: withEta(progressReporter()),
    });
    const what = head === 'ldlp' ? ['exact length', 'mean abs error'] : ['accuracy', 'Brier'];
    const m = (v: PredictorMetrics) => `${what[0]} ${v.accuracy.toFixed(3)} (constant ${v.baselineAccuracy.toFixed(3)}), ${what[1]} ${v.error.toFixed(3)} (constant ${v.baselineError.toFixed(3)})`;
    const policy = head === 'ldlp' ? `ldlp:path=${out}` : `specdec++:path=${out}`;
    process.stdout.write(
      `trained ${head} (${r.predictor.config.objective}) on ${r.trainRows} rows, ${r.backend}, ${r.rowsPerSecond.toFixed(0)} rows/s\n` +
        `  validation (${r.final.rows} rows): untrained ${m(r.initial)}\n` +
        `                          trained   ${m(r.final)}\n` +
        (r.confusion ? `  confusion (rows: true length, columns: predicted):\n${r.confusion.map((row, i) => `    ${i}: ${row.join(' ')}`).join('\n')}\n` : '') +
        `  wrote ${out} (policy ${policy}); plots ${join(out, 'calibration.svg')}, ${join(out, 'training-curve.svg')}\n`,
    );
  },
});
