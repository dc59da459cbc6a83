/** SmartSpec's planner counts the members with a length this step; a member that leaves before any planning was never counted. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SmartSpecPlanner, StepCost } from '../src/policies/smartspec.ts';

test("a request leaving before the planner's first step leaves its count of planned members at 0", () => {
  const cost = new StepCost([1, 2, 4], [1, 1.2, 1.5], [1, 1.2, 1.5], 2, 0);
  const planner = new SmartSpecPlanner(cost, cost, 3, 3, () => 0);
  const chosen = () => (planner as unknown as { chosenCount: number }).chosenCount;
  planner.policy().leave();
  assert.equal(chosen(), 0, 'left before planning: nothing to uncount');
  // Planned, then left: counted, then uncounted.
  const p = planner.policy(), q = planner.policy();
  p.plan({ position: 10, lastFeature: new Float32Array(1), rootToken: 0, maxDepth: 3 });
  assert.ok(chosen() >= 1, `planned this step: ${chosen()}`);
  p.leave();
  q.leave();
  assert.equal(chosen(), 0, 'every member left');
});
