/**
 * LDLP / SpecDec++ head training steps on onnxruntime: chunks of up to N rows (padding rows weigh
 * 0) through the predictor training graph, or its loss-only twin.
 */
import type { MlpConfig } from '../../src/model/mlp.ts';
import type { Weights } from '../../src/model/weights.ts';
import { f32, i64 } from '../../src/runtime/ort.ts';
import { GradSession, predictorTrainGraph } from './graphs.ts';

export type PredictorObjective = 'classification' | 'regression' | 'bce';

export class OrtPredictorSteps {
  private readonly x: Float32Array;
  private readonly y: Float32Array;
  private readonly labels: BigInt64Array;
  private readonly rw: Float32Array;

  private constructor(private readonly train: GradSession, private readonly val: GradSession, private readonly mlp: MlpConfig, private readonly objective: PredictorObjective, readonly N: number) {
    this.x = new Float32Array(N * mlp.inputDim), this.y = new Float32Array(N), this.labels = new BigInt64Array(N), this.rw = new Float32Array(N);
  }

  static async create(mlp: MlpConfig, objective: PredictorObjective, N: number, threads?: number): Promise<OrtPredictorSteps> {
    return new OrtPredictorSteps(await GradSession.create(predictorTrainGraph(mlp, objective, N, true), threads), await GradSession.create(predictorTrainGraph(mlp, objective, N, false), threads), mlp, objective, N);
  }

  /** Feeds of rows x [n, in], y [n], rowWeight [n], n <= N (the rest padded). */
  private feeds(x: Float32Array, y: Float32Array, rw: Float32Array) {
    const n = y.length, N = this.N, w = this.mlp.inputDim;
    if (n > N) throw new Error(`${n} rows do not fit a predictor graph of ${N}`);
    this.x.fill(0), this.y.fill(0), this.labels.fill(0n), this.rw.fill(0);
    this.x.set(x), this.rw.set(rw);
    if (this.objective === 'classification') for (let i = 0; i < n; i++) this.labels[i] = BigInt(y[i]);
    else this.y.set(y);
    return {
      x: f32(this.x, [N, w]), rowWeight: f32(this.rw, [N]),
      ...(this.objective === 'classification' ? { labels: i64(this.labels, [N]) } : { y: f32(this.y, [N]) }),
    };
  }

  async step(params: Weights, x: Float32Array, y: Float32Array, rw: Float32Array): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
    const { loss, grads } = await this.train.run(params, this.feeds(x, y, rw));
    return { loss, grads };
  }

  /** The weighted loss of up to N rows. */
  async loss(params: Weights, x: Float32Array, y: Float32Array, rw: Float32Array): Promise<number> {
    return (await this.val.run(params, this.feeds(x, y, rw))).loss;
  }

  async dispose(): Promise<void> {
    await this.train.dispose();
    await this.val.dispose();
  }
}
