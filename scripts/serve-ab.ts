/**
 * Serving engines side by side in one process, no HTTP: which difference between the servers
 * makes one slower when they plan the same steps (issue 15). The load test times each server
 * on one block of requests per level; this interleaves them finely instead.
 *
 *   node --import tsx scripts/serve-ab.ts [--policies smartspec,static-3,plain] [--concurrency 1]
 *     [--repeats 6] [--requests 16] [--max-new-tokens 48] [--max-batch 16] [--threads 1]
 *
 * One Engine per policy over one loaded embedded pair, built as `serve()` builds them (fused round on
 * where the policy drafts; a policy listed twice gets a second engine). At --concurrency 1 the
 * engines take turns request by request (the order rotated), each request alone in its engine;
 * at more, they take turns level by level (`requests` greedy completions by that many
 * concurrent callers of Engine.submit). Reported per repeat and as median (min-max): decode ms
 * per request (its generation time less prefill), decode ms per request round, tok/s, and the
 * speculation-length histogram (what the engine planned), and where a request round's decode time
 * goes (the generator's split: policy, draft, verify, the rest). Above one request, also where a
 * target step's wall time goes (the level's wall time over its target steps), from the batch
 * lanes' counters (LaneStats): the target and draft passes a step (wall time of the passes, of
 * it the ORT call and the feeds), and the requests' own work between passes (after a target
 * pass: accepting, commits, the next plan and tree; after a draft pass: the tree's next level).
 * A pass starts only when every request waits on it, so one request's verify wait holds the
 * other requests' work between the passes (SmartSpec's batch planning included): the paired
 * ratios split a step into its passes and the rest.
 *
 * --one-engine: ONE smartspec engine, the policies taking turns in it (Engine.setPolicy), request
 * by request at c=1 and level by level above: the same sessions, caches and start-up, so what
 * differs is the policy alone. Separate engines of one configuration differ by a few per cent on their own (measured:
 * paired medians 0.97-1.04 between two static-3 engines), which is the size of the gaps sought.
 * Also printed: each policy's ms a round inside the fused round's ORT call, and its per-repeat
 * ratios to the first policy (median, quartiles).
 *
 * --run-as P: the engines are built and started as --policies lists them (a smartspec engine
 * measures its cost model at start-up on its own batch sessions), then all serve with policy P:
 * e.g. `--policies plain,smartspec --run-as plain` shows whether the start-up leaves a
 * smartspec engine's plain steps slower.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadGenerator } from '../src/api.ts';
import { DEFAULT_DIR } from '../src/default-model.ts';
import type { FlagSpec } from '../src/option-schema.ts';
import { scriptFlags } from './script-flags.ts';
import { Engine } from '../src/serve/engine.ts';
import { spread } from '../src/util/stats.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'policies', type: 'string', default: 'smartspec,static-3,plain', meta: 'LIST', help: 'one engine each (a repeated name: a second engine)' },
  { flag: 'concurrency', type: 'int', min: 1, default: 1, meta: 'C', help: 'concurrent requests per engine' },
  { flag: 'repeats', type: 'int', min: 1, default: 6, meta: 'R', help: 'repeats (median, min-max reported)' },
  { flag: 'requests', type: 'int', min: 1, default: 16, meta: 'N', help: 'requests per engine per repeat' },
  { flag: 'max-new-tokens', type: 'int', min: 1, default: 48, meta: 'N', help: 'tokens per request' },
  { flag: 'max-batch', type: 'int', min: 1, default: 16, meta: 'B', help: 'batch slots (as the load test: its highest concurrency)' },
  { flag: 'threads', type: 'int', min: 1, default: 1, meta: 'N', help: 'ORT intra-op threads' },
  { flag: 'one-engine', type: 'bool', help: 'one smartspec engine, the policies in turn (request by request at c=1, level by level above)' },
  { flag: 'run-as', type: 'string', meta: 'P', help: 'every engine, built and started as its --policies entry, then serves with policy P (what the build and start-up alone change)' },
];
const f = scriptFlags(import.meta.url, FLAGS);
const names = String(f.policies).split(','), C = f.concurrency as number, R = f.requests as number, N = f.maxNewTokens as number;
const prompts = readFileSync(join(DEFAULT_DIR, 'heldout-prompts.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as number[]);
const g = await loadGenerator({ threads: f.threads as number, keepWeights: true });
const one = f.oneEngine === true;
const make = (policy: string) => new Engine(g, { maxBatch: f.maxBatch as number, maxQueue: 1024, policy, threads: f.threads as number, fusedRound: policy !== 'plain' });
const shared = one ? make('smartspec') : undefined;
const engines = names.map((p) => shared ?? make(p));
for (const e of new Set(engines)) await e.start();
if (f.runAs !== undefined) for (const e of new Set(engines)) e.setPolicy(String(f.runAs));
const label = names.map((p, i) => (names.indexOf(p) === i ? p : `${p}#${names.slice(0, i + 1).filter((x) => x === p).length}`));

interface Tally { decodeMs: number; tokens: number; wallMs: number; depths: number[]; policyMs: number; draftMs: number; verifyMs: number; ortMs: number; ortRounds: number; lanes: number[] }
const fresh = (e: Engine): Tally => ({ decodeMs: 0, tokens: 0, wallMs: 0, depths: e.metrics.depthCounts.map(() => 0), policyMs: 0, draftMs: 0, verifyMs: 0, ortMs: 0, ortRounds: 0, lanes: laneFigures(e).map(() => 0) });
/**
 * The batch lanes' counters (LaneStats), in the order LANE_PARTS names them: target steps, then
 * per lane (target, draft) ms in passes, in their ORT call, building feeds, and between passes;
 * then ms in fused rounds (Batcher.outside).
 */
const laneFigures = (e: Engine): number[] => {
  const t = e.targetStats, d = e.draftStats;
  return [t.steps, t.ms, t.runMs, t.feedsMs, t.afterMs, d?.steps ?? 0, d?.ms ?? 0, d?.runMs ?? 0, d?.feedsMs ?? 0, d?.afterMs ?? 0, e.batcher.outside()];
};
// Last: whole fused rounds (a lone request's, outside the lanes: a level's tail), no part of a step.
const LANE_PARTS = ['steps', 'target passes', 'ORT', 'feeds', 'after', 'draft steps', 'draft passes', 'ORT', 'feeds', 'after', 'fused rounds'];

/** One request to completion, added to `t` (`policy`: with --one-engine, the policy it runs). */
async function request(e: Engine, prompt: number[], t: Tally, policy?: string): Promise<void> {
  if (one && policy) e.setPolicy(policy);
  const d0 = e.metrics.depthCounts.slice(), o0 = e.fusedRoundMs, r0 = e.fusedRounds;
  const it = e.submit(prompt, { maxNewTokens: N, temperature: 0 });
  let r = await it.next();
  while (!r.done) r = await it.next();
  const s = r.value;
  t.decodeMs += s.ms.total - s.ms.prefill;
  t.tokens += s.newTokens;
  t.ortMs += e.fusedRoundMs - o0;
  t.ortRounds += e.fusedRounds - r0;
  t.policyMs += s.ms.policy;
  t.draftMs += s.ms.draft;
  t.verifyMs += s.ms.verify;
  // Only this request runs in the engine at c=1; at more, the histogram is the level's (summed below).
  if (C === 1) e.metrics.depthCounts.forEach((n, d) => (t.depths[d] += n - d0[d]));
}

/** `prompts` through `e` by C concurrent callers. */
async function level(e: Engine, ps: number[][], t: Tally): Promise<void> {
  const queue = [...ps], d0 = e.metrics.depthCounts.slice(), l0 = laneFigures(e), t0 = performance.now();
  await Promise.all(Array.from({ length: C }, async () => {
    for (let p = queue.shift(); p; p = queue.shift()) await request(e, p, t);
  }));
  t.wallMs += performance.now() - t0;
  e.metrics.depthCounts.forEach((n, d) => (t.depths[d] += n - d0[d]));
  laneFigures(e).forEach((x, i) => (t.lanes[i] += x - l0[i]));
}

/** Request rounds (a round = one target verification of one request). */
const rounds = (t: Tally) => t.depths.reduce((a, b) => a + b, 0);
// Warm-up, not reported: every engine at the concurrency measured.
for (const e of new Set(engines)) await level(e, prompts.slice(0, Math.max(C, 4)), fresh(e));
const per = engines.map(() => ({ msPerRequest: [] as number[], msPerRound: [] as number[], tps: [] as number[], split: [] as number[][], ort: [] as number[], lanes: [] as number[][] }));
for (let rep = 0; rep < (f.repeats as number); rep++) {
  const tallies = engines.map(fresh);
  const ps = Array.from({ length: R }, (_, j) => prompts[(j + rep * 7) % prompts.length]);
  if (C === 1) {
    for (let j = 0; j < R; j++)
      for (let k = 0; k < engines.length; k++) {
        const i = (k + j + rep) % engines.length, t0 = performance.now();
        await request(engines[i], ps[j], tallies[i], names[i]);
        tallies[i].wallMs += performance.now() - t0;
      }
  } else
    for (let k = 0; k < engines.length; k++) {
      const i = (k + rep) % engines.length;
      if (one) engines[i].setPolicy(names[i]); // the level's requests are admitted under it
      await level(engines[i], ps, tallies[i]);
    }
  const line = tallies.map((t, i) => {
    per[i].msPerRequest.push(t.decodeMs / R);
    per[i].msPerRound.push(t.decodeMs / rounds(t));
    per[i].tps.push((t.tokens * 1000) / t.wallMs);
    const n = rounds(t);
    per[i].ort.push(t.ortRounds ? t.ortMs / t.ortRounds : NaN);
    per[i].split.push([t.policyMs / n, t.draftMs / n, t.verifyMs / n, (t.decodeMs - t.policyMs - t.draftMs - t.verifyMs) / n]);
    per[i].lanes.push([t.wallMs / t.lanes[0], ...t.lanes.slice(1).map((x) => x / t.lanes[0])]);
    return `${label[i]} ${(t.decodeMs / R).toFixed(2)} ms/request, ${(t.decodeMs / rounds(t)).toFixed(3)} ms/round, ${((t.tokens * 1000) / t.wallMs).toFixed(0)} tok/s, depths ${t.depths.join('/')}`;
  });
  console.log(`repeat ${rep + 1}: ${line.join(' | ')}`);
}
const show = (xs: number[], dp: number) => `${spread(xs).median.toFixed(dp)} (${Math.min(...xs).toFixed(dp)}-${Math.max(...xs).toFixed(dp)})`;
for (let i = 0; i < engines.length; i++) {
  const part = (j: number) => show(per[i].split.map((x) => x[j]), 4);
  console.log(`${label[i]}: decode ${show(per[i].msPerRequest, 2)} ms/request, ${show(per[i].msPerRound, 3)} ms/round, ${show(per[i].tps, 0)} tok/s`);
  console.log(`  ms a round: policy ${part(0)}, draft ${part(1)}, verify ${part(2)}, rest ${part(3)}`);
  // Above one request: a target step's wall time (the level's over its target steps) and the lanes' parts of it.
  if (C > 1) {
    const lane = (j: number) => show(per[i].lanes.map((x) => x[j]), 3);
    console.log(`  ms a target step: wall ${lane(0)}; ${LANE_PARTS.slice(1).map((p, j) => `${p} ${lane(j + 1)}`).join(', ')}`);
  }
}
// Paired: each repeat's figure over the first policy's in the same repeat.
const quart = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b), at = (p: number) => s[Math.round(p * (s.length - 1))];
  return `${at(0.5).toFixed(3)} (${at(0.25).toFixed(3)}-${at(0.75).toFixed(3)})`;
};
for (let i = 1; i < engines.length; i++) {
  const ratio = (get: (x: (typeof per)[number], r: number) => number) => quart(per[i].msPerRound.map((_, r) => get(per[i], r) / get(per[0], r)));
  console.log(`${label[i]} / ${label[0]}, per repeat, median (q1-q3): ms a round ${ratio((x, r) => x.msPerRound[r])}, verify ${ratio((x, r) => x.split[r][2])}${C > 1 ? `, a target step's passes (target and draft) ${ratio((x, r) => x.lanes[r][1] + x.lanes[r][6])}, the rest of it ${ratio((x, r) => x.lanes[r][0] - x.lanes[r][1] - x.lanes[r][6] - x.lanes[r][10])}` : ''}${C === 1 ? `, fused round's ORT call ${ratio((x, r) => x.ort[r])}` : ''}`);
}
for (const e of new Set(engines)) {
  await e.drain();
  await e.dispose();
}
await g.dispose();
