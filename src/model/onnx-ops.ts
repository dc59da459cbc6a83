/**
 * `Ops<string>` rendered as ONNX nodes: each call appends nodes to a GraphBuilder and returns
 * the output value's name. Opset 23, whose Attention (GQA, additive mask), RotaryEmbedding and
 * RMSNormalization are single kernels on ORT's CPU provider: a decoder layer is ~25 nodes, and
 * for small models ORT's per-node overhead (1-2 us) is most of a pass. Measured with ORT
 * profiling on a d=64, 5-layer model: 193 nodes per pass with the standard-op expansions of
 * attention and RoPE (opset 17), 147 now.
 *
 * Activations are 2-D [T, width] (batch 1 is implicit; Gemm wants 2-D) except rope outputs,
 * which keep the [1, T, width] form the Attention kernel and the present outputs want.
 */
import type { GraphBuilder } from '../onnx/graph.ts';
import type { HeadLayout, Ops, PastKV } from './definition.ts';
import { ropeInvFreq, type RopeSpec } from './rope.ts';
import type { Tensor } from './weights.ts';
import { blockOf, quantizeWeight, type WeightQuant } from './quantize.ts';

export interface OnnxOpsOptions {
  /**
   * Render Linear layers as com.microsoft MatMulNBits over blockwise-quantized weights (see
   * quantize.ts), where the input width allows; others stay fp32 Gemm. Default: none (fp32).
   */
  quantize?: WeightQuant & {
    /** MatMulNBits accuracy_level: 4 = int8 activations (fastest on CPUs with VNNI), 0 = fp32. Default 4. */
    accuracyLevel?: number;
  };
}

/** Additive mask value for hidden keys: exp() of it underflows to exactly 0, with no inf arithmetic. */
export const MASK_NEG = -1e30;

export class OnnxOps implements Ops<string> {
  private weights = new Map<string, string>();
  /** Per (headDim, frequencies): the RoPE cos and sin tables. */
  private ropeTables = new Map<string, [string, string]>();
  /** Per positions value: its [1, T] form. */
  private batched = new Map<string, string>();
  /** Values already in [1, T, width] form (rope outputs): row-wise ops broadcast over the extra axis. */
  private batchedValues = new Set<string>();

  /**
   * @param lookup finds a weight by checkpoint name.
   * @param maxPositions RoPE tables cover positions [0, maxPositions).
   */
  constructor(readonly g: GraphBuilder, private lookup: (name: string) => Tensor | undefined, private maxPositions: number, private opts: OnnxOpsOptions = {}) {}

  weight(name: string): string {
    const hit = this.weights.get(name);
    if (hit) return hit;
    const t = this.lookup(name);
    if (!t) throw new Error(`missing tensor ${name}`);
    this.g.initializer(name, { dtype: 'float32', dims: t.shape, data: t.data });
    this.weights.set(name, name);
    return name;
  }

  embed(table: string, ids: string): string {
    return this.g.op('Gather', [table, ids], { axis: 0 });
  }

  linear(x: string, w: string, bias?: string): string {
    const q = this.opts.quantize, t = q && this.lookup(w), block = t ? blockOf(t, q!) : 0;
    if (q && t && block > 0) {
      // The fp32 initializer `w` stays unread, so the graph builder leaves it out.
      const wq = { bits: q.bits, blockSize: block };
      const { n, k, packed, scales } = quantizeWeight(t, wq), blocks = k / block;
      const B = this.g.initializer(`${w}.q${q.bits}`, { dtype: 'uint8', dims: [n, blocks, (block * q.bits) / 8], data: packed });
      const S = this.g.initializer(`${w}.scales`, { dtype: 'float32', dims: [n * blocks], data: scales });
      const y = this.g.node('MatMulNBits', [x, B, S], { K: k, N: n, bits: q.bits, block_size: block, accuracy_level: q.accuracyLevel ?? 4 }, { domain: 'com.microsoft' })[0];
      return bias ? this.add(y, bias) : y;
    }
    // Gemm reads the [out, in] weight transposed in place, so no transposed copy is stored.
    return this.g.op('Gemm', bias ? [x, w, bias] : [x, w], { transB: 1 });
  }

  add(a: string, b: string): string {
    return this.g.op('Add', [a, b]);
  }

  mul(a: string, b: string): string {
    return this.g.op('Mul', [a, b]);
  }

  silu(x: string): string {
    return this.g.op('Mul', [x, this.g.op('Sigmoid', [x])]);
  }

  rmsNorm(x: string, w: string, eps: number): string {
    return this.g.op('RMSNormalization', [x, w], { axis: -1, epsilon: { float: eps } });
  }

  headRmsNorm(x: string, w: string, nHeads: number, eps: number): string {
    const g = this.g;
    const heads = g.op('Reshape', [x, g.ints([0, nHeads, -1])]); // [T, nH, hd]
    return g.op('Reshape', [this.rmsNorm(heads, w, eps), g.ints([0, -1])]);
  }

  concat(a: string, b: string): string {
    return this.g.op('Concat', [a, b], { axis: -1 });
  }

  rope(x: string, positions: string, nHeads: number, headDim: number, spec: RopeSpec): string {
    // ONNX RotaryEmbedding (opset 23; non-interleaved = rotate halves): one kernel instead of a
    // seven-node split/swap/multiply chain. Its output keeps the batch axis, [1, T, nH*hd],
    // which is the form `attention` and the present outputs want anyway.
    const g = this.g;
    const [cos, sin] = this.ropeCache(headDim, spec);
    const x3 = g.op('Unsqueeze', [x, g.ints([0])]); // [1, T, nH*hd]
    const y = g.op('RotaryEmbedding', [x3, cos, sin, this.batchPositions(positions)], { interleaved: 0, num_heads: nHeads });
    this.batchedValues.add(y);
    return y;
  }

  /** cos and sin tables [maxPositions, hd/2], computed in float64: angle p * invFreq_i. */
  private ropeCache(headDim: number, spec: RopeSpec): [string, string] {
    const invFreq = ropeInvFreq(headDim, spec);
    const key = `${headDim}/${invFreq.join(',')}`;
    const hit = this.ropeTables.get(key);
    if (hit) return hit;
    const half = headDim / 2, n = this.maxPositions;
    const cos = new Float32Array(n * half), sin = new Float32Array(n * half); // [maxPos, hd/2]
    for (let p = 0; p < n; p++) {
      for (let i = 0; i < half; i++) {
        const a = p * invFreq[i];
        cos[p * half + i] = Math.cos(a);
        sin[p * half + i] = Math.sin(a);
      }
    }
    const tag = this.ropeTables.size;
    const table = (name: string, data: Float32Array) => this.g.initializer(`rope_${name}_${headDim}_${tag}`, { dtype: 'float32', dims: [n, half], data });
    const r: [string, string] = [table('cos', cos), table('sin', sin)];
    this.ropeTables.set(key, r);
    return r;
  }

  /** x as [1, rows, width]: as it is if it already has that form, else reshaped. */
  batch(x: string, width: number): string {
    return this.batchedValues.has(x) ? x : this.g.op('Reshape', [x, this.g.ints([1, -1, width])]);
  }

  /** positions [T] -> [1, T], once per positions value. */
  private batchPositions(positions: string): string {
    let p = this.batched.get(positions);
    if (!p) this.batched.set(positions, (p = this.g.op('Unsqueeze', [positions, this.g.ints([0])])));
    return p;
  }

  attention(q: string, k: string, v: string, past: PastKV<string> | null, mask: string, { nHeads, nKvHeads, headDim }: HeadLayout): string {
    // ONNX Attention (opset 23): GQA without repeating K/V, scale 1/sqrt(hd), additive float
    // mask, all in one kernel. Its own past inputs are head-major, so the position-major cache
    // rows are concatenated with the new rows here instead ([1, P+T, nKv*hd]).
    const g = this.g, kvWidth = nKvHeads * headDim;
    const all = (fresh: string, old: string | undefined): string => (old ? g.op('Concat', [this.batch(old, kvWidth), this.batch(fresh, kvWidth)], { axis: 1 }) : this.batch(fresh, kvWidth));
    const y = g.op('Attention', [this.batch(q, nHeads * headDim), all(k, past?.keys), all(v, past?.values), mask], { q_num_heads: nHeads, kv_num_heads: nKvHeads }); // [1, T, nH*hd]
    return g.op('Reshape', [y, g.ints([-1, nHeads * headDim])]); // [T, nH*hd]
  }

  /**
   * The additive mask [T, P+T] from a bool matrix `tree` [T, W] over the LAST W keys (row i:
   * which of them token i sees; W = T for a tree of new tokens, W > T when earlier rows of the
   * cache are staged draft rows of other branches) and the past K input `pastRef` [1, P, ...]:
   * every new token sees the first P + T - W keys, so those columns are zeros made in-graph and
   * JS only ever fills [T, W].
   */
  treeMask(tree: string, pastRef: string): string {
    const g = this.g;
    const t = g.op('Shape', [tree], { start: 0, end: 1 }); // [1] = T
    const w = g.op('Shape', [tree], { start: 1, end: 2 }); // [1] = W
    const p = g.op('Shape', [pastRef], { start: 1, end: 2 }); // [1] = P
    const open = g.op('Sub', [g.op('Add', [p, t]), w]); // [1] = P + T - W
    const zero = { tensor: { dtype: 'float32' as const, dims: [1], data: new Float32Array([0]) } };
    const prefix = g.op('ConstantOfShape', [g.op('Concat', [t, open], { axis: 0 })], { value: zero }); // [T, P+T-W]
    const fresh = g.op('Where', [tree, g.scalar(0), g.scalar(MASK_NEG)]); // [T, W]
    return g.op('Concat', [prefix, fresh], { axis: 1 });
  }
}
