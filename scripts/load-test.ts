/**
 * Load test of `eaglet serve` over loopback HTTP: throughput and p50/p99 request latency against
 * concurrency, for plain decoding, static speculation and SmartSpec, side by side in one run,
 * against the single-request library speed measured in the same run.
 *
 *   node --import tsx scripts/load-test.ts [--model DIR --draft DIR] [--concurrency 1,2,4,8,16]
 *     [--policies plain,static-3,smartspec] [--requests 8] [--c1-requests 24] [--blocks 8] [--max-new-tokens 48]
 *     [--time-limit 150] [--threads N] [--max-batch B] [--[no-]fused-round]
 *     [--sessions shared|separate] [--[no-]renew] [--out runs/load-test]
 *
 * Sessions. Separate ORT sessions of one graph run at speeds a few per cent apart, fixed for the
 * sessions' life (measured: paired medians 0.97-1.04 between two identical static-3 engines,
 * scripts/serve-ab.ts), the size of the gaps the goals ask about. So by default (--sessions
 * shared) every served method runs on ONE engine and its HTTP server, started as `eaglet serve
 * --policy smartspec` starts it (SmartSpec's step-cost model measured at start-up on the
 * sessions it serves on), each block's requests admitted under its method's policy
 * (Engine.setPolicy: a plain or static-D request runs the code path and graphs a server started
 * with that policy runs; the engine's draft lane and fused-round session sit idle for plain).
 * And by default (--renew) every round gets new sessions: a new engine and server, and newly
 * loaded generators for the in-process methods, warmed up as at the start, so which sessions are
 * fast is sampled round by round rather than fixed for the run (SmartSpec's planner then starts
 * each round from its start-up model, as a newly started server does, and learns during the
 * warm-up). Renewed, a round runs every level on its sessions; start-up and warm-up add ~3 s a
 * round. --sessions separate --no-renew
 * is the earlier measurement: one server (engine) per policy for the whole run, level by level.
 *
 * Every server has --max-batch = the highest concurrency. Each concurrency level runs `blocks` rounds, and
 * in each round every method runs the same max(requests, c) greedy completions of held-out
 * prompts (at c=1, c1-requests of them), the methods taking turns in an order shuffled each round (seeded: the same every run):
 * a slow moment of the machine (engine speed here swings by up to 1.6x between blocks of a
 * fraction of a second) then falls on each method in turn, and no method always runs right
 * after the same one (one right after a method on the same sessions can run a few per cent
 * faster). At concurrency c > 1 a server's block is its requests by `c` closed-loop clients; at
 * concurrency 1 the methods take turns request by request, in an order shuffled per request, 24
 * requests a round by default (the held-out set): a round of 8 spread its paired ratio by
 * +-10% (docs/performance.md, "Session 16: served overhead at concurrency 1"). A served request at c=1
 * is timed by its client from the request's send to its reply parsed, on a connection opened
 * (and checked with GET /health) before the clock starts: its wall time holds the client's own
 * work (building the request, reading and parsing the reply, ~0.1-0.2 ms), which the in-process
 * methods, timed around their decoding call, do not have; the goal keeps it. Clients
 * run in a worker thread (scripts/load-client.ts, keep-alive connections: the servers' event
 * loop does only the server's work). A level reports each method's median and min-max over its
 * blocks; each goal's comparison is also read round by round (the ratio of two methods' blocks
 * of the same round: paired, so drift between rounds cancels), and the goal is judged on the
 * median of those ratios.
 *
 * At concurrency 1 the servers are held to the single-request speed, measured in the same
 * rounds, in-process (no HTTP): library decoding (Generator) with plain, the library default
 * policy and each static policy, and, where the fused round applies (the embedded pair), what
 * `eaglet generate` runs (the fused round with its default policy) and each static policy in
 * the fused round. "Best single-request speed" = the highest median at concurrency 1 among
 * these and the other servers. As a diagnostic, SmartSpec's engine is also called in-process
 * (Engine.submit, no HTTP): served against it is what HTTP costs, it against the best is what
 * the engine costs. In-process methods run beside the client thread polling as during a level
 * (the servers share the machine with it).
 *
 * Throughput = generated tokens / wall time of the block; latency = each request's time to its
 * full reply (p50/p99 over the level's blocks). Every reply's ids, served or library, are
 * checked against single-request plain decoding (a separate generator, as `eaglet generate
 * --no-spec`); a mismatch fails the run (exit 1). A warm-up (every server at the lowest and
 * highest concurrency, every single-request method once) runs first and is not reported.
 * Bounded: no new round starts after --time-limit seconds (what did not run is listed).
 * Each served block also records where its time went (BlockSplit: target passes, the requests'
 * work between them, draft passes, fused rounds, garbage collection); load-test.md tabulates it
 * at the highest concurrency. Writes load-test.json, load-test.md and load-test.svg under --out.
 */
import { Rng } from '../src/util/rng.ts';
import { permutation } from '../training/dataset.ts';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { PerformanceObserver } from 'node:perf_hooks';
import { join } from 'node:path';
import { loadGenerator, type LoadedGenerator } from '../src/api.ts';
import { DEFAULT_DIR } from '../src/default-model.ts';
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { Generator } from '../src/generate/generator.ts';
import type { GenerationStats } from '../src/generate/stats.ts';
import { StaticPolicy, type LengthPolicy } from '../src/policies/policy.ts';
import { serve, type RunningServer } from '../src/serve/server.ts';
import { PHASES, ServeMetrics, type RequestPhases } from '../src/serve/metrics.ts';
import { linePlot } from '../src/util/svg-plot.ts';
import { spread } from '../src/util/stats.ts';
import type { LevelJob, LevelResult } from './load-client.ts';
import { UsageError } from '../src/errors.ts';
import type { RecordedCostModel } from './recorded-planner.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'model', type: 'string', meta: 'DIR', help: 'target (default: the embedded pair)' },
  { flag: 'draft', type: 'string', meta: 'DIR', help: 'draft head' },
  { flag: 'prompts', type: 'string', default: join(DEFAULT_DIR, 'heldout-prompts.jsonl'), meta: 'FILE', help: 'JSONL of token-id prompts' },
  { flag: 'concurrency', type: 'ints', default: [1, 2, 4, 8, 16], meta: 'LIST', help: 'client concurrency levels' },
  { flag: 'policies', type: 'string', default: 'plain,static-3,smartspec', meta: 'LIST', help: 'serving policies' },
  { flag: 'requests', type: 'int', min: 1, default: 8, meta: 'N', help: 'requests per block at concurrency > 1 (at least the concurrency)' },
  { flag: 'c1-requests', type: 'int', min: 1, default: 24, meta: 'N', help: 'requests per round at concurrency 1, every method (the held-out set is 24 prompts)' },
  { flag: 'blocks', type: 'int', min: 1, default: 8, meta: 'K', help: 'blocks per method per level, in shuffled order (median, min-max reported)' },
  { flag: 'max-new-tokens', type: 'int', min: 1, default: 48, meta: 'N', help: 'max_tokens of each request' },
  { flag: 'time-limit', type: 'number', above: 0, default: 150, meta: 'S', help: 'no new round of blocks starts after this many seconds' },
  { flag: 'threads', type: 'int', min: 1, default: 1, meta: 'N', help: 'ORT intra-op threads' },
  { flag: 'max-batch', type: 'int', min: 1, meta: 'B', help: 'the servers\' batch slots (default: the highest concurrency)' },
  { flag: 'fused-round', type: 'bool', help: 'a request alone in the batch runs the fused round, and the single-request yardstick includes `eaglet generate`\'s fused round (default: on for the embedded pair, as generate and serve)' },
  { flag: 'sessions', type: 'string', default: 'shared', choices: ['shared', 'separate'], meta: 'MODE', help: 'shared: every served method on one engine\'s sessions (started as smartspec, the policy set per block); separate: one engine (server) per method' },
  { flag: 'renew', type: 'bool', default: true, help: 'new sessions every round (engines, servers and the in-process methods\' generators), so which sessions are fast is sampled rather than fixed for the run; --no-renew: one set for the run' },
  { flag: 'out', type: 'string', default: 'runs/load-test', meta: 'DIR', help: 'output directory' },
];

const f = scriptFlags(import.meta.url, FLAGS);
const t0 = performance.now();
const levels = [...(f.concurrency as number[])].sort((a, b) => a - b), policies = String(f.policies).split(','), N = f.maxNewTokens as number, K = f.blocks as number;
const prompts = readFileSync(f.prompts as string, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as number[]);
const load = { model: f.model as string | undefined, draft: f.draft as string | undefined, threads: f.threads as number };
const fused = (f.fusedRound as boolean | undefined) ?? (load.model === undefined && load.draft === undefined);
const shared = f.sessions === 'shared', renew = f.renew as boolean;
const reference = await loadGenerator({ ...load, draft: null });
const cMin = levels[0], cMax = Math.max(...levels), maxBatch = (f.maxBatch as number | undefined) ?? cMax;
if (maxBatch < cMax) throw new UsageError('--max-batch', `${maxBatch} is below the highest concurrency ${cMax}: requests past it would queue`);
// At c=1 a round's requests take turns one by one, method by method: more of them cost ~15 ms a
// request and method, against ~3 s for a round's new sessions, and tighten its paired ratio.
const blockSize = (c: number) => (c === 1 ? (f.c1Requests as number) : Math.max(c, f.requests as number));

// Single-request plain decoding of every prompt: what every reply must equal.
const want = new Map<number, number[]>();
for (let i = 0; i < prompts.length; i++) want.set(i, (await reference.generate(prompts[i], { maxNewTokens: N, temperature: 0 })).ids);

// The clients run in a worker thread (scripts/load-client.ts), off the servers' event loop.
// (Workers do not inherit `--import tsx`: the worker loads the client through tsx's API.)
const clients = new Worker(`import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((m) => m.tsImport(${JSON.stringify(new URL('./load-client.ts', import.meta.url).href)}, ${JSON.stringify(import.meta.url)}))`, { eval: true });
function clientThread(state: 'spin' | 'rest'): Promise<void> {
  return new Promise((resolve) => {
    clients.once('message', () => resolve());
    clients.postMessage(state);
  });
}
function drive(job: LevelJob): Promise<LevelResult> {
  return new Promise((resolve, reject) => {
    clients.once('message', (m: { ok?: LevelResult; error?: string }) => (m.ok ? resolve(m.ok) : reject(new Error(m.error))));
    clients.postMessage(job);
  });
}

/** One block of one method at one level. */
interface Block {
  method: string;
  concurrency: number;
  round: number;
  tokens: number;
  wallMs: number;
  tokensPerSecond: number;
  /** Each request's latency, ms, and its tokens. */
  latencies: number[];
  counts: number[];
  mismatches: number;
  /** Servers only: */
  meanBatch?: number;
  /** Rounds run as a lone request's fused round (not counted in meanBatch's passes). */
  fusedRounds?: number;
  /** depths[d]: request rounds at speculation length d. */
  depths?: number[];
  /** Summed server-side ms by phase over the block's requests (ServeMetrics), and how many requests. */
  phaseMs?: RequestPhases;
  phased?: number;
  /** Servers only: where the block's time went, from the engine's counters (BlockSplit). */
  split?: BlockSplit;
}

/**
 * A served block's wall time by what the engine did (LaneStats, over the block): its batched
 * target passes (`targetMs`, `targetSteps`), the requests' own work between passes (`afterMs`:
 * accepting, commits, planning, the HTTP side's handling of each chunk), draft-head passes
 * (`draftPasses`, `draftMs`), lone requests' fused rounds (`fusedMs`), and the process's garbage
 * collection (`gcMs`, `gcs`: as the runtime reports it by the block's end, so a collection in its
 * last moments may count in the next). The rest of the wall is the ramp-up and idle gaps
 * (requests arriving, replies leaving). What told SmartSpec's c=16 blocks from plain's: a few
 * draft passes and fused rounds at a block's start, each holding up every request
 * (docs/performance.md, "Session 17").
 */
interface BlockSplit {
  targetSteps: number;
  targetMs: number;
  afterMs: number;
  draftPasses: number;
  draftMs: number;
  fusedMs: number;
  gcMs: number;
  gcs: number;
}

/** Garbage collections so far (ms, count): the blocks' split reads the difference. */
const gc = { ms: 0, count: 0 };
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) (gc.ms += e.duration), gc.count++;
}).observe({ entryTypes: ['gc'] });

const r3 = (x: number) => Math.round(x * 1000) / 1000;
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
/** The block's prompts (indices): a different window of the held-out prompts each round. */
const promptsFor = (c: number, round: number) => Array.from({ length: blockSize(c) }, (_, j) => (((j + round * 7 + c) % prompts.length) + prompts.length) % prompts.length);
const differs = (ids: number[], i: number) => JSON.stringify(ids) !== JSON.stringify(want.get(i));

/** `order` (prompt indices) through server `p` by `c` clients. */
async function serverBlock(p: string, c: number, round: number, order = promptsFor(c, round)): Promise<Block> {
  const s = world.servers.get(p)!, engine = s.handler.engine, lane = engine.targetStats, m = engine.metrics;
  // Shared sessions: the block's requests are admitted under its method's policy (the last block's have all replied).
  if (shared) engine.setPolicy(p);
  const p0 = lane.passes, c0 = lane.calls, f0 = engine.fusedRounds, d0 = m.depthCounts.slice(), ph0 = { ...m.phaseMs }, n0 = m.phased;
  const counters = (): BlockSplit => ({ targetSteps: lane.steps, targetMs: lane.ms, afterMs: lane.afterMs, draftPasses: engine.draftStats?.passes ?? 0, draftMs: engine.draftStats?.ms ?? 0, fusedMs: engine.fusedRoundMs, gcMs: gc.ms, gcs: gc.count });
  const s0 = counters();
  const { replies, wallMs } = await drive({ url: s.url, prompts: order.map((i) => prompts[i]), concurrency: c, maxTokens: N });
  let tokens = 0, mismatches = 0;
  replies.forEach((r, j) => {
    tokens += r.ids.length;
    if (differs(r.ids, order[j])) mismatches++;
  });
  return {
    method: p, concurrency: c, round, tokens, wallMs: r3(wallMs), tokensPerSecond: r3((tokens * 1000) / wallMs), latencies: replies.map((r) => r3(r.ms)), counts: replies.map((r) => r.ids.length), mismatches,
    meanBatch: r3((lane.calls - c0) / Math.max(1, lane.passes - p0)),
    fusedRounds: engine.fusedRounds - f0, depths: m.depthCounts.map((n, d) => n - d0[d]),
    phaseMs: Object.fromEntries(PHASES.map((k) => [k, r3(m.phaseMs[k] - ph0[k])])) as RequestPhases, phased: m.phased - n0,
    split: Object.fromEntries(Object.entries(counters()).map(([k, v]) => [k, r3(v - s0[k as keyof BlockSplit])])) as unknown as BlockSplit,
  };
}

// The single-request library methods (no HTTP, no batcher): the yardstick of concurrency 1.
// Also, as a diagnostic, SmartSpec's serving engine called in-process (Engine.submit, no HTTP).
/** `firstMs`: the call to its first tokens, where it streams them (the engine), as a server's prefill phase counts it. */
type Decode = (prompt: number[]) => Promise<{ ids: number[]; stats: GenerationStats; firstMs?: number }>;
const staticDepths = policies.filter((x) => /^static-\d+$/.test(x)).map((x) => Number(x.slice(7)));
const ENGINE = 'smartspec engine (no HTTP)';

/**
 * The sessions a stretch of rounds runs on: the loaded generator the servers' engines are built
 * from (its own sessions serve the library methods), what `eaglet generate` loads, and the servers.
 */
interface World {
  g: LoadedGenerator;
  generateDefault?: LoadedGenerator;
  /** Per served method its server: with shared sessions, one server (one engine) for every method. */
  servers: Map<string, RunningServer>;
  /** Per in-process method: a fresh decoder (one per round: a fresh policy state). */
  singles: Map<string, () => Decode>;
  /** Its rounds' depths (counted as a server counts them). */
  singleMetrics: Map<string, ServeMetrics>;
}

async function buildWorld(): Promise<World> {
  const g = await loadGenerator({ ...load, keepWeights: true });
  // What `eaglet generate` runs (its fused round where it would use one, its default policy): a single-request yardstick.
  const generateDefault = fused ? await loadGenerator({ ...load, fusedRound: 'auto' }) : undefined;
  const singles = new Map<string, () => Decode>(), singleMetrics = new Map<string, ServeMetrics>();
  const parts = g.generator.parts, drafter = parts.drafter;
  const add = (name: string, policy: () => LengthPolicy | undefined, from = parts) => {
    const m = new ServeMetrics(from.drafter?.shape.maxDepth ?? 0);
    singleMetrics.set(name, m);
    singles.set(name, () => {
      const p = policy(), gen = new Generator({ target: from.target, drafter: p ? from.drafter : undefined, policy: p && m.recording(p) });
      return (prompt) => gen.generate(prompt, { maxNewTokens: N, temperature: 0 });
    });
  };
  add('library plain', () => undefined);
  if (drafter) {
    add(`library ${g.newPolicy()!.name}`, () => g.newPolicy());
    for (const d of staticDepths) add(`library static-${d}`, () => new StaticPolicy(d, Math.max(d, drafter.shape.totalTokens)));
  }
  if (generateDefault) {
    const gp = generateDefault.generator.parts;
    add(`generate (fused round, ${generateDefault.newPolicy()!.name})`, () => generateDefault.newPolicy(), gp);
    for (const d of staticDepths) add(`generate --policy static-${d} (fused round)`, () => new StaticPolicy(d, Math.max(d, gp.drafter!.shape.totalTokens)), gp);
  }
  const servers = new Map<string, RunningServer>();
  const opts = (p: string) => ({ port: 0, maxBatch, policy: p, maxQueue: 1024, threads: load.threads, fusedRound: fused && p !== 'plain' });
  if (shared) {
    // One engine as `eaglet serve --policy smartspec` starts it (its step-cost model measured on
    // the sessions it serves on), every method's blocks on it in turn (Engine.setPolicy).
    const one = await serve(g, opts(drafter ? 'smartspec' : 'plain'));
    for (const p of policies) servers.set(p, one);
  } else for (const p of policies) servers.set(p, await serve(g, opts(p)));
  if (servers.has('smartspec')) {
    const engine = servers.get('smartspec')!.handler.engine;
    singles.set(ENGINE, () => async (prompt) => {
      if (shared) engine.setPolicy('smartspec');
      const t = performance.now(), it = engine.submit(prompt, { maxNewTokens: N, temperature: 0 });
      const ids: number[] = [];
      let firstMs: number | undefined;
      for (let r = await it.next(); ; r = await it.next()) {
        if (r.done) return { ids, stats: r.value, firstMs };
        firstMs ??= performance.now() - t;
        ids.push(...r.value.ids);
      }
    });
  }
  return { g, generateDefault, servers, singles, singleMetrics };
}

async function closeWorld(w: World): Promise<void> {
  const engine = w.servers.get('smartspec')?.handler.engine, cm = engine?.planner;
  cm?.learnDeferred(); // the all-zero steps' samples still waiting (SmartSpecPlanner.deferSteps)
  if (cm) costModels.push({ verify: cm.verify.toJSON(), draft: cm.draft.toJSON(), alone: cm.alone, calibration: engine.calibration, learnedOverhead: { msPerPass: cm.overhead.a, msPerRequestPass: cm.overhead.b, aloneMs: cm.overhead.alone }, passScale: [...cm.passScale] });
  for (const s of new Set(w.servers.values())) await s.close();
  await w.g.dispose();
  await w.generateDefault?.dispose();
}

/** A block of one in-process method: the prompts one after another, beside the client thread polling as during a level. */
async function singleBlock(name: string, round: number, order = promptsFor(1, round), decode = world.singles.get(name)!()): Promise<Block> {
  const m = name === ENGINE ? world.servers.get('smartspec')!.handler.engine.metrics : world.singleMetrics.get(name), d0 = m?.depthCounts.slice();
  await clientThread('spin');
  let tokens = 0, mismatches = 0, prefill = 0;
  const latencies: number[] = [], counts: number[] = [];
  try {
    for (const i of order) {
      const s = performance.now();
      const r = await decode(prompts[i]);
      latencies.push(r3(performance.now() - s));
      tokens += r.stats.newTokens;
      prefill += r.firstMs ?? r.stats.ms.prefill;
      counts.push(r.stats.newTokens);
      if (differs(r.ids, i)) mismatches++;
    }
  } finally {
    await clientThread('rest');
  }
  const wallMs = sum(latencies); // the decoding itself, not the thread hand-offs around it
  // Its prefill and the rest, as the server's phases split a request (the HTTP phases are 0 here).
  const phaseMs = { ...(Object.fromEntries(PHASES.map((k) => [k, 0])) as RequestPhases), prefill: r3(prefill), decode: r3(wallMs - prefill) };
  return { method: name, concurrency: 1, round, tokens, wallMs: r3(wallMs), tokensPerSecond: r3((tokens * 1000) / wallMs), latencies, counts, mismatches, depths: m && d0 ? m.depthCounts.map((n, d) => n - d0[d]) : undefined, phaseMs, phased: order.length };
}

const blocks: Block[] = [], skipped: string[] = [];
const limitMs = (f.timeLimit as number) * 1000;
/** SmartSpec's step-cost model of each set of sessions: measured at start-up, its calibration, and what it learned (JSON). */
const costModels: RecordedCostModel[] = [];
let warmupSeconds = 0;
/** New sessions, warmed up (not reported): every single-request method once, every server at the lowest and highest concurrency. */
async function enter(): Promise<World> {
  const start = performance.now();
  const w = (world = await buildWorld());
  const warm = (c: number) => promptsFor(c, -1).slice(0, Math.max(c, f.requests as number)); // not the longer c=1 rounds
  for (const name of w.singles.keys()) await singleBlock(name, -1, warm(1));
  for (const p of policies) for (const c of new Set([cMin, cMax])) await serverBlock(p, c, -1, warm(c));
  warmupSeconds += (performance.now() - start) / 1000;
  return w;
}
let world: World = undefined as unknown as World; // set by enter()

/** `xs` in an order shuffled by `seed` (the same order every run). */
function shuffled<T>(xs: readonly T[], seed: number): T[] {
  const rng = new Rng(seed);
  return Array.from(permutation(xs.length, rng), (i) => xs[i]);
}

/** Blocks of one method summed (the requests of a round at concurrency 1, run one at a time). */
function merge(bs: Block[]): Block {
  const b = bs[0], add = (k: 'tokens' | 'wallMs' | 'mismatches') => sum(bs.map((x) => x[k]));
  const tokens = add('tokens'), wallMs = add('wallMs');
  return {
    ...b, tokens, wallMs: r3(wallMs), tokensPerSecond: r3((tokens * 1000) / wallMs), latencies: bs.flatMap((x) => x.latencies), counts: bs.flatMap((x) => x.counts), mismatches: add('mismatches'),
    meanBatch: b.meanBatch, fusedRounds: b.fusedRounds === undefined ? undefined : sum(bs.map((x) => x.fusedRounds!)),
    depths: b.depths?.map((_, d) => sum(bs.map((x) => x.depths![d]))),
    phaseMs: b.phaseMs && (Object.fromEntries(PHASES.map((k) => [k, r3(sum(bs.map((x) => x.phaseMs![k])))])) as RequestPhases), phased: b.phased === undefined ? undefined : sum(bs.map((x) => x.phased!)),
    split: b.split && (Object.fromEntries(Object.keys(b.split).map((k) => [k, r3(sum(bs.map((x) => x.split![k as keyof BlockSplit])))])) as unknown as BlockSplit),
  };
}

// Renewed sessions: round by round, every level in each round on that round's sessions (paired
// ratios compare blocks on the same sessions); one set for the run: level by level, as before.
const schedule = renew ? Array.from({ length: K }, (_, r) => levels.map((c) => [c, r] as const)).flat() : levels.flatMap((c) => Array.from({ length: K }, (_, r) => [c, r] as const));
const served = new Set(policies), late = new Map<number, number>();
let worldRound = -1;
for (const [c, round] of schedule) {
  if (performance.now() - t0 > limitMs) {
    if (!late.has(c)) late.set(c, round);
    continue;
  }
  if (worldRound < 0 || (renew && round !== worldRound)) {
    if (worldRound >= 0) await closeWorld(world);
    await enter();
    worldRound = round;
  }
  const methods = [...policies, ...(c === 1 ? world.singles.keys() : [])];
  const done: Block[] = [];
  if (c === 1) {
    // One request at a time: the methods take turns request by request, so a slow moment falls
    // on a request of each rather than on one method's block. Each request's order is shuffled
    // (seeded), not rotated: in a rotation each method always ran right after the same one, so
    // `generate --policy static-3` always followed `generate` on the same sessions while every
    // server followed another engine; a request right after one on the same sessions can run a
    // few per cent faster (docs/performance.md, "Serving under load", session 10).
    // A library method keeps one generator (one policy state) through its round.
    const order = promptsFor(1, round), parts = new Map<string, Block[]>(methods.map((m) => [m, []]));
    const gens = new Map([...world.singles].map(([name, make]) => [name, make()]));
    for (let j = 0; j < order.length; j++) {
      const turns = shuffled(methods, round * 1009 + j + 1);
      for (let k = 0; k < methods.length; k++) {
        const m = turns[k];
        parts.get(m)!.push(served.has(m) ? await serverBlock(m, 1, round, [order[j]]) : await singleBlock(m, round, [order[j]], gens.get(m)));
      }
    }
    for (const m of methods) done.push(merge(parts.get(m)!));
  } else {
    // Shuffled each round, so none always runs first or after the same one.
    for (const m of shuffled(methods, round * 1009 + c)) done.push(await serverBlock(m, c, round));
  }
  for (const b of done) {
    blocks.push(b);
    process.stderr.write(`c=${c} round ${round + 1} ${b.method}: ${b.tokensPerSecond.toFixed(0)} tok/s${b.meanBatch !== undefined ? `, mean batch ${b.meanBatch}, fused rounds ${b.fusedRounds}` : ''}${b.depths ? `, depths ${b.depths.join('/')}` : ''}${b.mismatches ? `, MISMATCHES ${b.mismatches}` : ''}\n`);
  }
}
if (worldRound >= 0) await closeWorld(world);
for (const [c, r] of late) skipped.push(`c=${c} rounds ${r + 1}-${K}`);
const singleNames = worldRound >= 0 ? [...world.singles.keys()] : [];
clients.postMessage('close');

// ---- Summaries ----
const q = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))];
};
const of = (m: string, c: number) => blocks.filter((b) => b.method === m && b.concurrency === c);
const summarize = (m: string, c: number) => {
  const bs = of(m, c);
  if (!bs.length) return undefined;
  const tps = spread(bs.map((b) => b.tokensPerSecond)), lat = bs.flatMap((b) => b.latencies);
  const depths = bs.every((b) => b.depths) ? bs[0].depths!.map((_, d) => sum(bs.map((b) => b.depths![d]))) : undefined;
  return {
    method: m, server: served.has(m), concurrency: c, blocks: bs.length, tokensPerSecond: r3(tps.median), min: r3(tps.min), max: r3(tps.max), q1: r3(tps.q1), q3: r3(tps.q3),
    p50Ms: r3(q(lat, 0.5)), p99Ms: r3(q(lat, 0.99)),
    meanBatch: bs[0].meanBatch !== undefined ? r3(spread(bs.map((b) => b.meanBatch!)).median) : undefined,
    fusedRounds: bs[0].fusedRounds !== undefined ? sum(bs.map((b) => b.fusedRounds!)) : undefined, depths,
  };
};
const summary = levels.flatMap((c) => [...policies, ...(c === 1 ? singleNames : [])].map((m) => summarize(m, c)).filter((x) => x !== undefined));
const at = (m: string, c: number) => summary.find((s) => s.method === m && s.concurrency === c);

/** `a` against `b` at level c: per round (blocks of the same round), and the ratio of their medians. */
function compare(a: string, b: string, c: number, goal: number, what: string) {
  const A = at(a, c), B = at(b, c);
  if (!A || !B) return { goal: what, a, b, concurrency: c, target: goal, verdict: 'not run' as const };
  const rounds = [...new Set(of(a, c).map((x) => x.round))].filter((r) => of(b, c).some((x) => x.round === r));
  const ratios = rounds.map((r) => of(a, c).find((x) => x.round === r)!.tokensPerSecond / of(b, c).find((x) => x.round === r)!.tokensPerSecond);
  const s = spread(ratios), ofMedians = A.tokensPerSecond / B.tokensPerSecond;
  // The goal is read on the paired ratios' median; a target inside their quartiles is a tie at this resolution.
  const verdict = s.median >= goal ? (s.q1 >= goal ? 'met' : 'met (inside the spread)') : s.q3 < goal ? 'not met' : 'not met (inside the spread)';
  return { goal: what, a, b, concurrency: c, target: goal, rounds: ratios.length, pairedRatio: { median: r3(s.median), q1: r3(s.q1), q3: r3(s.q3), min: r3(s.min), max: r3(s.max) }, ratioOfMedians: r3(ofMedians), aTokensPerSecond: A.tokensPerSecond, bTokensPerSecond: B.tokensPerSecond, verdict };
}
// The best single-request speed: the highest median at concurrency 1 among every method but SmartSpec's server.
const c1 = summary.filter((s) => s.concurrency === 1 && s.method !== 'smartspec' && s.method !== ENGINE);
const best = c1.length ? c1.reduce((x, y) => (y.tokensPerSecond > x.tokensPerSecond ? y : x)) : undefined;
const checks = [
  ...(best && levels.includes(1) ? [compare('smartspec', best.method, 1, 0.95, 'concurrency 1: SmartSpec >= 0.95x the best single-request speed')] : []),
  ...(cMax > 1 ? policies.filter((p) => p !== 'smartspec').map((p) => compare('smartspec', p, cMax, 1, `concurrency ${cMax}: SmartSpec throughput >= ${p}`)) : []),
];
// Not goals: where the concurrency-1 gap lies (HTTP against the engine called in-process; the engine against the yardstick).
const diagnostics = levels.includes(1) && served.has('smartspec') && best
  ? [compare('smartspec', ENGINE, 1, 1, 'diagnostic: served SmartSpec against its engine without HTTP'), compare(ENGINE, best.method, 1, 1, 'diagnostic: SmartSpec\'s engine without HTTP against the best single-request method')]
  : [];
const mismatches = sum(blocks.map((b) => b.mismatches));
const plainGain = Object.fromEntries(levels.filter((c) => c > 1).map((c) => [c, at('plain', c) && at('plain', 1) ? r3(at('plain', c)!.tokensPerSecond / at('plain', 1)!.tokensPerSecond) : null]));

const out = f.out as string;
mkdirSync(out, { recursive: true });
const wallSeconds = Math.round((performance.now() - t0) / 100) / 10;
const result = {
  command: `node --import tsx scripts/load-test.ts ${process.argv.slice(2).join(' ')}`.trim(),
  model: load.model ?? 'embedded default', draft: load.draft ?? (load.model ? null : 'embedded default'), threads: load.threads, maxBatch, requestsPerBlock: Object.fromEntries(levels.map((c) => [c, blockSize(c)])), rounds: K, maxNewTokens: N,
  wallSeconds, warmupSeconds: Math.round(warmupSeconds * 10) / 10, skipped, mismatches, bestSingle: best?.method, checks, diagnostics, plainBatchGain: plainGain, summary,
  sessions: f.sessions, renew, costModels,
  // Per request (latency ms, tokens) at c=1 only, where the requests of a round run one at a time.
  blocks: blocks.map(({ latencies, counts, ...b }) => ({ ...b, p50Ms: r3(q(latencies, 0.5)), ...(b.concurrency === 1 ? { requestMs: latencies, requestTokens: counts } : {}) })),
};
writeFileSync(join(out, 'load-test.json'), JSON.stringify(result, null, 2) + '\n');
const n0 = (x: number) => x.toFixed(0), n2 = (x: number) => x.toFixed(2);
const phaseRow = (p: string) => {
  const bs = of(p, cMin), n = Math.max(1, sum(bs.map((b) => b.phased ?? 0)));
  return `| ${served.has(p) ? p : `*${p}*`} | ${PHASES.map((k) => n2(sum(bs.map((b) => b.phaseMs?.[k] ?? 0)) / n)).join(' | ')} | ${n2(at(p, cMin)?.p50Ms ?? NaN)} |`;
};
const md = [
  `# eaglet serve load test`, '',
  `\`${result.command}\` (${wallSeconds} s; served methods on ${shared ? 'one engine\'s sessions' : 'one engine each'}, ${renew ? 'new sessions every round' : 'the same sessions all run'}; per level ${K} rounds, each a block of max(${f.requests}, c) greedy requests (at c=1 ${f.c1Requests}, taking turns request by request) of ${N} tokens from every method in shuffled order; max batch ${maxBatch}, ${load.threads} thread(s); median of the blocks, min-max in brackets)`, '',
  `Greedy replies (served and library) differing from single-request plain decoding: **${mismatches}**.${skipped.length ? ` Not run (time limit): ${skipped.join(', ')}.` : ''}`, '',
  '## Goals', '',
  'Each goal compares two methods\' blocks of the same round (paired ratio: median, quartiles, min-max over rounds) and, for reference, their medians.', '',
  '| goal | compared | paired ratio median (q1-q3; min-max) | medians, tok/s | verdict |', '| --- | --- | ---: | ---: | --- |',
  ...[...checks, ...diagnostics].map((k) => 'pairedRatio' in k && k.pairedRatio
    ? `| ${k.goal} | ${k.a} / ${k.b} | **${k.pairedRatio.median.toFixed(3)}** (${k.pairedRatio.q1.toFixed(3)}-${k.pairedRatio.q3.toFixed(3)}; ${k.pairedRatio.min.toFixed(3)}-${k.pairedRatio.max.toFixed(3)}) | ${n0(k.aTokensPerSecond)} / ${n0(k.bTokensPerSecond)} (${k.ratioOfMedians.toFixed(3)}) | ${k.goal.startsWith('diagnostic') ? '' : k.verdict} |`
    : `| ${k.goal} | ${k.a} / ${k.b} | | | not run |`),
  '', best ? `Best single-request speed at concurrency 1 (highest median, every method but SmartSpec's server): **${best.method}**, ${n0(best.tokensPerSecond)} tok/s.` : '', '',
  '## Throughput', '',
  '| method | concurrency | blocks | tok/s | (min-max) | p50 ms | p99 ms | mean batch per target pass | fused rounds | depths 0/1/.. |', '| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |',
  ...summary.map((s) => `| ${s.server ? s.method : `*${s.method}*`} | ${s.concurrency} | ${s.blocks} | ${n0(s.tokensPerSecond)} | ${n0(s.min)}-${n0(s.max)} | ${s.p50Ms.toFixed(1)} | ${s.p99Ms.toFixed(1)} | ${s.meanBatch?.toFixed(2) ?? ''} | ${s.fusedRounds ?? ''} | ${s.depths?.join('/') ?? ''} |`),
  '', '(*Italic*: in-process, no HTTP: single-request library decoding, and SmartSpec\'s serving engine called directly.)', '',
  `Where a request's time went at concurrency ${cMin}, mean ms per request: servers by the server's phases (latency p50 is the client's); in-process methods, their prefill (the engine: to its first tokens, as a server's) and the rest (decode):`, '',
  `| method | ${PHASES.join(' | ')} | latency p50 |`, `| --- | ${PHASES.map(() => '---:').join(' | ')} | ---: |`,
  ...summary.filter((x) => x.concurrency === cMin && of(x.method, cMin).some((b) => b.phased)).map((x) => phaseRow(x.method)),
  '', `Where a served block's time went at concurrency ${cMax}, mean ms per block (target passes, the requests' work between passes, draft passes, fused rounds, garbage collection; BlockSplit):`, '',
  '| method | wall | target steps | target passes | between passes | draft passes (n) | fused rounds | GC (n) |', '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ...policies.filter((p) => of(p, cMax).some((b) => b.split)).map((p) => {
    const bs = of(p, cMax), mean = (f: (b: Block) => number) => sum(bs.map(f)) / bs.length, x = (k: keyof BlockSplit) => mean((b) => b.split![k]);
    return `| ${p} | ${n2(mean((b) => b.wallMs))} | ${n2(x('targetSteps'))} | ${n2(x('targetMs'))} | ${n2(x('afterMs'))} | ${n2(x('draftMs'))} (${n2(x('draftPasses'))}) | ${n2(x('fusedMs'))} | ${n2(x('gcMs'))} (${n2(x('gcs'))}) |`;
  }),
  '', `Plain decoding's throughput against its own at concurrency 1: ${JSON.stringify(plainGain)}.`, '',
].join('\n');
writeFileSync(join(out, 'load-test.md'), md);
writeFileSync(join(out, 'load-test.svg'), linePlot(policies.map((p) => {
  const s = summary.filter((x) => x.method === p);
  return { label: p, x: s.map((x) => x.concurrency), y: s.map((x) => x.tokensPerSecond) };
}), { title: 'eaglet serve: throughput vs concurrency', xLabel: 'concurrent clients', yLabel: 'tokens/s' }));
process.stdout.write(md);
await reference.dispose();
process.exitCode = mismatches > 0 ? 1 : 0;
