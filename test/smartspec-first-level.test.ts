/**
 * SmartSpec prices a step's first draft level apart from its later levels: the draft lane times
 * the first level (LaneStats.coldMs, right after the target pass) apart, and each has its own
 * pass scale, learned in serving and seeded by the start-up calibration. Fake clocks and lane
 * timers: no timed assertions.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SmartSpecPlanner, StepCost, type SmartSpecPolicy } from '../src/policies/smartspec.ts';
import type { RoundState } from '../src/policies/policy.ts';

const flat = (ms: number) => new StepCost([1, 64], [ms, ms], [ms, ms], 16);
const state = (position: number): RoundState => ({ position, lastFeature: new Float32Array(1), rootToken: 0, maxDepth: 3 });

/**
 * A planner whose start-up model prices a verify pass at 1 ms and every draft level at 0.8 ms, on
 * a host where the verify pass takes 1 ms, a step's first draft level `firstMs` (right after the
 * target pass: cold) and each later level `laterMs`, plus 0.02 ms of JS a pass and 0.01 a
 * request-pass. `cold`: the draft lane times its first level apart (LaneStats.coldMs).
 */
function setup(firstMs: number, laterMs: number, cold = true) {
  let step = 0, clock = 0;
  const lanes = [{ ms: 0 }, { ms: 0, coldMs: cold ? 0 : undefined }] as [{ ms: number }, { ms: number; coldMs?: number }];
  const planner = new SmartSpecPlanner(flat(1), flat(0.8), 3, 3, () => step, undefined, 0.9, () => clock);
  planner.laneTimes = lanes;
  /** One step: each member plans (or runs the forced length), its passes take their time, each observes `accepted`. */
  const run = (members: SmartSpecPolicy[], accepted: number) => {
    const ks = members.map((p) => p.plan(state(10 + step)).depth);
    const levels = Math.max(...ks);
    const draft = levels > 0 ? firstMs + (levels - 1) * laterMs : 0;
    lanes[0].ms += 1;
    lanes[1].ms += draft;
    if (lanes[1].coldMs !== undefined && levels > 0) lanes[1].coldMs += firstMs;
    clock += 1 + draft + 0.02 * (1 + levels) + 0.01 * ks.reduce((t, k) => t + 1 + k, 0);
    step++;
    members.forEach((p, i) => p.observe({ depth: ks[i], treeSize: ks[i], accepted: Math.min(accepted, ks[i]), draftMs: 0, verifyMs: 0 }));
    return ks;
  };
  return { planner, run };
}

test('served steps teach the first draft level its own scale: 2x its model where the later levels take half theirs', () => {
  const { planner, run } = setup(1.6, 0.4);
  const ps = [planner.policy(), planner.policy()];
  planner.forced = 3;
  for (let i = 0; i < 60; i++) run(ps, 3);
  planner.forced = 1;
  for (let i = 0; i < 60; i++) run(ps, 1);
  // The old single scale ended at the last steps' 2x for every level (1-deep steps).
  assert.ok(Math.abs(planner.passScale[2] - 2) < 0.02, `first level ${planner.passScale[2]}`);
  assert.ok(Math.abs(planner.passScale[1] - 0.5) < 0.02, `later levels ${planner.passScale[1]}: kept from the 3-deep steps`);
  assert.ok(Math.abs(planner.passScale[0] - 1) < 1e-9, `verify ${planner.passScale[0]}`);
  // A 3-deep step is priced at what it takes (1 + 1.6 + 2 x 0.4 ms of passes).
  const c = planner.stepCost(ps, [3, 3]);
  assert.ok(Math.abs(c.passMs - 3.4) < 0.05, `3-deep passes priced ${c.passMs}`);
});

test('without the first level timed apart (no coldMs), one scale prices every level, as before', () => {
  const { planner, run } = setup(1.6, 0.4, false);
  const ps = [planner.policy(), planner.policy()];
  planner.forced = 3;
  for (let i = 0; i < 60; i++) run(ps, 3);
  assert.ok(Math.abs(planner.passScale[1] - 1) < 0.02 && planner.passScale[1] === planner.passScale[2], `scales ${[...planner.passScale]}`);
});

test('after a calibration timing the first draft level apart, two requests that accept one draft a round stay plain where one scale drafted them 1 deep', async () => {
  /** The calibrated planner's first plan for two requests that each accepted 1 of 3 drafts in 8 rounds; its scales. */
  const plan = async (cold: boolean) => {
    const { planner, run } = setup(1.6, 0.4, cold);
    await planner.calibrate(async () => {
      const ps = [planner.policy(), planner.policy()];
      planner.forced = 3;
      for (let i = 0; i < 12; i++) run(ps, 0);
      planner.forced = 0;
      for (let i = 0; i < 6; i++) run(ps, 0);
      for (const p of ps) p.leave();
    });
    const ps = [planner.policy(), planner.policy()];
    for (const p of ps) for (let r = 0; r < 8; r++) p.observe({ depth: 3, treeSize: 3, accepted: 1, draftMs: 0, verifyMs: 0 });
    return { ks: run(ps, 1), scales: [...planner.passScale] };
  };
  const apart = await plan(true), one = await plan(false);
  // A 1-deep step costs 1 + 1.6 ms of passes for ~1.9 tokens a request against 1 ms for 1: plain.
  assert.deepEqual(apart.ks, [0, 0]);
  assert.deepEqual(apart.scales.map((s) => +s.toFixed(3)), [1, 0.5, 2], 'calibrated: verify, later levels, first level');
  // One scale (1.0: the calibration's 3-deep steps on average) priced the first level at 0.8 ms: 1-deep looked 20% better than plain.
  assert.deepEqual(one.ks, [1, 1]);
});
