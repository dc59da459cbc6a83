/**
 * What a served step costs by plan against what SmartSpec's step model prices it at (issue 15):
 * one smartspec engine on the embedded pair, started as `eaglet serve` starts it (start-up
 * measurement and calibration), then blocks of requests at each concurrency and forced
 * speculation length (every request at depth d: SmartSpecPlanner.forced), the blocks interleaved
 * in rotated order, `repeats` times. Every batch step is timed from the lanes' passes (the
 * target's verify, the draft lane's first level after it and its later levels) and priced by the
 * planner's `stepCost` with the pass scales and overhead the start-up calibration left (frozen:
 * the planner learns from every forced step, so a block's end state would be fitted to that
 * block's depth), so the model's error shows per part and per depth. A lone request (c=1) runs
 * fused rounds: its steps are the rounds, priced by the lone model as it stands.
 *
 *   node --import tsx scripts/step-costs.ts [--concurrency 1,2,4] [--depths 0,1,2,3]
 *     [--repeats 5] [--requests 4] [--max-new-tokens 48] [--max-batch 16] [--threads 1]
 *     [--no-smartspec]
 *
 * Beside the forced blocks, a block planned by SmartSpec itself at each concurrency: its
 * throughput against the forced depth-0 block of the same repeat, its steps by plan, and, after
 * it, what its planner as it learned in serving prices every request at depth d over all at 0,
 * against the forced blocks' step walls (measured / priced: above 1, the model prices depth d
 * cheaper than it is; the error in its goodput ratio of d over plain).
 *
 * Only clean steps count: every request verifying d + 1 tokens, d draft levels of step-sized
 * calls before it, no prefill or prompt read in it, and the previous step in the same block.
 * Printed per concurrency and depth: the step's wall ms and the model's price (median over the
 * block's steps, then median (min-max) over repeats), measured / priced, and that ratio over
 * depth 0's (the error in the model's goodput ratio of depth d against plain: above 1, the model
 * prices d cheaper than it is), then each pass's measured ms over the start-up model's (unscaled)
 * and over the scale the planner applied.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadGenerator } from '../src/api.ts';
import { DEFAULT_DIR } from '../src/default-model.ts';
import type { FlagSpec } from '../src/option-schema.ts';
import type { SmartSpecPlanner, SmartSpecPolicy } from '../src/policies/smartspec.ts';
import { Engine } from '../src/serve/engine.ts';
import { spread } from '../src/util/stats.ts';
import { scriptFlags } from './script-flags.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'concurrency', type: 'ints', default: [1, 2, 4], meta: 'LIST', help: 'concurrent requests per block' },
  { flag: 'depths', type: 'ints', default: [0, 1, 2, 3], meta: 'LIST', help: 'forced speculation lengths' },
  { flag: 'repeats', type: 'int', min: 1, default: 5, meta: 'R', help: 'repeats (each runs every block once)' },
  { flag: 'requests', type: 'int', min: 1, default: 4, meta: 'N', help: 'requests per block, per concurrent caller' },
  { flag: 'max-new-tokens', type: 'int', min: 1, default: 48, meta: 'N', help: 'tokens per request' },
  { flag: 'max-batch', type: 'int', min: 1, default: 16, meta: 'B', help: 'batch slots (as the load test: its highest concurrency)' },
  { flag: 'threads', type: 'int', min: 1, default: 1, meta: 'N', help: 'ORT intra-op threads' },
  { flag: 'smartspec', type: 'bool', default: true, help: 'also blocks planned by SmartSpec (unforced): throughput, and its steps by plan' },
];
const f = scriptFlags(import.meta.url, FLAGS);
const Cs = f.concurrency as number[], Ds = f.depths as number[], N = f.maxNewTokens as number;
const prompts = readFileSync(join(DEFAULT_DIR, 'heldout-prompts.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as number[]);
const g = await loadGenerator({ threads: f.threads as number, keepWeights: true });
const engine = new Engine(g, { maxBatch: f.maxBatch as number, maxQueue: 1024, policy: 'smartspec', threads: f.threads as number, fusedRound: true });
await engine.start();
const planner = engine.planner!, D = planner.maxDepth;
/** The start-up calibration's scales and overhead: every step is priced with them (see above). */
const frozen = { scale: planner.passScale.slice(), a: planner.overhead.a, b: planner.overhead.b };
/** `fn` with the planner's scales and batch overhead set to `frozen`, then restored. */
function atStartUp<T>(fn: () => T): T {
  const o = planner.overhead, was = { scale: planner.passScale.slice(), a: o.a, b: o.b };
  planner.passScale.set(frozen.scale), (o.a = frozen.a), (o.b = frozen.b);
  try {
    return fn();
  } finally {
    planner.passScale.set(was.scale), (o.a = was.a), (o.b = was.b);
  }
}
console.log(`start-up: pass scales ${[...frozen.scale].map((x) => x.toFixed(2)).join(' / ')}, overhead ${frozen.a.toFixed(4)} ms a pass + ${frozen.b.toFixed(4)} a request-pass, margin ${planner.margin.toFixed(3)}, calibration samples ${engine.calibration?.samples.join(' / ')}`);
if (Ds.some((d) => d > D)) throw new RangeError(`--depths: at most the tree depth ${D}`);

/** One lane step (a flush) or fused round as it ran: when it ended, its ms, its calls' token counts. */
interface Pass { lane: 'draft' | 'target' | 'round'; end: number; ms: number; calls: number[] }
let log: Pass[] = [];
// The engine's lanes and fused round are private: wrapped here to time each step's passes.
type Flushable = { flush(): Promise<void>; pending: { tokens: ArrayLike<number> }[]; shortTokens: number };
const inner = engine as unknown as { draftLane: Flushable; targetLane: Flushable; round: { run(...a: unknown[]): Promise<unknown> } };
for (const [name, lane] of [['draft', inner.draftLane], ['target', inner.targetLane]] as const) {
  const flush = lane.flush.bind(lane);
  lane.flush = async () => {
    const calls = lane.pending.map((c) => c.tokens.length), t0 = performance.now();
    await flush();
    const t = performance.now();
    log.push({ lane: name, end: t, ms: t - t0, calls });
  };
}
const run = inner.round.run.bind(inner.round);
inner.round.run = async (...a: unknown[]) => {
  const t0 = performance.now(), out = await run(...a);
  const t = performance.now();
  log.push({ lane: 'round', end: t, ms: t - t0, calls: [(a[2] as ArrayLike<number>).length] }); // positions: the verified k + 1
  return out;
};
const short = inner.draftLane.shortTokens;

/** A clean step's figures: wall, priced, and per part measured / unscaled model / applied scale. */
interface Step { wall: number; price: number; verify: number[]; first: number[]; later: number[] }
/** Fake members for stepCost: it reads only their catch-up rows. */
const members = (rows: number[]) => rows.map((r) => ({ catchUpRows: r }) as unknown as SmartSpecPolicy);

/**
 * The step ending at log[i] (its verify, the draft levels before it) priced by `p`, or undefined
 * unless it is a clean step of `c` requests: each verifying k_i + 1 <= D + 1 tokens (at forced
 * depth `d`, k_i = d), max k_i draft levels before it, level j with one call per request at
 * k_i >= j, level 1's calls step-sized (a catch-up), later levels' one row each.
 */
function price(p: SmartSpecPlanner, i: number, c: number, d: number | undefined, prevEnd: number): (Step & { shape: number[] }) | undefined {
  const e = log[i];
  if (e.lane === 'round') {
    const k = e.calls[0] - 1;
    if (c !== 1 || (d !== undefined && k !== d)) return undefined;
    const c1 = p.stepCost(members([k + 1]), [k]);
    return { wall: e.end - prevEnd, price: c1.passMs + c1.overheadMs, verify: [e.ms, c1.passMs, 1], first: [], later: [], shape: [k] };
  }
  if (e.calls.length !== c || e.calls.some((t) => t > D + 1 || (d !== undefined && t !== d + 1))) return undefined;
  const k = e.calls.map((t) => t - 1), deepest = Math.max(...k);
  const levels: Pass[] = [];
  for (let j = i - 1; j >= 0 && log[j].lane === 'draft'; j--) levels.unshift(log[j]);
  if (levels.length !== deepest || levels.some((l, j) => l.calls.length !== k.filter((x) => x > j).length || l.calls.some((t) => t > (j ? 1 : short)))) return undefined;
  // Level 1's catch-up rows, given to the drafting requests in any order: the model reads their sum, count and longest.
  const rows = k.map(() => 1);
  if (deepest > 0) for (let a = 0, b = 0; a < c; a++) if (k[a] > 0) rows[a] = levels[0].calls[b++];
  const s = p.stepCost(members(rows), k);
  const n1 = deepest > 0 ? levels[0].calls.length : 0, sum = rows.reduce((a, r, j) => a + (k[j] > 0 ? r : 0), 0);
  const first = deepest > 0 ? p.draft.ms(sum, n1, Math.max(...levels[0].calls)) : 0;
  // The draft scales: [1] every level (one draft scale), or [1] the later levels and [2] the first.
  const scales = p.passScale, firstScale = scales.length > 2 ? scales[2] : scales[1];
  return {
    wall: e.end - prevEnd,
    price: s.passMs + s.overheadMs,
    verify: s.verifyMs > 0 ? [e.ms, s.verifyMs, scales[0]] : [], // a lone plain step: priced whole (alone[0])
    first: deepest > 0 ? [levels[0].ms, first, firstScale] : [],
    later: levels.slice(1).flatMap((l) => [l.ms, p.draft.ms(l.calls.length, l.calls.length, 1), scales[1]]),
    shape: k.sort((a, b) => b - a),
  };
}

/** One block: `c` callers, each `requests` requests in turn, every request at depth `d` (undefined: as SmartSpec plans). */
async function block(c: number, d: number | undefined, rep: number) {
  planner.forced = d;
  log = [];
  const d0 = engine.metrics.depthCounts.slice(), t0 = performance.now();
  let tokens = 0, next = rep * 13;
  await Promise.all(Array.from({ length: c }, async () => {
    for (let r = 0; r < (f.requests as number); r++) {
      const it = engine.submit(prompts[next++ % prompts.length], { maxNewTokens: N, temperature: 0 });
      let x = await it.next();
      while (!x.done) x = await it.next();
      tokens += x.value.newTokens;
    }
  }));
  const wallMs = performance.now() - t0;
  planner.forced = undefined;
  const depths = engine.metrics.depthCounts.map((n, j) => n - d0[j]), rounds = depths.reduce((a, b) => a + b, 0);
  const steps: (Step & { shape: number[] })[] = [];
  let prevEnd = NaN;
  for (let i = 0; i < log.length; i++) {
    const e = log[i];
    if (e.lane === 'draft') continue;
    const s = Number.isNaN(prevEnd) ? undefined : atStartUp(() => price(planner, i, c, d, prevEnd));
    if (s) steps.push(s);
    prevEnd = e.end;
  }
  return { steps, tokensPerRound: tokens / rounds, tps: (tokens * 1000) / wallMs, depths };
}

const show = (xs: number[], dp = 3) => (xs.length ? `${spread(xs).median.toFixed(dp)} (${Math.min(...xs).toFixed(dp)}-${Math.max(...xs).toFixed(dp)})` : '-');
const med = (xs: number[]) => (xs.length ? spread(xs).median : NaN);
const modes: (number | undefined)[] = [...Ds, ...(f.smartspec ? [undefined] : [])];
const label = (d: number | undefined) => (d === undefined ? 'smartspec' : `d=${d}`);
// Warm-up, not reported: every block once.
for (const c of Cs) for (const d of modes) await block(c, d, 0);
/** A concurrency and mode's figures per block; `part`: per pass kind, [measured / model, measured / priced, measured ms, model ms]. */
type Cell = { live: Map<number, number[]>; wall: number[]; price: number[]; ratio: number[]; tokens: number[]; tps: number[]; n: number[]; depths: number[]; part: Record<'verify' | 'first' | 'later', number[][]>; shapes: Map<string, { wall: number[]; ratio: number[]; n: number }> };
const cells = new Map<string, Cell>();
const cell = (c: number, d: number | undefined) => {
  const k = `${c},${label(d)}`;
  let x = cells.get(k);
  if (!x) cells.set(k, (x = { live: new Map(), wall: [], price: [], ratio: [], tokens: [], tps: [], n: [], depths: new Array<number>(D + 1).fill(0), part: { verify: [[], [], [], []], first: [[], [], [], []], later: [[], [], [], []] }, shapes: new Map() }));
  return x;
};
const order = Cs.flatMap((c) => modes.map((d) => [c, d] as const));
for (let rep = 0; rep < (f.repeats as number); rep++) {
  for (let j = 0; j < order.length; j++) {
    const [c, d] = order[(j + rep * 3) % order.length];
    const { steps, tokensPerRound, tps, depths } = await block(c, d, rep + 1);
    const x = cell(c, d);
    x.tps.push(tps);
    // After a SmartSpec block: what its planner, as it learned in serving, prices every request at
    // each depth (the head `d + 1` rows behind: a drafted round's catch-up), by repeat; its
    // all-zero steps' samples still waiting (SmartSpecPlanner.deferSteps) learned from first.
    if (d === undefined) planner.learnDeferred();
    if (d === undefined && c > 1)
      for (const e of Ds) {
        const k = new Array<number>(c).fill(e), q = planner.stepCost(members(k.map(() => e + 1)), k);
        const xs = x.live.get(e) ?? [];
        xs[rep] = q.passMs + q.overheadMs;
        x.live.set(e, xs);
      }
    depths.forEach((n, i) => (x.depths[i] += n));
    if (!steps.length) continue;
    x.wall.push(med(steps.map((s) => s.wall)));
    x.price.push(med(steps.map((s) => s.price)));
    x.ratio.push(med(steps.map((s) => s.wall / s.price)));
    x.tokens.push(tokensPerRound);
    x.n.push(steps.length);
    // Per part: measured over the unscaled model, and over the scaled one (the scale applied).
    for (const part of ['verify', 'first', 'later'] as const) {
      const r: number[] = [], rs: number[] = [], ms: number[] = [], model: number[] = [];
      for (const s of steps)
        for (let k = 0; k < s[part].length; k += 3) r.push(s[part][k] / s[part][k + 1]), rs.push(s[part][k] / (s[part][k + 1] * s[part][k + 2])), ms.push(s[part][k]), model.push(s[part][k + 1]);
      if (r.length) [r, rs, ms, model].forEach((xs, i) => x.part[part][i].push(med(xs)));
    }
    if (d === undefined)
      for (const s of steps) {
        const key = s.shape.join('/');
        let y = x.shapes.get(key);
        if (!y) x.shapes.set(key, (y = { wall: [], ratio: [], n: 0 }));
        y.wall.push(s.wall), y.ratio.push(s.wall / s.price), y.n++;
      }
  }
  console.error(`repeat ${rep + 1} done`);
}
console.log(`${f.repeats} repeats of ${f.requests} requests per caller, ${N} tokens each; step figures: median over a block's clean steps, then median (min-max) over blocks`);
for (const c of Cs) {
  const base = cells.get(`${c},d=0`);
  for (const d of modes) {
    const x = cells.get(`${c},${label(d)}`);
    if (!x) continue;
    // Paired by repeat against depth 0: measured / priced (the model's goodput-ratio error at d: above 1, d priced cheaper than it is), and block throughput.
    const rel = base && d !== 0 ? x.ratio.map((r, i) => r / (base.ratio[i] ?? NaN)).filter(Number.isFinite) : [];
    const tps = base && d !== 0 ? x.tps.map((t, i) => t / (base.tps[i] ?? NaN)).filter(Number.isFinite) : [];
    const part = (p: 'verify' | 'first' | 'later') => (x.part[p][0].length ? `; ${p} ${med(x.part[p][2]).toFixed(3)} ms (model ${med(x.part[p][3]).toFixed(3)}): ${show(x.part[p][0], 2)} of model, ${show(x.part[p][1], 2)} of priced` : '');
    console.log(`c=${c} ${label(d)}: ${show(x.tps, 0)} tok/s${tps.length ? ` (${show(tps)} of d=0)` : ''}; step wall ${show(x.wall)} ms, priced ${show(x.price)}, wall/priced ${show(x.ratio)}${rel.length ? `, over d=0's ${show(rel)}` : ''}, tokens/round ${show(x.tokens, 2)}, steps/block ${show(x.n, 0)}${part('verify')}${part('first')}${part('later')}`);
    if (d === undefined && x.live.size && base) {
      // The learned model's price of depth e over depth 0's against the forced blocks' step walls, paired by repeat.
      const errs = Ds.filter((e) => e > 0).map((e) => {
        const live = x.live.get(e)!, live0 = x.live.get(0)!, cd = cells.get(`${c},d=${e}`);
        const r = live.map((v, i) => (cd?.wall[i] !== undefined && base.wall[i] !== undefined ? cd.wall[i] / base.wall[i] / (v / live0[i]) : NaN)).filter(Number.isFinite);
        return `d=${e} ${show(r)}`;
      });
      console.log(`  learned in its blocks: price of every request at d over at 0, measured (forced blocks' step walls) / priced: ${errs.join(', ')}; pass scales at the run's end ${[...planner.passScale].map((v) => v.toFixed(2)).join(' / ')}`);
    }
    if (d === undefined) {
      console.log(`  rounds at depth ${x.depths.map((n, i) => `${i}: ${n}`).join(', ')}; clean steps by plan (lengths, sorted): ${[...x.shapes].sort((a, b) => b[1].n - a[1].n).map(([k, y]) => `[${k}] ${y.n}x wall ${med(y.wall).toFixed(3)} ms, wall/priced ${med(y.ratio).toFixed(3)}`).join('; ')}`);
    }
  }
}
await engine.drain();
await engine.dispose();
await g.dispose();
