/**
 * The serving engine: admits requests into a bounded queue, gives each a batch slot when one is
 * free, and runs every admitted request's ordinary generation loop (Generator) against the
 * batched target and draft head (src/runtime/batch.ts): one target pass per step verifies every
 * active request's tree. Requests join and leave between steps; each step's speculation length
 * per request comes from the policy: `smartspec` (the batch planner, src/policies/smartspec.ts),
 * `static-D`, or `plain`.
 */
import { EagletError, UsageError } from '../errors.ts';
import type { LoadedGenerator } from '../api.ts';
import type { TreeShape } from '../../trees/index.ts';
import { EagleDrafter } from '../generate/eagle-drafter.ts';
import { RoundDrafter } from '../generate/round-drafter.ts';
import { Generator, type GenerationChunk } from '../generate/generator.ts';
import type { GenerationOptions } from '../generate/options.ts';
import type { GenerationStats } from '../generate/stats.ts';
import { StaticPolicy, type LengthPolicy } from '../policies/policy.ts';
import { SmartSpecPlanner, StepCost, type SmartSpecPolicy } from '../policies/smartspec.ts';
import { Batcher, DraftLane, TargetLane, type LaneStats } from '../runtime/batch.ts';
import type { DraftPass, DraftSession } from '../runtime/draft.ts';
import { KVCache } from '../runtime/kv-cache.ts';
import type { TargetPass, TargetSession } from '../runtime/target.ts';
import { ServeMetrics } from './metrics.ts';

/** Batch, queue and policy of a serving Engine. */
export interface EngineOptions {
  /** Requests decoded together at most (batch slots). Default 8. */
  maxBatch?: number;
  /** Requests waiting for a slot at most; more are refused (HTTP 429). Default 64. */
  maxQueue?: number;
  /** `smartspec` (default with a draft head), `static-D` (D levels every step) or `plain` (default without). */
  policy?: string;
}

/** Thrown when the queue is full. */
export class QueueFullError extends EagletError {
  constructor(readonly limit: number) {
    super(`the server is busy: ${limit} requests are already waiting`);
  }
}

/** Thrown when the engine is shutting down. */
export class DrainingError extends EagletError {
  constructor() {
    super('the server is shutting down');
  }
}

interface Slot {
  index: number;
  cache: KVCache;
  drafter?: EagleDrafter<DraftPass>;
}

export type PolicyKind = { kind: 'plain' } | { kind: 'static'; depth: number } | { kind: 'smartspec' };

/** `--policy` for serving: smartspec, static-D or plain. */
export function parseServePolicy(spec: string | undefined, hasDraft: boolean, maxDepth: number): PolicyKind {
  if (spec === undefined) return hasDraft ? { kind: 'smartspec' } : { kind: 'plain' };
  if (spec === 'plain') return { kind: 'plain' };
  if (!hasDraft) throw new UsageError('--policy', `${spec} needs a draft head (--draft); without one the server decodes plainly`);
  if (spec === 'smartspec') return { kind: 'smartspec' };
  const m = /^static-(\d+)$/.exec(spec);
  if (m) {
    const depth = Number(m[1]);
    if (depth < 1 || depth > maxDepth) throw new UsageError('--policy', `static-D: D must be in [1, ${maxDepth}] (the tree depth), got ${depth}`);
    return { kind: 'static', depth };
  }
  throw new UsageError('--policy', `unknown serving policy "${spec}": smartspec, static-D or plain`);
}

/** The serving engine: queue, batch slots and the batched passes (see the module comment). */
export class Engine {
  readonly batcher = new Batcher();
  readonly metrics: ServeMetrics;
  readonly policy: PolicyKind;
  readonly maxBatch: number;
  readonly maxQueue: number;
  readonly tree: TreeShape;
  /** SmartSpec's planner and its start-up cost model (smartspec only). */
  planner?: SmartSpecPlanner;
  private targetLane: TargetLane;
  private targetView: TargetPass;
  private draftLane?: DraftLane;
  private free: Slot[];
  private queue: { resolve(s: Slot): void; reject(e: unknown): void; signal?: AbortSignal; onAbort?: () => void }[] = [];
  private draining = false;
  private idle: (() => void)[] = [];
  private inFlight = 0;

  /**
   * @param g a loaded generator (`loadGenerator`): its target session, draft session and tree
   *   are shared by every request; its own generator is not used.
   */
  constructor(readonly g: LoadedGenerator, opts: EngineOptions = {}) {
    const cfg = g.model.config;
    this.maxBatch = opts.maxBatch ?? 8;
    this.maxQueue = opts.maxQueue ?? 64;
    if (!Number.isInteger(this.maxBatch) || this.maxBatch < 1 || this.maxBatch > 256) throw new UsageError('--max-batch', `must be an integer in [1, 256], got ${this.maxBatch}`);
    if (!Number.isInteger(this.maxQueue) || this.maxQueue < 0) throw new UsageError('--max-queue', `must be a non-negative integer, got ${this.maxQueue}`);
    const drafter = g.generator.parts.drafter;
    if (drafter instanceof RoundDrafter) throw new UsageError('fusedRound', 'serving batches draft passes across requests: load the generator without fusedRound');
    if (drafter && !(drafter instanceof EagleDrafter)) throw new UsageError('--draft', 'serving drafts with an EAGLE head (a directory or random); self-drafting is not batched');
    const draftSession = (drafter as EagleDrafter<DraftSession> | undefined)?.session;
    this.tree = drafter?.shape ?? { topK: 1, maxDepth: 0, totalTokens: 0 };
    this.policy = parseServePolicy(opts.policy, draftSession !== undefined, this.tree.maxDepth);
    this.metrics = new ServeMetrics(this.tree.maxDepth);
    const B = this.maxBatch, S = cfg.maxSeqLen;
    // Strides grow a slot at a time: a pass reads up to the highest slot in use (slots are taken lowest first).
    const targetCache = new KVCache(cfg.nLayers, cfg.nKvHeads, cfg.headDim, B * S, S);
    this.targetLane = new TargetLane(this.batcher, g.generator.parts.target, targetCache);
    this.targetView = this.targetLane.view();
    let draftCache: KVCache | undefined, Sd = 0;
    if (draftSession && this.policy.kind !== 'plain') {
      const h = draftSession.head;
      Sd = EagleDrafter.cacheRows(this.tree, S);
      draftCache = new KVCache(1, h.nKvHeads, h.headDim, B * Sd, Sd);
      this.draftLane = new DraftLane(this.batcher, draftSession, draftCache, S);
    }
    const view = this.draftLane?.view();
    // Popped from the end: the lowest slot first, so the batch caches' strides stay small.
    this.free = Array.from({ length: B }, (_, i) => ({
      index: i,
      cache: targetCache.slot(i, S),
      drafter: view && draftCache ? new EagleDrafter(view, this.tree, S, draftCache.slot(i, Sd)) : undefined,
    })).reverse();
  }

  /** The batched target passes run and the requests they served (cumulative). */
  get targetStats(): Readonly<LaneStats> {
    return this.targetLane.laneStats;
  }

  get queueLength(): number {
    return this.queue.length;
  }

  get activeRequests(): number {
    return this.inFlight;
  }

  /**
   * Measures the step-cost model SmartSpec plans with: batched target passes of 1..maxTokens
   * tokens with one request's and with every slot's rows in the batch cache, and draft passes
   * likewise (a few repeats each, the median). Only for smartspec; call once before serving.
   */
  async start(repeats = 3): Promise<void> {
    if (this.policy.kind !== 'smartspec' || !this.draftLane) return;
    const D = this.tree.maxDepth, B = this.maxBatch;
    const counts = (max: number) => {
      max = Math.min(max, this.g.model.config.maxSeqLen);
      const xs = [1];
      while (xs[xs.length - 1] < max) xs.push(Math.min(max, xs[xs.length - 1] * 2));
      return xs;
    };
    const verify = await this.measure(this.targetLane.session, this.targetLane.batchCache, counts(B * (D + 1)), repeats);
    const draft = await this.measure(this.draftLane.session, this.draftLane.batchCache, counts(B), repeats);
    this.planner = new SmartSpecPlanner(verify, draft, D, this.tree.totalTokens, () => this.targetLane.laneStats.passes);
  }

  /** Median ms of packed passes of each token count, with 1 and with all slots' rows live (half-full slots). */
  private async measure(session: TargetSession | DraftSession, cache: KVCache, tokens: number[], repeats: number): Promise<StepCost> {
    const B = this.maxBatch, S = cache.capacity / B, ctx = this.g.model.config.maxSeqLen;
    const ms = async (t: number, slots: number) => {
      const L = Math.max(1, slots * S - (S >> 1)); // the highest slot in use half full
      const W = L + t, mask = new Uint8Array(t * W).fill(1);
      const ids = new Int32Array(t), pos = Int32Array.from({ length: t }, (_, i) => Math.min(ctx - 1, (ctx >> 1) + i));
      cache.length = L;
      const times: number[] = [];
      for (let r = 0; r < repeats + 1; r++) {
        const t0 = performance.now();
        if ('cfg' in session) await session.forward(cache, ids, pos, mask, { logits: false });
        else await session.forward(cache, ids, new Float32Array(t * session.head.dim), pos, mask);
        if (r > 0) times.push(performance.now() - t0); // the first run of a shape warms ORT up
      }
      times.sort((a, b) => a - b);
      return times[times.length >> 1];
    };
    const one: number[] = [], full: number[] = [];
    for (const t of tokens) {
      one.push(await ms(t, 1));
      full.push(B > 1 ? await ms(t, B) : one[one.length - 1]);
    }
    cache.resetLayout();
    return new StepCost(tokens, one, full, B);
  }

  /** A fresh policy for one request. */
  private makePolicy(): LengthPolicy {
    const p = this.policy;
    if (p.kind === 'plain' || !this.draftLane) return new StaticPolicy(0, 0);
    if (p.kind === 'static') return new StaticPolicy(p.depth, Math.min(this.tree.totalTokens, Math.max(p.depth, this.tree.totalTokens)));
    if (!this.planner) throw new Error('Engine.start() must run before serving with smartspec (it measures the step costs)');
    return this.planner.policy();
  }

  /**
   * Admits a request (throws QueueFullError / DrainingError at once) and returns its stream:
   * chunks of tokens as the batch decodes them. `signal` cancels it (in the queue, or at the
   * next step: its slot and cache are freed).
   */
  submit(prompt: number[], opts: Partial<GenerationOptions>, signal?: AbortSignal): AsyncGenerator<GenerationChunk, GenerationStats> {
    if (this.draining) throw new DrainingError();
    if (this.free.length === 0 && this.queue.length >= this.maxQueue) {
      this.metrics.rejected++;
      throw new QueueFullError(this.maxQueue);
    }
    return this.run(prompt, opts, signal);
  }

  private acquire(signal?: AbortSignal): Promise<Slot> {
    const s = this.free.pop();
    if (s) return Promise.resolve(s);
    return new Promise<Slot>((resolve, reject) => {
      const entry: (typeof this.queue)[number] = { resolve, reject, signal };
      if (signal) {
        entry.onAbort = () => {
          const i = this.queue.indexOf(entry);
          if (i >= 0) this.queue.splice(i, 1);
          reject(signal.reason ?? new Error('aborted'));
        };
        signal.addEventListener('abort', entry.onAbort, { once: true });
      }
      this.queue.push(entry);
    });
  }

  private release(s: Slot): void {
    s.cache.truncate(0);
    const next = this.queue.shift();
    if (next) {
      if (next.onAbort) next.signal?.removeEventListener('abort', next.onAbort);
      next.resolve(s);
    } else {
      this.free.push(s);
      this.free.sort((a, b) => b.index - a.index);
      // The highest slots emptied: shrink the batch caches so passes read only the slots in use.
      // (Safe here: this request has not left the batch yet, so no pass is running.)
      let used = this.maxBatch;
      for (let i = 0; i < this.free.length && this.free[i].index === used - 1; i++) used--;
      this.targetLane.batchCache.shrinkRows(used * this.g.model.config.maxSeqLen);
      if (this.draftLane && s.drafter) this.draftLane.batchCache.shrinkRows(used * s.drafter.cache.capacity);
    }
  }

  /** The request's loop; it waits for a slot at its first `next()`. */
  private async *run(prompt: number[], opts: Partial<GenerationOptions>, signal?: AbortSignal): AsyncGenerator<GenerationChunk, GenerationStats> {
    this.inFlight++;
    try {
      const slot = await this.acquire(signal);
      const policy = this.makePolicy();
      const gen = new Generator<TargetPass>({ target: this.targetView, drafter: policy.name === 'ar' ? undefined : slot.drafter, policy: this.metrics.recording(policy), cache: slot.cache });
      this.batcher.join();
      this.metrics.started();
      try {
        const stats = yield* gen.stream(prompt, { ...opts, signal });
        this.metrics.finished(stats);
        return stats;
      } finally {
        (policy as SmartSpecPolicy | undefined)?.leave?.();
        this.release(slot); // before leaving: once it leaves, the next pass may start
        this.batcher.leave();
      }
    } finally {
      this.inFlight--;
      if (this.inFlight === 0) for (const f of this.idle.splice(0)) f();
    }
  }

  /** Stops admitting; refuses queued requests; resolves when every admitted request has ended. */
  async drain(): Promise<void> {
    this.draining = true;
    for (const q of this.queue.splice(0)) q.reject(new DrainingError());
    if (this.inFlight > 0) await new Promise<void>((r) => this.idle.push(r));
  }
}

