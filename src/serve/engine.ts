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
import type { Drafter } from '../generate/drafter.ts';
import { RoundSession } from '../runtime/round.ts';
import { SlotDrafter } from './slot-drafter.ts';
import { Generator, type GenerationChunk } from '../generate/generator.ts';
import type { GenerationOptions } from '../generate/options.ts';
import type { GenerationStats } from '../generate/stats.ts';
import { StaticPolicy, type LengthPolicy } from '../policies/policy.ts';
import { SmartSpecPlanner, SmartSpecPolicy, StepCost } from '../policies/smartspec.ts';
import { Batcher, DraftLane, TargetLane, type LaneStats } from '../runtime/batch.ts';
import type { DraftPass, DraftSession } from '../runtime/draft.ts';
import { KVCache } from '../runtime/kv-cache.ts';
import { createSession, releaseSession, THREADS_FLAG, type Session } from '../runtime/ort.ts';
import { resolveOptions, type FlagSpec } from '../option-schema.ts';
import type { TargetPass } from '../runtime/target.ts';
import { buildSlotDraftModel, buildSlotTargetModel } from '../onnx/model-graphs.ts';
import { median } from '../util/stats.ts';
import { ServeMetrics } from './metrics.ts';

/** Batch, queue and policy of a serving Engine. */
export interface EngineOptions {
  /** Requests decoded together at most (batch slots): an integer in [1, 256]. Default 8. */
  maxBatch?: number;
  /** Requests waiting for a slot at most (an integer >= 0); more are refused (HTTP 429). Default 64. */
  maxQueue?: number;
  /** `smartspec` (default with a draft head), `static-D` (D levels every step) or `plain` (default without). */
  policy?: string;
  /** ORT intra-op threads of the batch sessions, an integer in [1, 256]. Default: the loaded generator's (`LoadedGenerator.threads`). */
  threads?: number;
  /**
   * With a chain tree (top-k 1): a request alone in the batch drafts and verifies in ONE ORT
   * call per round (the fused round, as `eaglet generate` on the embedded pair), so serving one
   * client costs what generating does. Its session holds another copy of the target's weights.
   * Default false.
   */
  fusedRound?: boolean;
}

/** maxBatch, maxQueue and policy: `eaglet serve`'s flags and the library's options. */
export const ENGINE_FLAGS: FlagSpec[] = [
  { flag: 'max-batch', type: 'int', min: 1, max: 256, default: 8, meta: 'B', help: 'requests decoded together at most (one batched target pass per step)' },
  { flag: 'max-queue', type: 'int', min: 0, default: 64, meta: 'N', help: 'requests waiting for a batch slot at most; more get HTTP 429 (0: no queue, 429 as soon as all --max-batch slots are busy)' },
  { flag: 'policy', type: 'string', meta: 'smartspec|static-D|plain', help: 'speculation length per request and step: smartspec (goodput-maximising, the default with a head), static-D, or plain decoding' },
];

/** Every EngineOptions key: ENGINE_FLAGS, threads (the `--threads` spec) and fusedRound (the CLI's default differs). */
export const ENGINE_OPTIONS: FlagSpec[] = [...ENGINE_FLAGS, THREADS_FLAG, { flag: 'fused-round', type: 'bool', default: false, help: 'a lone request drafts and verifies in one ORT call per round' }];

/** `opts` with defaults filled; a bad value or an unknown key is a UsageError naming the option (before anything loads). */
export function engineOptions(opts: EngineOptions = {}): EngineOptions & { maxBatch: number; maxQueue: number } {
  return resolveOptions(ENGINE_OPTIONS, opts as Record<string, unknown>);
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
  /** The head drafting through the batch lanes. */
  head?: EagleDrafter<DraftPass>;
  /** What the request's generator holds: `head`, or a SlotDrafter over it and the fused round. */
  drafter?: Drafter;
  /** The policy of the request holding the slot (readsPrompt). */
  policy?: LengthPolicy;
}

/** A request's abort signal and the listener it holds on it while the engine waits on the request. */
interface Listening {
  signal?: AbortSignal;
  onAbort?: () => void;
}

/** Removes `x`'s abort listener: its wait ended otherwise than by the abort. */
function unlisten(x: Listening): void {
  if (x.onAbort) x.signal!.removeEventListener('abort', x.onAbort);
}

/**
 * A submitted request's place among the engine's `waiting`, held until its body takes a slot or a
 * queue place; its listener gives the place back on abort and is removed once the place is given back.
 */
interface Seat extends Listening {
  /** Its body has begun (its first next()). */
  started: boolean;
}

export type PolicyKind = { kind: 'plain' } | { kind: 'static'; depth: number } | { kind: 'smartspec' };

/** `--policy` for serving: smartspec, static-D or plain. */
export function parseServePolicy(spec: string | undefined, hasDraft: boolean, maxDepth: number, name = '--policy'): PolicyKind {
  if (spec === undefined) return hasDraft ? { kind: 'smartspec' } : { kind: 'plain' };
  if (spec === 'plain') return { kind: 'plain' };
  if (!hasDraft) throw new UsageError(name, `${spec} needs a draft head (--draft); without one the server decodes plainly`);
  if (spec === 'smartspec') return { kind: 'smartspec' };
  const m = /^static-(\d+)$/.exec(spec);
  if (m) {
    const depth = Number(m[1]);
    if (depth < 1 || depth > maxDepth) throw new UsageError(name, `static-D: D must be in [1, ${maxDepth}] (the tree depth), got ${depth}`);
    return { kind: 'static', depth };
  }
  throw new UsageError(name, `unknown serving policy "${spec}": smartspec, static-D or plain`);
}

/** The serving engine: queue, batch slots and the batched passes (see the module comment). */
export class Engine {
  readonly batcher = new Batcher();
  readonly metrics: ServeMetrics;
  policy: PolicyKind;
  readonly maxBatch: number;
  readonly maxQueue: number;
  readonly tree: TreeShape;
  /** SmartSpec's planner and its start-up cost model (smartspec only). */
  planner?: SmartSpecPlanner;
  private targetLane: TargetLane;
  private targetView: TargetPass;
  private draftLane?: DraftLane;
  private slots: Slot[];
  private free: Slot[];
  private queue: ({ resolve(s: Slot): void; reject(e: unknown): void } & Listening)[] = [];
  private draining = false;
  private idle: (() => void)[] = [];
  private inFlight = 0;

  /**
   * @param g a loaded generator (`loadGenerator`): its target session, draft session and tree
   *   are shared by every request; its own generator is not used.
   * @param options checked as `eaglet serve` checks its flags (engineOptions): a bad value or an
   *   unknown key fails here, with one line naming the option.
   */
  constructor(readonly g: LoadedGenerator, options: EngineOptions = {}) {
    if (g.nativeMatMul) throw new UsageError('nativeMatMul', "serving's batch graphs run ORT's MatMulNBits: load the generator without nativeMatMul (--native-matmul) to serve it");
    const cfg = g.model.config, opts = engineOptions(options);
    this.maxBatch = opts.maxBatch;
    this.maxQueue = opts.maxQueue;
    const drafter = g.generator.parts.drafter;
    if (drafter instanceof RoundDrafter) throw new UsageError('fusedRound', 'serving batches draft passes across requests: load the generator without fusedRound (the engine\'s own fusedRound option runs it for a lone request)');
    if (drafter && !(drafter instanceof EagleDrafter)) throw new UsageError('--draft', 'serving drafts with an EAGLE head (a directory or random); self-drafting is not batched');
    const draftSession = (drafter as EagleDrafter<DraftSession> | undefined)?.session;
    this.tree = drafter?.shape ?? { topK: 1, maxDepth: 0, totalTokens: 0 };
    this.policy = parseServePolicy(opts.policy, draftSession !== undefined, this.tree.maxDepth, 'policy');
    this.metrics = new ServeMetrics(this.tree.maxDepth);
    const B = this.maxBatch, S = cfg.maxSeqLen;
    // B slots' heads side by side; the shared stride grows with the longest request.
    const targetCache = new KVCache(cfg.nLayers, B * cfg.nKvHeads, cfg.headDim, S);
    this.targetLane = new TargetLane(this.batcher, g.generator.parts.target, targetCache);
    this.targetView = this.targetLane.view();
    let draftCache: KVCache | undefined;
    if (draftSession && this.policy.kind !== 'plain') {
      const h = draftSession.head;
      draftCache = new KVCache(1, B * h.nKvHeads, h.headDim, EagleDrafter.cacheRows(this.tree, S));
      this.draftLane = new DraftLane(this.batcher, draftSession, draftCache, S);
    }
    // A decoding step's calls: a verified tree (root + drafts), a draft level or a drafted
    // round's catch-up rows. Longer ones (prefills, a head's first catch-up over the prompt)
    // run in a pass of their own beside the step's (Lane.flush).
    const stepTokens = Math.max(this.tree.totalTokens, this.tree.maxDepth) + 1;
    this.targetLane.shortTokens = stepTokens;
    if (this.draftLane) this.draftLane.shortTokens = stepTokens;
    const view = this.draftLane?.view();
    // Popped from the end: the lowest slot first, so a batch pass spans few slots.
    this.slots = Array.from({ length: B }, (_, i) => ({
      index: i,
      cache: targetCache.slot(i, cfg.nKvHeads),
      head: view && draftCache ? new EagleDrafter(view, this.tree, S, draftCache.slot(i, draftSession!.head.nKvHeads)) : undefined,
    }));
    for (const s of this.slots) {
      if (s.head) s.head.readsPrompt = () => this.readsPrompt(s);
      s.drafter = s.head;
    }
    if (opts.fusedRound && this.draftLane) {
      if (this.tree.topK !== 1) throw new UsageError('fusedRound', `drafts a chain: it needs tree top-k 1, got ${this.tree.topK}`);
      this.fusedRound = true;
    }
    this.free = [...this.slots].reverse();
    this.threads = opts.threads ?? g.threads;
  }

  private threads?: number;
  private fusedRound = false;
  /** The fused round's session (start(), with fusedRound). */
  private round?: RoundSession;
  /** Releases what start() built (dispose): the batch sessions and the fused round's. */
  private owned: (() => Promise<void>)[] = [];

  /** Fused rounds run by lone requests (cumulative). */
  get fusedRounds(): number {
    return this.round?.stats.passes ?? 0;
  }

  /** ms inside the fused round's ORT calls (cumulative). */
  get fusedRoundMs(): number {
    return this.round?.stats.msInRun ?? 0;
  }

  /** The batched target passes run and the requests they served (cumulative, start-up probes and calibration included). */
  get targetStats(): Readonly<LaneStats> {
    return this.targetLane.laneStats;
  }

  /**
   * Batched target passes and the calls they served since start() ended: what /metrics reports.
   * The start-up calibration's requests are counted in no metric, but their passes are in
   * targetStats (whose `steps` the planner reads), so this subtracts the count at start().
   */
  get servedTargetPasses(): { passes: number; calls: number } {
    const s = this.targetLane.laneStats;
    return { passes: s.passes - this.startPasses.passes, calls: s.calls - this.startPasses.calls };
  }

  /** targetStats' passes and calls when start() ended (servedTargetPasses). */
  private startPasses = { passes: 0, calls: 0 };

  /** The batched draft-head passes (cumulative; undefined without a draft lane). */
  get draftStats(): Readonly<LaneStats> | undefined {
    return this.draftLane?.laneStats;
  }

  get queueLength(): number {
    return this.queue.length;
  }

  get activeRequests(): number {
    return this.inFlight;
  }

  /**
   * Builds the batch sessions (the per-slot target and draft graphs, from the loaded weights)
   * and, for smartspec, measures the step-cost model it plans with: passes of 1..maxTokens
   * tokens by one request (the single-request session) and spread over as many slots as they
   * fill (the per-slot graph), against half-full slots (`repeats` each, the median), then
   * calibrates it on real drafted and plain batch steps (calibrateCosts). Call once before serving;
   * every call until dispose() returns the same promise, so a second start() resolves only when
   * the first has ended. A request submitted meanwhile waits for it (and fails with its error);
   * drain() and dispose() wait for it too. After a failed start() nothing stays allocated and
   * start() may be called again.
   */
  start(repeats = 9): Promise<void> {
    if (!this.starting) {
      // Requests submitted meanwhile wait on `pending`; once start() has settled they need not.
      // (Cleared inside the two handlers, not by a further .then on p: that would mark a failed
      // start() nobody awaits as handled, and its rejection would pass in silence.)
      const settled = () => {
        if (this.pending === p) this.pending = undefined;
      };
      const p: Promise<void> = this.open(repeats).then(
        () => {
          const s = this.targetLane.laneStats;
          this.startPasses = { passes: s.passes, calls: s.calls };
          settled();
        },
        async (e: unknown) => {
          // Nothing half-built stays allocated, and a retried start() builds again, even if a
          // release fails (the start's own error is the one reported).
          try {
            await this.releaseOwned();
          } catch {
            // releaseOwned tried every release; the cause to report is e.
          } finally {
            if (this.starting === p) this.starting = undefined;
            settled();
          }
          throw e;
        },
      );
      this.starting = p;
      this.pending = p;
    }
    return this.starting;
  }

  /** start()'s promise, kept until dispose(): a second start() returns it. */
  private starting?: Promise<void>;
  /** The same promise until it settles: submit() admits against slots + queue, and run() waits on it. */
  private pending?: Promise<void>;
  /**
   * Admitted requests holding neither a slot nor a queue place yet: submitted and not yet read
   * (a stream's body takes its slot or queue place at its first next()), or waiting for start().
   */
  private readonly waiting = new Set<Seat>();

  private async open(repeats: number): Promise<void> {
    const g = this.g, cfg = g.model.config, opts = { threads: this.threads };
    const draft = this.draftLane?.session;
    try {
      // The per-slot graphs read the batch caches as the single-request sessions sharing them do.
      const target = buildSlotTargetModel(cfg, g.model.weights, { valueLayout: this.targetLane.valueLayout });
      const head = draft && buildSlotDraftModel(draft.head, draft.weights.head, cfg, g.model.weights, draft.topK, { quantize: draft.weights.quantize, valueLayout: this.draftLane!.valueLayout });
      this.targetLane.open(this.track(await createSession(target, opts)));
      if (head) this.draftLane!.open(this.track(await createSession(head, opts)));
      if (this.fusedRound && draft) {
        const round = (this.round = await this.createRound());
        this.owned.push(() => round.dispose()); // another copy of the target's weights
        this.batcher.outside = () => round.stats.msTotal; // not the requests' work between the lanes' passes
        for (const s of this.slots) s.drafter = new SlotDrafter(s.head!, new RoundDrafter(round, cfg.maxSeqLen, s.head!.cache), () => this.batcher.size === 1);
      }
    } catch (e) {
      if (e instanceof Error && /^missing tensor/.test(e.message)) throw new UsageError('keepWeights', `serving builds its batch graphs from the weights (${e.message}): load the generator with keepWeights: true`);
      throw e;
    }
    if (this.policy.kind === 'smartspec' && this.draftLane) {
      await this.measureCosts(repeats);
      await this.calibrateCosts();
    }
    this.markLive();
  }

  /** The fused round's session for a lone request (fusedRound, with a draft lane). */
  private createRound(): Promise<RoundSession> {
    const cfg = this.g.model.config, draft = this.draftLane!.session;
    return RoundSession.create(cfg, this.g.model.weights, draft.head, draft.weights.head, Math.min(this.tree.maxDepth, this.tree.totalTokens), { threads: this.threads, quantize: draft.weights.quantize, valueLayout: this.targetLane.valueLayout, headValueLayout: this.draftLane!.valueLayout });
  }

  /** SmartSpec's step-cost model (see start). */
  private async measureCosts(repeats: number): Promise<void> {
    const cfg = this.g.model.config;
    const D = this.tree.maxDepth, B = this.maxBatch;
    const counts = (max: number) => {
      max = Math.min(max, cfg.maxSeqLen);
      const xs = [1];
      while (xs[xs.length - 1] < max) xs.push(Math.min(max, xs[xs.length - 1] * 2));
      return xs;
    };
    const verify = await this.measure(this.targetLane, this.slots.map((s) => s.cache), counts(B * (D + 1)), repeats);
    // Draft passes carry each request's catch-up rows (accepted + 1 after a drafted round).
    const drafts = await this.measure(this.draftLane!, this.slots.map((s) => s.head!.cache), counts(B * (D + 1)), repeats);
    // k = 0: a plain pass; k >= 1: the fused round, one cost for every length (measureRound).
    // The round is timed on a session of its own, released after: rounds at half the context
    // left the serving session's rounds ~5% slower (paired, separate engines: scripts/serve-ab.ts;
    // presumably ORT's arena after the larger shapes, not pinned down).
    let alone: number[] | undefined;
    if (this.round) {
      const probe = await this.createRound();
      try {
        alone = [verify.ms(1, 1), ...new Array<number>(this.round.depth).fill(await this.measureRound(probe, repeats))];
      } finally {
        await probe.dispose();
      }
    }
    // A step = one target verification: a batched pass, or a lone request's fused round.
    this.planner = new SmartSpecPlanner(verify, drafts, D, this.tree.totalTokens, () => this.targetLane.laneStats.steps + (this.round?.stats.passes ?? 0), alone);
    this.planner.splitRows = this.draftLane!.shortTokens;
    this.planner.laneTimes = [this.targetLane.laneStats, this.draftLane!.laneStats];
  }

  /**
   * SmartSpec's calibration (SmartSpecPlanner.calibrate): real batch steps through the lanes, as
   * serving runs them, before any client's: requests of a made-up prompt (greedy, counted in no
   * metric) drafted at full depth by 2 and by min(maxBatch, 4) at a time, then plain by the
   * latter, so the planner's pass scales and learned overhead start from drafted and plain batch
   * steps instead of the start-up model's back-to-back passes. Skipped below 2 batch slots.
   */
  private async calibrateCosts(): Promise<void> {
    const planner = this.planner!, B = this.maxBatch, D = this.tree.maxDepth, cfg = this.g.model.config;
    if (B < 2 || D < 1) return;
    // Short enough for any context: a prompt of 1/8 of it, 1/4 of it generated.
    const promptLen = Math.max(1, Math.min(16, cfg.maxSeqLen >> 3)), tokens = Math.max(2, Math.min(48, cfg.maxSeqLen >> 2));
    const prompt = (i: number) => Array.from({ length: promptLen }, (_, j) => (i * 131 + j * 17 + 1) % cfg.vocabSize);
    const wave = async (n: number, depth: number) => {
      planner.forced = depth;
      // Every request ends before a failure propagates: start() then releases the sessions, and
      // a sibling still decoding would run its next pass on a released one.
      const done = await Promise.allSettled(Array.from({ length: n }, async (_, i) => {
        for await (const _chunk of this.run(prompt(i), { maxNewTokens: tokens, temperature: 0, stopAtEos: false }, undefined, false));
      }));
      for (const d of done) if (d.status === 'rejected') throw d.reason;
    };
    const n = Math.min(B, 4);
    const samples = await planner.calibrate(async () => {
      for (const m of new Set([2, n])) await wave(m, D);
      await wave(n, 0);
    });
    this.calibration = { samples, passScale: [...planner.passScale], margin: planner.margin };
  }

  /**
   * SmartSpec's start-up calibration (calibrateCosts): each lane's (target, draft) passes timed
   * in its steps (samples: target, draft), and the pass scales (SmartSpecPlanner.passScale) and
   * planning margin they set.
   */
  calibration?: { samples: [number, number]; passScale: number[]; margin: number };

  /**
   * ms of a fused round, one figure for every length k = 1..depth: the median of rounds verifying
   * each k in turn, on half-full caches (one catch-up row per verified token). Ours: the graph
   * drafts all `depth` levels whatever k, and k only adds verified tokens, so the lengths cost
   * nearly the same; per-length medians differed by start-up noise instead (measured: k = 1
   * 0.65 ms, 2 0.52, 3 0.61), and one such start-up, on a busy machine, had SmartSpec verify one
   * draft in 2088 of 2306 lone rounds for the server's life, where three cost the same.
   */
  private async measureRound(round: RoundSession, repeats: number): Promise<number> {
    const slot = this.slots[0], head = slot.head!.cache, half = this.g.model.config.maxSeqLen >> 1, d = round.head.dim;
    slot.cache.ensureRows(half);
    head.ensureRows(half);
    const shapes = Array.from({ length: round.depth }, (_, i) => {
      const k = i + 1, n = k + 1, tree = new Uint8Array(n * n);
      for (let j = 0; j < n; j++) tree.fill(1, j * n, j * n + j + 1);
      return { k, tree, positions: Int32Array.from({ length: n }, (_, j) => half + j), catchUp: { tokens: new Int32Array(n), features: new Float32Array(n * d), positions: Int32Array.from({ length: n }, (_, j) => half - n + j) } };
    });
    const times: number[] = [];
    // The lengths in turn within each repeat, so a slow moment falls on all of them; the first repeat warms up.
    for (let r = 0; r < repeats + 1; r++)
      for (const s of shapes) {
        slot.cache.length = half;
        head.length = half - s.k - 1;
        const t0 = performance.now();
        await round.run(slot.cache, 0, s.positions, s.tree, head, s.catchUp, { logits: false });
        if (r > 0) times.push(performance.now() - t0);
      }
    slot.cache.truncate(0);
    head.truncate(0);
    this.targetLane.batchCache.resetLayout();
    this.draftLane!.batchCache.resetLayout();
    return median(times);
  }

  private track(s: Session): Session {
    this.owned.push(() => releaseSession(s));
    return s;
  }

  /** Median ms of passes of each token count by 1 request, and spread over min(B, t) requests. */
  private async measure(lane: TargetLane | DraftLane, slots: KVCache[], tokens: number[], repeats: number): Promise<StepCost> {
    const B = this.maxBatch, half = this.g.model.config.maxSeqLen >> 1;
    slots = [...slots].sort((a, b) => a.headBase - b.headBase);
    for (const s of slots) {
      s.ensureRows(half);
      s.length = half;
    }
    // t tokens spread over n requests, as evenly as they go.
    const spread = (t: number, n: number) => Array.from({ length: n }, (_, i) => Math.floor(t / n) + (i < t % n ? 1 : 0));
    const ms = async (t: number, n: number) => {
      const times: number[] = [];
      for (let r = 0; r < repeats + 1; r++) {
        const dt = await lane.probe(slots.slice(0, n), spread(t, n));
        if (r > 0) times.push(dt); // the first run of a shape warms ORT up
      }
      return median(times);
    };
    // One untimed pass of every shape first: the first shapes measured read high otherwise
    // (measured: 1 token 0.70 ms, after 2 tokens' 0.37), and the model then overprices plain steps.
    for (const t of tokens) for (const n of new Set([1, Math.min(B, t)])) await lane.probe(slots.slice(0, n), spread(t, n));
    const one: number[] = [], full: number[] = [];
    for (const t of tokens) {
      one.push(await ms(t, 1));
      full.push(Math.min(B, t) > 1 ? await ms(t, Math.min(B, t)) : one[one.length - 1]);
    }
    const perToken = B > 1 ? await this.measurePerToken(lane, slots.slice(0, B), this.tree.maxDepth + 1, repeats) : NaN;
    for (const s of slots) s.truncate(0);
    lane.batchCache.resetLayout();
    return new StepCost(tokens, one, full, B, perToken);
  }

  /**
   * ms of one packed token in a pass padded to `m` tokens a call (StepCost's padding model): B
   * calls of m tokens against one call of m among B - 1 of one token, both padded to [B, m] in
   * attention, in turn `repeats` times (the first pair warms up); the medians' difference over
   * the tokens it adds. 0 with m = 1 (nothing to pad) or when noise reads it negative.
   */
  private async measurePerToken(lane: TargetLane | DraftLane, slots: KVCache[], m: number, repeats: number): Promise<number> {
    const B = slots.length;
    if (m <= 1) return 0;
    const even = new Array<number>(B).fill(m), uneven = [...new Array<number>(B - 1).fill(1), m];
    const a: number[] = [], u: number[] = [];
    for (let r = 0; r < repeats + 1; r++) {
      const ta = await lane.probe(slots, even), tu = await lane.probe(slots, uneven);
      if (r > 0) a.push(ta), u.push(tu);
    }
    return Math.max(0, (median(a) - median(u)) / (B * m - (B - 1 + m)));
  }

  /**
   * The policy of requests admitted from now on (`--policy`'s values). For A/B scripts: policies
   * in turn over one engine's sessions and caches (scripts/serve-ab.ts --one-engine), where
   * separate engines' sessions differ by a few per cent on their own. smartspec needs an engine
   * started as smartspec (its cost model).
   */
  setPolicy(spec: string): void {
    const p = parseServePolicy(spec, this.draftLane !== undefined, this.tree.maxDepth);
    if (p.kind === 'smartspec' && !this.planner) throw new UsageError('--policy', 'smartspec needs an engine started with it (the start-up cost model)');
    this.policy = p;
  }

  /**
   * Whether the head of the request in `slot` reads its prompt in the step after the prefill
   * (EagleDrafter.readsPrompt asks; decided here only). As EAGLE servers run the head over the
   * prompt at prefill: a first drafted round then carries one catch-up row, not the prompt's P,
   * and SmartSpec prices it so (lazily, that step looked too dear to draft a new request in, and
   * the catch-up grew by a row every plain round it waited). Only beside other requests, those
   * still prefilling included (requests arriving together each see the others): a request alone
   * reads it in its first round's catch-up, one head call (with the fused round, inside the
   * round's one ORT call, as `eaglet generate` does), where a pass here would add one. Under
   * SmartSpec also only where the batch could draft at all (SmartSpecPlanner.mayDraftWith: at
   * c = 16 on the embedded pair every step plans 0, and the read would be a pass no round uses).
   */
  private readsPrompt(slot: Slot): boolean {
    if (this.batcher.size < 2) return false;
    const p = slot.policy;
    return !(p instanceof SmartSpecPolicy) || this.planner!.mayDraftWith(p);
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
   * next step: its slot and cache are freed; unread, it gives its place back at once). Submitted
   * while start() runs, it waits for start() to end (and fails with its error). The stream holds
   * its place from here, read or not (so streams submitted before any is read cannot admit past
   * the slots plus the queue): read it to its end, `return()` it or abort `signal`; drain() gives
   * back the place of one never read, and its listener on `signal`. Read after drain() began
   * (even if submitted before), it throws DrainingError.
   */
  submit(prompt: number[], opts: Partial<GenerationOptions>, signal?: AbortSignal): AsyncGenerator<GenerationChunk, GenerationStats> {
    if (this.draining) throw new DrainingError();
    // While start() runs its calibration holds the slots: admit what the slots and the queue
    // will hold once it ends, whatever the calibration holds at this moment.
    const held = this.pending ? 0 : this.maxBatch - this.free.length + this.queue.length;
    if (held + this.waiting.size >= this.maxBatch + this.maxQueue) {
      this.metrics.rejected++;
      throw new QueueFullError(this.maxQueue);
    }
    const seat: Seat = { started: false };
    this.waiting.add(seat);
    if (signal?.aborted) this.unseat(seat); // its body will take no slot or queue place
    else if (signal) {
      // Aborted before its body takes a slot or a queue place: the same.
      (seat.signal = signal), (seat.onAbort = () => this.unseat(seat));
      signal.addEventListener('abort', seat.onAbort, { once: true });
    }
    const it = this.run(prompt, opts, signal, true, seat);
    // Returned or thrown into before its first next(), a generator ends without running its body
    // (its finally included): its place is given back here.
    const ret = it.return.bind(it), thr = it.throw.bind(it);
    it.return = (v) => (seat.started || this.unseat(seat), ret(v));
    it.throw = (e) => (seat.started || this.unseat(seat), thr(e));
    return it;
  }

  /** Gives back a request's place among the `waiting` (once), and its abort listener. */
  private unseat(seat: Seat): void {
    if (this.waiting.delete(seat)) unlisten(seat);
  }

  private acquire(signal?: AbortSignal): Promise<Slot> {
    // Cancelled before it could queue (e.g. while it waited for start()): it takes nothing.
    if (signal?.aborted) return Promise.reject(signal.reason ?? new Error('aborted'));
    const s = this.free.pop();
    if (s) {
      this.markLive();
      return Promise.resolve(s);
    }
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
      unlisten(next);
      next.resolve(s);
    } else {
      this.free.push(s);
      this.free.sort((a, b) => b.index - a.index);
      this.markLive();
      // Shrink the shared stride to the longest request still running, so passes read fewer
      // rows. (Safe here: this request has not left the batch yet, so no pass is running; a
      // drafting request's staged rows are inside its length.)
      let rows = 0, draftRows = 0;
      for (const o of this.slots) if (o !== s && !this.free.includes(o)) (rows = Math.max(rows, o.cache.length)), (draftRows = Math.max(draftRows, o.head?.cache.length ?? 0));
      this.targetLane.batchCache.shrinkRows(rows);
      this.draftLane?.batchCache.shrinkRows(draftRows);
    }
  }

  /** Tells the batch caches which heads hold live rows: slots up to the highest busy one (see KVCache.liveHeads). */
  private markLive(): void {
    let top = -1;
    for (const o of this.slots) if (!this.free.includes(o)) top = o.index;
    // Slot i owns heads [i * h, (i + 1) * h) of each lane's batch cache, h = its nKvHeads / maxBatch.
    for (const c of [this.targetLane.batchCache, this.draftLane?.batchCache]) if (c) c.liveHeads = ((top + 1) * c.nKvHeads) / this.maxBatch;
  }

  /** The request's loop; it waits for a slot at its first `next()`. `counted`: in the metrics (not the start-up calibration's). */
  private async *run(prompt: number[], opts: Partial<GenerationOptions>, signal?: AbortSignal, counted = true, seat?: Seat): AsyncGenerator<GenerationChunk, GenerationStats> {
    if (seat) seat.started = true;
    this.inFlight++;
    try {
      // Submitted while start() runs: after it (the calibration's forced lengths and samples are not this request's).
      if (counted && this.pending) await this.pending;
      // Submitted before drain() and read after it began: refused as a queued request is (drain
      // waits only for requests in flight, and dispose() may have released the sessions).
      if (seat && this.draining) throw new DrainingError();
      if (seat) this.unseat(seat); // acquire takes a slot or a queue place at once
      const slot = await this.acquire(signal);
      const policy = (slot.policy = this.makePolicy());
      const gen = new Generator<TargetPass>({ target: this.targetView, drafter: policy.name === 'ar' ? undefined : slot.drafter, policy: counted ? this.metrics.recording(policy) : policy, cache: slot.cache });
      this.batcher.join();
      if (counted) this.metrics.started();
      try {
        const stats = yield* gen.stream(prompt, { ...opts, signal });
        if (counted) this.metrics.finished(stats);
        return stats;
      } finally {
        (policy as SmartSpecPolicy | undefined)?.leave?.();
        this.release(slot); // before leaving: once it leaves, the next pass may start
        this.batcher.leave();
      }
    } finally {
      if (seat) this.unseat(seat); // start() failed, or the request was cancelled while it waited for it
      this.inFlight--;
      if (this.inFlight === 0) for (const f of this.idle.splice(0)) f();
    }
  }

  /**
   * Releases the batch sessions and the fused round's. Call after `drain`: a request still in
   * flight would run its next pass on a released session, so that throws instead.
   */
  async dispose(): Promise<void> {
    await this.pending?.catch(() => {}); // a failed start() released its own
    if (this.inFlight > 0) throw new Error(`Engine.dispose: ${this.inFlight} request(s) still in flight; await drain() first`);
    await this.releaseOwned();
    this.starting = undefined;
  }

  /** Runs every release, even after one fails; then throws the first failure. */
  private async releaseOwned(): Promise<void> {
    let first: { e: unknown } | undefined;
    for (const release of this.owned.splice(0)) {
      try {
        await release();
      } catch (e) {
        first ??= { e };
      }
    }
    if (first) throw first.e;
  }

  /**
   * Stops admitting; refuses queued requests; resolves when every admitted request has ended
   * (after a start() still running: its calibration's requests are not refused). A stream
   * submitted but not yet read is not waited for: read from now on, it throws DrainingError
   * (as do streams that were waiting for start()). Every request that drain() ends (unread or
   * queued) gives back its abort listener here, so a signal shared by many requests keeps none
   * of the dropped ones.
   */
  async drain(): Promise<void> {
    this.draining = true;
    for (const seat of this.waiting) this.unseat(seat);
    await this.pending?.catch(() => {});
    for (const q of this.queue.splice(0)) unlisten(q), q.reject(new DrainingError());
    if (this.inFlight > 0) await new Promise<void>((r) => this.idle.push(r));
  }
}

