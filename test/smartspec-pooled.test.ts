/** SmartSpec's planner: a new request's acceptance prior is what every request's drafted rounds accepted, not a sure acceptance. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SmartSpecPlanner, StepCost } from '../src/policies/smartspec.ts';
import type { RoundOutcome } from '../src/policies/policy.ts';

const tokens = [1, 2, 4, 8, 16];
const linear = (base: number, perToken: number) => new StepCost(tokens, tokens.map((t) => base + perToken * t), tokens.map((t) => base + perToken * t), 4);
const outcome = (depth: number, accepted: number): RoundOutcome => ({ depth, treeSize: depth, accepted, draftMs: 0, verifyMs: 0 });
const state = { position: 10, lastFeature: new Float32Array(1), rootToken: 0, maxDepth: 3 };

/** A planner whose earlier requests drafted `rounds` rounds at depth 3 with `accepted` accepted each. */
function plannerAfter(rounds: number, accepted: number): SmartSpecPlanner {
  const planner = new SmartSpecPlanner(linear(1, 0.05), linear(0.1, 0), 3, 3, () => 0, undefined, 0.9, () => 0);
  const donor = planner.policy();
  for (let r = 0; r < rounds; r++) donor.observe(outcome(3, accepted));
  donor.leave();
  return planner;
}

test('a new request starts from the pooled acceptance of earlier requests; with none pooled, from a sure acceptance', () => {
  assert.equal(plannerAfter(0, 0).policy().acceptance.expectedTokens(3), 4, 'no evidence: 1 + d');
  const poor = plannerAfter(40, 0).policy().acceptance.expectedTokens(3);
  assert.ok(poor < 1.5, `drafts never accepted before: a new request expects ${poor} tokens at depth 3`);
  const all = plannerAfter(40, 3).policy().acceptance.expectedTokens(3);
  assert.ok(all > 3.99, `drafts always accepted: ${all}`);
  // Its own rounds still count: after it sees full acceptance, it expects more than the pool.
  const p = plannerAfter(40, 0).policy();
  for (let r = 0; r < 5; r++) p.observe(outcome(3, 3));
  assert.ok(p.acceptance.expectedTokens(3) > 3, `own evidence: ${p.acceptance.expectedTokens(3)}`);
});

test('new requests in a batch are not drafted on a sure-acceptance prior when earlier requests accepted nothing', () => {
  const plan = (planner: SmartSpecPlanner) => {
    const ps = Array.from({ length: 4 }, () => planner.policy());
    return ps.map((p) => p.plan(state).depth);
  };
  // Perfect acceptance pays here (4 tokens for ~1.2 ms at 0; 7 for ~1.65 ms with one at depth 3).
  assert.ok(plan(plannerAfter(0, 0)).some((d) => d > 0), 'no pooled evidence: the optimistic prior speculates');
  assert.deepEqual(plan(plannerAfter(40, 0)), [0, 0, 0, 0], 'pooled evidence of no acceptance: nobody drafts');
});
