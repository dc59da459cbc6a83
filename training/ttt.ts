/**
 * Training-time test (`train-draft --ttt K`): the head's draft chain unrolled K steps in training,
 * the idea of EAGLE-3's "training-time test" (and HASS): at inference, draft step j + 1 of a
 * chain reads the head's own predicted feature of step j, not the target's, so errors compound
 * with depth. Training on K unrolled steps lets the loss see them.
 *
 * Step 0 is the EAGLE-1 pass (train-draft.ts): row t reads (feature_t + noise, token_{t+1}) at
 * position t and predicts feature_{t+1}. Step j (1..K-1), row t reads (step j-1's prediction at
 * row t, token_{t+j+1}) at position t+j and predicts feature_{t+j+1}, against the logged
 * feature_{t+j+1} and the target's next-token distribution there: row t+j's targets of step 0.
 * It attends to step 0's keys and values at rows <= t (the verified context, which at inference
 * the head caught up on from the target's features) and to steps 1..j's at row t alone (the
 * drafted chain): what the head sees at chain depth j+1. Gradients flow through the predicted
 * features and through every step's keys and values (as EAGLE-3 trains).
 *
 * Rows whose step-j targets lie past their window get weight 0 (windows are cut inside one
 * sequence, training/dataset.ts). Each step's loss is step 0's form, a mean over the rows it
 * has; the objective is sum_j TTT_DECAY^j * loss_j. The 0.8 decay is the weight EAGLE-3's
 * released training scripts give step j; the rest of the schedule (one feature + token loss
 * per step, the windowing, per-step means) is ours.
 */
import type { PackedBatch } from './dataset.ts';

/** Weight of step j's loss: TTT_DECAY^j. */
export const TTT_DECAY = 0.8;

/** Packed row i's row at chain step j: i + j when it is in the same window, else -1. */
export function chainRow(b: Pick<PackedBatch, 'n' | 'segment'>, i: number, j: number): number {
  return i + j < b.n && b.segment[i + j] === b.segment[i] ? i + j : -1;
}

/** Rows of `b` that have a step-j target (step 0: all). */
export function chainRows(b: Pick<PackedBatch, 'n' | 'segment'>, j: number): number {
  let n = 0;
  for (let i = 0; i < b.n; i++) if (chainRow(b, i, j) >= 0) n++;
  return n;
}
