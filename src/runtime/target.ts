/**
 * The target model on onnxruntime-node: one `forward` scores T new tokens (a chunk of a
 * prompt, one decoded token, or a whole draft tree) against the cached prefix.
 */
import type { ModelConfig } from '../model/config.ts';
import type { Weights } from '../model/weights.ts';
import { buildTargetModel, names } from '../onnx/model-graphs.ts';
import type { KVCache } from './kv-cache.ts';
import { createSession, f32Data, releaseSession, runTimed, type RunStats, type Session, type SessionOptions } from './ort.ts';
import { StepFeeds } from './step-feeds.ts';

export interface StepSessionOptions extends SessionOptions {
  /** Input buffers are sized for this many tokens per pass and grow if a pass needs more. Default: 64. */
  maxTokens?: number;
}

export const DEFAULT_MAX_TOKENS = 64;

export interface TargetOutput {
  /** [T, V] */
  logits: Float32Array;
  /** Final-norm hidden states [T, d]: the draft head's input. */
  features: Float32Array;
  /** Per layer, new keys after RoPE [T, nKv, hd]. */
  newKeys: Float32Array[];
  /** Per layer, new values [T, nKv, hd]. */
  newValues: Float32Array[];
}

export class TargetSession {
  private constructor(readonly cfg: ModelConfig, private session: Session, private feeds: StepFeeds) {}

  /** Builds the ONNX graph for `cfg` with `weights` and opens a session on it. */
  static async create(cfg: ModelConfig, weights: Weights, opts: StepSessionOptions = {}): Promise<TargetSession> {
    const session = await createSession(buildTargetModel(cfg, weights), opts);
    return new TargetSession(cfg, session, new StepFeeds(cfg.nLayers, cfg.nKvHeads, cfg.headDim, opts.maxTokens ?? DEFAULT_MAX_TOKENS));
  }

  /** Passes run, ms inside `session.run`, ms in whole `forward` calls (cumulative). */
  get stats(): RunStats {
    return this.session.stats;
  }

  /**
   * Scores `tokens` at `positions` after the cache's committed prefix. `tree` [T, W] says which
   * of the last W keys each token sees (a verification tree: W = T, the ancestor-or-self
   * matrix, nodes in topological order); the keys before them are always visible; omitted =
   * causal. Does not modify the cache: the caller appends or stages+keeps the returned rows.
   */
  async forward(cache: KVCache, tokens: ArrayLike<number>, positions: ArrayLike<number>, tree?: Uint8Array): Promise<TargetOutput> {
    const t0 = performance.now();
    const out = await runTimed(this.session, this.feeds.build(cache, tokens, positions, tree));
    const r = { logits: f32Data(out[names.logits]), features: f32Data(out[names.features]), ...this.feeds.present(out) };
    this.session.stats.msTotal += performance.now() - t0;
    return r;
  }

  async dispose(): Promise<void> {
    await releaseSession(this.session);
  }
}
