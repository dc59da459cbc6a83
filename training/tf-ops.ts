/**
 * The TensorFlow.js rendering of the model definition (src/model/definition.ts): `Ops<tf.Tensor>`
 * evaluated eagerly, so training runs the very definition the ONNX graphs are built from and
 * tfjs autograd differentiates it. Rows are a rank-2 [T, width] tensor, no batch axis (training
 * packs several windows into one sequence with a block-diagonal mask instead).
 *
 * Create one `TfOps` per forward pass (inside the caller's tidy / gradient function): it caches
 * the RoPE tables of the pass's positions, which live only as long as that scope.
 */
import type { Tensor, Tensor1D, Tensor2D } from '@tensorflow/tfjs';
import type { HeadLayout, Ops, PastKV } from '../src/model/definition.ts';
import { ropeCosSin, ropeInvFreq, type RopeSpec } from '../src/model/rope.ts';
import type { Tf } from './tf-backend.ts';

/** Looks a weight up by checkpoint name (frozen tensors or trainable variables alike). */
export type WeightLookup = (name: string) => Tensor;

export class TfOps implements Ops<Tensor> {
  private readonly ropeTables = new Map<string, { cos: Tensor; sin: Tensor }>();

  constructor(private readonly tf: Tf, private readonly lookup: WeightLookup) {}

  weight(name: string): Tensor {
    return this.lookup(name);
  }

  /** A gather: its gradient w.r.t. the table is never taken (embeddings are frozen), which keeps wasm usable. */
  embed(table: Tensor, ids: Tensor): Tensor {
    return this.tf.gather(table, ids);
  }

  linear(x: Tensor, w: Tensor, bias?: Tensor): Tensor {
    const y = this.tf.matMul(x as Tensor2D, w as Tensor2D, false, true); // [T, out]
    return bias ? this.tf.add(y, bias) : y;
  }

  add(a: Tensor, b: Tensor): Tensor {
    return this.tf.add(a, b);
  }

  mul(a: Tensor, b: Tensor): Tensor {
    return this.tf.mul(a, b);
  }

  silu(x: Tensor): Tensor {
    return this.tf.mul(x, this.tf.sigmoid(x));
  }

  rmsNorm(x: Tensor, w: Tensor, eps: number): Tensor {
    const tf = this.tf;
    const ms = tf.mean(tf.square(x), -1, true); // [T, 1]
    return tf.mul(tf.mul(x, tf.rsqrt(tf.add(ms, eps))), w);
  }

  headRmsNorm(x: Tensor, w: Tensor, nHeads: number, eps: number): Tensor {
    const T = x.shape[0];
    return this.tf.reshape(this.rmsNorm(this.tf.reshape(x, [T, nHeads, -1]), w, eps), [T, -1]);
  }

  concat(a: Tensor, b: Tensor): Tensor {
    return this.tf.concat([a, b], -1);
  }

  rope(x: Tensor, positions: Tensor, nHeads: number, headDim: number, spec: RopeSpec): Tensor {
    const tf = this.tf, T = x.shape[0];
    const { cos, sin } = this.ropeTable(positions, headDim, spec); // [T, 1, hd/2]
    const xh = tf.reshape(x, [T, nHeads, headDim]);
    const [x1, x2] = tf.split(xh, 2, -1); // [T, nH, hd/2] each
    const out = tf.concat([tf.sub(tf.mul(x1, cos), tf.mul(x2, sin)), tf.add(tf.mul(x2, cos), tf.mul(x1, sin))], -1);
    return tf.reshape(out, [T, nHeads * headDim]);
  }

  /** cos/sin of pos * invFreq_i, computed in float64 on the JS side (positions are data, not parameters). */
  private ropeTable(positions: Tensor, headDim: number, spec: RopeSpec): { cos: Tensor; sin: Tensor } {
    const invFreq = ropeInvFreq(headDim, spec);
    const key = `${positions.id}/${headDim}/${invFreq.join(',')}`;
    let t = this.ropeTables.get(key);
    if (!t) {
      const pos = positions.dataSync(), T = pos.length, half = headDim / 2;
      const { cos, sin } = ropeCosSin(invFreq, pos); // [T, hd/2]
      t = { cos: this.tf.tensor3d(cos, [T, 1, half]), sin: this.tf.tensor3d(sin, [T, 1, half]) };
      this.ropeTables.set(key, t);
    }
    return t;
  }

  attention(q: Tensor, k: Tensor, v: Tensor, past: PastKV<Tensor> | null, mask: Tensor, l: HeadLayout): Tensor {
    const tf = this.tf, T = q.shape[0], hd = l.headDim, g = l.nHeads / l.nKvHeads;
    const keys = past ? tf.concat([past.keys, k], 0) : k; // [S = P + T, nKv*hd]
    const vals = past ? tf.concat([past.values, v], 0) : v;
    const S = keys.shape[0];
    const heads = (x: Tensor, n: number, rows: number) => tf.transpose(tf.reshape(x, [rows, n, hd]), [1, 0, 2]); // [n, rows, hd]
    // Query heads of one K/V group side by side: [nKv, g*T, hd], so K/V are never repeated.
    const qg = tf.reshape(heads(tf.mul(q, 1 / Math.sqrt(hd)), l.nHeads, T), [l.nKvHeads, g * T, hd]);
    const scores = tf.reshape(tf.matMul(qg, heads(keys, l.nKvHeads, S), false, true), [l.nKvHeads, g, T, S]);
    const probs = tf.reshape(tf.softmax(tf.add(scores, mask)), [l.nKvHeads, g * T, S]);
    const out = tf.reshape(tf.matMul(probs, heads(vals, l.nKvHeads, S)), [l.nHeads, T, hd]);
    return tf.reshape(tf.transpose(out, [1, 0, 2]), [T, l.nHeads * hd]);
  }
}

/** An additive mask [T, S] from a visibility predicate: 0 where row i sees key j, -1e9 elsewhere. */
export function additiveMask(tf: Tf, T: number, S: number, sees: (i: number, j: number) => boolean): Tensor2D {
  const m = new Float32Array(T * S); // [T, S]
  for (let i = 0; i < T; i++) for (let j = 0; j < S; j++) m[i * S + j] = sees(i, j) ? 0 : -1e9;
  return tf.tensor2d(m, [T, S]);
}

/** Integer ids/positions as a [T] int32 tensor. */
export function intTensor(tf: Tf, xs: ArrayLike<number>): Tensor1D {
  return tf.tensor1d(Int32Array.from(xs), 'int32');
}
