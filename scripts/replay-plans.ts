/**
 * Replays SmartSpec's batch planner on the cost models a load test recorded (its JSON's
 * `costModels`: each server's start-up measurements, calibration margin, and the pass scales and
 * overhead it ended with) for standard scenarios: `members` requests of typical acceptance
 * (2.2 of 3 drafts accepted a round, as static-3 realised at c=2) whose heads are each `rows`
 * rows behind. Prints, per server and scenario, the plan of the greedy ascent alone (the planner
 * with `jointMax` 0, as before session 16) and of the planner as it is, each with its modelled
 * goodput over every request at 0, and the best of every plan.
 *
 *   node --import tsx scripts/replay-plans.ts --file runs/load-test/load-test.json [--rows 4,10,33]
 *     [--members 2]
 *
 * Then, where the JSON holds static-3 and plain blocks of the same round, the model's goodput
 * ratio of every request at depth 3 against all at 0 (heads one round behind) beside the
 * static-3 / plain throughput measured, medians by concurrency: how far the model can be trusted
 * with joint drafting at each batch size.
 */
import { existsSync, readFileSync } from 'node:fs';
import { FormatError } from '../src/errors.ts';
import type { FlagSpec } from '../src/option-schema.ts';
import { spread } from '../src/util/stats.ts';
import { DEPTH, recordedPlanner, TYPICAL, type RecordedCostModel } from './recorded-planner.ts';
import { scriptFlags } from './script-flags.ts';

const FLAGS: FlagSpec[] = [
  { flag: 'file', type: 'string', default: 'runs/load-test/load-test.json', meta: 'FILE', help: 'a load test\'s JSON (scripts/load-test.ts)' },
  { flag: 'rows', type: 'ints', default: [1, 4, 10, 16, 33], meta: 'LIST', help: 'rows each head is behind (its first draft level\'s catch-up)' },
  { flag: 'members', type: 'int', min: 1, max: 3, default: 2, meta: 'N', help: 'requests in the batch' },
];
const f = scriptFlags(import.meta.url, FLAGS);
const file = f.file as string;
if (!existsSync(file)) throw new FormatError(file, 'no such file');
let run: { costModels?: RecordedCostModel[]; renew?: boolean; blocks?: Block[] };
try {
  run = JSON.parse(readFileSync(file, 'utf8'));
} catch (e) {
  throw new FormatError(file, `not JSON: ${(e as Error).message}`);
}
if (!run.costModels?.length) throw new FormatError(file, 'holds no costModels (a load test records them for its smartspec servers)');

interface Block { method: string; concurrency: number; round: number; tokens: number; tokensPerSecond: number; depths?: number[] }

const D = DEPTH;
/** The server's planner as it ended, `n` started members having seen typical rounds, each head `rows` behind. */
const server = (c: RecordedCostModel, n: number, rows: number, jointMax?: number) => recordedPlanner(c, new Array(n).fill(TYPICAL), new Array(n).fill(rows), jointMax);

/** Every plan of `n` lengths 0..D. */
const plans = (n: number): number[][] => (n === 0 ? [[]] : plans(n - 1).flatMap((k) => Array.from({ length: D + 1 }, (_, d) => [...k, d])));
const x = (v: number) => `${v.toFixed(2)}x`;

const n = f.members as number, tally = { ascent: [] as number[], joint: [] as number[] };
for (const [i, c] of run.costModels.entries()) {
  const lines: string[] = [];
  for (const rows of f.rows as number[]) {
    const { planner: p, members } = server(c, n, rows);
    const none = p.goodput(members, new Array(n).fill(0)), ratio = (k: number[]) => p.goodput(members, k) / none;
    const best = plans(n).reduce((a, k) => (ratio(k) > ratio(a) * (1 + 1e-9) ? k : a));
    const ascent = server(c, n, rows, 0).plan(), joint = server(c, n, rows).plan();
    tally.ascent.push(ratio(ascent));
    tally.joint.push(ratio(joint));
    lines.push(`  rows ${String(rows).padStart(3)}: ascent ${ascent.join('/')} ${x(ratio(ascent))}, planner ${joint.join('/')} ${x(ratio(joint))}, best ${best.join('/')} ${x(ratio(best))}`);
  }
  console.log(`server ${i}: margin ${(c.calibration?.margin ?? NaN).toFixed(3)}, pass scales ${c.passScale.map((s) => s.toFixed(2)).join(' / ')}\n${lines.join('\n')}`);
}
const med = (xs: number[]) => (xs.length ? spread(xs).median : NaN);
console.log(`\n${n} requests, modelled goodput over all at 0, median (min-max) of ${tally.joint.length} cases: ascent ${x(med(tally.ascent))} (${x(Math.min(...tally.ascent))}-${x(Math.max(...tally.ascent))}), planner ${x(med(tally.joint))} (${x(Math.min(...tally.joint))}-${x(Math.max(...tally.joint))})`);

// The model's static-3 against what the load test measured, round by round (one cost model a round with --renew).
const byC = new Map<number, { model: number; measured: number }[]>();
for (const s3 of run.blocks ?? []) {
  if (s3.method !== 'static-3' || s3.round < 0 || !s3.depths?.[D]) continue;
  const plain = run.blocks!.find((b) => b.method === 'plain' && b.concurrency === s3.concurrency && b.round === s3.round);
  const c = run.renew ? run.costModels[s3.round] : run.costModels[0];
  if (!plain || !c || s3.concurrency < 2) continue;
  const E = s3.tokens / s3.depths[D], { planner: p, members } = server(c, s3.concurrency, Math.round(E));
  const ms = (d: number) => { const s = p.stepCost(members, new Array(s3.concurrency).fill(d)); return s.passMs + s.overheadMs; };
  const rows = byC.get(s3.concurrency) ?? [];
  rows.push({ model: E / (ms(D) / ms(0)), measured: s3.tokensPerSecond / plain.tokensPerSecond });
  byC.set(s3.concurrency, rows);
}
if (byC.size) console.log('\nevery request at 3 against all at 0: the model (this round\'s acceptance) and static-3 / plain measured, medians over rounds');
for (const [c, rows] of [...byC].sort((a, b) => a[0] - b[0]))
  console.log(`  c=${c}: model ${x(med(rows.map((r) => r.model)))}, measured ${x(med(rows.map((r) => r.measured)))}, model / measured per round ${x(med(rows.map((r) => r.model / r.measured)))} (${rows.length} rounds)`);
