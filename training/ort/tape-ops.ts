/**
 * The training rendering of the model definition for onnxruntime: `Ops<Val>` over the autodiff
 * tape, so the forward graph the trainers differentiate is src/model/definition.ts itself.
 *
 * Rows are B equal-length sequences of T rows stacked as [B*T, width]. Attention is decomposed
 * into standard ops (reshape, transpose, batched matmul, additive mask, softmax) per sequence, with
 * one [T, P + T] mask shared by every sequence (causal, or a tree mask; P cached rows); grouped K/V heads are never
 * repeated: the query heads of one K/V group sit side by side in one matmul.
 */
import type { HeadLayout, Ops, PastKV } from '../../src/model/definition.ts';
import { ropeCosSin, ropeInvFreq, type RopeSpec } from '../../src/model/rope.ts';
import type { Tensor } from '../../src/model/weights.ts';
import type { Tape, Val } from './tape.ts';

/** Resolves a weight name to a tape value (a parameter input or a frozen initializer). */
export type ValLookup = (name: string) => Val;

export class TapeOps implements Ops<Val> {
  private ropeTables = new Map<string, { tag: number; cos: string; sin: string; data: Float32Array; negSin?: string }>();
  private batchedPositions = new Map<string, string>();

  /**
   * @param batch B sequences of `rows / B` rows each.
   * @param maxPositions RoPE tables cover positions [0, maxPositions).
   */
  constructor(readonly tape: Tape, private readonly lookup: ValLookup, readonly batch: number, private readonly maxPositions: number) {}

  weight(name: string): Val {
    return this.lookup(name);
  }

  embed(table: Val, ids: Val): Val {
    return this.tape.gather(table, ids);
  }

  linear(x: Val, w: Val, bias?: Val): Val {
    return this.tape.linear(x, w, bias);
  }

  add(a: Val, b: Val): Val {
    return this.tape.add(a, b);
  }

  mul(a: Val, b: Val): Val {
    return this.tape.mul(a, b);
  }

  silu(x: Val): Val {
    return this.tape.silu(x);
  }

  rmsNorm(x: Val, w: Val, eps: number): Val {
    return this.tape.rmsNorm(x, w, eps);
  }

  headRmsNorm(x: Val, w: Val, nHeads: number, eps: number): Val {
    const t = this.tape, [N, width] = x.shape;
    return t.reshape(t.rmsNorm(t.reshape(x, [N, nHeads, width / nHeads]), w, eps), [N, width]);
  }

  concat(a: Val, b: Val): Val {
    return this.tape.concat(a, b);
  }

  rope(x: Val, positions: Val, nHeads: number, headDim: number, spec: RopeSpec): Val {
    const [cos, sin] = this.ropeCache(headDim, spec, false), g = this.tape.g, B = this.batch;
    let p = this.batchedPositions.get(positions.name);
    if (!p) this.batchedPositions.set(positions.name, (p = g.op('Reshape', [positions.name, g.ints([B, positions.shape[0] / B])]))); // [B, T]
    return this.tape.rope(x, p, B, cos, sin, () => this.ropeCache(headDim, spec, true)[2], nHeads);
  }

  /**
   * cos and sin tables [maxPositions, hd/2] of p * invFreq_i, computed in float64, and
   * (`negated`, for the backward pass only) -sin.
   */
  private ropeCache(headDim: number, spec: RopeSpec, negated: boolean): string[] {
    const invFreq = ropeInvFreq(headDim, spec);
    const key = `${headDim}/${invFreq.join(',')}`;
    let r = this.ropeTables.get(key);
    if (!r) {
      const tag = this.ropeTables.size;
      const { cos, sin } = ropeCosSin(invFreq, this.maxPositions); // [maxPos, hd/2]
      this.ropeTables.set(key, (r = { tag, cos: this.table('cos', headDim, tag, cos), sin: this.table('sin', headDim, tag, sin), data: sin }));
    }
    if (negated && !r.negSin) r.negSin = this.table('negsin', headDim, r.tag, r.data.map((v) => -v));
    return [r.cos, r.sin, r.negSin ?? ''];
  }

  private table(name: string, headDim: number, tag: number, data: Float32Array): string {
    return this.tape.g.initializer(`rope_${name}_${headDim}_${tag}`, { dtype: 'float32', dims: [this.maxPositions, headDim / 2], data });
  }

  /**
   * Per sequence, the rows of `a` [B*Pa, w] then those of `b` [B*Pb, w] -> [B*(Pa+Pb), w]: how
   * cached keys and values sit before a pass's own rows (the training-time test's chain steps).
   */
  concatRows(a: Val, b: Val): Val {
    const t = this.tape, B = this.batch, w = a.shape[1], Pa = a.shape[0] / B, Pb = b.shape[0] / B;
    return t.reshape(t.concat(t.reshape(a, [B, Pa * w]), t.reshape(b, [B, Pb * w])), [B * (Pa + Pb), w]);
  }

  /** `past` (P rows per sequence, [B*P, nKv*hd]) comes before the T new rows; mask [T, P + T] is shared by every sequence. */
  attention(q: Val, k: Val, v: Val, past: PastKV<Val> | null, mask: Val, l: HeadLayout): Val {
    const t = this.tape, B = this.batch, T = q.shape[0] / B, hd = l.headDim, nKv = l.nKvHeads, g = l.nHeads / nKv;
    const keys = past ? this.concatRows(past.keys, k) : k, values = past ? this.concatRows(past.values, v) : v;
    const S = keys.shape[0] / B;
    const qs = t.transpose(t.reshape(t.scale(q, 1 / Math.sqrt(hd)), [B, T, nKv, g, hd]), [0, 2, 3, 1, 4]); // [B, nKv, g, T, hd]
    const kT = t.transpose(t.reshape(keys, [B, S, nKv, hd]), [0, 2, 3, 1]); // [B, nKv, hd, S]
    const vh = t.transpose(t.reshape(values, [B, S, nKv, hd]), [0, 2, 1, 3]); // [B, nKv, S, hd]
    const scores = t.reshape(t.matmul(t.reshape(qs, [B, nKv, g * T, hd]), kT), [B, nKv, g, T, S]);
    const probs = t.reshape(t.softmax(t.addConst(scores, mask)), [B, nKv, g * T, S]); // mask [T, S] broadcasts
    const out = t.reshape(t.matmul(probs, vh), [B, nKv, g, T, hd]);
    return t.reshape(t.transpose(out, [0, 3, 1, 2, 4]), [B * T, l.nHeads * hd]);
  }
}

/** A frozen weight as an initializer of the tape's graph. */
export function frozen(tape: Tape, name: string, t: Tensor): Val {
  tape.g.initializer(name, { dtype: 'float32', dims: t.shape, data: t.data });
  return tape.constant(name, t.shape);
}
