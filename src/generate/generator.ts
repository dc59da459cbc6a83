/**
 * The decoding loop: autoregressive and speculative decoding are one loop. Each round:
 *
 *   plan     the length policy picks a depth (0 = plain AR step) and a tree size
 *   draft    the drafter grows a token tree from the root (the last emitted token)
 *   verify   ONE target pass over [root, ...tree] under the tree attention mask
 *   accept   walk the tree drawing the target's own token at each node (argmax or a seeded
 *            sample): descend while a child matches, else that draw is the bonus token
 *   commit   write the accepted rows' K/V into the target cache, record their features
 *
 * Every emitted token is one draw from the target at the right prefix: lossless in
 * distribution. With the same seed the ids equal plain decoding's except where float32 rounding
 * between pass shapes decides a near-tie (see near-tie.ts).
 */
import { Acceptance, acceptSampled, VerifyTree } from '../../trees/index.ts';
import type { ModelConfig } from '../model/config.ts';
import { KVCache } from '../runtime/kv-cache.ts';
import type { TargetPass, TargetSession } from '../runtime/target.ts';
import { StateError, UsageError } from '../errors.ts';
import { StaticPolicy, type LengthPolicy } from '../policies/policy.ts';
import { commitPath, NoDrafter, type Drafter, type Verified } from './drafter.ts';
import { History } from './history.ts';
import { resolveGenerationOptions, type GenerationOptions } from './options.ts';
import { Sampler } from './sampler.ts';
import { GenerationStats, type StopReason } from './stats.ts';

/** Tokens emitted by one round, in order. */
export interface GenerationChunk {
  ids: number[];
  /** fromDraft[i]: ids[i] was drafted and accepted (false: the target's own bonus token). */
  fromDraft: boolean[];
  /** On the stream's last chunk: why generation ends (the stream's next `next()` returns the stats). */
  end?: StopReason;
}

/** What a Generator runs: a target, and optionally a drafter, a policy and a cache. */
export interface GeneratorParts<T extends TargetPass = TargetSession> {
  /** The target, or any TargetPass (serving: a request's view of the batched target). */
  target: T;
  /** The EAGLE head, the target's own early layers, ...; omit for plain autoregressive decoding. */
  drafter?: Drafter;
  /** Default: static full-depth trees with a drafter, plain AR without. */
  policy?: LengthPolicy;
  /** The target's K/V cache (default: its own; serving passes a slot of a batch cache). */
  cache?: KVCache;
}

/** Generation options (defaults: GENERATION_FLAGS) and an abort signal. */
export interface StreamOptions extends Partial<GenerationOptions> {
  /** Stops generation at the next round boundary. */
  signal?: AbortSignal;
}

/** The decoding loop over its parts (see the module comment); one generation at a time. */
export class Generator<T extends TargetPass = TargetSession> {
  readonly cfg: ModelConfig;
  readonly history: History;
  readonly cache: KVCache;
  readonly policy: LengthPolicy;
  readonly drafter: Drafter;
  private rootOnly = new VerifyTree(1, 0);
  private acceptance: Acceptance;
  private positions: Int32Array; // [context] scratch
  private running = false;

  constructor(readonly parts: GeneratorParts<T>) {
    this.cfg = parts.target.cfg;
    const c = this.cfg;
    this.history = new History(c.maxSeqLen, c.dim);
    this.cache = parts.cache ?? new KVCache(c.nLayers, c.nKvHeads, c.headDim, c.maxSeqLen);
    this.drafter = parts.drafter ?? new NoDrafter();
    const shape = this.drafter.shape;
    this.policy = parts.policy ?? new StaticPolicy(shape.maxDepth, shape.totalTokens);
    this.acceptance = new Acceptance(shape.maxDepth);
    this.positions = new Int32Array(c.maxSeqLen);
    this.rootOnly.parents[0] = -1;
  }

  /**
   * Generates after `prompt` (token ids, fed as given), yielding each round's tokens. One
   * generation at a time: the history and caches are the generator's own, so a second call
   * while a stream is unfinished fails at once (finish it, or `return()` it, first).
   */
  async *stream(prompt: ArrayLike<number>, options: StreamOptions = {}): AsyncGenerator<GenerationChunk, GenerationStats> {
    if (this.running) throw new StateError('this generator is already generating: one generation at a time per generator (await the previous generate(), finish or return() its stream, or load another generator)');
    this.running = true;
    try {
      return yield* this.run(prompt, options);
    } finally {
      this.running = false;
    }
  }

  private async *run(prompt: ArrayLike<number>, options: StreamOptions = {}): AsyncGenerator<GenerationChunk, GenerationStats> {
    const { signal, ...rest } = options;
    const opts = resolveGenerationOptions(rest);
    const { target } = this.parts;
    const { cfg, history, cache, policy, drafter } = this;
    const V = cfg.vocabSize, eos = opts.stopAtEos ? cfg.eosTokenIds : [];
    checkPrompt(prompt, cfg);
    const stats = new GenerationStats();
    const sampler = new Sampler(opts, V);
    if (signal?.aborted) {
      // Aborted before it started: no prefill, no token.
      stats.stopReason = 'aborted';
      return stats;
    }
    const t0 = performance.now();
    history.reset();
    cache.truncate(0);
    drafter.reset();

    // Prefill: the whole prompt in one causal pass; its last row gives the first token.
    stats.promptTokens = prompt.length;
    for (let i = 0; i < prompt.length; i++) this.positions[i] = i;
    // Greedy reads the in-graph argmax per row; only sampling fetches the [T, V] logits.
    const fetch = { logits: !sampler.greedy };
    const pre = await target.forward(cache, prompt, this.positions.subarray(0, prompt.length), undefined, fetch);
    let scored: Verified = pre; // the last pass: the target's draw at each of its rows
    const draw = (node: number) => (sampler.greedy && scored.argmax ? scored.argmax[node] : sampler.pick(scored.logits, node * V));
    cache.append(pre.newKeys, pre.newValues, prompt.length);
    history.commit(prompt, pre.features, this.positions, prompt.length); // rows 0..n-1: positions is the identity here
    let root = draw(prompt.length - 1);
    stats.targetPasses++;
    stats.ms.prefill = performance.now() - t0;

    let emitted = 0;
    const emit = (ids: number[], fromDraft: boolean[]): GenerationChunk | null => {
      // Truncate at EOS or the token budget; report why generation ends.
      let n = 0;
      while (n < ids.length && emitted < opts.maxNewTokens) {
        emitted++;
        if (eos.includes(ids[n++])) {
          stats.stopReason = 'eos';
          break;
        }
      }
      if (emitted >= opts.maxNewTokens && stats.stopReason !== 'eos') stats.stopReason = 'max-new-tokens';
      stats.newTokens = emitted;
      if (n === 0) return null;
      const chunk: GenerationChunk = { ids: ids.slice(0, n), fromDraft: fromDraft.slice(0, n) };
      if (done()) chunk.end = stats.stopReason;
      return chunk;
    };
    const done = () => emitted >= opts.maxNewTokens || stats.stopReason === 'eos';

    try {
      const first = emit([root], [false]);
      if (first) yield first;
      if (drafter.prefilled && !done() && !signal?.aborted) {
        // After the first token is out: serving's head reads the prompt in the next step's draft
        // pass, while the first token is on its way (a single generation's drafter reads nothing here).
        const t = performance.now(), before = drafter.passes;
        const read = await drafter.prefilled(history); // (not inside policy.prefilled?.(...): that skips it for a policy without the hook)
        policy.prefilled?.(read);
        stats.draftPasses += drafter.passes - before;
        stats.ms.draft += performance.now() - t;
      }
      while (!done()) {
        if (signal?.aborted) {
          stats.stopReason = 'aborted';
          break;
        }
        const P = history.length;
        const room = cfg.maxSeqLen - P; // rows left: the root needs one, drafts the rest
        if (room < 1) {
          stats.stopReason = 'context';
          break;
        }
        // Depth the round can use: the context's rows left, and the token budget (a round emits at
        // most depth + 1 tokens, so deeper drafts near max-new-tokens would be verified and dropped).
        // Only the rows bound the tree's size: siblings at a usable depth can still be accepted.
        const limit = Math.min(room, opts.maxNewTokens - emitted) - 1;
        // plan: how deep and how wide to draft this round. (tp, td, tv, ta, tn: when plan, draft,
        // verify, accept and settle began.)
        const tp = performance.now();
        const asked = policy.plan({ position: P, lastFeature: history.feature(P - 1), rootToken: root, maxDepth: Math.min(drafter.shape.maxDepth, limit) });
        // Near the context limit or the budget the tree shrinks to what can be used instead of failing.
        const plan = { ...asked, depth: Math.min(asked.depth, limit), totalTokens: Math.min(asked.totalTokens, room - 1) };
        const td = performance.now();
        stats.ms.policy += td - tp;

        // draft: a token tree below the root; a root-only tree when the plan does not speculate
        let tree = this.rootOnly;
        if (plan.depth > 0 && plan.totalTokens > 0) {
          const before = drafter.passes;
          tree = await drafter.draft(history, root, plan, policy, cache);
          stats.draftPasses += drafter.passes - before;
        } else {
          tree.tokens[0] = root;
          tree.build(1);
        }
        // verify: one target pass over [root, ...tree], each node at position P + its depth
        const tv = performance.now();
        for (let i = 0; i < tree.n; i++) this.positions[i] = P + tree.depths[i];
        const out = await drafter.verify(target, cache, tree, this.positions, fetch);
        stats.targetPasses++;
        const ta = performance.now();

        // accept: the target's own draw at each node, descending while a child matches
        scored = out;
        const acc = acceptSampled(tree, draw, this.acceptance);
        const path = acc.path.subarray(0, acc.length);
        // commit: only the accepted rows' K/V and features are kept
        commitPath(cache, out, path);
        history.commit(tree.tokens, out.features, path, acc.length);
        const accepted = acc.length - 1;
        stats.recordRound(accepted, acc.length, tree.depth);
        // settle: what the drafter learned this round, passed to the policy with the outcome
        const tn = performance.now();
        const notes = await drafter.settle?.(acc, tree);
        if (notes?.exitLayer !== undefined) stats.recordExit(notes.exitLayer);
        policy.observe?.({ depth: tree.depth, treeSize: tree.n - 1, accepted, draftMs: tv - td, verifyMs: ta - tv, notes });
        stats.ms.policy += performance.now() - tn;
        stats.ms.draft += tv - td;
        stats.ms.verify += ta - tv;
        // The accepted tokens and the bonus are emitted; the bonus is the next round's root.
        root = acc.bonus;
        const ids = Array.from(acc.tokens.subarray(0, acc.length));
        const chunk = emit(ids, ids.map((_, i) => i < accepted));
        if (chunk) yield chunk;
      }
    } finally {
      stats.ms.total = performance.now() - t0;
    }
    return stats;
  }

  /** Non-streaming: collects `stream`. */
  async generate(prompt: ArrayLike<number>, options: StreamOptions = {}): Promise<{ ids: number[]; fromDraft: boolean[]; stats: GenerationStats }> {
    const ids: number[] = [], fromDraft: boolean[] = [];
    const it = this.stream(prompt, options);
    for (;;) {
      const r = await it.next();
      if (r.done) return { ids, fromDraft, stats: r.value };
      ids.push(...r.value.ids);
      fromDraft.push(...r.value.fromDraft);
    }
  }
}

/** Throws a UsageError naming `name` unless `prompt` is a usable list of token ids for `cfg`. */
export function checkPrompt(prompt: ArrayLike<number>, cfg: ModelConfig, name = 'prompt'): void {
  if (prompt.length === 0) throw new UsageError(name, 'is empty: give at least one token');
  if (prompt.length >= cfg.maxSeqLen) throw new UsageError(name, `has ${prompt.length} tokens, the model's context is ${cfg.maxSeqLen}: leave room to generate`);
  for (let i = 0; i < prompt.length; i++) {
    const t = prompt[i];
    if (!Number.isInteger(t) || t < 0 || t >= cfg.vocabSize) throw new UsageError(name, `token id ${t} at index ${i} is outside the vocabulary [0, ${cfg.vocabSize})`);
  }
}
