/**
 * Target training steps on onnxruntime: B windows of T tokens through the next-token training
 * graph (loss + gradients) or its loss-only twin for held-out evaluation (fewer windows are
 * padded: their rows weigh 0).
 */
import type { ModelConfig } from '../../src/model/config.ts';
import { MASK_NEG } from '../../src/onnx/ops.ts';
import type { Weights } from '../../src/model/weights.ts';
import { f32, i64 } from '../../src/runtime/ort.ts';
import { GradSession, targetTrainGraph } from './graphs.ts';

export class OrtTargetSteps {
  private readonly ids: BigInt64Array;
  private readonly labels: BigInt64Array;
  private readonly positions: BigInt64Array;
  private readonly rowWeight: Float32Array;
  private readonly mask: Float32Array;

  private constructor(private readonly train: GradSession, private readonly val: GradSession, readonly B: number, readonly T: number) {
    const N = B * T;
    this.ids = new BigInt64Array(N), this.labels = new BigInt64Array(N), this.rowWeight = new Float32Array(N);
    this.positions = BigInt64Array.from({ length: N }, (_, i) => BigInt(i % T));
    this.mask = new Float32Array(T * T); // [T, T] causal
    for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) this.mask[i * T + j] = MASK_NEG;
  }

  /** @param earlyExit the early-exit loss weight of training steps (evaluation is the final layer's loss alone). */
  static async create(cfg: ModelConfig, B: number, T: number, threads?: number, earlyExit = 0): Promise<OrtTargetSteps> {
    return new OrtTargetSteps(await GradSession.create(targetTrainGraph(cfg, B, T, true, earlyExit), threads), await GradSession.create(targetTrainGraph(cfg, B, T, false), threads), B, T);
  }

  /** Feeds for `ids`/`labels` [b*T], b <= B windows; the rest is padding. */
  private feeds(ids: Int32Array, labels: Int32Array) {
    const N = this.B * this.T, n = ids.length;
    if (n > N || n % this.T !== 0) throw new Error(`expected up to ${this.B} windows of ${this.T} tokens, got ${n} tokens`);
    this.ids.fill(0n), this.labels.fill(0n), this.rowWeight.fill(0);
    for (let i = 0; i < n; i++) (this.ids[i] = BigInt(ids[i])), (this.labels[i] = BigInt(labels[i])), (this.rowWeight[i] = 1 / n);
    return { ids: i64(this.ids, [N]), labels: i64(this.labels, [N]), positions: i64(this.positions, [N]), mask: f32(this.mask, [this.T, this.T]), rowWeight: f32(this.rowWeight, [N]) };
  }

  /** Mean next-token loss and its gradients at `params`. */
  async step(params: Weights, ids: Int32Array, labels: Int32Array): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
    const { loss, grads } = await this.train.run(params, this.feeds(ids, labels));
    return { loss, grads };
  }

  /** Mean next-token loss only. */
  async loss(params: Weights, ids: Int32Array, labels: Int32Array): Promise<number> {
    return (await this.val.run(params, this.feeds(ids, labels))).loss;
  }

  async dispose(): Promise<void> {
    await this.train.dispose();
    await this.val.dispose();
  }
}
