/**
 * SmartSpec's joint plans at small batches, on cost models recorded by the load test
 * (test/fixtures/smartspec-cost-models.json): two requests are planned by the best of every plan,
 * so both draft where each alone would not pay ([2, 2] from [0, 0]), a mixed plan stays where the
 * requests differ, and a full batch (c = 16) still takes the all-zero shortcut where nothing pays.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { SmartSpecPlanner, SmartSpecPolicy } from '../src/policies/smartspec.ts';
import { recordedPlanner as server, TYPICAL, type RecordedCostModel } from '../scripts/recorded-planner.ts';

const recorded: RecordedCostModel[] = JSON.parse(readFileSync(new URL('./fixtures/smartspec-cost-models.json', import.meta.url), 'utf8')).costModels;

/** The best of the 16 plans of two members by modelled goodput (the first of equals), with its goodput. */
function bestOfAll(planner: SmartSpecPlanner, members: SmartSpecPolicy[]): { k: number[]; g: number } {
  let best = { k: [0, 0], g: planner.goodput(members, [0, 0]) };
  for (let a = 0; a <= 3; a++)
    for (let b = 0; b <= 3; b++) {
      const g = planner.goodput(members, [a, b]);
      if (g > best.g * (1 + 1e-9)) best = { k: [a, b], g };
    }
  return best;
}

test('two requests draft together where no single raise pays: [d, d] beats [0, 0] by more than the margin (recorded cost models)', () => {
  let cases = 0;
  for (const c of recorded)
    for (const rows of [4, 8, 10, 16, 24, 33]) {
      // Catch-up `rows` each (plain steps since the last draft; 33: the load test's prompt).
      const { planner, members, plan } = server(c, [TYPICAL, TYPICAL], [rows, rows]);
      // The case the greedy ascent missed: no one request's raise from [0, 0] pays ...
      const none = planner.goodput(members, [0, 0]);
      const single = Math.max(...[1, 2, 3].flatMap((d) => [planner.goodput(members, [d, 0]), planner.goodput(members, [0, d])]));
      // ... while both drafting does, by more than the margin: the planner finds it.
      const best = bestOfAll(planner, members), depths = plan();
      if (single >= none || !(best.g > none * (1 + planner.margin))) continue;
      cases++;
      assert.ok(best.k[0] > 0 && best.k[0] === best.k[1], `margin ${c.calibration?.margin}, ${rows} rows: best ${best.k}`);
      assert.deepEqual(depths, best.k, `margin ${c.calibration?.margin}, ${rows} rows: planned ${depths}, best ${best.k} (${(best.g / none).toFixed(3)}x)`);
    }
  assert.ok(cases >= 6, `${cases} recorded cases where no single raise pays and [d, d] does`);
});

test('two requests are planned by the best of every plan, the margin rule kept (random histories, recorded cost models)', () => {
  let s = 3;
  const rand = () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  let joint = 0, mixed = 0, plain = 0;
  for (let run = 0; run < 400; run++) {
    const c = recorded[run % recorded.length];
    // Each member's own rounds: accepted drafts drawn up to a per-member skill, so the two can differ.
    const histories = [0, 1].map(() => {
      const skill = 0.2 + 0.8 * rand();
      return Array.from({ length: Math.floor(rand() * 12) }, () => Math.min(3, Math.floor(rand() * 4.5 * skill)));
    });
    const positions = [0, 1].map(() => 1 + Math.floor(rand() * 16));
    const { planner, members, plan } = server(c, histories, positions);
    const best = bestOfAll(planner, members);
    const want = best.g < planner.goodput(members, [0, 0]) * (1 + planner.margin) ? [0, 0] : best.k;
    const depths = plan();
    assert.deepEqual(depths, want, `run ${run}: planned ${depths}, best ${best.k}`);
    if (want[0] === 0 && want[1] === 0) plain++;
    else if (want[0] === want[1]) joint++;
    else mixed++;
  }
  // Every kind of plan drawn.
  assert.ok(joint > 20 && mixed > 20 && plain > 20, `joint ${joint}, mixed ${mixed}, plain ${plain}`);
});

test('a request that accepts its drafts and one that accepts none: the mixed plan, not a uniform one', () => {
  let mixed = 0;
  for (const c of recorded) {
    const { planner, members, plan } = server(c, [new Array(10).fill(3), new Array(10).fill(0)], [1, 1]);
    const best = bestOfAll(planner, members).k, depths = plan();
    // The one that accepts nothing never drafts; the other drafts where that pays alone (in one
    // recorded model a lone raise does not: the joint search then plans 0, as the ascent did).
    assert.deepEqual(depths, best);
    assert.equal(depths[1], 0);
    if (depths[0] > 0) mixed++;
  }
  assert.ok(mixed >= 2, `${mixed} mixed plans`);
});

test('a full batch (16 requests) where nothing pays takes the all-zero shortcut and plans 0 for all', () => {
  let total = 0;
  for (const c of recorded) {
    // The load test's prompts: every head still has the 33 prompt rows to read.
    const { planner, plan } = server(c, Array.from({ length: 16 }, () => TYPICAL), new Array(16).fill(33));
    const internals = planner as unknown as { planAllZero(): boolean };
    const own = internals.planAllZero.bind(planner);
    let fired = 0;
    internals.planAllZero = () => (own() ? (fired++, true) : false);
    assert.deepEqual(plan(), new Array(16).fill(0));
    total += fired;
  }
  // Where a raise could pay with every draft accepted and one catch-up row (one model of the
  // three), the search runs instead, and plans 0 too.
  assert.ok(total >= 2, `the shortcut planned ${total} of the 3 steps`);
});

test('a request joining a batch where nothing could pay is told no round could draft (its prompt is left to its first draft); beside one request (started or arriving with it) one could', () => {
  let skipped = 0;
  for (const c of recorded) {
    // Beside 15 started requests: where the all-zero shortcut holds, the head's prompt read would
    // be a draft pass no round uses.
    const full = server(c, Array.from({ length: 15 }, () => TYPICAL), new Array(15).fill(33));
    const joining = full.planner.policy();
    assert.equal(full.planner.mayDraftWith(joining), full.planner.mayDraft(16));
    if (!full.planner.mayDraftWith(joining)) skipped++;
    // Beside one: the joint search may draft both, so the prompt is read now (one catch-up row at its first plan).
    const pair = server(c, [TYPICAL], [33]);
    assert.equal(pair.planner.mayDraftWith(pair.planner.policy()), true);
    // Two arriving together, neither started yet: each sees the other.
    const burst = server(c, [], []), a = burst.planner.policy(), b = burst.planner.policy();
    assert.deepEqual([burst.planner.mayDraftWith(a), burst.planner.mayDraftWith(b)], [true, true]);
  }
  // The models where 16 requests take the all-zero shortcut (previous test): at least two of three.
  assert.ok(skipped >= 2, `skipped the read in ${skipped} of 3 models`);
});

/** A server on recorded model `c` with 16 requests admitted together, none started yet. */
function burstOf16(c: RecordedCostModel): { planner: SmartSpecPlanner; batch: SmartSpecPolicy[] } {
  const { planner } = server(c, [], []);
  return { planner, batch: Array.from({ length: 16 }, () => planner.policy()) };
}

test('requests admitted together count one another: after the first of 16 starts, the other 15 skip the prompt read where 16 could not draft', () => {
  let skipped = 0;
  for (const c of recorded) {
    // 16 requests prefilled in one pass; the first to resume plans (started) before the others ask.
    const { planner, batch } = burstOf16(c);
    batch[0].started = true;
    for (const p of batch.slice(1)) assert.equal(planner.mayDraftWith(p), planner.mayDraft(16));
    if (!planner.mayDraftWith(batch[1])) skipped++;
  }
  // Counting started requests only, each saw one companion and read (fails on the old code).
  assert.ok(skipped >= 2, `skipped the read in ${skipped} of 3 models`);
});

test('a burst\'s first request to start plans 0 where 16 could not draft, though as the batch\'s only member it would', () => {
  let held = 0;
  for (const c of recorded) {
    // 16 requests admitted together; the first to resume plans while the other 15 have not
    // started (prefilling, or about to plan), its head having read the prompt at the prefill.
    const { planner, batch } = burstOf16(c);
    batch[0].prefilled(32);
    const first = batch[0].plan({ position: 33, lastFeature: new Float32Array(1), rootToken: 0, maxDepth: 3 }).depth;
    // The same request as the only member of a batch step (one other request still prefilling
    // beside it is a batch of two: the joint search plans it, so that case is not this one).
    const one = server(c, [], []).planner, p = one.policy();
    one.policy(); // the batch's second member, still prefilling: not a lone request
    p.prefilled(32);
    const alone = p.plan({ position: 33, lastFeature: new Float32Array(1), rootToken: 0, maxDepth: 3 }).depth;
    if (!planner.mayDraft(16)) {
      assert.equal(first, 0, 'every member of the step counts: 16 cannot draft');
      if (alone > 0) held++;
    }
  }
  // Where the first request of two would draft (recorded models), the burst's does not (fails
  // on the old code, which planned it as a batch of one).
  assert.ok(held >= 2, `${held} models where the burst held a drafting plan back`);
});
