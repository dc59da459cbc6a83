/**
 * Continuous batching on the unchanged runtime: concurrent requests' passes are coalesced into
 * ONE ORT pass per step, target and draft head alike.
 *
 * Each request owns a slot of a batch K/V cache (KVCache.slot: rows [i * S, (i + 1) * S) of one
 * set of buffers) and runs the ordinary generation loop (Generator) against a per-request view
 * of the session (`view()`), whose `forward` does not run but waits. When every active request
 * is blocked on a pass, the batcher packs the waiting calls into one sequence: tokens, positions
 * (and draft features) concatenated, against the batch cache's first L rows (the slots in use),
 * under a block mask [T, L + T] in which each new token sees only its own slot's rows (committed,
 * plus staged rows as its own tree mask says) and its own request's new tokens (causal, or its
 * tree). One pass, the weights read once for the whole batch; each caller gets its rows of the
 * outputs as if it had run alone, and commits its accepted rows into its own slot.
 *
 * Ours (not vLLM's paged attention): every packed token scores the L rows of all slots in use,
 * masked, so attention costs T x L per layer instead of the sum of each request's T_i x L_i; for
 * short contexts this is small next to reading the weights. Requests join between steps (a new
 * request's prefill packs into the next pass) and leave when their loop ends, freeing the slot.
 */
import type { HeadConfig } from '../model/draft-head.ts';
import type { DraftOutput, DraftPass, DraftSession } from './draft.ts';
import type { KVCache } from './kv-cache.ts';
import type { RunStats } from './ort.ts';
import type { TargetOutput, TargetPass, TargetSession } from './target.ts';

/** One caller's pass, waiting to be packed. */
interface Call<Out> {
  cache: KVCache;
  tokens: ArrayLike<number>;
  positions: ArrayLike<number>;
  tree?: Uint8Array;
  /** Draft rows' input features [T, d]. */
  features?: Float32Array;
  logits: boolean;
  resolve(out: Out): void;
  reject(e: unknown): void;
}

/** Counters of one lane (cumulative). */
export interface LaneStats {
  /** Packed passes run. */
  passes: number;
  /** Calls they served (sum of batch sizes). */
  calls: number;
  /** Tokens they scored. */
  tokens: number;
}

/**
 * The step barrier: `join` when a request's loop starts, `leave` when it ends. A pass runs when
 * every joined request is waiting on some lane; lanes earlier in the list go first (draft
 * before target), so the target pass collects every request's tree.
 */
export class Batcher {
  private active = 0;
  private running = false;
  private lanes: Lane<unknown>[] = [];

  /** Requests in the batch (joined, not yet left). */
  get size(): number {
    return this.active;
  }

  join(): void {
    this.active++;
  }

  leave(): void {
    if (this.active <= 0) throw new RangeError('leave() without join()');
    this.active--;
    this.kick();
  }

  /** @internal a lane registers itself; `first`: its passes go before the others' (the draft head's). */
  add(lane: Lane<unknown>, first = false): void {
    if (first) this.lanes.unshift(lane);
    else this.lanes.push(lane);
  }

  /** Runs the next pass if every active request waits. */
  kick(): void {
    if (this.running) return;
    let waiting = 0;
    for (const l of this.lanes) waiting += l.waiting;
    if (waiting === 0 || waiting < this.active) return;
    const lane = this.lanes.find((l) => l.waiting > 0)!;
    this.running = true;
    void lane.flush().finally(() => {
      this.running = false;
      this.kick();
    });
  }
}

/** A queue of calls to one session, run packed. */
abstract class Lane<Out> {
  protected pending: Call<Out>[] = [];
  readonly laneStats: LaneStats = { passes: 0, calls: 0, tokens: 0 };
  private maskBuf = new Uint8Array(0);
  private ids = new Int32Array(0);
  private pos = new Int32Array(0);

  /**
   * @param maxPassTokens most tokens packed into one pass (the model's RoPE table holds its
   *   context length of positions, and ORT's RotaryEmbedding refuses longer inputs); the calls
   *   left over run in the next pass.
   */
  constructor(protected batcher: Batcher, readonly batchCache: KVCache, readonly maxPassTokens: number, first = false) {
    batcher.add(this as Lane<unknown>, first);
  }

  get waiting(): number {
    return this.pending.length;
  }

  protected submit(call: Omit<Call<Out>, 'resolve' | 'reject'>): Promise<Out> {
    const c = call.cache;
    if (c.parent !== this.batchCache) throw new RangeError('batched pass on a cache that is not a slot of this batch');
    if (call.tokens.length === 0) throw new RangeError('forward needs at least one token');
    return new Promise<Out>((resolve, reject) => {
      this.pending.push({ ...call, resolve, reject });
      this.batcher.kick();
    });
  }

  /** Packs and runs every waiting call; each gets its rows of the outputs. */
  async flush(): Promise<void> {
    let n = 0, T = 0;
    while (n < this.pending.length && (n === 0 || T + this.pending[n].tokens.length <= this.maxPassTokens)) T += this.pending[n++].tokens.length;
    const calls = this.pending.splice(0, n);
    try {
      // L: the batch rows the callers' slots use (a slot's rows start at its base).
      let L = 0;
      for (const c of calls) L = Math.max(L, c.cache.base + c.cache.length);
      const { tokens, positions, mask } = this.pack(calls, T, L);
      this.batchCache.length = L; // the packed pass reads rows [0, L): every slot in use
      const outs = await this.run(calls, tokens, positions, mask);
      this.laneStats.passes++;
      this.laneStats.calls += calls.length;
      this.laneStats.tokens += T;
      calls.forEach((c, i) => c.resolve(outs[i]));
    } catch (e) {
      for (const c of calls) c.reject(e);
    }
  }

  /** The packed run: one pass over `tokens`, split into each call's output. */
  protected abstract run(calls: Call<Out>[], tokens: Int32Array, positions: Int32Array, mask: Uint8Array): Promise<Out[]>;

  /** Concatenated tokens and positions, and the block mask [T, L + T] (see the file comment). */
  private pack(calls: Call<Out>[], T: number, L: number): { tokens: Int32Array; positions: Int32Array; mask: Uint8Array } {
    const W = L + T;
    if (this.maskBuf.length < T * W) this.maskBuf = new Uint8Array(Math.max(T * W, 2 * this.maskBuf.length));
    if (this.ids.length < T) (this.ids = new Int32Array(2 * T)), (this.pos = new Int32Array(2 * T));
    const mask = this.maskBuf.subarray(0, T * W);
    mask.fill(0);
    let off = 0;
    for (const c of calls) {
      const t = c.tokens.length, len = c.cache.length, b = c.cache.base;
      const w = c.tree ? c.tree.length / t : t; // the caller's tree: [t, w] over its last w keys
      if (!Number.isInteger(w) || w < t || w > len + t) throw new RangeError(`tree mask has ${c.tree?.length} entries: ${t} tokens need [${t}, W] with ${t} <= W <= ${len + t}`);
      if (len + t > c.cache.capacity) throw new RangeError(`${len} past rows + ${t} tokens exceed the K/V cache's ${c.cache.capacity} rows`);
      const open = len + t - w; // past rows every token sees
      for (let i = 0; i < t; i++) {
        const row = (off + i) * W;
        this.ids[off + i] = c.tokens[i];
        this.pos[off + i] = c.positions[i];
        mask.fill(1, row + b, row + b + open);
        if (c.tree) {
          for (let k = open; k < len; k++) mask[row + b + k] = c.tree[i * w + k - open];
          for (let j = 0; j < t; j++) mask[row + L + off + j] = c.tree[i * w + len - open + j];
        } else mask.fill(1, row + L + off, row + L + off + i + 1);
      }
      off += t;
    }
    return { tokens: this.ids.subarray(0, T), positions: this.pos.subarray(0, T), mask };
  }
}

/** The target's lane: `view()` is what a request's generator holds as its target. */
export class TargetLane extends Lane<TargetOutput> {
  constructor(batcher: Batcher, readonly session: TargetSession, batchCache: KVCache) {
    super(batcher, batchCache, session.cfg.maxSeqLen);
  }

  /** A request's target: its passes wait for the batch. */
  view(): TargetPass {
    const lane = this, session = this.session;
    return {
      cfg: session.cfg,
      get stats(): RunStats {
        return session.stats;
      },
      forward: (cache, tokens, positions, tree, opts) => lane.submit({ cache, tokens, positions, tree, logits: opts?.logits ?? true }),
    };
  }

  protected async run(calls: Call<TargetOutput>[], tokens: Int32Array, positions: Int32Array, mask: Uint8Array): Promise<TargetOutput[]> {
    const logits = calls.some((c) => c.logits); // one sampling request: every row's logits come back
    const out = await this.session.forward(this.batchCache, tokens, positions, mask, { logits });
    const V = this.session.cfg.vocabSize, d = this.session.cfg.dim, rs = this.batchCache.rowSize;
    let off = 0;
    return calls.map((c) => {
      const a = off, b = (off += c.tokens.length);
      return {
        logits: logits ? out.logits.subarray(a * V, b * V) : out.logits,
        argmax: out.argmax.subarray(a, b),
        features: out.features.subarray(a * d, b * d),
        newKeys: out.newKeys.map((k) => k.subarray(a * rs, b * rs)),
        newValues: out.newValues.map((v) => v.subarray(a * rs, b * rs)),
      };
    });
  }
}

/** The draft head's lane; `view()` is what a request's EagleDrafter holds as its session. */
export class DraftLane extends Lane<DraftOutput> {
  private features = new Float32Array(0);

  constructor(batcher: Batcher, readonly session: DraftSession, batchCache: KVCache, maxPassTokens: number) {
    super(batcher, batchCache, maxPassTokens, true); // draft passes first: the target pass then collects every tree
  }

  view(): DraftPass {
    const lane = this, s = this.session;
    return {
      head: s.head as HeadConfig,
      topK: s.topK,
      forward: (cache, tokens, features, positions, tree) => lane.submit({ cache, tokens, positions, tree, features, logits: false }),
    };
  }

  protected async run(calls: Call<DraftOutput>[], tokens: Int32Array, positions: Int32Array, mask: Uint8Array): Promise<DraftOutput[]> {
    const d = this.session.head.dim, k = this.session.topK, rs = this.batchCache.rowSize, T = tokens.length;
    if (this.features.length < T * d) this.features = new Float32Array(2 * T * d);
    let off = 0;
    for (const c of calls) {
      const t = c.tokens.length;
      if (c.features!.length < t * d) throw new RangeError(`features hold ${c.features!.length} values, ${t} rows of width ${d} need ${t * d}`);
      this.features.set(c.features!.subarray(0, t * d), off * d);
      off += t;
    }
    const out = await this.session.forward(this.batchCache, tokens, this.features.subarray(0, T * d), positions, mask);
    off = 0;
    return calls.map((c) => {
      const a = off, b = (off += c.tokens.length);
      return {
        hidden: out.hidden.subarray(a * d, b * d),
        topkLogProbs: out.topkLogProbs.subarray(a * k, b * k),
        topkIds: out.topkIds.subarray(a * k, b * k),
        entropy: out.entropy.subarray(a, b),
        newKeys: out.newKeys.map((x) => x.subarray(a * rs, b * rs)),
        newValues: out.newValues.map((x) => x.subarray(a * rs, b * rs)),
      };
    });
  }
}
