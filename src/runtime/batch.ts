/**
 * Continuous batching on the unchanged decoding loop: concurrent requests' passes are coalesced
 * into ONE ORT pass per step, target and draft head alike.
 *
 * Each request owns a slot of a batch K/V cache (KVCache.slot: its own heads among the batch
 * cache's B slots' heads, all at one shared stride) and runs the ordinary generation loop
 * (Generator) against a per-request view of the session (`view()`), whose `forward` does not
 * run but waits. When every active request is blocked on a pass, the batcher runs the waiting
 * calls together:
 *
 * - one call alone (a batch of one, or the one request still drafting at a depth): the ordinary
 *   single-request session on its slot (a slot has ORT views of its own), so a lone request
 *   costs what `eaglet generate` costs;
 * - several: one pass of the per-slot graph (buildSlotTargetModel / buildSlotDraftModel). The
 *   calls' N tokens stay packed for every row-wise op, so the weights are read once for the whole
 *   batch; attention regroups them into [B, M] (B = the highest slot in the pass + 1, M = the
 *   longest call) and scores each slot's rows against that slot's cache (its head blocks) only,
 *   under a mask [B, M, S + M] built here (the slot's live rows, its tree over staged rows, its
 *   own new tokens). Attention costs B x M x (S + M), not N x (every slot's rows).
 *
 * Each caller gets its rows of the outputs as if it had run alone, and commits its accepted rows
 * into its own slot. Requests join between steps (a new request's prefill packs into the next
 * pass) and leave when their loop ends, freeing the slot.
 */
import type { HeadConfig } from '../model/draft-head.ts';
import { names } from '../onnx/model-graphs.ts';
import type { DraftOutput, DraftPass, DraftSession } from './draft.ts';
import type { KVCache } from './kv-cache.ts';
import type { ValueLayout } from '../onnx/ops.ts';
import { bool, f32, f32Data, firstRows, i32Data, i64, runTimed, type Feeds, type RunStats, type Session } from './ort.ts';
import type { TargetOutput, TargetPass, TargetSession } from './target.ts';

/** One caller's pass, waiting to be packed. */
interface Call<Out> {
  cache: KVCache;
  tokens: ArrayLike<number>;
  positions: ArrayLike<number>;
  tree?: Uint8Array;
  /** Draft rows' input features [T, d]. */
  features?: Float32Array;
  /** A draft call whose outputs beyond K/V are read for its last row only (DraftForwardOptions). */
  lastRow?: boolean;
  logits: boolean;
  resolve(out: Out): void;
  reject(e: unknown): void;
}

/** Counters of one lane (cumulative). */
export interface LaneStats {
  /** Steps run (flushes): one pass each, or two when long calls were split off (Lane.flush). */
  steps: number;
  /** Packed passes run. */
  passes: number;
  /** Calls they served (sum of batch sizes). */
  calls: number;
  /** Tokens they scored. */
  tokens: number;
  /** ms of wall time in the passes (feeds, the ORT call, the outputs' split). */
  ms: number;
  /** Of `ms`: inside the per-slot session's ORT call, and building its feeds, the draft head's features and output rows included (packed passes only). */
  runMs: number;
  feedsMs: number;
  /**
   * ms from the end of each of this lane's steps (its last pass, before its calls settle) to the
   * start of the next step (of any lane): the requests' own work between passes (accepting,
   * commits, trees, planning, the drafter's work between levels), which no pass overlaps. Not
   * counted: the time after a lane's last step before the batch empties, and passes run outside
   * the lanes meanwhile (Batcher.outside: a lone request's fused rounds).
   */
  afterMs: number;
  /**
   * Of `ms`: the steps that followed another lane's step (or none): the draft lane's first level
   * after a target pass, which costs more than its later levels (the target pass evicted the
   * head's weights; SmartSpec prices the first level apart from the rest by it).
   */
  coldMs: number;
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
  /** When the last step ended, and its lane (LaneStats.afterMs). */
  private lastEnd = 0;
  private lastLane?: Lane<unknown>;
  private outsideAtEnd = 0;

  /** @internal whether the last step was `lane`'s (LaneStats.coldMs counts the steps after another lane's). */
  ranLast(lane: Lane<unknown>): boolean {
    return this.lastLane === lane;
  }
  /**
   * Cumulative ms of passes run outside the lanes (the engine's: a lone request's fused rounds,
   * whole calls). LaneStats.afterMs leaves them out of the time between the lanes' steps.
   */
  outside: () => number = () => 0;

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
    if (this.active === 0) this.lastLane = undefined; // an idle gap is no request's work
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
    const t0 = performance.now();
    if (this.lastLane) this.lastLane.laneStats.afterMs += t0 - this.lastEnd - (this.outside() - this.outsideAtEnd);
    void lane.flush().finally(() => {
      this.running = false;
      this.kick();
    });
  }

  /**
   * @internal `lane`'s step ran its passes. Called before its calls settle: a settled caller's
   * continuation (the drafter's next level) runs before `flush` returns, and is the requests' work.
   */
  ended(lane: Lane<unknown>): void {
    this.lastEnd = performance.now();
    this.lastLane = lane;
    this.outsideAtEnd = this.outside();
  }
}

/** A queue of calls to one model, run together. */
abstract class Lane<Out> {
  protected pending: Call<Out>[] = [];
  readonly laneStats: LaneStats = { steps: 0, passes: 0, calls: 0, tokens: 0, ms: 0, runMs: 0, feedsMs: 0, afterMs: 0, coldMs: 0 };
  /** The per-slot graph's session (`open`); until then only lone calls run. */
  protected slotSession?: Session;
  private feeds = new SlotFeeds();

  /**
   * @param heads K/V heads per slot (the model's nKvHeads).
   * @param maxPassTokens most tokens packed into one pass (the model's RoPE table holds its
   *   context length of positions, and ORT's RotaryEmbedding refuses longer inputs); the calls
   *   left over run in the next pass.
   * @param valueLayout the past K/V layout of the single-request session, which shares the
   *   batch cache: the per-slot graph (`open`) must be built for it too.
   */
  constructor(protected batcher: Batcher, readonly batchCache: KVCache, readonly heads: number, readonly maxPassTokens: number, readonly valueLayout: ValueLayout, first = false) {
    batcher.add(this as Lane<unknown>, first);
  }

  /** Gives the lane its per-slot session (built by the caller, e.g. Engine.start). */
  open(session: Session): void {
    this.slotSession = session;
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

  /**
   * Calls of at most this many tokens (a decoding step's: a verified tree, a draft level) are
   * never split from the rest of a step (see flush). Default: no call is split off.
   */
  shortTokens = Infinity;

  /**
   * Runs every waiting call (up to maxPassTokens), each getting its rows of the outputs: one
   * pass, except that when long calls (more than `shortTokens` tokens: a prompt's prefill) wait
   * beside short ones, the short calls run in one pass and the long ones in a second. (Ours: the
   * per-slot graph pads every call to the longest, so one 32-token prefill among 16 one-token
   * decodes made the pass score 16 x 32 rows, measured 7.3 ms against 1.2 ms for the decodes
   * and 1.4 ms for the prefill alone.)
   */
  async flush(): Promise<void> {
    let n = 0, T = 0;
    while (n < this.pending.length && (n === 0 || T + this.pending[n].tokens.length <= this.maxPassTokens)) T += this.pending[n++].tokens.length;
    const calls = this.pending.splice(0, n);
    const short = calls.filter((c) => c.tokens.length <= this.shortTokens);
    const groups = short.length === 0 || short.length === calls.length ? [calls] : [short, calls.filter((c) => c.tokens.length > this.shortTokens)];
    this.laneStats.steps++;
    const cold = !this.batcher.ranLast(this as Lane<unknown>), ms0 = this.laneStats.ms;
    // Every call of the step settles after its last pass: a settled caller goes on to commit rows
    // (growing or shrinking the batch cache's stride) while a later pass's zero-copy feeds over
    // that cache are still being read by ORT.
    const settle: (() => void)[] = [];
    for (const group of groups) settle.push(await this.pass(group));
    if (cold) this.laneStats.coldMs += this.laneStats.ms - ms0;
    this.batcher.ended(this as Lane<unknown>);
    for (const s of settle) s();
  }

  /** One pass over `calls` (the single-request session for one, else the per-slot graph); returns how to settle them. */
  private async pass(calls: Call<Out>[]): Promise<() => void> {
    const t0 = performance.now();
    try {
      let outs: Out[];
      if (calls.length === 1) outs = [await this.runOne(calls[0])];
      else {
        if (!this.slotSession) throw new Error('batched passes need the per-slot session: call Engine.start() (Lane.open) first');
        const f0 = performance.now(), feeds = this.slotFeeds(calls);
        const r0 = this.slotSession.stats.msInRun;
        this.laneStats.feedsMs += performance.now() - f0;
        outs = await this.runSlots(calls, feeds);
        this.laneStats.runMs += this.slotSession.stats.msInRun - r0;
      }
      let T = 0;
      for (const c of calls) T += c.tokens.length;
      this.laneStats.passes++;
      this.laneStats.calls += calls.length;
      this.laneStats.tokens += T;
      this.laneStats.ms += performance.now() - t0;
      return () => calls.forEach((c, i) => c.resolve(outs[i]));
    } catch (e) {
      return () => {
        for (const c of calls) c.reject(e);
      };
    }
  }

  /**
   * Times one pass of `tokens[i]` placeholder tokens for each slot cache `slots[i]`, at the
   * positions after its rows, as `flush` would run it (the cost model's probe); ms. The calls
   * are `lastRow` ones: the draft lane's calls of several rows the model prices are catch-ups
   * (EagleDrafter.draft's first pass, lastRow; its deeper levels are one row a request), and
   * the target lane ignores it.
   */
  async probe(slots: KVCache[], tokens: number[]): Promise<number> {
    const ctx = this.maxPassTokens;
    const calls = slots.map((cache, i): Call<Out> => ({
      cache, tokens: new Int32Array(tokens[i]), positions: Int32Array.from({ length: tokens[i] }, (_, j) => Math.min(ctx - 1, cache.length + j)),
      features: new Float32Array(tokens[i] * this.featureWidth), logits: false, lastRow: true, resolve: () => {}, reject: () => {},
    }));
    const t0 = performance.now();
    if (calls.length === 1) await this.runOne(calls[0]);
    else await this.runSlots(calls, this.slotFeeds(calls));
    return performance.now() - t0;
  }

  /** The per-slot graph's feeds for `calls` (SlotFeeds; the draft lane adds its own). */
  protected slotFeeds(calls: Call<Out>[]): Feeds {
    return this.feeds.build(calls, this.batchCache, this.heads, this.valueLayout);
  }

  /** Width of a call's input features (the draft head's), 0 without. */
  protected abstract readonly featureWidth: number;

  /** A lone call: the single-request session on the caller's slot. */
  protected abstract runOne(call: Call<Out>): Promise<Out>;

  /** Several calls: one pass of the per-slot graph over `feeds`, split into each call's output. */
  protected abstract runSlots(calls: Call<Out>[], feeds: Feeds): Promise<Out[]>;
}

/**
 * The per-slot graph's feeds for a set of calls (see the file comment), in buffers reused
 * across passes: ids and positions [1, N] packed in call order, pad_rows [B * M], unpad_rows
 * [N], slot_mask [B, M, S + M], and every layer's past K/V as the batch cache's first B slots.
 */
class SlotFeeds {
  private ids = new BigInt64Array(0);
  private pos = new BigInt64Array(0);
  private unpad = new BigInt64Array(0);
  private pad = new BigInt64Array(0);
  private mask = new Uint8Array(0);

  build(calls: Call<unknown>[], batch: KVCache, heads: number, valueLayout: ValueLayout): Feeds {
    batch.useValueLayout(valueLayout);
    let N = 0, M = 0, B = 0;
    for (const c of calls) {
      N += c.tokens.length;
      M = Math.max(M, c.tokens.length);
      B = Math.max(B, c.cache.headBase / heads + 1);
    }
    const S = batch.stride, W = S + M;
    if (this.ids.length < N) (this.ids = new BigInt64Array(2 * N)), (this.pos = new BigInt64Array(2 * N)), (this.unpad = new BigInt64Array(2 * N));
    if (this.pad.length < B * M) this.pad = new BigInt64Array(2 * B * M);
    if (this.mask.length < B * M * W) this.mask = new Uint8Array(2 * B * M * W);
    const pad = this.pad.subarray(0, B * M), mask = this.mask.subarray(0, B * M * W);
    pad.fill(0n); // padding rows read packed row 0; their outputs are never gathered back
    mask.fill(0); // and see nothing: a uniform softmax over masked scores, no NaN
    let off = 0;
    for (const c of calls) {
      const t = c.tokens.length, len = c.cache.length, slot = c.cache.headBase / heads;
      const w = c.tree ? c.tree.length / t : t; // the caller's tree: [t, w] over its last w keys
      if (!Number.isInteger(w) || w < t || w > len + t) throw new RangeError(`tree mask has ${c.tree?.length} entries: ${t} tokens need [${t}, W] with ${t} <= W <= ${len + t}`);
      if (len > S) throw new RangeError(`slot ${slot} holds ${len} rows beyond the batch cache's stride ${S}`);
      const open = len + t - w; // past rows every token sees
      for (let i = 0; i < t; i++) {
        const r = off + i, p = slot * M + i, row = p * W;
        this.ids[r] = BigInt(c.tokens[i]);
        this.pos[r] = BigInt(c.positions[i]);
        this.unpad[r] = BigInt(p);
        pad[p] = BigInt(r);
        mask.fill(1, row, row + open);
        if (c.tree) {
          for (let k = open; k < len; k++) mask[row + k] = c.tree[i * w + k - open];
          for (let j = 0; j < t; j++) mask[row + S + j] = c.tree[i * w + len - open + j];
        } else mask.fill(1, row + S, row + S + i + 1);
      }
      off += t;
    }
    const feeds: Feeds = {
      [names.ids]: i64(this.ids.subarray(0, N), [1, N]),
      [names.positions]: i64(this.pos.subarray(0, N), [1, N]),
      [names.unpadRows]: i64(this.unpad.subarray(0, N), [N]),
      [names.padRows]: i64(pad, [B * M]),
      [names.slotMask]: bool(mask, [B, M, W]),
    };
    const hd = batch.headDim, kDims = valueLayout === 'rows' ? [B, heads, S, hd] : [B, heads, hd, S], vDims = kDims;
    for (let l = 0; l < batch.nLayers; l++) {
      feeds[names.pastKey(l)] = f32(batch.heads(batch.keys[l], 0, B * heads), kDims);
      feeds[names.pastValue(l)] = f32(batch.heads(batch.values[l], 0, B * heads), vDims);
    }
    return feeds;
  }
}

/** The target's lane: `view()` is what a request's generator holds as its target. */
export class TargetLane extends Lane<TargetOutput> {
  protected readonly featureWidth = 0;
  private fetchAll: string[];
  private fetchArgmax: string[];

  constructor(batcher: Batcher, readonly session: TargetSession, batchCache: KVCache) {
    super(batcher, batchCache, session.cfg.nKvHeads, session.cfg.maxSeqLen, session.valueLayout);
    const presents = Array.from({ length: session.cfg.nLayers }, (_, l) => [names.presentKey(l), names.presentValue(l)]).flat();
    this.fetchArgmax = [names.argmax, names.features, ...presents];
    this.fetchAll = [names.logits, ...this.fetchArgmax];
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

  protected runOne(c: Call<TargetOutput>): Promise<TargetOutput> {
    return this.session.forward(c.cache, c.tokens, c.positions, c.tree, { logits: c.logits });
  }

  protected async runSlots(calls: Call<TargetOutput>[], feeds: Feeds): Promise<TargetOutput[]> {
    const logits = calls.some((c) => c.logits); // one sampling request: every row's logits come back
    const out = await runTimed(this.slotSession!, feeds, logits ? this.fetchAll : this.fetchArgmax);
    const cfg = this.session.cfg, V = cfg.vocabSize, d = cfg.dim, rs = cfg.nKvHeads * cfg.headDim;
    const all = { logits: logits ? f32Data(out[names.logits]) : new Float32Array(0), argmax: i32Data(out[names.argmax]), features: f32Data(out[names.features]) };
    const keys = Array.from({ length: cfg.nLayers }, (_, l) => f32Data(out[names.presentKey(l)]));
    const values = Array.from({ length: cfg.nLayers }, (_, l) => f32Data(out[names.presentValue(l)]));
    let off = 0;
    return calls.map((c) => {
      const a = off, b = (off += c.tokens.length);
      return {
        logits: logits ? all.logits.subarray(a * V, b * V) : all.logits,
        argmax: all.argmax.subarray(a, b),
        features: all.features.subarray(a * d, b * d),
        newKeys: keys.map((k) => k.subarray(a * rs, b * rs)),
        newValues: values.map((v) => v.subarray(a * rs, b * rs)),
      };
    });
  }
}

/** The draft head's lane; `view()` is what a request's EagleDrafter holds as its session. */
export class DraftLane extends Lane<DraftOutput> {
  protected get featureWidth(): number {
    return this.session.head.dim;
  }
  private features = new Float32Array(0);
  private outRows = new BigInt64Array(0);
  private fetches = [names.hidden, names.topkLogProbs, names.topkIds, names.entropy, names.presentKey(0), names.presentValue(0)];

  constructor(batcher: Batcher, readonly session: DraftSession, batchCache: KVCache, maxPassTokens: number) {
    super(batcher, batchCache, session.head.nKvHeads, maxPassTokens, session.valueLayout, true); // draft passes first: the target pass then collects every tree
  }

  view(): DraftPass {
    const lane = this, s = this.session;
    return {
      head: s.head as HeadConfig,
      topK: s.topK,
      forward: (cache, tokens, features, positions, tree, opts) => lane.submit({ cache, tokens, positions, tree, features, logits: false, lastRow: opts?.lastRow }),
    };
  }

  protected runOne(c: Call<DraftOutput>): Promise<DraftOutput> {
    return this.session.forward(c.cache, c.tokens, c.features!, c.positions, c.tree);
  }

  /** The shared feeds, and the head's: the calls' features packed, the rows whose outputs are read. */
  protected override slotFeeds(calls: Call<DraftOutput>[]): Feeds {
    const feeds = super.slotFeeds(calls), d = this.session.head.dim;
    let T = 0;
    for (const c of calls) T += c.tokens.length;
    if (this.features.length < T * d) this.features = new Float32Array(2 * T * d);
    if (this.outRows.length < T) this.outRows = new BigInt64Array(2 * T);
    let off = 0, R = 0;
    for (const c of calls) {
      const t = c.tokens.length;
      this.features.set(firstRows('features', c.features!, t, d), off * d);
      for (let i = c.lastRow ? t - 1 : 0; i < t; i++) this.outRows[R++] = BigInt(off + i);
      off += t;
    }
    feeds[names.features] = f32(this.features.subarray(0, T * d), [1, T, d]);
    feeds[names.outRows] = i64(this.outRows.subarray(0, R), [R]);
    return feeds;
  }

  protected async runSlots(calls: Call<DraftOutput>[], feeds: Feeds): Promise<DraftOutput[]> {
    const h = this.session.head, d = h.dim, k = this.session.topK, rs = h.nKvHeads * h.headDim;
    const out = await runTimed(this.slotSession!, feeds, this.fetches);
    const hidden = f32Data(out[names.hidden]), lp = f32Data(out[names.topkLogProbs]), ids = i32Data(out[names.topkIds]), ent = f32Data(out[names.entropy]);
    const nk = f32Data(out[names.presentKey(0)]), nv = f32Data(out[names.presentValue(0)]);
    let off = 0, r = 0; // output rows: one per lastRow call, else every row
    return calls.map((c) => {
      const a = off, b = (off += c.tokens.length), ra = r, rb = (r += c.lastRow ? 1 : c.tokens.length);
      return {
        hidden: hidden.subarray(ra * d, rb * d),
        topkLogProbs: lp.subarray(ra * k, rb * k),
        topkIds: ids.subarray(ra * k, rb * k),
        entropy: ent.subarray(ra, rb),
        newKeys: [nk.subarray(a * rs, b * rs)],
        newValues: [nv.subarray(a * rs, b * rs)],
      };
    });
  }
}
