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
import { FormatError } from '../src/errors.ts';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.ts';
import type { Variable } from '@tensorflow/tfjs';
import type { Tensor, Weights } from '../src/model/weights.ts';

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

/** The checkpoint in `outDir`, or null when there is none. */
export function loadCheckpoint<C = Curve>(outDir: string): Checkpoint<C> | null {
  const path = checkpointPath(outDir);
  if (!existsSync(path)) return null;
  const { tensors, metadata } = readSafetensors(path);
  if (!metadata[META_KEY]) throw new FormatError(path, `not an eaglet training checkpoint (no ${META_KEY} metadata)`);
  const c: Checkpoint<C> = { state: JSON.parse(metadata[META_KEY]), params: new Map(), m: new Map(), v: new Map() };
  for (const [key, t] of tensors) {
    const dot = key.indexOf('.');
    const group = ({ param: c.params, adam_m: c.m, adam_v: c.v } as Record<string, Weights>)[key.slice(0, dot)];
    if (!group) throw new FormatError(path, `unexpected tensor ${key}`);
    group.set(key.slice(dot + 1), t);
  }
  return c;
}

/** Copies tfjs variables out as named weights (for checkpoints and exports). */
export function variablesToWeights(names: readonly string[], vars: readonly Variable[]): Weights {
  return new Map(names.map((n, i) => [n, { shape: vars[i].shape.slice(), data: (vars[i].dataSync() as Float32Array).slice() }]));
}
