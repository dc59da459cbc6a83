/**
 * SmartSpec's all-zero steps at the planner's cost of a plain step (c = 16 on the embedded pair:
 * no raise pays, every request plans 0): a request's acceptance fades are counted and applied
 * when read, and the steps' learning samples are learned from `deferSteps` at a time, the bound
 * priced again only then. Both keep what is learned exactly what step-by-step learning gives.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { AcceptanceEstimate } from '../src/policies/goodput.ts';
import { SmartSpecPlanner, StepCost } from '../src/policies/smartspec.ts';

/** The counts as `fade` and `observe` kept them eagerly before (one decay per plain round). */
class EagerEstimate {
  hits: number[];
  trials: number[];
  constructor(readonly D: number, readonly k: number) {
    this.hits = new Array<number>(D + 1).fill(0);
    this.trials = new Array<number>(D + 1).fill(0);
  }
  fade(): void {
    for (let j = 1; j <= this.D; j++) (this.trials[j] *= this.k), (this.hits[j] *= this.k);
  }
  observe(depth: number, accepted: number): void {
    for (let j = 1; j <= Math.min(depth, this.D); j++) {
      this.trials[j] = this.k * this.trials[j] + 1;
      this.hits[j] = this.k * this.hits[j] + (accepted >= j ? 1 : 0);
    }
  }
  expectedTokens(d: number): number {
    let e = 1, p = 1;
    for (let j = 1; j <= d; j++) (p = Math.min(p, (this.hits[j] + 1) / (this.trials[j] + 1))), (e += p);
    return e;
  }
}

test('an acceptance estimate whose fades are applied when read equals one faded every round, bit for bit', () => {
  fc.assert(
    fc.property(
      fc.array(fc.oneof(fc.constant('fade' as const), fc.constant('read' as const), fc.tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 0, max: 3 }))), { maxLength: 200 }),
      fc.double({ min: 0.5, max: 0.99, noNaN: true }),
      (ops, decay) => {
        const lazy = new AcceptanceEstimate(3, decay), eager = new EagerEstimate(3, decay);
        for (const op of ops) {
          if (op === 'fade') lazy.fade(), eager.fade();
          else if (op === 'read') for (let d = 0; d <= 3; d++) assert.equal(lazy.expectedTokens(d), eager.expectedTokens(d));
          else lazy.observe(op[0], Math.min(op[0], op[1])), eager.observe(op[0], Math.min(op[0], op[1]));
        }
        for (let d = 0; d <= 3; d++) assert.equal(lazy.expectedTokens(d), eager.expectedTokens(d));
      },
    ),
    { numRuns: 300 },
  );
});

/**
 * A batch of `n` requests planned for `steps` steps, each step's verify pass taking `verify[s]`
 * ms and the rest of it `rest[s]` ms (a clock and lane times the test drives): the plans, and
 * how often the all-zero bound was priced.
 */
function serve(deferSteps: number, n: number, verify: number[], rest: number[]) {
  const tokens = [1, 2, 4, 8, 16, 32];
  // A target pass that grows steeply with its tokens and a dear draft pass: at 16 no raise pays.
  const cost = (base: number, slope: number) => new StepCost(tokens, tokens.map((t) => base + slope * t), tokens.map((t) => base + 1.5 * slope * t), 16);
  let step = 0, clock = 0;
  const lanes: [{ ms: number }, { ms: number; coldMs: number }] = [{ ms: 0 }, { ms: 0, coldMs: 0 }];
  const planner = new SmartSpecPlanner(cost(1, 0.08), cost(0.6, 0.02), 3, 3, () => step, undefined, 0.9, () => clock);
  planner.laneTimes = lanes;
  planner.deferSteps = deferSteps;
  const internals = planner as unknown as { allZeroVerifyMs(n: number): number | undefined };
  const own = internals.allZeroVerifyMs.bind(planner);
  let priced = 0;
  internals.allZeroVerifyMs = (k: number) => (priced++, own(k));
  const members = Array.from({ length: n }, () => planner.policy());
  const depths: number[] = [];
  for (step = 0; step < verify.length; step++) {
    for (const m of members) depths.push(m.plan({ position: 40 + step, lastFeature: new Float32Array(1), rootToken: 0, maxDepth: 3 }).depth);
    lanes[0].ms += verify[step];
    clock += verify[step] + rest[step];
    for (const m of members) m.observe({ depth: 0, treeSize: 0, accepted: 0, draftMs: 0, verifyMs: verify[step] });
  }
  return { planner, members, depths, priced };
}

test('all-zero steps learned from deferSteps at a time: the same learned pass scale and overhead as step by step, the bound priced once per deferSteps steps', () => {
  fc.assert(
    fc.property(fc.integer({ min: 3, max: 16 }), fc.integer({ min: 1, max: 40 }), fc.integer({ min: 2, max: 12 }), fc.integer({ min: 0, max: 1e6 }), (n, steps, defer, seed) => {
      let s = seed;
      const rand = () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
      const verify = Array.from({ length: steps }, () => 1 + 0.08 * n * (0.8 + 0.4 * rand()));
      const rest = Array.from({ length: steps }, () => 0.05 + 0.3 * rand());
      const each = serve(1, n, verify, rest), batched = serve(defer, n, verify, rest);
      // Every step planned 0 by both (no raise pays at any of these sizes on this model).
      assert.deepEqual(batched.depths, each.depths);
      assert.ok(each.depths.every((d) => d === 0));
      // Whatever still waits is learned from when read: then the state is the step-by-step one, exactly.
      batched.planner.learnDeferred();
      assert.deepEqual([...batched.planner.passScale], [...each.planner.passScale]);
      assert.deepEqual([batched.planner.overhead.a, batched.planner.overhead.b], [each.planner.overhead.a, each.planner.overhead.b]);
      // Step by step, the bound is priced every step (each learns, so what it read changed; the
      // first step is not timed: its members start one by one); deferred, once per deferSteps steps.
      assert.ok(each.priced >= steps - 1, `step by step: priced ${each.priced} times in ${steps} steps`);
      assert.ok(batched.priced <= 1 + Math.ceil(steps / defer), `priced ${batched.priced} times in ${steps} steps (deferSteps ${defer})`);
    }),
    { numRuns: 100 },
  );
});

test('a bound priced before a pass scale was set from outside is priced again (the cached answer is keyed on what it read)', () => {
  const verify = new Array<number>(4).fill(2.3), rest = new Array<number>(4).fill(0.1);
  const { planner, members, depths: before } = serve(8, 16, verify, rest);
  assert.ok(before.every((d) => d === 0)); // the bound held: its answer is cached for 16 members
  assert.equal(planner.mayDraft(16), false);
  planner.passScale.fill(1e-6, 1); // draft passes free: a raise now pays
  assert.equal(planner.mayDraft(16), true);
  // The same 16 members' next step (the cached bound's batch size): its plan reads the new scale, some member drafts.
  const internals = planner as unknown as { step: () => number };
  internals.step = () => 100;
  const depths = members.map((p) => p.plan({ position: 50, lastFeature: new Float32Array(1), rootToken: 0, maxDepth: 3 }).depth);
  assert.ok(depths.some((d) => d > 0), `depths ${depths}`);
});

test('a pass scale set from outside (setPassScale) while all-zero samples wait: the samples are learned from before it is set, as step by step', () => {
  // 5 all-zero steps learned (4 samples: the first step is not timed), fewer than deferSteps: they wait.
  const verify = new Array<number>(5).fill(3.1), rest = new Array<number>(5).fill(0.2);
  const each = serve(1, 16, verify, rest).planner, batched = serve(8, 16, verify, rest).planner;
  const recorded = [1.25, 0.8, 0.9];
  each.setPassScale(recorded);
  batched.setPassScale(recorded);
  batched.learnDeferred(); // anything still waiting
  assert.deepEqual([...batched.passScale], recorded);
  assert.deepEqual([...batched.passScale], [...each.passScale]);
  assert.deepEqual([batched.overhead.a, batched.overhead.b], [each.overhead.a, each.overhead.b]);
});
