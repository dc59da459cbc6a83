/**
 * AdamW written out (rather than an optimizer library's) so that its moments can be checkpointed
 * and restored exactly, and so that weight decay is decoupled as in AdamW. Gradients are clipped
 * to a global L2 norm before the update. Also the learning-rate schedules.
 */

export interface AdamWOptions {
  /** Default 0.9. */
  beta1?: number;
  /** Default 0.95 (EAGLE's setting). */
  beta2?: number;
  /** Default 1e-8. */
  eps?: number;
  /** Decoupled weight decay. Default 0. */
  weightDecay?: number;
  /** Max global gradient L2 norm; 0 = no clipping. Default 0.5 (EAGLE's setting). */
  clip?: number;
}

/** Learning rate at update `step` (1-based): linear warmup over `warmup` steps, then constant. */
export function warmupLr(lr: number, warmup: number, step: number): number {
  return warmup > 0 && step < warmup ? (lr * step) / warmup : lr;
}

/**
 * Learning rate at update `step` (1-based) of `total`: linear warmup over `warmup` steps, then
 * cosine decay from `lr` to `minLr` at `total`.
 */
export function cosineLr(lr: number, minLr: number, warmup: number, total: number, step: number): number {
  if (warmup > 0 && step < warmup) return (lr * step) / warmup;
  const t = total > warmup ? Math.min(1, (step - warmup) / (total - warmup)) : 1;
  return minLr + 0.5 * (lr - minLr) * (1 + Math.cos(Math.PI * t));
}

/**
 * The same AdamW (global-norm clip, bias correction, decoupled decay) on Float32Arrays in JS:
 * what every training backend shares, so the update, its checkpoint and a resume are identical
 * whichever backend computed the gradients. Arithmetic in float64, state stored as float32.
 */
export class AdamWArrays {
  readonly m: Float32Array[];
  readonly v: Float32Array[];
  /** Updates applied so far (the bias-correction step count). */
  step = 0;
  private readonly o: Required<AdamWOptions>;

  constructor(readonly params: Float32Array[], opts: AdamWOptions = {}) {
    this.o = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, clip: 0.5, ...opts };
    this.m = params.map((p) => new Float32Array(p.length));
    this.v = params.map((p) => new Float32Array(p.length));
  }

  /** One update in place with learning rate `lr`. Returns the global gradient norm before clipping. */
  apply(grads: Float32Array[], lr: number): number {
    const { beta1: b1, beta2: b2, eps, weightDecay: wd, clip } = this.o;
    let sq = 0;
    for (const g of grads) for (let i = 0; i < g.length; i++) sq += g[i] * g[i];
    const norm = Math.sqrt(sq);
    const scale = clip > 0 && norm > clip ? clip / (norm + 1e-6) : 1;
    this.step++;
    const c1 = 1 - b1 ** this.step, c2 = 1 - b2 ** this.step, decay = 1 - lr * wd;
    for (let k = 0; k < this.params.length; k++) adamKernel(this.params[k], grads[k], this.m[k], this.v[k], scale, b1, b2, c1, c2, eps, lr, decay);
    return norm;
  }
}

/** One AdamW update of one tensor in place: a flat monomorphic loop (V8 keeps it fast). */
function adamKernel(
  p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array,
  scale: number, b1: number, b2: number, c1: number, c2: number, eps: number, lr: number, decay: number,
): void {
  const a1 = 1 - b1, a2 = 1 - b2, step = lr / c1, ic2 = 1 / c2;
  for (let i = 0; i < p.length; i++) {
    const gi = g[i] * scale;
    const mi = b1 * m[i] + a1 * gi, vi = b2 * v[i] + a2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - (step * mi) / (Math.sqrt(vi * ic2) + eps);
  }
}
