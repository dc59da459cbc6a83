/**
 * Draft-head training steps on onnxruntime: the packed batch of train-draft laid out as B
 * windows of W rows (padding rows weigh 0), run through the draft training graph (loss +
 * gradients) or its validation twin (feature loss + top-3 ids). With `ttt` = K > 1 the training
 * graph unrolls K chain steps (training/ttt.ts) and each step j >= 1 gets its rows' shifted
 * tokens, positions, targets and weights; validation stays step 0's.
 */
import type { ModelConfig } from '../../src/model/config.ts';
import { draftToTarget, type HeadConfig } from '../../src/model/draft-head.ts';
import type { Weights } from '../../src/model/weights.ts';
import { f32, i64 } from '../../src/runtime/ort.ts';
import type { PackedBatch } from '../dataset.ts';
import { MASK_NEG } from '../../src/onnx/ops.ts';
import { draftTrainGraph, GradSession, type DraftLossWeights } from './graphs.ts';
import { chainRow, chainRows } from '../ttt.ts';

export class OrtDraftSteps {
  private readonly N: number;
  /** Reused feed buffers [B*W, ...]. */
  private readonly buf: { feat: Float32Array; tgt: Float32Array; ids: BigInt64Array; pos: BigInt64Array; rw: Float32Array; mask: Float32Array };
  /** Reused feeds of chain steps 1..K-1 (`ttt`). */
  private readonly chain: { tgt: Float32Array; ids: BigInt64Array; pos: BigInt64Array; rw: Float32Array }[];

  private constructor(private readonly train: GradSession, private readonly val: GradSession, private readonly d: number, readonly B: number, readonly W: number, private readonly toTarget: Int32Array | null, ttt: number) {
    this.N = B * W;
    const mask = new Float32Array(W * W); // [W, W] causal
    for (let i = 0; i < W; i++) for (let j = i + 1; j < W; j++) mask[i * W + j] = MASK_NEG;
    this.buf = { feat: new Float32Array(this.N * d), tgt: new Float32Array(this.N * d), ids: new BigInt64Array(this.N), pos: new BigInt64Array(this.N), rw: new Float32Array(this.N), mask };
    this.chain = Array.from({ length: ttt - 1 }, () => ({ tgt: new Float32Array(this.N * d), ids: new BigInt64Array(this.N), pos: new BigInt64Array(this.N), rw: new Float32Array(this.N) }));
  }

  /** `vocab`: the head's draft-vocabulary tensors (empty for the full vocabulary); `ttt`: chain steps unrolled in training (training/ttt.ts). */
  static async create(target: { config: ModelConfig; weights: Weights }, head: HeadConfig, B: number, W: number, w: DraftLossWeights, threads?: number, vocab: Weights = new Map(), ttt = 1): Promise<OrtDraftSteps> {
    const train = await GradSession.create(draftTrainGraph(target, head, B, W, w, true, vocab, ttt), threads);
    const val = await GradSession.create(draftTrainGraph(target, head, B, W, w, false, vocab), threads);
    return new OrtDraftSteps(train, val, target.config.dim, B, W, draftToTarget(head, vocab), ttt);
  }

  /** Scatters the packed rows into the padded [B, W] layout; returns each row's slot. */
  private layout(b: PackedBatch, features: Float32Array): Int32Array {
    const { feat, tgt, ids, pos, rw } = this.buf, d = this.d;
    feat.fill(0), tgt.fill(0), ids.fill(0n), pos.fill(0n), rw.fill(0);
    const slot = new Int32Array(b.n);
    for (let i = 0, k = 0; i < b.n; i++) {
      k = i > 0 && b.segment[i] === b.segment[i - 1] ? k + 1 : 0;
      if (b.segment[i] >= this.B || k >= this.W) throw new Error(`batch does not fit ${this.B} windows of ${this.W} rows`);
      const s = (slot[i] = b.segment[i] * this.W + k);
      feat.set(features.subarray(i * d, (i + 1) * d), s * d);
      tgt.set(b.targetFeatures.subarray(i * d, (i + 1) * d), s * d);
      ids[s] = BigInt(b.tokens[i]);
      pos[s] = BigInt(b.positions[i]);
      rw[s] = 1 / b.n;
    }
    return slot;
  }

  /** Step j's rows (j = 1..K-1): row t's token, position and targets are row t+j's of step 0, weight 1/(rows that have them). */
  private layoutChain(b: PackedBatch, slot: Int32Array): void {
    const d = this.d;
    this.chain.forEach((c, k) => {
      const j = k + 1, w = 1 / Math.max(1, chainRows(b, j));
      c.tgt.fill(0), c.ids.fill(0n), c.pos.fill(0n), c.rw.fill(0);
      for (let i = 0; i < b.n; i++) {
        const r = chainRow(b, i, j), s = slot[i];
        if (r < 0) continue;
        c.tgt.set(b.targetFeatures.subarray(r * d, (r + 1) * d), s * d);
        c.ids[s] = BigInt(b.tokens[r]);
        c.pos[s] = BigInt(b.positions[r]);
        c.rw[s] = w;
      }
    });
  }

  private feeds(withChain = false): Record<string, ReturnType<typeof f32>> {
    const { feat, tgt, ids, pos, rw, mask } = this.buf, N = this.N, d = this.d;
    const feeds = { features: f32(feat, [N, d]), targetFeatures: f32(tgt, [N, d]), ids: i64(ids, [N]), positions: i64(pos, [N]), mask: f32(mask, [this.W, this.W]), rowWeight: f32(rw, [N]) };
    if (withChain)
      this.chain.forEach((c, k) => Object.assign(feeds, { [`ids.${k + 1}`]: i64(c.ids, [N]), [`positions.${k + 1}`]: i64(c.pos, [N]), [`targetFeatures.${k + 1}`]: f32(c.tgt, [N, d]), [`rowWeight.${k + 1}`]: f32(c.rw, [N]) }));
    return feeds;
  }

  /** Loss and gradients of the head `params` on batch `b` with (noised) input features. */
  async step(params: Weights, b: PackedBatch, features: Float32Array): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
    this.layoutChain(b, this.layout(b, features));
    const { loss, grads } = await this.train.run(params, this.feeds(true));
    return { loss, grads };
  }

  /** Top-3 draft ids (target ids) per packed row [n, k] and the mean feature loss. */
  async evaluate(params: Weights, b: PackedBatch): Promise<{ top: Int32Array; k: number; featureLoss: number }> {
    const slot = this.layout(b, b.inputFeatures);
    const { out } = await this.val.run(params, this.feeds());
    const all = out.top3.data as BigInt64Array, k = all.length / this.N;
    const top = new Int32Array(b.n * k);
    // Draft ids of a reduced vocabulary -> target ids.
    for (let i = 0; i < b.n; i++) for (let j = 0; j < k; j++) top[i * k + j] = this.toTarget ? this.toTarget[Number(all[slot[i] * k + j])] : Number(all[slot[i] * k + j]);
    return { top, k, featureLoss: (out.featureLoss.data as Float32Array)[0] };
  }

  /** Milliseconds inside onnxruntime so far (training and validation). */
  get msInRun(): number {
    return this.train.msInRun + this.val.msInRun;
  }

  async dispose(): Promise<void> {
    await this.train.dispose();
    await this.val.dispose();
  }
}
