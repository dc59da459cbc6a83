/** `eaglet train-ldlp`: trains the LDLP (or, with --head specdec++, the SpecDec++ acceptance head) on round logs (onnxruntime or TensorFlow.js). */
import { basename, dirname, join } from 'node:path';
import { openRoundLogs } from '../../../training/lengths.ts';
import { UsageError } from '../../errors.ts';
import { costAwareDepth, depthCosts as depthCosts_, readTuning } from '../../tune/tuning.ts';
import { progressReporter, withEta } from '../../../training/progress.ts';
import { pickTrainBackend, TRAIN_BACKEND_CHOICES, TRAIN_BACKEND_HELP, type TrainBackendChoice } from '../../../training/backend.ts';
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
  { flag: 'costs', type: 'string', meta: 'TUNING.json', help: 'ldlp: label each round with the depth of most tokens per ms under these measured costs (a file from `eaglet tune`), not its accepted length; with a tuned fused chain every depth up to the tuned one costs that depth\'s one-call round (the graph generate runs drafts its whole depth whatever the plan)' },
  { flag: 'hidden', type: 'int', min: 1, default: D.hidden, meta: 'N', help: 'width of the two hidden layers (3 linear layers)' },
  { flag: 'steps', type: 'int', min: 1, default: D.steps, meta: 'N', help: 'updates' },
  { flag: 'batch', type: 'int', min: 1, default: D.batch, meta: 'N', help: 'rows per update' },
  { flag: 'lr', type: 'number', above: 0, default: D.lr, meta: 'LR', help: 'peak learning rate (AdamW)' },
  { flag: 'weight-decay', type: 'number', min: 0, default: D.weightDecay, meta: 'X', help: 'AdamW decoupled weight decay' },
  { flag: 'mismatch-weight', type: 'number', above: 0, default: D.mismatchWeight, meta: 'W', help: 'specdec++: loss weight of rejected tokens' },
  { flag: 'val-fraction', type: 'number', above: 0, max: 0.9, default: D.valFraction, meta: 'F', help: 'fraction of sequences held out for validation' },
  { flag: 'seed', type: 'int', min: 0, default: D.seed, meta: 'S', help: 'seed of init, split and batches' },
  { flag: 'backend', type: 'string', choices: [...TRAIN_BACKEND_CHOICES], default: 'auto', meta: 'B', help: TRAIN_BACKEND_HELP },
];

export const trainLdlpCommand = defineCommand({
  summary: 'train the LDLP draft-length predictor or the SpecDec++ acceptance head',
  usage: 'Usage: eaglet train-ldlp --logs ROUNDS.arrow[,...] --out DIR [--head ldlp|specdec++] [flags]',
  description: 'Trains a small MLP on round logs: the LDLP predicts each round\'s accepted length from the last\ntarget feature and the root embedding; the SpecDec++ head predicts whether a drafted token is\naccepted from the draft hidden state. Use DIR with the policies `ldlp:path=DIR`,\n`ldlp+threshold:path=DIR` or `specdec++:path=DIR`.',
  flags: FLAGS,
  positional: true,
  async run(f) {
    requireFlags(f, ['out']);
    const logs = fileList(f, 'logs', '--logs');
    const backend = (await pickTrainBackend(f.backend as TrainBackendChoice)).name;
    process.stderr.write(`training backend: ${backend}\n`);
    const head = f.head as PredictorKind, out = f.out as string;
    let depthCosts: number[] | undefined;
    if (f.costs !== undefined) {
      if (head !== 'ldlp') throw new UsageError('--costs', 'applies to --head ldlp only');
      const t = readTuning(dirname(f.costs as string), basename(f.costs as string));
      if (!t) throw new UsageError('--costs', `no such file: ${f.costs}`);
      depthCosts = depthCosts_(t);
      const { maxDepth, files } = openRoundLogs(logs);
      const byAccepted = new Array(maxDepth + 1).fill(0); // rounds by accepted length, one streamed pass
      try {
        for (const file of files) for (let i = 0; i < file.batches.length; i++) for (const a of file.read(i).accepted) byAccepted[a]++;
      } finally {
        for (const file of files) file.close();
      }
      const rounds = byAccepted.reduce((a, b) => a + b, 0);
      const D = Math.min(maxDepth, depthCosts.length - 1);
      const hist = (label: (a: number) => number) => { const h = new Array(maxDepth + 1).fill(0); byAccepted.forEach((c, a) => (h[label(a)] += c)); return h.join(','); };
      // Both labels over the logs: what AdaEAGLE's LDLP learns, and what the cost-aware one does.
      process.stderr.write(`round ms by depth (${f.costs}): ${depthCosts.slice(0, D + 1).map((x) => x.toFixed(3)).join(' ')}\n` +
        `labels over ${rounds} rounds: accepted length ${hist((a) => a)}; cost-aware depth ${hist((a) => costAwareDepth(a, depthCosts!.slice(0, D + 1)))}\n`);
    }
    const r = await trainPredictor({
      head, logs, out, objective: head === 'ldlp' ? (f.objective as Objective) : undefined, depthCosts,
      hidden: f.hidden as number, steps: f.steps as number, batch: f.batch as number, lr: f.lr as number,
      weightDecay: f.weightDecay as number, mismatchWeight: f.mismatchWeight as number, valFraction: f.valFraction as number,
      seed: f.seed as number, backend: f.backend as TrainBackendChoice, onProgress: withEta(progressReporter()),
    });
    const what = head === 'ldlp' ? (depthCosts ? ['exact cost-aware depth', 'mean abs error'] : ['exact length', 'mean abs error']) : ['accuracy', 'Brier'];
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
