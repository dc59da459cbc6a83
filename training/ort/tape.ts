/**
 * Reverse-mode autodiff that emits ONNX: a tape of primitive ops (micrograd's shape, tinygrad's
 * discipline). Each primitive appends its forward nodes to a GraphBuilder at once and records
 * its inputs with its vector-Jacobian product, a few lines next to it. `backward` walks the tape
 * in reverse (recording order is a topological order) and emits the gradient nodes into the
 * same graph, so one ONNX graph computes loss and gradients in one run.
 *
 * Shapes are static (known when the graph is built): the trainers fix batch and window and pad.
 * Only values that depend on a parameter are recorded; everything else (masks, frozen weights,
 * teacher distributions) is plain forward graph with no backward cost.
 */
import type { GraphBuilder, DType } from '../../src/onnx/graph.ts';

/** A value of the graph: ONNX name, static shape, and whether it depends on a parameter. */
export interface Val {
  readonly name: string;
  readonly shape: readonly number[];
  readonly grad: boolean;
}

/** Per input: a function emitting that input's gradient given the output's (called only when the input needs one). */
type Vjp = (gy: string) => ((() => string) | null)[];

interface Entry {
  out: Val;
  inputs: Val[];
  vjp: Vjp;
}

const size = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

export class Tape {
  private entries: Entry[] = [];
  /** Parameters in declaration order (the graph's gradient outputs follow it). */
  readonly params: Val[] = [];

  constructor(readonly g: GraphBuilder) {}

  /** A trainable graph input (float32). */
  param(name: string, shape: number[]): Val {
    const v = { name: this.g.input(name, 'float32', shape), shape, grad: true };
    this.params.push(v);
    return v;
  }

  /** A graph input with no gradient (data). */
  input(name: string, dtype: DType, shape: number[]): Val {
    return { name: this.g.input(name, dtype, shape), shape, grad: false };
  }

  /** A value already in the graph (initializer or constant) with no gradient. */
  constant(name: string, shape: readonly number[]): Val {
    return { name, shape, grad: false };
  }

  private rec(name: string, shape: readonly number[], inputs: Val[], vjp: Vjp): Val {
    const v: Val = { name, shape, grad: inputs.some((i) => i.grad) };
    if (v.grad) this.entries.push({ out: v, inputs, vjp });
    return v;
  }

  private op(type: string, inputs: string[], attrs: Record<string, import('../../src/onnx/graph.ts').Attr> = {}): string {
    return this.g.op(type, inputs, attrs);
  }

  // ---- primitives: forward, then the VJP per input ----

  /** table [V, w] rows at ids [N] (int64) -> [N, w]. d table = scatter-add of gy rows. */
  gather(table: Val, ids: Val): Val {
    const [V, w] = table.shape, N = ids.shape[0];
    return this.rec(this.op('Gather', [table.name, ids.name], { axis: 0 }), [N, w], [table, ids], (gy) => [
      () => {
        const zeros = this.op('ConstantOfShape', [this.g.ints([V, w])], { value: { tensor: { dtype: 'float32', dims: [1], data: new Float32Array(1) } } });
        return this.op('ScatterND', [zeros, this.op('Unsqueeze', [ids.name, this.g.ints([-1])]), gy], { reduction: 'add' });
      },
      null,
    ]);
  }

  /** x [N, in] @ w^T + b, w [out, in]. dx = gy w, dw = gy^T x, db = sum of gy rows. */
  linear(x: Val, w: Val, b?: Val): Val {
    const y = this.op('Gemm', b ? [x.name, w.name, b.name] : [x.name, w.name], { transB: 1 });
    const ins = b ? [x, w, b] : [x, w];
    return this.rec(y, [x.shape[0], w.shape[0]], ins, (gy) => [
      () => this.op('MatMul', [gy, w.name]),
      () => this.op('Gemm', [gy, x.name], { transA: 1 }),
      () => this.op('ReduceSum', [gy, this.g.ints([0])], { keepdims: 0 }),
    ]);
  }

  /** Batched a @ b over equal leading axes. da = gy b^T, db = a^T gy. */
  matmul(a: Val, b: Val): Val {
    const r = a.shape.length, perm = [...Array(r - 2).keys(), r - 1, r - 2];
    const shape = [...a.shape.slice(0, -1), b.shape[r - 1]];
    return this.rec(this.op('MatMul', [a.name, b.name]), shape, [a, b], (gy) => [
      () => this.op('MatMul', [gy, this.op('Transpose', [b.name], { perm })]),
      () => this.op('MatMul', [this.op('Transpose', [a.name], { perm }), gy]),
    ]);
  }

  /** Same shapes. */
  add(a: Val, b: Val): Val {
    return this.rec(this.op('Add', [a.name, b.name]), a.shape, [a, b], (gy) => [() => gy, () => gy]);
  }

  /** Same shapes. */
  sub(a: Val, b: Val): Val {
    return this.rec(this.op('Sub', [a.name, b.name]), a.shape, [a, b], (gy) => [() => gy, () => this.op('Neg', [gy])]);
  }

  /** Same shapes (b may also be a broadcastable constant without gradient). */
  mul(a: Val, b: Val): Val {
    return this.rec(this.op('Mul', [a.name, b.name]), a.shape, [a, b], (gy) => [() => this.op('Mul', [gy, b.name]), () => this.op('Mul', [gy, a.name])]);
  }

  /** x + m with m a constant broadcastable to x (an additive mask). */
  addConst(x: Val, m: Val): Val {
    if (m.grad) throw new Error('addConst: the added value must not need a gradient');
    return this.rec(this.op('Add', [x.name, m.name]), x.shape, [x, m], (gy) => [() => gy, null]);
  }

  /** c x for a number c. */
  scale(x: Val, c: number): Val {
    const s = this.g.scalar(c);
    return this.rec(this.op('Mul', [x.name, s]), x.shape, [x], (gy) => [() => this.op('Mul', [gy, s])]);
  }

  /** x sigmoid(x). dy/dx = s + y (1 - s). */
  silu(x: Val): Val {
    const s = this.op('Sigmoid', [x.name]), y = this.op('Mul', [x.name, s]);
    return this.rec(y, x.shape, [x], (gy) => [() => this.op('Mul', [gy, this.op('Add', [s, this.op('Mul', [y, this.op('Sub', [this.g.scalar(1), s])])])])]);
  }

  /** log(1 + exp(x)). dy/dx = sigmoid(x). */
  softplus(x: Val): Val {
    return this.rec(this.op('Softplus', [x.name]), x.shape, [x], (gy) => [() => this.op('Mul', [gy, this.op('Sigmoid', [x.name])])]);
  }

  /**
   * RMSNorm over the last axis: n = x r, r = 1/sqrt(mean(x^2) + eps), y = n w.
   * dw = sum over rows of gy n; dx = r (dn - n mean(dn n)) with dn = gy w.
   */
  rmsNorm(x: Val, w: Val, eps: number): Val {
    const last = this.g.ints([-1]);
    const ms = this.op('ReduceMean', [this.op('Mul', [x.name, x.name]), last], { keepdims: 1 });
    const r = this.op('Reciprocal', [this.op('Sqrt', [this.op('Add', [ms, this.g.scalar(eps)])])]);
    const n = this.op('Mul', [x.name, r]);
    return this.rec(this.op('Mul', [n, w.name]), x.shape, [x, w], (gy) => [
      () => {
        const dn = this.op('Mul', [gy, w.name]);
        const m = this.op('ReduceMean', [this.op('Mul', [dn, n]), last], { keepdims: 1 });
        return this.op('Mul', [r, this.op('Sub', [dn, this.op('Mul', [n, m])])]);
      },
      () => this.op('ReduceSum', [this.op('Mul', [gy, n]), this.g.ints([...Array(x.shape.length - 1).keys()])], { keepdims: 0 }),
    ]);
  }

  /** [.., a] and [.., b] -> [.., a + b]. The gradient splits. */
  concat(a: Val, b: Val): Val {
    const wa = a.shape.at(-1)!, wb = b.shape.at(-1)!;
    let parts: string[] | null = null;
    const split = (gy: string) => (parts ??= this.g.node('Split', [gy, this.g.ints([wa, wb])], { axis: -1 }, { outputs: 2 }));
    return this.rec(this.op('Concat', [a.name, b.name], { axis: -1 }), [...a.shape.slice(0, -1), wa + wb], [a, b], (gy) => [() => split(gy)[0], () => split(gy)[1]]);
  }

  reshape(x: Val, shape: number[]): Val {
    if (size(shape) !== size(x.shape)) throw new Error(`reshape [${x.shape}] -> [${shape}]`);
    return this.rec(this.op('Reshape', [x.name, this.g.ints(shape)]), shape, [x], (gy) => [() => this.op('Reshape', [gy, this.g.ints([...x.shape])])]);
  }

  transpose(x: Val, perm: number[]): Val {
    const inv = perm.map((_, i) => perm.indexOf(i));
    return this.rec(this.op('Transpose', [x.name], { perm }), perm.map((p) => x.shape[p]), [x], (gy) => [() => this.op('Transpose', [gy], { perm: inv })]);
  }

  /**
   * RoPE on rows x [B*T, nH*hd] at positions [B, T] (int64) with tables [maxPos, hd/2]: ONNX
   * RotaryEmbedding over [B, T, width]. The VJP of a rotation is the rotation by minus the
   * angle: the same kernel with the sine table negated (`negSin`, made on first use).
   */
  rope(x: Val, positions: string, B: number, cos: string, sin: string, negSin: () => string, nHeads: number): Val {
    const [N, w] = x.shape;
    const rot = (v: string, s: string) =>
      this.op('Reshape', [this.op('RotaryEmbedding', [this.op('Reshape', [v, this.g.ints([B, N / B, w])]), cos, s, positions], { interleaved: 0, num_heads: nHeads }), this.g.ints([N, w])]);
    return this.rec(rot(x.name, sin), x.shape, [x], (gy) => [() => rot(gy, negSin())]);
  }

  /** Softmax over the last axis. dx = y (gy - sum(gy y)). */
  softmax(x: Val): Val {
    const y = this.op('Softmax', [x.name], { axis: -1 });
    return this.rec(y, x.shape, [x], (gy) => [
      () => this.op('Mul', [y, this.op('Sub', [gy, this.op('ReduceSum', [this.op('Mul', [gy, y]), this.g.ints([-1])], { keepdims: 1 })])]),
    ]);
  }

  /** log softmax over the last axis. dx = gy - exp(y) sum(gy). */
  logSoftmax(x: Val): Val {
    const y = this.op('LogSoftmax', [x.name], { axis: -1 });
    return this.rec(y, x.shape, [x], (gy) => [
      () => this.op('Sub', [gy, this.op('Mul', [this.op('Exp', [y]), this.op('ReduceSum', [gy, this.g.ints([-1])], { keepdims: 1 })])]),
    ]);
  }

  /** Sum over the last axis: [.., w] -> [..]. The gradient broadcasts back. */
  sumLast(x: Val): Val {
    return this.rec(this.op('ReduceSum', [x.name, this.g.ints([-1])], { keepdims: 0 }), x.shape.slice(0, -1), [x], (gy) => [
      () => this.op('Expand', [this.op('Unsqueeze', [gy, this.g.ints([-1])]), this.g.ints([...x.shape])]),
    ]);
  }

  /** sum(x w) over all elements, w a constant of x's shape (row weights) -> scalar. dx = gy w. */
  weightedSum(x: Val, w: Val): Val {
    if (w.grad) throw new Error('weightedSum: the weights must not need a gradient');
    return this.rec(this.op('ReduceSum', [this.op('Mul', [x.name, w.name])], { keepdims: 0 }), [], [x, w], (gy) => [() => this.op('Mul', [gy, w.name]), null]);
  }

  /** Huber (beta 1), elementwise: 0.5 a^2 for |a| < 1, |a| - 0.5 beyond. d/da = clip(a, -1, 1). */
  smoothL1(a: Val): Val {
    const abs = this.op('Abs', [a.name]), q = this.op('Min', [abs, this.g.scalar(1)]);
    const y = this.op('Add', [this.op('Mul', [this.op('Mul', [q, q]), this.g.scalar(0.5)]), this.op('Sub', [abs, q])]);
    return this.rec(y, a.shape, [a], (gy) => [() => this.op('Mul', [gy, this.op('Clip', [a.name, this.g.scalar(-1), this.g.scalar(1)])])]);
  }

  /**
   * Emits the gradients of scalar `loss` w.r.t. every parameter; returns them by parameter
   * name (a parameter the loss does not reach gets zeros).
   */
  backward(loss: Val): Map<string, string> {
    if (loss.shape.length !== 0) throw new Error('backward: the loss must be a scalar');
    const grads = new Map<string, string>([[loss.name, this.g.scalar(1)]]);
    for (let i = this.entries.length - 1; i >= 0; i--) {
      const e = this.entries[i], gy = grads.get(e.out.name);
      if (!gy) continue;
      const fs = e.vjp(gy);
      e.inputs.forEach((inp, k) => {
        if (!inp.grad) return;
        const gi = fs[k]!();
        const prev = grads.get(inp.name);
        grads.set(inp.name, prev ? this.op('Add', [prev, gi]) : gi);
      });
    }
    return new Map(this.params.map((p) => [p.name, grads.get(p.name) ?? this.op('ConstantOfShape', [this.g.ints([...p.shape])])]));
  }
}
