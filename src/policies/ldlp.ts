/**
 * AdaEAGLE's Lightweight Draft Length Predictor (Zhang et al., arXiv 2412.18910) as a length
 * policy: before each round a small MLP reads the last committed target feature and the root
 * token's embedding and predicts how many drafted tokens the target will accept; the round
 * drafts that many levels plus `offset`, with a tree budget proportional to the depth.
 *
 * `ldlp+threshold` (AdaEAGLE with a threshold strategy): the LDLP depth is a cap, and the
 * confidence threshold of ThresholdPolicy may stop drafting earlier inside it.
 *
 * The MLP runs as plain TypeScript (src/model/mlp.ts `PlainOps`, since `plan` is synchronous):
 * one forward per round, ~0.1-0.2 ms at d = 288 on this machine next to ~1 ms per draft pass
 * (test/ldlp.test.ts prints both; the round's draft passes are several).
 */
import type { Frontier } from '../../trees/index.ts';
import type { TreeShape } from '../../trees/index.ts';
import { UsageError } from '../errors.ts';
import { resolveOptions, type FlagSpec } from '../option-schema.ts';
import { loadPredictor, type Predictor, type PredictorKind } from '../io/predictor-io.ts';
import type { ModelConfig } from '../model/config.ts';
import { mlpForward, PlainOps } from '../model/mlp.ts';
import { denseRow } from '../model/quantize.ts';
import { EMBEDDING, type Tensor, type Weights } from '../model/weights.ts';
import type { LengthPolicy, RoundOutcome, RoundPlan, RoundState } from './policy.ts';

/** The target a predictor reads: its width and its token embedding table. */
export interface PredictorTarget {
  config: Pick<ModelConfig, 'dim'>;
  weights: Weights;
}

/**
 * Runs a predictor over rows [state (d), embedding of a token (d)]: fill rows with `setRow`,
 * then `run`. Buffers are sized once for `capacity` rows.
 */
export class PredictorRunner {
  readonly d: number;
  private readonly ops: PlainOps;
  private readonly x: Float32Array; // [capacity, 2d]
  private readonly views: Tensor[] = []; // views[n - 1] = the first n rows of x
  private readonly embeddings: Tensor; // [V, d]

  constructor(readonly predictor: Predictor, target: PredictorTarget, readonly capacity = 1) {
    const d = (this.d = predictor.config.dim);
    const emb = target.weights.get(EMBEDDING);
    if (!emb || emb.shape[1] !== d) throw new Error(`predictor of width ${d} needs the target's embedding table [V, ${d}]`);
    this.embeddings = emb;
    this.ops = new PlainOps(predictor.weights);
    this.x = new Float32Array(capacity * 2 * d);
    for (let n = 1; n <= capacity; n++) this.views.push({ shape: [n, 2 * d], data: this.x.subarray(0, n * 2 * d) });
  }

  /** Row r = [state, embedding(token)]; `state` is read, not kept. */
  setRow(r: number, state: Float32Array, token: number): void {
    const d = this.d, o = r * 2 * d;
    this.x.set(state.subarray(0, d), o);
    denseRow(this.embeddings, token, this.x.subarray(o + d, o + 2 * d)); // a quantized target's table dequantized
  }

  /** Outputs of rows [0, n): [n, outputDim], valid until the next run. */
  run(n: number): Float32Array {
    this.ops.reset();
    return mlpForward(this.ops, this.predictor.config.mlp, this.views[n - 1]).data;
  }
}

/** LDLP output row -> predicted accepted length in [0, maxDepth]: the argmax class, or the clamped regression value. */
export function decodeLength(out: Float32Array, p: Predictor): number {
  const { objective, maxDepth } = p.config;
  if (objective === 'regression') return Math.min(maxDepth, Math.max(0, out[0]));
  let best = 0;
  for (let c = 1; c <= maxDepth; c++) if (out[c] > out[best]) best = c;
  return best;
}

export interface LdlpOptions {
  /** Trained LDLP directory (required when building from options). */
  path?: string;
  /** Depth drafted = round(predicted accepted length) + offset. Default 1. Not applied to cost-aware predictors. */
  offset: number;
}

export const LDLP_FLAGS: FlagSpec[] = [
  { flag: 'path', type: 'string', meta: 'DIR', help: 'trained LDLP directory from `eaglet train-ldlp` (required)' },
  { flag: 'offset', type: 'int', min: -8, max: 8, default: 1, meta: 'N', help: 'draft the predicted accepted length + N levels (one more lets a better round show)' },
];

export class LdlpPolicy implements LengthPolicy {
  readonly name: string;
  readonly options: LdlpOptions;
  readonly runner: PredictorRunner;
  /** Predicted accepted length of the last planned round. */
  lastPrediction = NaN;
  readonly continueDrafting?: (f: Frontier, hidden?: Float32Array) => boolean;

  /**
   * @param tree the drafter's tree shape: the budget scales its totalTokens with the depth.
   * @param inner a policy whose `continueDrafting` may stop earlier inside the LDLP depth (ldlp+threshold).
   */
  constructor(predictor: Predictor, target: PredictorTarget, readonly tree: TreeShape, options: Partial<LdlpOptions> = {}, readonly inner?: LengthPolicy) {
    this.options = resolveOptions<LdlpOptions>(LDLP_FLAGS, options);
    this.runner = new PredictorRunner(predictor, target);
    this.name = inner ? `ldlp+${inner.name}` : 'ldlp';
    if (inner?.continueDrafting) this.continueDrafting = inner.continueDrafting.bind(inner);
  }

  plan(s: RoundState): RoundPlan {
    this.runner.setRow(0, s.lastFeature, s.rootToken);
    this.lastPrediction = decodeLength(this.runner.run(1), this.runner.predictor);
    // A cost-aware LDLP predicts the depth to draft itself; an accepted-length one gets the offset.
    const offset = this.runner.predictor.config.label === 'cost-aware' ? 0 : this.options.offset;
    const depth = Math.min(s.maxDepth, Math.max(0, Math.round(this.lastPrediction) + offset));
    return { depth, totalTokens: treeBudget(this.tree, depth) };
  }

  observe(o: RoundOutcome): void {
    this.inner?.observe?.(o);
  }
}

/** Tokens verified for a tree of `depth` levels: the shape's budget pro rata, at least a chain. */
export function treeBudget(tree: TreeShape, depth: number): number {
  if (depth <= 0) return 0;
  return Math.min(tree.totalTokens, Math.max(depth, Math.ceil((tree.totalTokens * depth) / tree.maxDepth)));
}

/**
 * Loads the predictor named by a policy's `path` option, for the registry's builders: the
 * target must be in the context, since the predictor reads its embeddings and must match its width.
 */
export function predictorFromOptions(kind: PredictorKind, policy: string, path: unknown, target: PredictorTarget | undefined, tree: TreeShape): Predictor {
  if (typeof path !== 'string' || !path) throw new UsageError(`--${policy}-path`, `policy ${policy} needs a trained predictor directory (or inline ${policy}:path=DIR)`);
  if (!target) throw new UsageError('policy', `${policy} reads the target's features: create it with the loaded target in the policy context`);
  return loadPredictor(path, kind, target.config, tree.maxDepth);
}
