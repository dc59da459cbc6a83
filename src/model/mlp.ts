/**
 * The small predictor heads (AdaEAGLE's LDLP, SpecDec++'s acceptance head): one MLP definition,
 * written over the `linear` / `silu` slice of `Ops<T>` like the models in definition.ts, so
 * tfjs (training/tf-ops.ts) trains exactly what runs at inference.
 *
 *   x [T, in] -> linear -> silu -> ... -> linear -> [T, out]      weights layers.{i}.weight [out, in], layers.{i}.bias [out]
 *
 * Inference renders it a third way, `PlainOps` (plain TypeScript over reused buffers), because
 * the policy hooks are synchronous (plan before a round, continueDrafting between draft passes)
 * and an ORT run is a promise. Measured (test/ldlp.test.ts, d = 288, 576-64-64-7, on 2 shared
 * and busy cores, so noisy): plain TS 50-200 us, one ORT run of the same MLP 18-90 us, one draft
 * pass 0.2-1.1 ms. So ORT is the cheaper renderer here, by 2-7x; plain TS is kept because async
 * hooks would ripple through the decoding loop and every policy, and the default width is 32
 * (half the cost). The test holds all three renderings equal.
 */
import type { Ops } from './definition.ts';
import { tensor, type Tensor, type Weights } from './weights.ts';
import { Rng } from '../util/rng.ts';

/** Layer widths: `hidden.length + 1` linear layers. */
export interface MlpConfig {
  inputDim: number;
  /** Hidden widths, e.g. [128, 128] for AdaEAGLE's 3 layers. */
  hidden: number[];
  outputDim: number;
}

/** The ops an MLP needs: every full `Ops<T>` renderer has them. */
export type MlpOps<T> = Pick<Ops<T>, 'weight' | 'linear' | 'silu'>;

const layerName = (i: number, what: 'weight' | 'bias'): string => `layers.${i}.${what}`;

/** x [T, inputDim] -> [T, outputDim]. */
export function mlpForward<T>(ops: MlpOps<T>, cfg: MlpConfig, x: T): T {
  const n = cfg.hidden.length + 1;
  let h = x;
  for (let i = 0; i < n; i++) {
    h = ops.linear(h, ops.weight(layerName(i, 'weight')), ops.weight(layerName(i, 'bias'))); // [T, width_i]
    if (i < n - 1) h = ops.silu(h);
  }
  return h;
}

/** Every weight's name and shape, in layer order. */
export function mlpShapes(cfg: MlpConfig): Map<string, number[]> {
  const widths = [cfg.inputDim, ...cfg.hidden, cfg.outputDim];
  const m = new Map<string, number[]>();
  for (let i = 0; i + 1 < widths.length; i++) {
    m.set(layerName(i, 'weight'), [widths[i + 1], widths[i]]);
    m.set(layerName(i, 'bias'), [widths[i + 1]]);
  }
  return m;
}

/** Kaiming-style init: weights ~ N(0, 1/fan_in), biases 0. */
export function randomMlpWeights(cfg: MlpConfig, seed: number): Weights {
  const rng = new Rng(seed);
  const w: Weights = new Map();
  for (const [name, shape] of mlpShapes(cfg)) {
    const t = tensor(shape);
    if (shape.length === 2) for (let i = 0; i < t.data.length; i++) t.data[i] = rng.normal() / Math.sqrt(shape[1]);
    w.set(name, t);
  }
  return w;
}

/** A description of what is wrong with `w` for `cfg`, or null. */
export function mlpWeightsProblem(cfg: MlpConfig, w: Weights): string | null {
  for (const [name, shape] of mlpShapes(cfg)) {
    const t = w.get(name);
    if (!t) return `missing tensor ${name}`;
    if (t.shape.join() !== shape.join()) return `tensor ${name} has shape [${t.shape}], expected [${shape}]`;
    if (!t.data.every(Number.isFinite)) return `tensor ${name} holds NaN or infinite values`;
  }
  return null;
}

/**
 * `MlpOps` in plain TypeScript (float32 storage, float64 accumulation). Each op writes into the
 * buffer of its call slot, allocated on first use and reused after `reset()`: a forward pass of
 * a fixed shape allocates nothing once warm. Results are valid until the next `reset()`.
 */
export class PlainOps implements MlpOps<Tensor> {
  private slots: Tensor[] = [];
  private next = 0;

  constructor(private readonly weights: Weights) {}

  /** Starts a pass: the buffers of the previous one are reused. */
  reset(): void {
    this.next = 0;
  }

  weight(name: string): Tensor {
    const t = this.weights.get(name);
    if (!t) throw new Error(`MLP forward asked for unknown weight ${name}`);
    return t;
  }

  linear(x: Tensor, w: Tensor, bias?: Tensor): Tensor {
    const [out, inp] = w.shape, rows = x.data.length / inp;
    const y = this.slot(rows, out); // [rows, out]
    const xd = x.data, wd = w.data, yd = y.data;
    for (let r = 0; r < rows; r++) {
      const xo = r * inp;
      for (let o = 0; o < out; o++) {
        // Four independent accumulators: the dot product is latency-bound otherwise (~25% here).
        let s0 = 0, s1 = 0, s2 = 0, s3 = 0, i = 0;
        const wo = o * inp;
        for (; i + 3 < inp; i += 4) {
          s0 += xd[xo + i] * wd[wo + i];
          s1 += xd[xo + i + 1] * wd[wo + i + 1];
          s2 += xd[xo + i + 2] * wd[wo + i + 2];
          s3 += xd[xo + i + 3] * wd[wo + i + 3];
        }
        for (; i < inp; i++) s0 += xd[xo + i] * wd[wo + i];
        yd[r * out + o] = (bias ? bias.data[o] : 0) + (s0 + s1) + (s2 + s3);
      }
    }
    return y;
  }

  silu(x: Tensor): Tensor {
    const y = this.slot(x.shape[0], x.shape[1]);
    for (let i = 0; i < x.data.length; i++) y.data[i] = x.data[i] / (1 + Math.exp(-x.data[i]));
    return y;
  }

  private slot(rows: number, width: number): Tensor {
    let t = this.slots[this.next];
    if (!t || t.shape[0] !== rows || t.shape[1] !== width) t = this.slots[this.next] = tensor([rows, width]);
    this.next++;
    return t;
  }
}
