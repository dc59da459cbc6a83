/**
 * Training checkpoints of the draft head: everything needed to continue a run bit for bit.
 *
 *   <out>/checkpoint.safetensors
 *     param.<name>, adam_m.<name>, adam_v.<name>   float32, head tensor shapes
 *     __metadata__.eaglet_checkpoint               JSON CheckpointState (step, RNG, data order, curve)
 *
 * Written atomically (safetensors writer: temp file + rename), so a crash mid-write keeps the
 * previous checkpoint intact.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { FormatError, UsageError } from '../src/errors.ts';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.ts';
import { checkTensors, type Tensor, type Weights } from '../src/model/weights.ts';
import { AdamWArrays, type AdamWOptions } from './adamw.ts';

/** The non-tensor state of a run; `C` is the trainer's curve type (the draft head's by default). */
export interface CheckpointState<C = Curve> {
  /** Updates applied. */
  step: number;
  /** The run's seed: with `step`, it fixes every random draw still to come (noise, later epochs). */
  rng: { seed: number; step: number };
  /** Training-window order of the epoch in progress (absent when windows are drawn from the RNG). */
  order?: { epoch: number; permutation: number[] };
  /** Options that must not change across a resume (sizes, learning schedule, data). */
  fingerprint: string;
  /** Metric history so far, so a resumed run reports the same curve. */
  curve: C;
}

/**
 * The resume check: a UsageError naming each option that differs between the checkpoint's run
 * and this one (fingerprints are JSON objects of options; keys are camelCase option names, shown
 * as flags; non-option keys such as `rows` or `corpus` name the data).
 */
export function checkFingerprint(saved: string, current: string, where: string): void {
  if (saved === current) return;
  let a: Record<string, unknown>, b: Record<string, unknown>;
  try {
    a = JSON.parse(saved) as Record<string, unknown>;
    b = JSON.parse(current) as Record<string, unknown>;
  } catch {
    throw new FormatError(where, 'its checkpoint has an unreadable options fingerprint');
  }
  const show = (v: unknown) => (v === undefined ? 'unset' : JSON.stringify(v));
  const diffs = [...new Set([...Object.keys(a), ...Object.keys(b)])]
    .filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]))
    .map((k) => `${OPTION_FLAGS[k] ?? `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`} ${show(a[k])} in the checkpoint, ${show(b[k])} now`);
  throw new UsageError('--resume', `${where} holds a checkpoint of another run: ${diffs.join('; ')} (match them, or remove the checkpoint)`);
}

/** Fingerprint keys that are not a flag of their own: the data a run trained on. */
const OPTION_FLAGS: Record<string, string> = { rows: 'log rows (--logs)', windows: 'training windows (--logs)', corpus: 'corpus checksum (--corpus-dir)' };

/** Training curve: loss per step, validation metrics every `valEvery` steps. */
export interface Curve {
  step: number[];
  loss: number[];
  valStep: number[];
  valTop1: number[];
  valTop3: number[];
  valFeatureLoss: number[];
}

export interface Checkpoint<C = Curve> {
  state: CheckpointState<C>;
  params: Weights;
  m: Weights;
  v: Weights;
}

const META_KEY = 'eaglet_checkpoint';

export const checkpointPath = (outDir: string): string => join(outDir, 'checkpoint.safetensors');

export function saveCheckpoint<C>(outDir: string, c: Checkpoint<C>): void {
  const tensors = new Map<string, Tensor>();
  for (const [prefix, w] of [['param', c.params], ['adam_m', c.m], ['adam_v', c.v]] as const)
    for (const [name, t] of w) tensors.set(`${prefix}.${name}`, t);
  writeSafetensors(checkpointPath(outDir), tensors, { [META_KEY]: JSON.stringify(c.state) });
}

/**
 * The checkpoint in `outDir`, or null when there is none. With `shapes` (the run's parameter
 * names and shapes), a checkpoint of another model, or with missing, misshapen or non-finite
 * tensors, is refused with an error naming the file.
 */
export function loadCheckpoint<C = Curve>(outDir: string, shapes?: Map<string, number[]>): Checkpoint<C> | null {
  const path = checkpointPath(outDir);
  if (!existsSync(path)) return null;
  const { tensors, metadata } = readSafetensors(path);
  if (!metadata[META_KEY]) throw new FormatError(path, `not an eaglet training checkpoint (no ${META_KEY} metadata)`);
  let state: CheckpointState<C>;
  try {
    state = JSON.parse(metadata[META_KEY]);
  } catch (e) {
    throw new FormatError(path, `${META_KEY} metadata is not valid JSON (${(e as Error).message})`);
  }
  const bad = stateProblem(state);
  if (bad) throw new FormatError(path, `${META_KEY} metadata: ${bad}`);
  const c: Checkpoint<C> = { state, params: new Map(), m: new Map(), v: new Map() };
  for (const [key, t] of tensors) {
    const dot = key.indexOf('.');
    const group = ({ param: c.params, adam_m: c.m, adam_v: c.v } as Record<string, Weights>)[key.slice(0, dot)];
    if (!group) throw new FormatError(path, `unexpected tensor ${key}`);
    group.set(key.slice(dot + 1), t);
  }
  if (shapes) {
    for (const [prefix, w] of [['param', c.params], ['adam_m', c.m], ['adam_v', c.v]] as const) {
      const problem = checkTensors(shapes, w) ?? (w.size !== shapes.size ? `holds ${w.size} ${prefix} tensors, this run has ${shapes.size}` : null);
      if (problem) throw new FormatError(path, `${prefix}: ${problem}: a checkpoint of another model or a damaged file`);
    }
  }
  return c;
}

/** A run's trainable tensors and their optimizer, fresh or resumed (`startTraining`). */
export interface TrainingState {
  params: Weights;
  opt: AdamWArrays;
  /** Updates already applied: the checkpoint's step, 0 on a fresh run. */
  startStep: number;
  /** Copies `w` (the params or a moment, in `names` order) as named weights, for checkpoints and exports. */
  copy(w: Float32Array[]): Weights;
}

/**
 * Copies of the checkpoint's parameters (or of `init()` on a fresh run) in `names` order, and an
 * AdamW over them with the checkpoint's moments and step restored, so a resumed run continues
 * bit for bit. Every trainer that checkpoints starts here.
 */
export function startTraining(names: readonly string[], ckpt: Checkpoint<unknown> | null, init: () => Weights, adam: AdamWOptions): TrainingState {
  const from = ckpt?.params ?? init();
  const params: Weights = new Map(names.map((n) => [n, { shape: from.get(n)!.shape.slice(), data: from.get(n)!.data.slice() }]));
  const opt = new AdamWArrays(names.map((n) => params.get(n)!.data), adam);
  const startStep = ckpt?.state.step ?? 0;
  if (ckpt) {
    opt.step = startStep;
    names.forEach((n, i) => (opt.m[i].set(ckpt.m.get(n)!.data), opt.v[i].set(ckpt.v.get(n)!.data)));
  }
  const copy = (w: Float32Array[]): Weights => new Map(names.map((n, i) => [n, { shape: params.get(n)!.shape, data: w[i].slice() }]));
  return { params, opt, startStep, copy };
}

/** What is wrong with the non-tensor state, or null (the curve's own fields are the trainer's to check). */
function stateProblem(s: CheckpointState<unknown>): string | null {
  const count = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;
  if (typeof s !== 'object' || s === null || Array.isArray(s)) return 'not a JSON object';
  if (!count(s.step)) return 'step must be a non-negative integer';
  if (typeof s.rng !== 'object' || s.rng === null || !Number.isSafeInteger(s.rng.seed) || !count(s.rng.step)) return 'rng must hold integer seed and step';
  if (s.order !== undefined && (typeof s.order !== 'object' || s.order === null || !count(s.order.epoch) || !Array.isArray(s.order.permutation) || !s.order.permutation.every(count)))
    return 'order must hold an epoch and a permutation of indices';
  if (typeof s.fingerprint !== 'string') return 'fingerprint must be a string';
  if (typeof s.curve !== 'object' || s.curve === null || !Object.values(s.curve).every((a) => Array.isArray(a) && a.every((x) => typeof x === 'number' || x === null)))
    return 'curve must map names to lists of numbers';
  return null;
}
